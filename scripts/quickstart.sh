#!/usr/bin/env bash
# quickstart.sh: the README's first command. Installs what is missing, builds, runs the
# whole stack on this machine (`deployq up`: embedded Kafka, Redis, workers), submits a
# signed deploy request and shows the deploy.validated event it became, then a bad
# request and its deploy.rejected with the reasons. Stops the stack at the end, unless
# --keep is given (then Ctrl-C, or `kill <pid>`, stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[ "${1:-}" = "--keep" ] && keep=1

[ -n "${DEPLOYQ_SKIP_INSTALL:-}" ] || scripts/install-deps.sh
scripts/build.sh build
DEPLOYQ=$PWD/build/producer/deployq

state=$(mktemp -d /tmp/deployq-quickstart.XXXXXX)
export DEPLOYQ_STATE_DIR=$state
"$DEPLOYQ" up >"$state/up.out" 2>"$state/up.err" &
up=$!
stop() { kill -INT "$up" 2>/dev/null && wait "$up" 2>/dev/null; }
[ "$keep" -eq 1 ] || trap stop EXIT
for _ in $(seq 1 100); do [ -s "$state/stack.json" ] && break; sleep 0.2; done
[ -s "$state/stack.json" ] || { cat "$state/up.err"; echo "deployq up did not start"; exit 1; }
sleep 0.5
cat "$state/up.out"
brokers=$(jq -r .brokers "$state/stack.json")

show() { # show ID TYPE: wait for the event and print it
    for _ in $(seq 1 100); do
        ev=$(kcat -C -b "$brokers" -t deployq.events -o beginning -e -q 2>/dev/null |
            jq -c --arg id "$1" --arg t "$2" 'select(.deployment_id == $id and .type == $t)' | head -n1)
        [ -n "$ev" ] && { jq . <<<"$ev"; return 0; }
        sleep 0.2
    done
    echo "no $2 event for $1 (see $state/logs/)"; return 1
}

echo
echo "\$ deployq submit --service demo --env staging --version v1.0.0"
id=$("$DEPLOYQ" submit --service demo --env staging --version v1.0.0)
echo "$id"
echo "--- deployq.events: the validator's verdict"
show "$id" deploy.validated

echo
echo "\$ deployq submit --service demo --env qa --version v1.0.1 --issued-at 2020-01-01T00:00:00Z"
id=$("$DEPLOYQ" submit --service demo --env qa --version v1.0.1 --issued-at 2020-01-01T00:00:00Z)
echo "$id"
echo "--- deployq.events: rejected, with every reason"
show "$id" deploy.rejected

if [ "$keep" -eq 1 ]; then
    echo
    echo "The stack keeps running (pid $up). In another shell:"
    echo "  export DEPLOYQ_STATE_DIR=$state; $DEPLOYQ submit --service demo --env staging --version v2"
    echo "Stop it with: kill -INT $up"
else
    echo
    echo "Done. Run it with --keep to leave the stack running."
fi
