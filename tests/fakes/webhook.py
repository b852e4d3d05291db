#!/usr/bin/env python3
"""webhook.py - a local double of a generic HTTP deploy endpoint (deployq's "webhook"
provider), also used by the HTTP client's tests.

  POST /deploy, POST /rollback  {"action", "deployment_id", "service", "environment",
       "version", "fence"} -> 202 {"id": "wh-N", "status": "accepted"}; with script
       "sync": true -> 200 {"id", "status": "succeeded" | "failed"} (the final answer)
  GET  /status/{id}  -> {"status": "running" | "succeeded" | "failed", "url", "log_url"}
  POST /cancel/{id}  -> 200 {"status": "canceled"}
  GET  /big          -> a body of script "size" bytes (default 2 MiB)
  GET  /slow         -> 200 after script "delay_ms"

Script modes: succeed, fail_after_building, in_flight_forever, refusals on /deploy
(http_5xx, http_401, http_402, http_403, rate_limit, with fail_times/retry_after) and
status_5xx on /status. Auth is optional (Bearer); it is recorded as present or not.
Script "done_after_ms": N makes a run terminal by the clock instead of by polls: the
first status poll N ms or more after the deploy call sees the end, however many polls
came before (a deployment that finishes while nobody watches it).

It is also a receiver of deployq's signed JSON notifications, checking them as a real
receiver would (docs/operations.md, "Receiving webhooks"):

  POST /notify[/...]  the event; header X-Deployq-Signature: t=<unix>,v1=<hex> where hex is
       HMAC-SHA256(secret, "<t>.<raw body>"). 204 when it verifies; 401
       {"error": "missing_signature" | "bad_signature" | "stale_signature"} otherwise
       (stale: t more than "tolerance_s" (default 300) away from now). The secret is the
       script's "notify_secret"; without one every call is refused (missing_secret).
       Script "notify_delay_ms" answers that much later (a slow receiver).
"""

import hashlib
import hmac
import re
import time

import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import fakelib  # noqa: E402

STATUS = re.compile(r"^/status/([^/]+)$")
CANCEL = re.compile(r"^/cancel/([^/]+)$")


def wh_error(status, message):
    return {"error": message}


def check_signature(secret, header, raw, tolerance_s, now=None):
    """None when header signs raw with secret within tolerance_s of now, else the reason."""
    if not header:
        return "missing_signature"
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts.get("t", ""))
    except ValueError:
        return "bad_signature"
    expected = hmac.new(secret.encode(), str(t).encode() + b"." + raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        return "bad_signature"
    if abs((now if now is not None else time.time()) - t) > tolerance_s:
        return "stale_signature"
    return None


class Webhook(fakelib.App):
    def route(self, h, method, path, query, body, auth):
        st = self.state
        if (path == "/notify" or path.startswith("/notify/")) and method == "POST":
            s = st.script
            if s.get("notify_delay_ms"):
                time.sleep(int(s["notify_delay_ms"]) / 1000.0)
            if not s.get("notify_secret"):
                return 401, {"error": "missing_secret"}, {}
            why = check_signature(s["notify_secret"], h.headers.get("X-Deployq-Signature"), h.raw_body,
                                  int(s.get("tolerance_s", 300)))
            if why:
                return 401, {"error": why}, {}
            return 204, None, {}
        if path in ("/deploy", "/rollback") and method == "POST":
            self.deploy_delay()
            with st.lock:
                r = fakelib.refusal(st, "deploy", wh_error)
                if r:
                    return r[0], r[2], r[1]
                s = st.script
                if not isinstance(body, dict) or "deployment_id" not in body:
                    return 400, {"error": "invalid_payload"}, {}
                rid = "wh-%d" % st.next_id()
                mode = s.get("mode", "succeed")
                run = {"id": rid, "mode": mode, "steps": int(s.get("steps", 2)), "polls": 0,
                       "status": "running", "target": "%s/%s" % (body.get("service"), body.get("environment"))}
                if "done_after_ms" in s:
                    run["done_at"] = time.monotonic() + int(s["done_after_ms"]) / 1000.0
                st.runs[rid] = run
                if s.get("sync"):
                    status = "failed" if mode == "fail_after_building" else "succeeded"
                    return 200, {"id": rid, "status": status}, {}
                st.start_run(run["target"])
                return 202, {"id": rid, "status": "accepted"}, {}

        m = STATUS.match(path)
        if m and method == "GET":
            with st.lock:
                r = fakelib.refusal(st, "status", wh_error)
                if r:
                    return r[0], r[2], r[1]
                run = st.runs.get(m.group(1))
                if run is None:
                    return 404, {"error": "not_found"}, {}
                if run["status"] == "running":
                    polls = run["polls"]
                    run["polls"] += 1
                    if "done_at" in run:
                        over = time.monotonic() >= run["done_at"]
                    else:
                        over = polls >= run["steps"]
                    if run["mode"] != "in_flight_forever" and over:
                        run["status"] = "failed" if run["mode"] == "fail_after_building" else "succeeded"
                        st.end_run(run)
                return 200, {"id": run["id"], "status": run["status"],
                             "url": "https://example.test/deploys/" + run["id"],
                             "log_url": "https://example.test/deploys/%s/log" % run["id"]}, {}

        m = CANCEL.match(path)
        if m and method == "POST":
            with st.lock:
                run = st.runs.get(m.group(1))
                if run is None:
                    return 404, {"error": "not_found"}, {}
                if run["status"] == "running":
                    run["status"] = "canceled"
                    st.end_run(run)
                return 200, {"status": run["status"]}, {}

        if path == "/big" and method == "GET":
            size = int(st.script.get("size", 2 * 1024 * 1024))
            return 200, b"x" * size, {}
        if path == "/slow":
            time.sleep(int(st.script.get("delay_ms", 2000)) / 1000.0)
            return 200, {"ok": True}, {}
        return 404, {"error": "not_found"}, {}


if __name__ == "__main__":
    fakelib.serve(Webhook, "generic webhook deploy endpoint double")
