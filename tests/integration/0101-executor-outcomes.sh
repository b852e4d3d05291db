#!/usr/bin/env bash
# The executor's outcomes through provider doubles, one deploy at a time:
#   success through the primary; failover from a primary answering 402 and from one
#   that times out (provider.failed, then the backup deploys); no failover on a real
#   build failure; a deploy stuck in BUILDING ends as deploy.failed reason timeout.
# Every event carries the lock's fence and passes the schemas (independent validator).
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"

start_redis
start_broker
start_fake wh webhook
start_fake rw railway
WH=http://127.0.0.1:$FAKE_PORT_wh
RW=http://127.0.0.1:$FAKE_PORT_rw/graphql/v2
write_exec_config "  api:
    environments:
      staging:
        providers: [primary, backup]
  stuck:
    environments:
      staging:
        providers:
          - {type: railway, name: rw-stuck, base_url: \"$RW\", token: t0k3n-stuck, service_id: svc-stuck, environment_id: env-staging, poll_interval: 200ms, deadline: 3s}" \
"executor:
  lock_ttl: 5s
providers:
  primary: {type: webhook, url: \"$WH/deploy\", status_url: \"$WH/status/{id}\", timeout: 1s, retries: 0, poll_interval: 200ms, deadline: 30s}
  backup: {type: railway, base_url: \"$RW\", token: t0k3n-backup, service_id: svc-api, environment_id: env-staging, poll_interval: 200ms, deadline: 30s}"
start_validator a
start_executor a

log "1. success through the primary"
fake_script wh '{"mode":"succeed","steps":2}'
id=$(deploy v1)
ev=$(terminal "$id")
assert_eq "$(jq -r .type <<<"$ev")" deploy.succeeded "v1 outcome"
assert_eq "$(jq -r .data.provider <<<"$ev")" primary "v1 provider"
started=$(events_for "$id" | jq -c 'select(.type == "deploy.started")' | head -n1)
assert_eq "$(jq -r .data.provider_deployment_id <<<"$started")" "$(jq -r .data.provider_deployment_id <<<"$ev")" "v1 provider deployment id"
fence=$(jq -r .fence <<<"$started")
[ "$fence" -ge 1 ] || fail "deploy.started without a fence: $fence"
assert_eq "$(jq -r .fence <<<"$ev")" "$fence" "v1 terminal fence"
assert_eq "$(count_type "$id" provider.failed)" 0 "v1 provider.failed events"
wh_fence=$(fake_calls wh | jq -r --arg id "$id" '[.calls[] | select(.path == "/deploy" and .body.deployment_id == $id)][0].fence')
assert_eq "$wh_fence" "$fence" "fence sent to the provider"
assert_eq "$(deploy_calls rw)" 0 "backup deploys after v1"

log "2. failover from a primary answering 402"
fake_script wh '{"mode":"http_402"}'
id=$(deploy v2)
ev=$(terminal "$id")
assert_eq "$(jq -r .type <<<"$ev")" deploy.succeeded "v2 outcome"
assert_eq "$(jq -r .data.provider <<<"$ev")" backup "v2 provider"
pf=$(events_for "$id" | jq -c 'select(.type == "provider.failed")')
assert_eq "$(jq -r .data.provider <<<"$pf")" primary "v2 failed provider"
assert_eq "$(jq -r .data.error_class <<<"$pf")" payment_required "v2 error class"
assert_eq "$(jq -r .data.http_status <<<"$pf")" 402 "v2 http status"
[ "$(jq -r .fence <<<"$pf")" -gt "$fence" ] || fail "fence did not grow: $(jq -r .fence <<<"$pf") after $fence"
assert_eq "$(deploy_calls rw)" 1 "backup deploys after v2"
# order on the topic: provider.failed, deploy.started, deploy.succeeded
order=$(events_for "$id" | jq -r 'select(.type != "deploy.validated") | .type' | paste -sd, -)
assert_eq "$order" "provider.failed,deploy.started,deploy.succeeded" "v2 event order"

log "3. failover from a primary that times out"
fake_script wh '{"mode":"succeed","delay_ms":3000}'
id=$(deploy v3)
ev=$(terminal "$id")
assert_eq "$(jq -r .type <<<"$ev")" deploy.succeeded "v3 outcome"
assert_eq "$(jq -r .data.provider <<<"$ev")" backup "v3 provider"
assert_eq "$(events_for "$id" | jq -r 'select(.type == "provider.failed") | .data.error_class')" timeout "v3 error class"
assert_eq "$(deploy_calls rw)" 2 "backup deploys after v3"

log "4. a real build failure is not failed over"
fake_script wh '{"mode":"fail_after_building","steps":1}'
id=$(deploy v4)
ev=$(terminal "$id")
assert_eq "$(jq -r .type <<<"$ev")" deploy.failed "v4 outcome"
assert_eq "$(jq -r .data.reason <<<"$ev")" build_failed "v4 reason"
assert_eq "$(jq -r .data.provider <<<"$ev")" primary "v4 provider"
assert_eq "$(jq -r .data.provider_status <<<"$ev")" failed "v4 provider status"
assert_eq "$(jq -r .data.log_url <<<"$ev" | grep -c '^https://example.test/deploys/.*/log$')" 1 "v4 log url"
assert_eq "$(count_type "$id" provider.failed)" 0 "v4 provider.failed events"
assert_eq "$(deploy_calls rw)" 2 "backup deploys after v4 (no failover)"

log "5. stuck in BUILDING -> deploy.failed, reason timeout"
fake_script rw '{"mode":"in_flight_forever"}'
id=$(deploy v5 stuck)
ev=$(terminal "$id")
assert_eq "$(jq -r .type <<<"$ev")" deploy.failed "v5 outcome"
assert_eq "$(jq -r .data.reason <<<"$ev")" timeout "v5 reason"
assert_eq "$(jq -r .data.provider_status <<<"$ev")" BUILDING "v5 last provider status"

log "every event passes the schemas; no token anywhere"
events | schema_check || fail "events do not match the schemas"
if events | grep -q 't0k3n'; then fail "a provider token leaked into an event"; fi
if grep -q 't0k3n' "$T"/executor-*.log; then fail "a provider token leaked into the executor log"; fi
# one terminal event per deployment, and each deployment one deploy.started at most
dup=$(events | jq -r 'select(.type == "deploy.succeeded" or .type == "deploy.failed") | .deployment_id' | sort | uniq -d | wc -l)
assert_eq "$dup" 0 "deployments with two terminal events"
echo ok
