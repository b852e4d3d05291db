#!/usr/bin/python3
"""crosscheck.py - hold deployq's C validator and Python's jsonschema to the same verdicts.

usage: crosscheck.py <schema_check binary> <schemas dir> <corpus dir>

The corpus holds one folder per schema: envelope/, request/, signed/ (documents checked
against that one file) and events/<type>/ (whole events: the envelope, then data against
events/<type>.json, which schema_check does with --event). Every document is named
valid-*.json or invalid-*.json. The test fails when

  - schema_check and jsonschema disagree on any document,
  - a valid-* document is judged invalid or an invalid-* one valid (by either),
  - the corpus is thin: fewer than 60 documents, a schema file without a valid and an
    invalid document, or an assertion keyword of the schemas that no invalid document
    trips.

Two deliberate points where we tell jsonschema what the spec means, since Debian's
python3-jsonschema cannot be told otherwise:
  - format "date-time": rfc3339-validator is not packaged, so a strict RFC 3339 check is
    registered here; like deployq it insists on the upper-case 'T' and 'Z'.
  - pattern: Python's `$` also matches before a final newline, ECMA-262's (the regex
    dialect of JSON Schema) does not; so "api\\n" must fail ^[a-z0-9]...$ and the check
    below uses \\Z for a trailing `$`. POSIX regexec, which deployq uses, agrees with ECMA.
"""
import json
import os
import re
import subprocess
import sys

try:
    from jsonschema import Draft202012Validator, FormatChecker, validators
    from jsonschema.exceptions import ValidationError
except ImportError:
    print("crosscheck: python3-jsonschema is not installed; skipping", file=sys.stderr)
    sys.exit(77)  # meson's "skipped"

MIN_DOCUMENTS = 60
STRUCTURAL_KEYWORDS = {"properties", "items"}  # their failures surface as the inner keyword
ANNOTATIONS = {"$schema", "$id", "title", "description", "$comment", "examples", "default"}

DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(Z|[+-]([0-9]{2}):([0-9]{2}))")


def is_date_time(value):
    if not isinstance(value, str):
        return True  # format only speaks about strings
    m = DATE_TIME.fullmatch(value)
    if not m:
        return False
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if m.group(9) is not None and (int(m.group(9)) > 23 or int(m.group(10)) > 59):
        return False
    if not 1 <= month <= 12 or day < 1:
        return False
    leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
    dim = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    return day <= dim and hour <= 23 and minute <= 59 and second <= 60


def ecma_pattern(validator, pattern, instance, schema):
    if not validator.is_type(instance, "string"):
        return
    rx = pattern
    if rx.endswith("$") and not rx.endswith("\\$"):
        rx = rx[:-1] + r"\Z"
    if not re.search(rx, instance):
        yield ValidationError("%r does not match %r" % (instance, pattern))


def make_validator(schema):
    Draft202012Validator.check_schema(schema)
    checker = FormatChecker()
    checker.checks("date-time")(is_date_time)
    cls = validators.extend(Draft202012Validator, {"pattern": ecma_pattern})
    return cls(schema, format_checker=checker)


def keywords_of(schema, out):
    """Every keyword used anywhere in a schema (property names are not keywords)."""
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        out.add(key)
        if key == "properties":
            for sub in value.values():
                keywords_of(sub, out)
        elif key in ("items", "additionalProperties"):
            keywords_of(value, out)


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run_schema_check(binary, args, paths):
    """Verdicts of the C validator: {path: (valid, text)}."""
    proc = subprocess.run([binary] + args + paths, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)
    if proc.returncode not in (0, 1):
        raise SystemExit("crosscheck: schema_check failed (%d): %s" % (proc.returncode, proc.stderr))
    lines = proc.stdout.splitlines()
    if len(lines) != len(paths):
        raise SystemExit("crosscheck: schema_check printed %d lines for %d documents" % (len(lines), len(paths)))
    verdicts = {}
    for path, line in zip(paths, lines):
        if line == path + " valid":
            verdicts[path] = (True, "")
        elif line.startswith(path + " invalid: "):
            verdicts[path] = (False, line[len(path) + len(" invalid: "):])
        else:
            raise SystemExit("crosscheck: unexpected schema_check output: %r" % line)
    return verdicts


def main():
    if len(sys.argv) != 4:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    binary, schemas_dir, corpus_dir = sys.argv[1:]

    schemas = {name: load_json(os.path.join(schemas_dir, name + ".json"))
               for name in ("envelope", "request", "signed", "approval", "operator")}
    events_dir = os.path.join(schemas_dir, "events")
    event_schemas = {f[:-5]: load_json(os.path.join(events_dir, f))
                     for f in sorted(os.listdir(events_dir)) if f.endswith(".json")}
    validator = {name: make_validator(s) for name, s in schemas.items()}
    event_validator = {t: make_validator(s) for t, s in event_schemas.items()}

    failures = []
    type_enum = set(schemas["envelope"]["properties"]["type"]["enum"])
    if type_enum != set(event_schemas):
        failures.append("envelope.json's type enum and events/*.json differ: %s"
                        % sorted(type_enum ^ set(event_schemas)))

    used_keywords = set()
    for s in list(schemas.values()) + list(event_schemas.values()):
        keywords_of(s, used_keywords)
    must_trip = used_keywords - STRUCTURAL_KEYWORDS - ANNOTATIONS
    tripped = set()

    # (group name, schema_check args, python judge, documents)
    groups = []
    for name in ("envelope", "request", "signed", "approval", "operator"):
        groups.append((name, [os.path.join(schemas_dir, name + ".json")], validator[name].iter_errors,
                       os.path.join(corpus_dir, name)))

    def judge_event(doc):
        errors = list(validator["envelope"].iter_errors(doc))
        t = doc.get("type") if isinstance(doc, dict) else None
        v = event_validator.get(t) if isinstance(t, str) else None
        if v is not None and "data" in doc:
            errors += list(v.iter_errors(doc["data"]))
        elif v is None and not errors:
            errors.append(ValidationError("no schema for event type %r" % t, validator="type"))
        return errors

    for t in sorted(event_schemas):
        groups.append(("events/" + t, ["--event", schemas_dir], judge_event,
                       os.path.join(corpus_dir, "events", t)))

    total = 0
    for name, args, judge, folder in groups:
        if not os.path.isdir(folder):
            failures.append("%s: no corpus folder %s" % (name, folder))
            continue
        paths = [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".json")]
        kinds = set()
        for p in paths:
            base = os.path.basename(p)
            if base.startswith("valid-"):
                kinds.add(True)
            elif base.startswith("invalid-"):
                kinds.add(False)
            else:
                failures.append("%s: named neither valid-* nor invalid-*" % p)
        if kinds != {True, False}:
            failures.append("%s: needs at least one valid-* and one invalid-* document" % name)
        if not paths:
            continue
        total += len(paths)
        c_verdicts = run_schema_check(binary, args, paths)
        for p in paths:
            expected = os.path.basename(p).startswith("valid-")
            errors = list(judge(load_json(p)))
            py_valid = not errors
            c_valid, c_text = c_verdicts[p]
            if not expected:
                tripped.update(e.validator for e in errors)
            if py_valid != c_valid:
                failures.append("%s: DISAGREE: schema_check says %s%s, jsonschema says %s%s" % (
                    p, "valid" if c_valid else "invalid",
                    "" if c_valid else " (" + c_text + ")",
                    "valid" if py_valid else "invalid",
                    "" if py_valid else " (" + "; ".join(e.message for e in errors[:3]) + ")"))
            elif c_valid != expected:
                failures.append("%s: both validators say %s, the name says %s%s" % (
                    p, "valid" if c_valid else "invalid", "valid" if expected else "invalid",
                    "" if c_valid else " (" + c_text + ")"))
            else:
                print("ok   %s%s" % (p, "" if c_valid else "  [" + c_text + "]"))

    if total < MIN_DOCUMENTS:
        failures.append("the corpus has %d documents; at least %d expected" % (total, MIN_DOCUMENTS))
    untested = sorted(must_trip - tripped)
    if untested:
        failures.append("no invalid document trips these keywords: %s" % ", ".join(untested))

    for f in failures:
        print("FAIL " + f)
    print("crosscheck: %d documents, %d failures" % (total, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
