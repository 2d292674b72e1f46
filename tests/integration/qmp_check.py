#!/usr/bin/env python3
"""Drives a running amalgam machine through its --monitor socket, as a QMP
script would, with Python's standard library only. Used by 34-monitor.sh.

usage: qmp_check.py SOCKET CONSOLE_FILE SLOW

The guest runs the test guest's `heartbeat` on 2 nodes with 2 vCPUs
(vCPU i on node i). Prints one "ok: ..." or "FAIL: ..." line per check;
exits 1 if any failed. Ends by sending quit and checking SHUTDOWN."""
import json
import os
import socket
import stat
import sys
import time

path, console, slow = sys.argv[1], sys.argv[2], int(sys.argv[3])
failures = 0


def ok(msg):
    print("ok: " + msg, flush=True)


def fail(msg):
    global failures
    failures += 1
    print("FAIL: " + msg, flush=True)


def check(cond, msg, detail=""):
    (ok if cond else fail)(msg + ("" if cond else ": " + str(detail)[:400]))


class Client:
    def __init__(self):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(30 * slow)
        self.s.connect(path)
        self.buf = b""
        self.events = []
        self.greeting = self.read()

    def read(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError("monitor closed the connection")
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send_raw(self, data):
        self.s.sendall(data)

    def call(self, name, args=None, id_=None):
        req = {"execute": name}
        if args is not None:
            req["arguments"] = args
        if id_ is not None:
            req["id"] = id_
        self.send_raw((json.dumps(req) + "\n").encode())
        return self.reply()

    def reply(self):
        while True:
            r = self.read()
            if "event" in r:
                self.events.append(r)
                continue
            return r

    def close(self):
        self.s.close()


def beats():
    with open(console, errors="replace") as f:
        return sum(1 for l in f if l.startswith("heartbeat "))


mode = stat.S_IMODE(os.stat(path).st_mode)
check(mode == 0o600, "the socket is mode 0600", oct(mode))

c = Client()
check("QMP" in c.greeting and c.greeting["QMP"]["capabilities"] == [], "greeting", c.greeting)
r = c.call("query-status", id_=1)
check(r.get("error", {}).get("class") == "CommandNotFound" and r.get("id") == 1,
      "a command before qmp_capabilities is refused", r)
r = c.call("qmp_capabilities", id_="caps")
check(r == {"return": {}, "id": "caps"}, "qmp_capabilities", r)
r = c.call("query-status")
check(r.get("return", {}).get("status") == "running", "query-status: running", r)

# query-cpus-fast matches --placement 0,1
r = c.call("query-cpus-fast")["return"]
check([(x["cpu-index"], x["props"]["node-id"], x["node"]) for x in r] == [(0, 0, 0), (1, 1, 1)],
      "query-cpus-fast: vCPU 0 on node 0, vCPU 1 on node 1", r)
check(all(x["thread-id"] > 0 and x["pid"] > 0 and x["state"] in ("running", "halted") for x in r),
      "query-cpus-fast: host threads, pids and states", r)
check(r[0]["pid"] != r[1]["pid"], "the two vCPUs run in two node processes", r)

r = c.call("query-nodes")["return"]
check(len(r) == 2 and r[0]["home"]["end"] == r[1]["home"]["start"] and r[0]["fabric"] == "shm",
      "query-nodes: two nodes, adjoining home ranges", r)

# the DSM's counters grow while the guest runs
def moved():
    d = c.call("query-dsm", {"top": 4})["return"]
    return d["total"]["bytes-moved"], d

b0, _ = moved()
time.sleep(1.0 * slow)
b1, d = moved()
check(b1 > b0, "query-dsm: bytes moved grow while the guest runs (%d -> %d)" % (b0, b1), d)
hot = [p for n in d["nodes"] for p in n["hot-pages"]]
check(len(hot) > 0 and all(p["fetched"] + p["lost"] > 0 for p in hot),
      "query-dsm: hot pages over the last window", d)

# stop: the heartbeat stops; cont: it resumes
n0 = beats()
t = time.time()
r = c.call("stop", id_="s")
stop_ms = (time.time() - t) * 1000
check(r == {"return": {}, "id": "s"}, "stop acknowledged in %.1f ms" % stop_ms, r)
r = c.call("query-status")
check(r.get("return", {}).get("status") == "paused", "query-status: paused", r)
check(all(x["state"] == "paused" for x in c.call("query-cpus-fast")["return"]),
      "every vCPU paused, on both nodes")
n1 = beats()
time.sleep(1.5)
n2 = beats()
check(n2 == n1, "no heartbeat while paused (%d, then %d 1.5 s later)" % (n1, n2))
check(c.call("cont") == {"return": {}}, "cont")
deadline = time.time() + 10 * slow
while beats() <= n2 + 3 and time.time() < deadline:
    time.sleep(0.1)
n3 = beats()
check(n3 > n2 + 3, "the heartbeat resumes (%d -> %d)" % (n2, n3))
c.call("query-status")
names = [e["event"] for e in c.events]
check(names[:2] == ["STOP", "RESUME"] and all("timestamp" in e for e in c.events),
      "events STOP then RESUME, with timestamps", c.events)

# untrusted input: each gets an error or is closed, the guest keeps going
bad = Client()
bad.call("qmp_capabilities")
bad.send_raw(b'{"execute": "query-status", oops}\n')
r = bad.reply()
check(r.get("error", {}).get("class") == "GenericError", "malformed JSON: an error", r)
r = bad.call("query-status")
check("return" in r, "the session goes on after malformed JSON", r)
r = bad.call("no-such-command")
check(r.get("error", {}).get("class") == "CommandNotFound", "unknown command", r)
r = bad.call("query-dsm", {"top": "many"})
check("expected: integer" in r.get("error", {}).get("desc", ""), "wrong argument type", r)
r = bad.call("query-dsm", {"top": 1000})
check("from 0 to 64" in r.get("error", {}).get("desc", ""), "argument out of range", r)
r = bad.call("stop", {"force": True})
check("unexpected" in r.get("error", {}).get("desc", ""), "unexpected argument", r)
bad.send_raw(b'{"execute":"query-status","id":"' + b"x" * 70000 + b'"}\n')
r = bad.reply()
check("too long" in r.get("error", {}).get("desc", ""), "an over-long line", r)
r = bad.call("query-status")
check("return" in r, "the session goes on after an over-long line", r)
bad.close()
half = Client()
half.send_raw(b'{"execute":"qmp_capa')
half.close()  # gone mid-command

nb = beats()
many, refused = [], 0
for i in range(100):
    try:
        k = Client()
        if "QMP" in k.greeting:
            many.append(k)
        else:
            refused += 1
            k.close()
    except (OSError, EOFError):
        refused += 1
check(len(many) >= 60 and len(many) + refused == 100,
      "100 clients at once: %d served, %d refused with an error" % (len(many), refused))
for k in many:
    k.close()
time.sleep(0.5 * slow)
check(beats() > nb, "the guest kept running through the flood (%d -> %d beats)" % (nb, beats()))
r = c.call("query-status")
check(r.get("return", {}).get("status") == "running", "the first client is still served", r)

r = c.call("quit", id_="q")
check(r == {"return": {}, "id": "q"}, "quit acknowledged", r)
try:
    while not any(e["event"] == "SHUTDOWN" for e in c.events):
        e = c.read()
        if "event" in e:
            c.events.append(e)
    sd = [e for e in c.events if e["event"] == "SHUTDOWN"][0]
    check(sd["data"] == {"guest": False, "reason": "host-qmp-quit"}, "SHUTDOWN after quit", sd)
except (EOFError, OSError) as e:
    fail("no SHUTDOWN event after quit: %s" % e)
sys.exit(1 if failures else 0)
