//! `plumb shim`: recorded (with an intent) before the kernel is touched,
//! made with an undo log, taken away whole, and made again by repair when
//! its parent comes back without it.

use super::Engine;
use crate::driver::host_shim::{self, Shim};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::store;
use crate::store::intent::{self, Action, Subject};
use crate::undo::UndoLog;

impl Engine {
    /// Make `shim` (its name and ID are set here).
    pub fn shim_add(&mut self, mut shim: Shim, owner: Option<&str>) -> Result<Shim> {
        self.recover_quietly();
        crate::model::validate_ifname("--parent", &shim.parent)?;
        let parent = self
            .host
            .link_by_name(&shim.parent)
            .map_err(|e| Error::kernel(format!("look up {}", shim.parent), e))?;
        if parent.is_none() {
            return Err(Error::invalid(
                "--parent",
                &shim.parent,
                "no such interface on the host",
            ));
        }
        if shim.routes.is_empty() {
            return Err(Error::invalid(
                "--route",
                "",
                "a shim needs a route to where the containers are",
            ));
        }
        if let Some(r) = shim
            .routes
            .iter()
            .find(|r| r.addr().is_ipv6() != shim.address.is_ipv6())
        {
            return Err(Error::invalid(
                "--route",
                r,
                format!("is not of the family of {}", shim.address),
            ));
        }
        shim.name = crate::names::host_shim_name(&shim.parent, &shim.address);
        let holder = self.store.holder()?;
        self.store.record(|tx| {
            if let Some(s) = store::host_extras::shims(tx)?
                .into_iter()
                .find(|s| s.address == shim.address)
            {
                return Err(Error::invalid(
                    "--address",
                    shim.address,
                    format!("shim {} on {} holds it already", s.id, s.parent),
                ));
            }
            store::host_extras::insert_shim(tx, &mut shim, owner)?;
            intent::insert(tx, Subject::Shim, &shim.name, Action::Create, &holder)
        })?;
        let mut undo = UndoLog::default();
        let made = host_shim::create(&mut self.host, &shim, &mut undo);
        failpoint::hit("shim made");
        let done = made.and_then(|()| {
            self.store
                .write(|tx| intent::delete(tx, Subject::Shim, &shim.name))
        });
        if let Err(e) = done {
            let e = undo.rollback(&mut self.host, e);
            self.store.write(|tx| {
                store::host_extras::delete_shim(tx, shim.id)?;
                intent::delete(tx, Subject::Shim, &shim.name)
            })?;
            return Err(e);
        }
        Ok(shim)
    }

    /// Remove the shim of ID, name or address `key`; None when there is none.
    pub fn shim_rm(&mut self, key: &str) -> Result<Option<Shim>> {
        self.recover_quietly();
        let found = store::host_extras::shims(self.store.read())?
            .into_iter()
            .find(|s| s.id.to_string() == key || s.name == key || s.address.to_string() == key);
        let Some(shim) = found else { return Ok(None) };
        self.claim(Subject::Shim, &shim.name, Action::Remove)?;
        self.finish_shim_removal(&shim)?;
        Ok(Some(shim))
    }

    pub(super) fn finish_shim_removal(&mut self, shim: &Shim) -> Result<()> {
        host_shim::remove(&mut self.host, shim)?;
        failpoint::hit("shim removed");
        self.store.write(|tx| {
            store::host_extras::delete_shim(tx, shim.id)?;
            intent::delete(tx, Subject::Shim, &shim.name)
        })
    }

    pub fn shims(&self) -> Result<Vec<Shim>> {
        store::host_extras::shims(self.store.read())
    }

    /// Make again what the kernel lost of every shim no change is under way
    /// on (a parent that went and came back took its shim with it).
    pub fn repair_shims(&mut self) -> Result<Vec<String>> {
        self.as_repair(|e| {
            let busy = e.busy(Subject::Shim)?;
            let mut done = Vec::new();
            for shim in store::host_extras::shims(e.store.read())? {
                if !busy.contains(&shim.name) {
                    done.extend(host_shim::repair(&mut e.host, &shim)?);
                }
            }
            Ok(done)
        })
    }
}
