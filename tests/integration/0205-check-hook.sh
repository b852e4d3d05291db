#!/usr/bin/env bash
# deployq check (offline: no broker, no Redis) and the git pre-push hook that runs it:
# a good configuration passes, a malformed gate key fails with "path:line: message", a
# request that would be rejected by the schema fails, a frozen target fails unless
# --override-freeze; `hook install` writes an executable pre-push hook that stops a push
# of a broken deployq.yaml (and lets a good one through), refuses to replace a hook it did
# not write without --force, and `hook uninstall` removes only its own.
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
