# shellcheck shell=bash disable=SC2034 # variables for the sourcing test
# helpers-security.sh - for the authenticated-transport and key tests (06xx), sourced
# after helpers.sh.
#
# start_secure_kafka gives a test its own Apache Kafka whose only client listener is
# SASL_SSL, with ACLs (scripts/kafka.sh start --secure: a CA and broker certificate made
# with openssl, one user per role, the ACL table of docs/operations.md). A test that needs
# it exits 77 (skipped) where Java is missing, since then no real Kafka can run at all.
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
    log "secure Kafka (SASL_SSL + ACLs) at $BROKERS, up in $((SECONDS - t0)) s"
}

stop_secure_kafka() { "$KAFKA_SH" stop --dir "$KDIR" 2>/dev/null || true; }

kafka_password() { cat "$KDIR/client/$1.password"; }

# secure_kafka_yaml USER PASSWORD_VAR: the kafka: block of a configuration that logs in as
# USER, with the password taken from the environment variable PASSWORD_VAR at load time.
secure_kafka_yaml() {
    cat <<YAML
kafka:
  bootstrap.servers: "$BROKERS"
  security.protocol: SASL_SSL
  sasl.mechanisms: PLAIN
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

# kcat_as USER ARGS...: kcat logged in as USER (PLAIN inside TLS, see scripts/kafka.sh),
# given 30 s at most.
kcat_as() {
    local user=$1
    shift
    timeout 30 kcat -b "$BROKERS" -F "$KDIR/client/$user.kcat" "$@"
}

# events(), as helpers.sh has it, but read as admin over SASL_SSL.
secure_events() {
    kcat_as admin -C -t "$TOPIC_EVENTS" -o beginning -e -q -f '%s\n' 2>/dev/null || true
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
