//! Network drivers: how a network exists on the host and how a namespace is
//! plugged into it. One module per kind; the engine calls them with open
//! netlink sockets and an undo log.

pub mod bridge;
