//! A DHCPv4 lease as plumb keeps it in the store and shows it in `inspect`.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Lease times are absolute Unix seconds, so a lease read back after a
/// daemon restart (or a reboot) is judged against the real clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Net,
    pub server: Ipv4Addr,
    #[serde(default)]
    pub router: Option<Ipv4Addr>,
    /// Classless static routes (option 121); when present they replace the
    /// router option (RFC 3442).
    #[serde(default)]
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub mtu: Option<u16>,
    pub lease_secs: u32,
    pub renew_secs: u32,
    pub rebind_secs: u32,
    pub acquired_at: u64,
}

/// An infinite lease (RFC 2131 §3.3) is never renewed.
const INFINITE: u32 = u32::MAX;

impl Lease {
    pub fn renew_at(&self) -> u64 {
        self.at(self.renew_secs)
    }
    pub fn rebind_at(&self) -> u64 {
        self.at(self.rebind_secs)
    }
    pub fn expires_at(&self) -> u64 {
        self.at(self.lease_secs)
    }
    fn at(&self, secs: u32) -> u64 {
        if self.lease_secs == INFINITE {
            u64::MAX
        } else {
            self.acquired_at + u64::from(secs)
        }
    }

    /// The default gateway: from option 121 when it carries 0.0.0.0/0,
    /// else the router option (ignored when option 121 is present).
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        if self.routes.is_empty() {
            self.router
        } else {
            self.routes
                .iter()
                .find(|(dest, _)| dest.prefix_len() == 0)
                .map(|(_, via)| *via)
        }
    }

    /// Option 121 routes other than the default one.
    pub fn static_routes(&self) -> impl Iterator<Item = &(Ipv4Net, Ipv4Addr)> {
        self.routes
            .iter()
            .filter(|(dest, _)| dest.prefix_len() != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            address: "192.168.5.20/24".parse().unwrap(),
            server: Ipv4Addr::new(192, 168, 5, 1),
            router: Some(Ipv4Addr::new(192, 168, 5, 1)),
            routes: Vec::new(),
            dns: Vec::new(),
            domain: None,
            mtu: None,
            lease_secs: 100,
            renew_secs: 50,
            rebind_secs: 87,
            acquired_at: 1000,
        }
    }

    #[test]
    fn classless_routes_replace_the_router_option() {
        let mut l = lease();
        assert_eq!(l.gateway(), Some(Ipv4Addr::new(192, 168, 5, 1)));
        l.routes = vec![("10.0.0.0/8".parse().unwrap(), Ipv4Addr::new(192, 168, 5, 9))];
        assert_eq!(l.gateway(), None, "121 without a default: no default route");
        l.routes
            .push(("0.0.0.0/0".parse().unwrap(), Ipv4Addr::new(192, 168, 5, 2)));
        assert_eq!(l.gateway(), Some(Ipv4Addr::new(192, 168, 5, 2)));
        assert_eq!(l.static_routes().count(), 1);
    }

    #[test]
    fn infinite_leases_never_expire() {
        let mut l = lease();
        assert_eq!(
            (l.renew_at(), l.rebind_at(), l.expires_at()),
            (1050, 1087, 1100)
        );
        l.lease_secs = INFINITE;
        assert_eq!(l.expires_at(), u64::MAX);
    }
}
