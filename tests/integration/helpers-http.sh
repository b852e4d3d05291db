# helpers-http.sh - what the registry HTTP API and dashboard tests (031x) share, sourced
# after helpers.sh and helpers-registry.sh: a free port for the API, the registry.http
# section of the configuration, and curl wrappers.

HTTP_PORT=$(free_port)
HTTP="http://127.0.0.1:$HTTP_PORT"
HTTP_TOKEN=""

# http_yaml [TOKEN_ENV_NAME]: the registry.http section, for write_config. With a name,
# the token is read from that environment variable (${NAME}, a secret).
http_yaml() {
    printf 'registry:\n  http:\n    listen: "127.0.0.1:%s"\n' "$HTTP_PORT"
    [ -z "${1:-}" ] || printf '    token: "${%s}"\n' "$1"
}

# wait_api_up: the API answers /healthz within 20 s, or the test fails.
wait_api_up() { wait_for 20 curl -fs -o /dev/null "$HTTP/healthz" || fail "the API did not come up on $HTTP"; }

# api PATH: the body of a GET (fails the test on a transport error or a status >= 400).
api() {
    local auth=()
    [ -z "$HTTP_TOKEN" ] || auth=(-H "Authorization: Bearer $HTTP_TOKEN")
    curl -fsS --max-time 30 "${auth[@]}" "$HTTP$1" || fail "GET $1 failed"
}
# status [curl args...] PATH: only the HTTP status code.
status() {
    local path=${*: -1}
    curl -s -o /dev/null -w '%{http_code}' --max-time 30 "${@:1:$#-1}" "$HTTP$path"
}
http_events() { curl -fsS --max-time 5 "$HTTP/healthz" 2>/dev/null | jq -r '.events // 0'; }
http_has() { [ "$(http_events)" -ge "$1" ]; }
