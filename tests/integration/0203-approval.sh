#!/usr/bin/env bash
# approval: required. A valid production request waits (deploy.awaiting_approval, parked
# in Redis, no deploy.validated); `deployq approve` signed with an approver key lets it
# proceed (deploy.validated with approved_by); `deployq deny --reason` rejects it (denied);
# an approval signed with a CI key, with a key that does not match the configured one, or
# not signed at all rejects it (approval_unsigned) and never lets it through. A second
# decision after the first changes nothing.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-gates.sh"

start_redis
start_broker
write_config '  vault:
    environments:
      production:
        approval: required
        approval_timeout: 1h'
start_validator a

# waiting ID: submit vault/production VERSION and wait for awaiting_approval.
waiting() {
    local id
    id=$(submit --service vault --env production --version "$1" --requested-by ci-bot) || fail "submit failed"
    wait_event "$id" deploy.awaiting_approval 60 >"$T/awaiting.json" || fail "no deploy.awaiting_approval for $id"
    printf '%s\n' "$id"
}

# 1. Waits; approve -> validated with approved_by.
id=$(waiting v1)
ev=$(cat "$T/awaiting.json")
assert_eq "$(jq -r .data.approval_role <<<"$ev")" approver approval_role
assert_eq "$(jq -r .data.requested_by <<<"$ev")" ci-bot requested_by
redis_has "deployq:pending:$id" || fail "pending record missing"
ttl=$(redis-cli -p "$REDIS_PORT" ttl "deployq:pending:$id")
[ "$ttl" -gt 3500 ] && [ "$ttl" -le 3600 ] || fail "pending ttl $ttl, expected ~3600 (approval_timeout: 1h)"
sleep 1
[ -z "$(events_for "$id" | jq -c 'select(.type == "deploy.validated")')" ] || fail "validated before approval"
out=$(approve_as "$T/approver.key" approver-test "$id" --approver alice) || fail "approve failed"
assert_eq "$out" "approval $id (signed by approver-test)" "approve output"
ev=$(wait_event "$id" deploy.validated 60) || fail "no deploy.validated after approval"
assert_eq "$(jq -r .data.approved_by <<<"$ev")" approver-test approved_by
assert_eq "$(jq -r .data.key_id <<<"$ev")" ci-test "key_id of the request"
assert_eq "$(jq -r .version <<<"$ev")" v1 version
wait_for 10 bash -c "[ \"\$(redis-cli -p $REDIS_PORT exists deployq:pending:$id)\" = 0 ]" || fail "pending not removed"

# A second decision (a deny after the approval) changes nothing.
approve_as "$T/approver.key" approver-test "$id" >/dev/null || fail "approve failed"
"$DEPLOYQ" deny --config "$CONFIG" --key "$T/approver.key" --key-id approver-test "$id" --reason late >/dev/null ||
    fail "deny failed"
wait_for 30 grep -q "nothing pending" "$T/validator-a.log" || fail "a late decision was not skipped"
assert_eq "$(events_for "$id" | jq -r .type | sort | tr '\n' ' ')" "deploy.awaiting_approval deploy.validated " "events of $id"

# 2. deny --reason -> rejected, code denied.
"$DEPLOYQ" deny --config "$CONFIG" --key "$T/approver.key" --key-id approver-test "$(new_uuid)" 2>/dev/null &&
    fail "deny without --reason accepted"
id=$(waiting v2)
"$DEPLOYQ" deny --config "$CONFIG" --key "$T/approver.key" --key-id approver-test "$id" --reason "not during the sale" >/dev/null ||
    fail "deny failed"
ev=$(wait_event "$id" deploy.rejected 60) || fail "no deploy.rejected after deny"
assert_eq "$(reason_codes "$ev")" denied "deny code"
assert_eq "$(jq -r '.data.reasons[0].message' <<<"$ev")" "denied by approver-test: not during the sale" "deny message"

# 3. Signed with the CI key -> approval_unsigned.
id=$(waiting v3)
approve_as "$T/ci.key" ci-test "$id" >/dev/null || fail "approve (ci key) not sent"
ev=$(wait_event "$id" deploy.rejected 60) || fail "no deploy.rejected for a CI-signed approval"
assert_eq "$(reason_codes "$ev")" approval_unsigned "ci key code"
assert_eq "$(jq -r '.data.reasons[0].message' <<<"$ev")" \
    "key id 'ci-test' has role ci; approvals need an approver key" "ci key message"

# 4. A key claiming to be approver-test that is not the configured one -> approval_unsigned.
id=$(waiting v4)
"$DEPLOYQ" keygen --out "$T/impostor.key" --id approver-test --role approver >/dev/null
approve_as "$T/impostor.key" approver-test "$id" >/dev/null || fail "approve (impostor) not sent"
ev=$(wait_event "$id" deploy.rejected 60) || fail "no deploy.rejected for a wrongly signed approval"
assert_eq "$(jq -r '.data.reasons[0].message' <<<"$ev")" \
    "signature does not match the approval (key approver-test)" "impostor message"

# 5. Not signed at all (the signature stripped) -> approval_unsigned.
id=$(waiting v5)
msg=$(approve_as "$T/approver.key" approver-test "$id" --dry-run | jq -c 'del(.signature)') || fail "dry-run failed"
produce_raw "$msg" "$id" || fail "kcat could not send"
ev=$(wait_event "$id" deploy.rejected 60) || fail "no deploy.rejected for an unsigned approval"
assert_eq "$(reason_codes "$ev")" approval_unsigned "unsigned code"
assert_eq "$(jq -r '.data.reasons[0].message' <<<"$ev")" \
    "the approval is not signed (no signature or key_id)" "unsigned message"
[ -z "$(events_for "$id" | jq -c 'select(.type == "deploy.validated")')" ] || fail "an unsigned approval let a deploy through"

events | schema_check >/dev/null || fail "events not valid against schemas/"
echo ok
