#!/usr/bin/env bash
# Hostile configuration files (hardening finding 3). A YAML alias bomb (the "billion
# laughs": nine levels of ten aliases, 10^9 nodes from a few hundred bytes) is refused with
# one line naming the alias, under a memory limit and without one. Before, libfyaml
# expanded it to gigabytes and, under a limit, returned no document and no error, which the
# loader read as an empty file: `check` said ok with 0 services, and a registry whose file
# set registry.http.token started on the default port without a token. Aliases within the
# limits still work. No broker, no Redis.
. "$(dirname "$0")/helpers.sh"

REGISTRY="$DEPLOYQ_BUILD/workers/registry/deployq-registry"
LIMIT=$((512 * 1024 * 1024)) # address space, for prlimit --as
EXPECTED='alias \*e: expanding aliases would make more than 250000 nodes'

# bomb SECTION: the bomb under SECTION (a section later workers own, read by nobody here).
bomb() {
    printf '%s:\n' "$1"
    printf '  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n'
    local prev=a level
    for level in b c d e f g h i; do
        printf '  %s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n' "$level" "$level" \
            "$prev" "$prev" "$prev" "$prev" "$prev" "$prev" "$prev" "$prev" "$prev" "$prev"
        prev=$level
    done
}
{
    printf 'kafka:\n  bootstrap.servers: 127.0.0.1:1\n'
    bomb providers
} >"$T/bomb.yaml"
# Lines 1-2 kafka, 3 providers, 4 a, ... 9 f: the walk passes the limit on an *e of f.
WHERE="$T/bomb.yaml:9: "

# A registry configured with a token: it must refuse to start rather than start without it.
# The broker comes from the environment, as in a container, so that only the file can stop it.
HTTP_PORT=$(free_port)
{
    printf 'kafka:\n  bootstrap.servers: 127.0.0.1:1\n'
    printf 'registry:\n  dir: %s/registry\n  http:\n' "$T"
    printf '    listen: 127.0.0.1:%s\n    token: ${DQ_TEST_REGISTRY_TOKEN}\n' "$HTTP_PORT"
    bomb providers
} >"$T/bomb-registry.yaml"
export DQ_TEST_REGISTRY_TOKEN=test-registry-token-0007

# check_refused LABEL [prlimit --as=N]: `deployq check` exits 1 with exactly one line.
check_refused() {
    local label=$1 rc=0
    shift
    timeout 30 "$@" "$DEPLOYQ" check --config "$T/bomb.yaml" >"$T/out" 2>"$T/err" || rc=$?
    assert_eq "$rc" 1 "check of the bomb $label: exit status"
    assert_eq "$(wc -l <"$T/err")" 1 "check of the bomb $label: error lines"
    grep -qx "deployq: check: $WHERE$EXPECTED" "$T/err" ||
        fail "check of the bomb $label: $(cat "$T/err")"
    [ ! -s "$T/out" ] || fail "check of the bomb $label printed: $(cat "$T/out")"
}

# registry_refused LABEL [prlimit --as=N]: the registry exits 1 before it listens.
registry_refused() {
    local label=$1 rc=0
    shift
    DEPLOYQ_BROKERS=127.0.0.1:1 timeout 30 "$@" "$REGISTRY" --config "$T/bomb-registry.yaml" \
        >"$T/registry.out" 2>"$T/registry.log" || rc=$?
    assert_eq "$rc" 1 "registry with the bomb $label: exit status"
    grep -q "bomb-registry.yaml:14: $EXPECTED" "$T/registry.log" ||
        fail "registry with the bomb $label: no alias error"
    ! grep -q '"msg":"http' "$T/registry.log" || fail "registry with the bomb $label: started HTTP"
}

# Under a memory limit first: there, a loader that expands the bomb fails fast instead of
# taking the machine's memory. An ASan build reserves terabytes of address space and cannot
# run under --as at all.
if prlimit --as="$LIMIT" "$DEPLOYQ" --help >/dev/null 2>&1; then
    check_refused "under --as=512MiB" prlimit --as="$LIMIT"
    registry_refused "under --as=512MiB" prlimit --as="$LIMIT"
else
    log "the binaries do not start under prlimit --as (an ASan build): memory-limited runs skipped"
fi
check_refused "without a limit"
registry_refused "without a limit"

# Aliases and merge keys within the limits still work.
cat >"$T/aliases.yaml" <<'EOF'
kafka:
  bootstrap.servers: 127.0.0.1:1
providers:
  defaults: &defaults {approval: required, promotion_needs: succeeded}
services:
  api:
    environments:
      staging: &staging {}
      production:
        <<: *defaults
        requires: staging
  web:
    environments:
      staging: *staging
      production: *defaults
EOF
out=$("$DEPLOYQ" check --config "$T/aliases.yaml") || fail "check of a file with aliases failed"
grep -qx "ok: 2 service(s), 4 environment(s) checked" <<<"$out" || fail "aliases: $out"
echo "ok"
