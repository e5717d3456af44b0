#!/usr/bin/env bash
# Proves a binary uses the system OpenBLAS: it is dynamically linked against
# libopenblas and imports cblas_sgemm (the only BLAS routine recur calls). The `blas`
# integration test checks the same at run time, bit for bit.
set -euo pipefail
bin="${1:-target/release/recur}"
lib=$(ldd "$bin" | grep -o 'libopenblas[^ ]*' | head -1 || true)
[ -n "$lib" ] || { echo "check_blas: $bin is not linked against libopenblas"; exit 1; }
# Read every symbol before searching: `nm | grep -q` under pipefail fails whenever grep
# exits at the match before nm has written the rest (SIGPIPE), as a large binary's nm does.
syms=$(nm -D --undefined-only "$bin")
grep -qw cblas_sgemm <<<"$syms" || { echo "check_blas: $bin does not import cblas_sgemm"; exit 1; }
echo "check_blas: $bin links $lib ($(readlink -f "$(ldconfig -p | grep -m1 'libopenblas.so.0' | awk '{print $NF}')")) and imports cblas_sgemm"
