"""replace-once.py FILE: replace $OLD, which must occur exactly once in FILE, by $NEW.

The mutation step of tests/docker/*-check.sh: each makes a broken copy of a shipped file
this way and expects its checker to refuse it. Exits non-zero (saying why) when OLD does
not occur exactly once, so a mutation that no longer applies fails loudly."""
import os
import sys

p = sys.argv[1]
old, new = os.environ["OLD"], os.environ["NEW"]
s = open(p).read()
if s.count(old) != 1:
    sys.exit(f"{p}: {old!r} occurs {s.count(old)} times")
open(p, "w").write(s.replace(old, new))
