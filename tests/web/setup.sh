#!/usr/bin/env bash
# Makes ready what the web page's end-to-end tests need: Debian's chromium
# (a test tool's own browser download does not work here) and playwright-core,
# pinned by package-lock.json. Run by .ci/run, and by tests/web_page.rs when
# something is missing. Needs root for apt-get, and the network.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v chromium >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d node_modules/playwright-core ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
