#!/usr/bin/python3
"""deploy.py - the local provider of `deployq up --demo`.

deployq's `command` provider runs this script to "deploy" a version of the demo service:
it tells the demo service (tests/fakes/health.py, started by `deployq up --demo`) to serve
that version. A version whose name ends in "-bad" is a broken build: once deployed, the
service's health endpoint answers HTTP 500 until another version is deployed, which is
what the monitor detects and the rollback worker repairs (a rollback runs this script
again with the last verified version).

Usage: deploy.py HEALTH_URL VERSION   (exit 0 deployed, 1 the service did not accept it)
Environment: DEPLOYQ_DEMO_DEPLOY_DELAY_MS, how long a deploy pretends to take (default
300; the MTTR benchmark sets 0: an instant provider).
Only the Python 3 standard library is used.
"""

import json
import os
import sys
import time
import urllib.request


def post(url, doc):
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        r.read()


def main():
    if len(sys.argv) != 3:
        print("usage: deploy.py HEALTH_URL VERSION", file=sys.stderr)
        return 2
    base, version = sys.argv[1].rstrip("/"), sys.argv[2]
    if version.endswith("-bad"):
        behaviour = {"status": 500, "body": "%s: internal server error" % version}
    else:
        behaviour = {"status": 200, "body": "%s: ok" % version}
    # a deploy takes a moment, even a pretend one
    time.sleep(int(os.environ.get("DEPLOYQ_DEMO_DEPLOY_DELAY_MS", "300")) / 1000.0)
    try:
        post(base + "/_fake/script", behaviour)
        post(base + "/_fake/deploy", {"version": version})
    except OSError as e:
        print("demo service at %s did not take %s: %s" % (base, version, e), file=sys.stderr)
        return 1
    print("demo service now serves %s" % version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
