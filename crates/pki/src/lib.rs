//! The transport of truc: the `truc://{role}/{name}` identities participant certificates
//! carry, where the files of a PKI are ([`Layout`]), the hub's audit signing key, TLS 1.3-only rustls configurations for mutual TLS
//! that check peers against certificate revocation lists ([`CrlSet`], [`CrlPolicy`]),
//! and the glue that serves and connects tonic over those configurations (tonic's own TLS
//! features are not used). A [`LiveTls`] is reloaded from its files while serving and
//! closes the connections of peers a new list revokes; when to reload is decided by
//! its holder (`truc-ops`). It issues no certificate (the development CA is `truc-devca`, which
//! servers do not link) and holds no authorization policy (callers decide what an
//! [`Identity`] may do).

#![forbid(unsafe_code)]

mod crl;
mod identity;
mod keys;
mod layout;
mod live;
mod tls;

// Dev-dependencies only the integration tests (`tests/`) use; the unit-test build links them too.
#[cfg(test)]
use {bytes as _, tempfile as _, truc_devca as _};

use std::path::PathBuf;

pub use crl::{CrlInfo, CrlPolicy, CrlSet, REFUSAL_REASONS, RefusalCounts};
pub use identity::{Identity, Role, valid_name};
pub use keys::load_audit_key;
pub use layout::Layout;
pub use live::LiveTls;
pub use tls::{
    AcceptLimits, ClientTls, PeerInfo, TlsConn, TlsFiles, channel, check_server_identity,
    client_config, client_config_for, install_crypto_provider, peer, server_config, tls_incoming,
    tls_incoming_live, tool_client_config,
};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A participant name is not 1..=63 lowercase letters, digits or '-'.
    #[error(
        "invalid name {0:?}: expected 1 to 63 lowercase letters, digits or '-', usable as a dns name"
    )]
    InvalidName(String),
    /// A role string is not one of hub, node, admin, client.
    #[error("invalid role {0:?}: expected hub, node, admin or client")]
    InvalidRole(String),
    /// A certificate carries no usable truc identity.
    #[error("certificate has no valid truc identity: {0}")]
    NoIdentity(String),
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A PEM file contains no certificate.
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    /// A PEM or certificate file cannot be parsed.
    #[error("bad certificate file {path}: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A certificate revocation list cannot be read, parsed or verified.
    #[error("bad certificate revocation list {path}: {reason}")]
    BadCrl {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A private key file is missing a key or holds an unusable one.
    #[error("bad private key file {path}: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration built from these files.
    #[error("tls configuration from {path} failed: {reason}")]
    Tls {
        /// The certificate or CA file involved.
        path: PathBuf,
        /// What rustls reported.
        reason: String,
    },
    /// A channel endpoint could not be built.
    #[error("invalid endpoint address {addr:?} or server name {server_name:?}: {reason}")]
    Endpoint {
        /// The address.
        addr: String,
        /// The expected server name.
        server_name: String,
        /// What is wrong.
        reason: String,
    },
}

impl PkiError {
    /// The file the error is about, if any.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            PkiError::Read { path, .. }
            | PkiError::BadCertificate { path, .. }
            | PkiError::BadCrl { path, .. }
            | PkiError::BadKey { path, .. }
            | PkiError::Tls { path, .. } => Some(path),
            PkiError::NoCertificate(path) => Some(path),
            _ => None,
        }
    }
}
