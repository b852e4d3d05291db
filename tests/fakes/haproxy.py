#!/usr/bin/python3
"""haproxy.py - what the canary tests and the canary bench need around a real HAProxy.

Not a double: HAProxy itself (/usr/sbin/haproxy) is the router. This writes its
configuration and talks to its runtime API from the outside, independently of deployq's
own client (common/domain/bluegreen.c), so a test can check what HAProxy really says.

  haproxy.py config --socket PATH [--admin-port PORT] --front PORT --blue PORT --green PORT
      print a configuration: an admin stats socket (and one on 127.0.0.1:PORT), a frontend
      on 127.0.0.1:FRONT, backend "web" with servers web_blue (weight 100) and web_green
      (weight 0) on those ports, balance roundrobin
  haproxy.py weights PATH
      print "blue=N green=N" as `get weight web/web_blue|web_green` answers
  haproxy.py poll PATH STOPFILE
      every 50 ms print "<epoch ms> <blue> <green>" until STOPFILE exists

As a module (sys.path to tests/fakes): ask(PATH, LINE) -> the raw answer (bytes), and
weight(PATH, SERVER) -> the server's current weight (int).
Only the Python standard library is used.
"""

import argparse
import os
import socket
import sys
import time

CONFIG = """global
    stats socket {socket} level admin
{admin}defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend edge
    bind 127.0.0.1:{front}
    default_backend web
backend web
    balance roundrobin
    server web_blue 127.0.0.1:{blue} weight 100
    server web_green 127.0.0.1:{green} weight 0
"""


def ask(path, line, timeout=1.0):
    """One command over the runtime API (HAProxy answers, then closes)."""
    if isinstance(line, str):
        line = line.encode()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(line if line.endswith(b"\n") else line + b"\n")
        out = b""
        while True:
            b = s.recv(4096)
            if not b:
                return out
            out += b
    finally:
        s.close()


def weight(path, server):
    """web/<server>'s current weight ("N (initial M)")."""
    return int(ask(path, "get weight web/%s" % server).split()[0])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("config")
    c.add_argument("--socket", required=True)
    c.add_argument("--admin-port", type=int)
    for k in ("front", "blue", "green"):
        c.add_argument("--" + k, type=int, required=True)
    w = sub.add_parser("weights")
    w.add_argument("socket")
    pl = sub.add_parser("poll")
    pl.add_argument("socket")
    pl.add_argument("stopfile")
    a = p.parse_args()
    if a.cmd == "config":
        admin = ("    stats socket ipv4@127.0.0.1:%d level admin\n" % a.admin_port) if a.admin_port else ""
        sys.stdout.write(CONFIG.format(socket=a.socket, admin=admin, front=a.front, blue=a.blue, green=a.green))
    elif a.cmd == "weights":
        print("blue=%d green=%d" % (weight(a.socket, "web_blue"), weight(a.socket, "web_green")))
    else:
        while not os.path.exists(a.stopfile):
            try:
                b, g = weight(a.socket, "web_blue"), weight(a.socket, "web_green")
                print(int(time.time() * 1000), b, g, flush=True)
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.05)


if __name__ == "__main__":
    main()
