#!/usr/bin/env python3
"""Attach benchmark: plumb vs the CNI reference bridge plugin vs netavark.

What it measures
----------------
For N fresh container network namespaces (default 500) it attaches each one to
a NAT bridge network, one process per container, and times every invocation
with time.perf_counter() around posix_spawnp() and waitpid() (see `timed`):

  plumb     plumb --state-dir D --host-netns plumb-bench-host-plumb attach NS bench
            (no daemon: each process opens the store and does all the work)
  plumbd    the same command with `plumb daemon` running in its fake host:
            each process hands the attach to the daemon's warm engines
  plumbcni  plumb run as a CNI plugin (CNI_COMMAND=ADD, the configuration
            naming its network on stdin), as a runtime runs it; no daemon
  plumbcnid the same with `plumb daemon` running in its fake host
  cni       /usr/lib/cni/bridge (CNI_COMMAND=ADD, host-local IPAM, ipMasq)
  netavark  /usr/lib/podman/netavark --config D setup /run/netns/NS
            (static IPs handed out here, as Podman does; DNS off)

Each tool gets its own fake host, subnet (/16), bridge and fresh set of N
namespaces, created before timing starts (namespace creation is not timed).
Each tool runs alone: its N attaches, checks and teardown before the next
tool starts, so no tool's containers weigh on another's attaches. The tools
take --rounds (4) turns, in an order that rotates from round to round, and
each tool's numbers pool its rounds: on a shared VM the CPU's speed can
change by 2x within minutes, and one run per tool would compare a fast
minute with a slow one. (Taking turns per attach or per block would keep
the other tools' containers on the machine: their namespaces make some
kernel lookups slower for everyone, which is no cost of the tool measured.)
It also times `plumb up` of an N-attachment topology file in one process.

Per tool it prints the median per-attach time, the mean of the first and last
50 attaches and their ratio (growth with N), then plumb's medians relative to
the peers, checked against the targets (for plumb and plumbd each):
  plumb <= 0.2 x CNI bridge,  plumb <= 0.1 x netavark,  plumb last50/first50 <= 1.15
and for plumb as a CNI plugin: <= 0.15 x CNI bridge, last50/first50 <= 1.15

Isolation
---------
Everything runs inside fake "host" network namespaces, one per tool,
plumb-bench-host-TOOL (lo up, ip_forward=1), entered with
`nsenter --net=/run/netns/plumb-bench-host-TOOL`, so the real host's links,
routes and firewall tables are never touched, and no tool pays for the
firewall rules of another (iptables-nft reads the whole table on every call).
Deleting a fake host removes its bridge and every iptables/nft rule made
inside it; the script checks that the namespace is really gone and that the
real host's ruleset and links carry nothing of ours. Everything created is removed in a
`finally`, also on failure or Ctrl-C.

Run (as root, from the repository root)
---------------------------------------
  cargo build --release
  sudo bench/attach_bench.py                          # all tools, N=500
  sudo bench/attach_bench.py --count 60 --tools cni,netavark
  sudo bench/attach_bench.py --json bench.json --strict
  sudo bench/attach_bench.py --cleanup                # remove leftovers of a killed run

Exit status: 0 ok; 1 a target was missed and --strict was given; 2 a tool
failed or a verification failed; 3 bad usage or environment.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HOST_PREFIX = "plumb-bench-host-"
CNI_PATH = "/usr/lib/cni"
NETAVARK = "/usr/lib/podman/netavark"
WINDOW = 50  # size of the first/last window for the growth ratio

TARGET_VS_CNI = 0.2
TARGET_CNI_PLUGIN_VS_CNI = 0.15
TARGET_VS_NETAVARK = 0.1
TARGET_GROWTH = 1.15


@dataclass(frozen=True)
class Tool:
    name: str
    subnet: str
    ns_prefix: str
    bridge: str  # bridge name in the fake host, "" when the tool picks it
    short: str   # the fake host is plumb-bench-host-SHORT

    @property
    def host(self) -> str:
        return HOST_PREFIX + self.short

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    def ns_names(self, count: int) -> list[str]:
        return [f"{self.ns_prefix}{i}" for i in range(count)]


TOOLS = {
    "plumb": Tool("plumb", "10.77.0.0/16", "pb-plumb-", "", "plumb"),
    "plumbd": Tool("plumbd", "10.75.0.0/16", "pb-pd-", "", "pd"),
    "plumbcni": Tool("plumbcni", "10.74.0.0/16", "pb-pc-", "", "pc"),
    "plumbcnid": Tool("plumbcnid", "10.73.0.0/16", "pb-pcd-", "", "pcd"),
    "cni": Tool("cni", "10.78.0.0/16", "pb-cni-", "cni-bench0", "cni"),
    "netavark": Tool("netavark", "10.79.0.0/16", "pb-nv-", "nv-bench0", "nv"),
}
UP = Tool("plumb-up", "10.76.0.0/16", "pb-up-", "", "up")
OUR_NS = re.compile(
    r"^(plumb-bench-host-(plumb|pd|pc|pcd|cni|nv|up)|pb-(plumb|pd|pc|pcd|cni|nv|up)-\d+)$")
OUR_MARKERS = re.compile(r"CNI-|NETAVARK|cni-bench0|nv-bench0|10\.7[3-9]\.0\.0/16")


class BenchError(Exception):
    """A tool failed or a verification failed: reported loudly, exit 2."""


# ---------------------------------------------------------------- shell helpers


def release_binary():
    """target/<host tuple>/release/plumb: .cargo/config.toml names the target."""
    host = subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout
    tuple_ = next((l.split()[1] for l in host.splitlines() if l.startswith("host:")), "")
    return f"target/{tuple_}/release/plumb"


def run(cmd: list[str], *, check: bool = True, input: str | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, input=input, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise BenchError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                         f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def timed(cmd: list[str], *, input: str | None = None,
          env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Run cmd once; return (milliseconds, result). Only the child's life is
    timed: posix_spawnp to waitpid. Its stdin, stdout and stderr are files
    prepared before and read after, so no pipe, poll loop or decoding of
    the harness (subprocess.run adds 0.15-0.3 ms to every run here) counts
    against any tool."""
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout, \
            tempfile.TemporaryFile() as ferr:
        if input is not None:
            fin.write(input.encode())
            fin.seek(0)
        actions = [(os.POSIX_SPAWN_DUP2, fin.fileno(), 0),
                   (os.POSIX_SPAWN_DUP2, fout.fileno(), 1),
                   (os.POSIX_SPAWN_DUP2, ferr.fileno(), 2)]
        environ = os.environ if env is None else env
        t0 = time.perf_counter()
        pid = os.posix_spawnp(cmd[0], cmd, environ, file_actions=actions)
        _, status = os.waitpid(pid, 0)
        ms = (time.perf_counter() - t0) * 1000.0
        fout.seek(0)
        ferr.seek(0)
        out = fout.read().decode(errors="replace")
        err = ferr.read().decode(errors="replace")
    return ms, subprocess.CompletedProcess(cmd, os.waitstatus_to_exitcode(status), out, err)


def in_host(host: str, cmd: list[str]) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{host}", *cmd]


def say(msg: str = "") -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------ namespaces

def netns_list() -> set[str]:
    out = run(["ip", "netns", "list"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def netns_add_many(names: list[str]) -> None:
    if names:
        run(["ip", "-batch", "-"], input="".join(f"netns add {n}\n" for n in names))


def netns_del_many(names: list[str]) -> None:
    """Delete the given named namespaces; missing ones are ignored."""
    present = netns_list()
    doomed = [n for n in names if n in present]
    if doomed:
        run(["ip", "-force", "-batch", "-"], check=False,
            input="".join(f"netns del {n}\n" for n in doomed))


def netns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


def netns_holders(inode: int) -> list[int]:
    """PIDs whose network namespace is the one with this inode."""
    pids = []
    want = f"net:[{inode}]"
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.readlink(f"/proc/{pid}/ns/net") == want:
                    pids.append(int(pid))
            except OSError:
                pass
    return pids


class Resources:
    """Everything the run creates, so `finally` can remove it."""

    def __init__(self) -> None:
        self.namespaces: list[str] = []
        self.tmpdirs: list[str] = []
        self.daemons: list[subprocess.Popen] = []

    def add_namespaces(self, names: list[str]) -> None:
        self.namespaces.extend(names)
        netns_add_many(names)

    def tmpdir(self, tag: str) -> str:
        d = tempfile.mkdtemp(prefix=f"plumb-bench-{tag}-")
        self.tmpdirs.append(d)
        return d

    def drop_namespaces(self, names: list[str]) -> None:
        netns_del_many(names)
        gone = set(names)
        self.namespaces = [n for n in self.namespaces if n not in gone]

    def stop_daemons(self) -> None:
        """SIGTERM every daemon started, then wait: a fake host is deleted
        only once nothing holds it."""
        for d in self.daemons:
            d.terminate()
        for d in self.daemons:
            try:
                d.wait(timeout=10)
            except subprocess.TimeoutExpired:
                d.kill()
                d.wait()
        self.daemons.clear()

    def cleanup(self) -> None:
        self.stop_daemons()
        # container namespaces first (destroys their veths), the fake hosts last
        netns_del_many(hosts_last(self.namespaces))
        self.namespaces.clear()
        for d in self.tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
        self.tmpdirs.clear()


def hosts_last(names: list[str]) -> list[str]:
    """Deletion order: containers first (their veths go with them), then the
    fake hosts."""
    return sorted(names, key=lambda n: n.startswith(HOST_PREFIX))


# ------------------------------------------------------------------- fake host

def create_fake_host(res: Resources, host: str) -> None:
    res.add_namespaces([host])
    run(["ip", "-n", host, "link", "set", "lo", "up"])
    run(in_host(host, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]))


def fake_host_firewall(host: str) -> dict:
    """Which firewall state exists in a fake host (for the report)."""
    nft = run(in_host(host, ["nft", "-j", "list", "ruleset"]), check=False)
    tables, rules = [], 0
    if nft.returncode == 0 and nft.stdout.strip():
        for obj in json.loads(nft.stdout).get("nftables", []):
            if "table" in obj:
                tables.append(f"{obj['table']['family']} {obj['table']['name']}")
            rules += "rule" in obj
    legacy = run(in_host(host, ["iptables-legacy-save"]), check=False).stdout \
        if shutil.which("iptables-legacy-save") else ""
    legacy_rules = sum(1 for line in legacy.splitlines() if line.startswith("-A"))
    return {"nft_tables": tables, "nft_rules": rules, "iptables_legacy_rules": legacy_rules}


def destroy_fake_host(res: Resources, host: str) -> None:
    """Delete a fake host and check that the namespace (and so every rule,
    bridge and veth end inside it) is really gone."""
    inode = netns_inode(host)
    res.drop_namespaces([host])
    if host in netns_list():
        raise BenchError(f"{host} still listed after `ip netns del`")
    holders = netns_holders(inode)
    if holders:
        raise BenchError(f"{host} deleted but still held by pids {holders}: "
                         "its firewall state would live on")


def real_host_snapshot() -> dict:
    """Read-only view of the real host, to prove the run did not touch it."""
    nft = run(["nft", "list", "ruleset"], check=False).stdout
    ipt = run(["iptables-save"], check=False).stdout if shutil.which("iptables-save") else ""
    links = run(["ip", "-o", "link", "show"]).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
    ruleset = nft + ipt
    return {"ruleset_sha": hashlib.sha256(ruleset.encode()).hexdigest(),
            "markers": sorted(set(OUR_MARKERS.findall(ruleset))),
            "links": names}


def check_real_host(before: dict, after: dict) -> list[str]:
    problems = []
    if after["markers"]:
        problems.append(f"real host ruleset contains our markers: {after['markers']}")
    ours = {n for n in after["links"] - before["links"]
            if n in ("cni-bench0", "nv-bench0") or n.startswith(("veth", "pb"))}
    if ours:
        problems.append(f"real host has new links that look like ours: {sorted(ours)}")
    if before["ruleset_sha"] != after["ruleset_sha"] and not after["markers"]:
        say("  note: the real host's ruleset changed during the run, but carries "
            "nothing of ours (another process?)")
    return problems


# ---------------------------------------------------------------- verification

def container_ipv4(ns: str) -> str | None:
    out = run(["ip", "-n", ns, "-j", "-4", "addr", "show", "dev", "eth0"], check=False)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    for link in json.loads(out.stdout):
        for a in link.get("addr_info", []):
            if a.get("family") == "inet":
                return f"{a['local']}/{a['prefixlen']}"
    return None


def default_gateway(ns: str) -> str | None:
    out = run(["ip", "-n", ns, "-j", "-4", "route", "show", "default"], check=False)
    routes = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []
    return routes[0].get("gateway") if routes else None


def verify(tool: Tool, names: list[str]) -> list[str]:
    """For the first, middle and last container: an IPv4 address on eth0 inside
    the tool's subnet, and a ping to the bridge gateway that answers."""
    problems = []
    subnet = ipaddress.ip_network(tool.subnet)
    existing = netns_list()
    for ns in sorted({names[0], names[len(names) // 2], names[-1]}, key=names.index):
        if ns not in existing:
            problems.append(f"{tool.name}: {ns}: namespace does not exist")
            continue
        addr = container_ipv4(ns)
        if addr is None:
            problems.append(f"{tool.name}: {ns}: no IPv4 address on eth0")
            continue
        if ipaddress.ip_interface(addr).ip not in subnet:
            problems.append(f"{tool.name}: {ns}: eth0 has {addr}, outside {tool.subnet}")
        gw = default_gateway(ns) or tool.gateway
        # Up to three tries: on a loaded VM one echo (and the ARP before it)
        # can miss a 1 s deadline, and the check is of reachability.
        ping = run(["ip", "netns", "exec", ns, "ping", "-c3", "-i0.2", "-W2", gw], check=False)
        if ping.returncode != 0:
            problems.append(f"{tool.name}: {ns} ({addr}): ping to gateway {gw} failed")
    return problems


# --------------------------------------------------------------- the three tools

def plumb_cmd(plumb: str, state: str, host: str, *args: str) -> list[str]:
    return [plumb, "--state-dir", state, "--host-netns", host, *args]


def plumb_prepare(ctx: "Ctx", tool: Tool, daemon: tuple[str, str] | None = None):
    """plumb alone: no daemon answers on its socket (a path where nothing
    listens), so every attach process does all the work itself. With
    `daemon` (its state directory and socket), the attaches go to it: a
    daemon serves only the state directory it was started with."""
    if daemon:
        state, socket = daemon
    else:
        state = ctx.res.tmpdir("plumb-state")
        socket = os.path.join(state, "no-daemon.sock")
    run(plumb_cmd(ctx.plumb, state, tool.host, "--socket", socket, "network", "create",
                  "bench", "--driver", "bridge", "--subnet", tool.subnet, "--mode", "nat"))

    def attach(i: int, ns: str) -> tuple[float, str | None]:
        ms, p = timed(plumb_cmd(ctx.plumb, state, tool.host, "--socket", socket,
                                "attach", ns, "bench"))
        return ms, None if p.returncode == 0 else p.stderr.strip() or p.stdout.strip()
    return attach


def start_daemon(ctx: "Ctx", tool: Tool, state: str, socket: str) -> None:
    """`plumb daemon` in the tool's fake host, serving `state` on `socket`."""
    log = open(os.path.join(state, "daemon.log"), "w")
    daemon = subprocess.Popen(plumb_cmd(ctx.plumb, state, tool.host, "--socket", socket,
                                        "daemon"), stdout=subprocess.DEVNULL, stderr=log,
                              env=dict(os.environ, PLUMB_LOG="info"))
    ctx.res.daemons.append(daemon)
    deadline = time.monotonic() + 10
    while not os.path.exists(socket):
        if daemon.poll() is not None or time.monotonic() > deadline:
            with open(log.name) as f:
                raise BenchError(f"plumb daemon did not start: {f.read().strip()}")
        time.sleep(0.05)
    ctx.daemon_logs[tool.name] = log.name


def plumbcni_prepare(ctx: "Ctx", tool: Tool):
    """plumb run as a CNI plugin, one process per ADD as a runtime runs it;
    for plumbcnid, with `plumb daemon` serving the same state."""
    state = ctx.res.tmpdir(f"{tool.name}-state")
    socket = os.path.join(state, "plumbd.sock" if tool.name == "plumbcnid" else "no-daemon.sock")
    run(plumb_cmd(ctx.plumb, state, tool.host, "--socket", socket, "network", "create",
                  "bench", "--driver", "bridge", "--subnet", tool.subnet, "--mode", "nat"))
    if tool.name == "plumbcnid":
        start_daemon(ctx, tool, state, socket)
        wait_quiet()
    conf = json.dumps({"cniVersion": "1.0.0", "name": "benchplumb", "type": "plumb",
                       "network": "bench", "stateDir": state, "socket": socket})
    cmd = in_host(tool.host, [ctx.plumb])
    return lambda i, ns: cni_add(cmd, conf, ns)


def cni_add(cmd: list[str], conf: str, ns: str) -> tuple[float, str | None]:
    """One CNI ADD of namespace `ns` by plugin `cmd`, as a runtime runs it:
    its time, and what is wrong with its answer (None: an address)."""
    env = dict(os.environ, CNI_COMMAND="ADD", CNI_CONTAINERID=f"bench-{ns}",
               CNI_NETNS=f"/run/netns/{ns}", CNI_IFNAME="eth0", CNI_PATH=CNI_PATH)
    ms, p = timed(cmd, input=conf, env=env)
    if p.returncode != 0:
        return ms, p.stdout.strip() or p.stderr.strip()
    try:
        ips = json.loads(p.stdout).get("ips") or []
    except json.JSONDecodeError:
        return ms, f"result is not JSON: {p.stdout[:200]!r}"
    return ms, None if ips and ips[0].get("address") else f"no IP in result: {p.stdout[:200]!r}"


def plumbd_prepare(ctx: "Ctx", tool: Tool):
    """plumb with `plumb daemon` running in the fake host: each `plumb
    attach` process hands its attach to the daemon's warm engines."""
    state = ctx.res.tmpdir("plumbd-state")
    socket = os.path.join(state, "plumbd.sock")
    start_daemon(ctx, tool, state, socket)
    attach = plumb_prepare(ctx, tool, daemon=(state, socket))
    wait_quiet()  # the daemon's start-up (restore, first reconcile) is not an attach's
    return attach


def daemon_did_attaches(log: str, count: int) -> list[str]:
    """The daemon, not the attach processes, did every attach: one
    `attached` line each in its log (info level)."""
    with open(log) as f:
        done = sum(1 for line in f if " attached " in line)
    return [] if done == count else [
        f"the daemon logged {done} attaches of {count}: the others were done without it"]


def cni_prepare(ctx: "Ctx", tool: Tool):
    ipam_dir = ctx.res.tmpdir("cni-ipam")
    conf = json.dumps({
        "cniVersion": "1.0.0", "name": "benchcni", "type": "bridge",
        "bridge": tool.bridge, "isGateway": True, "ipMasq": True,
        "ipam": {"type": "host-local", "subnet": tool.subnet, "dataDir": ipam_dir},
    })
    cmd = in_host(tool.host, [f"{CNI_PATH}/bridge"])
    return lambda i, ns: cni_add(cmd, conf, ns)


def netavark_prepare(ctx: "Ctx", tool: Tool):
    config = ctx.res.tmpdir("netavark")
    net = ipaddress.ip_network(tool.subnet)
    ips = (str(ip) for ip in net.hosts() if str(ip) != tool.gateway)
    network_info = {"bench": {
        "name": "bench", "id": hashlib.sha256(b"plumb-bench").hexdigest(),
        "driver": "bridge", "network_interface": tool.bridge,
        "subnets": [{"subnet": tool.subnet, "gateway": tool.gateway}],
        "ipv6_enabled": False, "internal": False, "dns_enabled": False,
    }}
    # NETAVARK_FW pins the iptables driver: with firewalld running on the real
    # host, netavark would otherwise configure firewalld over D-Bus (global).
    env = dict(os.environ, NETAVARK_FW="iptables")

    def attach(i: int, ns: str) -> tuple[float, str | None]:
        opts = json.dumps({
            "container_id": hashlib.sha256(ns.encode()).hexdigest(),
            "container_name": ns,
            "networks": {"bench": {"interface_name": "eth0", "static_ips": [next(ips)]}},
            "network_info": network_info,
        })
        ms, p = timed(in_host(tool.host,
                              [NETAVARK, "--config", config, "setup", f"/run/netns/{ns}"]),
                      input=opts, env=env)
        if p.returncode != 0:
            return ms, p.stderr.strip() or p.stdout.strip()
        return ms, None if '"ipnet"' in p.stdout else f"no ipnet in result: {p.stdout[:200]!r}"
    return attach


PREPARE = {"plumb": plumb_prepare, "plumbd": plumbd_prepare, "plumbcni": plumbcni_prepare,
           "plumbcnid": plumbcni_prepare, "cni": cni_prepare, "netavark": netavark_prepare}


# ------------------------------------------------------------------ statistics

def pool(runs: list[list[float]]) -> dict:
    """One tool's rounds together: median, p90 and max over every attach;
    the first and last windows averaged over the rounds (growth with N), and
    each round's median and growth."""
    w = min(WINDOW, max(1, len(runs[0]) // 2))
    every = sorted(ms for run in runs for ms in run)
    first = statistics.fmean(ms for run in runs for ms in run[:w])
    last = statistics.fmean(ms for run in runs for ms in run[-w:])
    return {
        "count": len(runs[0]),
        "rounds": len(runs),
        "median_ms": statistics.median(every),
        "p90_ms": every[min(len(every) - 1, int(0.9 * len(every)))],
        "max_ms": every[-1],
        "window": w,
        "first_mean_ms": first,
        "last_mean_ms": last,
        "growth": last / first,
        "round_medians_ms": [statistics.median(run) for run in runs],
        "round_growth": [statistics.fmean(run[-w:]) / statistics.fmean(run[:w]) for run in runs],
        "samples_ms": runs,
    }


def cpu_busy_fraction(interval: float) -> float:
    """Share of all CPUs busy over `interval` seconds, from /proc/stat."""
    def sample():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + vals[4]  # idle + iowait
        return idle, sum(vals)
    i0, t0 = sample()
    time.sleep(interval)
    i1, t1 = sample()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(limit_s: float = 30.0, busy_max: float = 0.10) -> float:
    """Wait until the machine is idle, so that the kernel's deferred work from
    the previous phase (cleanup of deleted namespaces, MLD/DAD on old links)
    does not land in this phase's timings. Returns seconds waited."""
    start = time.monotonic()
    calm = 0
    while time.monotonic() - start < limit_s:
        calm = calm + 1 if cpu_busy_fraction(0.5) < busy_max else 0
        if calm >= 2:
            break
    else:
        say(f"  note: machine still busy after {limit_s:.0f} s; timing anyway")
    return time.monotonic() - start


def spawn_floor(host: str, reps: int = 30) -> dict:
    """What merely starting a process costs here, with and without nsenter."""
    plain = [timed(["true"])[0] for _ in range(reps)]
    nsent = [timed(in_host(host, ["true"]))[0] for _ in range(reps)]
    return {"true_ms": statistics.median(plain), "nsenter_true_ms": statistics.median(nsent)}


# --------------------------------------------------------------------- phases

@dataclass
class Ctx:
    count: int
    rounds: int
    plumb: str
    res: Resources = field(default_factory=Resources)
    results: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    failed: set = field(default_factory=set)  # names of the phases that failed
    daemon_logs: dict = field(default_factory=dict)  # tool name -> its daemon's log file


def bench_tools(ctx: Ctx, tools: list[Tool]) -> None:
    """--rounds turns; in each, every tool (in an order rotating with the
    round) runs alone. A tool that fails takes no more turns."""
    runs: dict[str, list[list[float]]] = {t.name: [] for t in tools}
    for r in range(ctx.rounds):
        k = r % len(tools)
        for t in tools[k:] + tools[:k]:
            if t.name not in ctx.failed:
                bench_tool(ctx, t, r + 1, runs[t.name])
    for t in tools:
        if t.name not in ctx.failed and runs[t.name]:
            ctx.results[t.name] = pool(runs[t.name]) | ctx.results.get(t.name, {})


def bench_tool(ctx: Ctx, tool: Tool, round_no: int, runs: list[list[float]]) -> None:
    """A fresh fake host and N fresh namespaces, N timed attaches, verify,
    tear down; appends the samples to `runs`."""
    say(f"\n== {tool.name}, round {round_no}/{ctx.rounds}: {ctx.count} attaches to "
        f"{tool.subnet}")
    names = tool.ns_names(ctx.count)
    create_fake_host(ctx.res, tool.host)
    try:
        ctx.res.add_namespaces(names)
        waited = wait_quiet()
        floor = spawn_floor(tool.host)
        attach = PREPARE[tool.name](ctx, tool)
        samples = []
        for i, ns in enumerate(names):
            ms, err = attach(i, ns)
            if err is not None:
                raise BenchError(f"{tool.name}: attach #{i} ({ns}) failed: {err}")
            samples.append(ms)
            if (i + 1) % 100 == 0:
                say(f"  {i + 1}/{ctx.count}  median so far {statistics.median(samples):.2f} ms")
        problems = verify(tool, names)
        if tool.name in ctx.daemon_logs:
            problems += daemon_did_attaches(ctx.daemon_logs.pop(tool.name), len(names))
        if problems:
            raise BenchError("verification failed:\n  " + "\n  ".join(problems))
        fw = fake_host_firewall(tool.host)
        runs.append(samples)
        ctx.results[tool.name] = dict(firewall=fw, spawn_floor=floor, settle_s=waited)
        say(f"  median {statistics.median(samples):.2f} ms; verified; fake host firewall: "
            f"nft tables {fw['nft_tables']}, {fw['nft_rules']} nft rules, "
            f"{fw['iptables_legacy_rules']} iptables-legacy rules")
    except BenchError as e:
        fail(ctx, tool.name, str(e))
    finally:
        ctx.res.stop_daemons()
        ctx.res.drop_namespaces(names)
        destroy_fake_host(ctx.res, tool.host)


def fail(ctx: Ctx, tool: str, why: str) -> None:
    ctx.failures.append(why)
    ctx.failed.add(tool)
    say(f"  FAILED: {why}")


def topology_toml(count: int) -> str:
    parts = ['[[network]]\nname = "benchup"\ndriver = "bridge"\nmode = "nat"\n'
             f'subnet = ["{UP.subnet}"]\n']
    names = UP.ns_names(count)
    parts += [f'[[namespace]]\nname = "{n}"\n' for n in names]
    parts += [f'[[attach]]\ntarget = "{n}"\nnetwork = "benchup"\n' for n in names]
    return "\n".join(parts)


def bench_up(ctx: Ctx) -> None:
    """`plumb up` of an N-attachment topology in one process, timed once."""
    say(f"\n== plumb up: {ctx.count} namespaces + attaches in one process")
    names = UP.ns_names(ctx.count)
    clash = set(names) & netns_list()
    if clash:
        ctx.failures.append(f"plumb up: namespaces already exist: {sorted(clash)[:5]}")
        ctx.failed.add("plumb-up")
        return
    create_fake_host(ctx.res, UP.host)
    ctx.res.namespaces.extend(names)  # plumb creates them; we make sure they go
    try:
        state = ctx.res.tmpdir("plumb-up-state")
        topo = os.path.join(ctx.res.tmpdir("plumb-up-topo"), "bench.toml")
        with open(topo, "w") as f:
            f.write(topology_toml(ctx.count))
        wait_quiet()
        ms, p = timed(plumb_cmd(ctx.plumb, state, UP.host, "up", topo))
        if p.returncode != 0:
            raise BenchError(f"plumb up failed ({p.returncode}): {p.stderr.strip()}")
        problems = verify(UP, names)
        if problems:
            raise BenchError("verification failed:\n  " + "\n  ".join(problems))
        ctx.results["plumb-up"] = {"count": ctx.count, "total_ms": ms,
                                   "per_attach_ms": ms / ctx.count}
        down = run(plumb_cmd(ctx.plumb, state, UP.host, "down", topo), check=False)
        left = set(names) & netns_list()
        if down.returncode != 0:
            raise BenchError(f"plumb down failed ({down.returncode}): {down.stderr.strip()}")
        if left:
            raise BenchError(f"plumb down left {len(left)} namespaces behind, "
                             f"e.g. {sorted(left)[:3]}")
    except BenchError as e:
        fail(ctx, "plumb-up", str(e))
    finally:
        ctx.res.drop_namespaces(names)
        destroy_fake_host(ctx.res, UP.host)


# --------------------------------------------------------------------- report

def target_rows(results: dict) -> list[tuple[str, float | None, float, str]]:
    """(label, value, limit, PASS/MISS/n/a) for each target."""
    def med(name):
        return results.get(name, {}).get("median_ms")
    c, n = med("cni"), med("netavark")
    rows = []
    for name in ("plumb", "plumbd"):
        p = med(name)
        if p is None and name == "plumbd":
            continue
        rows += [
            (f"{name} / cni median", p / c if p and c else None, TARGET_VS_CNI),
            (f"{name} / netavark median", p / n if p and n else None, TARGET_VS_NETAVARK),
            (f"{name} last/first", results.get(name, {}).get("growth"), TARGET_GROWTH),
        ]
    for name in ("plumbcni", "plumbcnid"):
        p = med(name)
        if p is None:
            continue
        rows += [
            (f"{name} / cni median", p / c if c else None, TARGET_CNI_PLUGIN_VS_CNI),
            (f"{name} last/first", results.get(name, {}).get("growth"), TARGET_GROWTH),
        ]
    return [(label, v, lim, "n/a" if v is None else ("PASS" if v <= lim else "MISS"))
            for label, v, lim in rows]


def report(ctx: Ctx, skipped: dict) -> list:
    say("\n== results (ms per attach, one process per container)")
    say(f"{'tool':<10}{'count':>7}{'median':>9}{'p90':>9}{'max':>9}"
        f"{'first':>9}{'last':>9}{'last/first':>12}")
    for name in TOOLS:
        r = ctx.results.get(name)
        # A tool that failed in a later round has a first round's partial
        # result: it failed all the same.
        if name in ctx.failed:
            say(f"{name:<10}  FAILED (see below)")
        elif r:
            say(f"{name:<10}{r['count']:>7}{r['median_ms']:>9.2f}{r['p90_ms']:>9.2f}"
                f"{r['max_ms']:>9.2f}{r['first_mean_ms']:>9.2f}{r['last_mean_ms']:>9.2f}"
                f"{r['growth']:>12.3f}")
        elif name in skipped:
            say(f"{name:<10}  SKIPPED: {skipped[name]}")
    if ctx.results:
        per_tool = [r for r in ctx.results.values() if "window" in r]
        if per_tool:
            say(f"(first/last = mean of the first/last {per_tool[0]['window']} attaches of "
                f"each round; every number pools {per_tool[0]['rounds']} rounds)")
        for name, r in ctx.results.items():
            if "round_medians_ms" in r:
                say(f"  {name:<10} per round: median "
                    + " / ".join(f"{m:.2f}" for m in r["round_medians_ms"])
                    + " ms, last/first " + " / ".join(f"{g:.3f}" for g in r["round_growth"]))
        floor = per_tool[0]["spawn_floor"] if per_tool else None
        if floor:
            say(f"process spawn floor: `true` {floor['true_ms']:.2f} ms, "
                f"`nsenter --net=... true` {floor['nsenter_true_ms']:.2f} ms "
                "(the peers run under nsenter, plumb uses --host-netns)")
    up = ctx.results.get("plumb-up")
    if up:
        say(f"plumb up: {up['count']} attaches in {up['total_ms']:.1f} ms "
            f"= {up['per_attach_ms']:.3f} ms per attach")
    elif "plumb-up" in ctx.failed:
        say("plumb up  FAILED (see below)")
    elif "plumb-up" in skipped:
        say(f"plumb up  SKIPPED: {skipped['plumb-up']}")
    rows = target_rows(ctx.results)
    say("\n== targets")
    for label, v, lim, verdict in rows:
        val = "-" if v is None else f"{v:.3f}"
        say(f"  {label:<26}{val:>8}  (target <= {lim})  {verdict}")
    return rows


def write_json(path: str, ctx: Ctx, rows: list, skipped: dict) -> None:
    doc = {
        "count": ctx.count,
        "kernel": platform.release(),
        "results": ctx.results,
        "skipped": skipped,
        "failures": ctx.failures,
        "targets": [{"target": l, "value": v, "limit": lim, "verdict": vd}
                    for l, v, lim, vd in rows],
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    say(f"wrote {path}")


# ----------------------------------------------------------------------- main

def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=500, help="containers per tool (default 500)")
    ap.add_argument("--rounds", type=int, default=4,
                    help="turns of every tool, pooled (default 4)")
    ap.add_argument("--tools", default="plumb,plumbd,plumbcni,plumbcnid,cni,netavark",
                    help="comma-separated subset of plumb,plumbd,plumbcni,plumbcnid,cni,netavark")
    ap.add_argument("--plumb", default=release_binary(), help="plumb binary")
    ap.add_argument("--no-up", action="store_true", help="skip the `plumb up` timing")
    ap.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument("--cleanup", action="store_true",
                    help="only remove namespaces left by a killed run, then exit")
    args = ap.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in args.tools if t not in TOOLS]
    if unknown:
        ap.error(f"unknown tools {unknown}; choose from {list(TOOLS)}")
    if not 2 <= args.count <= 60000:
        ap.error("--count must be between 2 and 60000")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    return args


def missing_reason(name: str, plumb: str) -> str | None:
    binary = {"plumb": plumb, "plumbd": plumb, "plumbcni": plumb, "plumbcnid": plumb,
              "cni": f"{CNI_PATH}/bridge",
              "netavark": NETAVARK}[name]
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        return f"{binary} not found or not executable"
    if name == "cni" and not os.access(f"{CNI_PATH}/host-local", os.X_OK):
        return f"{CNI_PATH}/host-local not found"
    return None


def install_signal_handlers() -> None:
    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        say("attach_bench: must run as root (it creates network namespaces)")
        return 3
    for exe in ("ip", "nsenter", "ping", "nft", "sysctl"):
        if not shutil.which(exe):
            say(f"attach_bench: `{exe}` not found in PATH")
            return 3
    ours = sorted(n for n in netns_list() if OUR_NS.match(n))
    if args.cleanup:
        netns_del_many(hosts_last(ours))
        say(f"removed {len(ours)} leftover namespaces" if ours else "nothing to clean up")
        return 0
    if ours:
        say(f"attach_bench: leftover namespaces from an earlier run ({ours[:3]}...); "
            "run with --cleanup first")
        return 3

    args.plumb = os.path.abspath(args.plumb)
    skipped = {}
    for name in args.tools:
        reason = missing_reason(name, args.plumb)
        if reason:
            skipped[name] = reason
            say(f"SKIPPING {name}: {reason}")
    if "plumb" not in args.tools:
        skipped["plumb-up"] = "plumb not in --tools"
    elif args.no_up:
        skipped["plumb-up"] = "--no-up"
    elif "plumb" in skipped:
        skipped["plumb-up"] = skipped["plumb"]
        say(f"SKIPPING plumb up: {skipped['plumb-up']}")

    install_signal_handlers()
    ctx = Ctx(count=args.count, rounds=args.rounds, plumb=args.plumb)
    before = real_host_snapshot()
    interrupted = False
    try:
        tools = [TOOLS[name] for name in args.tools if name not in skipped]
        if tools:
            bench_tools(ctx, tools)
        if "plumb-up" not in skipped:
            bench_up(ctx)
    except KeyboardInterrupt:
        interrupted = True
        say("\ninterrupted; cleaning up")
    except BenchError as e:
        ctx.failures.append(str(e))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ctx.res.cleanup()
        left = sorted(n for n in netns_list() if OUR_NS.match(n))
        if left:
            ctx.failures.append(f"namespaces left behind: {left[:5]}")
        ctx.failures += check_real_host(before, real_host_snapshot())
    if interrupted:
        return 130

    rows = report(ctx, skipped)
    if args.json:
        write_json(args.json, ctx, rows, skipped)
    if ctx.failures:
        say("\n!! FAILURES")
        for f in ctx.failures:
            say(f"!! {f}")
        return 2
    if args.strict and any(vd == "MISS" for *_, vd in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
