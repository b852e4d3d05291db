#!/usr/bin/env bash
# Blue-green: a deploy goes to the idle color through that color's provider, the idle
# color is probed before any traffic moves, the router (tests/fakes/router.py) is told to
# switch, and traffic.switched says so; an idle color that fails its probe ends the deploy
# as deploy.failed with traffic untouched; a rollback within the window is a switch back
# to the old color (traffic.switched, then rollback.succeeded with method traffic_switch),
# not a redeploy. Runs the validator, executor, monitor and rollback workers.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"
. "$(dirname "$0")/helpers-monitor.sh"
. "$(dirname "$0")/helpers-rollback.sh"

DEPLOY_PY="$DEPLOYQ_SOURCE/producer/demo/deploy.py"
export DEPLOYQ_DEMO_DEPLOY_DELAY_MS=0

switches() { fake_calls ROUTER | jq -r '[.switches[].color] | join(",")'; }
has_type() { [ -n "$(events_for "$1" "$2")" ]; }

start_redis
start_broker
start_fake BLUE health
start_fake GREEN health
start_fake ROUTER router --backends "{\"blue\": \"$FAKE_URL_BLUE\", \"green\": \"$FAKE_URL_GREEN\"}"
write_exec_config "  web:
    environments:
      production:
        strategy: blue-green
        rollback: auto
        blue_green:
          colors:
            blue:
              providers:
                - {type: command, name: deploy-blue, argv: [python3, \"$DEPLOY_PY\", \"$FAKE_URL_BLUE\", \"{version}\"], poll_interval: 100ms, deadline: 30s}
              probe_url: \"$FAKE_URL_BLUE/health\"
            green:
              providers:
                - {type: command, name: deploy-green, argv: [python3, \"$DEPLOY_PY\", \"$FAKE_URL_GREEN\", \"{version}\"], poll_interval: 100ms, deadline: 30s}
              probe_url: \"$FAKE_URL_GREEN/health\"
          probe: {expect_status: 200, timeout: 2s, attempts: 3, interval: 300ms}
          router: {type: http, name: edge, url: \"$FAKE_URL_ROUTER/switch\", body: '{\"color\":\"{color}\",\"service\":\"{service}\"}'}
        monitor:
          interval: 1s
          window: 6s
          failure_threshold: 3
          probes:
            - {name: edge, type: http, url: \"$FAKE_URL_ROUTER/health\", expect_status: 200, missing: fail}
"
start_validator a
start_executor a
start_monitor a
start_rollback a

log "1. the first deploy: v1 to blue (nothing live yet), probed, then traffic moves"
d1=$(submit --service web --env production --version v1)
ev=$(terminal "$d1" 60) || fail "no outcome for v1"
assert_eq "$(jq -r .type <<<"$ev")" deploy.succeeded "v1 outcome"
assert_eq "$(jq -r .data.provider <<<"$ev")" deploy-blue "v1 went to blue"
sw=$(events_for "$d1" traffic.switched)
assert_eq "$(jq -r '.data | "\(.from_color)>\(.to_color) \(.router) \(.initial)"' <<<"$sw")" "green>blue edge true" "v1 traffic.switched"
assert_eq "$(jq -r .fence <<<"$sw")" "$(jq -r .fence <<<"$ev")" "traffic.switched carries the lock's fence"
# the switch came before success, and the router got the fence and the filled-in body
assert_eq "$(events_for "$d1" | jq -r 'select(.type == "traffic.switched" or .type == "deploy.succeeded") | .type' | paste -sd, -)" \
    "traffic.switched,deploy.succeeded" "order of the switch and the outcome"
assert_eq "$(switches)" blue "router switches after v1"
assert_eq "$(fake_calls ROUTER | jq -r '.switches[0].fence')" "$(jq -r .fence <<<"$ev")" "fence sent to the router"
assert_eq "$(fake_calls ROUTER | jq -c '.switches[0].body')" '{"color":"blue","service":"web"}' "router body"
assert_eq "$(curl -fsS "$FAKE_URL_ROUTER/health")" "v1: ok" "the router serves v1 from blue"
wait_event "$d1" deploy.verified 30 >/dev/null || fail "v1 was not verified"

log "2. v2-bad to green: green fails its probe, no traffic moves, deploy.failed"
d2=$(submit --service web --env production --version v2-bad)
ev=$(terminal "$d2" 60) || fail "no outcome for v2-bad"
assert_eq "$(jq -r .type <<<"$ev")" deploy.failed "v2-bad outcome"
assert_eq "$(jq -r .data.provider <<<"$ev")" deploy-green "v2-bad went to green"
assert_eq "$(jq -r .data.reason <<<"$ev")" internal "v2-bad reason"
assert_eq "$(jq -r .data.detail <<<"$ev")" \
    "blue-green: the idle color green failed its probe, traffic not moved: status 500, expected 200" "v2-bad detail"
has_type "$d2" traffic.switched && fail "traffic.switched for a deploy whose idle color failed"
assert_eq "$(switches)" blue "router switches after v2-bad"
assert_eq "$(curl -fsS "$FAKE_URL_ROUTER/health")" "v1: ok" "blue still serves v1"

log "3. v3 to green, switched; then green degrades: the rollback is a switch back to blue"
d3=$(submit --service web --env production --version v3)
ev=$(terminal "$d3" 60) || fail "no outcome for v3"
assert_eq "$(jq -r .type <<<"$ev")" deploy.succeeded "v3 outcome"
assert_eq "$(jq -r .data.provider <<<"$ev")" deploy-green "v3 went to green"
assert_eq "$(events_for "$d3" traffic.switched | jq -r '.data | "\(.from_color)>\(.to_color) \(.initial)"')" "blue>green null" "v3 traffic.switched"
assert_eq "$(switches)" blue,green "router switches after v3"
wait_event "$d3" monitor.started 30 >/dev/null || fail "v3 not watched"
fake_script GREEN '{"status": 500, "body": "v3: broken"}'
ok=$(wait_event "$d3" rollback.succeeded 40) || fail "no rollback.succeeded for v3"
assert_eq "$(jq -r .data.method <<<"$ok")" traffic_switch "rollback method"
assert_eq "$(jq -r .data.to_version <<<"$ok")" v1 "rolled back to"
assert_eq "$(jq -r .data.from_version <<<"$ok")" v3 "rolled back from"
assert_eq "$(jq -r .data.provider <<<"$ok")" edge "rollback via the router"
started=$(events_for "$d3" rollback.started)
assert_eq "$(jq -r .data.method <<<"$started")" traffic_switch "rollback.started method"
back=$(events_for "$d3" traffic.switched | jq -c 'select(.data.to_color == "blue")')
assert_eq "$(jq -r '.data | "\(.from_color)>\(.to_color) \(.router) \(.request_id)"' <<<"$back")" \
    "green>blue edge $(jq -r .data.request_id <<<"$ok")" "switch-back traffic.switched"
assert_eq "$(events_for "$d3" | jq -r 'select(.type | startswith("rollback.") or . == "traffic.switched") | .type' | paste -sd, -)" \
    "traffic.switched,rollback.requested,rollback.started,traffic.switched,rollback.succeeded" "v3's switch, then the rollback's events in order"
assert_eq "$(switches)" blue,green,blue "router switches after the rollback"
assert_eq "$(fake_calls ROUTER | jq -r '.switches[2].fence')" "$(jq -r .fence <<<"$ok")" "the switch back carries the rollback's fence"
assert_eq "$(curl -fsS "$FAKE_URL_ROUTER/health")" "v1: ok" "blue serves v1 again"
# a switch back redeploys nothing: blue's deploy script ran once (v1), green's twice
assert_eq "$(fake_calls BLUE | jq -r .version)" v1 "blue's version"
mttr=$(jq -r .data.mttr_ms <<<"$ok")
[ "$mttr" -lt 10000 ] || fail "switch-back MTTR $mttr ms"
log "switch-back MTTR ${mttr} ms"

events | jq -c 'select(.type == "traffic.switched" or (.type | startswith("rollback.")) or (.type | startswith("deploy.")))' >"$T/bg-events.jsonl"
n=$(wc -l <"$T/bg-events.jsonl")
assert_eq "$(schema_check <"$T/bg-events.jsonl")" "$n" "events valid against schemas/"
echo ok
