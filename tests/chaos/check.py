#!/usr/bin/env python3
"""check.py - judge one run of the fault-injection suite (a directory driver.py filled).

It reads what the run left and checks the invariants of issue 6, independently of the
code under test (the registry files are parsed here from docs/registry-format.md; only
the chain walk is also asked of `deployq verify`):

  requests     every request the workload submitted (acknowledged by the broker) was
               judged exactly once: one deploy.validated or one deploy.rejected event id,
               never both; a request signed by a key the configuration does not know
               (workload "rogue") was rejected
  terminal     every validated deployment has exactly one terminal outcome in effect: one
               distinct deploy.succeeded or deploy.failed event id whose fence is not stale
               (stale: above 0 and below the newest fence already seen on its target, in
               partition order - the registry's fold ignores such events)
  real         every deploy.succeeded in effect names a provider run of the double that
               really succeeded, for the same deployment and version
  overlap      no two provider runs (deploys or rollback redeploys) were running on one
               target at once (the double counts them as they start and finish)
  stale        no deploy call reached a provider with a fence below one already seen for
               its target (a stale lock holder acting); stale status polls are counted
  once         no deployment id got two provider runs
  registry     `deployq verify` finds every chain intact, and the log holds every event on
               the topic exactly once, at its partition and offset, byte for byte
  rollback     every bad version that was deployed got rollback.requested and a
               rollback.succeeded in effect; no good version got a rollback.requested, and
               every good version deployed was verified
  canary       no canary token (one per secret slot) in any file of the run: logs, the
               events and dead-letter topics, registry segments, Redis' append-only file,
               notification bodies, the double's record
  workers      no worker died on its own; every worker stopped (exit 0) within 30 s of
               the final SIGTERM. A consumer close that dq_consumer_free gave up on (the
               librdkafka close hang it bounds) is counted, not a violation

Prints one line per violation and a summary line; writes check.json. Exit 1 on any
violation, 2 when the run left too little to judge.

  python3 tests/chaos/check.py RUN_DIR --deployq BUILD/producer/deployq
"""

import argparse
import json
import os
import struct
import subprocess
import sys
from collections import Counter, defaultdict

TERMINAL = ("deploy.succeeded", "deploy.failed")


def read_tsv(path):
    """[(partition, offset, raw bytes)] of a `kcat -f '%p\\t%o\\t%s\\n'` dump."""
    out = []
    with open(path, "rb") as f:
        for line in f:
            parts = line.rstrip(b"\n").split(b"\t", 2)
            if len(parts) == 3:
                out.append((int(parts[0]), int(parts[1]), parts[2]))
    return out


def read_registry(d):
    """[(partition, offset, payload)] of every record in the registry's segment files."""
    out = []
    for name in sorted(os.listdir(d)):
        if not (name.startswith("p") and name[1:].isdigit()):
            continue
        part = int(name[1:])
        for seg in sorted(f for f in os.listdir(os.path.join(d, name)) if f.endswith(".seg")):
            with open(os.path.join(d, name, seg), "rb") as f:
                data = f.read()
            pos = 0
            while pos + 64 <= len(data):
                magic, length, _seq, p, off = struct.unpack_from("<4sIQiq", data, pos)
                if magic != b"DQR1" or p != part or pos + 64 + length > len(data):
                    break
                out.append((p, off, data[pos + 60:pos + 60 + length]))
                pos += 64 + length
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--deployq", required=True)
    args = ap.parse_args()
    d = args.dir
    v = []  # violations: (invariant, text)

    def bad(inv, text):
        v.append((inv, text))

    try:
        with open(os.path.join(d, "workload.json")) as f:
            workload = json.load(f)
        with open(os.path.join(d, "record.json")) as f:
            record = json.load(f)
        with open(os.path.join(d, "faults.json")) as f:
            faults = json.load(f)
        with open(os.path.join(d, "canaries.json")) as f:
            canaries = json.load(f)
        topic = read_tsv(os.path.join(d, "events.tsv"))
    except (OSError, ValueError) as exc:
        print("check: the run left too little to judge: %s" % exc)
        return 2

    # ---- the events, in partition order, with the fold's stale-fence rule
    events = []
    for p, off, raw in sorted(topic):
        try:
            ev = json.loads(raw)
        except ValueError:
            bad("registry", "an event at %d/%d is not JSON" % (p, off))
            continue
        ev["_pos"] = (p, off)
        events.append(ev)
    newest = {}
    stale_events = 0
    for ev in events:
        t = "%s/%s" % (ev.get("service"), ev.get("environment"))
        f = ev.get("fence") or 0
        ev["_stale"] = f > 0 and f < newest.get(t, 0)
        if ev["_stale"]:
            stale_events += 1
        elif f > 0:
            newest[t] = f
    by_dep = defaultdict(list)
    for ev in events:
        by_dep[ev.get("deployment_id")].append(ev)

    def distinct(dep, types, live_only=True):
        return {e["id"]: e for e in by_dep.get(dep, ()) if e.get("type") in types and
                (not live_only or not e["_stale"])}

    # ---- requests: everything submitted was judged, once
    lost = doubled = rejected = 0
    for w in workload["deployments"]:
        verdicts = distinct(w["deployment_id"], ("deploy.validated", "deploy.rejected"), False)
        if not verdicts:
            lost += 1
            bad("requests", "%s (%s) was submitted but never judged" % (w["deployment_id"], w["version"]))
        elif len(verdicts) > 1:
            doubled += 1
            bad("requests", "%s (%s) was judged %d times: %s" % (w["deployment_id"], w["version"], len(verdicts),
                                                                 sorted(e["type"] for e in verdicts.values())))
        elif w.get("rogue") and next(iter(verdicts.values()))["type"] != "deploy.rejected":
            bad("requests", "%s (%s), signed by an unknown key, was not rejected" % (w["deployment_id"], w["version"]))
        if verdicts and all(e["type"] == "deploy.rejected" for e in verdicts.values()):
            rejected += 1
            if distinct(w["deployment_id"], TERMINAL + ("deploy.started",), False):
                bad("requests", "%s (%s) was rejected and still deployed" % (w["deployment_id"], w["version"]))

    # ---- terminal outcomes, and that they are real
    runs = {r["id"]: r for r in record["runs"]}
    validated = [dep for dep in by_dep if distinct(dep, ("deploy.validated",), False)]
    outcomes = Counter()
    for dep in validated:
        term = distinct(dep, TERMINAL)
        version = by_dep[dep][0].get("version")
        if len(term) != 1:
            if len(term) == 0:
                lost += 1
            else:
                doubled += 1
            bad("terminal", "%s (%s) has %d terminal outcomes in effect: %s" %
                (dep, version, len(term), sorted(e["type"] for e in term.values())))
            continue
        ev = next(iter(term.values()))
        outcomes[ev["type"]] += 1
        if ev["type"] == "deploy.succeeded":
            rid = (ev.get("data") or {}).get("provider_deployment_id")
            run = runs.get(rid)
            if run is None or run["status"] != "succeeded" or run["deployment_id"] != dep or \
                    run["version"] != ev.get("version"):
                bad("real", "%s: deploy.succeeded names run %s, which is %s" %
                    (dep, rid, "unknown" if run is None else json.dumps(run)))

    # ---- provider runs: overlap, stale fences, once per deployment id
    for target, n in record["max_active"].items():
        if n > 1:
            bad("overlap", "%s had %d provider runs at once" % (target, n))
    for o in record["overlaps"]:
        bad("overlap", "%s: run %s started while %s was running" % (o[0], o[2], o[1]))
    stale_polls = 0
    for s in record["stale"]:
        if s["call"].startswith("deploy"):
            bad("stale", "%s: %s with fence %s after fence %s" % (s["target"], s["call"], s["fence"], s["newest"]))
        else:
            stale_polls += 1
    per_dep = Counter(r["deployment_id"] for r in record["runs"])
    for dep, n in per_dep.items():
        if n > 1:
            doubled += 1
            bad("once", "deployment id %s got %d provider runs" % (dep, n))
    if record.get("unauthenticated"):
        bad("canary", "%d provider calls came without the token" % record["unauthenticated"])

    # ---- registry
    r = subprocess.run([args.deployq, "verify", "--json", "--dir", os.path.join(d, "registry")],
                       capture_output=True, text=True)
    try:
        ver = json.loads(r.stdout)
    except ValueError:
        ver = {}
    if r.returncode != 0 or not ver.get("intact"):
        errs = [x.get("error", "") for x in ver.get("partitions", []) if not x.get("ok")]
        bad("registry", "deployq verify: exit %d: %s" % (r.returncode, "; ".join(errs) or r.stderr.strip()[-300:]))
    log = read_registry(os.path.join(d, "registry"))
    if ver.get("records") is not None and ver.get("records") != len(log):
        bad("registry", "verify counts %s records, the files hold %d" % (ver.get("records"), len(log)))
    in_log = Counter((p, off) for p, off, _ in log)
    for key, n in in_log.items():
        if n > 1:
            bad("registry", "event %d/%d is in the log %d times" % (key[0], key[1], n))
    payload = {(p, off): raw for p, off, raw in log}
    for p, off, raw in topic:
        if (p, off) not in payload:
            bad("registry", "event %d/%d of the topic is not in the log" % (p, off))
        elif payload[(p, off)] != raw:
            bad("registry", "event %d/%d differs between the topic and the log" % (p, off))
    extra = set(payload) - {(p, off) for p, off, _ in topic}
    for key in sorted(extra):
        bad("registry", "the log holds %d/%d, which is not on the topic" % key)

    # ---- rollbacks for bad versions only. A deploy.succeeded the monitor read more than
    # one window after it happened is not watched (monitor.c), which explains a miss.
    unwatched = set()
    for name in os.listdir(d):
        if name.startswith("monitor-") and name.endswith(".log"):
            with open(os.path.join(d, name), errors="replace") as f:
                for line in f:
                    if "not watched" in line and " of " in line:
                        unwatched.add(line.split(" of ", 1)[1].split(" ", 1)[0])

    def why(version):
        return " (the monitor read its deploy.succeeded more than a window late: not watched)" \
            if version in unwatched else ""

    bad_deployed = good_deployed = 0
    for dep in validated:
        term = distinct(dep, ("deploy.succeeded",))
        if not term:
            continue
        version = next(iter(term.values())).get("version", "")
        requested = distinct(dep, ("rollback.requested",), False)
        if version.startswith("bad-"):
            bad_deployed += 1
            if not requested:
                bad("rollback", "bad version %s (%s) was deployed and never rolled back%s" % (version, dep, why(version)))
            elif not distinct(dep, ("rollback.succeeded",)):
                failed = distinct(dep, ("rollback.failed",))
                bad("rollback", "bad version %s (%s): rollback requested, %s" %
                    (version, dep, "failed: %s" % [e.get("data") for e in failed.values()] if failed
                     else "no rollback.succeeded in effect"))
        else:
            good_deployed += 1
            if requested:
                bad("rollback", "good version %s (%s) got a rollback.requested: %s" %
                    (version, dep, [e.get("data", {}).get("reason") for e in requested.values()]))
            elif not distinct(dep, ("deploy.verified",), False):
                bad("rollback", "good version %s (%s) was never verified%s" % (version, dep, why(version)))

    # ---- canaries: no secret in any file the run left (but the list of canaries itself)
    hits = []
    scanned = 0
    for root, _dirs, files in os.walk(d):
        for name in files:
            path = os.path.join(root, name)
            if os.path.abspath(path) == os.path.abspath(os.path.join(d, "canaries.json")):
                continue
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            scanned += 1
            for slot, c in canaries.items():
                if c.encode() in data:
                    hits.append("%s in %s" % (slot, os.path.relpath(path, d)))
    for h in hits:
        bad("canary", "canary token %s" % h)
    notes = []
    try:
        with open(os.path.join(d, "slack.json")) as f:
            notes = json.load(f)
    except (OSError, ValueError):
        bad("canary", "no record of the notifications")
    if bad_deployed and not any(n.get("url_had_canary") for n in notes):
        bad("canary", "no notification reached a webhook URL holding its canary: the check proves nothing")

    # ---- workers stopped cleanly. A worker that died on its own, or that had to be killed
    # at the final SIGTERM, is a violation. dq_consumer_free bounds a consumer close that
    # hangs inside librdkafka (issue #4884; docs/reliability.md, "Fault injection"); how
    # often it had to is counted from the workers' logs.
    for name, rc in sorted(workload.get("exit_codes", {}).items()):
        if rc == 0:
            continue
        text = "%s: exit %s at the end of the run" % (name, rc)
        if str(rc).startswith("killed after"):
            text += " (hung in shutdown; backtrace in %s.hang-%s.txt)" % (d.rstrip("/"), name)
        bad("workers", text)
    closes_given_up = 0
    for name in os.listdir(d):
        if name.endswith(".log"):
            with open(os.path.join(d, name), errors="replace") as f:
                closes_given_up += sum(1 for line in f if "consumer close did not finish" in line)

    kinds = Counter(f["kind"] for f in faults)
    summary = {"dir": d, "seed": workload.get("seed"), "label": workload.get("label"),
               "broker": workload.get("broker"), "deployments": len(workload["deployments"]),
               "validated": len(validated), "rejected": rejected, "outcomes": dict(outcomes),
               "outcomes_checked": rejected + sum(outcomes.values()), "lost": lost, "doubled": doubled,
               "bad_deployed": bad_deployed,
               "good_deployed": good_deployed, "events": len(topic), "registry_records": len(log),
               "stale_events": stale_events, "stale_polls": stale_polls,
               "provider_runs": len(record["runs"]), "refused_deploy_calls": len(record["refused"]),
               "notifications": len(notes), "files_scanned_for_canaries": scanned,
               "faults": dict(kinds), "kills_in_action": sum(1 for f in faults if f.get("in_action")),
               "closes_given_up": closes_given_up,
               "violations": [{"invariant": i, "text": t} for i, t in v]}
    with open(os.path.join(d, "check.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for i, t in v:
        print("VIOLATION %s: %s" % (i, t))
    print("check %s: %d deployments (%d bad deployed, %d good), %d events, %d faults (%s), %d violations"
          % (workload.get("label"), len(workload["deployments"]), bad_deployed, good_deployed, len(topic),
             len(faults), ", ".join("%s %d" % kv for kv in sorted(kinds.items())), len(v)))
    return 1 if v else 0


if __name__ == "__main__":
    sys.exit(main())
