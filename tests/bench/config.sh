#!/usr/bin/env bash
# tests/bench/config.sh [BUILD_DIR]: how long loading and checking a configuration takes as
# the number of services grows (docs/performance.md, "Loading a large configuration").
#
# For each N in SIZES (default "5000 10000 20000") it writes a deployq.yaml with N services,
# each with a staging and a production environment (production requires staging, a provider
# chain through a shared provider), and times `deployq check --config FILE -q` (load, every lint
# and the requires graph) and, as a reference, PyYAML's `yaml.safe_load` of the same file
# (PYYAML=1 and PyYAML installed; off by default: it takes a minute at 20,000 services).
# Best of RUNS (default 3). Prints one line per size; a loader that is linear shows about
# twice the time for twice the services.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
build=${1:-build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
DEPLOYQ=$build/producer/deployq
SIZES=${SIZES:-"5000 10000 20000"}
RUNS=${RUNS:-3}
export DEPLOYQ_SCHEMAS=$root/schemas
[ -x "$DEPLOYQ" ] || { echo "build first: scripts/build.sh $build" >&2; exit 1; }

T=$(mktemp -d /tmp/dq-bench-config.XXXXXX)
trap 'rm -rf "$T"' EXIT

# gen N: a configuration with N services (compact, so 20,000 fit in the loader's 4 MiB)
gen() {
    python3 - "$1" <<'PY'
import sys
n = int(sys.argv[1])
out = ["providers:", "  local: {type: command, command: [/bin/true]}", "services:"]
for i in range(n):
    out += [
        f"  svc-{i:05d}:",
        "    environments:",
        "      staging: {providers: [local]}",
        "      production:",
        "        requires: staging",
        "        providers: [local]",
    ]
print("\n".join(out))
PY
}

# best SECONDS of RUNS runs of a command
best() {
    local b=""
    for _ in $(seq 1 "$RUNS"); do
        local t0 t1 s
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; return 1; }
        t1=$(date +%s%N)
        s=$(( (t1 - t0) / 1000000 ))
        if [ -z "$b" ] || [ "$s" -lt "$b" ]; then b=$s; fi
    done
    printf '%d.%03d' $((b / 1000)) $((b % 1000))
}

have_pyyaml=0
[ "${PYYAML:-0}" = 1 ] && python3 -c 'import yaml' 2>/dev/null && have_pyyaml=1
for n in $SIZES; do
    gen "$n" >"$T/deployq-$n.yaml"
    d=$(best "$DEPLOYQ" check --config "$T/deployq-$n.yaml" -q)
    if [ "$have_pyyaml" = 1 ]; then
        y=$(best python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' "$T/deployq-$n.yaml")
        echo "config: $n services ($(wc -c <"$T/deployq-$n.yaml") bytes): deployq check ${d} s; PyYAML safe_load ${y} s"
    else
        echo "config: $n services ($(wc -c <"$T/deployq-$n.yaml") bytes): deployq check ${d} s"
    fi
done
