//! Elements of plumb's nftables sets: what an attach, a detach or a new
//! DHCP lease adds to the rules that are already written. One batch of
//! them is one transaction, sent over nfnetlink by plumb itself: no
//! libnftables on the hot path of an attach.

use std::fmt;
use std::fmt::Write;
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::netlink::{Change, Element as NlElement, Field, NfFamily, NfNetlink, set_key};

/// One field of a set key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Ifname(String),
    Ether([u8; 6]),
    Ip(IpAddr),
    /// An address in a set typed by raw payload (an integer).
    Raw(IpAddr),
}

/// One element: a table, a set in it, and the element's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub family: &'static str,
    pub table: &'static str,
    pub set: String,
    pub key: Vec<Key>,
}

impl Element {
    pub fn bridge(set: &str, key: Vec<Key>) -> Self {
        Element {
            family: "bridge",
            table: crate::policy::antispoof::TABLE,
            set: set.into(),
            key,
        }
    }
    pub fn inet(set: String, key: Vec<Key>) -> Self {
        Element {
            family: "inet",
            table: crate::policy::firewall::TABLE,
            set,
            key,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Ifname(n) => write!(f, "\"{n}\""),
            Key::Ether(m) => write!(
                f,
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            Key::Ip(ip) => write!(f, "{ip}"),
            Key::Raw(IpAddr::V6(v6)) => write!(f, "0x{:032x}", u128::from(*v6)),
            Key::Raw(IpAddr::V4(v4)) => write!(f, "0x{:08x}", u32::from(*v4)),
        }
    }
}

/// `add`/`delete element` commands, one per element.
pub fn elements_text(verb: &str, elements: &[Element]) -> String {
    let mut out = String::new();
    for e in elements {
        let key: Vec<String> = e.key.iter().map(Key::to_string).collect();
        let _ = writeln!(
            out,
            "{verb} element {} {} {} {{ {} }}",
            e.family,
            e.table,
            e.set,
            key.join(" . ")
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
        }
    }
}

fn change(add: bool, e: &Element) -> Change<'_> {
    let family = match e.family {
        "bridge" => NfFamily::Bridge,
        _ => NfFamily::Inet,
    };
    let fields: Vec<Field> = e.key.iter().map(Key::field).collect();
    let elements = vec![NlElement {
        key: set_key(&fields),
        data: None,
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
