//! plumb's nftables tables, written over nfnetlink, as `nft list ruleset`
//! shows them for a ruleset that uses every kind of rule plumb writes:
//! NAT and routed bridges, an uplink, IPv4 and IPv6, published ports with
//! and without a host address, a static address, an attachment that may
//! spoof, policies by network, tenant, CIDR (whole bytes or not),
//! attachment and label, with protocols and port ranges, and Docker's
//! FORWARD chains, where `iptables-save` must read plumb's accepts back.
//!
//! The expected listing (`fixtures/firewall_ruleset.nft`) is what nft
//! printed when plumb still wrote these tables as nft text through
//! libnftables; the bytecode was the same rule for rule
//! (`nft --debug=netlink`); the accepts in iptables' chains have since
//! become the rules iptables writes itself. Names that differ between runs (the lab's
//! prefix, host ports, selector sets) and the order of set elements are
//! normalised. `PLUMB_BLESS=1` rewrites the fixture.

mod common;

use std::collections::BTreeMap;

use common::{Lab, must};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/firewall_ruleset.nft"
);

#[test]
fn the_tables_list_as_nft_wrote_them_from_text() {
    let lab = Lab::new("fwl");
    // Docker's chains, made by iptables, with a rule of their own below
    // plumb's accepts.
    for cmd in ["iptables", "ip6tables"] {
        must(&format!(
            "ip netns exec {host} {cmd} -P FORWARD DROP && ip netns exec {host} {cmd} -A FORWARD",
            host = lab.host
        ));
    }
    must(&format!(
        "ip -n {} link add up0 type veth peer name up0p",
        lab.host
    ));
    let networks: [&[&str]; 5] = [
        &[
            "a",
            "--subnet",
            "10.1.0.0/24",
            "--subnet",
            "fd01::/64",
            "--tenant",
            "t1",
        ],
        &[
            "b",
            "--subnet",
            "10.2.0.0/16",
            "--mode",
            "routed",
            "--tenant",
            "t1",
        ],
        &["c", "--subnet", "10.3.0.0/24", "--uplink", "up0"],
        &["d", "--subnet", "10.4.0.0/25", "--mode", "routed"],
        &["e", "--subnet", "10.5.0.0/25", "--subnet", "fd05::/60"],
    ];
    for args in networks {
        lab.ok(&[&["network", "create"], args].concat());
    }
    let containers: [(&str, &str, &[&str]); 5] = [
        (
            "c1",
            "a",
            &[
                "--publish",
                "8080:80",
                "--publish",
                "127.0.0.1:5353-5354:53-54/udp",
                "--label",
                "role=web",
            ],
        ),
        ("c2", "a", &["--label", "role=db"]),
        ("c3", "b", &["--allow-spoofing"]),
        ("c4", "c", &["--publish", "10.9.9.9:443:443/tcp"]),
        ("c5", "d", &["--ip", "10.4.0.77"]),
    ];
    let mut names = BTreeMap::new();
    for (i, (short, network, extra)) in containers.iter().enumerate() {
        let target = lab.netns(short);
        // A fixed MAC: the guard sets hold it and its link-local address.
        let mac = format!("02:00:00:00:00:{:02x}", i + 1);
        lab.ok(&[&["attach", &target, network, "--mac", &mac], *extra].concat());
        let port = lab.inspect(&target)["NetworkSettings"]["Networks"][network]["HostIfName"]
            .as_str()
            .expect("HostIfName")
            .to_string();
        names.insert(port, format!("PORT-{short}"));
    }
    let c1 = lab.name("c1");
    let policies: [&str; 9] = [
        "a allow from a to label:role=db proto tcp port 5432",
        "a deny from a to 192.168.6.0/23 proto icmp",
        "tenant:t1 allow from tenant:t1 to b proto udp port 1000-2000 priority 50",
        &format!("b deny from b to attachment:{c1} priority 10"),
        "d allow from d to fd01::/64",
        "d allow from d to a proto icmp",
        "a deny from fd00::/8 to a",
        "a deny from a to 10.9.0.5 proto tcp",
        "a deny from a to fd02::/60 proto udp priority 7",
    ];
    for p in policies {
        let words: Vec<&str> = p.split(' ').collect();
        lab.ok(&[&["policy", "add"], &words[..]].concat());
    }

    // Stateless: no counter values, which traffic in the lab may move.
    let mut listed = must(&format!("ip netns exec {} nft -s list ruleset", lab.host));
    // iptables reads back what plumb wrote into its tables, comments too.
    for cmd in ["iptables-save", "ip6tables-save"] {
        let saved = must(&format!("ip netns exec {} {cmd} -t filter", lab.host));
        listed.push_str(&format!("\n# {cmd} -t filter\n"));
        for line in saved.lines().filter(|l| !l.starts_with('#')) {
            // A chain's packet counts (`:FORWARD DROP [0:0]`) are not kept.
            let line = match line.split_once(" [") {
                Some((chain, _)) if line.starts_with(':') => chain,
                _ => line,
            };
            listed.push_str(line);
            listed.push('\n');
        }
    }
    names.insert(lab.prefix.clone(), "LAB-".into());
    let actual = normalise(&listed, &names);
    if std::env::var_os("PLUMB_BLESS").is_some() {
        std::fs::write(FIXTURE, &actual).expect("write the fixture");
    }
    let expected = std::fs::read_to_string(FIXTURE).expect("read the fixture");
    let differ: Vec<String> = actual
        .lines()
        .zip(expected.lines())
        .enumerate()
        .filter(|(_, (a, e))| a != e)
        .map(|(i, (a, e))| format!("line {}:\n  listed:   {a}\n  expected: {e}", i + 1))
        .collect();
    assert!(
        differ.is_empty() && actual.lines().count() == expected.lines().count(),
        "the listing differs from {FIXTURE}:\n{}\n\nwhole listing:\n{actual}",
        differ.join("\n")
    );
}

/// `listed` with every key of `names` replaced by its value, the selector
/// sets' hashed names (`a` + 12 hex digits + `4` or `6`) by `aSET`, and
/// the items of every `{ ... }` (set elements, anonymous sets, which nft
/// lists in hash order) sorted, on one line.
fn normalise(listed: &str, names: &BTreeMap<String, String>) -> String {
    let mut text = listed.to_string();
    for (from, to) in names {
        text = text.replace(from, to);
    }
    let mut sorted = String::new();
    let mut rest = text.as_str();
    while let Some(open) = rest.find("{ ") {
        let Some(close) = rest[open..].find(" }") else {
            break;
        };
        sorted.push_str(&rest[..open]);
        let mut items: Vec<&str> = rest[open + 2..open + close]
            .split(',')
            .map(str::trim)
            .collect();
        items.sort();
        sorted.push_str(&format!("{{ {} }}", items.join(", ")));
        rest = &rest[open + close + 2..];
    }
    sorted.push_str(rest);
    hide_selector_sets(&sorted)
}

fn hide_selector_sets(text: &str) -> String {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric();
    let is_set_name = |i: usize| {
        i + 14 <= b.len()
            && (i == 0 || !word(b[i - 1]))
            && b[i] == b'a'
            && b[i + 1..i + 13]
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
            && matches!(b[i + 13], b'4' | b'6')
            && (i + 14 == b.len() || !word(b[i + 14]))
    };
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i < b.len() {
        if is_set_name(i) {
            out.push_str(&text[copied..i]);
            out.push_str("aSET");
            copied = i + 13;
            i += 14;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}
