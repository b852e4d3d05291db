#!/usr/bin/env python3
"""double.py - the provider and health double of the fault-injection suite (tests/chaos/).

One process stands in for every deploy target's providers *and* for the services they
deploy, so it sees everything that matters for the invariants in one place, under one
lock: which provider deploys ran on which target and when, with which fence, for which
deployment id, and which version each target serves now.

Providers speak the "webhook" API of deployq (docs/providers.md; the same shapes as
tests/fakes/webhook.py), one per path prefix, so a target's chain can be [p1, p2]:
  POST /<prov>/deploy          {"action","deployment_id","service","environment","version",
                               "fence"} -> 202 {"id": "<prov>-N", "status": "accepted"}
  GET  /<prov>/status/<id>     {"id","status": running|succeeded|failed,"url","log_url"}
A run stays "running" for its first `steps` polls (any poller), then succeeds. When a run
succeeds, its target serves the run's version from then on.

The services:
  GET  /health/<service>/<environment>   500 "bad" when the version served is a bad one
                                         (its name starts with "bad-"), else 200 "ok";
                                         slower while a health_slow fault lasts

Faults (POST /_chaos/fault, a JSON object; counts are consumed by the calls they hit):
  {"provider": "p1", "deploy_5xx": N}     the next N deploy calls answer 503 (nothing started)
  {"provider": "p1", "deploy_timeout": N, "delay_ms": D}
                                          the next N deploy calls answer 504 after D ms,
                                          nothing started (a client timeout, an idle provider)
  {"provider": "p1", "status_5xx": N}     the next N status calls answer 503
  {"provider": "p1", "status_slow": N, "delay_ms": D}   the next N status calls take D ms
  {"health_slow_s": S, "latency_ms": L}   every health answer takes L ms for S seconds

Record (GET /_chaos/record): every run with its target, provider, action, deployment id,
version, fence, start and end; deploy calls refused; status polls per run; every status
poll or deploy call whose fence was below the newest fence seen for its target (a stale
lock holder reaching the provider); the most runs ever active at once per target; the
overlapping pairs. Tokens are never recorded: only whether an Authorization header came.

Run: python3 tests/chaos/double.py --port-file F [--steps-min A --steps-max B --seed S]
Only the Python 3 standard library is used.
"""

import argparse
import json
import os
import random
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEPLOY = re.compile(r"^/(p[0-9]+)/deploy$")
STATUS = re.compile(r"^/(p[0-9]+)/status/([^/]+)$")
HEALTH = re.compile(r"^/health/([^/]+)/([^/]+)$")


class State:
    def __init__(self, steps_min, steps_max, seed):
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.steps = (steps_min, steps_max)
        self.seq = 0
        self.runs = {}           # id -> run
        self.order = []          # run ids in start order
        self.refused = []        # deploy calls answered with an error (nothing started)
        self.active = {}         # target -> set of run ids running
        self.max_active = {}     # target -> most runs at once
        self.overlaps = []       # [target, run id, run id] when a run starts beside another
        self.max_fence = {}      # target -> newest fence seen on a call
        self.stale = []          # calls whose fence was below the target's newest
        self.serving = {}        # target -> version served
        self.faults = {}         # provider -> {kind: remaining}
        self.fault_delay = {}    # provider -> {kind: ms}
        self.health_slow_until = 0.0
        self.health_latency_ms = 0
        self.health_calls = 0
        self.unauthenticated = 0  # provider calls without an Authorization header

    def take(self, prov, kind):
        """Consume one count of a fault; returns its delay in ms (0 when none) or None."""
        left = self.faults.get(prov, {}).get(kind, 0)
        if left <= 0:
            return None
        self.faults[prov][kind] = left - 1
        return self.fault_delay.get(prov, {}).get(kind, 0)

    def see_fence(self, target, fence, what):
        if fence is None:
            return
        top = self.max_fence.get(target, 0)
        if fence < top:
            self.stale.append({"target": target, "fence": fence, "newest": top, "call": what,
                               "at": time.time()})
        else:
            self.max_fence[target] = fence


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "deployq-chaos-double/1"

    def log_message(self, fmt, *args):
        pass

    def send(self, status, body, ctype="application/json"):
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (a timeout fault): nothing to tell it

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n > 0 else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def fence(self):
        try:
            return int(self.headers.get("X-Deployq-Fence"))
        except (TypeError, ValueError):
            return None

    def do_GET(self):
        st = self.server.state
        path = self.path.split("?", 1)[0]
        if path == "/_chaos/record":
            with st.lock:
                doc = {"runs": [st.runs[i] for i in st.order], "refused": st.refused,
                       "max_active": st.max_active, "overlaps": st.overlaps, "stale": st.stale,
                       "serving": st.serving, "health_calls": st.health_calls,
                       "unauthenticated": st.unauthenticated}
            return self.send(200, doc)
        m = HEALTH.match(path)
        if m:
            target = "%s/%s" % (m.group(1), m.group(2))
            with st.lock:
                st.health_calls += 1
                version = st.serving.get(target)
                delay = st.health_latency_ms if time.time() < st.health_slow_until else 0
            if delay:
                time.sleep(delay / 1000.0)
            if version is not None and version.startswith("bad-"):
                return self.send(500, "bad", "text/plain")
            return self.send(200, "ok", "text/plain")
        m = STATUS.match(path)
        if m:
            prov, rid = m.group(1), m.group(2)
            fence = self.fence()
            with st.lock:
                if "authorization" not in (k.lower() for k in self.headers.keys()):
                    st.unauthenticated += 1
                run = st.runs.get(rid)
                if run is not None:
                    st.see_fence(run["target"], fence, "status %s" % rid)
                refuse = st.take(prov, "status_5xx")
                slow = st.take(prov, "status_slow")
            if slow:
                time.sleep(slow / 1000.0)
            if refuse is not None:
                return self.send(503, {"error": "Service Unavailable"})
            with st.lock:
                if run is None:
                    return self.send(404, {"error": "not_found"})
                run["polls"] += 1
                if run["status"] == "running" and run["polls"] > run["steps"]:
                    run["status"] = "succeeded"
                    run["end"] = time.time()
                    st.active.get(run["target"], set()).discard(rid)
                    st.serving[run["target"]] = run["version"]
                doc = {"id": rid, "status": run["status"],
                       "url": "https://example.test/deploys/" + rid,
                       "log_url": "https://example.test/deploys/%s/log" % rid}
            return self.send(200, doc)
        return self.send(404, {"error": "not_found"})

    def do_POST(self):
        st = self.server.state
        path = self.path.split("?", 1)[0]
        body = self.body()
        if path == "/_chaos/fault":
            if not isinstance(body, dict):
                return self.send(400, {"error": "expected a JSON object"})
            with st.lock:
                if "health_slow_s" in body:
                    st.health_slow_until = time.time() + float(body["health_slow_s"])
                    st.health_latency_ms = int(body.get("latency_ms", 1000))
                prov = body.get("provider")
                if prov:
                    for kind in ("deploy_5xx", "deploy_timeout", "status_5xx", "status_slow"):
                        if kind in body:
                            st.faults.setdefault(prov, {})[kind] = int(body[kind])
                            st.fault_delay.setdefault(prov, {})[kind] = int(body.get("delay_ms", 0))
            return self.send(200, {"ok": True})
        m = DEPLOY.match(path)
        if not m:
            return self.send(404, {"error": "not_found"})
        prov = m.group(1)
        fence = self.fence()
        if not isinstance(body, dict) or "deployment_id" not in body:
            return self.send(400, {"error": "invalid_payload"})
        target = "%s/%s" % (body.get("service"), body.get("environment"))
        with st.lock:
            if "authorization" not in (k.lower() for k in self.headers.keys()):
                st.unauthenticated += 1
            st.see_fence(target, fence, "deploy %s" % body.get("deployment_id"))
            timeout = st.take(prov, "deploy_timeout")
            refuse = st.take(prov, "deploy_5xx") if timeout is None else None
            if timeout is not None or refuse is not None:
                st.refused.append({"provider": prov, "target": target, "fence": fence,
                                   "deployment_id": body.get("deployment_id"), "at": time.time(),
                                   "kind": "deploy_timeout" if timeout is not None else "deploy_5xx"})
        if timeout is not None:
            time.sleep(timeout / 1000.0)
            return self.send(504, {"error": "Gateway Timeout"})
        if refuse is not None:
            return self.send(503, {"error": "Service Unavailable"})
        with st.lock:
            st.seq += 1
            rid = "%s-%d" % (prov, st.seq)
            run = {"id": rid, "provider": prov, "target": target, "action": body.get("action"),
                   "deployment_id": body.get("deployment_id"), "version": body.get("version"),
                   "fence": fence, "body_fence": body.get("fence"), "start": time.time(),
                   "end": None, "status": "running", "polls": 0,
                   "steps": st.rng.randint(*st.steps)}
            st.runs[rid] = run
            st.order.append(rid)
            act = st.active.setdefault(target, set())
            for other in act:
                st.overlaps.append([target, other, rid])
            act.add(rid)
            st.max_active[target] = max(st.max_active.get(target, 0), len(act))
        return self.send(202, {"id": rid, "status": "accepted"})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--steps-min", type=int, default=2)
    ap.add_argument("--steps-max", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args.steps_min, args.steps_max, args.seed)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.replace(tmp, args.port_file)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
