#!/usr/bin/env bash
# Same-machine comparison with PyTorch (if installed: pip install torch numpy), one
# configuration after the other in one run: B32 E64 H256 L1 (features: N = 64, the
# next row as target), Adam, clipping, for each cell:input:policy:T given (default: the
# LSTM language model at T=64 and T=1000 keep-all, then the GRU on tokens and on
# features at T=1000, keep-all and sqrt). recur's step time comes from
# `recur train --json` (steps only), its peak RSS from /usr/bin/time -v; PyTorch's from
# scripts/ref/torch_step.py (median step, getrusage).
# Usage: scripts/peers.sh [threads] [cell:input:policy:T ...]
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
shift || true
configs=("$@")
if [ ${#configs[@]} -eq 0 ]; then
  configs=(lstm:tokens:none:64 lstm:tokens:none:1000 gru:tokens:none:1000 gru:tokens:sqrt:1000
           gru:features:none:1000 gru:features:sqrt:1000)
fi
export OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"
cargo build --release --quiet
tokens=$(mktemp --suffix=.bin)
series=$(mktemp --suffix=.npy)
trap 'rm -f "$tokens" "$series" "$tokens.time"' EXIT
head -c 4000000 /dev/urandom > "$tokens"
python3 -c "import numpy as np, sys; np.save(sys.argv[1], np.random.default_rng(0).standard_normal((40000, 64)).astype(np.float32))" "$series"
have_torch=$(python3 -c "import torch" 2>/dev/null && echo yes || echo no)
printf '%-8s %-30s %10s %10s %13s %13s\n' framework config step_s tokens/s peak_rss_MiB planned_MiB
for cfg in "${configs[@]}"; do
  IFS=: read -r cell input policy T <<< "$cfg"
  steps=$(( T > 500 ? 6 : 40 ))
  if [ "$input" = features ]; then data=("$series"); n=64; else data=("$tokens" --embed 64); n=0; fi
  out=$(/usr/bin/time -v target/release/recur train --data "${data[@]}" --cell "$cell" --batch 32 \
        --hidden 256 --layers 1 --window "$T" --checkpoint "$policy" --steps "$steps" --json \
        2>"$tokens.time")
  rss=$(grep "Maximum resident" "$tokens.time" | awk '{print $NF}')
  python3 - "$out" "$rss" "$cfg" "$T" <<'PY'
import json, sys
s = json.loads(sys.argv[1]); rss = int(sys.argv[2]) * 1024; T = int(sys.argv[4])
step = s['seconds'] / s['steps']
print(f"{'recur':<8} {sys.argv[3]:<30} {step:10.4f} {32 * T / step:10.0f} {rss / 2**20:13.1f} {s['total_bytes'] / 2**20:13.1f}")
PY
  if [ "$have_torch" = yes ]; then
    python3 - "$(python3 scripts/ref/torch_step.py 32 64 256 1 "$T" 5 "$cell" "$n" "$policy")" "$cfg" "$T" <<'PY'
import json, sys
s = json.loads(sys.argv[1]); T = int(sys.argv[3])
print(f"{'torch':<8} {sys.argv[2]:<30} {s['step_s']:10.4f} {32 * T / s['step_s']:10.0f} {s['peak_rss_bytes'] / 2**20:13.1f} {'-':>13}")
PY
  fi
done
