#!/usr/bin/env bash
# Builds the minified tracker: clients/js/eye.js -> clients/js/eye.min.js (served by eye-ingest at
# GET /v1/eye.js, which embeds the file at compile time: rebuild the binary after this).
#
#   clients/js/build.sh [OUTPUT]     (default: clients/js/eye.min.js)
#
# terser is the version pinned in package-lock.json (installed by `npm ci` when missing), so the
# output is reproducible: test/build.test.mjs checks that eye.min.js is what this script makes now.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/eye.min.js}"
if [[ ! -x "$here/node_modules/.bin/terser" ]]; then
  (cd "$here" && npm ci --no-audit --no-fund --silent)
fi
"$here/node_modules/.bin/terser" "$here/eye.js" \
  --compress passes=3,unsafe_arrows --mangle --comments false --ecma 2020 --output "$out"
# terser ends without a newline; the file is text, so end it with one.
echo >>"$out"
