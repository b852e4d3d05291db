#!/usr/bin/env bash
# Every worker serves /healthz, /readyz and /metrics (docs/operations.md, "Health and
# metrics"):
#   1. a bad health address in the configuration or on the command line stops a worker
#      at start with the reason (file:line for the file); a port already taken is a
#      warning that names the option, and the worker goes on;
#   2. the five workers (validator, executor, monitor, rollback, registry) are ready once
#      in their groups, each on its own address (health.validator in the file,
#      --health-listen, DEPLOYQ_HEALTH_LISTEN, registry.http.listen);
#   3. after a deploy that failed over from a dead provider and was verified, and a second
#      one whose health failed and was rolled back, /metrics of each worker has the
#      contract's names with their labels and the counts of what happened;
#   4. Redis goes away: every worker that uses it says 503 with the reason, and 200 again
#      when it is back (the registry uses no Redis and stays ready);
#   5. the broker goes away: every worker says 503. On a shared real Kafka, which is not
#      the test's to stop, this part runs a validator against an embedded broker of its own.
. "$(dirname "$0")/helpers.sh"
. "$(dirname "$0")/helpers-executor.sh"
. "$(dirname "$0")/helpers-monitor.sh"
. "$(dirname "$0")/helpers-rollback.sh"
. "$(dirname "$0")/helpers-registry.sh"

start_redis
start_broker
start_fake wh webhook
start_fake H health
DEAD=$(free_port) # nothing listens there: the first provider of the chain is down
P_VAL=$(free_port); P_EXE=$(free_port); P_MON=$(free_port); P_RB=$(free_port); P_REG=$(free_port)
services="  api:
    environments:
      staging:
        providers:
          - {type: webhook, name: down, url: \"http://127.0.0.1:$DEAD/deploy\", status_url: \"http://127.0.0.1:$DEAD/status/{id}\", token: t0k3n-dn, poll_interval: 200ms, deadline: 20s}
          - {type: webhook, name: wh, url: \"$FAKE_URL_wh/deploy\", status_url: \"$FAKE_URL_wh/status/{id}\", token: t0k3n-wh, poll_interval: 200ms, deadline: 20s}
        monitor:
          interval: 300ms
          window: 3s
          failure_threshold: 2
          probes:
            - {name: http, type: http, url: \"$FAKE_URL_H/health\", expect_status: 200, missing: fail}"
top="executor:
  lock_ttl: 5s
  lock_wait: 10s
health:
  validator: \"127.0.0.1:$P_VAL\"
registry:
  http:
    listen: \"127.0.0.1:$P_REG\""

log "1. bad addresses are refused at start; a taken port is a warning"
write_exec_config "$services" "$top"
mkdir -p "$T/bad"
sed "s/^  validator: \"127.0.0.1:$P_VAL\"/  validator: nonsense/" "$CONFIG" >"$T/bad/deployq.yaml"
rc=0; "$VALIDATOR" --config "$T/bad/deployq.yaml" >"$T/bad1.log" 2>&1 || rc=$?
assert_eq "$rc" 1 "exit status with health.validator: nonsense"
grep -q "deployq.yaml:[0-9]*: health.validator: expected HOST:PORT, :PORT or off" "$T/bad1.log" ||
    fail "no file:line reason: $(cat "$T/bad1.log")"
rc=0; "$EXECUTOR" --config "$CONFIG" --health-listen 9102 >"$T/bad2.log" 2>&1 || rc=$?
assert_eq "$rc" 1 "exit status with --health-listen 9102"
grep -q -- "--health-listen 9102: expected HOST:PORT, :PORT or off" "$T/bad2.log" ||
    fail "no reason for --health-listen: $(cat "$T/bad2.log")"
start_validator a
launch_executor a --health-listen "127.0.0.1:$P_EXE"
DEPLOYQ_HEALTH_LISTEN="127.0.0.1:$P_MON" start_monitor a --health-listen "127.0.0.1:1" # env wins
start_rollback a --health-listen "127.0.0.1:$P_RB"
start_registry a
# a second validator on the same machine: the port is taken; it warns and goes on (in a
# group of its own: joining a's would rebalance it, and a partition has no consumer lag
# until a message of it is read again)
"$VALIDATOR" --config "$CONFIG" -g "${GROUP_PREFIX:-deployq}-second" >"$T/validator-b.log" 2>&1 &
PIDS+=("$!"); vb=$!
wait_for 20 grep -q "going on without /healthz, /readyz and /metrics (set --health-listen, DEPLOYQ_HEALTH_LISTEN or health.validator" "$T/validator-b.log" ||
    fail "no warning for the taken port: $(grep -i health "$T/validator-b.log")"
alive "$vb" || fail "the second validator stopped"
kill -TERM "$vb"

log "2. ready once in their groups"
code() { curl -s -o "$T/body" -w '%{http_code}' --max-time 10 "http://127.0.0.1:$1$2"; }
ready_all() { for p in "$@"; do [ "$(code "$p" /readyz)" = 200 ] || return 1; done; }
unready_all() { for p in "$@"; do [ "$(code "$p" /readyz)" = 503 ] || return 1; done; }
WORKERS="$P_VAL $P_EXE $P_MON $P_RB"
wait_for 60 ready_all $WORKERS $P_REG || {
    for p in $WORKERS $P_REG; do log "$p: $(code "$p" /readyz) $(cat "$T/body")"; done
    fail "not every worker became ready"
}
for p in $WORKERS $P_REG; do
    assert_eq "$(code "$p" /healthz)" 200 "/healthz on $p"
done
code "$P_VAL" /healthz >/dev/null
assert_eq "$(cat "$T/body")" ok "/healthz body"

log "3. a deploy with a failover, verified; a second one rolled back"
metrics() { curl -fsS --max-time 10 "http://127.0.0.1:$1/metrics"; }
# metric PORT 'name{labels}': its value (0 when the series is not there)
metric() { metrics "$1" | awk -v s="$2" '$1 == s {print $2; f = 1} END {if (!f) print 0}'; }
metric_ge() { awk -v a="$(metric "$1" "$2")" -v b="$3" 'BEGIN {exit !(a >= b)}'; }

d1=$(submit --service api --env staging --version v1 | tail -n1)
wait_event "$d1" deploy.verified 60 >/dev/null || fail "v1 was not verified"
fake_script H '{"status": 503, "body": "down"}'
d2=$(submit --service api --env staging --version v2 | tail -n1)
rb=$(wait_event "$d2" rollback.requested 60) || fail "no rollback.requested for v2"
ev=$(rollback_outcome "$(jq -r .id <<<"$rb")" 60) || fail "no rollback outcome"
assert_eq "$(jq -r .type <<<"$ev")" rollback.succeeded "rollback outcome"
fake_script H '{"status": 200, "body": "ok"}'

S='service="api",env="staging"'
wait_for 20 metric_ge "$P_VAL" "deployq_verdicts_total{worker=\"validator\",$S,verdict=\"validated\"}" 2 ||
    fail "verdicts: $(metrics "$P_VAL" | grep verdicts_total)"
wait_for 20 metric_ge "$P_EXE" "deployq_deploys_total{worker=\"executor\",$S,provider=\"wh\",outcome=\"succeeded\"}" 2 ||
    fail "deploys: $(metrics "$P_EXE" | grep deploys_total)"
m=$(metrics "$P_EXE")
grep -qE "^deployq_failovers_total\{worker=\"executor\",$S,provider=\"down\",reason=\"[a-z_]+\"\} 2$" <<<"$m" ||
    fail "failovers: $(grep failovers_total <<<"$m")"
grep -qx "deployq_lock_wait_seconds_count{worker=\"executor\",$S} 2" <<<"$m" || fail "executor lock waits: $(grep lock_wait <<<"$m")"
grep -qx 'deployq_ready{worker="executor"} 1' <<<"$m" || fail "executor deployq_ready"
grep -qx 'deployq_up{worker="executor"} 1' <<<"$m" || fail "executor deployq_up"
wait_for 20 metric_ge "$P_MON" "deployq_watch_verdicts_total{worker=\"monitor\",$S,verdict=\"degraded\"}" 1 ||
    fail "monitor degraded: $(metrics "$P_MON" | grep watch_verdicts)"
m=$(metrics "$P_MON")
# v1, and perhaps v1 again once restored (the monitor watches a restored version too)
grep -qE "^deployq_watch_verdicts_total\{worker=\"monitor\",$S,verdict=\"verified\"\} [12]$" <<<"$m" || fail "monitor verified: $(grep watch_verdicts <<<"$m")"
for r in pass fail; do
    grep -qE "^deployq_probe_results_total\{worker=\"monitor\",$S,probe=\"http\",result=\"$r\"\} [1-9][0-9]*$" <<<"$m" ||
        fail "probe results $r: $(grep probe_results <<<"$m")"
done
m=$(metrics "$P_RB")
grep -qx "deployq_rollbacks_total{worker=\"rollback\",$S,provider=\"wh\",outcome=\"succeeded\"} 1" <<<"$m" ||
    fail "rollbacks: $(grep rollbacks_total <<<"$m")"
grep -qx "deployq_mttr_seconds_count{worker=\"rollback\",$S} 1" <<<"$m" || fail "MTTR count: $(grep mttr <<<"$m")"
# the restore took seconds, not minutes: it lands in a bucket below 60 s
grep -qx "deployq_mttr_seconds_bucket{worker=\"rollback\",$S,le=\"30\"} 1" <<<"$m" || fail "MTTR buckets: $(grep mttr <<<"$m")"
grep -qx "deployq_lock_wait_seconds_count{worker=\"rollback\",$S} 1" <<<"$m" || fail "rollback lock waits: $(grep lock_wait <<<"$m")"
# every consumer's lag, per partition, from librdkafka's cache
for w in validator:$P_VAL executor:$P_EXE monitor:$P_MON rollback:$P_RB registry:$P_REG; do
    m=$(metrics "${w#*:}")
    grep -qE "^deployq_consumer_lag\{worker=\"${w%%:*}\",topic=\"deployq\.[a-z.0-9-]+\",partition=\"[0-9]+\"\} [0-9]+$" <<<"$m" ||
        fail "no consumer lag from ${w%%:*}: $(grep lag <<<"$m")"
done
# the registry's own figures carry its worker label and the target's
m=$(metrics "$P_REG")
grep -qx "deployq_deploys_total{worker=\"registry\",$S,outcome=\"succeeded\"} 2" <<<"$m" || fail "registry deploys: $(grep deploys_total <<<"$m")"
# every metric line of every worker is well-formed, with HELP and TYPE
for p in $WORKERS $P_REG; do
    m=$(metrics "$p")
    bad=$(grep -v '^#' <<<"$m" | grep -Evc '^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? ([0-9.e+-]+|\+Inf|NaN)$' || true)
    assert_eq "$bad" 0 "malformed metric lines on $p"
    for n in $(grep -v '^#' <<<"$m" | sed -E 's/[{ ].*//' | sort -u); do
        grep -qE "^# TYPE $n (counter|gauge)$" <<<"$m" ||
            grep -qx "# TYPE $(sed -E 's/_(bucket|sum|count)$//' <<<"$n") histogram" <<<"$m" ||
            fail "$n on $p has no TYPE line"
        grep -q "^# HELP $(sed -E 's/_(bucket|sum|count)$//' <<<"$n") " <<<"$m" || fail "$n on $p has no HELP line"
    done
done

log "4. Redis goes away, and comes back"
kill_redis
wait_for 20 unready_all $WORKERS || {
    for p in $WORKERS; do log "$p: $(code "$p" /readyz) $(cat "$T/body")"; done
    fail "not every worker said 503 without Redis"
}
code "$P_EXE" /readyz >/dev/null
jq -e '.ready == false and (.reason | startswith("redis"))' "$T/body" >/dev/null || fail "reason: $(cat "$T/body")"
assert_eq "$(wc -l <"$T/body")" 1 "one line of JSON"
assert_eq "$(code "$P_REG" /readyz)" 200 "the registry uses no Redis"
[ "$(metric "$P_RB" 'deployq_ready{worker="rollback"}')" = 0 ] || fail "deployq_ready while Redis is down"
restart_redis
wait_for 30 ready_all $WORKERS || fail "not every worker ready again once Redis is back"

log "5. the broker goes away"
if [ "$BROKER_KIND" = embedded ]; then
    kill_broker
    wait_for 30 unready_all $WORKERS $P_REG || {
        for p in $WORKERS $P_REG; do log "$p: $(code "$p" /readyz) $(cat "$T/body")"; done
        fail "not every worker said 503 without the broker"
    }
    code "$P_VAL" /readyz >/dev/null
    jq -e '.reason | startswith("kafka")' "$T/body" >/dev/null || fail "reason: $(cat "$T/body")"
else
    "$DEPLOYQ" broker --address-file "$T/broker2.addr" >"$T/broker2.log" 2>&1 &
    b2=$!
    PIDS+=("$b2")
    wait_for 10 test -s "$T/broker2.addr" || fail "second embedded broker did not start"
    P2=$(free_port)
    DEPLOYQ_BROKERS=$(cat "$T/broker2.addr") DEPLOYQ_HEALTH_LISTEN="127.0.0.1:$P2" \
        "$VALIDATOR" --config "$CONFIG" >"$T/validator-c.log" 2>&1 &
    PIDS+=("$!")
    wait_for 60 ready_all "$P2" || fail "validator c not ready: $(cat "$T/body")"
    kill -KILL "$b2"
    wait_for 30 unready_all "$P2" || fail "validator c still ready without its broker"
    jq -e '.reason | startswith("kafka")' "$T/body" >/dev/null || fail "reason: $(cat "$T/body")"
fi
for p in $WORKERS; do assert_eq "$(code "$p" /healthz)" 200 "/healthz on $p without a broker"; done
log "ok"
