#!/usr/bin/env bash
# The CLI teaches and fails well: --help on every verb, usage errors exit 2 with a
# reason, an unreachable broker is a one-line error within the timeout, config errors
# say file:line.
. "$(dirname "$0")/helpers.sh"

"$DEPLOYQ" --help | grep -q '^Usage: deployq <verb>' || fail "deployq --help"
for verb in submit keygen up broker; do
    out=$("$DEPLOYQ" "$verb" --help) || fail "$verb --help exit status"
    grep -q "^Usage: deployq $verb" <<<"$out" || fail "$verb --help: $out"
    assert_eq "$("$DEPLOYQ" help "$verb" | head -n1)" "$(head -n1 <<<"$out")" "help $verb"
done
"$VALIDATOR" --help | grep -q '^Usage: deployq-validator' || fail "validator --help"

set +e
"$DEPLOYQ" frobnicate 2>"$T/err"; rc=$?
assert_eq "$rc" 2 "unknown verb exit"
grep -q "unknown verb 'frobnicate'" "$T/err" || fail "unknown verb message"
"$DEPLOYQ" submit --service api 2>"$T/err"; rc=$?
assert_eq "$rc" 2 "missing options exit"
assert_eq "$(head -n1 "$T/err")" "deployq: submit: --service, --env and --version are required" "usage reason"
"$DEPLOYQ" submit --bogus 2>/dev/null; assert_eq "$?" 2 "bad option exit"
"$DEPLOYQ" submit -s api -e staging -v v1 --strategy canary 2>"$T/err"; rc=$?
assert_eq "$rc" 2 "bad strategy exit"

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
