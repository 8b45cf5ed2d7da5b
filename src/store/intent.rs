//! Intents: a change to the kernel is recorded, with its holder, in a
//! committed transaction before it starts, and the record goes with the
//! change's last commit. A process killed in between leaves its intents,
//! and since its holder lock went with it, the next plumb process knows
//! they are nobody's and undoes them.
//!
//! A holder is a file under `holders/` in the state directory that its
//! process keeps locked (`flock`) for as long as it lives. The kernel drops
//! the lock when the process dies however it dies, and a reboot forgets
//! every lock, so a holder is alive exactly when its file is locked. A pid
//! would not do: pids are reused, and differ across pid namespaces.

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::error::{Error, Result};

/// What an intent is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Network,
    Attachment,
    HostRoute,
    /// A `plumb egress` rule, by its source.
    Egress,
    /// A `plumb shim`, by its interface name.
    Shim,
}

impl Subject {
    fn as_str(self) -> &'static str {
        match self {
            Subject::Network => "network",
            Subject::Attachment => "attachment",
            Subject::HostRoute => "host route",
            Subject::Egress => "egress",
            Subject::Shim => "shim",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Subject::Network,
            Subject::Attachment,
            Subject::HostRoute,
            Subject::Egress,
            Subject::Shim,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the change was to do. Whatever it was, recovery takes the subject
/// away: an attach or a create that did not finish is undone, a detach or
/// a removal is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Remove,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Remove => "remove",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub subject: Subject,
    pub key: String,
    pub action: Action,
    pub holder: String,
}

impl fmt::Display for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match (self.subject, self.action) {
            (Subject::Attachment, Action::Create) => "attach",
            (Subject::Attachment, Action::Remove) => "detach",
            (_, Action::Create) => "create",
            (_, Action::Remove) => "removal",
        };
        write!(f, "{verb} of {} {}", self.subject, self.key)
    }
}

/// This process's holder lock; its file goes when it is dropped.
pub struct Holder {
    name: String,
    path: PathBuf,
    _lock: File,
}

/// How many holder files [`Holder::take`] makes before it gives up.
const HOLDER_TRIES: usize = 16;

impl Holder {
    /// Make and lock a new holder file under `state_dir`.
    pub fn take(state_dir: &Path) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = holders_dir(state_dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        // A file removed under it (see below) is taken again; a few times
        // at most, since each try is a fresh name.
        for _ in 0..HOLDER_TRIES {
            // Unique within the machine's life: a pid and the time it took it.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let name = format!("{}-{}", std::process::id(), now.as_nanos());
            let path = dir.join(&name);
            let file = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(format!("create holder {}", path.display()), e))?;
            // SAFETY: flock on a file descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = std::io::Error::last_os_error();
                let _ = std::fs::remove_file(&path);
                return Err(Error::io(format!("lock holder {}", path.display()), e));
            }
            // Between its creation and the lock the file looked dead to
            // another process's `forget_dead_holders`, which may have
            // removed it: a lock on a file that is gone proves nothing, and
            // this process's changes would be taken for a dead one's.
            use std::os::unix::fs::MetadataExt;
            let still_ours = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if still_ours {
                return Ok(Holder {
                    name,
                    path,
                    _lock: file,
                });
            }
        }
        Err(Error::Conflict(format!(
            "holder files in {} are removed as soon as made: another plumb process takes them for dead",
            dir.display()
        )))
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn holders_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("holders")
}

/// Whether the process that took holder `name` still lives: its file is
/// there and locked. (Another open of the file is a lock of its own, so
/// this answers true for the caller's own holders too.)
pub fn holder_alive(state_dir: &Path, name: &str) -> bool {
    if name.contains('/') {
        return false;
    }
    let Ok(file) = File::open(holders_dir(state_dir).join(name)) else {
        return false;
    };
    // SAFETY: flock on a file descriptor this function owns; the lock, if
    // taken, goes with the file at the end of the function.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// Remove the files of holders that died; they hold no intent any more
/// once recovery is done with theirs.
pub fn forget_dead_holders(conn: &Connection, state_dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(holders_dir(state_dir)) else {
        return Ok(());
    };
    let pending: Vec<String> = intents(conn)?.into_iter().map(|i| i.holder).collect();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !pending.contains(&name) && !holder_alive(state_dir, &name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

pub fn insert(
    tx: &Transaction,
    subject: Subject,
    key: &str,
    action: Action,
    holder: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO intents (subject, key, action, holder) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![subject.as_str(), key, action.as_str(), holder])?;
    Ok(())
}

pub fn delete(tx: &Transaction, subject: Subject, key: &str) -> Result<()> {
    tx.prepare_cached("DELETE FROM intents WHERE subject = ?1 AND key = ?2")?
        .execute(params![subject.as_str(), key])?;
    Ok(())
}

/// Hand an intent to a new holder (the process recovering it).
pub fn reassign(tx: &Transaction, i: &Intent, holder: &str) -> Result<()> {
    tx.prepare_cached("UPDATE intents SET holder = ?3 WHERE subject = ?1 AND key = ?2")?
        .execute(params![i.subject.as_str(), i.key, holder])?;
    Ok(())
}

pub fn get(conn: &Connection, subject: Subject, key: &str) -> Result<Option<Intent>> {
    conn.prepare_cached("SELECT action, holder FROM intents WHERE subject = ?1 AND key = ?2")?
        .query_row(params![subject.as_str(), key], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?
        .map(|(action, holder)| {
            Ok(Intent {
                subject,
                key: key.to_string(),
                action: parse_action(&action)?,
                holder,
            })
        })
        .transpose()
}

/// Every intent, oldest subjects first: networks after what is on them.
pub fn intents(conn: &Connection) -> Result<Vec<Intent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT subject, key, action, holder FROM intents
         ORDER BY CASE subject WHEN 'network' THEN 1 ELSE 0 END, key",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    rows.map(|row| {
        let (subject, key, action, holder) = row?;
        Ok(Intent {
            subject: Subject::parse(&subject).ok_or_else(|| unreadable(&subject))?,
            key,
            action: parse_action(&action)?,
            holder,
        })
    })
    .collect()
}

fn parse_action(s: &str) -> Result<Action> {
    match s {
        "create" => Ok(Action::Create),
        "remove" => Ok(Action::Remove),
        other => Err(unreadable(other)),
    }
}

fn unreadable(what: &str) -> Error {
    Error::Conflict(format!(
        "state store holds an intent `{what}` this plumb cannot read; was it written by a newer version?"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_alive_while_held_and_dead_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let h = Holder::take(dir.path()).unwrap();
        let name = h.name().to_string();
        assert!(holder_alive(dir.path(), &name));
        assert!(holder_alive(dir.path(), &name), "asking takes no lock");
        drop(h);
        assert!(!holder_alive(dir.path(), &name), "file gone");
        assert!(!holder_alive(dir.path(), "../../etc/passwd"));
    }

    #[test]
    fn a_holder_file_left_unlocked_is_dead_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(holders_dir(dir.path())).unwrap();
        let left = holders_dir(dir.path()).join("42-1");
        std::fs::write(&left, "").unwrap();
        assert!(
            !holder_alive(dir.path(), "42-1"),
            "as a killed process leaves it"
        );
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE intents (subject TEXT, key TEXT, action TEXT, holder TEXT)",
        )
        .unwrap();
        let live = Holder::take(dir.path()).unwrap();
        forget_dead_holders(&conn, dir.path()).unwrap();
        assert!(!left.exists());
        assert!(holders_dir(dir.path()).join(live.name()).exists());
    }

    #[test]
    fn intents_round_trip_and_list_networks_last() {
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        crate::store::schema::migrate(&tx).unwrap();
        insert(&tx, Subject::Network, "lan", Action::Create, "h1").unwrap();
        insert(&tx, Subject::Attachment, "pv1", Action::Remove, "h2").unwrap();
        insert(&tx, Subject::HostRoute, "10.9.0.0/24", Action::Create, "h2").unwrap();
        let all = intents(&tx).unwrap();
        assert_eq!(all.last().unwrap().subject, Subject::Network);
        assert_eq!(all.len(), 3);
        let pv = get(&tx, Subject::Attachment, "pv1").unwrap().unwrap();
        assert_eq!(pv.action, Action::Remove);
        assert_eq!(pv.to_string(), "detach of attachment pv1");
        reassign(&tx, &pv, "h3").unwrap();
        assert_eq!(
            get(&tx, Subject::Attachment, "pv1")
                .unwrap()
                .unwrap()
                .holder,
            "h3"
        );
        delete(&tx, Subject::Attachment, "pv1").unwrap();
        assert!(get(&tx, Subject::Attachment, "pv1").unwrap().is_none());
    }
}
