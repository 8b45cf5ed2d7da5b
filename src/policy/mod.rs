//! What plumb enforces on traffic: today NAT and forwarding for bridge
//! networks (firewall); routing rules and shaping come next to it.

pub mod firewall;
