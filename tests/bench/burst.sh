#!/usr/bin/env bash
# tests/bench/burst.sh [BUILD_DIR]: N targets deployed at once, each deploy taking 2 s at
# the provider, on the whole stack (`deployq up`: embedded broker, Redis, every worker).
#
# deployq.yaml gets N services (one `production` environment each) whose provider is the
# `command` provider running `sleep DEPLOY_S`, polled every 100 ms (as mttr.sh's instant
# provider; the default 5 s poll would add up to 5 s to every deploy). N signed requests (`deployq submit
# --dry-run`, one per service) are put on deployq.requests at once with kcat; the script
# waits for N deploy.succeeded. Figures, from the events' own timestamps:
#   spread   the last deploy.succeeded minus the last deploy.validated: how long after the
#            last request was judged the last deploy ended (a provider time of DEPLOY_S
#            is the floor: every deploy runs in parallel, so ideally spread = DEPLOY_S)
#   RSS      the executor's peak resident memory (VmHWM of /proc/PID/status)
# Environment: N (default 2000), DEPLOY_S (default 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
DEPLOYQ=$build/producer/deployq
N=${N:-2000}
DEPLOY_S=${DEPLOY_S:-2}
[ -x "$build/workers/executor/deployq-executor" ] || { echo "build first: scripts/build.sh $build" >&2; exit 1; }
command -v jq >/dev/null && command -v kcat >/dev/null || { echo "needs jq and kcat" >&2; exit 1; }

T=$(mktemp -d /tmp/dq-bench-burst.XXXXXX)
export DEPLOYQ_STATE_DIR=$T/state DEPLOYQ_SCHEMAS=$root/schemas
mkdir -p "$DEPLOYQ_STATE_DIR"
chmod 700 "$DEPLOYQ_STATE_DIR"
up=
cleanup() { [ -n "$up" ] && kill -TERM "$up" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT

"$DEPLOYQ" keygen --out "$T/ci.key" --id ci-bench >/dev/null
pub=$(openssl pkey -in "$T/ci.key" -pubout -outform DER | tail -c 32 | base64 -w0)
{
    echo "keys:"
    echo "  - {id: ci-bench, public_key: \"$pub\", role: ci}"
    echo "providers:"
    echo "  slow: {type: command, name: slow, argv: [sleep, \"$DEPLOY_S\"], poll_interval: 100ms, timeout: 60s}"
    echo "services:"
    for i in $(seq -w 1 "$N"); do
        echo "  svc-$i: {environments: {production: {providers: [slow]}}}"
    done
} >"$T/deployq.yaml"
"$DEPLOYQ" check --config "$T/deployq.yaml" -q

# the requests, signed beforehand so that they reach the broker at once
for i in $(seq -w 1 "$N"); do
    printf 'svc-%s/production\t' "$i"
    "$DEPLOYQ" submit --dry-run --key "$T/ci.key" --key-id ci-bench -s "svc-$i" -e production -v "v$i"
done >"$T/requests.txt"

"$DEPLOYQ" up --config "$T/deployq.yaml" >"$T/up.out" 2>"$T/up.err" &
up=$!
for _ in $(seq 1 200); do [ -s "$DEPLOYQ_STATE_DIR/stack.json" ] && break; sleep 0.1; done
[ -s "$DEPLOYQ_STATE_DIR/stack.json" ] || { cat "$T/up.err"; echo "deployq up did not start" >&2; exit 1; }
B=$(jq -r '.brokers // .bootstrap // .kafka' "$DEPLOYQ_STATE_DIR/stack.json")
expid=
for _ in $(seq 1 100); do
    for c in $(pgrep -P "$up" || true); do
        [ "$(readlink "/proc/$c/exe" 2>/dev/null)" = "$build/workers/executor/deployq-executor" ] && expid=$c
    done
    [ -n "$expid" ] && break
    sleep 0.1
done
[ -n "$expid" ] || { echo "no executor under deployq up ($up)" >&2; exit 1; }
sleep 3 # the workers join their groups

kcat -P -b "$B" -t deployq.requests -K $'\t' -l "$T/requests.txt"
count() { kcat -C -b "$B" -t deployq.events -o beginning -e -q 2>/dev/null | grep -c "\"$1\"" || true; }
deadline=$((SECONDS + 600))
while [ "$(count deploy.succeeded)" -lt "$N" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "timed out: $(count deploy.succeeded) of $N succeeded" >&2; exit 1; }
    kill -0 "$expid" 2>/dev/null || { echo "the executor died" >&2; exit 1; }
    sleep 0.5
done
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$expid/status")
threads=$(awk '/^Threads/ {print $2}' "/proc/$expid/status")
read -r nv lv ns ls < <(kcat -C -b "$B" -t deployq.events -o beginning -e -q 2>/dev/null |
    jq -rs 'def ms: sub("Z$"; "") | split(".") | ((.[0] + "Z" | fromdateiso8601) * 1000 + (.[1] | tonumber));
            [map(select(.type == "deploy.validated")), map(select(.type == "deploy.succeeded"))]
            | "\(.[0] | length) \(.[0] | map(.at | ms) | max) \(.[1] | length) \(.[1] | map(.at | ms) | max)"')
echo "burst: $N targets at once, provider 'sleep $DEPLOY_S' per deploy, embedded broker"
echo "  deploy.validated: $nv, deploy.succeeded: $ns"
printf '  last deploy.succeeded - last deploy.validated: %.2f s (the provider alone: %s s)\n' \
    "$(echo "($ls - $lv) / 1000" | bc -l)" "$DEPLOY_S"
printf '  executor peak RSS (VmHWM): %.1f MB; threads now: %s\n' "$(echo "$hwm / 1024" | bc -l)" "$threads"
