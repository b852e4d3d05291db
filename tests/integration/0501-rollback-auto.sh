#!/usr/bin/env bash
# deployq-rollback restores the last verified version, automatically:
#   1. Railway: a provider rollback (deploymentRollback) of the deployment that ran the
#      last verified version; rollback.succeeded carries detected_at (the first failing
#      probe), decided_at (the request), restored_at and mttr_ms; Slack and a generic
#      JSON webhook are told, with MTTR, versions, reason and dashboard link.
#   2. a webhook provider: a redeploy of the newest verified version that is not the
#      failing one, through the chain, with the lock's fence.
#   3. the same request delivered again: no second restore, no second outcome.
# Every event passes the schemas; no token and no webhook URL in any event or log.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"
. "$(dirname "$0")/helpers-rollback.sh"

start_redis
start_broker
start_fake rw railway
start_fake wh webhook
start_fake slack slack
RW=http://127.0.0.1:$FAKE_PORT_rw/graphql/v2
WH=http://127.0.0.1:$FAKE_PORT_wh
export SLACK_URL="http://127.0.0.1:$FAKE_PORT_slack/services/T0001/B0001/s3cr3t-h00k"
export JSON_HOOK="http://127.0.0.1:$FAKE_PORT_slack/hooks/s3cr3t-js0n"
write_rollback_config "  api:
    environments:
      production:
        providers:
          - {type: railway, name: rw, base_url: \"$RW\", token: t0k3n-rw, service_id: svc-api, environment_id: env-prod, rollback: rollback, poll_interval: 200ms, deadline: 20s}
        notify:
          slack_webhook: \${SLACK_URL}
          webhook: \${JSON_HOOK}
          on: [rollback.requested, rollback.succeeded, rollback.failed, deploy.failed]
          dashboard_url: https://grafana.example/d/{service}?env={environment}
  web:
    environments:
      production:
        rollback: auto
        providers:
          - {type: webhook, name: wh, url: \"$WH/deploy\", status_url: \"$WH/status/{id}\", token: t0k3n-wh, poll_interval: 200ms, deadline: 20s}"
start_rollback a

log "1. api: provider rollback on Railway, MTTR, notifications"
# Railway deployments the double knows, polled to SUCCESS: what v1's and v2's deploys left.
rw_v1=$(rw_create "$RW" svc-api env-prod v1)
rw_poll "$RW" "$rw_v1"
rw_v2=$(rw_create "$RW" svc-api env-prod v2)
rw_poll "$RW" "$rw_v2"
d1=$(new_uuid); d2=$(new_uuid)
inject deploy.succeeded api production v1 "$d1" "$(succeeded_data rw "$rw_v1")" >/dev/null
inject deploy.verified api production v1 "$d1" "$verified_data" >/dev/null
inject deploy.succeeded api production v2 "$d2" "$(succeeded_data rw "$rw_v2")" >/dev/null
first=$(ago_rfc3339 3)
evidence=$(jq -cn --arg f "$first" '{reason:"health check failed: probe http 503 3 times",requested_by:"deployq-monitor",from_version:"v2",
  evidence:{probe:"http",kind:"http",observed:503,threshold:200,samples:[503,503,503],first_failure_at:$f,detected_at:$f}}')
req_at=$(now_rfc3339)
req=$(inject rollback.requested api production v2 "$d2" "$evidence" "$(new_uuid)" "$req_at")
ev=$(rollback_outcome "$req" 60) || fail "no rollback outcome for $req"
assert_eq "$(jq -r .type <<<"$ev")" rollback.succeeded "api outcome"
assert_eq "$(jq -r .data.to_version <<<"$ev")" v1 "api to_version"
assert_eq "$(jq -r .data.from_version <<<"$ev")" v2 "api from_version"
assert_eq "$(jq -r .data.method <<<"$ev")" provider_rollback "api method"
assert_eq "$(jq -r .data.provider <<<"$ev")" rw "api provider"
assert_eq "$(jq -r .deployment_id <<<"$ev")" "$d2" "api deployment id"
assert_eq "$(jq -r .data.detected_at <<<"$ev")" "$first" "detected_at = first failing probe"
assert_eq "$(jq -r .data.decided_at <<<"$ev")" "$req_at" "decided_at = the request"
restored=$(jq -r .data.restored_at <<<"$ev")
assert_eq "$(jq -r .data.mttr_ms <<<"$ev")" "$(($(ms_of "$restored") - $(ms_of "$first")))" "mttr_ms"
[ "$(ms_of "$restored")" -ge "$(ms_of "$req_at")" ] || fail "restored_at $restored before the request $req_at"
fence=$(jq -r .fence <<<"$ev")
[ "$fence" -ge 1 ] || fail "rollback.succeeded without a fence"
started=$(events | jq -c --arg id "$req" 'select(.type == "rollback.started" and .data.request_id == $id)')
assert_eq "$(jq -r .data.method <<<"$started")" provider_rollback "started method"
assert_eq "$(jq -r .fence <<<"$started")" "$fence" "started fence"
# the provider double got deploymentRollback of v1's deployment, with the fence
rbcall=$(gql_calls rw deploymentRollback)
assert_eq "$(jq length <<<"$rbcall")" 1 "deploymentRollback calls"
assert_eq "$(jq -r '.[0].body.variables.id' <<<"$rbcall")" "$rw_v1" "rolled back to v1's deployment"
assert_eq "$(jq -r '.[0].fence' <<<"$rbcall")" "$fence" "fence sent to Railway"
# notifications: Slack got the request and the outcome; the JSON hook the events themselves
wait_for 20 notifications_ge "$(jq -r .id <<<"$ev")" 2 || fail "no notification report for the outcome"
texts=$(slack_texts slack)
grep -q 'Rollback requested for api/production: version v2' <<<"$texts" || fail "no Slack message for the request: $texts"
grep -q 'Rolled back api/production from v2 to v1 (provider_rollback via rw)' <<<"$texts" || fail "no Slack message for the outcome: $texts"
grep -q 'MTTR [0-9.]* s: detected '"$first" <<<"$texts" || fail "no MTTR in the Slack message: $texts"
grep -q 'Dashboard: https://grafana.example/d/api?env=production' <<<"$texts" || fail "no dashboard link: $texts"
grep -q 'probe http (http) observed 503, threshold 200' <<<"$texts" || fail "no evidence in the request message: $texts"
hook=$(fake_calls slack | jq -c '[.calls[] | select(.path == "/hooks/s3cr3t-js0n") | .body]')
assert_eq "$(jq -r '[.[].type] | sort | join(",")' <<<"$hook")" "rollback.requested,rollback.succeeded" "JSON hook bodies"
assert_eq "$(jq -r '.[] | select(.type == "rollback.succeeded") | .id' <<<"$hook")" "$(jq -r .id <<<"$ev")" "JSON hook gets the event itself"
sent=$(notifications "$req" | jq -r 'select(.type == "notification.sent") | .data.channel' | sort | paste -sd, -)
assert_eq "$sent" "slack,webhook" "notification.sent channels for the request"

log "2. web: a redeploy of the newest verified version other than the failing one"
fake_script wh '{"mode":"succeed","steps":1}'
w1=$(new_uuid); w2=$(new_uuid); w3=$(new_uuid)
inject deploy.succeeded web production v1 "$w1" "$(succeeded_data wh wh-old-1)" >/dev/null
inject deploy.verified web production v1 "$w1" "$verified_data" >/dev/null
inject deploy.succeeded web production v2 "$w2" "$(succeeded_data wh wh-old-2)" >/dev/null
inject deploy.verified web production v2 "$w2" "$verified_data" >/dev/null
inject deploy.succeeded web production v3 "$w3" "$(succeeded_data wh wh-old-3)" >/dev/null
wreq=$(inject rollback.requested web production v3 "$w3" '{"reason":"error rate 40% over 10 probes","requested_by":"deployq-monitor"}')
ev=$(rollback_outcome "$wreq" 60) || fail "no rollback outcome for $wreq"
assert_eq "$(jq -r .type <<<"$ev")" rollback.succeeded "web outcome"
assert_eq "$(jq -r .data.to_version <<<"$ev")" v2 "web to_version"
assert_eq "$(jq -r .data.method <<<"$ev")" redeploy "web method"
assert_eq "$(jq -r .data.detected_at <<<"$ev")" "$(jq -r .data.decided_at <<<"$ev")" "no evidence: detected at the request"
deploys=$(fake_calls wh | jq -c '[.calls[] | select(.path == "/deploy")]')
assert_eq "$(jq length <<<"$deploys")" 1 "webhook deploys"
assert_eq "$(jq -r '.[0].body.version' <<<"$deploys")" v2 "redeployed version"
assert_eq "$(jq -r '.[0].fence' <<<"$deploys")" "$(jq -r .fence <<<"$ev")" "fence sent to the webhook"

log "3. the same request again: no second restore"
events | jq -c --arg id "$wreq" 'select(.id == $id)' |
    kcat -P -b "$BROKERS" -t "$TOPIC_EVENTS" -k "web/production" 2>>"$T/kcat.log"
wait_for 30 grep -q "rollback $wreq: already concluded" "$T/rollback-a.log" ||
    fail "the redelivered request was not recognised"
assert_eq "$(deploy_calls wh)" 1 "webhook deploys after the repeat"
assert_eq "$(events | jq -r --arg id "$wreq" 'select(.type == "rollback.succeeded" and .data.request_id == $id) | .id' | sort -u | wc -l)" 1 "distinct outcomes"

log "every event passes the schemas; no secret anywhere"
events | schema_check || fail "events do not match the schemas"
if events | grep -q -e 's3cr3t' -e 't0k3n'; then fail "a secret leaked into an event"; fi
if grep -q -e 's3cr3t' -e 't0k3n' "$T"/rollback-*.log; then fail "a secret leaked into the rollback log"; fi
echo ok
