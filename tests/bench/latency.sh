#!/usr/bin/env bash
# tests/bench/latency.sh [BUILD_DIR]: submit -> provider call, on the whole pipeline.
#
# One target whose provider is the `command` provider running bash, which appends
# $EPOCHREALTIME (the moment the provider was invoked, plus bash's start, ~1 ms) to a file.
# RUNS sequential `deployq submit` (no --wait); each latency is from just before that
# process starts to the provider's timestamp; p50, p99 and max; and the same from the
# request's issued_at (set by submit just before it produces: without the process's own
# start, key loading and signing; millisecond resolution). Per hop, from the same
# runs (medians): submit acknowledged (the process returned), deploy.validated's `at`
# (the validator's verdict), the executor's "queued" and "lock taken" log lines, and the
# provider's timestamp.
#
# The broker: the embedded one under `deployq up` (default), or a real Kafka when
# DEPLOYQ_BENCH_BROKERS names one (e.g. from `scripts/kafka.sh start --dir /tmp/k`): the
# script then starts redis-server, a validator and an executor itself (`deployq up` only
# runs the embedded broker). There is no reference tool here: the goal is p50 <= 10 ms,
# p99 <= 50 ms. Environment: RUNS (default 200).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
DEPLOYQ=$build/producer/deployq
RUNS=${RUNS:-200}
[ -x "$build/workers/executor/deployq-executor" ] || { echo "build first: scripts/build.sh $build" >&2; exit 1; }
command -v jq >/dev/null && command -v kcat >/dev/null || { echo "needs jq and kcat" >&2; exit 1; }

T=$(mktemp -d /tmp/dq-bench-lat.XXXXXX)
export DEPLOYQ_STATE_DIR=$T/state DEPLOYQ_SCHEMAS=$root/schemas
mkdir -p "$DEPLOYQ_STATE_DIR" "$T/logs"
chmod 700 "$DEPLOYQ_STATE_DIR"
pids=()
cleanup() {
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT

"$DEPLOYQ" keygen --out "$T/ci.key" --id ci-bench >/dev/null
pub=$(openssl pkey -in "$T/ci.key" -pubout -outform DER | tail -c 32 | base64 -w0)
: >"$T/called"
# a service of this run only: a real Kafka keeps earlier runs' events, which an executor
# of a new group reads from the beginning (they then name a service it does not know)
svc=bench$$
config() { # config [BOOTSTRAP_AND_REDIS_YAML]
    cat <<YAML
kafka:
  session.timeout.ms: "6000"
${BENCH_KAFKA_EXTRA:-}
$1
keys:
  - {id: ci-bench, public_key: "$pub", role: ci}
services:
  $svc:
    environments:
      production:
        providers:
          - {type: command, name: stamp, argv: [bash, -c, "echo \$EPOCHREALTIME >> $T/called"], poll_interval: 100ms}
YAML
}
if [ -n "${DEPLOYQ_BENCH_BROKERS:-}" ]; then
    B=$DEPLOYQ_BENCH_BROKERS
    kind="Apache Kafka at $B"
    port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    config "  bootstrap.servers: \"$B\"
redis:
  url: \"redis://127.0.0.1:$port\"" >"$T/deployq.yaml"
    g=bench-$$
    "$build/workers/validator/deployq-validator" --config "$T/deployq.yaml" -g "val-$g" >"$T/logs/validator.log" 2>&1 &
    pids+=($!)
    "$build/workers/executor/deployq-executor" --config "$T/deployq.yaml" -g "exe-$g" >"$T/logs/executor.log" 2>&1 &
    pids+=($!)
    sub=(--config "$T/deployq.yaml")
    exlog=$T/logs/executor.log
else
    kind="embedded broker (deployq up)"
    config "" >"$T/deployq.yaml"
    "$DEPLOYQ" up --config "$T/deployq.yaml" >"$T/up.out" 2>"$T/up.err" &
    pids+=($!)
    for _ in $(seq 1 200); do [ -s "$DEPLOYQ_STATE_DIR/stack.json" ] && break; sleep 0.1; done
    [ -s "$DEPLOYQ_STATE_DIR/stack.json" ] || { cat "$T/up.err"; echo "deployq up did not start" >&2; exit 1; }
    B=$(jq -r '.brokers // .bootstrap // .kafka' "$DEPLOYQ_STATE_DIR/stack.json")
    sub=()
    exlog=$(ls "$DEPLOYQ_STATE_DIR"/logs/*executor* 2>/dev/null | head -1)
fi

submit() { "$DEPLOYQ" submit "${sub[@]}" --service "$svc" --env production --version "$1" --key "$T/ci.key" --key-id ci-bench --json; }
# the first deploy also waits for the groups to form: not counted
submit warmup >/dev/null
for _ in $(seq 1 600); do [ "$(wc -l <"$T/called")" -ge 1 ] && break; sleep 0.1; done
[ "$(wc -l <"$T/called")" -ge 1 ] || { echo "the warm-up deploy never reached the provider" >&2; exit 1; }
sleep 1

: >"$T/runs"
for i in $(seq 1 "$RUNS"); do
    t0=$EPOCHREALTIME
    id=$(submit "v$i" | jq -r .deployment_id)
    t1=$EPOCHREALTIME
    want=$((i + 1))
    until [ "$(wc -l <"$T/called")" -ge "$want" ]; do sleep 0.001; done
    tp=$(sed -n "${want}p" "$T/called")
    echo "$id $t0 $t1 $tp" >>"$T/runs"
    sleep 0.3 # the deploy concludes (a 100 ms poll, deploy.succeeded) before the next submit
done
[ -n "${exlog:-}" ] || exlog=$(ls "$DEPLOYQ_STATE_DIR"/logs/*executor* 2>/dev/null | head -1)
# Per hop: the verdict's time from the event, the executor's from its log lines.
kcat -C -b "$B" -t deployq.events -o beginning -e -q 2>/dev/null |
    jq -c 'select(.type == "deploy.validated") | {id: .deployment_id, at}' >"$T/validated"
kcat -C -b "$B" -t deployq.requests -o beginning -e -q 2>/dev/null |
    jq -c '.request | fromjson | {id: .deployment_id, at: .issued_at}' >"$T/issued"
python3 - "$T/runs" "$T/validated" "$exlog" "$kind" "$RUNS" "$T/issued" <<'PY'
import json, sys, datetime, re
runs, validated, exlog, kind, n, issued_f = sys.argv[1:]
def iso(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
val = {}
for line in open(validated):
    e = json.loads(line); val[e["id"]] = iso(e["at"])
issued = {}
for line in open(issued_f):
    e = json.loads(line); issued[e["id"]] = iso(e["at"])
queued, locked = {}, {}
for line in open(exlog):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    msg, ts = e.get("msg", ""), e.get("ts") or e.get("time")
    m = re.match(r"deploy (\S+) of .* (queued|lock taken)", msg)
    if m and ts:
        (queued if m.group(2) == "queued" else locked)[m.group(1)] = iso(ts)
tot, from_issued, hops = [], [], {"acked": [], "validated": [], "queued": [], "locked": [], "called": []}
for line in open(runs):
    i, t0, t1, tp = line.split(); t0, t1, tp = float(t0), float(t1), float(tp)
    tot.append((tp - t0) * 1000)
    if i in issued: from_issued.append((tp - issued[i]) * 1000)
    hops["acked"].append((t1 - t0) * 1000)
    if i in val: hops["validated"].append((val[i] - t0) * 1000)
    if i in queued: hops["queued"].append((queued[i] - t0) * 1000)
    if i in locked: hops["locked"].append((locked[i] - t0) * 1000)
    hops["called"].append((tp - t0) * 1000)
def q(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")
print(f"submit -> provider call, {n} sequential submits, {kind}:")
print(f"  p50 {q(tot, 50):.1f} ms, p99 {q(tot, 99):.1f} ms, max {max(tot):.1f} ms (goal: p50 <= 10 ms, p99 <= 50 ms)")
worst = max(range(len(tot)), key=lambda k: tot[k])
print(f"  the slowest was run {worst + 1}: submit returned after {hops['acked'][worst]:.1f} ms")
print(f"  from the request's issued_at: p50 {q(from_issued, 50):.1f} ms, p99 {q(from_issued, 99):.1f} ms, max {max(from_issued):.1f} ms")
after = [c - v for c, v in zip(hops["called"], hops["validated"])] if len(hops["validated"]) == len(tot) else []
if after:
    print(f"  deploy.validated -> provider invoked (the executor's part): p50 {q(after, 50):.1f} ms, p99 {q(after, 99):.1f} ms")
print("  per hop, from the start of `deployq submit` (median, p99):")
names = {"acked": "submit acknowledged (process returned)", "validated": "deploy.validated (verdict's at)",
         "queued": "executor consumed it (log: queued)", "locked": "lock taken (log)", "called": "provider invoked"}
for k in ["acked", "validated", "queued", "locked", "called"]:
    print(f"    {names[k]:42s} {q(hops[k], 50):7.1f} ms {q(hops[k], 99):7.1f} ms  ({len(hops[k])} runs)")
PY
