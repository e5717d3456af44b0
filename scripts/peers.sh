#!/usr/bin/env bash
# recur beside PyTorch (if installed: pip install torch numpy) on the same machine, the
# standard configurations of docs/PERFORMANCE.md, recur and PyTorch alternating
# `reps` times per configuration in one run; medians, ratios and peak RSS at the end.
#
#   A     LSTM LM  B32 E64  H256 L1 T1000, keep every activation
#   B     LSTM LM  B32 E128 H512 L2 T1000, keep every activation
#   GRU   A's sizes with the GRU (PyTorch: nn.GRU)
#   D     LSTM LM  B16 E64  H256 L1 T100000, exact BPTT: recur in a 64 MiB budget
#         (`--checkpoint auto`: the fastest plan that fits),
#         PyTorch with torch.utils.checkpoint over chunks of ceil(sqrt(T)) steps, each
#         chunk's embedding, cell, head and loss inside its checkpoint
#   A64   A at T = 64
#   GRUF  the GRU on 64 f32 features per step (regression on the next row)
#   RAW   an LSTM (H256 B32 T1000) on 64 unscaled series (random walks around 1000,
#         as prices are) predicting the next row: its saturated gates make subnormal
#         numbers, which recur flushes (`exec::fp`) and PyTorch keeps by default
#
# Every model: V = 256 (tokens), Adam, clipping at 1.0. recur's step time is the median
# step after the first (`recur train --json --log-every 1`; compile excluded; D: its
# one step), its peak RSS from
# /usr/bin/time -v, and its plan's compile time from `recur plan` (D); PyTorch's from
# scripts/ref/torch_step.py (median step after a warm-up step, none for D; getrusage,
# which includes the ~0.5 GiB of the torch library). "model GFLOP/s" counts the GEMM
# work of the model (forward, and dW and dX in backward: 3 × the forward's products,
# head included; recomputation not counted), the same figure for both frameworks.
#
# Usage: scripts/peers.sh [threads] [reps] [config ...]   (default: 2 3 A B GRU D)
# RECUR_SUBNORMALS (recur) and TORCH_STEP_FLUSH (PyTorch) pass through: unset, each
# framework runs its default (recur flushes subnormals, PyTorch keeps them).
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
reps="${2:-3}"
for n in "$threads" "$reps"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "peers.sh: usage: peers.sh [threads] [reps] [config ...] (threads and reps are counts, not '$n')" >&2; exit 2; }
done
shift 2 || shift $#
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(A B GRU D)
export OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"
cargo build --release --quiet
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 8000000 /dev/urandom > "$tmp/tokens.bin"
# Series of 200 001 rows: stripes of 6250 at B32, six full windows of 1000 each (a
# stripe's shorter last window would be timed as a step otherwise).
python3 -c "import numpy as np, sys; np.save(sys.argv[1], np.random.default_rng(0).standard_normal((200001, 64)).astype(np.float32))" "$tmp/series.npy"
python3 -c "import numpy as np, sys; np.save(sys.argv[1], (1000 + 5 * np.cumsum(np.random.default_rng(1).standard_normal((200001, 64)), 0)).astype(np.float32))" "$tmp/prices.npy"
have_torch=$(python3 -c "import torch" 2>/dev/null && echo yes || echo no)
results="$tmp/results.jsonl"
: > "$results"

# name -> cell input E H L B T recur_policy torch_policy recur_steps torch_steps warmup
declare -A spec=(
  [A]="lstm tokens 64 256 1 32 1000 none none 6 5 1"
  [B]="lstm tokens 128 512 2 32 1000 none none 4 3 1"
  [GRU]="gru tokens 64 256 1 32 1000 none none 6 5 1"
  [D]="lstm tokens 64 256 1 16 100000 budget sqrt 1 1 0"
  [A64]="lstm tokens 64 256 1 32 64 none none 40 20 1"
  [GRUF]="gru features 0 256 1 32 1000 none none 5 5 1"
  [RAW]="lstm prices 0 256 1 32 1000 none none 5 5 1"
)

for name in "${configs[@]}"; do
  [ -n "${spec[$name]:-}" ] || { echo "peers.sh: unknown config '$name' (A B GRU D A64 GRUF RAW)" >&2; exit 2; }
  read -r cell input E H L B T policy tpolicy rsteps tsteps warm <<< "${spec[$name]}"
  unset TORCH_STEP_DATA
  case "$input" in
    features) data=("$tmp/series.npy"); n=64 ;;
    prices) data=("$tmp/prices.npy"); n=64; export TORCH_STEP_DATA="$tmp/prices.npy" ;;
    *) data=("$tmp/tokens.bin" --embed "$E"); n=0 ;;
  esac
  # D: the fastest plan within the budget (`auto`; every:4 on the Xeon, 3% faster than
  # the least recomputation that fits, every:35, which `--memory-budget` alone takes).
  if [ "$policy" = budget ]; then pol=(--checkpoint auto --memory-budget 64MiB); else pol=(--checkpoint "$policy"); fi
  shape=(--cell "$cell" --batch "$B" --hidden "$H" --layers "$L" --window "$T" "${pol[@]}")
  args=(--data "${data[@]}" "${shape[@]}")
  compile_s=0
  if [ "$policy" = budget ]; then
    # The plan's compile time, on its own (`recur plan` reads no data): median of 3.
    compile_s=$(python3 -c 'import statistics, subprocess, sys, time
def once():
    t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t
print(statistics.median(once() for _ in range(3)))' target/release/recur plan --vocab 256 --embed "$E" "${shape[@]}")
  fi
  for ((r = 0; r < reps; r++)); do
    /usr/bin/time -v target/release/recur train "${args[@]}" --steps "$rsteps" --json --log-every 1 \
      > "$tmp/out" 2>"$tmp/time"
    rss=$(grep "Maximum resident" "$tmp/time" | awk '{print $NF}')
    python3 - "$tmp/out" "$rss" "$name" "$compile_s" >> "$results" <<'PY'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
summary, steps = lines[-1], [l for l in lines if "step" in l]
# Each step's time from the log's elapsed seconds; the first step is the warm-up (its
# arena pages are touched for the first time), as PyTorch's is.
at = [0.0] + [l["elapsed"] for l in steps]
times = [b - a for a, b in zip(at, at[1:])]
step = statistics.median(times[1:] if len(times) > 1 else times)
print(json.dumps({"fw": "recur", "config": sys.argv[3], "step_s": step,
                  "rss": int(sys.argv[2]) * 1024, "planned": summary["total_bytes"],
                  "compile_s": float(sys.argv[4])}))
PY
    tail -1 "$results"
    if [ "$have_torch" = yes ]; then
      out=$(python3 scripts/ref/torch_step.py "$B" "$E" "$H" "$L" "$T" "$tsteps" "$cell" "$n" "$tpolicy" "$warm")
      python3 - "$out" "$name" >> "$results" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
print(json.dumps({"fw": "torch", "config": sys.argv[2], "step_s": s["step_s"], "rss": s["peak_rss_bytes"]}))
PY
      tail -1 "$results"
    fi
  done
done

python3 - "$results" "$threads" "$reps" <<'PY'
import json, statistics, sys
from collections import defaultdict
spec = {  # cell, input, E, H, L, B, T
    "A": ("lstm", "tokens", 64, 256, 1, 32, 1000), "B": ("lstm", "tokens", 128, 512, 2, 32, 1000),
    "GRU": ("gru", "tokens", 64, 256, 1, 32, 1000), "D": ("lstm", "tokens", 64, 256, 1, 16, 100000),
    "A64": ("lstm", "tokens", 64, 256, 1, 32, 64), "GRUF": ("gru", "features", 64, 256, 1, 32, 1000),
    "RAW": ("lstm", "features", 64, 256, 1, 32, 1000),
}
runs = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["config"], r["fw"])].append(r)
print(f"\n{sys.argv[3]} alternating runs per config, {sys.argv[2]} threads; medians\n")
print("| config | recur step | PyTorch step | recur ÷ PyTorch tokens/s | recur tokens/s | model GFLOP/s (recur) | recur peak RSS (plan) | PyTorch peak RSS |")
print("|---|---|---|---|---|---|---|---|")
for name in dict.fromkeys(k[0] for k in runs):
    cell, inp, E, H, L, B, T = spec[name]
    g = 4 if cell == "lstm" else 3
    width = [E if inp == "tokens" else 64] + [H] * (L - 1)
    fwd = sum(2 * B * T * (i + H) * g * H for i in width) + 2 * B * T * H * (256 if inp == "tokens" else 64)
    rec, tor = runs[(name, "recur")], runs.get((name, "torch"), [])
    rs = statistics.median(r["step_s"] for r in rec)
    rss = statistics.median(r["rss"] for r in rec) / 2**20
    plan = rec[0]["planned"] / 2**20
    comp = f", compile {rec[0]['compile_s']:.2f} s" if rec[0]["compile_s"] else ""
    if tor:
        ts = statistics.median(r["step_s"] for r in tor)
        ratio = " / ".join(f"{t['step_s'] / r['step_s']:.2f}" for r, t in zip(rec, tor))
        trss = f"{statistics.median(r['rss'] for r in tor) / 2**20:.0f} MiB"
        tcol, rcol = f"{ts:.3f} s", f"**{ts / rs:.2f}** (runs: {ratio})"
    else:
        tcol, rcol, trss = "–", "–", "–"
    print(f"| {name} | {rs:.3f} s{comp} | {tcol} | {rcol} | {B * T / rs:,.0f} | {3 * fwd / rs / 1e9:.1f} | {rss:.0f} MiB ({plan:.0f}) | {trss} |")
PY
