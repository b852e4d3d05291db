#!/usr/bin/env bash
# tests/bench/registry.sh [BUILD_DIR]: the registry's figures for docs/performance.md, one
# command, everything measured in the same run on the same machine.
#
#   1. append throughput with group commit: N events (default 1,000,000, over 24 targets)
#      are put on deployq.events first; then one deployq-registry stores them all. Its own
#      count from first append to last durable commit gives events/s and fdatasyncs/s.
#   2. history: `deployq history --json --service S` over the registry against
#      `jq -c 'select(.service == "S")'` over the same events as JSON lines (outputs must
#      be identical); 3. replay: `deployq replay --json` (the whole fold, its state hash)
#      against a jq reduce that folds the same JSON lines into the same state: per target
#      current and verified version, in-flight deployment with step and outcome, newest
#      fence, counters, and the totals (the two must be equal, or the script fails).
#
# Environment: N (events), DEPLOYQ_BENCH_BROKERS (a real Kafka; default: a fresh embedded
# broker), BENCH_DIR (where the registry is written; default a temporary dir: put it on the
# disk you want measured, /tmp may be tmpfs), BENCH_KEEP=1 (keep that dir and print it),
# BENCH_REUSE=DIR (a dir kept before: skip 1. and time 2. and 3. on its registry again, e.g.
# an old build and a new one in turn).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
DEPLOYQ=$build/producer/deployq
REGISTRY=$build/workers/registry/deployq-registry
N=${N:-1000000}
[ -x "$REGISTRY" ] || { echo "build first: meson setup $build && ninja -C $build" >&2; exit 1; }
command -v jq >/dev/null && command -v kcat >/dev/null || { echo "needs jq and kcat" >&2; exit 1; }

secs() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / 1e9))' "$1"; }
timed() { local s e; s=$(date +%s%N); "$@"; e=$(date +%s%N); echo $((e - s)); }

if [ -z "${BENCH_REUSE:-}" ]; then
T=$(mktemp -d "${BENCH_DIR:-/tmp}/dq-bench-registry.XXXXXX")
export DEPLOYQ_STATE_DIR=$T
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "# kept $T (BENCH_REUSE=$T)"; else rm -rf "$T"; fi
}
trap cleanup EXIT

if [ -n "${DEPLOYQ_BENCH_BROKERS:-}" ]; then
    B=$DEPLOYQ_BENCH_BROKERS; kind="Apache Kafka at $B"
    topic=deployq.events.bench-$$
else
    "$DEPLOYQ" broker --address-file "$T/addr" >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do [ -s "$T/addr" ] && break; sleep 0.1; done
    B=$(cat "$T/addr"); kind="embedded broker (librdkafka mock)"
    topic=deployq.events
fi
cat >"$T/deployq.yaml" <<YAML
kafka:
  bootstrap.servers: "$B"
  session.timeout.ms: "6000"
topics:
  events: "$topic"
YAML

echo "# generating $N events"
python3 - "$T" "$N" <<'PY'
import json, sys, uuid
d, n = sys.argv[1], int(sys.argv[2])
steps = ["deploy.validated", "deploy.started", "deploy.succeeded", "deploy.verified"]
payload = 0
with open(d + "/keyed", "w") as kf, open(d + "/events.jsonl", "w") as jf:
    for i in range(n):
        t = i % 24
        svc, env = "svc%d" % (t // 2), ("staging", "production")[t % 2]
        k = i // 24
        typ = steps[k % 4]
        ev = {"schema": "deployq.event/v1", "id": str(uuid.UUID(int=i, version=4)),
              "type": typ, "deployment_id": str(uuid.UUID(int=(t << 64) | (k // 4), version=4)),
              "service": svc, "environment": env, "version": "v%d" % (k // 4),
              "at": "2026-%02d-%02dT%02d:%02d:%02d.000Z" % (1 + k // 40000 % 12, 1 + k // 1440 % 28, k // 60 % 24, k % 60, i % 60),
              "actor": "deployq-executor@bench/1", "fence": 0 if k % 4 == 0 else 1 + k // 4,
              "data": {"provider": "command", "provider_deployment_id": "run-%d" % i, "attempt": 1}}
        s = json.dumps(ev, separators=(",", ":"))
        payload += len(s)
        kf.write("%s/%s\t%s\n" % (svc, env, s))
        jf.write(s + "\n")
open(d + "/expected_bytes", "w").write(str(payload + 64 * n))
PY
expected=$(cat "$T/expected_bytes")

# The registry creates the topics it needs (a real cluster may not auto-create them): a
# short first run with a throwaway directory does that before anything is produced.
"$REGISTRY" --config "$T/deployq.yaml" --dir "$T/warmup" -g bench-warmup >"$T/warmup.log" 2>&1 &
warm=$!
for _ in $(seq 1 300); do
    kcat -L -b "$B" -t "$topic" 2>/dev/null | grep -q "topic \"$topic\" with 6 partitions" && break
    sleep 0.2
done
kill -TERM "$warm"; wait "$warm" || true
rm -rf "$T/warmup"

echo "# producing to $kind"
kcat -P -b "$B" -t "$topic" -K $'\t' -X acks=all -X queue.buffering.max.messages=1000000 \
    -X linger.ms=50 <"$T/keyed" 2>"$T/kcat.err" || { head -n 3 "$T/kcat.err" >&2; exit 1; }
[ ! -s "$T/kcat.err" ] || { echo "kcat: $(head -n 3 "$T/kcat.err")" >&2; exit 1; }

echo "# storing with deployq-registry"
"$REGISTRY" --config "$T/deployq.yaml" --dir "$T/registry" >"$T/registry.log" 2>&1 &
reg=$!
pids+=($reg)
stored() { du -cb "$T"/registry/p*/*.seg 2>/dev/null | tail -n 1 | cut -f1; }
until [ "$(stored || echo 0)" = "$expected" ]; do
    kill -0 "$reg" 2>/dev/null || { tail -n 5 "$T/registry.log"; exit 1; }
    sleep 0.5
done
kill -TERM "$reg"; wait "$reg"
line=$(grep -o 'appended [0-9]* events in [0-9]* group commits ([0-9]* partition fdatasyncs) over [0-9]* ms' "$T/registry.log")
read -r ev commits syncs ms < <(sed -E 's/appended ([0-9]+) events in ([0-9]+) group commits \(([0-9]+) partition fdatasyncs\) over ([0-9]+) ms/\1 \2 \3 \4/' <<<"$line")
[ "$ev" = "$N" ] || { echo "registry appended $ev of $N" >&2; exit 1; }
"$DEPLOYQ" verify --dir "$T/registry" >/dev/null
echo "append: $N events in $ms ms: $((N * 1000 / ms)) events/s, $commits group commits, $syncs fdatasyncs ($((syncs * 1000 / ms))/s), $((N / syncs)) events per fdatasync"
else
    T=$BENCH_REUSE
    kind="(reused $T)"
    N=$(wc -l <"$T/events.jsonl")
    [ -d "$T/registry" ] || { echo "$T/registry: no registry to reuse" >&2; exit 1; }
fi

q=svc7
t_reg=$(timed sh -c "'$DEPLOYQ' history --dir '$T/registry' --json --service $q >'$T/h.registry'")
t_jq=$(timed sh -c "jq -c 'select(.service == \"$q\")' '$T/events.jsonl' >'$T/h.jq'")
sort "$T/h.registry" >"$T/h.registry.s"; sort "$T/h.jq" >"$T/h.jq.s"
cmp -s "$T/h.registry.s" "$T/h.jq.s" || { echo "history and jq disagree" >&2; exit 1; }
echo "history --service $q ($(wc -l <"$T/h.jq") of $N events): deployq $(secs "$t_reg") s ($((N * 1000000000 / t_reg)) events/s), jq $(secs "$t_jq") s ($((N * 1000000000 / t_jq)) events/s), ratio $(python3 -c "print('%.1f' % ($t_jq / $t_reg))")x"

# The jq side folds the JSON lines into the state `deployq replay --json` prints (totals and
# targets; not the list of stale events, whose count is compared): the rules of fold.h for
# deploy.validated/awaiting_approval/rejected/started/succeeded/failed/verified and fences.
# Rollbacks and "outcome unknown" are not modelled (the generated events have none; if a log
# had some, the counts and the comparison would say so).
# jq 1.6 copies an object that has a second reference before changing it: a map nested in
# the state (jv_setpath holds one) and the whole state under `|=` or `+=` (_modify holds
# one), which with 250,000 deployments makes the fold quadratic. So every target ("t:KEY")
# and deployment ("d:ID") is a top-level member and counters are `x = x + 1`.
cat >"$T/fold.jq" <<'JQ'
def nonull: with_entries(select(.value != null));
def outcome: ["pending", "awaiting_approval", "validated", "running", "succeeded", "verified",
              "failed", "rejected", "rolled_back"][.];
reduce inputs as $e ({n: 0, u: 0, st: 0, nd: 0, first: null, last: null};
  .n = .n + 1
  | if $e.service == null or $e.environment == null then .u = .u + 1
    else ("t:" + $e.service + "/" + $e.environment) as $t | $e.type as $ty
    | (if $e.deployment_id == null then null else "d:" + $e.deployment_id end) as $d
    | (if .[$t] == null then
         .[$t] = {service: $e.service, environment: $e.environment, fence: 0,
                  c: {events: 0, stale: 0, validated: 0, rejected: 0, awaiting_approval: 0,
                      started: 0, succeeded: 0, failed: 0, verified: 0, rollbacks: 0,
                      rollbacks_succeeded: 0, rollbacks_failed: 0}}
       else . end)
    | if $e.fence > 0 and $e.fence < .[$t].fence then .[$t].c.stale = .[$t].c.stale + 1 | .st = .st + 1
      else
        (if $d == null then .
         else (if .[$d] == null
               then .[$d] = {version: $e.version, step: $ty, o: 0, since: $e.at} | .nd = .nd + 1
               else . end)
           | .[$d].last_at = $e.at
           | (if .[$d].version == null then .[$d].version = $e.version else . end)
           | (if ($ty | startswith("notification.")) then . else .[$d].step = $ty end)
         end)
        | .[$t].fence = ([.[$t].fence, $e.fence] | max)
        | .[$t].c.events = .[$t].c.events + 1 | .[$t].last_event_at = $e.at
        | (if .first == null or $e.at < .first then .first = $e.at else . end)
        | (if .last == null or $e.at > .last then .last = $e.at else . end)
        | if $ty == "deploy.validated" or $ty == "deploy.awaiting_approval" then
            (if $ty == "deploy.validated" then .[$t].c.validated = .[$t].c.validated + 1
             else .[$t].c.awaiting_approval = .[$t].c.awaiting_approval + 1 end)
            | if $d == null then .
              else .[$d].o = ([.[$d].o, (if $ty == "deploy.validated" then 2 else 1 end)] | max)
                | .[$t].inflight = $d end
          elif $ty == "deploy.rejected" then .[$t].c.rejected = .[$t].c.rejected + 1
            | if $d == null then .
              else .[$d].o = 7 | (if .[$t].inflight == $d then .[$t].inflight = null else . end) end
          elif $ty == "deploy.started" then .[$t].c.started = .[$t].c.started + 1
            | if $d == null then . else .[$d].o = ([.[$d].o, 3] | max) | .[$t].inflight = $d end
          elif $ty == "deploy.succeeded" then .[$t].c.succeeded = .[$t].c.succeeded + 1
            | .[$t].current_version = $e.version | .[$t].current_deployment_id = $e.deployment_id
            | .[$t].current_since = $e.at
            | if $d == null then .
              else .[$d].o = ([.[$d].o, 4] | max)
                | (if $e.data.watch == false and .[$t].inflight == $d
                   then .[$t].inflight = null else . end) end
          elif $ty == "deploy.failed" then .[$t].c.failed = .[$t].c.failed + 1
            | if $d == null then .
              else .[$d].o = 6 | (if .[$t].inflight == $d then .[$t].inflight = null else . end) end
          elif $ty == "deploy.verified" then .[$t].c.verified = .[$t].c.verified + 1
            | .[$t].last_verified_version = $e.version | .[$t].last_verified_at = $e.at
            | if $d == null then .
              else (if .[$d].o <= 4 then .[$d].o = 5 else . end)
                | (if .[$t].inflight == $d then .[$t].inflight = null else . end) end
          else . end
      end
    end)
| . as $s
| {totals: ({events: .n, unreadable: 0, untargeted: .u, stale: .st,
             targets: ([keys[] | select(startswith("t:"))] | length), deployments: .nd,
             rollbacks: 0, first_at: .first, last_at: .last} | nonull),
   targets: [keys[] | select(startswith("t:")) | $s[.]
     | (if .inflight then $s[.inflight] as $x
        | .in_flight = ({deployment_id: .inflight[2:], version: $x.version, step: $x.step,
                         outcome: ($x.o | outcome), since: $x.since, last_at: $x.last_at} | nonull)
        else . end)
     | {service, environment, current_version, current_deployment_id, current_since,
        last_verified_version, last_verified_at, in_flight, fence, last_event_at, counts: .c}
     | nonull]}
JQ
t_reg=$(timed sh -c "'$DEPLOYQ' replay --dir '$T/registry' --json >'$T/r.registry'")
t_jq=$(timed sh -c "jq -n -c -f '$T/fold.jq' '$T/events.jsonl' >'$T/r.jq'")
jq -S -c '{totals, targets}' "$T/r.registry" >"$T/r.registry.n"
jq -S -c . "$T/r.jq" >"$T/r.jq.n"
cmp -s "$T/r.registry.n" "$T/r.jq.n" || {
    echo "replay and jq disagree (state in $T/r.registry.n and $T/r.jq.n)" >&2
    BENCH_KEEP=1; exit 1
}
echo "replay (state of $(jq '.targets | length' "$T/r.jq.n") targets, $N events, hash $(jq -r .state_hash "$T/r.registry")): deployq $(secs "$t_reg") s ($((N * 1000000000 / t_reg)) events/s), jq fold to the same state $(secs "$t_jq") s ($((N * 1000000000 / t_jq)) events/s), ratio $(python3 -c "print('%.1f' % ($t_jq / $t_reg))")x"
echo "# machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); registry on $(df -T "$T" | awk 'NR==2 {print $2}'); broker: $kind"
