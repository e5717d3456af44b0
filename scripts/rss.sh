#!/usr/bin/env bash
# Does the plan tell the truth? Runs `recur train` under /usr/bin/time -v for several
# policies and budgets and sets the planned bytes (persistent + arena) beside the
# measured peak RSS minus the RSS the process had before compile (reported by
# `recur train --report-rss`). A first run of the same model over one segment
# (T = G = 16) measures the fixed runtime overhead: OpenBLAS's packing buffers for these
# matrix sizes, thread stacks, the compiler's own tables.
# Usage: scripts/rss.sh [threads]     (B32 H256 E64 L1 T1000, 3 steps each)
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS="${1:-2}"
cargo build --release --quiet
data=$(mktemp --suffix=.bin)
trap 'rm -f "$data" "$data.time"' EXIT
head -c 2000000 /dev/urandom > "$data"

measure() { # args → "planned used peak_time"
  local out
  out=$(/usr/bin/time -v target/release/recur train --data "$data" --steps 3 --json --report-rss "$@" 2>"$data.time")
  python3 - "$out" "$(grep 'Maximum resident' "$data.time" | awk '{print $NF}')" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
print(s["total_bytes"], s["peak_rss_bytes"] - s["rss_before_compile_bytes"], int(sys.argv[2]) * 1024, s["recompute_factor"], s["policy"])
PY
}

model=(--hidden 256 --embed 64 --batch 32)
read -r p0 u0 _ <<<"$(measure "${model[@]}" --window 16 | cut -d' ' -f1-3)"
overhead=$(( u0 - p0 ))
echo "fixed runtime overhead (same model, T = 16): $(( overhead / 1024 )) KiB"
printf '%-40s %10s %10s %10s %9s %9s %9s\n' policy planned measured peak_rss raw "meas/plan" recompute
model+=(--window 1000)
for pol in "--checkpoint none" "--checkpoint sqrt" "--checkpoint revolve:8" "--checkpoint revolve:2" \
           "--memory-budget 64MiB" "--memory-budget 24MiB" "--memory-budget 12MiB"; do
  # shellcheck disable=SC2086
  read -r planned used peak rf name <<<"$(measure "${model[@]}" $pol)"
  python3 -c "
p, u, k, o = $planned, $used, $peak, $overhead
print(f'{\"$name\":<40} {p/2**20:9.1f}M {u/2**20:9.1f}M {k/2**20:9.1f}M {u/p:9.3f} {(u - o)/p:9.3f} {$rf:8.2f}x')"
done
echo "raw = (peak RSS − RSS before compile) / planned; meas/plan = (… − fixed overhead) / planned"
