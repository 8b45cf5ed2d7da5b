//! Fuzzing of what plumb reads from others: DHCP replies (and the IPv4/UDP
//! frames around them) from any host on the LAN, request lines on the
//! daemon's socket, topology files. Each target replays its corpus
//! (`tests/corpus/<target>/`, seeds and inputs that once went wrong) and
//! then a bounded number of proptest cases, random mutations of corpus
//! entries and random bytes: nothing may panic, and whatever is accepted
//! must hold what plumb relies on. `PROPTEST_CASES` raises the bound for a
//! longer run; a failure proptest finds is kept in
//! `tests/fuzz.proptest-regressions` and replayed first from then on, and
//! the input itself goes into the corpus (`found_*`).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use plumb::daemon::protocol::{Request, parse_request};
use plumb::ipam::dhcp::Reply;
use plumb::ipam::dhcp::frame::unframe;
use plumb::ipam::dhcp::message::parse_reply;
use plumb::topology::Topology;
use proptest::prelude::*;

/// The client the DHCP seeds were made for.
const XID: u32 = 0x1234_abcd;
const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x09];
const NOW: u64 = 1_800_000_000;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("corpus entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read corpus file"))
        })
        .collect();
    out.sort();
    assert!(out.len() >= 3, "corpus {target} has its seeds");
    out
}

/// A corpus entry with up to 8 random edits (set, flip a bit, insert,
/// delete a byte) and maybe cut short.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, b)| b).collect();
    let n = seeds.len();
    (
        0..n,
        prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 0..8),
        any::<Option<usize>>(),
    )
        .prop_map(move |(i, edits, cut)| {
            let mut v = seeds[i].clone();
            for (op, pos, b) in edits {
                if v.is_empty() {
                    v.push(b);
                    continue;
                }
                let p = pos % v.len();
                match op % 4 {
                    0 => v[p] = b,
                    1 => v[p] ^= 1 << (b % 8),
                    2 => v.insert(p, b),
                    _ => {
                        v.remove(p);
                    }
                }
            }
            if let Some(c) = cut {
                v.truncate(c % (v.len() + 1));
            }
            v
        })
}

/// What plumb relies on in a lease it takes: an address a host may have,
/// and times in order with their floors.
fn check_reply(data: &[u8]) {
    let Some(reply) = parse_reply(data, XID, &MAC, NOW) else {
        return;
    };
    if let Reply::Ack(l) = reply {
        let a = l.address.addr();
        assert!(
            !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.octets()[0] >= 240),
            "{l:?}"
        );
        if l.address.prefix_len() < 31 {
            assert!(
                a != l.address.network() && a != l.address.broadcast(),
                "{l:?}"
            );
        }
        assert!(l.lease_secs >= 4, "{l:?}");
        assert!(l.renew_secs >= 1 && l.renew_secs <= l.rebind_secs, "{l:?}");
        assert!(
            l.lease_secs == u32::MAX || l.rebind_secs <= l.lease_secs,
            "{l:?}"
        );
        assert_eq!(l.acquired_at, NOW);
        assert!(l.expires_at() >= l.rebind_at() && l.rebind_at() >= l.renew_at());
    }
}

/// An IPv4/UDP frame around `payload`, to the DHCP client port.
fn framed(payload: &[u8]) -> Vec<u8> {
    plumb::ipam::dhcp::frame::frame(Ipv4Addr::new(192, 168, 5, 1), Ipv4Addr::BROADCAST, payload)
}

fn check_frame(data: &[u8]) {
    if let Some(payload) = unframe(data) {
        let inside = data.as_ptr_range();
        let p = payload.as_ptr_range();
        assert!(p.start >= inside.start && p.end <= inside.end);
        check_reply(payload);
    }
}

fn check_request(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    match parse_request(&line) {
        Ok(call) => {
            if let Request::Attach { spec, .. } = call.request {
                assert!(spec.validate().is_ok(), "accepted means valid");
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

fn check_topology(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok((_, owner)) = Topology::parse(&text, "fuzz.toml", "fuzz") {
        assert!(owner.starts_with("topology:"), "{owner}");
    }
}

#[test]
fn the_dhcp_corpus_parses_as_its_names_say() {
    for (name, bytes) in corpus("dhcp") {
        check_reply(&bytes);
        check_frame(&framed(&bytes));
        let reply = parse_reply(&bytes, XID, &MAC, NOW);
        let kind = match &reply {
            Some(Reply::Offer { .. }) => "offer",
            Some(Reply::Ack(_)) => "ack",
            Some(Reply::Nak { .. }) => "nak",
            None => "none",
        };
        let expected = match name.as_str() {
            "offer.bin" => "offer",
            "ack_full.bin"
            | "ack_zero_lease.bin"
            | "ack_t1_after_lease.bin"
            | "ack_infinite.bin"
            | "ack_no_end.bin"
            | "ack_overloaded.bin"
            | "ack_bad_routes.bin" => "ack",
            "nak_message.bin" => "nak",
            // A network address, a mask with holes or an option past the
            // end are no lease; the rest, no reply at all.
            _ => "none",
        };
        assert_eq!(kind, expected, "{name}: {reply:?}");
        // Another client's reply is never taken.
        assert!(parse_reply(&bytes, XID + 1, &MAC, NOW).is_none(), "{name}");
        assert!(
            parse_reply(&bytes, XID, &[2, 0, 0, 0, 0, 8], NOW).is_none(),
            "{name}"
        );
    }
    let Some(Reply::Ack(full)) = parse_reply(&corpus_file("dhcp", "ack_full.bin"), XID, &MAC, NOW)
    else {
        panic!("ack_full.bin is an ACK");
    };
    assert_eq!(
        (full.renew_secs, full.rebind_secs, full.lease_secs),
        (300, 525, 600)
    );
    assert_eq!(full.mtu, Some(1400));
    assert_eq!(full.routes.len(), 2, "{full:?}");
    let Some(Reply::Ack(bad)) =
        parse_reply(&corpus_file("dhcp", "ack_bad_routes.bin"), XID, &MAC, NOW)
    else {
        panic!("ack_bad_routes.bin is an ACK");
    };
    assert!(
        bad.routes.is_empty(),
        "an ill-formed option 121 is ignored whole"
    );
    let Some(Reply::Ack(t1)) = parse_reply(
        &corpus_file("dhcp", "ack_t1_after_lease.bin"),
        XID,
        &MAC,
        NOW,
    ) else {
        panic!("ack_t1_after_lease.bin is an ACK");
    };
    assert_eq!(
        (t1.renew_secs, t1.rebind_secs),
        (30, 52),
        "defaults instead"
    );
}

fn corpus_file(target: &str, name: &str) -> Vec<u8> {
    corpus(target)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("{target}/{name}"))
}

#[test]
fn the_request_corpus_is_accepted_or_refused_with_a_reason() {
    for (name, bytes) in corpus("requests") {
        let line = String::from_utf8_lossy(&bytes);
        let parsed = parse_request(&line);
        match name.as_str() {
            "attach.json" | "detach.json" | "gc.json" | "status.json" => {
                assert!(parsed.is_ok(), "{name}: {parsed:?}")
            }
            _ => {
                let e = parsed.expect_err(&name);
                assert!(!e.is_empty(), "{name}");
            }
        }
    }
    let e = parse_request(&String::from_utf8_lossy(&corpus_file(
        "requests",
        "attach_bad.json",
    )))
    .unwrap_err();
    assert!(e.contains('`'), "names the field and value: {e}");
}

#[test]
fn the_topology_corpus_parses() {
    for (name, bytes) in corpus("topology") {
        let text = String::from_utf8(bytes).expect("UTF-8");
        let parsed = Topology::parse(&text, &name, "corpus");
        assert!(parsed.is_ok(), "{name}: {:?}", parsed.err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn dhcp_replies_never_panic_and_leases_hold(data in mutated("dhcp")) {
        check_reply(&data);
        check_frame(&framed(&data));
    }

    #[test]
    fn random_bytes_are_no_dhcp_reply_or_frame(data in prop::collection::vec(any::<u8>(), 0..700)) {
        check_reply(&data);
        check_frame(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn daemon_request_lines_never_panic(data in mutated("requests")) {
        check_request(&data);
    }

    #[test]
    fn random_request_lines_never_panic(line in ".{0,300}") {
        check_request(line.as_bytes());
    }

    #[test]
    fn topology_files_never_panic(data in mutated("topology")) {
        check_topology(&data);
    }
}
