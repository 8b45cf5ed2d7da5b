//! The undo log of one multi-step change. Every step that changes the kernel
//! pushes how to take it back; on failure the steps run in reverse and the
//! error reports what was rolled back (and anything that could not be).

use crate::error::{Error, Result};
use crate::netlink::Netlink;

type Step = Box<dyn FnOnce(&mut Netlink) -> Result<()>>;

#[derive(Default)]
pub struct UndoLog {
    steps: Vec<(String, Step)>,
}

impl UndoLog {
    pub fn push(
        &mut self,
        what: impl Into<String>,
        step: impl FnOnce(&mut Netlink) -> Result<()> + 'static,
    ) {
        let what = what.into();
        crate::failpoint::hit(&what);
        self.steps.push((what, Box::new(step)));
    }

    /// Run every step, newest first, and wrap `cause` with what was undone.
    pub fn rollback(mut self, nl: &mut Netlink, cause: Error) -> Error {
        if self.steps.is_empty() {
            return cause;
        }
        let mut done = Vec::new();
        while let Some((what, step)) = self.steps.pop() {
            match step(nl) {
                Ok(()) => done.push(what),
                Err(e) => done.push(format!("FAILED to {what}: {e}")),
            }
        }
        Error::RolledBack {
            cause: Box::new(cause),
            undone: done.join("; "),
        }
    }
}
