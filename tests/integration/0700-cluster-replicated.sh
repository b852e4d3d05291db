#!/usr/bin/env bash
# deployq on a replicated Kafka and a persistent Redis (issue 13): a three-node Apache
# Kafka 4.1.1 KRaft cluster (scripts/kafka-cluster.sh), a Redis with its append-only file
# (fsync always), two of every worker, the provider and health double of tests/chaos and a
# stream of signed deploys for DQ_CLUSTER_SECONDS (default 45: CI's budget; the figures in
# docs/reliability.md are from 75) over 30 targets: about a
# quarter of the versions fail their health probe (rolled back), a tenth of the requests are
# signed by a key the configuration does not know (rejected). Mid-flow one broker is
# stopped and later started again, and Redis is stopped (SIGTERM) and later killed
# (SIGKILL), each time started again on the same append-only file
# (tests/chaos/driver.py --faults scripted).
#
# Then tests/chaos/check.py judges the run from the topic, the registry's files
# (`deployq verify` and its own parser) and the double's record: every request judged
# exactly once, every validated one with exactly one outcome (succeeded or failed) that a
# real provider run backs, no deployment run twice at the provider, no two runs at once on
# a target, every event in the registry once, bad versions rolled back, no secret in any
# file. And the workers created the topics themselves, with replication factor 3 and
# min.insync.replicas=2 (topics.replication's default on a cluster of three).
#
# Prints the figures of the run. Brings its own cluster (suites 'local' and 'jvm'; it runs beside
# other tests, started first);
# skipped (77) where Java is missing, and in a sanitizer build (scripts/test.sh runs the
# whole suite once more under ASan: ten instrumented workers beside three JVMs would take
# minutes CI does not have; DQ_CLUSTER_SANITIZED=1 runs it anyway).
. "$(dirname "$0")/helpers.sh"

command -v java >/dev/null 2>&1 || { log "skipped: no java (scripts/install-deps.sh --with-java)"; exit 77; }
sanitize=$(jq -r '.[] | select(.name == "b_sanitize") | .value' \
    "$DEPLOYQ_BUILD/meson-info/intro-buildoptions.json" 2>/dev/null || echo unknown)
if [ "$sanitize" != none ] && [ -z "${DQ_CLUSTER_SANITIZED:-}" ]; then
    log "skipped: a sanitizer build (b_sanitize=$sanitize); DQ_CLUSTER_SANITIZED=1 runs it anyway"
    exit 77
fi
for w in executor monitor rollback registry; do
    [ -x "$DEPLOYQ_BUILD/workers/$w/deployq-$w" ] || fail "deployq-$w is not built"
done

KC=$T/kafka-cluster
CLUSTER="$DEPLOYQ_SOURCE/scripts/kafka-cluster.sh"
stop_cluster() {
    local rc=$?
    "$CLUSTER" stop --dir "$KC" >/dev/null 2>&1 || true
    (exit "$rc") # cleanup keeps $T (the run's logs, DQ_KEEP) by the test's exit status
    cleanup
}
trap stop_cluster EXIT

t0=$SECONDS
# --no-topics: the workers create them (topics.replication), which is checked below
BROKERS=$("$CLUSTER" start --dir "$KC" --no-topics 2>"$T/cluster.log") || {
    cat "$T/cluster.log" >&2
    fail "the Kafka cluster did not start"
}
log "cluster $BROKERS up in $((SECONDS - t0)) s"

RUN=$T/run
seed=${DQ_CLUSTER_SEED:-$(od -An -N3 -tu4 /dev/urandom | tr -d ' ')}
log "seed $seed (DQ_CLUSTER_SEED=$seed reproduces the workload and the fault order)"
# 30 targets, each deploying one version at a time; a 3 s monitor window and provider
# runs of 2-6 polls (300 ms apart) keep a deploy (validate, provider run, watch) under
# ~8 s, so the stream is a few hundred requests. A rollback worker runs its rollbacks
# one after another, so more bad versions would mostly queue rollbacks.
"$PY" "$DEPLOYQ_SOURCE/tests/chaos/driver.py" --dir "$RUN" --build "$DEPLOYQ_BUILD" \
    --source "$DEPLOYQ_SOURCE" --seed "$seed" --label cluster --cluster-dir "$KC" \
    --faults scripted --duration "${DQ_CLUSTER_SECONDS:-45}" --targets 30 --window 3 \
    --steps-min 2 --steps-max 6 --bad-share 0.3 --reject-share 0.1 --settle-timeout 60 \
    2>"$T/driver.log" || {
    rc=$?
    tail -n 20 "$T/driver.log" >&2
    fail "the run did not complete (driver exit $rc)"
}
grep -E 'fault|pipeline up|run over' "$T/driver.log" | sed 's/^/  /' >&2

# The workers created the topics: three replicas, and min.insync.replicas=2 on the topic
# itself (the brokers' own default of 2 does not show among the topic's own configs).
events_topic=$(jq -r .topics.events "$RUN/workload.json")
"$CLUSTER" describe --dir "$KC" --topic "$events_topic" >"$T/describe.out" 2>>"$T/cluster.log" ||
    fail "kafka-cluster.sh describe failed"
grep -q "PartitionCount: 6[[:space:]]*ReplicationFactor: 3" "$T/describe.out" ||
    fail "$events_topic is not 6 partitions of 3 replicas: $(head -n 1 "$T/describe.out")"
grep -qx '  min.insync.replicas=2' "$T/describe.out" ||
    fail "$events_topic has no min.insync.replicas=2 of its own: $(cat "$T/describe.out")"
grep -q "created topic $events_topic (replication factor 3, min.insync.replicas 2)" "$RUN"/*.log ||
    fail "no worker logged creating $events_topic with replication factor 3"

check_rc=0
"$PY" "$DEPLOYQ_SOURCE/tests/chaos/check.py" "$RUN" --deployq "$DEPLOYQ" >"$T/check.out" 2>&1 || check_rc=$?
sed 's/^/  /' "$T/check.out" >&2
[ -f "$RUN/check.json" ] || fail "check.py left no check.json"

# The faults the test is about all happened (an injection that failed is an "error").
faults=$(jq -r '[.[] | .kind] | sort | join(",")' "$RUN/faults.json")
[ "$faults" = "broker_start,broker_stop,redis,redis" ] ||
    fail "faults injected: '$faults', wanted one broker stop and start and two Redis restarts"
[ "$(jq -r '[.[] | select(.kind == "redis") | .signal] | sort | join(",")' "$RUN/faults.json")" = SIGKILL,SIGTERM ] ||
    fail "Redis was not stopped once with SIGTERM and once with SIGKILL"
[ "$check_rc" -eq 0 ] || fail "check.py found violations (above)"

# The figures of the run.
jq -r --argjson secs $((SECONDS - t0)) --slurpfile w "$RUN/workload.json" '
  "cluster figures: \(.deployments) requests (\(.validated) validated, \(.rejected) rejected) over \($w[0].workload_s) s of workload, " +
  "\(.faults.broker_stop // 0) broker stop(s) and start(s), \(.faults.redis // 0) Redis restarts (SIGTERM, SIGKILL); " +
  "\(.outcomes_checked) outcomes checked (\(.outcomes["deploy.succeeded"] // 0) succeeded, \(.outcomes["deploy.failed"] // 0) failed, " +
  "\(.rejected) rejected), \(.bad_deployed) bad versions rolled back, \(.provider_runs) provider runs, \(.events) events in the registry; " +
  "\(.lost) lost, \(.doubled) doubled; \($secs) s in all"' "$RUN/check.json"
echo "ok"
