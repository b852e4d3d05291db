#!/usr/bin/python3
"""router.py - a blue-green traffic router double for deployq's tests.

It stands in front of two backends (the blue and the green color of a service), sends
every request to the live one, and lets deployq switch colors the way a real router or
load balancer API would: a POST whose JSON body names the color. Every switch is recorded
(color, the X-Deployq-Fence header, the body), so tests can assert which switches deployq
made, in which order, and under which lock.

It also takes weights, as a canary's router does: once told {"blue": n, "green": n}, it
spreads requests over both colors by a smooth weighted round-robin (deterministic: at
weights 5/95, exactly 5 of every 100 requests go to blue), until a switch sends everything
to one color again. Weight settings are recorded like switches.

Endpoints:
  POST /switch               {"color": "blue"|"green", ...}: traffic now goes there
                             (400 for anything else; 500 while the script says fail)
  POST /weights              {"blue": n, "green": n} (whole numbers 0..256): traffic spread
                             by weight (400 for anything else; 500 while fail_switch)
  GET  /weights              {"blue": n, "green": n}: the weights set, else 100/0 for the
                             live color (0/0 when none is)
  GET  /_fake/calls          {"live": color|null, "weights": {...}|null,
                              "switches": [{"at", "color", "fence", "body"}],
                              "weight_sets": [{"at", "weights", "fence", "body"}]}
  POST /_fake/script         {"fail_switch": true|false, "lie_weights": true|false}
                             lie_weights: POST /weights is recorded and answered 200 but not
                             applied (a router that says yes and does nothing)
  GET  anything else         proxied to the live backend, or by weight once weights are set
                             (503 when none is live / all weights are 0)

Run: python3 tests/fakes/router.py --port 0 --port-file F [--backends '{"blue": URL, "green": URL}']
(without --backends it only records: switches are refused, weights are kept)
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
STATE = {"live": None, "switches": [], "fail_switch": False, "backends": {},
         "weights": None, "weight_sets": [], "lie_weights": False, "current": {"blue": 0, "green": 0}}
COLORS = ("blue", "green")


def weights_of(doc):
    """{"blue": n, "green": n} from a request body, or None when it is not that."""
    if not isinstance(doc, dict):
        return None
    out = {}
    for c in COLORS:
        v = doc.get(c)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > 256:
            return None
        out[c] = v
    return out


def current_weights():
    """What GET /weights says (lock held)."""
    if STATE["weights"] is not None:
        return dict(STATE["weights"])
    return {c: (100 if STATE["live"] == c else 0) for c in COLORS}


def pick():
    """The color the next request goes to (lock held): the live one, or by smooth
    weighted round-robin (nginx's) once weights are set; None when there is none."""
    w = STATE["weights"]
    if w is None:
        return STATE["live"]
    total = sum(w.values())
    if total == 0:
        return None
    cur = STATE["current"]
    for c in COLORS:
        cur[c] += w[c]
    best = max(COLORS, key=lambda c: cur[c])
    cur[best] -= total
    return best


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
                STATE["lie_weights"] = bool(doc.get("lie_weights"))
                self.send(200, "{}")
                return
            if path == "/weights":
                w = weights_of(doc)
                if w is None:
                    self.send(400, '{"error":"expected {\\"blue\\": n, \\"green\\": n}"}')
                    return
                if STATE["fail_switch"]:
                    self.send(500, '{"error":"scripted failure"}')
                    return
                STATE["weight_sets"].append({"at": time.time(), "weights": w,
                                             "fence": self.headers.get("X-Deployq-Fence"), "body": doc})
                if not STATE["lie_weights"]:
                    STATE["weights"] = w
                    STATE["current"] = {c: 0 for c in COLORS}
                self.send(200, json.dumps(w))
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
            STATE["weights"] = None  # a switch sends everything to one color again
            STATE["switches"].append({"at": time.time(), "color": color,
                                      "fence": self.headers.get("X-Deployq-Fence"), "body": doc})
        self.send(200, json.dumps({"live": color}))

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        with LOCK:
            if path == "/_fake/calls":
                self.send(200, json.dumps({"live": STATE["live"], "weights": STATE["weights"],
                                           "switches": STATE["switches"],
                                           "weight_sets": STATE["weight_sets"]}))
                return
            if path == "/weights":
                self.send(200, json.dumps(current_weights()))
                return
            live = pick()
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
    ap.add_argument("--backends", default="{}", help='{"blue": URL, "green": URL}')
    args = ap.parse_args()
    STATE["backends"] = {k: v.rstrip("/") for k, v in json.loads(args.backends).items()}
    return fakelib.serve_small(Handler, args)


if __name__ == "__main__":
    sys.exit(main())
