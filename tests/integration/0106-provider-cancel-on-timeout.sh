#!/usr/bin/env bash
# A deploy that never finishes is cancelled at the provider by default, and the cancel is
# confirmed before deploy.failed (issue 10, item 3):
#   1. the Railway double cancels: deploy.failed reason timeout, cancel confirmed, no
#      unknown outcome, nothing left in flight at the double;
#   2. the double refuses the cancel: deploy.failed with cancel unconfirmed and outcome
#      unknown, and `deployq status` shows the target as unknown;
#   3. the next deploy of that target says so in its deploy.started
#      (previous_outcome_unknown), and once it succeeded the target is known again.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"
. "$(dirname "$0")/helpers-registry.sh"

start_redis
start_broker
start_fake rw railway
RW=http://127.0.0.1:$FAKE_PORT_rw/graphql/v2
# no cancel_on_timeout key: the default must cancel
write_exec_config "  stuck:
    environments:
      staging:
        providers:
          - {type: railway, name: rw, base_url: \"$RW\", token: t0k3n-rw, service_id: svc-stuck, environment_id: env-staging, poll_interval: 200ms, deadline: 2s}" \
"executor:
  lock_ttl: 5s
  cancel_wait: 1500ms"
start_validator a
start_executor a
start_registry a


log "1. stuck in BUILDING: cancelled and confirmed, then deploy.failed"
fake_script rw '{"mode":"in_flight_forever"}'
id1=$(deploy v1 stuck)
ev=$(terminal "$id1")
assert_eq "$(jq -r .type <<<"$ev")" deploy.failed "v1 outcome"
assert_eq "$(jq -r .data.reason <<<"$ev")" timeout "v1 reason"
assert_eq "$(jq -r .data.cancel <<<"$ev")" confirmed "v1 cancel"
assert_eq "$(jq -r '.data.outcome // "none"' <<<"$ev")" none "v1 outcome field"
assert_eq "$(jq -r .data.provider_status <<<"$ev")" BUILDING "v1 status at the deadline"
[ "$(gql_calls rw deploymentCancel | jq length)" -ge 1 ] || fail "no deploymentCancel reached the double"
assert_eq "$(fake_calls rw | jq '.active["svc-stuck/env-staging"]')" 0 "deployments still in flight at the double"

log "2. the double refuses the cancel: outcome unknown"
fake_script rw '{"mode":"in_flight_forever","cancel":"refuse"}'
id2=$(deploy v2 stuck)
ev=$(terminal "$id2")
assert_eq "$(jq -r .data.reason <<<"$ev")" timeout "v2 reason"
assert_eq "$(jq -r .data.cancel <<<"$ev")" unconfirmed "v2 cancel"
assert_eq "$(jq -r .data.outcome <<<"$ev")" unknown "v2 outcome"
wait_for 20 sh -c "'$DEPLOYQ' status --dir '$REG_DIR' --json | jq -e '.targets[] | select(.service==\"stuck\") | .outcome_unknown.deployment_id == \"$id2\"' >/dev/null" \
    || fail "status never showed the unknown outcome: $("$DEPLOYQ" status --dir "$REG_DIR" --json)"
"$DEPLOYQ" status --dir "$REG_DIR" --service stuck --env staging >"$T/status.txt"
grep -q '^stuck/staging  *unknown ' "$T/status.txt" || fail "status table: $(cat "$T/status.txt")"
grep -q "outcome unknown since .*$id2" "$T/status.txt" || fail "status note: $(cat "$T/status.txt")"

log "3. the next deploy knows, and its success makes the target known again"
fake_script rw '{"mode":"succeed","steps":1}'
id3=$(deploy v3 stuck)
assert_eq "$(jq -r .type <<<"$(terminal "$id3")")" deploy.succeeded "v3 outcome"
started=$(events_for "$id3" | jq -c 'select(.type == "deploy.started")' | head -n1)
assert_eq "$(jq -r .data.previous_outcome_unknown.deployment_id <<<"$started")" "$id2" "v3 previous_outcome_unknown"
assert_eq "$(jq -r .data.previous_outcome_unknown.version <<<"$started")" v2 "v3 previous version"
grep -q "previous deploy of stuck/staging ($id2, version v2) ended with an unknown outcome" "$T"/executor-a.log \
    || fail "the executor did not log the unknown outcome"
wait_for 20 sh -c "'$DEPLOYQ' status --dir '$REG_DIR' --json | jq -e '.targets[] | select(.service==\"stuck\") | (.outcome_unknown == null and .current_version == \"v3\")' >/dev/null" \
    || fail "status still unknown after v3: $("$DEPLOYQ" status --dir "$REG_DIR" --json)"

events | schema_check || fail "events do not match the schemas"
echo ok
