# helpers-gates.sh - for the 02xx tests (validator gates, approvals, submit --wait,
# check and the hook). Source after helpers.sh (inject, produce_raw, redis_has and
# reason_codes are there).

# approve_as KEYFILE KEYID DEPLOYMENT_ID [args]: deployq approve with that key.
approve_as() {
    local key=$1 kid=$2; shift 2
    "$DEPLOYQ" approve --config "$CONFIG" --key "$key" --key-id "$kid" "$@"
}

# wait_recorded KEY [SECONDS]: the validator recorded an injected event (its Redis KEY
# exists; 40 s by default). Its state consumer (group <group>-state) reads from the
# beginning anyway (auto.offset.reset=earliest), so only the Redis key tells the event was
# recorded.
wait_recorded() { wait_for "${2:-40}" redis_has "$1" || fail "validator did not record $1"; }
