#!/usr/bin/env bash
# 0310: the registry's HTTP API over a live deployq-registry: a scripted history is
# produced onto the events topic, then every endpoint is read with curl and checked with
# jq (targets, a deployment's timeline, paged events with filters and cursors, rollbacks
# with evidence, the report's exact figures, the chart series, Prometheus metrics), the
# bearer token is required (and never logged), the API is read-only, and a new event
# reaches an open /api/stream (Server-Sent Events, curl -N) and a resumed one.
source "$(dirname "$0")/helpers.sh"
source "$(dirname "$0")/helpers-registry.sh"
source "$(dirname "$0")/helpers-http.sh"

export DQ_TEST_HTTP_TOKEN="t0k-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
start_redis
start_broker
write_config "$(http_yaml DQ_TEST_HTTP_TOKEN)"

D1=11111111-1111-4111-8111-000000000001
D2=11111111-1111-4111-8111-000000000002
D3=11111111-1111-4111-8111-000000000003
D4=11111111-1111-4111-8111-000000000004

# ev N DEPLOYMENT SERVICE ENV VERSION TYPE AT FENCE [DATA]: one "key<TAB>event" line.
ev() {
    jq -cn --arg id "$(printf '22222222-2222-4222-8222-%012d' "$1")" --arg dep "$2" --arg svc "$3" --arg env "$4" --arg ver "$5" \
        --arg type "$6" --arg at "$7" --argjson fence "$8" --argjson data "${9:-{\}}" \
        '{schema:"deployq.event/v1",id:$id,type:$type,deployment_id:$dep,service:$svc,
          environment:$env,version:$ver,at:$at,actor:"test@host/1",fence:$fence,data:$data}' |
        sed "s|^|$3/$4\t|"
}
VAL='{"key_id":"ci-test","issued_at":"2026-01-01T09:59:00Z","strategy":"rolling","source":{"topic":"deployq.requests","partition":0,"offset":0}}'
EVIDENCE='{"reason":"error rate 7.5% > 5%","requested_by":"deployq-monitor","to_version":"v1","evidence":{"probe":"http-errors","kind":"error_rate","observed":0.075,"threshold":0.05,"first_failure_at":"2026-01-01T10:12:00Z"}}'
{
    ev 1 $D1 api staging v1 deploy.validated 2026-01-01T10:00:00Z 0 "$VAL"
    ev 2 $D1 api staging v1 deploy.started 2026-01-01T10:00:10Z 1
    ev 3 $D1 api staging v1 deploy.succeeded 2026-01-01T10:01:00Z 1
    ev 4 $D1 api staging v1 deploy.verified 2026-01-01T10:05:00Z 1
    ev 5 $D2 api production v2 deploy.validated 2026-01-01T10:10:00Z 0 "$VAL"
    ev 6 $D2 api production v2 deploy.started 2026-01-01T10:10:10Z 1
    ev 7 $D2 api production v2 deploy.succeeded 2026-01-01T10:11:00Z 1
    ev 8 $D2 api production v2 rollback.requested 2026-01-01T10:15:00Z 1 "$EVIDENCE"
    ev 9 $D2 api production v1 rollback.succeeded 2026-01-01T10:17:00Z 1 \
        '{"to_version":"v1","restored_at":"2026-01-01T10:17:00Z"}'
    ev 10 $D3 demo staging v7 deploy.validated 2026-01-01T10:20:00Z 0 "$VAL"
    ev 11 $D3 demo staging v7 deploy.failed 2026-01-01T10:21:00Z 2 '{"reason":"build_failed"}'
} >"$T/history"
N=$(wc -l <"$T/history")

start_registry api --log-level debug
wait_api_up
grep -q "http: serving on 127.0.0.1:$HTTP_PORT" "$T/registry-api.log" || fail "no 'serving on' log line"
produce_events "$T/history" || fail "the history was not acknowledged"
wait_for 60 http_has "$N" || fail "the registry folded $(http_events) of $N events"

# ---- the token: needed everywhere but /healthz and /, compared exactly, never logged
assert_eq "$(status /healthz)" 200 "/healthz without a token"
assert_eq "$(status /)" 200 "the dashboard page without a token"
assert_eq "$(status /api/targets)" 401 "/api/targets without a token"
assert_eq "$(status -H "Authorization: Bearer ${DQ_TEST_HTTP_TOKEN}x" /api/targets)" 401 "a longer token"
assert_eq "$(status -H "Authorization: Bearer ${DQ_TEST_HTTP_TOKEN%?}" /metrics)" 401 "a shorter token"
assert_eq "$(status -H "Authorization: Basic ${DQ_TEST_HTTP_TOKEN}" /metrics)" 401 "another scheme"
HTTP_TOKEN=$DQ_TEST_HTTP_TOKEN
assert_eq "$(status -H "Authorization: Bearer $HTTP_TOKEN" /api/targets)" 200 "the right token"
# read-only
assert_eq "$(status -X POST -H "Authorization: Bearer $HTTP_TOKEN" /api/targets)" 405 "POST"
assert_eq "$(status -X DELETE -H "Authorization: Bearer $HTTP_TOKEN" /api/deployments/$D1)" 405 "DELETE"
assert_eq "$(curl -s -X PUT "$HTTP/api/targets" | jq -r .error)" "the registry API is read-only" "405 body"
assert_eq "$(status -H "Authorization: Bearer $HTTP_TOKEN" /api/nothing)" 404 "unknown path"

# ---- /api/targets
t=$(api /api/targets)
assert_eq "$(jq -r '.targets | map(.service + "/" + .environment) | join(",")' <<<"$t")" \
    "api/production,api/staging,demo/staging" "targets"
assert_eq "$(jq -r '.totals.events' <<<"$t")" "$N" "totals.events"
assert_eq "$(jq -r '.targets[] | select(.environment == "staging" and .service == "api") | .last_verified_version' <<<"$t")" v1 "api/staging verified"
assert_eq "$(jq -r '.targets[] | select(.environment == "production") | .current_version' <<<"$t")" v1 "api/production after the rollback"
assert_eq "$(jq -r '.targets[] | select(.environment == "production") | .last_rollback.evidence.probe' <<<"$t")" http-errors "rollback evidence in the target"
assert_eq "$(jq -r '.state_hash | length' <<<"$t")" 64 "state hash"
assert_eq "$(api '/api/targets?service=demo' | jq -r '.targets | length')" 1 "?service="
assert_eq "$(api '/api/targets?env=production' | jq -r '.targets[0].service')" api "?env="

# ---- /api/deployments/{id}
d=$(api /api/deployments/$D1)
assert_eq "$(jq -r '.outcome' <<<"$d")" verified "D1 outcome"
assert_eq "$(jq -r '[.timeline[].type] | join(",")' <<<"$d")" \
    "deploy.validated,deploy.started,deploy.succeeded,deploy.verified" "D1 timeline"
assert_eq "$(api /api/deployments/$D3 | jq -r .outcome)" failed "D3 outcome"
assert_eq "$(status -H "Authorization: Bearer $HTTP_TOKEN" /api/deployments/nope)" 404 "unknown deployment"

# ---- /api/events: every event exactly once across pages of 4, in time order
cursor="" pages=0
: >"$T/paged"
while :; do
    page=$(api "/api/events?limit=4${cursor:+&cursor=$cursor}")
    jq -c '.events[]' <<<"$page" >>"$T/paged"
    pages=$((pages + 1))
    cursor=$(jq -r '.next_cursor // empty' <<<"$page")
    [ -n "$cursor" ] || break
    [ $pages -lt 10 ] || fail "paging does not end"
done
assert_eq "$(wc -l <"$T/paged")" "$N" "events over all pages"
assert_eq "$pages" 3 "pages of 4 for $N events"
assert_eq "$(jq -r '.event.at' "$T/paged" | sort -c && echo sorted)" sorted "pages in time order"
assert_eq "$(jq -r '.event.id' "$T/paged" | sort -u | wc -l)" "$N" "distinct events"
assert_eq "$(jq -sr 'map(.event) | map(.type) | .[0]' "$T/paged")" deploy.validated "first event"
# filters
assert_eq "$(api '/api/events?service=api&env=production&type=rollback.requested' | jq -r '.events | length')" 1 "type filter"
assert_eq "$(api '/api/events?service=api&env=production&type=rollback.requested' | jq -r '.events[0].event.data.evidence.observed')" 0.075 "event data kept"
assert_eq "$(api "/api/events?deployment=$D2" | jq -r '.events | length')" 5 "deployment filter"
assert_eq "$(api '/api/events?since=2026-01-01T10:10:00Z&until=2026-01-01T10:20:00Z' | jq -r '[.events[].event.deployment_id] | unique | join(",")')" "$D2" "since/until"
assert_eq "$(api '/api/events?order=desc&limit=1' | jq -r '.events[0].event.type')" deploy.failed "newest first"
assert_eq "$(status -H "Authorization: Bearer $HTTP_TOKEN" '/api/events?cursor=zzz')" 400 "bad cursor"
assert_eq "$(status -H "Authorization: Bearer $HTTP_TOKEN" '/api/events?limit=100000')" 400 "limit too large"

# ---- /api/rollbacks, /api/report, /api/series
rb=$(api /api/rollbacks)
assert_eq "$(jq -r '.rollbacks | length' <<<"$rb")" 1 "rollbacks"
assert_eq "$(jq -r '.rollbacks[0] | [.status, .reason, .evidence.kind, .time_to_restore_ms] | join("|")' <<<"$rb")" \
    "succeeded|error rate 7.5% > 5%|error_rate|300000" "the rollback and its evidence"
r=$(api /api/report)
assert_eq "$(jq -r '[.deployments.total, .deployments.succeeded, .deployments.failed] | join(",")' <<<"$r")" "3,2,1" "report counts"
assert_eq "$(jq -r '.success_rate' <<<"$r")" 0.3333 "success rate (the rolled-back deploy is a failed change)"
assert_eq "$(jq -r '.change_failure_rate' <<<"$r")" 0.5 "change failure rate"
assert_eq "$(jq -r '.mttr_ms.median' <<<"$r")" 300000 "MTTR"
assert_eq "$(api '/api/report?service=api&env=staging' | jq -r '.deployments.total')" 1 "report filters"
s=$(api '/api/series?buckets=3')
assert_eq "$(jq -r '[.buckets[].deploys] | join(",")' <<<"$s")" "1,1,1" "deploys per bucket"
assert_eq "$(jq -r '[.buckets[].rollbacks] | add' <<<"$s")" 1 "rollbacks in the series"

# ---- /metrics
m=$(api /metrics)
# per target, each line with worker="registry" (docs/operations.md, "Health and metrics")
total() { grep -E "^$1" <<<"$m" | awk '{s += $2} END {print s + 0}'; }
assert_eq "$(total 'deployq_deploys_total\{worker="registry",service="[a-z]+",env="[a-z]+",outcome="succeeded"\}')" 2 "deploys_total succeeded"
assert_eq "$(total 'deployq_deploys_total\{worker="registry",service="[a-z]+",env="[a-z]+",outcome="failed"\}')" 1 "deploys_total failed"
grep -qx 'deployq_rollbacks_total{worker="registry",service="api",env="production",result="succeeded"} 1' <<<"$m" || fail "rollbacks_total"
grep -qx 'deployq_mttr_seconds_bucket{worker="registry",service="api",env="production",le="300"} 1' <<<"$m" || fail "MTTR bucket 300"
grep -qx 'deployq_mttr_seconds_bucket{worker="registry",service="api",env="production",le="120"} 0' <<<"$m" || fail "MTTR bucket 120"
grep -qx "deployq_registry_events_total{worker=\"registry\"} $N" <<<"$m" || fail "events_total"
grep -qx 'deployq_ready{worker="registry"} 1' <<<"$m" || fail "deployq_ready"
fs=$(awk '$1 == "deployq_registry_fsync_seconds_count{worker=\"registry\"}" {print $2}' <<<"$m")
[ "${fs:-0}" -ge 1 ] || fail "no fsync observed ($fs)"
wait_for 15 bash -c "curl -fsS -H 'Authorization: Bearer $HTTP_TOKEN' $HTTP/metrics | grep -q '^deployq_registry_consumer_lag{worker=\"registry\",partition=\"[0-9]*\"} 0\$'" ||
    fail "no consumer lag of 0 reported: $(api /metrics | grep consumer_lag)"
# /readyz: in the group, broker up; like /healthz it needs no token
assert_eq "$(curl -s -o /dev/null -w '%{http_code}' "$HTTP/readyz")" 200 "/readyz"
# every metric line is "name{labels} value" or a comment
bad=$(grep -v '^#' <<<"$m" | grep -Evc '^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+$' || true)
assert_eq "$bad" 0 "malformed metric lines"

# ---- /api/stream: an open stream gets the next event; a resumed one gets it again
curl -sN --max-time 60 -H "Authorization: Bearer $HTTP_TOKEN" "$HTTP/api/stream" >"$T/sse.out" 2>/dev/null &
PIDS+=("$!")
wait_for 10 grep -q 'deployq event stream' "$T/sse.out" || fail "the stream did not open"
seq0=$(api /api/targets | jq -r .seq)
ev 12 $D4 api staging v-live-1 deploy.validated 2026-01-01T11:00:00Z 0 "$VAL" >"$T/live"
produce_events "$T/live" || fail "the live event was not acknowledged"
wait_for 30 grep -q 'v-live-1' "$T/sse.out" || fail "the new event did not reach the stream: $(cat "$T/sse.out")"
line=$(grep '^data: ' "$T/sse.out" | grep v-live-1 | head -n 1)
assert_eq "$(sed 's/^data: //' <<<"$line" | jq -r '.deployment_id + " " + .type')" "$D4 deploy.validated" "SSE data"
grep -qx "id: $((seq0 + 1))" "$T/sse.out" || fail "SSE id $((seq0 + 1)) missing: $(cat "$T/sse.out")"
curl -sN --max-time 3 -H "Authorization: Bearer $HTTP_TOKEN" -H "Last-Event-ID: $seq0" \
    "$HTTP/api/stream" >"$T/sse2.out" 2>/dev/null || true
grep -q 'v-live-1' "$T/sse2.out" || fail "Last-Event-ID did not resume: $(cat "$T/sse2.out")"
assert_eq "$(status -H "Authorization: Bearer $HTTP_TOKEN" '/api/stream?after=x')" 400 "bad after"
wait_for 10 http_has $((N + 1)) || fail "the live event was not folded"
assert_eq "$(api /api/deployments/$D4 | jq -r .version)" v-live-1 "live deployment in the state"

# ---- the CLI readers over the API: the same state (hash) and history as from the files
h_files=$("$DEPLOYQ" replay --dir "$REG_DIR" --json | jq -r .state_hash)
h_url=$("$DEPLOYQ" replay --url "$HTTP" --token "$HTTP_TOKEN" --json | jq -r .state_hash)
[ -n "$h_files" ] && [ "$h_files" != null ] || fail "replay --dir gave no hash"
assert_eq "$h_url" "$h_files" "replay --url state hash"
assert_eq "$("$DEPLOYQ" history --url "$HTTP" --token "$HTTP_TOKEN" --json | jq -s length)" \
    "$("$DEPLOYQ" history --dir "$REG_DIR" --json | jq -s length)" "history --url events"
set +e
"$DEPLOYQ" status --url "$HTTP" --token wrong 2>"$T/url.err"; rc=$?
set -e
assert_eq "$rc" 1 "status --url with a wrong token"
grep -q 'HTTP 401' "$T/url.err" || fail "wrong token message: $(cat "$T/url.err")"

# ---- the secret never reaches the log
! grep -qF "$DQ_TEST_HTTP_TOKEN" "$T"/registry-*.log || fail "the token appears in the registry log"
log "ok: every endpoint answered as expected on $HTTP ($BROKER_KIND broker)"
