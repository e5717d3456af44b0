#!/usr/bin/env bash
# What a snapshot costs: the same job (B32 E64 H512 L2 T256, 12 steps, Adam) without
# snapshots and with one after every step, side by side, three times each alternating:
# wall seconds (the saves are outside the steps' seconds), the snapshot's size, and the
# peak RSS beside the plan
# (--report-rss), which a save must not raise (tensors are streamed from where they
# live).
# Usage: scripts/snapshot_cost.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS="${1:-2}"
cargo build --release --quiet
r=$PWD/target/release/recur
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
head -c 3000000 /dev/urandom >"$dir/tokens.bin"
job=(train --data "$dir/tokens.bin" --embed 64 --hidden 512 --layers 2 --batch 32
     --window 256 --steps 12 --json --report-rss)
printf '%-12s %8s %12s %14s %12s %13s\n' run "wall s" "s in steps" "peak RSS MiB" "planned MiB" "snapshot MiB"
for i in 1 2 3; do
  for mode in plain saving; do
    out="$dir/run-$mode-$i"
    extra=()
    [ "$mode" = saving ] && extra=(--save-every 1 --keep 2)
    t0=$(date +%s.%N)
    line=$("$r" "${job[@]}" --out "$out" "${extra[@]}" | tail -1)
    wall=$(python3 -c "import sys; print(round($(date +%s.%N) - $t0, 2))")
    secs=$(echo "$line" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["seconds"],2))')
    peak=$(echo "$line" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(round((s["peak_rss_bytes"]-s["rss_before_compile_bytes"])/2**20,1))')
    plan=$(echo "$line" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["total_bytes"]/2**20,1))')
    size=-
    if [ "$mode" = saving ]; then
      size=$(du -sm "$(ls -d "$out"/snapshots/step-* | tail -1)" | cut -f1)
    fi
    printf '%-12s %8s %12s %14s %12s %13s\n' "$mode #$i" "$wall" "$secs" "$peak" "$plan" "$size"
  done
done
