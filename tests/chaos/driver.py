#!/usr/bin/env python3
"""driver.py - one run of the fault-injection suite (tests/chaos/run.sh runs it N times).

A run starts the whole pipeline on one machine: Redis (append-only file, fsync always,
a password), a broker (the embedded one, or a real Kafka started by run.sh), the provider
and health double (tests/chaos/double.py), a Slack double (tests/fakes/slack.py), and two
instances of every worker: deployq-validator, -executor, -monitor, -rollback, -registry
(the registries share one directory: a partition has one writer at a time). Every secret
slot holds a canary token of its own (provider tokens, Redis password, SASL password,
webhook URLs, a probe header, the registry API token).

Then, for --duration seconds, a workload deploys to several targets while a fault thread
injects, at random moments drawn from random.Random(seed):
  kill      SIGKILL of a worker (an executor polling a provider, a monitor holding a
            watch session, a rollback worker, a registry, or any), restarted 0.5-3 s later
  stop      SIGSTOP of a worker (preferably a lock holder) for longer than the lock lease,
            then SIGCONT
  redis     SIGKILL of Redis, restarted on the same port and files 0.5-3 s later
  broker    real Kafka only: scripts/kafka.sh stop, then start on the same --dir and port
  provider  the primary provider answers 5xx, times out, fails or slows status polls
  health    every health endpoint answers slowly (below the probe timeout) for a while
Each target deploys one version at a time: the next request goes in once the previous
deployment has settled (verified, rolled back, failed or rejected). About a third of the
versions are "bad" (named bad-*): the health double answers 500 once such a version runs,
so the monitor must ask for a rollback and the rollback worker must restore the last
verified version.

--cluster-dir D runs the pipeline on the three-node Kafka of scripts/kafka-cluster.sh
(started by the caller, tests/integration/0700-cluster-replicated.sh) and --faults
scripted replaces the random faults by a fixed sequence over the workload: one broker
stopped (stop-broker) at 20% of --duration, Redis stopped with SIGTERM and started again
on its append-only file at 35%, the broker started again at 60%, Redis killed (SIGKILL)
and started again at 75%. --reject-share makes that share of the requests signed by a
key the configuration does not know, so the validator must reject them.

After the workload: faults stop, every target's last deployment may settle, the workers
are stopped (SIGTERM), the registries once they hold every event of the topic. Everything
a checker needs is left in --dir: events.tsv (partition, offset, value of every event on
the topic), dead.tsv, record.json (the double), slack.json, workload.json, faults.json,
canaries.json, registry/, and the logs. tests/chaos/check.py judges it.
"""

import argparse
import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

WORKERS = ("validator", "executor", "monitor", "rollback", "registry")
CANARY_SLOTS = ("provider1", "provider2", "redis", "sasl", "slack", "hook", "probe", "registry")
LOCK_TTL_S = 3


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def now():
    return time.monotonic()


class Run:
    def __init__(self, args):
        self.a = args
        self.rng = random.Random(args.seed)
        self.dir = args.dir
        self.build = args.build
        self.src = args.source
        self.deployq = os.path.join(self.build, "producer", "deployq")
        self.procs = {}          # name -> Popen (workers and helpers)
        self.busy = set()        # worker names being killed/restarted or stopped
        self.last_hit = {}       # worker kind -> when one of its instances was last faulted
        self.lock = threading.Lock()
        self.t0 = now()
        self.faults = []         # {"at", "kind", "target", ...}
        self.workload = []       # {"deployment_id", "target", "version", "bad", "submitted_at"}
        self.submit_failures = 0
        self.events = {}         # deployment_id -> list of events seen (tail)
        self.ev_lock = threading.Lock()
        self.ev_count = 0
        self.last_event = 0.0
        self.stopping = threading.Event()
        self.workload_over = threading.Event()
        self.cluster = args.cluster_dir is not None
        self.kafka = args.kafka_dir is not None or self.cluster
        self.canaries = {s: "cnry-%s-%s" % (s, os.urandom(8).hex()) for s in CANARY_SLOTS}
        self.env = dict(os.environ)
        for s, v in self.canaries.items():
            self.env["DQ_CANARY_" + s.upper()] = v
        self.env["DEPLOYQ_SCHEMAS"] = os.path.join(self.src, "schemas")
        self.env["DEPLOYQ_STATE_DIR"] = os.path.join(self.dir, "state")
        os.makedirs(self.env["DEPLOYQ_STATE_DIR"], exist_ok=True)
        self.targets = []
        for i in range(args.targets):
            self.targets.append(("svc%d" % (i // 2 + 1), ("staging", "production")[i % 2]))

    # ---------------------------------------------------------------- helpers
    def say(self, msg):
        print("# chaos[%s] %6.1fs %s" % (self.a.label, now() - self.t0, msg), file=sys.stderr, flush=True)

    def spawn(self, name, argv, log=None):
        out = open(os.path.join(self.dir, (log or name) + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                             stdin=subprocess.DEVNULL)
        out.close()
        self.procs[name] = p
        return p

    def wait_until(self, secs, pred, what):
        end = now() + secs
        while now() < end:
            if pred():
                return True
            time.sleep(0.2)
        raise RuntimeError("timed out waiting for " + what)

    def http(self, method, url, doc=None, timeout=10):
        data = json.dumps(doc).encode() if doc is not None else None
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")

    # ---------------------------------------------------------------- services
    def start_redis(self):
        argv = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                "--dir", os.path.join(self.dir, "redis"), "--appendonly", "yes",
                "--appendfsync", "always", "--save", "", "--requirepass", self.canaries["redis"]]
        os.makedirs(os.path.join(self.dir, "redis"), exist_ok=True)
        self.spawn("redis", argv)
        self.wait_until(15, self.redis_up, "redis-server")

    def redis_up(self):
        r = subprocess.run(["redis-cli", "-p", str(self.redis_port), "--no-auth-warning", "-a",
                            self.canaries["redis"], "ping"], capture_output=True, text=True)
        return r.stdout.strip() == "PONG"

    def start_broker(self):
        if self.kafka:
            if self.cluster:
                with open(os.path.join(self.a.cluster_dir, "cluster.addr")) as f:
                    self.brokers = f.read().strip()
            else:
                self.brokers = "127.0.0.1:%d" % self.a.kafka_port
            sfx = "chaos-%d-%s" % (self.a.seed, os.urandom(3).hex())
            self.topics = {"requests": "deployq.requests." + sfx, "events": "deployq.events." + sfx,
                           "dead": "deployq.dead." + sfx}
            return
        addr = os.path.join(self.dir, "broker.addr")
        self.spawn("broker", [self.deployq, "broker", "--address-file", addr])
        self.wait_until(15, lambda: os.path.exists(addr) and os.path.getsize(addr) > 0, "broker")
        with open(addr) as f:
            self.brokers = f.read().strip()
        self.topics = {"requests": "deployq.requests", "events": "deployq.events", "dead": "deployq.dead"}

    def restart_kafka(self):
        ks = os.path.join(self.src, "scripts", "kafka.sh")
        subprocess.run([ks, "stop", "--dir", self.a.kafka_dir], capture_output=True, env=self.env)
        time.sleep(self.rng.uniform(0.5, 3))
        r = subprocess.run([ks, "start", "--dir", self.a.kafka_dir, "--port", str(self.a.kafka_port)],
                           capture_output=True, text=True, env=self.env)
        if r.returncode != 0:
            self.say("kafka did not restart: " + r.stderr[-500:])
            raise RuntimeError("kafka did not restart")

    def start_doubles(self):
        pf = os.path.join(self.dir, "double.port")
        self.spawn("double", [sys.executable, os.path.join(self.src, "tests", "chaos", "double.py"),
                              "--port-file", pf, "--seed", str(self.a.seed),
                              "--steps-min", str(self.a.steps_min), "--steps-max", str(self.a.steps_max)])
        self.wait_until(15, lambda: os.path.exists(pf), "the provider/health double")
        with open(pf) as f:
            self.double = "http://127.0.0.1:%d" % int(f.read())
        pf = os.path.join(self.dir, "slack.port")
        self.spawn("slack", [sys.executable, os.path.join(self.src, "tests", "fakes", "slack.py"),
                             "--port", "0", "--port-file", pf])
        self.wait_until(15, lambda: os.path.exists(pf), "the Slack double")
        with open(pf) as f:
            self.slack = "http://127.0.0.1:%d" % int(f.read())

    def pubkey(self, pem):
        der = subprocess.run(["openssl", "pkey", "-in", pem, "-pubout", "-outform", "DER"],
                             capture_output=True, check=True).stdout
        return base64.b64encode(der[-32:]).decode()

    def write_config(self):
        self.key = os.path.join(self.dir, "ci.key")
        subprocess.run([self.deployq, "keygen", "--out", self.key, "--id", "ci-chaos"],
                       check=True, capture_output=True, env=self.env)
        # a key the configuration does not list: what it signs must be rejected
        self.rogue_key = os.path.join(self.dir, "rogue.key")
        subprocess.run([self.deployq, "keygen", "--out", self.rogue_key, "--id", "ci-rogue"],
                       check=True, capture_output=True, env=self.env)
        prov = []
        for p in ("p1", "p2"):
            prov.append(
                '  %s: {type: webhook, url: "%s/%s/deploy", status_url: "%s/%s/status/{id}", '
                'token: "${DQ_CANARY_PROVIDER%s}", timeout: 2s, retries: 3, retry_budget: 10s, '
                "poll_interval: 300ms, deadline: 120s}" % (p, self.double, p, self.double, p, p[1:]))
        svcs = {}
        for svc, env in self.targets:
            svcs.setdefault(svc, []).append(
                "      %s:\n"
                "        providers: [p1, p2]\n"
                "        rollback: auto\n"
                "        monitor:\n"
                "          interval: 1s\n"
                "          window: %ds\n"
                "          failure_threshold: 3\n"
                "          probes:\n"
                '            - {name: health, url: "%s/health/%s/%s", expect_status: 200, timeout: 3s,\n'
                '               headers: ["Authorization: Bearer ${DQ_CANARY_PROBE}"]}\n'
                % (env, self.a.window, self.double, svc, env))
        services = "".join("  %s:\n    environments:\n%s" % (s, "".join(e)) for s, e in svcs.items())
        self.config = os.path.join(self.dir, "deployq.yaml")
        with open(self.config, "w") as f:
            f.write("""kafka:
  bootstrap.servers: "%(brokers)s"
  session.timeout.ms: "6000"
  heartbeat.interval.ms: "500"
  sasl.username: "deployq"
  sasl.password: "${DQ_CANARY_SASL}"
redis:
  url: "redis://:${DQ_CANARY_REDIS}@127.0.0.1:%(redis)d"
topics:
  requests: "%(req)s"
  events: "%(ev)s"
  dead: "%(dead)s"
keys:
  - id: ci-chaos
    public_key: "%(pub)s"
    role: ci
executor:
  lock_ttl: %(ttl)ds
  lock_wait: 60s
monitor:
  workers: 2
registry:
  http:
    listen: "127.0.0.1:0"
    token: "${DQ_CANARY_REGISTRY}"
notifications:
  slack_webhook: "%(slack)s/services/T0/B0/${DQ_CANARY_SLACK}"
  webhook: "%(slack)s/hooks/${DQ_CANARY_HOOK}"
  on: [rollback.requested, rollback.succeeded, rollback.failed, deploy.failed]
providers:
%(prov)s
services:
%(services)s""" % {"brokers": self.brokers, "redis": self.redis_port, "req": self.topics["requests"],
                   "ev": self.topics["events"], "dead": self.topics["dead"],
                   "pub": self.pubkey(self.key), "ttl": LOCK_TTL_S, "slack": self.slack,
                   "prov": "\n".join(prov), "services": services})

    # ---------------------------------------------------------------- workers
    def worker_argv(self, kind, name):
        exe = os.path.join(self.build, "workers", kind, "deployq-" + kind)
        argv = [exe, "--config", self.config, "--log-level", "debug"]
        if kind == "registry":
            argv += ["--dir", os.path.join(self.dir, "registry")]
        return argv

    def start_worker(self, name):
        kind = name.split("-")[0]
        self.spawn(name, self.worker_argv(kind, name))

    def start_workers(self):
        for kind in WORKERS:
            for inst in ("a", "b"):
                self.start_worker("%s-%s" % (kind, inst))
            if kind == "validator" and self.kafka:
                # workers create the topics on a real Kafka; wait before anyone produces
                self.wait_until(60, self.topics_ready, "the topics")

    def topics_ready(self):
        r = subprocess.run(["kcat", "-L", "-b", self.brokers, "-t", self.topics["events"]],
                           capture_output=True, text=True)
        return "with 6 partitions" in r.stdout

    def worker_names(self):
        return ["%s-%s" % (k, i) for k in WORKERS for i in ("a", "b")]

    def logged(self, name, text):
        try:
            with open(os.path.join(self.dir, name + ".log"), "rb") as f:
                return text.encode() in f.read()
        except OSError:
            return False

    # ---------------------------------------------------------------- events tail
    def tail(self):
        argv = ["kcat", "-C", "-b", self.brokers, "-t", self.topics["events"], "-o", "beginning",
                "-u", "-q", "-f", "%p\t%o\t%s\n"]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env)
        self.procs["tail"] = p
        for line in p.stdout:
            parts = line.decode("utf-8", "replace").rstrip("\n").split("\t", 2)
            if len(parts) != 3:
                continue
            try:
                ev = json.loads(parts[2])
            except ValueError:
                continue
            with self.ev_lock:
                self.ev_count += 1
                self.last_event = now()
                self.events.setdefault(ev.get("deployment_id"), []).append(ev)

    def evs(self, dep):
        with self.ev_lock:
            return list(self.events.get(dep, ()))

    def in_flight(self, started, ends):
        """Actors (pids) of deployments that have a `started` event and none of `ends`."""
        pids = []
        with self.ev_lock:
            for evs in self.events.values():
                types = {e.get("type") for e in evs}
                if started in types and not types & ends:
                    for e in evs:
                        if e.get("type") == started:
                            try:
                                pids.append(int(str(e.get("actor", "")).rsplit("/", 1)[1]))
                            except (IndexError, ValueError):
                                pass
        return pids

    # ---------------------------------------------------------------- workload
    def submit(self, svc, env, version, rogue=False):
        r = subprocess.run([self.deployq, "submit", "--config", self.config,
                            "--key", self.rogue_key if rogue else self.key,
                            "--key-id", "ci-rogue" if rogue else "ci-chaos",
                            "--service", svc, "--env", env, "--version",
                            version, "--timeout", "10"], capture_output=True, text=True, env=self.env)
        if r.returncode != 0:
            with open(os.path.join(self.dir, "submit.log"), "a") as f:
                f.write(r.stderr)
            return None
        return r.stdout.strip()

    def settled(self, dep, bad):
        types = [e.get("type") for e in self.evs(dep)]
        if "deploy.rejected" in types or "deploy.failed" in types:
            return True
        if "deploy.succeeded" not in types:
            return False
        if bad:
            return "rollback.succeeded" in types or "rollback.failed" in types
        return "deploy.verified" in types or "rollback.requested" in types

    def target_loop(self, idx, svc, env, rng):
        verified = False
        n = 0
        while not self.workload_over.is_set():
            n += 1
            rogue = rng.random() < self.a.reject_share
            bad = not rogue and verified and rng.random() < self.a.bad_share
            version = "%s-%s-%s-%d" % ("rogue" if rogue else "bad" if bad else "good", svc, env, n)
            dep = None
            for _ in range(10):
                dep = self.submit(svc, env, version, rogue)
                if dep or self.stopping.is_set():
                    break
                self.submit_failures += 1
                time.sleep(1)
            if not dep:
                self.say("%s/%s: could not submit %s" % (svc, env, version))
                continue
            rec = {"deployment_id": dep, "target": "%s/%s" % (svc, env), "version": version,
                   "bad": bad, "rogue": rogue, "submitted_at": round(now() - self.t0, 2)}
            with self.lock:
                self.workload.append(rec)
            end = now() + self.a.settle_timeout
            while now() < end and not self.settled(dep, bad) and not self.stopping.is_set():
                time.sleep(0.3)
            rec["settled"] = self.settled(dep, bad)
            rec["settled_at"] = round(now() - self.t0, 2)
            types = {e.get("type") for e in self.evs(dep)}
            if "deploy.verified" in types and not bad:
                verified = True

    # ---------------------------------------------------------------- faults
    def record_fault(self, kind, **kw):
        kw.update({"kind": kind, "at": round(now() - self.t0, 2)})
        with self.lock:
            self.faults.append(kw)
        self.say("fault %s %s" % (kind, " ".join("%s=%s" % (k, v) for k, v in kw.items()
                                                   if k not in ("kind", "at"))))

    def pick_worker(self, rng, pids, kinds):
        """A worker whose pid is in pids (and not busy), else any free one of kinds."""
        with self.lock:
            cool = now() - self.a.cooldown
            free = [n for n in self.worker_names() if n not in self.busy and n.split("-")[0] in kinds
                    and self.last_hit.get(n.split("-")[0], -1e9) < cool]
            by_pid = [n for n in free if self.procs.get(n) and self.procs[n].pid in pids]
            pool = by_pid or free
            if not pool:
                return None, False
            name = rng.choice(sorted(pool))
            self.busy.add(name)
            self.last_hit[name.split("-")[0]] = now()
            return name, bool(by_pid)

    def release(self, name):
        with self.lock:
            self.busy.discard(name)

    def await_action(self, started, ends, secs=6.0):
        """Pids of workers in the middle of an action; waits up to secs for one to begin."""
        end = now() + secs
        while True:
            pids = self.in_flight(started, ends)
            if pids or now() >= end or self.workload_over.is_set():
                return pids
            time.sleep(0.1)

    def fault_kill(self, rng):
        sub = rng.choice(("executor-polling", "monitor-window", "rollback-active", "registry", "any"))
        if sub == "executor-polling":
            pids = self.await_action("deploy.started", {"deploy.succeeded", "deploy.failed"})
            name, hit = self.pick_worker(rng, pids, ("executor",))
        elif sub == "monitor-window":
            pids = self.await_action("monitor.started", {"deploy.verified", "rollback.requested"})
            name, hit = self.pick_worker(rng, pids, ("monitor",))
        elif sub == "rollback-active":
            pids = self.await_action("rollback.started", {"rollback.succeeded", "rollback.failed"})
            name, hit = self.pick_worker(rng, pids, ("rollback",))
        elif sub == "registry":
            name, hit = self.pick_worker(rng, [], ("registry",))
        else:
            name, hit = self.pick_worker(rng, [], WORKERS)
        if name is None:
            return
        delay = rng.uniform(0.5, 3)
        p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.record_fault("kill", worker=name, aimed=sub, in_action=hit)

        def restart():
            self.start_worker(name)
            self.release(name)
        threading.Timer(delay, restart).start()

    def fault_stop(self, rng):
        pids = (self.await_action("deploy.started", {"deploy.succeeded", "deploy.failed"}, 3.0) +
                self.in_flight("rollback.started", {"rollback.succeeded", "rollback.failed"}))
        if rng.random() < 0.7:
            name, hit = self.pick_worker(rng, pids, ("executor", "rollback"))
        else:
            name, hit = self.pick_worker(rng, [], WORKERS)
        if name is None:
            return
        secs = LOCK_TTL_S + rng.uniform(1, 3)
        self.procs[name].send_signal(signal.SIGSTOP)
        self.record_fault("stop", worker=name, seconds=round(secs, 1), lock_holder=hit)

        def cont():
            p = self.procs.get(name)
            if p is not None:
                p.send_signal(signal.SIGCONT)
            self.release(name)
        threading.Timer(secs, cont).start()

    def fault_redis(self, rng, sig=signal.SIGKILL):
        down = rng.uniform(0.5, 3)
        p = self.procs["redis"]
        p.send_signal(sig)
        p.wait()
        self.record_fault("redis", down_s=round(down, 1), signal=signal.Signals(sig).name)
        time.sleep(down)
        self.start_redis()

    def cluster_script(self, *argv):
        ks = os.path.join(self.src, "scripts", "kafka-cluster.sh")
        r = subprocess.run([ks] + list(argv) + ["--dir", self.a.cluster_dir],
                           capture_output=True, text=True, env=self.env)
        if r.returncode != 0:
            raise RuntimeError("kafka-cluster.sh %s: %s" % (" ".join(argv), r.stderr.strip()[-300:]))

    def scripted_faults(self, rng):
        """The cluster test's sequence: a broker down from 20% to 60% of the workload,
        Redis stopped (SIGTERM) at 35% and killed (SIGKILL) at 75%, each restarted on its
        append-only file. The broker and Redis have a thread each, so a broker that is
        slow to come back does not push Redis' turn past the workload."""
        node = rng.randint(1, 3)
        seqs = ([(0.20, "broker_stop"), (0.60, "broker_start")],
                [(0.35, "redis_term"), (0.75, "redis_kill")])
        threads = [threading.Thread(target=self.scripted_sequence,
                                    args=(seq, node, random.Random(rng.random()))) for seq in seqs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def scripted_sequence(self, plan, node, rng):
        for share, kind in plan:
            if self.workload_over.wait(max(0.0, self.t_work + share * self.a.duration - now())):
                break
            try:
                if kind == "broker_stop":
                    self.cluster_script("stop-broker", str(node))
                    self.record_fault("broker_stop", node=node)
                elif kind == "broker_start":
                    self.cluster_script("start-broker", str(node))
                    self.record_fault("broker_start", node=node)
                else:
                    self.fault_redis(rng, signal.SIGTERM if kind == "redis_term" else signal.SIGKILL)
            except Exception as exc:  # reported; the test then fails on the missing fault
                self.record_fault("error", what=kind, error=str(exc)[:300])

    def fault_broker(self, rng):
        self.record_fault("broker")
        self.restart_kafka()

    def fault_provider(self, rng):
        kind = rng.choice(("deploy_5xx", "deploy_timeout", "status_5xx", "status_slow"))
        doc = {"provider": "p1"}
        if kind == "deploy_5xx":
            doc[kind] = rng.randint(1, 6)
        elif kind == "deploy_timeout":
            doc.update({kind: rng.randint(1, 2), "delay_ms": 2500})
        elif kind == "status_5xx":
            doc[kind] = rng.randint(1, 8)
        else:
            doc.update({kind: rng.randint(1, 3), "delay_ms": 2500})
        self.http("POST", self.double + "/_chaos/fault", doc)
        self.record_fault("provider_" + kind, count=doc[kind])

    def fault_health(self, rng):
        secs = rng.uniform(3, 10)
        self.http("POST", self.double + "/_chaos/fault", {"health_slow_s": secs, "latency_ms": 1500})
        self.record_fault("health_slow", seconds=round(secs, 1), latency_ms=1500)

    def fault_loop(self, rng):
        kinds = [("kill", 5), ("stop", 2), ("redis", 1), ("provider", 3), ("health", 1)]
        if self.a.kafka_dir:
            kinds.append(("broker", 1))
        total = sum(w for _, w in kinds)
        fns = {"kill": self.fault_kill, "stop": self.fault_stop, "redis": self.fault_redis,
               "broker": self.fault_broker, "provider": self.fault_provider, "health": self.fault_health}
        while not self.workload_over.wait(rng.uniform(self.a.fault_min, self.a.fault_max)):
            x = rng.uniform(0, total)
            for k, w in kinds:
                x -= w
                if x <= 0:
                    break
            try:
                fns[k](rng)
            except Exception as exc:  # a fault that could not be injected is reported, not fatal
                self.record_fault("error", what=k, error=str(exc)[:200])

    # ---------------------------------------------------------------- the run
    def dump_topic(self, topic, path):
        r = subprocess.run(["kcat", "-C", "-b", self.brokers, "-t", topic, "-o", "beginning", "-e", "-q",
                            "-f", "%p\t%o\t%s\n"], capture_output=True, env=self.env, timeout=120)
        with open(path, "wb") as f:
            f.write(r.stdout)
        return r.stdout.count(b"\n")

    def registry_records(self):
        r = subprocess.run([self.deployq, "verify", "--json", "--dir", os.path.join(self.dir, "registry")],
                           capture_output=True, text=True, env=self.env)
        try:
            return int(json.loads(r.stdout).get("records", 0))
        except (ValueError, AttributeError):
            return -1

    def stop_proc(self, name, secs=30):
        p = self.procs.get(name)
        if p is None:
            return None
        if p.poll() is not None:
            # every kill of ours is followed by a restart: this one died on its own
            return "exited early (%s)" % p.returncode
        p.send_signal(signal.SIGCONT)
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(secs)
        except subprocess.TimeoutExpired:
            # Where it hangs, for the report; kept beside the run directory, not in it, since
            # a backtrace may show a secret among the arguments (the canary sweep reads the run).
            if shutil.which("gdb"):
                with open(self.dir.rstrip("/") + ".hang-%s.txt" % name, "w") as f:
                    subprocess.run(["gdb", "-p", str(p.pid), "-batch", "-ex", "thread apply all bt"],
                                   stdout=f, stderr=subprocess.STDOUT, timeout=120)
            p.kill()
            p.wait()
            return "killed after %d s" % secs

    def run(self):
        self.redis_port = free_port()
        self.start_redis()
        self.start_broker()
        self.start_doubles()
        self.write_config()
        self.start_workers()
        threading.Thread(target=self.tail, daemon=True).start()
        # consuming once every worker of a group logged its partitions
        for name in self.worker_names():
            self.wait_until(90, lambda n=name: self.logged(n, "assigned") or self.logged(n, "resuming at")
                            or self.logged(n, "storing "), name + " joining its group")
        self.say("pipeline up (brokers %s); workload for %d s" % (self.brokers, self.a.duration))
        threads = []
        for i, (svc, env) in enumerate(self.targets):
            t = threading.Thread(target=self.target_loop, args=(i, svc, env, random.Random(self.rng.random())))
            t.start()
            threads.append(t)
        self.t_work = now()
        faults = self.scripted_faults if self.a.faults == "scripted" else self.fault_loop
        ft = threading.Thread(target=faults, args=(random.Random(self.rng.random()),))
        ft.start()
        time.sleep(self.a.duration)
        self.workload_over.set()
        self.workload_s = now() - self.t_work
        ft.join()
        self.say("workload over; letting every target settle")
        # no stopped worker stays stopped, no killed one stays dead
        self.wait_until(30, lambda: not self.busy, "faults to end")
        for t in threads:
            t.join()
        # Stop everything that emits, then let the registries catch up with the topic.
        rcs = {}
        for name in self.worker_names():
            if not name.startswith("registry"):
                rcs[name] = self.stop_proc(name)
        n = self.dump_topic(self.topics["events"], os.path.join(self.dir, "events.tsv"))
        try:
            self.wait_until(60, lambda: self.registry_records() >= n, "the registries to hold %d events" % n)
        except RuntimeError as exc:
            self.say(str(exc))
        for name in ("registry-a", "registry-b"):
            rcs[name] = self.stop_proc(name)
        self.dump_topic(self.topics["events"], os.path.join(self.dir, "events.tsv"))
        self.dump_topic(self.topics["dead"], os.path.join(self.dir, "dead.tsv"))
        with open(os.path.join(self.dir, "record.json"), "w") as f:
            json.dump(self.http("GET", self.double + "/_chaos/record"), f)
        # The notification bodies, and which hook each went to. The URLs themselves are
        # secrets (their canaries are in the paths the double saw), so only a flag says
        # that the configured URL was the one called.
        calls = self.http("GET", self.slack + "/_fake/calls").get("calls", [])
        notes = [{"hook": "slack" if c["path"].startswith("/services/") else "webhook",
                  "url_had_canary": self.canaries["slack"] in c["path"] or self.canaries["hook"] in c["path"],
                  "headers": c.get("headers"), "body": c.get("body")} for c in calls]
        with open(os.path.join(self.dir, "slack.json"), "w") as f:
            json.dump(notes, f)
        with open(os.path.join(self.dir, "workload.json"), "w") as f:
            json.dump({"seed": self.a.seed, "label": self.a.label, "duration": self.a.duration,
                       "broker": "kafka-cluster" if self.cluster else "kafka" if self.kafka else "embedded",
                       "topics": self.topics, "targets": len(self.targets),
                       "workload_s": round(self.workload_s, 1), "run_s": round(now() - self.t0, 1),
                       "submit_failures": self.submit_failures, "deployments": self.workload,
                       "exit_codes": rcs}, f, indent=1)
        with open(os.path.join(self.dir, "faults.json"), "w") as f:
            json.dump(self.faults, f, indent=1)
        with open(os.path.join(self.dir, "canaries.json"), "w") as f:
            json.dump(self.canaries, f)
        self.say("run over: %d deployments, %d faults, %d events" % (len(self.workload), len(self.faults), n))

    def shutdown(self):
        self.stopping.set()
        self.workload_over.set()
        for name, p in list(self.procs.items()):
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for name, p in list(self.procs.items()):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main():
    ap = argparse.ArgumentParser(description="one run of the deployq fault-injection suite")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--label", default="run")
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--targets", type=int, default=6)
    ap.add_argument("--window", type=int, default=30, help="monitor window, seconds")
    ap.add_argument("--bad-share", type=float, default=0.5)
    ap.add_argument("--settle-timeout", type=int, default=120)
    ap.add_argument("--fault-min", type=float, default=2.0)
    ap.add_argument("--fault-max", type=float, default=5.0)
    ap.add_argument("--cooldown", type=float, default=10.0,
                    help="seconds before the same worker kind is faulted again")
    ap.add_argument("--kafka-dir")
    ap.add_argument("--kafka-port", type=int)
    ap.add_argument("--steps-min", type=int, default=4, help="status polls a provider run takes, at least")
    ap.add_argument("--steps-max", type=int, default=16, help="status polls a provider run takes, at most")
    ap.add_argument("--cluster-dir", help="a scripts/kafka-cluster.sh cluster, started")
    ap.add_argument("--faults", choices=("random", "scripted"), default="random")
    ap.add_argument("--reject-share", type=float, default=0.0,
                    help="share of requests signed by a key the configuration does not know")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    run = Run(args)
    rc = 0

    def interrupted(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, interrupted)  # stop everything we started, then exit
    try:
        run.run()
    except KeyboardInterrupt:
        run.say("interrupted")
        rc = 130
    except Exception as exc:
        run.say("run aborted: %s" % exc)
        rc = 2
    finally:
        run.shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
