//! DHCPv4 client run by the daemon inside containers' namespaces: the
//! messages (pure), their framing and sockets, the exchanges, and the lease
//! as stored.

pub mod client;
mod frame;
pub mod lease;
pub mod message;
mod socket;
pub mod v6;

pub use client::{Client, DhcpError, now_unix};
pub use lease::Lease;
pub use message::{Identity, Reply};
