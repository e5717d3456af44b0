#!/usr/bin/env bash
# Does the plan tell the truth? Runs `recur train --report-rss` under /usr/bin/time -v
# for several policies and budgets and sets the planned bytes (persistent + arena) beside
# the measured peak RSS minus the RSS the process had before compile. recur takes that
# baseline after the BLAS runtime is set up (one GEMM of each of the window's shapes:
# OpenBLAS's thread pool and packing buffers, the design's "small fixed runtime
# overhead") and resets the peak there.
# Usage: scripts/rss.sh [threads] [cell] [tokens|features] [policies...]
#   B32 H256 L1 T1000, 3 steps each; tokens: E64 over random bytes; features: N = 64
#   (a series, the next row as target). Default policies: none, sqrt, revolve:8,
#   revolve:2, budgets of 64, 24 and 12 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS="${1:-2}"
cell="${2:-lstm}"
input="${3:-tokens}"
shift $(( $# < 3 ? $# : 3 ))
policies=("$@")
if [ ${#policies[@]} -eq 0 ]; then
  policies=("--checkpoint none" "--checkpoint sqrt" "--checkpoint revolve:8" "--checkpoint revolve:2"
            "--memory-budget 64MiB" "--memory-budget 24MiB" "--memory-budget 12MiB")
fi
cargo build --release --quiet
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
if [ "$input" = features ]; then
  data="$dir/series.npy"
  python3 -c "import numpy as np, sys; np.save(sys.argv[1], np.random.default_rng(0).standard_normal((40000, 64)).astype(np.float32))" "$data"
  model=()
else
  data="$dir/tokens.bin"
  head -c 2000000 /dev/urandom > "$data"
  model=(--embed 64)
fi

echo "$cell, $input input"
printf '%-40s %10s %10s %10s %9s %9s\n' policy planned measured process "meas/plan" recompute
for pol in "${policies[@]}"; do
  # shellcheck disable=SC2086
  out=$(/usr/bin/time -v target/release/recur train --data "$data" --cell "$cell" --steps 3 --json \
        --report-rss --hidden 256 ${model[@]+"${model[@]}"} --batch 32 --window 1000 $pol 2>"$dir/time")
  python3 - "$out" "$(grep 'Maximum resident' "$dir/time" | awk '{print $NF}')" <<'PY'
import json, sys
s = json.loads(sys.argv[1]); M = 2**20
plan, used = s["total_bytes"], s["peak_rss_bytes"] - s["rss_before_compile_bytes"]
print(f"{s['policy']:<40} {plan/M:9.1f}M {used/M:9.1f}M {int(sys.argv[2])*1024/M:9.1f}M "
      f"{used/plan:9.3f} {s['recompute_factor']:8.2f}x")
PY
done
echo "measured = peak RSS − RSS before compile; process = the whole process's peak RSS"
