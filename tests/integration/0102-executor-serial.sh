#!/usr/bin/env bash
# 50 concurrent submits to one target with two executors: the provider
# double never sees two deploys of the target at once, every request ends in exactly
# one terminal event (one distinct event id), and deploys ran and ended in submit order
# (the order of the requests on their partition, which the validator keeps). A second
# target deploys meanwhile, in parallel.
# The two executors are in different consumer groups on purpose: in one group a target's
# partition belongs to one of them, so they would never contend; here both handle every
# request, and only the Redis lock and the idempotency records keep them from deploying
# twice or overlapping (the one that comes second replays the recorded outcome).
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"

N=${SERIAL_N:-50}
start_redis
start_broker
start_fake wh webhook
WH=http://127.0.0.1:$FAKE_PORT_wh
write_exec_config "  api:
    environments:
      staging:
        providers: [wh]
  web:
    environments:
      staging:
        providers: [wh]" \
"executor:
  lock_ttl: 5s
providers:
  wh: {type: webhook, url: \"$WH/deploy\", status_url: \"$WH/status/{id}\", poll_interval: 100ms, deadline: 30s}"
fake_script wh '{"mode":"succeed","steps":1}'
start_validator a
start_executor a
start_executor b -g deployq-executor-b

# warm-up: the group has settled and deploys flow
id=$(submit --service api --env staging --version warmup)
terminal "$id" 90 >/dev/null || fail "warm-up deploy did not finish"
sleep 8 # the embedded broker finishes a rebalance only after session.timeout.ms
fake_reset wh
fake_script wh '{"mode":"succeed","steps":1}'

log "submitting $N requests to api/staging at once (and 5 to web/staging)"
subs=()
for i in $(seq 1 "$N"); do
    submit --service api --env staging --version "v$i" >"$T/id-$i" &
    subs+=("$!")
done
for i in $(seq 1 5); do
    submit --service web --env staging --version "w$i" >"$T/wid-$i" &
    subs+=("$!")
done
for pid in "${subs[@]}"; do wait "$pid" || fail "a submit failed"; done
cat "$T"/id-* | sort >"$T/ids.txt"
assert_eq "$(sort -u "$T/ids.txt" | wc -l)" "$N" "distinct deployment ids"

end=$((SECONDS + 180))
while :; do
    done_n=$(events | jq -r 'select(.type == "deploy.succeeded" or .type == "deploy.failed") | .deployment_id' | sort -u | comm -12 - "$T/ids.txt" | wc -l)
    [ "$done_n" -eq "$N" ] && break
    [ $SECONDS -lt $end ] || fail "only $done_n of $N deploys concluded"
    sleep 1
done

calls=$(fake_calls wh)
assert_eq "$(jq -r '.max_concurrent["api/staging"]' <<<"$calls")" 1 "most concurrent deploys on api/staging"
# the fake's own view of overlap: every deploy call came after the previous run ended
assert_eq "$(jq '[.calls[] | select(.path == "/deploy" and .body.service == "api")] | length' <<<"$calls")" "$N" "deploy calls for api (one per request)"
grep -q 'lock taken' "$T/executor-a.log" || fail "executor a never deployed"
grep -q 'lock taken' "$T/executor-b.log" || fail "executor b never deployed"

events | jq -c 'select(.service == "api" and .version != "warmup")' >"$T/api.jsonl"
validated=$(jq -r 'select(.type == "deploy.validated") | .deployment_id' "$T/api.jsonl" | awk '!seen[$0]++')
terminal_order=$(jq -r 'select(.type == "deploy.succeeded" or .type == "deploy.failed") | .deployment_id' "$T/api.jsonl" | awk '!seen[$0]++')
deploy_order=$(jq -r '.calls[] | select(.path == "/deploy" and .body.service == "api") | .body.deployment_id' <<<"$calls")
assert_eq "$terminal_order" "$validated" "terminal events in submit order"
assert_eq "$deploy_order" "$validated" "provider deploys in submit order"
# exactly one terminal event in effect per request: one distinct id, all succeeded
per_id=$(jq -r 'select(.type == "deploy.succeeded" or .type == "deploy.failed") | [.deployment_id, .id, .type] | @tsv' "$T/api.jsonl" | sort -u)
assert_eq "$(cut -f1 <<<"$per_id" | uniq -d | wc -l)" 0 "requests with two distinct terminal events"
assert_eq "$(awk -F'\t' '$3 == "deploy.succeeded"' <<<"$per_id" | wc -l)" "$N" "succeeded deploys"
# fences only grow along the target's deploys
fences=$(jq -r 'select(.type == "deploy.started") | .fence' "$T/api.jsonl" | awk '!seen[$0]++')
assert_eq "$(sort -n <<<"$fences" | paste -sd' ')" "$(paste -sd' ' <<<"$fences")" "fences in deploy order"
# the other target was not starved
for i in $(seq 1 5); do terminal "$(cat "$T/wid-$i")" 60 >/dev/null || fail "web deploy w$i did not finish"; done
events | schema_check || fail "events do not match the schemas"
echo ok
