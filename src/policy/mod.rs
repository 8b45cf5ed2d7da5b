//! What plumb enforces on traffic: NAT and forwarding for bridge networks
//! (firewall), the uplink a network leaves by (routing); shaping comes next.

pub mod firewall;
pub mod routing;
