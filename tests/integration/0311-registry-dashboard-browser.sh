#!/usr/bin/env bash
# 0311: the registry dashboard in a real headless Chromium (tests/browser/, playwright-core
# driving Debian's /usr/bin/chromium). A validator and a registry with its HTTP API run
# over the test's broker; the page is opened, and a deploy submitted while it is open
# (deployq submit -> deploy.validated) must appear on it - live feed, deploys in flight,
# the target's grid cell - without a reload. The API wants a bearer token: the test types
# it into the page's form, and the stream then runs with it. A canary under way (two
# canary.step events) shows as its step tracker in its target's cell. Skipped (77) only when node or chromium is
# missing; scripts/install-deps.sh installs both.
source "$(dirname "$0")/helpers.sh"

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
command -v node >/dev/null 2>&1 || { echo "# skipped: node is missing" >&2; exit 77; }
[ -x "$CHROMIUM" ] || { echo "# skipped: $CHROMIUM is missing" >&2; exit 77; }

source "$(dirname "$0")/helpers-registry.sh"
source "$(dirname "$0")/helpers-http.sh"

start_redis
start_broker
export DQ_TEST_HTTP_TOKEN="ui-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
write_config "$(http_yaml DQ_TEST_HTTP_TOKEN)"
start_validator v1
start_registry ui
wait_api_up

# Something on the page before it opens: one deploy already validated.
first=$(submit --service api --env staging --version v-before) || fail "submit failed"
wait_for 30 bash -c "curl -fs -H 'Authorization: Bearer $DQ_TEST_HTTP_TOKEN' $HTTP/api/deployments/$first >/dev/null" || fail "the first deploy never reached the registry"

# A canary under way on web/production (two steps of its four done): the grid cell shows
# its step tracker. Written straight onto the events topic, as the executor would.
"$PY" - "$T/canary.tsv" <<'PY'
import json, sys, time, uuid
now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
dep = str(uuid.uuid4())
with open(sys.argv[1], "w") as out:
    for step, weight in ((1, 5), (2, 25)):
        d = {"schema": "deployq.event/v1", "id": str(uuid.uuid4()), "type": "canary.step",
             "deployment_id": dep, "service": "web", "environment": "production", "version": "v2",
             "at": now, "actor": "deployq-executor@test/1", "fence": 1,
             "data": {"step": step, "steps": 4, "weight": weight, "canary_color": "green",
                      "stable_color": "blue", "canary_version": "v2", "stable_version": "v1",
                      "router": "edge", "kind": "analysis", "hold_ms": 60000}}
        out.write("web/production\t%s\n" % json.dumps(d, separators=(",", ":")))
PY
produce_events "$T/canary.tsv" || fail "could not write the canary's events"
export CANARY_TARGET=web/production CANARY_TEXT="step 2/4 · 25%" CANARY_BOXES="done,current,,"

version="v-live-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
export SUBMIT_CMD="'$DEPLOYQ' submit --config '$CONFIG' --key '$T/ci.key' --key-id ci-test --service demo --env staging --version $version"
export SUBMIT_VERSION=$version SUBMIT_TARGET=demo/staging
export TOKEN=$DQ_TEST_HTTP_TOKEN
export SCREENSHOT=${DQ_SCREENSHOT:-$T/dashboard.png}
"$DEPLOYQ_SOURCE/tests/browser/run.sh" dashboard.test.mjs "$HTTP/" >"$T/browser.log" 2>&1 || {
    rc=$?
    cat "$T/browser.log" >&2
    [ $rc -ne 77 ] || exit 77
    fail "the browser test failed (exit $rc)"
}
cat "$T/browser.log" >&2
grep -q '^ok: the deploy appeared live' "$T/browser.log" || fail "the browser test did not report success"
! grep -qF "$DQ_TEST_HTTP_TOKEN" "$T"/registry-*.log || fail "the token appears in the registry log"
log "ok: a deploy submitted during the test appeared on the dashboard without a reload"
