//! What plumb enforces on traffic: NAT and forwarding for bridge networks
//! (firewall), the rules users add to it (rules), anti-spoofing (antispoof),
//! the set elements an attach adds to them (elements), the uplink a network
//! leaves by (routing).

pub mod antispoof;
pub mod elements;
pub mod firewall;
pub mod routing;
pub mod rules;
