# helpers-registry.sh - what the registry tests (03xx) share, sourced after helpers.sh:
# starting deployq-registry, writing events straight onto the events topic with kcat (the
# executor, monitor and rollback workers are not needed to script a history), and reading
# the registry back.

REGISTRY="$DEPLOYQ_BUILD/workers/registry/deployq-registry"
REG_DIR="$T/registry"

# start_registry NAME [extra args]: runs in the background, pid in REGISTRY_PID.
start_registry() {
    local name=$1; shift
    "$REGISTRY" --config "$CONFIG" --dir "$REG_DIR" "$@" >>"$T/registry-$name.log" 2>&1 &
    REGISTRY_PID=$!
    PIDS+=("$REGISTRY_PID")
    if [ "$BROKER_KIND" = kafka ]; then
        wait_for 60 topic_ready "$TOPIC_EVENTS" || fail "$TOPIC_EVENTS was not created"
    fi
}

# produce_events FILE: lines "service/environment<TAB>event JSON", acknowledged by all
# in-sync replicas when kcat exits 0.
produce_events() {
    kcat -P -b "$BROKERS" -t "$TOPIC_EVENTS" -K $'\t' -X acks=all -X enable.idempotence=true \
        <"$1" 2>>"$T/kcat.log"
}

# registry_records: how many records the registry holds (verify reads every chain).
registry_records() { "$DEPLOYQ" verify --dir "$REG_DIR" --json 2>/dev/null | jq -r '.records // 0'; }
registry_has() { [ "$(registry_records)" -ge "$1" ]; }

# The state hash the registry logged when it stopped.
logged_hash() { grep -o 'state hash [0-9a-f]\{64\}' "$T/registry-$1.log" | tail -n 1 | awk '{print $3}'; }
