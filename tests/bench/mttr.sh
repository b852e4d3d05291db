#!/usr/bin/env bash
# tests/bench/mttr.sh [BUILD_DIR]: time to restore after a bad deploy, measured end to end
# on the whole stack (`deployq up`: validator, executor, monitor, rollback worker).
#
# Two provider doubles (PROVIDER):
#   railway (default)  the Railway double (tests/fakes/railway.py) with `rollback: rollback`:
#                      deploys are polled to SUCCESS (100 ms polls), and a rollback, like
#                      Railway's, starts a new deployment of the old image that reaches
#                      SUCCESS only RESTORE_S seconds later (default 3); the bad version
#                      serves until then. The probed service is what the double serves
#                      (GET /live/<service>/<env>/health: *-bad versions answer HTTP 500).
#                      This measures restore up to the provider's terminal state; for each
#                      run the script checks that restored_at is not before the double's
#                      SUCCESS and that the version live at restored_at is v1.
#   instant            the demo service (tests/fakes/health.py) and the `command` provider
#                      running the demo's deploy script with no delay: it only tells the
#                      service which version to serve. What is left is deployq's own
#                      overhead (the pipeline without any provider time).
# The target has `interval: 1s`, `failure_threshold: 3`, `rollback: auto`.
#
# One good version is deployed and verified; then RUNS bad versions, one after the other,
# each followed (`deployq submit --wait --json`) until its rollback.succeeded. For each:
#   MTTR     = restored_at - detected_at (the first failing probe), the event's mttr_ms
#   detect   = decided_at - detected_at: the monitor's rule (3 failures = 2 intervals)
#   restore  = restored_at - decided_at: rollback worker, lock, provider, poll
#   provider = (railway) deploymentRollback call -> the double's deployment SUCCESS
# and the median, min and max of each. Environment: RUNS (default 10), PROVIDER,
# RESTORE_S.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
DEPLOYQ=$build/producer/deployq
RUNS=${RUNS:-10}
PROVIDER=${PROVIDER:-railway}
RESTORE_S=${RESTORE_S:-3}
case $PROVIDER in railway | instant) ;; *) echo "PROVIDER must be railway or instant" >&2; exit 2 ;; esac
[ -x "$build/workers/rollback/deployq-rollback" ] || { echo "build first: scripts/build.sh $build" >&2; exit 1; }
command -v jq >/dev/null || { echo "needs jq" >&2; exit 1; }

T=$(mktemp -d /tmp/dq-bench-mttr.XXXXXX)
export DEPLOYQ_STATE_DIR=$T/state DEPLOYQ_SCHEMAS=$root/schemas
export DEPLOYQ_DEMO_DEPLOY_DELAY_MS=0 # the instant provider double
mkdir -p "$DEPLOYQ_STATE_DIR"
pids=()
cleanup() {
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT

if [ "$PROVIDER" = railway ]; then
    python3 "$root/tests/fakes/railway.py" --port 0 --port-file "$T/rw.port" >"$T/rw.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do [ -s "$T/rw.port" ] && break; sleep 0.1; done
    RWB=http://127.0.0.1:$(cat "$T/rw.port")
    curl -fsS -X POST -d "{\"rollback_seconds\": $RESTORE_S}" "$RWB/_fake/script" >/dev/null
    HEALTH=$RWB/live/svc-bench/env-prod/health
    PROVIDER_YAML="{type: railway, name: rw, base_url: \"$RWB/graphql/v2\", token: bench-token, service_id: svc-bench, environment_id: env-prod, rollback: rollback, poll_interval: 100ms, deadline: 60s}"
    DESCRIBE="the Railway double, rollback: rollback taking ${RESTORE_S} s at the provider"
else
    python3 "$build/producer/demo/health.py" --port 0 --port-file "$T/health.port" >"$T/health.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do [ -s "$T/health.port" ] && break; sleep 0.1; done
    H=http://127.0.0.1:$(cat "$T/health.port")
    HEALTH=$H/health
    PROVIDER_YAML="{type: command, name: instant, argv: [python3, \"$build/producer/demo/deploy.py\", \"$H\", \"{version}\"], poll_interval: 100ms, deadline: 30s}"
    DESCRIBE="instant command provider"
fi

"$DEPLOYQ" keygen --out "$T/ci.key" --id ci-bench >/dev/null
pub=$(openssl pkey -in "$T/ci.key" -pubout -outform DER | tail -c 32 | base64 -w0)
cat >"$T/deployq.yaml" <<YAML
keys:
  - {id: ci-bench, public_key: "$pub", role: ci}
services:
  bench:
    environments:
      production:
        providers:
          - $PROVIDER_YAML
        rollback: auto
        monitor:
          interval: 1s
          window: 4s
          failure_threshold: 3
          probes:
            - {name: health, type: http, url: "$HEALTH", expect_status: 200, missing: fail}
YAML
"$DEPLOYQ" up --config "$T/deployq.yaml" >"$T/up.out" 2>"$T/up.err" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$DEPLOYQ_STATE_DIR/stack.json" ] && break; sleep 0.1; done
[ -s "$DEPLOYQ_STATE_DIR/stack.json" ] || { cat "$T/up.err"; echo "deployq up did not start" >&2; exit 1; }

submit() { # submit VERSION: follow it to its outcome, its events as JSON lines on stdout
    "$DEPLOYQ" submit --service bench --env production --version "$1" --key "$T/ci.key" \
        --key-id ci-bench --wait --json --timeout 60 || true
}
submit v1 >"$T/v1.jsonl"
jq -e 'select(.outcome == "deployed")' "$T/v1.jsonl" >/dev/null ||
    { cat "$T/v1.jsonl"; echo "v1 was not verified" >&2; exit 1; }

: >"$T/runs"
for i in $(seq 1 "$RUNS"); do
    submit "v$((i + 1))-bad" >"$T/run$i.jsonl"
    ev=$(jq -c 'select(.type == "rollback.succeeded")' "$T/run$i.jsonl")
    [ -n "$ev" ] || { cat "$T/run$i.jsonl"; echo "run $i: no rollback.succeeded" >&2; exit 1; }
    [ "$(jq -r .data.to_version <<<"$ev")" = v1 ] || { echo "run $i: rolled back to the wrong version: $ev" >&2; exit 1; }
    ms() { date -u -d "$1" +%s%3N; }
    det=$(ms "$(jq -r .data.detected_at <<<"$ev")")
    dec=$(ms "$(jq -r .data.decided_at <<<"$ev")")
    res=$(ms "$(jq -r .data.restored_at <<<"$ev")")
    mttr=$(jq -r .data.mttr_ms <<<"$ev")
    [ "$mttr" -eq $((res - det)) ] || { echo "run $i: mttr_ms $mttr != restored - detected $((res - det))" >&2; exit 1; }
    prov=0
    if [ "$PROVIDER" = railway ]; then
        # what the double did: when the rollback's deployment was asked for and went live
        rbdep=$(jq -r .data.provider_deployment_id <<<"$ev")
        live=$(curl -fsS "$RWB/live/svc-bench/env-prod")
        ok_ms=$(jq -r --arg id "$rbdep" '[.history[] | select(.deployment_id == $id)][0].at * 1000 | floor' <<<"$live")
        call_ms=$(curl -fsS "$RWB/_fake/calls" |
            jq -r '[.calls[] | select(.body.query // "" | test("deploymentRollback"))] | last | .time * 1000 | floor')
        [ "$ok_ms" != null ] || { echo "run $i: the double never served $rbdep" >&2; exit 1; }
        [ "$res" -ge "$ok_ms" ] || { echo "run $i: restored_at $((ok_ms - res)) ms before the provider's SUCCESS" >&2; exit 1; }
        at_res=$(jq -r --argjson t "$res" '[.history[] | select(.at * 1000 <= $t)] | last | .version' <<<"$live")
        [ "$at_res" = v1 ] || { echo "run $i: $at_res was live at restored_at, not v1" >&2; exit 1; }
        prov=$((ok_ms - call_ms))
    fi
    printf '%s %s %s %s\n' "$mttr" $((dec - det)) $((res - dec)) "$prov" >>"$T/runs"
    printf 'run %2d: MTTR %5d ms (detect %5d ms, restore %4d ms' "$i" "$mttr" $((dec - det)) $((res - dec))
    [ "$PROVIDER" = railway ] && printf ', of which the provider %4d ms' "$prov"
    printf ')\n'
done

stats() { # stats COLUMN: median min max of a column of $T/runs, in seconds
    cut -d' ' -f"$1" "$T/runs" | sort -n | awk '{v[NR]=$1} END {
        m = NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
        printf "median %.2f s, min %.2f s, max %.2f s", m/1000, v[1]/1000, v[NR]/1000 }'
}
echo
echo "MTTR over $RUNS rollbacks (interval 1s, failure_threshold 3, $DESCRIBE, embedded broker):"
echo "  first failing probe -> rollback.succeeded: $(stats 1)"
echo "  first failing probe -> rollback decided:   $(stats 2)"
echo "  decided -> restored:                       $(stats 3)"
[ "$PROVIDER" = railway ] &&
    echo "  the provider's restore (rollback call -> SUCCESS at the double): $(stats 4)"
exit 0
