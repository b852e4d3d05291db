#!/usr/bin/env bash
# tests/browser/run.sh - run a browser test of this folder with node, installing
# playwright-core from package-lock.json first when node_modules lacks it (npm ci; the
# browser itself is Debian's chromium, never downloaded).
#
# usage: tests/browser/run.sh dashboard.test.mjs ARGS...
# Exits 77 (skipped) when node or chromium is missing, 1 when npm ci fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${CHROMIUM:=/usr/bin/chromium}"

command -v node >/dev/null 2>&1 || { echo "# skipped: node is missing (scripts/install-deps.sh)" >&2; exit 77; }
[ -x "$CHROMIUM" ] || { echo "# skipped: $CHROMIUM is missing (scripts/install-deps.sh)" >&2; exit 77; }
if [ ! -f "$here/node_modules/playwright-core/package.json" ]; then
    command -v npm >/dev/null 2>&1 || { echo "run.sh: npm is missing, cannot install playwright-core" >&2; exit 1; }
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) >&2 ||
        { echo "run.sh: npm ci failed in $here" >&2; exit 1; }
fi
export CHROMIUM
exec node "$here/$1" "${@:2}"
