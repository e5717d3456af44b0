#!/usr/bin/env bash
# Installs what recur needs on Debian/Ubuntu and is missing: OpenBLAS (headers and
# library), a C toolchain and pkg-config for the -sys crates, and Rust if absent; with
# RECUR_MPI=1, Open MPI too.
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

pkgs=(libopenblas-dev pkg-config gcc ca-certificates curl)
# Training over MPI (`--features mpi`, what scripts/test.sh tests): Open MPI, and
# libclang for the bindings rsmpi generates.
if [ "${RECUR_MPI:-0}" = 1 ]; then pkgs+=(libopenmpi-dev openmpi-bin libclang-dev); fi
need=()
for pkg in "${pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "installing Rust (rustup, stable)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
