//! Typed netlink wrappers: links, addresses, routes, rules, qdiscs, nftables
//! set elements and whole tables. Each function is one kernel request; callers compose them
//! and keep the undo log.

mod addr;
mod conntrack;
mod link;
pub mod monitor;
mod neigh;
mod nfquery;
mod nfset;
pub mod nftable;
mod route;
mod rule;
mod socket;
mod tc;

pub use link::{LinkInfo, is_gone};
pub use nfquery::{Listed, ListedRule};
pub use nfset::{Change, Element, Field, NfFamily, NfNetlink, set_key};
pub use rule::Rule;
pub use socket::{Netlink, NetlinkError, NlResult};
