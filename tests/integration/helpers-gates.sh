# helpers-gates.sh - for the 02xx tests (validator gates, approvals, submit --wait,
# check and the hook). Source after helpers.sh.

# inject TYPE DEPLOYMENT_ID SERVICE ENV VERSION DATA_JSON: put an event on the events
# topic with kcat, as the executor / monitor / rollback worker would.
inject() {
    local type=$1 id=$2 svc=$3 env=$4 version=$5 data=$6 ev
    ev=$(jq -cn --arg type "$type" --arg id "$id" --arg svc "$svc" --arg env "$env" \
        --arg version "$version" --argjson data "$data" --arg eid "$(cat /proc/sys/kernel/random/uuid)" \
        --arg at "$(date -u +%Y-%m-%dT%H:%M:%S.000Z)" \
        '{schema:"deployq.event/v1", id:$eid, type:$type, deployment_id:$id, service:$svc,
          environment:$env, version:$version, at:$at, actor:"test@localhost/1", fence:1, data:$data}')
    printf '%s\n' "$ev" | kcat -P -b "$BROKERS" -t "$TOPIC_EVENTS" -k "$svc/$env" 2>/dev/null ||
        fail "kcat could not inject $type"
}

# redis_has KEY: the key exists.
redis_has() { [ "$(redis-cli -p "$REDIS_PORT" exists "$1")" = 1 ]; }

# reason_codes EVENT: the codes of a deploy.rejected, comma-separated.
reason_codes() { jq -r '[.data.reasons[].code] | join(",")' <<<"$1"; }

# approve_as KEYFILE KEYID DEPLOYMENT_ID [args]: deployq approve with that key.
approve_as() {
    local key=$1 kid=$2; shift 2
    "$DEPLOYQ" approve --config "$CONFIG" --key "$key" --key-id "$kid" "$@"
}

# send_raw TEXT KEY: put a raw message on the requests topic (forged / unsigned ones).
send_raw() { printf '%s\n' "$1" | kcat -P -b "$BROKERS" -t "$TOPIC_REQUESTS" -k "$2" 2>/dev/null; }

# Wait for the validator's state consumer (group <group>-state) to be assigned, so an
# injected event is not read before it subscribed... it reads from the beginning anyway
# (auto.offset.reset=earliest), so only the Redis key tells the event was recorded.
wait_recorded() { wait_for "${2:-40}" redis_has "$1" || fail "validator did not record $1"; }
