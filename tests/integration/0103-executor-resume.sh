#!/usr/bin/env bash
# An executor SIGKILLed while it polls a provider deployment: another executor of the
# group takes the partition over, waits for the dead one's lease to expire, finds the
# idempotency record and resumes polling the same provider deployment. The provider
# double records exactly one deploy call; the deployment ends in one terminal event.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"

start_redis
start_broker
start_fake wh webhook
WH=http://127.0.0.1:$FAKE_PORT_wh
write_exec_config "  api:
    environments:
      staging:
        providers: [wh]" \
"executor:
  lock_ttl: 3s
providers:
  wh: {type: webhook, url: \"$WH/deploy\", status_url: \"$WH/status/{id}\", poll_interval: 250ms, deadline: 60s}"
# about 30 status polls in flight: long enough to kill the executor in the middle
fake_script wh '{"mode":"succeed","steps":30}'
start_validator a
start_executor a

id=$(submit --service api --env staging --version v1)
started=$(wait_event "$id" deploy.started 60) || fail "deploy never started"
pid_id=$(jq -r .data.provider_deployment_id <<<"$started")
wait_for 10 redis_has "deployq:exec:$id" || fail "no idempotency record"
record=$(redis-cli -p "$REDIS_PORT" get "deployq:exec:$id")
assert_eq "$(jq -r .provider_id <<<"$record")" "$pid_id" "recorded provider deployment id"
sleep 1
log "SIGKILL executor a while it polls $pid_id"
kill -KILL "$EXECUTOR_PID_a"
polls_before=$(fake_calls wh | jq '[.calls[] | select(.path | startswith("/status/"))] | length')
[ "$polls_before" -ge 1 ] || fail "executor a never polled"
terminal "$id" 1 >/dev/null && fail "deploy concluded before the kill: make the fake slower"

start_executor b
ev=$(terminal "$id" 90) || fail "executor b did not resume the deploy"
assert_eq "$(jq -r .type <<<"$ev")" deploy.succeeded "outcome"
assert_eq "$(jq -r .data.provider_deployment_id <<<"$ev")" "$pid_id" "provider deployment id at the end"
calls=$(fake_calls wh)
assert_eq "$(jq '[.calls[] | select(.path == "/deploy")] | length' <<<"$calls")" 1 "deploy calls"
assert_eq "$(jq -r '.max_concurrent["api/staging"]' <<<"$calls")" 1 "most concurrent deploys"
grep -q "resuming wh $pid_id" "$T/executor-b.log" || fail "executor b did not say it resumed"
# b polled with a larger fence than a had
fences=$(jq -r '[.calls[] | select(.path | startswith("/status/")) | .fence | tonumber] | [first, last] | @tsv' <<<"$calls")
[ "$(cut -f2 <<<"$fences")" -gt "$(cut -f1 <<<"$fences")" ] || fail "fence did not grow across executors: $fences"
assert_eq "$(jq -r .fence <<<"$ev")" "$(cut -f2 <<<"$fences")" "terminal event fence"
assert_eq "$(count_type "$id" deploy.succeeded)" 1 "distinct terminal events"
assert_eq "$(count_type "$id" deploy.started)" 1 "distinct deploy.started events (the resume repeats the same id)"
events | schema_check || fail "events do not match the schemas"
echo ok
