//! DHCPv4 client run by the daemon inside containers' namespaces: the
//! messages (pure), their framing and sockets, the exchanges, and the lease
//! as stored.

pub mod client;
pub mod frame;
pub mod lease;
pub mod message;
mod socket;
pub mod v6;

pub use client::{Client, DhcpError, now_unix};
pub use lease::Lease;
pub use message::{Identity, Reply};

/// Bytes as lowercase hex: how client ids and DUIDs are stored and shown.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex back into bytes (pairs that are not hex are skipped).
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}
