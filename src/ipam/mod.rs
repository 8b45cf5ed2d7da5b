//! Address management: `host_local` keeps allocations in the store; `dhcp`
//! is the client the daemon runs for networks whose LAN hands out addresses.

pub mod dhcp;
pub mod host_local;
