#!/usr/bin/env python3
"""Policy benchmark: attach time and throughput with 10 and 1,000 others.

plumb writes firewall rules once per network or tenant; attaching a container
only adds set and map elements (and its own tc qdiscs). This benchmark shows
it in one run, in two kinds of phase, with probes on the NAT bridge network
`bench`:

  small  --small (10) other containers attached, --small policy rules
  large  --count (1,000) other containers, --rules (1,000) policy rules

The kinds alternate, --rounds (2) times: small, large, small again (the
newest containers detached and their namespaces deleted, the newest rules
removed), large again. Each kind's numbers pool its rounds. On a shared VM
the CPU's speed can change by 2x within minutes; alternating keeps a slow
stretch from landing on one kind only. The per-round attach medians are
printed too.

Where the others sit (--layout, default both: one after the other, with a
cleanup between):
  same    on `bench` itself. The kernel's own per-port work on that bridge
          (adding a port, port state, carrier changes walk all its ports)
          grows the attach time too; informative only.
  spread  on extra NAT networks bench-o1, bench-o2, ... (10.88.K.0/24) of at
          most 100 containers each; `bench` holds only the probes in both
          phases. This isolates the cost of more containers on the host.

In each phase, with fresh probe containers, it measures
  - the wall time of --probes (30) `plumb attach NS bench`, one process each
    (median and mean). Each probe but the first two is detached again once
    timed, so every attach sees exactly the phase's other containers (a
    Linux bridge holds at most 1,023 ports); after that detach, a bare
    `ip link add` of a veth into the same bridge is timed too (one process
    under nsenter): the kernel's share of an attach, which grows with the
    bridge's ports (layout same);
  - iperf3 TCP throughput (-t 5 -J, receiver bits/s, median of 3) between the
    two kept probes of `bench` (bridged), and from a container of a second
    network `bench2` to the same server (routed through the host);
  - informative: TCP connections per second over both paths (client and
    server pinned to CPU 0, so every per-connection cost shows), the rules
    and set elements in plumb's nftables tables, the time of each
    `plumb policy add`.
It prints large/small ratios per layout; --strict exits 1 if the attach
median of the spread layout grows by more than 1.15x or a throughput of
either layout drops below 0.9x.

The filler rules are distinct and never match the probe traffic:
  bench deny from 198.18.A.B/32 proto tcp port 1024+k   (even k)
  bench deny to   198.19.A.B/32 proto udp port 1024+k   (odd k)
They stand before `bench allow from bench2 proto tcp port 5201-5202` (deny
before allow), so the first packet of every connection from bench2 walks
past all of them; later packets are accepted by `ct state established`
first, and traffic within one network is accepted before any rule. One
more rule, `bench allow from label:role=bench proto udp port 9`, names a
label every container (probe or other, any network) is attached with, so
each attach adds its address to that rule's nftables set.

Everything runs in a fake host namespace (plumb --host-netns) that the script
creates and deletes; the real host's links, routes and tables are never
touched. Run as root from the repository root:

  cargo build --release
  bench/policy_bench.py                               # 10 vs 1,000, both layouts
  bench/policy_bench.py --layout spread               # one layout only
  bench/policy_bench.py --count 100 --rules 100       # quick
  bench/policy_bench.py --rules 0                     # no policy (nor bench2 path)
  bench/policy_bench.py --json out.json --strict
  bench/policy_bench.py --cleanup                     # leftovers of a killed run

Exit status: 0 ok; 1 a target was missed and --strict was given; 2 a command
or a verification failed; 3 bad usage or environment.
"""

from __future__ import annotations

import argparse
import glob
import ipaddress
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PREFIX = "plumb-pbench-"
HOST = PREFIX + "host"
NET, SUBNET = "bench", "10.86.0.0/16"
NET2, SUBNET2 = "bench2", "10.87.0.0/24"
IPERF_PORT, CONN_PORT = 5201, 5202
EXTRA_RULES = 2  # besides the filler: bench2 -> bench allowed, and a label rule
LABEL = "role=bench"  # every container carries it (with --rules > 0)
MAX_ATTACH_RATIO, MIN_TPUT_RATIO = 1.15, 0.9
MAX_OTHERS = 1020  # the kernel's BR_MAX_PORTS (1024, port 0 unused) minus 3 probes
SPREAD_NET_SIZE = 100  # others per network in the spread layout: bench-oK, 10.88.K.0/24
MARKERS = ("10.86.", "10.87.", "10.88.", "198.18.", "198.19.")

# accept-and-close server, and a client that connects (and resets) for N seconds;
# both on one CPU, so that every cost of a new connection adds up in the rate
PIN = ["taskset", "-c", "0"]
CONN_SERVER = f"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {CONN_PORT})); s.listen(4096)
while True:
    try: s.accept()[0].close()
    except OSError: pass
"""
CONN_CLIENT = """
import socket, struct, sys, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
linger, n = struct.pack("ii", 1, 0), 0
end = time.perf_counter() + secs
while time.perf_counter() < end:
    c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    c.connect((host, port)); c.close(); n += 1
print(n / secs)
"""


class BenchError(Exception):
    """A command or a verification failed: exit 2."""


def release_binary():
    """target/<host tuple>/release/plumb: .cargo/config.toml names the target."""
    host = subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout
    tuple_ = next((l.split()[1] for l in host.splitlines() if l.startswith("host:")), "")
    return f"target/{tuple_}/release/plumb"


def say(msg: str = "") -> None:
    print(msg, flush=True)


def run(cmd: list[str], *, check: bool = True, input: str | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise BenchError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                         f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return (time.perf_counter() - t0) * 1000.0, proc


def netns_all() -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_add(names: list[str]) -> None:
    if names:
        run(["ip", "-batch", "-"], input="".join(f"netns add {n}\n" for n in names))


def in_ns(ns: str, cmd: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def cleanup() -> int:
    """Kill what runs in our namespaces, delete them (container ones first:
    that removes their veths; the host last: that removes the bridges and
    plumb's tables) and the state directories. Returns namespaces removed."""
    ours = [n for n in netns_all() if n.startswith(PREFIX)]
    for ns in ours:
        for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    containers = [n for n in ours if n != HOST]
    if containers:
        run(["ip", "-force", "-batch", "-"], check=False,
            input="".join(f"netns del {n}\n" for n in containers))
    if HOST in ours:
        inode = os.stat(f"/run/netns/{HOST}").st_ino
        run(["ip", "netns", "del", HOST], check=False)
        held = [p for p in os.listdir("/proc") if p.isdigit()
                and _netns_of(p) == f"net:[{inode}]"]
        if held:
            raise BenchError(f"{HOST} deleted but still held by pids {held}")
    for d in glob.glob(os.path.join(tempfile.gettempdir(), PREFIX + "state-*")):
        shutil.rmtree(d, ignore_errors=True)
    return len(ours)


def _netns_of(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def real_host_view() -> dict:
    """Read-only: the real host's link names and which of our markers its
    ruleset holds, to prove afterwards that the run stayed in its namespace."""
    links = run(["ip", "-o", "link", "show"]).stdout
    ruleset = run(["nft", "list", "ruleset"], check=False).stdout
    return {"links": {l.split(":")[1].strip().split("@")[0] for l in links.splitlines()},
            "markers": {m for m in MARKERS if m in ruleset}}


def cpu_busy(interval: float) -> float:
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)
    i0, t0 = sample()
    time.sleep(interval)
    i1, t1 = sample()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(limit_s: float = 30.0, busy_max: float = 0.10) -> float:
    """Wait for an idle machine (the kernel finishes deferred work of the
    previous step in the background); returns the last busy fraction."""
    start, calm, busy = time.monotonic(), 0, 1.0
    while time.monotonic() - start < limit_s:
        busy = cpu_busy(0.5)
        calm = calm + 1 if busy < busy_max else 0
        if calm >= 2:
            return busy
    say(f"  note: machine still {busy:.0%} busy after {limit_s:.0f} s; measuring anyway")
    return busy


def filler_rule(k: int) -> list[str]:
    """The k-th filler rule: distinct, non-overlapping, never matching."""
    addr = f"{k // 256}.{k % 256}/32"
    if k % 2 == 0:
        return [NET, "deny", "from", f"198.18.{addr}", "proto", "tcp", "port", str(1024 + k)]
    return [NET, "deny", "to", f"198.19.{addr}", "proto", "udp", "port", str(1024 + k)]


def ipv4_of(ns: str) -> str | None:
    out = run(["ip", "-n", ns, "-j", "-4", "addr", "show", "dev", "eth0"], check=False)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    for link in json.loads(out.stdout):
        for a in link.get("addr_info", []):
            if a.get("family") == "inet":
                return a["local"]
    return None


class Bench:
    def __init__(self, args: argparse.Namespace, layout: str) -> None:
        self.args, self.layout = args, layout
        self.state = tempfile.mkdtemp(prefix=PREFIX + "state-")
        self.others: list[str] = []  # namespaces of the other containers, in order
        self.other_nets = 0  # bench-oK networks created so far (layout spread)
        self.rules = 0       # filler rules added so far
        self.serial = 0      # names of fresh namespaces
        self.procs: list[subprocess.Popen] = []
        self.bridge_nf = "?"
        self.results: dict[str, dict] = {}

    def plumb(self, *words: str) -> list[str]:
        return [self.args.plumb, "--state-dir", self.state, "--host-netns", HOST, *words]

    def attach(self, ns: str, net: str = NET) -> list[str]:
        label = ["--label", LABEL] if self.args.rules else []
        return self.plumb("attach", ns, net, *label)

    def other_net(self, i: int) -> str:
        """The network of the i-th (0-based) other container."""
        if self.layout == "same":
            return NET
        k = i // SPREAD_NET_SIZE + 1
        if k > self.other_nets:
            run(self.plumb("network", "create", f"{NET}-o{k}", "--driver", "bridge",
                           "--subnet", f"10.88.{k}.0/24", "--mode", "nat",
                           "--bridge", f"pl-{NET}-o{k}"))
            self.other_nets = k
        return f"{NET}-o{k}"

    def fresh(self, tag: str, n: int) -> list[str]:
        names = [f"{PREFIX}{tag}-{self.serial + i}" for i in range(n)]
        self.serial += n
        netns_add(names)
        return names

    def setup(self) -> None:
        netns_add([HOST])
        run(["ip", "-n", HOST, "link", "set", "lo", "up"])
        run(in_ns(HOST, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]))
        brnf = run(in_ns(HOST, ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"]),
                   check=False).stdout.strip()
        self.bridge_nf = brnf or "absent"
        for net, subnet in ((NET, SUBNET), (NET2, SUBNET2)):
            run(self.plumb("network", "create", net, "--driver", "bridge",
                           "--subnet", subnet, "--mode", "nat", "--bridge", f"pl-{net}"))
        if self.args.rules:
            # bench2 -> bench is dropped by default (networks are isolated)
            run(self.plumb("policy", "add", NET, "allow", "from", NET2, "proto", "tcp",
                           "port", f"{IPERF_PORT}-{CONN_PORT}"))
            # a set that every attach to bench adds its address to
            run(self.plumb("policy", "add", NET, "allow", "from", f"label:{LABEL}",
                           "proto", "udp", "port", "9"))

    def grow(self, containers: int, rules: int) -> list[float]:
        """Attach background containers up to `containers`, then add filler
        rules up to `rules`; returns the ms of each `plumb policy add`."""
        names = self.fresh("bg", max(0, containers - len(self.others)))
        for i, ns in enumerate(names, len(self.others)):
            run(self.attach(ns, self.other_net(i)))
            if (i + 1) % 250 == 0:
                say(f"  {i + 1}/{containers} containers")
        self.others += names
        adds = []
        t0 = time.monotonic()
        for k in range(self.rules, rules):
            ms, p = timed(self.plumb("policy", "add", *filler_rule(k)))
            if p.returncode != 0:
                raise BenchError(f"plumb policy add {' '.join(filler_rule(k))} failed: "
                                 f"{p.stderr.strip() or p.stdout.strip()}")
            adds.append(ms)
            if (k + 1) % 250 == 0:
                say(f"  {k + 1}/{rules} rules, {time.monotonic() - t0:.1f} s, "
                    f"last add {ms:.1f} ms")
        self.rules = max(self.rules, rules)
        return adds

    def shrink(self, containers: int, rules: int) -> None:
        """Back to `containers` other containers and `rules` filler rules:
        the newest go (their networks stay, empty)."""
        doomed = self.others[containers:]
        if not doomed and self.rules <= rules:
            return
        for ns in doomed:
            run(self.plumb("detach", ns))
        if doomed:
            run(["ip", "-force", "-batch", "-"],
                input="".join(f"netns del {n}\n" for n in doomed))
        self.others = self.others[:containers]
        if self.rules > rules:
            listed = json.loads(run(self.plumb("policy", "ls", "--json")).stdout or "[]")
            ids = sorted(r["Id"] for r in listed)[EXTRA_RULES + rules:]
            run(self.plumb("policy", "rm", *map(str, ids)))
            self.rules = rules
        say(f"  back to {containers} other containers and {rules} rules")

    def bare_veth(self, ns: str) -> float:
        """The kernel's share of an attach: a veth into the bridge, by one `ip`
        (under nsenter: `ip -n` copies the mount table, 1,000 netns mounts)."""
        ms, p = timed(["nsenter", f"--net=/run/netns/{HOST}", "ip", "link", "add", "pbk0",
                       "master", f"pl-{NET}", "up", "type", "veth", "peer", "name", "eth0",
                       "netns", ns])
        if p.returncode != 0:
            raise BenchError(f"ip link add (a veth into pl-{NET}) failed: {p.stderr.strip()}")
        run(["ip", "-n", HOST, "link", "del", "pbk0"])
        return ms

    def start(self, ns: str, cmd: list[str], port: int) -> None:
        self.procs.append(subprocess.Popen(in_ns(ns, cmd), stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
        for _ in range(100):
            if run(in_ns(ns, ["ss", "-Hltn", f"sport = :{port}"])).stdout.strip():
                return
            time.sleep(0.05)
        raise BenchError(f"{' '.join(cmd[:3])} does not listen on port {port} in {ns}")

    def stop_servers(self) -> None:
        for p in self.procs:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()

    def iperf(self, client: str, server_ip: str) -> float:
        t = self.args.iperf_time
        p = run(in_ns(client, ["iperf3", "-c", server_ip, "-p", str(IPERF_PORT),
                               "-t", str(t), "-J"]), check=False, timeout=t + 30)
        try:
            doc = json.loads(p.stdout)
        except json.JSONDecodeError:
            raise BenchError(f"iperf3 from {client}: {p.stderr.strip() or p.stdout[:200]}")
        if "error" in doc or p.returncode != 0:
            raise BenchError(f"iperf3 from {client} to {server_ip}: {doc.get('error')}")
        return doc["end"]["sum_received"]["bits_per_second"] / 1e9

    def connrate(self, client: str, server_ip: str) -> float:
        cmd = [*PIN, "python3", "-c", CONN_CLIENT, server_ip, str(CONN_PORT), "2"]
        p = run(in_ns(client, cmd), timeout=60)
        return float(p.stdout.strip())

    def phase(self, name: str, containers: int, rules: int) -> None:
        where = "on bench" if self.layout == "same" else "on bench-oK networks"
        say(f"\n== {self.layout}/{name}: {containers} other containers {where}, "
            f"{rules} policy rules")
        r = self.results[name] = {"containers": containers, "rules": rules}
        self.shrink(containers, rules)
        r["policy_add_ms"] = self.grow(containers, rules)
        r["other_networks"] = self.other_nets
        probes = self.fresh(name, self.args.probes)
        r["busy_before"] = wait_quiet()
        attach = r["attach_ms"] = []
        bare = r["bare_veth_ms"] = []
        for i, ns in enumerate(probes):
            ms, p = timed(self.attach(ns))
            if p.returncode != 0:
                raise BenchError(f"attach {ns} failed: {p.stderr.strip() or p.stdout.strip()}")
            attach.append(ms)
            if i >= 2:  # keep 2 for iperf3; the others go, so every probe sees `containers`
                run(self.plumb("detach", ns, NET))
                bare.append(self.bare_veth(ns))
        r["attach_median_ms"] = statistics.median(attach)
        r["attach_mean_ms"] = statistics.fmean(attach)
        r["bare_veth_median_ms"] = statistics.median(bare)
        say(f"  attach: median {r['attach_median_ms']:.2f} ms, "
            f"mean {r['attach_mean_ms']:.2f} ms over {len(attach)} probes; a bare veth into "
            f"the bridge (`ip link add`): median {r['bare_veth_median_ms']:.2f} ms")
        server, server_ip = probes[0], ipv4_of(probes[0])
        for ns, ip in ((server, server_ip), (probes[1], ipv4_of(probes[1]))):
            if ip is None or ipaddress.ip_address(ip) not in ipaddress.ip_network(SUBNET):
                raise BenchError(f"{ns}: no address of {SUBNET} on eth0 ({ip})")

        paths = {"same network": probes[1]}
        if self.args.rules:
            (other,) = self.fresh(name + "-x", 1)
            run(self.plumb("attach", other, NET2))
            paths["across networks"] = other
        self.start(server, ["iperf3", "-s", "-p", str(IPERF_PORT)], IPERF_PORT)
        self.start(server, [*PIN, "python3", "-c", CONN_SERVER], CONN_PORT)
        try:
            wait_quiet()
            tput = r["iperf_gbps"] = {path: [] for path in paths}
            for _ in range(self.args.repeats):  # alternate the paths
                for path, client in paths.items():
                    tput[path].append(self.iperf(client, server_ip))
            conns = r["connections_per_s"] = {
                path: statistics.median(self.connrate(c, server_ip) for _ in range(3))
                for path, c in paths.items()}
        finally:
            self.stop_servers()
        r["iperf_median_gbps"] = {k: statistics.median(v) for k, v in tput.items()}
        for path in paths:
            say(f"  iperf3 {path}: {', '.join(f'{g:.2f}' for g in tput[path])} Gbit/s; "
                f"{conns[path]:.0f} connections/s")

        listed = json.loads(run(self.plumb("policy", "ls", "--json")).stdout or "[]") \
            if self.args.rules else []
        want = rules + EXTRA_RULES if self.args.rules else 0
        if len(listed) != want:
            raise BenchError(f"plumb policy ls lists {len(listed)} rules, expected {want}")
        nft = r["nft"] = self.nft_counts()
        say("  nftables: " + ", ".join(f"{n} {k}" for k, n in sorted(nft.items())))
        for ns in paths.values():
            run(self.plumb("detach", ns))
        run(self.plumb("detach", server))
        run(["ip", "-force", "-batch", "-"],
            input="".join(f"netns del {ns}\n" for ns in {*probes, *paths.values()}))

    def nft_counts(self) -> dict:
        """Rules and set elements per plumb table in the fake host."""
        out = run(in_ns(HOST, ["nft", "-j", "list", "ruleset"])).stdout
        counts: dict[str, int] = {}
        for obj in json.loads(out).get("nftables", []):
            if "rule" in obj and obj["rule"]["table"] == "plumb":
                key = f"{obj['rule']['family']} plumb rules"
                counts[key] = counts.get(key, 0) + 1
            elif "set" in obj and obj["set"]["table"] == "plumb":
                key = f"{obj['set']['family']} plumb set elements"
                counts[key] = counts.get(key, 0) + len(obj["set"].get("elem", []))
        return counts


def pooled(results: dict, kind: str) -> dict:
    """The phases small1, small2, ... (or large1, ...) as one: their probes,
    bare veths and iperf3 runs together, the median of their connection
    rates, the first one's policy adds, the last one's nftables counts."""
    runs = [results[f"{kind}{k}"] for k in range(1, len(results) + 1)
            if f"{kind}{k}" in results]
    first, last = runs[0], runs[-1]
    attach = [ms for r in runs for ms in r["attach_ms"]]
    bare = [ms for r in runs for ms in r["bare_veth_ms"]]
    iperf = {p: [g for r in runs for g in r["iperf_gbps"][p]] for p in first["iperf_gbps"]}
    conns = {p: statistics.median(r["connections_per_s"][p] for r in runs)
             for p in first["connections_per_s"]}
    return {"containers": first["containers"], "rules": first["rules"],
            "other_networks": last["other_networks"], "nft": last["nft"],
            "policy_add_ms": first["policy_add_ms"], "attach_ms": attach,
            "attach_median_ms": statistics.median(attach),
            "attach_mean_ms": statistics.fmean(attach),
            "bare_veth_median_ms": statistics.median(bare),
            "iperf_median_gbps": {p: statistics.median(v) for p, v in iperf.items()},
            "connections_per_s": conns,
            "rounds": [r["attach_median_ms"] for r in runs]}


def report(layout: str, small: dict, large: dict, args) -> list[dict]:
    """Print one layout's table; returns its ratios, each with a verdict
    (PASS, MISS, or info: the same-bridge attach growth is no target)."""
    def row(label, a, b, fmt, target=None):
        ratio = b / a if a else float("nan")
        verdict = ""
        if target is not None:
            ok = ratio <= target[1] if target[0] == "<=" else ratio >= target[1]
            verdict = f"{'PASS' if ok else 'MISS'} ({target[0]} {target[1]})"
        checks.append({"name": label, "ratio": ratio,
                       "verdict": verdict.split()[0] if verdict else "info"})
        say(f"{label:<34}{a:>{12}{fmt}}{b:>{12}{fmt}}{ratio:>10.3f}  {verdict}")

    checks: list = []
    say(f"\n== results, layout {layout}")
    say(f"{'':<34}{'small':>12}{'large':>12}{'large/small':>12}")
    say(f"{'other containers':<34}{small['containers']:>12}{large['containers']:>12}")
    if layout == "spread":
        say(f"{'  on networks bench-oK':<34}{small['other_networks']:>12}"
            f"{large['other_networks']:>12}")
    say(f"{f'policy rules (+{EXTRA_RULES})':<34}{small['rules']:>12}{large['rules']:>12}")
    for table in sorted(set(small["nft"]) | set(large["nft"])):
        say(f"{'nft ' + table:<34}{small['nft'].get(table, 0):>12}"
            f"{large['nft'].get(table, 0):>12}")
    row(f"attach median ms ({len(small['attach_ms'])} probes)", small["attach_median_ms"],
        large["attach_median_ms"], ".2f",
        ("<=", MAX_ATTACH_RATIO) if layout == "spread" else None)
    say(f"{'  per round':<34}{'/'.join(f'{m:.2f}' for m in small['rounds']):>12}"
        f"{'/'.join(f'{m:.2f}' for m in large['rounds']):>12}"
        f"{'/'.join(f'{b / a:.2f}' for a, b in zip(small['rounds'], large['rounds'])):>12}")
    row("attach mean ms", small["attach_mean_ms"], large["attach_mean_ms"], ".2f")
    row("bare veth into the bridge ms", small["bare_veth_median_ms"],
        large["bare_veth_median_ms"], ".2f")
    for path in small["iperf_median_gbps"]:
        row(f"iperf3 {path} Gbit/s", small["iperf_median_gbps"][path],
            large["iperf_median_gbps"][path], ".2f", (">=", MIN_TPUT_RATIO))
    for path in small["connections_per_s"]:
        row(f"TCP connections/s {path}", small["connections_per_s"][path],
            large["connections_per_s"][path], ".0f")
    if small["policy_add_ms"] and large["policy_add_ms"]:
        row("plumb policy add median ms", statistics.median(small["policy_add_ms"]),
            statistics.median(large["policy_add_ms"]), ".2f")
        adds = large["policy_add_ms"]
        w = min(50, max(1, len(adds) // 2))
        say(f"large phase: {len(adds)} policy adds took {sum(adds) / 1000:.1f} s; mean of "
            f"the first {w} {statistics.fmean(adds[:w]):.2f} ms, of the last {w} "
            f"{statistics.fmean(adds[-w:]):.2f} ms")
    return checks


def summary(layout: str, checks: list[dict]) -> str:
    """One line: the attach and bare-veth ratios and the throughput verdicts."""
    by = {c["name"].split(" (")[0]: c for c in checks}
    att, bare = by["attach median ms"], by["bare veth into the bridge ms"]
    tput = [f"{c['ratio']:.2f} {c['verdict']}" for c in checks if c["name"].startswith("iperf3")]
    return (f"{layout:<7}attach x{att['ratio']:.2f} "
            f"{'(informative)' if att['verdict'] == 'info' else att['verdict']}, "
            f"bare veth x{bare['ratio']:.2f}; throughput x{', x'.join(tput)}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000,
                    help="other containers in the large phase (default 1000)")
    ap.add_argument("--rules", type=int, default=1000,
                    help="policy rules in the large phase (default 1000; 0: no policy at all, "
                    "and no across-networks path)")
    ap.add_argument("--small", type=int, default=10,
                    help="other containers and rules in the small phase (default 10)")
    ap.add_argument("--probes", type=int, default=30, help="timed attaches per phase (default 30)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="small and large phases alternate this many times (default 2)")
    ap.add_argument("--iperf-time", type=int, default=5, help="seconds per iperf3 run (default 5)")
    ap.add_argument("--repeats", type=int, default=3, help="iperf3 runs per path (default 3)")
    ap.add_argument("--layout", choices=("same", "spread", "both"), default="both",
                    help="others on the probes' network `bench`, spread over networks of "
                    f"{SPREAD_NET_SIZE}, or both, one after the other (default both)")
    ap.add_argument("--plumb", default=release_binary(), help="plumb binary")
    ap.add_argument("--json", metavar="FILE", help="write every number as JSON")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument("--cleanup", action="store_true",
                    help="only remove what a killed run left, then exit")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if not 0 <= args.small < args.count <= MAX_OTHERS:
        ap.error(f"need 0 <= --small < --count <= {MAX_OTHERS}: a Linux bridge holds at most "
                 "1023 ports, and 2 probes stay attached while a third is timed")
    if args.rules and not args.small <= args.rules <= 60000:
        ap.error("need --small <= --rules <= 60000 (or --rules 0)")
    if args.probes < 3 or args.repeats < 1 or args.iperf_time < 1:
        ap.error("need --probes >= 3, --repeats >= 1, --iperf-time >= 1")
    args.plumb = os.path.abspath(args.plumb)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        say("policy_bench: must run as root (it creates network namespaces)")
        return 3
    for exe in ("ip", "nft", "iperf3", "ss", "sysctl", "taskset", "nsenter"):
        if not shutil.which(exe):
            say(f"policy_bench: `{exe}` not found in PATH")
            return 3
    if args.cleanup:
        n = cleanup()
        say(f"removed {n} leftover namespaces" if n else "nothing to clean up")
        return 0
    if any(n.startswith(PREFIX) for n in netns_all()):
        say("policy_bench: namespaces of an earlier run exist; run with --cleanup first")
        return 3
    if not os.access(args.plumb, os.X_OK):
        say(f"policy_bench: {args.plumb} not found; cargo build --release")
        return 3
    if args.rules and run([args.plumb, "policy", "--help"], check=False).returncode != 0:
        say("policy_bench: this plumb has no `policy` command; use --rules 0")
        return 3

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    before = real_host_view()
    layouts = ("same", "spread") if args.layout == "both" else (args.layout,)
    benches: dict[str, Bench] = {}
    failures, interrupted = [], False
    t0 = time.monotonic()
    try:
        for layout in layouts:
            if benches:
                cleanup()  # the previous layout's namespaces, bridges and tables
            bench = benches[layout] = Bench(args, layout)
            bench.setup()
            for k in range(1, args.rounds + 1):
                bench.phase(f"small{k}", args.small, min(args.small, args.rules))
                bench.phase(f"large{k}", args.count, args.rules)
    except KeyboardInterrupt:
        interrupted = True
        say("\ninterrupted; cleaning up")
    except (BenchError, subprocess.TimeoutExpired) as e:
        failures.append(str(e))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for bench in benches.values():
            bench.stop_servers()
        try:
            cleanup()
        except BenchError as e:
            failures.append(str(e))
        after = real_host_view()
        if after["markers"] - before["markers"]:
            failures.append(f"real host ruleset now holds {after['markers'] - before['markers']}")
        if any(n.startswith("pl-" + NET) for n in after["links"] - before["links"]):
            failures.append("real host has a new pl-bench* link")
    if interrupted:
        return 130
    out = {layout: {"results": b.results, "checks": []} for layout, b in benches.items()}
    lines = []
    for layout, o in out.items():
        if "nft" in o["results"].get(f"large{args.rounds}", {}):
            o["pooled"] = {kind: pooled(o["results"], kind) for kind in ("small", "large")}
            o["checks"] = report(layout, o["pooled"]["small"], o["pooled"]["large"], args)
            lines.append(summary(layout, o["checks"]))
    if lines:
        say("\n== summary, large/small\n" + "\n".join(lines))
    brnf = next((b.bridge_nf for b in benches.values()), "?")
    say(f"bridge-nf-call-iptables in the fake host: {brnf} (1: bridged traffic meets the "
        f"forward chain too); total run {time.monotonic() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "bridge_nf_call_iptables": brnf,
                       "kernel": platform.release(), "layouts": out,
                       "failures": failures}, f, indent=2)
        say(f"wrote {args.json}")
    if failures:
        for msg in failures:
            say(f"!! {msg}")
        return 2
    if args.strict and any(c["verdict"] == "MISS" for o in out.values() for c in o["checks"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
