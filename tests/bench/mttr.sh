#!/usr/bin/env bash
# tests/bench/mttr.sh [BUILD_DIR]: time to restore after a bad deploy, measured end to end
# on the whole stack (`deployq up`: validator, executor, monitor, rollback worker).
#
# The service is the demo service (tests/fakes/health.py); the provider is the `command`
# provider running the demo's deploy script with no delay (an instant provider double:
# it only tells the service which version to serve; *-bad versions answer HTTP 500).
# The target has `interval: 1s`, `failure_threshold: 3`, `rollback: auto`.
#
# One good version is deployed and verified; then RUNS bad versions, one after the other,
# each followed (`deployq submit --wait --json`) until its rollback.succeeded. For each:
#   MTTR     = restored_at - detected_at (the first failing probe), the event's mttr_ms
#   detect   = decided_at - detected_at: the monitor's rule (3 failures = 2 intervals)
#   restore  = restored_at - decided_at: rollback worker, lock, provider, poll
# and the median, min and max of each. Environment: RUNS (default 10).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
DEPLOYQ=$build/producer/deployq
RUNS=${RUNS:-10}
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

python3 "$build/producer/demo/health.py" --port 0 --port-file "$T/health.port" >"$T/health.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$T/health.port" ] && break; sleep 0.1; done
H=http://127.0.0.1:$(cat "$T/health.port")

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
          - {type: command, name: instant, argv: [python3, "$build/producer/demo/deploy.py", "$H", "{version}"], poll_interval: 100ms, deadline: 30s}
        rollback: auto
        monitor:
          interval: 1s
          window: 4s
          failure_threshold: 3
          probes:
            - {name: health, type: http, url: "$H/health", expect_status: 200, missing: fail}
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
    printf '%s %s %s\n' "$mttr" $((dec - det)) $((res - dec)) >>"$T/runs"
    printf 'run %2d: MTTR %5d ms (detect %5d ms, restore %4d ms)\n' "$i" "$mttr" $((dec - det)) $((res - dec))
done

stats() { # stats COLUMN: median min max of a column of $T/runs, in seconds
    cut -d' ' -f"$1" "$T/runs" | sort -n | awk '{v[NR]=$1} END {
        m = NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
        printf "median %.2f s, min %.2f s, max %.2f s", m/1000, v[1]/1000, v[NR]/1000 }'
}
echo
echo "MTTR over $RUNS rollbacks (interval 1s, failure_threshold 3, instant command provider, embedded broker):"
echo "  first failing probe -> rollback.succeeded: $(stats 1)"
echo "  first failing probe -> rollback decided:   $(stats 2)"
echo "  decided -> restored:                       $(stats 3)"
