//! What the shell completes, and the man pages, from the same clap
//! definitions as the parser. Completion is clap_complete's dynamic kind:
//! the shell asks plumb itself (`COMPLETE=bash plumb …`), so networks,
//! targets and the IDs of rules, egress rules and shims come from the store
//! as it is (read-only, and only the store named by `PLUMB_STATE_DIR` or
//! the default one: the command line being completed is not parsed yet).

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::engine::CompletionCandidate;

use super::Cli;
use crate::error::{Error, Result};
use crate::store::DEFAULT_STATE_DIR;

/// Answer the shell, when it asks (COMPLETE is set), and exit. The script
/// `COMPLETE=bash plumb` prints names this binary to ask; an installer
/// names the installed one with PLUMB_COMPLETER.
pub fn answer_the_shell() {
    let mut env = clap_complete::CompleteEnv::with_factory(Cli::command);
    if let Ok(path) = std::env::var("PLUMB_COMPLETER") {
        env = env.completer(path);
    }
    env.complete();
}

fn state_dir() -> PathBuf {
    std::env::var_os("PLUMB_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// The first column of `sql`'s rows, from the store if it can be read.
fn read(sql: &str) -> Vec<String> {
    let path = state_dir().join("plumb.db");
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(sql) else {
        return Vec::new();
    };
    stmt.query_map([], |r| r.get::<_, rusqlite::types::Value>(0))
        .map(|rows| {
            rows.filter_map(|r| match r.ok()? {
                rusqlite::types::Value::Text(t) => Some(t),
                rusqlite::types::Value::Integer(i) => Some(i.to_string()),
                _ => None,
            })
            .collect()
        })
        .unwrap_or_default()
}

fn candidates(values: Vec<String>) -> Vec<CompletionCandidate> {
    values.into_iter().map(CompletionCandidate::new).collect()
}

pub fn networks() -> Vec<CompletionCandidate> {
    candidates(read("SELECT name FROM networks ORDER BY name"))
}

/// Attached targets, then the named namespaces that are not.
pub fn targets() -> Vec<CompletionCandidate> {
    let mut names = read("SELECT DISTINCT target FROM attachments ORDER BY target");
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        let mut netns: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !names.contains(n))
            .collect();
        netns.sort();
        names.extend(netns);
    }
    candidates(names)
}

pub fn policies() -> Vec<CompletionCandidate> {
    candidates(read("SELECT id FROM policies ORDER BY id"))
}

pub fn egress_rules() -> Vec<CompletionCandidate> {
    candidates(read(
        "SELECT id FROM egress_rules UNION ALL SELECT source FROM egress_rules",
    ))
}

pub fn shims() -> Vec<CompletionCandidate> {
    candidates(read(
        "SELECT id FROM shims UNION ALL SELECT name FROM shims",
    ))
}

/// Write plumb(8) and a page per command (plumb-network(8),
/// plumb-network-create(8), …) into `dir`.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let mut written = Vec::new();
    // Built whole: the commands' arguments are otherwise deferred (lazy.rs).
    let mut cli = Cli::command();
    cli.build();
    write_pages(dir, cli, "plumb", &mut written)?;
    Ok(written)
}

/// `cmd`'s page, as `words` (`plumb network create`), then its
/// subcommands'.
fn write_pages(
    dir: &Path,
    cmd: clap::Command,
    words: &str,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let name = words.replace(' ', "-");
    let path = dir.join(format!("{name}.8"));
    let page_cmd = cmd.clone().name(name.clone()).bin_name(words.to_string());
    let mut page = Vec::new();
    clap_mangen::Man::new(page_cmd)
        .section("8")
        .render(&mut page)
        .map_err(|e| Error::io(format!("render {name}(8)"), e))?;
    std::fs::write(&path, page).map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    written.push(path);
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_pages(
            dir,
            sub.clone(),
            &format!("{words} {}", sub.get_name()),
            written,
        )?;
    }
    Ok(())
}
