#!/usr/bin/env bash
# test-all.sh: the README's second command, and what CI runs (.ci/run).
# Installs what is missing (Debian 12 packages, Java+Maven for the real Kafka), builds,
# and runs every test:
#   1. unit + schema + integration tests against the embedded broker   (build/)
#   2. the integration tests again against a real Apache Kafka 4.x      (build/)
#   3. the whole suite once more under ASan/UBSan, embedded broker     (build-asan/)
# It ends with one line of totals over all runs: "N passed, N failed, N skipped".
#
# Options (environment): DEPLOYQ_SKIP_INSTALL=1 skips the package step,
# DEPLOYQ_SKIP_REAL_KAFKA=1 skips run 2, DEPLOYQ_SKIP_ASAN=1 skips run 3.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

passed=0 failed=0 skipped=0 runs_failed=0
say() { printf '\n=== %s\n' "$*"; }

# run_suite NAME BUILD_DIR [meson test args...]: run meson test and add its totals.
run_suite() {
    local name=$1 dir=$2; shift 2
    local out="$dir/meson-logs/$name.out"
    say "$name"
    meson test -C "$dir" --print-errorlogs "$@" 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]}
    local ok fail skip tout xfail upass
    ok=$(awk '/^Ok:/ {print $2}' "$out" | tail -n1)
    xfail=$(awk '/^Expected Fail:/ {print $3}' "$out" | tail -n1)
    fail=$(awk '/^Fail:/ {print $2}' "$out" | tail -n1)
    upass=$(awk '/^Unexpected Pass:/ {print $3}' "$out" | tail -n1)
    skip=$(awk '/^Skipped:/ {print $2}' "$out" | tail -n1)
    tout=$(awk '/^Timeout:/ {print $2}' "$out" | tail -n1)
    passed=$((passed + ${ok:-0} + ${xfail:-0}))
    failed=$((failed + ${fail:-0} + ${upass:-0} + ${tout:-0}))
    skipped=$((skipped + ${skip:-0}))
    if [ "$rc" -ne 0 ]; then
        runs_failed=$((runs_failed + 1))
        # A run that failed before counting anything must still count as a failure.
        [ -n "$ok$fail$tout" ] || failed=$((failed + 1))
    fi
}

if [ -z "${DEPLOYQ_SKIP_INSTALL:-}" ]; then
    say "installing dependencies"
    scripts/install-deps.sh --with-java || { echo "dependency installation failed"; echo "0 passed, 1 failed"; exit 1; }
fi

say "building (build/)"
if ! scripts/build.sh build; then
    echo "0 passed, 1 failed"
    exit 1
fi
run_suite "unit and integration, embedded broker" build

if [ -z "${DEPLOYQ_SKIP_REAL_KAFKA:-}" ]; then
    say "starting a real Apache Kafka (KRaft)"
    kdir=$(mktemp -d /tmp/dq-kafka.XXXXXX)
    if brokers=$(scripts/kafka.sh start --dir "$kdir"); then
        DEPLOYQ_TEST_BROKERS=$brokers run_suite "integration, real Apache Kafka ($brokers)" build --suite integration
        scripts/kafka.sh stop --dir "$kdir" || true
    else
        echo "real Kafka did not start"
        failed=$((failed + 1))
        runs_failed=$((runs_failed + 1))
    fi
    rm -rf "$kdir"
fi

if [ -z "${DEPLOYQ_SKIP_ASAN:-}" ]; then
    say "building with ASan/UBSan (build-asan/)"
    if scripts/build.sh build-asan -Db_sanitize=address,undefined -Db_lundef=false; then
        ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp} \
            run_suite "ASan/UBSan: unit and integration, embedded broker" build-asan
    else
        failed=$((failed + 1))
        runs_failed=$((runs_failed + 1))
    fi
fi

say "totals over all runs"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$runs_failed" -eq 0 ]
