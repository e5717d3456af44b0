#!/usr/bin/env bash
# Exact BPTT over very long windows inside a 64 MiB activation arena: one training step
# of B32 E64 H256 L1 at T = 10 000 and T = 100 000 with `--memory-budget 64MiB`, no
# truncation. Prints the plan's choice, its arena, the step time and the measured peak
# RSS. Usage: scripts/long_windows.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS="${1:-2}"
cargo build --release --quiet
data=$(mktemp --suffix=.bin)
trap 'rm -f "$data"' EXIT
head -c 3300000 /dev/urandom > "$data"
printf '%-8s %-36s %10s %10s %10s %10s %9s\n' T policy arena planned peak_rss step_s recompute
for T in 10000 100000; do
  out=$(target/release/recur train --data "$data" --batch 32 --embed 64 --hidden 256 \
        --window "$T" --steps 1 --memory-budget 64MiB --json --report-rss)
  python3 - "$out" "$T" <<'PY'
import json, sys
s = json.loads(sys.argv[1]); T = sys.argv[2]; M = 2**20
print(f"{T:<8} {s['policy']:<36} {s['arena_bytes']/M:9.1f}M {s['total_bytes']/M:9.1f}M "
      f"{(s['peak_rss_bytes'] - s['rss_before_compile_bytes'])/M:9.1f}M {s['seconds']:10.1f} {s['recompute_factor']:8.2f}x")
PY
done
