#!/usr/bin/env bash
# The whole test suite, as CI runs it: system packages, formatting, lints, every test
# (unit, integration, the allocation-counting binary, doc tests, the example), the
# benches compiled, and the OpenBLAS link checked.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --all-targets
cargo test --doc
echo "== example"
cargo run --quiet --release --example embed >/dev/null
echo "== OpenBLAS link"
cargo build --release --quiet
scripts/check_blas.sh target/release/recur
