#!/usr/bin/env python3
"""slack.py - a local double of a Slack incoming webhook (and of any generic JSON webhook
deployq notifies), for the notification tests.

  POST <any path>  a JSON body; Slack's shape is {"text": ...}. Answers 200 "ok" like
                   Slack; a body that is not JSON, or a path under /services/ without a
                   string "text", gets 400 "invalid_payload" (Slack's word). Every call is
                   recorded (GET /_fake/calls: method, path, headers without auth, body).

Script keys (POST /_fake/script): mode http_5xx | rate_limit | http_403 (Slack's answers
to an outage, to throttling, to a revoked hook) with fail_times (how many calls fail
before it answers "ok" again; absent: all) and retry_after (seconds, for rate_limit).
"""

import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import fakelib  # noqa: E402


def slack_error(status, message):
    # Slack answers errors as a short plain-text word
    return {503: "service_unavailable", 429: "rate_limited", 403: "action_prohibited"}.get(status, message)


class Slack(fakelib.App):
    def route(self, h, method, path, query, body, auth):
        st = self.state
        if method != "POST":
            return 404, "not_found", {}
        with st.lock:
            r = fakelib.refusal(st, "deploy", slack_error)
            if r:
                return r[0], r[2], r[1]
        if not isinstance(body, dict):
            return 400, "invalid_payload", {}
        if path.startswith("/services/") and not isinstance(body.get("text"), str):
            return 400, "invalid_payload", {}
        return 200, "ok", {}


if __name__ == "__main__":
    fakelib.serve(Slack, "Slack incoming webhook double")
