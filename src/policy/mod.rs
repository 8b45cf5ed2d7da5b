//! What plumb enforces on traffic: NAT and forwarding for bridge networks
//! (firewall) and the accepts it needs in iptables' chains (iptables, and
//! legacy for the x_tables backend), host ports shared with other tools
//! (ports), the rules users add to it (rules), anti-spoofing (antispoof),
//! the set elements an attach adds to them (elements), the uplink a network
//! leaves by (routing).

pub mod antispoof;
pub mod egress;
pub mod elements;
pub mod firewall;
pub mod iptables;
pub mod legacy;
pub mod ports;
pub mod routing;
pub mod rules;
