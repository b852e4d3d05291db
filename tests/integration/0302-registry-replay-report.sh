#!/usr/bin/env bash
# 0302: a scripted ten-day history (much of the one of tests/unit/test_report.c, plus a
# stale-fence event) written straight onto deployq.events, stored by deployq-registry, then read back:
# `status`, `history` filters, `replay` (same hash as the live registry), `replay --at`
# (the state at a past moment), `report` with its exact figures (table, --json, --csv, --by-target: issue 14's
# definitions, worked out below) and
# `verify` with a signed checkpoint that stops matching once the log is cut short.
source "$(dirname "$0")/helpers.sh"
source "$(dirname "$0")/helpers-registry.sh"

start_redis
start_broker
write_config

"$PY" - "$T/history" <<'PY'
import json, sys, uuid
out = open(sys.argv[1], "w")
n = 0
def ev(typ, dep, svc, env, ver, at, fence=1, **data):
    global n
    n += 1
    d = {"schema": "deployq.event/v1", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "h%d" % n)),
         "type": typ, "deployment_id": "00000000-0000-4000-8000-%012d" % dep,
         "service": svc, "environment": env, "version": ver, "at": at,
         "actor": "test@host/1", "fence": fence, "data": data}
    out.write("%s/%s\t%s\n" % (svc, env, json.dumps(d, separators=(",", ":"))))
def validated(dep, svc, env, ver, at, commit=None):
    data = {"key_id": "ci-test", "issued_at": at, "strategy": "rolling",
            "source": {"topic": "deployq.requests", "partition": 0, "offset": dep}}
    if commit:
        data["commit_at"] = commit
    ev("deploy.validated", dep, svc, env, ver, at, 0, **data)
validated(1, "api", "staging", "v1", "2026-01-01T10:00:00Z", "2026-01-01T09:00:00Z")
ev("deploy.succeeded", 1, "api", "staging", "v1", "2026-01-01T10:05:00Z", provider="command", provider_deployment_id="x1", duration_ms=1)
ev("deploy.verified", 1, "api", "staging", "v1", "2026-01-01T10:14:00Z", window_ms=540000, samples=9)
validated(2, "api", "production", "v2", "2026-01-02T10:00:00Z", "2026-01-01T09:00:00Z")
ev("deploy.succeeded", 2, "api", "production", "v2", "2026-01-02T10:10:00Z", provider="command", provider_deployment_id="x2", duration_ms=1)
ev("rollback.requested", 2, "api", "production", "v2", "2026-01-02T11:00:00Z", reason="5xx", requested_by="deployq-monitor", to_version="v1",
   evidence={"probe": "http", "kind": "status", "observed": 503, "threshold": 200,
             "first_failure_at": "2026-01-02T10:50:00Z", "detected_at": "2026-01-02T10:55:00Z"})
ev("rollback.succeeded", 2, "api", "production", "v2", "2026-01-02T11:03:00Z", to_version="v1", method="redeploy", restored_at="2026-01-02T11:02:00Z")
validated(3, "api", "staging", "v3", "2026-01-03T10:00:00Z")
ev("deploy.failed", 3, "api", "staging", "v3", "2026-01-03T10:03:00Z", reason="build_failed")
ev("deploy.rejected", 4, "api", "production", "v4", "2026-01-04T10:00:00Z", 0, reasons=[{"code": "promotion", "message": "not in staging"}])
ev("deploy.rejected", 10, "api", "production", "v9", "2026-01-04T11:00:00Z", 0, reasons=[{"code": "stale", "message": "issued 3 h ago"}])
validated(5, "web", "production", "w5", "2026-01-05T10:00:00Z")
ev("deploy.succeeded", 5, "web", "production", "w5", "2026-01-05T10:20:00Z", 5, provider="command", provider_deployment_id="x5", duration_ms=1)
ev("rollback.requested", 5, "web", "production", "w5", "2026-01-05T11:05:00Z", 5, reason="latency", requested_by="deployq-monitor",
   evidence={"probe": "http", "kind": "latency", "detected_at": "2026-01-05T11:00:00Z"})
ev("rollback.succeeded", 5, "web", "production", "w5", "2026-01-05T11:30:00Z", 5, to_version="w4", method="redeploy", restored_at="2026-01-05T11:30:00Z")
# a holder of fence 4 that lost its lock reports a deploy: flagged, never applied
ev("deploy.succeeded", 9, "web", "production", "evil", "2026-01-05T12:00:00Z", 4, provider="command", provider_deployment_id="x9", duration_ms=1)
validated(6, "web", "staging", "w6", "2026-01-06T10:00:00Z", "2026-01-06T08:00:00Z")
ev("deploy.succeeded", 6, "web", "staging", "w6", "2026-01-06T10:02:00Z", provider="command", provider_deployment_id="x6", duration_ms=1)
ev("rollback.requested", 6, "web", "staging", "w6", "2026-01-06T10:30:00Z", reason="manual", requested_by="alice")
ev("rollback.failed", 6, "web", "staging", "w6", "2026-01-06T10:40:00Z", reason="provider down")
validated(8, "api", "staging", "v8", "2026-01-07T10:00:00Z")
ev("deploy.started", 8, "api", "staging", "v8", "2026-01-07T10:01:00Z", provider="command", provider_deployment_id="x8", attempt=1)
validated(7, "api", "production", "v7", "2026-01-12T10:00:00Z")
ev("deploy.succeeded", 7, "api", "production", "v7", "2026-01-12T10:01:00Z", provider="command", provider_deployment_id="x7", duration_ms=1)
PY
N=$(wc -l <"$T/history")
cut -f2 "$T/history" | schema_check || fail "the scripted events do not match schemas/"

start_registry live
wait_for 20 grep -q 'resuming at' "$T/registry-live.log" || fail "registry got no partitions"
produce_events "$T/history" || fail "events not acknowledged"
wait_for 30 registry_has "$N" || fail "registry holds $(registry_records) of $N"
kill -TERM "$REGISTRY_PID"
wait "$REGISTRY_PID" || fail "registry exit status $?"
"$DEPLOYQ" verify --dir "$REG_DIR" >/dev/null || fail "verify failed"

# replay of the whole log = the live state
live=$(logged_hash live)
replayed=$("$DEPLOYQ" replay --dir "$REG_DIR" --json | jq -r .state_hash)
assert_eq "$replayed" "$live" "replay hash vs the live registry's"
assert_eq "$("$DEPLOYQ" replay --dir "$REG_DIR" | awk '/^state hash/ {print $3}')" "$live" "table hash"

# status now
st=$("$DEPLOYQ" status --dir "$REG_DIR" --json)
cur() { jq -r --arg k "$1" '.targets[] | select(.service + "/" + .environment == $k) | .current_version' <<<"$2"; }
assert_eq "$(cur api/production "$st")" v7 "api/production now"
assert_eq "$(cur web/production "$st")" w4 "web/production now (rolled back; the stale deploy ignored)"
assert_eq "$(cur api/staging "$st")" v1 "api/staging now"
assert_eq "$(jq -r '.targets[] | select(.service=="api" and .environment=="staging") | .in_flight.step' <<<"$st")" deploy.started "api/staging in flight"
assert_eq "$(jq -c '[.stale[] | {target, type, fence, newest_fence}]' <<<"$st")" \
    '[{"target":"web/production","type":"deploy.succeeded","fence":4,"newest_fence":5}]' "stale events"
assert_eq "$(jq -r '.targets[] | select(.service=="web" and .environment=="production") | .last_rollback.evidence.kind' <<<"$st")" latency "rollback evidence"
"$DEPLOYQ" status --dir "$REG_DIR" --service web --env production >"$T/status.txt"
grep -q '^web/production  *w4 ' "$T/status.txt" || fail "status table: $(cat "$T/status.txt")"
assert_eq "$(grep -c / "$T/status.txt")" 1 "status filter rows"

# replay --at: the state at past moments
at=$("$DEPLOYQ" replay --dir "$REG_DIR" --json --at 2026-01-02T10:30:00Z)
assert_eq "$(cur api/production "$at")" v2 "api/production at 01-02 10:30 (deployed, not yet rolled back)"
assert_eq "$(jq -r '.targets[] | select(.service=="api" and .environment=="production") | .last_rollback // "none"' <<<"$at")" none "no rollback yet"
at=$("$DEPLOYQ" replay --dir "$REG_DIR" --json --at 2026-01-03T00:00:00Z)
assert_eq "$(cur api/production "$at")" v1 "api/production at 01-03 (rolled back)"
assert_eq "$(jq -r '.targets[] | select(.service=="api" and .environment=="production") | .last_rollback.status' <<<"$at")" succeeded "rollback status at 01-03"
assert_eq "$(jq -r '[.targets[] | select(.service=="web")] | length' <<<"$at")" 0 "web unknown at 01-03"
assert_eq "$(jq -r '.totals.events' <<<"$at")" 7 "events up to 01-03"

# history filters
assert_eq "$("$DEPLOYQ" history --dir "$REG_DIR" --json | wc -l)" "$N" "history lines"
assert_eq "$("$DEPLOYQ" history --dir "$REG_DIR" --json --service web --type rollback.requested | jq -r .deployment_id | tr '\n' ' ')" \
    "00000000-0000-4000-8000-000000000005 00000000-0000-4000-8000-000000000006 " "history --service --type"
assert_eq "$("$DEPLOYQ" history --dir "$REG_DIR" --json --since 2026-01-05T00:00:00Z --until 2026-01-06T00:00:00Z | wc -l)" 5 "history --since --until (the stale event included: history is the log)"
cmp -s <(cut -f2 "$T/history" | jq -c 'select(.service=="api")' | sort) \
    <("$DEPLOYQ" history --dir "$REG_DIR" --json --service api | jq -c . | sort) || fail "history --json is not the events as sent"

# report: the exact figures, by hand (report.h's definitions; tests/unit/test_report.c has
# the same cases and more). In [01-01, 01-11): D1..D6, D8, D10 = 8 deployments; succeeded
# D1 D2 D5 D6, failed D3, rejected D4 (promotion: a gate) D10 (stale: invalid input), D8 in
# progress. Failed changes D2 D5 (monitor) D6 (alice) = 3: success (4 - 3) / 5 = 0.2,
# change failure 3 / 4; caught D4 + D6 (staging) = 2, escaped D2 D5 = 2: 0.5. Lead 65 min,
# 2h2m, 25h10m. Time to deploy: D1 10:00 -> verified 10:14 = 14 min (staging, under 15).
# MTTR: D6's failed rollback 10 min (10:30 -> failed 10:40), D2's 12 min (first failure
# 10:50 -> restored 11:02), D5's 30 min: median 12 min, p90 at 1.8 = 720000 + 0.8 * 1080000.
rep=$("$DEPLOYQ" report --dir "$REG_DIR" --json --since 2026-01-01T00:00:00Z --until 2026-01-11T00:00:00Z)
assert_eq "$(jq -c '[.deployments.total, .deployments.succeeded, .deployments.failed, .deployments.rejected, .deployments.in_progress]' <<<"$rep")" "[8,4,1,2,1]" "deployments"
assert_eq "$(jq -c '[.deployments.failed_changes, .deployments.caught_by_gate, .deployments.caught_outside_production, .deployments.rolled_back_in_production, .deployments.refused_invalid]' <<<"$rep")" "[3,1,1,2,1]" "failed changes, catches, refusals"
assert_eq "$(jq -c '[.success_rate, .change_failure_rate, .deploys_per_day, .stopped_before_production]' <<<"$rep")" "[0.2,0.75,0.4,0.5]" "rates"
assert_eq "$(jq -c '.lead_time_ms' <<<"$rep")" '{"n":3,"median":7320000,"p90":73944000,"min":3900000,"max":90600000}' "lead time"
assert_eq "$(jq -c '.time_to_deploy_staging_ms' <<<"$rep")" '{"n":1,"median":840000,"p90":840000,"min":840000,"max":840000}' "time to deploy (staging)"
assert_eq "$(jq -c '.mttr_ms' <<<"$rep")" '{"n":3,"median":720000,"p90":1584000,"min":600000,"max":1800000}' "MTTR"
assert_eq "$(jq -c '.rollbacks' <<<"$rep")" '{"total":3,"succeeded":2,"failed":1,"not_attempted":0,"open":0,"manual_in_mttr":1}' "rollbacks"
csv=$("$DEPLOYQ" report --dir "$REG_DIR" --csv --by-target --since 2026-01-01T00:00:00Z --until 2026-01-11T00:00:00Z --service web)
grep -qx '\*,\*,change_failure_rate,1.0000' <<<"$csv" || fail "csv: $csv"
grep -qx '\*,\*,stopped_before_production,0.5000' <<<"$csv" || fail "csv: $csv"
grep -qx 'web,staging,caught_before_production,1' <<<"$csv" || fail "csv by target: $csv"
grep -qx 'web,production,rolled_back_in_production,1' <<<"$csv" || fail "csv by target: $csv"
assert_eq "$(grep -c '^api,' <<<"$csv")" 0 "csv --service web has no api rows"
table=$("$DEPLOYQ" report --dir "$REG_DIR" --since 2026-01-01T00:00:00Z --until 2026-01-11T00:00:00Z)
grep -q '^success rate  *20.0% (1 of 5; 3 failed changes)  \[target > 99%: missed\]$' <<<"$table" || fail "report table: $table"
grep -q '^refused as invalid input  *1 ' <<<"$table" || fail "report table: $table"
grep -q '^  of which staging .*(n=1)  \[target p90 < 15m: met\]$' <<<"$table" || fail "report table: $table"

# verify with a signed checkpoint: matches now, not after the newest record is cut off
"$DEPLOYQ" keygen --out "$T/op.key" --id op-1 --role operator >/dev/null
"$DEPLOYQ" verify --dir "$REG_DIR" --sign "$T/op.key" --key-id op-1 --out "$T/cp.json" >/dev/null || fail "signing a checkpoint"
pub=$(pubkey "$T/op.key")
out=$("$DEPLOYQ" verify --dir "$REG_DIR" --checkpoint "$T/cp.json" --pubkey "$pub" 2>&1) || fail "checkpoint: $out"
grep -q "matches the log" <<<"$out" || fail "checkpoint does not match: $out"
seg=$(ls "$REG_DIR"/p*/*.seg | xargs ls -s | sort -n | tail -n 1 | awk '{print $2}')
last_len=$(python3 -c '
import struct,sys
d=open(sys.argv[1],"rb").read(); o=0; last=0
while o < len(d):
    n=struct.unpack_from("<I",d,o+4)[0]; last=64+n; o+=last
print(last)' "$seg")
truncate -s -"$last_len" "$seg"
"$DEPLOYQ" verify --dir "$REG_DIR" >/dev/null || fail "a log cut at a record boundary is a valid shorter log"
out=$("$DEPLOYQ" verify --dir "$REG_DIR" --checkpoint "$T/cp.json" --pubkey "$pub") && fail "checkpoint still matches after the cut"
grep -q 'records were removed from the end' <<<"$out" || fail "checkpoint output: $out"
log "ok"
