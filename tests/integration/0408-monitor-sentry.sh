#!/usr/bin/env bash
# Sentry as a health signal and a deploy record (against tests/fakes/sentry.py):
#   1. v1, whose release has 1 error event in Sentry (threshold 5), is watched and
#      verified; the rollback worker's Sentry thread records v1's deploy (release created,
#      then a release deploy named after the deployment, with environment and times);
#   2. v2-bad, with 20 error events, fails the sentry probe 3 rounds in a row: the watch
#      says degraded, then rollback.requested with the Sentry evidence; the rollback worker
#      restores v1 and Sentry is told (a deploy of release v1, named after v2-bad's
#      deployment);
#   3. each deploy is recorded once, every event passes the schemas, and the Sentry token
#      is in no log, no event and no call the double recorded.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-monitor.sh"
. "$(dirname "$0")/helpers-rollback.sh"

start_redis
start_broker
start_fake S sentry
start_fake wh webhook
export SENTRY_TOKEN="sntrys_it-$(new_uuid)"
fake_script S "{\"token\": \"$SENTRY_TOKEN\", \"events\": [
    {\"release\": \"v1\", \"environment\": \"production\", \"project\": 42, \"count\": 1},
    {\"release\": \"v2-bad\", \"environment\": \"production\", \"project\": 42, \"count\": 20},
    {\"release\": \"v2-bad\", \"environment\": \"staging\", \"project\": 42, \"count\": 500}]}"
write_rollback_config "  api:
    sentry:
      org: acme
      projects: [api]
      token: \${SENTRY_TOKEN}
      url: $FAKE_URL_S
      deploy_url: https://deployq.example/d/{deployment_id}
    environments:
      production:
        providers:
          - {type: webhook, name: wh, url: \"$FAKE_URL_wh/deploy\", status_url: \"$FAKE_URL_wh/status/{id}\", token: t0k3n-wh, poll_interval: 200ms, deadline: 20s}
        monitor:
          window: 3s
          probes:
            - {name: errors, type: sentry, url: \"$FAKE_URL_S\", org: acme, project_ids: [42],
               token: \"\${SENTRY_TOKEN}\", threshold: 5}" "
monitor:
  interval: 1s"
# both at once: each consumer group's first join takes a few seconds
start_monitor_nowait a
launch_rollback a
wait_for 60 grep -q 'kafka: assigned' "$T/monitor-a.log" || fail "monitor a got no partitions"
wait_for 60 grep -q 'assigned' "$T/rollback-a.log" || fail "rollback worker a never got partitions"

log "1. v1: clean in Sentry, verified, its deploy recorded"
d1=$(new_uuid)
inject deploy.succeeded api production v1 "$d1" >/dev/null
v=$(wait_event "$d1" deploy.verified 30) || fail "v1 was not verified"
assert_eq "$(count_events "$d1" health.degraded)" 0 "v1: health.degraded"
sentry_deploys() { fake_calls S | jq -c --arg p "$1" '[.calls[] | select(.method == "POST" and .path == $p)]'; }
deploys_ge() { [ "$(sentry_deploys "$1" | jq length)" -ge "$2" ]; }
wait_for 20 deploys_ge /api/0/organizations/acme/releases/v1/deploys/ 1 || fail "v1's deploy never reached Sentry"
b=$(sentry_deploys /api/0/organizations/acme/releases/v1/deploys/ | jq -c '.[0].body')
log "v1 deploy: $b"
assert_eq "$(jq -r .environment <<<"$b")" production "v1 deploy environment"
assert_eq "$(jq -r .name <<<"$b")" "$d1" "v1 deploy name"
assert_eq "$(jq -r .url <<<"$b")" "https://deployq.example/d/$d1" "v1 deploy url"
assert_eq "$(jq -r '.projects | join(",")' <<<"$b")" api "v1 deploy projects"
at=$(events_for "$d1" deploy.succeeded | jq -r .at | head -n 1)
assert_eq "$(jq -r .dateFinished <<<"$b")" "$at" "v1 deploy dateFinished = deploy.succeeded's at"
assert_eq "$(fake_calls S | jq -r '[.calls[] | select(.method == "POST" and .path == "/api/0/organizations/acme/releases/")][0].body.version')" \
    v1 "the release was created first"

log "2. v2-bad: 20 errors, degraded, rolled back to v1, the restore recorded"
d2=$(new_uuid)
inject deploy.succeeded api production v2-bad "$d2" >/dev/null
rb=$(wait_event "$d2" rollback.requested 30) || fail "no rollback.requested for v2-bad"
ev=$(jq -c .data.evidence <<<"$rb")
log "evidence: $ev"
assert_eq "$(jq -r .type <<<"$ev")" sentry "evidence type"
assert_eq "$(jq -r .probe <<<"$ev")" errors "evidence probe"
assert_eq "$(jq -r .check <<<"$ev")" value "evidence check"
assert_eq "$(jq -r .observed <<<"$ev")" 20 "evidence observed (staging's 500 not counted)"
assert_eq "$(jq -r .threshold <<<"$ev")" 5 "evidence threshold"
assert_eq "$(jq -r '.samples[-1].detail' <<<"$ev")" "errors 20 gt 5" "evidence detail"
assert_eq "$(events_for "$d2" health.degraded | jq -r .data.state | head -n 1)" degraded "health.degraded first"
q=$(fake_calls S | jq -r '[.calls[] | select(.path == "/api/0/organizations/acme/events/" and (.query.query | contains("v2-bad")))][0].query')
assert_eq "$(jq -r '.field + " " + .environment + " " + .project' <<<"$q")" "count() production 42" "events API query"
[ "$(ms_of "$(jq -r .start <<<"$q")")" -le "$(ms_of "$(jq -r .end <<<"$q")")" ] || fail "window start after end: $q"
out=$(rollback_outcome "$(jq -r .id <<<"$rb")" 60) || fail "no rollback outcome"
assert_eq "$(jq -r .type <<<"$out")" rollback.succeeded "rollback outcome"
assert_eq "$(jq -r .data.to_version <<<"$out")" v1 "restored version"
wait_for 20 deploys_ge /api/0/organizations/acme/releases/v1/deploys/ 2 || fail "the restore never reached Sentry"
b=$(sentry_deploys /api/0/organizations/acme/releases/v1/deploys/ | jq -c '.[1].body')
assert_eq "$(jq -r .name <<<"$b")" "$d2" "restore deploy name"
assert_eq "$(jq -r .dateFinished <<<"$b")" "$(jq -r .data.restored_at <<<"$out")" "restore deploy dateFinished"
assert_eq "$(sentry_deploys /api/0/organizations/acme/releases/v2-bad/deploys/ | jq length)" 1 "v2-bad's deploy recorded"

log "3. once each, schemas, no token anywhere"
sleep 1
assert_eq "$(fake_calls S | jq '[.calls[] | select(.method == "POST" and (.path | endswith("/deploys/")))] | length')" 3 \
    "Sentry deploys recorded (v1, v2-bad, the restore of v1)"
events >"$T/all-events.jsonl"
assert_eq "$(schema_check <"$T/all-events.jsonl")" "$(wc -l <"$T/all-events.jsonl")" "events valid against schemas/"
fake_calls S >"$T/sentry-calls.json"
if grep -l -F "$SENTRY_TOKEN" "$T"/*.log "$T/all-events.jsonl" "$T/sentry-calls.json" "$T"/*.jsonl 2>/dev/null; then
    fail "the Sentry token leaked into the files above"
fi
grep -q -F 'Bearer' "$T/sentry-calls.json" || fail "the double saw no Bearer token"
stop_monitor a
echo ok
