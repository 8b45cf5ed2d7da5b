//! nftables set elements written natively over nfnetlink, checked against
//! what libnftables lists and what the packet path matches, each test in a
//! namespace of its own.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::process::{Command, Stdio};

use plumb::netlink::{Change, Element, Field, Netlink, NfFamily, NfNetlink, set_key};
use plumb::netns::{self, NsHandle};
use serde_json::{Value, json};

/// A private network namespace, removed on drop even when the test fails.
struct Ns {
    name: String,
    handle: NsHandle,
}

impl Ns {
    /// None (the test is skipped) when not root.
    fn new(tag: &str) -> Option<Ns> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: creating namespaces needs root");
            return None;
        }
        let name = format!("nfset{}{tag}", std::process::id());
        assert!(netns::create_named(&name).expect("create namespace"));
        let handle = match NsHandle::open(&netns::named_path(&name)) {
            Ok(h) => h,
            Err(e) => {
                let _ = netns::delete_named(&name);
                panic!("open namespace: {e}");
            }
        };
        Some(Ns { name, handle })
    }

    /// Run `nft` in the namespace, commands on its standard input.
    fn nft_with(&self, args: &[&str], commands: &str) -> String {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(commands.as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft {args:?}: {commands}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn nft(&self, commands: &str) -> String {
        self.nft_with(&["-f", "-"], commands)
    }

    /// A listing as nft's JSON, with rule handles.
    fn list(&self, what: &str) -> Value {
        let args: Vec<&str> = ["-j", "-a", "list"]
            .into_iter()
            .chain(what.split_whitespace())
            .collect();
        let text = self.nft_with(&args, "");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("list {what}: {e}: {text}"))
    }

    /// The elements of `set` or `map` `what` ("map bridge t m"), as nft's JSON shows them.
    fn elements(&self, what: &str) -> Vec<Value> {
        let listing = self.list(what);
        let kind = what.split(' ').next().unwrap();
        let object = listing["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|o| o.get(kind))
            .unwrap_or_else(|| panic!("no {kind} in {listing}"));
        object["elem"].as_array().cloned().unwrap_or_default()
    }

    fn apply(&self, changes: &[Change]) -> plumb::netlink::NlResult<()> {
        NfNetlink::open_in(&self.handle)?.apply(changes)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = netns::delete_named(&self.name);
    }
}

const TABLES: &str = "
table bridge t {
    set ports { type ifname . ether_addr . ipv4_addr; }
    map m { type inet_proto . inet_service : ipv4_addr . inet_service; }
    set s6 { type ifname . ipv6_addr; }
}
table inet f {
    set svc { type inet_service; }
    set protos { type inet_proto; }
}";

fn port(name: &str, last: u8) -> Element {
    Element {
        key: set_key(&[
            Field::Ifname(name),
            Field::Ether([2, 0, 0, 0, 0, last]),
            Field::Ipv4(Ipv4Addr::new(10, 0, 0, last)),
        ]),
        data: None,
    }
}

fn single(field: Field) -> Element {
    Element {
        key: set_key(&[field]),
        data: None,
    }
}

fn everything() -> Vec<Change<'static>> {
    let published = Element {
        key: set_key(&[Field::Proto(6), Field::Port(8080)]),
        data: Some(set_key(&[
            Field::Ipv4(Ipv4Addr::new(10, 0, 0, 2)),
            Field::Port(80),
        ])),
    };
    let v6 = Element {
        key: set_key(&[
            Field::Ifname("veth1"),
            Field::Ipv6("fd00::2".parse::<Ipv6Addr>().unwrap()),
        ]),
        data: None,
    };
    let bridge = |set, elements| Change::Add {
        family: NfFamily::Bridge,
        table: "t",
        set,
        elements,
    };
    let inet = |set, elements| Change::Add {
        family: NfFamily::Inet,
        table: "f",
        set,
        elements,
    };
    vec![
        bridge("ports", vec![port("veth1", 2), port("veth2", 3)]),
        bridge("m", vec![published]),
        bridge("s6", vec![v6]),
        inet("svc", vec![single(Field::Port(53))]),
        inet("protos", vec![single(Field::Proto(17))]),
    ]
}

/// The same changes, as deletes.
fn deletes(changes: Vec<Change<'static>>) -> Vec<Change<'static>> {
    changes
        .into_iter()
        .map(|c| match c {
            Change::Add {
                family,
                table,
                set,
                elements,
            } => Change::Delete {
                family,
                table,
                set,
                elements,
            },
            delete => delete,
        })
        .collect()
}

fn assert_all_empty(ns: &Ns) {
    for what in [
        "set bridge t ports",
        "map bridge t m",
        "set bridge t s6",
        "set inet f svc",
        "set inet f protos",
    ] {
        assert_eq!(ns.elements(what), Vec::<Value>::new(), "{what}");
    }
}

#[test]
fn elements_are_added_listed_and_deleted() {
    let Some(ns) = Ns::new("add") else { return };
    ns.nft(TABLES);

    ns.apply(&everything()).unwrap();
    // Adding what is there already is not an error.
    ns.apply(&everything()).unwrap();

    assert_eq!(
        ns.elements("set bridge t ports"),
        [
            json!({"concat": ["veth1", "02:00:00:00:00:02", "10.0.0.2"]}),
            json!({"concat": ["veth2", "02:00:00:00:00:03", "10.0.0.3"]}),
        ]
    );
    assert_eq!(
        ns.elements("map bridge t m"),
        [json!([{"concat": ["tcp", 8080]}, {"concat": ["10.0.0.2", 80]}])]
    );
    assert_eq!(
        ns.elements("set bridge t s6"),
        [json!({"concat": ["veth1", "fd00::2"]})]
    );
    assert_eq!(ns.elements("set inet f svc"), [json!(53)]);
    assert_eq!(ns.elements("set inet f protos"), [json!("udp")]);

    ns.apply(&deletes(everything())).unwrap();
    assert_all_empty(&ns);
    // Deleting what is not there is not an error either.
    ns.apply(&deletes(everything())).unwrap();
}

#[test]
fn a_failing_change_leaves_the_whole_batch_unapplied() {
    let Some(ns) = Ns::new("atomic") else { return };
    ns.nft(TABLES);

    let mut changes = everything();
    changes.insert(
        2,
        Change::Add {
            family: NfFamily::Bridge,
            table: "t",
            set: "nope",
            elements: vec![port("veth9", 9)],
        },
    );
    let err = ns.apply(&changes).unwrap_err();
    assert!(err.is(libc::ENOENT), "{err}");
    assert!(err.to_string().contains("bridge t nope"), "{err}");
    assert_all_empty(&ns);

    // A map element that exists with other data is refused, whole batch too.
    ns.apply(&everything()[1..2]).unwrap();
    let other = Change::Add {
        family: NfFamily::Bridge,
        table: "t",
        set: "m",
        elements: vec![Element {
            key: set_key(&[Field::Proto(6), Field::Port(8080)]),
            data: Some(set_key(&[
                Field::Ipv4(Ipv4Addr::new(10, 0, 0, 9)),
                Field::Port(80),
            ])),
        }],
    };
    let err = ns.apply(&[everything().remove(0), other]).unwrap_err();
    assert!(err.is(libc::EEXIST), "{err}");
    assert_eq!(ns.elements("set bridge t ports"), Vec::<Value>::new());

    // A key of the wrong length names its set.
    let err = ns
        .apply(&[Change::Add {
            family: NfFamily::Inet,
            table: "f",
            set: "svc",
            elements: vec![single(Field::Ipv4(Ipv4Addr::LOCALHOST))],
        }])
        .unwrap_err();
    assert!(err.is(libc::EINVAL), "{err}");
    assert!(err.to_string().contains("inet f svc"), "{err}");
}

#[test]
fn every_family_reaches_its_table() {
    let Some(ns) = Ns::new("family") else { return };
    ns.nft(
        "table ip a { set s { type ipv4_addr; }; }
         table ip6 b { set s { type ipv6_addr; }; }
         table netdev c { set s { type ether_addr; }; }",
    );
    let add = |family, table, field| Change::Add {
        family,
        table,
        set: "s",
        elements: vec![single(field)],
    };
    ns.apply(&[
        add(NfFamily::Ip, "a", Field::Ipv4(Ipv4Addr::new(192, 0, 2, 1))),
        add(NfFamily::Ip6, "b", Field::Ipv6(Ipv6Addr::LOCALHOST)),
        add(NfFamily::Netdev, "c", Field::Ether([2, 0, 0, 0, 0, 0xaa])),
    ])
    .unwrap();
    assert_eq!(ns.elements("set ip a s"), [json!("192.0.2.1")]);
    assert_eq!(ns.elements("set ip6 b s"), [json!("::1")]);
    assert_eq!(ns.elements("set netdev c s"), [json!("02:00:00:00:00:aa")]);
}

#[test]
fn thousands_of_elements_go_in_one_batch() {
    let Some(ns) = Ns::new("many") else { return };
    ns.nft(TABLES);
    let names: Vec<String> = (0..6000).map(|i| format!("v{i}")).collect();
    let elements: Vec<Element> = names
        .iter()
        .enumerate()
        .map(|(i, name)| port(name, i as u8))
        .collect();
    let add = Change::Add {
        family: NfFamily::Bridge,
        table: "t",
        set: "ports",
        elements: elements.clone(),
    };
    // ~240 KB: more than the default send buffer, and many messages.
    ns.apply(&[add]).unwrap();
    assert_eq!(ns.elements("set bridge t ports").len(), 6000);
    ns.apply(&[Change::Delete {
        family: NfFamily::Bridge,
        table: "t",
        set: "ports",
        elements,
    }])
    .unwrap();
    assert_eq!(ns.elements("set bridge t ports"), Vec::<Value>::new());
}

#[test]
fn a_native_key_matches_on_the_packet_path() {
    let Some(ns) = Ns::new("path") else { return };
    ns.handle
        .run(|| {
            let mut nl = Netlink::open()?;
            let lo = nl.link_by_name("lo")?.expect("lo");
            nl.set_up(lo.index)
        })
        .unwrap()
        .unwrap();
    ns.nft(
        "table inet p {
            set hits { type ifname . ipv4_addr . inet_proto . inet_service; }
            chain out {
                type filter hook output priority 0;
                oifname . ip daddr . meta l4proto . udp dport @hits counter
            }
        }",
    );
    ns.apply(&[Change::Add {
        family: NfFamily::Inet,
        table: "p",
        set: "hits",
        elements: vec![Element {
            key: set_key(&[
                Field::Ifname("lo"),
                Field::Ipv4(Ipv4Addr::LOCALHOST),
                Field::Proto(libc::IPPROTO_UDP as u8),
                Field::Port(9),
            ]),
            data: None,
        }],
    }])
    .unwrap();
    ns.handle
        .run(|| {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.send_to(b"in the set", "127.0.0.1:9")?;
            socket.send_to(b"not in the set", "127.0.0.1:10")
        })
        .unwrap()
        .unwrap();
    let chain = ns.list("chain inet p out");
    let counter = chain["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o.get("rule"))
        .and_then(|rule| rule["expr"].as_array())
        .and_then(|exprs| exprs.iter().find_map(|e| e.get("counter")))
        .cloned()
        .unwrap_or_else(|| panic!("no counter in {chain}"));
    assert_eq!(counter["packets"], 1, "{chain}");
}

/// The questions the daemon asks twice a second, answered natively, against
/// what nft lists: tables and chains that exist or not, and exactly the
/// rules with the comment asked for (none in a chain without them).
#[test]
fn tables_chains_and_commented_rules_are_found_natively() {
    let Some(ns) = Ns::new("query") else { return };
    ns.nft(
        "table ip filter {
            chain FORWARD { type filter hook forward priority 0; policy drop;
                iifname \"a\" accept comment \"plumb\"
                iifname \"b\" accept comment \"docker\"
                iifname \"c\" accept
                oifname \"d\" accept comment \"plumb\"
            }
            chain OTHER { iifname \"e\" accept comment \"plumb\"; }
        }
        table bridge guard { }",
    );
    let mut nf = NfNetlink::open_in(&ns.handle).unwrap();
    assert!(nf.table_exists(NfFamily::Ip, "filter").unwrap());
    assert!(nf.table_exists(NfFamily::Bridge, "guard").unwrap());
    assert!(!nf.table_exists(NfFamily::Inet, "filter").unwrap());
    assert!(!nf.table_exists(NfFamily::Ip6, "filter").unwrap());
    assert!(nf.chain_exists(NfFamily::Ip, "filter", "FORWARD").unwrap());
    assert!(!nf.chain_exists(NfFamily::Ip, "filter", "INPUT").unwrap());
    assert!(!nf.chain_exists(NfFamily::Ip6, "filter", "FORWARD").unwrap());

    let listed: Vec<u64> = ns.list("chain ip filter FORWARD")["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["comment"] == "plumb")
        .map(|r| r["handle"].as_u64().unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    let commented = |nf: &mut NfNetlink, chain: Option<&str>, comment: &str| -> Vec<u64> {
        nf.rules(NfFamily::Ip, "filter", chain)
            .unwrap()
            .into_iter()
            .filter(|r| r.comment.as_deref() == Some(comment))
            .map(|r| r.handle)
            .collect()
    };
    assert_eq!(commented(&mut nf, Some("FORWARD"), "plumb"), listed);
    assert!(commented(&mut nf, Some("FORWARD"), "nobody").is_empty());
    // The whole table: OTHER's rule too, each with its chain.
    let all = nf.rules(NfFamily::Ip, "filter", None).unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(
        all.iter()
            .filter(|r| r.comment.as_deref() == Some("plumb"))
            .map(|r| r.chain.as_str())
            .collect::<Vec<_>>(),
        ["FORWARD", "FORWARD", "OTHER"]
    );
    assert!(nf.rules(NfFamily::Ip6, "filter", None).unwrap().is_empty());
    // The same socket keeps answering after a refused question.
    assert!(nf.table_exists(NfFamily::Ip, "filter").unwrap());
}

/// A whole table written natively: made when absent, replaced whole when
/// present (what it held before is gone), deleted; nft lists what was meant.
#[test]
fn a_native_table_is_made_replaced_and_deleted() {
    use plumb::netlink::nftable::{
        Base, Chain, CmpOp, Edit, Expr, Hook, KEY_BIG_ENDIAN, MetaKey, Rule, Set, TYPE_INTEGER,
        TYPE_IPADDR, Table, Verdict,
    };
    let Some(ns) = Ns::new("tbl") else { return };
    let table = |addrs: &[[u8; 4]]| Table {
        family: NfFamily::Inet,
        name: "t".into(),
        sets: vec![Set {
            elements: addrs
                .iter()
                .map(|a| Element {
                    key: a.to_vec(),
                    data: None,
                })
                .collect(),
            ..Set::new("a", TYPE_IPADDR, 4, KEY_BIG_ENDIAN)
        }],
        chains: vec![Chain {
            name: "c".into(),
            hook: Some(Hook {
                kind: "filter",
                number: 2, // NF_INET_FORWARD
                priority: 0,
                device: None,
            }),
            rules: vec![Rule::new(vec![
                Expr::Meta(MetaKey::L4Proto),
                Expr::In {
                    key_type: TYPE_INTEGER,
                    key_len: 1,
                    keys: vec![vec![6], vec![17]],
                    invert: false,
                },
                Expr::Payload {
                    base: Base::Transport,
                    offset: 2,
                    len: 2,
                },
                Expr::Cmp(CmpOp::Neq, vec![0, 53]),
                Expr::Verdict(Verdict::Drop),
            ])],
        }],
    };
    let edit = |e: Edit| NfNetlink::open_in(&ns.handle).unwrap().edit(&[e]);
    edit(Edit::Replace(table(&[[10, 0, 0, 1]]))).expect("made");
    edit(Edit::Replace(table(&[[10, 0, 0, 2], [10, 0, 0, 3]]))).expect("replaced");
    let listed = ns.nft("list table inet t");
    assert!(
        listed.contains("elements = { 10.0.0.2, 10.0.0.3 }"),
        "{listed}"
    );
    assert!(!listed.contains("10.0.0.1"), "{listed}");
    assert_eq!(listed.matches("th dport != 53 drop").count(), 1, "{listed}");
    assert!(
        listed.contains("hook forward priority filter; policy accept;"),
        "{listed}"
    );
    let delete = || Edit::Delete {
        family: NfFamily::Inet,
        name: "t".into(),
    };
    edit(delete()).expect("deleted");
    assert!(!ns.nft("list tables").contains("inet t"));
    edit(delete()).expect("deleting an absent table is no error");
}
