#!/usr/bin/env bash
# scripts/kafka.sh - a real Apache Kafka (single node, KRaft) for tests and CI: 4.1.1 by
# default, or 3.9.1 (KAFKA_VERSION=3.9.1) where a SASL/SCRAM client on librdkafka < 2.6.1
# must be proven (see "Secure mode").
#
# The machines that build deployq reach package registries only, so Kafka is not the
# release tarball: its jars are resolved from Maven Central by Maven (scripts/kafka/pom.xml)
# into a cache, and the broker runs as `java -cp "libs/*" kafka.Kafka server.properties`,
# which is what bin/kafka-server-start.sh does.
#
#   kafka.sh fetch                        resolve the jars into the cache (no-op when cached)
#   kafka.sh start [--port P] [--dir D] [--secure]
#                                         format D, start the broker in the background, wait
#                                         until it answers a metadata request, print
#                                         "127.0.0.1:P" on stdout. --secure: the only
#                                         listener is SASL_SSL with ACLs; see "Secure mode"
#                                         below. A data dir keeps the Kafka version that
#                                         formatted it. Without --port, P and P+1 (the
#                                         controller) are drawn below the kernel's
#                                         ephemeral port range, where no outgoing
#                                         connection can take them first
#   kafka.sh stop [--dir D]               SIGTERM, SIGKILL after 20 s
#   kafka.sh status [--dir D]             print the address and exit 0 when running, else 1
#   kafka.sh topics --bootstrap B [--command-config F]
#                                         create deployq.requests, deployq.events (6
#                                         partitions) and deployq.dead (1); F: Java client
#                                         properties (D/client/admin.properties when secure)
#
# Secure mode (start --secure; a data dir stays in the mode it was formatted in):
#   D/tls/ca.pem, ca.key          a throw-away CA made with openssl
#   D/tls/broker.pem              the broker's key and certificate (127.0.0.1, localhost)
#   D/client/<user>.password      SCRAM-SHA-512 users admin (super user), ci, validator,
#                                 executor, monitor, rollback, registry (random passwords,
#                                 created at format time)
#   D/client/<user>.properties    Java client properties (AclCommand, TopicCommand, ...)
#   D/client/<user>.kcat          kcat -F file for that user, with the mechanism below
#   SASL mechanisms of the client listener, by Kafka version:
#     3.x  SCRAM-SHA-512 only; the kcat files use it. librdkafka 2.0.2 (Debian 12) can log
#          in: its SCRAM client-final-message repeats the client nonce (librdkafka bug,
#          fixed in 2.6.1 by PR #4895), and Kafka 3.9's ScramSaslServer accepts that,
#          since it only checks the nonce ends with the server's.
#     4.x  SCRAM-SHA-512 and PLAIN (same users and passwords); the kcat files use PLAIN
#          inside TLS, because Kafka 4 checks the nonce for equality and refuses it
#          ("Invalid client nonce in the final client message")
#          and so no librdkafka before 2.6.1 can do SCRAM with it.
#   The Java client properties use SCRAM-SHA-512 in both.
#   The topics are created and the ACL table of docs/operations.md ("Kafka security") is
#   applied before the address is printed.
#
# Environment:
#   KAFKA_VERSION    the org.apache.kafka:kafka_2.13 version (default 4.1.1; 3.9.1 is
#                    tested too, by tests/integration/0604-kafka-scram-kafka39.sh)
#   DEPLOYQ_CACHE    cache root (default ~/.cache/deployq); jars in kafka-<version>/libs
#   DEPLOYQ_KAFKA_DIR  default --dir (default ${TMPDIR:-/tmp}/deployq-kafka)
#   KAFKA_HEAP_OPTS  default -Xmx512m
#   KAFKA_START_TIMEOUT  seconds to wait for the broker (default 90)
#   MAVEN_ARGS       extra arguments for mvn (e.g. -o to stay offline)
#
# Three replicated brokers: scripts/kafka-cluster.sh (it shares scripts/kafka/common.sh).
#
# Everything but the address goes to stderr, so `B=$(scripts/kafka.sh start)` works.
set -euo pipefail

readonly PROG=kafka.sh
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
# shellcheck source=scripts/kafka/common.sh
. "$SCRIPT_DIR/kafka/common.sh"
readonly DEFAULT_DIR=${DEPLOYQ_KAFKA_DIR:-${TMPDIR:-/tmp}/deployq-kafka}

usage() {
    # The header: every comment line from line 2 to the first line of code.
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}

need_openssl() {
    command -v openssl >/dev/null 2>&1 ||
        die "openssl is missing (start --secure makes its certificates with it); install it: scripts/install-deps.sh"
}

# A free port P whose P+1 (the controller listener) is free too (pick_ports in
# kafka/common.sh: outside the kernel's ephemeral range).
pick_port() {
    pick_ports 2
}

# ---- secure mode ----

readonly SECURE_USERS="admin ci validator executor monitor rollback registry"

# The SASL mechanism of the kcat files (librdkafka clients) and whether the broker offers
# PLAIN at all; see "Secure mode" in the header. Only Kafka 4 needs PLAIN, and a 3.x broker
# that offers SCRAM alone proves a librdkafka client that gets in used SCRAM.
case $KAFKA_VERSION in
[0-3].*) readonly CLIENT_SASL=SCRAM-SHA-512 BROKER_SASL=SCRAM-SHA-512 ;;
*) readonly CLIENT_SASL=PLAIN BROKER_SASL=SCRAM-SHA-512,PLAIN ;;
esac

# The certificates: a CA, and a broker certificate for 127.0.0.1 and localhost that also
# serves as the broker's client certificate on the controller listener (mTLS). EC P-256
# keys are quick to make; the broker key is PKCS#8, the only PEM key form Kafka reads.
make_tls() {
    local tls=$1
    [ -f "$tls/broker.pem" ] && [ -f "$tls/ca.pem" ] && return 0
    mkdir -p "$tls"
    chmod 700 "$tls"
    (
        set -e
        cd "$tls"
        umask 077
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout ca.key -out ca.pem -days 30 -subj "/CN=deployq test CA" \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out broker.key
        openssl req -new -key broker.key -subj "/CN=deployq-broker" -out broker.csr
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
            "extendedKeyUsage=serverAuth,clientAuth" "basicConstraints=CA:FALSE" >broker.ext
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days 30 -extfile broker.ext -out broker.crt
        cat broker.key broker.crt >broker.pem
        rm -f broker.csr broker.ext
        chmod 644 ca.pem
    ) >"$tls/openssl.log" 2>&1 || {
        cat "$tls/openssl.log" >&2
        die "could not make the test certificates in $tls"
    }
}

# One random password per user, and the client files that use it.
make_clients() {
    local dir=$1 addr=$2 client=$1/client user pw
    mkdir -p "$client"
    chmod 700 "$client"
    for user in $SECURE_USERS; do
        if [ ! -s "$client/$user.password" ]; then
            (umask 077 && od -An -N18 -tx1 /dev/urandom | tr -d ' \n' >"$client/$user.password")
        fi
        pw=$(cat "$client/$user.password")
        (
            umask 077
            cat >"$client/$user.properties" <<PROPS
bootstrap.servers=$addr
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$user" password="$pw";
ssl.truststore.type=PEM
ssl.truststore.location=$dir/tls/ca.pem
PROPS
            # PLAIN on Kafka 4: librdkafka before 2.6.1 (kcat, deployq on Debian 12)
            # cannot do SCRAM against it; see server-secure.properties.in.
            cat >"$client/$user.kcat" <<PROPS
security.protocol=SASL_SSL
sasl.mechanisms=$CLIENT_SASL
sasl.username=$user
sasl.password=$pw
ssl.ca.location=$dir/tls/ca.pem
PROPS
        )
    done
}

# The PLAIN login module's user table: user_<name>="<password>" for every user.
plain_users() {
    local dir=$1 user
    for user in $SECURE_USERS; do
        printf 'user_%s="%s" ' "$user" "$(cat "$dir/client/$user.password")"
    done
}

scram_args() {
    local dir=$1 user
    for user in $SECURE_USERS; do
        printf '%s\n' --add-scram "SCRAM-SHA-512=[name=$user,password=$(cat "$dir/client/$user.password")]"
    done
}

# AclCommand moved from the broker's Scala code (kafka.admin) to kafka-tools in Kafka 4.0.
acl_command_class() {
    case $KAFKA_VERSION in
    [0-3].*) echo kafka.admin.AclCommand ;;
    *) echo org.apache.kafka.tools.AclCommand ;;
    esac
}

# The ACL table of docs/operations.md ("Kafka security"). Literal resource names: a
# principal gets exactly these topics and its own consumer group. WRITE and READ imply
# DESCRIBE; an idempotent producer needs only WRITE on its topics (KIP-679). Each line is
# one AclCommand run (a JVM, ~2 s), so the runs go in parallel.
apply_acls() {
    local dir=$1 addr=$2 cc=$1/client/admin.properties tmp
    local -a rules=(
        "--allow-principal User:ci --operation Write --operation Describe --topic deployq.requests"
        "--allow-principal User:validator --operation Read --topic deployq.requests --topic deployq.events --group deployq-validator --group deployq-validator-state"
        "--allow-principal User:validator --allow-principal User:executor --allow-principal User:monitor --allow-principal User:rollback --operation Write --operation Describe --topic deployq.events --topic deployq.dead"
        "--allow-principal User:registry --operation Write --operation Describe --topic deployq.dead"
    )
    local w
    for w in executor monitor rollback registry; do
        rules+=("--allow-principal User:$w --operation Read --topic deployq.events --group deployq-$w")
    done
    tmp=$(mktemp -d)
    local i pids=() failed=0
    for i in "${!rules[@]}"; do
        # shellcheck disable=SC2086 # each rule is a list of words
        kafka_tool "$(acl_command_class)" "$tmp/$i.log" --bootstrap-server "$addr" \
            --command-config "$cc" --add --force ${rules[$i]} &
        pids+=("$!")
    done
    for i in "${!rules[@]}"; do
        if ! wait "${pids[$i]}"; then
            note "AclCommand ${rules[$i]} failed:"
            grep -v ' INFO ' "$tmp/$i.log" | tail -n 10 >&2
            failed=1
        fi
    done
    rm -rf "$tmp"
    [ "$failed" = 0 ] || die "could not apply the ACLs on $addr"
    note "ACLs applied on $addr (docs/operations.md, \"Kafka security\")"
}

cmd_start() {
    local port="" dir=$DEFAULT_DIR secure=0
    while [ $# -gt 0 ]; do
        case $1 in
        --secure) secure=1; shift ;;
        --port) port=${2:?--port needs a value}; shift 2 ;;
        --port=*) port=${1#*=}; shift ;;
        --dir) dir=${2:?--dir needs a value}; shift 2 ;;
        --dir=*) dir=${1#*=}; shift ;;
        -h | --help) usage 0 ;;
        *) note "start: unknown option $1"; usage ;;
        esac
    done
    need_java
    need_kcat
    cmd_fetch

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local pid
    if pid=$(running_pid "$dir"); then
        die "a broker is already running from $dir (pid $pid, $(cat "$dir/kafka.addr" 2>/dev/null)); stop it first: $PROG stop --dir $dir"
    fi
    if [ -z "$port" ]; then
        port=$(pick_port)
    else
        case $port in *[!0-9]* | "") die "start: --port must be a number, not '$port'" ;; esac
        port_free "$port" || die "port $port on 127.0.0.1 is in use"
        port_free $((port + 1)) || die "port $((port + 1)) (the controller listener, port+1) is in use"
    fi
    local cport=$((port + 1)) data=$dir/data mode=plaintext
    [ "$secure" = 1 ] && mode=secure
    rm -f "$dir/kafka.pid" "$dir/kafka.addr"
    # SCRAM users exist only in a data dir formatted with them, and a secure broker's
    # clients would not reach a plaintext one: a data dir keeps the mode it began in.
    if [ -f "$data/meta.properties" ] && [ "$(cat "$dir/mode" 2>/dev/null || echo plaintext)" != "$mode" ]; then
        die "$data was formatted in $(cat "$dir/mode" 2>/dev/null || echo plaintext) mode; start it that way or use a fresh --dir"
    fi
    # An older Kafka cannot read a newer one's metadata log, and a test wants the version
    # it asked for: a data dir keeps the version that formatted it.
    if [ -f "$data/meta.properties" ] && [ -f "$dir/version" ] && [ "$(cat "$dir/version")" != "$KAFKA_VERSION" ]; then
        die "$data was formatted by Kafka $(cat "$dir/version"); start it with KAFKA_VERSION=$(cat "$dir/version") or use a fresh --dir"
    fi
    local addr=127.0.0.1:$port
    local -a probe=(kcat -L -b "$addr" -m 2) format_extra=()
    (
        umask 077
        sed -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$cport|g" -e "s|@DATA_DIR@|$data|g" \
            "$SCRIPT_DIR/kafka/server.properties.in" >"$dir/server.properties"
    )
    if [ "$secure" = 1 ]; then
        need_openssl
        make_tls "$dir/tls"
        make_clients "$dir" "$addr"
        # Later keys win in a Java properties file: the secure listeners override the
        # plaintext ones above.
        local -a no_plain=()
        # Without PLAIN among the mechanisms its user table has no business in the file.
        [[ $BROKER_SASL == *PLAIN* ]] || no_plain=(-e '/^listener\.name\.sasl_ssl\.plain\./d')
        sed -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$cport|g" -e "s|@TLS_DIR@|$dir/tls|g" \
            -e "s|@SASL_MECHANISMS@|$BROKER_SASL|g" \
            -e "s|@ADMIN_PASSWORD@|$(cat "$dir/client/admin.password")|g" \
            -e "s|@PLAIN_USERS@|$(plain_users "$dir")|g" "${no_plain[@]}" \
            "$SCRIPT_DIR/kafka/server-secure.properties.in" >>"$dir/server.properties"
        probe=(kcat -L -b "$addr" -m 2 -F "$dir/client/admin.kcat")
        mapfile -t format_extra < <(scram_args "$dir")
    fi

    # A data dir formatted earlier keeps its cluster id, so a restart keeps its topics;
    # its listeners may change freely since they live in server.properties.
    # shellcheck disable=SC2046 # java_opts is a list of words
    if [ ! -f "$data/meta.properties" ]; then
        local cluster_id
        cluster_id=$(new_cluster_id)
        if ! java $(java_opts) -cp "$LIBS/*" kafka.tools.StorageTool format \
            --cluster-id "$cluster_id" --config "$dir/server.properties" \
            "${format_extra[@]}" >"$dir/format.log" 2>&1; then
            tail -n 20 "$dir/format.log" >&2
            die "formatting $data failed (log: $dir/format.log)"
        fi
        echo "$mode" >"$dir/mode"
        echo "$KAFKA_VERSION" >"$dir/version"
    fi

    # setsid: the broker must outlive the shell (and its Ctrl-C) that started it. In a
    # script there is no job control, so the child is not a group leader and setsid
    # execs java in place: $! is java's pid.
    # shellcheck disable=SC2046
    setsid java $(java_opts) -Dkafka.logs.dir="$dir" -cp "$LIBS/*" \
        kafka.Kafka "$dir/server.properties" >"$dir/kafka.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/kafka.pid"

    local deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            note "the broker exited during start; last lines of $dir/kafka.log:"
            tail -n 30 "$dir/kafka.log" >&2
            rm -f "$dir/kafka.pid"
            die "Kafka did not start (port $port, dir $dir)"
        fi
        # A metadata answer that lists our broker means listeners, controller quorum and
        # metadata log are all up; an open port alone is not enough.
        if "${probe[@]}" 2>/dev/null | grep -q "broker 1 at $addr"; then
            break
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            note "no metadata answer from $addr after ${START_TIMEOUT} s; last lines of $dir/kafka.log:"
            tail -n 30 "$dir/kafka.log" >&2
            kill -KILL "$pid" 2>/dev/null || true
            rm -f "$dir/kafka.pid"
            die "Kafka did not come up within ${START_TIMEOUT} s (port $port, dir $dir)"
        fi
        sleep 0.25
    done
    if [ "$secure" = 1 ]; then
        # Nobody but admin may create topics, so they are made here, before the ACLs
        # that name them (both steps are idempotent, so a restart repeats them harmlessly).
        cmd_topics --bootstrap "$addr" --command-config "$dir/client/admin.properties" ||
            { kill -TERM "$pid"; die "the secure broker started but its topics could not be created"; }
        apply_acls "$dir" "$addr" ||
            { kill -TERM "$pid"; die "the secure broker started but its ACLs could not be applied"; }
    fi
    echo "$addr" >"$dir/kafka.addr"
    echo "$addr"
}

cmd_stop() {
    local dir=$DEFAULT_DIR
    while [ $# -gt 0 ]; do
        case $1 in
        --dir) dir=${2:?--dir needs a value}; shift 2 ;;
        --dir=*) dir=${1#*=}; shift ;;
        -h | --help) usage 0 ;;
        *) note "stop: unknown option $1"; usage ;;
        esac
    done
    local pid
    if ! pid=$(stop_node "$dir"); then
        note "no broker running from $dir"
        return 0
    fi
    note "stopped the broker (pid $pid) from $dir"
}

cmd_status() {
    local dir=$DEFAULT_DIR
    while [ $# -gt 0 ]; do
        case $1 in
        --dir) dir=${2:?--dir needs a value}; shift 2 ;;
        --dir=*) dir=${1#*=}; shift ;;
        *) note "status: unknown option $1"; usage ;;
        esac
    done
    running_pid "$dir" >/dev/null || return 1
    cat "$dir/kafka.addr"
}

# Creates the topics (create_topics in kafka/common.sh) with a replication factor of 1.
cmd_topics() {
    local bootstrap=""
    local -a cc=()
    while [ $# -gt 0 ]; do
        case $1 in
        --command-config) cc=(--command-config "${2:?--command-config needs a file}"); shift 2 ;;
        --command-config=*) cc=(--command-config "${1#*=}"); shift ;;
        --bootstrap | --bootstrap-server) bootstrap=${2:?--bootstrap needs a value}; shift 2 ;;
        --bootstrap=*) bootstrap=${1#*=}; shift ;;
        -h | --help) usage 0 ;;
        *) note "topics: unknown option $1"; usage ;;
        esac
    done
    [ -n "$bootstrap" ] || die "topics: --bootstrap HOST:PORT is required"
    need_java
    cmd_fetch
    # one broker: one replica, and the broker's own min.insync.replicas (1)
    create_topics "$bootstrap" 1 0 "${cc[@]}"
}

main() {
    [ $# -ge 1 ] || usage
    local cmd=$1
    shift
    case $cmd in
    fetch) cmd_fetch "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    topics) cmd_topics "$@" ;;
    -h | --help | help) usage 0 ;;
    *) note "unknown command '$cmd'"; usage ;;
    esac
}

main "$@"
