#!/usr/bin/env bash
# Fuzzes the readers of untrusted files with libFuzzer (cargo-fuzz), each target for at
# least RUNS executions (default 1 000 000), from seeds made by a real run: .npy data,
# offsets and labels; weights and snapshot tensors; a snapshot's manifest and state;
# a run's config. Prints each target's executions, time and coverage; a crash stops the
# script with the input saved under scripts/fuzz/artifacts/TARGET/ (keep it in
# tests/data/hostile/TARGET/ once fixed).
#
#   scripts/fuzz.sh                 # every target, 10^6 runs each
#   RUNS=100000 scripts/fuzz.sh npy # one target, fewer runs
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-1000000}
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(npy safetensors snapshot config)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz passes nightly flags (-Zsanitizer=address); the stable toolchain takes
# them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1

fz=scripts/fuzz
seeds=$fz/seeds
if [ ! -d "$seeds" ]; then
  cargo build --release --quiet
  r=$PWD/target/release/recur
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$seeds"/{npy,safetensors,snapshot,config}
  { echo 'date,price,volume'; printf '2024-01-0%d,%d.5,%d\n' 1 10 3 2 11 4 3 12 5 4 9 6; } >"$tmp/s.csv"
  (cd "$tmp" && "$r" data csv s.csv s.npy >/dev/null)
  python3 - "$tmp" <<'PY'
import struct, sys
d = sys.argv[1]
def npy(descr, shape, data):
    h = ("{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)).encode()
    while (10 + len(h) + 1) % 64: h += b' '
    h += b'\n'
    return b'\x93NUMPY\x01\x00' + struct.pack('<H', len(h)) + h + data
open(d + '/tok.npy', 'wb').write(npy('<i8', '(6,)', struct.pack('<6q', 1, 5, 2, 7, 3, 3)))
open(d + '/off.npy', 'wb').write(npy('<i8', '(4,)', struct.pack('<4q', 0, 2, 5, 6)))
open(d + '/lab.npy', 'wb').write(npy('|u1', '(3,)', bytes([0, 2, 1])))
open(d + '/u16.npy', 'wb').write(npy('<u2', '(4,)', struct.pack('<4H', 9, 0, 65535, 3)))
PY
  cp "$tmp"/{s,tok,off,lab,u16}.npy "$seeds/npy/"
  head -c 3000 README.md >"$tmp/t.txt"
  (cd "$tmp" && "$r" train --data t.txt --hidden 6 --embed 3 --batch 2 --window 8 \
      --steps 2 --save-every 2 --out run --quiet >/dev/null)
  (cd "$tmp" && "$r" train --data tok.npy --offsets off.npy --labels lab.npy --bidirectional \
      --hidden 4 --embed 2 --batch 2 --steps 2 --save-every 2 --bucket --out set --quiet >/dev/null)
  for run in run set; do
    s=$(ls -d "$tmp/$run"/snapshots/step-* | tail -1)
    cp "$s/model.safetensors" "$seeds/safetensors/$run-model"
    cp "$s/state.safetensors" "$seeds/safetensors/$run-state"
    cp "$s/manifest.json" "$seeds/snapshot/$run-manifest"
    cp "$s/state.json" "$seeds/snapshot/$run-state"
    cp "$s/config.toml" "$seeds/config/$run-config"
  done
  cp tests/data/hostile/npy/* "$seeds/npy/" 2>/dev/null || true
fi

for t in "${targets[@]}"; do
  mkdir -p "$fz/corpus/$t"
  echo "== $t: $RUNS runs"
  log=$(mktemp)
  start=$(date +%s)
  # -a: debug assertions and overflow checks on, so an overflow is a crash too.
  status=0
  cargo fuzz run -a --fuzz-dir "$fz" "$t" "$fz/corpus/$t" "$seeds/$t" tests/data/hostile/"$t" -- \
      -runs="$RUNS" -max_len=65536 -malloc_limit_mb=512 -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^#[0-9]+.*DONE|ERROR|panicked|SUMMARY|Test unit written' "$log" || true
  secs=$(( $(date +%s) - start ))
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
  echo "$t: $runs executions in ${secs} s (build included), coverage $cov, exit $status"
  if [ "$status" -ne 0 ] || [ "${runs:-0}" -lt "$RUNS" ]; then
    tail -40 "$log"
    rm -f "$log"
    echo "$t: FAILED (see scripts/fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  rm -f "$log"
done
