#!/usr/bin/env bash
# deployq check (offline: no broker, no Redis) and the git pre-push hook that runs it:
# a good configuration passes, a malformed gate key fails with "path:line: message", a
# request that would be rejected by the schema fails, a frozen target fails unless
# --override-freeze; `hook install` writes an executable pre-push hook that stops a push
# of a broken deployq.yaml (and lets a good one through), refuses to replace a hook it did
# not write without --force, and `hook uninstall` removes only its own.
# Stage 1 (issue 14): every lint case is refused in one run, each with its file:line, and
# deployq-rollback refuses `rollback: maybe` at start as check does; required_vars are
# checked by name (environment or --vars-from); `checks:` run with a summary and the tail
# of a failed check (a secret of deployq.yaml redacted), exit 3; the hook runs the checks
# of the environments whose `branch:` is pushed: a failing one stops the push, a passing
# one lets it through, DEPLOYQ_SKIP_CHECKS=1 skips them and says so.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-gates.sh"

# No broker and no Redis are started: check must not need them.
BROKERS=127.0.0.1:1 REDIS_URL=redis://127.0.0.1:1 TOPIC_REQUESTS=r TOPIC_EVENTS=e TOPIC_DEAD=d
write_config '  shop:
    environments:
      staging: {}
      production:
        requires: staging
        approval: required
        freeze:
          - {from: "2020-01-01T00:00:00Z", until: "2099-01-01T00:00:00Z", reason: launch week}'
check() { "$DEPLOYQ" check --config "$CONFIG" "$@"; }
# A production that requires staging needs a version verified there: staging is watched
# (a monitor emits deploy.verified), else check refuses it (below).
sed -i 's|^      staging: {}$|      staging:\n        monitor: {probes: [{name: health, type: http, url: "http://127.0.0.1:1/health"}]}|' "$CONFIG"

# A good configuration; a good request.
out=$(check) || fail "check of a good config failed"
grep -q "^ok: $CONFIG parses$" <<<"$out" || fail "no parse line: $out"
grep -q "^ok: 3 service(s), 6 environment(s) checked$" <<<"$out" || fail "no count line: $out"
out=$(check --service api --env staging --version 3f2c1ab) || fail "check of a good request failed"
grep -q "^ok: a request for api/staging version 3f2c1ab passes schemas/request.json$" <<<"$out" || fail "$out"
assert_eq "$(check --quiet --service api --env staging --version 3f2c1ab)" "" "quiet output"

# A request the validator would reject.
rc=0; err=$(check --service api --env staging --version "has space" 2>&1 >/dev/null) || rc=$?
assert_eq "$rc" 1 "exit code, bad version"
grep -q "^deployq: check: the request for api/staging version has space would be rejected: /version: " <<<"$err" || fail "$err"
rc=0; err=$(check --service api --env nowhere 2>&1 >/dev/null) || rc=$?
assert_eq "$rc" 1 "exit code, unknown env"
grep -q "^deployq: check: service 'api' has no environment 'nowhere'$" <<<"$err" || fail "$err"

# A frozen target; the override turns the problem into a note; the gates are listed.
rc=0; err=$(check --service shop --env production 2>&1 >/dev/null) || rc=$?
assert_eq "$rc" 1 "exit code, frozen"
grep -q "shop/production is frozen until 2099-01-01T00:00:00.000Z (launch week)" <<<"$err" || fail "$err"
out=$(check --service shop --env production --override-freeze "hotfix") || fail "override not accepted"
grep -q "^note: shop/production requires the version to be verified in staging first$" <<<"$out" || fail "$out"
grep -q "^note: shop/production needs a signed approval" <<<"$out" || fail "$out"

# A malformed gate key anywhere fails, with the file and line.
cp "$CONFIG" "$T/good.yaml"
printf '      broken:\n        freeze:\n          - {from: tomorrow, until: "2099-01-01T00:00:00Z"}\n' >>"$CONFIG"
line=$(grep -n '^      broken:' "$CONFIG" | cut -d: -f1)
rc=0; err=$(check 2>&1 >/dev/null) || rc=$?
assert_eq "$rc" 1 "exit code, malformed freeze"
grep -qF "deployq: check: $CONFIG:$((line + 1)): services.shop.environments.broken.freeze: entry 1: from must be an RFC 3339 time" <<<"$err" ||
    fail "$err"
cp "$T/good.yaml" "$CONFIG"

# A production that needs a version verified in a staging no monitor watches can never be
# promoted: check refuses it at the line of its requires:, and says what to add. The
# validator starts anyway (every other target works), with the same line as a warning.
printf '  web:\n    environments:\n      staging: {}\n      production:\n        requires: staging\n' >>"$CONFIG"
line=$(grep -n '^        requires: staging$' "$CONFIG" | tail -n1 | cut -d: -f1)
rc=0; err=$(check 2>&1 >/dev/null) || rc=$?
assert_eq "$rc" 1 "exit code, unverifiable staging"
grep -qF "deployq: check: $CONFIG:$line: services.web.environments.production.requires: staging: staging has no monitor, so nothing ever emits deploy.verified there and production can never be promoted; add a monitor with probes to services.web.environments.staging" <<<"$err" ||
    fail "$err"
"$VALIDATOR" --config "$CONFIG" >"$T/validator.log" 2>&1 & # it then waits for a Redis: stopped below
vpid=$!
PIDS+=("$vpid")
wait_for 20 grep -qF "$CONFIG:$line: services.web.environments.production.requires: staging: staging has no monitor" "$T/validator.log" ||
    fail "no warning from the validator: $(head -c 2000 "$T/validator.log")"
kill "$vpid" 2>/dev/null || true
printf '        promotion_needs: succeeded\n' >>"$CONFIG"
check --quiet || fail "promotion_needs: succeeded was refused"
cp "$T/good.yaml" "$CONFIG"

# docs/examples/deployq.yaml, every section of the configuration, passes check (its
# ${NAME} references set as a deployment would).
GITHUB_TOKEN=t SLACK_DEPLOYS_URL=https://hooks.example/x PROMETHEUS_TOKEN=t LB_TOKEN=t \
    "$DEPLOYQ" check --quiet --config "$DEPLOYQ_SOURCE/docs/examples/deployq.yaml" ||
    fail "docs/examples/deployq.yaml does not pass check"

# Stage 1 lint: every case in one file, every problem said, each at its line.
cp "$T/good.yaml" "$T/lint.yaml"
cat >>"$T/lint.yaml" <<'YAML'
  lintsvc:
    checks:
      - {name: unit, run: "true", colour: red}
    sentry: {org: acme, projcts: [api]}
    environments:
      staging:
        monitor:
          probes: 7
        rollback: maybe
        providers: [weird]
      e2: {providers: [rw]}
      e3: {providers: [gh]}
      e4: {providers: [circle]}
      e5:
        providers:
          - {type: webhook, url: "https://deploy.example/hook", status_ur: "https://deploy.example/s"}
providers:
  weird: {type: herokuu}
  rw: {type: railway, token: t}
  gh: {type: github-actions, token: t}
  circle: {type: circleci, token: t}
  unused: {type: herokuu}   # no chain names it: nobody reads it, so check does not either
executor:
  lock_ttl: soon
monitor:
  colour: red
notifications:
  slack_webhook: "hooks.slack.com/services/T0/B0/x"
drift:
  key: short
YAML
at() { grep -n -- "$1" "$T/lint.yaml" | head -n1 | cut -d: -f1; }
rc=0; err=$("$DEPLOYQ" check --config "$T/lint.yaml" 2>&1 >/dev/null) || rc=$?
assert_eq "$rc" 1 "exit code, lint"
for want in \
    "$(at 'colour: red}'): services.lintsvc.checks[1]: unknown key 'colour'" \
    "$(($(at 'probes: 7') - 1)): services.lintsvc.environments.staging.monitor.probes: required, a non-empty list (not a list)" \
    "$(at 'rollback: maybe'): services.lintsvc.environments.staging.rollback: expected auto or notify" \
    "$(at '  weird:'): lintsvc/staging: provider 1 (providers.weird): provider type \"herokuu\" is not one of github-actions, railway" \
    "$(at '  rw:'): lintsvc/e2: provider 1 (providers.rw): provider rw: \"service_id\" and \"environment_id\" are required" \
    "$(at '  gh:'): lintsvc/e3: provider 1 (providers.gh): provider gh: \"owner\" is required" \
    "$(at '  circle:'): lintsvc/e4: provider 1 (providers.circle): provider circle: \"slug\"" \
    "$(($(at 'status_ur:') - 1)): lintsvc/e5: provider 1: provider webhook: unknown key 'status_ur'" \
    "$(at 'lock_ttl: soon'): executor.lock_ttl: expected a duration" \
    "$(at '^  colour: red$'): monitor: unknown key 'colour'" \
    "$(at 'slack_webhook:'): notifications.slack_webhook: expected an absolute http:// or https:// URL" \
    "$(at 'projcts:'): services.lintsvc.sentry: unknown key 'projcts'" \
    "$(at 'key: short'): drift.key: expected 16 to 128 characters"; do
    grep -qF "deployq: check: $T/lint.yaml:$want" <<<"$err" || fail "lint: no '$want' in: $err"
done
grep -q "^deployq: check: 13 problem(s)$" <<<"$err" || fail "lint: not 13 problems: $err"
# The worker refuses what check refuses: `rollback: maybe` stops deployq-rollback at start.
ROLLBACK="$DEPLOYQ_BUILD/workers/rollback/deployq-rollback"
printf 'services:\n  api:\n    environments:\n      staging: {rollback: maybe}\n' >"$T/maybe.yaml"
rc=0; timeout 20 "$ROLLBACK" --config "$T/maybe.yaml" --brokers 127.0.0.1:1 --health-listen off >"$T/rollback.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "deployq-rollback started with rollback: maybe (rc $rc)"
grep -qF "$T/maybe.yaml:4: services.api.environments.staging.rollback: expected auto or notify" "$T/rollback.log" ||
    fail "no reason from deployq-rollback: $(head -c 2000 "$T/rollback.log")"

# Stage 1 with a target: required_vars by name, then checks: (a secret of the file never
# shows in their output), exit 3 when one fails.
cp "$T/good.yaml" "$T/checks.yaml"
cat >>"$T/checks.yaml" <<'YAML'
  runner:
    checks:
      - {name: unit, run: [sh, -c, "echo unit fine"]}
      - {name: lint, run: "echo the token is $DQ_CHECK_SECRET; echo lint broke; exit 7", env: [production]}
      - {name: build, run: "true", parallel: false, timeout: 1m}
    environments:
      staging: {}
      production:
        required_vars: [DQ_CHECK_VAR]
        drift_check: [echo, DQ_CHECK_VAR]
notifications:
  webhook: "https://hooks.example/deploys"
  webhook_secret: "${DQ_CHECK_SECRET}"
YAML
export DQ_CHECK_SECRET=canary-7f3c9e1a5b2d4f6081a3c5e7
rc=0; out=$("$DEPLOYQ" check --config "$T/checks.yaml" --service runner --env staging 2>&1) || rc=$?
assert_eq "$rc" 0 "exit code, staging checks"
grep -qE "^  unit +passed +[0-9.]+ s  0$" <<<"$out" || fail "no summary row for unit: $out"
grep -qE "^  build +passed" <<<"$out" || fail "no summary row for build: $out"
! grep -q "lint" <<<"$out" || fail "a production-only check ran on staging: $out"
rc=0; err=$("$DEPLOYQ" check --config "$T/checks.yaml" --service runner --env production 2>&1 >/dev/null) || rc=$?
assert_eq "$rc" 1 "exit code, a required variable missing"
line=$(grep -n 'required_vars: \[DQ_CHECK_VAR\]' "$T/checks.yaml" | cut -d: -f1)
grep -qF "deployq: check: $T/checks.yaml:$line: services.runner.environments.production.required_vars: DQ_CHECK_VAR is not set in the environment" <<<"$err" ||
    fail "required var: $err"
grep -q "checks not run: fix the configuration first" <<<"$err" || fail "checks ran with a problem: $err"
printf 'export DQ_CHECK_VAR=from-file-value\n' >"$T/vars.env"
rc=0; all=$("$DEPLOYQ" check --config "$T/checks.yaml" --service runner --env production --vars-from "$T/vars.env" 2>&1) || rc=$?
assert_eq "$rc" 3 "exit code, a failed check"
grep -qE "^  lint +failed +[0-9.]+ s  7$" <<<"$all" || fail "no failed row: $all"
grep -q "check 'lint' failed; the last lines of its output:" <<<"$all" || fail "no tail: $all"
grep -q "^  | lint broke$" <<<"$all" || fail "no output line: $all"
grep -q "^  | the token is \*\*\*$" <<<"$all" || fail "secret not redacted: $all"
! grep -qe "$DQ_CHECK_SECRET" -e from-file-value <<<"$all" || fail "a secret or a value shown: $all"
rc=0; "$DEPLOYQ" check --config "$T/checks.yaml" --service runner --env production --vars-from "$T/vars.env" --no-checks >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 0 "exit code, --no-checks"
out=$("$DEPLOYQ" check --config "$T/checks.yaml") || fail "lint of checks.yaml failed"
grep -q "^lint only: no check ran" <<<"$out" || fail "no lint-only line: $out"
# Two environments on one branch: a check both share runs once, each one's own runs too.
cat >"$T/two.yaml" <<'YAML'
services:
  api:
    checks:
      - {name: unit, run: "echo unit fine"}
      - {name: lint, run: "exit 5", env: production}
    environments:
      staging: {branch: main}
      production: {branch: main}
YAML
rc=0; out=$("$DEPLOYQ" check --config "$T/two.yaml" --branch main 2>&1) || rc=$?
assert_eq "$rc" 3 "exit code, --branch main"
assert_eq "$(grep -cE '^  unit +passed' <<<"$out")" 1 "runs of a check shared by two environments"
grep -qE "^  lint +failed" <<<"$out" || fail "production's own check did not run: $out"
unset DQ_CHECK_SECRET

# The hook, in a fresh repository with a bare remote.
export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.com GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.com
git init -q --bare "$T/remote.git"
git init -q -b main "$T/repo"
cd "$T/repo"
git remote add origin "$T/remote.git"
cp "$T/good.yaml" deployq.yaml
git add deployq.yaml && git commit -q -m one
unset DEPLOYQ_CONFIG
out=$("$DEPLOYQ" hook install) || fail "hook install failed"
assert_eq "$out" "installed $T/repo/.git/hooks/pre-push (runs deployq check --config deployq.yaml)" "install output"
[ -x .git/hooks/pre-push ] || fail "the hook is not executable"
git push -q origin main 2>"$T/push1.err" || fail "a push of a good config was stopped: $(cat "$T/push1.err")"

printf 'nonsense: [\n' >>deployq.yaml
git commit -q -am broken
rc=0; git push -q origin main 2>"$T/push2.err" || rc=$?
[ "$rc" -ne 0 ] || fail "a push of a broken config went through"
grep -q "deployq: check: deployq.yaml" "$T/push2.err" || fail "no reason shown: $(cat "$T/push2.err")"
assert_eq "$(git -C "$T/remote.git" rev-parse main)" "$(git rev-parse HEAD~1)" "remote unchanged"
git push -q --no-verify origin main 2>/dev/null || fail "--no-verify did not skip the hook"

# The hook runs the checks of the environments a push targets (branch: main is staging's).
cp "$T/good.yaml" deployq.yaml
cat >>deployq.yaml <<'YAML'
  hooked:
    checks:
      - {name: tests, run: [sh, tests.sh]}
    environments:
      staging: {branch: main}
      production: {}
YAML
printf 'echo all tests pass
' >tests.sh
git add deployq.yaml tests.sh && git commit -q -m checks
git push -q origin main >"$T/push3.out" 2>&1 || fail "a push with passing checks was stopped: $(cat "$T/push3.out")"
grep -qE "^  tests +passed" "$T/push3.out" || fail "the hook did not run the check: $(cat "$T/push3.out")"
printf 'echo 1 test failed: test_checkout >&2
exit 1
' >tests.sh
git commit -q -am "a failing test"
rc=0; git push -q origin main >"$T/push4.err" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a push with a failing check went through"
grep -q "check 'tests' failed" "$T/push4.err" || fail "no failed check shown: $(cat "$T/push4.err")"
grep -q "^  | 1 test failed: test_checkout$" "$T/push4.err" || fail "no output tail: $(cat "$T/push4.err")"
assert_eq "$(git -C "$T/remote.git" rev-parse main)" "$(git rev-parse HEAD~1)" "remote unchanged by a failing check"
# A branch no environment names: lint only, said so.
git push -q origin HEAD:refs/heads/feature >"$T/push5.out" 2>&1 || fail "a push of an unmapped branch was stopped"
grep -q "no environment has branch: feature" "$T/push5.out" || fail "unmapped branch not said: $(cat "$T/push5.out")"
DEPLOYQ_SKIP_CHECKS=1 git push -q origin main >"$T/push6.err" 2>&1 || fail "DEPLOYQ_SKIP_CHECKS=1 did not skip the checks: $(cat "$T/push6.err")"
grep -q "^deployq: pre-push: checks skipped on purpose (DEPLOYQ_SKIP_CHECKS=1): lint only$" "$T/push6.err" ||
    fail "the skip was not said: $(cat "$T/push6.err")"
assert_eq "$(git -C "$T/remote.git" rev-parse main)" "$(git rev-parse HEAD)" "remote updated after the skip"

# Someone else's hook is not replaced without --force; uninstall removes only ours.
printf '#!/bin/sh\nexit 0\n' >.git/hooks/pre-push
rc=0; "$DEPLOYQ" hook install 2>"$T/install.err" || rc=$?
assert_eq "$rc" 1 "exit code, foreign hook"
grep -q "was not written by deployq: pass --force" "$T/install.err" || fail "$(cat "$T/install.err")"
rc=0; "$DEPLOYQ" hook uninstall 2>/dev/null || rc=$?
assert_eq "$rc" 1 "exit code, uninstall of a foreign hook"
"$DEPLOYQ" hook install --force --config "$T/good.yaml" >/dev/null || fail "install --force failed"
grep -qF "check --quiet --config '$T/good.yaml'" .git/hooks/pre-push || fail "outside config not absolute: $(cat .git/hooks/pre-push)"
"$DEPLOYQ" hook uninstall >/dev/null || fail "uninstall failed"
[ ! -e .git/hooks/pre-push ] || fail "hook still there"
rc=0; "$DEPLOYQ" hook install -C /tmp 2>/dev/null || rc=$?
assert_eq "$rc" 1 "exit code, not a repository"
echo ok
