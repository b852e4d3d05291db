# helpers-executor.sh - what the executor and break-glass tests (01xx) share, sourced
# after helpers.sh: provider doubles from tests/fakes, a configuration with provider
# chains and an operator key, executors to start.

EXECUTOR="$DEPLOYQ_BUILD/workers/executor/deployq-executor"
FAKES="$DEPLOYQ_SOURCE/tests/fakes"

# start_fake NAME KIND: a provider double (webhook, railway, github, circleci); sets
# FAKE_PORT_<NAME>.
start_fake() {
    local name=$1 kind=$2
    "$PY" "$FAKES/$kind.py" --port 0 --port-file "$T/fake-$name.port" >"$T/fake-$name.log" 2>&1 &
    PIDS+=("$!")
    wait_for 10 test -s "$T/fake-$name.port" || fail "fake $name ($kind) did not start"
    eval "FAKE_PORT_$name=$(cat "$T/fake-$name.port")"
}
fake_port() { eval "printf '%s' \"\$FAKE_PORT_$1\""; }
# fake_script NAME JSON
fake_script() { curl -fsS -X POST -d "$2" "http://127.0.0.1:$(fake_port "$1")/_fake/script" >/dev/null; }
fake_reset() { curl -fsS -X POST "http://127.0.0.1:$(fake_port "$1")/_fake/reset" >/dev/null; }
fake_calls() { curl -fsS "http://127.0.0.1:$(fake_port "$1")/_fake/calls"; }

# write_exec_config SERVICES_YAML [EXTRA_TOP_LEVEL_YAML]: like write_config, with an
# operator key (for break-glass) and the given services: block (indented two spaces).
write_exec_config() {
    "$DEPLOYQ" keygen --out "$T/ci.key" --id ci-test >/dev/null
    "$DEPLOYQ" keygen --out "$T/operator.key" --id op-test --role operator >/dev/null
    CONFIG="$T/deployq.yaml"
    cat >"$CONFIG" <<YAML
$(config_base)
keys:
  - id: ci-test
    public_key: "$(pubkey "$T/ci.key")"
    role: ci
  - id: op-test
    public_key: "$(pubkey "$T/operator.key")"
    role: operator
${2:-}
services:
$1
YAML
}

# start_executor NAME [extra args]; sets EXECUTOR_PID_<NAME>.
start_executor() {
    launch_executor "$@"
    # consuming once it logged its assignment (a group join takes a moment)
    wait_for 30 grep -q 'assigned' "$T/executor-$1.log" || fail "executor $1 never got partitions"
}
# launch_executor NAME [extra args]: start_executor without waiting for partitions (to
# start several at once: with a long session.timeout.ms the embedded broker's rebalance
# for a late joiner takes that long; see group_settled).
launch_executor() {
    local name=$1; shift
    "$EXECUTOR" --config "$CONFIG" --log-level debug "$@" >"$T/executor-$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    eval "EXECUTOR_PID_$name=$pid"
    if [ "$BROKER_KIND" = kafka ]; then
        wait_for 60 topic_ready "$TOPIC_EVENTS" || fail "$TOPIC_EVENTS was not created"
    fi
}
# group_settled LOG...: every worker's last partition change is an assignment, and they
# hold 6 partitions between them (the group finished its rebalance).
group_settled() {
    local f last total=0 n
    for f in "$@"; do
        last=$(grep -oE 'kafka: (assigned|revoked|lost) [0-9]+ partition' "$f" | tail -n1)
        case $last in "kafka: assigned "*) ;; *) return 1 ;; esac
        n=${last#kafka: assigned }
        total=$((total + ${n% partition}))
    done
    [ "$total" -eq 6 ]
}

# terminal DEPLOYMENT_ID [SECONDS]: the terminal event (succeeded or failed), once there.
terminal() {
    local id=$1 end=$((SECONDS + ${2:-60})) out
    while :; do
        out=$(events_for "$id" | jq -c 'select(.type == "deploy.succeeded" or .type == "deploy.failed")' | head -n 1)
        [ -n "$out" ] && { printf '%s\n' "$out"; return 0; }
        [ $SECONDS -lt $end ] || return 1
        sleep 0.3
    done
}

# count_type DEPLOYMENT_ID TYPE: how many distinct event ids of TYPE the deployment has.
count_type() { events_for "$1" | jq -r --arg t "$2" 'select(.type == $t) | .id' | sort -u | wc -l; }
