#!/usr/bin/env bash
# The state directory cannot be planted (hardening finding 4). Without DEPLOYQ_STATE_DIR
# and XDG_RUNTIME_DIR it is /tmp/deployq-<uid>, a name any local user can take first. Two
# users play it out (setpriv): an attacker (nobody) creates the victim's directory, open to
# all, full of symbolic links named like the files deployq writes and pointing at files the
# victim owns; the victim's `deployq broker` and `deployq up` refuse it with one line, exit
# 1, write nothing and follow no link. A directory of the victim's own that others may
# open, a symbolic link (also as $XDG_RUNTIME_DIR/deployq), and a $DEPLOYQ_STATE_DIR open to
# all are refused the same way; a fresh run creates the directory 0700, its files 0600,
# and works. The victim is an unused uid, never root: /tmp/deployq-0 is left alone.
. "$(dirname "$0")/helpers.sh"

[ "$(id -u)" -eq 0 ] || { echo "# skipped: acting as two other users needs root" >&2; exit 77; }
command -v setpriv >/dev/null || { echo "# skipped: setpriv (util-linux) is missing" >&2; exit 77; }

ATTACKER=65534
VICTIM=
for u in $(seq 64000 64099); do
    if ! getent passwd "$u" >/dev/null && ! pgrep -U "$u" >/dev/null &&
        [ ! -e "/tmp/deployq-$u" ] && [ ! -L "/tmp/deployq-$u" ]; then
        VICTIM=$u
        break
    fi
done
[ -n "$VICTIM" ] || fail "no unused uid in 64000..64099"
VD=/tmp/deployq-$VICTIM # the victim's default state directory
VH=$T/victim            # the victim's home
UP_PID=

cleanup_users() {
    local rc=$? pids
    if [ -n "$UP_PID" ]; then
        kill -TERM "$UP_PID" 2>/dev/null || true
        for _ in $(seq 1 150); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    # the uid was unused when the test began: whatever runs as it now is the test's
    pids=$(pgrep -U "$VICTIM" || true)
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    rm -rf "$VD"
    (exit "$rc")
    cleanup
}
trap cleanup_users EXIT

# The victim must reach the binaries: the build tree's if every directory on the way lets
# it, else copies (`up` finds its workers next to deployq).
chmod 0711 "$T"
mkdir -m 0700 "$VH"
chown "$VICTIM:$VICTIM" "$VH"
as_victim() {
    (cd "$VH" && setpriv --reuid="$VICTIM" --regid="$VICTIM" --clear-groups \
        env -u DEPLOYQ_STATE_DIR -u XDG_RUNTIME_DIR HOME="$VH" "$@")
}
as_attacker() { setpriv --reuid="$ATTACKER" --regid="$ATTACKER" --clear-groups "$@"; }
BIN=$DEPLOYQ_BUILD/producer
if ! as_victim "$BIN/deployq" --help >/dev/null 2>&1; then
    BIN=$T/bin
    mkdir -m 0755 "$BIN"
    cp "$DEPLOYQ" "$BIN/"
    find "$DEPLOYQ_BUILD/workers" -maxdepth 2 -type f -name 'deployq-*' -perm -u+x -exec cp {} "$BIN/" \;
    chmod 0755 "$BIN"/*
    log "the build tree is not reachable by uid $VICTIM: running copies from $BIN"
fi
as_victim "$BIN/deployq" --help >/dev/null || fail "uid $VICTIM cannot run $BIN/deployq"

# What deployq writes in its state directory, and under logs/.
FILES="ci.key approver.key deployq.yaml stack.json stack.json.tmp broker.addr demo-service.port spool.jsonl"
LOGS="redis.log validator.log executor.log monitor.log rollback.log registry.log demo-service.log"
for f in $FILES $LOGS; do
    as_victim sh -c 'umask 077; echo "precious $1" >"$2"' sh "$f" "$VH/precious-$f"
done
(cd "$VH" && sha256sum precious-*) >"$T/precious.sha256"
precious_unchanged() { (cd "$VH" && sha256sum --quiet -c "$T/precious.sha256") || fail "$1: a file of the victim was written through a link"; }
listing() { find "$1" -printf '%P %y %U %m %l\n' | sort; }

# run_refused WHAT EXPECTED_LINE COMMAND...: the victim runs deployq; it must exit 1 at once
# with exactly EXPECTED_LINE on stderr and nothing on stdout.
run_refused() {
    local what=$1 expected=$2 rc
    shift 2
    set +e
    as_victim timeout -s INT 10 "$@" >"$T/out" 2>"$T/err"
    rc=$?
    set -e
    assert_eq "$rc" 1 "$what: exit status"
    assert_eq "$(cat "$T/err")" "$expected" "$what: the error"
    [ ! -s "$T/out" ] || fail "$what: printed $(cat "$T/out")"
}
FIX_DEFAULT="remove it or set DEPLOYQ_STATE_DIR to a directory of your own"

# 1. Planted by the attacker: its own directory, mode 0777, links to the victim's files.
as_attacker mkdir -m 0777 "$VD" "$VD/logs"
for f in $FILES; do as_attacker ln -s "$VH/precious-$f" "$VD/$f"; done
for f in $LOGS; do as_attacker ln -s "$VH/precious-$f" "$VD/logs/$f"; done
listing "$VD" >"$T/planted.before"
owned="state directory $VD is owned by uid $ATTACKER, not by you (uid $VICTIM); $FIX_DEFAULT"
run_refused "planted, broker" "deployq: broker: $owned" "$BIN/deployq" broker
run_refused "planted, up" "deployq: up: $owned" "$BIN/deployq" up
run_refused "planted, up --demo" "deployq: up: $owned" "$BIN/deployq" up --demo
# the break-glass spool lives there too: refused with the reason, never through a link
run_refused "planted, spool flush" "deployq: spool: no spool: $owned; or pass --spool FILE" \
    "$BIN/deployq" spool flush
precious_unchanged "planted"
listing "$VD" >"$T/planted.after"
diff "$T/planted.before" "$T/planted.after" >&2 || fail "planted: the attacker's directory changed (a key written there?)"

# 2. Planted with a stack.json claiming a running stack (pid 1 is alive; its broker and
#    configuration would be the attacker's): not believed, the directory refused.
rm -rf "$VD"
as_attacker mkdir -m 0755 "$VD"
printf '{"pid": 1, "brokers": "127.0.0.1:1", "config": "/tmp/evil.yaml", "ci_key": "/tmp/evil.key"}\n' |
    as_attacker tee "$VD/stack.json" >/dev/null
run_refused "planted stack.json, up" "deployq: up: $owned" "$BIN/deployq" up

# 3. The victim's own directory, but others may write into it or list it: refused.
rm -rf "$VD"
as_victim mkdir -m 0777 "$VD"
run_refused "own 0777" "deployq: broker: state directory $VD is writable by others (mode 0777); $FIX_DEFAULT" \
    "$BIN/deployq" broker
as_victim chmod 0755 "$VD"
run_refused "own 0755" \
    "deployq: up: state directory $VD is open to others (mode 0755, not 0700) and would hold private keys; $FIX_DEFAULT" \
    "$BIN/deployq" up
[ -z "$(ls -A "$VD")" ] || fail "own 0755: written in $VD: $(ls -A "$VD")"

# 4. A symbolic link (the attacker's) to a perfectly good directory of the victim's: refused,
#    nothing written there. The same for $XDG_RUNTIME_DIR/deployq.
rm -rf "$VD"
as_victim mkdir -m 0700 "$VH/real"
as_attacker ln -s "$VH/real" "$VD"
run_refused "symlink" "deployq: broker: state directory $VD is a symbolic link; $FIX_DEFAULT" \
    "$BIN/deployq" broker
rm -f "$VD"
as_victim mkdir -m 0700 "$VH/xdg"
as_victim ln -s "$VH/real" "$VH/xdg/deployq"
run_refused "XDG symlink" \
    "deployq: up: state directory $VH/xdg/deployq is a symbolic link; $FIX_DEFAULT" \
    env XDG_RUNTIME_DIR="$VH/xdg" "$BIN/deployq" up
[ -z "$(ls -A "$VH/real")" ] || fail "symlink: files written through the link: $(ls -A "$VH/real")"

# 5. $DEPLOYQ_STATE_DIR is checked as well: one that anyone can write is refused.
as_victim mkdir -m 0777 "$VH/shared"
run_refused "DEPLOYQ_STATE_DIR 0777" \
    "deployq: broker: state directory $VH/shared is writable by others (mode 0777); point DEPLOYQ_STATE_DIR at a directory of your own (mode 0700)" \
    env DEPLOYQ_STATE_DIR="$VH/shared" "$BIN/deployq" broker
[ -z "$(ls -A "$VH/shared")" ] || fail "DEPLOYQ_STATE_DIR 0777: written: $(ls -A "$VH/shared")"
[ ! -e "$VD" ] || fail "a refused run created $VD"

# 6. Fresh: no directory. `up` creates it 0700, its files 0600, and works: a flagless
#    submit from the victim finds the stack.
(cd "$VH" && exec setpriv --reuid="$VICTIM" --regid="$VICTIM" --clear-groups \
    env -u DEPLOYQ_STATE_DIR -u XDG_RUNTIME_DIR HOME="$VH" "$BIN/deployq" up) >"$T/up.out" 2>"$T/up.log" &
UP_PID=$!
wait_for 30 test -s "$VD/stack.json" || fail "fresh up did not write $VD/stack.json: $(cat "$T/up.log")"
assert_eq "$(stat -c '%u %a %F' "$VD")" "$VICTIM 700 directory" "the state directory"
for f in ci.key approver.key deployq.yaml stack.json; do
    assert_eq "$(stat -c '%u %a %F' "$VD/$f")" "$VICTIM 600 regular file" "$f"
done
assert_eq "$(stat -c '%u %a %F' "$VD/logs")" "$VICTIM 700 directory" "logs/"
for f in "$VD"/logs/*.log; do
    # a worker that has not logged yet leaves its file empty (stat says "regular empty file")
    [ -f "$f" ] && [ ! -L "$f" ] || fail "$(basename "$f") is not a regular file"
    assert_eq "$(stat -c '%u %a' "$f")" "$VICTIM 600" "$(basename "$f")"
done
[ -e "$VD/logs/validator.log" ] || fail "no validator log in $VD/logs"
id=$(as_victim "$BIN/deployq" submit --service demo --env staging --version v1 --timeout 20) ||
    fail "flagless submit by the victim"
[[ "$id" =~ ^[0-9a-f-]{36}$ ]] || fail "submit printed '$id', expected a deployment id"
kill -INT "$UP_PID"
wait_for 30 bash -c "! kill -0 $UP_PID 2>/dev/null" || fail "up did not stop on SIGINT"
wait "$UP_PID" || fail "up exited $? after SIGINT"
UP_PID=
[ ! -e "$VD/stack.json" ] || fail "stack.json left behind"

# `deployq broker` in the same (now existing, 0700) directory: broker.addr 0600, removed at
# the end.
(cd "$VH" && exec setpriv --reuid="$VICTIM" --regid="$VICTIM" --clear-groups \
    env -u DEPLOYQ_STATE_DIR -u XDG_RUNTIME_DIR HOME="$VH" "$BIN/deployq" broker) >"$T/broker.out" 2>"$T/broker.err" &
UP_PID=$!
wait_for 15 test -s "$VD/broker.addr" || fail "broker did not write $VD/broker.addr: $(cat "$T/broker.err")"
assert_eq "$(stat -c '%u %a %F' "$VD/broker.addr")" "$VICTIM 600 regular file" "broker.addr"
assert_eq "$(cat "$VD/broker.addr")" "$(head -n1 "$T/broker.out")" "broker.addr content"
kill -INT "$UP_PID"
wait "$UP_PID" || fail "broker exited $? after SIGINT"
UP_PID=
[ ! -e "$VD/broker.addr" ] || fail "broker.addr left behind"
precious_unchanged "the end"
echo ok
