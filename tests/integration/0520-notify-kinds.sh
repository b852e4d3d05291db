#!/usr/bin/env bash
# Notifications for what a team acts on (issue 13, item 6), from a real validator,
# executor and rollback worker, to the Slack double and to a JSON receiver that checks the
# signature as a real receiver would (tests/fakes/webhook.py, POST /notify):
#   1. a failover: the first provider answers 503, the backup takes over; deploy.started
#      says who failed and why (failed_over_from) and the message names both;
#   2. an approval waiting: who may approve, until when, the exact `deployq approve` line;
#   3. a rejection with its reasons;
#   4. a failed deploy;
#   5. a rollback (requested and succeeded);
#   6. the receiver refuses a missing, a wrong and a stale signature (and accepts one made
#      with openssl, as docs/operations.md shows);
#   7. a storm of rejections notified to a slow receiver does not hold up a rollback: its
#      outcome is out while most of the rejections are still waiting for their turn;
#   8. the worker stopped then, with notifications owed: the next one delivers them;
#   9. an unknown kind in `on` is reported with its file:line when the worker starts.
# Every JSON delivery verified; no secret (webhook URLs, signing secret) in any event or log.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"
. "$(dirname "$0")/helpers-gates.sh"
. "$(dirname "$0")/helpers-rollback.sh"

start_redis
start_broker
start_fake bad webhook
start_fake good webhook
start_fake recv webhook
start_fake slack slack
BAD=http://127.0.0.1:$FAKE_PORT_bad
GOOD=http://127.0.0.1:$FAKE_PORT_good
export NOTIFY_SECRET="whsec-$(openssl rand -hex 20)"
export SLACK_URL="http://127.0.0.1:$FAKE_PORT_slack/services/T1/B1/s3cr3t-slack"
export HOOK_URL="http://127.0.0.1:$FAKE_PORT_recv/notify/s3cr3t-hook"
fake_script bad '{"mode":"http_5xx"}'
fake_script good '{"mode":"succeed","steps":1}'
fake_script recv "$(jq -cn --arg s "$NOTIFY_SECRET" '{notify_secret:$s}')"
chain="          - {type: webhook, name: primary, url: \"$BAD/deploy\", status_url: \"$BAD/status/{id}\", timeout: 1s, retries: 0, poll_interval: 200ms, deadline: 20s}
          - {type: webhook, name: backup, url: \"$GOOD/deploy\", status_url: \"$GOOD/status/{id}\", poll_interval: 200ms, deadline: 20s}"
write_config "  web:
    environments:
      staging:
        providers:
$chain
      qa:
        providers:
          - {type: webhook, name: only, url: \"$GOOD/deploy\", status_url: \"$GOOD/status/{id}\", poll_interval: 200ms, deadline: 20s}
      production:
        approval: required
        approval_timeout: 1h
        providers:
$chain
      frozen:
        freeze:
          - {from: \"2020-01-01T00:00:00Z\", until: \"2099-01-01T00:00:00Z\", reason: launch week}
notifications:
  slack_webhook: \${SLACK_URL}
  webhook: \${HOOK_URL}
  webhook_secret: \${NOTIFY_SECRET}
  on: [rollback.requested, rollback.succeeded, rollback.failed, deploy.failed, failover,
       deploy.awaiting_approval, deploy.rejected]
executor:
  lock_ttl: 5s
  lock_wait: 10s"
# an approver whose scope is another service: its approval would not count for web, so the
# approval notification must not name it
"$DEPLOYQ" keygen --out "$T/api-approver.key" --id approver-api --role approver >/dev/null
python3 - "$CONFIG" "$(pubkey "$T/api-approver.key")" <<'PY'
import sys
path, pub = sys.argv[1], sys.argv[2]
text = open(path).read()
text = text.replace("keys:\n", "keys:\n  - id: approver-api\n    public_key: \"%s\"\n    role: approver\n    services: [api]\n" % pub, 1)
open(path, "w").write(text)
PY
start_validator a
start_executor a
start_rollback a

# hook_bodies TYPE: the JSON bodies the receiver got of that event type, one a line.
hook_bodies() { fake_calls recv | jq -c --arg t "$1" '.calls[] | select(.path == "/notify/s3cr3t-hook" and .body.type == $t) | .body'; }
# texts_about DEPLOYMENT_ID: the Slack texts that name that deployment, raw.
texts_about() { slack_texts slack | jq -r --arg d "$1" 'select(contains("Deployment " + $d))'; }
# notified ID N: at least N notification.sent about the trigger event ID (for wait_for).
sent_ge() { [ "$(notifications "$1" | jq -r 'select(.type == "notification.sent") | .data.channel' | wc -l)" -ge "$2" ]; }

log "1. a failover: primary answers 503, backup takes over"
id=$(submit --service web --env staging --version v1)
ev=$(wait_event "$id" deploy.succeeded 60) || fail "no deploy.succeeded for $id"
assert_eq "$(jq -r .data.provider <<<"$ev")" backup "provider that took over"
started=$(events_for "$id" deploy.started)
assert_eq "$(jq -r .data.attempt <<<"$started")" 2 "attempt of the backup"
assert_eq "$(jq -c '[.data.failed_over_from[] | {provider, error_class, http_status}]' <<<"$started")" \
    '[{"provider":"primary","error_class":"http_5xx","http_status":503}]' "failed_over_from"
sid=$(jq -r .id <<<"$started")
wait_for 30 sent_ge "$sid" 2 || fail "the failover was not notified on both channels"
text=$(texts_about "$id")
grep -qF "Failover on web/staging, version v1: backup took over (provider 2 of the chain)." <<<"$text" ||
    fail "failover message: $text"
grep -q "^primary failed: http_5xx (HTTP 503)" <<<"$text" || fail "failover message names no cause: $text"
assert_eq "$(hook_bodies deploy.started | jq -r '.data.failed_over_from[0].provider')" primary "failover JSON body"

log "2. an approval waiting"
id=$(submit --service web --env production --version v1 --requested-by ci-bot)
ev=$(wait_event "$id" deploy.awaiting_approval 60) || fail "no deploy.awaiting_approval for $id"
wait_for 30 sent_ge "$(jq -r .id <<<"$ev")" 2 || fail "the approval waiting was not notified"
text=$(texts_about "$id")
grep -qF "Approval needed: web/production version v1, requested by ci-bot." <<<"$text" || fail "approval message: $text"
grep -qF "Who: a holder of a key of role approver (approver-test)." <<<"$text" || fail "approval: who: $text"
grep -qF "Until: $(jq -r .data.expires_at <<<"$ev"); without a decision by then nothing is deployed." <<<"$text" ||
    fail "approval: until: $text"
grep -qxF "Approve: deployq approve $id --reason TEXT" <<<"$text" || fail "approval: command: $text"
grep -qxF "Deny: deployq deny $id --reason TEXT" <<<"$text" || fail "approval: deny command: $text"
# the command works as written (with the approver's key)
approve_as "$T/approver.key" approver-test "$id" --reason "looks good" >/dev/null || fail "approve failed"
wait_event "$id" deploy.validated 60 >/dev/null || fail "the approval from the message did not go through"
wait_event "$id" deploy.succeeded 60 >/dev/null || fail "the approved deploy did not succeed"

log "3. a rejection"
id=$(submit --service web --env frozen --version v1)
ev=$(wait_event "$id" deploy.rejected 60) || fail "no deploy.rejected for $id"
wait_for 30 sent_ge "$(jq -r .id <<<"$ev")" 2 || fail "the rejection was not notified"
text=$(texts_about "$id")
grep -qF "Deploy of web/frozen version v1 rejected (signed by key ci-test):" <<<"$text" || fail "rejection message: $text"
grep -qF -- "- freeze: web/frozen is frozen until 2099-01-01T00:00:00.000Z (launch week)" <<<"$text" ||
    fail "rejection reason: $text"

log "4. a failed deploy"
fake_script good '{"mode":"fail_after_building","steps":1}'
id=$(submit --service web --env qa --version v1)
ev=$(wait_event "$id" deploy.failed 60) || fail "no deploy.failed for $id"
wait_for 30 sent_ge "$(jq -r .id <<<"$ev")" 2 || fail "the failed deploy was not notified"
grep -qF "Deploy of web/qa version v1 failed: $(jq -r .data.reason <<<"$ev") (provider only)" <<<"$(texts_about "$id")" ||
    fail "failed deploy message: $(texts_about "$id")"

log "5. a rollback"
fake_script good '{"mode":"succeed","steps":1}'
dep=$(new_uuid)
inject deploy.succeeded web staging v2 "$dep" "$(succeeded_data backup wh-old-2)" >/dev/null
req=$(inject rollback.requested web staging v2 "$dep" '{"reason":"error rate 40%","requested_by":"deployq-monitor","to_version":"v1"}')
ev=$(rollback_outcome "$req" 60) || fail "no rollback outcome for $req"
assert_eq "$(jq -r .type <<<"$ev")" rollback.succeeded "rollback outcome"
wait_for 30 sent_ge "$(jq -r .id <<<"$ev")" 2 || fail "the rollback outcome was not notified"
wait_for 30 sent_ge "$req" 2 || fail "the rollback request was not notified"
text=$(texts_about "$dep")
grep -qF "Rollback requested for web/staging: version v2, to return to v1." <<<"$text" || fail "rollback request message: $text"
grep -qF "Rolled back web/staging from v2 to v1 (redeploy via backup)." <<<"$text" || fail "rollback message: $text"

log "6. the receiver checks signatures"
recv=$(fake_url recv)/notify/check
body='{"id":"e1","type":"deploy.failed"}'
code() { curl -s -o "$T/recv.out" -w '%{http_code}' -H 'Content-Type: application/json' "$@" --data-binary "$body" "$recv"; }
sign() { printf '%s' "$1.$body" | openssl dgst -sha256 -hmac "$2" -r | cut -d' ' -f1; }
now=$(date +%s)
assert_eq "$(code)" 401 "no signature"
assert_eq "$(jq -r .error "$T/recv.out")" missing_signature "no signature: why"
assert_eq "$(code -H "X-Deployq-Signature: t=$now,v1=$(sign "$now" whsec-wrong-secret-0000)")" 401 "wrong secret"
assert_eq "$(jq -r .error "$T/recv.out")" bad_signature "wrong secret: why"
old=$((now - 600))
assert_eq "$(code -H "X-Deployq-Signature: t=$old,v1=$(sign "$old" "$NOTIFY_SECRET")")" 401 "stale"
assert_eq "$(jq -r .error "$T/recv.out")" stale_signature "stale: why"
assert_eq "$(code -H "X-Deployq-Signature: t=$now,v1=$(sign "$now" "$NOTIFY_SECRET")")" 204 "signed with openssl"
# every delivery deployq made carried a signature the receiver accepted
n_hook=$(fake_calls recv | jq '[.calls[] | select(.path == "/notify/s3cr3t-hook")] | length')
[ "$n_hook" -ge 6 ] || fail "only $n_hook JSON deliveries"
assert_eq "$(fake_calls recv | jq '[.calls[] | select(.path == "/notify/s3cr3t-hook" and (.headers["X-Deployq-Signature"] // "" | test("^t=[0-9]+,v1=[0-9a-f]{64}$")))] | length')" \
    "$n_hook" "signed deliveries"
assert_eq "$(events | jq -c 'select(.type == "notification.failed")' | wc -l)" 0 "notification.failed events"

log "7. a storm of rejections to a slow receiver does not hold up a rollback"
fake_script recv "$(jq -cn --arg s "$NOTIFY_SECRET" '{notify_secret:$s, notify_delay_ms:4000}')"
storm=()
for i in 1 2 3 4; do storm+=("$(submit --service web --env frozen --version "s$i")"); done
for i in "${storm[@]}"; do wait_event "$i" deploy.rejected 60 >/dev/null || fail "no deploy.rejected for $i"; done
dep=$(new_uuid)
inject deploy.succeeded web staging v3 "$dep" "$(succeeded_data backup wh-old-3)" >/dev/null
req=$(inject rollback.requested web staging v3 "$dep" '{"reason":"p99 over 2s","requested_by":"deployq-monitor","to_version":"v1"}')
ev=$(rollback_outcome "$req" 60) || fail "no rollback outcome for $req"
assert_eq "$(jq -r .type <<<"$ev")" rollback.succeeded "rollback outcome during the storm"
log "   (figure, not asserted) request to restored: $(( $(ms_of "$(jq -r .data.restored_at <<<"$ev")") - $(ms_of "$(jq -r .data.decided_at <<<"$ev")") )) ms"
# Sent inline, the four rejections (4 s each at the receiver) would all be delivered before
# the rollback even started.
delivered=$(fake_calls recv | jq --argjson ids "$(printf '%s\n' "${storm[@]}" | jq -R . | jq -sc .)" \
    '[.calls[] | select(.path == "/notify/s3cr3t-hook" and .body.type == "deploy.rejected" and (.body.deployment_id as $d | $ids | index($d)))] | length')
[ "$delivered" -lt 4 ] || fail "all $delivered rejections were delivered before the rollback was done"

log "8. stopped with notifications still owed: the next worker delivers them (the outbox)"
# Their events' offsets are stored already: only the outbox in Redis still knows of them.
kill -TERM "$ROLLBACK_PID_a"
wait "$ROLLBACK_PID_a" 2>/dev/null || true
grep -q "notifications: [0-9]* not delivered yet; they wait in the outbox" "$T/rollback-a.log" ||
    fail "the worker stopped with nothing owed (the storm was delivered too soon to test this)"
fake_script recv "$(jq -cn --arg s "$NOTIFY_SECRET" '{notify_secret:$s}')"
start_rollback b
for i in "${storm[@]}"; do
    rid=$(events_for "$i" deploy.rejected | jq -r .id)
    wait_for 60 sent_ge "$rid" 2 || fail "the rejection $i was never notified after the restart"
done

log "9. a mistake in a target's notify section is said with its file:line at start"
sed 's/^  on: \[rollback.requested,/  on: [rollback.requestd,/' "$CONFIG" >"$T/bad.yaml"
line=$(grep -n '^  on: \[rollback.requestd' "$T/bad.yaml" | cut -d: -f1)
"$ROLLBACK" --config "$T/bad.yaml" >"$T/rollback-bad.log" 2>&1 &
bad_pid=$!
PIDS+=("$bad_pid")
wait_for 30 grep -qF "$T/bad.yaml:$line: notifications.on: 'rollback.requestd' is not one of" "$T/rollback-bad.log" ||
    fail "no file:line error for an unknown kind: $(head -c 2000 "$T/rollback-bad.log")"
kill -TERM "$bad_pid"
wait "$bad_pid" 2>/dev/null || true

log "every event passes the schemas; no secret anywhere"
events | schema_check || fail "events do not match the schemas"
for s in s3cr3t "$NOTIFY_SECRET"; do
    if events | grep -qF -- "$s"; then fail "a secret leaked into an event"; fi
    if grep -qF -- "$s" "$T"/validator-*.log "$T"/executor-*.log "$T"/rollback-*.log; then fail "a secret leaked into a log"; fi
done
echo ok
