#!/usr/bin/env bash
# The cost model against the clock: for one configuration and memory budget, every
# candidate schedule `--checkpoint auto` weighs (keep-all if it fits, every:K, sqrt,
# revolve:S, the budget's own choice) is planned (`recur plan --json`: its arena and
# predicted seconds) and trained for a few steps, alternating, `reps` times; the table
# gives each one's median step beside its prediction, which plan `auto` chose, and
# where the fastest measured plan ranks in the prediction.
# recur's step time is the median step after the first (`--json --log-every 1`).
# Usage: scripts/auto.sh [reps] [config] [budget]   (default: 3 A 40MiB)
#   A  LSTM B32 E64  H256 L1 T1000
#   B  LSTM B32 E128 H512 L2 T1000
#   D20k  LSTM B16 E64 H256 L1 T20000
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:-3}"
name="${2:-A}"
budget="${3:-40MiB}"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-2}"
cargo build --release --quiet
bin=target/release/recur
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 4000000 /dev/urandom > "$tmp/tokens.bin"
declare -A spec=(
  [A]="--embed 64 --batch 32 --hidden 256 --layers 1 --window 1000"
  [B]="--embed 128 --batch 32 --hidden 512 --layers 2 --window 1000"
  [D20k]="--embed 64 --batch 16 --hidden 256 --layers 1 --window 20000"
)
declare -A steps=([A]=5 [B]=3 [D20k]=2)
[ -n "${spec[$name]:-}" ] || { echo "auto.sh: unknown config '$name' (A B D20k)" >&2; exit 2; }
read -r -a shape <<< "${spec[$name]}"
plan() { "$bin" plan --vocab 256 "${shape[@]}" "$@" --json; }
field() { python3 -c 'import json,sys; d=json.load(sys.stdin); k=sys.argv[1]; print(d[k]["seconds"] if k == "predicted" else d[k])' "$1"; }
auto=$(plan --checkpoint auto --memory-budget "$budget" | field policy)
chosen=$(plan --memory-budget "$budget" | field policy)
echo "auto: $auto; --memory-budget alone: $chosen"
# The candidates: those of `plan::budget::auto` that fit, as flags.
cands=()
segs=$(( ($(plan --checkpoint none | field window) + 15) / 16 ))
# The budget in bytes, as recur reads sizes (`units::parse_size`): a number with an
# optional unit, any case: K, M, G, T and KiB… are powers of 1024, KB, MB… of 1000.
limit=$(python3 - "$budget" <<'PY'
import re, sys
m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(?:([kmgt])(ib|b)?|b)?\s*", sys.argv[1], re.I)
if not m:
    sys.exit(f"auto.sh: cannot read the budget '{sys.argv[1]}'")
power = " kmgt".index((m[2] or " ").lower())
base = 1000 if (m[3] or "").lower() == "b" else 1024
print(int(float(m[1]) * base ** power))
PY
)
try() {
  local arena
  arena=$(plan "$@" | field arena_bytes 2>/dev/null) || return 0
  [ "$arena" -le "$limit" ] && cands+=("$*")
  return 0
}
try --checkpoint none
for ((k = 1; k < segs; k *= 2)); do try --checkpoint "every:$k"; done
try --checkpoint sqrt
# Revolve as auto weighs it: 0, 1, 2, 4, … slots below the segment count (a refused
# plan is skipped by `try`).
for ((s = 0; s < segs; s = s ? 2 * s : 1)); do try --checkpoint "revolve:$s"; done
cands+=("--memory-budget $budget" "--checkpoint auto --memory-budget $budget")
: > "$tmp/results"
for ((r = 0; r < reps; r++)); do
  for c in "${cands[@]}"; do
    read -r -a flags <<< "$c"
    if ! "$bin" train --data "$tmp/tokens.bin" "${shape[@]}" "${flags[@]}" \
      --steps "${steps[$name]}" --json --log-every 1 > "$tmp/out" 2> "$tmp/err"; then
      echo "auto.sh: recur train ${flags[*]} failed:" >&2
      cat "$tmp/err" >&2
      exit 1
    fi
    pred=$(plan "${flags[@]}" | field predicted)
    arena=$(plan "${flags[@]}" | field arena_bytes)
    pol=$(plan "${flags[@]}" | field policy)
    python3 - "$tmp/out" "$c" "$pred" "$arena" "$pol" >> "$tmp/results" <<'PY'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
at = [0.0] + [l["elapsed"] for l in lines if "step" in l]
t = [b - a for a, b in zip(at, at[1:])]
print(json.dumps({"flags": sys.argv[2], "predicted": float(sys.argv[3]),
                  "arena": int(sys.argv[4]), "policy": sys.argv[5],
                  "step": statistics.median(t[1:] if len(t) > 1 else t)}))
PY
  done
done
python3 - "$tmp/results" "$name" "$budget" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["flags"], []).append(r)
table = [(k, v[0]["policy"], v[0]["arena"], v[0]["predicted"], statistics.median(x["step"] for x in v))
         for k, v in by.items()]
import os
print(f"\n{sys.argv[2]}, budget {sys.argv[3]}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, medians of {len(rows)//len(by)} runs\n")
print("| flags | plan | arena MiB | predicted s | measured s | measured ÷ predicted |")
print("|---|---|---|---|---|---|")
for k, pol, arena, p, m in sorted(table, key=lambda x: x[3]):
    print(f"| `{k}` | {pol} | {arena/2**20:.1f} | {p:.3f} | {m:.3f} | {m/p:.2f} |")
fixed = [t for t in table if not t[0].startswith("--memory-budget") and "auto" not in t[0]]
def ranks(v):
    # Tied values share the mean of their ranks.
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    k = 0
    while k < len(order):
        j = k
        while j + 1 < len(order) and v[order[j + 1]] == v[order[k]]:
            j += 1
        for i in order[k:j + 1]:
            r[i] = (k + j) / 2
        k = j + 1
    return r
rp, rm = ranks([t[3] for t in fixed]), ranks([t[4] for t in fixed])
n = len(fixed)
rho = 1 - 6 * sum((a - b) ** 2 for a, b in zip(rp, rm)) / (n * (n * n - 1)) if n > 1 else 1.0
print(f"\nSpearman rank correlation of predicted and measured over the {n} fixed policies: {rho:.2f}")
fastest = min(fixed, key=lambda x: x[4])
rank = sorted(fixed, key=lambda x: x[3]).index(fastest) + 1
auto = next(t for t in table if "auto" in t[0])
print(f"\nfastest measured: `{fastest[0]}` ({fastest[4]:.3f} s), rank {rank} of {len(fixed)} by prediction;"
      f" auto ({auto[1]}) measured {auto[4]:.3f} s, {auto[4]/fastest[4]:.2f}× the fastest")
PY
