#!/usr/bin/env python3
"""test_action.py - the composite GitHub Action (action.yml at the repository root) without
a GitHub runner: parse it with PyYAML, check its interface, and run its `run:` script the
way the runner would (inputs through the step's env, GITHUB_OUTPUT a file) with a fake
`deployq` on PATH that exits with each of `deployq submit --wait`'s codes. Shows that:
  - each exit code gives its outcome output, the same exit code (0 passes the step, any
    other fails it) and the deployment_id deployq printed;
  - deployq is called with submit --wait, the service, environment, version, key id,
    brokers, config and timeout given, and a key file that is mode 0600, holds exactly
    the key, and is gone after the step;
  - the key is in no output and not in deployq's environment;
  - no deployq on PATH: a clear error, outcome error, exit 6.

usage: test_action.py ACTION_YML
"""

import os
import re
import stat
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # python3-yaml (Debian); meson shows the test as skipped, not passed
    print("SKIP: PyYAML is not installed (apt-get install python3-yaml)", file=sys.stderr)
    sys.exit(77)

FAKE_DEPLOYQ = r"""#!/usr/bin/env bash
# a fake deployq: records its arguments and what it sees of the key, prints what
# `deployq submit --wait --json` prints, exits with FAKE_EXIT
rec="$FAKE_RECORD"
printf '%s\n' "$@" >"$rec.args"
key=""
while [ $# -gt 0 ]; do [ "$1" = --key ] && key=$2; shift; done
stat -c '%a' "$key" >"$rec.mode"
cat "$key" >"$rec.key"
printf '%s\n' "$key" >"$rec.keypath"
env >"$rec.env"
if [ "$FAKE_EXIT" != 6 ]; then
  echo '{"deployment_id":"0b7e3c1a-5d2f-4e8a-9c61-2f4d8e7a9b10","partition":3,"offset":41}'
  echo '{"type":"deploy.validated","deployment_id":"0b7e3c1a-5d2f-4e8a-9c61-2f4d8e7a9b10"}'
  echo '{"deployment_id":"0b7e3c1a-5d2f-4e8a-9c61-2f4d8e7a9b10","outcome":"x","exit_code":'"$FAKE_EXIT"'}'
fi
exit "$FAKE_EXIT"
"""

KEY = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINOTAREALKEYbutSECRETlooking0123456789abc\n-----END PRIVATE KEY-----"

EXPECTED = {0: "deployed", 1: "rejected", 2: "usage_error", 3: "failed", 4: "rolled_back",
            5: "timed_out", 6: "error", 7: "not_rolled_back", 8: "approval_expired"}

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL: " + what, file=sys.stderr)


def expand(value, inputs):
    """${{ inputs.x }} and ${{ github.sha }} as the runner would fill them in."""
    def one(m):
        expr = m.group(1).strip()
        if expr.startswith("inputs."):
            return inputs.get(expr[len("inputs."):], "")
        if expr == "github.sha":
            return "deadbeefcafe"
        raise ValueError("unexpected expression " + expr)
    return re.sub(r"\$\{\{(.*?)\}\}", one, str(value))


def run_step(action, step, inputs, fake_exit, path_dir, tmp):
    given = {}
    for name, spec in action["inputs"].items():
        given[name] = inputs.get(name, expand(spec.get("default", ""), {}))
    env = {"PATH": path_dir + ":/usr/bin:/bin", "HOME": tmp, "RUNNER_TEMP": tmp,
           "GITHUB_OUTPUT": os.path.join(tmp, "output"), "FAKE_EXIT": str(fake_exit),
           "FAKE_RECORD": os.path.join(tmp, "rec")}
    for k, v in step["env"].items():
        env[k] = expand(v, given)
    open(env["GITHUB_OUTPUT"], "w").close()
    script = os.path.join(tmp, "step.sh")
    with open(script, "w") as f:
        f.write(step["run"])
    # the runner's `shell: bash` is `bash --noprofile --norc -eo pipefail {0}`
    p = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", script], env=env, cwd=tmp,
                       capture_output=True, text=True, timeout=60)
    outputs = {}
    for line in open(env["GITHUB_OUTPUT"]):
        k, _, v = line.rstrip("\n").partition("=")
        outputs[k] = v
    return p, outputs


def main():
    with open(sys.argv[1]) as f:
        action = yaml.safe_load(f)
    check(action["runs"]["using"] == "composite", "a composite action")
    for name in ("service", "environment", "version", "ref", "signing-key", "key-id", "brokers", "timeout",
                 "config", "deployq-path"):
        check(name in action["inputs"], "input " + name)
    for name in ("outcome", "deployment_id"):
        check(name in action["outputs"], "output " + name)
        check("steps.submit.outputs." + name in action["outputs"][name]["value"], "output %s from the step" % name)
    steps = action["runs"]["steps"]
    check(len(steps) == 1 and steps[0]["shell"] == "bash", "one bash step")
    step = steps[0]
    check("${{" not in step["run"], "no expression pasted into the script")

    inputs = {"service": "api", "environment": "production", "version": "v1.2.3", "signing-key": KEY,
              "key-id": "ci-1", "brokers": "kafka-1:9092,kafka-2:9092", "config": "/etc/deployq/client.yaml",
              "timeout": "900"}
    with tempfile.TemporaryDirectory() as bindir:
        fake = os.path.join(bindir, "deployq")
        with open(fake, "w") as f:
            f.write(FAKE_DEPLOYQ)
        os.chmod(fake, 0o755)
        for code, outcome in sorted(EXPECTED.items()):
            with tempfile.TemporaryDirectory() as tmp:
                p, out = run_step(action, step, inputs, code, bindir, tmp)
                rec = os.path.join(tmp, "rec")
                check(p.returncode == code, "exit %d: the step exits %d" % (code, p.returncode))
                check(out.get("outcome") == outcome, "exit %d: outcome %r, expected %r" % (code, out.get("outcome"), outcome))
                check(out.get("exit_code") == str(code), "exit %d: exit_code output %r" % (code, out.get("exit_code")))
                want_id = "" if code == 6 else "0b7e3c1a-5d2f-4e8a-9c61-2f4d8e7a9b10"
                check(out.get("deployment_id") == want_id, "exit %d: deployment_id %r" % (code, out.get("deployment_id")))
                args = open(rec + ".args").read().split("\n")
                check(args[:3] == ["submit", "--wait", "--json"], "exit %d: submit --wait: %r" % (code, args[:3]))
                joined = " ".join(args)
                for want in ("--service api", "--env production", "--version v1.2.3", "--key-id ci-1",
                             "--timeout 900", "--config /etc/deployq/client.yaml",
                             "--brokers kafka-1:9092,kafka-2:9092"):
                    check(want in joined, "exit %d: deployq given %r (args: %s)" % (code, want, joined))
                check(open(rec + ".mode").read().strip() == "600", "exit %d: key file mode %s" % (code, open(rec + ".mode").read().strip()))
                check(open(rec + ".key").read() == KEY + "\n", "exit %d: key file holds the key" % code)
                keypath = open(rec + ".keypath").read().strip()
                check(keypath.startswith(tmp + "/"), "exit %d: key file in RUNNER_TEMP" % code)
                check(not os.path.exists(keypath), "exit %d: key file removed after the step" % code)
                check("NOTAREALKEY" not in open(rec + ".env").read(), "exit %d: the key is not in deployq's environment" % code)
                check("NOTAREALKEY" not in p.stdout + p.stderr, "exit %d: the key is not printed" % code)
                if code:
                    check("::error title=deploy %s::" % outcome in p.stdout, "exit %d: an error annotation" % code)

    # no deployq anywhere: a clear error, not a shell's "command not found"
    with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as tmp:
        p, out = run_step(action, step, dict(inputs, **{"deployq-path": os.path.join(empty, "deployq")}), 0, empty, tmp)
        check(p.returncode == 6 and out.get("outcome") == "error", "missing deployq: exit 6, outcome error")
        check("deployq-path" in p.stdout, "missing deployq: the message names deployq-path")

    if failures:
        print("%d check(s) failed" % len(failures), file=sys.stderr)
        return 1
    print("action.yml: %d exit codes mapped, key handling checked" % len(EXPECTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
