//! Fault injection for the crash tests. In a debug build (what the tests
//! run), `PLUMB_FAILPOINT=N` makes the process kill itself with SIGKILL at
//! the Nth failpoint it reaches (`stop:N` stops it with SIGSTOP instead, for
//! whoever wants many processes caught at once and killed together, as the
//! crash benchmark does), and `PLUMB_FAILPOINT_TRACE=FILE` appends
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
        signal: i32,
        trace: Option<std::path::PathBuf>,
    }
    static PLAN: OnceLock<Plan> = OnceLock::new();
    static REACHED: AtomicUsize = AtomicUsize::new(0);
    let plan = PLAN.get_or_init(|| {
        let spec = std::env::var("PLUMB_FAILPOINT").unwrap_or_default();
        let (signal, n) = match spec.strip_prefix("stop:") {
            Some(n) => (libc::SIGSTOP, n),
            None => (libc::SIGKILL, spec.as_str()),
        };
        Plan {
            kill_at: n.parse().ok(),
            signal,
            trace: std::env::var_os("PLUMB_FAILPOINT_TRACE").map(Into::into),
        }
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
        unsafe { libc::raise(plan.signal) };
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// In a debug build, panic the first time the daemon worker `name` passes
/// here when `PLUMB_PANIC_IN` names it (comma-separated): how the tests
/// see a failed worker reported and started again.
#[cfg(debug_assertions)]
pub fn panic_once(name: &str) {
    use std::sync::Mutex;
    static DONE: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let wanted = std::env::var("PLUMB_PANIC_IN").unwrap_or_default();
    if !wanted.split(',').any(|w| w == name) {
        return;
    }
    let mut done = DONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if done.iter().any(|d| d == name) {
        return;
    }
    done.push(name.to_string());
    drop(done);
    panic!("PLUMB_PANIC_IN={name}");
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn panic_once(_name: &str) {}
