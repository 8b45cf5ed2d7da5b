//! Address management. `host_local` keeps allocations in the store; DHCP
//! (run by the daemon) will sit beside it.

pub mod host_local;
