#!/usr/bin/env bash
# Scaling on this machine: one process on 2 OpenBLAS threads against 2 MPI ranks on 1
# thread each, data parallel (each rank half the batch) and, for the 2-layer model,
# pipeline (each rank one layer), alternating, `rounds` times; medians of tokens/s, the
# share of the steps' time spent waiting for the other rank, each rank's planned memory
# and its measured peak RSS (less the RSS before compile; `--report-rss`).
# Configs: A = B32 E64 H256 L1 T1000, B = B32 E128 H512 L2 T1000 (tokens, vocab 256).
# Usage: scripts/scaling.sh [rounds]   (docs/SCALING.md records its output)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
RECUR_MPI=1 source scripts/deps.sh
cargo build --release --quiet --features mpi
bin=target/release/recur
data=$(mktemp --suffix=.bin)
trap 'rm -f "$data"' EXIT
head -c 8000000 /dev/urandom > "$data"
mpi=(mpirun --allow-run-as-root -n 2 --bind-to core -x OPENBLAS_NUM_THREADS=1)

run() { # config mode -> one JSON summary line
  local cfg=$1 mode=$2 model steps
  case $cfg in
    A) model=(--embed 64 --hidden 256 --layers 1); steps=8 ;;
    B) model=(--embed 128 --hidden 512 --layers 2); steps=4 ;;
  esac
  local args=(train --data "$data" "${model[@]}" --batch 32 --window 1000 --steps "$steps"
              --json --quiet --report-rss)
  case $mode in
    one) OPENBLAS_NUM_THREADS=2 "$bin" "${args[@]}" --threads 2 ;;
    data) "${mpi[@]}" "$bin" "${args[@]}" --threads 1 ;;
    pipeline) "${mpi[@]}" "$bin" "${args[@]}" --threads 1 --pipeline ;;
  esac | tail -1
}

results=$(mktemp)
for r in $(seq "$rounds"); do
  for cfg in A B; do
    modes=(one data)
    [ "$cfg" = B ] && modes+=(pipeline)
    for mode in "${modes[@]}"; do
      echo "$cfg $mode $(run "$cfg" "$mode")" >> "$results"
    done
  done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    cfg, mode, js = line.split(" ", 2)
    rows.setdefault((cfg, mode), []).append(json.loads(js))
print(f"{'config':<7}{'mode':<10}{'tokens/s':>10}{'× one':>8}{'wait %':>8}"
      f"{'planned MiB/rank':>18}{'measured MiB per rank':>24}")
for (cfg, mode), runs in rows.items():
    tps = statistics.median(r["tokens_per_s"] for r in runs)
    base = statistics.median(r["tokens_per_s"] for r in rows[(cfg, "one")])
    wait = statistics.median(100 * r.get("comm_wait_seconds", 0) / r["seconds"] for r in runs)
    last = runs[-1]
    planned = last.get("rank_planned_bytes") or [last["total_bytes"]]
    per = last.get("rank_rss_bytes") or [last["peak_rss_bytes"] - last["rss_before_compile_bytes"]]
    planned = " / ".join(f"{b / 2**20:.0f}" for b in planned)
    measured = " / ".join(f"{b / 2**20:.0f}" for b in per)
    print(f"{cfg:<7}{mode:<10}{tps:>10.0f}{tps / base:>8.2f}{wait:>8.1f}{planned:>18}{measured:>24}")
PY
rm -f "$results"
