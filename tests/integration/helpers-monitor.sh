# helpers-monitor.sh - what the monitor tests (04xx) share; source it after helpers.sh.
#
# The tests need no executor: they put deploy.succeeded / rollback.succeeded on the events
# topic with kcat, exactly as the executor or the rollback worker would, and read what
# deployq-monitor emits. The probed service is tests/fakes/health.py (status, latency,
# body flipped at runtime) and tests/fakes/prometheus.py stands in for Prometheus.

MONITOR="$DEPLOYQ_BUILD/workers/monitor/deployq-monitor"
FAKES="$DEPLOYQ_SOURCE/tests/fakes"

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

# start_fake KIND NAME [args]: tests/fakes/KIND.py on a free port; sets <NAME>_PORT and
# <NAME>_URL (http://127.0.0.1:port).
start_fake() {
    local kind=$1 name=$2; shift 2
    "$PY" "$FAKES/$kind.py" --port 0 --port-file "$T/$name.port" "$@" >"$T/$name.log" 2>&1 &
    PIDS+=("$!")
    wait_for 10 test -s "$T/$name.port" || fail "$kind double $name did not start"
    local port
    port=$(cat "$T/$name.port")
    eval "${name}_PORT=$port"
    eval "${name}_URL=http://127.0.0.1:$port"
}

# fake_post URL PATH JSON: script a double.
fake_post() {
    curl -fsS -X POST -H 'Content-Type: application/json' --data "$3" "$1$2" >/dev/null ||
        fail "POST $1$2 failed"
}
health_calls() { curl -fsS "$1/_fake/calls" | jq -r .calls; }
# health_calls_ge URL N: the double has answered at least N requests (for wait_for).
health_calls_ge() { [ "$(health_calls "$1")" -ge "$2" ]; }
# events_ge DEPLOYMENT_ID TYPE N: at least N events of TYPE (for wait_for).
events_ge() { [ "$(count_events "$1" "$2")" -ge "$3" ]; }

new_uuid() { cat /proc/sys/kernel/random/uuid; }
now_rfc3339() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }

# inject TYPE SERVICE ENV VERSION DEPLOYMENT_ID [EVENT_ID] [AT]: put one event on the
# events topic as a worker would (keyed service/env). Prints the event id.
inject() {
    local type=$1 svc=$2 env=$3 version=$4 dep=$5 id=${6:-$(new_uuid)} at=${7:-$(now_rfc3339)}
    local data
    case "$type" in
    deploy.succeeded) data='{"provider":"command","provider_deployment_id":"run-1","duration_ms":1200}' ;;
    rollback.succeeded) data="{\"to_version\":\"$version\",\"method\":\"redeploy\",\"restored_at\":\"$at\"}" ;;
    *) data='{}' ;;
    esac
    jq -cn --arg id "$id" --arg type "$type" --arg dep "$dep" --arg svc "$svc" --arg env "$env" \
        --arg v "$version" --arg at "$at" --argjson data "$data" \
        '{schema:"deployq.event/v1",id:$id,type:$type,deployment_id:$dep,service:$svc,
          environment:$env,version:$v,at:$at,actor:"deployq-executor@test/1",fence:7,data:$data}' |
        kcat -P -b "$BROKERS" -t "$TOPIC_EVENTS" -k "$svc/$env" 2>>"$T/kcat.log" ||
        fail "kcat could not produce $type"
    printf '%s\n' "$id"
}

# Milliseconds since the epoch of an RFC 3339 time (GNU date).
ms_of() { date -u -d "$1" +%s%3N; }

# wait_no_event DEPLOYMENT_ID TYPE SECONDS: fail if TYPE shows up within SECONDS.
assert_no_event() {
    local out
    out=$(events_for "$1" | jq -c --arg t "$2" 'select(.type == $t)' | head -n 1)
    [ -z "$out" ] || fail "unexpected $2 for $1: $out"
}

# count_events DEPLOYMENT_ID TYPE
count_events() { events_for "$1" | jq -c --arg t "$2" 'select(.type == $t)' | wc -l; }

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
