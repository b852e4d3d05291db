#!/usr/bin/env bash
# A verdict whose delivery fails is not lost. The validator sends its verdicts without
# waiting and stores a request's offset only when the verdict's delivery report says it
# is durable; a report that says it failed rewinds the partition, so the request is judged
# again, with the same event id, and its nonce (claimed already, naming this very request)
# passes as a redelivery, not as a replay.
#
# The failure is a real one, on a secure Kafka of its own as 0601 has (scripts/kafka.sh
# start --secure, Kafka 4.1.1, SASL_SSL with ACLs): while the validator runs, the validator
# principal's WRITE on deployq.events is taken away (AclCommand as admin), one signed
# request is submitted, and once the validator has logged the failed delivery
# (Topic authorization failed) the ACL is given back. Then: exactly one verdict for the
# deployment, deploy.validated (not deploy.rejected for replayed_nonce); the validator's
# group has committed past the request; a second request passes; the validator still runs.
# A validator that acknowledged the failed verdict instead would leave no verdict at all,
# and one that took the request for a replay of itself would reject it: both fail here.
#
# Skipped (77) where Java is missing.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-security.sh"

export KAFKA_VERSION=4.1.1
SASL_MECHANISM=PLAIN
start_secure_stack
# A failed verdict is reported after message.timeout.ms at the latest (10 s by default);
# shorter here, so the test is quick whichever way librdkafka reports the refusal.
sed -i 's/^kafka:$/kafka:\n  message.timeout.ms: "3000"/' "$T/validator.yaml"
grep -q 'message.timeout.ms: "3000"' "$T/validator.yaml" || fail "validator.yaml not written as intended"

"$VALIDATOR" --config "$T/validator.yaml" --log-level debug >"$T/validator.log" 2>&1 &
VALIDATOR_PID=$!
PIDS+=("$VALIDATOR_PID")
wait_for 60 grep -q 'consuming deployq.requests' "$T/validator.log" ||
    fail "the validator did not start consuming over SASL_SSL"

# ---- the validator may no longer write deployq.events ----
t0=$SECONDS
kafka_acl "$T/acl-remove.out" --remove --force --allow-principal User:validator --operation Write --topic deployq.events
log "validator's WRITE on deployq.events removed in $((SECONDS - t0)) s"
# the broker enforces it (kcat as validator, the same principal)
validator_refused() {
    local out
    out=$(printf x | kcat_as validator -P -t deployq.events 2>&1) && return 1
    grep -q 'Topic authorization failed' <<<"$out"
}
wait_for 30 validator_refused || fail "the validator can still write deployq.events after the ACL was removed"

id=$(ci_submit --service api --env staging --version v1 --timeout 20 2>"$T/submit-1.log") ||
    fail "submit failed: $(cat "$T/submit-1.log")"
wait_for 60 grep -q 'not delivered (Broker: Topic authorization failed); judging it again' "$T/validator.log" ||
    fail "the validator did not report its verdict's delivery failing"
alive "$VALIDATOR_PID" || fail "the validator died when its verdict could not be delivered"
assert_eq "$(secure_events | jq -c --arg id "$id" 'select(.deployment_id == $id)' | wc -l)" 0 \
    "events for $id while the validator may not write"
# Judged again while refused: the partition was rewound to the request, which is held
# back (backoff), not dropped; and its nonce, claimed by itself, is no replay.
judgements() { grep -c -E "deploy\.(validated|rejected) api/staging deployment $id" "$T/validator.log" || true; }
judged_again() { [ "$(judgements)" -ge 2 ]; }
wait_for 30 judged_again || fail "the request was not judged again after its verdict failed ($(judgements) judgement(s))"
grep -q "deployment $id: replayed_nonce" "$T/validator.log" &&
    fail "the request, read again after its verdict failed, was taken for a replay of itself"
log "verdict refused $(grep -c 'Topic authorization failed); judging it again' "$T/validator.log") time(s); request judged $(judgements) time(s)"

# ---- given back: the verdict arrives, once, as deploy.validated ----
kafka_acl "$T/acl-add.out" --add --force --allow-principal User:validator --operation Write --topic deployq.events
ev=$(wait_validated "$id") || exit 1
assert_eq "$(schema_check <<<"$ev")" 1 "deploy.validated valid against schemas/"

# Where the request is: its partition and offset on deployq.requests (read as admin).
read -r part off < <(kcat_as admin -C -t deployq.requests -o beginning -e -q -f '%p %o %s\n' |
    grep -F "$id" | awk '{ print $1, $2 }') || fail "request $id not found on deployq.requests"
log "request $id is deployq.requests [$part] at $off"
# Committed past it (the offset is stored on the verdict's report and committed every few
# seconds): Kafka's own tool, as admin.
end=$((SECONDS + 60))
until c=$(committed_offset deployq-validator deployq.requests "$part") && [ "$c" != - ] && [ "$c" -gt "$off" ]; do
    [ $SECONDS -lt $end ] || fail "group deployq-validator committed $c on deployq.requests [$part], not past $off"
    sleep 1
done
log "group deployq-validator committed $c on deployq.requests [$part]"

# Exactly one event for the deployment, and it is the verdict: the failed attempts left
# nothing, and the request was never taken for a replay of itself.
evs=$(secure_events | jq -c --arg id "$id" 'select(.deployment_id == $id)')
assert_eq "$(wc -l <<<"$evs")" 1 "events for $id"
assert_eq "$(jq -r .type <<<"$evs")" deploy.validated "the verdict for $id"
grep -q replayed_nonce "$T/validator.log" && fail "the validator took the redelivered request for a replay: $(grep replayed_nonce "$T/validator.log" | head -n 1)"

# ---- and it goes on ----
id2=$(ci_submit --service api --env staging --version v2 --timeout 20 2>"$T/submit-2.log") ||
    fail "second submit failed: $(cat "$T/submit-2.log")"
wait_validated "$id2" >/dev/null
alive "$VALIDATOR_PID" || fail "the validator is not running"

secure_kafka_finish
echo "ok"
