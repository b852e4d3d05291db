#!/usr/bin/env bash
# A healthy deploy: deploy.succeeded starts a watch session (monitor.started), the probes
# pass every interval, and deploy.verified arrives when the window ends - not before, and
# within one interval after. A rollback.succeeded starts a session on the restored version;
# a target without probes is not watched; a redelivered trigger starts nothing new.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-monitor.sh"

start_redis
start_broker
start_fake H health
write_monitor_config "
  api:
    environments:
      staging: {}
      production:
        monitor:
          interval: 1s
          window: 4s
          probes:
            - {name: health, type: http, url: \"$FAKE_URL_H/health\", expect_status: 200,
               max_latency: 500ms, body_match: ok, missing: fail}
            - {name: version-page, url: \"$FAKE_URL_H/\", body_regex: \"^o[k]$\"}"
start_monitor a

dep=$(new_uuid)
trig=$(inject deploy.succeeded api production v1 "$dep")
started=$(wait_event "$dep" monitor.started 60) || fail "no monitor.started for $dep"
log "started: $started"
assert_eq "$(jq -r .data.window_ms <<<"$started")" 4000 window_ms
assert_eq "$(jq -r .data.interval_ms <<<"$started")" 1000 interval_ms
assert_eq "$(jq -c .data.probes <<<"$started")" '["health","version-page"]' probes
assert_eq "$(jq -r .data.trigger <<<"$started")" deploy.succeeded trigger
assert_eq "$(jq -r .version <<<"$started")" v1 version
assert_eq "$(jq -r .fence <<<"$started")" 7 "fence carried from the deploy"

verified=$(wait_event "$dep" deploy.verified 30) || fail "no deploy.verified for $dep"
log "verified: $verified"
# ticks at 0,1,2,3 s, two probes each; the close at 4 s does not probe
assert_eq "$(jq -r .data.samples <<<"$verified")" 8 samples
assert_eq "$(jq -r .data.window_ms <<<"$verified")" 4000 window_ms
ends=$(ms_of "$(jq -r .data.ends_at <<<"$started")")
at=$(ms_of "$(jq -r .at <<<"$verified")")
[ "$at" -ge "$ends" ] || fail "verified $((ends - at)) ms before the window ended"
[ "$at" -le $((ends + 1000)) ] || fail "verified $((at - ends)) ms after the window ended (> 1 interval)"
assert_eq "$(count_events "$dep" health.degraded)" 0 "health.degraded of a healthy deploy"
calls=$(health_calls H)
[ "$calls" -eq 8 ] || fail "the health double saw $calls requests, expected 8"

# A target without probes is not watched.
dep2=$(new_uuid)
inject deploy.succeeded api staging v1 "$dep2" >/dev/null
# The same trigger again (a redelivery): the ended session is not started again.
inject deploy.succeeded api production v1 "$dep" "" "$trig" >/dev/null
# A rollback that restored v0: the restored version is watched and verified.
dep3=$(new_uuid)
inject rollback.succeeded api production v0 "$dep3" >/dev/null
v3=$(wait_event "$dep3" deploy.verified 30) || fail "no deploy.verified after rollback.succeeded"
assert_eq "$(jq -r .version <<<"$v3")" v0 "version of the restored deploy"
assert_eq "$(jq -r .data.trigger <<<"$v3")" rollback.succeeded trigger
assert_eq "$(count_events "$dep2" monitor.started)" 0 "monitor.started for a target without probes"
assert_eq "$(count_events "$dep" monitor.started)" 1 "monitor.started after a redelivered trigger"
assert_eq "$(count_events "$dep" deploy.verified)" 1 "deploy.verified after a redelivered trigger"
grep -q 'no probes configured, not watched' "$T/monitor-a.log" || fail "no log line for the unwatched target"

monitor_events_valid
stop_monitor a
echo ok
