#!/usr/bin/env bash
# Configuration drift: production's required variables are read from Railway (the
# double's variables query) and staging's from a drift_check command; a deploy is
# rejected with code drift naming each required variable missing at the provider and each
# variable staging has that production lacks (drift_ignore excepted); values never appear
# in events; when the variables cannot be read the gate fails closed; with everything in
# place the deploy is validated.
# Values (keyed hashes, gates.h): a production value that differs from staging's is
# refused with code drift_values and the variable's name, one in drift_allow passes;
# `deployq drift` says the same by name (and what changed since the last deploy, from the
# hashes the validator recorded); the validator's scan emits drift.detected once for a new
# drift. The canary values appear nowhere: logs, events, Redis, command output.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-gates.sh"

start_redis
start_broker
start_fake rw railway
RW=$FAKE_URL_rw
export DQ_TEST_RW_TOKEN=rw-secret-token-0202
export DQ_TEST_DRIFT_KEY=drift-key-0202-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
CANARY_STG="canary-stg-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
CANARY_PRD="canary-prd-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
# staging's variables: drift_check prints this file (names, and NAME=VALUE lines)
printf 'DATABASE_URL\nREDIS_URL=redis://staging\nFEATURE_FLAGS\nSTAGING_ONLY_DEBUG\n' >"$T/staging.env"

write_config "  store:
    environments:
      staging:
        drift_check: [cat, \"$T/staging.env\"]
      production:
        requires: staging
        promotion_needs: succeeded
        required_vars: [DATABASE_URL, STRIPE_KEY]
        drift_ignore: [STAGING_ONLY_DEBUG]
        drift_allow: [REDIS_URL]
        providers:
          - {type: railway, name: rw, base_url: \"$RW/graphql/v2\", token_env: DQ_TEST_RW_TOKEN,
             project_id: prj-1, service_id: svc-1, environment_id: env-prd}
drift:
  key: \${DQ_TEST_DRIFT_KEY}
  scan_interval: 1s"
start_validator a
for v in v1 v2 v3; do
    inject deploy.succeeded store staging $v "$(new_uuid)" "$(succeeded_data railway d-$v)" >/dev/null
done
wait_recorded deployq:succeeded:store:staging:v3

# 1. Production lacks STRIPE_KEY (required) and REDIS_URL, FEATURE_FLAGS (staging has them).
fake_script rw '{"variables": {"env-prd": {"DATABASE_URL": "postgres://prod-password-xyz@db"}}}'
id=$(submit --service store --env production --version v1) || fail "submit failed"
ev=$(wait_event "$id" deploy.rejected 60) || fail "no deploy.rejected for $id"
assert_eq "$(reason_codes "$ev")" "drift,drift" "reason codes"
assert_eq "$(jq -r '.data.reasons[0].message' <<<"$ev")" \
    "required variables missing in store/production: STRIPE_KEY" "required message"
assert_eq "$(jq -r '.data.reasons[1].message' <<<"$ev")" \
    "variables present in store/staging but missing in store/production: FEATURE_FLAGS, REDIS_URL" "comparison message"
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

# 3. Everything in place (REDIS_URL differs in value, but drift_allow lists it): validated.
fake_script rw '{"variables": {"env-prd/svc-1": {"DATABASE_URL": "x", "STRIPE_KEY": "y", "REDIS_URL": "z", "FEATURE_FLAGS": "f"}}}'
id=$(submit --service store --env production --version v1) || fail "submit failed"
wait_event "$id" deploy.validated 60 >/dev/null || fail "no deploy.validated once nothing drifts"

# 4. FEATURE_FLAGS has a value in both, and production's differs: refused by name.
printf 'DATABASE_URL\nREDIS_URL=redis://staging\nFEATURE_FLAGS=%s\nSTAGING_ONLY_DEBUG\n' "$CANARY_STG" >"$T/staging.env"
prod() { # prod FEATURE_FLAGS_VALUE: production's variables at the double
    fake_script rw "{\"variables\": {\"env-prd/svc-1\": {\"DATABASE_URL\": \"x\", \"STRIPE_KEY\": \"y\",
        \"REDIS_URL\": \"z\", \"FEATURE_FLAGS\": \"$1\"}}}"
}
prod "$CANARY_PRD"
id=$(submit --service store --env production --version v2) || fail "submit failed"
ev=$(wait_event "$id" deploy.rejected 60) || fail "no deploy.rejected for a value that differs"
assert_eq "$(reason_codes "$ev")" "drift_values" "reason codes of a value drift"
assert_eq "$(jq -r '.data.reasons[0].message' <<<"$ev")" \
    "variables whose values differ between store/staging and store/production: FEATURE_FLAGS (list those expected to differ in drift_allow)" \
    "value drift message"
# deployq drift says the same, by name, and exits 1
rc=0
"$DEPLOYQ" drift --config "$CONFIG" --service store >"$T/drift-1.out" 2>&1 || rc=$?
assert_eq "$rc" 1 "deployq drift exit status on drift"
grep -qx '  differs in value:            FEATURE_FLAGS' "$T/drift-1.out" || fail "drift output: $(cat "$T/drift-1.out")"
grep -qx '  allowed to differ:           REDIS_URL' "$T/drift-1.out" || fail "drift output: $(cat "$T/drift-1.out")"
grep -qx '  missing in staging:          STRIPE_KEY' "$T/drift-1.out" || fail "drift output: $(cat "$T/drift-1.out")"
rc=0
"$DEPLOYQ" drift --config "$CONFIG" --service store --env production --against staging --json >"$T/drift-1.json" 2>"$T/drift-1.err" || rc=$?
assert_eq "$rc" 1 "deployq drift --json exit status"
assert_eq "$(jq -c '.comparisons[0] | [.differs, .allowed, .missing, .drift]' "$T/drift-1.json")" \
    '[["FEATURE_FLAGS"],["REDIS_URL"],[],true]' "drift --json"

# 5. The same value on both sides: validated, and production's hashes recorded.
prod "$CANARY_STG"
id=$(submit --service store --env production --version v3) || fail "submit failed"
wait_event "$id" deploy.validated 60 >/dev/null || fail "no deploy.validated once the values agree"
rc=0
"$DEPLOYQ" drift --config "$CONFIG" --service store >"$T/drift-2.out" 2>&1 || rc=$?
assert_eq "$rc" 0 "deployq drift exit status without drift: $(cat "$T/drift-2.out")"
grep -q '^  changed since the deploy of v3 (' "$T/drift-2.out" || fail "no record of v3's hashes: $(cat "$T/drift-2.out")"

# 6. Production's value changes behind deployq's back: drift says what changed since v3,
# and the scan emits drift.detected once (it runs every second; a few seconds more bring
# no second event for the same drift).
prod "$CANARY_PRD"
rc=0
"$DEPLOYQ" drift --config "$CONFIG" --service store >"$T/drift-3.out" 2>&1 || rc=$?
assert_eq "$rc" 1 "deployq drift exit status after a change"
grep -A1 '^  changed since the deploy of v3' "$T/drift-3.out" | grep -q 'FEATURE_FLAGS$' ||
    fail "the change since v3 not shown: $(cat "$T/drift-3.out")"
detected() { events | jq -c 'select(.type == "drift.detected" and .environment == "production"
    and .data.differs == ["FEATURE_FLAGS"] and .data.since_deploy.version == "v3"
    and .data.since_deploy.changed == ["FEATURE_FLAGS"])'; }
end=$((SECONDS + 60))
until [ -n "$(detected)" ] || [ $SECONDS -ge $end ]; do sleep 0.5; done
ev=$(detected | head -n 1)
[ -n "$ev" ] || fail "no drift.detected from the scan: $(events | jq -c 'select(.type == "drift.detected") | .data')"
assert_eq "$(jq -r '.data.against' <<<"$ev")" staging "drift.detected against"
sleep 3
assert_eq "$(detected | jq -r .id | sort -u | wc -l)" 1 "drift.detected events for one drift"

events | schema_check >/dev/null || fail "events not valid against schemas/"

# The canary values: nowhere in logs, events, command output or Redis (every key, by type).
redis_dump() {
    local k
    redis-cli -p "$REDIS_PORT" --scan | while read -r k; do
        case $(redis-cli -p "$REDIS_PORT" type "$k") in
        string) redis-cli -p "$REDIS_PORT" get "$k" ;;
        hash) redis-cli -p "$REDIS_PORT" hgetall "$k" ;;
        list) redis-cli -p "$REDIS_PORT" lrange "$k" 0 -1 ;;
        set) redis-cli -p "$REDIS_PORT" smembers "$k" ;;
        zset) redis-cli -p "$REDIS_PORT" zrange "$k" 0 -1 withscores ;;
        stream) redis-cli -p "$REDIS_PORT" xrange "$k" - + ;;
        esac
    done
}
redis_dump >"$T/redis.dump"
grep -q '^deployq:drift:vars:store:production$' <(redis-cli -p "$REDIS_PORT" --scan) || fail "no recorded hashes"
events >"$T/events.jsonl"
for c in "$CANARY_STG" "$CANARY_PRD" "$DQ_TEST_DRIFT_KEY"; do
    hits=$(grep -l -F "$c" "$T"/*.log "$T"/*.jsonl "$T"/*.out "$T"/*.json "$T"/*.err "$T/redis.dump" || true)
    [ -z "$hits" ] || fail "a canary value or the drift key found in: $hits"
done
echo ok
