#!/usr/bin/env bash
# `deployq up --demo` runs the whole story unattended: the stack, a demo service and a
# local provider; v1 deployed and verified, v2-bad deployed, its failing health checks
# detected and rolled back to v1 with the evidence and the MTTR, narrated in plain lines;
# exit 0, in under two minutes, with nothing left running. (Always the embedded broker:
# `up` hosts its own.)
. "$(dirname "$0")/helpers.sh"

# Usage errors and a missing demo script: a reason, a non-zero exit, nothing started.
set +e
"$DEPLOYQ" up --demo --config /dev/null >/dev/null 2>"$T/usage.err"; rc=$?
set -e
assert_eq "$rc" 2 "up --demo --config"
grep -q -- '--demo writes its own configuration' "$T/usage.err" || fail "usage reason: $(cat "$T/usage.err")"
set +e
DEPLOYQ_DEMO_DIR=$T/nowhere "$DEPLOYQ" up --demo >/dev/null 2>"$T/nodir.err"; rc=$?
set -e
assert_eq "$rc" 1 "up --demo without its scripts"
grep -q 'deployq: up: demo: the demo scripts (health.py, deploy.py) are not next to deployq' "$T/nodir.err" ||
    fail "missing-scripts reason: $(cat "$T/nodir.err")"
[ ! -e "$DEPLOYQ_STATE_DIR/stack.json" ] || fail "stack.json left behind after a failed start"

start=$(date +%s)
set +e
timeout 150 "$DEPLOYQ" up --demo >"$T/demo.out" 2>"$T/demo.log"; rc=$?
set -e
took=$(($(date +%s) - start))
cat "$T/demo.out" >&2
assert_eq "$rc" 0 "exit status of up --demo"
[ "$took" -lt 120 ] || fail "the demo took $took s, expected under two minutes"

# The narration: one plain line per step, in order.
expect_line() { # expect_line REGEX WHAT: the next line matching REGEX comes after the last one
    local n
    n=$(grep -n -E -m1 "$1" <(tail -n "+$((line + 1))" "$T/demo.out") | cut -d: -f1) ||
        fail "no line for $2 (after line $line): $1"
    line=$((line + n))
}
line=0
expect_line '^  \$ deployq submit --service demo --env staging --version v1$' "v1 submitted"
expect_line '^  [0-9:.]{10}  validated: signed by ci-local, strategy rolling$' "v1 validated"
expect_line '^  [0-9:.]{10}  deploying v1 through demo-provider$' "v1 deploying"
expect_line '^  [0-9:.]{10}  deployed in [0-9]+\.[0-9] s$' "v1 deployed"
expect_line '^  [0-9:.]{10}  watching health for 8 s: a probe every 1 s, 3 failures in a row roll back$' "v1 watched"
expect_line '^  [0-9:.]{10}  verified: 8 s window passed clean \([0-9]+ probes\); v1 is the last verified version$' "v1 verified"
expect_line '^  \$ deployq submit --service demo --env staging --version v2-bad$' "v2-bad submitted"
expect_line '^  [0-9:.]{10}  deploying v2-bad through demo-provider$' "v2-bad deploying"
expect_line '^  [0-9:.]{10}  health degraded: probe health saw HTTP 500, expected 200$' "v2-bad degraded"
expect_line '^  [0-9:.]{10}  watching health: 3 probes failed \(HTTP 500, expected 200\): rollback requested$' "the verdict"
expect_line '^ +evidence: probe health, first failure [0-9:.]{10}, decided [0-9:.]{10}$' "the evidence"
expect_line '^ +[0-9:.]{10}  status 500, expected 200$' "a failing sample"
expect_line '^  [0-9:.]{10}  rolling back to v1 \(last verified\) by redeploy through demo-provider$' "rolling back"
expect_line '^  [0-9:.]{10}  rolled back to v1: MTTR [0-9]+\.[0-9] s \(detected [0-9:.]{10}, decided [0-9:.]{10}, restored [0-9:.]{10}\)$' "rolled back"
expect_line '^  the demo service serves v1 again: http://127\.0\.0\.1:[0-9]+/health answers HTTP 200$' "service restored"
expect_line '^Done: v1 was verified; v2-bad failed its health checks and was rolled back to v1$' "summary"
assert_eq "$(grep -c 'status 500, expected 200$' "$T/demo.out")" 3 "failing samples in the evidence"
assert_eq "$(grep -c 'verified:' "$T/demo.out")" 1 "verified lines (v1 only)"
mttr=$(sed -n 's/.*rolled back to v1: MTTR \([0-9]*\)\.[0-9] s.*/\1/p' "$T/demo.out")
[ "$mttr" -lt 10 ] || fail "MTTR $mttr s, expected a few seconds"

# Everything it started is gone: workers, redis, the demo service, the state file.
! pgrep -f "deployq-[a-z]* --config $DEPLOYQ_STATE_DIR" >/dev/null || fail "a worker was left running"
! pgrep -f "health.py --port 0 --port-file $DEPLOYQ_STATE_DIR" >/dev/null || fail "the demo service was left running"
health_url=$(sed -n 's/^  demo service *\(http[^,]*\),.*/\1/p' "$T/demo.out")
[ -n "$health_url" ] || fail "up --demo does not print the demo service's URL"
! curl -fsS -m 2 "$health_url" >/dev/null 2>&1 || fail "the demo service still answers at $health_url"
redis_port=$(sed -n 's/^  redis *redis:\/\/127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/demo.out")
[ -n "$redis_port" ] || fail "up --demo does not print its redis"
! pgrep -f "redis-server 127.0.0.1:$redis_port" >/dev/null || fail "redis-server was left running"
[ ! -e "$DEPLOYQ_STATE_DIR/stack.json" ] || fail "stale stack.json left behind"
echo ok
