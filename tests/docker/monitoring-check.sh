#!/usr/bin/env bash
# monitoring-check.sh - docker/monitoring/: promtool checks the alert rules and runs their
# unit tests (alerts.test.yml: each alert fires on synthetic series and not on healthy
# ones); every metric the dashboard and the rules use exists (metric_names.py against
# metrics.txt, and against the running workers when DEPLOYQ_METRICS_SCRAPE names their
# /metrics URLs, space-separated); the dashboard's PromQL parses (promtool). Then broken
# copies, each of which must be refused: proof that the checks can fail.
#
# usage: monitoring-check.sh SOURCE_DIR
set -euo pipefail

readonly SOURCE=$1
readonly PY=/usr/bin/python3
readonly NAMES=$SOURCE/tests/docker/metric_names.py
command -v promtool >/dev/null || { echo "monitoring-check: promtool is missing: run scripts/install-deps.sh" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
scrape=()
for url in ${DEPLOYQ_METRICS_SCRAPE:-}; do scrape+=(--scrape "$url"); done

# checks DIR [ARGS]: every check on the monitoring files in DIR (ARGS go to
# metric_names.py); prints what failed, exit 1 if any.
checks() {
    local d=$1 rc=0
    shift
    promtool check rules "$d/alerts.yml" || rc=1
    (cd "$d" && promtool test rules alerts.test.yml) || rc=1
    "$PY" "$NAMES" --list "$d/metrics.txt" "$@" --promql-out "$tmp/promql.yml" \
        "$d/grafana-dashboard.json" "$d/alerts.yml" || rc=1
    if [ -f "$tmp/promql.yml" ]; then
        promtool check rules "$tmp/promql.yml" >/dev/null 2>"$tmp/promql.err" ||
            { echo "the dashboard's PromQL: $(tr '\n' ' ' <"$tmp/promql.err")"; rc=1; }
        rm -f "$tmp/promql.yml"
    fi
    return "$rc"
}

echo "# the files as they are"
if ! checks "$SOURCE/docker/monitoring" "${scrape[@]}"; then
    echo "FAIL: docker/monitoring is refused"
    fails=$((fails + 1))
fi

# mutant NAME FILE OLD NEW EXPECTED: OLD (exactly once) -> NEW in a copy of FILE; the
# checks must fail with output containing EXPECTED.
mutant() {
    local name=$1 file=$2 old=$3 new=$4 expected=$5 out rc=0
    rm -rf "$tmp/m" && cp -r "$SOURCE/docker/monitoring" "$tmp/m"
    OLD=$old NEW=$new "$PY" "$SOURCE/tests/docker/replace-once.py" "$tmp/m/$file" ||
        { echo "FAIL: $name: the mutation does not apply"; fails=$((fails + 1)); return; }
    out=$(checks "$tmp/m" 2>&1) || rc=$?
    if [ "$rc" != 0 ] && grep -qF -- "$expected" <<<"$out"; then
        echo "ok: refused: $name"
    else
        echo "FAIL: $name: exit $rc, expected a refusal naming: $expected"
        sed 's/^/    /' <<<"$out" | tail -n 20
        fails=$((fails + 1))
    fi
}

echo "# broken copies"
mutant "the dashboard uses a metric that does not exist" grafana-dashboard.json \
    'deployq_failovers_total{' 'deployq_failover_total{' \
    "deployq_failover_total is not a deployq metric"
mutant "an alert selects a label the metric does not have" alerts.yml \
    'deployq_rollbacks_total{worker="rollback", outcome="failed"}' \
    'deployq_rollbacks_total{worker="rollback", result="failed"}' \
    "deployq_rollbacks_total has no label 'result'"
mutant "a histogram without _bucket" grafana-dashboard.json \
    'histogram_quantile(0.5, sum by (le, worker) (rate(deployq_lock_wait_seconds_bucket{' \
    'histogram_quantile(0.5, sum by (le, worker) (rate(deployq_lock_wait_seconds{' \
    "deployq_lock_wait_seconds is a histogram"
mutant "the dashboard's PromQL does not parse" grafana-dashboard.json \
    'sum by (probe, result) (increase(' 'sum by (probe, result) increase((' \
    "the dashboard's PromQL"
mutant "a rule counts the registry's deploys too (its unit test fails)" alerts.yml \
    'sum by (service, env) (increase(deployq_deploys_total{worker="executor", outcome="failed"}[30m]))
            /' \
    'sum by (service, env) (increase(deployq_deploys_total{outcome="failed"}[30m]))
            /' \
    "FAILED"
mutant "an alert that no longer fires (its unit test fails)" alerts.yml \
    'expr: deployq_ready == 0' 'expr: deployq_ready < 0' \
    "FAILED"
mutant "a rules file promtool refuses" alerts.yml \
    'for: 5m' 'for: five minutes' \
    'not a valid duration string: "five minutes"'

if [ "$fails" -ne 0 ]; then
    echo "monitoring-check: $fails failure(s)"
    exit 1
fi
echo "monitoring-check: all passed"
