#!/usr/bin/env bash
# A monitor killed with SIGKILL mid-window: sessions live in Redis, so another instance
# carries them on. A healthy deploy is still verified on time (within one interval of the
# window's end), and a deploy that started failing under the dead monitor is rolled back by
# the new one, its evidence including the failure the dead monitor saw, on time too
# (failure_threshold - 1 intervals after that first failure, plus at most one).
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-monitor.sh"

start_redis
start_broker
start_fake GOOD health
start_fake BAD health
write_monitor_config "
  api:
    environments:
      production:
        monitor:
          window: 10s
          probes:
            - {name: health, url: \"$FAKE_URL_GOOD/health\"}
      staging:
        monitor:
          window: 30s
          probes:
            - {name: health, url: \"$FAKE_URL_BAD/health\"}" "
monitor:
  interval: 1s
  failure_threshold: 3"
start_monitor a

good=$(new_uuid); bad=$(new_uuid)
inject deploy.succeeded api production v-good "$good" >/dev/null
inject deploy.succeeded api staging v-bad "$bad" >/dev/null
started=$(wait_event "$good" monitor.started 60) || fail "no monitor.started"
wait_event "$bad" monitor.started 30 >/dev/null || fail "no monitor.started for the bad deploy"
wait_for 10 health_calls_ge BAD 2 || fail "monitor a does not probe"
fake_script BAD '{"status": 500}'
hd=$(wait_event "$bad" health.degraded 10) || fail "monitor a did not see the failure"
pid_a=$MONITOR_PID_a
kill -KILL "$pid_a"
killed_at=$(date +%s%3N)
log "killed monitor a (pid $pid_a) $(( killed_at - $(ms_of "$(jq -r .data.ends_at <<<"$started")") + 10000 )) ms into the window"
wait "$pid_a" 2>/dev/null || true
# no waiting for its consumer group: the sessions are carried on from Redis meanwhile
start_monitor_nowait b
pid_b=$MONITOR_PID_b

rb=$(wait_event "$bad" rollback.requested 30) || fail "no rollback.requested after the takeover"
ev=$(jq -c .data.evidence <<<"$rb")
log "rollback: $ev"
[[ "$(jq -r .actor <<<"$rb")" == *"/$pid_b" ]] || fail "rollback.requested not from monitor b: $(jq -r .actor <<<"$rb")"
[[ "$(jq -r .actor <<<"$hd")" == *"/$pid_a" ]] || fail "health.degraded not from monitor a"
assert_eq "$(jq -r .failures <<<"$ev")" 3 failures
det=$(ms_of "$(jq -r .detected_at <<<"$ev")")
dec=$(ms_of "$(jq -r .decided_at <<<"$ev")")
[ "$det" -lt "$killed_at" ] || fail "the first failure (seen by monitor a) is not in the evidence"
assert_eq "$(jq -r .detected_at <<<"$ev")" "$(jq -r .data.first_failure_at <<<"$hd")" "detected_at = the failure monitor a saw"
[ $((dec - det)) -le 3000 ] || fail "rollback decided $((dec - det)) ms after the first failure (on time: <= 3000)"

v=$(wait_event "$good" deploy.verified 30) || fail "no deploy.verified after the takeover"
log "verified: $v"
[[ "$(jq -r .actor <<<"$v")" == *"/$pid_b" ]] || fail "deploy.verified not from monitor b"
ends=$(ms_of "$(jq -r .data.ends_at <<<"$started")")
at=$(ms_of "$(jq -r .at <<<"$v")")
[ "$at" -ge "$ends" ] || fail "verified before the window ended"
[ "$at" -le $((ends + 1000)) ] || fail "verified $((at - ends)) ms after the window ended (> one interval)"
n=$(jq -r .data.samples <<<"$v")
[ "$n" -ge 7 ] && [ "$n" -le 10 ] || fail "samples: $n, expected 7..10 (10 rounds, a few lost in the takeover)"
assert_eq "$(count_events "$good" deploy.verified)" 1 "one verdict"
assert_eq "$(count_events "$bad" rollback.requested)" 1 "one rollback request"
grep -q 'probe health' "$T/monitor-b.log" || fail "monitor b never probed"

monitor_events_valid
stop_monitor b
echo ok
