#!/usr/bin/env bash
# deployq submit --wait: follows the deployment on deployq.events and exits with its
# outcome: 0 deployed (deploy.succeeded; deploy.verified when its data.watch says a watch
# follows), 1 rejected, 3 failed, 4 rolled back, 5 timed out, 6 cannot follow, 7 degraded
# and not rolled back (rollback: notify), 8 approval expired. The verdict comes from the
# events, never from the client's configuration. The executor's, monitor's and rollback
# worker's events are injected with kcat, as they would emit them.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-gates.sh"
. "$(dirname "$0")/helpers-executor.sh"

start_redis
start_broker
start_fake wh webhook
chain="providers:
          - {type: webhook, name: wh, url: \"http://127.0.0.1:$FAKE_PORT_wh/deploy\", status_url: \"http://127.0.0.1:$FAKE_PORT_wh/status/{id}\", poll_interval: 200ms, deadline: 20s}"
write_config "  wx:
    environments:
      staging:
        $chain
      production:
        $chain
        monitor:
          probes:
            - {name: http, type: http, url: \"http://127.0.0.1:1/health\"}
"'  mon:
    environments:
      production:
        monitor:
          probes:
            - {name: http, type: http, url: "http://127.0.0.1:1/health"}
  vault:
    environments:
      production:
        approval: required
        approval_timeout: 3s'
start_validator a
start_validator b # approval expiry: two validators, one rejection
# A CI runner's configuration: brokers and topics, no services (so no monitor: either).
CLIENT_CONFIG="$T/client.yaml"
config_base >"$CLIENT_CONFIG"

# wait_bg NAME ARGS...: run submit --wait in the background, output in $T/NAME.out.
wait_bg() {
    local name=$1; shift
    submit --wait "$@" >"$T/$name.out" 2>"$T/$name.err" &
    eval "PID_$name=$!"
    PIDS+=("$!")
}
# bg_id NAME: the deployment id (the first line) once it is printed.
bg_id() {
    wait_for 20 test -s "$T/$1.out" || fail "$1: no deployment id printed"
    head -n1 "$T/$1.out" | sed -e 's/.*"deployment_id":"\([^"]*\)".*/\1/'
}
# exit_of NAME: the exit status of the background submit, in $RC (not in a subshell:
# only this shell can wait for its children).
exit_of() { local pid; pid=$(eval echo "\$PID_$1"); RC=0; wait "$pid" || RC=$?; }
succeeded='{"provider":"railway","provider_deployment_id":"d-1","duration_ms":1200,"url":"https://api.example"}'

# 1 rejected: an unknown environment.
rc=0; out=$(submit --wait --service api --env nowhere --version v1 --timeout 60) || rc=$?
assert_eq "$rc" 1 "exit code, rejected"
grep -q "deploy.rejected .*unknown_environment: service 'api' has no environment 'nowhere'" <<<"$out" ||
    fail "no rejection line: $out"
assert_eq "$(tail -n1 <<<"$out")" "$(head -n1 <<<"$out"): rejected" "last line"

# 0 deployed: validated, then the executor's started and succeeded.
wait_bg ok --service api --env staging --version v1 --timeout 120
id=$(bg_id ok)
wait_event "$id" deploy.validated 60 >/dev/null || fail "not validated"
# a refused approval and a refused operator command of it are shown with their reasons
inject approval.refused api staging v1 "$id" '{"decision":"approve","key_id":"ci-test","reasons":[{"code":"approver_is_signer","message":"key ci-test signed the request"}],"source":{"topic":"t","partition":0,"offset":1}}' >/dev/null
inject operator.refused api staging v1 "$id" '{"verb":"cancel","key_id":"op-x","reasons":[{"code":"out_of_scope","message":"key op-x may not act on api/staging"},{"code":"stale","message":"issued too long ago"}],"source":{"topic":"t","partition":0,"offset":2}}' >/dev/null
inject deploy.started api staging v1 "$id" '{"provider":"railway","provider_deployment_id":"d-1","attempt":1}' >/dev/null
inject deploy.succeeded api staging v1 "$id" "$succeeded" >/dev/null
exit_of ok; assert_eq "$RC" 0 "exit code, deployed"
grep -q "approval.refused .*api/staging v1  approve by ci-test: approver_is_signer: key ci-test signed the request$" "$T/ok.out" ||
    fail "no approval.refused line with its reason: $(cat "$T/ok.out")"
grep -q "operator.refused .*api/staging v1  cancel by op-x: out_of_scope: key op-x may not act on api/staging; stale: issued too long ago$" "$T/ok.out" ||
    fail "no operator.refused line with its reasons: $(cat "$T/ok.out")"
grep -q "deploy.validated .*api/staging v1  signed by ci-test" "$T/ok.out" || fail "no validated line: $(cat "$T/ok.out")"
grep -q "deploy.started .*provider railway" "$T/ok.out" || fail "no started line"
grep -q "deploy.succeeded .*provider railway, https://api.example" "$T/ok.out" || fail "no succeeded line"
assert_eq "$(tail -n1 "$T/ok.out")" "$id: deployed" "last line"

# 3 failed.
wait_bg bad --service api --env staging --version v2 --timeout 120
id=$(bg_id bad)
wait_event "$id" deploy.validated 60 >/dev/null || fail "not validated"
inject deploy.failed api staging v2 "$id" '{"reason":"build_failed","provider":"railway","provider_status":"FAILED"}' >/dev/null
exit_of bad; assert_eq "$RC" 3 "exit code, failed"
grep -q "deploy.failed .*provider railway, reason build_failed" "$T/bad.out" || fail "no failed line: $(cat "$T/bad.out")"

# 4 rolled back: a monitored target is only settled by verified or a rollback; --json.
wait_bg rb --service mon --env production --version v3 --timeout 120 --json
id=$(bg_id rb)
wait_event "$id" deploy.validated 60 >/dev/null || fail "not validated"
inject deploy.succeeded mon production v3 "$id" "$succeeded" >/dev/null
sleep 1
alive "$PID_rb" || fail "exited at deploy.succeeded although the target is monitored"
hd=$(inject health.degraded mon production v3 "$id" '{"state":"degraded","probe":"http"}')
# the same event again (a redelivery: same id): shown once, as consumers deduplicate by id
inject health.degraded mon production v3 "$id" '{"state":"degraded","probe":"http"}' "$hd" >/dev/null
inject rollback.succeeded mon production v3 "$id" \
    '{"to_version":"v2","method":"redeploy","restored_at":"2026-11-26T10:00:00.000Z"}' >/dev/null
exit_of rb; assert_eq "$RC" 4 "exit code, rolled back"
assert_eq "$(tail -n1 "$T/rb.out")" "{\"deployment_id\":\"$id\",\"outcome\":\"rolled_back\",\"exit_code\":4}" "json outcome"
assert_eq "$(sed -n '2,$p' "$T/rb.out" | head -n -1 | jq -r .type | tr '\n' ' ')" \
    "deploy.validated deploy.succeeded health.degraded rollback.succeeded " "json event lines"

# 0 on a monitored target once verified.
wait_bg ver --service mon --env production --version v4 --timeout 120
id=$(bg_id ver)
wait_event "$id" deploy.validated 60 >/dev/null || fail "not validated"
inject deploy.succeeded mon production v4 "$id" "$succeeded" >/dev/null
inject deploy.verified mon production v4 "$id" "$verified_data" >/dev/null
exit_of ver; assert_eq "$RC" 0 "exit code, verified"

# The verdict comes from the events, not the client's configuration (which has no
# monitor: at all): data.watch true waits for deploy.verified...
wait_bg cw --config "$CLIENT_CONFIG" --service mon --env production --version v7 --timeout 120
id=$(bg_id cw)
wait_event "$id" deploy.validated 60 >/dev/null || fail "not validated"
inject deploy.succeeded mon production v7 "$id" "${succeeded%\}},\"watch\":true}" >/dev/null
sleep 1
alive "$PID_cw" || fail "exited at deploy.succeeded although the event says a watch follows"
inject deploy.verified mon production v7 "$id" "$verified_data" >/dev/null
exit_of cw; assert_eq "$RC" 0 "exit code, verified (client without monitor:)"
assert_eq "$(tail -n1 "$T/cw.out")" "$id: deployed" "last line, watch true"
# ... and data.watch false ends at deploy.succeeded, although this client's configuration
# has monitor: for the target.
wait_bg nw --service mon --env production --version v8 --timeout 30
id=$(bg_id nw)
wait_event "$id" deploy.validated 60 >/dev/null || fail "not validated"
inject deploy.succeeded mon production v8 "$id" "${succeeded%\}},\"watch\":false}" >/dev/null
exit_of nw; assert_eq "$RC" 0 "exit code, deployed without a watch"
grep -q "timed out" "$T/nw.out" && fail "waited for a watch the event said does not follow"

# 7 degraded, not rolled back: the rollback worker's final event under rollback: notify.
wait_bg nt --config "$CLIENT_CONFIG" --service mon --env production --version v9 --timeout 120
id=$(bg_id nt)
wait_event "$id" deploy.validated 60 >/dev/null || fail "not validated"
inject deploy.succeeded mon production v9 "$id" "${succeeded%\}},\"watch\":true}" >/dev/null
inject rollback.requested mon production v9 "$id" '{"reason":"health","requested_by":"deployq-monitor"}' >/dev/null
inject rollback.failed mon production v9 "$id" \
    '{"reason":"policy notify: nothing was rolled back; a person must decide","policy":"notify"}' >/dev/null
exit_of nt; assert_eq "$RC" 7 "exit code, not rolled back (notify)"
assert_eq "$(tail -n1 "$T/nt.out")" "$id: not_rolled_back" "last line, notify"

# 8 approval expired: nobody decides within approval_timeout (3 s); the validator rejects
# it (approval_expired) and --wait ends long before its own timeout.
start=$(date +%s)
rc=0; out=$(submit --wait --config "$CLIENT_CONFIG" --service vault --env production --version v10 --timeout 60) || rc=$?
assert_eq "$rc" 8 "exit code, approval expired"
[ $(($(date +%s) - start)) -lt 30 ] || fail "approval expiry took $(($(date +%s) - start)) s"
grep -q "deploy.awaiting_approval " <<<"$out" || fail "no awaiting line: $out"
grep -q "deploy.rejected .*approval_expired: no approver decided before " <<<"$out" || fail "no expiry line: $out"
id=$(head -n1 <<<"$out")
assert_eq "$(tail -n1 <<<"$out")" "$id: approval_expired" "last line, expired"
redis_has "deployq:pending:$id" && fail "pending record kept after expiry"
assert_eq "$(events_for "$id" | jq -r 'select(.type == "deploy.rejected") | .id' | wc -l)" 1 "one rejection"

# 5 timed out: validated, but nobody deploys it.
rc=0; out=$(submit --wait --service api --env staging --version v5 --timeout 3) || rc=$?
assert_eq "$rc" 5 "exit code, timed out"
grep -q "^timed out after 3 s waiting for " <<<"$out" || fail "no timeout line: $out"

# The executor itself says whether a watch follows (last: an executor reads the requests
# validated above too, and fails those of targets without providers).
fake_script wh '{"mode":"succeed","steps":1}'
start_executor a
rc=0; out=$(submit --wait --config "$CLIENT_CONFIG" --service wx --env staging --version e1 --timeout 60) || rc=$?
assert_eq "$rc" 0 "exit code, executor without a watch"
id=$(head -n1 <<<"$out")
assert_eq "$(events_for "$id" | jq -c 'select(.type == "deploy.succeeded") | .data.watch')" false "executor data.watch, no monitor:"
wait_bg ew --config "$CLIENT_CONFIG" --service wx --env production --version e2 --timeout 60
id=$(bg_id ew)
ev=$(wait_event "$id" deploy.succeeded 60) || fail "executor: no deploy.succeeded for $id"
assert_eq "$(jq -c .data.watch <<<"$ev")" true "executor data.watch, monitor:"
sleep 1
alive "$PID_ew" || fail "exited at the executor's deploy.succeeded although a watch follows"
inject deploy.verified wx production e2 "$id" "$verified_data" >/dev/null
exit_of ew; assert_eq "$RC" 0 "exit code, executor with a watch, verified"

# 6 the request cannot be followed (no broker).
rc=0; submit --wait --service api --env staging --version v6 --timeout 5 --brokers 127.0.0.1:1 \
    >/dev/null 2>"$T/nobroker.err" || rc=$?
assert_eq "$rc" 6 "exit code, no broker"
echo ok
