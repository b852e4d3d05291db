#!/usr/bin/env bash
# tests/bench/run.sh [BUILD_DIR]: deployq's benchmarks, one command. Prints every figure
# that docs/performance.md reports, each next to the tool a user would otherwise use,
# measured in the same run on the same broker.
#
#   1. submit latency: one signed `deployq submit` (acknowledged, acks=all) against
#      `kcat -P` of one message of the same size to the same broker; alternating, RUNS
#      runs each, medians and the ratio. Both are whole processes, as CI would run them.
#   2. validator throughput: N pre-signed requests on deployq.requests, one validator
#      pinned to one core (taskset), requests/s from its first to its last verdict.
#
# Environment: RUNS (default 40), N (default 5000), DEPLOYQ_BENCH_BROKERS (a real Kafka;
# default: a fresh embedded broker).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
build=${1:-build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
DEPLOYQ=$build/producer/deployq
VALIDATOR=$build/workers/validator/deployq-validator
RUNS=${RUNS:-40}
N=${N:-5000}
export DEPLOYQ_SCHEMAS=$root/schemas
[ -x "$DEPLOYQ" ] || { echo "build first: scripts/build.sh $build" >&2; exit 1; }

T=$(mktemp -d /tmp/dq-bench.XXXXXX)
export DEPLOYQ_STATE_DIR=$T
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT

port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
pids+=($!)
if [ -n "${DEPLOYQ_BENCH_BROKERS:-}" ]; then
    B=$DEPLOYQ_BENCH_BROKERS; kind="Apache Kafka at $B"
else
    "$DEPLOYQ" broker --address-file "$T/addr" >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do [ -s "$T/addr" ] && break; sleep 0.1; done
    B=$(cat "$T/addr"); kind="embedded broker (librdkafka mock)"
fi
for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

"$DEPLOYQ" keygen --out "$T/ci.key" --id ci-bench >/dev/null
pub=$(openssl pkey -in "$T/ci.key" -pubout -outform DER | tail -c 32 | base64 -w0)
cat >"$T/deployq.yaml" <<YAML
kafka:
  bootstrap.servers: "$B"
  session.timeout.ms: "6000"
${BENCH_KAFKA_EXTRA:-}
redis:
  url: "redis://127.0.0.1:$port"
keys:
  - {id: ci-bench, public_key: "$pub", role: ci}
services:
  api:
    environments: {staging: {}, production: {}}
YAML

now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "deployq benchmarks — $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $kind"
echo "kcat $(kcat -V 2>&1 | sed -n 's/^Version \([0-9.]*\) .*\(librdkafka [0-9.]*\).*/\1 (\2)/p'), deployq $("$DEPLOYQ" version | cut -d' ' -f2)"

# ---- 1. submit vs kcat -P -------------------------------------------------------------
sample=$("$DEPLOYQ" submit --dry-run --key "$T/ci.key" --key-id ci-bench -s api -e staging -v 0123456789abcdef)
size=${#sample}
printf '%s' "$sample" >"$T/msg"
: >"$T/submit.ms"; : >"$T/kcat.ms"
for i in $(seq 1 "$RUNS"); do
    t0=$(now_ns)
    "$DEPLOYQ" submit --config "$T/deployq.yaml" --key "$T/ci.key" --key-id ci-bench \
        -s api -e staging -v 0123456789abcdef >/dev/null
    t1=$(now_ns)
    kcat -P -b "$B" -t deployq.requests -k api/staging -X acks=all -X enable.idempotence=true "$T/msg"
    t2=$(now_ns)
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", (b - a) / 1e6}' >>"$T/submit.ms"
    awk -v a="$t1" -v b="$t2" 'BEGIN {printf "%.3f\n", (b - a) / 1e6}' >>"$T/kcat.ms"
done
ms=$(median <"$T/submit.ms"); mk=$(median <"$T/kcat.ms")
echo
echo "1. one acknowledged message, whole process, $RUNS alternating runs, $size-byte message"
printf '   deployq submit (sign + produce, acks=all): median %8.2f ms\n' "$ms"
printf '   kcat -P (same size, acks=all)            : median %8.2f ms\n' "$mk"
printf '   ratio deployq/kcat                       : %8.2f\n' "$(awk -v a="$ms" -v b="$mk" 'BEGIN {print a / b}')"

# ---- 2. validator throughput ---------------------------------------------------------
for i in $(seq 1 "$N"); do
    "$DEPLOYQ" submit --dry-run --key "$T/ci.key" --key-id ci-bench -s api -e staging -v "v$i" |
        sed 's/^/api\/staging\t/'
done >"$T/burst.txt"
kcat -P -b "$B" -t deployq.requests -K $'\t' -l "$T/burst.txt"
before=$(kcat -C -b "$B" -t deployq.events -o beginning -e -q 2>/dev/null | wc -l)
taskset -c 0 "$VALIDATOR" --config "$T/deployq.yaml" --log-level warn -g bench-$$ >"$T/validator.log" 2>&1 &
vpid=$!; pids+=($vpid)
want=$((before + 2 * RUNS + N)) # step 1 left 2*RUNS requests waiting too
while [ "$(kcat -C -b "$B" -t deployq.events -o beginning -e -q 2>/dev/null | wc -l)" -lt "$want" ]; do
    sleep 0.2
done
# The verdicts' own timestamps (ms) give the span from the first to the last verdict, so
# the group join and this script's polling are not counted as validation time.
read -r count span_ms < <(kcat -C -b "$B" -t deployq.events -o beginning -e -q 2>/dev/null |
    jq -rs 'map(.at | sub("Z$"; "") | split(".") | ((.[0] + "Z" | fromdateiso8601) * 1000 + (.[1] | tonumber)))
            | "\(length) \(max - min)"')
secs=$(awk -v ms="$span_ms" 'BEGIN {printf "%.3f", ms / 1000}')
rate=$(awk -v n="$count" -v ms="$span_ms" 'BEGIN {printf "%d", (n - 1) * 1000 / ms}')
echo
echo "2. validator throughput: $N signed requests, one validator pinned to one core"
echo "   (schema + Ed25519 verify + Redis nonce + produce acks=all per request)"
printf '   %d verdicts, first to last in %.2f s: %s requests/s\n' "$count" "$secs" "$rate"
