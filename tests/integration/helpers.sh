# helpers.sh - shared by every integration test (tests/integration/NNNN-*.sh).
#
# Each test sources this file, which gives it a scratch directory, a real redis-server on
# a free port, a broker, a configuration with fresh signing keys, and helpers to run the
# deployq binaries and read deployq.events with an independent client (kcat). Everything
# a test starts is stopped on exit, whatever happened. The helpers every area uses are
# here (events put on the topic with inject, requests with signed / produce_raw, the doubles
# of tests/fakes with start_fake NAME KIND); helpers-<area>.sh add what one area needs.
#
# The broker: the embedded one (`deployq broker`, librdkafka's mock cluster), fresh per
# test, unless DEPLOYQ_TEST_BROKERS names a real Kafka; then each test uses topics of its
# own (deployq.requests.<test>-<random>, ...) so tests never read each other's events.
# DEPLOYQ_TEST_KAFKA_DIR, besides, names the data dir of a `scripts/kafka.sh start --secure`
# broker: every deployq process and kcat then connect over SASL_SSL as its super user, with
# the mechanism and CA of D/client/admin.kcat (the password through ${...} in the
# configuration, never written to it).
#
# Binaries come from DEPLOYQ_BUILD (meson sets it), so tests run against the build tree.

set -euo pipefail

: "${DEPLOYQ_BUILD:?DEPLOYQ_BUILD must point at the meson build directory}"
: "${DEPLOYQ_SOURCE:?DEPLOYQ_SOURCE must point at the source tree}"
DEPLOYQ="$DEPLOYQ_BUILD/producer/deployq"
VALIDATOR="$DEPLOYQ_BUILD/workers/validator/deployq-validator"
PY=/usr/bin/python3
export DEPLOYQ_SCHEMAS="$DEPLOYQ_SOURCE/schemas"

TEST_NAME=$(basename "$0" .sh)
T=$(mktemp -d "/tmp/dq-${TEST_NAME}.XXXXXX")
export DEPLOYQ_STATE_DIR="$T/state" # never find a developer's running `deployq up`
mkdir -p "$DEPLOYQ_STATE_DIR"
PIDS=()

log() { printf '# %s: %s\n' "$TEST_NAME" "$*" >&2; }
fail() {
    printf 'FAIL %s: %s\n' "$TEST_NAME" "$*" >&2
    dump_logs
    exit 1
}
dump_logs() {
    for f in "$T"/*.log; do
        [ -f "$f" ] || continue
        printf -- '---- %s (last 30 lines)\n' "$(basename "$f")" >&2
        tail -n 30 "$f" >&2 || true
    done
}

# stop_pids PID...: SIGTERM to each (last first), then up to 5 s each to exit, then SIGKILL.
stop_pids() {
    local pids=("$@")
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# The workers first, while the broker and Redis still answer (a worker whose broker is gone
# waits out its consumer close), then the broker and Redis.
cleanup() {
    local rc=$? rest=() infra=()
    for pid in "${PIDS[@]}"; do
        if [ "$pid" = "${BROKER_PID:-}" ] || [ "$pid" = "${REDIS_PID:-}" ]; then
            infra+=("$pid")
        else
            rest+=("$pid")
        fi
    done
    [ ${#rest[@]} -eq 0 ] || stop_pids "${rest[@]}"
    [ ${#infra[@]} -eq 0 ] || stop_pids "${infra[@]}"
    wait 2>/dev/null || true
    if [ "$rc" -eq 0 ] && [ -z "${DQ_KEEP:-}" ]; then rm -rf "$T"; else echo "# kept $T" >&2; fi
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# wait_for SECONDS COMMAND...: run COMMAND until it succeeds, fail after SECONDS.
wait_for() {
    local secs=$1; shift
    local end=$((SECONDS + secs))
    until "$@"; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.2
    done
}

# start_redis: a redis-server on a free port (REDIS_PORT, REDIS_PID, REDIS_URL), with
# REDIS_EXTRA_ARGS; REDIS_CLI_AUTH: redis-cli arguments to log in with.
start_redis() {
    REDIS_PORT=$(free_port)
    restart_redis --appendonly no ${REDIS_EXTRA_ARGS:-}
    REDIS_URL=${REDIS_URL_OVERRIDE:-redis://127.0.0.1:$REDIS_PORT}
}
# restart_redis [redis-server args...]: run the test's redis-server (again, after
# kill_redis) on REDIS_PORT with its dir $T; sets REDIS_PID once it answers.
restart_redis() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --dir "$T" "$@" >>"$T/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_for 10 redis-cli -p "$REDIS_PORT" ${REDIS_CLI_AUTH:-} ping >/dev/null 2>&1 || fail "redis-server did not start"
}
# kill_redis: SIGKILL the test's redis-server (a crash), and reap it.
kill_redis() {
    kill -KILL "$REDIS_PID"
    wait "$REDIS_PID" 2>/dev/null || true
}
# redis_has KEY: the key exists (for wait_for).
redis_has() { [ "$(redis-cli -p "$REDIS_PORT" exists "$1")" = 1 ]; }

start_broker() {
    if [ -n "${DEPLOYQ_TEST_BROKERS:-}" ]; then
        BROKERS=$DEPLOYQ_TEST_BROKERS
        local suffix
        suffix="$TEST_NAME-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
        TOPIC_REQUESTS="deployq.requests.$suffix"
        TOPIC_EVENTS="deployq.events.$suffix"
        TOPIC_DEAD="deployq.dead.$suffix"
        # and consumer groups of its own: tests run in parallel on one Kafka
        GROUP_PREFIX="deployq-$suffix"
        BROKER_KIND=kafka
        if [ -n "${DEPLOYQ_TEST_KAFKA_DIR:-}" ]; then
            [ -s "$DEPLOYQ_TEST_KAFKA_DIR/client/admin.kcat" ] ||
                fail "DEPLOYQ_TEST_KAFKA_DIR=$DEPLOYQ_TEST_KAFKA_DIR has no client/admin.kcat (kafka.sh start --secure)"
            export KCAT_CONFIG="$DEPLOYQ_TEST_KAFKA_DIR/client/admin.kcat"
            DQ_TEST_KAFKA_PASSWORD=$(cat "$DEPLOYQ_TEST_KAFKA_DIR/client/admin.password")
            export DQ_TEST_KAFKA_PASSWORD
            log "connecting over SASL_SSL ($(sed -n 's/^sasl.mechanisms=//p' "$KCAT_CONFIG")) as admin"
        fi
    else
        "$DEPLOYQ" broker --address-file "$T/broker.addr" >"$T/broker.out" 2>"$T/broker.log" &
        BROKER_PID=$!
        PIDS+=("$BROKER_PID")
        wait_for 10 test -s "$T/broker.addr" || fail "embedded broker did not start"
        BROKERS=$(cat "$T/broker.addr")
        TOPIC_REQUESTS=deployq.requests
        TOPIC_EVENTS=deployq.events
        TOPIC_DEAD=deployq.dead
        GROUP_PREFIX=deployq
        BROKER_KIND=embedded
    fi
    log "broker $BROKERS ($BROKER_KIND)"
}

# The kafka: lines for a secure broker (DEPLOYQ_TEST_KAFKA_DIR), none otherwise.
kafka_security_yaml() {
    [ -n "${DEPLOYQ_TEST_KAFKA_DIR:-}" ] && [ -n "${KCAT_CONFIG:-}" ] || return 0
    printf '  security.protocol: SASL_SSL\n'
    printf '  sasl.mechanisms: %s\n' "$(sed -n 's/^sasl.mechanisms=//p' "$KCAT_CONFIG")"
    printf '  sasl.username: admin\n'
    printf '  sasl.password: "${DQ_TEST_KAFKA_PASSWORD}"\n'
    printf '  ssl.ca.location: "%s"\n' "$DEPLOYQ_TEST_KAFKA_DIR/tls/ca.pem"
}

# sasl_secret: fill the Kafka SASL password slot of $CONFIG for a secrets test, and print
# the secret that must then be found nowhere. On a broker that authenticates
# (DEPLOYQ_TEST_KAFKA_DIR) the slot holds its real password already (${DQ_TEST_KAFKA_PASSWORD});
# otherwise it gets ${DQ_SASL_PASSWORD}, which librdkafka accepts but does not use on a
# PLAINTEXT listener.
sasl_secret() {
    if [ -n "${DEPLOYQ_TEST_KAFKA_DIR:-}" ]; then
        grep -q 'DQ_TEST_KAFKA_PASSWORD' "$CONFIG" || return 1
        printf '%s' "$DQ_TEST_KAFKA_PASSWORD"
    else
        sed -i 's/^kafka:$/kafka:\n  sasl.username: "deployq"\n  sasl.password: "${DQ_SASL_PASSWORD}"/' "$CONFIG"
        grep -q 'DQ_SASL_PASSWORD' "$CONFIG" || return 1
        printf '%s' "${DQ_SASL_PASSWORD:?}"
    fi
}

# The part of every test configuration that says where things are: the test's broker,
# Redis and topics. The write_*config helpers start their YAML with it.
# kill_broker: SIGKILL the embedded broker (BROKER_PID; a crash: every client sees it go),
# and reap it. Only for BROKER_KIND=embedded: a shared real Kafka is not the test's to stop.
kill_broker() {
    [ "$BROKER_KIND" = embedded ] || fail "kill_broker: the broker is a shared Kafka"
    kill -KILL "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
}

config_base() {
    cat <<YAML
kafka:
  bootstrap.servers: "$BROKERS"
  session.timeout.ms: "6000"
  heartbeat.interval.ms: "500"
$(kafka_security_yaml)
redis:
  url: "$REDIS_URL"
topics:
  requests: "$TOPIC_REQUESTS"
  events: "$TOPIC_EVENTS"
  dead: "$TOPIC_DEAD"
  group_prefix: "${GROUP_PREFIX:-deployq}"
YAML
}

# write_config [EXTRA_YAML]: keys, services, topics; extra YAML is appended verbatim.
write_config() {
    "$DEPLOYQ" keygen --out "$T/ci.key" --id ci-test >/dev/null
    "$DEPLOYQ" keygen --out "$T/approver.key" --id approver-test --role approver >/dev/null
    "$DEPLOYQ" keygen --out "$T/retired.key" --id ci-retired >/dev/null
    "$DEPLOYQ" keygen --out "$T/stranger.key" --id ci-test >/dev/null # same id, other key
    CONFIG="$T/deployq.yaml"
    cat >"$CONFIG" <<YAML
$(config_base)
keys:
  - id: ci-test
    public_key: "$(pubkey "$T/ci.key")"
    role: ci
  - id: approver-test
    public_key: "$(pubkey "$T/approver.key")"
    role: approver
  - id: ci-retired
    public_key: "$(pubkey "$T/retired.key")"
    role: ci
    retired: true
services:
  demo:
    environments:
      staging: {}
      production:
        requires: staging
  api:
    environments:
      staging: {}
      production: {}
${1:-}
YAML
}

# The base64 public key of a PEM private key (what keygen printed), via openssl.
pubkey() { openssl pkey -in "$1" -pubout -outform DER 2>/dev/null | tail -c 32 | base64 -w0; }

# start_validator NAME [extra args]
start_validator() {
    local name=$1; shift
    "$VALIDATOR" --config "$CONFIG" --log-level debug "$@" >"$T/validator-$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    eval "VALIDATOR_PID_$name=$pid"
    # On a real Kafka the worker creates its topics at start (6 partitions); wait for
    # that, or a producer could race it.
    if [ "$BROKER_KIND" = kafka ]; then
        wait_for 60 topic_ready "$TOPIC_REQUESTS" || fail "$TOPIC_REQUESTS was not created"
        wait_for 30 topic_ready "$TOPIC_EVENTS" || fail "$TOPIC_EVENTS was not created"
    fi
    # topics.group_prefix names its groups (each test has its own on a shared Kafka)
    wait_for 30 grep -q "as group ${GROUP_PREFIX:-deployq}-validator (and [^ ]* as ${GROUP_PREFIX:-deployq}-validator-state)" \
        "$T/validator-$name.log" || fail "validator $name is not in group ${GROUP_PREFIX:-deployq}-validator"
}
topic_ready() { kcat -L -b "$BROKERS" -t "$1" 2>/dev/null | grep -q "topic \"$1\" with 6 partitions"; }

# submit [submit args...]: deployq submit with the test's configuration and CI key.
submit() { "$DEPLOYQ" submit --config "$CONFIG" --key "$T/ci.key" --key-id ci-test "$@"; }
# signed [submit args...]: a signed request as CI would send it (submit --dry-run), with the
# key $KEY (default $T/ci.key) under the id $KEY_ID (default ci-test); prints the message.
signed() { "$DEPLOYQ" submit --dry-run --key "${KEY:-$T/ci.key}" --key-id "${KEY_ID:-ci-test}" "$@"; }
# id_of MESSAGE: the deployment id of a signed request (from signed).
id_of() { jq -r '.request | fromjson | .deployment_id' <<<"$1"; }
# produce_raw TEXT [KEY]: put TEXT as it is on the requests topic, keyed KEY (default raw),
# with kcat (forged, altered or replayed requests, approvals, garbage).
produce_raw() { printf '%s\n' "$1" | kcat -P -b "$BROKERS" -t "$TOPIC_REQUESTS" -k "${2:-raw}" 2>/dev/null; }
# reason_codes EVENT: the codes of a deploy.rejected, comma-separated.
reason_codes() { jq -r '[.data.reasons[].code] | join(",")' <<<"$1"; }

# Every event on the events topic, one JSON document a line (independent client: kcat).
events() {
    kcat -C -b "$BROKERS" -t "$TOPIC_EVENTS" -o beginning -e -q -f '%s\n' 2>/dev/null || true
}
# events_for DEPLOYMENT_ID [TYPE]: its events (only those of TYPE if given), one a line.
events_for() {
    if [ -n "${2:-}" ]; then
        events | jq -c --arg id "$1" --arg t "$2" 'select(.deployment_id == $id and .type == $t)'
    else
        events | jq -c --arg id "$1" 'select(.deployment_id == $id)'
    fi
}

# wait_event DEPLOYMENT_ID TYPE [SECONDS]: prints the event once it is on the topic.
wait_event() {
    local id=$1 type=$2 end=$((SECONDS + ${3:-30})) out
    while :; do
        out=$(events_for "$id" "$type" | head -n 1)
        [ -n "$out" ] && { printf '%s\n' "$out"; return 0; }
        [ $SECONDS -lt $end ] || return 1
        sleep 0.3
    done
}

# Validate JSON lines on stdin against schemas/ with Python's jsonschema (independent).
schema_check() { "$PY" "$DEPLOYQ_SOURCE/tests/integration/validate_events.py" "$DEPLOYQ_SOURCE/schemas"; }

assert_eq() { [ "$1" == "$2" ] || fail "${3:-value}: expected '$2', got '$1'"; }
alive() { kill -0 "$1" 2>/dev/null; }

# ---- times and ids ----
# new_uuid: a random UUID (v4), for deployment and event ids.
new_uuid() { cat /proc/sys/kernel/random/uuid; }
# now_rfc3339 / ago_rfc3339 SECONDS: RFC 3339 times (UTC, milliseconds), now and SECONDS ago.
now_rfc3339() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }
ago_rfc3339() { date -u -d "$1 seconds ago" +%Y-%m-%dT%H:%M:%S.%3NZ; }
# ms_of TIME: milliseconds since the epoch of an RFC 3339 time (GNU date).
ms_of() { date -u -d "$1" +%s%3N; }

# inject TYPE SERVICE ENV VERSION DEPLOYMENT_ID [DATA_JSON] [EVENT_ID] [AT]: put one event
# on the events topic with kcat, as the executor, monitor or rollback worker would (keyed
# service/env, fence 7); prints its id. Without DATA_JSON (or with ""), the data of a
# plausible deploy.succeeded / rollback.succeeded, {} for other types.
inject() {
    local type=$1 svc=$2 env=$3 version=$4 dep=$5 data=${6:-} id=${7:-} at=${8:-}
    [ -n "$id" ] || id=$(new_uuid)
    [ -n "$at" ] || at=$(now_rfc3339)
    if [ -z "$data" ]; then
        case "$type" in
        deploy.succeeded) data='{"provider":"command","provider_deployment_id":"run-1","duration_ms":1200}' ;;
        rollback.succeeded) data="{\"to_version\":\"$version\",\"method\":\"redeploy\",\"restored_at\":\"$at\"}" ;;
        *) data='{}' ;;
        esac
    fi
    jq -cn --arg id "$id" --arg type "$type" --arg dep "$dep" --arg svc "$svc" --arg env "$env" \
        --arg v "$version" --arg at "$at" --argjson data "$data" \
        '{schema:"deployq.event/v1",id:$id,type:$type,deployment_id:$dep,service:$svc,
          environment:$env,version:$v,at:$at,actor:"deployq-test@localhost/1",fence:7,data:$data}' |
        kcat -P -b "$BROKERS" -t "$TOPIC_EVENTS" -k "$svc/$env" 2>>"$T/kcat.log" ||
        fail "kcat could not inject $type"
    printf '%s\n' "$id"
}

# succeeded_data PROVIDER PROVIDER_ID: the data of a deploy.succeeded, for inject.
succeeded_data() { jq -cn --arg p "$1" --arg i "$2" '{provider:$p,provider_deployment_id:$i,duration_ms:1000}'; }
# The data of a deploy.verified, for inject.
verified_data='{"window_ms":60000,"samples":12}'

# ---- doubles (tests/fakes): providers, Slack, health, Prometheus, router ----
FAKES="$DEPLOYQ_SOURCE/tests/fakes"

# start_fake NAME KIND [args...]: tests/fakes/KIND.py (webhook, railway, slack, health,
# prometheus, router, ...) on a free port, given args; sets FAKE_PORT_<NAME> and
# FAKE_URL_<NAME> (http://127.0.0.1:port).
start_fake() {
    local name=$1 kind=$2 port
    shift 2
    "$PY" "$FAKES/$kind.py" --port 0 --port-file "$T/fake-$name.port" "$@" >"$T/fake-$name.log" 2>&1 &
    PIDS+=("$!")
    wait_for 10 test -s "$T/fake-$name.port" || fail "fake $name ($kind) did not start"
    port=$(cat "$T/fake-$name.port")
    eval "FAKE_PORT_$name=$port FAKE_URL_$name=http://127.0.0.1:$port"
}
# fake_url NAME: http://127.0.0.1:port of the double NAME.
fake_url() { eval "printf '%s' \"\$FAKE_URL_$1\""; }
# fake_post NAME PATH JSON: POST JSON to a control endpoint of the double (fails the test
# if it does not take it).
fake_post() {
    curl -fsS -X POST -H 'Content-Type: application/json' --data "$3" "$(fake_url "$1")$2" >/dev/null ||
        fail "POST $2 to the double $1 failed"
}
# fake_script NAME JSON: replace what the double does (its script).
fake_script() { fake_post "$1" /_fake/script "$2"; }
# fake_reset NAME: forget its calls and script.
fake_reset() { fake_post "$1" /_fake/reset '{}'; }
# fake_calls NAME: what the double recorded (GET /_fake/calls).
fake_calls() { curl -fsS "$(fake_url "$1")/_fake/calls"; }
