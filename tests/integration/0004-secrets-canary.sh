#!/usr/bin/env bash
# A canary secret in every secret slot of the configuration (Redis password, a Kafka
# SASL password, a provider token) never appears in logs, events, the dead-letter topic
# or CLI errors, even when things go wrong around it. And as a variable *value* the drift
# gate reads (drift_check printing the whole environment as NAME=VALUE lines, where one
# differs between staging and production): refused by name, the value nowhere.
. "$(dirname "$0")/helpers.sh"

CANARY="canary-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
export DQ_REDIS_PASSWORD=$CANARY DQ_SASL_PASSWORD=$CANARY DQ_PROVIDER_TOKEN=$CANARY
REDIS_EXTRA_ARGS="--requirepass $CANARY"
REDIS_CLI_AUTH="-a $CANARY --no-auth-warning"
start_redis
REDIS_URL='redis://:${DQ_REDIS_PASSWORD}@127.0.0.1:'"$REDIS_PORT"
start_broker
write_config '  vault:
    environments:
      staging:
        drift_check: [env]
      production:
        requires: staging
        promotion_needs: succeeded
        drift_check: [sh, -c, "env; echo DQ_PROVIDER_TOKEN=rotated-in-production"]
providers:
  github:
    type: github-actions
    token: ${DQ_PROVIDER_TOKEN}'
# The SASL slot: the canary, or on a broker that authenticates its real password.
sasl=$(sasl_secret) || fail "config not written as intended"
SECRETS=("$CANARY" "$sasl")

start_validator a
id=$(submit --service api --env staging --version v1) || fail "submit failed"
wait_event "$id" deploy.validated 60 >/dev/null || fail "not validated with a password-protected Redis"
id=$(submit --service vault --env production --version v1)
ev=$(wait_event "$id" deploy.rejected 60) || fail "no rejection for a drifted value"
jq -e '.data.reasons[] | select(.code == "drift_values" and (.message | test("DQ_PROVIDER_TOKEN")))' <<<"$ev" >/dev/null ||
    fail "the value drift not refused by name: $ev"
id=$(submit --service nosuch --env staging --version v1)
wait_event "$id" deploy.rejected 30 >/dev/null || fail "no rejection"
produce_raw garbage

# Make things go wrong: Redis refuses the wrong password, Redis goes away, a bad broker.
DQ_REDIS_PASSWORD=wrong-password timeout 5 "$VALIDATOR" --config "$CONFIG" >"$T/validator-wrongpw.log" 2>&1 || true
"$DEPLOYQ" submit --config "$CONFIG" --key "$T/ci.key" --brokers 127.0.0.1:1 --timeout 2 \
    --service api --env staging --version v1 >"$T/submit-unreachable.log" 2>&1 || true
redis-cli -p "$REDIS_PORT" -a "$CANARY" --no-auth-warning shutdown nosave >/dev/null 2>&1 || true
id=$(submit --service api --env staging --version v2)
sleep 3 # the validator now fails to reach Redis and logs about it

events >"$T/events.jsonl"
kcat -C -b "$BROKERS" -t "$TOPIC_DEAD" -o beginning -e -q 2>/dev/null >"$T/dead.jsonl" || true
[ -s "$T/events.jsonl" ] || fail "no events captured"
grep -q 'unavailable' "$T/validator-a.log" || fail "the validator did not log the Redis outage"
names=("the canary" "the Kafka SASL password")
for i in "${!SECRETS[@]}"; do
    hits=$(grep -l -F "${SECRETS[$i]}" "$T"/*.log "$T"/*.jsonl || true)
    [ -z "$hits" ] || fail "${names[$i]} found in: $hits"
done
# The check itself works: the canary is in the environment the test gave the workers.
grep -q -F "$CANARY" <(env) || fail "canary not set"
echo "ok"
