//! Elements of plumb's nftables sets: what an attach, a detach or a new
//! DHCP lease adds to the rules that are already written. One batch of
//! them is one transaction, sent over nfnetlink by plumb itself: no
//! libnftables on the hot path of an attach.

use std::fmt;
use std::fmt::Write;
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::model::Mac;
use crate::netlink::{Change, Element as NlElement, Field, NfFamily, NfNetlink, set_key};

/// One field of a set key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Ifname(String),
    Ether([u8; 6]),
    Ip(IpAddr),
    /// An address in a set typed by raw payload (an integer).
    Raw(IpAddr),
    /// An IP protocol number (inet_proto).
    Proto(u8),
    /// A port (inet_service).
    Port(u16),
}

/// One element: a table, a set (or map) in it, the element's key and, in
/// a map, the data it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub family: &'static str,
    pub table: &'static str,
    pub set: String,
    pub key: Vec<Key>,
    pub data: Vec<Key>,
}

impl Element {
    pub fn bridge(set: &str, key: Vec<Key>) -> Self {
        Element {
            family: "bridge",
            table: crate::policy::antispoof::TABLE,
            set: set.into(),
            key,
            data: Vec::new(),
        }
    }
    pub fn inet(set: String, key: Vec<Key>) -> Self {
        Element {
            family: "inet",
            table: crate::policy::firewall::TABLE,
            set,
            key,
            data: Vec::new(),
        }
    }
    /// An element of a map in `inet plumb`.
    pub fn inet_map(map: &str, key: Vec<Key>, data: Vec<Key>) -> Self {
        Element {
            data,
            ..Element::inet(map.into(), key)
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Ifname(n) => write!(f, "\"{n}\""),
            Key::Ether(m) => write!(f, "{}", Mac(*m)),
            Key::Ip(ip) => write!(f, "{ip}"),
            Key::Raw(IpAddr::V6(v6)) => write!(f, "0x{:032x}", u128::from(*v6)),
            Key::Raw(IpAddr::V4(v4)) => write!(f, "0x{:08x}", u32::from(*v4)),
            Key::Proto(6) => write!(f, "tcp"),
            Key::Proto(17) => write!(f, "udp"),
            Key::Proto(n) => write!(f, "{n}"),
            Key::Port(p) => write!(f, "{p}"),
        }
    }
}

/// `add`/`delete element` commands, one per element.
pub fn elements_text(verb: &str, elements: &[Element]) -> String {
    let mut out = String::new();
    for e in elements {
        let join = |keys: &[Key]| {
            keys.iter()
                .map(Key::to_string)
                .collect::<Vec<_>>()
                .join(" . ")
        };
        let data = if e.data.is_empty() {
            String::new()
        } else {
            format!(" : {}", join(&e.data))
        };
        let _ = writeln!(
            out,
            "{verb} element {} {} {} {{ {}{data} }}",
            e.family,
            e.table,
            e.set,
            join(&e.key)
        );
    }
    out
}

impl Key {
    fn field(&self) -> Field<'_> {
        match self {
            Key::Ifname(n) => Field::Ifname(n),
            Key::Ether(m) => Field::Ether(*m),
            Key::Ip(IpAddr::V4(ip)) | Key::Raw(IpAddr::V4(ip)) => Field::Ipv4(*ip),
            Key::Ip(IpAddr::V6(ip)) | Key::Raw(IpAddr::V6(ip)) => Field::Ipv6(*ip),
            Key::Proto(n) => Field::Proto(*n),
            Key::Port(p) => Field::Port(*p),
        }
    }
}

fn change(add: bool, e: &Element) -> Change<'_> {
    let family = match e.family {
        "bridge" => NfFamily::Bridge,
        _ => NfFamily::Inet,
    };
    let bytes = |keys: &[Key]| set_key(&keys.iter().map(Key::field).collect::<Vec<_>>());
    let elements = vec![NlElement {
        key: bytes(&e.key),
        data: (!e.data.is_empty()).then(|| bytes(&e.data)),
    }];
    if add {
        Change::Add {
            family,
            table: e.table,
            set: &e.set,
            elements,
        }
    } else {
        Change::Delete {
            family,
            table: e.table,
            set: &e.set,
            elements,
        }
    }
}

/// Take `remove` out and put `add` in, as one transaction.
pub fn apply(remove: &[Element], add: &[Element]) -> Result<()> {
    if remove.is_empty() && add.is_empty() {
        return Ok(());
    }
    let changes: Vec<Change> = remove
        .iter()
        .map(|e| change(false, e))
        .chain(add.iter().map(|e| change(true, e)))
        .collect();
    NfNetlink::open()
        .and_then(|mut nl| nl.apply(&changes))
        .map_err(|e| Error::kernel("update plumb's nftables sets", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_elements_print_their_data() {
        let e = Element::inet_map(
            "publish",
            vec![Key::Proto(6), Key::Port(8080)],
            vec![Key::Ip("10.0.0.2".parse().unwrap()), Key::Port(80)],
        );
        assert_eq!(
            elements_text("add", &[e]),
            "add element inet plumb publish { tcp . 8080 : 10.0.0.2 . 80 }\n"
        );
    }

    #[test]
    fn keys_print_as_nft_reads_them() {
        let e = Element::bridge(
            "target6",
            vec![
                Key::Ifname("pv1".into()),
                Key::Raw("fe80::1".parse().unwrap()),
            ],
        );
        assert_eq!(
            elements_text("add", &[e]),
            "add element bridge plumb target6 { \"pv1\" . 0xfe800000000000000000000000000001 }\n"
        );
    }
}
