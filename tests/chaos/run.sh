#!/usr/bin/env bash
# tests/chaos/run.sh - the fault-injection suite: N seeded runs of the whole pipeline under
# random faults, each judged against the invariants of issue 6 (tests/chaos/check.py).
#
#   tests/chaos/run.sh [--runs N] [--seed S] [--duration SECONDS] [--kafka] [--keep]
#                      [--build DIR] [--out DIR]
#
#   --runs N          runs to make (default 3)
#   --seed S          seed of the first run; run i uses S+i (default: random, printed).
#                     The same seed draws the same workload and the same faults at the same
#                     moments; what the processes do in between is timing, not seeded
#   --duration SECS   workload-and-faults time per run (default 60); a run then lets every
#                     target settle and stops, so it takes about SECS + 40..90 s
#   --kafka           a real Apache Kafka (scripts/kafka.sh, one for all runs, topics per
#                     run) instead of the embedded broker; adds the "broker restart" fault
#   --keep            keep every run's directory (default: only runs with a violation)
#   --build DIR       meson build directory with the binaries (default: $DEPLOYQ_BUILD,
#                     else build/)
#   --out DIR         where run directories go (default: a new /tmp/dq-chaos.XXXXXX)
#   DQ_CHAOS_ARGS     extra arguments for driver.py (e.g. "--targets 6 --window 30")
#
# Prints each fault as it is injected, a check line per run, then the totals: runs, faults
# injected by kind, violations. Exit 0 only when every run had no violation.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)

runs=3 seed="" duration=60 kafka=0 keep=0 build=${DEPLOYQ_BUILD:-$src/build} out=""
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --kafka) kafka=1; shift ;;
    --keep) keep=1; shift ;;
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$seed" ] || seed=$(od -An -N3 -tu4 /dev/urandom | tr -d ' ')
for tool in kcat jq redis-server redis-cli openssl python3; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 2; }
done
[ -x "$build/producer/deployq" ] || { echo "run.sh: no binaries in $build (build first, or --build DIR)" >&2; exit 2; }
for w in validator executor monitor rollback registry; do
    [ -x "$build/workers/$w/deployq-$w" ] || { echo "run.sh: $build/workers/$w/deployq-$w is missing" >&2; exit 2; }
done
own_out=0
[ -n "$out" ] || { out=$(mktemp -d /tmp/dq-chaos.XXXXXX); own_out=1; }
mkdir -p "$out"

echo "chaos: seed $seed, $runs run(s) of ${duration}s, broker $([ $kafka = 1 ] && echo 'real Kafka' || echo embedded), in $out"
echo "chaos: reproduce with: ${DQ_CHAOS_ARGS:+DQ_CHAOS_ARGS=\"$DQ_CHAOS_ARGS\" }tests/chaos/run.sh --runs $runs --seed $seed --duration $duration$([ $kafka = 1 ] && echo ' --kafka')"

kafka_args=()
kdir=""
stop_kafka() { [ -n "$kdir" ] && "$src/scripts/kafka.sh" stop --dir "$kdir" >/dev/null 2>&1; }
trap stop_kafka EXIT
if [ $kafka = 1 ]; then
    kdir="$out/kafka"
    kport=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
    "$src/scripts/kafka.sh" start --dir "$kdir" --port "$kport" >/dev/null || { echo "chaos: Kafka did not start" >&2; exit 2; }
    kafka_args=(--kafka-dir "$kdir" --kafka-port "$kport")
fi

failed_runs=0
for i in $(seq 1 "$runs"); do
    s=$((seed + i - 1))
    d="$out/run-$i-seed-$s"
    # shellcheck disable=SC2086 # DQ_CHAOS_ARGS is a list of words
    python3 "$here/driver.py" --dir "$d" --build "$build" --source "$src" --seed "$s" \
        --label "$i/$runs:$s" --duration "$duration" "${kafka_args[@]}" ${DQ_CHAOS_ARGS:-} 2>"$d.driver.log"
    drc=$?
    grep -E 'fault|pipeline up|run over|aborted' "$d.driver.log" | sed 's/^/  /'
    if [ $drc -ne 0 ]; then
        echo "chaos run $i (seed $s): the driver failed (exit $drc); see $d.driver.log"
        tail -n 5 "$d.driver.log"
    fi
    python3 "$here/check.py" "$d" --deployq "$build/producer/deployq"
    crc=$?
    if [ -f "$d/check.json" ]; then
        jq -c . "$d/check.json" >>"$out/checks.jsonl"
    else
        echo '{"faults":{},"violations":[{"invariant":"run","text":"no check.json"}]}' >>"$out/checks.jsonl"
    fi
    if [ $crc -ne 0 ] || [ $drc -ne 0 ]; then
        failed_runs=$((failed_runs + 1))
        echo "chaos run $i (seed $s): FAIL, kept $d"
    else
        echo "chaos run $i (seed $s): ok"
        [ $keep = 1 ] || rm -rf "$d" "$d.driver.log"
    fi
done

# Totals over every run (out/checks.jsonl holds each run's check.json, one a line).
python3 - "$out/checks.jsonl" <<'PY'
import json, sys
from collections import Counter
checks = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
faults, viol, sums = Counter(), Counter(), Counter()
for c in checks:
    faults.update(c.get("faults", {}))
    viol.update(x["invariant"] for x in c.get("violations", []))
    for k in ("deployments", "bad_deployed", "good_deployed", "events", "provider_runs",
              "refused_deploy_calls", "notifications", "kills_in_action", "stale_events", "stale_polls"):
        sums[k] += c.get(k, 0) or 0
print("chaos totals: %d runs, %d deployments (%d bad versions deployed, %d good), %d events, "
      "%d provider runs, %d deploy calls refused, %d notifications"
      % (len(checks), sums["deployments"], sums["bad_deployed"], sums["good_deployed"], sums["events"],
         sums["provider_runs"], sums["refused_deploy_calls"], sums["notifications"]))
print("chaos faults injected: %d (%s); %d kills hit a worker in the middle of an action"
      % (sum(faults.values()), ", ".join("%s %d" % kv for kv in sorted(faults.items())), sums["kills_in_action"]))
print("chaos stale fences: %d stale events ignored, %d stale status polls"
      % (sums["stale_events"], sums["stale_polls"]))
print("chaos consumer closes given up after their bound (librdkafka close hang, worked around): %d"
      % sum(c.get("closes_given_up", 0) for c in checks))
print("chaos violations: %d (%s)" % (sum(viol.values()), ", ".join("%s %d" % kv for kv in sorted(viol.items())) or "none"))
PY
echo "chaos: $runs run(s), $failed_runs with violations (seed $seed)"
# a directory of our own with nothing kept in it goes too
if [ $own_out = 1 ] && [ $failed_runs -eq 0 ] && [ $keep = 0 ] && [ -z "$(ls "$out" | grep -v '^checks.jsonl$\|^kafka$')" ]; then
    rm -rf "$out"
fi
[ $failed_runs -eq 0 ]
