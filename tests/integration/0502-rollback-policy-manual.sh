#!/usr/bin/env bash
# deployq-rollback's refusals and the manual path:
#   1. `rollback: notify`: a rollback.requested sends a notification (it says a person
#      must decide) and ends with rollback.failed data.policy "notify" (what submit --wait
#      exits 7 on); no provider call.
#   2. no verified version to return to: rollback.failed with that reason, a
#      notification, and no provider call (never a blind rollback).
#   3. `deployq rollback --service --env --reason --wait` while Slack answers 503: the
#      rollback succeeds (redeploy of the last verified version), the CLI exits 0, and the
#      failed deliveries are reported as notification.failed after their retries.
# Every event passes the schemas; the webhook URL never shows in events or logs.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"
. "$(dirname "$0")/helpers-rollback.sh"

start_redis
start_broker
start_fake wh webhook
start_fake slack slack
WH=http://127.0.0.1:$FAKE_PORT_wh
export SLACK_URL="http://127.0.0.1:$FAKE_PORT_slack/services/T0002/B0002/s3cr3t-h00k"
chain="providers:
          - {type: webhook, name: wh, url: \"$WH/deploy\", status_url: \"$WH/status/{id}\", poll_interval: 200ms, deadline: 20s}"
write_rollback_config "  db:
    environments:
      production:
        rollback: notify
        $chain
        notify: {slack_webhook: \"\${SLACK_URL}\"}
  api:
    environments:
      staging:
        $chain
      production:
        $chain" \
"notifications:
  slack_webhook: \${SLACK_URL}
  on: [rollback.requested, rollback.succeeded, rollback.failed, deploy.failed]
  retries: 1
  retry_budget: 2s
  timeout: 1s"
start_rollback a
fake_script wh '{"mode":"succeed","steps":1}'

log "1. rollback: notify -> a notification and the final rollback.failed (policy notify)"
d1=$(new_uuid); d2=$(new_uuid)
inject deploy.succeeded db production v1 "$d1" "$(succeeded_data wh wh-db-1)" >/dev/null
inject deploy.verified db production v1 "$d1" "$verified_data" >/dev/null
inject deploy.succeeded db production v2 "$d2" "$(succeeded_data wh wh-db-2)" >/dev/null
req=$(inject rollback.requested db production v2 "$d2" '{"reason":"p99 latency 2300 ms over 800","requested_by":"deployq-monitor"}')
wait_for 30 notifications_ge "$req" 1 || fail "no notification for the notify policy"
assert_eq "$(notifications "$req" | jq -r '.type + " " + .data.channel')" "notification.sent slack" "notify-policy report"
texts=$(slack_texts slack)
grep -q 'Rollback requested for db/production: version v2' <<<"$texts" || fail "no request message: $texts"
grep -q 'rollback: notify`: nothing was rolled back. A person must decide' <<<"$texts" || fail "no policy note: $texts"
ev=$(rollback_outcome "$req" 30) || fail "no final event for the notify policy"
assert_eq "$(jq -r '.type + " " + .data.policy + " " + .deployment_id + " " + .version' <<<"$ev")" \
    "rollback.failed notify $d2 v2" "notify-policy final event"
assert_eq "$(jq -r .data.reason <<<"$ev")" "policy notify: nothing was rolled back; a person must decide" "notify-policy reason"
assert_eq "$(events_for "$d2" | jq -r 'select(.type | startswith("rollback.")) | .type' | paste -sd, -)" \
    rollback.requested,rollback.failed "rollback events for db"
assert_eq "$(fake_calls wh | jq '.calls | length')" 0 "provider calls after the notify policy"

log "2. no verified version -> rollback.failed, no blind rollback"
s1=$(new_uuid)
inject deploy.succeeded api staging v1 "$s1" "$(succeeded_data wh wh-st-1)" >/dev/null
sreq=$(inject rollback.requested api staging v1 "$s1" '{"reason":"smoke test failed","requested_by":"alice"}')
ev=$(rollback_outcome "$sreq" 30) || fail "no outcome for $sreq"
assert_eq "$(jq -r .type <<<"$ev")" rollback.failed "staging outcome"
assert_eq "$(jq -r .data.reason <<<"$ev")" "no verified version of api/staging to return to (other than v1): no blind rollback" "staging reason"
[ "$(jq -r .fence <<<"$ev")" -ge 1 ] || fail "rollback.failed without the lock's fence"
assert_eq "$(fake_calls wh | jq '.calls | length')" 0 "provider calls without a verified version"
wait_for 20 notifications_ge "$(jq -r .id <<<"$ev")" 1 || fail "no notification for rollback.failed"
grep -q 'Rollback of api/staging FAILED: no verified version' <<<"$(slack_texts slack)" || fail "no failure message"

log "2b. the restored version fails too -> a notification, no second rollback on its own"
r1=$(new_uuid); r2=$(new_uuid)
inject deploy.succeeded api staging v7 "$r1" "$(succeeded_data wh wh-st-7)" >/dev/null
inject deploy.verified api staging v7 "$r1" "$verified_data" >/dev/null
inject deploy.verified api staging v6 "$r2" "$verified_data" >/dev/null
lreq=$(inject rollback.requested api staging v7 "$r1" '{"reason":"health failing after the rollback","requested_by":"deployq-monitor","trigger":"rollback.succeeded"}')
wait_for 30 notifications_ge "$lreq" 1 || fail "no notification for a failing restored version"
grep -q 'is failing too: not rolling back any further on my own' <<<"$(slack_texts slack)" || fail "no loop note"
assert_eq "$(events_for "$r1" | jq -r 'select(.type | startswith("rollback.")) | .type' | paste -sd, -)" rollback.requested "rollback events after a failing restore"
assert_eq "$(fake_calls wh | jq '.calls | length')" 0 "provider calls after a failing restore"

log "3. manual deployq rollback --wait, with Slack down"
p1=$(new_uuid); p2=$(new_uuid)
inject deploy.succeeded api production v1 "$p1" "$(succeeded_data wh wh-p-1)" >/dev/null
inject deploy.verified api production v1 "$p1" "$verified_data" >/dev/null
inject deploy.succeeded api production v2 "$p2" "$(succeeded_data wh wh-p-2)" >/dev/null
# the CLI names what runs now, as deployq-rollback recorded it
wait_for 30 sh -c "redis-cli -p $REDIS_PORT GET deployq:rb:current:api/production | grep -q '\"v2\"'" ||
    fail "deployq-rollback never recorded v2 as serving"
fake_script slack '{"mode":"http_5xx"}'
out=$("$DEPLOYQ" rollback --config "$CONFIG" --service api --env production --reason "checkout broken" \
    --requested-by bob --wait --timeout 60s 2>"$T/cli.err") || fail "deployq rollback exited $?: $out $(cat "$T/cli.err")"
grep -q '^rollback requested: api/production from v2 (request ' <<<"$out" || fail "unexpected CLI output: $out"
mreq=$(sed -n 's/.*(request \([0-9a-f-]*\)).*/\1/p' <<<"$out" | head -n1)
ev=$(rollback_outcome "$mreq" 5) || fail "no outcome for the manual request $mreq"
assert_eq "$(jq -r .type <<<"$ev")" rollback.succeeded "manual outcome"
assert_eq "$(jq -r .data.to_version <<<"$ev")" v1 "manual to_version"
assert_eq "$(jq -r .deployment_id <<<"$ev")" "$p2" "manual deployment id"
assert_eq "$(jq -r .version <<<"$ev")" v2 "manual failing version"
assert_eq "$(events | jq -r --arg id "$mreq" 'select(.id == $id) | .data.requested_by')" bob "requested_by"
assert_eq "$(fake_calls wh | jq -r '[.calls[] | select(.path == "/deploy") | .body.version] | join(",")')" v1 "redeployed"
wait_for 30 notifications_ge "$(jq -r .id <<<"$ev")" 1 || fail "no notification report for the manual outcome"
nf=$(notifications "$(jq -r .id <<<"$ev")")
assert_eq "$(jq -r .type <<<"$nf")" notification.failed "report type with Slack down"
assert_eq "$(jq -r .data.error <<<"$nf")" "HTTP 503 (service_unavailable) after 2 attempts" "report error"
assert_eq "$(jq -r .data.attempts <<<"$nf")" 2 "report attempts"
# the outcome was on the topic before any notification about it was tried
o_ts=$(ms_of "$(jq -r .at <<<"$ev")"); n_ts=$(ms_of "$(jq -r .at <<<"$nf")")
[ "$o_ts" -le "$n_ts" ] || fail "notification report before the outcome"

log "every event passes the schemas; the webhook URL appears nowhere"
events | schema_check || fail "events do not match the schemas"
if events | grep -q 's3cr3t'; then fail "the webhook URL leaked into an event"; fi
if grep -q 's3cr3t' "$T"/rollback-*.log "$T/cli.err"; then fail "the webhook URL leaked into a log"; fi
echo ok
