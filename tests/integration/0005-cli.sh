#!/usr/bin/env bash
# The CLI teaches and fails well: `deployq --help` lists every verb of the table, --help
# on every verb, the shared options on the verbs that take them, usage errors exit 2 with
# a reason, an unknown verb is one line, an unreachable broker is a one-line error within
# the timeout, config errors say file:line; `deployq broker --count N`.
. "$(dirname "$0")/helpers.sh"

top=$("$DEPLOYQ" --help) || fail "deployq --help exit status"
grep -q '^Usage: deployq <verb>' <<<"$top" || fail "deployq --help: $top"
assert_eq "$("$DEPLOYQ" help)" "$top" "deployq help"

# Every verb of the dispatch table (producer/main.c) is listed with its summary, and the
# help lists nothing else: read the table itself, so a verb left out of the help fails here.
table=$(sed -n '/^static const dq_verb verbs\[\] = {$/,/^};$/p' "$DEPLOYQ_SOURCE/producer/main.c" |
    sed -n 's/^ *{"\([a-z-]*\)", .*/\1/p')
[ "$(wc -l <<<"$table")" -ge 18 ] || fail "could not read the verb table of producer/main.c: $table"
listed=$(sed -n 's/^  \([a-z-]*\)  *[^ ].*/\1/p' <<<"$top")
assert_eq "$(sort <<<"$listed")" "$(sort <<<"$table")" "deployq --help lists exactly the verbs of the table"
# each group once: a verb out of its group's place in the table would open it a second time
dups=$(grep -E '^[A-Z][^:]*:$' <<<"$top" | sort | uniq -d)
[ -z "$dups" ] || fail "deployq --help opens a group twice: $dups"
for verb in $table; do
    [ "$verb" = help ] && continue
    out=$("$DEPLOYQ" "$verb" --help) || fail "$verb --help exit status"
    if [ "$verb" != version ]; then
        # approve and deny share one text: its first two lines name both
        grep -qE "^(Usage:| ) +deployq $verb( |$)" <<<"$(head -n2 <<<"$out")" || fail "$verb --help: $out"
    fi
    assert_eq "$("$DEPLOYQ" help "$verb")" "$out" "help $verb"
done
"$VALIDATOR" --help | grep -q '^Usage: deployq-validator' || fail "validator --help"

set +e
# An unknown verb: one line that says so and where the verbs are, exit 2.
"$DEPLOYQ" frobnicate >"$T/out" 2>"$T/err"; rc=$?
assert_eq "$rc" 2 "unknown verb exit"
assert_eq "$(cat "$T/err")" "deployq: unknown verb 'frobnicate'; \`deployq --help\` lists the verbs" "unknown verb message"
[ ! -s "$T/out" ] || fail "unknown verb printed on stdout"
"$DEPLOYQ" help frobnicate 2>"$T/err"; assert_eq "$?" 2 "help of an unknown verb exit"
assert_eq "$(wc -l <"$T/err")" 1 "help of an unknown verb: one line"

# The shared options: a verb whose help lists them takes them (parsed before --help),
# every other verb refuses them.
printf 'kafka:\n  bootstrap.servers: x\nservices:\n  api:\n    environments:\n      staging: {}\n' >"$T/good.yaml"
for verb in $table; do
    case $verb in help | version) continue ;; esac
    usage=$("$DEPLOYQ" "$verb" --help)
    want=2; grep -q -- '--config FILE' <<<"$usage" && want=0
    "$DEPLOYQ" "$verb" --config "$T/good.yaml" --help >/dev/null 2>&1
    assert_eq "$?" "$want" "$verb --config FILE --help"
    want=2; grep -q -- '--brokers LIST' <<<"$usage" && want=0
    "$DEPLOYQ" "$verb" --brokers 127.0.0.1:1 --redis-url redis://127.0.0.1:1 -X client.id=t \
        --log-level warn --help >/dev/null 2>&1
    assert_eq "$?" "$want" "$verb --brokers LIST --redis-url URL -X --log-level --help"
done
"$DEPLOYQ" check -q --config "$T/good.yaml"; assert_eq "$?" 0 "check --config"
"$DEPLOYQ" status --log-level loud 2>"$T/err"; assert_eq "$?" 2 "a bad --log-level"
assert_eq "$(cat "$T/err")" "deployq: status: --log-level loud: expected debug, info, warn or error" "bad --log-level message"

# deployq broker: the number of brokers is --count; --brokers N still works, with a note.
"$DEPLOYQ" broker --count 2 --address-file "$T/count.addr" >"$T/count.out" 2>"$T/count.log" &
pid=$!; PIDS+=("$pid")
wait_for 10 test -s "$T/count.addr" || fail "broker --count 2 did not start: $(cat "$T/count.log")"
assert_eq "$(tr ',' '\n' <"$T/count.addr" | grep -c '^127\.0\.0\.1:[0-9][0-9]*$')" 2 "broker --count 2: two brokers"
kill -TERM "$pid"; wait "$pid"; assert_eq "$?" 0 "broker --count 2 stops cleanly"
"$DEPLOYQ" broker --brokers 2 --address-file "$T/old.addr" >/dev/null 2>"$T/old.log" &
pid=$!; PIDS+=("$pid")
wait_for 10 test -s "$T/old.addr" || fail "broker --brokers 2 did not start: $(cat "$T/old.log")"
assert_eq "$(tr ',' '\n' <"$T/old.addr" | wc -l)" 2 "broker --brokers 2 (deprecated): two brokers"
grep -q '^deployq: broker: --brokers N is deprecated.*use --count 2$' "$T/old.log" || fail "no deprecation note: $(cat "$T/old.log")"
kill -TERM "$pid"; wait "$pid"
"$DEPLOYQ" broker --brokers 127.0.0.1:9092 2>"$T/err"; assert_eq "$?" 2 "broker --brokers LIST"
grep -q 'is --count N' <<<"$(head -n1 "$T/err")" || fail "broker --brokers LIST message: $(head -n1 "$T/err")"
"$DEPLOYQ" broker --count 6 2>"$T/err"; assert_eq "$?" 2 "broker --count 6"
assert_eq "$(head -n1 "$T/err")" "deployq: broker: --count must be 1..5" "broker --count 6 message"

"$DEPLOYQ" submit --service api 2>"$T/err"; rc=$?
assert_eq "$rc" 2 "missing options exit"
assert_eq "$(head -n1 "$T/err")" "deployq: submit: --service, --env and --version are required" "usage reason"
"$DEPLOYQ" submit --bogus 2>/dev/null; assert_eq "$?" 2 "bad option exit"
"$DEPLOYQ" submit -s api -e staging -v v1 --strategy linear 2>"$T/err"; rc=$?
assert_eq "$rc" 2 "bad strategy exit"
assert_eq "$(head -n1 "$T/err")" "deployq: submit: --strategy must be rolling, blue-green or canary" "bad strategy message"

"$DEPLOYQ" keygen --out "$T/k.key" --id k1 >"$T/keygen.out"; assert_eq "$?" 0 "keygen"
grep -q '^- id: k1$' "$T/keygen.out" || fail "keygen output"
assert_eq "$(stat -c %a "$T/k.key")" 600 "private key mode"
"$DEPLOYQ" keygen --out "$T/k.key" 2>"$T/err"; assert_eq "$?" 1 "keygen refuses to overwrite"

# Unreachable broker: exit 1, one line, within the timeout (+ slack).
start=$SECONDS
"$DEPLOYQ" submit --key "$T/k.key" --brokers 127.0.0.1:1 --timeout 3 \
    -s api -e staging -v v1 >"$T/out" 2>"$T/err"; rc=$?
took=$((SECONDS - start))
assert_eq "$rc" 1 "unreachable broker exit"
assert_eq "$(wc -l <"$T/err")" 1 "error lines"
grep -q '^deployq: submit: .*unreachable' "$T/err" || fail "unreachable message: $(cat "$T/err")"
[ "$took" -le 8 ] || fail "took $took s with --timeout 3"
[ ! -s "$T/out" ] || fail "printed a deployment id although nothing was accepted"

# No key anywhere.
env -u DEPLOYQ_SIGNING_KEY "$DEPLOYQ" submit --brokers 127.0.0.1:1 -s api -e staging -v v1 2>"$T/err"; rc=$?
assert_eq "$rc" 1 "no key exit"
grep -q 'no signing key' "$T/err" || fail "no key message: $(cat "$T/err")"

# A configuration error names the file and line.
printf 'kafka:\n  bootstrap.servers: x\nservices:\n  api:\n    environments:\n      prod:\n        approval: maybe\n' >"$T/bad.yaml"
"$DEPLOYQ" submit --config "$T/bad.yaml" --key "$T/k.key" -s api -e prod -v v1 2>"$T/err"; rc=$?
assert_eq "$rc" 1 "bad config exit"
grep -qE "^deployq: submit: .*bad\.yaml:7: " "$T/err" || fail "config error format: $(cat "$T/err")"
"$VALIDATOR" --config "$T/bad.yaml" 2>"$T/err"; rc=$?
assert_eq "$rc" 1 "validator bad config exit"
grep -q 'bad.yaml:7: ' "$T/err" || fail "validator config error: $(cat "$T/err")"
set -e
echo "ok"
