#!/usr/bin/env bash
# Same-machine comparison with PyTorch (if installed: pip install torch): one training
# step of the char-LM B32 E64 H256 L1 at T=64 and T=1000, keep-all, Adam, 2 threads.
# recur's step time comes from `recur train --json` (steps only), its peak RSS from
# /usr/bin/time -v. Usage: scripts/peers.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
export OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"
cargo build --release --quiet
data=$(mktemp --suffix=.txt)
trap 'rm -f "$data"' EXIT
head -c 4000000 /dev/urandom > "$data"
printf '%-8s %-6s %12s %14s %14s\n' framework T step_s peak_rss_MiB planned_MiB
for T in 64 1000; do
  steps=$(( T > 500 ? 6 : 40 ))
  out=$(/usr/bin/time -v target/release/recur train --data "$data" --batch 32 --embed 64 \
        --hidden 256 --layers 1 --window "$T" --steps "$steps" --json 2>"$data.time")
  rss=$(grep "Maximum resident" "$data.time" | awk '{print $NF}')
  python3 - "$out" "$rss" "$T" <<'PY'
import json, sys
s = json.loads(sys.argv[1]); rss = int(sys.argv[2]) * 1024; T = int(sys.argv[3])
print(f"{'recur':<8} {T:<6} {32 * T / s['tokens_per_s']:12.4f} {rss / 2**20:14.1f} {s['total_bytes'] / 2**20:14.1f}")
PY
  if python3 -c "import torch" 2>/dev/null; then
    python3 - "$(python3 scripts/ref/torch_step.py 32 64 256 1 "$T" 5)" "$T" <<'PY'
import json, sys
s = json.loads(sys.argv[1]); T = int(sys.argv[2])
print(f"{'torch':<8} {T:<6} {s['step_s']:12.4f} {s['peak_rss_bytes'] / 2**20:14.1f} {'-':>14}")
PY
  fi
done
rm -f "$data.time"
