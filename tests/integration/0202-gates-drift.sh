#!/usr/bin/env bash
# Configuration drift: production's required variables are read from Railway (the
# double's variables query) and staging's from a drift_check command; a deploy is
# rejected with code drift naming each required variable missing at the provider and each
# variable staging has that production lacks (drift_ignore excepted); values never appear
# in events; when the variables cannot be read the gate fails closed; with everything in
# place the deploy is validated.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-gates.sh"

start_redis
start_broker
start_fake rw railway
RW=$FAKE_URL_rw
export DQ_TEST_RW_TOKEN=rw-secret-token-0202

write_config "  store:
    environments:
      staging:
        drift_check: [printf, \"DATABASE_URL\\\\nREDIS_URL=redis://staging\\\\nFEATURE_FLAGS\\\\nSTAGING_ONLY_DEBUG\\\\n\"]
      production:
        requires: staging
        promotion_needs: succeeded
        required_vars: [DATABASE_URL, STRIPE_KEY]
        drift_ignore: [STAGING_ONLY_DEBUG]
        providers:
          - {type: railway, name: rw, base_url: \"$RW/graphql/v2\", token_env: DQ_TEST_RW_TOKEN,
             project_id: prj-1, service_id: svc-1, environment_id: env-prd}"
start_validator a
inject deploy.succeeded store staging v1 "$(new_uuid)" "$(succeeded_data railway d-1)" >/dev/null
wait_recorded deployq:succeeded:store:staging:v1

# 1. Production lacks STRIPE_KEY (required) and REDIS_URL, FEATURE_FLAGS (staging has them).
fake_script rw '{"variables": {"env-prd": {"DATABASE_URL": "postgres://prod-password-xyz@db"}}}'
id=$(submit --service store --env production --version v1) || fail "submit failed"
ev=$(wait_event "$id" deploy.rejected 60) || fail "no deploy.rejected for $id"
assert_eq "$(reason_codes "$ev")" "drift,drift" "reason codes"
assert_eq "$(jq -r '.data.reasons[0].message' <<<"$ev")" \
    "required variables missing in store/production: STRIPE_KEY" "required message"
assert_eq "$(jq -r '.data.reasons[1].message' <<<"$ev")" \
    "variables present in store/staging but missing in store/production: REDIS_URL, FEATURE_FLAGS" "comparison message"
events | grep -q -e prod-password-xyz -e redis://staging -e rw-secret-token && fail "a variable value or token reached an event"
# The query carried the ids and the token only in the auth header.
calls=$(fake_calls rw)
jq -e '[.calls[] | select(.body.variables.projectId == "prj-1" and .body.variables.environmentId == "env-prd"
        and .body.variables.serviceId == "svc-1" and .auth.scheme == "Bearer")] | length >= 1' <<<"$calls" >/dev/null ||
    fail "unexpected variables query: $calls"

# 2. The API cannot answer: fail closed.
fake_script rw '{"variables": {}}'
id=$(submit --service store --env production --version v1) || fail "submit failed"
ev=$(wait_event "$id" deploy.rejected 60) || fail "no deploy.rejected for $id"
assert_eq "$(jq -r '.data.reasons[0].message' <<<"$ev")" \
    "cannot read the variables of store/production: railway variables: Environment not found" "unreadable"

# 3. Everything in place: validated.
fake_script rw '{"variables": {"env-prd/svc-1": {"DATABASE_URL": "x", "STRIPE_KEY": "y", "REDIS_URL": "z", "FEATURE_FLAGS": "f"}}}'
id=$(submit --service store --env production --version v1) || fail "submit failed"
wait_event "$id" deploy.validated 60 >/dev/null || fail "no deploy.validated once nothing drifts"

events | schema_check >/dev/null || fail "events not valid against schemas/"
echo ok
