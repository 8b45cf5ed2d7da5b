//! Elements of plumb's nftables sets: what an attach, a detach or a new
//! DHCP lease adds to the rules that are already written. One batch of
//! them is one transaction, sent over nfnetlink by plumb itself; a table
//! written whole takes its elements from here too.

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::netlink::nftable::Set;
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

/// The bytes of `e`'s key and data.
fn encoded(e: &Element) -> NlElement {
    let bytes = |keys: &[Key]| set_key(&keys.iter().map(Key::field).collect::<Vec<_>>());
    NlElement {
        key: bytes(&e.key),
        data: (!e.data.is_empty()).then(|| bytes(&e.data)),
    }
}

/// Put `elements` into the sets they name, of a table written whole.
pub fn fill(sets: &mut [Set], elements: &[Element]) {
    for e in elements {
        if let Some(set) = sets.iter_mut().find(|s| s.name == e.set) {
            set.elements.push(encoded(e));
        }
    }
}

fn change(add: bool, e: &Element) -> Change<'_> {
    let family = match e.family {
        "bridge" => NfFamily::Bridge,
        _ => NfFamily::Inet,
    };
    let elements = vec![encoded(e)];
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
    with_socket(|nl| nl.apply(&changes))
        .map_err(|e| Error::kernel("update plumb's nftables sets", e))
}

thread_local! {
    /// One nfnetlink socket per thread for element changes, kept: closing
    /// one that deleted elements makes the kernel wait for the transaction's
    /// cleanup (10 to 20 ms here), which a thousand detaches in a row
    /// would pay a thousand times. A thread stays in the host's namespace
    /// whenever it changes elements.
    static SOCKET: std::cell::RefCell<Option<NfNetlink>> = const { std::cell::RefCell::new(None) };
}

/// Run `f` on this thread's socket (opened at the first use); a socket that
/// failed below the kernel's answers is dropped and opened again next time.
fn with_socket<T>(
    f: impl FnOnce(&mut NfNetlink) -> crate::netlink::NlResult<T>,
) -> crate::netlink::NlResult<T> {
    SOCKET.with(|cell| {
        let mut slot = cell.borrow_mut();
        let nl = match slot.as_mut() {
            Some(nl) => nl,
            None => slot.insert(NfNetlink::open()?),
        };
        let out = f(nl);
        if matches!(
            out,
            Err(crate::netlink::NetlinkError::Io(_) | crate::netlink::NetlinkError::Decode(_))
        ) {
            *slot = None;
        }
        out
    })
}

/// Take `remove` out of their sets, those that are there: what finishing
/// or undoing a change that stopped half way needs. Before Linux 6.3 a
/// batch fails whole on one absent element (ENOENT), or on a set or table
/// that is gone; then each goes alone.
pub fn withdraw(remove: &[Element]) -> Result<()> {
    if remove.is_empty() {
        return Ok(());
    }
    let gone = |e: &crate::netlink::NetlinkError| e.is(libc::ENOENT);
    let all: Vec<Change> = remove.iter().map(|e| change(false, e)).collect();
    with_socket(|nl| {
        match nl.apply(&all) {
            Err(e) if gone(&e) => {}
            other => return other,
        }
        for c in &all {
            match nl.apply(std::slice::from_ref(c)) {
                Err(e) if !gone(&e) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    })
    .map_err(|e| Error::kernel("update plumb's nftables sets", e))
}
