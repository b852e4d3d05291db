#!/usr/bin/env bash
# A trigger read more than one window after it happened (found by the fault-injection
# suite: the monitor's consumer group rebalancing several times in a row) is still watched,
# its window starting when it is read, so a bad version is rolled back however late the
# monitor learns of it. What keeps old history from being watched again: a redelivery of
# that trigger (its session ended, even once the session record itself has expired) and an
# older trigger of the same target (the target's newest session is newer) start nothing.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-monitor.sh"

# ended_logged N: the monitor has logged at least N redeliveries of an ended session.
ended_logged() { [ "$(grep -c 'its watch session already ended' "$T/monitor-a.log")" -ge "$1" ]; }

start_redis
start_broker
start_fake H health
fake_script H '{"status": 500, "body": "broken"}' # the new version is bad
write_monitor_config "
  api:
    environments:
      production:
        monitor:
          interval: 1s
          window: 5s
          failure_threshold: 2
          probes:
            - {name: health, url: \"$FAKE_URL_H/health\", expect_status: 200}"
start_monitor a

# 1. 6 s late with a 5 s window: watched from now, and the bad version rolled back.
dep=$(new_uuid); trig=$(new_uuid); trig_at=$(ago_rfc3339 6)
inject deploy.succeeded api production v2 "$dep" "" "$trig" "$trig_at" >/dev/null
started=$(wait_event "$dep" monitor.started 30) || fail "the late trigger was not watched (no monitor.started)"
started_ms=$(ms_of "$(jq -r .data.started_at <<<"$started")")
ends_ms=$(ms_of "$(jq -r .data.ends_at <<<"$started")")
[ $((started_ms - $(ms_of "$trig_at"))) -ge 6000 ] || fail "the window did not start when the trigger was read"
assert_eq $((ends_ms - started_ms)) 5000 "window length"
rb=$(wait_event "$dep" rollback.requested 30) || fail "a bad version read 6 s late was never rolled back"
assert_eq "$(jq -r .data.from_version <<<"$rb")" v2 "from_version"
grep -q 'read [0-9]* s late; its window starts now' "$T/monitor-a.log" || fail "no log line for the late trigger"
session=$(jq -r .data.session_id <<<"$started")

# 2. The same trigger redelivered, later still: its session ended, nothing starts again -
#    also once the session record is gone (it is kept a day; the target remembers it).
inject deploy.succeeded api production v2 "$dep" "" "$trig" "$(ago_rfc3339 6)" >/dev/null
wait_for 10 ended_logged 1 || fail "no log line for the redelivery"
redis-cli -p "$REDIS_PORT" del "deployq:monitor:session:$session" >/dev/null
inject deploy.succeeded api production v2 "$dep" "" "$trig" "$(ago_rfc3339 6)" >/dev/null
wait_for 10 ended_logged 2 ||
    fail "a redelivery after the session record expired was not recognised"

# 3. An older trigger of the same target read late: superseded, not watched.
old=$(new_uuid)
inject deploy.succeeded api production v1 "$old" "" "" "$(ago_rfc3339 30)" >/dev/null
wait_for 10 grep -q 'a newer deploy is already watched' "$T/monitor-a.log" || fail "no log line for the stale trigger"
sleep 1
assert_eq "$(count_events "$dep" monitor.started)" 1 "monitor.started for the late trigger (redeliveries included)"
assert_eq "$(count_events "$dep" rollback.requested)" 1 "rollback.requested for the late trigger"
assert_eq "$(count_events "$old" monitor.started)" 0 "monitor.started for the older trigger"
stop_monitor a
echo ok
