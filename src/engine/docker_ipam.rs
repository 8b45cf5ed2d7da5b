//! plumb as Docker's IPAM driver (`--ipam-driver plumb`): pools are the
//! subnets of `--subnet`, and the addresses handed out of them are never
//! ones plumb has allocated on the network of that subnet (its gateway, a
//! namespace attached by `plumb attach`), so that Docker's containers and
//! plumb's own attachments share a network without a clash.

use std::net::IpAddr;

use super::*;
use crate::model::parse_cidr;
use crate::store::docker::{self as records, Pool};

/// What a pool's ID says: `plumb:POOL` or `plumb:POOL:SUBPOOL`.
fn pool_id(pool: &IpNet, sub: Option<&IpNet>) -> String {
    match sub {
        Some(s) => format!("plumb:{pool}:{s}"),
        None => format!("plumb:{pool}"),
    }
}

impl Engine {
    /// Docker's RequestPool: `pool` (`--subnet`, required) and `sub`
    /// (`--ip-range`, may be empty). The same request gives the same pool.
    pub fn ipam_request_pool(
        &mut self,
        pool: &str,
        sub: &str,
        v6: bool,
    ) -> Result<(String, IpNet)> {
        if pool.is_empty() {
            return Err(Error::invalid(
                "--subnet",
                "",
                "plumb's IPAM driver takes the subnet you give (for DHCP: `--ipam-driver null -o ipam=dhcp`)",
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
        let id = pool_id(&p, s.as_ref());
        let record = Pool {
            id: id.clone(),
            pool: p,
            sub_pool: s,
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
    /// range (or of the pool, for the gateway).
    pub fn ipam_request_address(
        &mut self,
        id: &str,
        wanted: Option<IpAddr>,
        gateway: bool,
    ) -> Result<IpNet> {
        let pool = self.ipam_pool(id)?;
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
            IpNet::new(address, pool.pool.prefix_len())
                .map_err(|e| Error::Conflict(format!("{address}/{}: {e}", pool.pool.prefix_len())))
        })
    }

    pub fn ipam_release_address(&mut self, id: &str, address: IpAddr) -> Result<()> {
        self.store
            .write(|tx| records::give_back_address(tx, id, address))
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
