#!/usr/bin/python3
"""router.py - a blue-green traffic router double for deployq's tests.

It stands in front of two backends (the blue and the green color of a service), sends
every request to the live one, and lets deployq switch colors the way a real router or
load balancer API would: a POST whose JSON body names the color. Every switch is recorded
(color, the X-Deployq-Fence header, the body), so tests can assert which switches deployq
made, in which order, and under which lock.

Endpoints:
  POST /switch               {"color": "blue"|"green", ...}: traffic now goes there
                             (400 for anything else; 500 while the script says fail)
  GET  /_fake/calls          {"live": color|null, "switches": [{"at", "color", "fence", "body"}]}
  POST /_fake/script         {"fail_switch": true|false}
  GET  anything else         proxied to the live backend (503 when none is live)

Run: python3 tests/fakes/router.py --port 0 --port-file F --backends '{"blue": URL, "green": URL}'
Only the Python 3 standard library is used.
"""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakelib  # noqa: E402

LOCK = threading.Lock()
STATE = {"live": None, "switches": [], "fail_switch": False, "backends": {}}


class Handler(fakelib.SmallHandler):
    server_version = "deployq-router/1"

    def do_POST(self):
        doc = self.read_json()
        path = self.path.split("?", 1)[0]
        if doc is None:
            self.send(400, '{"error":"expected a JSON object"}')
            return
        with LOCK:
            if path == "/_fake/script":
                STATE["fail_switch"] = bool(doc.get("fail_switch"))
                self.send(200, "{}")
                return
            if path != "/switch":
                self.send(404, '{"error":"not found"}')
                return
            color = doc.get("color")
            if color not in STATE["backends"]:
                self.send(400, '{"error":"unknown color"}')
                return
            if STATE["fail_switch"]:
                self.send(500, '{"error":"scripted failure"}')
                return
            STATE["live"] = color
            STATE["switches"].append({"at": time.time(), "color": color,
                                      "fence": self.headers.get("X-Deployq-Fence"), "body": doc})
        self.send(200, json.dumps({"live": color}))

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        with LOCK:
            if path == "/_fake/calls":
                self.send(200, json.dumps({"live": STATE["live"], "switches": STATE["switches"]}))
                return
            live = STATE["live"]
            backend = STATE["backends"].get(live) if live else None
        if not backend:
            self.send(503, "no color is live", "text/plain")
            return
        try:
            with urllib.request.urlopen(backend + self.path, timeout=5) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        except OSError as e:
            status, body = 502, ("backend %s: %s" % (live, e)).encode()
        self.send(status, body, "text/plain")


def main():
    ap = fakelib.small_args(__doc__.split("\n")[0])
    ap.add_argument("--backends", required=True, help='{"blue": URL, "green": URL}')
    args = ap.parse_args()
    STATE["backends"] = {k: v.rstrip("/") for k, v in json.loads(args.backends).items()}
    return fakelib.serve_small(Handler, args)


if __name__ == "__main__":
    sys.exit(main())
