#!/usr/bin/env bash
# The whole test suite, as CI runs it: system packages (Open MPI too), formatting,
# lints, every test (unit, integration, the allocation-counting binary, doc tests, the
# examples, the MPI jobs under mpirun), the benches compiled, and the OpenBLAS link
# checked.
set -euo pipefail
cd "$(dirname "$0")/.."
RECUR_MPI=1 source scripts/deps.sh
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings (and with --features mpi)"
cargo clippy --all-targets --quiet -- -D warnings
cargo clippy --all-targets --features mpi --quiet -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --all-targets 2>&1 | tee "$log"
cargo test --doc 2>&1 | tee -a "$log"
echo "== MPI: recur train under mpirun, 2 and 3 ranks (one job at a time: 2 cores)"
cargo test --features mpi --test it mpi:: -- --test-threads 1 2>&1 | tee -a "$log"
echo "== examples"
cargo run --quiet --release --example embed >/dev/null
cargo run --quiet --release --example series >/dev/null
cargo run --quiet --release --example long_sequence >/dev/null
echo "== OpenBLAS link"
cargo build --release --quiet
scripts/check_blas.sh target/release/recur

passed=$(grep -o '^test result: ok\. [0-9]* passed' "$log" | awk '{s+=$4} END {print s+0}')
echo "total: ${passed} passed, 0 failed"
