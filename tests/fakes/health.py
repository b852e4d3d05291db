#!/usr/bin/python3
"""health.py - a tiny service whose health endpoint can be flipped at runtime.

deployq-monitor probes it in the integration tests, and `deployq up --demo` runs it as the
demo service: a "deploy" of a version switches its behaviour to what the script says that
version does, so a bad version really answers badly until it is rolled back.

Endpoints:
  GET  /health, GET /        the probed endpoint: status, latency and body per the
                             current behaviour
  POST /_fake/script         replace the behaviour (JSON object, keys below); resets the
                             pattern position; keeps recorded calls
  POST /_fake/deploy         {"version": "v2"}: now serving that version (its behaviour is
                             script.versions[version], else the script's own keys)
  POST /_fake/reset          default behaviour, no calls, no version
  GET  /_fake/calls          {"calls": n, "version": v, "behaviour": {...},
                              "log": [{"at": t, "status": s, "latency_ms": l}, ...]}

Behaviour keys (all optional):
  status       HTTP status of /health (default 200)
  latency_ms   wait this long before answering (default 0)
  body         response body (default "ok")
  pattern      a list of statuses used in turn, one per request (e.g. [200, 500]): it
               overrides status, to make a flapping service
  repeat       false: play the pattern once, then answer with status (default true)
  versions     {"<version>": {behaviour keys}}: behaviour per deployed version

Run: python3 tests/fakes/health.py --port 0 --port-file F [--script JSON]
It writes the chosen port to F (atomically). Only the standard library is used.
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakelib  # noqa: E402

DEFAULT = {"status": 200, "latency_ms": 0, "body": "ok"}


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.script = dict(DEFAULT)
        self.version = None
        self.calls = 0
        self.log = []
        self.position = 0

    def behaviour(self):
        """The behaviour now in force (lock held)."""
        b = dict(DEFAULT)
        b.update({k: v for k, v in self.script.items() if k != "versions"})
        per = self.script.get("versions") or {}
        if self.version is not None and self.version in per:
            b.update(per[self.version])
        return b


STATE = State()


class Handler(fakelib.SmallHandler):
    server_version = "deployq-health/1"
    default_ctype = "text/plain"

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/_fake/calls":
            with STATE.lock:
                doc = {"calls": STATE.calls, "version": STATE.version,
                       "behaviour": STATE.behaviour(), "log": STATE.log[-200:]}
            self.send(200, json.dumps(doc), "application/json")
            return
        if path not in ("/", "/health", "/healthz"):
            self.send(404, "not found")
            return
        with STATE.lock:
            b = STATE.behaviour()
            status = int(b.get("status", 200))
            pattern = b.get("pattern")
            if pattern and (b.get("repeat", True) or STATE.position < len(pattern)):
                status = int(pattern[STATE.position % len(pattern)])
            STATE.position += 1
            STATE.calls += 1
            STATE.log.append({"at": time.time(), "status": status,
                              "latency_ms": int(b.get("latency_ms", 0))})
        if b.get("latency_ms"):
            time.sleep(int(b["latency_ms"]) / 1000.0)
        self.send(status, str(b.get("body", "ok")))

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        doc = self.read_json()
        if doc is None:
            self.send(400, "expected a JSON object")
            return
        with STATE.lock:
            if path == "/_fake/script":
                STATE.script = doc
                STATE.position = 0
            elif path == "/_fake/deploy":
                STATE.version = doc.get("version")
                STATE.position = 0
            elif path == "/_fake/reset":
                STATE.reset()
            else:
                self.send(404, "not found")
                return
        self.send(200, "{}", "application/json")


def main():
    ap = fakelib.small_args(__doc__.split("\n")[0])
    ap.add_argument("--script", help="initial behaviour, a JSON object")
    args = ap.parse_args()
    if args.script:
        STATE.script = json.loads(args.script)
    return fakelib.serve_small(Handler, args)


if __name__ == "__main__":
    sys.exit(main())
