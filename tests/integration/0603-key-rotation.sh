#!/usr/bin/env bash
# Request keys under rotation: two CI keys valid at once are both accepted, a retired one
# is refused (retired_key); one byte changed in a signed request, or in its signature, is
# refused (bad_signature). Nonces and a Redis restart: with a Redis that persists (AOF,
# fsync always) a replay after a crash and restart is refused (replayed_nonce); with a
# Redis that does not, a replay inside the issued_at window is refused (stale: signed
# before the replay memory began), and a request signed after the restart is validated
# (docs/operations.md, "Nonces and Redis restarts").
. "$(dirname "$0")/helpers.sh"

REDIS_EXTRA_ARGS="--appendonly yes --appendfsync always"
start_redis
start_broker
write_config
# A second CI key, valid at the same time as ci-test (the rotation's overlap).
"$DEPLOYQ" keygen --out "$T/ci-next.key" --id ci-next >/dev/null
sed -i "s|^keys:\$|keys:\n  - id: ci-next\n    public_key: \"$(pubkey "$T/ci-next.key")\"\n    role: ci|" "$CONFIG"
grep -q 'id: ci-next' "$CONFIG" || fail "config not written as intended"
start_validator a

# expect_reasons NAME DEPLOYMENT_ID CODES: its deploy.rejected has exactly CODES (sorted, comma-joined).
expect_reasons() {
    local ev
    ev=$(wait_event "$2" deploy.rejected 30) || fail "$1: no deploy.rejected for $2"
    assert_eq "$(jq -r '[.data.reasons[].code] | sort | join(",")' <<<"$ev")" "$3" "$1: reasons"
    assert_eq "$(schema_check <<<"$ev")" 1 "$1: rejection valid against schemas/"
    log "$1 -> $3"
}
expect_validated() {
    local ev
    ev=$(wait_event "$2" deploy.validated 30) || fail "$1: $2 not validated"
    assert_eq "$(jq -r .data.key_id <<<"$ev")" "$3" "$1: key_id of the verdict"
    log "$1 -> validated with $3"
}

# ---- several keys valid at once, one retired ----
id=$(submit --service api --env staging --version v1) || fail "submit (ci-test)"
expect_validated "old CI key" "$id" ci-test
id=$("$DEPLOYQ" submit --config "$CONFIG" --key "$T/ci-next.key" --key-id ci-next \
    --service api --env staging --version v2) || fail "submit (ci-next)"
expect_validated "new CI key" "$id" ci-next
msg=$(KEY=$T/retired.key KEY_ID=ci-retired signed --service api --env staging --version v3)
produce_raw "$msg" api/staging
expect_reasons "retired key" "$(id_of "$msg")" retired_key
# The new key under the old key's id: the id picks the key, so this is a forgery.
msg=$(KEY=$T/ci-next.key KEY_ID=ci-test signed --service api --env staging --version v3)
produce_raw "$msg" api/staging
expect_reasons "right key, wrong key id" "$(id_of "$msg")" bad_signature

# ---- one byte changed ----
msg=$(signed --service api --env staging --version v4)
# One byte of the signed request text: the version's last character, 4 -> 5.
altered=$(jq -c '.request |= sub("\"version\":\"v4\""; "\"version\":\"v5\"")' <<<"$msg")
[ "$(jq -r .request <<<"$altered" | cmp -l - <(jq -r .request <<<"$msg") | wc -l)" = 1 ] ||
    fail "the request was not altered by exactly one byte"
produce_raw "$altered" api/staging
expect_reasons "one byte of the request" "$(id_of "$msg")" bad_signature
msg=$(signed --service api --env staging --version v4)
# One byte of the signature: its first base64 character (changes the first decoded byte).
sig=$(jq -r .signature <<<"$msg")
first=${sig:0:1}
if [ "$first" = A ]; then repl=B; else repl=A; fi
produce_raw "$(jq -c --arg s "$repl${sig:1}" '.signature = $s' <<<"$msg")" api/staging
expect_reasons "one byte of the signature" "$(id_of "$msg")" bad_signature

# ---- nonces across a Redis crash ----
msg=$(signed --service api --env staging --version v6)
id=$(id_of "$msg")
produce_raw "$msg" api/staging
wait_event "$id" deploy.validated 30 >/dev/null || fail "persisted: the original was not validated"
kill_redis # a crash; then the same port and dir
restart_redis --appendonly yes --appendfsync always
produce_raw "$msg" api/staging
expect_reasons "replay after a Redis crash (AOF, fsync always)" "$id" replayed_nonce

# A Redis without persistence forgets every nonce, and alone it would take a replay
# inside the issued_at window for a first sending. The validator sees that the replay
# memory is new (deployq:nonce-epoch is gone with the rest) and refuses what was signed
# before it began: stale, sign it again. Without that check this replay is validated a
# second time.
msg=$(signed --service api --env staging --version v7)
id=$(id_of "$msg")
produce_raw "$msg" api/staging
wait_event "$id" deploy.validated 30 >/dev/null || fail "volatile: the original was not validated"
epoch_before=$(redis-cli -p "$REDIS_PORT" get deployq:nonce-epoch)
[ -n "$epoch_before" ] || fail "no deployq:nonce-epoch in Redis"
kill_redis
restart_redis --appendonly no
assert_eq "$(redis-cli -p "$REDIS_PORT" dbsize)" 0 "keys in the restarted, volatile Redis"
produce_raw "$msg" api/staging
expect_reasons "replay inside the window after Redis lost its nonces" "$id" stale
ev=$(wait_event "$id" deploy.rejected 30)
jq -r '.data.reasons[0].message' <<<"$ev" | grep -q 'before .*when the replay memory (Redis) began' ||
    fail "the rejection does not say why: $(jq -c .data.reasons <<<"$ev")"
epoch_after=$(redis-cli -p "$REDIS_PORT" get deployq:nonce-epoch)
[[ "$epoch_before" =~ ^[0-9]+\ fresh$ ]] || fail "replay memory at the start: '$epoch_before', not '<ms> fresh'"
[[ "$epoch_after" =~ ^[0-9]+\ reset$ ]] && [ "${epoch_after% *}" -gt "${epoch_before% *}" ] ||
    fail "the replay memory did not start again ($epoch_before -> $epoch_after)"
assert_eq "$(events_for "$id" | jq -r 'select(.type == "deploy.validated") | .id' | wc -l)" 1 \
    "deploy.validated events of the replayed request"
# What is signed after the memory began goes through.
id=$(submit --service api --env staging --version v8) || fail "submit after the restart"
expect_validated "signed after the volatile restart" "$id" ci-test

alive "$VALIDATOR_PID_a" || fail "the validator died"
echo "ok"
