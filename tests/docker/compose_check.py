#!/usr/bin/python3
"""compose_check.py - hold docker/compose.yaml to the build, to its deployq.yaml and to the
Compose Specification.

usage: compose_check.py --build DIR --source DIR --schema FILE [--compose FILE]
                        [--prometheus FILE]

Refuses (exit 1, one line per problem, "compose.yaml: ...") when

  - the file is not valid against the Compose Specification's JSON Schema (FILE: the
    compose-go module's schema/compose-spec.json that scripts/install-deps.sh caches;
    Debian's docker-compose 1.29 predates the spec's top-level `name:`, so it cannot be
    the judge). YAML anchors and merge keys are resolved first, as compose does;
  - a worker that meson builds (an executable deployq-<name> defined under workers/,
    read from DIR/meson-info/intro-targets.json) has no service whose command runs it;
  - a worker service does not mount the deployq.yaml it is checked against at
    $DEPLOYQ_CONFIG, or does not pass every ${NAME} that deployq.yaml uses in its
    environment (every worker loads the whole file, and an unset reference stops it);
    env.example next to the compose file, when there is one, must list each of them;
  - a port differs from the defaults: the registry must publish 127.0.0.1:P:P where P is
    the port of registry.http.listen in deployq.yaml and of DQ_HTTPAPI_DEFAULT_LISTEN in
    the source; every other worker must run with `--health-listen :P` and expose P, P
    being the shared contract's default (below; once the built worker's --help mentions
    --health-listen, its help text must name the same default);
  - with --prometheus: the scrape config does not target each worker's service at its
    port (docker/monitoring/prometheus.yml).

Exit 0 prints one "ok:" line per check. Exit 2: usage, or a file that cannot be read.
"""
import argparse
import json
import os
import re
import subprocess
import sys

import jsonschema
import yaml

# The health ports of the shared contract of issue 13 (docs/docker.md lists them too).
HEALTH_DEFAULTS = {"validator": 9101, "executor": 9102, "monitor": 9103, "rollback": 9104}
REGISTRY_DEFAULT_DEFINE = re.compile(r'#define\s+DQ_HTTPAPI_DEFAULT_LISTEN\s+"[^"]*:(\d+)"')
# deployq's reference syntax (docs/configuration.md): ${NAME}; $${ is a literal ${.
REFERENCE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")

problems = []


def problem(msg):
    problems.append(msg)


def die(msg):
    print(f"compose_check: {msg}", file=sys.stderr)
    sys.exit(2)


def load_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except OSError as e:
        die(f"{path}: cannot read: {e.strerror}")
    except yaml.YAMLError as e:
        problem(f"{os.path.basename(path)}: not YAML: {e}".replace("\n", " "))
        return None


def references(node, out):
    """Every ${NAME} in the scalar values of a loaded YAML tree (keys are literal)."""
    if isinstance(node, dict):
        for v in node.values():
            references(v, out)
    elif isinstance(node, list):
        for v in node:
            references(v, out)
    elif isinstance(node, str):
        for m in REFERENCE.finditer(node):
            if not m.group(1):
                out.add(m.group(2))
    return out


def check_schema(doc, schema_path):
    try:
        with open(schema_path, encoding="utf-8") as f:
            schema = json.load(f)
    except OSError as e:
        die(f"{schema_path}: cannot read ({e.strerror}): run scripts/install-deps.sh")
    # The draft the schema names (2020-12 for compose-go v2). compose-go also registers a
    # "duration" format, which no keyword of this schema version uses.
    cls = jsonschema.validators.validator_for(schema)
    errors = sorted(cls(schema).iter_errors(doc), key=lambda e: list(e.path))
    for e in errors:
        where = "/".join(str(p) for p in e.path) or "(top level)"
        problem(f"compose.yaml: {where}: {e.message} (Compose Specification schema)")
    if not errors:
        print(f"ok: valid against the Compose Specification ({schema.get('$schema', '?')})")


def built_workers(build):
    path = os.path.join(build, "meson-info", "intro-targets.json")
    try:
        with open(path, encoding="utf-8") as f:
            targets = json.load(f)
    except OSError as e:
        die(f"{path}: cannot read ({e.strerror}): not a configured meson build folder")
    names = set()
    for t in targets:
        if (t.get("type") == "executable" and t["name"].startswith("deployq-")
                and "/workers/" in t.get("defined_in", "")):
            names.add(t["name"])
    if not names:
        die(f"{path}: no deployq-* executable under workers/: is this the right build folder?")
    return names


def argv_of(svc):
    cmd = svc.get("command")
    if isinstance(cmd, str):
        return cmd.split()
    return [str(c) for c in cmd] if isinstance(cmd, list) else []


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return {e.split("=", 1)[0]: (e.split("=", 1)[1] if "=" in e else None) for e in env}
    return dict(env)


def option(argv, name):
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def port_of(addr):
    m = re.fullmatch(r"(?:\[[^\]]*\]|[^:\[\]]*):(\d+)", str(addr or ""))
    return int(m.group(1)) if m else None


def published(svc):
    """(host_ip, host_port, container_port) of each short-syntax or long-syntax port."""
    out = []
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), str(p.get("published", "")), str(p.get("target", ""))))
            continue
        parts = str(p).split(":")
        if len(parts) == 3:
            out.append(tuple(parts))
        elif len(parts) == 2:
            out.append(("", parts[0], parts[1]))
        else:
            out.append(("", "", parts[0]))
    return out


def help_text(build, binary):
    for path in (os.path.join(build, "workers", binary.split("-", 1)[1], binary),):
        if os.access(path, os.X_OK):
            r = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10)
            return r.stdout + r.stderr
    return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--compose")
    ap.add_argument("--prometheus")
    a = ap.parse_args()
    compose_path = a.compose or os.path.join(a.source, "docker", "compose.yaml")
    doc = load_yaml(compose_path)
    if not isinstance(doc, dict):
        problem("compose.yaml: not a mapping")
        return report()

    check_schema(doc, a.schema)
    services = doc.get("services") or {}
    if not isinstance(services, dict):
        return report()

    # Which service runs which worker.
    runs = {}
    for name, svc in services.items():
        argv = argv_of(svc or {})
        if argv and argv[0].startswith("deployq-"):
            runs.setdefault(argv[0], []).append(name)
    workers = built_workers(a.build)
    for w in sorted(workers):
        if w not in runs:
            problem(f"compose.yaml: no service runs {w} (meson builds it: workers/{w[8:]}/)")
    for w in sorted(set(runs) - workers):
        problem(f"compose.yaml: service {runs[w][0]} runs {w}, which the build does not make")
    if not problems:
        print(f"ok: a service for each of the {len(workers)} workers the build makes: "
              + ", ".join(sorted(workers)))

    # The configuration each worker mounts, and the variables it needs.
    cfg_refs, cfg_docs = None, {}
    for w, names in sorted(runs.items()):
        for name in names:
            svc = services[name]
            env = env_of(svc)
            target = env.get("DEPLOYQ_CONFIG")
            host = None
            for v in svc.get("volumes") or []:
                src, _, rest = str(v).partition(":") if isinstance(v, str) else (v.get("source"), ":", v.get("target"))
                if rest.split(":")[0] == target:
                    host = os.path.normpath(os.path.join(os.path.dirname(compose_path), src))
            if not target or not host:
                problem(f"compose.yaml: {name}: mounts no file at DEPLOYQ_CONFIG ({target or 'not set'})")
                continue
            if host not in cfg_docs:
                cfg_docs[host] = load_yaml(host)
            refs = references(cfg_docs[host], set())
            cfg_refs = refs if cfg_refs is None else cfg_refs | refs
            missing = sorted(refs - set(env))
            if missing:
                problem(f"compose.yaml: {name}: does not pass {', '.join(missing)} "
                        f"({os.path.basename(host)} uses them; every worker loads the whole file)")
    example = os.path.join(os.path.dirname(compose_path), "env.example")
    if cfg_refs is not None and os.path.exists(example):
        with open(example, encoding="utf-8") as f:
            documented = {ln.split("=", 1)[0].strip() for ln in f if "=" in ln and not ln.lstrip().startswith("#")}
        for name in sorted(cfg_refs - documented):
            problem(f"env.example: does not list {name} (deployq.yaml uses it)")
    if cfg_refs is not None and not any("does not pass" in p or "mounts no" in p or "env.example" in p
                                        for p in problems):
        print(f"ok: every worker gets the {len(cfg_refs)} variables its configuration uses: "
              + ", ".join(sorted(cfg_refs)))

    # Ports.
    before = len(problems)
    reg_default = None
    try:
        with open(os.path.join(a.source, "common", "domain", "httpapi.h"), encoding="utf-8") as f:
            m = REGISTRY_DEFAULT_DEFINE.search(f.read())
            reg_default = int(m.group(1)) if m else None
    except OSError:
        pass
    if reg_default is None:
        die("common/domain/httpapi.h: DQ_HTTPAPI_DEFAULT_LISTEN not found")
    for name in runs.get("deployq-registry", []):
        svc = services[name]
        cfg = next(iter(cfg_docs.values()), None) or {}
        listen = (((cfg.get("registry") or {}).get("http") or {}).get("listen")) or f"127.0.0.1:{reg_default}"
        if port_of(listen) != reg_default:
            problem(f"deployq.yaml: registry.http.listen {listen}: port is not the default {reg_default}")
        want = ("127.0.0.1", str(reg_default), str(reg_default))
        if want not in published(svc):
            problem(f"compose.yaml: {name}: must publish 127.0.0.1:{reg_default}:{reg_default} "
                    f"(registry.http.listen's default port), has {svc.get('ports')}")
    for w, port in sorted(HEALTH_DEFAULTS.items()):
        binary = f"deployq-{w}"
        helptxt = help_text(a.build, binary)
        if "--health-listen" in helptxt and not re.search(rf"[^0-9]{port}\b", helptxt):
            problem(f"{binary} --help documents --health-listen without the contract's default port {port}")
        for name in runs.get(binary, []):
            svc = services[name]
            got = port_of(option(argv_of(svc), "--health-listen"))
            if got != port:
                problem(f"compose.yaml: {name}: must run with --health-listen :{port} (its default port)")
            if str(port) not in [str(e).split("/")[0] for e in svc.get("expose") or []]:
                problem(f"compose.yaml: {name}: must expose {port} (its health port)")
    if len(problems) == before:
        print(f"ok: ports match the defaults: registry {reg_default} published on 127.0.0.1, "
              + ", ".join(f"{w} {p}" for w, p in sorted(HEALTH_DEFAULTS.items())))

    if a.prometheus:
        check_prometheus(a.prometheus, runs, reg_default)
    return report()


def check_prometheus(path, runs, reg_port):
    before = len(problems)
    doc = load_yaml(path) or {}
    targets = set()
    for job in doc.get("scrape_configs") or []:
        for sc in job.get("static_configs") or []:
            targets.update(sc.get("targets") or [])
        for sd in job.get("dns_sd_configs") or []:
            targets.update(f"{n}:{sd.get('port')}" for n in sd.get("names") or [])
    ports = dict(HEALTH_DEFAULTS, registry=reg_port)
    for w, port in sorted(ports.items()):
        for name in runs.get(f"deployq-{w}", []):
            if f"{name}:{port}" not in targets:
                problem(f"{os.path.basename(path)}: no scrape target {name}:{port}")
    if len(problems) == before:
        print(f"ok: {os.path.basename(path)} scrapes every worker at its port")


def report():
    for p in problems:
        print(p)
    if problems:
        print(f"compose_check: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
