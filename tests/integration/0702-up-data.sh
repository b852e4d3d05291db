#!/usr/bin/env bash
# `deployq up --data DIR` keeps the stack's state across a restart, on the embedded broker:
# Redis's append-only file (the verified versions the promotion gate asks for, the
# executor's fences), the registry's log and the signing keys. After a stop and a start a
# version verified in staging before the restart may go to production, and a new deploy
# to staging (same partition of deployq.events as before the restart: the embedded broker
# starts it at offset 0 again) is in the registry's history next to the old ones.
. "$(dirname "$0")/helpers.sh"

DATA=$T/data
up() {
    "$DEPLOYQ" up --data "$DATA" >"$T/up$1.out" 2>"$T/up$1.log" &
    UP=$!
    PIDS+=("$UP")
    wait_for 60 grep -q 'Ctrl-C stops everything' "$T/up$1.out" || fail "up $1 did not start: $(cat "$T/up$1.out")"
}
stop_up() {
    kill -INT "$UP"
    wait_for 30 bash -c "! kill -0 $UP 2>/dev/null" || fail "up did not stop"
}
deploy() { # ENV VERSION: deployed and verified, within the test's time
    local out
    out=$("$DEPLOYQ" submit --service demo --env "$1" --version "$2" --wait --timeout 50 2>&1) || fail "deploy $1 $2: $out"
    grep -q "deploy.verified .*demo/$1 $2" <<<"$out" || fail "$1 $2 not verified: $out"
}
verified_in_history() { # ENV VERSION
    "$DEPLOYQ" history 2>/dev/null | grep -Eq "deploy.verified +demo/$1 +$2 "
}

up 1
grep -qF "data              $DATA (redis/ append-only file, registry/, the signing keys)" "$T/up1.out" || fail "$(cat "$T/up1.out")"
assert_eq "$(jq -r .data_dir "$DEPLOYQ_STATE_DIR/stack.json")" "$DATA" "stack.json data_dir"
deploy staging v1
wait_for 10 verified_in_history staging v1 || fail "v1 not in the registry"
key1=$(sha256sum <"$DATA/ci.key")
stop_up
[ -d "$DATA/redis/appendonlydir" ] || fail "no append-only file in $DATA/redis"
[ -d "$DATA/registry/p0" ] || fail "no registry log in $DATA/registry"

up 2
assert_eq "$(sha256sum <"$DATA/ci.key")" "$key1" "the CI key after the restart"
verified_in_history staging v1 || fail "the registry's history lost staging v1"
# Production asks for v1 verified in staging (Redis's AOF kept it); staging v2 goes to the
# partition staging v1 went to: the registry must store it, not take it for a redelivery.
deploy production v1 &
prod=$!
deploy staging v2
wait "$prod" || fail "production v1 after the restart"
wait_for 10 verified_in_history staging v2 || fail "staging v2 is missing from the registry's history: $("$DEPLOYQ" history 2>&1 | tail -n 12)"
verified_in_history production v1 || fail "production v1 is missing from the registry's history"
n=$("$DEPLOYQ" history 2>/dev/null | grep -Ec 'demo/staging +v1 ')
assert_eq "$n" 5 "staging v1's events, once each"
stop_up
echo ok
