#!/usr/bin/env bash
# tests/bench/run.sh [BUILD_DIR]: every row of docs/performance.md's table of figures in one
# run, one bench after the other (never two at once), each next to the tool a user would
# otherwise use, measured alternately in the same run. Each bench also runs alone:
# tests/bench/NAME.sh BUILD_DIR (its header says what it measures and its knobs).
#
#   validator  requests/s of one validator on one core; kcat consuming and producing the
#              same messages as the ceiling                                  (embedded)
#   submit     one acknowledged `deployq submit` against `kcat -P`, and the tail of 200
#              of each while the machine is busy                              (embedded)
#   lock       fenced lock acquire + release against `redis-benchmark -c 1` SET
#   latency    submit -> provider call through the whole stack, p50/p99      (embedded,
#              then the real Kafka)
#   burst      2,000 targets at once, a provider taking 2 s: last succeeded after the
#              last validated, the executor's peak RSS                       (embedded)
#   rss        each worker's RSS after 30 s of `deployq up`, next to kcat's and Redis'
#   canary     a bad canary's first bad answer -> HAProxy says weight 0, next to Flagger's
#              interval x threshold (real HAProxy)                        (embedded)
#   registry   append with group commit, `history` and `replay` over N events against jq
#                                                                              (real Kafka)
#   flood      the 100,000-request flood of tests/chaos/flood.sh: every worker's peak RSS
#                                                                              (real Kafka)
#
# Environment: ONLY="validator lock ..." runs those only; KAFKA=0 skips what needs the real
# Kafka (scripts/kafka.sh, started and stopped here; DEPLOYQ_BENCH_BROKERS names one to
# use instead); OUT (default /tmp/dq-bench-DATE) keeps every bench's whole output. The
# other knobs of each bench (N, RUNS, ...) pass through.
#
# Needs: a release build (scripts/build.sh BUILD_DIR), kcat, jq, redis-benchmark, and for
# the real Kafka Java 17 + Maven (scripts/install-deps.sh installs them all). About 10
# minutes on 2 cores. The benches never decide CI: nothing here is a test.
set -uo pipefail
case ${1:-} in -h | --help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
cd "$(dirname "$0")/../.."
root=$(pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
[ -x "$build/producer/deployq" ] || { echo "build first: scripts/build.sh $build" >&2; exit 1; }
ONLY=${ONLY:-validator submit lock latency burst rss canary registry flood}
KAFKA=${KAFKA:-1}
OUT=${OUT:-/tmp/dq-bench-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
kdir=
results=()

wanted() { case " $ONLY " in *" $1 "*) return 0 ;; esac; return 1; }

# bench NAME LOG_SUFFIX COMMAND...: run one bench, its output on the terminal and in OUT.
bench() {
    local name=$1 log=$OUT/$2.log; shift 2
    printf '\n===== %s (%s) =====\n' "$name" "$(date -u +%H:%M:%S)"
    "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    results+=("$(printf '%-22s %s  %s' "$name" "$([ "$rc" = 0 ] && echo ok || echo "FAILED ($rc)")" "$log")")
}

kafka_up() {
    [ -n "${DEPLOYQ_BENCH_BROKERS:-}" ] && return 0
    kdir=$OUT/kafka
    DEPLOYQ_BENCH_BROKERS=$(scripts/kafka.sh start --dir "$kdir") || { echo "the real Kafka did not start" >&2; return 1; }
    export DEPLOYQ_BENCH_BROKERS
}
cleanup() { [ -n "$kdir" ] && scripts/kafka.sh stop --dir "$kdir" >/dev/null 2>&1; }
trap cleanup EXIT

echo "deployq benchmarks $(git rev-parse --short HEAD 2>/dev/null) — $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
embedded_env=(env -u DEPLOYQ_BENCH_BROKERS)
wanted validator && bench validator validator "${embedded_env[@]}" tests/bench/validator.sh "$build"
wanted submit && bench submit submit "${embedded_env[@]}" tests/bench/submit.sh "$build"
wanted lock && bench lock lock tests/bench/lock.sh "$build"
wanted latency && bench "latency (embedded)" latency-embedded "${embedded_env[@]}" tests/bench/latency.sh "$build"
wanted burst && bench burst burst "${embedded_env[@]}" tests/bench/burst.sh "$build"
wanted rss && bench rss rss tests/bench/rss.sh "$build"
wanted canary && bench canary canary "${embedded_env[@]}" tests/bench/canary.sh "$build"
if [ "$KAFKA" = 1 ] && { wanted latency || wanted registry; }; then
    if kafka_up; then
        wanted latency && bench "latency (real Kafka)" latency-kafka tests/bench/latency.sh "$build"
        wanted registry && bench registry registry tests/bench/registry.sh "$build"
    else
        results+=("real Kafka             FAILED to start: latency (real Kafka) and registry not run")
    fi
fi
# The flood starts (and stops) a real Kafka of its own.
[ "$KAFKA" = 1 ] && wanted flood && bench flood flood tests/chaos/flood.sh --build "$build" --skip-slow

printf '\n===== summary (%s) =====\n' "$OUT"
printf '%s\n' "${results[@]}"
for r in "${results[@]}"; do case $r in *FAILED*) exit 1 ;; esac; done
