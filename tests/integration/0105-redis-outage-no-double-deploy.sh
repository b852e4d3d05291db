#!/usr/bin/env bash
# Redis goes down just as a provider accepts a deploy (finding of the fault-injection
# suite, docs/reliability.md "Fault injection", chaos seed 1005). The worker cannot write
# its idempotency record, its lock renewals fail and it stops polling (lease lost); when
# Redis is back (with its data: append-only file) it takes the lock again with a new fence
# and finds no record. It must resume the provider deployment it remembers from the
# acceptance, record it then, and never deploy a second time: the provider double records
# exactly one deploy call for the deployment id, never two at once on the target.
# Run twice, once per worker that deploys: deployq-executor (a deploy) and
# deployq-rollback (the redeploy of a rollback).
if [ $# -eq 0 ]; then
    for which in executor rollback; do
        bash "$0" "$which" || exit 1
    done
    echo ok
    exit 0
fi
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"
. "$(dirname "$0")/helpers-rollback.sh"
which=$1

# Redis keeps its data across the restart (append-only file), as in production
REDIS_EXTRA_ARGS="--appendonly yes --appendfsync always"
start_redis
start_broker
start_fake wh webhook
WH=http://127.0.0.1:$FAKE_PORT_wh
# lock_ttl 5 s (write_rollback_config); the outage below outlasts it
write_rollback_config "  web:
    environments:
      production:
        rollback: auto
        providers:
          - {type: webhook, name: wh, url: \"$WH/deploy\", status_url: \"$WH/status/{id}\", poll_interval: 200ms, deadline: 60s}" \
"keys:
  - {id: ci-test, public_key: \"$("$DEPLOYQ" keygen --out "$T/ci.key" --id ci-test >/dev/null && pubkey "$T/ci.key")\", role: ci}"

# The deploy call takes 1.5 s, then the deploy polls 40 times (8 s): Redis dies inside the
# call, so the provider accepts while the worker cannot record it.
fake_script wh '{"mode":"succeed","steps":40,"delay_ms":1500}'
has_deploy_call() { [ "$(deploy_calls wh)" -ge 1 ]; }
outage() {
    wait_for 60 has_deploy_call || fail "no deploy call"
    log "the provider has the deploy call; Redis goes down for 7 s (lock_ttl is 5 s)"
    kill_redis
    sleep 7
    restart_redis $REDIS_EXTRA_ARGS
}

if [ "$which" = rollback ]; then
    start_rollback a
    d1=$(new_uuid); d2=$(new_uuid)
    inject deploy.succeeded web production v1 "$d1" "$(succeeded_data wh wh-old-1)" >/dev/null
    inject deploy.verified web production v1 "$d1" "$verified_data" >/dev/null
    inject deploy.succeeded web production v2 "$d2" "$(succeeded_data wh wh-old-2)" >/dev/null
    req=$(inject rollback.requested web production v2 "$d2" '{"reason":"probe failed","requested_by":"deployq-monitor"}')
    outage
    out=$(rollback_outcome "$req" 90) || fail "no rollback outcome"
    assert_eq "$(jq -r .type <<<"$out")" rollback.succeeded "rollback outcome"
    worker_log="$T/rollback-a.log"
    record_key="deployq:rb:req:$req"
else
    start_validator a
    start_executor a
    id=$(submit --service web --env production --version v3) || fail "submit"
    outage
    out=$(terminal "$id" 90) || fail "no terminal event"
    assert_eq "$(jq -r .type <<<"$out")" deploy.succeeded "terminal event"
    assert_eq "$(events_for "$id" | jq -s '[.[] | select(.type == "deploy.succeeded" or .type == "deploy.failed") | .id] | unique | length')" 1 "distinct terminal events"
    worker_log="$T/executor-a.log"
    record_key="deployq:exec:$id"
fi

# the scenario happened: the acceptance could not be recorded when it came
grep -qE 'NOT recorded|could not record the provider deployment' "$worker_log" ||
    fail "the provider's acceptance was recorded at once: the outage missed the deploy call"

calls=$(fake_calls wh)
n=$(jq '[.calls[] | select(.path == "/deploy")] | length' <<<"$calls")
log "$which: $n deploy call(s); most at once on the target: $(jq -r '.max_concurrent["web/production"]' <<<"$calls")"
assert_eq "$n" 1 "$which: provider deploy calls for one deployment id after a Redis outage"
assert_eq "$(jq -r '.max_concurrent["web/production"]' <<<"$calls")" 1 "$which: deploys at once on the target"
# the outcome is recorded in Redis once it is back: a redelivery only re-emits it
wait_for 10 sh -c "redis-cli -p $REDIS_PORT GET '$record_key' | grep -q terminal" ||
    fail "$record_key holds no outcome"
echo ok
