#!/usr/bin/env bash
# Two validators in one consumer group split the partitions. A burst of 1,000 requests,
# one validator SIGKILLed mid-burst: every request still gets exactly one verdict in
# effect (one distinct verdict event id per deployment; a redelivered request yields the
# same event id again, never a second verdict nor a false "replayed nonce").
. "$(dirname "$0")/helpers.sh"

N=${BURST:-1000}
start_redis
start_broker
write_config
start_validator a
start_validator b

# Warm up: both members joined and a request goes through.
id=$(submit --service api --env staging --version warmup)
wait_event "$id" deploy.validated 60 >/dev/null || fail "warm-up request not validated"
sleep 8 # the embedded broker finishes a rebalance only after session.timeout.ms

log "signing $N requests"
: >"$T/burst.txt"
for i in $(seq 1 "$N"); do
    svc=$([ $((i % 2)) -eq 0 ] && echo api || echo demo)
    msg=$(signed --service "$svc" --env staging --version "v$i")
    printf '%s/staging\t%s\n' "$svc" "$msg" >>"$T/burst.txt"
done
jq -Rr 'split("\t")[1] | fromjson | .request | fromjson | .deployment_id' "$T/burst.txt" | sort >"$T/ids.txt"
assert_eq "$(sort -u "$T/ids.txt" | wc -l)" "$N" "distinct deployment ids in the burst"

log "producing the burst"
kcat -P -b "$BROKERS" -t "$TOPIC_REQUESTS" -K $'\t' -l "$T/burst.txt" || fail "kcat could not produce"

verdicts() {
    events | jq -r 'select(.type == "deploy.validated" or .type == "deploy.rejected")
        | [.deployment_id, .id, .type] | @tsv'
}
# Kill validator b once part of the burst has been judged.
end=$((SECONDS + 60))
until [ "$(verdicts | wc -l)" -ge $((N / 5)) ]; do
    [ $SECONDS -lt $end ] || fail "burst not progressing"
    sleep 0.1
done
handled_b=$(grep -c 'deploy.validated' "$T/validator-b.log" || true)
log "SIGKILL validator b (it had validated $handled_b)"
kill -KILL "$VALIDATOR_PID_b"

end=$((SECONDS + 180))
while :; do
    verdicts >"$T/verdicts.tsv"
    got=$(cut -f1 "$T/verdicts.tsv" | sort -u | comm -12 - "$T/ids.txt" | wc -l)
    [ "$got" -eq "$N" ] && break
    [ $SECONDS -lt $end ] || fail "only $got of $N requests got a verdict"
    sleep 1
done

# Exactly one verdict in effect per request: one distinct event id, and it is a validation.
dups=$(sort -u "$T/verdicts.tsv" | cut -f1 | sort | uniq -d | comm -12 - "$T/ids.txt" | wc -l)
assert_eq "$dups" 0 "requests with more than one distinct verdict"
rejected=$(sort -u "$T/verdicts.tsv" | awk -F'\t' '$3 == "deploy.rejected"' | cut -f1 | comm -12 - "$T/ids.txt" | wc -l)
assert_eq "$rejected" 0 "burst requests rejected (a redelivery must not look like a replay)"
[ "$handled_b" -gt 0 ] || fail "validator b never took part: the group did not split the partitions"
grep -q 'deploy.validated' "$T/validator-a.log" || fail "validator a never took part"
total=$(grep -cE 'deploy\.(validated|rejected)' "$T/verdicts.tsv" || true)
log "verdict messages on the topic: $total for $((N + 1)) requests (duplicates carry the same event id)"
echo "ok"
