#!/usr/bin/env bash
# scripts/install-deps.sh - everything deployq needs to build and test, on Debian 12.
#
# Idempotent: when every package is already installed it runs no apt-get at all (a
# dpkg-query check), so CI can call it on every run for well under 2 s. It never starts a
# service: redis-server's and prometheus's installs would start one, so a policy-rc.d
# that refuses is in place while apt-get runs (tests start their own redis-server on a
# free port; prometheus is there for `promtool`).
#
# It also caches the Compose Specification's JSON Schema (tests/docker/compose-spec.pin:
# the Go module github.com/compose-spec/compose-go/v2 at a pinned version, fetched with
# `go mod download`, its schema/compose-spec.json checked against a pinned sha256) in
# ${DEPLOYQ_CACHE:-~/.cache/deployq}/compose-spec/<version>/, as scripts/kafka.sh caches
# its jars. Go comes from Debian's golang-go when `go` is missing.
#
#   scripts/install-deps.sh              the build, test and tool packages
#   scripts/install-deps.sh --with-java  also Java 17+ and Maven, for scripts/kafka.sh (a
#                                        real Apache Kafka), each only if missing
#   scripts/install-deps.sh --check      install nothing; list what is missing, exit 1 if any
#
# The dashboard's browser test also needs Debian's chromium, node and npm (any node >= 18:
# Debian's nodejs, or NodeSource's, which brings its own npm), and playwright-core in
# tests/browser/node_modules, installed with `npm ci` from the checked-in lock file.
#
# Run it as root, or as a user with sudo.
set -euo pipefail

readonly PROG=install-deps.sh

readonly PACKAGES=(
    # build
    build-essential meson ninja-build pkg-config clang
    # fuzzing (tests/fuzz/): clang's libFuzzer/ASan/UBSan/LSan runtimes (only recommended
    # by clang, and recommends are not installed) and llvm-symbolizer for readable stacks
    libclang-rt-14-dev llvm
    # libraries (the -dev packages pull in the runtime ones)
    librdkafka-dev libhiredis-dev libcurl4-openssl-dev libcjson-dev libcmocka-dev
    libfyaml-dev libmicrohttpd-dev libssl-dev libisal-dev
    # tests: a real Redis, kcat for Kafka, an independent JSON Schema validator
    redis-server redis-tools kcat python3 python3-jsonschema jq curl ca-certificates
    # the compose and monitoring checks (tests/docker/): YAML for python, and promtool
    # (from Debian's prometheus; its service is kept from starting, as redis-server's)
    python3-yaml prometheus
    # canary: a real weighted router, HAProxy (its runtime API; its service is kept from
    # starting too: tests start their own on loopback)
    haproxy
    # the dashboard's browser test: a real headless Chromium (node comes below)
    chromium fonts-dejavu-core
)
readonly JAVA_PACKAGES_JRE=openjdk-17-jre-headless
readonly JAVA_PACKAGES_MVN=maven

die() {
    echo "$PROG: $*" >&2
    exit 1
}

note() {
    echo "$PROG: $*" >&2
}

usage() {
    sed -n '2,25s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}

with_java=0
check_only=0
while [ $# -gt 0 ]; do
    case $1 in
    --with-java) with_java=1 ;;
    --check) check_only=1 ;;
    -h | --help) usage 0 ;;
    *) note "unknown option: $1"; usage ;;
    esac
    shift
done

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    die "this script needs a Debian system (dpkg and apt-get); on others install the packages it lists by hand"
fi

if [ -r /etc/debian_version ]; then
    case $(cat /etc/debian_version) in
    12* | bookworm*) ;;
    *) note "warning: written for Debian 12, this is Debian $(cat /etc/debian_version); trying anyway" ;;
    esac
fi

# Prints the packages of "$@" that are not fully installed, one a line.
missing_of() {
    local installed
    # dpkg-query names unknown packages on stderr and exits 1; those count as missing.
    installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null |
        awk '$2 == "installed" { print $1 }' || true)
    local p
    for p in "$@"; do
        grep -qx -- "$p" <<<"$installed" || echo "$p"
    done
}

# The major version of `java`: `openjdk version "17.0.15"` -> 17, `"1.8.0_392"` -> 8.
java_major() {
    local line first second
    line=$(java -version 2>&1 | head -n 1) || return 1
    read -r first second < <(printf '%s\n' "$line" |
        sed -n 's/.*version "\([0-9]*\)\.\{0,1\}\([0-9]*\).*/\1 \2/p') || true
    [ -n "${first:-}" ] || return 1
    if [ "$first" = 1 ]; then echo "${second:-0}"; else echo "$first"; fi
}

want=()
mapfile -t want < <(missing_of "${PACKAGES[@]}")
# node and npm only when the commands are missing: a NodeSource nodejs already has npm,
# and Debian's npm package would conflict with it.
command -v node >/dev/null 2>&1 || want+=(nodejs)
command -v npm >/dev/null 2>&1 || want+=(npm)
# go only for `go mod download` of the compose schema's module; any Go >= 1.17 will do.
command -v go >/dev/null 2>&1 || want+=(golang-go)
if [ "$with_java" = 1 ]; then
    major=0
    if command -v java >/dev/null 2>&1; then
        major=$(java_major || echo 0)
    fi
    if [ "$major" -lt 17 ]; then
        [ "$major" = 0 ] || note "java $major is too old for Kafka 4 (needs 17+); adding $JAVA_PACKAGES_JRE"
        want+=("$JAVA_PACKAGES_JRE")
    fi
    command -v mvn >/dev/null 2>&1 || want+=("$JAVA_PACKAGES_MVN")
fi

# playwright-core for tests/browser, from package-lock.json (no browser download: the
# test drives /usr/bin/chromium).
readonly BROWSER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/browser
browser_modules_ok() { [ -f "$BROWSER_DIR/node_modules/playwright-core/package.json" ]; }
install_browser_modules() {
    browser_modules_ok && return 0
    note "installing playwright-core into tests/browser/node_modules (npm ci)"
    (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error) ||
        die "npm ci failed in $BROWSER_DIR (network? see the npm output above)"
}

# The Compose Specification's schema for tests/docker/compose_check.py, at the version
# and sha256 of tests/docker/compose-spec.pin.
readonly PIN_FILE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/docker/compose-spec.pin
pin_field() { awk -v k="$1" '$1 == k { print $2 }' "$PIN_FILE"; }
readonly SCHEMA_MODULE=$(pin_field module) SCHEMA_VERSION=$(pin_field version)
readonly SCHEMA_SHA256=$(pin_field sha256)
readonly SCHEMA_FILE=${DEPLOYQ_CACHE:-$HOME/.cache/deployq}/compose-spec/$SCHEMA_VERSION/compose-spec.json
compose_schema_ok() {
    [ -f "$SCHEMA_FILE" ] && [ "$(sha256sum "$SCHEMA_FILE" | cut -d' ' -f1)" = "$SCHEMA_SHA256" ]
}
fetch_compose_schema() {
    compose_schema_ok && return 0
    [ -n "$SCHEMA_MODULE" ] && [ -n "$SCHEMA_VERSION" ] && [ -n "$SCHEMA_SHA256" ] ||
        die "$PIN_FILE: needs module, version and sha256 lines"
    note "fetching the compose schema: $SCHEMA_MODULE@$SCHEMA_VERSION (go mod download)"
    local dir got
    # Outside any module; GOFLAGS=-mod=mod so a caller's -mod=vendor cannot interfere.
    dir=$(cd / && GOFLAGS=-mod=mod go mod download -json "$SCHEMA_MODULE@$SCHEMA_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p') ||
        die "go mod download $SCHEMA_MODULE@$SCHEMA_VERSION failed (network? GOPROXY=$(go env GOPROXY))"
    [ -f "$dir/schema/compose-spec.json" ] || die "$SCHEMA_MODULE@$SCHEMA_VERSION has no schema/compose-spec.json"
    got=$(sha256sum "$dir/schema/compose-spec.json" | cut -d' ' -f1)
    [ "$got" = "$SCHEMA_SHA256" ] ||
        die "compose-spec.json of $SCHEMA_MODULE@$SCHEMA_VERSION has sha256 $got, the pin says $SCHEMA_SHA256"
    mkdir -p "$(dirname "$SCHEMA_FILE")"
    # install: the module cache's files are read-only, the cached copy need not be.
    install -m 0644 "$dir/schema/compose-spec.json" "$SCHEMA_FILE.tmp" && mv -f "$SCHEMA_FILE.tmp" "$SCHEMA_FILE"
    note "compose schema cached: $SCHEMA_FILE"
}

if [ "${#want[@]}" -eq 0 ]; then
    if [ "$check_only" = 1 ]; then
        rc=0
        browser_modules_ok || { note "missing: tests/browser/node_modules (npm ci)"; rc=1; }
        compose_schema_ok || { note "missing: $SCHEMA_FILE (the compose schema)"; rc=1; }
        [ "$rc" = 1 ] || note "all packages present"
        exit "$rc"
    fi
    install_browser_modules
    fetch_compose_schema
    note "all packages present"
    exit 0
fi

if [ "$check_only" = 1 ]; then
    browser_modules_ok || want+=("tests/browser/node_modules (npm ci)")
    compose_schema_ok || want+=("$SCHEMA_FILE (the compose schema)")
    note "missing: ${want[*]}"
    exit 1
fi

# Root runs apt-get directly; anyone else goes through sudo.
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 ||
        die "not root and sudo is missing: run as root to install: ${want[*]}"
    SUDO=(sudo)
fi

note "installing: ${want[*]}"

# While apt-get runs, policy-rc.d exits 101 ("action forbidden") so postinst scripts do
# not start redis-server or prometheus; an existing policy-rc.d is put back afterwards.
readonly POLICY=/usr/sbin/policy-rc.d
readonly POLICY_SAVED=/usr/sbin/policy-rc.d.deployq-saved
restore_policy() {
    if [ -e "$POLICY_SAVED" ]; then
        "${SUDO[@]}" mv -f "$POLICY_SAVED" "$POLICY"
    else
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
if [ -e "$POLICY" ]; then
    "${SUDO[@]}" mv -f "$POLICY" "$POLICY_SAVED"
fi
trap restore_policy EXIT
printf '#!/bin/sh\n# Written by deployq scripts/install-deps.sh while it installs packages.\nexit 101\n' |
    "${SUDO[@]}" tee "$POLICY" >/dev/null
"${SUDO[@]}" chmod 755 "$POLICY"

# Slim images leave out /usr/share/man, and the JRE's postinst fails registering its man
# pages with update-alternatives when man1 is missing.
case " ${want[*]} " in
*" $JAVA_PACKAGES_JRE "* | *" $JAVA_PACKAGES_MVN "*) "${SUDO[@]}" mkdir -p /usr/share/man/man1 ;;
esac

export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq; then
    die "apt-get update failed: check the network and /etc/apt/sources.list*"
fi
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${want[@]}"; then
    die "apt-get install failed for: ${want[*]} (see the apt output above)"
fi

# Installed is not the same as usable: check what was asked for is now there.
still=()
mapfile -t still < <(missing_of "${want[@]}")
[ "${#still[@]}" -eq 0 ] || die "still missing after apt-get: ${still[*]}"
if [ "$with_java" = 1 ]; then
    [ "$(java_major || echo 0)" -ge 17 ] ||
        die "java 17+ is still not the default 'java'; pick it: update-alternatives --config java"
    command -v mvn >/dev/null 2>&1 || die "mvn is still missing after installing maven"
fi
install_browser_modules
fetch_compose_schema
note "done"
