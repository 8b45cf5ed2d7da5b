//! Schema and migrations, applied in order; `user_version` records the last.

use rusqlite::{Connection, Transaction};

use crate::error::Result;

const MIGRATIONS: &[&str] = &[
    // 1: networks, address allocations, attachments, host routes, namespaces.
    "
    CREATE TABLE networks (
        name   TEXT PRIMARY KEY,
        bridge TEXT UNIQUE,      -- bridge networks only
        data   TEXT NOT NULL,
        -- What the driver found and changed on the host (to give it back).
        host_state TEXT NOT NULL DEFAULT '{}',
        owner  TEXT
    );
    -- One row per address in use: the host's own, reserved ones and containers'.
    CREATE TABLE allocations (
        network TEXT NOT NULL REFERENCES networks(name),
        address TEXT NOT NULL,
        owner   TEXT NOT NULL,
        PRIMARY KEY (network, address)
    ) WITHOUT ROWID;
    CREATE INDEX allocations_owner ON allocations(owner);
    -- Where the next dynamic allocation of a subnet starts looking.
    CREATE TABLE cursors (
        network TEXT NOT NULL,
        subnet  TEXT NOT NULL,
        last    TEXT NOT NULL,
        PRIMARY KEY (network, subnet)
    ) WITHOUT ROWID;
    CREATE TABLE attachments (
        id          INTEGER PRIMARY KEY,
        network     TEXT NOT NULL REFERENCES networks(name),
        netns       TEXT NOT NULL,
        target      TEXT NOT NULL,
        ifname      TEXT NOT NULL,
        host_ifname TEXT NOT NULL UNIQUE,
        data        TEXT NOT NULL,
        owner       TEXT,
        UNIQUE (netns, ifname),
        UNIQUE (netns, network)
    );
    CREATE INDEX attachments_target ON attachments(target);
    CREATE TABLE host_routes (
        dest  TEXT PRIMARY KEY,
        via   TEXT NOT NULL,
        owner TEXT
    );
    CREATE TABLE namespaces (
        name  TEXT PRIMARY KEY,
        owner TEXT
    );
    ",
    // 2: 802.1q sub-interfaces plumb created as parents (removed with the
    // last network on them; one the user made is never removed).
    "
    CREATE TABLE vlan_links (
        name TEXT PRIMARY KEY
    ) WITHOUT ROWID;
    ",
    // 3: a routing table and a pair of rule priorities per network with an
    // egress interface (allocated once, never shared).
    "
    CREATE TABLE route_tables (
        network  TEXT PRIMARY KEY REFERENCES networks(name) ON DELETE CASCADE,
        table_id INTEGER NOT NULL UNIQUE,
        priority INTEGER NOT NULL UNIQUE
    );
    ",
    // 4: published host ports, one row per port ('' = all host addresses),
    // so that a taken port is found by index, whatever the number of
    // containers.
    "
    CREATE TABLE published_ports (
        proto       TEXT NOT NULL,
        host_port   INTEGER NOT NULL,
        host_ip     TEXT NOT NULL,
        host_ifname TEXT NOT NULL REFERENCES attachments(host_ifname) ON DELETE CASCADE,
        PRIMARY KEY (proto, host_port, host_ip)
    ) WITHOUT ROWID;
    CREATE INDEX published_ports_owner ON published_ports(host_ifname);
    ",
    // 5: firewall rules (JSON of policy::rules::Policy; the id is the order
    // they were added in), and the attachment selectors they use, so that
    // an attach finds the nftables sets it belongs to by index.
    "
    CREATE TABLE policies (
        id    INTEGER PRIMARY KEY,
        rule  TEXT NOT NULL,
        owner TEXT
    );
    CREATE TABLE policy_selectors (
        selector TEXT PRIMARY KEY
    ) WITHOUT ROWID;
    ",
    // 6: routing tables of attachments with an egress interface of their own.
    "
    CREATE TABLE attachment_route_tables (
        host_ifname TEXT PRIMARY KEY REFERENCES attachments(host_ifname) ON DELETE CASCADE,
        table_id    INTEGER NOT NULL UNIQUE,
        priority    INTEGER NOT NULL UNIQUE
    );
    ",
    // 7: changes under way (intent before action). A row is committed
    // before the kernel is touched and deleted with the change's last
    // commit; one whose holder died is undone by the next plumb process.
    // `subject` is 'network', 'attachment' or 'host route'; `key` its name,
    // host interface name or destination.
    "
    CREATE TABLE intents (
        subject TEXT NOT NULL,
        key     TEXT NOT NULL,
        action  TEXT NOT NULL,
        holder  TEXT NOT NULL,
        PRIMARY KEY (subject, key)
    ) WITHOUT ROWID;
    ",
    // 8: the plumb networks Docker containers declare (`spec` is the JSON
    // of model::AttachSpec; `source` 'labels' or 'cli'), kept across the
    // container's restarts until it is destroyed or detached; what is
    // wrong with a container's declaration (JSON list of messages). The
    // addresses of a declared container that is not running stay reserved
    // as allocations owned by 'container:ID'.
    "
    CREATE TABLE containers (
        id      TEXT NOT NULL,
        network TEXT NOT NULL,
        name    TEXT NOT NULL,
        spec    TEXT NOT NULL,
        source  TEXT NOT NULL,
        PRIMARY KEY (id, network)
    ) WITHOUT ROWID;
    CREATE TABLE container_errors (
        id     TEXT PRIMARY KEY,
        name   TEXT NOT NULL,
        errors TEXT NOT NULL
    ) WITHOUT ROWID;
    ",
    // 9: Docker's networks and endpoints on plumb's remote driver. A
    // network is recorded at Docker's CreateNetwork with its options made
    // into a plumb network spec (JSON of model::NetworkSpec); `name` is the
    // plumb network, set once Docker's name for it is known. An endpoint
    // records its attach (JSON of model::AttachSpec), once made the
    // attachment (`host_ifname`), and once joined the path of its
    // container's namespace (`sandbox`). Pools are plumb's IPAM driver's
    // (`--ipam-driver plumb`), by Docker's pool ID, with a count of the
    // networks using each and the addresses handed out of each.
    "
    CREATE TABLE docker_networks (
        id   TEXT PRIMARY KEY,
        name TEXT UNIQUE,
        spec TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE docker_endpoints (
        id          TEXT PRIMARY KEY,
        network_id  TEXT NOT NULL,
        spec        TEXT NOT NULL,
        host_ifname TEXT,
        sandbox     TEXT
    ) WITHOUT ROWID;
    CREATE TABLE docker_pools (
        id       TEXT PRIMARY KEY,
        pool     TEXT NOT NULL,
        sub_pool TEXT,
        refs     INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE docker_pool_addresses (
        pool_id TEXT NOT NULL REFERENCES docker_pools(id) ON DELETE CASCADE,
        address TEXT NOT NULL,
        PRIMARY KEY (pool_id, address)
    ) WITHOUT ROWID;
    ",
    // 10: plumb's IPAM driver in DHCP mode. A pool knows the Docker network
    // it is the subnet of (set at CreateNetwork), and an address handed
    // out of a DHCP pool keeps the lease the LAN's server gave for it (JSON
    // of store::docker::PoolLease), released when Docker gives it back.
    "
    ALTER TABLE docker_pools ADD COLUMN network_id TEXT;
    ALTER TABLE docker_pool_addresses ADD COLUMN lease TEXT;
    ",
    // 11: a CNI runtime's DEL, CHECK and ADD find an attachment by the
    // container ID recorded in it (model::Attachment::cni), not by a scan.
    "
    CREATE INDEX attachments_cni ON attachments(json_extract(data, '$.cni.container_id'));
    ",
    // 12: `plumb egress`: an uplink for a CIDR, a Docker container or a
    // Docker network (`source` as the user gave it, normalized), with its
    // routing table and rule priorities; `data` is the JSON of
    // policy::egress::EgressRule (the sources its rules select now).
    "
    CREATE TABLE egress_rules (
        id       INTEGER PRIMARY KEY,
        source   TEXT NOT NULL UNIQUE,
        data     TEXT NOT NULL,
        table_id INTEGER NOT NULL UNIQUE,
        priority INTEGER NOT NULL UNIQUE,
        owner    TEXT
    );
    ",
    // 13: `plumb shim`: macvlans of the host's own on a LAN's parent
    // (`data` is the JSON of driver::host_shim::Shim), by interface name.
    "
    CREATE TABLE shims (
        id    INTEGER PRIMARY KEY,
        name  TEXT NOT NULL UNIQUE,
        data  TEXT NOT NULL,
        owner TEXT
    );
    ",
    // 14: the address blocks of cluster networks, as the cluster's store
    // last said (the daemon mirrors them): which host each belongs to.
    // This host hands out addresses only from its own.
    "
    CREATE TABLE cluster_blocks (
        network TEXT NOT NULL,
        block   TEXT NOT NULL,
        host    TEXT NOT NULL,
        mine    INTEGER NOT NULL,
        PRIMARY KEY (network, block)
    ) WITHOUT ROWID;
    ",
    // 15: the other hosts' containers on cluster networks, by the policy
    // selectors that name them (`label:K=V`, `attachment:T`), as the
    // cluster's store last said: the sets of those selectors hold them
    // too, so a rule holds wherever its containers run.
    "
    CREATE TABLE cluster_selectors (
        selector TEXT NOT NULL,
        address  TEXT NOT NULL,
        PRIMARY KEY (selector, address)
    ) WITHOUT ROWID;
    ",
];

/// The schema version of the database file.
pub fn version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// True when `migrate` has work to do (checked without taking the write lock).
pub fn outdated(conn: &Connection) -> Result<bool> {
    Ok(version(conn)? < MIGRATIONS.len() as i64)
}

pub fn migrate(tx: &Transaction) -> Result<()> {
    let version = version(tx)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    Ok(())
}
