# helpers-executor.sh - what the executor and break-glass tests (01xx) share, sourced
# after helpers.sh: a configuration with provider chains and an operator key, executors to
# start, and what the provider doubles (start_fake, helpers.sh) were asked to do.

EXECUTOR="$DEPLOYQ_BUILD/workers/executor/deployq-executor"

# deploy_calls NAME: how many deployments the provider double NAME was asked to create
# (POST /deploy at a webhook double, serviceInstanceDeployV2 at a Railway double).
deploy_calls() {
    fake_calls "$1" | jq '[.calls[] | select(.method == "POST" and
        (.path == "/deploy" or (.body.query // "" | test("serviceInstanceDeployV2"))))] | length'
}
# gql_calls NAME OPERATION: the calls to the Railway double NAME whose GraphQL query names
# OPERATION (deploymentCancel, deploymentRollback, ...), as one JSON array.
gql_calls() { fake_calls "$1" | jq -c --arg op "$2" '[.calls[] | select(.body.query // "" | test($op))]'; }

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

# deploy VERSION [SERVICE]: submit SERVICE/staging (SERVICE api by default) at VERSION and
# wait for its terminal event (60 s); prints the deployment id.
deploy() {
    local id
    id=$(submit --service "${2:-api}" --env staging --version "$1")
    terminal "$id" 60 >/dev/null || fail "$1: no terminal event"
    printf '%s\n' "$id"
}

# run_registered KIND ID [N]: the run ID is registered under its lock in deployq:runs:KIND
# (exec, rollback; common/runlease.c) N times: 1 (the default) while it runs, 0 once it
# concluded (for wait_for).
run_registered() {
    [ "$(redis-cli -p "$REDIS_PORT" zscore "deployq:runs:$1" "$2" | grep -c .)" = "${3:-1}" ]
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
