#!/usr/bin/env bash
# The operator's verbs in an incident (issue 14, item 4), each signed with an operator key
# and verified by the validator, on the embedded broker and on a real Kafka:
#   1. cancel of a deploy running at the provider (a command that sleeps): cancelled AT
#      the provider (its process is gone), deploy.failed reason cancelled, cancel
#      confirmed, cancelled_by the key; deploy.cancel_requested with actor the key;
#      cancelling it again: "nothing to cancel: deployment X already failed";
#   2. pause: the target's deploys wait (deploy.queued, none started) while another
#      target deploys; a waiting one is cancelled (dropped, nothing started); resume
#      runs the rest in the order they were sent;
#   3. hold: the monitor's rollback.requested ends as rollback.held (nothing rolled back,
#      Slack told it is held); release clears it;
#   4. refused, with operator.refused and the reason: a CI key, an unknown key, a bad
#      signature, a replayed nonce, an unknown target; a garbled message is a
#      deploy.rejected; none of them pauses anything.
#   5. retry: a failed deploy retried is a new deployment (its own id) of the same
#      version, deploy.validated with retry_of the old one, and succeeds; the same signed
#      retry sent again is a replay (refused); the validator's messages read again by a
#      validator in a fresh group (a redelivery of every one) give the same events, so
#      still one new deployment; a deployment that succeeded, or that is unknown, is
#      not retried; a key scoped to another service may neither retry it nor pause a
#      target outside its scope (out_of_scope).
# `deployq status` (the registry's fold) shows the paused and the held target (by which
# key, why, since when) and the retried deployment's link; `history` shows the link too.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"
. "$(dirname "$0")/helpers-rollback.sh"
. "$(dirname "$0")/helpers-registry.sh"

start_redis
start_broker
start_fake slack slack
"$DEPLOYQ" keygen --out "$T/scoped.key" --id op-other --role operator >/dev/null
export SLACK_URL="http://127.0.0.1:$FAKE_PORT_slack/services/T0001/B0001/s3cr3t-h00k"
write_exec_config "  slow:
    environments:
      staging:
        providers:
          - {type: command, name: sleeper, argv: [sh, -c, 'echo \$\$ > $T/pid-{version}; exec sleep 60'], poll_interval: 100ms, deadline: 120s}
  fast:
    environments:
      staging:
        providers:
          - {type: command, name: quick, argv: [sh, -c, 'echo {version} >> $T/ran-fast'], poll_interval: 100ms, deadline: 30s}
        notify:
          slack_webhook: \${SLACK_URL}
  other:
    environments:
      staging:
        providers:
          - {type: command, name: quick, argv: ['true'], poll_interval: 100ms, deadline: 30s}
  flaky:
    environments:
      staging:
        providers:
          - {type: command, name: flaky, argv: [sh, -c, 'test ! -e $T/flaky-down'], poll_interval: 100ms, deadline: 30s}" \
"  - id: op-other
    public_key: \"$(pubkey "$T/scoped.key")\"
    role: operator
    services: [other]
executor:
  lock_ttl: 5s
  cancel_wait: 5s"
start_validator a
start_executor a
start_rollback a
start_registry a

op() { "$DEPLOYQ" "$1" --config "$CONFIG" --key "$T/operator.key" --key-id op-test "${@:2}"; }
# first_event JQ_FILTER [ARG]: the first event the filter selects ($a is ARG), once there (30 s).
first_event() {
    local end=$((SECONDS + 30)) out
    while :; do
        out=$(events | jq -c --arg a "${2:-}" "select($1)" | head -n1)
        [ -n "$out" ] && { printf '%s\n' "$out"; return 0; }
        [ $SECONDS -lt $end ] || return 1
        sleep 0.3
    done
}
# refused CODE: the operator.refused with a reason of CODE, once there.
refused() { first_event '.type == "operator.refused" and any(.data.reasons[]; .code == $a)' "$1"; }
# status_has JQ_FILTER: once `deployq status --json` has a target the filter selects (30 s).
status_has() {
    wait_for 30 sh -c "'$DEPLOYQ' status --dir '$REG_DIR' --json | jq -e '[.targets[] | select($1)] | length == 1' >/dev/null"
}
# of_type TYPE: the events of TYPE, one a line.
of_type() { events | jq -c --arg t "$1" 'select(.type == $t)'; }

log "1. cancel a deploy running at the provider"
id1=$(submit --service slow --env staging --version v1)
wait_event "$id1" deploy.started 30 >/dev/null || fail "v1 never started"
wait_for 10 test -s "$T/pid-v1" || fail "the command never ran"
pid=$(cat "$T/pid-v1")
alive "$pid" || fail "the provider's process is not running"
out=$(op cancel "$id1" --reason "wrong build")
grep -q "^cancel $id1: sent, signed by op-test" <<<"$out" || fail "cancel output: $out"
ev=$(terminal "$id1" 30) || fail "no terminal event after cancel"
assert_eq "$(jq -r .type <<<"$ev")" deploy.failed "v1 outcome"
assert_eq "$(jq -r .data.reason <<<"$ev")" cancelled "v1 reason"
assert_eq "$(jq -r .data.cancel <<<"$ev")" confirmed "v1 cancel at the provider"
assert_eq "$(jq -r .data.cancelled_by <<<"$ev")" op-test "v1 cancelled_by"
alive "$pid" && fail "the provider's process $pid still runs after the cancel"
req=$(wait_event "$id1" deploy.cancel_requested 5) || fail "no deploy.cancel_requested"
assert_eq "$(jq -r .actor <<<"$req")" op-test "cancel_requested actor"
assert_eq "$(jq -r .data.reason <<<"$req")" "wrong build" "cancel_requested reason"
op cancel "$id1" >/dev/null
ev=$(refused nothing_to_cancel) || fail "a second cancel was not refused"
jq -e --arg m "nothing to cancel: deployment $id1 already failed" 'any(.data.reasons[]; .message == $m)' <<<"$ev" >/dev/null \
    || fail "nothing-to-cancel message: $ev"

log "2. pause: deploys wait in order, other targets go on; a waiting one is cancelled"
out=$(op pause --service fast --env staging --reason "incident 42")
grep -q "^pause fast/staging: sent, signed by op-test" <<<"$out" || fail "pause output: $out"
wait_for 20 redis_has deployq:paused:fast/staging || fail "the pause was not applied"
ids=()
for v in v2 v3 v4; do ids+=("$(submit --service fast --env staging --version "$v")"); done
for id in "${ids[@]}"; do wait_event "$id" deploy.queued 30 >/dev/null || fail "$id: no deploy.queued"; done
o1=$(submit --service other --env staging --version o1)
assert_eq "$(jq -r .type <<<"$(terminal "$o1" 30)")" deploy.succeeded "the other target while fast is paused"
[ -z "$(events_for "${ids[0]}" deploy.started)" ] || fail "a deploy of the paused target started"
[ ! -e "$T/ran-fast" ] || fail "the paused target's command ran"
status_has '.service == "fast" and .paused.by == "op-test" and .paused.reason == "incident 42" and (.paused.since | length) > 0' \
    || fail "status does not show the pause: $("$DEPLOYQ" status --dir "$REG_DIR" --json)"
"$DEPLOYQ" status --dir "$REG_DIR" --service fast --env staging >"$T/status.txt"
grep -q "^  fast/staging: paused since 20[0-9-]* [0-9:]* by op-test (incident 42): its deploys wait in order (deployq resume)$" \
    "$T/status.txt" || fail "status table, paused: $(cat "$T/status.txt")"
op cancel "${ids[0]}" --reason "not this one" >/dev/null
ev=$(terminal "${ids[0]}" 30) || fail "the waiting deploy was not dropped"
assert_eq "$(jq -r .data.reason <<<"$ev")" cancelled "waiting deploy reason"
assert_eq "$(jq -r '.data.provider // "none"' <<<"$ev")" none "waiting deploy: no provider ran"
op resume --service fast --env staging >/dev/null
for id in "${ids[1]}" "${ids[2]}"; do
    assert_eq "$(jq -r .type <<<"$(terminal "$id" 30)")" deploy.succeeded "$id after resume"
done
assert_eq "$(tr '\n' ' ' <"$T/ran-fast")" "v3 v4 " "the order the deploys ran in"
assert_eq "$(of_type target.resumed | jq -r .data.was_paused)" true "target.resumed was_paused"
status_has '.service == "fast" and .paused == null' || fail "status still shows the pause after resume"

log "3. hold: the monitor's rollback request is recorded, notified, not acted on"
op hold --service fast --env staging --reason "investigating" >/dev/null
wait_for 20 redis_has deployq:held:fast/staging || fail "the hold was not applied"
status_has '.service == "fast" and .held.by == "op-test" and .held.reason == "investigating"' \
    || fail "status does not show the hold: $("$DEPLOYQ" status --dir "$REG_DIR" --json)"
"$DEPLOYQ" status --dir "$REG_DIR" --service fast >"$T/status.txt"
grep -q "^  fast/staging: automatic rollback held since .* by op-test (investigating): the watch still runs (deployq release)$" \
    "$T/status.txt" || fail "status table, held: $(cat "$T/status.txt")"
evidence='{"reason":"health check failed: probe http 503","requested_by":"deployq-monitor","from_version":"v4","evidence":{"probe":"http","kind":"consecutive_failures"}}'
rq=$(inject rollback.requested fast staging v4 "${ids[2]}" "$evidence")
held=$(first_event '.type == "rollback.held" and .data.request_id == $a' "$rq") || fail "no rollback.held for $rq"
assert_eq "$(jq -r .data.held_by <<<"$held")" op-test "rollback.held held_by"
[ -z "$(events | jq -c --arg id "$rq" 'select(.type == "rollback.started" and .data.request_id == $id)')" ] \
    || fail "a held target was rolled back"
grep -q "automatic rollback is held by op-test" "$T/rollback-a.log" || fail "the rollback worker did not say it was held"
wait_for 30 sh -c "curl -fsS '$(fake_url slack)/_fake/calls' | grep -q 'Automatic rollback of fast/staging is held by op-test (investigating)'" \
    || fail "the hold was not notified: $(slack_texts slack)"
op release --service fast --env staging >/dev/null
first_event '.type == "target.released"' >/dev/null || fail "no target.released"
redis_has deployq:held:fast/staging && fail "release was not applied"
status_has '.service == "fast" and .held == null' || fail "status still shows the hold after release"

log "4. refused without an operator key"
"$DEPLOYQ" pause --config "$CONFIG" --key "$T/ci.key" --key-id ci-test --service other --env staging >/dev/null
ev=$(refused wrong_role) || fail "a CI key's pause was not refused"
jq -e '.data.verb == "pause" and .data.key_id == "ci-test"' <<<"$ev" >/dev/null || fail "wrong_role event: $ev"
"$DEPLOYQ" keygen --out "$T/ghost.key" --id ghost --role operator >/dev/null
"$DEPLOYQ" pause --config "$CONFIG" --key "$T/ghost.key" --key-id ghost --service other --env staging >/dev/null
refused unsigned >/dev/null || fail "an unknown key's pause was not refused"
# signed by another key than the one it names
produce_raw "$("$DEPLOYQ" pause --dry-run --key "$T/ghost.key" --key-id op-test --service other --env staging)" other/staging
refused bad_signature >/dev/null || fail "a bad signature was not refused"
msg=$(op hold --dry-run --service other --env staging)
produce_raw "$msg" other/staging
produce_raw "$msg" other/staging
refused replayed_nonce >/dev/null || fail "a replayed operator command was not refused"
op pause --service nope --env staging >/dev/null
refused unknown_target >/dev/null || fail "an unknown target was not refused"
produce_raw '{"schema":"deployq.signed/v1","request":"{garbled' other/staging
first_event '.type == "deploy.rejected"' >/dev/null || fail "a garbled message was not rejected"
redis_has deployq:paused:other/staging && fail "a refused command paused other/staging"
assert_eq "$(of_type target.held | jq -s 'map(select(.service == "other")) | length')" 1 "holds of other/staging (one, not the replay)"
o2=$(submit --service other --env staging --version o2)
assert_eq "$(jq -r .type <<<"$(terminal "$o2" 30)")" deploy.succeeded "other/staging still deploys"

log "5. retry a failed deploy: a new deployment of the same version, linked to the old one"
touch "$T/flaky-down"
f1=$(submit --service flaky --env staging --version f1)
assert_eq "$(jq -r .type <<<"$(terminal "$f1" 30)")" deploy.failed "f1 while its provider is down"
rm "$T/flaky-down"
msg=$(op retry "$f1" --dry-run --reason "provider back")
produce_raw "$msg" "$f1"
val=$(first_event '.type == "deploy.validated" and .data.retry_of == $a' "$f1") || fail "no deploy.validated retrying $f1"
f2=$(jq -r .deployment_id <<<"$val")
[ "$f2" != "$f1" ] || fail "the retry reused the old deployment id"
jq -e '.service == "flaky" and .environment == "staging" and .version == "f1" and .data.key_id == "op-test"
       and .data.retry_reason == "provider back"' <<<"$val" >/dev/null || fail "the retry's deploy.validated: $val"
assert_eq "$(jq -r .type <<<"$(terminal "$f2" 30)")" deploy.succeeded "the retry of f1"
status_has ".service == \"flaky\" and .current_deployment_id == \"$f2\"" || fail "status never showed $f2 as current"
"$DEPLOYQ" status --dir "$REG_DIR" --service flaky >"$T/status.txt"
grep -q "^  flaky/staging: current $f2 is a retry of $f1$" "$T/status.txt" || fail "status table, retry: $(cat "$T/status.txt")"
"$DEPLOYQ" history --dir "$REG_DIR" --deployment "$f2" --type deploy.validated | grep -q " $f2 retry of $f1$" \
    || fail "history of the retry: $("$DEPLOYQ" history --dir "$REG_DIR" --deployment "$f2")"
produce_raw "$msg" "$f1"
first_event '.type == "operator.refused" and .data.verb == "retry" and any(.data.reasons[]; .code == "replayed_nonce")' \
    >/dev/null || fail "the same retry sent again was not refused as a replay"
# every request read again, as after a crash before the offsets were committed
"$VALIDATOR" --config "$CONFIG" -g deployq-redeliver >"$T/validator-b.log" 2>&1 &
vb=$!
PIDS+=("$vb")
wait_for 60 sh -c "[ \$(kcat -C -b '$BROKERS' -t '$TOPIC_EVENTS' -o beginning -e -q -f '%s\n' 2>/dev/null |
    jq -c --arg a '$f1' 'select(.type == \"deploy.validated\" and .data.retry_of == \$a)' | wc -l) -ge 2 ]" \
    || fail "the redelivered retry was not judged again"
retries=$(of_type deploy.validated | jq -s --arg a "$f1" 'map(select(.data.retry_of == $a))')
assert_eq "$(jq '[.[].deployment_id] | unique | length' <<<"$retries")" 1 "new deployments for one retry"
assert_eq "$(jq '[.[].id] | unique | length' <<<"$retries")" 1 "distinct events for one redelivered retry"
kill -TERM "$vb"
wait_for 30 sh -c "! kill -0 $vb 2>/dev/null" || fail "validator b did not stop"
op retry "$o1" >/dev/null
ev=$(refused nothing_to_retry) || fail "the retry of a succeeded deploy was not refused"
jq -e --arg m "nothing to retry: deployment $o1 succeeded; to deploy its version again, submit a new request (deployq submit)" \
    'any(.data.reasons[]; .message == $m)' <<<"$ev" >/dev/null || fail "nothing-to-retry message: $ev"
op retry "$(new_uuid)" >/dev/null
refused unknown_deployment >/dev/null || fail "the retry of an unknown deployment was not refused"
sop() { "$DEPLOYQ" "$1" --config "$CONFIG" --key "$T/scoped.key" --key-id op-other "${@:2}"; }
sop retry "$f1" >/dev/null
ev=$(refused out_of_scope) || fail "a key scoped to other retried flaky"
jq -e '.data.verb == "retry" and .data.key_id == "op-other"' <<<"$ev" >/dev/null || fail "out_of_scope event: $ev"
sop pause --service fast --env staging >/dev/null
first_event '.type == "operator.refused" and .data.verb == "pause" and any(.data.reasons[]; .code == "out_of_scope")' \
    >/dev/null || fail "a key scoped to other paused fast/staging"
redis_has deployq:paused:fast/staging && fail "an out-of-scope pause was applied"
assert_eq "$(of_type deploy.validated | jq -s --arg a "$f1" 'map(select(.data.retry_of == $a)) | length')" "$(jq length <<<"$retries")" \
    "retries after the refused ones"

events | schema_check || fail "events do not match the schemas"
echo ok
