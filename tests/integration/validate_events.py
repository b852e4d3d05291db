#!/usr/bin/python3
"""Validate deployq events (JSON lines on stdin) against schemas/ with Python's
jsonschema: the envelope, then data against schemas/events/<type>.json. An independent
check of what the C code emits. Exit 1 on the first invalid event, printing why."""
import json
import sys
from pathlib import Path

import jsonschema
from jsonschema import Draft202012Validator, FormatChecker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "schema"))
try:
    from crosscheck import format_checker  # the strict RFC 3339 checker, when present
except Exception:  # pragma: no cover - fall back to jsonschema's own
    format_checker = FormatChecker()


def main() -> int:
    root = Path(sys.argv[1])
    envelope = json.loads((root / "envelope.json").read_text())
    per_type = {p.stem: json.loads(p.read_text()) for p in (root / "events").glob("*.json")}
    count = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        doc = json.loads(line)
        try:
            Draft202012Validator(envelope, format_checker=format_checker).validate(doc)
            Draft202012Validator(per_type[doc["type"]], format_checker=format_checker).validate(doc["data"])
        except (jsonschema.ValidationError, KeyError) as e:
            print(f"invalid event: {getattr(e, 'message', e)}\n{line}", file=sys.stderr)
            return 1
        count += 1
    print(count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
