# helpers-monitor.sh - what the monitor tests (04xx) share; source it after helpers.sh.
#
# The tests need no executor: they put deploy.succeeded / rollback.succeeded on the events
# topic with kcat (inject, helpers.sh), exactly as the executor or the rollback worker
# would, and read what deployq-monitor emits. The probed service is tests/fakes/health.py
# (status, latency, body flipped at runtime: fake_script) and tests/fakes/prometheus.py
# stands in for Prometheus, both started with start_fake NAME KIND.

MONITOR="$DEPLOYQ_BUILD/workers/monitor/deployq-monitor"

# write_monitor_config SERVICES_YAML [TOP_LEVEL_MONITOR_YAML]: a configuration of the test's
# broker, Redis and topics, with the `services:` block given (environments carry their
# `monitor:` settings), and optionally a top-level `monitor:` section.
write_monitor_config() {
    CONFIG="$T/deployq.yaml"
    cat >"$CONFIG" <<YAML
$(config_base)
${2:-}
services:
$1
YAML
}

# start_monitor NAME [extra args]: sets MONITOR_PID_<NAME>, and waits until its consumer
# has partitions (a real Kafka's first group join takes seconds, longer than the short
# windows of these tests; a trigger read late would start its window late).
start_monitor() {
    start_monitor_nowait "$@"
    wait_for 60 grep -q 'kafka: assigned' "$T/monitor-$1.log" || fail "monitor $1 got no partitions"
}
# start_monitor_nowait NAME [extra args]: the same without waiting for the consumer.
start_monitor_nowait() {
    local name=$1; shift
    "$MONITOR" --config "$CONFIG" --log-level debug "$@" >>"$T/monitor-$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    eval "MONITOR_PID_$name=$pid"
    if [ "$BROKER_KIND" = kafka ]; then
        wait_for 60 topic_ready "$TOPIC_EVENTS" || fail "$TOPIC_EVENTS was not created"
    fi
}

# health_calls NAME: how many requests the health double NAME has answered.
health_calls() { fake_calls "$1" | jq -r .calls; }
# health_calls_ge NAME N: the double has answered at least N requests (for wait_for).
health_calls_ge() { [ "$(health_calls "$1")" -ge "$2" ]; }
# events_ge DEPLOYMENT_ID TYPE N: at least N events of TYPE (for wait_for).
events_ge() { [ "$(count_events "$1" "$2")" -ge "$3" ]; }

# assert_no_event DEPLOYMENT_ID TYPE: fail if an event of TYPE is on the topic.
assert_no_event() {
    local out
    out=$(events_for "$1" "$2" | head -n 1)
    [ -z "$out" ] || fail "unexpected $2 for $1: $out"
}

# count_events DEPLOYMENT_ID TYPE: how many events of TYPE (repeats included).
count_events() { events_for "$1" "$2" | wc -l; }

# monitor_events_valid: every event deployq-monitor put on the topic is valid against
# schemas/ (and they are saved in $T/monitor-events.jsonl).
monitor_events_valid() {
    local n
    events | jq -c 'select(.actor | startswith("deployq-monitor"))' >"$T/monitor-events.jsonl"
    n=$(wc -l <"$T/monitor-events.jsonl")
    assert_eq "$(schema_check <"$T/monitor-events.jsonl")" "$n" "monitor events valid against schemas/"
}

# stop_monitor NAME: SIGTERM, then it must exit 0 within 15 s (a clean shutdown: the
# ticker finishes its tick, the consumer leaves the group, the producers flush).
stop_monitor() {
    local pid
    pid=$(eval "echo \$MONITOR_PID_$1")
    kill -TERM "$pid" 2>/dev/null || fail "monitor $1 is not running"
    local rc=0
    for _ in $(seq 1 150); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && fail "monitor $1 did not stop within 15 s of SIGTERM"
    wait "$pid" || rc=$?
    assert_eq "$rc" 0 "exit status of monitor $1 after SIGTERM"
    grep -q '"msg":"stopping: ' "$T/monitor-$1.log" || fail "monitor $1 did not log its stop"
}
