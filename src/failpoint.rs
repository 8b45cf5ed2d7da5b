//! Fault injection for the crash tests. In a debug build (what the tests
//! run), `PLUMB_FAILPOINT=N` makes the process kill itself with SIGKILL at
//! the Nth failpoint it reaches, and `PLUMB_FAILPOINT_TRACE=FILE` appends
//! the name of every failpoint reached to FILE, so a test learns how many
//! there are and kills at each in turn. Failpoints follow every kernel step
//! that has an undo ([`crate::undo::UndoLog::push`]), every store commit,
//! and the steps of a detach and a network removal. A release build has
//! none.

#[cfg(debug_assertions)]
pub fn hit(name: &str) {
    use std::io::Write;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Plan {
        kill_at: Option<usize>,
        trace: Option<std::path::PathBuf>,
    }
    static PLAN: OnceLock<Plan> = OnceLock::new();
    static REACHED: AtomicUsize = AtomicUsize::new(0);
    let plan = PLAN.get_or_init(|| Plan {
        kill_at: std::env::var("PLUMB_FAILPOINT")
            .ok()
            .and_then(|v| v.parse().ok()),
        trace: std::env::var_os("PLUMB_FAILPOINT_TRACE").map(Into::into),
    });
    if plan.kill_at.is_none() && plan.trace.is_none() {
        return;
    }
    let n = REACHED.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(path) = &plan.trace
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{n} {name}");
    }
    if plan.kill_at == Some(n) {
        // SAFETY: raising a signal has no memory effects.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_name: &str) {}
