#!/usr/bin/env bash
# An ambiguous create is never blindly repeated (issue 10, item 4): the Railway double
# creates the deployment and then answers 502 (and, second, creates it and answers too
# late). The executor looks before retrying or failing over, adopts the deployment it
# finds, and the deploy succeeds there: exactly one deployment at the double, no
# provider.failed, nothing at the backup.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"

start_redis
start_broker
start_fake rw railway
start_fake wh webhook
RW=http://127.0.0.1:$FAKE_PORT_rw/graphql/v2
WH=http://127.0.0.1:$FAKE_PORT_wh
write_exec_config "  api:
    environments:
      staging:
        providers:
          - {type: railway, name: rw, base_url: \"$RW\", token: t0k3n-rw, service_id: svc-api, environment_id: env-staging, poll_interval: 200ms, deadline: 20s, timeout: 1s, retries: 2}
          - {type: webhook, name: backup, url: \"$WH/deploy\", status_url: \"$WH/status/{id}\", poll_interval: 200ms, deadline: 20s}" \
"executor:
  lock_ttl: 5s"
start_validator a
start_executor a

rw_deployments() { fake_calls rw | jq '.max_concurrent["svc-api/env-staging"] // 0'; }

n=0
for script in '{"create_then":"502","steps":1}' '{"create_then":"hang","hang_ms":2500,"steps":1}'; do
    n=$((n + 1))
    log "$n. $script"
    fake_reset rw
    fake_script rw "$script"
    id=$(submit --service api --env staging --version "v$n")
    ev=$(terminal "$id" 60) || fail "v$n: no terminal event"
    assert_eq "$(jq -r .type <<<"$ev")" deploy.succeeded "v$n outcome"
    assert_eq "$(jq -r .data.provider <<<"$ev")" rw "v$n provider"
    assert_eq "$(count_type "$id" provider.failed)" 0 "v$n provider.failed events"
    assert_eq "$(deploy_calls rw)" 1 "v$n deploy calls at the double"
    assert_eq "$(rw_deployments)" 1 "v$n deployments created at the double"
    started=$(events_for "$id" | jq -c 'select(.type == "deploy.started")' | head -n1)
    assert_eq "$(jq -r .data.provider_deployment_id <<<"$started")" "$(jq -r .data.provider_deployment_id <<<"$ev")" "v$n adopted id"
    grep -q "deploy call failed .* but the provider had created" "$T"/executor-a.log || fail "v$n: adoption not logged"
done
assert_eq "$(deploy_calls wh)" 0 "deploys at the backup"
events | schema_check || fail "events do not match the schemas"
echo ok
