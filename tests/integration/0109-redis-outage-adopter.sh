#!/usr/bin/env bash
# A deploy that started and concluded while Redis was down, adopted by another executor
# (CI's 0700-cluster-replicated, seed 13438933: "deployment id ... got 2 provider runs").
# Executor A takes the lock, registers the run for adoption and calls the provider; Redis
# dies inside the call, so the acceptance cannot be recorded. The run is short: A polls it
# to its end, emits deploy.succeeded (Kafka is fine), but cannot write the outcome,
# unregister the run or release its lock. Redis comes back (append-only file) after the
# lock's ttl: the lock is gone, the run is still registered, and the other executor's
# orphan scan adopts it. A is stopped (SIGSTOP) across Redis' return, so that B's scan
# wins the race deterministically; A is let go a second later, as a busy A would be.
# B must not deploy again: it finds A's intent record (written before the deploy call),
# waits for the record A remembers, and resumes A's provider deployment.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"

REDIS_EXTRA_ARGS="--appendonly yes --appendfsync always"
start_redis
start_broker
start_fake wh webhook
WH=http://127.0.0.1:$FAKE_PORT_wh
write_exec_config "  web:
    environments:
      production:
        providers:
          - {type: webhook, name: wh, url: \"$WH/deploy\", status_url: \"$WH/status/{id}\", poll_interval: 200ms, deadline: 60s}" \
"executor:
  lock_ttl: 3s
  orphan_scan: 200ms"

# the deploy call takes 1.5 s, then the run ends after 2 polls (0.4 s)
fake_script wh '{"mode":"succeed","steps":2,"delay_ms":1500}'
start_validator a
start_executor a
start_executor b
wait_for 30 group_settled "$T/executor-a.log" "$T/executor-b.log" || fail "the executors' group did not settle"

id=$(submit --service web --env production --version v1) || fail "submit"
has_deploy_call() { [ "$(deploy_calls wh)" -ge 1 ]; }
wait_for 60 has_deploy_call || fail "no deploy call"
kill_redis
log "the provider has the deploy call; Redis is down"
out=$(terminal "$id" 30) || fail "no terminal event while Redis is down"
assert_eq "$(jq -r .type <<<"$out")" deploy.succeeded "terminal event"
runner=$(grep -l "deploy $id of .*lock taken" "$T"/executor-?.log | head -n 1)
[ -n "$runner" ] || fail "no executor took the lock for $id"
case $runner in *executor-a.log) a=a b=b ;; *) a=b b=a ;; esac
eval "pid_a=\$EXECUTOR_PID_$a"
grep -qE "NOT recorded" "$runner" || fail "the acceptance was recorded at once: the outage missed the deploy call"
log "executor $a ran it while Redis was down; stopping it across Redis' return"
kill -STOP "$pid_a"
sleep 4 # past lock_ttl: the lock key expires
restart_redis $REDIS_EXTRA_ARGS
sleep 1
kill -CONT "$pid_a"
wait_for 20 sh -c "! redis-cli -p $REDIS_PORT zscore deployq:runs:exec $id | grep -q ." ||
    fail "$id is still registered for adoption"
sleep 1

n=$(deploy_calls wh)
log "deploy calls: $n; adopted by $b: $(grep -c "deploy $id of .*orphaned" "$T/executor-$b.log")"
assert_eq "$n" 1 "provider deploy calls for one deployment id"
assert_eq "$(events_for "$id" | jq -s '[.[] | select(.type == "deploy.succeeded" or .type == "deploy.failed") | .id] | unique | length')" 1 "distinct terminal events"
wait_for 10 sh -c "redis-cli -p $REDIS_PORT GET 'deployq:exec:$id' | grep -q terminal" ||
    fail "deployq:exec:$id holds no outcome"
echo ok
