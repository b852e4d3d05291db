#!/usr/bin/python3
"""prometheus.py - a Prometheus double: GET /api/v1/query answers what the script says.

deployq-monitor's Prometheus probe sends an instant query and compares the scalar with a
threshold; this double lets a test choose the value per query, an empty result, "NaN",
or Prometheus itself failing.

Endpoints:
  GET  /api/v1/query?query=Q   the answer for Q: script.queries[Q], else the script itself
  POST /_fake/script           replace the script (JSON object, keys below)
  POST /_fake/reset            empty script, no calls
  GET  /_fake/calls            {"calls": [{"at": t, "query": q}, ...]}

Script keys (per query under "queries", or at the top level as the default):
  value        a number, or a string sent as is ("NaN", "+Inf"); null or absent: empty
               result (no series)
  result_type  "vector" (default) or "scalar"
  series       for a vector, send this many series carrying the value (default 1)
  http_status  answer with this status and a Prometheus error body instead
  latency_ms   wait this long first

Run: python3 tests/fakes/prometheus.py --port 0 --port-file F. Standard library only.
"""

import os
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakelib  # noqa: E402

LOCK = threading.Lock()
SCRIPT = {}
CALLS = []


def answer(spec):
    """(status, body) for one query's spec."""
    if spec.get("http_status"):
        return int(spec["http_status"]), {"status": "error", "errorType": "internal",
                                           "error": "scripted failure"}
    value = spec.get("value")
    now = time.time()
    rtype = spec.get("result_type", "vector")
    if rtype == "scalar":
        text = "NaN" if value is None else (value if isinstance(value, str) else repr(float(value)))
        return 200, {"status": "success", "data": {"resultType": "scalar", "result": [now, text]}}
    result = []
    if value is not None:
        text = value if isinstance(value, str) else repr(float(value))
        for i in range(int(spec.get("series", 1))):
            result.append({"metric": {"instance": "i%d" % i}, "value": [now, text]})
    return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


class Handler(fakelib.SmallHandler):
    server_version = "deployq-prometheus/1"

    def do_GET(self):
        u = urlsplit(self.path)
        if u.path == "/_fake/calls":
            with LOCK:
                self.send(200, {"calls": list(CALLS)})
            return
        if u.path != "/api/v1/query":
            self.send(404, {"status": "error", "error": "not found"})
            return
        q = (parse_qs(u.query).get("query") or [""])[0]
        with LOCK:
            CALLS.append({"at": time.time(), "query": q})
            spec = dict(SCRIPT)
            spec.pop("queries", None)
            spec.update((SCRIPT.get("queries") or {}).get(q, {}))
        if spec.get("latency_ms"):
            time.sleep(int(spec["latency_ms"]) / 1000.0)
        status, body = answer(spec)
        self.send(status, body)

    def do_POST(self):
        global SCRIPT
        doc = self.read_json()
        if doc is None:
            self.send(400, {"error": "expected a JSON object"})
            return
        path = urlsplit(self.path).path
        with LOCK:
            if path == "/_fake/script":
                SCRIPT = doc
            elif path == "/_fake/reset":
                SCRIPT = {}
                del CALLS[:]
            else:
                self.send(404, {"error": "not found"})
                return
        self.send(200, {})


def main():
    return fakelib.serve_small(Handler, fakelib.small_args(__doc__.split("\n")[0]).parse_args())


if __name__ == "__main__":
    sys.exit(main())
