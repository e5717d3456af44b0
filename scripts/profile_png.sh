#!/usr/bin/env bash
# Renders a `recur profile` report with headless Chromium (Debian's `chromium`) to
# docs/profile.png, the picture the README shows. Installs chromium if missing.
#   scripts/profile_png.sh [recur binary]
set -euo pipefail
cd "$(dirname "$0")/.."
recur=${1:-target/release/recur}
if ! command -v chromium >/dev/null; then
    echo "installing chromium (Debian package) to render the report" >&2
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
[ -x "$recur" ] || cargo build --release --quiet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
OPENBLAS_NUM_THREADS=2 "$recur" profile --hidden 256 --batch 32 --window 512 \
    --checkpoint sqrt --steps 10 --vs "--checkpoint none" --out "$out/profile.html"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size=1100,6300 --screenshot="$out/profile.png" "file://$out/profile.html" \
    2>/dev/null
cp "$out/profile.png" docs/profile.png
echo "wrote docs/profile.png"
