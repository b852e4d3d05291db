#!/usr/bin/env bash
# 0312: the registry's HTTP API against what an outside probe of `deployq up` tried
# (docs/reliability.md, "Security regression list"), on a live deployq-registry with its
# default limits:
#   - an empty ${VAR} token is a start error, not "no authentication";
#   - the GET that corrupted the heap is a 400, and the registry lives on;
#   - error bodies stay valid UTF-8 (and JSON) whatever bytes the path carries;
#   - 70 slow senders (slowloris) and then 64 event-stream clients do not keep /healthz
#     or the API from answering, a slow sender is cut by the request timeout, and the
#     stream slots are free within about a second of their clients leaving;
#   - the registry's directories are 0700 and its segments 0600;
#   - the readers (status, history, report, replay, verify) load a configuration whose
#     provider token is an unset ${VAR} (issue 10 item 8).
# Loopback only; every client loop is bounded in count and time.
source "$(dirname "$0")/helpers.sh"
source "$(dirname "$0")/helpers-registry.sh"
source "$(dirname "$0")/helpers-http.sh"

start_redis
start_broker

# ---- an empty token: refused at start, with the reason, before anything is served
write_config "$(http_yaml DQ_TEST_EMPTY_TOKEN)"
set +e
DQ_TEST_EMPTY_TOKEN="" timeout 30 "$REGISTRY" --config "$CONFIG" --dir "$REG_DIR" >"$T/empty-token.log" 2>&1
rc=$?
DQ_TEST_EMPTY_TOKEN=" " timeout 30 "$REGISTRY" --config "$CONFIG" --dir "$REG_DIR" >"$T/blank-token.log" 2>&1
rc_blank=$?
set -e
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "an empty token: exit $rc, expected a start error"
[ "$rc_blank" -ne 0 ] && [ "$rc_blank" -ne 124 ] || fail "a blank token: exit $rc_blank, expected a start error"
grep -q "registry.http.token is empty or blank" "$T/empty-token.log" || fail "no reason for the empty token"
if grep -q "bearer token required" "$T/empty-token.log"; then fail "logged 'bearer token required' without a token"; fi
assert_eq "$(status /healthz)" 000 "nothing listens after a refused start"

# ---- the live registry, defaults but the port (no token, as `deployq up` runs it)
sed -i '/^    token: /d' "$CONFIG"
start_registry api
wait_api_up
echo 'api/staging	{"schema":"deployq.event/v1","id":"33333333-3333-4333-8333-000000000001","type":"deploy.validated","deployment_id":"44444444-4444-4444-8444-000000000001","service":"api","environment":"staging","version":"v1","at":"2026-01-01T10:00:00Z","actor":"test@host/1","fence":0,"data":{"key_id":"ci-test","issued_at":"2026-01-01T09:59:00Z","strategy":"rolling","source":{"topic":"deployq.requests","partition":0,"offset":0}}}' >"$T/history"
produce_events "$T/history" || fail "the event was not acknowledged"
wait_for 60 http_has 1 || fail "the registry folded $(http_events) of 1 event"

assert_eq "$(status '/api/series?since=9223372036854775807ms&until=9999-12-31T23:59:59Z&buckets=1')" 400 "the heap-corrupting GET"
assert_eq "$(status '/api/series?since=36600d&until=9999-12-31T23:59:59Z&buckets=1')" 200 "the widest window allowed"
assert_eq "$(api '/api/series?since=36600d&until=9999-12-31T23:59:59Z&buckets=1' | jq '.buckets[0].deploys')" 1 "the widest window counts the deploy"
alive "$REGISTRY_PID" || fail "the registry died"
assert_eq "$(status /healthz)" 200 "/healthz after the hostile GETs"

for path in '/api/deployments/%FF%FEab' '/api/%C3' '/%ED%A0%80x'; do
    curl -s --max-time 10 -o "$T/body" "$HTTP$path"
    "$PY" -c 'import json,sys; json.loads(open(sys.argv[1],"rb").read().decode("utf-8","strict"))' "$T/body" ||
        fail "the error body of $path is not UTF-8 JSON: $(od -c "$T/body" | head -n3)"
done

# ---- slow clients: a Python client on loopback, bounded in count and time
cat >"$T/slow.py" <<'PY'
import socket, sys, time, urllib.request, json

port, mode, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
base = "http://127.0.0.1:%d" % port

def healthz_ms():
    t0 = time.monotonic()
    with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
        assert r.status == 200, r.status
        json.loads(r.read())
    return (time.monotonic() - t0) * 1000

socks = []
if mode == "slowloris":
    # n connections from 127.0.0.2..9, each a request line and a header that never ends
    for i in range(n):
        s = socket.socket()
        s.bind(("127.0.0.%d" % (2 + i % 8), 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /api/targets HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(s)
    worst = max(healthz_ms() for _ in range(10))
    # keep trickling on one of them: never idle, but it must still be cut
    s = socket.socket()
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /api/targets HTTP/1.1\r\nX-Slow: ")
    s.settimeout(0.2)
    t0, cut = time.monotonic(), None
    while time.monotonic() - t0 < 30 and cut is None:
        try:
            s.sendall(b"x")
            if s.recv(1) == b"":
                cut = time.monotonic() - t0
        except socket.timeout:
            pass
        except OSError:
            cut = time.monotonic() - t0
    print(json.dumps({"healthz_worst_ms": round(worst, 1), "trickler_cut_s": cut}))
elif mode == "streams":
    refused = 0
    for i in range(n):
        s = socket.socket()
        s.bind(("127.0.0.%d" % (2 + i % 8), 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        head = s.recv(256)
        if b" 503 " in head.split(b"\r\n")[0]:
            refused += 1
        socks.append(s)
    worst = max(healthz_ms() for _ in range(10))
    with urllib.request.urlopen(base + "/api/targets", timeout=5) as r:
        assert r.status == 200
    for s in socks:
        s.close()
    t0, freed = time.monotonic(), None
    while time.monotonic() - t0 < 30 and freed is None:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            if b"\ndeployq_registry_stream_clients{worker=\"registry\"} 0\n" in r.read():
                freed = time.monotonic() - t0
        time.sleep(0.05)
    print(json.dumps({"healthz_worst_ms": round(worst, 1), "refused": refused,
                      "freed_s": freed}))
PY

out=$(timeout 120 "$PY" "$T/slow.py" "$HTTP_PORT" slowloris 70) || fail "slowloris client: $out"
log "70 slow senders: $out"
assert_eq "$(jq -r '.healthz_worst_ms < 2000' <<<"$out")" true "/healthz answered past 70 slow senders"
cut=$(jq -r '.trickler_cut_s' <<<"$out")
[ "$cut" != null ] || fail "a connection trickling its header was never cut"
assert_eq "$(jq -r '.trickler_cut_s < 15' <<<"$out")" true "the trickler cut by the request timeout (10 s)"

out=$(timeout 120 "$PY" "$T/slow.py" "$HTTP_PORT" streams 64) || fail "stream client: $out"
log "64 event-stream clients: $out"
assert_eq "$(jq -r '.healthz_worst_ms < 2000' <<<"$out")" true "/healthz answered past 64 stream clients"
assert_eq "$(jq -r '.refused' <<<"$out")" 32 "streams beyond half the slots refused with 503"
freed=$(jq -r '.freed_s' <<<"$out")
[ "$freed" != null ] || fail "the stream slots were not freed after their clients left"
assert_eq "$(jq -r '.freed_s < 3' <<<"$out")" true "stream slots freed within a heartbeat"
alive "$REGISTRY_PID" || fail "the registry died"

# ---- reading never needs deploy secrets: the readers load the stack's file without the
#      provider tokens (a ${VAR} outside registry and keys need not be set); check, which
#      uses everything, still refuses it
sed "s|^registry:|registry:\n  dir: \"$REG_DIR\"|" "$CONFIG" >"$T/reader.yaml"
cat >>"$T/reader.yaml" <<'YAML'
providers:
  rw:
    type: railway
    token: ${DQ_TEST_UNSET_RAILWAY_TOKEN}
    service_id: svc
    environment_id: env
YAML
unset DQ_TEST_UNSET_RAILWAY_TOKEN
for verb in status history report replay verify; do
    "$DEPLOYQ" "$verb" --config "$T/reader.yaml" >"$T/$verb.out" 2>"$T/$verb.err" ||
        fail "deployq $verb needed a deploy secret: $(cat "$T/$verb.err")"
done
grep -q "api" "$T/status.out" || fail "status did not read the registry: $(cat "$T/status.out")"
set +e
"$DEPLOYQ" check --config "$T/reader.yaml" >/dev/null 2>"$T/check.err"; rc=$?
set -e
[ "$rc" -ne 0 ] || fail "check passed a configuration with an unset provider token"
grep -q 'DQ_TEST_UNSET_RAILWAY_TOKEN} is not set' "$T/check.err" || fail "check: $(cat "$T/check.err")"

# ---- the registry's files are the owner's
assert_eq "$(stat -c %a "$REG_DIR")" 700 "registry directory mode"
for d in "$REG_DIR"/p*; do assert_eq "$(stat -c %a "$d")" 700 "$(basename "$d") mode"; done
for f in "$REG_DIR"/p*/*.seg; do assert_eq "$(stat -c %a "$f")" 600 "$(basename "$f") mode"; done
log "ok"
