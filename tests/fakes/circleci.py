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
  GET  /api/v2/workflow/{id}/job[?page-token=]  -> {"items": [{"id", "name", "type"
       (build|approval), "status", "job_number", "started_at", "stopped_at",
       "project_slug", "dependencies", ...}], "next_page_token"}: jobs_page_size per page
       (default 20); a job that never started has started_at null and no job_number
  GET  /api/v2/project/{vcs}/{org}/{repo}/job/{number}  -> the job's details: "number",
       "name", "status", "started_at", "stopped_at", "duration" (ms), "parallelism",
       "parallel_runs", "executor": {"resource_class", "type"}, "pipeline", "project",
       "latest_workflow", "web_url", "queued_at", "created_at", ...

Auth: "Circle-Token: <t>" (or Authorization); without it 401 {"message": "You must log in
first."}. Script modes: succeed, fail_after_building, in_flight_forever (on_hold then
running forever), no_pipeline, errored (the pipeline errors before any workflow),
http_5xx/http_401/http_402/http_403/rate_limit on the trigger, status_5xx on workflow GETs.
Script key create_then: "502" creates the pipeline, then answers 502 (the answer lost on
the way); "hang" creates it and answers only after hang_ms (default 5000). Script key
cancel: "refuse" answers the cancel 500, "ignore" answers 202 but the workflow carries on.

Jobs: a workflow has one "deploy" job (docker, medium) that runs while the workflow does,
unless script key jobs lists them (used once the workflow ended, with fixed times: what a
cost test computes by hand): [{"name", "resource_class" (default medium), "executor"
(default docker), "started_at", "stopped_at", "parallelism" (default 1), "type" (default
build), "status"}]; a job without started_at never ran (status blocked). Script key
jobs_status: an HTTP status (500, 404, ...) that every jobs call (listing and details)
answers, as an outage of those endpoints alone.
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
WF_JOBS = re.compile(r"^/api/v2/workflow/([^/]+)/job$")
JOB = re.compile(r"^/api/v2/project/([^/]+/[^/]+/[^/]+)/job/(\d+)$")
TERMINAL = ("success", "failed", "canceled", "error", "not_run", "unauthorized")


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

    def jobs_of(self, p, wf):
        """The workflow's jobs, each {"item": listing entry, "details": job details or None}."""
        ended = wf["status"] in TERMINAL
        if "jobs" not in wf:
            # numbered once, unique in the project as CircleCI's job numbers are
            scripted = self.state.script.get("jobs")
            wf["jobs"] = []
            base = p["number"] * 100 + len(p["workflows"]) * 10
            for i, j in enumerate(scripted or [{"name": "deploy"}]):
                wf["jobs"].append(dict(j, _id=str(uuid.uuid4()), _number=base + i + 1, _scripted=bool(scripted)))
        out = []
        for j in wf["jobs"]:
            if j["_scripted"] and not ended:
                started, stopped, status = None, None, "blocked"  # as if waiting upstream
            elif j["_scripted"]:
                started, stopped = j.get("started_at"), j.get("stopped_at")
                status = j.get("status") or ("success" if started else "blocked")
            else:  # the default job follows its workflow
                started = fakelib.iso(p["created"])
                stopped = fakelib.iso(wf.get("ended_at", time.time())) if ended else None
                status = wf["status"] if wf["status"] != "on_hold" else "running"
            kind = j.get("type", "build")
            number = j["_number"] if started and kind != "approval" else None
            item = {"id": j["_id"], "name": j.get("name", "job"), "type": kind, "status": status,
                    "started_at": started, "stopped_at": stopped, "project_slug": p["slug"],
                    "dependencies": []}
            if number is not None:
                item["job_number"] = number
            details = None
            if number is not None:
                t0, t1 = fakelib.parse_iso(started), fakelib.parse_iso(stopped) if stopped else None
                par = int(j.get("parallelism", 1))
                details = {"number": number, "name": item["name"], "status": status,
                           "started_at": started, "stopped_at": stopped, "queued_at": started,
                           "created_at": started, "duration": (t1 - t0) * 1000 if t1 is not None else None,
                           "parallelism": par,
                           "parallel_runs": [{"index": k, "status": status} for k in range(par)],
                           "executor": {"resource_class": j.get("resource_class", "medium"),
                                        "type": j.get("executor", "docker")},
                           "pipeline": {"id": p["id"]}, "latest_workflow": {"id": wf["id"], "name": wf["name"]},
                           "project": {"slug": p["slug"], "name": p["slug"].split("/")[-1],
                                       "external_url": "https://github.com/" + "/".join(p["slug"].split("/")[1:])},
                           "organization": {"name": p["slug"].split("/")[1]},
                           "web_url": "https://app.circleci.com/pipelines/%s/%d/workflows/%s/jobs/%d" % (
                               p["slug"], p["number"], wf["id"], number),
                           "messages": [], "contexts": []}
            out.append({"item": item, "details": details})
        return out

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
            wf["ended_at"] = time.time()
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
            m = WF_JOBS.match(path)
            if m and method == "GET":
                if st.script.get("jobs_status"):
                    code = int(st.script["jobs_status"])
                    return code, {"message": "Internal server error" if code >= 500 else "Not found"}, {}
                p, wf = self.find_wf(m.group(1))
                if wf is None:
                    return 404, {"message": "Workflow not found"}, {}
                items = [j["item"] for j in self.jobs_of(p, wf)]
                size = int(st.script.get("jobs_page_size", 20))
                start = int(query.get("page-token") or 0) if (query.get("page-token") or "0").isdigit() else -1
                if start < 0:
                    return 400, {"message": "Invalid page-token"}, {}
                nxt = str(start + size) if start + size < len(items) else None
                return 200, {"items": items[start:start + size], "next_page_token": nxt}, {}
            m = JOB.match(path)
            if m and method == "GET":
                if st.script.get("jobs_status"):
                    code = int(st.script["jobs_status"])
                    return code, {"message": "Internal server error" if code >= 500 else "Not found"}, {}
                for p in st.runs.values():
                    for wf in p["workflows"]:
                        for j in self.jobs_of(p, wf):
                            if p["slug"] == m.group(1) and j["details"] and j["details"]["number"] == int(m.group(2)):
                                return 200, j["details"], {}
                return 404, {"message": "Job not found"}, {}
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
                    wf["ended_at"] = time.time()
                    st.end_run(p)
                return 202, {"message": "Accepted."}, {}
        return 404, {"message": "Not found"}, {}


if __name__ == "__main__":
    fakelib.serve(CircleCI, "CircleCI API v2 double")
