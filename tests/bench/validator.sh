#!/usr/bin/env bash
# tests/bench/validator.sh [BUILD_DIR]: the validator's throughput on one core, next to
# librdkafka's own ceiling for the same traffic, measured alternately in one run.
#
#   deployq : N pre-signed valid requests on deployq.requests; one deployq-validator pinned
#             to one core (taskset -c $CORE) judges them all (schemas, Ed25519, the nonce in
#             Redis, the verdict produced with acks=all, idempotent). Requests/s from its
#             first to its last verdict, by the verdicts' Kafka timestamps, so the process
#             start and the group join are not counted.
#   kcat    : the same N messages consumed and produced again by librdkafka alone, pinned to
#             the same core:
#               kcat -C ... -e -c N | kcat -P ... -X acks=all -X enable.idempotence=true
#             messages/s from its first to its last produced message, the same way.
#
# Each of ROUNDS rounds runs both, each reading the N requests from the beginning (the
# validator with a new consumer group, onto deployq.events; kcat onto a topic of its own); the
# medians and their ratio are
# printed. A request judged again in a later round is a redelivery to the validator (its
# nonce names that very message), so every round judges the same N valid requests.
#
# Environment: N (default 20000), ROUNDS (default 3), CORE (default 0),
# DEPLOYQ_BENCH_BROKERS (a real Kafka, e.g. from scripts/kafka.sh; default: a fresh
# embedded broker), PERF=FILE (record the first validator round with perf record -g).
# Last, `openssl speed ed25519` on the same core: one verification per request bounds it.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
build=${1:-build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
DEPLOYQ=$build/producer/deployq
VALIDATOR=$build/workers/validator/deployq-validator
N=${N:-20000}
ROUNDS=${ROUNDS:-3}
CORE=${CORE:-0}
export DEPLOYQ_SCHEMAS=$root/schemas
[ -x "$VALIDATOR" ] || { echo "build first: scripts/build.sh $build" >&2; exit 1; }

T=$(mktemp -d /tmp/dq-bench-val.XXXXXX)
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
    "$DEPLOYQ" broker --partitions 24 --address-file "$T/addr" >/dev/null 2>&1 &
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
  api: {environments: {staging: {}, production: {}, qa: {}, eu: {}, us: {}, ap: {}}}
  web: {environments: {staging: {}, production: {}, qa: {}, eu: {}, us: {}, ap: {}}}
  db: {environments: {staging: {}, production: {}, qa: {}, eu: {}, us: {}, ap: {}}}
  ui: {environments: {staging: {}, production: {}, qa: {}, eu: {}, us: {}, ap: {}}}
YAML

# N valid signed requests, signed as `deployq submit` signs (Ed25519 over the exact inner
# bytes), by python3-cryptography: one `deployq submit --dry-run` per request would take
# minutes for N=20000.
python3 - "$T/ci.key" "$N" >"$T/burst.txt" <<'PY'
import base64, json, sys, time, uuid
from cryptography.hazmat.primitives.serialization import load_pem_private_key
key = load_pem_private_key(open(sys.argv[1], "rb").read(), password=None)
now = time.time()
at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % int((now % 1) * 1000)
for i in range(int(sys.argv[2])):
    svc = ("api", "web", "db", "ui")[i % 4]
    env = ("staging", "production", "qa", "eu", "us", "ap")[i // 4 % 6]
    req = {"schema": "deployq.request/v1", "deployment_id": str(uuid.uuid4()), "service": svc,
           "environment": env, "version": "v%d" % i, "strategy": "rolling",
           "nonce": uuid.uuid4().hex, "issued_at": at}
    text = json.dumps(req, separators=(",", ":"))
    doc = {"schema": "deployq.signed/v1", "key_id": "ci-bench", "alg": "ed25519",
           "signature": base64.b64encode(key.sign(text.encode())).decode(), "request": text}
    sys.stdout.write("k%d\t%s\n" % (i, json.dumps(doc, separators=(",", ":"))))
PY
# A key per request: spread over every partition (the embedded broker keeps ~5 MiB each).
kcat -P -b "$B" -t deployq.requests -K $'\t' -X acks=all -l "$T/burst.txt"

# wait_for TOPIC TOTAL [PID]: wait until TOPIC holds TOTAL messages, then print "count
# span_ms" of the last N by Kafka timestamp (rounds follow each other: the last N are this
# round's). The embedded broker keeps ~5 MiB per partition, hence many partitions and
# targets below.
stamps() { kcat -C -b "$B" -t "$1" -o beginning -e -q -f '%T\n' 2>/dev/null; }
wait_for() {
    until [ "$(stamps "$1" | wc -l)" -ge "$2" ]; do
        if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then
            echo "the process under test died" >&2; return 1
        fi
        sleep 0.5
    done
    stamps "$1" | sort -n | tail -n "$N" | awk 'NR == 1 {lo = $1} {hi = $1} END {print NR, hi - lo}'
}
rate() { awk -v n="$1" -v ms="$2" 'BEGIN {printf "%d", (ms > 0 ? (n - 1) * 1000 / ms : 0)}'; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "validator benchmark — $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, core $CORE, $kind"
echo "$N signed requests, $ROUNDS alternating rounds; build $build"
: >"$T/dq.rates"; : >"$T/kcat.rates"
for r in $(seq 1 "$ROUNDS"); do
    # deployq-validator
    perf=()
    if [ -n "${PERF:-}" ] && [ "$r" = 1 ]; then perf=(perf record -g -o "$PERF" --); fi
    taskset -c "$CORE" "${perf[@]}" "$VALIDATOR" --config "$T/deployq.yaml" --log-level warn \
        -g "bench-$$-$r" >"$T/validator-$r.log" 2>&1 &
    vpid=$!; pids+=($vpid)
    read -r n ms < <(wait_for deployq.events $((r * N)) "$vpid") ||
        { tail "$T/validator-$r.log" >&2; exit 1; }
    kill -TERM "$vpid"; wait "$vpid" 2>/dev/null || true
    dq=$(rate "$n" "$ms"); echo "$dq" >>"$T/dq.rates"

    # librdkafka alone: consume and produce the same messages, acks=all, idempotent
    kcat -L -b "$B" -t "bench.ref.$r" >/dev/null 2>&1 # creates it on the embedded broker
    taskset -c "$CORE" sh -c "kcat -C -b '$B' -t deployq.requests -o beginning -e -q -c $N -f '%k\t%s\n' |
        kcat -P -b '$B' -t bench.ref.$r -K '\t' -X acks=all -X enable.idempotence=true" 2>/dev/null
    read -r kn kms < <(wait_for "bench.ref.$r" "$N")
    kc=$(rate "$kn" "$kms"); echo "$kc" >>"$T/kcat.rates"
    printf '   round %d: deployq-validator %6d requests/s (%d verdicts in %d ms)   kcat -C | kcat -P %7d messages/s\n' \
        "$r" "$dq" "$n" "$ms" "$kc"
done
md=$(median <"$T/dq.rates"); mk=$(median <"$T/kcat.rates")
echo
echo "validator throughput, one core (median of $ROUNDS rounds):"
printf '   deployq-validator (parse, schemas, Ed25519, Redis nonce, produce acks=all): %8.0f requests/s\n' "$md"
printf '   kcat -C | kcat -P (acks=all, idempotent; the ceiling)                    : %8.0f messages/s\n' "$mk"
printf '   ratio deployq/kcat                                                         : %8.3f\n' "$(awk -v a="$md" -v b="$mk" 'BEGIN {print (b > 0 ? a / b : 0)}')"
# What bounds the validator: one Ed25519 verification per request, OpenSSL alone.
ed=$(taskset -c "$CORE" openssl speed -seconds 1 ed25519 2>/dev/null | awk '/Ed25519/ {print $NF}')
printf '   openssl speed ed25519 verify, same core (the bound of one verify per request): %8.0f /s\n' "${ed:-0}"
