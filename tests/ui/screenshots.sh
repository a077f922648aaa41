#!/usr/bin/env bash
# Makes the README's screenshots (tests/ui/screenshots/*.png) of the web UI and the dashboard:
# runs the e-commerce stream pipeline for two months on embedded defaults in a throwaway state
# directory, serves `windsock ui`, and lets tests/ui/drive.cjs (the browser test's driver) take
# the pictures. Needs Chromium and playwright-core, as the UI test does (.ci/run installs both).
#
#     tests/ui/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET="${CARGO_TARGET_DIR:-target}"
BIN="${WINDSOCK_BIN:-$TARGET/release/windsock}"
PLAYWRIGHT="${WINDSOCK_PLAYWRIGHT:-$HOME/.cache/windsock-ci/browser/node_modules/playwright-core}"
CHROMIUM="${WINDSOCK_CHROMIUM:-/usr/bin/chromium}"
STATE="$(mktemp -d)"
trap 'kill "$UI_PID" 2>/dev/null || true; rm -rf "$STATE"' EXIT
UI_PID=""

for month in 2019-11 2019-12; do
  "$BIN" --home "$STATE" run ecommerce_stream --partition "$month" > "$STATE/run.out"
done
RUN_ID="$(head -1 "$STATE/run.out")"
"$BIN" --home "$STATE" ui --bind 127.0.0.1:0 > "$STATE/ui.out" 2>/dev/null &
UI_PID=$!
for _ in $(seq 50); do [ -s "$STATE/ui.out" ] && break; sleep 0.1; done
URL="$(head -1 "$STATE/ui.out")"
mkdir -p tests/ui/screenshots
PLAYWRIGHT="$PLAYWRIGHT" CHROMIUM="$CHROMIUM" UI_URL="$URL" DAG=ecommerce_stream \
  RUN_ID="$RUN_ID" TASK=refresh_reporting SCREENSHOTS=tests/ui/screenshots \
  node tests/ui/drive.cjs > /dev/null
ls -l tests/ui/screenshots
