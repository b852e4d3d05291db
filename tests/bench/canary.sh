#!/usr/bin/env bash
# tests/bench/canary.sh [BUILD_DIR]: how long a bad canary keeps its traffic - from its first
# bad answer to the router confirming its weight 0 - on the whole stack (`deployq up`) with
# a real HAProxy (/usr/sbin/haproxy) in front of two tests/fakes/health.py colors.
#
# v1 is deployed first (the first deploy: straight to 100, blue). Then RUNS canaries, one
# after the other, each to green: steps [{weight: 10, analysis: 60s}, 100], one sample of
# each color every INTERVAL. Each canary starts healthy; FLIP_AFTER seconds into its first
# step (HAProxy already says green 10) the bench makes green answer HTTP 500 and notes the
# time, then asks HAProxy `get weight web/web_green` over its stats socket every 2 ms until
# it says 0. Two figures per run:
#   outside = HAProxy says 0 - the flip (what a user of the service sees, measured by the
#             bench alone: it includes the wait for the next sample)
#   inside  = canary.aborted's time_to_zero_ms: first failed canary sample -> the router
#             confirmed weight 0 (deployq's own figure; first_bad_at is checked to be after
#             the flip)
# and their median and max, next to Flagger's default: its analysis runs every
# `analysis.interval` (1m) and rolls back after `threshold` (5) failed checks, so a canary
# failing from its first check is rolled back after about 5 min (Flagger docs, "Canary
# analysis": interval x threshold).
#
# Environment: RUNS (default 5), INTERVAL (default 200ms), MIN_SAMPLES (default 20),
# FLIP_AFTER (seconds, default 1). Needs haproxy, jq, curl, python3.
set -euo pipefail
case ${1:-} in -h | --help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
cd "$(dirname "$0")/../.."
root=$(pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
DEPLOYQ=$build/producer/deployq
RUNS=${RUNS:-5}
INTERVAL=${INTERVAL:-200ms}
MIN_SAMPLES=${MIN_SAMPLES:-20}
FLIP_AFTER=${FLIP_AFTER:-1}
HAPROXY=/usr/sbin/haproxy
[ -x "$build/workers/executor/deployq-executor" ] || { echo "build first: scripts/build.sh $build" >&2; exit 1; }
[ -x "$HAPROXY" ] || { echo "needs $HAPROXY (scripts/install-deps.sh)" >&2; exit 1; }
command -v jq >/dev/null || { echo "needs jq" >&2; exit 1; }

T=$(mktemp -d /tmp/dq-bench-canary.XXXXXX)
export DEPLOYQ_STATE_DIR=$T/state DEPLOYQ_SCHEMAS=$root/schemas
mkdir -p "$DEPLOYQ_STATE_DIR"
pids=()
cleanup() {
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT

# the two colors
for c in blue green; do
    python3 "$root/tests/fakes/health.py" --port 0 --port-file "$T/$c.port" >"$T/$c.log" 2>&1 &
    pids+=($!)
done
for c in blue green; do
    for _ in $(seq 1 50); do [ -s "$T/$c.port" ] && break; sleep 0.1; done
    [ -s "$T/$c.port" ] || { echo "health double $c did not start" >&2; exit 1; }
done
BLUE=http://127.0.0.1:$(cat "$T/blue.port")
GREEN=http://127.0.0.1:$(cat "$T/green.port")

# HAProxy
FRONT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
SOCK=$T/admin.sock
python3 tests/fakes/haproxy.py config --socket "$SOCK" --front "$FRONT" --blue "$(cat "$T/blue.port")" \
    --green "$(cat "$T/green.port")" >"$T/haproxy.cfg"
"$HAPROXY" -db -f "$T/haproxy.cfg" >"$T/haproxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$T/haproxy.log"; echo "haproxy did not start" >&2; exit 1; }

# a deploy: the color's double serves the version, healthy
cat >"$T/deploy.sh" <<'SH'
#!/bin/sh
curl -fsS -X POST -d "{\"status\": 200, \"body\": \"$2: ok\"}" "$1/_fake/script" >/dev/null &&
    curl -fsS -X POST -d "{\"version\": \"$2\"}" "$1/_fake/deploy" >/dev/null
SH
chmod +x "$T/deploy.sh"

"$DEPLOYQ" keygen --out "$T/ci.key" --id ci-bench >/dev/null
pub=$(openssl pkey -in "$T/ci.key" -pubout -outform DER | tail -c 32 | base64 -w0)
cat >"$T/deployq.yaml" <<YAML
keys:
  - {id: ci-bench, public_key: "$pub", role: ci}
services:
  bench:
    environments:
      production:
        strategy: canary
        blue_green:
          colors:
            blue:
              providers: [{type: command, name: deploy-blue, argv: ["$T/deploy.sh", "$BLUE", "{version}"], poll_interval: 100ms, deadline: 30s}]
              probe_url: "$BLUE/health"
            green:
              providers: [{type: command, name: deploy-green, argv: ["$T/deploy.sh", "$GREEN", "{version}"], poll_interval: 100ms, deadline: 30s}]
              probe_url: "$GREEN/health"
          probe: {expect_status: 200, timeout: 2s, max_latency: 1s, attempts: 3, interval: 300ms}
          router: {type: haproxy, name: edge, socket: "$SOCK", backend: web, servers: {blue: web_blue, green: web_green}, timeout: 1s}
        canary:
          steps:
            - {weight: 10, analysis: 60s}
            - 100
          max_step_time: 2m
          analysis: {interval: $INTERVAL, min_samples: $MIN_SAMPLES}
YAML
"$DEPLOYQ" up --config "$T/deployq.yaml" >"$T/up.out" 2>"$T/up.err" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$DEPLOYQ_STATE_DIR/stack.json" ] && break; sleep 0.1; done
[ -s "$DEPLOYQ_STATE_DIR/stack.json" ] || { cat "$T/up.err"; echo "deployq up did not start" >&2; exit 1; }

submit() { # submit VERSION: follow it to its outcome, its events as JSON lines on stdout
    "$DEPLOYQ" submit --service bench --env production --version "$1" --key "$T/ci.key" \
        --key-id ci-bench --wait --json --timeout 120 || true
}
submit v1 >"$T/v1.jsonl"
jq -se 'any(.[]; .type == "canary.promoted")' "$T/v1.jsonl" >/dev/null ||
    { cat "$T/v1.jsonl"; echo "v1 was not deployed" >&2; exit 1; }

# flip_and_watch: wait for HAProxy to give green 10, FLIP_AFTER s later make green answer
# 500, then poll green's weight until 0; prints "<flip ms> <zero ms>" (epoch ms).
flip_and_watch() {
    python3 - "$SOCK" "$GREEN" "$FLIP_AFTER" "$root/tests/fakes" <<'PY'
import sys, time, urllib.request
sock, green, after = sys.argv[1], sys.argv[2], float(sys.argv[3])
sys.path.insert(0, sys.argv[4])
import haproxy
def weight():
    try:
        return haproxy.weight(sock, "web_green")
    except (OSError, ValueError, IndexError):
        return -1
end = time.time() + 60
while weight() != 10:
    if time.time() > end:
        sys.exit("green never reached weight 10")
    time.sleep(0.01)
time.sleep(after)
req = urllib.request.Request(green + "/_fake/script", data=b'{"status": 500, "body": "broken"}',
                             method="POST", headers={"Content-Type": "application/json"})
flip = time.time()
urllib.request.urlopen(req, timeout=5).read()
end = time.time() + 120
while weight() != 0:
    if time.time() > end:
        sys.exit("green's weight never went back to 0")
    time.sleep(0.002)
zero = time.time()
print("%d %d" % (flip * 1000, zero * 1000))
PY
}

: >"$T/runs"
for i in $(seq 1 "$RUNS"); do
    v="v$((i + 1))"
    submit "$v" >"$T/run$i.jsonl" &
    sub=$!
    times=$(flip_and_watch) || { echo "run $i: $times" >&2; exit 1; }
    wait "$sub" || true
    ab=$(jq -c 'select(.type == "canary.aborted")' "$T/run$i.jsonl")
    [ -n "$ab" ] || { cat "$T/run$i.jsonl"; echo "run $i: no canary.aborted" >&2; exit 1; }
    flip=${times% *}
    zero=${times#* }
    inside=$(jq -r .data.time_to_zero_ms <<<"$ab")
    first_bad=$(date -u -d "$(jq -r .data.first_bad_at <<<"$ab")" +%s%3N)
    [ "$first_bad" -ge "$flip" ] || { echo "run $i: first_bad_at $((flip - first_bad)) ms before the flip" >&2; exit 1; }
    [ "$(jq -r '.data | "\(.weight) \(.reason) \(.weight_restored)"' <<<"$ab")" = "10 analysis true" ] ||
        { echo "run $i: unexpected canary.aborted: $ab" >&2; exit 1; }
    printf '%s %s\n' $((zero - flip)) "$inside" >>"$T/runs"
    printf 'run %2d: flip -> HAProxy says 0: %5d ms; first bad sample -> router confirmed 0 (time_to_zero_ms): %5d ms\n' \
        "$i" $((zero - flip)) "$inside"
done

stats() { # stats COLUMN: median and max of a column of $T/runs, in ms
    cut -d' ' -f"$1" "$T/runs" | sort -n | awk '{v[NR]=$1} END {
        m = NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
        printf "median %6.0f ms, max %6.0f ms", m, v[NR] }'
}
echo
echo "A bad canary at 10% until its weight is 0, over $RUNS runs (interval $INTERVAL, min_samples $MIN_SAMPLES, real HAProxy, embedded broker):"
echo "  bad from the flip -> HAProxy says 0 (measured outside):  $(stats 1)"
echo "  first bad sample -> router confirmed 0 (time_to_zero_ms): $(stats 2)"
echo "  Flagger's default: analysis.interval 1m x threshold 5 =   300000 ms (5 min) before the rollback"
exit 0
