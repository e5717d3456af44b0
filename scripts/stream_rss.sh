#!/usr/bin/env bash
# Memory independent of the data's length: trains the same model on generated token
# streams of 10^6 and 10^8 tokens (uint16 .npy, 2 MB and 200 MB) and sets the peak RSS
# of both runs, as /usr/bin/time -v reports it (mapped file pages included), side by
# side. Fails if they differ by more than 5%. Opening scans every token; the windows
# then read B stripes spread over the whole file. (tests/it/resident.rs checks the
# resident pages of the file through whole passes, set epochs and evaluations.)
# Usage: scripts/stream_rss.sh [threads] [steps]    (B32 E64 H256 L1 T64, vocabulary 64)
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS="${1:-2}"
cargo build --release --quiet
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for n in 1000000 100000000; do
  python3 -c "
import numpy as np, sys
n = int(sys.argv[1])
out = np.lib.format.open_memmap(sys.argv[2], mode='w+', dtype=np.uint16, shape=(n,))
rng = np.random.default_rng(0)
for i in range(0, n, 1 << 24):
    out[i:i + (1 << 24)] = rng.integers(0, 64, min(1 << 24, n - i), dtype=np.uint16)
out.flush()
" "$n" "$dir/t$n.npy"
done
steps="${2:-300}"
printf '%-12s %10s %8s %12s %12s %10s\n' tokens file steps "peak RSS" planned "tok/s"
declare -A peak
for n in 1000000 100000000; do
  out=$(/usr/bin/time -v target/release/recur train --data "$dir/t$n.npy" --steps "$steps" \
        --json --hidden 256 --embed 64 --batch 32 --window 64 2>"$dir/time")
  kb=$(grep 'Maximum resident' "$dir/time" | awk '{print $NF}')
  peak[$n]=$kb
  python3 - "$out" "$kb" "$n" "$(stat -c %s "$dir/t$n.npy")" "$steps" <<'PY'
import json, sys
s = json.loads(sys.argv[1]); M = 2**20
print(f"{int(sys.argv[3]):<12} {int(sys.argv[4])/M:9.1f}M {sys.argv[5]:>8} {int(sys.argv[2])*1024/M:11.1f}M "
      f"{s['total_bytes']/M:11.1f}M {s['tokens_per_s']:10.0f}")
PY
done
python3 -c "
import sys
a, b = int(sys.argv[1]), int(sys.argv[2])
r = b / a
print(f'peak RSS 10^8 / 10^6: {r:.3f} ({100 * (r - 1):+.1f}%)')
sys.exit(0 if r <= 1.05 else 1)
" "${peak[1000000]}" "${peak[100000000]}"
