#!/usr/bin/env bash
# tests/fuzz/build.sh - build the libFuzzer harnesses with clang, ASan and UBSan, straight
# from the sources (common/*/*.c and workers/validator/*.c but main.c) into tests/fuzz/out/.
#
# Separate from the meson build on purpose: the project builds with gcc, libFuzzer needs
# clang, and nothing here touches build/ or build-asan/. Objects are rebuilt only when a
# source or any header is newer, so a second run is quick.
#
#   tests/fuzz/build.sh   build out/fuzz_{request,event,config,reglog,httpapi} and out/seedgen
#
# Needs clang 14 and its runtimes (Debian: clang libclang-rt-14-dev; llvm for
# llvm-symbolizer), which scripts/install-deps.sh installs. CC overrides the compiler.
set -euo pipefail

readonly PROG=tests/fuzz/build.sh
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$here/out
cc=${CC:-clang}
harnesses=(request event config reglog httpapi)

die() {
    echo "$PROG: $*" >&2
    exit 1
}

command -v "$cc" >/dev/null 2>&1 || die "$cc not found: apt-get install clang libclang-rt-14-dev"
# Every library the project links (meson.build), whichever common/ file needs it.
pkgs=(rdkafka hiredis libcurl libcjson libfyaml libmicrohttpd openssl libisal)
pkg_cflags=$(pkg-config --cflags "${pkgs[@]}") || die "pkg-config: a library is missing (scripts/install-deps.sh)"
pkg_libs=$(pkg-config --libs "${pkgs[@]}")

# The libcurl that common/clients/http.c opens, as meson.build states it (once, there).
curl_soname=$(sed -n "s/^libcurl_soname = '\(.*\)'.*/\1/p" "$root/meson.build")
[ -n "$curl_soname" ] || die "meson.build: no libcurl_soname"

mkdir -p "$out/obj"
# -O1 and frame pointers: the usual libFuzzer trade between speed and readable stacks.
# UBSan findings abort (no recover), so libFuzzer saves them as crashes.
cflags=(-std=gnu11 -g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE
    -fsanitize=address,undefined -fno-sanitize-recover=undefined
    "-DDQ_SCHEMAS_SOURCE=\"$root/schemas\"" "-DDQ_SCHEMAS_INSTALLED=\"/nonexistent\""
    "-DDQ_VERSION=\"fuzz\"" "-DDQ_FUZZ_SCHEMAS=\"$root/schemas\""
    "-DDQ_LIBCURL_SONAME=\"$curl_soname\""
    -I"$root/common/base" -I"$root/common/clients" -I"$root/common/providers"
    -I"$root/common/domain" -I"$root/workers/validator")
# shellcheck disable=SC2206 # pkg-config output is a list of words
cflags+=($pkg_cflags)

# The library code is instrumented for coverage but compiled without -Werror: its warnings
# are the gcc build's business; the harnesses below are held to -Werror.
newest_header=$(ls -t "$root"/common/*/*.h "$root"/workers/validator/*.h | head -n1)
# The validator's own files but main.c (the checks, approvals and the state consumer),
# exactly as deployq-validator links them.
# The layers of common/ (common/meson.build) are one set of objects here.
sources=("$root"/common/*/*.c)
for src in "$root"/workers/validator/*.c; do
    [ "$(basename "$src")" = main.c ] || sources+=("$src")
done
objects=()
pids=()
for src in "${sources[@]}"; do
    obj=$out/obj/$(basename "${src%.c}").o
    objects+=("$obj")
    if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ] || [ "$newest_header" -nt "$obj" ] ||
        [ "$0" -nt "$obj" ]; then
        "$cc" "${cflags[@]}" -fsanitize=fuzzer-no-link -w -c "$src" -o "$obj" &
        pids+=($!)
    fi
done
for pid in "${pids[@]}"; do
    wait "$pid" || die "compiling the common sources failed (see above)"
done

warn=(-Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes)
# shellcheck disable=SC2206
libs=($pkg_libs -lpthread -lm)
for h in "${harnesses[@]}"; do
    "$cc" "${cflags[@]}" "${warn[@]}" -fsanitize=fuzzer "$here/fuzz_$h.c" "${objects[@]}" \
        "${libs[@]}" -o "$out/fuzz_$h" || die "linking fuzz_$h failed"
done
# seedgen is an ordinary program: the instrumented objects, no libFuzzer main.
"$cc" "${cflags[@]}" "${warn[@]}" -fsanitize=fuzzer-no-link "$here/seedgen.c" "${objects[@]}" \
    "${libs[@]}" -o "$out/seedgen" || die "linking seedgen failed"
echo "$PROG: built ${harnesses[*]/#/fuzz_} seedgen in ${out#"$root"/}"
