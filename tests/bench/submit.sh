#!/usr/bin/env bash
# tests/bench/submit.sh [BUILD_DIR]: `deployq submit` against `kcat -P`, one command. Both
# are whole processes, as a CI step runs them, sending one message of the same size with
# the same guarantees (acks=all, enable.idempotence=true) to the same broker, and waiting
# for the acknowledgement. They alternate run by run, so both see the same machine.
#
#   1. latency: RUNS runs each on the machine as it is; medians and the ratio.
#   2. tail under load: TAIL_RUNS runs each while LOAD_PROCS `yes >/dev/null` keep the
#      cores busy; p50, p99, max, the ratios, and how many runs took over 0.5 s (a
#      one-second stall in librdkafka shows up there: docs/performance.md).
#
# Environment: RUNS (default 40), TAIL_RUNS (default 200), LOAD (default 1; 0 measures the
# tail without the load), LOAD_PROCS (default 2), DEPLOYQ_BENCH_BROKERS (a real Kafka;
# default: a fresh embedded broker), BEFORE (another build dir, e.g. of an older commit:
# its `deployq submit` is measured too, alternating with the other two).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
abs() { case $1 in /*) echo "$1" ;; *) echo "$root/$1" ;; esac; }
build=$(abs "${1:-build}")
DEPLOYQ=$build/producer/deployq
RUNS=${RUNS:-40}
TAIL_RUNS=${TAIL_RUNS:-200}
LOAD=${LOAD:-1}
LOAD_PROCS=${LOAD_PROCS:-2}
BEFORE_DQ=
[ -n "${BEFORE:-}" ] && BEFORE_DQ=$(abs "$BEFORE")/producer/deployq
export DEPLOYQ_SCHEMAS=$root/schemas
[ -x "$DEPLOYQ" ] || { echo "build first: scripts/build.sh $build" >&2; exit 1; }
[ -z "$BEFORE_DQ" ] || [ -x "$BEFORE_DQ" ] || { echo "no $BEFORE_DQ" >&2; exit 1; }
command -v kcat >/dev/null || { echo "needs kcat" >&2; exit 1; }

T=$(mktemp -d /tmp/dq-bench-submit.XXXXXX)
export DEPLOYQ_STATE_DIR=$T # no `deployq up` stack is picked up by accident
pids=()
load_pids=()
stop_load() { for p in "${load_pids[@]}"; do kill "$p" 2>/dev/null || true; done; load_pids=(); }
cleanup() { stop_load; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT

if [ -n "${DEPLOYQ_BENCH_BROKERS:-}" ]; then
    B=$DEPLOYQ_BENCH_BROKERS; kind="Apache Kafka at $B"
else
    "$DEPLOYQ" broker --address-file "$T/addr" >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do [ -s "$T/addr" ] && break; sleep 0.1; done
    B=$(cat "$T/addr"); kind="embedded broker (librdkafka mock)"
fi

"$DEPLOYQ" keygen --out "$T/ci.key" --id ci-bench >/dev/null
pub=$(openssl pkey -in "$T/ci.key" -pubout -outform DER | tail -c 32 | base64 -w0)
cat >"$T/deployq.yaml" <<YAML
kafka:
  bootstrap.servers: "$B"
keys:
  - {id: ci-bench, public_key: "$pub", role: ci}
services:
  api:
    environments: {staging: {}, production: {}}
YAML

sample=$("$DEPLOYQ" submit --dry-run --key "$T/ci.key" --key-id ci-bench -s api -e staging -v 0123456789abcdef)
size=${#sample}
printf '%s' "$sample" >"$T/msg"

# One run of each tool, in turn; the wall time of each whole process (ms) is appended to
# its file. EPOCHREALTIME needs no fork, so nothing but the tool sits between the reads.
ms_since() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f\n", (b - a) * 1000}'; }
one_round() { # $1: file suffix
    local t0 t1
    t0=$EPOCHREALTIME
    "$DEPLOYQ" submit --config "$T/deployq.yaml" --key "$T/ci.key" --key-id ci-bench \
        -s api -e staging -v 0123456789abcdef >/dev/null
    t1=$EPOCHREALTIME
    ms_since "$t0" "$t1" >>"$T/submit.$1"
    t0=$EPOCHREALTIME
    kcat -P -b "$B" -t deployq.requests -k api/staging -X acks=all -X enable.idempotence=true "$T/msg"
    t1=$EPOCHREALTIME
    ms_since "$t0" "$t1" >>"$T/kcat.$1"
    if [ -n "$BEFORE_DQ" ]; then
        t0=$EPOCHREALTIME
        "$BEFORE_DQ" submit --config "$T/deployq.yaml" --key "$T/ci.key" --key-id ci-bench \
            -s api -e staging -v 0123456789abcdef >/dev/null
        t1=$EPOCHREALTIME
        ms_since "$t0" "$t1" >>"$T/before.$1"
    fi
}
# nearest-rank percentile P (0..100) of the numbers in a file
pct() { sort -n "$2" | awk -v p="$1" '{a[NR] = $1} END {r = int((p * NR + 99) / 100); if (r < 1) r = 1; print a[r]}'; }
median() { sort -n "$1" | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
over() { awk -v l="$1" '$1 > l {n++} END {print n + 0}' "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

echo "deployq submit benchmark — $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $kind"
echo "kcat $(kcat -V 2>&1 | sed -n 's/^Version \([0-9.]*\) .*\(librdkafka [0-9.]*\).*/\1 (\2)/p'), deployq $("$DEPLOYQ" version | cut -d' ' -f2), $size-byte message"
[ -z "$BEFORE_DQ" ] || echo "before: $BEFORE_DQ"

# ---- 1. latency ----------------------------------------------------------------------
one_round warm # the first run of each pays for cold caches; not counted
rm -f "$T"/*.warm
for _ in $(seq 1 "$RUNS"); do one_round med; done
ms=$(median "$T/submit.med"); mk=$(median "$T/kcat.med")
echo
echo "1. one acknowledged message, whole process, $RUNS alternating runs each (median)"
printf '   deployq submit (config, key, sign, produce acks=all): %8.2f ms\n' "$ms"
printf '   kcat -P (acks=all, idempotence)                      : %8.2f ms\n' "$mk"
printf '   ratio deployq/kcat                                   : %8s\n' "$(ratio "$ms" "$mk")"
if [ -n "$BEFORE_DQ" ]; then
    mb=$(median "$T/before.med")
    printf '   before: deployq submit                               : %8.2f ms (ratio to kcat %s)\n' "$mb" "$(ratio "$mb" "$mk")"
fi

# ---- 2. tail under load --------------------------------------------------------------
[ "$TAIL_RUNS" -gt 0 ] || exit 0 # TAIL_RUNS=0: the medians only
if [ "$LOAD" != 0 ]; then
    for _ in $(seq 1 "$LOAD_PROCS"); do
        yes >/dev/null &
        load_pids+=($!)
    done
    loadtxt="while $LOAD_PROCS \`yes >/dev/null\` run"
else
    loadtxt="no added load"
fi
for _ in $(seq 1 "$TAIL_RUNS"); do one_round tail; done
stop_load
echo
echo "2. tail: $TAIL_RUNS alternating runs each, $loadtxt"
printf '   %-16s %10s %10s %10s %10s\n' "" "p50 ms" "p99 ms" "max ms" "runs>0.5s"
row() { printf '   %-16s %10.2f %10.2f %10.2f %10d\n' "$1" "$(pct 50 "$2")" "$(pct 99 "$2")" "$(pct 100 "$2")" "$(over 500 "$2")"; }
row "deployq submit" "$T/submit.tail"
row "kcat -P" "$T/kcat.tail"
[ -z "$BEFORE_DQ" ] || row "before: submit" "$T/before.tail"
printf '   ratio deployq/kcat: p50 %s, p99 %s, max %s\n' \
    "$(ratio "$(pct 50 "$T/submit.tail")" "$(pct 50 "$T/kcat.tail")")" \
    "$(ratio "$(pct 99 "$T/submit.tail")" "$(pct 99 "$T/kcat.tail")")" \
    "$(ratio "$(pct 100 "$T/submit.tail")" "$(pct 100 "$T/kcat.tail")")"
