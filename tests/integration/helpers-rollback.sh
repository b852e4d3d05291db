# helpers-rollback.sh - what the rollback and notification tests (05xx) share; source it
# after helpers.sh (provider and Slack doubles: start_fake NAME KIND, fake_script,
# fake_calls; inject) and helpers-executor.sh (deploy_calls, gql_calls, group_settled).
#
# No executor or monitor runs: the tests put deploy.succeeded / deploy.verified /
# rollback.requested on the events topic with kcat (inject), exactly as those workers
# would, and read what deployq-rollback emits and what the doubles (providers, Slack)
# received.

ROLLBACK="$DEPLOYQ_BUILD/workers/rollback/deployq-rollback"

# write_rollback_config SERVICES_YAML [TOP_LEVEL_YAML]; RB_LOCK_TTL (default 5s) is
# executor.lock_ttl.
write_rollback_config() {
    CONFIG="$T/deployq.yaml"
    cat >"$CONFIG" <<YAML
$(config_base)
executor:
  lock_ttl: ${RB_LOCK_TTL:-5s}
  lock_wait: 10s
${2:-}
services:
$1
YAML
}

# start_rollback NAME [extra args]: sets ROLLBACK_PID_<NAME>, returns once it has partitions.
start_rollback() {
    launch_rollback "$@"
    wait_for 30 grep -q 'assigned' "$T/rollback-$1.log" || fail "rollback worker $1 never got partitions"
}
# launch_rollback NAME [extra args]: start_rollback without waiting for partitions (to start
# several at once; group_settled in helpers-executor.sh says when their group is formed).
launch_rollback() {
    local name=$1; shift
    "$ROLLBACK" --config "$CONFIG" --log-level debug "$@" >>"$T/rollback-$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    eval "ROLLBACK_PID_$name=$pid"
    if [ "$BROKER_KIND" = kafka ]; then
        wait_for 60 topic_ready "$TOPIC_EVENTS" || fail "$TOPIC_EVENTS was not created"
    fi
}

# rollback_outcome REQUEST_ID [SECONDS]: the rollback.succeeded/failed of a request, once there.
rollback_outcome() {
    local id=$1 end=$((SECONDS + ${2:-60})) out
    while :; do
        out=$(events | jq -c --arg id "$id" 'select((.type == "rollback.succeeded" or .type == "rollback.failed") and .data.request_id == $id)' | head -n 1)
        [ -n "$out" ] && { printf '%s\n' "$out"; return 0; }
        [ $SECONDS -lt $end ] || return 1
        sleep 0.3
    done
}
# notifications TRIGGER_EVENT_ID: the notification.* events about a trigger.
notifications() { events | jq -c --arg id "$1" 'select((.type | startswith("notification.")) and .data.trigger_event_id == $id)'; }
# notifications_ge TRIGGER_EVENT_ID N: at least N notification.* events (for wait_for).
notifications_ge() { [ "$(notifications "$1" | wc -l)" -ge "$2" ]; }
# slack_texts NAME: the texts the Slack double received, one JSON string a line.
slack_texts() { fake_calls "$1" | jq -c '.calls[] | select(.path | startswith("/services/")) | .body.text'; }

# ---- the Railway double: deployments made by hand, and what it serves (0503) ----
# rw_gql URL JSON: one GraphQL call to the double at URL (.../graphql/v2); prints the answer.
rw_gql() { curl -fsS -H 'Authorization: Bearer x' -H 'Content-Type: application/json' "$1" -d "$2"; }
# rw_create URL SERVICE_ID ENV_ID VERSION: a deployment of VERSION, not polled yet (the
# double moves it on per poll, so it goes live only once rw_poll is called). Prints its id.
rw_create() {
    rw_gql "$1" "$(jq -cn --arg s "$2" --arg e "$3" --arg v "$4" '{query:"mutation deploy($serviceId: String!, $environmentId: String!, $commitSha: String) { serviceInstanceDeployV2(serviceId: $serviceId, environmentId: $environmentId, commitSha: $commitSha) }",
        variables:{serviceId:$s,environmentId:$e,commitSha:$v}}')" | jq -er .data.serviceInstanceDeployV2 ||
        fail "the Railway double did not create a deployment of $4"
}
# rw_poll URL ID: poll the deployment until it is SUCCESS (at most 10 polls).
rw_poll() {
    local s
    for _ in $(seq 1 10); do
        s=$(rw_gql "$1" "$(jq -cn --arg id "$2" '{query:"query status($id: String!) { deployment(id: $id) { id status } }",variables:{id:$id}}')" |
            jq -r .data.deployment.status)
        [ "$s" = SUCCESS ] && return 0
    done
    fail "deployment $2 at the Railway double is $s, not SUCCESS"
}
# rw_live BASE SERVICE_ID ENV_ID: what the double serves ({"live": {...}, "history": [...]};
# BASE is http://127.0.0.1:PORT).
rw_live() { curl -fsS "$1/live/$2/$3"; }
