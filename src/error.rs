//! One error type for the whole engine; every variant carries the context a
//! user needs to act on it.

use crate::netlink::NetlinkError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: the field, the value given and why it is wrong.
    #[error("{field} `{value}`: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    #[error("network `{0}` does not exist")]
    UnknownNetwork(String),
    #[error("network `{0}` already exists")]
    NetworkExists(String),
    #[error("target `{target}`: {reason}")]
    Target { target: String, reason: String },
    #[error("network `{network}`: {reason}")]
    Ipam { network: String, reason: String },
    #[error("{what}: {source}")]
    Kernel { what: String, source: NetlinkError },
    #[error("state store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("topology `{file}`: {reason}")]
    Topology { file: String, reason: String },
    /// A multi-step change failed and was rolled back.
    #[error("{cause}\n  rolled back: {undone}")]
    RolledBack { cause: Box<Error>, undone: String },
    #[error("{0}")]
    Conflict(String),
    /// The daemon could not be reached, or failed the request.
    #[error("plumb daemon ({socket}): {reason}")]
    Daemon { socket: String, reason: String },
    #[error("Docker ({socket}): {reason}")]
    Docker { socket: String, reason: String },
    #[error("cluster store ({store}): {reason}")]
    Cluster { store: String, reason: String },
}

impl Error {
    pub fn invalid(
        field: impl Into<String>,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
    pub fn kernel(what: impl Into<String>, source: NetlinkError) -> Self {
        Error::Kernel {
            what: what.into(),
            source,
        }
    }
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
