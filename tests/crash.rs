//! Crash recovery: a plumb process SIGKILLed at any point of an attach, a
//! detach, a network create or removal or a host route change leaves
//! nothing that the next plumb command, `plumb gc`, or the daemon (at its
//! start and in its reconcile loop) does not undo or finish. The
//! failpoints of a debug build (`PLUMB_FAILPOINT=N` kills the process at
//! the Nth, `PLUMB_FAILPOINT_TRACE=FILE` lists them) give every point of
//! each operation in turn: bridge (nat, bridged with an uplink, with egress
//! routing), macvlan and host-device networks, DHCP attaches in the daemon,
//! and recoveries themselves killed half way. One test kills 300 attaches
//! at random moments instead.
//!
//! After every recovery [`assert_consistent`] checks that the store and the
//! kernel agree link for link, address for address and set element for set
//! element, and that no intent is left.
//!
//! The tests of kills fail without recovery (checked by disabling
//! `Engine::recover` and `Engine::sweep_orphans`: intents and what they
//! cover are left), except the DHCP one, which relies on the daemon
//! removing at its start the DHCP attachments a killed daemon left
//! acquiring (complete since the record is committed before the interface
//! is made). Two tests are about what the crash tests ran into: a host
//! route plumb never made is never plumb's to delete, and a detach through
//! the daemon lets its host port go.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Lab, links, must, wait_until};
use serde_json::Value;

// ---------------------------------------------------------------------
// Running plumb under failpoints

static TRACES: AtomicUsize = AtomicUsize::new(0);

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run `plumb args` to the end with a failpoint trace; it must succeed.
/// Returns the names of the failpoints it passed, in order (point k is
/// element k-1).
fn trace(lab: &Lab, args: &[&str]) -> Vec<String> {
    let file = lab
        .state
        .path()
        .join(format!("trace-{}", TRACES.fetch_add(1, Ordering::SeqCst)));
    let out = lab
        .command(args)
        .env("PLUMB_FAILPOINT_TRACE", &file)
        .output()
        .expect("run plumb");
    assert!(
        out.status.success(),
        "traced plumb {args:?} failed: {}",
        stderr(&out)
    );
    let points: Vec<String> = read_trace(&file)
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    let _ = std::fs::remove_file(&file);
    eprintln!("plumb {}: failpoints {points:?}", args.join(" "));
    points
}

/// The failpoint names of a trace file, checking that they are numbered
/// 1, 2, 3, ...
fn read_trace(file: &std::path::Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let (n, name) = line.split_once(' ').expect("trace line: N NAME");
            assert_eq!(n, (i + 1).to_string(), "trace numbering: {text}");
            (i + 1, name.to_string())
        })
        .collect()
}

/// Run `plumb args` with `PLUMB_FAILPOINT=k`: it must die by SIGKILL, at
/// the failpoint the trace named (the trace of the killed run ends there).
fn killed_at(lab: &Lab, args: &[&str], k: usize, name: &str) -> Output {
    let file = lab
        .state
        .path()
        .join(format!("trace-{}", TRACES.fetch_add(1, Ordering::SeqCst)));
    let out = lab
        .command(args)
        .env("PLUMB_FAILPOINT", k.to_string())
        .env("PLUMB_FAILPOINT_TRACE", &file)
        .output()
        .expect("run plumb");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "plumb {args:?} with PLUMB_FAILPOINT={k} ({name}) should have been killed, but: {} {}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    let points = read_trace(&file);
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        points.last().map(|(n, p)| (*n, without_veth_names(p))),
        Some((k, without_veth_names(name))),
        "plumb {args:?} killed at {k}: not the point its trace named (passed {points:?})"
    );
    eprintln!("killed: plumb {} at {k} ({name})", args.join(" "));
    out
}

/// A failpoint's name with plumb's host veth names (`pv` and 12 hex
/// digits, which follow the namespace's identity) as `pv…`: a namespace
/// made again between the trace and the kill names its veth anew.
fn without_veth_names(name: &str) -> String {
    name.split(' ')
        .map(|w| if is_plumb_veth(w) { "pv…" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What every kill-at-each-point loop does first: run `args` killed at
/// failpoint `k` of `points` (every point but the last must leave an
/// intent), recover with `gc`, check the invariants for `containers`.
/// Returns the kill's description, for the caller's own checks.
fn kill_and_recover(
    lab: &Lab,
    label: &str,
    args: &[&str],
    points: &[String],
    k: usize,
    containers: &[&str],
) -> String {
    let what = format!("{label} killed at {k} ({})", points[k - 1]);
    killed_at(lab, args, k, &points[k - 1]);
    if k < points.len() {
        assert_left_an_intent(lab, &what);
    }
    gc(lab, &what);
    assert_consistent(lab, containers);
    what
}

/// What the kill left must be something to recover (until the last
/// commit, which ends every operation).
fn assert_left_an_intent(lab: &Lab, what: &str) {
    assert!(
        !intents(lab).is_empty(),
        "{what}: the killed process left no intent, so this point tests nothing"
    );
}

fn gc(lab: &Lab, what: &str) -> String {
    let out = lab.plumb(&["gc"]);
    assert!(
        out.status.success(),
        "{what}: plumb gc failed ({}): {}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

// ---------------------------------------------------------------------
// What the store says

/// Rows of the `intents` table, read straight from the SQLite file.
fn intents(lab: &Lab) -> Vec<String> {
    let path = lab.state.path().join("plumb.db");
    if !path.exists() {
        return Vec::new();
    }
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open plumb.db read-only");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut stmt = conn
        .prepare("SELECT subject, key, action, holder FROM intents")
        .expect("the intents table");
    stmt.query_map([], |r| {
        Ok(format!(
            "{} {} {} (holder {})",
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?
        ))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

#[derive(Debug, Clone)]
struct StoredAttachment {
    network: String,
    target: String,
    ifname: String,
    host_ifname: String,
    mac: String,
    addresses: Vec<String>,
    guarded: bool,
    ports: Vec<String>,
    labels: BTreeMap<String, String>,
}

impl StoredAttachment {
    fn v4(&self) -> Vec<String> {
        self.addresses
            .iter()
            .filter(|a| !a.contains(':'))
            .map(|a| a.split('/').next().unwrap().to_string())
            .collect()
    }
}

#[derive(Debug, Clone)]
struct StoredNetwork {
    name: String,
    driver: String,
    bridge: Option<String>,
    uplink: Option<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().expect("string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn stored_attachments(lab: &Lab) -> Vec<StoredAttachment> {
    let v: Value = serde_json::from_str(&lab.ok(&["ls", "--json"])).expect("ls --json");
    v.as_array()
        .expect("ls --json: an array")
        .iter()
        .map(|a| StoredAttachment {
            network: a["NetworkName"].as_str().unwrap().into(),
            target: a["Target"].as_str().unwrap().into(),
            ifname: a["IfName"].as_str().unwrap().into(),
            host_ifname: a["HostIfName"].as_str().unwrap().into(),
            mac: a["MacAddress"].as_str().unwrap().to_lowercase(),
            addresses: strings(&a["Addresses"]),
            guarded: a["AntiSpoofing"].as_bool().unwrap(),
            ports: strings(&a["Ports"]),
            labels: a["Labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

fn stored_networks(lab: &Lab) -> Vec<StoredNetwork> {
    let v: Value =
        serde_json::from_str(&lab.ok(&["network", "ls", "--json"])).expect("network ls --json");
    v.as_array()
        .expect("network ls --json: an array")
        .iter()
        .map(|n| StoredNetwork {
            name: n["Name"].as_str().unwrap().into(),
            driver: n["Driver"].as_str().unwrap().into(),
            bridge: n["Options"]["bridge"].as_str().map(String::from),
            // A string, or a parent interface {"name": ..., "vlan": ...}.
            uplink: n["Options"]["uplink"]
                .as_str()
                .or_else(|| n["Options"]["uplink"]["name"].as_str())
                .map(String::from),
        })
        .collect()
}

fn network_names(lab: &Lab) -> Vec<String> {
    stored_networks(lab).into_iter().map(|n| n.name).collect()
}

/// How many holder files under the state directory a live process keeps
/// locked.
fn live_holders(lab: &Lab) -> usize {
    use std::os::fd::AsRawFd;
    let Ok(dir) = std::fs::read_dir(lab.state.path().join("holders")) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            let Ok(f) = std::fs::File::open(e.path()) else {
                return false;
            };
            // SAFETY: flock on a descriptor this closure owns.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
            r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
        })
        .count()
}

// ---------------------------------------------------------------------
// What the kernel says

/// `pv` + 12 lowercase hex digits: plumb's host veth ends.
fn is_plumb_veth(name: &str) -> bool {
    name.len() == 14
        && name.starts_with("pv")
        && name[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_eth_n(name: &str) -> bool {
    name.len() > 3 && name.starts_with("eth") && name[3..].bytes().all(|b| b.is_ascii_digit())
}

/// `ip -j link` (or `addr`) of a namespace.
fn ip_json(ns: &str, what: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&run(&["ip", "-j", "-n", ns, what, "show"]))
        .unwrap_or_else(|e| panic!("ip -j -n {ns} {what}: {e}"));
    v.as_array().cloned().unwrap_or_default()
}

struct Link {
    master: Option<String>,
    up: bool,
}

fn host_links(lab: &Lab) -> BTreeMap<String, Link> {
    ip_json(&lab.host, "link")
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap().to_string(),
                Link {
                    master: l["master"].as_str().map(String::from),
                    up: l["flags"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|x| x == "UP")),
                },
            )
        })
        .collect()
}

/// Interface name -> its addresses (`IP/LEN`, global scope; link-local
/// IPv6 and loopback left out) in `ns`.
fn addresses(ns: &str) -> BTreeMap<String, BTreeSet<String>> {
    ip_json(ns, "addr")
        .iter()
        .map(|l| {
            let addrs = l["addr_info"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|x| x["scope"] != "link" && x["scope"] != "host")
                        .map(|x| format!("{}/{}", x["local"].as_str().unwrap(), x["prefixlen"]))
                        .collect()
                })
                .unwrap_or_default();
            (l["ifname"].as_str().unwrap().to_string(), addrs)
        })
        .collect()
}

/// Run a command (no shell) and insist that it succeeds; its stdout.
fn run(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
    stdout(&out)
}

/// Everything nftables has in `ns` (`nft -j list ruleset`), as its list
/// of objects.
fn ruleset(ns: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&run(&[
        "ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset",
    ]))
    .expect("nft -j list ruleset");
    v["nftables"].as_array().cloned().unwrap_or_default()
}

/// The elements of set or map (`kind`) `family table name` in a ruleset,
/// `None` when it is not there. Each element is rendered as text: `a`,
/// `a . b`, or `a . b : c . d` for a map.
fn nft_elements(
    rules: &[Value],
    kind: &str,
    family: &str,
    table: &str,
    name: &str,
) -> Option<BTreeSet<String>> {
    let body = rules
        .iter()
        .filter_map(|o| o.get(kind))
        .find(|b| b["family"] == family && b["table"] == table && b["name"] == name)?;
    Some(
        body["elem"]
            .as_array()
            .map(|e| e.iter().map(render_element).collect())
            .unwrap_or_default(),
    )
}

fn render_element(x: &Value) -> String {
    match x {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(pair) => pair
            .iter()
            .map(render_element)
            .collect::<Vec<_>>()
            .join(" : "),
        Value::Object(o) if o.contains_key("concat") => o["concat"]
            .as_array()
            .unwrap()
            .iter()
            .map(render_element)
            .collect::<Vec<_>>()
            .join(" . "),
        Value::Object(o) if o.contains_key("elem") => render_element(&o["elem"]["val"]),
        other => panic!("unexpected nft element {other}"),
    }
}

/// The elements `--publish` specs put into the `inet plumb publish` map.
fn publish_elements(a: &StoredAttachment) -> Vec<String> {
    let ip = a
        .v4()
        .first()
        .cloned()
        .expect("a published attachment has IPv4");
    let mut out = Vec::new();
    for p in &a.ports {
        let (ports, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        let (host, inner) = ports.split_once(':').expect("HOSTPORT:PORT");
        assert!(
            !inner.contains(':'),
            "host IP publications not handled here: {p}"
        );
        let range = |r: &str| -> (u32, u32) {
            match r.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => (r.parse().unwrap(), r.parse().unwrap()),
            }
        };
        let ((h0, h1), (c0, _)) = (range(host), range(inner));
        for (i, h) in (h0..=h1).enumerate() {
            out.push(format!("{proto} . {h} : {ip} . {}", c0 + i as u32));
        }
    }
    out
}

// ---------------------------------------------------------------------
// The invariants

/// The store and the kernel agree, and nothing is half done:
/// - no intent is left;
/// - every host link named `pv` + 12 hex digits is the host end of a
///   stored bridge attachment and every stored bridge attachment has its
///   host end, enslaved to its network's bridge and up;
/// - in each of `containers` every stored attachment's interface exists
///   with exactly its stored addresses, and no `ethN` no record has is
///   there; no IPv4 address is in two namespaces (host and containers);
/// - the host's `bridge plumb` sets `guarded`, `macs` and `addr4` hold
///   exactly the elements of the stored guarded bridge attachments (no
///   table: no guarded attachment), and every bridge port but an uplink
///   is guarded; a guarded macvlan container has its own guard table with
///   its addresses, and a container with none has no guard table;
/// - the `inet plumb publish` map holds exactly the stored published ports.
fn assert_consistent(lab: &Lab, containers: &[&str]) {
    let problems = inconsistencies(lab, containers);
    assert!(
        problems.is_empty(),
        "store and kernel disagree:\n  {}",
        problems.join("\n  ")
    );
}

/// Elements of an nftables set against what the store wants there.
fn compare(bad: &mut Vec<String>, what: &str, have: BTreeSet<String>, want: &BTreeSet<String>) {
    if &have != want {
        bad.push(format!(
            "{what}: {:?} not stored, {:?} missing",
            have.difference(want).collect::<Vec<_>>(),
            want.difference(&have).collect::<Vec<_>>()
        ));
    }
}

/// What [`assert_consistent`] finds wrong, one line each.
fn inconsistencies(lab: &Lab, containers: &[&str]) -> Vec<String> {
    let mut bad = Vec::new();
    let left = intents(lab);
    if !left.is_empty() {
        bad.push(format!("intents left: {left:?}"));
    }

    let nets: BTreeMap<String, StoredNetwork> = stored_networks(lab)
        .into_iter()
        .map(|n| (n.name.clone(), n))
        .collect();
    let atts = stored_attachments(lab);
    for a in &atts {
        if !nets.contains_key(&a.network) {
            bad.push(format!("attachment {a:?} on a network the store lacks"));
        }
    }
    let atts: Vec<StoredAttachment> = atts
        .into_iter()
        .filter(|a| nets.contains_key(&a.network))
        .collect();
    let net_of = |a: &StoredAttachment| -> &StoredNetwork { &nets[&a.network] };
    let on_bridge = |a: &&StoredAttachment| net_of(a).driver == "bridge";

    // Link for link.
    let host = host_links(lab);
    let by_host_if: BTreeMap<&str, &StoredAttachment> = atts
        .iter()
        .filter(on_bridge)
        .map(|a| (a.host_ifname.as_str(), a))
        .collect();
    for name in host.keys().filter(|n| is_plumb_veth(n)) {
        if !by_host_if.contains_key(name.as_str()) {
            bad.push(format!("host link {name} belongs to no stored attachment"));
        }
    }
    for a in by_host_if.values() {
        let bridge = net_of(a).bridge.clone().unwrap_or_default();
        match host.get(&a.host_ifname) {
            None => bad.push(format!(
                "{} on {}: no host link {}",
                a.target, a.network, a.host_ifname
            )),
            Some(link) => {
                if link.master.as_deref() != Some(bridge.as_str()) {
                    bad.push(format!(
                        "{} has master {:?}, not bridge {bridge}",
                        a.host_ifname, link.master
                    ));
                }
                if !link.up {
                    bad.push(format!("{} is down", a.host_ifname));
                }
            }
        }
    }
    for n in nets.values() {
        if let Some(b) = &n.bridge
            && !host.contains_key(b)
        {
            bad.push(format!("bridge {b} of network {} is missing", n.name));
        }
    }

    // Address for address.
    let mut seen_v4: BTreeMap<String, String> = BTreeMap::new();
    let mut note_v4 =
        |bad: &mut Vec<String>, ns: &str, addrs: &BTreeMap<String, BTreeSet<String>>| {
            for (ifname, set) in addrs {
                for a in set.iter().filter(|a| !a.contains(':')) {
                    let ip = a.split('/').next().unwrap().to_string();
                    if ip.starts_with("127.") {
                        continue;
                    }
                    if let Some(other) = seen_v4.insert(ip.clone(), format!("{ns}/{ifname}")) {
                        bad.push(format!("{ip} is in two places: {other} and {ns}/{ifname}"));
                    }
                }
            }
        };
    note_v4(&mut bad, &lab.host, &addresses(&lab.host));
    for ns in containers {
        let kernel = addresses(ns);
        note_v4(&mut bad, ns, &kernel);
        let mine: Vec<&StoredAttachment> = atts.iter().filter(|a| a.target == *ns).collect();
        for a in &mine {
            let want: BTreeSet<String> = a.addresses.iter().cloned().collect();
            match kernel.get(&a.ifname) {
                None => bad.push(format!(
                    "{ns}: no {} for its attachment to {}",
                    a.ifname, a.network
                )),
                Some(have) if *have != want => bad.push(format!(
                    "{ns}/{}: addresses {have:?} in the kernel, {want:?} in the store",
                    a.ifname
                )),
                Some(_) => {}
            }
        }
        for ifname in kernel.keys().filter(|n| is_eth_n(n)) {
            if !mine.iter().any(|a| &a.ifname == ifname) {
                bad.push(format!("{ns}: {ifname} belongs to no stored attachment"));
            }
        }
        // A macvlan container's own guard.
        let guarded_here: Vec<&&StoredAttachment> = mine
            .iter()
            .filter(|a| net_of(a).driver == "macvlan" && a.guarded)
            .collect();
        let addr4 = nft_elements(&ruleset(ns), "set", "netdev", "plumb", "addr4");
        match guarded_here.as_slice() {
            [] => {
                if addr4.is_some() {
                    bad.push(format!("{ns}: a guard table, and no guarded attachment"));
                }
            }
            [a] => {
                let want = Some(a.v4().into_iter().collect());
                if addr4 != want {
                    bad.push(format!("{ns}: guard table addr4 {addr4:?}, want {want:?}"));
                }
            }
            more => bad.push(format!(
                "{ns}: several guarded macvlan attachments {more:?}"
            )),
        }
    }

    // Set element for set element.
    let guarded: Vec<&StoredAttachment> = atts
        .iter()
        .filter(on_bridge)
        .filter(|a| a.guarded)
        .collect();
    let want_guarded: BTreeSet<String> = guarded.iter().map(|a| a.host_ifname.clone()).collect();
    let want_macs: BTreeSet<String> = guarded
        .iter()
        .map(|a| format!("{} . {}", a.host_ifname, a.mac))
        .collect();
    let want_addr4: BTreeSet<String> = guarded
        .iter()
        .flat_map(|a| {
            a.v4()
                .into_iter()
                .map(|ip| format!("{} . {ip}", a.host_ifname))
        })
        .collect();
    let host_rules = ruleset(&lab.host);
    let set = |name: &str| nft_elements(&host_rules, "set", "bridge", "plumb", name);
    match set("guarded") {
        None => compare(
            &mut bad,
            "bridge plumb guarded (no table)",
            BTreeSet::new(),
            &want_guarded,
        ),
        Some(have) => {
            compare(&mut bad, "bridge plumb guarded", have, &want_guarded);
            compare(
                &mut bad,
                "bridge plumb macs",
                set("macs").unwrap_or_default(),
                &want_macs,
            );
            compare(
                &mut bad,
                "bridge plumb addr4",
                set("addr4").unwrap_or_default(),
                &want_addr4,
            );
        }
    }
    // No bridge port outside anti-spoofing.
    for n in nets.values() {
        let Some(bridge) = &n.bridge else { continue };
        for (name, link) in &host {
            if link.master.as_deref() != Some(bridge.as_str()) || n.uplink.as_ref() == Some(name) {
                continue;
            }
            let spoofer = by_host_if.get(name.as_str()).is_some_and(|a| !a.guarded);
            if !spoofer && !want_guarded.contains(name) {
                bad.push(format!("port {name} of bridge {bridge} is not guarded"));
            }
        }
    }
    // Published ports.
    let want_publish: BTreeSet<String> = atts
        .iter()
        .filter(|a| !a.ports.is_empty())
        .flat_map(publish_elements)
        .collect();
    let have_publish =
        nft_elements(&host_rules, "map", "inet", "plumb", "publish").unwrap_or_default();
    compare(&mut bad, "inet plumb publish", have_publish, &want_publish);
    // Policy selector sets of labels: the IPv4 addresses of the stored
    // attachments with the label.
    for (label, have) in label_sets(&host_rules) {
        let (k, v) = label.split_once('=').expect("label:KEY=VALUE");
        let want: BTreeSet<String> = atts
            .iter()
            .filter(|a| a.labels.get(k).is_some_and(|x| x == v))
            .flat_map(|a| a.v4())
            .collect();
        compare(
            &mut bad,
            &format!("inet plumb set of label:{label}"),
            have,
            &want,
        );
    }
    bad
}

/// The IPv4 sets of `inet plumb` that policy selectors `label:K=V` made:
/// label -> elements.
fn label_sets(rules: &[Value]) -> Vec<(String, BTreeSet<String>)> {
    rules
        .iter()
        .filter_map(|o| o.get("set"))
        .filter(|set| set["family"] == "inet" && set["table"] == "plumb")
        .filter(|set| set["type"] == "ipv4_addr")
        .filter_map(|set| {
            let label = set["comment"].as_str()?.strip_prefix("label:")?.to_string();
            let elems = set["elem"]
                .as_array()
                .map(|e| e.iter().map(render_element).collect())
                .unwrap_or_default();
            Some((label, elems))
        })
        .collect()
}

// ---------------------------------------------------------------------
// Helpers of the tests

fn nat_network(lab: &Lab, name: &str, subnet: &str, extra: &[&str]) {
    let mut args = vec![
        "network", "create", name, "--subnet", subnet, "--mode", "nat",
    ];
    args.extend_from_slice(extra);
    lab.ok(&args);
}

/// The one attachment of `target` on `network` (inspect), or None.
fn endpoint(lab: &Lab, target: &str, network: &str) -> Option<Value> {
    let out = lab.plumb(&["inspect", target]);
    if !out.status.success() {
        assert!(
            stderr(&out).contains("is not attached"),
            "inspect {target}: {}",
            stderr(&out)
        );
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("inspect: JSON");
    let ep = &v["NetworkSettings"]["Networks"][network];
    (!ep.is_null()).then(|| ep.clone())
}

fn assert_attached_as(lab: &Lab, target: &str, network: &str, ifname: &str, ip: &str) {
    let ep = endpoint(lab, target, network)
        .unwrap_or_else(|| panic!("{target} is not attached to {network}"));
    assert_eq!(ep["IfName"], ifname, "{target}: {ep}");
    assert_eq!(ep["IPAddress"], ip, "{target}: {ep}");
    assert!(
        addresses(target)
            .get(ifname)
            .is_some_and(|a| a.iter().any(|x| x.starts_with(&format!("{ip}/")))),
        "{target}: {ifname} has {ip} in the kernel"
    );
}

fn assert_not_attached(lab: &Lab, target: &str) {
    let stored: Vec<StoredAttachment> = stored_attachments(lab)
        .into_iter()
        .filter(|a| a.target == target)
        .collect();
    assert!(stored.is_empty(), "{target} is still attached: {stored:?}");
    let eths: Vec<String> = links(target).into_iter().filter(|l| is_eth_n(l)).collect();
    assert!(eths.is_empty(), "{target} still has {eths:?}");
}

fn inspect_network(lab: &Lab, name: &str) -> Value {
    serde_json::from_str(&lab.ok(&["network", "inspect", name])).expect("network inspect: JSON")
}

fn plumb_veths(lab: &Lab) -> Vec<String> {
    lab.host_links()
        .into_iter()
        .filter(|l| is_plumb_veth(l))
        .collect()
}

/// A bridge name unique to the lab (15 characters at most).
fn bridge_name(lab: &Lab, short: &str) -> String {
    let name = lab.name(short);
    assert!(name.len() <= 15, "bridge name {name} too long");
    name
}

// ---------------------------------------------------------------------
// The tests

#[test]
fn every_kill_during_an_attach_is_undone_by_the_next_command() {
    let lab = Lab::new("ca");
    nat_network(&lab, "lan", "10.61.0.0/24", &["--subnet", "fd61::/64"]);
    // A rule naming the container by label: its address goes into the
    // rule's set, and must leave it with an undone attach.
    nat_network(&lab, "db", "10.60.0.0/24", &[]);
    lab.ok(&["policy", "add", "db", "allow", "from", "label:role=web"]);
    let c = lab.netns("c");
    let ip = "10.61.0.50";
    let attach = [
        "attach",
        c.as_str(),
        "lan",
        "--publish",
        "8080:80",
        "--ip",
        ip,
        "--egress-rate",
        "10mbit",
        "--ingress-rate",
        "20mbit",
        "--label",
        "role=web",
    ];
    let points = trace(&lab, &attach);
    let n = points.len();
    assert!(n >= 8, "an attach passes at least 8 failpoints: {points:?}");
    assert_consistent(&lab, &[&c]);
    assert_eq!(
        label_sets(&ruleset(&lab.host)),
        vec![("role=web".to_string(), BTreeSet::from([ip.to_string()]))],
        "the label's set holds the container"
    );
    lab.ok(&["detach", &c]);
    assert_consistent(&lab, &[&c]);

    for k in 1..=n {
        let what = kill_and_recover(&lab, "attach", &attach, &points, k, &[&c]);
        if k < n {
            // Undone, its address freed.
            assert_not_attached(&lab, &c);
            assert_eq!(plumb_veths(&lab), Vec::<String>::new(), "{what}");
        } else {
            // Killed after its last commit: it is whole.
            assert_attached_as(&lab, &c, "lan", "eth0", ip);
            lab.ok(&["detach", &c]);
        }
        lab.ok(&["attach", &c, "lan", "--ip", ip]);
        assert_attached_as(&lab, &c, "lan", "eth0", ip);
        assert_consistent(&lab, &[&c]);
        lab.ok(&["detach", &c]);
    }

    // Without gc: the next attach itself undoes what the killed one left,
    // then attaches (same name, same address).
    for k in 1..n {
        let what = format!("attach killed at {k} ({}), then attach", points[k - 1]);
        killed_at(&lab, &attach, k, &points[k - 1]);
        assert_left_an_intent(&lab, &what);
        let out = lab.plumb(&["attach", &c, "lan", "--ip", ip]);
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        assert_attached_as(&lab, &c, "lan", "eth0", ip);
        assert_consistent(&lab, &[&c]);
        lab.ok(&["detach", &c]);
        assert_consistent(&lab, &[&c]);
    }
}

#[test]
fn every_kill_during_a_detach_is_finished_by_gc() {
    let lab = Lab::new("cd");
    nat_network(&lab, "lan", "10.62.0.0/24", &[]);
    let (c1, c2) = (lab.netns("c1"), lab.netns("c2"));
    let both = [c1.as_str(), c2.as_str()];
    // A static address: a re-attach gets it only if the detach freed it.
    let ip1 = "10.62.0.20";
    let attach1 = [
        "attach",
        c1.as_str(),
        "lan",
        "--ip",
        ip1,
        "--publish",
        "8081:80",
        "--ingress-rate",
        "5mbit",
    ];
    lab.ok(&attach1);
    lab.ok(&["attach", &c2, "lan", "--publish", "8082:80"]);
    let ip2 = lab.ip_of(&c2, "lan");
    let detach = ["detach", c1.as_str()];
    let points = trace(&lab, &detach);
    let n = points.len();
    assert!(n >= 3, "a detach passes failpoints: {points:?}");
    assert_consistent(&lab, &both);

    for k in 1..=n {
        lab.ok(&attach1);
        assert_consistent(&lab, &both);
        let what = kill_and_recover(&lab, "detach", &detach, &points, k, &both);
        assert_not_attached(&lab, &c1);
        assert_attached_as(&lab, &c2, "lan", "eth0", &ip2);
        assert_eq!(plumb_veths(&lab).len(), 1, "{what}: only c2's veth");
        assert!(
            lab.ping(&c2, "10.62.0.1"),
            "{what}: c2 still reaches its gateway"
        );
    }

    // Without gc: the next attach of the same namespace finishes the
    // detach, then attaches.
    for k in 1..n {
        let what = format!("detach killed at {k} ({}), then attach", points[k - 1]);
        lab.ok(&attach1);
        killed_at(&lab, &detach, k, &points[k - 1]);
        assert_left_an_intent(&lab, &what);
        let out = lab.plumb(&attach1);
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        assert_attached_as(&lab, &c1, "lan", "eth0", ip1);
        assert_consistent(&lab, &both);
        lab.ok(&detach);
    }
    assert_consistent(&lab, &both);
}

#[test]
fn every_kill_during_network_create_and_rm_leaves_no_bridge() {
    let lab = Lab::new("cn");
    let br = bridge_name(&lab, "b");
    let create = [
        "network",
        "create",
        "n",
        "--subnet",
        "10.63.0.0/24",
        "--mode",
        "nat",
        "--bridge",
        &br,
    ];
    // The first command makes the store (a commit of its own): trace a
    // create that finds it there.
    lab.ok(&create);
    lab.ok(&["network", "rm", "n"]);
    let points = trace(&lab, &create);
    let n = points.len();
    assert!(n >= 3, "a network create passes failpoints: {points:?}");
    assert_consistent(&lab, &[]);
    lab.ok(&["network", "rm", "n"]);
    assert!(!lab.host_links().contains(&br));

    for k in 1..=n {
        let what = kill_and_recover(&lab, "network create", &create, &points, k, &[]);
        if k < n {
            assert_eq!(network_names(&lab), Vec::<String>::new(), "{what}");
            assert!(!lab.host_links().contains(&br), "{what}: bridge {br} left");
        } else {
            assert_eq!(network_names(&lab), vec!["n".to_string()], "{what}");
            lab.ok(&["network", "rm", "n"]);
        }
        // Made again, it is plumb's bridge, not one adopted from a
        // leftover: removal takes it.
        lab.ok(&create);
        assert_eq!(
            inspect_network(&lab, "n")["HostState"]["existing_bridge"],
            false,
            "{what}: the bridge was not adopted"
        );
        lab.ok(&["network", "rm", "n"]);
        assert!(
            !lab.host_links().contains(&br),
            "{what}: rm leaves bridge {br}"
        );
        assert_consistent(&lab, &[]);
    }

    // A bridge of the user's, named with --bridge: a killed create leaves
    // it as it was, without plumb's gateway address.
    let ubr = bridge_name(&lab, "u");
    must(&format!("ip -n {} link add {ubr} type bridge", lab.host));
    let adopt = [
        "network",
        "create",
        "u",
        "--subnet",
        "10.64.0.0/24",
        "--mode",
        "nat",
        "--bridge",
        &ubr,
    ];
    let points = trace(&lab, &adopt);
    lab.ok(&["network", "rm", "u"]);
    assert!(
        lab.host_links().contains(&ubr),
        "rm leaves the user's bridge"
    );
    for k in 1..=points.len() {
        let what = format!("create on {ubr} killed at {k} ({})", points[k - 1]);
        killed_at(&lab, &adopt, k, &points[k - 1]);
        gc(&lab, &what);
        assert_consistent(&lab, &[]);
        if k == points.len() {
            lab.ok(&["network", "rm", "u"]);
        }
        assert_eq!(network_names(&lab), Vec::<String>::new(), "{what}");
        assert!(
            lab.host_links().contains(&ubr),
            "{what}: the user's bridge {ubr} was deleted"
        );
        let left = addresses(&lab.host).remove(&ubr).unwrap_or_default();
        assert!(
            !left.iter().any(|a| a.starts_with("10.64.")),
            "{what}: plumb's address left on {ubr}: {left:?}"
        );
    }

    // network rm --force with an attachment on the network.
    let c = lab.netns("c");
    let rm = ["network", "rm", "n", "--force"];
    lab.ok(&create);
    lab.ok(&["attach", &c, "n", "--publish", "8083:80"]);
    let points = trace(&lab, &rm);
    let n = points.len();
    assert!(n >= 5, "network rm --force passes failpoints: {points:?}");
    for k in 1..=n {
        lab.ok(&create);
        lab.ok(&["attach", &c, "n", "--publish", "8083:80"]);
        assert_consistent(&lab, &[&c]);
        let what = kill_and_recover(&lab, "network rm --force", &rm, &points, k, &[&c]);
        assert_eq!(network_names(&lab), Vec::<String>::new(), "{what}");
        assert!(!lab.host_links().contains(&br), "{what}: bridge {br} left");
        assert_not_attached(&lab, &c);
        assert_eq!(plumb_veths(&lab), Vec::<String>::new(), "{what}");
    }
}

#[test]
fn a_killed_macvlan_attach_is_undone() {
    let lab = Lab::new("cm");
    lab.nic_on_lan(); // the host's nic1 at 10.70.0.2, the LAN at 10.70.0.1
    lab.ok(&[
        "network",
        "create",
        "mv",
        "--driver",
        "macvlan",
        "--parent",
        "nic1",
        "--subnet",
        "10.70.0.0/24",
        "--gateway",
        "10.70.0.1",
        "--ip-range",
        "10.70.0.128/25",
    ]);
    let c = lab.netns("c");
    let ip = "10.70.0.50";
    let attach = [
        "attach",
        c.as_str(),
        "mv",
        "--ip",
        ip,
        "--egress-rate",
        "10mbit",
        "--ingress-rate",
        "10mbit",
    ];
    let points = trace(&lab, &attach);
    let n = points.len();
    assert!(n >= 5, "a macvlan attach passes failpoints: {points:?}");
    assert_consistent(&lab, &[&c]);
    assert!(
        lab.ping(&c, "10.70.0.1"),
        "the macvlan container reaches the LAN"
    );
    lab.ok(&["detach", &c]);

    for k in 1..=n {
        let what = kill_and_recover(&lab, "macvlan attach", &attach, &points, k, &[&c]);
        if k < n {
            assert_not_attached(&lab, &c);
            let left: Vec<String> = links(&c).into_iter().filter(|l| l != "lo").collect();
            assert!(left.is_empty(), "{what}: {c} keeps {left:?}");
        } else {
            assert_attached_as(&lab, &c, "mv", "eth0", ip);
            lab.ok(&["detach", &c]);
        }
        lab.ok(&["attach", &c, "mv", "--ip", ip]);
        assert_attached_as(&lab, &c, "mv", "eth0", ip);
        assert_consistent(&lab, &[&c]);
        assert!(
            lab.ping(&c, "10.70.0.1"),
            "{what}: the re-attached container reaches the LAN"
        );
        lab.ok(&["detach", &c]);
    }
}

/// A small LCG (Knuth's MMIX constants): reproducible from its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn three_hundred_attaches_killed_at_random_moments_leave_no_leak() {
    const KILLS: usize = 300;
    const NAMESPACES: usize = 30;
    let started = Instant::now();
    let lab = Lab::new("cr");
    // 253 addresses: leaked addresses would soon run the pool dry.
    nat_network(&lab, "lan", "10.66.0.0/24", &[]);
    let nss: Vec<String> = (0..NAMESPACES)
        .map(|i| lab.netns(&format!("n{i}")))
        .collect();
    // CRASH_SEED=N replays a run.
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::from(std::process::id()));
    eprintln!("random kills: seed {seed} (CRASH_SEED={seed} replays)");
    let mut rng = Lcg(seed);
    let (mut landed, mut mid_change, mut finished, mut late) = (0, 0, 0, 0);
    for i in 0..KILLS {
        let ns = &nss[i % NAMESPACES];
        let delay = Duration::from_micros(rng.next() % 8001);
        let mut child = lab
            .command(&["attach", ns, "lan"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn plumb attach");
        let before = intents(&lab);
        std::thread::sleep(delay);
        // SIGKILL; a process that already ended is a zombie until waited
        // for, so this never hits another process.
        let _ = child.kill();
        let out = child.wait_with_output().expect("wait for plumb attach");
        match (out.status.signal(), out.status.code()) {
            (Some(libc::SIGKILL), _) => {
                landed += 1;
                if intents(&lab).iter().any(|i| !before.contains(i)) {
                    mid_change += 1;
                }
            }
            (None, Some(0)) => {
                finished += 1;
                lab.ok(&["detach", ns]);
            }
            // Killed after its last commit the time before: attached.
            (None, Some(1)) if stderr(&out).contains("is already attached") => {
                late += 1;
                lab.ok(&["detach", ns]);
            }
            _ => panic!(
                "attach #{i} of {ns} (seed {seed}, {delay:?}): {} {}",
                out.status,
                stderr(&out)
            ),
        }
    }
    eprintln!(
        "{KILLS} attaches: {landed} killed ({mid_change} of them half way, leaving an intent), \
         {finished} finished first, {late} found attached by a kill after their last commit"
    );
    gc(&lab, &format!("gc after the random kills (seed {seed})"));
    let all: Vec<&str> = nss.iter().map(String::as_str).collect();
    assert_consistent(&lab, &all);
    assert!(
        landed >= 100,
        "only {landed} of {KILLS} kills landed (seed {seed})"
    );
    // Kills that all landed before the first commit or after the last one
    // would have tested nothing.
    assert!(
        mid_change >= 10,
        "only {mid_change} kills landed half way through an attach (seed {seed})"
    );

    // Nothing leaked: every namespace attaches as eth0, each with an
    // address of its own.
    for ns in &nss {
        if endpoint(&lab, ns, "lan").is_none() {
            lab.ok(&["attach", ns, "lan"]);
        }
        let ep = endpoint(&lab, ns, "lan").unwrap();
        assert_eq!(ep["IfName"], "eth0", "{ns}: {ep}");
    }
    assert_consistent(&lab, &all);
    eprintln!("random kills took {:?}", started.elapsed());
}

/// dnsmasq serving 192.168.70.100-199 on the LAN's server, as in
/// tests/dhcp.rs.
fn dnsmasq(lab: &Lab, server: &str) -> common::Bg {
    lab.dnsmasq(
        server,
        "--dhcp-range=192.168.70.100,192.168.70.199,2m --dhcp-authoritative --log-dhcp",
    )
}

#[test]
fn a_daemon_killed_during_a_dhcp_attach_leaves_nothing_its_successor_does_not_undo() {
    let started = Instant::now();
    let lab = Lab::new("ch");
    let server = lab.lan("dhcpsrv", "192.168.70.1/24");
    let _dnsmasq = dnsmasq(&lab, &server);
    lab.ok(&[
        "network", "create", "lan", "--driver", "bridge", "--mode", "bridged", "--uplink", "lan0",
        "--ipam", "dhcp",
    ]);
    let c = lab.netns("c");

    // Which failpoints the daemon passes for one DHCP attach.
    let file = lab.state.path().join("daemon-trace");
    let mut daemon = lab.daemon_with_env(&[], &[("PLUMB_FAILPOINT_TRACE", file.as_os_str())]);
    let before = read_trace(&file).len();
    lab.ok(&["attach", &c, "lan"]);
    let points: Vec<(usize, String)> = read_trace(&file).split_off(before);
    let ip = lab.ip_of(&c, "lan");
    assert!(
        ip.starts_with("192.168.70.1"),
        "a lease from the pool: {ip}"
    );
    assert!(
        points.len() >= 5,
        "a DHCP attach passes failpoints in the daemon: {points:?}"
    );
    eprintln!("DHCP attach failpoints in the daemon: {points:?}");
    assert_consistent(&lab, &[&c]);
    lab.ok(&["detach", &c]);
    daemon.stop();
    assert_consistent(&lab, &[&c]);

    // Every point, not a sample: the loop takes about 8 s.
    let last = points.last().unwrap().0;
    for (k, name) in &points {
        let what = format!("daemon killed at {k} ({name}) during a DHCP attach");
        let kfile = lab.state.path().join(format!("daemon-trace-{k}"));
        let kill_at = k.to_string();
        let mut doomed = lab.daemon_with_env(
            &[],
            &[
                ("PLUMB_FAILPOINT", kill_at.as_ref()),
                ("PLUMB_FAILPOINT_TRACE", kfile.as_os_str()),
            ],
        );
        let out = lab.plumb(&["attach", &c, "lan"]);
        assert!(
            !out.status.success(),
            "{what}: the attach succeeded though its daemon died: {}",
            stdout(&out)
        );
        wait_until("the daemon to die", 10, || {
            doomed.child.try_wait().ok().flatten().is_some()
        });
        let status = doomed.child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{what}: {}",
            doomed.log_text()
        );
        assert_eq!(
            read_trace(&kfile).last().map(|(n, p)| (*n, p.as_str())),
            Some((*k, name.as_str())),
            "{what}: killed elsewhere than the trace said"
        );
        drop(doomed);

        // The next daemon cleans up at its start.
        let mut next = lab.daemon(&[]);
        wait_until(&format!("{what}: store and kernel to agree"), 20, || {
            inconsistencies(&lab, &[&c]).is_empty()
        });
        if *k < last {
            assert_not_attached(&lab, &c);
            assert_eq!(plumb_veths(&lab), Vec::<String>::new(), "{what}");
        } else {
            // Killed after the lease's commit: the attachment is whole and
            // its successor renews it.
            assert_attached_as(&lab, &c, "lan", "eth0", &ip);
            lab.ok(&["detach", &c]);
        }
        lab.ok(&["attach", &c, "lan"]);
        assert_attached_as(&lab, &c, "lan", "eth0", &ip);
        assert_consistent(&lab, &[&c]);
        lab.ok(&["detach", &c]);
        next.stop();
    }
    eprintln!("DHCP kills took {:?}", started.elapsed());
}

/// `make` leaves something half done; a gc killed at each of its own
/// failpoints in turn, then a gc left alone, must still recover it
/// (`check` says what recovered looks like).
fn kill_recovery_at_each_point(
    lab: &Lab,
    containers: &[&str],
    left: &str,
    make: impl Fn(),
    check: impl Fn(&str),
) {
    make();
    assert_left_an_intent(lab, left);
    let gc_points = trace(lab, &["gc"]);
    assert!(
        gc_points.iter().any(|p| p.starts_with("recovery: intent")),
        "{left}: gc recovered nothing: {gc_points:?}"
    );
    assert_consistent(lab, containers);
    check(&format!("{left}, then gc"));
    for j in 1..=gc_points.len() {
        let what = format!("{left}, then gc killed at {j} ({})", gc_points[j - 1]);
        make();
        killed_at(lab, &["gc"], j, &gc_points[j - 1]);
        gc(lab, &what);
        assert_consistent(lab, containers);
        check(&what);
    }
}

#[test]
fn a_recovery_killed_half_way_is_itself_recovered() {
    let lab = Lab::new("cg");
    let br = bridge_name(&lab, "b");
    let create = [
        "network",
        "create",
        "lan",
        "--subnet",
        "10.67.0.0/24",
        "--bridge",
        &br,
    ];
    lab.ok(&create);
    let cs: Vec<String> = (0..3).map(|i| lab.netns(&format!("c{i}"))).collect();
    let all: Vec<&str> = cs.iter().map(String::as_str).collect();
    let c = cs[0].as_str();
    let ip = "10.67.0.30";
    let attach = ["attach", c, "lan", "--ip", ip, "--publish", "8084:80"];
    let detach = ["detach", c];
    let points = trace(&lab, &attach);
    let detach_points = trace(&lab, &detach);
    let reattaches = |what: &str| {
        for c in &cs {
            assert_not_attached(&lab, c);
        }
        assert_eq!(plumb_veths(&lab), Vec::<String>::new(), "{what}");
        lab.ok(&attach);
        assert_attached_as(&lab, c, "lan", "eth0", ip);
        lab.ok(&detach);
    };

    // Half-done attaches, undone by recovery.
    for k in 1..points.len() {
        kill_recovery_at_each_point(
            &lab,
            &all,
            &format!("attach killed at {k} ({})", points[k - 1]),
            || {
                killed_at(&lab, &attach, k, &points[k - 1]);
            },
            reattaches,
        );
    }
    // Half-done detaches, finished by it.
    for k in 1..detach_points.len() {
        kill_recovery_at_each_point(
            &lab,
            &all,
            &format!("detach killed at {k} ({})", detach_points[k - 1]),
            || {
                lab.ok(&attach);
                killed_at(&lab, &detach, k, &detach_points[k - 1]);
            },
            reattaches,
        );
    }
    // Several half-done attaches at once, recovered together. A plumb
    // process recovers what dead ones left before its own change, so the
    // three attaches are held at the store's write lock (this test takes
    // it) until all three have done their recovery and taken their holder
    // locks; then they go on, and each is killed at point k.
    let three_killed_together = |k: usize| {
        let db = rusqlite::Connection::open(lab.state.path().join("plumb.db")).unwrap();
        db.execute_batch("BEGIN IMMEDIATE").unwrap();
        let children: Vec<std::process::Child> = cs
            .iter()
            .map(|c| {
                lab.command(&["attach", c, "lan"])
                    .env("PLUMB_FAILPOINT", k.to_string())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("spawn plumb attach")
            })
            .collect();
        wait_until("three attaches to wait for the store", 20, || {
            live_holders(&lab) == cs.len()
        });
        db.execute_batch("ROLLBACK").unwrap();
        for mut child in children {
            let status = child.wait().unwrap();
            assert_eq!(status.signal(), Some(libc::SIGKILL), "attach killed at {k}");
        }
        assert_eq!(
            intents(&lab).len(),
            cs.len(),
            "three attaches killed at {k}"
        );
    };
    // (At a sample of the points: before the interfaces, when they are
    // made, when they are configured.)
    let plain = trace(&lab, &["attach", cs[1].as_str(), "lan"]);
    lab.ok(&["detach", cs[1].as_str()]);
    let at = |name: &str| {
        1 + plain
            .iter()
            .position(|p| p == name)
            .unwrap_or_else(|| panic!("no failpoint {name} in {plain:?}"))
    };
    for k in [1, at("bridge port up"), at("routes added inside")] {
        kill_recovery_at_each_point(
            &lab,
            &all,
            &format!("three attaches each killed at {k} ({})", plain[k - 1]),
            || three_killed_together(k),
            reattaches,
        );
    }

    // A half-done network create, undone; a half-done removal, finished.
    lab.ok(&["network", "rm", "lan"]);
    let create_points = trace(&lab, &create);
    lab.ok(&attach);
    let rm = ["network", "rm", "lan", "--force"];
    let rm_points = trace(&lab, &rm);
    let gone = |what: &str| {
        assert_eq!(network_names(&lab), Vec::<String>::new(), "{what}");
        assert!(!lab.host_links().contains(&br), "{what}: bridge {br} left");
        for c in &cs {
            assert_not_attached(&lab, c);
        }
    };
    // After the last recovery of a scenario: made again, the bridge is
    // plumb's, not adopted from a leftover.
    let made_again = |what: &str| {
        lab.ok(&create);
        assert_eq!(
            inspect_network(&lab, "lan")["HostState"]["existing_bridge"],
            false,
            "{what}: the bridge was not adopted"
        );
        lab.ok(&["network", "rm", "lan"]);
        assert!(!lab.host_links().contains(&br), "{what}: bridge {br} left");
    };
    for k in 1..create_points.len() {
        let what = format!("network create killed at {k} ({})", create_points[k - 1]);
        kill_recovery_at_each_point(
            &lab,
            &all,
            &what,
            || {
                killed_at(&lab, &create, k, &create_points[k - 1]);
            },
            gone,
        );
        made_again(&what);
    }
    // (At a sample of the points of a removal: its intent, its
    // attachment's interface gone, its attachments gone, its bridge gone.)
    let at = |name: &str| {
        1 + rm_points
            .iter()
            .position(|p| p == name)
            .unwrap_or_else(|| panic!("no failpoint {name} in {rm_points:?}"))
    };
    for k in [
        1,
        at("detach: interface removed"),
        at("network removal: attachments detached"),
        at("network removal: host side removed"),
    ] {
        let what = format!("network rm --force killed at {k} ({})", rm_points[k - 1]);
        kill_recovery_at_each_point(
            &lab,
            &all,
            &what,
            || {
                lab.ok(&create);
                lab.ok(&attach);
                killed_at(&lab, &rm, k, &rm_points[k - 1]);
            },
            gone,
        );
        made_again(&what);
    }
}

#[test]
fn a_running_daemon_undoes_a_killed_attach_in_its_reconcile_loop() {
    let lab = Lab::new("cl");
    nat_network(&lab, "lan", "10.68.0.0/24", &[]);
    let c = lab.netns("c");
    let ip = "10.68.0.40";
    // (No --publish here: a_detach_through_the_daemon_lets_its_host_port_go
    // is about the daemon's hold on published ports.)
    let attach = [
        "attach",
        c.as_str(),
        "lan",
        "--ip",
        ip,
        "--ingress-rate",
        "5mbit",
    ];
    let points = trace(&lab, &attach);
    lab.ok(&["detach", &c]);
    let _daemon = lab.daemon(&["--reconcile-interval", "1"]);
    // A plumb that does not see the daemon (another socket path) attaches
    // by itself and is killed; the daemon, live all along, cleans up.
    let alone = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_plumb"));
        cmd.arg("--state-dir")
            .arg(lab.state.path())
            .arg("--host-netns")
            .arg(&lab.host)
            .arg("--socket")
            .arg(lab.state.path().join("no-daemon-here.sock"))
            .args(args);
        cmd
    };
    for k in 1..points.len() {
        let what = format!("attach killed at {k} ({}) beside a daemon", points[k - 1]);
        let out = alone(&attach)
            .env("PLUMB_FAILPOINT", k.to_string())
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "{what}: {} {}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        assert_left_an_intent(&lab, &what);
        wait_until(&format!("{what}: the daemon to undo it"), 10, || {
            intents(&lab).is_empty()
        });
        assert_consistent(&lab, &[&c]);
        assert_not_attached(&lab, &c);
        assert_eq!(plumb_veths(&lab), Vec::<String>::new(), "{what}");
        lab.ok(&attach);
        assert_attached_as(&lab, &c, "lan", "eth0", ip);
        assert_consistent(&lab, &[&c]);
        lab.ok(&["detach", &c]);
    }
}

/// Found by the test above when it published a port: a detach through the
/// daemon returned while the daemon could still hold the host port, for
/// 10 s (`SETTLING` in src/policy/ports.rs). The detach (`finish_detach`,
/// also what recovery runs) released the port and only then committed the
/// record's removal; the daemon's policy thread, reconciling its holds
/// with the store in between, bound the port again from the record it
/// still saw, and a hold that young is kept though the store no longer
/// has it. Now the port goes after the commit.
///
/// The race is made certain: the daemon's failpoint trace is a FIFO this
/// test reads, and by not reading it, it holds the daemon at a failpoint
/// between the interface's removal and the last commit until the policy
/// thread has had its chance to bind the port again.
#[test]
fn a_detach_through_the_daemon_lets_its_host_port_go() {
    use std::io::Read;
    use std::sync::mpsc;
    let lab = Lab::new("cp");
    nat_network(&lab, "lan", "10.69.0.0/24", &[]);
    let c = lab.netns("c");
    let fifo = lab.state.path().join("daemon-trace.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // The reader: each failpoint opens the trace, writes a line and closes
    // it; after "detach: interface removed" the reader waits for a go
    // before it opens the FIFO again, and the daemon waits on its open.
    let (seen_tx, seen) = mpsc::channel::<()>();
    let (go, go_rx) = mpsc::channel::<bool>();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            loop {
                let mut text = String::new();
                let Ok(mut f) = std::fs::File::open(&fifo) else {
                    return;
                };
                let _ = f.read_to_string(&mut text);
                drop(f);
                if text.trim_end().ends_with(" detach: interface removed") {
                    let _ = seen_tx.send(());
                    if !go_rx.recv().unwrap_or(false) {
                        return;
                    }
                }
                if text.contains("\nquit\n") || text.starts_with("quit\n") {
                    return;
                }
            }
        })
    };
    let _daemon = lab.daemon_with_env(&[], &[("PLUMB_FAILPOINT_TRACE", fifo.as_os_str())]);
    let bindable = || {
        common::in_netns(&lab.host, || {
            std::net::TcpListener::bind("0.0.0.0:8086").is_ok()
        })
    };
    assert!(bindable(), "port 8086 is free to begin with");
    let mut raced = false;
    for attempt in 1..=3 {
        lab.ok(&["attach", &c, "lan", "--publish", "8086:80"]);
        assert!(!bindable(), "the daemon holds a published port");
        let mut detach = lab
            .command(&["detach", &c])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Until the daemon is held before its last commit (or the detach
        // went through: the reader was not quick enough to hold it).
        let held = loop {
            if seen.try_recv().is_ok() {
                break true;
            }
            if detach.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if held {
            // Were the port released now, the policy thread (every 0.5 s)
            // would bind it again from the record the store still has.
            let deadline = Instant::now() + Duration::from_secs(2);
            while bindable() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            raced = !bindable();
            go.send(true).unwrap();
        }
        assert!(detach.wait().unwrap().success(), "detach #{attempt}");
        if !bindable() {
            let since = Instant::now();
            wait_until("the daemon to let port 8086 go at last", 30, bindable);
            panic!(
                "detach #{attempt} returned, and the daemon still held host port 8086 for {:?} \
                 more (bound again by its policy thread during the detach: {raced})",
                since.elapsed()
            );
        }
        if raced {
            break;
        }
    }
    // Let the reader go.
    let _ = go.send(false);
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&fifo) {
        use std::io::Write;
        let _ = f.write_all(b"quit\n");
    }
    let _ = reader.join();
}

/// The fake host's routes to `dest` (`ip route show exact`).
fn host_routes_to(lab: &Lab, dest: &str) -> String {
    must(&format!("ip -n {} route show exact {dest}", lab.host))
        .trim()
        .to_string()
}

/// `plumb host route ls` (JSON).
fn stored_host_routes(lab: &Lab) -> Vec<Value> {
    serde_json::from_str::<Value>(&lab.ok(&["host", "route", "ls"]))
        .expect("host route ls: JSON")
        .as_array()
        .cloned()
        .expect("host route ls: an array")
}

/// A router namespace behind the fake host's `r0` (10.72.0.2/24), at
/// 10.72.0.1.
fn router(lab: &Lab) -> String {
    let r = lab.netns("router");
    lab.wire(
        &lab.host,
        "r0",
        Some("10.72.0.2/24"),
        &r,
        "eth0",
        Some("10.72.0.1/24"),
    );
    r
}

#[test]
fn every_kill_during_a_host_route_add_and_rm_is_recovered() {
    let lab = Lab::new("ct");
    router(&lab);
    let dest = "10.91.0.0/24";
    let add = ["host", "route", "add", dest, "via", "10.72.0.1"];
    let rm = ["host", "route", "rm", dest];
    // The first command makes the store: trace what finds it there.
    lab.ok(&add);
    lab.ok(&rm);
    let points = trace(&lab, &add);
    let n = points.len();
    assert!(n >= 3, "a host route add passes failpoints: {points:?}");
    lab.ok(&rm);
    for k in 1..=n {
        let what = kill_and_recover(&lab, "host route add", &add, &points, k, &[]);
        if k < n {
            assert_eq!(stored_host_routes(&lab), Vec::<Value>::new(), "{what}");
            assert_eq!(
                host_routes_to(&lab, dest),
                "",
                "{what}: route left in the kernel"
            );
        } else {
            assert_eq!(stored_host_routes(&lab).len(), 1, "{what}");
            assert!(
                host_routes_to(&lab, dest).contains("via 10.72.0.1"),
                "{what}"
            );
            lab.ok(&rm);
        }
        // Nothing stands in the way of adding it again.
        lab.ok(&add);
        assert!(
            host_routes_to(&lab, dest).contains("via 10.72.0.1"),
            "{what}"
        );
        lab.ok(&rm);
        assert_eq!(
            host_routes_to(&lab, dest),
            "",
            "{what}: rm leaves the route"
        );
    }

    lab.ok(&add);
    let points = trace(&lab, &rm);
    let n = points.len();
    for k in 1..=n {
        lab.ok(&add);
        let what = kill_and_recover(&lab, "host route rm", &rm, &points, k, &[]);
        assert_eq!(stored_host_routes(&lab), Vec::<Value>::new(), "{what}");
        assert_eq!(
            host_routes_to(&lab, dest),
            "",
            "{what}: route left in the kernel"
        );
    }
}

/// A route the user made, to the destination a `plumb host route add`
/// then names, is not plumb's: the add is refused before its intent, so
/// neither its rollback nor a recovery can delete the route (as a killed
/// network create leaves a bridge of the user's). (Both did, before the
/// add looked for the route first: the rollback of the refused add, and
/// the recovery of an add killed at its intent's commit.)
#[test]
fn a_route_the_user_had_is_never_plumbs_to_delete() {
    let lab = Lab::new("cu");
    router(&lab);
    let dest = "10.92.0.0/24";
    let add = ["host", "route", "add", dest, "via", "10.72.0.1"];
    lab.ok(&["host", "route", "ls"]);
    must(&format!(
        "ip -n {} route add {dest} via 10.72.0.1",
        lab.host
    ));
    // Told to die at its first failpoint (its intent's commit), it is
    // refused before reaching any.
    let out = lab
        .command(&add)
        .env("PLUMB_FAILPOINT", "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "an add over the user's route is refused: {} {}",
        out.status,
        stderr(&out)
    );
    assert!(stderr(&out).contains("exists"), "{}", stderr(&out));
    assert_eq!(
        intents(&lab),
        Vec::<String>::new(),
        "refused before its intent"
    );
    assert_eq!(stored_host_routes(&lab), Vec::<Value>::new());
    assert!(
        host_routes_to(&lab, dest).contains("via 10.72.0.1"),
        "a refused host route add deleted the user's own route to {dest}"
    );
    gc(&lab, "after a refused host route add");
    assert_consistent(&lab, &[]);
    assert!(
        host_routes_to(&lab, dest).contains("via 10.72.0.1"),
        "gc deleted the user's own route to {dest}"
    );
}

#[test]
fn a_killed_host_device_attach_gives_the_device_back() {
    let lab = Lab::new("cx");
    lab.nic_on_lan(); // the host's nic1 at 10.70.0.2/24, the LAN at 10.70.0.1
    lab.ok(&[
        "network",
        "create",
        "nic",
        "--driver",
        "host-device",
        "--device",
        "nic1",
    ]);
    let c = lab.netns("c");
    let attach = ["attach", c.as_str(), "nic"];
    let points = trace(&lab, &attach);
    let n = points.len();
    assert!(n >= 4, "a host-device attach passes failpoints: {points:?}");
    assert_consistent(&lab, &[&c]);
    lab.ok(&["detach", &c]);
    let at_home = |what: &str| {
        let addrs = addresses(&lab.host);
        assert!(
            addrs
                .get("nic1")
                .is_some_and(|a| a.contains("10.70.0.2/24")),
            "{what}: nic1 is back on the host with its address: {addrs:?}"
        );
        assert!(
            lab.ping(&lab.host, "10.70.0.1"),
            "{what}: the host uses nic1 again"
        );
    };
    at_home("detach");
    for k in 1..=n {
        let what = kill_and_recover(&lab, "host-device attach", &attach, &points, k, &[&c]);
        if k < n {
            assert_not_attached(&lab, &c);
            at_home(&what);
        } else {
            assert_attached_as(&lab, &c, "nic", "eth0", "10.70.0.2");
            lab.ok(&["detach", &c]);
            at_home(&what);
        }
        lab.ok(&attach);
        assert_attached_as(&lab, &c, "nic", "eth0", "10.70.0.2");
        assert!(lab.ping(&c, "10.70.0.1"), "{what}: the container uses nic1");
        lab.ok(&["detach", &c]);
    }
}

/// What a network may change on the host and must give back: every
/// IPv4 address, every route (main table and the others), every rule.
fn host_snapshot(lab: &Lab) -> BTreeSet<String> {
    let h = &lab.host;
    let mut out = BTreeSet::new();
    for (ifname, addrs) in addresses(h) {
        for a in addrs {
            out.insert(format!("addr {ifname} {a}"));
        }
    }
    for line in must(&format!("ip -n {h} -4 route show table all")).lines() {
        // Local and broadcast routes follow addresses; what matters is
        // the rest.
        if !line.starts_with("local ") && !line.starts_with("broadcast ") {
            // (A bridge's carrier comes and goes with its ports.)
            out.insert(format!(
                "route {}",
                line.trim().trim_end_matches(" linkdown")
            ));
        }
    }
    for line in must(&format!("ip -n {h} -4 rule")).lines() {
        out.insert(format!("rule {}", line.trim()));
    }
    out
}

fn assert_same_host(lab: &Lab, before: &BTreeSet<String>, what: &str) {
    let now = host_snapshot(lab);
    assert!(
        &now == before,
        "{what}: the host is not as it was: gained {:?}, lost {:?}",
        now.difference(before).collect::<Vec<_>>(),
        before.difference(&now).collect::<Vec<_>>()
    );
}

#[test]
fn every_kill_during_a_bridged_network_create_and_rm_gives_the_uplink_back() {
    let lab = Lab::new("cb");
    lab.nic_on_lan(); // the host's nic1 at 10.70.0.2/24, the LAN at 10.70.0.1
    must(&format!(
        "ip -n {} route add default via 10.70.0.1",
        lab.host
    ));
    let br = bridge_name(&lab, "b");
    let create = [
        "network",
        "create",
        "lan",
        "--mode",
        "bridged",
        "--uplink",
        "nic1",
        "--subnet",
        "10.70.0.0/24",
        "--gateway",
        "10.70.0.1",
        "--ip-range",
        "10.70.0.128/25",
        "--bridge",
        &br,
    ];
    let rm = ["network", "rm", "lan", "--force"];
    lab.ok(&create);
    lab.ok(&rm);
    let before = host_snapshot(&lab);
    let nic1_free = |what: &str| {
        assert!(
            host_links(&lab)
                .get("nic1")
                .is_some_and(|l| l.master.is_none() && l.up),
            "{what}: nic1 is free and up"
        );
        assert!(!lab.host_links().contains(&br), "{what}: bridge {br} left");
        assert!(
            lab.ping(&lab.host, "10.70.0.1"),
            "{what}: the host reaches its LAN"
        );
    };
    let points = trace(&lab, &create);
    let n = points.len();
    assert!(n >= 4, "a bridged create passes failpoints: {points:?}");
    assert_consistent(&lab, &[]);
    lab.ok(&rm);
    assert_same_host(&lab, &before, "create then rm");
    for k in 1..=n {
        let what = kill_and_recover(&lab, "bridged network create", &create, &points, k, &[]);
        if k == n {
            lab.ok(&rm);
        }
        assert_eq!(network_names(&lab), Vec::<String>::new(), "{what}");
        assert_same_host(&lab, &before, &what);
        nic1_free(&what);
    }

    let c = lab.netns("c");
    lab.ok(&create);
    lab.ok(&["attach", &c, "lan"]);
    let points = trace(&lab, &rm);
    let n = points.len();
    assert_same_host(&lab, &before, "rm --force");
    for k in 1..=n {
        let what = format!(
            "bridged network rm --force killed at {k} ({})",
            points[k - 1]
        );
        lab.ok(&create);
        lab.ok(&["attach", &c, "lan"]);
        assert!(
            lab.ping(&c, "10.70.0.1"),
            "{what}: the container is on the LAN"
        );
        killed_at(&lab, &rm, k, &points[k - 1]);
        if k < n {
            assert_left_an_intent(&lab, &what);
        }
        gc(&lab, &what);
        assert_consistent(&lab, &[&c]);
        assert_eq!(network_names(&lab), Vec::<String>::new(), "{what}");
        assert_not_attached(&lab, &c);
        assert_same_host(&lab, &before, &what);
        nic1_free(&what);
    }
}

#[test]
fn every_kill_during_an_egress_network_create_and_rm_leaves_no_rule_or_table() {
    let lab = Lab::new("ce");
    lab.upstream("10.73.0"); // uplink0 at 10.73.0.2, default route via .1
    let create = [
        "network",
        "create",
        "out",
        "--subnet",
        "10.74.0.0/24",
        "--egress-interface",
        "uplink0",
        "--egress-gateway",
        "10.73.0.1",
    ];
    let rm = ["network", "rm", "out", "--force"];
    lab.ok(&create);
    lab.ok(&rm);
    let before = host_snapshot(&lab);
    let points = trace(&lab, &create);
    let n = points.len();
    assert!(n >= 4, "an egress create passes failpoints: {points:?}");
    let table = inspect_network(&lab, "out")["Egress"].clone();
    assert!(!table.is_null(), "the network has a table of its own");
    lab.ok(&rm);
    assert_same_host(&lab, &before, "create then rm");
    for k in 1..=n {
        let what = kill_and_recover(&lab, "egress network create", &create, &points, k, &[]);
        if k == n {
            lab.ok(&rm);
        }
        assert_eq!(network_names(&lab), Vec::<String>::new(), "{what}");
        assert_same_host(&lab, &before, &what);
    }

    let c = lab.netns("c");
    lab.ok(&create);
    lab.ok(&["attach", &c, "out"]);
    let points = trace(&lab, &rm);
    let n = points.len();
    for k in 1..=n {
        let what = format!(
            "egress network rm --force killed at {k} ({})",
            points[k - 1]
        );
        lab.ok(&create);
        lab.ok(&["attach", &c, "out"]);
        killed_at(&lab, &rm, k, &points[k - 1]);
        if k < n {
            assert_left_an_intent(&lab, &what);
        }
        gc(&lab, &what);
        assert_consistent(&lab, &[&c]);
        assert_eq!(network_names(&lab), Vec::<String>::new(), "{what}");
        assert_not_attached(&lab, &c);
        assert_same_host(&lab, &before, &what);
    }

    // An attachment with an uplink of its own (a table and rules of its
    // own) on a network without.
    nat_network(&lab, "plain", "10.75.0.0/24", &[]);
    let before = host_snapshot(&lab);
    let attach = [
        "attach",
        c.as_str(),
        "plain",
        "--egress-interface",
        "uplink0",
        "--egress-gateway",
        "10.73.0.1",
    ];
    let points = trace(&lab, &attach);
    let n = points.len();
    assert!(
        host_snapshot(&lab)
            .iter()
            .any(|l| l.starts_with("rule ") && l.contains("10.75.0.")),
        "the attachment's rules are there"
    );
    lab.ok(&["detach", &c]);
    assert_same_host(&lab, &before, "attach then detach");
    for k in 1..=n {
        let what = format!(
            "attach with its own uplink killed at {k} ({})",
            points[k - 1]
        );
        killed_at(&lab, &attach, k, &points[k - 1]);
        if k < n {
            assert_left_an_intent(&lab, &what);
        }
        gc(&lab, &what);
        assert_consistent(&lab, &[&c]);
        if k == n {
            lab.ok(&["detach", &c]);
        }
        assert_not_attached(&lab, &c);
        assert_same_host(&lab, &before, &what);
    }
}

/// `plumb up` killed at each of its points (networks, a namespace plumb
/// makes, an attachment): `gc` then `down` leave nothing, a namespace
/// included (recorded before it is made), and `up` works again.
#[test]
fn every_kill_during_plumb_up_is_cleaned_by_gc_and_down() {
    let lab = Lab::new("cup");
    let ns = lab.name("lab1");
    let file = lab.state.path().join("t.toml");
    std::fs::write(
        &file,
        format!(
            "[[network]]\nname = \"u1\"\nsubnet = [\"10.88.1.0/24\"]\n\n[[namespace]]\nname = \"{ns}\"\n\n[[attach]]\ntarget = \"{ns}\"\nnetwork = \"u1\"\n"
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    // The first command makes the store: trace what finds it there.
    lab.ok(&["network", "ls"]);
    let points = trace(&lab, &["up", f]);
    let n = points.len();
    assert!(
        points.iter().any(|p| p == "namespace recorded"),
        "{points:?}"
    );
    lab.ok(&["down", f]);
    for k in 1..=n {
        let what = format!("up killed at {k} ({})", points[k - 1]);
        killed_at(&lab, &["up", f], k, &points[k - 1]);
        gc(&lab, &what);
        assert_consistent(&lab, &[]);
        lab.ok(&["down", f]);
        assert!(
            !std::path::Path::new("/run/netns").join(&ns).exists(),
            "{what}: the namespace outlived down"
        );
        assert!(lab.ok(&["network", "ls"]).lines().count() <= 1, "{what}");
        lab.ok(&["up", f]);
        assert_attached_as(&lab, &ns, "u1", "eth0", "10.88.1.2");
        lab.ok(&["down", f]);
    }
}
