#!/usr/bin/env bash
# tests/fuzz/seeds.sh - (re)make the seed corpora checked in under tests/fuzz/corpus/.
#
# Only needed when the inputs change (schemas corpus, example configuration, record
# layout); run.sh uses the checked-in files and never writes to them.
#   request/  every request document of tests/schema/corpus/request signed with the fuzz
#             key (out/seedgen), plus the signed wrappers of tests/schema/corpus/signed
#   event/    the envelope and per-type event documents of tests/schema/corpus
#   config/   docs/examples/deployq.yaml, tests/unit/data/*.yaml, the ```yaml blocks of
#             docs/configuration.md and docs/providers.md, and a few of our own
#   reglog/   registry logs written by the real writer (out/seedgen), in fuzz_reglog's
#             input layout
#   httpapi/  one request to every endpoint of the registry's HTTP API with good and bad
#             parameters, in fuzz_httpapi's input layout (a flag byte, then METHOD, PATH,
#             QUERY and header lines separated by '\n', or raw bytes)
# Files named regress-* are inputs that once found a bug; this script keeps them.
#
#   tests/fuzz/seeds.sh [HARNESS...]   remake the corpora of these harnesses (default all:
#                                      request event config reglog httpapi)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
corpus=$here/corpus
schema_corpus=$root/tests/schema/corpus
all=(request event config reglog httpapi)
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
    case " ${all[*]} " in
    *" $t "*) ;;
    *) echo "tests/fuzz/seeds.sh: unknown harness '$t' (${all[*]})" >&2; exit 2 ;;
    esac
done
want() {
    case " ${targets[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac
}

"$here/build.sh"
# Everything is remade but the regression inputs (regress-*): those are findings of
# earlier runs, kept so every run replays them first.
for t in "${targets[@]}"; do
    [ ! -d "$corpus/$t" ] || find "$corpus/$t" -type f ! -name 'regress-*' -delete
    mkdir -p "$corpus/$t"
done

if want request; then
    "$here/out/seedgen" request "$corpus/request" "$schema_corpus"/request/*.json
    for f in "$schema_corpus"/signed/*.json; do
        cp "$f" "$corpus/request/wrapper-$(basename "$f")"
    done
fi

if want event; then
    for f in "$schema_corpus"/envelope/*.json; do
        cp "$f" "$corpus/event/envelope-$(basename "$f")"
    done
    for d in "$schema_corpus"/events/*/; do
        t=$(basename "$d")
        for f in "$d"*.json; do
            cp "$f" "$corpus/event/$t-$(basename "$f")"
        done
    done
fi

if want config; then
    cp "$root/docs/examples/deployq.yaml" "$corpus/config/example-deployq.yaml"
    for f in "$root"/tests/unit/data/*.yaml; do
        [ -e "$f" ] && cp "$f" "$corpus/config/unit-$(basename "$f")"
    done
    for doc in configuration providers; do
        awk -v out="$corpus/config/doc-$doc-" '
            /^```yaml/ { n++; file = out n ".yaml"; inblock = 1; next }
            /^```/ { inblock = 0; next }
            inblock { print > file }' "$root/docs/$doc.md"
    done
    cat >"$corpus/config/secret-reference.yaml" <<'EOF'
redis:
  url: redis://:${FUZZ_SECRET}@127.0.0.1:6379/0
kafka:
  sasl.password: "${FUZZ_SECRET}"
  literal: $${NOT_A_REFERENCE}
EOF
    cat >"$corpus/config/missing-variable.yaml" <<'EOF'
redis:
  url: redis://:${FUZZ_NOT_SET}@127.0.0.1:6379/0
EOF
    cat >"$corpus/config/anchors-and-flow.yaml" <<'EOF'
base: &env {requires: staging, approval: required}
services:
  api:
    environments:
      staging: {}
      production: *env
keys: [{id: a, public_key: "rQKhOKJbc80BgVmbxIJeq4NjbAQOZmp4uABJ6k6Q+/M="}]
EOF
    printf 'kafka:\n  a: 1\n---\nkafka:\n  b: 2\n' >"$corpus/config/two-documents.yaml"
    : >"$corpus/config/empty.yaml"
fi

if want reglog; then
    tmp=$("$here/out/seedgen" reglog "$corpus/reglog")
    rm -rf "$tmp"
fi

if want httpapi; then
    # req NAME FLAGS FIELD...: FLAGS is the flag byte in hex (fuzz_httpapi.c: 01 the token
    # server, 02 with its token, 04 raw, 08 HTTP/1.0, 10 no Host, 20 path from the table of
    # endpoints); the fields are METHOD, PATH, QUERY and header lines, joined with '\n'.
    # The deployments are those of the harness's history.
    req() {
        local name=$1 flags=$2 IFS=$'\n'
        shift 2
        { printf "\\x$flags"; printf '%s' "$*"; } >"$corpus/httpapi/$name"
    }
    d1=11111111-1111-4111-8111-111111111111
    d2=22222222-2222-4222-8222-222222222222
    d4=44444444-4444-4444-8444-444444444444
    req healthz 00 GET /healthz
    req healthz-token-server 01 GET /healthz
    req dashboard 00 GET /
    req dashboard-index 00 GET /index.html
    req dashboard-token-server 01 GET /
    req targets 00 GET /api/targets
    req targets-head 00 HEAD /api/targets
    req targets-filtered 00 GET /api/targets 'service=api&env=production'
    req targets-environment 03 GET /api/targets 'environment=staging'
    req targets-no-token 01 GET /api/targets
    req targets-wrong-token 01 GET /api/targets '' 'Authorization: Bearer wrong'
    req targets-token-lower-case 01 GET /api/targets '' 'authorization: bearer  x'
    req targets-http10 08 GET /api/targets
    req targets-no-host 10 GET /api/targets
    req deployment-verified 00 GET "/api/deployments/$d1"
    req deployment-rolled-back 03 GET "/api/deployments/$d2"
    req deployment-awaiting 00 GET "/api/deployments/$d4"
    req deployment-unknown 00 GET /api/deployments/00000000-0000-4000-8000-000000000000
    req deployment-empty 00 GET /api/deployments/
    req deployment-two-segments 00 GET "/api/deployments/$d1/x"
    req deployment-not-utf8 00 GET $'/api/deployments/\xe2\x82\xc0\xaf%ff'
    req rollbacks 00 GET /api/rollbacks
    req rollbacks-limit 03 GET /api/rollbacks 'limit=1&service=api&env=production'
    req rollbacks-limit-0 00 GET /api/rollbacks 'limit=0'
    req rollbacks-limit-huge 00 GET /api/rollbacks 'limit=9223372036854775808'
    req events 00 GET /api/events
    req events-page 00 GET /api/events 'limit=3&order=desc'
    req events-cursor 00 GET /api/events 'limit=2&cursor=1767261601000.0.1'
    req events-cursor-desc 03 GET /api/events 'order=desc&cursor=1767261602000.1.0&limit=4'
    req events-cursor-bad 00 GET /api/events 'cursor=-9223372036854775808.2147483648.-1'
    req events-filters 00 GET /api/events \
        "type=deploy.started&service=api&env=staging&deployment=$d1"
    req events-window 00 GET /api/events 'since=2026-01-01T10:00:02Z&until=2026-01-01T10:01:00.000Z'
    req events-since-duration 00 GET /api/events 'since=36500d&order=asc'
    req events-order-bad 00 GET /api/events 'order=sideways'
    req events-limit-1001 00 GET /api/events 'limit=1001'
    req events-nul-in-value 00 GET /api/events 'service=a%00pi&env=%C0%AF'
    req report 00 GET /api/report
    req report-window 03 GET /api/report \
        'service=api&env=production&since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z'
    req report-since-duration 00 GET /api/report 'since=30d'
    req report-until-before-since 00 GET /api/report \
        'since=2026-03-01T00:00:00Z&until=2026-01-01T00:00:00Z'
    req series 00 GET /api/series
    req series-buckets 00 GET /api/series 'buckets=12'
    req series-week 03 GET /api/series 'buckets=200&since=7d'
    req series-buckets-0 00 GET /api/series 'buckets=0'
    req series-until-only 00 GET /api/series 'until=1970-01-01T00:00:00Z&buckets=1'
    req series-far-past 00 GET /api/series \
        'since=0000-01-01T00:00:00Z&until=9999-12-31T23:59:59.999Z'
    # hostile values, one parameter at a time
    req events-since-huge-duration 00 GET /api/events 'since=9223372036854775807ms'
    req events-until-negative 00 GET /api/events 'until=-1h&limit=-1'
    req report-until-overflowing-days 00 GET /api/report 'until=106751991167301d'
    req report-since-future 03 GET /api/report 'since=9999-12-31T23:59:59.999Z'
    req series-since-huge-seconds 00 GET /api/series 'since=9223372036854775s&buckets=200'
    req series-since-before-1970 00 GET /api/series 'since=1969-12-31T23:59:59.999Z&buckets=1'
    req rollbacks-limit-not-a-number 00 GET /api/rollbacks 'limit=1e3'
    req stream-after-negative 00 GET /api/stream 'after=-1' 'Last-Event-ID: 9223372036854775808'
    # ENDPOINT (20): the path byte 'F' + i is endpoint i of fuzz_httpapi.c's table, so one
    # byte moves a query to another endpoint
    req endpoint-events-by-index 20 GET N 'since=24h&until=9999-12-31T23:59:59Z&limit=5'
    req endpoint-series-by-index 20 GET P 'buckets=7&since=2026-01-01T00:00:00Z'
    req endpoint-report-by-index 23 GET O 'service=web&env=preview&until=30d'
    req endpoint-stream-by-index 23 GET Q 'after=23'
    # the heap corruption of h_series fixed in 1d1a899 (reported to the harness's author
    # before it existed; the harness reproduces it on the code before that commit)
    req regress-series-since-overflow 00 GET /api/series \
        'since=9223372036854775807ms&until=9999-12-31T23:59:59Z&buckets=1'
    req stream 00 GET /api/stream
    req stream-after 00 GET /api/stream 'after=2'
    req stream-after-overrun 03 GET /api/stream 'after=1'
    req stream-last-event-id 03 GET /api/stream '' 'Last-Event-ID: 20'
    req stream-after-huge 00 GET /api/stream 'after=18446744073709551615'
    req metrics 00 GET /metrics
    req metrics-token 03 GET /metrics
    req metrics-no-token 01 GET /metrics
    req unknown-endpoint 00 GET /api/nope
    req post 00 POST /api/targets
    req delete-token-server 01 DELETE /api/targets
    req options 00 OPTIONS '*'
    req lower-case-method 00 get /healthz
    req expect-continue 00 POST /api/events '' 'Content-Length: 5' 'Expect: 100-continue'
    req chunked-body 00 GET /api/targets '' 'Transfer-Encoding: chunked'
    req keep-alive-http10 08 GET /api/series 'buckets=3' 'Connection: keep-alive'
    req upgrade 00 GET /api/stream '' 'Connection: Upgrade' 'Upgrade: websocket'
    printf '\x04GET /api/targets HTTP/1.1\r\nHost: x\r\n\r\n' >"$corpus/httpapi/raw-targets"
    printf '%b' '\x05GET /api/events?limit=1 HTTP/1.1\r\nHost: x\r\n' \
        'Authorization: Bearer x\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n' \
        >"$corpus/httpapi/raw-pipelined"
    printf '\x04GET /healthz HTTP/1.0\n\n' >"$corpus/httpapi/raw-bare-newlines"
    printf '\x04GET /api/targets HTTP/1.1\r\nHost: x\r\nX: a\r\n  folded\r\n\r\n' \
        >"$corpus/httpapi/raw-folded-header"
    printf '\x04GET /api/targets HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab' \
        >"$corpus/httpapi/raw-short-body"
    printf '\x04GET /api/report?since=24h HTTP/1.1\r\nHost: x\r' >"$corpus/httpapi/raw-truncated"
    printf '\x04\x00\xff\r\n\r\n' >"$corpus/httpapi/raw-garbage"
    # libmicrohttpd 0.9.75 writes the head of its 400 "Request malformed" twice when
    # Content-Length is not a number (fuzz_httpapi.c, skip_repeated_head)
    printf '\x04GET /api/targets HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n' \
        >"$corpus/httpapi/regress-libmicrohttpd-head-twice"
fi

for t in "${targets[@]}"; do
    printf '%s: %s files, %s bytes\n' "$t" "$(find "$corpus/$t" -type f | wc -l)" \
        "$(cat "$corpus/$t"/* | wc -c)"
done
