#!/usr/bin/env python3
"""circleci.py - a local double of the CircleCI API v2, as deployq uses it.

  POST /api/v2/project/{vcs}/{org}/{repo}/pipeline      {"branch", "parameters"}
  POST /api/v2/project/{vcs}/{org}/{repo}/pipeline/run  {"definition_id", "config",
                                                         "checkout", "parameters"}
       -> 201 {"id", "state": "created", "number", "created_at"}; with mode no_pipeline
       -> 200 {"message": ...} and nothing is created (the real API's way of saying no)
  GET  /api/v2/pipeline/{id}           -> the pipeline (state created|errored|...)
  GET  /api/v2/pipeline/{id}/workflow  -> {"items": [...], "next_page_token": null}; the
       listing is empty on the first call (setup still running), as right after a trigger
  GET  /api/v2/workflow/{id}           -> {"id", "name", "status", ...}; status running
       for "steps" polls, then success | failed (fail_after_building)
  POST /api/v2/workflow/{id}/cancel    -> 202 {"message": "Accepted."}
  GET  /api/v2/project/{vcs}/{org}/{repo}/pipeline?branch=  -> {"items": [...],
       "next_page_token": null}, newest first, each with trigger_parameters (the
       pipeline parameters it was triggered with)

Auth: "Circle-Token: <t>" (or Authorization); without it 401 {"message": "You must log in
first."}. Script modes: succeed, fail_after_building, in_flight_forever (on_hold then
running forever), no_pipeline, errored (the pipeline errors before any workflow),
http_5xx/http_401/http_402/http_403/rate_limit on the trigger, status_5xx on workflow GETs.
Script key create_then: "502" creates the pipeline, then answers 502 (the answer lost on
the way); "hang" creates it and answers only after hang_ms (default 5000). Script key
cancel: "refuse" answers the cancel 500, "ignore" answers 202 but the workflow carries on.
"""

import re
import time
import uuid

import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import fakelib  # noqa: E402

TRIGGER = re.compile(r"^/api/v2/project/([^/]+/[^/]+/[^/]+)/pipeline(/run)?$")
PIPELINE = re.compile(r"^/api/v2/pipeline/([^/]+)$")
PIPELINE_WF = re.compile(r"^/api/v2/pipeline/([^/]+)/workflow$")
WORKFLOW = re.compile(r"^/api/v2/workflow/([^/]+)$")
WF_CANCEL = re.compile(r"^/api/v2/workflow/([^/]+)/cancel$")


def cc_error(status, message):
    return {"message": message}


class CircleCI(fakelib.App):
    def wf_view(self, p, wf):
        return {"id": wf["id"], "name": wf["name"], "status": wf["status"], "pipeline_id": p["id"],
                "pipeline_number": p["number"], "project_slug": p["slug"],
                "created_at": fakelib.iso(p["created"]),
                "stopped_at": fakelib.iso(time.time()) if wf["status"] in ("success", "failed", "canceled") else None}

    def pipe_view(self, p):
        return {"id": p["id"], "state": p["state"], "number": p["number"], "project_slug": p["slug"],
                "created_at": fakelib.iso(p["created"]), "errors": p.get("errors", []),
                "trigger_parameters": dict(p.get("params", {})),
                "vcs": {"branch": p.get("branch"), "provider_name": "GitHub"}}

    def find_wf(self, wid):
        for p in self.state.runs.values():
            for wf in p["workflows"]:
                if wf["id"] == wid:
                    return p, wf
        return None, None

    def advance(self, p, wf):
        if wf["status"] in ("success", "failed", "canceled", "error", "not_run", "unauthorized"):
            return
        polls = wf["polls"]
        wf["polls"] += 1
        mode = p["mode"]
        if mode == "in_flight_forever":
            wf["status"] = "on_hold" if polls == 0 else "running"
        elif polls < p["steps"]:
            wf["status"] = "running"
        else:
            wf["status"] = "failed" if mode == "fail_after_building" else "success"
        if wf["status"] not in ("running", "on_hold", "failing"):
            self.state.end_run(p)

    def route(self, h, method, path, query, body, auth):
        st = self.state
        m = TRIGGER.match(path)
        if m and method == "POST":
            self.deploy_delay()
            with st.lock:
                if not auth["present"]:
                    return 401, {"message": "You must log in first."}, {}
                r = fakelib.refusal(st, "deploy", cc_error)
                if r:
                    return r[0], r[2], r[1]
                s = st.script
                if s.get("mode") == "no_pipeline":
                    return 200, {"message": s.get("message", "No pipeline was created: no config changes")}, {}
                if not isinstance(body, dict):
                    return 400, {"message": "Invalid JSON body."}, {}
                if m.group(2) and "definition_id" not in body:
                    return 400, {"message": "definition_id is required"}, {}
                params = body.get("parameters") or {}
                if len(params) > 100 or any(len(k) > 128 for k in params) or \
                        any(isinstance(v, str) and len(v) > 512 for v in params.values()):
                    return 400, {"message": "Invalid parameters"}, {}
                number = st.next_id()
                pid = str(uuid.uuid4())
                mode = s.get("mode", "succeed")
                if mode not in ("fail_after_building", "in_flight_forever", "errored"):
                    mode = "succeed"
                p = {"id": pid, "number": number, "slug": m.group(1), "state": "created", "mode": mode,
                     "steps": int(s.get("steps", 2)), "created": time.time(), "list_calls": 0,
                     "target": "%s/%s" % (params.get("service", ""), params.get("environment", "")),
                     "workflows": [], "params": params,
                     "branch": body.get("branch") or (body.get("checkout") or {}).get("branch")}
                if mode == "errored":
                    p["state"] = "errored"
                    p["errors"] = [{"type": "config", "message": "Config does not conform to schema"}]
                st.runs[pid] = p
                if mode != "errored":
                    st.start_run(p["target"])
                then = s.get("create_then")
                if then == "502":
                    return 502, "<html><body><h1>502 Bad Gateway</h1></body></html>", {}
                answer = (201, {"id": pid, "state": "created", "number": number,
                                "created_at": fakelib.iso(p["created"])}, {})
            if then == "hang":
                time.sleep(int(s.get("hang_ms", 5000)) / 1000.0)
            return answer

        with st.lock:
            if not auth["present"]:
                return 401, {"message": "You must log in first."}, {}
            m = TRIGGER.match(path)
            if m and method == "GET" and not m.group(2):
                items = [p for p in st.runs.values() if p["slug"] == m.group(1)
                         and (not query.get("branch") or p.get("branch") == query["branch"])]
                items.sort(key=lambda p: -p["number"])
                return 200, {"items": [self.pipe_view(p) for p in items[:20]], "next_page_token": None}, {}
            m = PIPELINE_WF.match(path)
            if m and method == "GET":
                p = st.runs.get(m.group(1))
                if p is None:
                    return 404, {"message": "Pipeline not found"}, {}
                p["list_calls"] += 1
                if p["state"] != "errored" and p["list_calls"] > 1 and not p["workflows"]:
                    p["workflows"].append({"id": str(uuid.uuid4()), "name": "deploy", "status": "running",
                                           "polls": 0})
                return 200, {"items": [self.wf_view(p, wf) for wf in p["workflows"]], "next_page_token": None}, {}
            m = PIPELINE.match(path)
            if m and method == "GET":
                p = st.runs.get(m.group(1))
                if p is None:
                    return 404, {"message": "Pipeline not found"}, {}
                return 200, self.pipe_view(p), {}
            m = WORKFLOW.match(path)
            if m and method == "GET":
                r = fakelib.refusal(st, "status", cc_error)
                if r:
                    return r[0], r[2], r[1]
                p, wf = self.find_wf(m.group(1))
                if wf is None:
                    return 404, {"message": "Workflow not found"}, {}
                self.advance(p, wf)
                return 200, self.wf_view(p, wf), {}
            m = WF_CANCEL.match(path)
            if m and method == "POST":
                p, wf = self.find_wf(m.group(1))
                if wf is None:
                    return 404, {"message": "Workflow not found"}, {}
                how = st.script.get("cancel")
                if how == "refuse":
                    return 500, {"message": "Internal server error"}, {}
                if how == "ignore":
                    return 202, {"message": "Accepted."}, {}
                if wf["status"] in ("running", "on_hold", "failing"):
                    wf["status"] = "canceled"
                    st.end_run(p)
                return 202, {"message": "Accepted."}, {}
        return 404, {"message": "Not found"}, {}


if __name__ == "__main__":
    fakelib.serve(CircleCI, "CircleCI API v2 double")
