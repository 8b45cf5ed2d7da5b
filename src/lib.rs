//! plumb: attach network namespaces to real networks, keep them that way.
//! See ARCHITECTURE.md in the shared folder for the layers and data flow.

pub mod cli;
pub mod cluster;
pub mod cluster_rules;
pub mod cni;
pub mod daemon;
pub mod dns;
pub mod docker;
pub mod driver;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod ipam;
pub mod model;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod policy;
pub mod report;
pub mod store;
pub mod target;
pub mod topology;
pub mod undo;
