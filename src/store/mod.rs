//! The one source of truth: an embedded SQLite database in the state
//! directory. Every change happens in an IMMEDIATE transaction, so many plumb
//! processes can run at once: writers queue on SQLite's lock (long busy
//! timeout) and never see each other's half-done work.
//!
//! WAL mode, tuned for short processes. A WAL commit needs no fsync, but by
//! default the last connection to close checkpoints the WAL (four fsyncs,
//! more than an attach costs), so plumb turns that off. A WAL left behind is
//! replayed by the next process that opens the database (SQLite cannot
//! trust a wal-index nobody holds), so its size must stay bounded: after a
//! commit that leaves it above [`WAL_CHECKPOINT_BYTES`], that process
//! checkpoints and truncates it. A process that holds the database open for
//! long (the daemon) defers that to its quiet moments instead
//! ([`Store::defer_checkpoints`]): a checkpoint's fsyncs cost more than the
//! request they would otherwise delay. Power loss may lose the last
//! commits, never the database (synchronous=NORMAL).

pub mod docker;
mod gate;
pub mod host_extras;
pub mod intent;
mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::driver::bridge::HostState;
use crate::error::{Error, Result};
use crate::model::{Attachment, Network, Publish};
use crate::policy::rules::{Policy, StoredPolicy};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/plumb";

/// WAL size above which the committing process checkpoints and truncates it.
pub const WAL_CHECKPOINT_BYTES: u64 = 64 * 1024;

pub struct Store {
    conn: Connection,
    pub dir: PathBuf,
    /// Whether each commit bounds the WAL itself (see the module comment).
    checkpoint_on_commit: bool,
    /// This store's holder of intents, taken at the first one.
    holder: Option<intent::Holder>,
    /// Between the changes and repairs of every process (see [`gate`]).
    gate: gate::Gate,
}

/// Network as stored, with what plumb did to the host for it.
#[derive(Debug, Clone)]
pub struct StoredNetwork {
    pub network: Network,
    pub owner: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StoredAttachment {
    pub attachment: Attachment,
    pub owner: Option<String>,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        if dir.exists() && !dir.is_dir() {
            return Err(Error::invalid(
                "--state-dir",
                dir.display(),
                "exists and is not a directory",
            ));
        }
        // The store holds every network, address and lease: a directory
        // plumb makes is its owner's alone, and so are the files in it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("state directory {}", dir.display()), e))?;
        let path = dir.join("plumb.db");
        let in_wal_mode = wal_mode(&path);
        let conn = Connection::open(&path)?;
        // SQLite gives new WAL and shared-memory files the database's mode;
        // those an older plumb left keep theirs unless changed.
        owner_only(&path)?;
        for side in ["plumb.db-wal", "plumb.db-shm"] {
            let side = dir.join(side);
            if side.exists() {
                owner_only(&side)?;
            }
        }
        conn.busy_timeout(Duration::from_secs(120))?;
        // A daemon's engine keeps its statements parsed from one request to
        // the next; an attach alone uses about ten.
        conn.set_prepared_statement_cache_capacity(64);
        // Small pages: an attach touches about a dozen b-tree pages, and
        // every byte of them goes through the WAL. Both settings live in the
        // database file; `journal_mode = WAL` costs 0.2 ms even when the
        // mode is set already, so only a new database gets them.
        if !in_wal_mode {
            // Processes that find no database (runtimes starting their
            // first containers at once) all set the mode; it needs the
            // database to itself, and SQLite answers BUSY at once instead
            // of waiting for it.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match conn.execute_batch("PRAGMA page_size = 1024; PRAGMA journal_mode = WAL;") {
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == rusqlite::ErrorCode::DatabaseBusy
                            && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    r => break r?,
                }
            }
        }
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL;
             PRAGMA wal_autocheckpoint = 0;
             PRAGMA foreign_keys = ON;",
        )?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        let mut store = Store {
            conn,
            dir: dir.to_path_buf(),
            checkpoint_on_commit: true,
            holder: None,
            gate: gate::Gate::default(),
        };
        // Checked first without the write lock, which every process would
        // otherwise take once at start; `migrate` checks again under it.
        if schema::outdated(&store.conn)? {
            store.write(schema::migrate)?;
        }
        Ok(store)
    }

    /// Run `f` in an IMMEDIATE transaction; commit when it returns Ok.
    pub fn write<T>(&mut self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        crate::failpoint::hit("store commit");
        if self.checkpoint_on_commit {
            self.checkpoint(WAL_CHECKPOINT_BYTES)?;
        }
        Ok(out)
    }

    /// [`Store::write`] for the commit that records a change's intent: it
    /// waits for a repair that is looking at the records (see [`gate`]).
    pub fn record<T>(&mut self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let taken = self.gate.begin_record(&self.dir)?;
        let out = self.write(f);
        self.gate.end_record(taken);
        out
    }

    /// Keep changes from starting (their intents from being recorded) until
    /// [`Store::end_repair`]; repairs of this store's may nest.
    pub fn begin_repair(&mut self) -> Result<()> {
        self.gate.hold_for_repair(&self.dir)
    }

    pub fn end_repair(&mut self) {
        self.gate.release_repair();
    }

    /// Leave the WAL to grow on commit; the caller bounds it with
    /// [`Store::checkpoint`] when it has time.
    pub fn defer_checkpoints(&mut self) {
        self.checkpoint_on_commit = false;
    }

    /// Checkpoint and truncate the WAL when it holds more than `above`
    /// bytes; whether it did.
    pub fn checkpoint(&self, above: u64) -> Result<bool> {
        let wal = self.dir.join("plumb.db-wal");
        if std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) <= above {
            return Ok(false);
        }
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(true)
    }

    pub fn read(&self) -> &Connection {
        &self.conn
    }

    /// The name intents of this store's changes are recorded under (see
    /// [`intent`]); the holder lock is taken at the first call.
    pub fn holder(&mut self) -> Result<String> {
        if self.holder.is_none() {
            self.holder = Some(intent::Holder::take(&self.dir)?);
        }
        Ok(self
            .holder
            .as_ref()
            .map(|h| h.name().to_string())
            .unwrap_or_default())
    }

    /// Whether the process holding intent `i` still lives.
    pub fn holder_alive(&self, i: &intent::Intent) -> bool {
        intent::holder_alive(&self.dir, &i.holder)
    }
}

/// Whether the database file at `path` exists and is in WAL mode: its
/// header's read and write versions (bytes 18 and 19) are 2.
/// Make `path` readable and writable by its owner alone, unless it is.
fn owner_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(format!("{}", path.display()), e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(format!("make {} private", path.display()), e))?;
    }
    Ok(())
}

fn wal_mode(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok_and(|()| header[18] == 2 && header[19] == 2)
}

// Queries are plain functions over a connection (a Transaction derefs to
// one), so the same code serves reads and writes.

pub fn get_network(conn: &Connection, name: &str) -> Result<Option<StoredNetwork>> {
    conn.prepare_cached("SELECT data, owner FROM networks WHERE name = ?1")?
        .query_row(params![name], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })
        .optional()?
        .map(|(data, owner)| {
            Ok(StoredNetwork {
                network: decode(&data)?,
                owner,
            })
        })
        .transpose()
}

pub fn require_network(conn: &Connection, name: &str) -> Result<StoredNetwork> {
    get_network(conn, name)?.ok_or_else(|| Error::UnknownNetwork(name.to_string()))
}

pub fn networks(conn: &Connection) -> Result<Vec<StoredNetwork>> {
    let mut stmt = conn.prepare("SELECT data, owner FROM networks ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
    })?;
    rows.map(|row| {
        let (data, owner) = row?;
        Ok(StoredNetwork {
            network: decode(&data)?,
            owner,
        })
    })
    .collect()
}

pub fn insert_network(tx: &Transaction, net: &Network, owner: Option<&str>) -> Result<()> {
    tx.execute(
        "INSERT INTO networks (name, bridge, data, owner) VALUES (?1, ?2, ?3, ?4)",
        params![
            net.name,
            net.bridge().map(|b| &b.bridge),
            encode(net),
            owner
        ],
    )?;
    Ok(())
}

pub fn delete_network(tx: &Transaction, name: &str) -> Result<()> {
    tx.execute("DELETE FROM allocations WHERE network = ?1", params![name])?;
    tx.execute("DELETE FROM cursors WHERE network = ?1", params![name])?;
    tx.execute("DELETE FROM networks WHERE name = ?1", params![name])?;
    Ok(())
}

pub fn set_host_state(tx: &Transaction, name: &str, state: &HostState) -> Result<()> {
    tx.execute(
        "UPDATE networks SET host_state = ?2 WHERE name = ?1",
        params![name, encode(state)],
    )?;
    Ok(())
}

pub fn host_state(conn: &Connection, name: &str) -> Result<HostState> {
    let data: String = conn.query_row(
        "SELECT host_state FROM networks WHERE name = ?1",
        params![name],
        |r| r.get(0),
    )?;
    decode(&data)
}

pub fn network_by_bridge(conn: &Connection, bridge: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT name FROM networks WHERE bridge = ?1",
            params![bridge],
            |r| r.get(0),
        )
        .optional()?)
}

const ATTACHMENT_COLUMNS: &str = "data, owner";

fn attachment_row(r: &rusqlite::Row) -> rusqlite::Result<(String, Option<String>)> {
    Ok((r.get(0)?, r.get(1)?))
}

fn collect_attachments(
    rows: impl Iterator<Item = rusqlite::Result<(String, Option<String>)>>,
) -> Result<Vec<StoredAttachment>> {
    rows.map(|row| {
        let (data, owner) = row?;
        Ok(StoredAttachment {
            attachment: decode(&data)?,
            owner,
        })
    })
    .collect()
}

pub fn attachments(conn: &Connection) -> Result<Vec<StoredAttachment>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ATTACHMENT_COLUMNS} FROM attachments ORDER BY target, ifname"
    ))?;
    collect_attachments(stmt.query_map([], attachment_row)?)
}

pub fn attachments_of_network(conn: &Connection, network: &str) -> Result<Vec<StoredAttachment>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE network = ?1 ORDER BY id"
    ))?;
    collect_attachments(stmt.query_map(params![network], attachment_row)?)
}

/// Attachments with an uplink of their own (by index, not a scan).
pub fn attachments_with_egress(conn: &Connection) -> Result<Vec<StoredAttachment>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE host_ifname IN (SELECT host_ifname FROM attachment_route_tables)"
    ))?;
    collect_attachments(stmt.query_map([], attachment_row)?)
}

/// The attachments a CNI runtime added for its container `container_id`.
pub fn attachments_of_cni(conn: &Connection, container_id: &str) -> Result<Vec<StoredAttachment>> {
    // The expression of index attachments_cni, word for word.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ATTACHMENT_COLUMNS} FROM attachments
         WHERE json_extract(data, '$.cni.container_id') = ?1 ORDER BY ifname"
    ))?;
    collect_attachments(stmt.query_map(params![container_id], attachment_row)?)
}

/// Attachments of a namespace (by identity) or, when the namespace is gone,
/// by the name the user gave it.
pub fn attachments_of_target(
    conn: &Connection,
    netns: Option<&str>,
    target: &str,
) -> Result<Vec<StoredAttachment>> {
    // Two indexed queries rather than one OR, which SQLite would answer
    // with a scan of every attachment.
    let (column, key) = match netns {
        Some(id) => ("netns", id),
        None => ("target", target),
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE {column} = ?1 ORDER BY ifname"
    ))?;
    collect_attachments(stmt.query_map(params![key], attachment_row)?)
}

/// The attachments of the container `reference` names: its full ID, its
/// name as recorded, or a prefix of one ID only.
pub fn attachments_of_container(
    conn: &Connection,
    reference: &str,
) -> Result<Vec<StoredAttachment>> {
    // `;` follows `:`: the range is every `docker:` target, on the index.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ATTACHMENT_COLUMNS} FROM attachments
         WHERE target >= 'docker:' AND target < 'docker;' ORDER BY target, ifname"
    ))?;
    let all = collect_attachments(stmt.query_map([], attachment_row)?)?;
    let of = |pick: &dyn Fn(&crate::model::ContainerRef) -> bool| -> Vec<StoredAttachment> {
        all.iter()
            .filter(|s| s.attachment.container.as_ref().is_some_and(pick))
            .cloned()
            .collect()
    };
    let by_id = of(&|c| c.id == reference);
    if !by_id.is_empty() {
        return Ok(by_id);
    }
    let by_name = of(&|c| c.name == reference);
    if !by_name.is_empty() {
        return Ok(by_name);
    }
    // A prefix of an ID is hex; a name that is not is never taken for one.
    if !reference.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(Vec::new());
    }
    let by_prefix = of(&|c| c.id.starts_with(reference));
    let ids: std::collections::HashSet<&str> = by_prefix
        .iter()
        .filter_map(|s| s.attachment.container.as_ref().map(|c| c.id.as_str()))
        .collect();
    if ids.len() > 1 {
        return Err(Error::Target {
            target: format!("docker:{reference}"),
            reason: format!(
                "ambiguous: the ID prefix of {} attached containers",
                ids.len()
            ),
        });
    }
    Ok(by_prefix)
}

pub fn insert_attachment(tx: &Transaction, a: &Attachment, owner: Option<&str>) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO attachments (network, netns, target, ifname, host_ifname, data, owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![a.network, a.netns, a.target, a.ifname, a.host_ifname, encode(a), owner])?;
    Ok(())
}

/// One attachment by its host interface name (unique).
pub fn attachment(conn: &Connection, host_ifname: &str) -> Result<Option<Attachment>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE host_ifname = ?1"
    ))?;
    Ok(
        collect_attachments(stmt.query_map(params![host_ifname], attachment_row)?)?
            .into_iter()
            .next()
            .map(|s| s.attachment),
    )
}

/// Record what changed of an attachment, its keys too (a staged one gets
/// its namespace, name and target once Docker has moved it).
pub fn update_attachment(tx: &Transaction, a: &Attachment) -> Result<()> {
    tx.execute(
        "UPDATE attachments SET data = ?1, netns = ?3, target = ?4, ifname = ?5
         WHERE host_ifname = ?2",
        params![encode(a), a.host_ifname, a.netns, a.target, a.ifname],
    )?;
    Ok(())
}

pub fn delete_attachment(tx: &Transaction, a: &Attachment) -> Result<()> {
    let owner = attachment_owner(&a.host_ifname);
    // A container that still declares the network keeps its addresses
    // for when it starts again.
    match &a.container {
        Some(c) if declaration(tx, &c.id, &a.network)?.is_some() => tx.execute(
            "UPDATE allocations SET owner = ?2 WHERE owner = ?1",
            params![owner, parked_owner(&c.id)],
        )?,
        _ => tx.execute("DELETE FROM allocations WHERE owner = ?1", params![owner])?,
    };
    tx.execute(
        "DELETE FROM attachments WHERE host_ifname = ?1",
        params![a.host_ifname],
    )?;
    // A Docker endpoint whose attachment is gone (its container died with
    // no word from Docker, a reboot) is over: Docker makes a new one.
    docker::forget_endpoint_of(tx, &a.host_ifname)?;
    Ok(())
}

/// Who owns the addresses of a declared container while it is not running.
pub fn parked_owner(container_id: &str) -> String {
    format!("container:{container_id}")
}

/// Give the addresses container `id` left parked on `network` to `owner`
/// (its new attachment); the addresses.
pub fn adopt_parked(
    tx: &Transaction,
    id: &str,
    network: &str,
    owner: &str,
) -> Result<Vec<std::net::IpAddr>> {
    let parked = parked_owner(id);
    let addresses: Vec<String> = tx
        .prepare_cached("SELECT address FROM allocations WHERE network = ?1 AND owner = ?2")?
        .query_map(params![network, parked], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    tx.execute(
        "UPDATE allocations SET owner = ?3 WHERE network = ?1 AND owner = ?2",
        params![network, parked, owner],
    )?;
    Ok(addresses.iter().filter_map(|a| a.parse().ok()).collect())
}

/// Free what container `id` has parked, on one network or all.
pub fn release_parked(tx: &Transaction, id: &str, network: Option<&str>) -> Result<()> {
    tx.execute(
        "DELETE FROM allocations WHERE owner = ?1 AND (?2 IS NULL OR network = ?2)",
        params![parked_owner(id), network],
    )?;
    Ok(())
}

/// A container's declaration of a network, as an attach spec and where it
/// came from (`labels` or `cli`).
pub struct Declared {
    pub id: String,
    pub name: String,
    pub spec: crate::model::AttachSpec,
    pub source: String,
}

fn declared_row(r: &rusqlite::Row) -> rusqlite::Result<(String, String, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_declared(rows: Vec<(String, String, String, String)>) -> Result<Vec<Declared>> {
    rows.into_iter()
        .map(|(id, name, spec, source)| {
            Ok(Declared {
                id,
                name,
                spec: serde_json::from_str(&spec)
                    .map_err(|e| Error::Conflict(format!("stored declaration: {e}")))?,
                source,
            })
        })
        .collect()
}

pub fn declaration(conn: &Connection, id: &str, network: &str) -> Result<Option<Declared>> {
    let rows = conn
        .prepare_cached(
            "SELECT id, name, spec, source FROM containers WHERE id = ?1 AND network = ?2",
        )?
        .query_map(params![id, network], declared_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(to_declared(rows)?.pop())
}

/// Every declaration of container `id`, or of every container.
pub fn declarations(conn: &Connection, id: Option<&str>) -> Result<Vec<Declared>> {
    let rows = conn
        .prepare_cached(
            "SELECT id, name, spec, source FROM containers
             WHERE ?1 IS NULL OR id = ?1 ORDER BY id, network",
        )?
        .query_map(params![id], declared_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    to_declared(rows)
}

pub fn declare(tx: &Transaction, d: &Declared) -> Result<()> {
    let spec =
        serde_json::to_string(&d.spec).map_err(|e| Error::Conflict(format!("declaration: {e}")))?;
    tx.execute(
        "INSERT OR REPLACE INTO containers (id, network, name, spec, source)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![d.id, d.spec.network, d.name, spec, d.source],
    )?;
    Ok(())
}

/// Forget declarations of container `id`, on one network or all.
pub fn forget_declarations(tx: &Transaction, id: &str, network: Option<&str>) -> Result<()> {
    tx.execute(
        "DELETE FROM containers WHERE id = ?1 AND (?2 IS NULL OR network = ?2)",
        params![id, network],
    )?;
    Ok(())
}

/// A container has a new name: in its declarations and attachments.
pub fn rename_container(tx: &Transaction, id: &str, name: &str) -> Result<()> {
    tx.execute(
        "UPDATE containers SET name = ?2 WHERE id = ?1",
        params![id, name],
    )?;
    tx.execute(
        "UPDATE container_errors SET name = ?2 WHERE id = ?1",
        params![id, name],
    )?;
    for s in attachments_of_container(tx, id)? {
        let mut a = s.attachment;
        if let Some(c) = a.container.as_mut() {
            c.name = name.to_string();
        }
        update_attachment(tx, &a)?;
    }
    Ok(())
}

/// Record what is wrong with what container `id` declares (nothing: none).
pub fn set_container_errors(
    tx: &Transaction,
    id: &str,
    name: &str,
    errors: &[String],
) -> Result<()> {
    if errors.is_empty() {
        tx.execute("DELETE FROM container_errors WHERE id = ?1", params![id])?;
    } else {
        tx.execute(
            "INSERT OR REPLACE INTO container_errors (id, name, errors) VALUES (?1, ?2, ?3)",
            params![id, name, serde_json::to_string(errors).unwrap_or_default()],
        )?;
    }
    Ok(())
}

/// What is wrong with the declarations of containers: (id, name, errors).
pub fn container_errors(conn: &Connection) -> Result<Vec<(String, String, Vec<String>)>> {
    let rows = conn
        .prepare_cached("SELECT id, name, errors FROM container_errors ORDER BY name")?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .map(|(id, name, e)| (id, name, serde_json::from_str(&e).unwrap_or_default()))
        .collect())
}

/// The allocation owner string of an attachment: its host interface name,
/// unique among attachments and known before the attachment is stored.
pub fn attachment_owner(host_ifname: &str) -> String {
    format!("attachment:{host_ifname}")
}

/// Host routes plumb added (`plumb host route`, topology `[[host_route]]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostRoute {
    pub dest: String,
    pub via: String,
    pub owner: Option<String>,
}

pub fn host_routes(conn: &Connection) -> Result<Vec<HostRoute>> {
    let mut stmt = conn.prepare("SELECT dest, via, owner FROM host_routes ORDER BY dest")?;
    let rows = stmt.query_map([], |r| {
        Ok(HostRoute {
            dest: r.get(0)?,
            via: r.get(1)?,
            owner: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn insert_host_route(tx: &Transaction, route: &HostRoute) -> Result<()> {
    tx.execute(
        "INSERT INTO host_routes (dest, via, owner) VALUES (?1, ?2, ?3)",
        params![route.dest, route.via, route.owner],
    )?;
    Ok(())
}

pub fn delete_host_route(tx: &Transaction, dest: &str) -> Result<()> {
    tx.execute("DELETE FROM host_routes WHERE dest = ?1", params![dest])?;
    Ok(())
}

/// 802.1q sub-interfaces plumb created.
/// The routing table and first rule priority of a network, if it has them.
pub fn route_table(conn: &Connection, network: &str) -> Result<Option<(u32, u32)>> {
    Ok(conn
        .query_row(
            "SELECT table_id, priority FROM route_tables WHERE network = ?1",
            params![network],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Every allocated (table, priority): of networks, attachments and egress
/// rules.
pub fn route_tables(conn: &Connection) -> Result<Vec<(u32, u32)>> {
    let mut stmt = conn.prepare(
        "SELECT table_id, priority FROM route_tables UNION ALL SELECT table_id, priority FROM attachment_route_tables \
         UNION ALL SELECT table_id, priority FROM egress_rules",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A table for one attachment; it goes with the attachment's row.
pub fn insert_attachment_route_table(
    tx: &Transaction,
    host_ifname: &str,
    table: u32,
    priority: u32,
) -> Result<()> {
    tx.execute(
        "INSERT INTO attachment_route_tables (host_ifname, table_id, priority) VALUES (?1, ?2, ?3)",
        params![host_ifname, table, priority],
    )?;
    Ok(())
}

pub fn insert_route_table(
    tx: &Transaction,
    network: &str,
    table: u32,
    priority: u32,
) -> Result<()> {
    tx.execute(
        "INSERT INTO route_tables (network, table_id, priority) VALUES (?1, ?2, ?3)",
        params![network, table, priority],
    )?;
    Ok(())
}

/// Who already holds a host port `p` would take, if anyone.
pub fn publish_conflict(conn: &Connection, p: &Publish) -> Result<Option<String>> {
    let want = p.host_ip.map(|i| i.to_string()).unwrap_or_default();
    let mut stmt = conn.prepare_cached(
        "SELECT a.target FROM published_ports p JOIN attachments a ON a.host_ifname = p.host_ifname
         WHERE p.proto = ?1 AND p.host_port BETWEEN ?2 AND ?3
           AND (p.host_ip = '' OR ?4 = '' OR p.host_ip = ?4) LIMIT 1",
    )?;
    let last = u32::from(p.host_port) + u32::from(p.count) - 1;
    Ok(stmt
        .query_row(params![p.proto.to_string(), p.host_port, last, want], |r| {
            r.get(0)
        })
        .optional()?)
}

/// Attachments with published ports (what the nftables maps must hold).
pub fn published_attachments(conn: &Connection) -> Result<Vec<Attachment>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE host_ifname IN
           (SELECT DISTINCT host_ifname FROM published_ports) ORDER BY id"
    ))?;
    Ok(collect_attachments(stmt.query_map([], attachment_row)?)?
        .into_iter()
        .map(|s| s.attachment)
        .collect())
}

pub fn insert_publications(tx: &Transaction, a: &Attachment) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO published_ports (proto, host_port, host_ip, host_ifname) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for p in &a.publish {
        let ip = p.host_ip.map(|i| i.to_string()).unwrap_or_default();
        for port in 0..p.count {
            stmt.execute(params![
                p.proto.to_string(),
                p.host_port + port,
                ip,
                a.host_ifname
            ])?;
        }
    }
    Ok(())
}

pub fn insert_vlan_link(tx: &Transaction, name: &str) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO vlan_links (name) VALUES (?1)",
        params![name],
    )?;
    Ok(())
}

pub fn is_vlan_link(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM vlan_links WHERE name = ?1",
            params![name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

pub fn delete_vlan_link(tx: &Transaction, name: &str) -> Result<()> {
    tx.execute("DELETE FROM vlan_links WHERE name = ?1", params![name])?;
    Ok(())
}

/// Named namespaces plumb created (topology `[[namespace]]`).
pub fn namespaces(conn: &Connection) -> Result<Vec<(String, Option<String>)>> {
    let mut stmt = conn.prepare("SELECT name, owner FROM namespaces ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn insert_namespace(tx: &Transaction, name: &str, owner: Option<&str>) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO namespaces (name, owner) VALUES (?1, ?2)",
        params![name, owner],
    )?;
    Ok(())
}

pub fn delete_namespace(tx: &Transaction, name: &str) -> Result<()> {
    tx.execute("DELETE FROM namespaces WHERE name = ?1", params![name])?;
    Ok(())
}

/// Every firewall rule, in the order they were added.
pub fn policies(conn: &Connection) -> Result<Vec<StoredPolicy>> {
    let mut stmt = conn.prepare("SELECT id, rule, owner FROM policies ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?))
    })?;
    rows.map(|row| {
        let (id, rule, owner) = row?;
        Ok(StoredPolicy {
            id,
            policy: decode(&rule)?,
            owner,
        })
    })
    .collect()
}

pub fn insert_policy(tx: &Transaction, policy: &Policy, owner: Option<&str>) -> Result<i64> {
    tx.execute(
        "INSERT INTO policies (rule, owner) VALUES (?1, ?2)",
        params![encode(policy), owner],
    )?;
    let id = tx.last_insert_rowid();
    for key in [&policy.from, &policy.to]
        .into_iter()
        .filter_map(|s| s.set_key())
    {
        insert_policy_selector(tx, &key)?;
    }
    Ok(id)
}

fn insert_policy_selector(tx: &Transaction, key: &str) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO policy_selectors (selector) VALUES (?1)",
        params![key],
    )?;
    Ok(())
}

/// Remove rules by id; false for an id that does not exist.
pub fn delete_policy(tx: &Transaction, id: i64) -> Result<bool> {
    let n = tx.execute("DELETE FROM policies WHERE id = ?1", params![id])?;
    sync_policy_selectors(tx)?;
    Ok(n > 0)
}

/// Make `policy_selectors` the attachment selectors the rules use again,
/// after a rule went (another rule may still use its selectors).
fn sync_policy_selectors(tx: &Transaction) -> Result<()> {
    tx.execute("DELETE FROM policy_selectors", [])?;
    for p in policies(tx)? {
        for key in [&p.policy.from, &p.policy.to]
            .into_iter()
            .filter_map(|s| s.set_key())
        {
            insert_policy_selector(tx, &key)?;
        }
    }
    Ok(())
}

/// Which of these selector keys some rule uses (one indexed lookup each).
pub fn used_selectors(conn: &Connection, keys: &[String]) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM policy_selectors WHERE selector = ?1")?;
    let mut used = Vec::new();
    for key in keys {
        if stmt.exists(params![key])? {
            used.push(key.clone());
        }
    }
    Ok(used)
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plumb's own types always serialize")
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(data: &str) -> Result<T> {
    serde_json::from_str(data).map_err(|e| Error::Conflict(format!("state store holds a record this plumb cannot read ({e}); was it written by a newer version?")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(store: &Store) -> (String, i64) {
        let c = store.read();
        let mode = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let page = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        (mode, page)
    }

    #[test]
    fn a_new_database_gets_wal_mode_and_small_pages_which_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plumb.db");
        assert!(!wal_mode(&path), "no file yet");
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(settings(&store), ("wal".to_string(), 1024));
        drop(store);
        assert!(wal_mode(&path), "the header says WAL");
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(settings(&store), ("wal".to_string(), 1024));
    }

    #[test]
    fn a_database_in_rollback_mode_is_switched_to_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plumb.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = DELETE; CREATE TABLE t (x);")
            .unwrap();
        assert!(!wal_mode(&path));
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(settings(&store).0, "wal");
    }

    fn wal_bytes(store: &Store) -> u64 {
        std::fs::metadata(store.dir.join("plumb.db-wal")).map_or(0, |m| m.len())
    }

    /// Commits of about 8 KB each, until the WAL would have passed the bound.
    fn fill(store: &mut Store) {
        store
            .write(|tx| Ok(tx.execute_batch("CREATE TABLE IF NOT EXISTS t (x)")?))
            .unwrap();
        for _ in 0..(2 * WAL_CHECKPOINT_BYTES / 8192) {
            store
                .write(|tx| Ok(tx.execute("INSERT INTO t VALUES (zeroblob(8000))", [])?))
                .unwrap();
        }
    }

    #[test]
    fn each_commit_bounds_the_wal_unless_checkpoints_are_deferred() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        fill(&mut store);
        assert!(
            wal_bytes(&store) <= WAL_CHECKPOINT_BYTES,
            "{}",
            wal_bytes(&store)
        );

        store.defer_checkpoints();
        fill(&mut store);
        let grown = wal_bytes(&store);
        assert!(grown > WAL_CHECKPOINT_BYTES, "{grown}");
        assert!(
            !store.checkpoint(grown).unwrap(),
            "not above the given size"
        );
        assert_eq!(wal_bytes(&store), grown);
        assert!(store.checkpoint(WAL_CHECKPOINT_BYTES).unwrap());
        assert_eq!(wal_bytes(&store), 0, "truncated");
        let rows: i64 = store
            .read()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows as u64, 2 * (2 * WAL_CHECKPOINT_BYTES / 8192));
    }
}
