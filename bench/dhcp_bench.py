#!/usr/bin/env python3
"""DHCP attach benchmark: plumb's daemon vs the CNI reference `dhcp` plugin.

On a stand-in LAN (a switch namespace, kea in a server namespace, the fake
host's `lan0` plugged in), N containers are attached to a macvlan network
on lan0 with DHCP addressing, taking turns: one `plumb attach`, one ADD of
plumb run as a CNI plugin (its daemon runs the client), and one ADD of the
reference plugins (`macvlan` + `dhcp` IPAM, with `dhcp daemon` running), so
that all see the same machine and the same server. Each sample is the wall time of the one
command, which returns once the container holds its leased address; the
address is then checked (and the server pinged) for the first, middle and
last container of each tool.

Then plumb's daemon is filled up to --leases live leases and its resident
memory is read from /proc.

Everything runs in namespaces this script creates; nothing touches the
real host's links, routes or firewall. Run as root from the repository root
after `cargo build --release`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PREFIX = "plumb-dbench-"
HOST, SWITCH, SERVER = PREFIX + "host", PREFIX + "lan", PREFIX + "srv"
SERVER_IP = "10.88.0.1"
CNI = "/usr/lib/cni"
CNI_TIMEOUT_S = 60


def release_binary():
    """target/<host tuple>/release/plumb: .cargo/config.toml names the target."""
    host = subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout
    tuple_ = next((l.split()[1] for l in host.splitlines() if l.startswith("host:")), "")
    return f"target/{tuple_}/release/plumb"


def run(cmd: list[str], *, check: bool = True, input: str | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, input=input, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                         f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def timed(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return (time.perf_counter() - t0) * 1000.0, proc


def netns_all() -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def cleanup() -> None:
    for ns in netns_all():
        if ns.startswith(PREFIX):
            for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
    for ns in netns_all():
        if ns.startswith(PREFIX):
            run(["ip", "netns", "del", ns], check=False)


def add_ns(name: str) -> None:
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def build_lan(work: str, lease_s: int) -> subprocess.Popen:
    for ns in (HOST, SWITCH, SERVER):
        add_ns(ns)
    run(["ip", "-n", SWITCH, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", SWITCH, "link", "set", "br0", "up"])
    for ns, ifname, port in ((SERVER, "eth0", "p-srv"), (HOST, "lan0", "p-host")):
        run(["ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", port,
             "netns", SWITCH])
        run(["ip", "-n", ns, "link", "set", ifname, "up"])
        run(["ip", "-n", SWITCH, "link", "set", port, "master", "br0", "up"])
    run(["ip", "-n", SERVER, "addr", "add", f"{SERVER_IP}/16", "dev", "eth0"])
    conf = {"Dhcp4": {
        "interfaces-config": {"interfaces": ["eth0"], "dhcp-socket-type": "raw"},
        "lease-database": {"type": "memfile", "persist": False},
        "valid-lifetime": lease_s, "renew-timer": lease_s // 2, "rebind-timer": lease_s * 7 // 8,
        "subnet4": [{"id": 1, "subnet": "10.88.0.0/16",
                     "pools": [{"pool": "10.88.1.0 - 10.88.63.255"}],
                     "option-data": [{"name": "routers", "data": SERVER_IP}]}],
        "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stdout"}],
                     "severity": "WARN"}]}}
    path = os.path.join(work, "kea.json")
    with open(path, "w") as f:
        json.dump(conf, f)
    env = dict(os.environ, KEA_LOCKFILE_DIR=work, KEA_PIDFILE_DIR=work)
    kea = subprocess.Popen(["ip", "netns", "exec", SERVER, "kea-dhcp4", "-c", path],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while ":67" not in run(["ip", "netns", "exec", SERVER, "ss", "-lun"], check=False).stdout:
        if time.time() > deadline:
            raise SystemExit("kea did not start")
        time.sleep(0.1)
    return kea


def wait_socket(path: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.time() + 10
    while not os.path.exists(path):
        if proc.poll() is not None or time.time() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.05)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def ipv4_of(ns: str) -> str | None:
    out = run(["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"], check=False).stdout
    for word in out.split():
        if word.startswith("10.88."):
            return word
    return None


def verify(names: list[str], tool: str) -> None:
    for ns in {names[0], names[len(names) // 2], names[-1]}:
        addr = ipv4_of(ns)
        if not addr:
            raise SystemExit(f"{tool}: {ns} has no leased address")
        if run(["ip", "netns", "exec", ns, "ping", "-c1", "-W2", SERVER_IP],
               check=False).returncode != 0:
            raise SystemExit(f"{tool}: {ns} ({addr}) cannot reach the server")


def summary(samples: list[float]) -> dict:
    s = sorted(samples)
    return {"count": len(s), "median": statistics.median(s),
            "p90": s[min(len(s) - 1, int(len(s) * 0.9))], "max": s[-1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=50, help="containers per tool (default 50)")
    ap.add_argument("--leases", type=int, default=1000,
                    help="live plumb leases for the memory reading (0: skip; default 1000)")
    ap.add_argument("--plumb", default=release_binary(), help="plumb binary")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    # SIGTERM (a CI timeout, kill) still cleans up, through `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
    for need in ("kea-dhcp4", f"{CNI}/dhcp", f"{CNI}/macvlan", args.plumb):
        if not shutil.which(need) and not os.access(need, os.X_OK):
            raise SystemExit(f"missing {need}")
    plumb = os.path.abspath(args.plumb)
    cleanup()
    work = tempfile.mkdtemp(prefix="plumb-dbench.")
    procs: list[subprocess.Popen] = []
    try:
        procs.append(build_lan(work, 3600))
        sock = os.path.join(work, "plumbd.sock")
        base = [plumb, "--state-dir", os.path.join(work, "state"), "--host-netns", HOST,
                "--socket", sock]
        plumbd = subprocess.Popen(base + ["daemon"], stdout=subprocess.DEVNULL,
                                  stderr=open(os.path.join(work, "plumbd.log"), "w"))
        procs.append(plumbd)
        wait_socket(sock, plumbd, "plumb daemon")
        # Private mode: in bridge mode every broadcast of a child is copied
        # to all its siblings through the per-CPU backlog, and past ~1,000
        # children (netdev_max_backlog) the copy for the veth lower device
        # is dropped too: no DISCOVER leaves. A real NIC queues it instead.
        run(base + ["network", "create", "dbench", "--driver", "macvlan", "--parent", "lan0",
                    "--macvlan-mode", "private", "--ipam", "dhcp", "--no-slaac"])
        rss_idle = rss_kib(plumbd.pid)
        cni_sock = os.path.join(work, "cni-dhcp.sock")
        cnid = subprocess.Popen(["ip", "netns", "exec", HOST, f"{CNI}/dhcp", "daemon",
                                 "-socketpath", cni_sock],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(cnid)
        wait_socket(cni_sock, cnid, "CNI dhcp daemon")
        cni_conf = json.dumps({"cniVersion": "1.0.0", "name": "dbench", "type": "macvlan",
                               "master": "lan0", "mode": "private",
                               "ipam": {"type": "dhcp", "daemonSocketPath": cni_sock}})
        plumb_conf = json.dumps({"cniVersion": "1.0.0", "name": "dbench", "type": "plumb",
                                 "network": "dbench", "stateDir": os.path.join(work, "state"),
                                 "socket": sock})
        p_names = [f"{PREFIX}p{i}" for i in range(args.count)]
        q_names = [f"{PREFIX}q{i}" for i in range(args.count)]
        c_names = [f"{PREFIX}c{i}" for i in range(args.count)]
        for ns in p_names + q_names + c_names:
            add_ns(ns)
        samples: dict[str, list[float]] = {"plumb": [], "plumbcni": [], "cni": []}
        cni_hung: list[str] = []
        print(f"== {args.count} containers per tool, alternating, kea on the LAN", flush=True)
        for i in range(args.count):
            ms, proc = timed(base + ["attach", p_names[i], "dbench"])
            if proc.returncode != 0:
                raise SystemExit(f"plumb attach failed: {proc.stderr.strip()}")
            samples["plumb"].append(ms)
            env = dict(os.environ, CNI_COMMAND="ADD", CNI_CONTAINERID=q_names[i],
                       CNI_NETNS=f"/run/netns/{q_names[i]}", CNI_IFNAME="eth0", CNI_PATH=CNI)
            ms, proc = timed(["ip", "netns", "exec", HOST, plumb], input=plumb_conf, env=env)
            if proc.returncode != 0:
                raise SystemExit(f"plumb's CNI ADD failed: {proc.stdout.strip()}")
            samples["plumbcni"].append(ms)
            env = dict(os.environ, CNI_COMMAND="ADD", CNI_CONTAINERID=c_names[i],
                       CNI_NETNS=f"/run/netns/{c_names[i]}", CNI_IFNAME="eth0", CNI_PATH=CNI)
            try:
                ms, proc = timed(["ip", "netns", "exec", HOST, f"{CNI}/macvlan"],
                                 input=cni_conf, env=env, timeout=CNI_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                # Seen here: an ADD that never returns. Counted, not timed.
                cni_hung.append(c_names[i])
                print(f"  CNI ADD for {c_names[i]} hung; killed after {CNI_TIMEOUT_S} s",
                      flush=True)
                continue
            if proc.returncode != 0:
                raise SystemExit(f"CNI ADD failed: {proc.stdout.strip()} {proc.stderr.strip()}")
            samples["cni"].append(ms)
        verify(p_names, "plumb")
        verify(q_names, "plumbcni")
        verify([n for n in c_names if n not in cni_hung], "cni")
        rss_n = rss_kib(plumbd.pid)
        res = {k: summary(v) for k, v in samples.items()}
        print(f"{'tool':<8} {'count':>5} {'median':>8} {'p90':>8} {'max':>8}  (ms, attach to usable address)")
        for k, s in res.items():
            print(f"{k:<8} {s['count']:>5} {s['median']:>8.1f} {s['p90']:>8.1f} {s['max']:>8.1f}")
        ratio = res["plumb"]["median"] / res["cni"]["median"]
        print(f"plumb / CNI dhcp median: {ratio:.3f}")
        print(f"plumb as a CNI plugin / CNI dhcp median: "
              f"{res['plumbcni']['median'] / res['cni']['median']:.3f}")
        if cni_hung:
            print(f"CNI ADDs that hung (killed, not in the samples): {len(cni_hung)}")
        print(f"CNI dhcp daemon RSS with {args.count} leases: {rss_kib(cnid.pid)} KiB")
        out = {"samples": samples, "summary": res, "ratio": ratio, "cni_hung": cni_hung,
               "plumbd_rss_kib": {"0": rss_idle, str(args.count): rss_n}}
        if args.leases > args.count:
            more = [f"{PREFIX}m{i}" for i in range(args.leases - args.count)]
            print(f"== filling plumb's daemon up to {args.leases} live leases", flush=True)
            t0 = time.perf_counter()
            failed: list[str] = []
            for ns in more:
                add_ns(ns)
                proc = run(base + ["attach", ns, "dbench"], check=False)
                if proc.returncode != 0:
                    failed.append(ns)
                    print(f"  {ns}: {proc.stderr.strip().splitlines()[0]}", flush=True)
                    if len(failed) >= 5:
                        print("  five failures: stopping the fill here", flush=True)
                        break
            took = time.perf_counter() - t0
            more = [n for n in more if n not in failed and ipv4_of(n)]
            out["fill_failures"] = failed
            status = json.loads(run(base + ["ls", "--json"]).stdout)
            live = sum(1 for a in status if a.get("DHCP") and a["DHCP"]["State"] == "bound")
            verify(more, "plumb")
            rss = rss_kib(plumbd.pid)
            fds = len(os.listdir(f"/proc/{plumbd.pid}/fd"))
            out["plumbd_rss_kib"][str(args.leases)] = rss
            print(f"{live} bound leases ({took:.1f} s to attach {len(more)} more)")
            print(f"plumb daemon RSS: {rss_idle} KiB idle, {rss_n} KiB with {args.count}, "
                  f"{rss} KiB with {live} leases ({(rss - rss_idle) / max(live, 1):.1f} KiB per lease);"
                  f" {fds} open descriptors")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
