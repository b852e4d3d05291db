#!/usr/bin/env bash
# tests/chaos/flood.sh - resource bounds under a flood (issue 6, item 6).
#
#   tests/chaos/flood.sh [--n N] [--embedded] [--build DIR] [--keep] [--skip-slow]
#                        [-X KEY=VALUE]...
#
#   -X KEY=VALUE   a librdkafka property for the flood's workers (repeatable), e.g.
#                  -X queued.max.messages.kbytes=4096 to bound the consumers' prefetch
#
# Part 1, the flood: N requests (default 100,000; valid and invalid mixed, signed by
# tests/chaos/flood_gen.py) are put on deployq.requests with kcat at once, while two
# validators and two registries run. Reported: the time until every request is judged and
# stored, every worker's peak RSS (VmHWM of /proc/PID/status, sampled VmRSS too), every
# partition's committed offset and lag for both consumer groups (tests/chaos/lag.c: the
# group's committed offsets against the high watermarks), and the verdict counts, which
# must match the mix exactly. Fails when a lag does not return to zero, a verdict is
# missing or a worker dies.
#
# Part 2, a slow provider: executors run with max.poll.interval.ms=7000 (the librdkafka
# limit on the time between two polls) and a provider whose deploy call takes 9 s and
# whose deploys take another ~3 s of polling; two deploys in a row to one target take
# ~25 s. Passes when every deploy succeeds and no executor logged a revocation, a
# max.poll.interval violation or a group leave.
#
# The broker: a real Kafka (scripts/kafka.sh, started here unless DEPLOYQ_TEST_BROKERS
# names one) by default. --embedded uses the embedded broker, which keeps at most ~5 MiB
# or 100,000 messages per partition in RAM and drops the oldest beyond that, so requests
# are produced in chunks of 5,000, each once the validators have caught up.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
N=100000 embedded=0 keep=0 skip_slow=0 build=${DEPLOYQ_BUILD:-$src/build}
wargs=()
while [ $# -gt 0 ]; do
    case "$1" in
    --n) N=$2; shift 2 ;;
    --embedded) embedded=1; shift ;;
    --build) build=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --skip-slow) skip_slow=1; shift ;;
    -X) wargs+=(-X "$2"); shift 2 ;;
    -h | --help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "flood.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
DEPLOYQ=$build/producer/deployq
export DEPLOYQ_SCHEMAS=$src/schemas
T=$(mktemp -d /tmp/dq-flood.XXXXXX)
export DEPLOYQ_STATE_DIR=$T/state
mkdir -p "$DEPLOYQ_STATE_DIR"
PIDS=()
kdir=""
say() { printf '# flood %s %s\n' "$(date +%T)" "$*" >&2; }
fail() {
    echo "FLOOD FAIL: $*" >&2
    for f in "$T"/*.log; do [ -f "$f" ] && { echo "---- $(basename "$f")" >&2; tail -n 5 "$f" >&2; }; done
    exit 1
}
cleanup() {
    local rc=$?
    # newest first, each gone before the next: workers before the broker and Redis
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[i]}" 2>/dev/null || continue
        for _ in $(seq 1 100); do kill -0 "${PIDS[i]}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${PIDS[i]}" 2>/dev/null || true
    done
    [ -n "$kdir" ] && "$src/scripts/kafka.sh" stop --dir "$kdir" >/dev/null 2>&1
    if [ $rc -eq 0 ] && [ $keep = 0 ]; then rm -rf "$T"; else echo "# kept $T" >&2; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_for() {
    local secs=$1; shift
    local end=$((SECONDS + secs))
    until "$@"; do [ $SECONDS -lt $end ] || return 1; sleep 0.5; done
}
pubkey() { openssl pkey -in "$1" -pubout -outform DER 2>/dev/null | tail -c 32 | base64 -w0; }

cc -O2 -Wall -Wextra -Werror -o "$T/lag" "$here/lag.c" -lrdkafka || fail "cannot build lag.c"
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$T" >"$T/redis.log" 2>&1 &
PIDS+=("$!")
wait_for 10 redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || fail "redis-server did not start"

# start_broker SUFFIX: sets BROKERS and the topic names of one part.
start_broker() {
    if [ $embedded = 1 ]; then
        rm -f "$T/broker-$1.addr"
        "$DEPLOYQ" broker --address-file "$T/broker-$1.addr" >/dev/null 2>"$T/broker-$1.log" &
        PIDS+=("$!")
        wait_for 10 test -s "$T/broker-$1.addr" || fail "embedded broker did not start"
        BROKERS=$(cat "$T/broker-$1.addr")
        TREQ=deployq.requests TEV=deployq.events TDEAD=deployq.dead
    else
        if [ -z "${BROKERS:-}" ]; then
            if [ -n "${DEPLOYQ_TEST_BROKERS:-}" ]; then
                BROKERS=$DEPLOYQ_TEST_BROKERS
            else
                kdir=$T/kafka
                say "starting a real Kafka (scripts/kafka.sh)"
                BROKERS=$("$src/scripts/kafka.sh" start --dir "$kdir") || fail "Kafka did not start"
            fi
        fi
        local sfx
        sfx="$1-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
        TREQ=deployq.requests.$sfx TEV=deployq.events.$sfx TDEAD=deployq.dead.$sfx
    fi
}
topic_ready() { kcat -L -b "$BROKERS" -t "$1" 2>/dev/null | grep -q "topic \"$1\" with 6 partitions"; }

# write_config FILE EXTRA
write_config() {
    cat >"$1" <<YAML
kafka:
  bootstrap.servers: "$BROKERS"
  session.timeout.ms: "6000"
  heartbeat.interval.ms: "500"
redis:
  url: "redis://127.0.0.1:$REDIS_PORT"
topics: {requests: "$TREQ", events: "$TEV", dead: "$TDEAD"}
validator:
  max_request_bytes: 4096
  issued_at_window: 3600s
keys:
  - {id: ci-flood, public_key: "$(pubkey "$T/ci.key")", role: ci}
registry:
  http: {listen: "off"}
$2
YAML
}
"$DEPLOYQ" keygen --out "$T/ci.key" --id ci-flood >/dev/null

# start NAME BINARY ARGS...: a worker, its pid in PID_<NAME>.
start() {
    local name=$1 bin=$2; shift 2
    "$bin" "$@" >"$T/$name.log" 2>&1 &
    PIDS+=("$!")
    eval "PID_${name//-/_}=$!"
}
pid_of() { eval "printf '%s' \"\$PID_${1//-/_}\""; }
assigned() { grep -q 'assigned\|resuming at' "$T/$1.log"; }
total_lag() { "$T/lag" "$BROKERS" "$1" "$2" 2>/dev/null | awk '/^total lag/ {print $3}'; }
lag_is() { [ "$(total_lag "$1" "$2")" = "$3" ]; }
lag_below() { local l; l=$(total_lag "$1" "$2"); [ -n "$l" ] && [ "$l" -lt "$3" ]; }

# ------------------------------------------------------------------ part 1: the flood
start_broker flood
write_config "$T/flood.yaml" "services:
  api: {environments: {staging: {}, production: {}}}
  web: {environments: {staging: {}, production: {}}}"
W1=(validator-a validator-b registry-a registry-b)
for v in a b; do
    start "validator-$v" "$build/workers/validator/deployq-validator" --config "$T/flood.yaml" --log-level info ${wargs[@]+"${wargs[@]}"}
done
[ $embedded = 1 ] || { wait_for 60 topic_ready "$TREQ" && wait_for 60 topic_ready "$TEV"; } || fail "topics not created"
for r in a b; do
    start "registry-$r" "$build/workers/registry/deployq-registry" --config "$T/flood.yaml" --dir "$T/registry" --log-level info ${wargs[@]+"${wargs[@]}"}
done
for w in "${W1[@]}"; do wait_for 90 assigned "$w" || fail "$w got no partitions"; done

say "signing $N requests"
gen_start=$SECONDS
/usr/bin/python3 "$here/flood_gen.py" "$T/ci.key" ci-flood "$N" 42 >"$T/requests.tsv" 2>"$T/mix.json" ||
    fail "flood_gen.py failed (needs Debian's python3-cryptography)"
say "signed in $((SECONDS - gen_start)) s: $(cat "$T/mix.json"), $(du -h "$T/requests.tsv" | cut -f1)"

# RSS sampler: the largest VmRSS seen per worker, once a second
(
    while :; do
        for w in "${W1[@]}"; do
            pid=$(pid_of "$w")
            r=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
            [ -n "$r" ] && echo "$w $r"
        done
        sleep 1
    done
) >"$T/rss.samples" 2>/dev/null &
SAMPLER=$!
PIDS+=("$SAMPLER")
rss_before=$(for w in "${W1[@]}"; do printf '%s=%s ' "$w" "$(awk '/^VmRSS/ {print $2}' "/proc/$(pid_of "$w")/status")"; done)

flood_start=$(date +%s.%N)
if [ $embedded = 1 ]; then
    split -l 5000 -d -a 3 "$T/requests.tsv" "$T/chunk."
    for c in "$T"/chunk.*; do
        kcat -P -b "$BROKERS" -t "$TREQ" -K $'\t' -l "$c" 2>>"$T/kcat.log" || fail "kcat could not produce $c"
        wait_for 300 lag_below deployq-validator "$TREQ" 2500 || fail "validators do not keep up"
    done
else
    kcat -P -b "$BROKERS" -t "$TREQ" -K $'\t' -l -X linger.ms=50 -X batch.num.messages=10000 \
        "$T/requests.tsv" 2>>"$T/kcat.log" || fail "kcat could not produce the flood"
fi
produced=$(date +%s.%N)
say "produced $N requests in $(awk -v a="$flood_start" -v b="$produced" 'BEGIN {printf "%.1f", b - a}') s; waiting for lag 0"
wait_for 900 lag_is deployq-validator "$TREQ" 0 || fail "validator lag did not return to zero: $(total_lag deployq-validator "$TREQ")"
judged=$(date +%s.%N)
# every verdict on the events topic, then the registries' lag
wait_for 300 bash -c "[ \"\$($T/lag $BROKERS deployq-registry $TEV | awk '/^partition/ {s += \$6} END {print s}')\" -ge $N ]" ||
    fail "fewer than $N events on $TEV"
wait_for 300 lag_is deployq-registry "$TEV" 0 || fail "registry lag did not return to zero: $(total_lag deployq-registry "$TEV")"
stored=$(date +%s.%N)
kill "$SAMPLER" 2>/dev/null || true

echo "== flood: $N requests ($(cat "$T/mix.json")), broker $([ $embedded = 1 ] && echo embedded || echo "real Kafka $BROKERS")${wargs[*]:+, workers with ${wargs[*]}}"
awk -v a="$flood_start" -v b="$judged" -v c="$stored" -v n="$N" 'BEGIN {
    printf "judged by 2 validators in %.1f s (%.0f requests/s); stored by 2 registries %.1f s after the start\n", b - a, n / (b - a), c - a }'
echo "-- consumer groups after the flood (committed offset vs high watermark)"
echo "deployq-validator on $TREQ:"; "$T/lag" "$BROKERS" deployq-validator "$TREQ" | sed 's/^/  /'
echo "deployq-registry on $TEV:"; "$T/lag" "$BROKERS" deployq-registry "$TEV" | sed 's/^/  /'
echo "-- memory (kB): VmRSS before the flood, largest VmRSS sampled, VmHWM (peak) at the end, and"
echo "   VmRSS at the end split into RssAnon (this worker's own) and RssFile (shared library pages)"
for w in "${W1[@]}"; do
    pid=$(pid_of "$w")
    kill -0 "$pid" 2>/dev/null || fail "$w died during the flood"
    before=$(grep -o "$w=[0-9]*" <<<"$rss_before" | cut -d= -f2)
    sampled=$(awk -v w="$w" '$1 == w && $2 > m {m = $2} END {print m + 0}' "$T/rss.samples")
    read -r hwm rss anon file < <(awk '/^VmHWM/ {h = $2} /^VmRSS/ {r = $2} /^RssAnon/ {a = $2}
        /^RssFile/ {f = $2} END {print h, r, a, f}' "/proc/$pid/status")
    printf '  %-12s before %7d  sampled max %7d  VmHWM %7d  end %7d = anon %7d + file %6d\n' \
        "$w" "$before" "$sampled" "$hwm" "$rss" "$anon" "$file"
done
# Verdict ids are deterministic: a request judged twice (a rebalance moved it before its
# offset was committed) gives the same event again, which readers drop by id.
kcat -C -b "$BROKERS" -t "$TEV" -o beginning -e -q 2>/dev/null | jq -r '[.type, .id] | @tsv' >"$T/verdicts.tsv"
n_events=$(wc -l <"$T/verdicts.tsv")
counts=$(sort -u "$T/verdicts.tsv" | cut -f1 | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}')
echo "-- verdicts: ${counts%, } (distinct ids; $n_events events, $((n_events - $(sort -u "$T/verdicts.tsv" | wc -l))) repeated)"
valid=$(jq -r .valid "$T/mix.json")
nval=$(grep -o 'deploy.validated [0-9]*' <<<"$counts" | awk '{print $2}')
nrej=$(grep -o 'deploy.rejected [0-9]*' <<<"$counts" | awk '{print $2}')
[ "${nval:-0}" = "$valid" ] || fail "expected $valid deploy.validated, got ${nval:-0}"
[ "${nrej:-0}" = "$((N - valid))" ] || fail "expected $((N - valid)) deploy.rejected, got ${nrej:-0}"
"$DEPLOYQ" verify --dir "$T/registry" --json | jq -e --argjson n "$n_events" '.intact and .records == $n' >/dev/null ||
    fail "the registry does not hold exactly the $n_events events of the topic, intact"
echo "-- registry: $n_events records (every event of the topic), every chain intact (deployq verify)"
for w in "${W1[@]}"; do kill -TERM "$(pid_of "$w")"; done

[ $skip_slow = 1 ] && { echo "== slow provider: skipped (--skip-slow)"; exit 0; }
# ------------------------------------------------------------------ part 2: a slow provider
say "part 2: a provider slower than max.poll.interval.ms"
start_broker slow
python3 "$src/tests/fakes/webhook.py" --port 0 --port-file "$T/wh.port" >"$T/fake-wh.log" 2>&1 &
PIDS+=("$!")
wait_for 10 test -s "$T/wh.port" || fail "webhook double did not start"
WH=http://127.0.0.1:$(cat "$T/wh.port")
curl -fsS -X POST -d '{"mode":"succeed","delay_ms":9000,"steps":6}' "$WH/_fake/script" >/dev/null
write_config "$T/slow.yaml" "executor: {lock_ttl: 5s}
providers:
  slow: {type: webhook, url: \"$WH/deploy\", status_url: \"$WH/status/{id}\", timeout: 20s, poll_interval: 500ms, deadline: 120s}
services:
  api: {environments: {staging: {providers: [slow]}}}"
start validator-s "$build/workers/validator/deployq-validator" --config "$T/slow.yaml"
[ $embedded = 1 ] || { wait_for 60 topic_ready "$TREQ" && wait_for 60 topic_ready "$TEV"; } || fail "topics not created"
for e in a b; do
    start "executor-$e" "$build/workers/executor/deployq-executor" --config "$T/slow.yaml" --log-level debug \
        -X max.poll.interval.ms=7000
done
for w in validator-s executor-a executor-b; do wait_for 90 assigned "$w" || fail "$w got no partitions"; done
slow_start=$SECONDS
# what the executors logged before the deploys (a group's first join may rebalance once)
for e in a b; do eval "mark_$e=$(wc -l <"$T/executor-$e.log")"; done
ids=()
for v in 1 2; do
    ids+=("$("$DEPLOYQ" submit --config "$T/slow.yaml" --key "$T/ci.key" --key-id ci-flood -s api -e staging -v "slow-$v")")
done
done_all() {
    local ok
    ok=$(kcat -C -b "$BROKERS" -t "$TEV" -o beginning -e -q 2>/dev/null |
        jq -r 'select(.type == "deploy.succeeded") | .deployment_id')
    for id in "${ids[@]}"; do
        grep -q -x -F "$id" <<<"$ok" || return 1
    done
}
wait_for 240 done_all || fail "the slow deploys did not all succeed"
echo "== slow provider: 2 deploys (9 s deploy call + 6 polls at 500 ms each) done in $((SECONDS - slow_start)) s with max.poll.interval.ms=7000"
deploys=$(curl -fsS "$WH/_fake/calls" | jq '[.calls[] | select(.path == "/deploy")] | length')
[ "$deploys" = 2 ] || fail "expected 2 deploy calls, got $deploys"
for e in a b; do
    mark=$(eval "echo \$mark_$e")
    after=$(tail -n +"$((mark + 1))" "$T/executor-$e.log")
    bad=$(grep -i -E 'revoked|assigned|max\.poll|maximum poll|leav(e|ing) (the )?group|MAXPOLL' <<<"$after" | head -n 3 || true)
    [ -z "$bad" ] || fail "executor $e left its group or was rebalanced during the slow deploys: $bad"
    echo "  executor-$e: $(wc -l <<<"$after") log lines during the deploys, no revocation or new assignment, no max.poll.interval.ms violation, no group leave"
done
echo "flood: ok"
