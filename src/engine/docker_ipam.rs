//! plumb as Docker's IPAM driver (`--ipam-driver plumb`): pools are the
//! subnets of `--subnet`, and the addresses handed out of them are never
//! ones plumb has allocated on the network of that subnet (its gateway, a
//! namespace attached by `plumb attach`), so that Docker's containers and
//! plumb's own attachments share a network without a clash.
//!
//! In DHCP mode (`--ipam-opt mode=dhcp`) the pool is the LAN's subnet and
//! an endpoint's address is the lease the LAN's server gives for the MAC
//! Docker chose: Docker knows the address (`docker inspect`, its embedded
//! DNS) as on any other network. The lease is asked for from the host's
//! interface on the LAN (the daemon runs the exchange), kept with the
//! address, renewed from inside the container once the endpoint is there,
//! and released when Docker gives the address back.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;
use crate::model::parse_cidr;
use crate::store::docker::{self as records, Pool, PoolLease};

/// The ID prefix of a DHCP-mode pool.
const DHCP_POOL: &str = "plumb-dhcp:";

/// What a pool's ID says: `plumb:POOL`, `plumb:POOL:SUBPOOL`, or
/// `plumb-dhcp:POOL`.
fn pool_id(pool: &IpNet, sub: Option<&IpNet>, dhcp: bool) -> String {
    match (sub, dhcp) {
        (_, true) => format!("{DHCP_POOL}{pool}"),
        (Some(s), false) => format!("plumb:{pool}:{s}"),
        (None, false) => format!("plumb:{pool}"),
    }
}

/// Address `a` of `pool` with the pool's prefix, as Docker takes it.
fn with_prefix(pool: &Pool, a: IpAddr) -> Result<IpNet> {
    let len = pool.pool.prefix_len();
    IpNet::new(a, len).map_err(|e| Error::Conflict(format!("{a}/{len}: {e}")))
}

/// Whether pool `id` is a DHCP-mode pool.
pub fn is_dhcp_pool(id: &str) -> bool {
    id.starts_with(DHCP_POOL)
}

impl DhcpLan {
    /// Who asks the LAN for the lease of an endpoint with `mac`: the MAC
    /// its frames will carry (an ipvlan's is the LAN interface's), client
    /// identifier `01` + `mac`, replies broadcast (the interface asking is
    /// not the one the lease is for).
    pub fn identity(&self, mac: crate::model::Mac) -> crate::ipam::dhcp::Identity {
        crate::ipam::dhcp::Identity {
            mac: if self.own_mac { mac.0 } else { self.mac },
            client_id: std::iter::once(1).chain(mac.0).collect(),
            hostname: String::new(),
            fqdn: None,
            shared_mac: true,
        }
    }

    /// A DHCP client on the LAN interface as `id`.
    pub fn client<'a>(
        &'a self,
        id: &'a crate::ipam::dhcp::Identity,
    ) -> crate::ipam::dhcp::Client<'a> {
        crate::ipam::dhcp::Client {
            ns: &self.ns,
            ifindex: self.ifindex,
            ifname: &self.ifname,
            id,
        }
    }
}

/// Whether `--ipam-opt` asks for DHCP mode; any other option is refused.
fn dhcp_mode(options: &BTreeMap<String, String>) -> Result<bool> {
    let mut dhcp = false;
    for (k, v) in options {
        match (k.as_str(), v.as_str()) {
            ("mode", "dhcp") => dhcp = true,
            ("mode", "static") => dhcp = false,
            ("mode", other) => {
                return Err(Error::invalid(
                    "--ipam-opt mode",
                    other,
                    "expected `static` (plumb hands out addresses, the default) or `dhcp` (the LAN's DHCP server does)",
                ));
            }
            // Docker's own, if it adds any.
            _ if k.starts_with("com.docker.") => {}
            _ => {
                return Err(Error::invalid(
                    "--ipam-opt",
                    k,
                    "not an option of plumb's IPAM driver (options: mode=static|dhcp)",
                ));
            }
        }
    }
    Ok(dhcp)
}

/// Where the host asks a DHCP network's LAN for leases: its interface on
/// that LAN, in the host's namespace.
pub struct DhcpLan {
    pub ns: NsHandle,
    pub ifindex: u32,
    pub ifname: String,
    pub mac: [u8; 6],
    /// Whether the network's interfaces have MACs of their own (an
    /// ipvlan's is the LAN interface's).
    pub own_mac: bool,
}

impl Engine {
    /// Docker's RequestPool: `pool` (`--subnet`, required) and `sub`
    /// (`--ip-range`, may be empty). The same request gives the same pool.
    pub fn ipam_request_pool(
        &mut self,
        pool: &str,
        sub: &str,
        v6: bool,
        options: &BTreeMap<String, String>,
    ) -> Result<(String, IpNet)> {
        let dhcp = dhcp_mode(options)?;
        if pool.is_empty() {
            let why = match dhcp {
                true => {
                    "--ipam-opt mode=dhcp takes the LAN's subnet, which the DHCP server's addresses are checked against"
                }
                false => {
                    "plumb's IPAM driver takes the subnet you give (for DHCP: `--ipam-opt mode=dhcp` with the LAN's --subnet and --gateway)"
                }
            };
            return Err(Error::invalid(
                match v6 {
                    true => "--subnet (IPv6)",
                    false => "--subnet",
                },
                "",
                why,
            ));
        }
        let p = parse_cidr("--subnet", pool)?.trunc();
        if p.addr().is_ipv6() != v6 {
            return Err(Error::invalid(
                "--subnet",
                pool,
                "not of the family Docker asked for",
            ));
        }
        if dhcp && v6 {
            return Err(Error::invalid(
                "--subnet",
                pool,
                "--ipam-opt mode=dhcp leases IPv4 addresses; IPv6 comes from the LAN's router advertisements (-o slaac=true, without --ipv6)",
            ));
        }
        if dhcp && !sub.is_empty() {
            return Err(Error::invalid(
                "--ip-range",
                sub,
                "with --ipam-opt mode=dhcp the LAN's DHCP server chooses the addresses",
            ));
        }
        let s = match sub {
            "" => None,
            s => {
                let s = parse_cidr("--ip-range", s)?.trunc();
                if !p.contains(&s) {
                    return Err(Error::invalid(
                        "--ip-range",
                        s,
                        format!("is not inside --subnet {p}"),
                    ));
                }
                Some(s)
            }
        };
        let id = pool_id(&p, s.as_ref(), dhcp);
        let record = Pool {
            id: id.clone(),
            pool: p,
            sub_pool: s,
            network_id: None,
        };
        self.store.write(|tx| records::hold_pool(tx, &record))?;
        Ok((id, p))
    }

    pub fn ipam_release_pool(&mut self, id: &str) -> Result<()> {
        self.store.write(|tx| records::release_pool(tx, id))
    }

    /// The pool of ID `id`.
    pub fn ipam_pool(&self, id: &str) -> Result<Pool> {
        records::pool(self.store.read(), id)?
            .ok_or_else(|| Error::Conflict(format!("pool {id} is not plumb's")))
    }

    /// Docker's RequestAddress: `wanted` (`--gateway`, `--aux-address`,
    /// `--ip`) if it is free, else the first free address of the pool's
    /// range (or of the pool, for the gateway). A DHCP pool's are the LAN's
    /// to give: it takes the gateway and reserved addresses as given, and
    /// an endpoint's address is leased ([`Engine::ipam_hold_lease`]).
    pub fn ipam_request_address(
        &mut self,
        id: &str,
        wanted: Option<IpAddr>,
        gateway: bool,
    ) -> Result<IpNet> {
        let pool = self.ipam_pool(id)?;
        if is_dhcp_pool(id) {
            let Some(a) = wanted else {
                return Err(Error::invalid(
                    "--gateway",
                    "",
                    format!(
                        "--ipam-opt mode=dhcp takes the LAN's router, as its DHCP server hands it out (the LAN is {})",
                        pool.pool
                    ),
                ));
            };
            let field = if gateway {
                "--gateway"
            } else {
                "--aux-address"
            };
            if !pool.pool.contains(&a) {
                return Err(Error::invalid(field, a, format!("is not in {}", pool.pool)));
            }
            self.store.write(|tx| records::take_address(tx, id, a))?;
            return with_prefix(&pool, a);
        }
        self.store.write(|tx| {
            // Plumb's allocations on the network of this subnet, if made.
            let mut taken = records::pool_addresses(tx, id)?;
            for n in store::networks(tx)? {
                if n.network.subnets.iter().any(|s| s.subnet == pool.pool) {
                    taken.extend(records::allocated(tx, &n.network.name)?);
                }
            }
            let field = if gateway { "--gateway" } else { "--ip" };
            let address = match wanted {
                Some(a) => {
                    if !pool.pool.contains(&a) {
                        return Err(Error::invalid(field, a, format!("is not in {}", pool.pool)));
                    }
                    if taken.contains(&a) && !gateway {
                        return Err(Error::invalid(
                            field,
                            a,
                            format!("is already in use on {}", pool.pool),
                        ));
                    }
                    a
                }
                None => {
                    let range = match (gateway, pool.sub_pool) {
                        (false, Some(s)) => s,
                        _ => pool.pool,
                    };
                    range
                        .hosts()
                        .find(|a| !taken.contains(a) && *a != pool.pool.network())
                        .ok_or_else(|| Error::Ipam {
                            network: pool.pool.to_string(),
                            reason: format!("no address left in {range}"),
                        })?
                }
            };
            records::take_address(tx, id, address)?;
            with_prefix(&pool, address)
        })
    }

    /// Docker gives `address` back; the lease it had, if any, is returned
    /// for the caller to release.
    pub fn ipam_release_address(&mut self, id: &str, address: IpAddr) -> Result<Option<PoolLease>> {
        self.store.write(|tx| {
            let lease = records::pool_lease(tx, id, address)?;
            records::give_back_address(tx, id, address)?;
            Ok(lease)
        })
    }

    /// Hand out the address the LAN's server leased for DHCP pool `id`,
    /// which must be inside the pool (`--subnet`, the LAN's).
    pub fn ipam_hold_lease(&mut self, id: &str, leased: &PoolLease) -> Result<IpNet> {
        let pool = self.ipam_pool(id)?;
        let address = IpNet::V4(leased.lease.address);
        if !pool.pool.contains(&address.addr()) || address.prefix_len() != pool.pool.prefix_len() {
            return Err(Error::Ipam {
                network: pool.pool.to_string(),
                reason: format!(
                    "the LAN's DHCP server {} leased {address}, which is not in --subnet {}",
                    leased.lease.server, pool.pool
                ),
            });
        }
        self.store
            .write(|tx| records::take_leased_address(tx, id, address.addr(), leased))?;
        Ok(address)
    }

    /// The host's interface on DHCP network `network`'s LAN.
    pub fn ipam_dhcp_lan(&mut self, network: &str) -> Result<DhcpLan> {
        let net = store::require_network(self.store.read(), network)?.network;
        let driver = kinds::of(&net.kind);
        let lan = driver
            .lan()
            .filter(|_| net.ipam == crate::model::Ipam::Dhcp)
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "network `{network}` has no LAN to ask for DHCP leases"
                ))
            })?;
        let link = self
            .host
            .link_by_name(lan)
            .map_err(|e| Error::kernel(format!("look up {lan}"), e))?
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "{lan}, network `{network}`'s LAN, is not on the host"
                ))
            })?;
        Ok(DhcpLan {
            ns: self
                .host_ns
                .try_clone()
                .map_err(|e| Error::io("keep the host namespace open", e))?,
            ifindex: link.index,
            ifname: lan.to_string(),
            mac: link.mac.unwrap_or_default(),
            own_mac: driver.own_mac(),
        })
    }

    /// Docker network `network_id` is made of plumb's pools of `subnets`
    /// (its IPAM data): each pool learns its network. Whether one is a
    /// DHCP pool. A DHCP pool's LAN is one Docker network's only.
    pub fn ipam_bind_pools(&mut self, network_id: &str, subnets: &[String]) -> Result<bool> {
        self.store.write(|tx| {
            let pools = records::pools(tx)?;
            let mut dhcp = false;
            for subnet in subnets {
                let Ok(p) = subnet.parse::<IpNet>().map(|p| p.trunc()) else {
                    continue;
                };
                let of_subnet = || pools.iter().filter(|x| x.pool == p);
                for other in of_subnet().filter_map(|x| x.network_id.as_deref()) {
                    if other != network_id && records::network(tx, other)?.is_some() {
                        return Err(Error::invalid(
                            "--subnet",
                            p,
                            format!(
                                "is Docker network {}'s already",
                                crate::model::short_docker_id(other)
                            ),
                        ));
                    }
                }
                for x in of_subnet() {
                    records::set_pool_network(tx, &x.id, network_id)?;
                    dhcp |= is_dhcp_pool(&x.id);
                }
            }
            Ok(dhcp)
        })
    }

    /// The pools of Docker network `network_id`.
    pub fn ipam_pools_of(&self, network_id: &str) -> Result<Vec<Pool>> {
        Ok(records::pools(self.store.read())?
            .into_iter()
            .filter(|p| p.network_id.as_deref() == Some(network_id))
            .collect())
    }

    /// The lease of `address` of DHCP pool `id`.
    pub fn ipam_lease_of(&self, id: &str, address: IpAddr) -> Result<PoolLease> {
        records::pool_lease(self.store.read(), id, address)?.ok_or_else(|| {
            Error::Conflict(format!("{address} of pool {id} was not leased by plumb"))
        })
    }

    /// The Docker network whose subnet pool `id` is.
    pub fn ipam_pool_network(&self, id: &str) -> Result<String> {
        self.ipam_pool(id)?
            .network_id
            .ok_or_else(|| Error::Conflict(format!("pool {id} is no Docker network's subnet yet")))
    }

    /// The `--ip-range` of the pool Docker made a network's subnet from
    /// with plumb's IPAM driver.
    pub fn ipam_range_of(&self, subnet: &str) -> Result<Option<IpNet>> {
        let Ok(p) = subnet.parse::<IpNet>() else {
            return Ok(None);
        };
        Ok(records::pools(self.store.read())?
            .into_iter()
            .find(|x| x.pool == p.trunc())
            .and_then(|x| x.sub_pool))
    }
}
