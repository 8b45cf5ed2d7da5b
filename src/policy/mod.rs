//! What plumb enforces on traffic: NAT and forwarding for bridge networks
//! (firewall), the rules users add to it (rules), the uplink a network leaves
//! by (routing).

pub mod firewall;
pub mod routing;
pub mod rules;
