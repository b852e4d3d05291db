# shellcheck shell=bash disable=SC2034 # variables for the sourcing test
# helpers-security.sh - for the authenticated-transport and key tests (06xx), sourced
# after helpers.sh.
#
# start_secure_kafka gives a test its own Apache Kafka whose only client listener is
# SASL_SSL, with ACLs (scripts/kafka.sh start --secure: a CA and broker certificate made
# with openssl, one user per role, the ACL table of docs/operations.md), of the version in
# KAFKA_VERSION. A test that needs it exits 77 (skipped) where Java is missing, since then
# no real Kafka can run at all. secure_kafka_checks and secure_kafka_finish are the checks
# such a broker must pass, shared by 0601 (Kafka 4.1.1, PLAIN inside TLS) and 0604
# (Kafka 3.9.1, SCRAM-SHA-512 inside TLS).
#
# start_acl_redis gives it a redis-server whose `default` user is off and which has one ACL
# user per role (the lines of docs/operations.md, "Redis ACLs").

KAFKA_SH="$DEPLOYQ_SOURCE/scripts/kafka.sh"

need_java_or_skip() {
    if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
        echo "# $TEST_NAME: skipped: java and mvn are needed to run a real Kafka (scripts/install-deps.sh --with-java)" >&2
        exit 77
    fi
}

# start_secure_kafka: sets BROKERS, KDIR (the broker's dir: KDIR/tls/ca.pem,
# KDIR/client/<user>.password|.kcat), BROKER_KIND=secure and the default topic names
# (the ACLs name them literally).
start_secure_kafka() {
    need_java_or_skip
    KDIR="$T/kafka"
    local t0=$SECONDS
    BROKERS=$("$KAFKA_SH" start --secure --dir "$KDIR" 2>"$T/kafka-start.txt") ||
        { cat "$T/kafka-start.txt" >&2; fail "the secure Kafka did not start"; }
    PIDS+=("$(cat "$KDIR/kafka.pid")")
    BROKER_KIND=secure
    TOPIC_REQUESTS=deployq.requests
    TOPIC_EVENTS=deployq.events
    TOPIC_DEAD=deployq.dead
    GROUP_PREFIX=deployq # the ACLs name the groups literally too
    log "secure Kafka (SASL_SSL + ACLs) at $BROKERS, up in $((SECONDS - t0)) s"
}

stop_secure_kafka() { "$KAFKA_SH" stop --dir "$KDIR" 2>/dev/null || true; }

kafka_password() { cat "$KDIR/client/$1.password"; }

# secure_kafka_yaml USER PASSWORD_VAR: the kafka: block of a configuration that logs in as
# USER with SASL_MECHANISM, the password taken from the environment variable PASSWORD_VAR
# at load time.
secure_kafka_yaml() {
    cat <<YAML
kafka:
  bootstrap.servers: "$BROKERS"
  security.protocol: SASL_SSL
  sasl.mechanisms: ${SASL_MECHANISM:?SASL_MECHANISM is not set}
  sasl.username: "$1"
  sasl.password: "\${$2}"
  ssl.ca.location: "$KDIR/tls/ca.pem"
  session.timeout.ms: "6000"
  heartbeat.interval.ms: "500"
YAML
}

# as_user USER CONFIG_OUT: CONFIG_OUT is $CONFIG (from write_config) with its kafka: block
# replaced by one that logs in as USER with the password in DQ_KAFKA_PW_<USER>.
as_user() {
    local user=$1 out=$2
    { secure_kafka_yaml "$user" "DQ_KAFKA_PW_$user"; sed '/^kafka:$/,/^[^ ]/{/^kafka:$/d;/^  /d}' "$CONFIG"; } >"$out"
}

# kcat_as USER ARGS...: kcat logged in as USER (with the mechanism scripts/kafka.sh chose
# for this Kafka version: PLAIN on 4.x, SCRAM-SHA-512 on 3.x), given 30 s at most.
kcat_as() {
    local user=$1
    shift
    timeout 30 kcat -b "$BROKERS" -F "$KDIR/client/$user.kcat" "$@"
}

# events(), as helpers.sh has it, but read as admin over SASL_SSL.
secure_events() {
    kcat_as admin -C -t "$TOPIC_EVENTS" -o beginning -e -q -f '%s\n' 2>/dev/null || true
}

# ---- the checks every secure Kafka must pass (0601, 0604) ----

ci_submit() {
    "$DEPLOYQ" submit --config "$T/ci.yaml" --key "$T/ci.key" --key-id ci-test "$@"
}

# wait_validated ID: fail unless deploy.validated for ID shows up on deployq.events within
# 60 s; prints the event.
wait_validated() {
    local id=$1 ev end=$((SECONDS + 60))
    until ev=$(secure_events | jq -c --arg id "$id" 'select(.deployment_id == $id and .type == "deploy.validated")' | head -n1) && [ -n "$ev" ]; do
        [ $SECONDS -lt $end ] || fail "no deploy.validated for $id over SASL_SSL ($SASL_MECHANISM)"
        alive "$VALIDATOR_PID" || fail "the validator died"
        sleep 0.5
    done
    echo "$ev"
}

# expect_refused NAME CAUSE_REGEX [submit args...]: a submit as ci exits 1 within its
# --timeout 5, prints no id, and says why on one line of stderr (LAST_LINE: the regex that
# line must match, by default the "unreachable" line with librdkafka's last error).
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

# What the broker answers a wrong password, as librdkafka reports it, per mechanism.
wrong_password_cause() {
    case $1 in
    PLAIN) echo 'SASL authentication error: Authentication failed: Invalid username or password' ;;
    SCRAM-*) echo "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism $1" ;;
    *) fail "wrong_password_cause: no expected error for mechanism $1" ;;
    esac
}

# secure_kafka_checks MECHANISM: with the secure Kafka of KAFKA_VERSION (started here),
# deployq's own processes logging in with MECHANISM inside TLS:
#   - the right credentials carry a request end to end (CI submits, the validator
#     validates, the event is valid against schemas/);
#   - a wrong password, plaintext against the TLS listener, a wrong CA and another user's
#     rights are each refused within --timeout, with the cause on one line of stderr;
#   - the ACLs keep every principal to its own topics (CI cannot write deployq.events);
#   - after all that, the right credentials still work.
# Leaves the validator (VALIDATOR_PID) and the broker running for the caller's own checks;
# secure_kafka_finish then checks no password leaked and stops them.
# start_secure_stack: the secure Kafka, Redis, and $T/ci.yaml and $T/validator.yaml, each
# logging in as that principal (passwords through ${DQ_KAFKA_PW_<user>}). SASL_MECHANISM
# must be set.
start_secure_stack() {
    start_secure_kafka
    start_redis
    write_config
    export DQ_KAFKA_PW_ci DQ_KAFKA_PW_validator
    DQ_KAFKA_PW_ci=$(kafka_password ci)
    DQ_KAFKA_PW_validator=$(kafka_password validator)
    as_user ci "$T/ci.yaml"
    as_user validator "$T/validator.yaml"
}

secure_kafka_checks() {
    SASL_MECHANISM=$1
    start_secure_stack
    # kcat_as (the ACL checks, reading events) uses the kcat files of kafka.sh: they must
    # log in the way this test is about.
    assert_eq "$(sed -n 's/^sasl\.mechanisms=//p' "$KDIR/client/ci.kcat")" "$SASL_MECHANISM" \
        "the mechanism of kafka.sh's kcat files for Kafka $KAFKA_VERSION"
    grep -q 'DQ_KAFKA_PW_ci' "$T/ci.yaml" || fail "ci.yaml not written as intended"
    grep -q "sasl.mechanisms: $SASL_MECHANISM\$" "$T/ci.yaml" || fail "ci.yaml does not use $SASL_MECHANISM"

    # ---- the right credentials: end to end ----
    "$VALIDATOR" --config "$T/validator.yaml" --log-level debug >"$T/validator-a.log" 2>&1 &
    VALIDATOR_PID=$!
    PIDS+=("$VALIDATOR_PID")
    # Submit once it is consuming: a request signed before the validator's start can be
    # refused as older than its replay memory (stale), which is not what this test is about.
    wait_for 60 grep -q 'consuming deployq.requests' "$T/validator-a.log" ||
        fail "the validator did not start consuming over SASL_SSL ($SASL_MECHANISM)"
    local id ev
    id=$(ci_submit --service api --env staging --version v1 --timeout 20 2>"$T/submit-ok.log") ||
        fail "submit with the right credentials ($SASL_MECHANISM) failed: $(cat "$T/submit-ok.log")"
    ev=$(wait_validated "$id") || exit 1
    assert_eq "$(schema_check <<<"$ev")" 1 "deploy.validated valid against schemas/"
    log "end to end over SASL_SSL ($SASL_MECHANISM, Kafka $KAFKA_VERSION) as ci -> validator: $(jq -r .type <<<"$ev")"

    # ---- refusals: exit 1 within the timeout, the cause on stderr ----
    DQ_KAFKA_PW_ci=wrong-password expect_refused wrong-password "$(wrong_password_cause "$SASL_MECHANISM")"
    DQ_KAFKA_PW_ci=$(kafka_password ci)
    expect_refused plaintext 'incorrect security.protocol configuration \(connecting to a SSL listener\?\)' \
        -X security.protocol=PLAINTEXT
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$T/other-ca.key" \
        -out "$T/other-ca.pem" -days 1 -subj "/CN=some other CA" 2>/dev/null || fail "openssl"
    expect_refused wrong-ca 'certificate verify failed' -X ssl.ca.location="$T/other-ca.pem"
    # The validator's own user gets in but may not write deployq.requests: refused at once.
    DQ_KAFKA_PW_ci=$(kafka_password validator) \
        LAST_LINE='^deployq: submit: kafka: delivery to deployq.requests failed: Broker: Topic authorization failed$' \
        expect_refused validator-as-ci 'Topic authorization failed' -X sasl.username=validator

    # ---- ACLs: each principal only what it needs ----
    expect_denied "CI writes events" ci deployq.events
    expect_denied "CI writes dead letters" ci deployq.dead
    expect_denied "validator writes requests" validator deployq.requests
    expect_denied "registry writes events" registry deployq.events
    local out
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
    id=$(ci_submit --service api --env staging --version v2 --timeout 20 2>>"$T/submit-ok.log") || fail "second submit failed"
    wait_validated "$id" >/dev/null
}

# expect_denied NAME PRINCIPAL TOPIC: a produce as PRINCIPAL to TOPIC fails for lack of rights.
expect_denied() {
    local out
    out=$(printf 'x' | kcat_as "$2" -P -t "$3" 2>&1) && fail "$1: $2 could write $3"
    grep -q 'Topic authorization failed' <<<"$out" || fail "$1: $2 writing $3 failed, but not for authorization: $out"
    log "$1: $2 may not write $3 (Topic authorization failed)"
}

# secure_kafka_finish: no SASL password in any log, event or output of the test, then
# stop the validator and the broker.
secure_kafka_finish() {
    local user pw hits
    secure_events >"$T/events.jsonl"
    for user in ci validator admin; do
        pw=$(kafka_password "$user")
        hits=$(grep -l -F "$pw" "$T"/*.log "$T"/*.jsonl "$T"/*.out 2>/dev/null || true)
        [ -z "$hits" ] || fail "the SASL password of $user found in: $hits"
    done
    grep -q -F "$DQ_KAFKA_PW_validator" <(env) || fail "canary check is vacuous: password not in the environment"
    kill -TERM "$VALIDATOR_PID"
    stop_secure_kafka
}

# ---- Redis with ACL users ----

# The ACL lines of docs/operations.md ("Redis ACLs"); the passwords are per test.
write_redis_acl() {
    local file=$1
    cat >"$file" <<ACL
user default off
user admin on >$REDIS_ADMIN_PW ~* &* +@all
user validator on >$REDIS_VALIDATOR_PW resetkeys ~deployq:* resetchannels -@all +auth +hello +ping +select +get +set +exists +del
user executor on >$REDIS_EXECUTOR_PW resetkeys ~deployq:* resetchannels -@all +auth +hello +ping +select +get +set +del +incr +pexpire +eval
user monitor on >$REDIS_MONITOR_PW resetkeys ~deployq:* resetchannels -@all +auth +hello +ping +select +get +set +del +pexpire +eval +hget +hset +hmset +zadd +zrem +zscore +zrange +zrangebyscore
user rollback on >$REDIS_ROLLBACK_PW resetkeys ~deployq:* resetchannels -@all +auth +hello +ping +select +get +set +del +incr +pexpire +eval +hget +hset +expire +lpush +ltrim +lrange
ACL
}

# start_acl_redis: a redis-server with write_redis_acl's users and `default` off; sets
# REDIS_PORT, REDIS_URL (as validator, password from ${DQ_REDIS_PW_VALIDATOR}) and
# REDIS_ADMIN (redis-cli arguments for the admin user).
start_acl_redis() {
    REDIS_ADMIN_PW=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    REDIS_VALIDATOR_PW=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    REDIS_EXECUTOR_PW=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    REDIS_MONITOR_PW=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    REDIS_ROLLBACK_PW=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    export DQ_REDIS_PW_VALIDATOR=$REDIS_VALIDATOR_PW
    (umask 077 && write_redis_acl "$T/users.acl")
    REDIS_EXTRA_ARGS="--aclfile $T/users.acl"
    REDIS_CLI_AUTH="--user admin --pass $REDIS_ADMIN_PW --no-auth-warning"
    start_redis
    REDIS_ADMIN=(-p "$REDIS_PORT" --user admin --pass "$REDIS_ADMIN_PW" --no-auth-warning)
    REDIS_URL='redis://validator:${DQ_REDIS_PW_VALIDATOR}@127.0.0.1:'"$REDIS_PORT"
}

# redis_as USER PASSWORD COMMAND...: one command as USER; prints the reply (errors too).
redis_as() {
    local user=$1 pw=$2
    shift 2
    redis-cli -p "$REDIS_PORT" --user "$user" --pass "$pw" --no-auth-warning "$@" 2>&1
}

# ---- changing the ACLs of a running secure Kafka ----

# kafka_acl LOG ARGS...: Kafka's AclCommand (org.apache.kafka.tools, as scripts/kafka.sh
# runs it on 4.x; kafka.admin on 3.x) as admin, e.g. `kafka_acl x.log --remove --force
# --allow-principal User:validator --operation Write --topic deployq.events`. A JVM: ~3-5 s.
kafka_acl() {
    local log=$1 class=org.apache.kafka.tools.AclCommand
    shift
    case $KAFKA_VERSION in [0-3].*) class=kafka.admin.AclCommand ;; esac
    kafka_java "$class" "$log" --bootstrap-server "$BROKERS" --command-config "$KDIR/client/admin.properties" "$@" ||
        fail "AclCommand $* failed: $(grep -v ' INFO ' "$log" | tail -n 5)"
}

# kafka_java CLASS LOG ARGS...: one of Kafka's Java CLIs from the broker's own jars, its
# output in LOG.
kafka_java() {
    local class=$1 log=$2
    shift 2
    java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$DEPLOYQ_SOURCE/scripts/kafka/log4j2.xml" \
        -Dlog4j2.level=warn -cp "${DEPLOYQ_CACHE:-$HOME/.cache/deployq}/kafka-$KAFKA_VERSION/libs/*" \
        "$class" "$@" >"$log" 2>&1
}

# committed_offset GROUP TOPIC PARTITION: the offset GROUP has committed on that partition
# (the next one it will read), as Kafka's own ConsumerGroupCommand reads it as admin; "-"
# when none.
committed_offset() {
    local out="$T/groups-$1.out"
    kafka_java org.apache.kafka.tools.consumer.group.ConsumerGroupCommand "$out" --bootstrap-server "$BROKERS" \
        --command-config "$KDIR/client/admin.properties" --describe --offsets --group "$1" ||
        fail "ConsumerGroupCommand --describe --group $1 failed: $(tail -n 5 "$out")"
    awk -v t="$2" -v p="$3" '$2 == t && $3 == p { print $4; found = 1 } END { if (!found) print "-" }' "$out"
}
