#!/usr/bin/env bash
# Every kind of bad request is rejected with its reason in deploy.rejected, and the
# validator keeps running after each: bad JSON, over-size, nesting too deep, schema
# violations, unknown service/environment, missing/forged signature, unknown key id,
# retired key, stale issued_at, replayed nonce.
. "$(dirname "$0")/helpers.sh"

start_redis
start_broker
write_config
start_validator a

rejected_ids() { events | jq -r 'select(.type == "deploy.rejected") | .id' | sort; }

# expect_raw_rejection NAME CODE PAYLOAD: the one new deploy.rejected after sending PAYLOAD
# must carry CODE among its reasons.
expect_raw_rejection() {
    local name=$1 code=$2 payload=$3 before after new
    before=$(rejected_ids)
    produce_raw "$payload"
    local end=$((SECONDS + 30))
    while :; do
        after=$(rejected_ids)
        new=$(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | grep -v '^$' || true)
        [ -n "$new" ] && break
        [ $SECONDS -lt $end ] || fail "$name: no deploy.rejected"
        sleep 0.3
    done
    [ "$(wc -l <<<"$new")" -eq 1 ] || fail "$name: expected one new rejection, got: $new"
    local ev
    ev=$(events | jq -c --arg id "$new" 'select(.id == $id)' | head -n1)
    jq -e --arg c "$code" '[.data.reasons[].code] | index($c) != null' <<<"$ev" >/dev/null ||
        fail "$name: expected reason $code in $ev"
    assert_eq "$(schema_check <<<"$ev")" 1 "$name: rejection valid against schemas/"
    alive "$VALIDATOR_PID_a" || fail "$name: the validator died"
    log "$name -> $(jq -c '[.data.reasons[] | .code + ": " + .message]' <<<"$ev")"
}

# expect_rejection NAME CODE DEPLOYMENT_ID: the verdict of a request we know the id of.
expect_rejection() {
    local ev
    ev=$(wait_event "$3" deploy.rejected 30) || fail "$1: no deploy.rejected for $3"
    jq -e --arg c "$2" '[.data.reasons[].code] | index($c) != null' <<<"$ev" >/dev/null ||
        fail "$1: expected reason $2 in $ev"
    assert_eq "$(schema_check <<<"$ev")" 1 "$1: rejection valid against schemas/"
    alive "$VALIDATOR_PID_a" || fail "$1: the validator died"
    log "$1 -> $(jq -c '[.data.reasons[] | .code + ": " + .message]' <<<"$ev")"
}

expect_raw_rejection "bad JSON" bad_json '{"schema": "deployq.signed/v1", "key_id": '
expect_raw_rejection "not an object" bad_json '[1, 2, 3]'
expect_raw_rejection "over-size" too_large "{\"pad\":\"$(head -c 70000 /dev/zero | tr '\0' a)\"}"
expect_raw_rejection "nesting too deep" too_deep "{\"a\":$(printf '[%.0s' $(seq 40))$(printf ']%.0s' $(seq 40))}"

# A schema violation inside a correctly signed request.
msg=$(signed --service api --env staging --version 'has spaces')
produce_raw "$msg" api/staging
expect_rejection "schema violation" schema "$(id_of "$msg")"

# The signed wrapper itself off-schema (an extra member).
msg=$(signed --service api --env staging --version v1 | jq -c '. + {"extra": 1}')
produce_raw "$msg" api/staging
expect_rejection "wrapper schema violation" schema "$(id_of "$msg")"

id=$(submit --service nosuch --env staging --version v1)
expect_rejection "unknown service" unknown_service "$id"
id=$(submit --service api --env nowhere --version v1)
expect_rejection "unknown environment" unknown_environment "$id"

msg=$(signed --service api --env staging --version v1 | jq -c 'del(.signature)')
produce_raw "$msg" api/staging
expect_rejection "missing signature" missing_signature "$(id_of "$msg")"

# Signed by another key that claims the id ci-test: a forgery.
msg=$(KEY=$T/stranger.key signed --service api --env staging --version v1)
produce_raw "$msg" api/staging
expect_rejection "forged signature" bad_signature "$(id_of "$msg")"

# One byte of the signed request changed after signing.
msg=$(signed --service api --env staging --version v1 | jq -c '.request |= sub("\"v1\""; "\"v9\"")')
produce_raw "$msg" api/staging
expect_rejection "altered request" bad_signature "$(id_of "$msg")"

msg=$(KEY_ID=nobody signed --service api --env staging --version v1)
produce_raw "$msg" api/staging
expect_rejection "unknown key id" unknown_key "$(id_of "$msg")"

msg=$(KEY=$T/retired.key KEY_ID=ci-retired signed --service api --env staging --version v1)
produce_raw "$msg" api/staging
expect_rejection "retired key" retired_key "$(id_of "$msg")"

msg=$(KEY=$T/approver.key KEY_ID=approver-test signed --service api --env staging --version v1)
produce_raw "$msg" api/staging
expect_rejection "approver key used for a deploy" wrong_key_role "$(id_of "$msg")"

id=$(submit --service api --env staging --version v1 --issued-at 2020-01-01T00:00:00Z)
expect_rejection "stale issued_at" stale "$id"

# Several reasons at once: all are reported.
id=$(submit --service nosuch --env staging --version v1 --issued-at 2020-01-01T00:00:00Z)
ev=$(wait_event "$id" deploy.rejected 30) || fail "no rejection for the double fault"
assert_eq "$(jq -c '[.data.reasons[].code] | sort' <<<"$ev")" '["stale","unknown_service"]' "every reason found"

# Replay: the same signed bytes sent twice. The first is validated, the second rejected.
msg=$(signed --service api --env staging --version v1)
id=$(id_of "$msg")
produce_raw "$msg" api/staging
wait_event "$id" deploy.validated 30 >/dev/null || fail "replay: the original was not validated"
produce_raw "$msg" api/staging
expect_rejection "replayed nonce" replayed_nonce "$id"

# After all that, a good request still goes through: the validator is healthy.
id=$(submit --service api --env staging --version v2)
wait_event "$id" deploy.validated 30 >/dev/null || fail "validator stopped validating"
alive "$VALIDATOR_PID_a" || fail "validator died"
# Nothing was dead-lettered: rejections are verdicts, not poison.
dead=$(kcat -C -b "$BROKERS" -t "$TOPIC_DEAD" -o beginning -e -q 2>/dev/null | wc -l || true)
assert_eq "$dead" 0 "messages in $TOPIC_DEAD"
echo "ok"
