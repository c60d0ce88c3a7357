#!/usr/bin/env bash
# Takes a headless-Chromium screenshot of a running funnel's live stats page.
# It starts nothing itself: point it at the [stats] listen address of a
# funnel that is already running (and, for an interesting picture, busy).
#
#   scripts/screenshot-live-page.sh [URL] [OUTPUT.png]
#   scripts/screenshot-live-page.sh http://127.0.0.1:9033/ docs/live-page.png
#
# Needs Chromium (Debian: apt-get install -y chromium). The page polls
# /stats.json every second; --virtual-time-budget lets it run for 5 s of
# page time before the picture is taken, so it has data and has drawn it.
set -euo pipefail

url="${1:-http://127.0.0.1:9033/}"
out="${2:-live-page.png}"

browser=""
for candidate in chromium chromium-browser google-chrome; do
    if command -v "$candidate" >/dev/null 2>&1; then
        browser="$candidate"
        break
    fi
done
if [ -z "$browser" ]; then
    echo "screenshot-live-page: no chromium found (apt-get install -y chromium)" >&2
    exit 1
fi

if ! curl -fsS -o /dev/null --max-time 5 "${url%/}/health" 2>/dev/null; then
    # /health answers 503 when unhealthy; only a refused connection is fatal.
    if ! curl -sS -o /dev/null --max-time 5 "${url%/}/health"; then
        echo "screenshot-live-page: nothing answers at $url (is the funnel running with [stats]?)" >&2
        exit 1
    fi
fi

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --screenshot="$out" --window-size=1200,800 \
    --virtual-time-budget=5000 "$url" 2>/dev/null
echo "screenshot-live-page: wrote $out"
