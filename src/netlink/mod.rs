//! Typed netlink wrappers: links, addresses, routes, rules. Each function is one
//! kernel request; callers compose them and keep the undo log.

mod addr;
mod link;
mod route;
mod rule;
mod socket;

pub use link::{LinkInfo, is_gone};
pub use rule::Rule;
pub use socket::{Netlink, NetlinkError, NlResult};
