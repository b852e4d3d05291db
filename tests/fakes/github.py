#!/usr/bin/env python3
"""github.py - a local double of the GitHub REST API as deployq uses it: the Actions API (the
github provider)

  POST /repos/{o}/{r}/actions/workflows/{wf}/dispatches
       {"ref", "inputs", "return_run_details"?} -> 200 {workflow_run_id, run_url, html_url}
       with return_run_details, 204 (no body) without; 400 for the field when the script
       says refuse_return_run_details (older GitHub Enterprise Server)
  GET  /repos/{o}/{r}/actions/workflows/{wf}/runs?event=&branch=&created=>=T
       -> {"total_count", "workflow_runs": [...]}; a run shows up there list_delay_ms
       (default 300) after its dispatch, as on the real service
  GET  /repos/{o}/{r}/actions/runs/{id} -> the run: status queued|in_progress|completed,
       conclusion null until completed
  GET  /repos/{o}/{r}/actions/runs/{id}/jobs?per_page=&page= -> {"total_count", "jobs": [...]}
       (paged as GitHub pages: per_page default 30, at most 100): a queued run's job is
       queued without a runner, a running or finished run's job has one (runner_name), a
       startup_failure run has none. Each job has labels (runner labels), started_at and
       completed_at (null until it completes)
  POST /repos/{o}/{r}/actions/runs/{id}/cancel -> 202 (409 once completed)

and the Deployments API (recording deploys, github_deploy.c), as GitHub serves it:
  POST /repos/{o}/{r}/deployments {ref, environment, task, description, auto_merge
       (default true), required_contexts (default: every context), payload,
       production_environment (default: environment == "production"), transient_environment}
       -> 201 the deployment; 202 {"message": "Auto-merged master into <ref>."} (and no
       deployment) when auto_merge is true and the script lists the ref in `behind`; 409
       {"message": "Conflict merging master into <ref>."} for a ref in `conflict` (with
       auto_merge), 409 "Conflict: Commit status checks failed for <ref>." when a context of
       `failing_contexts` is required (required_contexts absent means all of them)
  GET  /repos/{o}/{r}/deployments?environment=&ref=&sha=&task=&per_page= -> newest first
  GET  /repos/{o}/{r}/deployments/{id}
  POST /repos/{o}/{r}/deployments/{id}/statuses {state, description (<= 140), log_url,
       environment_url, auto_inactive (default true)} -> 201 the status; a success with
       auto_inactive adds an inactive status to the earlier non-transient, non-production
       deployments of the same environment whose last state was success (GitHub leaves
       production ones alone: their client says inactive itself)
  GET  /repos/{o}/{r}/deployments/{id}/statuses -> newest first
Deployments calls need a token: 401 without an Authorization header, and with the script's
`token` set, 401 for any other token ("Bad credentials"). `deployments_down: true` answers
503 to every Deployments call (GitHub down); `deployments_rate_limit: N` answers the first
N calls 429 with Retry-After `retry_after` (default 1) seconds. The deployments survive
script changes.

The run's display_title is the workflow's run-name, "Deploy <service> <version>
(<deployment_id>)" - the run listing does not echo inputs, so that is the only place the
deployment id can be matched. Script modes: succeed, fail_after_building (conclusion
failure), startup_failure, in_flight_forever, queued_forever (status queued, no job ever
starts: a billing lapse or no runner), no_run (204 but no run is ever created),
http_5xx/http_401/http_402/http_403/rate_limit on the dispatch, status_5xx on the run GET.
Other script keys:
  job_started    true: the run has a job that a runner took, even in startup_failure or
                 queued_forever (a run that did start must never be deployed again elsewhere)
  create_then    "502": the dispatch creates the run, then answers 502 (as a proxy that
                 lost the answer); "hang": creates it, then answers only after hang_ms
                 (default 5000), past the client's timeout
  cancel         "refuse": cancel answers 500 and nothing changes; "ignore": 202, but the
                 run carries on as if never asked
  jobs           the jobs of a run that completed success or failure, instead of the one
                 "deploy" job: [{"name", "labels": [...], "started_at", "completed_at"}, ...]
                 with fixed times (what a cost test computes by hand); a job without
                 started_at is one no runner took (skipped)
  jobs_status    an HTTP status (500, 404, ...) that every jobs call answers, as an outage of
                 that endpoint alone
"""

import re
import time

import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import fakelib  # noqa: E402

DISPATCH = re.compile(r"^/repos/([^/]+)/([^/]+)/actions/workflows/([^/]+)/dispatches$")
LIST = re.compile(r"^/repos/([^/]+)/([^/]+)/actions/workflows/([^/]+)/runs$")
RUN = re.compile(r"^/repos/([^/]+)/([^/]+)/actions/runs/(\d+)$")
CANCEL = re.compile(r"^/repos/([^/]+)/([^/]+)/actions/runs/(\d+)/cancel$")
JOBS = re.compile(r"^/repos/([^/]+)/([^/]+)/actions/runs/(\d+)/jobs$")


def gh_error(status, message):
    return {"message": message, "documentation_url": "https://docs.github.com/rest",
            "status": str(status)}


DEPLOYMENTS = re.compile(r"^/repos/([^/]+)/([^/]+)/deployments$")
DEPLOYMENT = re.compile(r"^/repos/([^/]+)/([^/]+)/deployments/(\d+)$")
STATUSES = re.compile(r"^/repos/([^/]+)/([^/]+)/deployments/(\d+)/statuses$")
STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")


class GitHub(fakelib.App):
    # ---- the Deployments API ----
    def deployments_route(self, h, method, path, query, body, auth):
        """The Deployments API, or None when path is not one of its endpoints."""
        st = self.state
        m_list, m_one, m_st = DEPLOYMENTS.match(path), DEPLOYMENT.match(path), STATUSES.match(path)
        if not (m_list or m_one or m_st):
            return None
        with st.lock:
            s = st.script
            if s.get("deployments_down"):
                return 503, gh_error(503, "Service Unavailable"), {}
            if st.bump("deployments_rate") < int(s.get("deployments_rate_limit", 0)):
                return 429, gh_error(429, "API rate limit exceeded"), {"Retry-After": str(s.get("retry_after", 1))}
            header = h.headers.get("Authorization") or ""
            if not auth["present"]:
                return 401, gh_error(401, "Requires authentication"), {}
            if s.get("token") and header not in ("Bearer " + s["token"], "token " + s["token"]):
                return 401, gh_error(401, "Bad credentials"), {}
            deps = st.store.setdefault("deployments", {})
            base = "http://%s:%d" % h.server.server_address[:2]
            m = m_list or m_one or m_st
            repo = "%s/%s" % (m.group(1), m.group(2))
            api = "%s/repos/%s" % (base, repo)

            if m_list and method == "POST":
                return self.create_deployment(st, deps, repo, api, body)
            if m_list and method == "GET":
                found = [d for d in deps.values() if d["repo"] == repo
                         and all(not query.get(k) or query[k] == d[k] for k in ("environment", "ref", "sha", "task"))]
                found.sort(key=lambda d: -d["id"])
                per_page = min(int(query.get("per_page") or 30), 100)
                return 200, [self.deployment_view(d) for d in found[:per_page]], {}
            d = deps.get(int(m.group(3)))
            if d is None or d["repo"] != repo:
                return 404, gh_error(404, "Not Found"), {}
            if m_one and method == "GET":
                return 200, self.deployment_view(d), {}
            if m_st and method == "GET":
                return 200, list(reversed(d["statuses"])), {}
            if m_st and method == "POST":
                if not isinstance(body, dict) or body.get("state") not in STATES:
                    return 422, gh_error(422, "Validation Failed"), {}
                if len(body.get("description") or "") > 140:
                    return 422, gh_error(422, "Validation Failed: description is too long (maximum is 140 characters)"), {}
                status = self.add_status(st, d, api, body)
                if body["state"] == "success" and body.get("auto_inactive", True):
                    for other in deps.values():
                        if (other is not d and other["repo"] == repo and other["environment"] == d["environment"]
                                and not other["transient_environment"] and not other["production_environment"]
                                and other["statuses"] and other["statuses"][-1]["state"] == "success"):
                            self.add_status(st, other, api, {"state": "inactive", "description": ""})
                return 201, status, {}
        return 404, gh_error(404, "Not Found"), {}

    def create_deployment(self, st, deps, repo, api, body):
        s = st.script
        if not isinstance(body, dict) or not body.get("ref"):
            return 422, gh_error(422, "Invalid request.\n\n\"ref\" wasn't supplied."), {}
        ref = body["ref"]
        auto_merge = body.get("auto_merge", True)
        if auto_merge and ref in (s.get("conflict") or []):
            return 409, gh_error(409, "Conflict merging master into %s." % ref), {}
        if auto_merge and ref in (s.get("behind") or []):
            return 202, {"message": "Auto-merged master into %s." % ref}, {}
        failing = s.get("failing_contexts") or []
        required = body.get("required_contexts")
        bad = failing if required is None else [c for c in required if c in failing]
        if bad:
            out = gh_error(409, "Conflict: Commit status checks failed for %s." % ref)
            out["errors"] = [{"contexts": [{"context": c, "state": "failure"} for c in bad],
                              "resource": "Deployment", "field": "required_contexts", "code": "invalid"}]
            return 409, out, {}
        env = body.get("environment") or "production"
        did = st.next_id()
        d = {"id": did, "repo": repo, "ref": ref, "sha": s.get("sha", "a84d88e7554fc1fa21bcbc4efae3c782a70d2b9d"),
             "task": body.get("task") or "deploy", "payload": body.get("payload") or {},
             "environment": env, "original_environment": env, "description": body.get("description"),
             "transient_environment": bool(body.get("transient_environment", False)),
             "production_environment": bool(body.get("production_environment", env == "production")),
             "created": time.time(), "statuses": [], "api": api,
             "request": {k: body.get(k) for k in ("auto_merge", "required_contexts")}}
        deps[did] = d
        return 201, self.deployment_view(d), {}

    def deployment_view(self, d):
        url = "%s/deployments/%d" % (d["api"], d["id"])
        return {"url": url, "id": d["id"], "node_id": "MDEwOkRlcGxveW1lbnQ%d" % d["id"], "sha": d["sha"],
                "ref": d["ref"], "task": d["task"], "payload": d["payload"], "environment": d["environment"],
                "original_environment": d["original_environment"], "description": d["description"],
                "creator": {"login": "deployq-bot", "type": "Bot"}, "created_at": fakelib.iso(d["created"]),
                "updated_at": fakelib.iso(time.time()), "statuses_url": url + "/statuses",
                "repository_url": d["api"], "transient_environment": d["transient_environment"],
                "production_environment": d["production_environment"],
                "_requested": d["request"]}  # not GitHub's: what the client asked for, for tests

    def add_status(self, st, d, api, body):
        sid = st.next_id()
        durl = "%s/deployments/%d" % (api, d["id"])
        status = {"url": "%s/statuses/%d" % (durl, sid), "id": sid, "node_id": "MDE2OkRlcGxveW1lbnRTdGF0dXM%d" % sid,
                  "state": body["state"], "creator": {"login": "deployq-bot", "type": "Bot"},
                  "description": body.get("description") or "", "environment": d["environment"],
                  "target_url": body.get("log_url") or "", "log_url": body.get("log_url") or "",
                  "environment_url": body.get("environment_url") or "",
                  "created_at": fakelib.iso(time.time()), "updated_at": fakelib.iso(time.time()),
                  "deployment_url": durl, "repository_url": api}
        d["statuses"].append(status)
        return status

    # ---- the Actions API ----
    def run_view(self, run):
        s = self.state.script
        return {
            "id": run["id"], "name": "Deploy", "display_title": run["display_title"],
            "event": "workflow_dispatch", "head_branch": run["ref"], "status": run["status"],
            "conclusion": run["conclusion"], "workflow_id": 161335, "run_attempt": 1,
            "created_at": fakelib.iso(run["created"]), "updated_at": fakelib.iso(time.time()),
            "html_url": "https://github.com/%s/%s/actions/runs/%d" % (run["owner"], run["repo"], run["id"]),
            "logs_url": "%s/repos/%s/%s/actions/runs/%d/logs" % (s.get("_base", ""), run["owner"],
                                                                 run["repo"], run["id"]),
        }

    def jobs_view(self, run):
        """The run's jobs as GitHub lists them."""
        status, conclusion = run["status"], run["conclusion"]
        started = run.get("job_started")
        scripted = self.state.script.get("jobs")
        if scripted and status == "completed" and conclusion in ("success", "failure"):
            out = []
            for i, j in enumerate(scripted):
                took = bool(j.get("started_at"))
                out.append({"id": run["id"] * 10 + 1 + i, "run_id": run["id"], "name": j.get("name", "job%d" % i),
                            "labels": j.get("labels", ["ubuntu-latest"]), "status": "completed",
                            "conclusion": conclusion if took else "skipped",
                            "started_at": j.get("started_at") or fakelib.iso(run["created"]),
                            "completed_at": j.get("completed_at") or fakelib.iso(run["created"]),
                            "runner_id": 7 if took else None, "runner_name": "GitHub Actions 7" if took else None,
                            "steps": []})
            return out
        if conclusion == "startup_failure" and not started:
            return []
        job = {"id": run["id"] * 10 + 1, "run_id": run["id"], "name": "deploy", "labels": ["ubuntu-latest"],
               "started_at": fakelib.iso(run["created"]), "completed_at": None, "steps": []}
        if status in ("queued", "waiting", "requested", "pending") and not started:
            job.update(status="queued", conclusion=None, runner_id=None, runner_name=None)
        elif status == "completed" and not started and not run.get("ran"):
            # cancelled (or otherwise ended) before any runner took it
            job.update(status="completed", conclusion=conclusion, runner_id=None, runner_name=None,
                       completed_at=fakelib.iso(time.time()))
        elif status == "completed":
            job.update(status="completed", conclusion=conclusion, runner_id=7, runner_name="GitHub Actions 7",
                       completed_at=fakelib.iso(time.time()))
        elif status == "in_progress":
            job.update(status="in_progress", conclusion=None, runner_id=7, runner_name="GitHub Actions 7")
        else:  # queued again after a job ran (job_started)
            job.update(status="completed", conclusion="success", runner_id=7, runner_name="GitHub Actions 7",
                       completed_at=fakelib.iso(time.time()))
        return [job]

    def advance(self, run):
        """One poll of a run: move it along its scripted path."""
        if run["status"] == "completed":
            return
        polls = run["polls"]
        run["polls"] += 1
        mode = run["mode"]
        steps = run["steps"]
        if mode == "startup_failure":
            run["status"], run["conclusion"] = "completed", "startup_failure"
        elif mode == "queued_forever":
            run["status"] = "queued"
        elif mode == "in_flight_forever":
            run["status"] = "queued" if polls == 0 else "in_progress"
        elif polls < steps:
            run["status"] = "queued" if polls == 0 else "in_progress"
        else:
            run["status"] = "completed"
            run["conclusion"] = "failure" if mode == "fail_after_building" else "success"
        if run["status"] == "in_progress":
            run["ran"] = True
        if run["status"] == "completed":
            self.state.end_run(run)

    def route(self, h, method, path, query, body, auth):
        st = self.state
        answer = self.deployments_route(h, method, path, query, body, auth)
        if answer is not None:
            return answer
        m = DISPATCH.match(path)
        if m and method == "POST":
            self.deploy_delay()
            with st.lock:
                if not auth["present"]:
                    return 401, gh_error(401, "Requires authentication"), {}
                r = fakelib.refusal(st, "deploy", gh_error)
                if r:
                    return r[0], r[2], r[1]
                s = st.script
                if not isinstance(body, dict) or "ref" not in body:
                    return 422, gh_error(422, "Invalid request. \"ref\" wasn't supplied."), {}
                inputs = body.get("inputs") or {}
                if any(not isinstance(v, (str, bool, int)) for v in inputs.values()):
                    return 422, gh_error(422, "Invalid request. inputs must be strings"), {}
                details = body.get("return_run_details")
                if details is not None and s.get("refuse_return_run_details"):
                    return 400, gh_error(400, "Invalid request.\n\n\"return_run_details\" is not a permitted key."), {}
                if s.get("mode") == "no_run":
                    return 204, None, {}
                rid = st.next_id()
                run = {
                    "id": rid, "owner": m.group(1), "repo": m.group(2), "workflow": m.group(3),
                    "ref": body["ref"], "status": "queued", "conclusion": None, "polls": 0,
                    "created": time.time(), "mode": s.get("mode", "succeed"),
                    "steps": int(s.get("steps", 2)), "job_started": bool(s.get("job_started")),
                    "visible_at": time.time() + int(s.get("list_delay_ms", 300)) / 1000.0,
                    "target": "%s/%s" % (inputs.get("service", ""), inputs.get("environment", "")),
                    "display_title": "Deploy %s %s (%s)" % (inputs.get("service", ""), inputs.get("version", ""),
                                                            inputs.get("deployment_id", "")),
                }
                st.runs[rid] = run
                st.start_run(run["target"])
                then = s.get("create_then")
                if then == "502":
                    return 502, "<html><body><h1>502 Bad Gateway</h1></body></html>", {}
                hang = int(s.get("hang_ms", 5000)) / 1000.0 if then == "hang" else 0
                if details:
                    base = "http://%s:%d" % h.server.server_address[:2]
                    answer = (200, {"workflow_run_id": rid,
                                    "run_url": "%s/repos/%s/%s/actions/runs/%d" % (base, m.group(1), m.group(2), rid),
                                    "html_url": "https://github.com/%s/%s/actions/runs/%d" % (m.group(1), m.group(2), rid)}, {})
                else:
                    answer = (204, None, {})
            if hang:
                time.sleep(hang)  # the run exists; the answer comes too late
            return answer

        m = LIST.match(path)
        if m and method == "GET":
            with st.lock:
                if not auth["present"]:
                    return 401, gh_error(401, "Requires authentication"), {}
                since = None
                created = query.get("created", "")
                if created.startswith(">="):
                    since = fakelib.parse_iso(created[2:])
                now = time.time()
                runs = [r for r in st.runs.values()
                        if r["workflow"] == m.group(3) and r["visible_at"] <= now
                        and (not query.get("branch") or query["branch"] == r["ref"])
                        and (not query.get("event") or query["event"] == "workflow_dispatch")
                        and (since is None or r["created"] >= since - 1)]
                runs.sort(key=lambda r: -r["created"])
                return 200, {"total_count": len(runs), "workflow_runs": [self.run_view(r) for r in runs]}, {}

        m = RUN.match(path)
        if m and method == "GET":
            with st.lock:
                if not auth["present"]:
                    return 401, gh_error(401, "Requires authentication"), {}
                r = fakelib.refusal(st, "status", gh_error)
                if r:
                    return r[0], r[2], r[1]
                run = st.runs.get(int(m.group(3)))
                if run is None:
                    return 404, gh_error(404, "Not Found"), {}
                self.advance(run)
                return 200, self.run_view(run), {}

        m = JOBS.match(path)
        if m and method == "GET":
            with st.lock:
                if not auth["present"]:
                    return 401, gh_error(401, "Requires authentication"), {}
                if st.script.get("jobs_status"):
                    code = int(st.script["jobs_status"])
                    return code, gh_error(code, "Server Error" if code >= 500 else "Not Found"), {}
                run = st.runs.get(int(m.group(3)))
                if run is None:
                    return 404, gh_error(404, "Not Found"), {}
                jobs = self.jobs_view(run)
                per_page = max(1, min(int(query.get("per_page") or 30), 100))
                page = max(1, int(query.get("page") or 1))
                return 200, {"total_count": len(jobs), "jobs": jobs[(page - 1) * per_page:page * per_page]}, {}

        m = CANCEL.match(path)
        if m and method == "POST":
            with st.lock:
                run = st.runs.get(int(m.group(3)))
                if run is None:
                    return 404, gh_error(404, "Not Found"), {}
                if run["status"] == "completed":
                    return 409, gh_error(409, "Cannot cancel a workflow run that is completed."), {}
                how = st.script.get("cancel")
                if how == "refuse":
                    return 500, gh_error(500, "Server Error"), {}
                if how == "ignore":
                    return 202, {}, {}
                run["status"], run["conclusion"] = "completed", "cancelled"
                st.end_run(run)
                return 202, {}, {}

        return 404, gh_error(404, "Not Found"), {}


if __name__ == "__main__":
    fakelib.serve(GitHub, "GitHub Actions API double")
