#!/usr/bin/env bash
# tests/bench/registry.sh [BUILD_DIR]: the registry's figures for docs/performance.md, one
# command, everything measured in the same run on the same machine.
#
#   1. append throughput with group commit: N events (default 1,000,000, over 24 targets)
#      are put on deployq.events first; then one deployq-registry stores them all. Its own
#      count from first append to last durable commit gives events/s and fdatasyncs/s.
#   2. history: `deployq history --json --service S` over the registry against
#      `jq -c 'select(.service == "S")'` over the same events as JSON lines (outputs must
#      be identical); 3. replay: `deployq replay --json` (the whole fold) against a jq
#      reduce that computes the current version of every target (results must agree).
#
# Environment: N (events), DEPLOYQ_BENCH_BROKERS (a real Kafka; default: a fresh embedded
# broker), BENCH_DIR (where the registry is written; default a temporary dir: put it on the
# disk you want measured, /tmp may be tmpfs).
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

T=$(mktemp -d "${BENCH_DIR:-/tmp}/dq-bench-registry.XXXXXX")
export DEPLOYQ_STATE_DIR=$T
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
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

secs() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / 1e9))' "$1"; }
timed() { local s e; s=$(date +%s%N); "$@"; e=$(date +%s%N); echo $((e - s)); }

q=svc7
t_reg=$(timed sh -c "'$DEPLOYQ' history --dir '$T/registry' --json --service $q >'$T/h.registry'")
t_jq=$(timed sh -c "jq -c 'select(.service == \"$q\")' '$T/events.jsonl' >'$T/h.jq'")
sort "$T/h.registry" >"$T/h.registry.s"; sort "$T/h.jq" >"$T/h.jq.s"
cmp -s "$T/h.registry.s" "$T/h.jq.s" || { echo "history and jq disagree" >&2; exit 1; }
echo "history --service $q ($(wc -l <"$T/h.jq") of $N events): deployq $(secs "$t_reg") s ($((N * 1000000000 / t_reg)) events/s), jq $(secs "$t_jq") s ($((N * 1000000000 / t_jq)) events/s), ratio $(python3 -c "print('%.1f' % ($t_jq / $t_reg))")x"

t_reg=$(timed sh -c "'$DEPLOYQ' replay --dir '$T/registry' --json >'$T/r.registry'")
t_jq=$(timed sh -c "jq -n -c 'reduce inputs as \$e ({}; if \$e.type == \"deploy.succeeded\" then .[\$e.service + \"/\" + \$e.environment] = \$e.version else . end)' '$T/events.jsonl' >'$T/r.jq'")
a=$(jq -S -c '[.targets[] | {key: (.service + "/" + .environment), value: .current_version}] | from_entries' "$T/r.registry")
b=$(jq -S -c . "$T/r.jq")
[ "$a" = "$b" ] || { echo "replay and jq disagree: $a vs $b" >&2; exit 1; }
echo "replay (whole fold, $N events): deployq $(secs "$t_reg") s ($((N * 1000000000 / t_reg)) events/s), jq current-version reduce $(secs "$t_jq") s ($((N * 1000000000 / t_jq)) events/s), ratio $(python3 -c "print('%.1f' % ($t_jq / $t_reg))")x"
echo "# machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); registry on $(df -T "$T" | awk 'NR==2 {print $2}'); broker: $kind"
