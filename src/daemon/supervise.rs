//! The daemon's workers (the policy and link watchers, the reconcile loop,
//! each lease task) never go silently: one that fails or panics is
//! reported and started again, after a pause that doubles while it keeps
//! failing (1 s to 1 min). A release build aborts on a panic instead of
//! unwinding; then the whole daemon stops with a failure, its service
//! manager starts it again (`Restart=on-failure`), and its startup restore
//! and recovery put everything back.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

fn pause(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Run `body` on a thread of its own, again whenever it returns an error
/// or panics. `body` makes what it needs (an engine, a socket) itself, so
/// that a restart starts clean; it returns Ok only to end for good.
pub fn thread(
    name: &'static str,
    mut body: impl FnMut() -> Result<()> + Send + 'static,
) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut failures = 0u32;
            loop {
                let why = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut body)) {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e.to_string(),
                    Err(p) => panic_text(p.as_ref()),
                };
                failures += 1;
                let wait = pause(failures);
                tracing::error!(
                    "the {name} worker failed ({why}); restarting it in {} s",
                    wait.as_secs()
                );
                std::thread::sleep(wait);
            }
        })
        .map(drop)
        .map_err(|e| Error::io(format!("start the {name} worker"), e))
}

/// Run the future `make` gives as a task, again (from a new `make()`)
/// whenever it panics. Aborting the returned handle stops it for good.
pub fn task<F, Fut>(name: &'static str, make: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let mut inner = AbortOnDrop(tokio::spawn(make()));
            let why = match (&mut inner.0).await {
                Ok(()) => return,
                Err(e) if e.is_cancelled() => return,
                Err(e) => match e.try_into_panic() {
                    Ok(p) => panic_text(p.as_ref()),
                    Err(e) => e.to_string(),
                },
            };
            failures += 1;
            let wait = pause(failures);
            tracing::error!(
                "the {name} worker failed ({why}); restarting it in {} s",
                wait.as_secs()
            );
            tokio::time::sleep(wait).await;
        }
    })
}

/// A task that goes with its handle (when its supervisor is aborted).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_wait_longer_while_failures_last() {
        let waits: Vec<u64> = (1..=9).map(|n| pause(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn a_panicking_thread_is_started_again_until_it_ends() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::{Arc, mpsc};
        let runs = Arc::new(AtomicU32::new(0));
        let (done, ended) = mpsc::channel();
        let r = runs.clone();
        thread("test", move || {
            if r.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("first run fails");
            }
            done.send(()).unwrap();
            Ok(())
        })
        .unwrap();
        ended
            .recv_timeout(Duration::from_secs(10))
            .expect("second run");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
