#!/usr/bin/env bash
# Redis ACLs: the test server's `default` user is off and every role has its own ACL user
# limited to the deployq:* keys and the commands it issues (the lines of
# docs/operations.md, "Redis ACLs"). The validator works end to end as its user
# (redis://validator:${PASSWORD}@...), replay protection included; every worker user gets
# NOPERM for FLUSHALL, CONFIG, KEYS and keys outside deployq:*; the password never leaks.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-security.sh"

start_acl_redis
start_broker
write_config
grep -q 'DQ_REDIS_PW_VALIDATOR' "$CONFIG" || fail "config not written as intended"
start_validator a

# ---- the validator works as its ACL user ----
id=$(submit --service api --env staging --version v1) || fail "submit failed"
wait_event "$id" deploy.validated 60 >/dev/null || fail "not validated with the validator's ACL user"
msg=$(signed --service api --env staging --version v2)
rid=$(id_of "$msg")
produce_raw "$msg" api/staging
wait_event "$rid" deploy.validated 30 >/dev/null || fail "the original of the replay was not validated"
produce_raw "$msg" api/staging
ev=$(wait_event "$rid" deploy.rejected 30) || fail "the replay was not rejected"
assert_eq "$(reason_codes "$ev")" replayed_nonce "replay verdict"
nonces=$(redis-cli "${REDIS_ADMIN[@]}" --scan --pattern 'deployq:nonce:*' | wc -l)
[ "$nonces" -ge 2 ] || fail "expected the nonces in Redis under deployq:nonce:*, found $nonces"
log "validator as ACL user: validated, replay refused, $nonces nonces stored"

# ---- `default` is off ----
out=$(redis-cli -p "$REDIS_PORT" ping 2>&1)
grep -q 'NOAUTH' <<<"$out" || fail "an unauthenticated client got: $out"
out=$(redis_as default '' ping)
grep -qE 'WRONGPASS|NOAUTH|invalid username-password' <<<"$out" || fail "user default answered: $out"

# ---- least privilege, per worker user ----
# expect_noperm USER PASSWORD WHAT COMMAND...
expect_noperm() {
    local user=$1 pw=$2 what=$3 out
    shift 3
    out=$(redis_as "$user" "$pw" "$@")
    grep -q '^NOPERM' <<<"$out" || fail "$user: $what: expected NOPERM, got: $out"
}
for pair in "validator:$REDIS_VALIDATOR_PW" "executor:$REDIS_EXECUTOR_PW" \
    "monitor:$REDIS_MONITOR_PW" "rollback:$REDIS_ROLLBACK_PW"; do
    user=${pair%%:*}
    pw=${pair#*:}
    expect_noperm "$user" "$pw" FLUSHALL flushall
    expect_noperm "$user" "$pw" FLUSHDB flushdb
    expect_noperm "$user" "$pw" CONFIG config get '*'
    expect_noperm "$user" "$pw" "CONFIG SET" config set appendonly no
    expect_noperm "$user" "$pw" KEYS keys '*'
    expect_noperm "$user" "$pw" "foreign key read" get session:42
    expect_noperm "$user" "$pw" "foreign key write" set other-app:x 1
    expect_noperm "$user" "$pw" "ACL" acl list
    expect_noperm "$user" "$pw" "SHUTDOWN" shutdown nosave
    # Positive control: the same user and client reach their own keys.
    assert_eq "$(redis_as "$user" "$pw" set "deployq:acltest:$user" 1 ex 60)" OK "$user writes deployq:*"
    assert_eq "$(redis_as "$user" "$pw" get "deployq:acltest:$user")" 1 "$user reads deployq:*"
    log "$user: NOPERM for FLUSHALL, FLUSHDB, CONFIG, KEYS, ACL, SHUTDOWN and keys outside deployq:*"
done
# A command the validator never issues is refused to it even on its own keys.
expect_noperm validator "$REDIS_VALIDATOR_PW" "EVAL" eval 'return 1' 0
expect_noperm validator "$REDIS_VALIDATOR_PW" "ZADD" zadd deployq:z 1 a
alive "$REDIS_PID" || fail "redis-server died"

# ---- a wrong password is refused and logged without the password ----
DQ_REDIS_PW_VALIDATOR=wrong-password timeout 5 "$VALIDATOR" --config "$CONFIG" \
    >"$T/validator-wrongpw.log" 2>&1 || true
grep -qE 'AUTH failed|WRONGPASS' "$T/validator-wrongpw.log" || fail "the validator did not report the refused AUTH"

# After all that, requests still flow.
id=$(submit --service api --env staging --version v3)
wait_event "$id" deploy.validated 30 >/dev/null || fail "validator stopped validating"
events >"$T/events.jsonl"
for pw in "$REDIS_VALIDATOR_PW" "$REDIS_ADMIN_PW"; do
    hits=$(grep -l -F "$pw" "$T"/*.log "$T"/*.jsonl || true)
    [ -z "$hits" ] || fail "a Redis password found in: $hits"
done
echo "ok"
