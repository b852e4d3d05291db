# scripts/kafka/common.sh - what scripts/kafka.sh (one broker) and scripts/kafka-cluster.sh
# (three) share: the Kafka version and jar cache, fetching the jars from Maven Central,
# the checks for java/mvn/kcat, the JVM flags, the admin CLIs, port checks and the topic
# creation. Sourced, never run; the caller sets PROG (its name in messages) and
# SCRIPT_DIR (scripts/) first, and keeps `set -euo pipefail`.

readonly KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
readonly CACHE_ROOT=${DEPLOYQ_CACHE:-$HOME/.cache/deployq}
readonly KAFKA_HOME=$CACHE_ROOT/kafka-$KAFKA_VERSION
readonly LIBS=$KAFKA_HOME/libs
readonly START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
readonly STOP_TIMEOUT=20

die() {
    echo "$PROG: $*" >&2
    exit 1
}

note() {
    echo "$PROG: $*" >&2
}

need_java() {
    command -v java >/dev/null 2>&1 ||
        die "java is missing (Kafka 4 needs Java 17 or newer); install it: scripts/install-deps.sh --with-java"
    local line first second major
    line=$(java -version 2>&1 | head -n 1)
    # `openjdk version "17.0.15" ...` or, before Java 9, `"1.8.0_392"`.
    read -r first second < <(printf '%s\n' "$line" |
        sed -n 's/.*version "\([0-9]*\)\.\{0,1\}\([0-9]*\).*/\1 \2/p') || true
    [ -n "${first:-}" ] || die "cannot read the Java version from: $line"
    if [ "$first" = 1 ]; then major=${second:-0}; else major=$first; fi
    [ "$major" -ge 17 ] ||
        die "java $major found, Kafka 4 needs 17 or newer; install it: scripts/install-deps.sh --with-java"
}

need_mvn() {
    command -v mvn >/dev/null 2>&1 ||
        die "mvn (Maven) is missing; install it: scripts/install-deps.sh --with-java"
}

need_kcat() {
    command -v kcat >/dev/null 2>&1 ||
        die "kcat is missing (used to check the broker answers); install it: scripts/install-deps.sh"
}

# fetch: libs/ appears only complete (resolved into a temporary folder, then renamed), and
# a lock keeps parallel test runs from resolving the same version twice.
cmd_fetch() {
    if [ -f "$LIBS/.complete" ]; then
        return 0
    fi
    need_java
    need_mvn
    mkdir -p "$KAFKA_HOME"
    exec 9>"$KAFKA_HOME/.lock"
    flock 9
    if [ -f "$LIBS/.complete" ]; then
        exec 9>&-
        return 0
    fi
    local tmp log
    tmp=$(mktemp -d "$KAFKA_HOME/libs.tmp.XXXXXX")
    log=$KAFKA_HOME/fetch.log
    note "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION from Maven Central (log: $log)"
    # shellcheck disable=SC2086 # MAVEN_ARGS is a list of words on purpose
    if ! mvn -B -q ${MAVEN_ARGS:-} -f "$SCRIPT_DIR/kafka/pom.xml" \
        -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
        >"$log" 2>&1; then
        rm -rf "$tmp"
        tail -n 20 "$log" >&2
        die "could not resolve Kafka $KAFKA_VERSION with Maven (full log: $log)"
    fi
    [ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ] || {
        rm -rf "$tmp"
        die "Maven finished but kafka_2.13-$KAFKA_VERSION.jar is not among the jars"
    }
    touch "$tmp/.complete"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    exec 9>&-
    note "Kafka $KAFKA_VERSION: $(find "$LIBS" -name '*.jar' | wc -l) jars in $LIBS"
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pick_ports N: the first of N consecutive free ports on 127.0.0.1, drawn at random below
# the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range). A port the kernel
# handed out by bind(0) lies inside that range, where any outgoing connection made before
# the broker binds it may take it (a single broker under load failed to bind its
# controller port that way); below the range only another explicit bind competes. Each
# port is bound and released here; the broker's own bind is still the real guard.
pick_ports() {
    local n=$1 p
    p=$(python3 - "$n" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
try:
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    lo = 32768
lo = max(lo, 12000)
for _ in range(200):
    base = random.randrange(10000, lo - n)
    socks = []
    try:
        for port in range(base, base + n):
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            socks.append(s)
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    sys.exit(0)
sys.exit(1)
PY
    ) || die "no $n free consecutive ports found on 127.0.0.1 below the ephemeral range"
    echo "$p"
}

# The pid in D/kafka.pid when that process is alive and is our broker (not a recycled pid).
running_pid() {
    local dir=$1 pid
    [ -f "$dir/kafka.pid" ] || return 1
    pid=$(cat "$dir/kafka.pid")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
    echo "$pid"
}

# SIGTERM to the broker of D (a controlled shutdown: its partitions' leadership moves
# first), SIGKILL after STOP_TIMEOUT s, or at once with kill=1.
stop_node() {
    local dir=$1 kill=${2:-0} pid
    if ! pid=$(running_pid "$dir"); then
        rm -f "$dir/kafka.pid" "$dir/kafka.addr"
        return 1
    fi
    if [ "$kill" = 1 ]; then
        kill -KILL "$pid" 2>/dev/null || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            note "broker (pid $pid) still running ${STOP_TIMEOUT} s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$dir/kafka.pid" "$dir/kafka.addr"
    echo "$pid"
}

java_opts() {
    # The flags bin/kafka-run-class.sh uses, minus JMX and GC logs.
    echo "${KAFKA_HEAP_OPTS:--Xmx512m} -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20" \
        "-XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent" \
        "-Djava.awt.headless=true -Dlog4j2.configurationFile=$SCRIPT_DIR/kafka/log4j2.xml"
}

# kafka_tool CLASS LOG ARGS...: one of Kafka's admin CLIs from the same jars.
kafka_tool() {
    local class=$1 log=$2
    shift 2
    java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$SCRIPT_DIR/kafka/log4j2.xml" \
        -Dlog4j2.level=warn -cp "$LIBS/*" "$class" "$@" >"$log" 2>&1
}

# A new KRaft cluster id. A Kafka Uuid is 16 random bytes in URL-safe base64 without
# padding. One that starts with '-' would be read by StorageTool's argument parser as an
# option (1 start in 64 failed that way), so draw again.
new_cluster_id() {
    local id=-
    while [[ $id == -* ]]; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    echo "$id"
}

# create_topics BOOTSTRAP REPLICATION MIN_ISR [TopicCommand args...]: deployq.requests,
# deployq.events (6 partitions) and deployq.dead (1) with Kafka's own admin CLI
# (org.apache.kafka.tools.TopicCommand from the same jars). MIN_ISR 0 leaves
# min.insync.replicas to the broker. --if-not-exists makes a second run a no-op; the three
# JVMs run in parallel because each spends most of its ~2 s starting up.
create_topics() {
    local bootstrap=$1 rf=$2 min_isr=$3
    shift 3
    local -a extra=("$@")
    [ "$min_isr" -gt 0 ] && extra+=(--config "min.insync.replicas=$min_isr")
    local tmp
    tmp=$(mktemp -d)
    local spec name parts pids=() failed=0
    for spec in deployq.requests:6 deployq.events:6 deployq.dead:1; do
        name=${spec%%:*}
        parts=${spec##*:}
        java -Xmx256m -Dlog4j2.configurationFile="$SCRIPT_DIR/kafka/log4j2.xml" \
            -Dlog4j2.level=warn -cp "$LIBS/*" org.apache.kafka.tools.TopicCommand \
            --bootstrap-server "$bootstrap" --create --if-not-exists --topic "$name" \
            --partitions "$parts" --replication-factor "$rf" "${extra[@]}" >"$tmp/$name.log" 2>&1 &
        pids+=("$!")
    done
    local i=0
    for spec in deployq.requests deployq.events deployq.dead; do
        if ! wait "${pids[$i]}"; then
            note "creating topic $spec failed:"
            grep -v ' INFO ' "$tmp/$spec.log" | tail -n 10 >&2
            failed=1
        fi
        i=$((i + 1))
    done
    rm -rf "$tmp"
    [ "$failed" = 0 ] || die "topics: could not create every topic on $bootstrap"
    note "topics ready on $bootstrap: deployq.requests (6), deployq.events (6), deployq.dead (1), replication factor $rf$([ "$min_isr" -gt 0 ] && echo ", min.insync.replicas $min_isr")"
}
