#!/usr/bin/python3
"""metric_names.py - every metric the Grafana dashboard and the alert rules use must exist.

usage: metric_names.py --list METRICS_TXT [--scrape URL]... [--promql-out FILE] FILE...

FILE is a Grafana dashboard (JSON: every "expr" of a target, and the selector inside each
variable's label_values(...)) or Prometheus rules (YAML: every rule's expr). From each
expression it takes the deployq_* names and the label names written in their selectors.
It refuses (exit 1, one line per problem) when

  - a name is not in METRICS_TXT (docker/monitoring/metrics.txt, the contract list), or a
    selector names a label that the list does not give that metric (worker, job,
    instance and le are always allowed);
  - a histogram is used without its _bucket, _sum or _count suffix, or a suffix is put
    on a metric that is not a histogram;
  - with --scrape (repeatable, e.g. http://127.0.0.1:9101/metrics of each running
    worker): a name used is served by none of them (a family counts as served when a
    `# TYPE` line or a sample names it). Listed names that nothing served are reported
    as notes, not failures: a labelled counter may have no series before its first
    event, depending on the exporter.

--promql-out FILE writes every expression as a recording rule (Grafana's $variables
replaced by values that parse) so that `promtool check rules FILE` checks the dashboard's
PromQL too. Exit 2: usage, or a file that cannot be read.
"""
import argparse
import json
import re
import sys
import urllib.request

import yaml

NAME = re.compile(r"(?<![A-Za-z0-9_:])(deployq_[A-Za-z0-9_:]+)(\s*\{([^}]*)\})?")
LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)")
SUFFIXES = ("_bucket", "_sum", "_count")
ALWAYS = {"worker", "job", "instance"}
GRAFANA_VARS = [("$__rate_interval", "5m"), ("$__range", "1h"), ("$__interval", "1m")]


def die(msg):
    print(f"metric_names: {msg}", file=sys.stderr)
    sys.exit(2)


def read_list(path):
    listed = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 3:
                    labels = set() if parts[2] == "-" else set(parts[2].split(","))
                    listed[parts[0]] = (parts[1], labels)
    except OSError as e:
        die(f"{path}: cannot read: {e.strerror}")
    if not listed:
        die(f"{path}: no metric listed")
    return listed


def expressions(path):
    """(where, expr) of every PromQL expression in a dashboard or a rules file."""
    out = []
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        die(f"{path}: cannot read: {e.strerror}")
    if path.endswith(".json"):
        doc = json.loads(text)
        for p in doc.get("panels", []):
            for t in p.get("targets", []):
                out.append((f"{path}: panel '{p.get('title')}' {t.get('refId')}", t["expr"]))
        for v in doc.get("templating", {}).get("list", []):
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\)\s*", q or "")
            if m:
                out.append((f"{path}: variable ${v['name']}", m.group(1)))
            elif m is None and v.get("type") == "query" and q and "label_values(" in q:
                out.append((f"{path}: variable ${v['name']}", q))
    else:
        doc = yaml.safe_load(text)
        for g in doc.get("groups", []):
            for r in g.get("rules", []):
                out.append((f"{path}: {r.get('alert') or r.get('record')}", r["expr"]))
    if not out:
        die(f"{path}: no expression found")
    return out


def scrape(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode("utf-8", "replace")
    except OSError as e:
        die(f"{url}: {e}")
    served = {}
    for line in text.splitlines():
        m = re.match(r"#\s*TYPE\s+(\S+)\s+(\S+)", line)
        if m:
            served[m.group(1)] = m.group(2)
        elif line and not line.startswith("#"):
            served.setdefault(re.split(r"[{\s]", line, maxsplit=1)[0], "sample")
    return served


def base_of(name, types):
    """The family a series name belongs to: deployq_x_bucket -> deployq_x when x is a histogram."""
    for s in SUFFIXES:
        if name.endswith(s) and types.get(name[: -len(s)]) in ("histogram", "summary"):
            return name[: -len(s)]
    return name


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list", required=True)
    ap.add_argument("--scrape", action="append", default=[])
    ap.add_argument("--promql-out")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    listed = read_list(a.list)
    types = {n: t for n, (t, _) in listed.items()}
    problems, used, exprs = [], {}, []

    for path in a.files:
        for where, expr in expressions(path):
            exprs.append((where, expr))
            for m in NAME.finditer(expr):
                name, labels = m.group(1), m.group(3) or ""
                base = base_of(name, types)
                used.setdefault(name, where)
                if base not in listed:
                    problems.append(f"{where}: {name} is not a deployq metric (not in {a.list})")
                    continue
                if types[base] == "histogram" and base == name:
                    problems.append(f"{where}: {name} is a histogram: use {name}_bucket, _sum or _count")
                for lm in LABEL.finditer(labels):
                    lab = lm.group(1)
                    if lab not in listed[base][1] | ALWAYS and not (lab == "le" and name.endswith("_bucket")):
                        problems.append(f"{where}: {name} has no label '{lab}' (it has: "
                                        f"{', '.join(sorted(listed[base][1] | ALWAYS)) or 'none'})")

    if a.scrape:
        served = {}
        for url in a.scrape:
            served.update(scrape(url))
        stypes = {n: t for n, t in served.items() if t != "sample"}
        families = {base_of(n, stypes) for n in served}
        for name, where in sorted(used.items()):
            if base_of(name, stypes) not in families and name not in served:
                problems.append(f"{where}: {name} is served by no scraped worker ({', '.join(a.scrape)})")
        for name in sorted(set(listed) - families):
            print(f"note: {name} is listed but no scraped worker served it")
        print(f"scraped {len(a.scrape)} endpoint(s): {len(families)} deployq families")

    if a.promql_out:
        rules = []
        for i, (where, expr) in enumerate(exprs):
            e = expr
            for var, val in GRAFANA_VARS:
                e = e.replace(var, val)
            e = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", ".*", e)
            rules.append({"record": f"check:expr_{i}", "expr": e, "labels": {"from": where}})
        with open(a.promql_out, "w", encoding="utf-8") as f:
            yaml.safe_dump({"groups": [{"name": "dashboard-and-rules", "rules": rules}]}, f, sort_keys=False)

    for p in problems:
        print(p)
    if problems:
        print(f"metric_names: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"ok: {len(used)} metric names in {len(exprs)} expressions of {len(a.files)} file(s) "
          f"exist{' and are served' if a.scrape else ' in ' + a.list}: " + ", ".join(sorted(used)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
