#!/usr/bin/env bash
# A CI job submits a signed request; a validator turns it into deploy.validated on
# deployq.events, read back with kcat and checked against schemas/ by Python's jsonschema.
. "$(dirname "$0")/helpers.sh"

start_redis
start_broker
write_config
start_validator a

id=$(submit --service api --env staging --version 3f2c1ab \
    --commit-at 2026-11-26T09:00:00Z --ci-run-url https://ci.example/run/1) || fail "submit failed"
[[ "$id" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]] || fail "not a deployment id: $id"

ev=$(wait_event "$id" deploy.validated 60) || fail "no deploy.validated for $id"
log "got $ev"
assert_eq "$(jq -r .service <<<"$ev")" api service
assert_eq "$(jq -r .environment <<<"$ev")" staging environment
assert_eq "$(jq -r .version <<<"$ev")" 3f2c1ab version
assert_eq "$(jq -r .data.key_id <<<"$ev")" ci-test key_id
assert_eq "$(jq -r .data.commit_at <<<"$ev")" 2026-11-26T09:00:00Z commit_at
assert_eq "$(jq -r .data.ci_run_url <<<"$ev")" https://ci.example/run/1 ci_run_url
assert_eq "$(jq -r .data.source.topic <<<"$ev")" "$TOPIC_REQUESTS" source.topic
assert_eq "$(schema_check <<<"$ev")" 1 "events valid against schemas/"

# The event is keyed service/environment, so a target's events stay in one partition.
key=$(kcat -C -b "$BROKERS" -t "$TOPIC_EVENTS" -o beginning -e -q -f '%k %s\n' 2>/dev/null |
    grep -F "\"deployment_id\":\"$id\"" | cut -d' ' -f1 | head -n1)
assert_eq "$key" api/staging "message key"

# --json gives machine-readable output with the request's position.
out=$(submit --service api --env production --version v2 --json) || fail "submit --json failed"
jq -e '.deployment_id and (.partition >= 0) and (.offset >= 0)' <<<"$out" >/dev/null || fail "bad --json output: $out"
wait_event "$(jq -r .deployment_id <<<"$out")" deploy.validated 30 >/dev/null || fail "second request not validated"
echo "ok"
