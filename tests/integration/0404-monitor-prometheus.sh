#!/usr/bin/env bash
# Prometheus probes (against tests/fakes/prometheus.py): a query whose value breaches the
# threshold is caught with the value in the evidence, and the three missing-data policies
# behave as documented:
#   fail   - NaN three times is three failures -> rollback (check no_data);
#   ignore - an empty result never counts; with a healthy HTTP probe the deploy is verified;
#   hold   - after a breach, an empty result repeats the failure -> rollback, the evidence
#            shows samples that were missing but counted as failures.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-monitor.sh"

start_redis
start_broker
start_fake H health
start_fake P prometheus
script_all() { # $1: the hold query's answer
    fake_script P "{\"queries\": {
        \"errors_api\": {\"value\": 0.09},
        \"latency_staging\": {\"value\": null},
        \"saturation\": {\"value\": \"NaN\", \"result_type\": \"scalar\"},
        \"hold_q\": $1}}"
}
script_all '{"value": 0.2}'
prom() { # name query missing
    echo "{name: $1, type: prometheus, url: \"$FAKE_URL_P/api/v1/query\", query: $2, op: gt, threshold: 0.05, missing: $3}"
}
write_monitor_config "
  api:
    environments:
      production:
        monitor:
          probes:
            - {name: health, url: \"$FAKE_URL_H/health\"}
            - $(prom errors errors_api fail)
      staging:
        monitor:
          window: 4s
          probes:
            - {name: health, url: \"$FAKE_URL_H/health\"}
            - $(prom latency latency_staging ignore)
  demo:
    environments:
      staging:
        monitor:
          probes:
            - $(prom saturation saturation fail)
      production:
        monitor:
          probes:
            - $(prom held hold_q hold)" "
monitor:
  interval: 1s
  window: 30s"
start_monitor a

breach=$(new_uuid); ignore=$(new_uuid); nan=$(new_uuid); hold=$(new_uuid)
inject deploy.succeeded demo production v-hold "$hold" >/dev/null
inject deploy.succeeded api production v-breach "$breach" >/dev/null
inject deploy.succeeded api staging v-ignore "$ignore" >/dev/null
inject deploy.succeeded demo staging v-nan "$nan" >/dev/null

# hold: once the breach was sampled, Prometheus goes silent for that query
prom_calls_ge() { [ "$(fake_calls P | jq --arg q "$1" '[.calls[] | select(.query == $q)] | length')" -ge "$2" ]; }
wait_for 30 prom_calls_ge hold_q 1 || fail "the held query was never sent"
script_all '{"value": null}'

rb=$(wait_event "$breach" rollback.requested 30) || fail "no rollback.requested for the breach"
ev=$(jq -c .data.evidence <<<"$rb")
log "breach: $ev"
assert_eq "$(jq -r .probe <<<"$ev")" errors "breach: probe"
assert_eq "$(jq -r .type <<<"$ev")" prometheus "breach: type"
assert_eq "$(jq -r .check <<<"$ev")" value "breach: check"
assert_eq "$(jq -r .observed <<<"$ev")" 0.09 "breach: observed"
assert_eq "$(jq -r .threshold <<<"$ev")" 0.05 "breach: threshold"
assert_eq "$(jq -r '.samples[-1].detail' <<<"$ev")" "value 0.09 gt 0.05" "breach: detail"

rb=$(wait_event "$nan" rollback.requested 30) || fail "no rollback.requested for NaN with missing: fail"
ev=$(jq -c .data.evidence <<<"$rb")
log "nan: $ev"
assert_eq "$(jq -r .check <<<"$ev")" no_data "nan: check"
assert_eq "$(jq -r .missing <<<"$ev")" fail "nan: policy"
assert_eq "$(jq -r '[.samples[] | select(.outcome == "missing" and .counted == "fail")] | length' <<<"$ev")" 3 "nan: missing samples counted as failures"
assert_eq "$(jq -r '.samples[-1].detail' <<<"$ev")" "no data: NaN" "nan: detail"

rb=$(wait_event "$hold" rollback.requested 30) || fail "no rollback.requested for the held breach"
ev=$(jq -c .data.evidence <<<"$rb")
log "hold: $ev"
assert_eq "$(jq -r .missing <<<"$ev")" hold "hold: policy"
assert_eq "$(jq -r .kind <<<"$ev")" consecutive_failures "hold: kind"
assert_eq "$(jq -r '.samples[0].outcome + "/" + .samples[0].counted' <<<"$ev")" fail/fail "hold: the real breach"
assert_eq "$(jq -r '[.samples[1:][] | select(.outcome == "missing" and .counted == "fail")] | length' <<<"$ev")" \
    "$(jq -r '.samples[1:] | length' <<<"$ev")" "hold: every later sample missing, counted as a failure"
assert_eq "$(jq -r '.samples[0].at' <<<"$ev")" "$(jq -r .detected_at <<<"$ev")" "hold: detected at the real breach"

v=$(wait_event "$ignore" deploy.verified 30) || fail "no deploy.verified with missing: ignore"
assert_eq "$(jq -r .data.samples <<<"$v")" 8 "ignore: samples taken (4 rounds, 2 probes)"
assert_eq "$(count_events "$ignore" health.degraded)" 0 "ignore: health.degraded"
assert_eq "$(count_events "$ignore" rollback.requested)" 0 "ignore: rollback.requested"

monitor_events_valid
stop_monitor a
echo ok
