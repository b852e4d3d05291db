#!/usr/bin/env bash
# Authenticated transport on a real Apache Kafka: one broker of its own whose only client
# listener is SASL_SSL, with ACLs (scripts/kafka.sh start --secure). The right credentials
# carry a request end to end (CI submits, the validator validates); a wrong password,
# plaintext against the TLS listener and a wrong CA are each refused within --timeout,
# with the cause on stderr; the ACLs keep every principal to its own topics (the CI
# principal cannot write deployq.events); the SASL passwords, given through ${ENV} in the
# configuration, appear in no log and no event.
#
# Runs the same whatever DEPLOYQ_TEST_BROKERS says (the secure broker is always its own);
# skipped (77) where Java is missing.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-security.sh"

start_secure_kafka
start_redis
write_config
export DQ_KAFKA_PW_ci DQ_KAFKA_PW_validator
DQ_KAFKA_PW_ci=$(kafka_password ci)
DQ_KAFKA_PW_validator=$(kafka_password validator)
as_user ci "$T/ci.yaml"
as_user validator "$T/validator.yaml"
grep -q 'DQ_KAFKA_PW_ci' "$T/ci.yaml" || fail "ci.yaml not written as intended"

# ---- the right credentials: end to end ----
"$VALIDATOR" --config "$T/validator.yaml" --log-level debug >"$T/validator-a.log" 2>&1 &
VALIDATOR_PID=$!
PIDS+=("$VALIDATOR_PID")
ci_submit() {
    "$DEPLOYQ" submit --config "$T/ci.yaml" --key "$T/ci.key" --key-id ci-test "$@"
}
id=$(ci_submit --service api --env staging --version v1 --timeout 20 2>"$T/submit-ok.log") ||
    fail "submit with the right credentials failed: $(cat "$T/submit-ok.log")"
end=$((SECONDS + 60))
until ev=$(secure_events | jq -c --arg id "$id" 'select(.deployment_id == $id and .type == "deploy.validated")' | head -n1) && [ -n "$ev" ]; do
    [ $SECONDS -lt $end ] || fail "no deploy.validated for $id over SASL_SSL"
    alive "$VALIDATOR_PID" || fail "the validator died"
    sleep 0.5
done
assert_eq "$(schema_check <<<"$ev")" 1 "deploy.validated valid against schemas/"
log "end to end over SASL_SSL as ci -> validator: $(jq -r .type <<<"$ev")"

# ---- refusals: exit 1 within the timeout, the cause on stderr ----
# expect_refused NAME CAUSE_REGEX [submit args...]
expect_refused() {
    local name=$1 cause=$2 t0=$SECONDS rc=0
    shift 2
    ci_submit --service api --env staging --version v1 --timeout 5 "$@" \
        >"$T/submit-$name.out" 2>"$T/submit-$name.log" || rc=$?
    assert_eq "$rc" 1 "$name: exit status"
    [ $((SECONDS - t0)) -le 12 ] || fail "$name: took $((SECONDS - t0)) s with --timeout 5"
    [ ! -s "$T/submit-$name.out" ] || fail "$name: printed a deployment id: $(cat "$T/submit-$name.out")"
    # One line, and it names the cause (librdkafka's last error is quoted in it).
    assert_eq "$(wc -l <"$T/submit-$name.log")" 1 "$name: lines on stderr"
    grep -qE "${LAST_LINE:-^deployq: submit: broker $BROKERS unreachable after 5 s \(last error: }" "$T/submit-$name.log" ||
        fail "$name: not the one-line error: $(cat "$T/submit-$name.log")"
    grep -qE "$cause" "$T/submit-$name.log" || fail "$name: the error line does not name the cause /$cause/"
    log "$name refused: $(grep -oE "$cause" "$T/submit-$name.log" | head -n1)"
}
DQ_KAFKA_PW_ci=wrong-password expect_refused wrong-password 'SASL authentication error: Authentication failed: Invalid username or password'
DQ_KAFKA_PW_ci=$(kafka_password ci)
expect_refused plaintext 'incorrect security.protocol configuration \(connecting to a SSL listener\?\)' \
    -X security.protocol=PLAINTEXT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$T/other-ca.key" \
    -out "$T/other-ca.pem" -days 1 -subj "/CN=some other CA" 2>/dev/null || fail "openssl"
expect_refused wrong-ca 'SSL handshake failed: .*certificate verify failed' -X ssl.ca.location="$T/other-ca.pem"
# The validator's own user gets in but may not write deployq.requests: refused at once.
DQ_KAFKA_PW_ci=$(kafka_password validator) \
    LAST_LINE='^deployq: submit: kafka: delivery to deployq.requests failed: Broker: Topic authorization failed$' \
    expect_refused validator-as-ci 'Topic authorization failed' -X sasl.username=validator

# SCRAM-SHA-512: the users exist (the Java admin CLIs logged in with SCRAM to create the
# topics and ACLs), but librdkafka before 2.6.1 cannot finish a SCRAM exchange with
# Kafka 4, which is why deployq's configuration uses PLAIN inside TLS. Reported, not
# asserted: it turns true by itself when the library is upgraded.
if ci_submit --service api --env staging --version v1 --timeout 5 -X sasl.mechanisms=SCRAM-SHA-512 \
    >/dev/null 2>"$T/submit-scram.log"; then
    log "note: SCRAM-SHA-512 works with this librdkafka ($(kcat -V 2>&1 | grep -o 'librdkafka version [0-9.]*')): docs/operations.md can recommend it"
else
    log "note: SCRAM-SHA-512 refused with this librdkafka, as documented (PLAIN inside TLS is used)"
fi

# ---- ACLs: each principal only what it needs ----
# expect_denied NAME PRINCIPAL TOPIC: a produce as PRINCIPAL to TOPIC fails for lack of rights.
expect_denied() {
    local out
    out=$(printf 'x' | kcat_as "$2" -P -t "$3" 2>&1) && fail "$1: $2 could write $3"
    grep -q 'Topic authorization failed' <<<"$out" || fail "$1: $2 writing $3 failed, but not for authorization: $out"
    log "$1: $2 may not write $3 (Topic authorization failed)"
}
expect_denied "CI writes events" ci deployq.events
expect_denied "CI writes dead letters" ci deployq.dead
expect_denied "validator writes requests" validator deployq.requests
expect_denied "registry writes events" registry deployq.events
out=$(kcat_as ci -C -t deployq.requests -o beginning -e -q 2>&1) && fail "ci could read deployq.requests"
grep -q 'Topic authorization failed\|TOPIC_AUTHORIZATION' <<<"$out" || fail "ci reading deployq.requests failed, but not for authorization: $out"
log "ci may not read deployq.requests"
# Positive controls: the same client and path succeed where the ACLs allow.
printf 'x' | kcat_as executor -P -t deployq.dead 2>"$T/kcat-executor.log" ||
    fail "executor could not write deployq.dead: $(cat "$T/kcat-executor.log")"
# Nobody outside the user table gets in at all.
out=$(printf 'x' | timeout 30 kcat -b "$BROKERS" -F "$KDIR/client/ci.kcat" -X sasl.username=mallory -P -t deployq.requests 2>&1) &&
    fail "an unknown user could write deployq.requests"

# After all the refusals, the right credentials still work (nothing got locked out).
id2=$(ci_submit --service api --env staging --version v2 --timeout 20 2>>"$T/submit-ok.log") || fail "second submit failed"
end=$((SECONDS + 60))
until secure_events | jq -e --arg id "$id2" 'select(.deployment_id == $id and .type == "deploy.validated")' >/dev/null; do
    [ $SECONDS -lt $end ] || fail "no deploy.validated for the second request"
    sleep 0.5
done

# ---- the passwords never leak ----
secure_events >"$T/events.jsonl"
for user in ci validator admin; do
    pw=$(kafka_password "$user")
    hits=$(grep -l -F "$pw" "$T"/*.log "$T"/*.jsonl "$T"/*.out 2>/dev/null || true)
    [ -z "$hits" ] || fail "the SASL password of $user found in: $hits"
done
grep -q -F "$DQ_KAFKA_PW_validator" <(env) || fail "canary check is vacuous: password not in the environment"
kill -TERM "$VALIDATOR_PID"
stop_secure_kafka
echo "ok"
