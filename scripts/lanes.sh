#!/usr/bin/env bash
# Both cores, three ways, side by side in one run: one lane with each GEMM on two
# OpenBLAS threads (the default), two lanes with single-threaded GEMMs (--lanes 2), and
# one lane on one thread (the reference the two lanes equal bit for bit); with BLIS as
# well if it is installed (libblis-dev; built with --features blis into target/blis).
# Configurations: A (LSTM B32 E64 H256 L1 T1000), B (LSTM B32 E128 H512 L2 T1000), D20k
# (LSTM B16 E64 H256 L1 T20000, every:16). recur's step time is the median step after
# the first (`--json --log-every 1`; D20k runs two steps, so its figure is its second
# step); medians over `reps` alternating runs.
# Usage: scripts/lanes.sh [reps] [config ...]   (default: 3 A B D20k)
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:-3}"
shift || true
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(A B D20k)
cargo build --release --quiet
bins=(ob:target/release/recur)
if [ -e /usr/include/blis/blis.h ] || ls /usr/lib/x86_64-linux-gnu/libblis.so >/dev/null 2>&1; then
  cargo build --release --quiet --features blis --target-dir target/blis
  bins+=(blis:target/blis/release/recur)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 8000000 /dev/urandom > "$tmp/tokens.bin"
declare -A spec=(
  [A]="--embed 64 --batch 32 --hidden 256 --layers 1 --window 1000 --steps 5"
  [B]="--embed 128 --batch 32 --hidden 512 --layers 2 --window 1000 --steps 3"
  [D20k]="--embed 64 --batch 16 --hidden 256 --layers 1 --window 20000 --checkpoint every:16 --steps 2"
)
modes=("1 2" "2 1" "1 1")
: > "$tmp/results"
for name in "${configs[@]}"; do
  read -r -a args <<< "${spec[$name]}"
  for ((r = 0; r < reps; r++)); do
    for b in "${bins[@]}"; do
      for mode in "${modes[@]}"; do
        read -r lanes threads <<< "$mode"
        OPENBLAS_NUM_THREADS=$threads BLIS_NUM_THREADS=$threads "${b#*:}" train \
          --data "$tmp/tokens.bin" "${args[@]}" --lanes "$lanes" --threads "$threads" \
          --json --log-every 1 2>"$tmp/err" > "$tmp/out" || { cat "$tmp/err" >&2; exit 1; }
        python3 - "$tmp/out" "$name" "${b%%:*}" "$lanes" "$threads" >> "$tmp/results" <<'PY'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
at = [0.0] + [l["elapsed"] for l in lines if "step" in l]
times = [b - a for a, b in zip(at, at[1:])]
print(json.dumps({"config": sys.argv[2], "blas": sys.argv[3], "lanes": int(sys.argv[4]),
                  "threads": int(sys.argv[5]), "step_s": statistics.median(times[1:]),
                  "loss": lines[-1]["final_loss"]}))
PY
        tail -1 "$tmp/results"
      done
    done
  done
done
python3 - "$tmp/results" "$reps" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for l in open(sys.argv[1]):
    r = json.loads(l)
    runs[(r["config"], r["blas"], r["lanes"], r["threads"])].append(r["step_s"])
print(f"\nmedian step of {sys.argv[2]} alternating runs; ÷ default = step ÷ the one-lane, two-thread OpenBLAS step\n")
print("| config | BLAS | lanes × GEMM threads | step | ÷ default |")
print("|---|---|---|---|---|")
for (c, b, l, t), v in runs.items():
    base = statistics.median(runs[(c, "ob", 1, 2)])
    m = statistics.median(v)
    print(f"| {c} | {'OpenBLAS' if b == 'ob' else 'BLIS'} | {l} × {t} | {m:.3f} s | {m / base:.2f} |")
PY
