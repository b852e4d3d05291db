#!/usr/bin/env bash
# Two ways a deploy can be bad without being down: too slow (every answer over
# max_latency: three in a row -> rollback.requested, evidence check "latency"), and
# flapping (never three failures in a row, but half of the last 6 samples failed, above
# max_error_rate 0.3 -> rollback.requested, evidence kind "error_rate").
# And a slow endpoint cannot stretch the interval: answers taking 1.5 s, max_latency
# 500ms, a 2 s timeout, interval 1 s, threshold 3: each probe gives up at the limit, the
# probes stay one interval apart, and the verdict comes about 3 intervals after the first
# failing probe (4.5 s if every probe waited for the whole answer). The figure is logged.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-monitor.sh"

start_redis
start_broker
start_fake SLOW health --script '{"latency_ms": 700}'
start_fake FLAP health --script '{"pattern": [200, 500]}'
start_fake SLOWER health --script '{"latency_ms": 1500}'
write_monitor_config "
  api:
    environments:
      production:
        monitor:
          probes:
            - {name: latency, type: http, url: \"$FAKE_URL_SLOW/health\", max_latency: 300ms}
      staging:
        monitor:
          failure_threshold: 3
          max_error_rate: 0.3
          error_rate_window: 6
          probes:
            - {name: health, type: http, url: \"$FAKE_URL_FLAP/health\"}
  web:
    environments:
      production:
        monitor:
          failure_threshold: 3
          probes:
            - {name: health, type: http, url: \"$FAKE_URL_SLOWER/health\", max_latency: 500ms, timeout: 2s}" "
monitor:
  interval: 1s
  window: 30s"
start_monitor a

slow=$(new_uuid)
flap=$(new_uuid)
slower=$(new_uuid)
inject deploy.succeeded api production v-slow "$slow" >/dev/null
inject deploy.succeeded api staging v-flap "$flap" >/dev/null
inject deploy.succeeded web production v-slower "$slower" >/dev/null

rb=$(wait_event "$slow" rollback.requested 30) || fail "no rollback.requested for the slow deploy"
log "slow: $(jq -c .data.evidence <<<"$rb")"
ev=$(jq -c .data.evidence <<<"$rb")
assert_eq "$(jq -r .kind <<<"$ev")" consecutive_failures "slow: kind"
assert_eq "$(jq -r .check <<<"$ev")" latency "slow: check"
assert_eq "$(jq -r .threshold <<<"$ev")" 300 "slow: threshold (ms)"
obs=$(jq -r .observed <<<"$ev")
# given up at the limit: at least 300 ms, and well before the 700 ms answer
[ "$obs" -ge 300 ] && [ "$obs" -lt 650 ] || fail "slow: observed latency $obs ms, expected 300..649"
assert_eq "$(jq -r '[.samples[] | select(.check == "latency")] | length' <<<"$ev")" 3 "slow: latency samples"
assert_eq "$(jq -r '[.samples[] | select(.latency_ms >= 300 and .latency_ms < 650)] | length' <<<"$ev")" 3 \
    "slow: every sample cut at the limit"

rb=$(wait_event "$slower" rollback.requested 30) || fail "no rollback.requested for the 1.5 s endpoint"
ev=$(jq -c .data.evidence <<<"$rb")
assert_eq "$(jq -r .kind <<<"$ev")" consecutive_failures "1.5 s endpoint: kind"
assert_eq "$(jq -r .check <<<"$ev")" latency "1.5 s endpoint: check"
assert_eq "$(jq -r .threshold <<<"$ev")" 500 "1.5 s endpoint: threshold (ms)"
obs=$(jq -r .observed <<<"$ev")
[ "$obs" -ge 500 ] && [ "$obs" -lt 900 ] || fail "1.5 s endpoint: observed latency $obs ms, expected 500..899"
at=$(jq -r '[.samples[].at] | join(" ")' <<<"$ev")
prev=
for a in $at; do
    a=$(ms_of "$a")
    if [ -n "$prev" ]; then
        gap=$((a - prev))
        [ "$gap" -ge 850 ] && [ "$gap" -le 1250 ] || fail "1.5 s endpoint: probes $gap ms apart, expected one interval"
    fi
    prev=$a
done
detect=$(( $(ms_of "$(jq -r .decided_at <<<"$ev")") - $(ms_of "$(jq -r .first_failure_at <<<"$ev")") ))
log "1.5 s endpoint (max_latency 500ms, interval 1s, threshold 3): rollback requested $detect ms after the first failing probe"
[ "$detect" -lt 3900 ] || fail "1.5 s endpoint: detected after $detect ms, expected about 3 intervals (< 3900)"

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

monitor_events_valid
stop_monitor a
echo ok
