#!/usr/bin/env bash
# Canary releases through a real HAProxy (issue 15's "done when"): two tests/fakes/health.py
# are the blue and green colors behind an HAProxy frontend whose weights deployq sets over
# the runtime API (a stats socket); the validator and the executor run the deploys.
#   1. the first deploy (nothing live) goes straight to 100: one canary.step, promoted;
#   2. a good v2 walks 5, 25, 50, 100 - HAProxy says each weight while its step holds -
#      and is promoted: traffic.switched, deploy.succeeded, HAProxy green 100;
#      (that 1000 requests through HAProxy land within 5 points of each weight is
#      0512-router-haproxy's to show: here the weights HAProxy reports at each step)
#   3. a bad v3 (mostly 500s) is aborted at its first step: canary.analysis failed,
#      canary.aborted at weight 5 with the weight restored, HAProxy canary 0, then
#      rollback.succeeded with its MTTR and deploy.failed reason canary_aborted;
#   4. a v4 that is only slower (150 ms against 0) is aborted at step 1 by the
#      Mann-Whitney test, its numbers in canary.analysis;
#   5. HAProxy killed during step 2 and started again ~2 s later with its configuration:
#      the rollout stops, canary.aborted reason router, weight_restored once HAProxy is
#      back, and the stable version serves.
# Every event is checked against schemas/.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"

HAPROXY=/usr/sbin/haproxy
[ -x "$HAPROXY" ] || fail "$HAPROXY is missing (scripts/install-deps.sh installs haproxy)"

start_redis
start_broker
start_fake BLUE health
start_fake GREEN health

# ---- HAProxy in front of the two colors ----
FRONT=$(free_port)
SOCK="$T/admin.sock"
HAPROXY_PY="$DEPLOYQ_SOURCE/tests/fakes/haproxy.py"
"$PY" "$HAPROXY_PY" config --socket "$SOCK" --front "$FRONT" --blue "$FAKE_PORT_BLUE" \
    --green "$FAKE_PORT_GREEN" >"$T/haproxy.cfg"
start_haproxy() {
    rm -f "$SOCK"
    "$HAPROXY" -db -f "$T/haproxy.cfg" >>"$T/haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    PIDS+=("$HAPROXY_PID")
    wait_for 10 test -S "$SOCK" || fail "haproxy did not start"
}
start_haproxy
# hap_weights: "blue=N green=N" as HAProxy's runtime API says (get weight)
hap_weights() { "$PY" "$HAPROXY_PY" weights "$SOCK"; }
through_edge() { curl -fsS "http://127.0.0.1:$FRONT/health"; }

# ---- the deploy: a version's behaviour comes from $T/versions/<version>.json ----
mkdir -p "$T/versions"
cat >"$T/deploy.sh" <<'SH'
#!/bin/sh
# deploy.sh URL VERSION: the health double at URL now serves VERSION, behaving as
# $VERSIONS/VERSION.json says, else answering 200 "VERSION: ok".
url=$1 v=$2
b=$(cat "$VERSIONS/$v.json" 2>/dev/null || printf '{"status": 200, "body": "%s: ok"}' "$v")
curl -fsS -X POST -H 'Content-Type: application/json' -d "$b" "$url/_fake/script" >/dev/null &&
    curl -fsS -X POST -H 'Content-Type: application/json' -d "{\"version\": \"$v\"}" "$url/_fake/deploy" >/dev/null
SH
chmod +x "$T/deploy.sh"
export VERSIONS="$T/versions"
# v3: broken, but its first answer (the probe before any traffic) is fine
echo '{"pattern": [200, 500, 500, 500], "body": "v3: broken"}' >"$T/versions/v3.json"
# v4: correct answers, 150 ms slower
echo '{"status": 200, "latency_ms": 150, "body": "v4: slow"}' >"$T/versions/v4.json"

write_exec_config "  web:
    environments:
      production:
        strategy: canary
        blue_green:
          colors:
            blue:
              providers:
                - {type: command, name: deploy-blue, argv: [\"$T/deploy.sh\", \"$FAKE_URL_BLUE\", \"{version}\"], poll_interval: 100ms, deadline: 30s}
              probe_url: \"$FAKE_URL_BLUE/health\"
            green:
              providers:
                - {type: command, name: deploy-green, argv: [\"$T/deploy.sh\", \"$FAKE_URL_GREEN\", \"{version}\"], poll_interval: 100ms, deadline: 30s}
              probe_url: \"$FAKE_URL_GREEN/health\"
          probe: {expect_status: 200, timeout: 2s, max_latency: 1s, attempts: 3, interval: 300ms}
          router: {type: haproxy, name: edge, socket: \"$SOCK\", backend: web, servers: {blue: web_blue, green: web_green}, timeout: 1s}
        canary:
          steps:
            - {weight: 5, analysis: 2s}
            - {weight: 25, analysis: 2s}
            - {weight: 50, pause: 2s}
            - 100
          max_step_time: 10s
          analysis:
            duration: 2s
            interval: 100ms
            min_samples: 10
            error_tolerance: 1%
            max_error_rate: 5%
            latency: {alpha: 0.05, tolerance: 10%}
"
"$DEPLOYQ" check --config "$CONFIG" --no-checks >"$T/check.out" 2>&1 || fail "deployq check: $(cat "$T/check.out")"
start_validator a
start_executor a

steps_of() { events_for "$1" canary.step | jq -r '"\(.data.step)/\(.data.steps):\(.data.weight)"' | paste -sd, -; }

log "1. v1, the first deploy: nothing live, straight to 100"
d1=$(submit --service web --env production --version v1)
ev=$(terminal "$d1" 30) || fail "no outcome for v1"
assert_eq "$(jq -r .type <<<"$ev")" deploy.succeeded "v1 outcome"
assert_eq "$(steps_of "$d1")" "1/1:100" "v1's canary.step"
assert_eq "$(events_for "$d1" | jq -r 'select(.type | test("^canary|^traffic|^deploy.succ")) | .type' | paste -sd, -)" \
    "canary.step,canary.promoted,traffic.switched,deploy.succeeded" "v1's events in order"
assert_eq "$(hap_weights)" "blue=100 green=0" "haproxy after v1"
assert_eq "$(through_edge)" "v1: ok" "v1 serves through haproxy"

log "2. v2, good: 5, 25, 50, 100 - haproxy says each weight while its step holds - promoted"
# a poller asks HAProxy for both weights every 50 ms ("epoch_ms blue green"), so each step's
# weight is checked over the whole time it holds, however late this shell reads the events
"$PY" "$HAPROXY_PY" poll "$SOCK" "$T/poll.stop" >"$T/poll.txt" 2>/dev/null &
POLL_PID=$!
PIDS+=("$POLL_PID")
d2=$(submit --service web --env production --version v2)
ev=$(terminal "$d2" 30) || fail "no outcome for v2"
assert_eq "$(jq -r .type <<<"$ev")" deploy.succeeded "v2 outcome"
assert_eq "$(steps_of "$d2")" "1/4:5,2/4:25,3/4:50,4/4:100" "v2's steps"
touch "$T/poll.stop"
wait "$POLL_PID" 2>/dev/null || true
# each step's window: from its canary.step to the next one's (promotion for the last),
# less 100 ms at each end (the poller's two reads are not one instant)
ms_of() { "$PY" -c 'import sys, datetime; print(int(datetime.datetime.fromisoformat(sys.argv[1].replace("Z", "+00:00")).timestamp() * 1000))' "$1"; }
bounds=()
while read -r at; do bounds+=("$(ms_of "$at")"); done < <(events_for "$d2" canary.step | jq -r .at)
bounds+=("$(ms_of "$(events_for "$d2" canary.promoted | jq -r .at)")")
k=0
for w in 5 25 50 100; do
    lo=$((bounds[k] + 100)) hi=$((bounds[k + 1] - 100))
    seen=$(awk -v lo=$lo -v hi=$hi '$1 >= lo && $1 <= hi { print "blue=" $2 " green=" $3 }' "$T/poll.txt" | sort | uniq -c | awk '{print $2 " " $3 " x" $1}' | paste -sd, -)
    log "v2 step $((k + 1))/4 at $w%: haproxy said $seen"
    [ -n "$seen" ] || fail "no haproxy reading during v2's step $((k + 1))"
    assert_eq "$(sed 's/ x[0-9]*//' <<<"$seen")" "blue=$((100 - w)) green=$w" "haproxy during v2's step $((k + 1))"
    k=$((k + 1))
done
assert_eq "$(events_for "$d2" canary.step | jq -r '"\(.data.kind) \(.data.canary_color) \(.data.stable_color) \(.data.stable_version) \(.data.router)"' | sort -u | paste -sd, -)" \
    "analysis green blue v1 edge,pause green blue v1 edge" "v2's canary.step data"
assert_eq "$(events_for "$d2" canary.analysis | jq -r '"\(.data.step):\(.data.passed)"' | paste -sd, -)" \
    "1:true,2:true,4:true" "v2's analyses (step 3 is a pause)"
assert_eq "$(events_for "$d2" | jq -r 'select(.type | test("^canary.(promoted|aborted)|^traffic|^deploy.(succ|fail)")) | .type' | paste -sd, -)" \
    "canary.promoted,traffic.switched,deploy.succeeded" "v2's ending"
assert_eq "$(events_for "$d2" canary.promoted | jq -r '.data | "\(.steps) \(.canary_color) \(.stable_color)"')" "4 green blue" "canary.promoted"
assert_eq "$(hap_weights)" "blue=0 green=100" "haproxy after v2"
assert_eq "$(through_edge)" "v2: ok" "v2 serves through haproxy"

log "3. v3, errors: aborted at its first step, the canary's weight back to 0 (followed with submit --wait)"
rc=0
submit --wait --timeout 60 --service web --env production --version v3 >"$T/v3.out" 2>"$T/v3.err" || rc=$?
d3=$(head -n1 "$T/v3.out")
assert_eq "$rc" 4 "submit --wait's exit code for an aborted canary (rolled back)"
grep -q "canary.step  *web/production v3  step 1/4: 5% to blue$" "$T/v3.out" || fail "submit --wait: no step line: $(cat "$T/v3.out")"
grep -q "canary.analysis  *web/production v3  step 1/4 at 5% failed: errors" "$T/v3.out" ||
    fail "submit --wait: no verdict line: $(cat "$T/v3.out")"
grep -q "canary.aborted  *web/production v3  aborted at 5% (step 1): analysis: .*; traffic back on the stable version in [0-9]* ms$" "$T/v3.out" ||
    fail "submit --wait: no abort line: $(cat "$T/v3.out")"
ev=$(terminal "$d3" 30) || fail "no outcome for v3"
assert_eq "$(jq -r .type <<<"$ev")" deploy.failed "v3 outcome"
assert_eq "$(jq -r .data.reason <<<"$ev")" canary_aborted "v3's deploy.failed reason"
log "v3: $(jq -r .data.detail <<<"$ev")"
assert_eq "$(steps_of "$d3")" "1/4:5" "v3 reached step 1 only"
an=$(events_for "$d3" canary.analysis)
assert_eq "$(jq -r '"\(.data.step) \(.data.passed) \(.data.result)"' <<<"$an")" "1 false fail" "v3's canary.analysis"
jq -e '.data.canary.errors >= 3 and .data.stable.errors == 0 and (.data.reason | startswith("errors"))' <<<"$an" >/dev/null ||
    fail "v3's analysis does not carry the error numbers: $an"
ab=$(events_for "$d3" canary.aborted)
assert_eq "$(jq -r '.data | "\(.step) \(.weight) \(.max_weight) \(.reason) \(.weight_restored) \(.canary_color) \(.stable_color)"' <<<"$ab")" \
    "1 5 5 analysis true blue green" "v3's canary.aborted"
ttz=$(jq -r .data.time_to_zero_ms <<<"$ab")
log "v3: time from the first bad sample to weight 0: ${ttz} ms"
[ "$ttz" -ge 0 ] && [ "$ttz" -lt 5000 ] || fail "v3's time_to_zero_ms $ttz"
assert_eq "$(hap_weights)" "blue=0 green=100" "haproxy after v3: canary 0"
ok=$(events_for "$d3" rollback.succeeded)
assert_eq "$(jq -r '.data | "\(.method) \(.requested_by) \(.from_version) \(.to_version) \(.provider)"' <<<"$ok")" \
    "canary_abort deployq-executor v3 v2 edge" "v3's rollback.succeeded"
mttr=$(jq -r .data.mttr_ms <<<"$ok")
[ "$mttr" -ge 0 ] && [ "$mttr" -lt 5000 ] || fail "v3's mttr_ms $mttr"
assert_eq "$(events_for "$d3" | jq -r 'select(.type | test("^canary.(analysis|aborted)|^rollback|^deploy.(succ|fail)|^traffic")) | .type' | paste -sd, -)" \
    "canary.analysis,canary.aborted,rollback.started,rollback.succeeded,deploy.failed" "v3's events in order"
assert_eq "$(through_edge)" "v2: ok" "the stable v2 serves after v3"

log "4. v4, only slower: aborted at step 1 by the Mann-Whitney test"
d4=$(submit --service web --env production --version v4)
ev=$(terminal "$d4" 30) || fail "no outcome for v4"
assert_eq "$(jq -r '"\(.type) \(.data.reason)"' <<<"$ev")" "deploy.failed canary_aborted" "v4 outcome"
an=$(events_for "$d4" canary.analysis)
log "v4: $(jq -r .data.reason <<<"$an")"
assert_eq "$(jq -r '"\(.data.step) \(.data.passed) \(.data.latency.test) \(.data.latency.tested)"' <<<"$an")" \
    "1 false mann-whitney-u true" "v4's canary.analysis"
jq -e '.data.canary.errors == 0 and .data.latency.p_value < .data.latency.alpha and .data.canary.p50_ms >= 150
       and .data.stable.p50_ms < 100 and (.data.reason | startswith("latency"))' <<<"$an" >/dev/null ||
    fail "v4's analysis does not carry the latency numbers: $an"
assert_eq "$(events_for "$d4" canary.aborted | jq -r '.data | "\(.step) \(.weight) \(.reason) \(.weight_restored)"')" \
    "1 5 analysis true" "v4's canary.aborted"
assert_eq "$(hap_weights)" "blue=0 green=100" "haproxy after v4"

log "5. v5: haproxy killed during step 2, started again 2 s later: stopped, weight back to stable"
d5=$(submit --service web --env production --version v5)
# step 2 is under way once HAProxy says so (asked directly: reading the events is slower)
end=$((SECONDS + 30))
until [ "$(hap_weights 2>/dev/null)" = "blue=25 green=75" ]; do
    [ $SECONDS -lt $end ] || fail "v5's step 2 never reached haproxy"
    sleep 0.05
done
kill -KILL "$HAPROXY_PID"
wait "$HAPROXY_PID" 2>/dev/null || true
sleep 2
start_haproxy
ev=$(terminal "$d5" 30) || fail "no outcome for v5"
assert_eq "$(jq -r '"\(.type) \(.data.reason)"' <<<"$ev")" "deploy.failed canary_aborted" "v5 outcome"
ab=$(events_for "$d5" canary.aborted)
log "v5: $(jq -r .data.detail <<<"$ab")"
assert_eq "$(jq -r '.data | "\(.step) \(.weight) \(.max_weight) \(.reason) \(.weight_restored)"' <<<"$ab")" \
    "2 25 25 router true" "v5's canary.aborted"
ttz=$(jq -r .data.time_to_zero_ms <<<"$ab")
log "v5: router gone to weight 0 confirmed: ${ttz} ms"
[ "$ttz" -ge 1500 ] || fail "v5's weight was confirmed before haproxy was back ($ttz ms)"
assert_eq "$(hap_weights)" "blue=0 green=100" "haproxy after v5: the stable has it all"
assert_eq "$(through_edge)" "v2: ok" "the stable v2 serves after v5"
assert_eq "$(events_for "$d5" rollback.succeeded | jq -r .data.method)" canary_abort "v5's rollback"

log "6. the registry: status, replay --at during v2's step 2, report's canary catches"
. "$(dirname "$0")/helpers-registry.sh"
start_registry a
nev=$(events | wc -l)
wait_for 30 registry_has "$nev" || fail "the registry holds $(registry_records) of $nev events"
"$DEPLOYQ" status --dir "$REG_DIR" --service web --env production >"$T/status.txt"
grep -q "canary: aborted at 25%: router" "$T/status.txt" || fail "status has no canary line: $(cat "$T/status.txt")"
at=$(events_for "$d2" canary.step | jq -r 'select(.data.step == 2) | .at')
"$DEPLOYQ" replay --dir "$REG_DIR" --at "$at" --json >"$T/replay.json"
assert_eq "$(jq -r '.targets[] | select(.service == "web") | .canary | "\(.status) \(.step)/\(.steps) \(.weight) \(.canary_color)"' "$T/replay.json")" \
    "running 2/4 25 green" "replay --at v2's step 2"
"$DEPLOYQ" report --dir "$REG_DIR" --json >"$T/report.json"
assert_eq "$(jq -c '[.deployments.caught_by_canary, .caught_by_canary_share.n, .caught_by_canary_share.median, .caught_by_canary_share.max]' "$T/report.json")" "[3,3,5,25]" \
    "report: v3, v4 and v5 caught by their canary (at 5%, 5% and 25% of the traffic)"

events | jq -c 'select(.type | test("^canary|^traffic|^rollback|^deploy"))' >"$T/canary-events.jsonl"
n=$(wc -l <"$T/canary-events.jsonl")
assert_eq "$(schema_check <"$T/canary-events.jsonl")" "$n" "events valid against schemas/"
echo ok
