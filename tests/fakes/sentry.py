#!/usr/bin/python3
"""sentry.py - a double of the Sentry web API (the parts deployq uses), in its real shapes.

deployq reads a release's error events in a watch window (the Sentry probe of
deployq-monitor) and records deploys as Sentry release deploys (deployq-rollback's Sentry
thread). This double answers those calls as sentry.io does, from events the test scripts.

API (every call needs "Authorization: Bearer <token>"; with script.token set, any other
token gets 401 {"detail": "Invalid token"}):
  GET  /api/0/organizations/{org}/events/?field=count()&query=release:"V"&environment=E
       &start=ISO&end=ISO[&project=ID...]
       -> 200 {"data": [{"count()": N}], "meta": {"fields": {"count()": "integer"},
               "units": {"count()": null}}} with a Link header (cursor pagination, no next
               page). N sums the scripted events of release V (and E, and the projects
               when given) whose time lies in [start, end]. field is required; start and
               end go together, or statsPeriod alone (400 {"detail": ...} otherwise).
  POST /api/0/organizations/{org}/releases/   {"version", "projects": [slug...], ...}
       -> 201 the release, or 208 when it exists already; 400 without version or projects
  POST /api/0/organizations/{org}/releases/{version}/deploys/
       {"environment" (required), "name", "url", "dateStarted", "dateFinished", "projects"}
       -> 201 {"id", "environment", "name", "url", "dateStarted", "dateFinished"};
          404 {"detail": "The requested resource does not exist"} without the release
  GET  /api/0/organizations/{org}/releases/{version}/deploys/  -> 200 the list, Link header

Script (POST /_fake/script; other control endpoints as in fakelib.py):
  token        the only token accepted (absent: any Bearer token)
  events       [{"release", "environment"?, "project"?, "count"?: 1, "at"?: unix time}];
               without "at" an event counts in any window, without "environment" or
               "project" in any environment or project
  rate_limit   the next N API calls answer 429 with Retry-After (retry_after, default 1)
  http_status  every API call answers this status with {"detail": "scripted failure"}
  latency_ms   wait this long before answering an API call
Releases and deploys made through the API are kept until /_fake/reset (not by a new
script), so a test can script errors after the release was created.

Run: python3 tests/fakes/sentry.py --port 0 --port-file F. Standard library only.
"""

import os
import re
import sys
import time
from urllib.parse import parse_qs, unquote, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakelib  # noqa: E402

ORG = r"/api/0/organizations/(?P<org>[^/]+)"
EVENTS = re.compile(ORG + r"/events/$")
RELEASES = re.compile(ORG + r"/releases/$")
DEPLOYS = re.compile(ORG + r"/releases/(?P<version>[^/]+)/deploys/$")


def link(base):
    """Sentry's cursor pagination header for a single page."""
    return ('<%s?cursor=0:0:1>; rel="previous"; results="false"; cursor="0:0:1", '
            '<%s?cursor=0:100:0>; rel="next"; results="false"; cursor="0:100:0"' % (base, base))


def release_of(query):
    """The release:V term of a Sentry search query (quoted or bare), or None."""
    m = re.search(r'(?:^|\s)release:"((?:[^"\\]|\\.)*)"', query)
    if m:
        return re.sub(r"\\(.)", r"\1", m.group(1))
    m = re.search(r"(?:^|\s)release:(\S+)", query)
    return m.group(1) if m else None


class Sentry(fakelib.App):
    def __init__(self, state):
        super().__init__(state)

    def route(self, handler, method, path, query, body, auth):
        s = self.state.script
        if s.get("latency_ms"):
            time.sleep(int(s["latency_ms"]) / 1000.0)
        got = handler.headers.get("Authorization") or ""
        if not got.startswith("Bearer ") or (s.get("token") and got != "Bearer " + s["token"]):
            return 401, {"detail": "Invalid token"}, {}
        with self.state.lock:
            if int(s.get("rate_limit", 0)) > self.state.counters.get("limited", 0):
                self.state.bump("limited")
                return 429, {"detail": "You are attempting to use this endpoint too frequently. "
                                       "Limit is 40 requests in 1 seconds"}, \
                    {"Retry-After": str(int(s.get("retry_after", 1)))}
        if s.get("http_status"):
            return int(s["http_status"]), {"detail": "scripted failure"}, {}
        m = EVENTS.match(path)
        if m and method == "GET":
            return self.events(handler, path)
        m = RELEASES.match(path)
        if m and method == "POST":
            return self.new_release(m.group("org"), body)
        m = DEPLOYS.match(path)
        if m and method == "POST":
            return self.new_deploy(m.group("org"), unquote(m.group("version")), body)
        if m and method == "GET":
            with self.state.lock:
                rel = self.state.store.get(("release", m.group("org"), unquote(m.group("version"))))
                if rel is None:
                    return 404, {"detail": "The requested resource does not exist"}, {}
                return 200, list(reversed(rel["deploys"])), {"Link": link(path)}
        return 404, {"detail": "The requested resource does not exist"}, {}

    def events(self, handler, path):
        # the real API repeats keys (project=1&project=2): fakelib keeps only the last
        q = parse_qs(urlsplit(handler.path).query, keep_blank_values=True)
        one = {k: v[-1] for k, v in q.items()}
        if "count()" not in q.get("field", []):
            return 400, {"detail": "No columns selected"}, {}
        if ("start" in one) != ("end" in one):
            return 400, {"detail": "start and end are both required"}, {}
        if "start" in one:
            start, end = fakelib.parse_iso(one["start"]), fakelib.parse_iso(one["end"])
            if start is None or end is None or end < start:
                return 400, {"detail": "Invalid date range"}, {}
            end += 1  # the ISO times carry milliseconds; parse_iso drops them
        elif "statsPeriod" in one:
            start, end = 0, time.time() + 1
        else:
            start, end = time.time() - 14 * 86400, time.time() + 1
        release = release_of(one.get("query", ""))
        envs = q.get("environment")
        projects = [int(p) for p in q.get("project", []) if p.lstrip("-").isdigit()]
        n = 0
        with self.state.lock:
            for e in self.state.script.get("events", []):
                if release is not None and e.get("release") != release:
                    continue
                if envs and "environment" in e and e["environment"] not in envs:
                    continue
                if projects and -1 not in projects and "project" in e and int(e["project"]) not in projects:
                    continue
                at = e.get("at")
                if at is not None and not (start <= float(at) < end):
                    continue
                n += int(e.get("count", 1))
        return 200, {"data": [{"count()": n}],
                     "meta": {"fields": {"count()": "integer"}, "units": {"count()": None}}}, \
            {"Link": link(path)}

    def new_release(self, org, body):
        if not isinstance(body, dict) or not body.get("version"):
            return 400, {"version": ["This field is required."]}, {}
        if not isinstance(body.get("projects"), list) or not body["projects"]:
            return 400, {"projects": ["This field is required."]}, {}
        key = ("release", org, body["version"])
        with self.state.lock:
            rel = self.state.store.get(key)
            status = 208
            if rel is None:
                status = 201
                rel = {"version": body["version"], "projects": body["projects"],
                       "dateCreated": fakelib.iso(time.time()), "deploys": []}
                self.state.store[key] = rel
            out = {k: v for k, v in rel.items() if k != "deploys"}
            out["projects"] = [{"slug": p, "name": p} for p in rel["projects"]]
            out["deployCount"] = len(rel["deploys"])
        return status, out, {}

    def new_deploy(self, org, version, body):
        with self.state.lock:
            rel = self.state.store.get(("release", org, version))
            if rel is None:
                return 404, {"detail": "The requested resource does not exist"}, {}
            if not isinstance(body, dict) or not body.get("environment"):
                return 400, {"environment": ["This field is required."]}, {}
            dep = {"id": str(self.state.next_id()), "environment": body["environment"],
                   "name": body.get("name"), "url": body.get("url"),
                   "dateStarted": body.get("dateStarted"),
                   "dateFinished": body.get("dateFinished") or fakelib.iso(time.time())}
            rel["deploys"].append(dep)
        return 201, dep, {}


if __name__ == "__main__":
    fakelib.serve(Sentry, __doc__.split("\n")[0])
