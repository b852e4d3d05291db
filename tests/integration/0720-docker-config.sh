#!/usr/bin/env bash
# docker/deployq.yaml, the configuration of the compose stack, takes a version from
# staging to production: `deployq check` accepts the file as shipped (and names the
# variable when one is not set); then the four pipeline workers run on a copy of it in
# which only the monitor's windows and interval are shortened (5m, 15m, 10s -> 4s, 4s,
# 1s) and the test's topics added, with every ${NAME} it uses pointing at the doubles:
# the webhook deployer, the health endpoint, Slack. v0 is refused in production (never
# verified in staging); v1 is deployed to staging, watched, verified, then promoted,
# deployed to production and verified there.
#
# When the workers serve /metrics (`--health-listen`, issue 13's metrics work), each runs
# with its health port and, after the flow, every metric that docker/monitoring's
# dashboard and alert rules use must be served by one of them
# (tests/docker/monitoring-check.sh with DEPLOYQ_METRICS_SCRAPE). Until that option
# exists the test says so in its log and checks the flow alone.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"
. "$(dirname "$0")/helpers-monitor.sh"
. "$(dirname "$0")/helpers-rollback.sh"
. "$(dirname "$0")/helpers-gates.sh"

readonly SHIPPED=$DEPLOYQ_SOURCE/docker/deployq.yaml

start_redis
start_broker
start_fake deployer webhook
start_fake health health
start_fake slack slack

"$DEPLOYQ" keygen --out "$T/ci.key" --id ci-1 >/dev/null
export DEPLOYQ_CI_PUBLIC_KEY DEPLOYQ_DEPLOY_URL DEPLOYQ_DEPLOY_TOKEN API_STAGING_HEALTH_URL
export API_PRODUCTION_HEALTH_URL SLACK_WEBHOOK_URL DEPLOYQ_BROKERS DEPLOYQ_REDIS_URL
DEPLOYQ_CI_PUBLIC_KEY=$(pubkey "$T/ci.key")
DEPLOYQ_DEPLOY_URL="$(fake_url deployer)/deploy"
DEPLOYQ_DEPLOY_TOKEN=test-deploy-token
API_STAGING_HEALTH_URL="$(fake_url health)/health"
API_PRODUCTION_HEALTH_URL="$(fake_url health)/health"
SLACK_WEBHOOK_URL="$(fake_url slack)/services/T000/B000/test"
# As compose sets them: they win over the file's kafka:9092 and redis:6379.
DEPLOYQ_BROKERS=$BROKERS
DEPLOYQ_REDIS_URL=$REDIS_URL

# 1. The file as shipped loads, with the promotion rule the stack relies on.
"$DEPLOYQ" check --config "$SHIPPED" >"$T/check.out" 2>&1 || fail "deployq check refuses docker/deployq.yaml: $(cat "$T/check.out")"
"$DEPLOYQ" check --config "$SHIPPED" --service api --env production >"$T/check-prod.out" 2>&1 ||
    fail "deployq check api/production: $(cat "$T/check-prod.out")"
grep -qx 'note: api/production requires the version to be verified in staging first' "$T/check-prod.out" ||
    fail "no promotion note: $(cat "$T/check-prod.out")"
# Every variable is needed: without one, check names it at its line.
set +e
env -u SLACK_WEBHOOK_URL "$DEPLOYQ" check --config "$SHIPPED" >"$T/check-unset.out" 2>&1; rc=$?
set -e
assert_eq "$rc" 1 "check without SLACK_WEBHOOK_URL"
line=$(grep -n 'slack_webhook: ${SLACK_WEBHOOK_URL}' "$SHIPPED" | cut -d: -f1)
grep -qF "$SHIPPED:$line: \${SLACK_WEBHOOK_URL} is not set in the environment" "$T/check-unset.out" ||
    fail "unset variable: $(cat "$T/check-unset.out")"

# 2. The copy the workers run on: the shipped file with short windows and the test's topics.
CONFIG=$T/deployq.yaml
cp "$SHIPPED" "$CONFIG"
replace_once() { # replace_once OLD NEW: in $CONFIG, OLD must occur exactly once
    [ "$(grep -cF -- "$1" "$CONFIG")" = 1 ] || fail "docker/deployq.yaml: '$1' is not there exactly once"
    OLD=$1 NEW=$2 "$PY" -c 'import os,sys; p=sys.argv[1]; s=open(p).read(); open(p,"w").write(s.replace(os.environ["OLD"], os.environ["NEW"]))' "$CONFIG"
}
replace_once 'window: 5m' 'window: 4s'
replace_once 'window: 15m' 'window: 4s'
replace_once 'interval: 10s' 'interval: 1s'
config_base | sed -n '/^topics:/,$p' >>"$CONFIG"
diff "$SHIPPED" "$CONFIG" >"$T/config.diff" || true
log "the workers' configuration differs from docker/deployq.yaml by: $(grep -c '^[<>]' "$T/config.diff") lines"

# The workers, each with a health port when they have the option.
declare -A health=()
if "$VALIDATOR" --help 2>&1 | grep -q -- '--health-listen'; then
    for w in validator executor monitor rollback; do health[$w]=127.0.0.1:$(free_port); done
else
    log "the workers have no --health-listen yet: /metrics is not checked"
fi
hl() { [ -z "${health[$1]:-}" ] || printf -- '--health-listen\n%s\n' "${health[$1]}"; }
mapfile -t a < <(hl validator); start_validator a "${a[@]}"
mapfile -t a < <(hl executor); start_executor a "${a[@]}"
mapfile -t a < <(hl monitor); start_monitor a "${a[@]}"
mapfile -t a < <(hl rollback); start_rollback a "${a[@]}"

submit_as_ci() { "$DEPLOYQ" submit --config "$CONFIG" --key "$T/ci.key" --key-id ci-1 --service api "$@"; }

# 3. Production before staging: refused by the promotion gate.
id=$(submit_as_ci --env production --version v0) || fail "submit v0 failed"
ev=$(wait_event "$id" deploy.rejected 60) || fail "v0 to production was not rejected"
assert_eq "$(reason_codes "$ev")" "promotion" "v0's rejection"

# 4. v1 to staging: deployed through the webhook deployer, watched, verified.
id=$(submit_as_ci --env staging --version v1) || fail "submit v1 to staging failed"
wait_event "$id" deploy.succeeded 60 >/dev/null || fail "v1 was not deployed to staging"
wait_event "$id" deploy.verified 60 >/dev/null || fail "v1 was not verified in staging"
calls=$(fake_calls deployer | jq -c '[.calls[] | select(.method == "POST" and .path == "/deploy")]')
assert_eq "$(jq -r '.[0].body.environment + " " + .[0].body.version' <<<"$calls")" "staging v1" "the deployer's first call"
assert_eq "$(jq -r '.[0].auth.present' <<<"$calls")" true "the deployer's token sent"
wait_recorded deployq:verified:api:staging:v1

# 5. v1 promoted to production: validated, deployed, verified.
id=$(submit_as_ci --env production --version v1) || fail "submit v1 to production failed"
wait_event "$id" deploy.validated 60 >/dev/null || fail "v1 to production was not validated: $(events_for "$id" | head -n 3)"
wait_event "$id" deploy.succeeded 60 >/dev/null || fail "v1 was not deployed to production"
wait_event "$id" deploy.verified 60 >/dev/null || fail "v1 was not verified in production"
assert_eq "$(deploy_calls deployer)" 2 "deploys at the deployer (staging, production)"
events | schema_check || fail "an event does not match its schema"
log "v1 went from staging to production on docker/deployq.yaml"

# 6. What the dashboard and the alert rules use is what the workers serve.
if [ "${#health[@]}" -gt 0 ]; then
    urls=""
    for w in validator executor monitor rollback; do
        wait_for 20 curl -fs -o /dev/null "http://${health[$w]}/metrics" || fail "deployq-$w serves no /metrics on ${health[$w]}"
        urls+="http://${health[$w]}/metrics "
    done
    # the registry serves the delivery figures the dashboard shows (deployq report's): its
    # /metrics too, on a free port instead of the shipped :8787
    reg_addr=127.0.0.1:$(free_port)
    replace_once 'listen: ":8787"' "listen: \"$reg_addr\""
    . "$(dirname "$0")/helpers-registry.sh"
    start_registry metrics
    wait_for 20 curl -fs -o /dev/null "http://$reg_addr/metrics" || fail "deployq-registry serves no /metrics on $reg_addr: $(tail -n 3 "$T/registry-metrics.log")"
    urls+="http://$reg_addr/metrics "
    DEPLOYQ_METRICS_SCRAPE=$urls "$DEPLOYQ_SOURCE/tests/docker/monitoring-check.sh" "$DEPLOYQ_SOURCE" >"$T/monitoring-check.log" 2>&1 ||
        fail "the dashboard or the rules use metrics the workers do not serve: $(grep -v '^ok\|^#' "$T/monitoring-check.log" | head -n 20)"
    log "every metric of the dashboard and the rules is served: $(grep -m1 '^scraped' "$T/monitoring-check.log")"
fi
