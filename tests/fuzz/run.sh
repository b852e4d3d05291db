#!/usr/bin/env bash
# tests/fuzz/run.sh - build the fuzz harnesses and run each for a bounded time, as many at
# once as there are CPUs; fail if any finds a crash, a leak, undefined behaviour, a timeout
# or a broken invariant.
#
#   tests/fuzz/run.sh [SECONDS] [HARNESS...]   SECONDS per harness (default 30); harnesses
#                                              request event config reglog httpapi (default
#                                              all)
#
# Each harness starts from its checked-in seeds (tests/fuzz/corpus/<harness>, only read)
# plus what earlier runs found (tests/fuzz/out/corpus/<harness>, gitignored), so repeated
# runs on one machine go deeper. A harness with a dictionary (tests/fuzz/<harness>.dict)
# gets it with -dict=. Per harness it prints one line:
#   fuzz_request: PASS 812345 execs in 30 s (27078/s), corpus 44 seeds + 312 found, cov 1020
# and logs to tests/fuzz/out/logs/<harness>.log. A finding is saved as
# tests/fuzz/out/crashes/<harness>-crash-<sha1>; reproduce it with
#   tests/fuzz/out/fuzz_<harness> tests/fuzz/out/crashes/<harness>-crash-<sha1>
# The last line is "fuzz: N passed, N failed"; the exit status is 0 only if none failed.
set -uo pipefail

readonly PROG=tests/fuzz/run.sh
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$here/out
seconds=${1:-30}
shift || true
harnesses=("$@")
[ "${#harnesses[@]}" -gt 0 ] || harnesses=(request event config reglog httpapi)

case $seconds in
'' | *[!0-9]*) echo "$PROG: SECONDS must be a whole number, not '$seconds'" >&2; exit 2 ;;
esac

# The largest input each harness tries: well above its biggest seed, small enough that
# the fuzzer spends its time on structure rather than on bulk.
max_len() {
    case $1 in
    request) echo 16384 ;;
    event) echo 8192 ;;
    config) echo 8192 ;;
    reglog) echo 16384 ;;
    httpapi) echo 4096 ;;
    *) echo "$PROG: unknown harness '$1' (request event config reglog httpapi)" >&2; return 1 ;;
    esac
}
for h in "${harnesses[@]}"; do
    max_len "$h" >/dev/null || exit 2
done

if ! "$here/build.sh"; then
    for h in "${harnesses[@]}"; do echo "fuzz_$h: FAIL (build failed)"; done
    echo "fuzz: 0 passed, ${#harnesses[@]} failed"
    exit 1
fi

# The registry harness writes segment files for every input: tmpfs when there is one.
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=${TMPDIR:-/tmp}
tmp=$(mktemp -d "$shm/dq-fuzz.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$out/logs" "$out/crashes"
symbolizer=$(command -v llvm-symbolizer || command -v llvm-symbolizer-14 || true)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$here/lsan.supp:print_suppressions=0}
[ -z "$symbolizer" ] || export ASAN_SYMBOLIZER_PATH=$symbolizer
export DQ_FUZZ_TMP=$tmp
export DEPLOYQ_SCHEMAS=$root/schemas

# One harness per CPU at a time (DQ_FUZZ_JOBS overrides): each gets the whole SECONDS of a
# core of its own, so the exec counts mean the same on any machine.
jobs=${DQ_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
run_one() {
    local h=$1
    local asan=$ASAN_OPTIONS
    local extra=()
    mkdir -p "$out/corpus/$h"
    # libfyaml has no frame pointers: without full malloc stacks a leak inside it cannot be
    # told from one of ours, and lsan.supp could not name it.
    # That unwinding on every malloc and free costs about 15 times the parse itself: the
    # largest alias expansion the loader allows (250,000 nodes) takes 5.4 s here against
    # 0.36 s with fast unwinding (0.09 s in a normal build), so this harness's timeout is
    # 20 s; an input that really hangs still trips it.
    local timeout=5
    [ "$h" != config ] || { asan=$asan:fast_unwind_on_malloc=0; timeout=20; }
    [ ! -f "$here/$h.dict" ] || extra+=("-dict=$here/$h.dict")
    # The HTTP server frees a connection's memory in its own thread after the answer, so
    # libFuzzer's leak check after each input would always suspect one (and spend the run
    # on re-runs and heap scans); LeakSanitizer still checks at exit, after the harness has
    # stopped the servers and joined their threads.
    [ "$h" != httpapi ] || extra+=(-detect_leaks=0)
    # The first directory receives new inputs; the checked-in seeds are only read.
    ASAN_OPTIONS=$asan "$out/fuzz_$h" "$out/corpus/$h" "$here/corpus/$h" \
        -max_total_time="$seconds" -max_len="$(max_len "$h")" -timeout="$timeout" -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$out/crashes/$h-" "${extra[@]}" \
        >"$out/logs/$h.log" 2>&1
    echo $? >"$out/logs/$h.rc"
}
running=0
for h in "${harnesses[@]}"; do
    rm -f "$out/logs/$h.rc"
    run_one "$h" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

passed=0 failed=0
for h in "${harnesses[@]}"; do
    rc=$(cat "$out/logs/$h.rc" 2>/dev/null || echo 1)
    log=$out/logs/$h.log
    execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -n1)
    rate=$(awk '/stat::average_exec_per_sec:/ {print $2}' "$log" | tail -n1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | awk '{print $2}')
    seeds=$(find "$here/corpus/$h" -type f | wc -l)
    found=$(find "$out/corpus/$h" -type f | wc -l)
    summary="${execs:-0} execs in $seconds s (${rate:-0}/s), corpus $seeds seeds + $found found, cov ${cov:-0}"
    if [ "$rc" -eq 0 ] && grep -q '^Done [0-9]* runs' "$log"; then
        echo "fuzz_$h: PASS $summary"
        passed=$((passed + 1))
    else
        echo "fuzz_$h: FAIL (exit $rc) $summary"
        # The finding itself: the sanitizer or invariant report and the saved input.
        grep -E -m 20 'ERROR: |runtime error|invariant broken|SUMMARY|Test unit written|^    #[0-9]' "$log" |
            sed 's/^/    /'
        echo "    full log: ${log#"$root"/}"
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
