#!/usr/bin/env bash
# tests/bench/rss.sh [BUILD_DIR]: the idle memory of every worker (issue 11, item 1).
#
# Starts `deployq up` (the embedded broker, a redis-server and every worker) in a fresh
# state directory and, on the same broker, an idle `kcat -C` group consumer: librdkafka's
# own floor, the least a process that consumes a topic can take. After WAIT seconds it
# prints, for each worker, kcat and redis-server: VmRSS with its RssAnon/RssFile split
# (/proc/PID/status), Pss (smaps_rollup: shared library pages divided among the processes
# mapping them), the threads, and the worker's RSS over kcat's.
#
# RssFile is mostly shared, clean library pages (the machine holds them once, however many
# workers map them); RssAnon is what each worker alone costs.
#
# Environment: WAIT (default 30 s), TOP (default 0: when > 0, the TOP largest mappings of
# each worker by Rss, from /proc/PID/smaps).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
build=${1:-build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
DEPLOYQ=$build/producer/deployq
WAIT=${WAIT:-30}
TOP=${TOP:-0}
[ -x "$DEPLOYQ" ] || { echo "build first: scripts/build.sh $build" >&2; exit 1; }
command -v kcat >/dev/null || { echo "rss.sh: kcat is needed for the reference" >&2; exit 1; }

T=$(mktemp -d /tmp/dq-rss.XXXXXX)
chmod 700 "$T"
export DEPLOYQ_STATE_DIR=$T DEPLOYQ_SCHEMAS=$root/schemas
up_pid="" kcat_pid=""
cleanup() {
    [ -n "$kcat_pid" ] && kill "$kcat_pid" 2>/dev/null
    if [ -n "$up_pid" ]; then
        kill -TERM "$up_pid" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -rf "$T"
}
trap cleanup EXIT

"$DEPLOYQ" up >"$T/up.out" 2>"$T/up.err" &
up_pid=$!
for _ in $(seq 1 100); do grep -q '^  registry ' "$T/up.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^  kafka ' "$T/up.out" || { echo "rss.sh: deployq up did not start:" >&2; cat "$T/up.err" >&2; exit 1; }
B=$(awk '$1 == "kafka" {print $3}' "$T/up.out")
kcat -C -b "$B" -G deployq-rss-kcat -q deployq.requests >/dev/null 2>"$T/kcat.err" &
kcat_pid=$!
sleep "$WAIT"

# row NAME PID: one line of the table, the RSS in kB into rss_of
declare -A rss_of
row() {
    local name=$1 pid=$2 rss anon file pss thr
    [ -d "/proc/$pid" ] || { printf '%-10s %7s  (not running)\n' "$name" "$pid"; return; }
    read -r rss anon file thr < <(awk '/^VmRSS/ {r = $2} /^RssAnon/ {a = $2} /^RssFile/ {f = $2}
        /^Threads/ {t = $2} END {print r, a, f, t}' "/proc/$pid/status")
    pss=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")
    rss_of[$name]=$rss
    printf '%-10s %7s %8d %8d %8d %8d %7d' "$name" "$pid" "$rss" "$anon" "$file" "$pss" "$thr"
    [ -n "${rss_of[kcat]:-}" ] && [ "$name" != kcat ] && [ "$name" != redis ] &&
        awk -v a="$rss" -v b="${rss_of[kcat]}" 'BEGIN {printf "   %.2f", a / b}'
    printf '\n'
}

echo "== idle memory ${WAIT} s after \`deployq up\` (kB; $(basename "$build"), embedded broker $B)"
printf '%-10s %7s %8s %8s %8s %8s %7s   %s\n' process pid VmRSS RssAnon RssFile Pss threads "RSS/kcat"
row kcat "$kcat_pid"
for w in validator executor monitor rollback registry; do
    row "$w" "$(awk -v w="$w" '$1 == w {sub(",", "", $3); print $3}' "$T/up.out")"
done
row redis "$(pgrep -P "$up_pid" -x redis-server || echo none)"
if [ "$TOP" -gt 0 ]; then
    for w in validator executor monitor rollback registry; do
        pid=$(awk -v w="$w" '$1 == w {sub(",", "", $3); print $3}' "$T/up.out")
        echo "-- $w: the $TOP largest mappings (Rss kB, of which anonymous)"
        awk '/^[0-9a-f]+-[0-9a-f]+ / {n = $6 == "" ? "[anonymous]" : $6}
            /^Rss:/ {r[n] += $2} /^Anonymous:/ {a[n] += $2}
            END {for (n in r) if (r[n] > 0) printf "%8d %8d  %s\n", r[n], a[n], n}' \
            "/proc/$pid/smaps" | sort -rn | head -n "$TOP"
    done
fi
