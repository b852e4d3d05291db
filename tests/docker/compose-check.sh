#!/usr/bin/env bash
# compose-check.sh - docker/compose.yaml against the build, docker/deployq.yaml and the
# Compose Specification (compose_check.py), then the same checker on broken copies of
# the files, each of which it must refuse with the expected line: proof that the check
# can fail. No Docker needed.
#
# usage: compose-check.sh BUILD_DIR SOURCE_DIR
set -euo pipefail

readonly BUILD=$1 SOURCE=$2
readonly PY=/usr/bin/python3
readonly CHECK=$SOURCE/tests/docker/compose_check.py
pin() { awk -v k="$1" '$1 == k { print $2 }' "$SOURCE/tests/docker/compose-spec.pin"; }
readonly SCHEMA=${DEPLOYQ_CACHE:-$HOME/.cache/deployq}/compose-spec/$(pin version)/compose-spec.json
[ -f "$SCHEMA" ] || { echo "compose-check: $SCHEMA is missing: run scripts/install-deps.sh" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

check() { "$PY" "$CHECK" --build "$BUILD" --source "$SOURCE" --schema "$SCHEMA" "$@"; }

echo "# the files as they are"
if ! check --compose "$SOURCE/docker/compose.yaml" --prometheus "$SOURCE/docker/monitoring/prometheus.yml"; then
    echo "FAIL: docker/compose.yaml is refused"
    fails=$((fails + 1))
fi

# mutant NAME FILE OLD NEW EXPECTED: copy docker/, replace OLD (must occur exactly once)
# by NEW in FILE, and expect the checker to refuse it with a line containing EXPECTED.
mutant() {
    local name=$1 file=$2 old=$3 new=$4 expected=$5 out rc=0
    rm -rf "$tmp/docker" && cp -r "$SOURCE/docker" "$tmp/docker"
    OLD=$old NEW=$new "$PY" "$SOURCE/tests/docker/replace-once.py" "$tmp/docker/$file" ||
        { echo "FAIL: $name: the mutation does not apply"; fails=$((fails + 1)); return; }
    out=$(check --compose "$tmp/docker/compose.yaml" --prometheus "$tmp/docker/monitoring/prometheus.yml" 2>&1) || rc=$?
    if [ "$rc" = 1 ] && grep -qF -- "$expected" <<<"$out"; then
        echo "ok: refused: $name"
    else
        echo "FAIL: $name: exit $rc, expected a refusal naming: $expected"
        sed 's/^/    /' <<<"$out"
        fails=$((fails + 1))
    fi
}

echo "# broken copies"
mutant "a worker without a service" compose.yaml \
    'command: ["deployq-monitor", "--health-listen", ":9103"]' 'command: ["sleep", "1"]' \
    "no service runs deployq-monitor"
mutant "a variable deployq.yaml uses is not passed" compose.yaml \
    '    SLACK_WEBHOOK_URL: "${SLACK_WEBHOOK_URL:?' '    X_SLACK: "${SLACK_WEBHOOK_URL:?' \
    "does not pass SLACK_WEBHOOK_URL"
mutant "deployq.yaml uses a new variable" deployq.yaml \
    'token: ${DEPLOYQ_DEPLOY_TOKEN}' 'token: ${DEPLOYQ_DEPLOY_TOKEN2}' \
    "does not pass DEPLOYQ_DEPLOY_TOKEN2"
mutant "docker/env.example does not list a variable" env.example \
    'SLACK_WEBHOOK_URL=' 'SLACK_URL=' \
    "env.example: does not list SLACK_WEBHOOK_URL"
mutant "an unknown service key (schema)" compose.yaml \
    '  stop_grace_period: 30s' '  stop_grace_periode: 30s' \
    "deployq-executor: Unevaluated properties are not allowed ('stop_grace_periode' was unexpected)"
mutant "a wrong type (schema)" compose.yaml \
    'name: deployq' 'name: [deployq]' \
    "compose.yaml: name: ['deployq'] is not of type 'string'"
mutant "a value outside an enum (schema)" compose.yaml \
    'condition: service_completed_successfully' 'condition: service_completed' \
    "depends_on: {'topic-init': {'condition': 'service_completed'}"
mutant "the registry on another port" compose.yaml \
    '"127.0.0.1:8787:8787"' '"127.0.0.1:8080:8787"' \
    "must publish 127.0.0.1:8787:8787"
mutant "a health port that is not the default" compose.yaml \
    '"--health-listen", ":9102"' '"--health-listen", ":9202"' \
    "deployq-executor: must run with --health-listen :9102"
mutant "Prometheus misses a worker" monitoring/prometheus.yml \
    'port: 9104' 'port: 9999' \
    "no scrape target deployq-rollback:9104"

if [ "$fails" -ne 0 ]; then
    echo "compose-check: $fails failure(s)"
    exit 1
fi
echo "compose-check: all passed"
