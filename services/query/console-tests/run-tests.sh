#!/usr/bin/env bash
# Runs the web console's real-browser tests: headless Chromium (playwright-core, the system's
# browser) against the console that a real `eye dev` serves (eye-query's HTTP port), with events
# sent over gRPC by `eye send`. They also write the console's screenshots and the measured live
# tail latency into docs/console/.
#
#   services/query/console-tests/run-tests.sh [node --test args...]
#
# EYE_BIN: the eye binary (default <repo root>/target/debug/eye; eye dev runs the ingest,
#          validator and writer binaries next to it). CHROMIUM: the browser (default
#          /usr/bin/chromium; no browser is downloaded).
# playwright-core is installed with `npm ci` from the committed package-lock.json. The tests
# import the browser tracker's harness (clients/js/test/harness.mjs); NODE_PATH lets it find
# playwright-core here when clients/js has no node_modules of its own. Exits non-zero on any
# failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
npm ci --no-audit --no-fund --silent
export NODE_PATH="$here/node_modules${NODE_PATH:+:$NODE_PATH}"
# One file at a time: each starts its own eye dev and PostgreSQL, and the machine may have only
# 2 cores.
exec node --test --test-concurrency=1 "$@" test/*.test.mjs
