#!/usr/bin/env bash
# Runs the browser tracker's tests: the build checks (eye.min.js is current, within 2 KiB
# gzipped) and the real-browser tests (headless Chromium against a real `eye dev`).
#
#   clients/js/run-tests.sh [node --test args...]
#
# EYE_BIN: the eye binary (default <repo root>/target/debug/eye; eye dev runs the ingest,
#          validator and writer binaries next to it). CHROMIUM: the browser (default
#          /usr/bin/chromium; playwright-core drives it, no browser is downloaded).
# The npm packages (terser, playwright-core) are installed with `npm ci` from the committed
# package-lock.json. Exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
npm ci --no-audit --no-fund --silent
# One file at a time: the browser tests start their own eye dev and PostgreSQL, and the
# machine may have only 2 cores.
exec node --test --test-concurrency=1 "$@" test/*.test.mjs
