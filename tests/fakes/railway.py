#!/usr/bin/env python3
"""railway.py - a local double of Railway's public GraphQL v2 API, as deployq uses it.

POST /graphql/v2 with {"query", "variables"}; auth as "Authorization: Bearer <t>" or
"Project-Access-Token: <t>". Like the real API, problems in a well-formed request come
back as HTTP 200 with a top-level "errors" array (and "data": null), missing auth as
"Not Authorized", rate limits as HTTP 429 with Retry-After.

Operations understood (recognised by field name in the query text):
  serviceInstanceDeployV2(serviceId, environmentId, commitSha) -> String! (deployment id)
  deployment(id) { id status url staticUrl ... }
  deploymentRedeploy(id, usePreviousImageTag) -> Deployment { id status }
  deploymentRollback(id) -> Boolean! (only when the deployment's canRollback is true)
  deployments(input: {projectId, serviceId, environmentId, status: {in|notIn}}, first: N)
      -> { edges { node { id status createdAt canRollback ... } } }, newest first
  deploymentCancel(id) -> Boolean!
  variables(projectId, environmentId, serviceId) -> EnvironmentVariables (a JSON object
      name -> value), from the script key "variables": {"<environmentId>": {NAME: value}}
      or {"<environmentId>/<serviceId>": {...}} (the more specific wins); used by the
      validator's drift gate (see the block marked "drift gate" below)

Status paths per script mode (one step per deployment(id) poll, "steps" polls in flight):
  succeed              QUEUED, INITIALIZING, BUILDING, DEPLOYING ... SUCCESS
  fail_after_building  QUEUED, BUILDING ... FAILED
  crash                QUEUED, BUILDING, DEPLOYING ... CRASHED
  in_flight_forever    QUEUED, BUILDING, BUILDING, ...
  needs_approval       NEEDS_APPROVAL forever
Refusals of the deploy: http_5xx, http_401, http_402, http_403, rate_limit, graphql_error;
status_5xx fails deployment(id) polls. Script key create_then: "502" creates the deployment
and then answers 502 (the answer lost on the way), "hang" creates it and answers only after
hang_ms (default 5000), past the client's timeout. Script key cancel: "refuse" answers
deploymentCancel with a GraphQL error, "ignore" answers true but the deployment carries on. A newer SUCCESS marks the older one REMOVED, as
Railway does.

Restores (see the block marked "restores" below). deploymentRollback and
deploymentRedeploy do not restore anything at once: like Railway they create a new
deployment (of the old one's image) that goes through the usual in-flight states, and the
old version serves only once it reached SUCCESS. Until then the version that was live
stays live. Script keys:
  rollback_seconds  the new deployment reaches its terminal state this many seconds after
                    the call, however often it is polled (default 0: by polls)
  rollback_steps    without rollback_seconds: polls in flight (default: steps)
  rollback_mode     succeed (default) | crash | fail_after_building
  can_rollback      false: every deployment says canRollback: false (Railway no longer
                    keeps its image), and deploymentRollback refuses it
What is live (for the monitor's probes and the tests):
  GET /live/<serviceId>/<environmentId>          {"live": {deployment_id, version, status,
                                                  live_at} | null, "history": [...]}
  GET /live/<serviceId>/<environmentId>/health   200 "ok <version>" while the live version
                                                  is good; 500 for a version named *-bad or
                                                  listed in the script key bad_versions;
                                                  503 when nothing is live
live_at is when the deployment reached SUCCESS: exact for a rollback_seconds restore, the
first request after it for deployments that advance by polls.
"""

import re
import time
import uuid

import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import fakelib  # noqa: E402

IN_FLIGHT = {
    "succeed": ["QUEUED", "INITIALIZING", "BUILDING", "DEPLOYING"],
    "fail_after_building": ["QUEUED", "BUILDING"],
    "crash": ["QUEUED", "BUILDING", "DEPLOYING"],
}
TERMINAL = {"succeed": "SUCCESS", "fail_after_building": "FAILED", "crash": "CRASHED"}
DONE = {"SUCCESS", "FAILED", "CRASHED", "REMOVED", "SKIPPED"}


def gql_errors(message, path=None):
    err = {"message": message, "locations": [{"line": 1, "column": 3}],
           "extensions": {"code": "INTERNAL_SERVER_ERROR"}}
    if path:
        err["path"] = [path]
    return {"errors": [err], "data": None}


def http_error_body(status, message):
    return {"errors": [{"message": message}]}


class Railway(fakelib.App):
    def new_deployment(self, service_id, environment_id, commit):
        st = self.state
        s = st.script
        dep = {
            "id": str(uuid.uuid4()), "service": service_id, "environment": environment_id,
            "commit": commit, "mode": s.get("mode", "succeed"), "steps": int(s.get("steps", 2)),
            "polls": 0, "status": "QUEUED", "target": "%s/%s" % (service_id, environment_id),
            "created": time.time(),
        }
        if dep["mode"] not in ("in_flight_forever", "needs_approval") and dep["mode"] not in TERMINAL:
            dep["mode"] = "succeed"
        st.runs[dep["id"]] = dep
        st.start_run(dep["target"])
        return dep

    def advance(self, dep):
        if dep["status"] in DONE:
            return
        polls = dep["polls"]
        dep["polls"] += 1
        mode = dep["mode"]
        if mode == "needs_approval":
            dep["status"] = "NEEDS_APPROVAL"
        elif mode == "in_flight_forever":
            dep["status"] = "QUEUED" if polls == 0 else "BUILDING"
        elif polls < dep["steps"]:
            path = IN_FLIGHT[mode]
            dep["status"] = path[min(polls, len(path) - 1)]
        else:
            dep["status"] = TERMINAL[mode]
            if dep["status"] == "SUCCESS":
                for other in self.state.runs.values():
                    if other is not dep and other["target"] == dep["target"] and other["status"] == "SUCCESS":
                        other["status"] = "REMOVED"
        if dep["status"] in DONE:
            self.state.end_run(dep)

    def view(self, dep):
        return {"id": dep["id"], "status": dep["status"], "url": None,
                "staticUrl": "%s-production.up.railway.app" % dep["service"][:8],
                "canRollback": self.can_rollback(dep), "canRedeploy": True,
                "statusUpdatedAt": fakelib.iso(time.time()), "meta": {"commitHash": dep["commit"]}}

    # ---- restores: rollbacks, redeploys, what is live, deployments(...) ----
    def new_restore(self, old):
        """The deployment deploymentRollback/deploymentRedeploy of old creates (lock held)."""
        s = self.state.script
        dep = self.new_deployment(old["service"], old["environment"], old["commit"])
        dep["mode"] = s.get("rollback_mode", "succeed")
        if dep["mode"] not in TERMINAL:
            dep["mode"] = "succeed"
        dep["restore_of"] = old["id"]
        secs = float(s.get("rollback_seconds", 0))
        if secs > 0:
            dep["ready_at"] = dep["created"] + secs
            dep["steps"] = 10 ** 9  # polls never end it: the clock does (settle)
        else:
            dep["steps"] = int(s.get("rollback_steps", dep["steps"]))
        return dep

    def settle(self):
        """Bring every deployment up to now (lock held): a restore on the clock reaches its
        terminal state at ready_at; whatever went live is stamped with when."""
        st = self.state
        now = time.time()
        for dep in sorted(st.runs.values(), key=lambda d: d["created"]):
            if "ready_at" in dep and dep["status"] not in DONE and now >= dep["ready_at"]:
                dep["status"] = TERMINAL[dep["mode"]]
                if dep["status"] == "SUCCESS":
                    dep["live_at"] = dep["ready_at"]
                    for other in st.runs.values():
                        if other is not dep and other["target"] == dep["target"] and \
                                other["status"] in ("SUCCESS", "SLEEPING"):
                            other["status"] = "REMOVED"
                st.end_run(dep)
            if dep["status"] in ("SUCCESS", "SLEEPING") and "live_at" not in dep:
                dep["live_at"] = now
        for dep in st.runs.values():
            if "live_at" in dep and not dep.get("in_history"):
                dep["in_history"] = True
                self.history.setdefault(dep["target"], []).append(
                    {"at": dep["live_at"], "deployment_id": dep["id"], "version": dep["commit"]})
        for h in self.history.values():
            h.sort(key=lambda e: e["at"])

    @property
    def history(self):
        st = self.state
        if getattr(st, "live_history_of", None) is not st.runs:  # reset() made new runs
            st.live_history_of, st.live_history = st.runs, {}
        return st.live_history

    def can_rollback(self, dep):
        return "live_at" in dep and self.state.script.get("can_rollback", True) is not False

    def live(self, target):
        serving = [d for d in self.state.runs.values()
                   if d["target"] == target and d["status"] in ("SUCCESS", "SLEEPING")]
        if not serving:
            return None
        dep = max(serving, key=lambda d: (d.get("live_at", 0), d["created"]))
        return {"deployment_id": dep["id"], "version": dep["commit"], "status": dep["status"],
                "live_at": dep.get("live_at")}

    def live_endpoint(self, path):
        parts = path.strip("/").split("/")
        if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "health"):
            return 404, "Not Found", {}
        target = "%s/%s" % (parts[1], parts[2])
        with self.state.lock:
            self.settle()
            now = self.live(target)
            if len(parts) == 3:
                return 200, {"live": now, "history": list(self.history.get(target, []))}, {}
            bad = self.state.script.get("bad_versions") or []
        if now is None:
            return 503, "nothing is live", {}
        v = now["version"] or ""
        if v.endswith("-bad") or v in bad:
            return 500, "bad version %s" % v, {}
        return 200, "ok %s" % v, {}

    def deployments(self, v):
        """deployments(input, first): newest first, filtered like Railway's (lock held)."""
        inp = v.get("input") or {}
        if not isinstance(inp, dict):
            return 200, gql_errors("Expected type DeploymentListInput", "deployments"), {}
        want = (inp.get("status") or {}) if isinstance(inp.get("status"), dict) else {}
        out = []
        for dep in sorted(self.state.runs.values(), key=lambda d: d["created"], reverse=True):
            if inp.get("serviceId") and dep["service"] != inp["serviceId"]:
                continue
            if inp.get("environmentId") and dep["environment"] != inp["environmentId"]:
                continue
            if want.get("in") and dep["status"] not in want["in"]:
                continue
            if want.get("notIn") and dep["status"] in want["notIn"]:
                continue
            node = self.view(dep)
            node["createdAt"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(dep["created"])) + \
                ".%03dZ" % int((dep["created"] % 1) * 1000)
            out.append({"node": node, "cursor": dep["id"]})
        first = v.get("first")
        if isinstance(first, int) and first >= 0:
            out = out[:first]
        return 200, {"data": {"deployments": {"edges": out}}}, {}
    # ---- end of restores ----

    def route(self, h, method, path, query, body, auth):
        st = self.state
        if method == "GET" and path.startswith("/live/"):
            return self.live_endpoint(path)
        if not path.endswith("/graphql/v2") or method != "POST":
            return 404, "Not Found", {}
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return 400, {"errors": [{"message": "Must provide query string."}]}, {}
        q = body["query"]
        v = body.get("variables") or {}

        if "serviceInstanceDeployV2" in q:
            self.deploy_delay()
            with st.lock:
                r = fakelib.refusal(st, "deploy", http_error_body)
                if r:
                    return r[0], r[2], r[1]
                if not auth["present"]:
                    return 200, gql_errors("Not Authorized", "serviceInstanceDeployV2"), {}
                if st.script.get("mode") == "graphql_error":
                    msg = st.script.get("message", "Problem processing request")
                    return 200, gql_errors(msg, "serviceInstanceDeployV2"), {}
                if not v.get("serviceId") or not v.get("environmentId"):
                    return 200, gql_errors("Variable \"$serviceId\" of required type \"String!\" was not provided."), {}
                dep = self.new_deployment(v["serviceId"], v["environmentId"], v.get("commitSha"))
                then = st.script.get("create_then")  # create, then lose the answer (see the top)
                if then == "502":
                    return 502, "<html><body><h1>502 Bad Gateway</h1></body></html>", {}
            if then == "hang":
                time.sleep(int(st.script.get("hang_ms", 5000)) / 1000.0)
            return 200, {"data": {"serviceInstanceDeployV2": dep["id"]}}, {}

        with st.lock:
            self.settle()
            if not auth["present"]:
                return 200, gql_errors("Not Authorized"), {}
            if "deploymentRedeploy" in q:
                old = st.runs.get(v.get("id"))
                if old is None:
                    return 200, gql_errors("Deployment not found", "deploymentRedeploy"), {}
                dep = self.new_restore(old)
                return 200, {"data": {"deploymentRedeploy": {"id": dep["id"], "status": dep["status"]}}}, {}
            if "deploymentRollback" in q:
                old = st.runs.get(v.get("id"))
                if old is None:
                    return 200, gql_errors("Deployment not found", "deploymentRollback"), {}
                if not self.can_rollback(old):
                    return 200, gql_errors("Deployment cannot be rolled back", "deploymentRollback"), {}
                self.new_restore(old)  # the id is not returned: find it with deployments(...)
                return 200, {"data": {"deploymentRollback": True}}, {}
            if re.search(r"\bdeployments\s*\(", q):
                return self.deployments(v)
            if "deploymentCancel" in q:
                dep = st.runs.get(v.get("id"))
                if dep is None:
                    return 200, gql_errors("Deployment not found", "deploymentCancel"), {}
                how = st.script.get("cancel")
                if how == "refuse":
                    return 200, gql_errors("Problem processing request", "deploymentCancel"), {}
                if how == "ignore":
                    return 200, {"data": {"deploymentCancel": True}}, {}
                if dep["status"] not in DONE:
                    dep["status"] = "REMOVED"
                    st.end_run(dep)
                return 200, {"data": {"deploymentCancel": True}}, {}
            # ---- drift gate (validator): variables(projectId, environmentId, serviceId) ----
            if re.search(r"\bvariables\s*\(", q):
                if not v.get("projectId") or not v.get("environmentId"):
                    return 200, gql_errors("Variable \"$projectId\" of required type \"String!\" was not provided."), {}
                table = st.script.get("variables") or {}
                key = "%s/%s" % (v["environmentId"], v.get("serviceId"))
                found = table.get(key, table.get(v["environmentId"]))
                if found is None:
                    return 200, gql_errors("Environment not found", "variables"), {}
                return 200, {"data": {"variables": found}}, {}
            # ---- end of the drift gate block ----
            if re.search(r"\bdeployment\s*\(", q):
                r = fakelib.refusal(st, "status", http_error_body)
                if r:
                    return r[0], r[2], r[1]
                dep = st.runs.get(v.get("id"))
                if dep is None:
                    return 200, gql_errors("Deployment not found", "deployment"), {}
                self.advance(dep)
                return 200, {"data": {"deployment": self.view(dep)}}, {}
        return 200, gql_errors("Cannot query field on type \"Query\"."), {}


if __name__ == "__main__":
    fakelib.serve(Railway, "Railway GraphQL v2 API double")
