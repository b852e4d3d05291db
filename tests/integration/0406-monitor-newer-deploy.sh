#!/usr/bin/env bash
# A newer deploy on the same target ends the older session: the older deploy gets no
# verdict (neither verified nor rolled back), the newer one's monitor.started names the
# session it superseded, and the newer one is verified. A trigger older than the target's
# current session (a late redelivery) starts nothing.
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
          window: 6s
          probes:
            - {name: health, url: \"$FAKE_URL_H/health\"}"
start_monitor a

v1=$(new_uuid); v2=$(new_uuid); v0=$(new_uuid)
inject deploy.succeeded api production v1 "$v1" >/dev/null
s1=$(wait_event "$v1" monitor.started 60) || fail "no monitor.started for v1"
wait_for 10 health_calls_ge H 2 || fail "v1 is not probed"
inject deploy.succeeded api production v2 "$v2" >/dev/null
s2=$(wait_event "$v2" monitor.started 30) || fail "no monitor.started for v2"
assert_eq "$(jq -r .data.supersedes_session <<<"$s2")" "$(jq -r .data.session_id <<<"$s1")" supersedes_session
# older than v1 (and so than v2), still inside its window: stale
t0=$(( $(ms_of "$(jq -r .at <<<"$s1")") - 300 ))
inject deploy.succeeded api production v0 "$v0" "" "" \
    "$(date -u -d "@$((t0 / 1000)).$(printf %03d $((t0 % 1000)))" +%Y-%m-%dT%H:%M:%S.%3NZ)" >/dev/null
wait_event "$v2" deploy.verified 30 >/dev/null || fail "no deploy.verified for v2"
sleep 1
assert_eq "$(count_events "$v1" deploy.verified)" 0 "deploy.verified for the superseded v1"
assert_eq "$(count_events "$v1" rollback.requested)" 0 "rollback.requested for the superseded v1"
assert_eq "$(count_events "$v0" monitor.started)" 0 "monitor.started for the stale v0"
grep -q 'a newer deploy is already watched' "$T/monitor-a.log" || fail "no log line for the stale trigger"
grep -q 'ended: a newer deploy (v2) is watched now' "$T/monitor-a.log" || fail "no log line for the superseded session"
stop_monitor a
echo ok
