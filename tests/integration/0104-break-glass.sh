#!/usr/bin/env bash
# Break-glass: with the broker unreachable, `deployq deploy --direct` (operator key,
# --reason) deploys through a provider double under the Redis lock and spools its
# events (marked direct); after the broker is back, `deployq spool flush` puts them on
# deployq.events exactly once, and a second flush sends nothing. A CI key is refused,
# and with Redis down the deploy still runs but says loudly that it has no lock.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"

start_redis
start_broker
start_fake wh webhook
WH=http://127.0.0.1:$FAKE_PORT_wh
REAL_BROKERS=$BROKERS
# the configuration the operator has points at a broker that is down
BROKERS=127.0.0.1:$(free_port)
write_exec_config "  api:
    environments:
      staging:
        providers:
          - {type: webhook, name: wh, url: \"$WH/deploy\", status_url: \"$WH/status/{id}\", poll_interval: 200ms, deadline: 30s}"
fake_script wh '{"mode":"succeed","steps":2}'
SPOOL=$T/spool.jsonl
direct() { "$DEPLOYQ" deploy --direct --config "$CONFIG" --spool "$SPOOL" "$@"; }

log "a CI key cannot break glass"
set +e
direct --key "$T/ci.key" --key-id ci-test --service api --env staging --version v0 --reason "outage" 2>"$T/ci-refused.err"
rc=$?
set -e
assert_eq "$rc" 1 "exit status with a CI key"
grep -q 'operator key' "$T/ci-refused.err" || fail "no reason given: $(cat "$T/ci-refused.err")"
[ ! -s "$SPOOL" ] || fail "a refused deploy spooled events"

log "break-glass deploy with the broker down"
direct --key "$T/operator.key" --key-id op-test --service api --env staging --version v1 \
    --reason "kafka outage INC-42" >"$T/direct.out" 2>"$T/direct.err" || fail "direct deploy failed: $(cat "$T/direct.err")"
id=$(sed -n 's/^deployment \([0-9a-f-]*\):.*/\1/p' "$T/direct.out")
[ -n "$id" ] || fail "no deployment id printed: $(cat "$T/direct.out")"
assert_eq "$(stat -c %a "$SPOOL")" 600 "spool mode"
assert_eq "$(jq -r .type "$SPOOL" | paste -sd, -)" "deploy.started,deploy.succeeded" "spooled events"
assert_eq "$(jq -r .data.direct "$SPOOL" | sort -u)" true "events marked direct"
assert_eq "$(jq -r .data.direct_reason "$SPOOL" | sort -u)" "kafka outage INC-42" "reason in the events"
fence=$(jq -r .fence "$SPOOL" | sort -u)
[ "$fence" -ge 1 ] || fail "no fence: the lock was not taken"
assert_eq "$(redis-cli -p "$REDIS_PORT" exists deployq:lock:api:staging)" 0 "lock released"
assert_eq "$(deploy_calls wh)" 1 "deploy calls"
spooled_ids=$(jq -r .id "$SPOOL" | sort)
schema_check <"$SPOOL" || fail "spooled events do not match the schemas"

log "flush while the broker is still down keeps the events"
set +e
"$DEPLOYQ" spool flush --config "$CONFIG" --spool "$SPOOL" --timeout 2 2>"$T/flush-down.err"
rc=$?
set -e
assert_eq "$rc" 1 "flush exit status with the broker down"
assert_eq "$(wc -l <"$SPOOL")" 2 "events kept in the spool"

log "the broker is back: flush"
BROKERS=$REAL_BROKERS
if [ "$BROKER_KIND" = kafka ]; then
    # a real Kafka has auto-creation off for our topics: make them as a worker would
    start_validator a --brokers "$BROKERS"
fi
"$DEPLOYQ" spool flush --config "$CONFIG" --brokers "$BROKERS" --spool "$SPOOL" >"$T/flush.out" || fail "flush failed"
grep -q '2 event(s) published' "$T/flush.out" || fail "flush said: $(cat "$T/flush.out")"
"$DEPLOYQ" spool flush --config "$CONFIG" --brokers "$BROKERS" --spool "$SPOOL" >"$T/flush2.out" || fail "second flush failed"
grep -q 'nothing to flush' "$T/flush2.out" || fail "second flush said: $(cat "$T/flush2.out")"

on_topic=$(events | jq -r --arg id "$id" 'select(.deployment_id == $id) | .id')
assert_eq "$(sort <<<"$on_topic")" "$spooled_ids" "events on the topic (each exactly once)"
events | jq -c --arg id "$id" 'select(.deployment_id == $id)' | schema_check || fail "schema"

log "Redis down: the deploy runs without the lock and says so"
kill -TERM "$REDIS_PID"
wait_for 10 sh -c "! redis-cli -p $REDIS_PORT ping >/dev/null 2>&1" || fail "redis did not stop"
direct --key "$T/operator.key" --key-id op-test --service api --env staging --version v2 \
    --reason "redis and kafka outage" >"$T/direct2.out" 2>"$T/direct2.err" || fail "direct deploy without redis failed: $(cat "$T/direct2.err")"
grep -q 'WARNING: Redis unreachable.*WITHOUT the target lock' "$T/direct2.err" || fail "no loud warning: $(cat "$T/direct2.err")"
assert_eq "$(jq -r .fence "$SPOOL" | sort -u)" 0 "fence without a lock"
echo ok
