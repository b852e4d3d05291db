#!/usr/bin/env bash
# tests/bench/lock.sh [BUILD_DIR]: the fenced lock (common/clients/lock.h), acquire +
# release, against `redis-benchmark -c 1 -t set` on the same fresh redis-server.
#
# deployq-lockbench (tests/bench/lockbench.c) does N pairs of dq_lock_pool_try() (lease and
# fence in one script, held by the pool's renewal thread) and dq_lock_release()
# (compare-and-delete), one at a time, as an executor does; redis-benchmark does N single
# SETs over one connection. They alternate ROUNDS times; the figure is each side's median
# ops/s (a pair counts as one op) and the ratio deployq / redis-benchmark. Also measured,
# in the same rounds: "fresh" pairs, dq_lock_try() (a connection and a renewal thread of
# the lock's own, what a one-off caller such as `deployq deploy --direct` pays), and, with
# BASE_LOCKBENCH=PATH, another build's deployq-lockbench (before/after comparisons).
# Environment: N (default 20000), ROUNDS (default 5), CPU (default 0: the clients pinned
# to that core with taskset, redis-server to the other one when there is one).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
BENCH=$build/tests/bench/deployq-lockbench
N=${N:-20000}
ROUNDS=${ROUNDS:-5}
CPU=${CPU:-0}
[ -x "$BENCH" ] || { echo "build first: scripts/build.sh $build" >&2; exit 1; }
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark (redis-tools)" >&2; exit 1; }

T=$(mktemp -d /tmp/dq-bench-lock.XXXXXX)
rpid=
cleanup() { [ -n "$rpid" ] && kill "$rpid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
ncpu=$(nproc)
other=$(( (CPU + 1) % ncpu ))
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
taskset -c "$other" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$T" >"$T/redis.log" 2>&1 &
rpid=$!
for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

median() { sort -n | awk '{v[NR]=$1} END { print NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2 }'; }
: >"$T/dq"; : >"$T/rb"; : >"$T/fresh"; : >"$T/base"
url=redis://127.0.0.1:$port
for r in $(seq 1 "$ROUNDS"); do
    d=$(taskset -c "$CPU" "$BENCH" "$url" "$N" | awk '{print $6}')
    b=$(taskset -c "$CPU" redis-benchmark -h 127.0.0.1 -p "$port" -c 1 -n "$N" -t set --csv |
        awk -F, '/"SET"/ {gsub(/"/, "", $2); print int($2)}')
    f=$(taskset -c "$CPU" "$BENCH" "$url" "$N" fresh | awk '{print $6}')
    o=0
    [ -n "${BASE_LOCKBENCH:-}" ] && o=$(taskset -c "$CPU" "$BASE_LOCKBENCH" "$url" "$N" | awk '{print $6}')
    echo "$d" >>"$T/dq"; echo "$b" >>"$T/rb"; echo "$f" >>"$T/fresh"; echo "$o" >>"$T/base"
    printf 'round %d: deployq lock (pool) %6d pairs/s, redis-benchmark SET %6d ops/s, dq_lock_try %6d pairs/s' \
        "$r" "$d" "$b" "$f"
    [ -n "${BASE_LOCKBENCH:-}" ] && printf ', base %6d pairs/s' "$o"
    echo
done
dm=$(median <"$T/dq"); bm=$(median <"$T/rb"); fm=$(median <"$T/fresh"); om=$(median <"$T/base")
echo
echo "lock acquire+release (fenced), $N pairs x $ROUNDS rounds, one client, medians:"
printf '  deployq lock (pool): %d pairs/s; redis-benchmark -c 1 -t set: %d ops/s; ratio %.2f\n' \
    "$dm" "$bm" "$(echo "$dm / $bm" | bc -l)"
printf '  (the median of the rounds'"'"' own ratios: %.2f)\n' \
    "$(paste "$T/dq" "$T/rb" | awk '{print $1 / $2}' | median)"
printf '  dq_lock_try (a connection and thread per lock): %d pairs/s; ratio %.2f\n' \
    "$fm" "$(echo "$fm / $bm" | bc -l)"
[ -n "${BASE_LOCKBENCH:-}" ] &&
    printf '  %s: %d pairs/s; ratio %.2f\n' "$BASE_LOCKBENCH" "$om" "$(echo "$om / $bm" | bc -l)"
exit 0
