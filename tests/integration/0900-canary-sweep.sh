#!/usr/bin/env bash
# 0900: the canary sweep. A canary token of its own in every secret slot - the Redis
# password, a Kafka SASL password, provider tokens, a Prometheus-style probe header, the
# registry API token, the Slack and JSON webhook URLs - while every worker does its work
# and its error paths: a deploy through a provider that first answers 5xx and one that
# refuses connections, a monitored deploy gone bad, a rollback with notifications that
# first fail, a wrong Redis password, a wrong registry token. Then every log, the events
# and dead-letter topics, the registry's files and every notification body are searched
# for every canary: one hit fails the test. Positive controls show the secrets were in use
# (the provider got its token, the Slack double was called on the URL holding its canary).
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"
. "$(dirname "$0")/helpers-monitor.sh"
. "$(dirname "$0")/helpers-rollback.sh"
. "$(dirname "$0")/helpers-registry.sh"

canary() { printf 'cnry%s%s' "$1" "$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"; }
export DQ_REDIS_PASSWORD DQ_SASL_PASSWORD DQ_PROVIDER_TOKEN DQ_GITHUB_TOKEN DQ_PROBE_TOKEN
export DQ_REGISTRY_TOKEN DQ_SLACK_URL DQ_HOOK_URL
DQ_REDIS_PASSWORD=$(canary redis)
DQ_SASL_PASSWORD=$(canary sasl)
DQ_PROVIDER_TOKEN=$(canary provider)
DQ_GITHUB_TOKEN=$(canary github)
DQ_PROBE_TOKEN=$(canary probe)
DQ_REGISTRY_TOKEN=$(canary registry)
WRONG_REDIS=$(canary wrongredis) # a wrong password is a secret too
SLACK_CANARY=$(canary slack)
HOOK_CANARY=$(canary hook)
CANARIES=("$DQ_REDIS_PASSWORD" "$DQ_SASL_PASSWORD" "$DQ_PROVIDER_TOKEN" "$DQ_GITHUB_TOKEN"
    "$DQ_PROBE_TOKEN" "$DQ_REGISTRY_TOKEN" "$WRONG_REDIS" "$SLACK_CANARY" "$HOOK_CANARY")

REDIS_EXTRA_ARGS="--requirepass $DQ_REDIS_PASSWORD"
REDIS_CLI_AUTH="-a $DQ_REDIS_PASSWORD --no-auth-warning"
start_redis
REDIS_URL='redis://:${DQ_REDIS_PASSWORD}@127.0.0.1:'"$REDIS_PORT"
start_broker
start_fake wh webhook
start_fake slack slack
start_fake health health --script '{"versions": {"v2": {"status": 500, "body": "broken"}}}'
H=$FAKE_URL_health
WH=http://127.0.0.1:$FAKE_PORT_wh
DQ_SLACK_URL="http://127.0.0.1:$FAKE_PORT_slack/services/T0/B0/$SLACK_CANARY"
DQ_HOOK_URL="http://127.0.0.1:$FAKE_PORT_slack/hooks/$HOOK_CANARY"

# The chain: a GitHub provider that refuses connections (port 1), then the webhook double.
write_exec_config "  api:
    environments:
      staging:
        providers: [gh, wh]
        rollback: auto
        notify:
          slack_webhook: \${DQ_SLACK_URL}
          webhook: \${DQ_HOOK_URL}
          on: [rollback.requested, rollback.succeeded, rollback.failed, deploy.failed, deploy.succeeded]
          retries: 2
          retry_budget: 5s
        monitor:
          interval: 1s
          window: 3s
          failure_threshold: 2
          probes:
            - {name: health, url: \"$H/health\", expect_status: 200,
               headers: [\"Authorization: Bearer \${DQ_PROBE_TOKEN}\"]}" \
"executor:
  lock_ttl: 3s
  lock_wait: 10s
registry:
  http:
    listen: 127.0.0.1:0
    token: \${DQ_REGISTRY_TOKEN}
providers:
  gh: {type: github-actions, base_url: \"http://127.0.0.1:1\", owner: acme, repo: shop, workflow: deploy.yml,
       token: \"\${DQ_GITHUB_TOKEN}\", retries: 1, timeout: 2s}
  wh: {type: webhook, url: \"$WH/deploy\", status_url: \"$WH/status/{id}\", token: \"\${DQ_PROVIDER_TOKEN}\",
       poll_interval: 200ms, deadline: 30s}"
# The SASL slot: its canary, or on a broker that authenticates its real password (a
# canary there would be refused).
sasl=$(sasl_secret) || fail "config not written as intended"
CANARIES+=("$sasl")
for c in "${CANARIES[@]}"; do
    if grep -q -F "$c" "$CONFIG"; then fail "a canary value is in the configuration file itself"; fi
done

start_validator a
start_executor a
start_rollback a
start_registry a
start_monitor a

log "v1: the webhook answers 5xx twice first; deployed and verified"
fake_script wh '{"mode":"http_5xx","fail_times":2,"steps":2}'
fake_script slack '{"mode":"http_5xx","fail_times":1}'
d1=$(submit --service api --env staging --version v1) || fail "submit v1"
ev=$(terminal "$d1" 60) || fail "v1 never concluded"
assert_eq "$(jq -r .type <<<"$ev")" deploy.succeeded "v1 outcome"
fake_post health /_fake/deploy '{"version":"v1"}'
wait_event "$d1" deploy.verified 60 >/dev/null || fail "v1 was never verified"

log "v2: deployed, health goes bad, the monitor asks for a rollback, notifications go out"
d2=$(submit --service api --env staging --version v2) || fail "submit v2"
ev=$(terminal "$d2" 60) || fail "v2 never concluded"
assert_eq "$(jq -r .type <<<"$ev")" deploy.succeeded "v2 outcome"
fake_post health /_fake/deploy '{"version":"v2"}'
wait_event "$d2" rollback.requested 60 >/dev/null || fail "no rollback.requested for v2"
wait_event "$d2" rollback.succeeded 60 >/dev/null || fail "no rollback.succeeded for v2"
wait_for 30 grep -q -F '"type":"notification.' <(events) || fail "no notification event"

log "v3: every provider unavailable (deploy.failed with details); a rejected request"
fake_script wh '{"mode":"http_401"}'
d3=$(submit --service api --env staging --version v3) || fail "submit v3"
ev=$(terminal "$d3" 60) || fail "v3 never concluded"
assert_eq "$(jq -r .type <<<"$ev")" deploy.failed "v3 outcome"
d4=$(submit --service nosuch --env staging --version v1)
wait_event "$d4" deploy.rejected 30 >/dev/null || fail "no rejection"
produce_raw garbage

log "wrong secrets: a wrong Redis password, a wrong registry token"
for w in executor rollback; do
    bin="$DEPLOYQ_BUILD/workers/$w/deployq-$w"
    DQ_REDIS_PASSWORD=$WRONG_REDIS timeout 6 "$bin" --config "$CONFIG" --log-level debug -g "wrongpw-$w" \
        >"$T/$w-wrongpw.log" 2>&1 || true
done
port=$(grep -o '(port [0-9]*)' "$T/registry-a.log" | head -n 1 | tr -dc '0-9' || true)
if [ -n "$port" ]; then
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $WRONG_REDIS" "http://127.0.0.1:$port/api/targets")
    assert_eq "$code" 401 "registry API with a wrong token"
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $DQ_REGISTRY_TOKEN" "http://127.0.0.1:$port/api/targets")
    assert_eq "$code" 200 "registry API with its token"
else
    fail "the registry did not log its API port"
fi

log "sweep: logs, topics, registry files, notification bodies"
wait_for 30 registry_has "$(events | wc -l)" || fail "the registry does not hold every event"
kill -TERM "$REGISTRY_PID"
wait_for 15 bash -c "! kill -0 $REGISTRY_PID 2>/dev/null" || fail "the registry did not stop"
events >"$T/events.jsonl"
kcat -C -b "$BROKERS" -t "$TOPIC_DEAD" -o beginning -e -q 2>/dev/null >"$T/dead.jsonl" || true
fake_calls slack | jq -c '.calls[] | .body' >"$T/notification-bodies.jsonl"
fake_calls wh | jq -c '.calls[] | {path, headers, body}' >"$T/provider-calls.jsonl"
[ -s "$T/events.jsonl" ] || fail "no events captured"
[ -s "$T/notification-bodies.jsonl" ] || fail "no notification bodies captured"
[ -n "$(ls "$REG_DIR"/p*/*.seg 2>/dev/null)" ] || fail "no registry segments"
files=("$T"/*.log "$T"/*.jsonl "$REG_DIR"/p*/*.seg)
n=0
for c in "${CANARIES[@]}"; do
    hits=$(grep -l -a -F "$c" "${files[@]}" || true)
    [ -z "$hits" ] || fail "canary ${c:0:12}... found in: $hits"
    n=$((n + 1))
done
log "${#files[@]} files searched for $n canaries: no hit"

# The controls: the secrets were in use, so the sweep could have found them.
assert_eq "$(fake_calls wh | jq '[.calls[] | select(.path == "/deploy" and .auth.present)] | length > 0')" true \
    "the provider got its token"
assert_eq "$(fake_calls slack | jq --arg c "$SLACK_CANARY" '[.calls[] | select(.path | contains($c))] | length > 0')" true \
    "the Slack double was called on the URL holding its canary"
assert_eq "$(fake_calls slack | jq --arg c "$HOOK_CANARY" '[.calls[] | select(.path | contains($c))] | length > 0')" true \
    "the JSON hook was called on the URL holding its canary"
grep -q -i 'redis' "$T/executor-wrongpw.log" || fail "the wrong-password executor said nothing about Redis"
echo ok
