#!/usr/bin/env bash
# Two ways a deploy can be bad without being down: too slow (every answer over
# max_latency: three in a row -> rollback.requested, evidence check "latency"), and
# flapping (never three failures in a row, but half of the last 6 samples failed, above
# max_error_rate 0.3 -> rollback.requested, evidence kind "error_rate").
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-monitor.sh"

start_redis
start_broker
start_fake health SLOW --script '{"latency_ms": 700}'
start_fake health FLAP --script '{"pattern": [200, 500]}'
write_monitor_config "
  api:
    environments:
      production:
        monitor:
          probes:
            - {name: latency, type: http, url: \"$SLOW_URL/health\", max_latency: 300ms}
      staging:
        monitor:
          failure_threshold: 3
          max_error_rate: 0.3
          error_rate_window: 6
          probes:
            - {name: health, type: http, url: \"$FLAP_URL/health\"}" "
monitor:
  interval: 1s
  window: 30s"
start_monitor a

slow=$(new_uuid)
flap=$(new_uuid)
inject deploy.succeeded api production v-slow "$slow" >/dev/null
inject deploy.succeeded api staging v-flap "$flap" >/dev/null

rb=$(wait_event "$slow" rollback.requested 30) || fail "no rollback.requested for the slow deploy"
log "slow: $(jq -c .data.evidence <<<"$rb")"
ev=$(jq -c .data.evidence <<<"$rb")
assert_eq "$(jq -r .kind <<<"$ev")" consecutive_failures "slow: kind"
assert_eq "$(jq -r .check <<<"$ev")" latency "slow: check"
assert_eq "$(jq -r .threshold <<<"$ev")" 300 "slow: threshold (ms)"
obs=$(jq -r .observed <<<"$ev")
[ "$obs" -ge 700 ] && [ "$obs" -lt 1000 ] || fail "slow: observed latency $obs ms, expected 700..999"
assert_eq "$(jq -r '[.samples[] | select(.check == "latency")] | length' <<<"$ev")" 3 "slow: latency samples"
assert_eq "$(jq -r '.samples[-1].status' <<<"$ev")" 200 "slow: the answers were 200s"

rb=$(wait_event "$flap" rollback.requested 30) || fail "no rollback.requested for the flapping deploy"
log "flap: $(jq -c .data.evidence <<<"$rb")"
ev=$(jq -c .data.evidence <<<"$rb")
assert_eq "$(jq -r .kind <<<"$ev")" error_rate "flap: kind"
assert_eq "$(jq -r .observed <<<"$ev")" 0.5 "flap: observed error rate"
assert_eq "$(jq -r .threshold <<<"$ev")" 0.3 "flap: threshold"
assert_eq "$(jq -r .failures <<<"$ev")" 3 "flap: failures"
assert_eq "$(jq -r .of <<<"$ev")" 6 "flap: of"
assert_eq "$(jq -r '.samples | length' <<<"$ev")" 6 "flap: samples"
assert_eq "$(jq -r '[.samples[].status] | join(",")' <<<"$ev")" "200,500,200,500,200,500" "flap: statuses"
first=$(jq -r '[.samples[] | select(.counted == "fail")][0].at' <<<"$ev")
assert_eq "$(jq -r .detected_at <<<"$ev")" "$first" "flap: detected_at = first failure in the window"
# every change of state was reported: 3 degraded, 2 recovered before the verdict
assert_eq "$(count_events "$flap" health.degraded)" 5 "flap: health.degraded events"

events | jq -c 'select(.actor | startswith("deployq-monitor"))' >"$T/monitor-events.jsonl"
n=$(wc -l <"$T/monitor-events.jsonl")
assert_eq "$(schema_check <"$T/monitor-events.jsonl")" "$n" "monitor events valid against schemas/"
stop_monitor a
echo ok
