#!/usr/bin/env bash
# `deployq up` runs the whole stack on one machine; a second `deployq` finds it without
# flags; Ctrl-C (SIGINT) stops everything it started. (Always the embedded broker.)
. "$(dirname "$0")/helpers.sh"

"$DEPLOYQ" up >"$T/up.out" 2>"$T/up.log" &
UP=$!
PIDS+=("$UP")
wait_for 30 test -s "$DEPLOYQ_STATE_DIR/stack.json" || fail "up did not write its state"
grep -q 'deployq stack is up' "$T/up.out" || wait_for 5 grep -q 'deployq stack is up' "$T/up.out" || fail "up output"
BROKERS=$(jq -r .brokers "$DEPLOYQ_STATE_DIR/stack.json")
TOPIC_EVENTS=deployq.events
redis_port=$(jq -r .redis_url "$DEPLOYQ_STATE_DIR/stack.json" | sed 's/.*://')
redis-cli -p "$redis_port" ping | grep -q PONG || fail "up's redis does not answer"
grep -q "kafka (embedded)  $BROKERS" "$T/up.out" || fail "up does not print the broker: $(cat "$T/up.out")"

# A second `up` refuses: one stack per state directory.
set +e
"$DEPLOYQ" up 2>"$T/err2"; rc=$?
set -e
assert_eq "$rc" 1 "second up"
grep -q 'already running' "$T/err2" || fail "second up message"

# No flags at all: the stack's broker, config and CI key are found.
id=$("$DEPLOYQ" submit --service demo --env staging --version v1) || fail "flagless submit"
ev=$(wait_event "$id" deploy.validated 60) || fail "no deploy.validated from the stack"
assert_eq "$(jq -r .data.key_id <<<"$ev")" ci-local "key id"

validator_pid=$(pgrep -f "deployq-validator --config $DEPLOYQ_STATE_DIR" | head -n1)
[ -n "$validator_pid" ] || fail "no validator process"
redis_pid=$(pgrep -f "redis-server 127.0.0.1:$redis_port" | head -n1)

# A worker that dies is restarted.
kill -KILL "$validator_pid"
wait_for 15 grep -q 'validator exited (signal 9); restarting it' "$T/up.log" || fail "restart not reported"
new_validator() {
    local p
    p=$(pgrep -f "deployq-validator --config $DEPLOYQ_STATE_DIR" | head -n1)
    [ -n "$p" ] && [ "$p" != "$validator_pid" ]
}
wait_for 15 new_validator || fail "validator not restarted"

kill -INT "$UP"
wait_for 20 bash -c "! kill -0 $UP 2>/dev/null" || fail "up did not stop on SIGINT"
! pgrep -f "deployq-validator --config $DEPLOYQ_STATE_DIR" >/dev/null || fail "validator left running"
[ -z "$redis_pid" ] || ! kill -0 "$redis_pid" 2>/dev/null || fail "redis-server left running"
[ ! -e "$DEPLOYQ_STATE_DIR/stack.json" ] || fail "stale stack.json left behind"

# up killed outright (SIGKILL: no chance to stop anything): what it started stops too, and
# the next up starts over the stale stack.json.
"$DEPLOYQ" up >"$T/up2.out" 2>"$T/up2.log" &
UP=$!
PIDS+=("$UP")
wait_for 30 test -s "$DEPLOYQ_STATE_DIR/stack.json" || fail "the second up did not write its state"
wait_for 20 pgrep -f "deployq-validator --config $DEPLOYQ_STATE_DIR" >/dev/null || fail "no validator under the second up"
redis_pid=$(pgrep -f "redis-server 127.0.0.1:$(jq -r .redis_url "$DEPLOYQ_STATE_DIR/stack.json" | sed 's/.*://')" | head -n1)
kill -KILL "$UP"
wait_for 20 bash -c "! pgrep -f 'deployq-[a-z]* --config $DEPLOYQ_STATE_DIR' >/dev/null" ||
    fail "workers left running after up was SIGKILLed: $(pgrep -af "deployq-[a-z]* --config $DEPLOYQ_STATE_DIR")"
[ -z "$redis_pid" ] || wait_for 20 bash -c "! kill -0 $redis_pid 2>/dev/null" || fail "redis-server left running after SIGKILL"
"$DEPLOYQ" up >"$T/up3.out" 2>"$T/up3.log" &
UP=$!
PIDS+=("$UP")
wait_for 30 grep -q 'deployq stack is up' "$T/up3.out" || fail "up after a SIGKILLed up: $(cat "$T/up3.log")"
# The registry's log outlived the first stack's embedded broker: the new stack's events
# must still be stored, not taken for redeliveries of the first stack's offsets.
id3=$("$DEPLOYQ" submit --service demo --env staging --version v3) || fail "submit to the third up"
BROKERS=$(jq -r .brokers "$DEPLOYQ_STATE_DIR/stack.json")
wait_event "$id3" deploy.validated 60 >/dev/null || fail "no deploy.validated from the third up"
wait_for 30 bash -c "\"$DEPLOYQ\" history --deployment $id3 2>/dev/null | grep -q deploy.validated" ||
    fail "the registry dropped the third stack's events: $("$DEPLOYQ" history 2>&1 | tail -5)"
kill -INT "$UP"
wait_for 20 bash -c "! kill -0 $UP 2>/dev/null" || fail "the third up did not stop on SIGINT"
echo "ok"
