#!/usr/bin/env bash
# 0730: GitHub Deployments (workers/rollback/github_deploy.c) through the whole pipeline
# (validator, executor, rollback worker, registry) against the GitHub double
# (tests/fakes/github.py, which wants the configured token):
#   1. a deploy ends with a GitHub deployment whose statuses are queued, in_progress,
#      success in that order, with its log_url and environment_url;
#   2. a newer success makes the older deployment inactive;
#   3. a failed deploy: failure;
#   4. GitHub down (503) while a deploy runs: the deploy still succeeds (the registry says
#      so), each status GitHub missed is reported as notification.failed (channel github),
#      and once GitHub is back the next status creates the deployment and posts;
#   5. 202 (auto-merged instead) and 409 (conflict) are reported once, never retried;
#   6. CI/CD cost (issue 14): a github-actions deploy's jobs (their times and runner labels,
#      priced per label) reach deploy.succeeded's cost, the registry's /api/report, its
#      /metrics and `deployq report`; the jobs endpoint down leaves the deploy a success
#      whose cost is unknown; the webhook chain, priced by wall time, is an estimate;
#   7. the token is in no log and no event; every event passes its schema.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"
. "$(dirname "$0")/helpers-registry.sh"
. "$(dirname "$0")/helpers-http.sh"
. "$(dirname "$0")/helpers-rollback.sh"

export GH_TOKEN_0730="ghp_0730_s3cr3t_$(new_uuid | tr -d -)"
start_redis
start_broker
start_fake wh webhook
start_fake gh github
GH=$FAKE_URL_gh
WH=$FAKE_URL_wh
fake_script gh "{\"token\":\"$GH_TOKEN_0730\"}"
gh_yaml() { # gh_yaml REPO [EXTRA]
    printf '    github_deployments:\n      repo: %s\n      token: ${GH_TOKEN_0730}\n      api_url: %s\n' "$1" "$GH"
    printf '      environment_url: "https://{environment}.%s.example"\n' "${1#*/}"
    printf '      log_url: "https://deployq.example/d/{deployment_id}"\n      retries: 2\n      retry_budget: 5s\n      timeout: 2s\n'
    [ -z "${2:-}" ] || printf '%s\n' "$2"
}
chain="        providers:
          - {type: webhook, name: wh, url: \"$WH/deploy\", status_url: \"$WH/status/{id}\", poll_interval: 200ms, deadline: 60s,
             cost: {per_minute: 0.01}}"
write_exec_config "  api:
$(gh_yaml acme/api)
    environments:
      staging:
$chain
  web:
$(gh_yaml acme/web '      auto_merge: true')
    environments:
      staging:
$chain
  ci:
    environments:
      staging:
        providers:
          - type: github-actions
            name: gha
            base_url: \"$GH\"
            owner: acme
            repo: ci
            workflow: deploy.yml
            token: \${GH_TOKEN_0730}
            poll_interval: 200ms
            retries: 1
            retry_budget: 2s
            cost:
              per_minute: {ubuntu-latest: 0.008, macos-14: 0.08}" "executor:
  lock_ttl: 5s
$(http_yaml)"
start_registry a
start_validator a
start_executor a
start_rollback a
wait_for 30 grep -q 'github: recording deploys of 2 services on GitHub, consuming .* as group .*-rollback-github' \
    "$T/rollback-a.log" || fail "the rollback worker did not start its GitHub consumer"
wait_api_up

# gh_get PATH: GET from the double's API with the token.
gh_get() { curl -fsS -H "Authorization: Bearer $GH_TOKEN_0730" "$GH$1"; }
# gh_dep REPO DEPLOYMENT_ID: the GitHub deployment deployq created for it (by its payload).
gh_dep() { gh_get "/repos/$1/deployments?per_page=100" | jq -c --arg id "$2" '.[] | select(.payload.deployq_deployment_id == $id)'; }
# gh_states REPO DEPLOYMENT_ID: its statuses' states, oldest first, comma-separated.
gh_states() {
    local gid
    gid=$(gh_dep "$1" "$2" | jq -r .id)
    [ -n "$gid" ] || return 0
    gh_get "/repos/$1/deployments/$gid/statuses" | jq -r 'reverse | map(.state) | join(",")'
}
states_are() { [ "$(gh_states "$1" "$2")" = "$3" ]; }
# gh_reports DEPLOYMENT_ID: its notification.failed events of channel github.
gh_reports() { events_for "$1" notification.failed | jq -c 'select(.data.channel == "github")'; }
gh_reports_ge() { [ "$(gh_reports "$1" | wc -l)" -ge "$2" ]; }

log "1. a deploy: queued, in_progress, success"
fake_script wh '{"mode":"succeed","steps":2}'
v1=$(deploy v1)
wait_for 30 states_are acme/api "$v1" queued,in_progress,success ||
    fail "v1 on GitHub: '$(gh_states acme/api "$v1")', expected queued,in_progress,success"
dep=$(gh_dep acme/api "$v1")
assert_eq "$(jq -r .ref <<<"$dep")" v1 "ref"
assert_eq "$(jq -r .environment <<<"$dep")" staging "environment"
assert_eq "$(jq -c ._requested <<<"$dep")" '{"auto_merge":false,"required_contexts":[]}' "what deployq asked for"
success=$(gh_get "/repos/acme/api/deployments/$(jq -r .id <<<"$dep")/statuses" | jq -c '.[0]')
assert_eq "$(jq -r .log_url <<<"$success")" "https://deployq.example/d/$v1" "log_url"
assert_eq "$(jq -r .environment_url <<<"$success")" "https://staging.api.example" "environment_url"
assert_eq "$(jq -r .description <<<"$success")" "deployq deployed v1 via wh" "description"

log "2. a newer success makes the older one inactive"
v2=$(deploy v2)
wait_for 30 states_are acme/api "$v2" queued,in_progress,success || fail "v2 on GitHub: '$(gh_states acme/api "$v2")'"
wait_for 10 states_are acme/api "$v1" queued,in_progress,success,inactive ||
    fail "v1 after v2: '$(gh_states acme/api "$v1")', expected it inactive"

log "3. a failed deploy: failure"
fake_script wh '{"mode":"fail_after_building","steps":1}'
v3=$(deploy v3)
assert_eq "$(terminal "$v3" | jq -r .type)" deploy.failed "v3 outcome"
wait_for 30 states_are acme/api "$v3" queued,in_progress,failure ||
    fail "v3 on GitHub: '$(gh_states acme/api "$v3")', expected queued,in_progress,failure"

log "4. GitHub down while a deploy runs: the deploy goes on, the misses are reported"
# the deploy stays in flight about 20 s (100 polls of 200 ms), long enough for the two
# statuses GitHub misses to be given up (3 attempts each, within 5 s) before it ends
fake_script wh '{"mode":"succeed","steps":100}'
fake_script gh "{\"token\":\"$GH_TOKEN_0730\",\"deployments_down\":true}"
v4=$(submit --service api --env staging --version v4)
wait_for 60 gh_reports_ge "$v4" 2 || fail "no notification.failed for v4's statuses while GitHub was down"
gh_reports "$v4" | jq -e -s 'map(.data.github_state) | sort == ["in_progress","queued"]' >/dev/null ||
    fail "reported: $(gh_reports "$v4" | jq -c -s 'map(.data.github_state)')"
r=$(gh_reports "$v4" | head -n1)
assert_eq "$(jq -r .data.http_status <<<"$r")" 503 "reported status"
assert_eq "$(jq -r .data.attempts <<<"$r")" 3 "attempts per event (retries 2)"
assert_eq "$(jq -r .data.github_repo <<<"$r")" acme/api "reported repo"
fake_script gh "{\"token\":\"$GH_TOKEN_0730\"}"
ev=$(terminal "$v4" 90) || fail "v4 did not end"
assert_eq "$(jq -r .type <<<"$ev")" deploy.succeeded "v4 outcome with GitHub down"
wait_for 30 sh -c "curl -fsS '$HTTP/api/deployments/$v4' | jq -e '.outcome == \"succeeded\"' >/dev/null" ||
    fail "the registry does not show v4 succeeded: $(curl -sS "$HTTP/api/deployments/$v4")"
# GitHub is back: the success creates the deployment; queued and in_progress stay lost
wait_for 30 states_are acme/api "$v4" success || fail "v4 on GitHub after it came back: '$(gh_states acme/api "$v4")'"
wait_for 10 states_are acme/api "$v2" queued,in_progress,success,inactive || fail "v2 was not made inactive by v4"

log "5. 202 (auto-merged instead of deployed) and 409 (conflict): reported once, not retried"
fake_script wh '{"mode":"succeed","steps":1}'
fake_script gh "{\"token\":\"$GH_TOKEN_0730\",\"behind\":[\"w1\"],\"conflict\":[\"w2\"]}"
w1=$(deploy w1 web)
w2=$(deploy w2 web)
wait_for 30 gh_reports_ge "$w1" 1 || fail "no report of the 202"
wait_for 30 gh_reports_ge "$w2" 1 || fail "no report of the 409"
assert_eq "$(gh_reports "$w1" | jq -r .data.http_status)" 202 "w1 reported status"
gh_reports "$w1" | jq -e '.data.error | test("auto-merge")' >/dev/null || fail "w1 report: $(gh_reports "$w1")"
assert_eq "$(gh_reports "$w2" | jq -r .data.http_status)" 409 "w2 reported status"
gh_reports "$w2" | jq -e '.data.error | test("Conflict merging master into w2")' >/dev/null || fail "w2 report: $(gh_reports "$w2")"
# the later statuses of w1 and w2 were read (the consumer says so) and asked GitHub nothing
# more: one create each
for w in "$w1" "$w2"; do
    wait_for 30 grep -q "deployment $w: GitHub declined to create it; success not posted" "$T/rollback-a.log" ||
        fail "the GitHub consumer never got to the success of $w"
done
creates=$(fake_calls gh | jq '[.calls[] | select(.method == "POST" and .path == "/repos/acme/web/deployments")] | length')
assert_eq "$creates" 2 "creates asked of GitHub for web"
assert_eq "$(gh_get /repos/acme/web/deployments | jq length)" 0 "web deployments on GitHub"

log "6. CI/CD cost: the run's jobs, priced per runner label, reach the event and the report"
# by hand: build 10:00:00 -> 10:02:30 is 3 started minutes x 0.008 = 0.024 (ubuntu-latest);
# sign 10:03:00 -> 10:03:40 is 1 minute x 0.08 = 0.08 (macos-14): 4 minutes, 0.104
fake_script gh "{\"token\":\"$GH_TOKEN_0730\",\"jobs\":[
  {\"name\":\"build\",\"labels\":[\"ubuntu-latest\"],\"started_at\":\"2026-03-01T10:00:00Z\",\"completed_at\":\"2026-03-01T10:02:30Z\"},
  {\"name\":\"sign\",\"labels\":[\"macos-14\"],\"started_at\":\"2026-03-01T10:03:00Z\",\"completed_at\":\"2026-03-01T10:03:40Z\"}]}"
fake_script wh '{"mode":"succeed","steps":1}'
c1=$(deploy c1 ci)
ev=$(terminal "$c1")
assert_eq "$(jq -r .type <<<"$ev")" deploy.succeeded "c1 outcome"
assert_eq "$(jq -c .data.cost <<<"$ev")" \
    '{"basis":"provider_jobs","amount":0.104,"minutes":4,"runners":[{"label":"ubuntu-latest","jobs":1,"minutes":3,"amount":0.024},{"label":"macos-14","jobs":1,"minutes":1,"amount":0.08}]}' \
    "c1 cost"
# the jobs endpoint down: still a success, whose cost is unknown (never a failed deploy)
fake_script gh "{\"token\":\"$GH_TOKEN_0730\",\"jobs_status\":500}"
c2=$(deploy c2 ci)
ev=$(terminal "$c2")
assert_eq "$(jq -r .type <<<"$ev")" deploy.succeeded "c2 outcome with the jobs endpoint down"
assert_eq "$(jq -r .data.cost.basis <<<"$ev")" unknown "c2 cost basis"
jq -e '.data.cost.detail | test("list run jobs: HTTP 500")' <<<"$ev" >/dev/null || fail "c2 cost: $(jq -c .data.cost <<<"$ev")"
# the webhook chain gives no figures: wall time x 0.01, an estimate
assert_eq "$(terminal "$v1" | jq -r .data.cost.basis)" wall_time "v1 cost basis"
cost_in_report() { api '/api/report?service=ci' | jq -e '.cost_per_deployment.unknown == 1' >/dev/null; }
wait_for 30 cost_in_report || fail "the registry's report has no cost of c2: $(api '/api/report?service=ci')"
assert_eq "$(api '/api/report?service=ci' | jq -c .cost_per_deployment)" \
    '{"priced":1,"estimated":0,"not_priced":0,"unknown":1,"estimate":false,"median":0.104,"p90":0.104,"max":0.104,"total":0.104}' \
    "ci's cost per deployment"
api /api/report | jq -e '.cost_per_deployment.estimate == true and .cost_per_deployment.estimated >= 6' >/dev/null ||
    fail "the webhook deploys are not marked estimates: $(api /api/report | jq -c .cost_per_deployment)"
api /metrics | grep -qx 'deployq_cost_per_deployment{worker="registry",service="ci",env="staging",quantile="0.5"} 0.104' ||
    fail "no cost in /metrics: $(api /metrics | grep cost)"
"$DEPLOYQ" report --dir "$REG_DIR" --service ci | grep -qxF \
    'CI/CD cost per deployment      $0.104 median, $0.104 max, $0.104 total over 1 priced deploys (1 unknown)  [target median < $0.50: met]' ||
    fail "deployq report: $("$DEPLOYQ" report --dir "$REG_DIR" --service ci)"

log "7. the token is nowhere; every event passes its schema"
if grep -rl -- "$GH_TOKEN_0730" "$T"/*.log >/dev/null 2>&1; then fail "the token is in a log"; fi
if events | grep -q -- "$GH_TOKEN_0730"; then fail "the token is in an event"; fi
events | schema_check || fail "an event does not pass its schema"
log "ok"
