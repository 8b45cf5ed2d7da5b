#!/usr/bin/env python3
"""Scale benchmark of plumb's cluster networks (issue point 8).

    bench/cluster_bench.py [HOSTS] [CONTAINERS_PER_HOST]     # default 100 and 10
    bench/cluster_bench.py 10 3 --sample 10 --kills 2
    bench/cluster_bench.py --cleanup                          # what a kill -9 of it left

Builds HOSTS fake host namespaces on an underlay switch (a bridge in a
namespace of its own, hosts at 10.251.x.y/16), one etcd (3.4, Debian's) in
a namespace of its own, and one `plumb daemon` per host (its own state
directory, `--host-netns`, `--docker-plugin none`, `--cluster-ttl 2`). It
defines one vxlan network (10.96.0.0/16, default /26 blocks) and attaches
CONTAINERS_PER_HOST namespaces on every host, then measures:

1. attach -> reachable: from the end of an attach on one host until the FDB
   of every other host's VXLAN device holds the container's MAC (a static
   entry to the host's VTEP, as `bridge monitor fdb` in each host sees it;
   the neighbour entry is written in the same pass). Over a sample of
   attaches made one at a time in a settled cluster, and over the bulk
   attach before it. Goal p99 < 1 s.
2. forget: from SIGKILL of a host's daemon (its namespaces deleted at once)
   until every other host's FDB has dropped all its containers. Goal
   TTL + 1 s.
3. per-daemon RSS (/proc/PID/status), the daemons' and etcd's CPU while the
   cluster is idle and during the bulk attach, etcd keys per host.
4. iperf3 between containers on two hosts over the overlay, as a ratio to
   the same two host namespaces over the plain underlay.

Everything lives in namespaces named pbcPID-*: the machine's own links,
routes and firewall are never touched. Everything is removed on exit,
Ctrl-C and SIGTERM included. The plumb binary: $PLUMB, else what
scripts/build builds and prints (as scripts/install and scripts/package
find it). Needs root, etcd and etcdctl (etcd-server, etcd-client), iproute2,
iperf3, python3 (stdlib only).
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

TTL = 2
NETWORK = "bench"
VNI = "4242"
SUBNET = "10.96.0.0/16"
ETCD_IP = "10.251.255.1"
STORE = f"etcd://{ETCD_IP}:2379"
DEVICE = f"vx-{NETWORK}"
OURS = re.compile(r"^pbc(\d+)-")


class BenchError(Exception):
    """Something the benchmark needs failed: said loudly, exit 2."""


def run(cmd, check=True, timeout=60):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed ({p.returncode}): "
                         f"{(p.stderr or p.stdout).strip()}")
    return p


def sh(cmd, check=True):
    return run(["sh", "-c", cmd], check=check)


def host_ip(i):
    n = i + 1
    return f"10.251.{n // 256}.{n % 256}"


def pct(values, p):
    """The p-th percentile (nearest rank) of values."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def cpu_seconds(pid):
    """utime + stime of pid, in seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class FdbLog:
    """`bridge -timestamp monitor fdb` in one host namespace, read as it
    grows: when each MAC first showed up on the VXLAN device, and when it
    was last deleted from it."""

    def __init__(self, ns, path):
        self.path = path
        self.offset = 0
        self.pending = ""
        self.stamp = None
        self.added = {}
        self.deleted = {}
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "bridge", "-timestamp", "monitor", "fdb"],
            stdout=open(path, "w"), stderr=subprocess.STDOUT,
            start_new_session=True)

    def read(self):
        try:
            with open(self.path) as f:
                f.seek(self.offset)
                data = f.read()
                self.offset = f.tell()
        except OSError:
            return
        data = self.pending + data
        lines = data.split("\n")
        self.pending = lines.pop()
        for line in lines:
            if line.startswith("Timestamp: "):
                # Timestamp: Sun Dec  6 18:46:18 2026 362989 usec
                w = line.split()
                t = time.mktime(time.strptime(" ".join(w[1:6]), "%a %b %d %H:%M:%S %Y"))
                self.stamp = t + int(w[6]) / 1e6
                continue
            if f"dev {DEVICE} " not in line or " dst " not in line or self.stamp is None:
                continue
            if line.startswith("Deleted "):
                self.deleted[line.split()[1]] = self.stamp
            else:
                self.added.setdefault(line.split()[0], self.stamp)


class Bench:
    def __init__(self, args, plumb):
        self.args = args
        self.plumb = plumb
        self.prefix = f"pbc{os.getpid()}-"
        self.dir = tempfile.mkdtemp(prefix=f"plumb-bench-cluster-{os.getpid()}-")
        self.procs = []            # every process started, stopped at the end
        self.daemons = {}          # host index -> Popen
        self.fdb = {}              # host index -> FdbLog
        self.hosts = [f"{self.prefix}h{i}" for i in range(args.hosts)]
        self.alive = list(range(args.hosts))
        self.containers = {}       # host index -> [(ns, mac, ip, attached_at)]
        self.etcd = None
        self.results = {}
        self.keep_logs = False

    # ------------------------------------------------------------ plumbing

    def ns(self, name):
        sh(f"ip netns add {name} && ip -n {name} link set lo up")
        return name

    def plumb_at(self, i, *args, check=True):
        state = os.path.join(self.dir, f"h{i}")
        return run([self.plumb, "--state-dir", state, "--host-netns", self.hosts[i],
                    "--socket", os.path.join(state, "plumbd.sock"), *args], check=check)

    def spawn(self, cmd, log, env=None):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(self.dir, log), "w"),
                             env=env, start_new_session=True)
        self.procs.append(p)
        return p

    def etcdctl(self, *args):
        return run(["ip", "netns", "exec", self.etcd_ns, "env", "ETCDCTL_API=3", "etcdctl",
                    "--endpoints", f"http://{ETCD_IP}:2379", *args])

    def wait(self, what, secs, f):
        deadline = time.monotonic() + secs
        while True:
            v = f()
            if v:
                return v
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {secs} s waiting for {what}")
            time.sleep(0.1)

    # ------------------------------------------------------------ building

    def build(self):
        a = self.args
        print(f"building {a.hosts} hosts x {a.containers} containers "
              f"({os.cpu_count()} CPUs, plumb {self.plumb})", flush=True)
        switch = self.ns(f"{self.prefix}sw")
        sh(f"ip -n {switch} link add br0 type bridge && ip -n {switch} link set br0 up")
        self.etcd_ns = self.ns(f"{self.prefix}etcd")
        wires = [(self.etcd_ns, f"{ETCD_IP}/16", "pe")]
        for i, h in enumerate(self.hosts):
            self.ns(h)
            wires.append((h, f"{host_ip(i)}/16", f"p{i}"))
        for ns, addr, port in wires:
            sh(f"ip link add under0 netns {ns} type veth peer name {port} netns {switch} && "
               f"ip -n {ns} link set under0 up && ip -n {ns} addr add {addr} dev under0 && "
               f"ip -n {switch} link set {port} master br0 && ip -n {switch} link set {port} up")
        for i, h in enumerate(self.hosts):
            self.fdb[i] = FdbLog(h, os.path.join(self.dir, f"fdb-h{i}.log"))
            self.procs.append(self.fdb[i].proc)
        self.etcd = self.spawn(
            ["ip", "netns", "exec", self.etcd_ns, "etcd", "--name", "e1",
             "--data-dir", os.path.join(self.dir, "etcd-data"),
             "--listen-client-urls", f"http://{ETCD_IP}:2379",
             "--advertise-client-urls", f"http://{ETCD_IP}:2379",
             "--listen-peer-urls", "http://127.0.0.1:2380",
             "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
             "--initial-cluster", "e1=http://127.0.0.1:2380", "--log-level", "warn"],
            "etcd.log")
        self.wait("etcd to answer", 20,
                  lambda: run(["ip", "netns", "exec", self.etcd_ns, "etcdctl",
                               "--endpoints", f"http://{ETCD_IP}:2379", "endpoint",
                               "health"], check=False).returncode == 0)
        env = dict(os.environ, PLUMB_LOG="info")
        for i in range(a.hosts):
            state = os.path.join(self.dir, f"h{i}")
            self.daemons[i] = self.spawn(
                [self.plumb, "--state-dir", state, "--host-netns", self.hosts[i],
                 "--socket", os.path.join(state, "plumbd.sock"), "daemon",
                 "--docker-plugin", "none", "--cluster-ttl", str(TTL),
                 "--cluster-store", STORE, "--cluster-host", f"h{i}"],
                f"daemon-h{i}.log", env)
        self.wait(f"{a.hosts} members", 60, lambda: self.members() == a.hosts)
        started = time.monotonic()
        run([self.plumb, "--state-dir", os.path.join(self.dir, "cli"), "--host-netns",
             self.hosts[0], "--socket", os.path.join(self.dir, "cli", "plumbd.sock"),
             "network", "create", NETWORK, "--driver", "vxlan", "--vni", VNI,
             "--subnet", SUBNET, "--cluster-store", STORE])
        self.wait("the network on every host", 60, lambda: all(
            sh(f"ip -n {h} link show {DEVICE}", check=False).returncode == 0
            for h in self.hosts))
        print(f"  {a.hosts} members, network made everywhere in "
              f"{time.monotonic() - started:.1f} s", flush=True)

    def members(self):
        # From host 0's namespace: the underlay is reachable from nowhere
        # else, and nothing is to leave the machine.
        p = self.plumb_at(0, "cluster", "members", "--cluster-store", STORE, "--json",
                          check=False)
        try:
            return len(json.loads(p.stdout)) if p.returncode == 0 else -1
        except ValueError:
            return -1

    def attach(self, i, j):
        """Attach container j of host i; (ns, mac, ip, when it was done)."""
        c = self.ns(f"{self.prefix}h{i}c{j}")
        deadline = time.monotonic() + 20
        while True:
            p = self.plumb_at(i, "attach", c, NETWORK, check=False)
            if p.returncode == 0:
                done = time.time()
                break
            # The host's first block may not be claimed yet.
            if time.monotonic() > deadline:
                raise BenchError(f"attach {c} on h{i}: {p.stderr.strip()}")
            time.sleep(0.1)
        w = p.stdout.split()
        entry = (c, w[2], w[3].split("/")[0], done)
        self.containers.setdefault(i, []).append(entry)
        return entry

    def reached(self, i, mac, since, wait):
        """Seconds until every other live host's FDB had `mac`, or None
        after `wait` seconds."""
        deadline = time.monotonic() + wait
        others = [h for h in self.alive if h != i]
        while True:
            for h in others:
                self.fdb[h].read()
            seen = [self.fdb[h].added.get(mac) for h in others]
            if all(t is not None for t in seen):
                return max(seen) - since if seen else 0.0
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    # ------------------------------------------------------------ phases

    def phase_attach(self):
        a = self.args
        cpu0 = self.cpu()
        t0 = time.monotonic()
        bulk = []
        # All but the last container of every host, round robin over the
        # hosts, one after the other with no pause.
        for j in range(a.containers - 1):
            for i in range(a.hosts):
                bulk.append((i, self.attach(i, j)))
        bulk_secs = time.monotonic() - t0
        bulk_cpu = self.cpu_since(cpu0, bulk_secs) if bulk else None
        lat_bulk = []
        for i, (_, mac, _, done) in bulk:
            r = self.reached(i, mac, done, 15)
            lat_bulk.append(r if r is not None else float("inf"))
        if bulk:
            print(f"  bulk: {len(bulk)} attaches in {bulk_secs:.1f} s", flush=True)
        # The last container of each host: the sampled ones one at a time,
        # each once the cluster has settled, the rest in bulk.
        step = max(1, a.hosts // max(1, a.sample))
        sampled = list(range(0, a.hosts, step))[: a.sample]
        lat = []
        for i in sampled:
            time.sleep(0.5)
            _, mac, _, done = self.attach(i, a.containers - 1)
            r = self.reached(i, mac, done, 15)
            lat.append(r if r is not None else float("inf"))
        for i in range(a.hosts):
            if i not in sampled:
                self.attach(i, a.containers - 1)
        self.results["attach"] = {"one_at_a_time": lat, "bulk": lat_bulk,
                                  "bulk_secs": bulk_secs, "bulk_cpu": bulk_cpu}
        print(f"  sample: {len(lat)} attaches one at a time", flush=True)

    def cpu(self):
        pids = [p.pid for p in self.daemons.values()]
        return (sum(cpu_seconds(p) for p in pids), cpu_seconds(self.etcd.pid))

    def cpu_since(self, before, secs):
        now = self.cpu()
        return {"daemons_pct": 100 * (now[0] - before[0]) / secs,
                "etcd_pct": 100 * (now[1] - before[1]) / secs}

    def phase_idle(self):
        # Settled: every host's FDB has every other host's containers.
        total = sum(len(v) for v in self.containers.values())
        per = {i: len(v) for i, v in self.containers.items()}

        def settled():
            for h in self.alive:
                self.fdb[h].read()
                want = total - per[h]
                if len(self.fdb[h].added) - len(self.fdb[h].deleted) < want:
                    return False
            return True
        self.wait("every FDB to hold every remote container", 60, settled)
        before = self.cpu()
        secs = self.args.idle
        time.sleep(secs)
        idle = self.cpu_since(before, secs)
        rss = [rss_kib(p.pid) for p in self.daemons.values()]
        keys = [k for k in self.etcdctl("get", "/plumb/", "--prefix", "--keys-only")
                .stdout.splitlines() if k.strip()]
        self.results["idle"] = {
            "secs": secs, **idle,
            "daemon_cpu_pct_each": idle["daemons_pct"] / len(self.daemons),
            "rss_kib_mean": statistics.mean(rss), "rss_kib_max": max(rss),
            "etcd_rss_kib": rss_kib(self.etcd.pid),
            "etcd_keys": len(keys), "etcd_keys_per_host": len(keys) / self.args.hosts,
        }

    def phase_forget(self):
        times = []
        victims = list(range(self.args.hosts - 1, 1, -1))[: self.args.kills]
        for k in victims:
            macs = [c[1] for c in self.containers[k]]
            self.alive.remove(k)
            for h in self.alive:
                self.fdb[h].read()
            killed = time.time()
            self.daemons[k].kill()
            self.daemons[k].wait()
            self.fdb[k].proc.kill()
            self.fdb[k].proc.wait()
            for c in self.containers[k]:
                sh(f"ip netns del {c[0]}", check=False)
            sh(f"ip netns del {self.hosts[k]}", check=False)
            del self.daemons[k]

            def gone():
                for h in self.alive:
                    self.fdb[h].read()
                return all(self.fdb[h].deleted.get(m, 0) >= killed
                           and self.fdb[h].deleted[m] >= self.fdb[h].added.get(m, 0)
                           for h in self.alive for m in macs)
            try:
                self.wait(f"the others to forget h{k}", 20, gone)
                times.append(max(self.fdb[h].deleted[m] for h in self.alive for m in macs)
                             - killed)
            except BenchError:
                times.append(float("inf"))
            time.sleep(1)
        self.results["forget"] = times

    def phase_iperf(self):
        secs = str(self.args.iperf_seconds)
        (c0, _, _, _), (c1, _, ip1, _) = self.containers[0][0], self.containers[1][0]

        def iperf(server_ns, client_ns, addr):
            srv = self.spawn(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1"],
                             "iperf-server.log")
            try:
                self.wait("iperf3 to listen", 10, lambda: ":5201" in sh(
                    f"ip netns exec {server_ns} ss -ltn", check=False).stdout)
                p = run(["ip", "netns", "exec", client_ns, "iperf3", "-c", addr, "-t", secs,
                         "-J"], timeout=int(secs) + 30)
                return json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"]
            finally:
                srv.kill()
                srv.wait()
        overlay, underlay = [], []
        for _ in range(self.args.iperf_rounds):
            overlay.append(iperf(c1, c0, ip1))
            underlay.append(iperf(self.hosts[1], self.hosts[0], host_ip(1)))
        self.results["iperf"] = {"overlay_bps": overlay, "underlay_bps": underlay}

    # ------------------------------------------------------------ report

    def report(self):
        a, r = self.args, self.results
        print()
        print(f"plumb cluster benchmark: {a.hosts} hosts x {a.containers} containers, "
              f"TTL {TTL} s, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        rows = []
        at = r.get("attach", {})
        one = at.get("one_at_a_time", [])
        if one:
            p50, p99 = pct(one, 50), pct(one, 99)
            rows.append(("attach -> every other host's FDB, one at a time",
                         f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (n={len(one)})",
                         "p99 < 1 s", f"{p99:.2f}x", p99 < 1))
        bulk = at.get("bulk", [])
        if bulk:
            rows.append(("attach -> every other host's FDB, during bulk attach",
                         f"p50 {pct(bulk, 50) * 1000:.0f} ms, p99 {pct(bulk, 99) * 1000:.0f} ms "
                         f"(n={len(bulk)})", "-", "", None))
        fg = r.get("forget", [])
        if fg:
            worst = max(fg)
            rows.append(("killed host forgotten by every other host",
                         ", ".join(f"{t:.2f} s" for t in fg), f"<= {TTL + 1} s",
                         f"{worst / (TTL + 1):.2f}x", worst <= TTL + 1))
        idle = r.get("idle")
        if idle:
            rows.append(("daemon RSS", f"mean {idle['rss_kib_mean'] / 1024:.1f} MiB, "
                         f"max {idle['rss_kib_max'] / 1024:.1f} MiB", "-", "", None))
            rows.append(("etcd keys per host", f"{idle['etcd_keys_per_host']:.1f} "
                         f"({idle['etcd_keys']} in all; etcd RSS "
                         f"{idle['etcd_rss_kib'] / 1024:.0f} MiB)", "-", "", None))
            rows.append(("CPU, idle cluster", f"daemons {idle['daemons_pct']:.1f}% of a core "
                         f"({idle['daemon_cpu_pct_each']:.2f}% each), etcd "
                         f"{idle['etcd_pct']:.1f}%", "-", "", None))
        bc = at.get("bulk_cpu")
        if bc:
            rows.append(("CPU, bulk attach", f"daemons {bc['daemons_pct']:.0f}% of a core, "
                         f"etcd {bc['etcd_pct']:.0f}% ({at['bulk_secs']:.1f} s)", "-", "",
                         None))
        ip = r.get("iperf")
        if ip:
            o, u = statistics.median(ip["overlay_bps"]), statistics.median(ip["underlay_bps"])
            rows.append(("iperf3 overlay / underlay (2 hosts)",
                         f"{o / 1e9:.2f} / {u / 1e9:.2f} Gbit/s", "-", f"{o / u:.2f}", None))
        w = max(len(x[0]) for x in rows)
        v = max(len(x[1]) for x in rows)
        print(f"{'measure':<{w}}  {'value':<{v}}  {'goal':<9}  {'ratio':<6}  ")
        for name, value, goal, ratio, ok in rows:
            mark = {True: "PASS", False: "MISS", None: ""}[ok]
            print(f"{name:<{w}}  {value:<{v}}  {goal:<9}  {ratio:<6}  {mark}")
        print("(ratio: value / goal for goals, overlay / underlay for iperf3; FDB times "
              "from `bridge monitor fdb` in each host)")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"hosts": a.hosts, "containers": a.containers, "ttl": TTL,
                           "cpus": os.cpu_count(), **r}, f, indent=1, default=str)

    # ------------------------------------------------------------ cleanup

    def cleanup(self):
        # Daemons first, politely (they leave the cluster), then the rest.
        for p in self.daemons.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs:
            if p in self.daemons.values():
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        remove_namespaces(self.prefix)
        if not self.keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)


def remove_namespaces(prefix):
    names = [l.split()[0] for l in sh("ip netns list", check=False).stdout.splitlines()
             if l.startswith(prefix)]
    # Containers first (their veths go with them), hosts, then the switch.
    names.sort(key=lambda n: (not re.search(r"c\d+$", n), n.endswith("-sw")))
    for n in names:
        sh(f"ip netns del {n}", check=False)


def cleanup_leftovers():
    """What a run killed with SIGKILL left: namespaces pbcPID-* of a PID that
    no longer runs, the processes started for them (found by that prefix in
    their command line), its directory plumb-bench-cluster-PID-* in $TMPDIR."""
    prefixes = set()
    for l in sh("ip netns list", check=False).stdout.splitlines():
        m = OURS.match(l)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            prefixes.add(f"pbc{m.group(1)}-")
    for prefix in prefixes:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if prefix in cmd:
                os.kill(int(pid), signal.SIGKILL)
        for l in sh("ip netns list", check=False).stdout.splitlines():
            if l.startswith(prefix):
                for pid in sh(f"ip netns pids {l.split()[0]}", check=False).stdout.split():
                    os.kill(int(pid), signal.SIGKILL)
        remove_namespaces(prefix)
        print(f"removed what {prefix}* left")
    tmp = tempfile.gettempdir()
    for d in os.listdir(tmp):
        m = re.match(r"^plumb-bench-cluster-(\d+)-", d)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            shutil.rmtree(os.path.join(tmp, d), ignore_errors=True)
            print(f"removed {os.path.join(tmp, d)}")
            prefixes.add(d)
    if not prefixes:
        print("nothing left by an earlier run")


def find_plumb():
    if os.environ.get("PLUMB"):
        return os.path.abspath(os.environ["PLUMB"])
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([os.path.join(repo, "scripts", "build")], cwd=repo,
                       stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise BenchError("scripts/build failed")
    return p.stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hosts", nargs="?", type=int, default=100)
    ap.add_argument("containers", nargs="?", type=int, default=10,
                    metavar="containers_per_host")
    ap.add_argument("--sample", type=int, default=20,
                    help="attaches timed one at a time (default 20)")
    ap.add_argument("--kills", type=int, default=3, help="hosts killed (default 3)")
    ap.add_argument("--idle", type=float, default=9.0,
                    help="seconds the idle CPU is measured over (default 9)")
    ap.add_argument("--iperf-seconds", type=int, default=5)
    ap.add_argument("--iperf-rounds", type=int, default=2)
    ap.add_argument("--json", help="write every number to this file")
    ap.add_argument("--cleanup", action="store_true",
                    help="remove what a killed run left, and exit")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("cluster_bench.py needs root (it makes namespaces)")
    if args.cleanup:
        cleanup_leftovers()
        return
    if args.hosts < 3 or args.containers < 1:
        sys.exit("at least 3 hosts and 1 container per host")
    args.kills = max(0, min(args.kills, args.hosts - 2))
    for tool in ("etcd", "etcdctl", "iperf3", "bridge"):
        if not shutil.which(tool):
            sys.exit(f"cluster_bench.py needs {tool} (scripts/test-deps installs it)")
    plumb = find_plumb()
    if not os.access(plumb, os.X_OK):
        sys.exit(f"no plumb binary at {plumb}")

    def stop(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    bench = Bench(args, plumb)
    try:
        bench.build()
        bench.phase_attach()
        bench.phase_idle()
        bench.phase_iperf()
        bench.phase_forget()
        bench.report()
    except BenchError as e:
        bench.keep_logs = True
        print(f"bench-cluster: {e}", file=sys.stderr)
        print(f"(the daemons' and etcd's logs are kept in {bench.dir})", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        sys.exit(130)
    finally:
        # Ctrl-C during the cleanup must not leave half of it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        bench.cleanup()


if __name__ == "__main__":
    main()
