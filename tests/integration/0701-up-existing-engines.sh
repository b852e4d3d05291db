#!/usr/bin/env bash
# `deployq up --brokers LIST --redis URL` runs the workers on a Kafka and a Redis that are
# already running: it starts neither an embedded broker nor a redis-server, records that in
# stack.json, a deploy goes from submit to verified through them, and stopping `up` leaves
# both running. A Redis or Kafka that cannot be reached stops `up` at once with one line.
# (On DEPLOYQ_TEST_BROKERS too: `up` creates the deployq.* topics there when missing.)
. "$(dirname "$0")/helpers.sh"

# `up` writes a plain (PLAINTEXT) kafka: section; a secure test Kafka needs a --config.
[ -z "${DEPLOYQ_TEST_KAFKA_DIR:-}" ] || { log "skipped: secure Kafka"; exit 77; }
start_broker
start_redis
broker_pid=${PIDS[0]:-}

# Unreachable engines: one line naming the address and where it came from.
rc=0; "$DEPLOYQ" up --brokers "$BROKERS" --redis redis://127.0.0.1:1 >/dev/null 2>"$T/noredis.err" || rc=$?
assert_eq "$rc" 1 "exit code, Redis unreachable"
grep -q '^deployq: up: cannot reach Redis at redis://127.0.0.1:1 (--redis): ' "$T/noredis.err" || fail "$(cat "$T/noredis.err")"
rc=0; DEPLOYQ_REDIS_URL="redis://:hunter2-secret@127.0.0.1:1" "$DEPLOYQ" up --brokers "$BROKERS" \
    >/dev/null 2>"$T/noredis2.err" || rc=$?
assert_eq "$rc" 1 "exit code, Redis unreachable (env)"
grep -q 'cannot reach Redis at redis://\*\*\*@127.0.0.1:1 (\$DEPLOYQ_REDIS_URL)' "$T/noredis2.err" || fail "$(cat "$T/noredis2.err")"
! grep -q hunter2 "$T/noredis2.err" || fail "the password was printed"
[ ! -e "$DEPLOYQ_STATE_DIR/stack.json" ] || fail "a failed up left stack.json"

"$DEPLOYQ" up --brokers "$BROKERS" --redis "$REDIS_URL" >"$T/up.out" 2>"$T/up.log" &
UP=$!
PIDS+=("$UP")
wait_for 60 grep -q 'Ctrl-C stops everything' "$T/up.out" || fail "up did not start: $(cat "$T/up.out")"
grep -qF "kafka (existing)  $BROKERS, from --brokers; not stopped by up" "$T/up.out" || fail "$(cat "$T/up.out")"
grep -qF "redis (existing)  $REDIS_URL, from --redis; not stopped by up" "$T/up.out" || fail "$(cat "$T/up.out")"
assert_eq "$(jq -r '.broker_started, .redis_started' "$DEPLOYQ_STATE_DIR/stack.json" | tr '\n' ' ')" "false false " "stack.json"
assert_eq "$(jq -r .brokers "$DEPLOYQ_STATE_DIR/stack.json")" "$BROKERS" "stack.json brokers"
# Nothing of its own: no redis-server among up's children, no embedded broker listening.
! pgrep -P "$UP" -f redis-server >/dev/null || fail "up started a redis-server"
grep -q "^  kafka (embedded)" "$T/up.out" && fail "up started the embedded broker"

# A deploy through the existing engines: verified (the demo staging service is watched).
out=$("$DEPLOYQ" submit --service demo --env staging --version v1 --wait --timeout 50) || fail "deploy: $out"
tail -n1 <<<"$out" | grep -q ': deployed$' || fail "not deployed: $out"
grep -q 'deploy.verified .*demo/staging v1' <<<"$out" || fail "not verified: $out"
# The validator learns the verification from deployq.events, a moment after --wait saw it.
wait_for 20 bash -c "[ \"\$(redis-cli -p $REDIS_PORT exists deployq:verified:demo:staging:v1)\" = 1 ]" ||
    fail "v1 is not recorded as verified in the existing Redis (deployq:verified:demo:staging:v1)"

kill -INT "$UP"
wait_for 30 bash -c "! kill -0 $UP 2>/dev/null" || fail "up did not stop"
assert_eq "$(redis-cli -p "$REDIS_PORT" ping)" PONG "the existing Redis after up stopped"
if [ -n "$broker_pid" ] && [ "$BROKER_KIND" = embedded ]; then
    kill -0 "$broker_pid" 2>/dev/null || fail "the existing broker was stopped"
fi
[ ! -e "$DEPLOYQ_STATE_DIR/stack.json" ] || fail "stack.json left behind"
echo ok
