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
  deploymentRollback(id) -> Boolean!
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
status_5xx fails deployment(id) polls. A newer SUCCESS marks the older one REMOVED, as
Railway does.
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
                "canRollback": dep["status"] == "SUCCESS", "canRedeploy": True,
                "statusUpdatedAt": fakelib.iso(time.time()), "meta": {"commitHash": dep["commit"]}}

    def route(self, h, method, path, query, body, auth):
        st = self.state
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
                return 200, {"data": {"serviceInstanceDeployV2": dep["id"]}}, {}

        with st.lock:
            if not auth["present"]:
                return 200, gql_errors("Not Authorized"), {}
            if "deploymentRedeploy" in q:
                old = st.runs.get(v.get("id"))
                if old is None:
                    return 200, gql_errors("Deployment not found", "deploymentRedeploy"), {}
                dep = self.new_deployment(old["service"], old["environment"], old["commit"])
                return 200, {"data": {"deploymentRedeploy": {"id": dep["id"], "status": dep["status"]}}}, {}
            if "deploymentRollback" in q:
                old = st.runs.get(v.get("id"))
                if old is None:
                    return 200, gql_errors("Deployment not found", "deploymentRollback"), {}
                if old["status"] not in ("SUCCESS", "REMOVED"):
                    return 200, gql_errors("Deployment cannot be rolled back", "deploymentRollback"), {}
                self.new_deployment(old["service"], old["environment"], old["commit"])
                return 200, {"data": {"deploymentRollback": True}}, {}
            if "deploymentCancel" in q:
                dep = st.runs.get(v.get("id"))
                if dep is None:
                    return 200, gql_errors("Deployment not found", "deploymentCancel"), {}
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
