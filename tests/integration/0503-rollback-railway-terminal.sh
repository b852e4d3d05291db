#!/usr/bin/env bash
# A rollback is done when the old version is live: Railway's deploymentRollback answers
# `true` at once, but only starts a new deployment of the old image; the failing version
# serves until that deployment reaches SUCCESS. Here it takes 4 s at the double, and:
#   1. rollback.succeeded names the deployment the rollback created, and its restored_at
#      is not before the double's deployment reached SUCCESS (nor 4 s before the call);
#   2. the version live at restored_at is the restored one (v1), and it still is;
#   3. the monitor, which starts watching v1 on rollback.succeeded, sees it healthy from
#      its first probe: no health.degraded, no rollback.requested, deploy.verified at the
#      end of its window - it does not roll back the good version.
# The whole story runs through the real workers: the monitor detects the bad version by
# probing what the Railway double serves, and asks for the rollback itself.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-monitor.sh"
. "$(dirname "$0")/helpers-executor.sh" # gql_calls
. "$(dirname "$0")/helpers-rollback.sh"

RESTORE_S=4

start_redis
start_broker
start_fake rw railway
RWB=http://127.0.0.1:$FAKE_PORT_rw
RW=$RWB/graphql/v2
HEALTH=$RWB/live/svc-api/env-prod/health
write_rollback_config "  api:
    environments:
      production:
        rollback: auto
        providers:
          - {type: railway, name: rw, base_url: \"$RW\", token: t0k3n-rw, service_id: svc-api, environment_id: env-prod, rollback: rollback, poll_interval: 200ms, deadline: 30s}
        monitor:
          interval: 500ms
          window: 5s
          failure_threshold: 3
          probes:
            - {name: health, type: http, url: \"$HEALTH\", expect_status: 200}"
fake_script rw "{\"rollback_seconds\": $RESTORE_S}"
start_rollback a
start_monitor m

log "v1 live and verified"
rw_v1=$(rw_create "$RW" svc-api env-prod v1)
rw_poll "$RW" "$rw_v1"
d1=$(new_uuid)
inject deploy.succeeded api production v1 "$d1" "$(succeeded_data rw "$rw_v1")" >/dev/null
wait_event "$d1" monitor.started 30 >/dev/null || fail "v1 is not watched"
inject deploy.verified api production v1 "$d1" "$verified_data" >/dev/null

log "v2-bad goes live; the monitor asks for a rollback"
rw_v2=$(rw_create "$RW" svc-api env-prod v2-bad)
d2=$(new_uuid)
inject deploy.succeeded api production v2-bad "$d2" "$(succeeded_data rw "$rw_v2")" >/dev/null
wait_event "$d2" monitor.started 30 >/dev/null || fail "v2-bad is not watched"
rw_poll "$RW" "$rw_v2" # only now does it serve (HTTP 500)
assert_eq "$(rw_live "$RWB" svc-api env-prod | jq -r .live.version)" v2-bad "live before the rollback"
req=$(wait_event "$d2" rollback.requested 30) || fail "the monitor did not ask for a rollback"
assert_eq "$(jq -r .data.trigger <<<"$req")" deploy.succeeded "the request's trigger"

log "1. rollback.succeeded once the deployment the rollback created is SUCCESS"
ev=$(rollback_outcome "$(jq -r .id <<<"$req")" 40) || fail "no rollback outcome"
assert_eq "$(jq -r .type <<<"$ev")" rollback.succeeded "outcome"
assert_eq "$(jq -r .data.method <<<"$ev")" provider_rollback "method"
assert_eq "$(jq -r .data.to_version <<<"$ev")" v1 "to_version"
restored_ms=$(ms_of "$(jq -r .data.restored_at <<<"$ev")")
live_doc=$(rw_live "$RWB" svc-api env-prod)
rb_dep=$(jq -r .data.provider_deployment_id <<<"$ev")
[ -n "$rb_dep" ] && [ "$rb_dep" != null ] || fail "rollback.succeeded names no provider deployment: $ev"
[ "$rb_dep" != "$rw_v1" ] && [ "$rb_dep" != "$rw_v2" ] ||
    fail "rollback.succeeded names $rb_dep, not the deployment the rollback created"
success_ms=$(jq -r --arg id "$rb_dep" '[.history[] | select(.deployment_id == $id)][0].at * 1000 | floor' <<<"$live_doc")
[ "$success_ms" != null ] || fail "the double never served $rb_dep: $live_doc"
rbcall_ms=$(gql_calls rw deploymentRollback | jq -r '.[0].time * 1000 | floor')
log "deploymentRollback at $rbcall_ms, its deployment SUCCESS at $success_ms, restored_at $restored_ms"
[ "$restored_ms" -ge "$success_ms" ] ||
    fail "restored_at is $((success_ms - restored_ms)) ms before the double's deployment reached SUCCESS"
[ $((success_ms - rbcall_ms)) -ge $((RESTORE_S * 1000 - 100)) ] ||
    fail "the double restored in $((success_ms - rbcall_ms)) ms, not $RESTORE_S s"
[ $((restored_ms - success_ms)) -le 2000 ] ||
    fail "restored_at $((restored_ms - success_ms)) ms after SUCCESS: polling every 200 ms should see it sooner"
assert_eq "$(jq -r .data.mttr_ms <<<"$ev")" "$((restored_ms - $(ms_of "$(jq -r .data.detected_at <<<"$ev")")))" "mttr_ms"

log "2. what serves at restored_at, and now, is v1"
at_restored=$(jq -r --argjson t "$restored_ms" '[.history[] | select(.at * 1000 <= $t)] | last | .version' <<<"$live_doc")
assert_eq "$at_restored" v1 "version live at restored_at"
assert_eq "$(jq -r .live.deployment_id <<<"$live_doc")" "$rb_dep" "live deployment"
assert_eq "$(curl -sS -o /dev/null -w '%{http_code}' "$HEALTH")" 200 "health of the restored version"

log "3. the monitor watches v1 from rollback.succeeded on and finds it healthy"
# the session's verdict: deploy.verified at the end of its window, or a failure before
verdict=""
end=$((SECONDS + 30))
while [ $SECONDS -lt $end ]; do
    verdict=$(events_for "$d2" | jq -c 'select(.data.trigger == "rollback.succeeded" and
        (.type == "deploy.verified" or .type == "health.degraded" or .type == "rollback.requested"))' | head -n 1)
    [ -n "$verdict" ] && break
    sleep 0.3
done
[ -n "$verdict" ] || fail "no verdict about the restored version within 30 s"
assert_eq "$(jq -r .type <<<"$verdict")" deploy.verified "the monitor's first word on the restored version ($verdict)"
verified=$verdict
assert_eq "$(jq -r .version <<<"$verified")" v1 "verified version"
after=$(events_for "$d2" | jq -c 'select(.data.trigger == "rollback.succeeded" and (.type == "health.degraded" or .type == "rollback.requested"))')
[ -z "$after" ] || fail "the monitor judged the restored version unhealthy: $after"
assert_eq "$(events | jq -r 'select(.type == "rollback.requested") | .id' | sort -u | wc -l)" 1 "rollback requests"
assert_eq "$(gql_calls rw deploymentRollback | jq length)" 1 "deploymentRollback calls"

events | schema_check || fail "events do not match the schemas"
if events | grep -q 't0k3n'; then fail "a token leaked into an event"; fi
echo ok
