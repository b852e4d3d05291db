#!/usr/bin/env bash
# Routers that take weights: a real HAProxy (/usr/sbin/haproxy, scripts/install-deps.sh)
# in front of two tests/fakes/health.py instances answering "blue" and "green", driven
# through its runtime API (a stats socket, level admin) by deployq's own client
# (bluegreen.h, through the test driver deployq-bgweights). Weights set and read back move
# real traffic: green's share of 1000 requests through the frontend is its weight within
# 5 points, at 5, 25, 50 and 100; a switch is weights 100/0. A weight changed by someone
# else between the set and the read-back is refused; an answer HAProxy gives as an error
# (no such server) is one line; HAProxy stopped is a one-line error naming the socket,
# within the timeout, not a hang. Needs no broker and no Redis.
. "$(dirname "$0")/helpers.sh"

HAPROXY=/usr/sbin/haproxy
BGW="$DEPLOYQ_BUILD/tests/integration/deployq-bgweights"
[ -x "$HAPROXY" ] || fail "$HAPROXY is missing (scripts/install-deps.sh installs haproxy)"

start_fake BLUE health --script '{"body": "blue"}'
start_fake GREEN health --script '{"body": "green"}'
FRONT=$(free_port)
ADMIN_PORT=$(free_port)
SOCK="$T/admin.sock"
"$PY" "$DEPLOYQ_SOURCE/tests/fakes/haproxy.py" config --socket "$SOCK" --admin-port "$ADMIN_PORT" \
    --front "$FRONT" --blue "$FAKE_PORT_BLUE" --green "$FAKE_PORT_GREEN" >"$T/haproxy.cfg"
"$HAPROXY" -db -f "$T/haproxy.cfg" >"$T/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
wait_for 10 test -S "$SOCK" || fail "haproxy did not start"

# A relay in front of the runtime API that plays "someone else": after each weight set
# on web_green it puts web_green back to 0, before deployq reads the weights back.
RELAY="$T/relay.sock"
"$PY" - "$SOCK" "$RELAY" "$DEPLOYQ_SOURCE/tests/fakes" >"$T/relay.log" 2>&1 <<'PY' &
import socket, sys
real, path = sys.argv[1], sys.argv[2]
sys.path.insert(0, sys.argv[3])
import haproxy
def ask(line):
    return haproxy.ask(real, line)
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(8)
while True:
    c, _ = srv.accept()
    line = b""
    while not line.endswith(b"\n"):
        b = c.recv(4096)
        if not b:
            break
        line += b
    ans = ask(line)
    if line.startswith(b"set server web/web_green "):
        ask(b"set server web/web_green weight 0\n")
    c.sendall(ans)
    c.close()
PY
PIDS+=("$!")
wait_for 10 test -S "$RELAY" || fail "the relay did not start"

router() { # router ENV SOCKET SERVER_GREEN (SOCKET: a path, or address HOST:PORT)
    printf '      %s:\n        blue_green:\n' "$1"
    printf '          colors:\n'
    printf '            blue: {providers: [{type: command, name: b, argv: ["true"]}]}\n'
    printf '            green: {providers: [{type: command, name: g, argv: ["true"]}]}\n'
    printf '          probe: {url: "http://127.0.0.1:1/{color}"}\n'
    case $2 in
    /*) printf '          router: {type: haproxy, name: edge, socket: "%s", backend: web,\n' "$2" ;;
    *) printf '          router: {type: haproxy, name: edge, address: "%s", backend: web,\n' "$2" ;;
    esac
    printf '                   servers: {blue: web_blue, green: %s}, timeout: 1s}\n' "$3"
}
CONFIG="$T/deployq.yaml"
{
    printf 'services:\n  web:\n    environments:\n'
    router production "$SOCK" web_green
    router raced "$RELAY" web_green
    router ghost "$SOCK" web_ghost
    router tcp "127.0.0.1:$ADMIN_PORT" web_green
} >"$CONFIG"

bgw() { "$BGW" "$CONFIG" web "$@"; }
# green_share N: the percentage of N requests through the frontend that green answered
green_share() {
    "$PY" - "$FRONT" "$1" <<'PY'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
green = 0
for _ in range(n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/", headers={"Connection": "close"})
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    if r.status != 200 or body not in ("blue", "green"):
        sys.exit("request answered %d %r" % (r.status, body))
    green += body == "green"
print(round(100.0 * green / n, 1))
PY
}
within() { "$PY" -c 'import sys; sys.exit(abs(float(sys.argv[1]) - float(sys.argv[2])) > 5)' "$1" "$2"; }

log "1. the weights HAProxy starts with, read through the runtime API"
assert_eq "$(bgw production read)" "blue=100 green=0" "initial weights"
assert_eq "$(bgw tcp read)" "blue=100 green=0" "initial weights, over TCP"
assert_eq "$(green_share 100)" "0.0" "green's share before any set"

log "2. set and read back, then 1000 requests: green's share is its weight within 5 points"
for g in 5 25 50 100; do
    bgw production set $((100 - g)) "$g" 2>"$T/err" || fail "set $((100 - g))/$g: $(cat "$T/err")"
    assert_eq "$(bgw tcp read)" "blue=$((100 - g)) green=$g" "weights after set $((100 - g))/$g"
    share=$(green_share 1000) || fail "requests at green $g: $share"
    log "green weight $g: green answered $share% of 1000"
    within "$share" "$g" || fail "green weight $g: green's share $share% is more than 5 points away"
done

log "3. a switch on a weighted router is weights 100/0 for the color"
bgw production switch blue 2>"$T/err" || fail "switch blue: $(cat "$T/err")"
assert_eq "$(bgw production read)" "blue=100 green=0" "weights after switch blue"
assert_eq "$(green_share 100)" "0.0" "green's share after switch blue"

log "4. the weight changed by someone else before the read-back: refused"
bgw raced set 5 95 2>"$T/err" && fail "a set whose read-back differs was accepted"
assert_eq "$(cat "$T/err")" "router edge said blue=5 green=0 after being told blue=5 green=95" "raced set"

log "5. HAProxy answers an error (no such server): one line"
bgw ghost set 5 95 2>"$T/err" && fail "a set on a server HAProxy does not have was accepted"
assert_eq "$(cat "$T/err")" "router edge: haproxy $SOCK: set server web/web_ghost weight 95: No such server." "ghost set"

log "6. HAProxy stopped: a one-line error naming the socket, within the timeout"
kill -TERM "$HAPROXY_PID"
wait "$HAPROXY_PID" 2>/dev/null || true
start=$SECONDS
bgw production set 50 50 2>"$T/err" && fail "a set with HAProxy stopped was accepted"
[ $((SECONDS - start)) -le 3 ] || fail "the set took $((SECONDS - start)) s with HAProxy stopped"
[ "$(wc -l <"$T/err")" = 1 ] || fail "not one line: $(cat "$T/err")"
grep -q "^router edge: haproxy $SOCK: connect: " "$T/err" || fail "the error does not name the socket: $(cat "$T/err")"
log "stopped: $(cat "$T/err")"
log "ok"
