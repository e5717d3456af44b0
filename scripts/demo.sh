#!/usr/bin/env bash
# The main job for a new user: install what is missing, build, run `recur demo` (an LSTM
# learns a generated bracket-matching stream for about a minute). Extra arguments go to
# `recur demo`, e.g. `scripts/demo.sh --seconds 20`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
cargo build --release --quiet
exec target/release/recur demo "$@"
