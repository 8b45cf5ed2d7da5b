#!/usr/bin/env python3
"""Crash recovery and daemon abuse, measured.

1. Recovery of N incomplete intents: N attaches of the debug build (which
   has failpoints) each stop (SIGSTOP) at the failpoint just after their
   veth is up on the bridge, and are then killed together (SIGKILL), as an
   OOM killer or a runtime's timeout would: N attachments recorded as
   intents, N veths and N reserved addresses, all their holders dead at
   once. (Killed one by one, each next attach would first undo what the
   one before left.) Then one `plumb gc` of the release build undoes them
   all; its wall time is printed, and the script checks that no intent,
   veth or reserved address is left and that the next attach gets eth0.
2. The daemon's resident memory before and after a client sends a 100 MB
   request line (the daemon reads at most 1 MiB of it and answers with an
   error).

Everything runs in namespaces this script creates; nothing touches the
real host's links, routes or firewall. Run as root from the repository
root after `cargo build` and `cargo build --release`.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

PREFIX = "plumb-cbench-"
HOST = PREFIX + "host"


def binary(profile: str) -> str:
    """target/<host tuple>/<profile>/plumb: .cargo/config.toml names the target."""
    host = subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout
    tuple_ = next((l.split()[1] for l in host.splitlines() if l.startswith("host:")), "")
    return f"target/{tuple_}/{profile}/plumb"


def run(cmd: list[str], *, check: bool = True, env: dict | None = None):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                         f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def netns_list() -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    return [l.split()[0] for l in out.splitlines() if l.startswith(PREFIX)]


def cleanup() -> None:
    for ns in netns_list():
        run(["ip", "netns", "del", ns], check=False)


def plumb(exe: str, state: str, *args: str, env: dict | None = None, check: bool = True):
    return run([exe, "--state-dir", state, "--host-netns", HOST, *args], env=env, check=check)


def host_veths() -> list[str]:
    out = run(["ip", "-n", HOST, "-o", "link", "show", "type", "veth"]).stdout
    return [l.split(":")[1].strip().split("@")[0] for l in out.splitlines()]


def kill_point(debug: str, state: str, target: str) -> int:
    """The number of the failpoint after the bridge port is up."""
    trace = os.path.join(state, "trace")
    plumb(debug, state, "attach", target, "bench", env={**os.environ, "PLUMB_FAILPOINT_TRACE": trace})
    plumb(debug, state, "detach", target)
    with open(trace) as f:
        for line in f:
            n, name = line.strip().split(" ", 1)
            if name == "bridge port up":
                return int(n)
    raise SystemExit("no `bridge port up` failpoint in the trace")


def recovery(n: int) -> None:
    debug, release = binary("debug"), binary("release")
    state = tempfile.mkdtemp(prefix=PREFIX)
    run(["ip", "netns", "add", HOST])
    plumb(release, state, "network", "create", "bench", "--subnet", "10.190.0.0/20")
    targets = [f"{PREFIX}c{i}" for i in range(n)]
    for t in targets:
        run(["ip", "netns", "add", t])
    point = kill_point(debug, state, targets[0])
    t0 = time.perf_counter()
    stopped = []
    for t in targets:
        p = subprocess.Popen([debug, "--state-dir", state, "--host-netns", HOST, "attach", t, "bench"],
                             env={**os.environ, "PLUMB_FAILPOINT": f"stop:{point}"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status = os.waitpid(p.pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            raise SystemExit(f"attach of {t} did not stop at failpoint {point}")
        stopped.append(p)
    for p in stopped:
        os.kill(p.pid, signal.SIGKILL)
        os.kill(p.pid, signal.SIGCONT)
    killed = 0
    for p in stopped:
        _, status = os.waitpid(p.pid, 0)
        killed += os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    made = time.perf_counter() - t0
    db = sqlite3.connect(os.path.join(state, "plumb.db"))
    intents = db.execute("SELECT count(*) FROM intents").fetchone()[0]
    veths = len(host_veths())
    print(f"{killed} attaches stopped at failpoint {point} (`bridge port up`) and killed in {made:.1f} s: "
          f"{intents} intents, {veths} veths left")
    t0 = time.perf_counter()
    out = plumb(release, state, "gc").stdout
    took = time.perf_counter() - t0
    undone = sum(1 for l in out.splitlines() if l.startswith("undid"))
    intents = db.execute("SELECT count(*) FROM intents").fetchone()[0]
    held = db.execute("SELECT count(*) FROM allocations WHERE owner != 'host'").fetchone()[0]
    veths = len(host_veths())
    print(f"plumb gc (release) undid {undone} in {took:.2f} s ({took / max(undone, 1) * 1000:.2f} ms each); "
          f"left: {intents} intents, {veths} veths, {held} reserved addresses")
    plumb(release, state, "attach", targets[0], "bench")
    eth0 = "eth0" in run(["ip", "-n", targets[0], "-o", "link"]).stdout
    veths = len(host_veths())
    held = db.execute("SELECT count(*) FROM allocations WHERE owner != 'host'").fetchone()[0]
    print(f"the next attach of the first target got eth0: {eth0}")
    if intents or veths != 1 or held != 1 or not eth0 or undone != killed:
        raise SystemExit("recovery left something behind")


def daemon_memory(mb: int) -> None:
    release = binary("release")
    state = tempfile.mkdtemp(prefix=PREFIX)
    sock = os.path.join(state, "plumbd.sock")
    d = subprocess.Popen([release, "--state-dir", state, "--host-netns", HOST, "--socket", sock, "daemon"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while not os.path.exists(sock):
            if time.time() > deadline:
                raise SystemExit("the daemon did not start")
            time.sleep(0.05)

        def rss_kb() -> int:
            with open(f"/proc/{d.pid}/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

        before = rss_kb()
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        chunk = b"x" * (1 << 20)
        sent = 0
        try:
            for _ in range(mb):
                s.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.shutdown(socket.SHUT_WR)
        answer = s.makefile().readline().strip()
        s.close()
        time.sleep(0.2)
        after = rss_kb()
        print(f"daemon RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after a "
              f"{mb} MB request line ({sent >> 20} MiB of it sent before the daemon hung up); "
              f"answer: {answer[:80]}")
    finally:
        d.terminate()
        d.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="intents to recover")
    ap.add_argument("--mb", type=int, default=100, help="size of the abusive request")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    cleanup()
    try:
        recovery(args.n)
        daemon_memory(args.mb)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
