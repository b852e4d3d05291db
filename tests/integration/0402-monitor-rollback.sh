#!/usr/bin/env bash
# A deploy whose health fails after a while: once `failure_threshold` (3) probes in a row
# fail, rollback.requested carries the evidence - which probe, what it saw, the threshold,
# the last samples, when the first failing probe ran (detected_at) and when the monitor
# decided. health.degraded is emitted once, on the change of state, not on every sample.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-monitor.sh"

start_redis
start_broker
start_fake H health
write_monitor_config "
  api:
    environments:
      production:
        monitor:
          interval: 1s
          window: 30s
          failure_threshold: 3
          probes:
            - {name: health, type: http, url: \"$FAKE_URL_H/health\", expect_status: 200, missing: fail}"
start_monitor a

dep=$(new_uuid)
inject deploy.succeeded api production v2 "$dep" >/dev/null
wait_event "$dep" monitor.started 60 >/dev/null || fail "no monitor.started"
wait_for 10 health_calls_ge H 2 || fail "the monitor does not probe"
fake_script H '{"status": 503, "body": "down"}'
flipped=$(date +%s%3N)

rb=$(wait_event "$dep" rollback.requested 30) || fail "no rollback.requested"
log "rollback: $rb"
ev=$(jq -c .data.evidence <<<"$rb")
assert_eq "$(jq -r .data.requested_by <<<"$rb")" deployq-monitor requested_by
assert_eq "$(jq -r .data.from_version <<<"$rb")" v2 from_version
assert_eq "$(jq -r .version <<<"$rb")" v2 version
assert_eq "$(jq -r .probe <<<"$ev")" health evidence.probe
assert_eq "$(jq -r .kind <<<"$ev")" consecutive_failures evidence.kind
assert_eq "$(jq -r .check <<<"$ev")" status evidence.check
assert_eq "$(jq -r .observed <<<"$ev")" 503 evidence.observed
assert_eq "$(jq -r .threshold <<<"$ev")" 200 evidence.threshold
assert_eq "$(jq -r .failures <<<"$ev")" 3 evidence.failures
assert_eq "$(jq -r '[.samples[] | select(.counted == "fail")] | length' <<<"$ev")" 3 "failing samples in evidence"
assert_eq "$(jq -r '.samples[-1].status' <<<"$ev")" 503 "last sample's status"
assert_eq "$(jq -r '.samples[-1].detail' <<<"$ev")" "status 503, expected 200" "last sample's detail"
assert_eq "$(jq -r '.samples[0].outcome' <<<"$ev")" pass "the samples before the failure are there too"
# detected_at is the first failing sample; decided_at the third, two intervals later
first_fail=$(jq -r '[.samples[] | select(.counted == "fail")][0].at' <<<"$ev")
assert_eq "$(jq -r .detected_at <<<"$ev")" "$first_fail" "detected_at = first failing probe"
assert_eq "$(jq -r .first_failure_at <<<"$ev")" "$first_fail" first_failure_at
det=$(ms_of "$first_fail")
dec=$(ms_of "$(jq -r .decided_at <<<"$ev")")
[ "$det" -ge "$flipped" ] || fail "detected_at before the service failed"
[ $((dec - det)) -ge 1900 ] && [ $((dec - det)) -le 3000 ] ||
    fail "decision $((dec - det)) ms after detection, expected about 2 intervals"
[ $((det - flipped)) -le 1500 ] || fail "first failure seen $((det - flipped)) ms after the flip"

assert_eq "$(count_events "$dep" health.degraded)" 1 "health.degraded events (one change of state)"
hd=$(events_for "$dep" | jq -c 'select(.type == "health.degraded")')
assert_eq "$(jq -r .data.state <<<"$hd")" degraded health.degraded.state
assert_eq "$(jq -r .data.probe <<<"$hd")" health health.degraded.probe
assert_eq "$(jq -r .data.observed <<<"$hd")" 503 health.degraded.observed
assert_eq "$(jq -r .data.threshold <<<"$hd")" 200 health.degraded.threshold
# the session ended: no more probing, no verdict after the rollback request
sleep 2
c1=$(health_calls H); sleep 1.5; c2=$(health_calls H)
assert_eq "$c2" "$c1" "probes after the verdict"
assert_eq "$(count_events "$dep" deploy.verified)" 0 "deploy.verified after a rollback request"

# A degradation that recovers before the threshold: degraded, recovered, then verified.
fake_reset H
dep2=$(new_uuid)
inject deploy.succeeded api production v3 "$dep2" >/dev/null
wait_event "$dep2" monitor.started 30 >/dev/null || fail "no monitor.started for v3"
fake_script H '{"pattern": [200, 500, 500], "repeat": false}'
wait_event "$dep2" health.degraded 30 >/dev/null || fail "no health.degraded for v3"
wait_for 30 events_ge "$dep2" health.degraded 2 || fail "no recovery for v3"
fake_script H '{"status": 200}'
states=$(events_for "$dep2" | jq -r 'select(.type == "health.degraded") | .data.state' | tr '\n' ' ')
assert_eq "$states" "degraded recovered " "health states of v3"

monitor_events_valid
stop_monitor a
echo ok
