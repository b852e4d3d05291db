#!/usr/bin/env bash
# 0301: kill -9 of deployq-registry at random points, 20 times, while 10,000 events are
# produced (acknowledged by the broker) in 50 batches. In the end the log holds every
# acknowledged event exactly once, in partition order, every chain intact; and the live
# state the last registry logged has the same hash as `deployq replay` of the files.
#
# Each restart joins a fresh consumer group, so Kafka has no committed offset for it: the
# resume point can only come from the log itself (and no rebalance wait slows the test).
source "$(dirname "$0")/helpers.sh"
source "$(dirname "$0")/helpers-registry.sh"

N=10000
BATCHES=50
start_redis
start_broker
write_config

# 10,000 events over four targets: deployments that are validated, started, succeeded and
# verified, with a fence that rises per target.
"$PY" - "$T/events" "$N" "$BATCHES" <<'PY'
import json, sys, uuid
out, n, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
targets = [("api", "staging"), ("api", "production"), ("web", "staging"), ("web", "production")]
steps = ["deploy.validated", "deploy.started", "deploy.succeeded", "deploy.verified"]
per = n // batches
files = [open("%s.%02d" % (out, b), "w") for b in range(batches)]
for i in range(n):
    svc, env = targets[i % 4]
    k = i // 4                      # the k-th event of this target
    dep = str(uuid.uuid5(uuid.NAMESPACE_URL, "dep-%s-%s-%d" % (svc, env, k // 4)))
    typ = steps[k % 4]
    data = {}
    if typ == "deploy.validated":
        data = {"key_id": "ci-test", "issued_at": "2026-01-01T00:00:00Z", "strategy": "rolling",
                "source": {"topic": "deployq.requests", "partition": 0, "offset": k}}
    ev = {"schema": "deployq.event/v1", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "ev-%d" % i)),
          "type": typ, "deployment_id": dep, "service": svc, "environment": env,
          "version": "v%d" % (k // 4), "at": "2026-01-%02dT%02d:%02d:%02d.000Z" %
          (1 + k // 1440 % 28, k // 60 % 24, k % 60, i % 60),
          "actor": "test@host/1", "fence": 0 if typ == "deploy.validated" else 1 + k // 4,
          "data": data}
    files[i // per].write("%s/%s\t%s\n" % (svc, env, json.dumps(ev, separators=(",", ":"))))
PY

# The stream: 50 acknowledged batches, a little apart.
(
    for f in "$T"/events.*; do
        produce_events "$f" || { echo "batch $f not acknowledged" >"$T/producer.failed"; exit 1; }
        sleep 1.2
    done
    touch "$T/producer.done"
) &
PRODUCER=$!
PIDS+=("$PRODUCER")

# 20 registries, each killed with SIGKILL a random 0 .. 1.5 s after it got its partitions
# (joining a new group takes the embedded broker about 3 s).
for i in $(seq 1 20); do
    start_registry "run$i" -g "registry-kill-$i"
    wait_for 20 grep -q 'resuming at' "$T/registry-run$i.log" || fail "registry run $i got no partitions"
    sleep "$(printf '%d.%03d' $((RANDOM % 2)) $((RANDOM % 1000)))"
    alive "$REGISTRY_PID" || fail "registry run $i exited by itself (rc?): $(tail -n 3 "$T/registry-run$i.log")"
    kill -KILL "$REGISTRY_PID"
    wait "$REGISTRY_PID" 2>/dev/null || true
    log "kill $i: $(registry_records) records stored"
done
wait_for 120 test -e "$T/producer.done" || fail "the producer did not finish"
[ ! -e "$T/producer.failed" ] || fail "$(cat "$T/producer.failed")"

# A last registry catches up; every acknowledged event must be there, once.
start_registry final -g registry-kill-final
wait_for 20 grep -q 'resuming at' "$T/registry-final.log" || fail "the last registry got no partitions"
wait_for 90 registry_has "$N" || fail "registry holds $(registry_records) of $N records"
sleep 1
kill -TERM "$REGISTRY_PID"
rc=0; wait "$REGISTRY_PID" || rc=$?
assert_eq "$rc" 0 "registry exit status after SIGTERM"

"$DEPLOYQ" verify --dir "$REG_DIR" >"$T/verify.out" || fail "verify: $(cat "$T/verify.out")"
assert_eq "$(registry_records)" "$N" "records in the log"

# Exactly the acknowledged events, in each partition's order: the broker's view (kcat,
# grouped by partition, keeping its order) against the registry's (history --json walks
# partition by partition in log order).
kcat -C -b "$BROKERS" -t "$TOPIC_EVENTS" -o beginning -e -q -f '%p %s\n' 2>/dev/null |
    sort -s -n -k1,1 | cut -d' ' -f2- | jq -r .id >"$T/ids.broker"
"$DEPLOYQ" history --dir "$REG_DIR" --json | jq -r .id >"$T/ids.registry"
assert_eq "$(wc -l <"$T/ids.broker")" "$N" "events on the broker"
assert_eq "$(sort -u "$T/ids.registry" | wc -l)" "$N" "distinct events in the registry"
cmp -s "$T/ids.broker" "$T/ids.registry" || fail "registry order differs from the broker's"

# The live state of the last registry (it folded the log at assignment, then appended)
# equals a replay of the files.
live=$(logged_hash final)
replayed=$("$DEPLOYQ" replay --dir "$REG_DIR" | awk '/^state hash/ {print $3}')
[ -n "$live" ] || fail "the registry logged no state hash"
assert_eq "$replayed" "$live" "replay state hash vs the live registry's"
dup=$(cat "$T"/registry-*.log | grep -c 'dropped [0-9]* bytes after the last whole record' || true)
log "ok: $N events exactly once after 20 kills ($dup torn-tail recoveries logged)"
