//! Typed netlink wrappers: links, addresses, routes. Each function is one
//! kernel request; callers compose them and keep the undo log.

mod addr;
mod link;
mod route;
mod socket;

pub use link::{LinkInfo, is_gone};
pub use socket::{Netlink, NetlinkError, NlResult};
