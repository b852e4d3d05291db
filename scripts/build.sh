#!/usr/bin/env bash
# build.sh [BUILD_DIR] [meson options...]: configure (once) and build deployq.
# Default BUILD_DIR is build/. Used by quickstart.sh and test-all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >/dev/null
fi
ninja -C "$dir" >/dev/null
echo "built in $dir/"
