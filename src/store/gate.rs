//! The gate between changes and repairs. A repair (the daemon's, or
//! `restore`) reads which networks and attachments are settled, then acts
//! on the kernel from those records; a change that started in between (its
//! intent committed after the repair looked) would have its work undone or
//! redone under its feet: a rule the repair puts back after `network rm`
//! deleted it outlives the network. So a repair holds `changes.lock` in the
//! state directory exclusively while it looks and acts, and recording an
//! intent holds it shared: a change starts either before a repair looks
//! (and the repair sees its intent) or after the repair is done.
//!
//! flock locks belong to an open file, not to a process, so each store
//! (each engine, each daemon thread) has its own; a store already holding
//! the gate for a repair records the intents of that repair's own changes
//! without taking it again.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

#[derive(Default)]
pub struct Gate {
    file: Option<File>,
    /// How many repairs of this store's are holding the gate (a restore
    /// calls the repairs it is made of).
    repairs: u32,
}

impl Gate {
    /// Hold the gate exclusively, waiting for changes being recorded.
    pub fn hold_for_repair(&mut self, dir: &Path) -> Result<()> {
        if self.repairs == 0 {
            self.lock(dir, libc::LOCK_EX)?;
        }
        self.repairs += 1;
        Ok(())
    }

    pub fn release_repair(&mut self) {
        self.repairs = self.repairs.saturating_sub(1);
        if self.repairs == 0 {
            self.unlock();
        }
    }

    /// Before an intent's commit: wait for any repair looking, and keep
    /// the next from starting. Whether the gate was taken for it, to give
    /// to [`Gate::end_record`].
    pub fn begin_record(&mut self, dir: &Path) -> Result<bool> {
        if self.repairs > 0 {
            return Ok(false);
        }
        self.lock(dir, libc::LOCK_SH)?;
        Ok(true)
    }

    pub fn end_record(&mut self, taken: bool) {
        if taken {
            self.unlock();
        }
    }

    fn lock(&mut self, dir: &Path, how: libc::c_int) -> Result<()> {
        let path = dir.join("changes.lock");
        if self.file.is_none() {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
            self.file = Some(file);
        }
        let fd = self.file.as_ref().map(AsRawFd::as_raw_fd).unwrap_or(-1);
        loop {
            // SAFETY: flock on a file descriptor this gate owns.
            if unsafe { libc::flock(fd, how) } == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::io(format!("lock {}", path.display()), e));
            }
        }
    }

    fn unlock(&mut self) {
        if let Some(f) = &self.file {
            // SAFETY: as above; unlocking a lock this gate holds.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// Start recording a change from another gate (another process, as
    /// far as flock goes); true if it got through only after `released`.
    fn record_elsewhere(dir: &Path, released: &Arc<AtomicBool>) -> std::thread::JoinHandle<bool> {
        let (dir, released) = (dir.to_path_buf(), released.clone());
        std::thread::spawn(move || {
            let mut g = Gate::default();
            let taken = g.begin_record(&dir).unwrap();
            let waited = released.load(Ordering::SeqCst);
            g.end_record(taken);
            waited
        })
    }

    #[test]
    fn a_change_waits_for_the_outermost_repair_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut repair = Gate::default();
        repair.hold_for_repair(dir.path()).unwrap();
        repair.hold_for_repair(dir.path()).unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let change = record_elsewhere(dir.path(), &released);
        // Time for the change to get through, were it not held.
        std::thread::sleep(Duration::from_millis(100));
        repair.release_repair();
        std::thread::sleep(Duration::from_millis(100));
        released.store(true, Ordering::SeqCst);
        repair.release_repair();
        assert!(change.join().unwrap(), "recorded during a repair");
    }

    #[test]
    fn a_repair_records_its_own_changes_and_changes_do_not_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut repair = Gate::default();
        repair.hold_for_repair(dir.path()).unwrap();
        assert!(!repair.begin_record(dir.path()).unwrap(), "no second lock");
        repair.release_repair();

        let mut one = Gate::default();
        let taken = one.begin_record(dir.path()).unwrap();
        let mut two = Gate::default();
        assert!(two.begin_record(dir.path()).unwrap(), "shared with `one`");
        two.end_record(true);
        one.end_record(taken);
    }
}
