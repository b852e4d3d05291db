"""fakelib - the shared machinery of deployq's provider test doubles.

Each double (github.py, railway.py, circleci.py, webhook.py) is a local HTTP server that
speaks one provider's API shapes, is scriptable per test through a control endpoint and
records every call, so tests can assert what deployq sent (the fence, never the token) and
that it never ran two deploys at once on one target.

Control endpoints (every double):
  POST /_fake/script  replace the script (a JSON object, see Script below); resets the
                      per-script counters but keeps recorded calls
  POST /_fake/reset   forget calls, runs and the script
  GET  /_fake/calls   {"calls": [...], "max_concurrent": {target: n}, "max_concurrent_any": n,
                       "active": {target: n}}

Script keys (each double documents which it understands):
  mode          succeed | fail_after_building | crash | in_flight_forever | startup_failure |
                http_5xx | http_401 | http_402 | http_403 | rate_limit | graphql_error |
                no_pipeline | no_run | status_5xx
  fail_times    how many deploy calls (or status calls, for status_5xx) the refusal modes
                hit before behaving as "succeed"; absent means every call
  retry_after   seconds sent in Retry-After by rate_limit (default 1)
  retry_after_date  send Retry-After as an HTTP date instead of seconds
  steps         status polls that stay in flight before the terminal state (default 2)
  delay_ms      hold every deploy response this long (to provoke client timeouts)
  refuse_return_run_details  (github) 400 when the dispatch carries that field
  message       text for refusals and CircleCI's 200-with-message

Only the Python 3 standard library is used. Run a double as
  python3 tests/fakes/railway.py --port 0 --port-file F [--record FILE]
It writes the chosen port to F (atomically) and, with --record, appends each call to FILE
as one JSON line.
"""

import argparse
import calendar
import email.utils
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

AUTH_HEADERS = ("authorization", "circle-token", "project-access-token")


class State:
    """Everything a double remembers. One lock guards it all: calls are few."""

    def __init__(self, record_path=None):
        self.lock = threading.Lock()
        self.record_path = record_path
        self.reset()

    def reset(self):
        self.script = {"mode": "succeed"}
        self.calls = []
        self.runs = {}
        self.seq = 1000
        self.active = {}
        self.max_active = {}
        self.counters = {}
        self.store = {}  # a double's own records (github.py: deployments), forgotten on reset

    # --- concurrency per target ---
    def start_run(self, target):
        self.active[target] = self.active.get(target, 0) + 1
        self.max_active[target] = max(self.max_active.get(target, 0), self.active[target])

    def end_run(self, run):
        if run.get("ended"):
            return
        run["ended"] = True
        t = run["target"]
        self.active[t] = max(0, self.active.get(t, 0) - 1)

    def next_id(self):
        self.seq += 1
        return self.seq

    def bump(self, name):
        """Count an event for the current script; returns the count before this one."""
        n = self.counters.get(name, 0)
        self.counters[name] = n + 1
        return n


def refusal(state, kind, body_for):
    """The scripted refusal for call kind ("deploy" or "status"), or None.

    body_for(status, message) builds the API's error body. Called with the lock held.
    """
    s = state.script
    mode = s.get("mode", "succeed")
    wanted = {
        "deploy": ("http_5xx", "http_401", "http_402", "http_403", "rate_limit"),
        "status": ("status_5xx",),
    }[kind]
    if mode not in wanted:
        return None
    n = state.bump("refusal_" + kind)
    if "fail_times" in s and n >= int(s["fail_times"]):
        return None
    status = {"http_5xx": 503, "status_5xx": 503, "http_401": 401, "http_402": 402,
              "http_403": 403, "rate_limit": 429}[mode]
    default_msg = {503: "Service Unavailable", 401: "Bad credentials", 402: "Payment Required",
                   403: "Forbidden", 429: "API rate limit exceeded"}[status]
    headers = {}
    if status == 429:
        ra = int(s.get("retry_after", 1))
        if s.get("retry_after_date"):
            headers["Retry-After"] = email.utils.formatdate(time.time() + ra, usegmt=True)
        else:
            headers["Retry-After"] = str(ra)
        headers["X-RateLimit-Remaining"] = "0"
    return status, headers, body_for(status, s.get("message", default_msg))


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def parse_iso(s):
    try:
        return calendar.timegm(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, TypeError):
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "deployq-fake/1"

    def log_message(self, fmt, *args):  # quiet: tests read /_fake/calls instead
        pass

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def send(self, status, body=None, headers=None):
        data = b""
        ctype = "application/json; charset=utf-8"
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
        elif isinstance(body, str):
            data = body.encode()
            ctype = "text/plain; charset=utf-8"
        elif isinstance(body, bytes):
            data = body
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if status != 204 and data:
            self.wfile.write(data)

    def dispatch(self, method):
        app = self.server.app
        state = app.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        self.raw_body = raw  # the exact bytes, for a double that checks a signature over them
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")

        if url.path.startswith("/_fake/"):
            return self.control(method, url.path, body)

        headers = {}
        auth = {"present": False, "scheme": None}
        for k, v in self.headers.items():
            lk = k.lower()
            if lk in AUTH_HEADERS:
                auth["present"] = True
                auth["scheme"] = v.split(" ", 1)[0] if lk == "authorization" else k
            else:
                headers[k] = v
        call = {"time": time.time(), "method": method, "path": url.path, "query": query,
                "headers": headers, "auth": auth, "fence": self.headers.get("X-Deployq-Fence"),
                "body": body}
        with state.lock:
            state.calls.append(call)
            if state.record_path:
                with open(state.record_path, "a") as f:
                    f.write(json.dumps(call) + "\n")
        try:
            status, out, hdrs = app.route(self, method, url.path, query, body, auth)
        except Exception as exc:  # a bug in a double must show, not hang a test
            status, out, hdrs = 500, {"message": "fake error: %r" % (exc,)}, {}
        self.send(status, out, hdrs)

    def control(self, method, path, body):
        state = self.server.app.state
        with state.lock:
            if path == "/_fake/script" and method == "POST":
                state.script = body if isinstance(body, dict) else {"mode": "succeed"}
                state.counters = {}
                return self.send(200, {"ok": True})
            if path == "/_fake/reset" and method == "POST":
                state.reset()
                return self.send(200, {"ok": True})
            if path == "/_fake/calls" and method == "GET":
                any_max = max(state.max_active.values()) if state.max_active else 0
                return self.send(200, {"calls": state.calls, "max_concurrent": state.max_active,
                                       "max_concurrent_any": any_max, "active": state.active})
        return self.send(404, {"message": "unknown control endpoint"})


class App:
    """Base of a double: subclasses implement route()."""

    def __init__(self, state):
        self.state = state

    def route(self, handler, method, path, query, body, auth):
        raise NotImplementedError

    def deploy_delay(self):
        d = self.state.script.get("delay_ms")
        if d:
            time.sleep(int(d) / 1000.0)


def publish_port(server, port_file, echo):
    """Say which port server got: into port_file (atomically, so a reader never sees half
    a number) and, when echo is true, on stdout."""
    port = server.server_address[1]
    if port_file:
        tmp = port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, port_file)
    if echo:
        print(port, flush=True)


def serve(app_class, description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port-file")
    ap.add_argument("--record")
    args = ap.parse_args()

    state = State(args.record)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.app = app_class(state)
    publish_port(server, args.port_file, True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    sys.exit(0)


# ---- the doubles that are not provider APIs (health.py, router.py, prometheus.py) ----

class SmallHandler(BaseHTTPRequestHandler):
    """Base of a small double: quiet, with a way to answer and to read a JSON object."""

    protocol_version = "HTTP/1.1"
    default_ctype = "application/json"

    def log_message(self, fmt, *args):  # quiet: tests read /_fake/calls instead
        pass

    def send(self, status, body, ctype=None):
        """Answer status with body: a dict or list (sent as JSON), str or bytes."""
        if isinstance(body, (dict, list)):
            body, ctype = json.dumps(body), "application/json"
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype or self.default_ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self):
        """The request body as a JSON object: {} when empty, None when not an object."""
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            doc = json.loads(raw or b"{}")
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None


def small_args(description):
    """The argument parser every small double starts from: --port and --port-file."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    return ap


def serve_small(handler_class, args):
    """Serve handler_class on 127.0.0.1:args.port until interrupted; the port goes to
    args.port_file, or to stdout without one."""
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_class)
    server.daemon_threads = True
    publish_port(server, args.port_file, not args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
