#!/usr/bin/env bash
# scripts/kafka-cluster.sh - a three-node Apache Kafka KRaft cluster on this machine, for
# tests and for trying deployq on a replicated Kafka: 4.1.1 by default (KAFKA_VERSION).
# The jars come from Maven Central as for scripts/kafka.sh (they share
# scripts/kafka/common.sh and its cache).
#
# Every node is broker and controller at once (process.roles=broker,controller): three
# JVMs, not six, on a small machine, and a quorum of three controllers still survives one
# node down, which is the failure this cluster is for. A production cluster of any size
# would rather run its controllers apart from its brokers (a broker's load then never
# slows the metadata quorum); deployq sees no difference between the two.
#
# Replication (scripts/kafka/cluster.properties.in): topics, the consumer-offsets and
# transaction topics included, have 3 replicas and min.insync.replicas=2, so an acks=all
# write is on two brokers when acknowledged and one broker can be down without a write
# being refused.
#
#   kafka-cluster.sh fetch     resolve the jars into the cache (no-op when cached)
#   kafka-cluster.sh start [--dir D] [--no-topics]
#                              format D/node1..3 (once), start the three nodes in the
#                              background, wait until all three answer a metadata request
#                              as brokers, create deployq.requests, deployq.events (6
#                              partitions) and deployq.dead (1) with replication factor 3
#                              and min.insync.replicas=2 (not with --no-topics: deployq's
#                              workers then create them, with topics.replication), print
#                              the bootstrap list "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
#   kafka-cluster.sh stop [--dir D]
#                              stop every node: SIGTERM, SIGKILL after 20 s
#   kafka-cluster.sh status [--dir D]
#                              print the bootstrap list, and each node's state on stderr;
#                              exit 0 when all three run, 1 when none does, 3 when some do
#   kafka-cluster.sh stop-broker N [--kill] [--dir D]
#                              stop node N (1..3): SIGTERM, a controlled shutdown that
#                              moves its partitions' leadership first; --kill: SIGKILL, a
#                              crash (its partitions move after broker.session.timeout.ms)
#   kafka-cluster.sh start-broker N [--dir D]
#                              start node N again on its ports and data, wait until it is
#                              back in the cluster's metadata
#   kafka-cluster.sh describe [--dir D] [--topic T]
#                              Kafka's TopicCommand --describe of the deployq topics (or
#                              T): partitions, replicas, in-sync replicas; then the
#                              topic's own configs (ConfigCommand), without the broker's
#
# Ports: six consecutive ones (node N: client port P+2(N-1), controller port P+2(N-1)+1),
# drawn at random below the kernel's ephemeral port range, where no outgoing connection
# can take them between the draw and the broker's bind. A data dir keeps its ports
# (D/ports) and the Kafka version that formatted it.
#
# Environment:
#   KAFKA_VERSION        the org.apache.kafka:kafka_2.13 version (default 4.1.1)
#   DEPLOYQ_CACHE        cache root (default ~/.cache/deployq); jars in kafka-<version>/libs
#   DEPLOYQ_KAFKA_CLUSTER_DIR  default --dir (default ${TMPDIR:-/tmp}/deployq-kafka-cluster)
#   KAFKA_HEAP_OPTS      heap of each node (default -Xmx384m: three nodes fit beside
#                        deployq's workers on a 2-core, few-GB machine)
#   KAFKA_START_TIMEOUT  seconds to wait for the cluster or a node (default 90)
#   MAVEN_ARGS           extra arguments for mvn (e.g. -o to stay offline)
#
# Everything but the bootstrap list goes to stderr, so `B=$(scripts/kafka-cluster.sh start)`
# works.
set -euo pipefail

readonly PROG=kafka-cluster.sh
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
export KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx384m}
# shellcheck source=scripts/kafka/common.sh
. "$SCRIPT_DIR/kafka/common.sh"
readonly DEFAULT_DIR=${DEPLOYQ_KAFKA_CLUSTER_DIR:-${TMPDIR:-/tmp}/deployq-kafka-cluster}
readonly NODES=3

usage() {
    # The header: every comment line from line 2 to the first line of code.
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}

# Options shared by every command: --dir, and the ones named in $want (kill, topic, notopics).
DIR=$DEFAULT_DIR KILL=0 TOPIC="" NO_TOPICS=0
parse_opts() {
    local cmd=$1 want=$2
    shift 2
    while [ $# -gt 0 ]; do
        case $1 in
        --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
        --dir=*) DIR=${1#*=}; shift ;;
        --kill) [[ $want == *kill* ]] || { note "$cmd: unknown option $1"; usage; }; KILL=1; shift ;;
        --no-topics) [[ $want == *notopics* ]] || { note "$cmd: unknown option $1"; usage; }; NO_TOPICS=1; shift ;;
        --topic) [[ $want == *topic* ]] || { note "$cmd: unknown option $1"; usage; }; TOPIC=${2:?--topic needs a value}; shift 2 ;;
        -h | --help) usage 0 ;;
        *) note "$cmd: unknown option $1"; usage ;;
        esac
    done
}

node_dir() { echo "$DIR/node$1"; }
node_port() { echo $(($(cat "$DIR/ports") + 2 * ($1 - 1))); }
node_addr() { echo "127.0.0.1:$(node_port "$1")"; }

bootstrap() {
    local n list=""
    for n in $(seq 1 $NODES); do list=$list${list:+,}$(node_addr "$n"); done
    echo "$list"
}

# Is node N a broker of the cluster's metadata, as node N itself answers it?
node_listed() {
    local n=$1
    kcat -L -b "$(node_addr "$n")" -m 2 2>/dev/null | grep -q "broker $n at $(node_addr "$n")"
}

brokers_listed() {
    kcat -L -b "$(bootstrap)" -m 2 2>/dev/null | grep -c "^  broker [0-9]* at " || true
}

# Writes D/node<N>/server.properties from the template; formats its data dir once.
prepare_node() {
    local n=$1 cluster_id=$2 nd voters="" i base
    nd=$(node_dir "$n")
    base=$(cat "$DIR/ports")
    for i in $(seq 1 $NODES); do
        voters=$voters${voters:+,}$i@127.0.0.1:$((base + 2 * (i - 1) + 1))
    done
    mkdir -p "$nd"
    sed -e "s|@NODE_ID@|$n|g" -e "s|@PORT@|$(node_port "$n")|g" \
        -e "s|@CONTROLLER_PORT@|$(($(node_port "$n") + 1))|g" -e "s|@VOTERS@|$voters|g" \
        -e "s|@DATA_DIR@|$nd/data|g" "$SCRIPT_DIR/kafka/cluster.properties.in" >"$nd/server.properties"
    [ -f "$nd/data/meta.properties" ] && return 0
    # shellcheck disable=SC2046 # java_opts is a list of words
    java $(java_opts) -cp "$LIBS/*" kafka.tools.StorageTool format --cluster-id "$cluster_id" \
        --config "$nd/server.properties" >"$nd/format.log" 2>&1 || {
        tail -n 20 "$nd/format.log" >&2
        die "formatting node $n failed (log: $nd/format.log)"
    }
}

# Starts node N's JVM in the background (setsid: it must outlive the shell that started
# it; in a script setsid execs java in place, so $! is java's pid).
launch_node() {
    local n=$1 nd
    nd=$(node_dir "$n")
    # shellcheck disable=SC2046
    setsid java $(java_opts) -Dkafka.logs.dir="$nd" -cp "$LIBS/*" \
        kafka.Kafka "$nd/server.properties" >>"$nd/kafka.log" 2>&1 </dev/null &
    echo "$!" >"$nd/kafka.pid"
}

# Waits until pred (a command) succeeds; every node of $nodes still alive meanwhile.
wait_for() {
    local what=$1 nodes=$2
    shift 2
    local deadline=$((SECONDS + START_TIMEOUT)) n
    while ! "$@"; do
        for n in $nodes; do
            if ! running_pid "$(node_dir "$n")" >/dev/null; then
                note "node $n exited while waiting for $what; last lines of $(node_dir "$n")/kafka.log:"
                tail -n 30 "$(node_dir "$n")/kafka.log" >&2
                die "Kafka node $n did not start (dir $(node_dir "$n"))"
            fi
        done
        if [ "$SECONDS" -ge "$deadline" ]; then
            for n in $nodes; do
                note "last lines of $(node_dir "$n")/kafka.log:"
                tail -n 10 "$(node_dir "$n")/kafka.log" >&2
            done
            die "$what not within ${START_TIMEOUT} s (dir $DIR)"
        fi
        sleep 0.5
    done
}

all_listed() { [ "$(brokers_listed)" -ge $NODES ]; }

cmd_start() {
    parse_opts start notopics "$@"
    need_java
    need_kcat
    cmd_fetch
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    local n pid
    for n in $(seq 1 $NODES); do
        if pid=$(running_pid "$(node_dir "$n")"); then
            die "node $n is already running from $DIR (pid $pid); stop the cluster first: $PROG stop --dir $DIR"
        fi
    done
    if [ -f "$DIR/version" ] && [ "$(cat "$DIR/version")" != "$KAFKA_VERSION" ]; then
        die "$DIR was formatted by Kafka $(cat "$DIR/version"); start it with KAFKA_VERSION=$(cat "$DIR/version") or use a fresh --dir"
    fi
    # A formatted cluster keeps its ports: they are its controllers' addresses.
    if [ -f "$DIR/ports" ]; then
        local base
        base=$(cat "$DIR/ports")
        for n in $(seq 0 $((2 * NODES - 1))); do
            port_free $((base + n)) || die "port $((base + n)) of the cluster in $DIR is in use"
        done
    else
        pick_ports $((2 * NODES)) >"$DIR/ports"
    fi
    local cluster_id
    cluster_id=$(cat "$DIR/cluster.id" 2>/dev/null || new_cluster_id)
    echo "$cluster_id" >"$DIR/cluster.id"
    # Formats run in parallel: each is a JVM start, ~3 s of one core.
    local pids=() failed=0
    for n in $(seq 1 $NODES); do
        (prepare_node "$n" "$cluster_id") &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" = 0 ] || die "could not prepare the nodes in $DIR"
    echo "$KAFKA_VERSION" >"$DIR/version"
    for n in $(seq 1 $NODES); do launch_node "$n"; done
    note "starting $NODES nodes in $DIR (Kafka $KAFKA_VERSION, $KAFKA_HEAP_OPTS each)"
    wait_for "all $NODES brokers in the metadata" "$(seq 1 $NODES)" all_listed
    if [ "$NO_TOPICS" = 0 ]; then
        create_topics "$(bootstrap)" 3 2 ||
            die "the cluster started but its topics could not be created; stop it: $PROG stop --dir $DIR"
    fi
    bootstrap >"$DIR/cluster.addr"
    note "cluster up: $(bootstrap)"
    bootstrap
}

cmd_stop() {
    parse_opts stop "" "$@"
    local n pids=() stopped=0
    for n in $(seq 1 $NODES); do
        (stop_node "$(node_dir "$n")" >/dev/null) &
        pids+=("$!")
    done
    for n in $(seq 1 $NODES); do
        wait "${pids[$((n - 1))]}" && stopped=$((stopped + 1))
    done
    rm -f "$DIR/cluster.addr"
    note "stopped $stopped node(s) of the cluster in $DIR"
}

cmd_status() {
    parse_opts status "" "$@"
    [ -f "$DIR/ports" ] || { note "no cluster in $DIR"; return 1; }
    local n pid up=0
    for n in $(seq 1 $NODES); do
        if pid=$(running_pid "$(node_dir "$n")"); then
            note "node $n: running (pid $pid) at $(node_addr "$n")"
            up=$((up + 1))
        else
            note "node $n: stopped ($(node_addr "$n"))"
        fi
    done
    [ "$up" -gt 0 ] || return 1
    bootstrap
    [ "$up" -eq $NODES ] || return 3
}

node_arg() {
    case ${1:-} in
    [1-3]) echo "$1" ;;
    *) note "${2}: the node is a number from 1 to $NODES, not '${1:-}'"; usage ;;
    esac
}

cmd_stop_broker() {
    local n
    n=$(node_arg "${1:-}" stop-broker)
    shift
    parse_opts stop-broker kill "$@"
    local pid
    pid=$(stop_node "$(node_dir "$n")" "$KILL") || die "node $n is not running (dir $DIR)"
    note "node $n (pid $pid) $([ "$KILL" = 1 ] && echo killed || echo stopped)"
}

cmd_start_broker() {
    local n pid
    n=$(node_arg "${1:-}" start-broker)
    shift
    parse_opts start-broker "" "$@"
    need_kcat
    [ -f "$(node_dir "$n")/server.properties" ] || die "no node $n in $DIR; start the cluster first"
    if pid=$(running_pid "$(node_dir "$n")"); then
        die "node $n is already running (pid $pid)"
    fi
    port_free "$(node_port "$n")" || die "port $(node_port "$n") of node $n is in use"
    launch_node "$n"
    wait_for "node $n back in the metadata" "$n" node_listed "$n"
    note "node $n running again at $(node_addr "$n")"
}

cmd_describe() {
    parse_opts describe topic "$@"
    [ -f "$DIR/ports" ] || die "no cluster in $DIR"
    local log topics=("${TOPIC:-}")
    [ -n "$TOPIC" ] || topics=(deployq.requests deployq.events deployq.dead)
    log=$(mktemp)
    local t rc=0
    for t in "${topics[@]}"; do
        if kafka_tool org.apache.kafka.tools.TopicCommand "$log" --bootstrap-server "$(bootstrap)" \
            --describe --topic "$t"; then
            # the admin client logs its settings at INFO whatever the log4j level
            grep -E '^[[:space:]]*Topic:' "$log"
        else
            grep -v ' INFO ' "$log" | tail -n 5 >&2
            rc=1
        fi
        # TopicCommand's Configs mix the broker's settings in; these are the topic's own.
        if kafka_tool kafka.admin.ConfigCommand "$log" --bootstrap-server "$(bootstrap)" \
            --describe --entity-type topics --entity-name "$t"; then
            grep -E '^Dynamic configs|^  [a-z.]+=' "$log" | sed 's/ sensitive=.*//'
        else
            grep -v ' INFO ' "$log" | tail -n 5 >&2
            rc=1
        fi
    done
    rm -f "$log"
    return $rc
}

main() {
    [ $# -ge 1 ] || usage
    local cmd=$1
    shift
    case $cmd in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    stop-broker) cmd_stop_broker "$@" ;;
    start-broker) cmd_start_broker "$@" ;;
    describe) cmd_describe "$@" ;;
    fetch) cmd_fetch ;;
    -h | --help | help) usage 0 ;;
    *) note "unknown command '$cmd'"; usage ;;
    esac
}

main "$@"
