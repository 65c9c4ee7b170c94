//! Public-key infrastructure for truc: a development certificate authority that issues
//! one certificate per participant (hub, nodes, admin, clients), the `truc://{role}/{name}`
//! identities those certificates carry, TLS 1.3-only rustls configurations for mutual TLS,
//! and the glue that serves and connects tonic over those configurations (tonic's own TLS
//! features are not used). It is not a production CA: there is no revocation, no key
//! protection beyond file permissions, and no authorization policy (callers decide what an
//! [`Identity`] may do).

#![forbid(unsafe_code)]

mod ca;
mod identity;
mod tls;

use std::path::PathBuf;

pub use ca::{
    DEFAULT_LEAF_VALIDITY_DAYS, InitOptions, Layout, MAX_LEAF_VALIDITY_DAYS, init, issue,
    load_audit_key,
};
pub use identity::{Identity, Role};
pub use tls::{
    AcceptLimits, PeerInfo, TlsConn, TlsFiles, channel, client_config, client_config_for,
    install_crypto_provider, peer, server_config, tls_incoming, tool_client_config,
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
    /// The same server name is given to the hub and a node (or twice).
    #[error("duplicate name {0:?} among hub and nodes: a node must never be named like the hub")]
    DuplicateName(String),
    /// The validity period of a participant certificate is out of range.
    #[error(
        "invalid validity of {0} days: expected 1 to 366 (participant certificates last at most a year)"
    )]
    InvalidValidity(u32),
    /// A certificate carries no usable truc identity.
    #[error("certificate has no valid truc identity: {0}")]
    NoIdentity(String),
    /// The CA certificate already exists and would be overwritten.
    #[error("refusing to overwrite existing ca certificate {0}")]
    CaExists(PathBuf),
    /// A file that would be written already exists.
    #[error("refusing to overwrite existing file {0}")]
    FileExists(PathBuf),
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing a file or creating a directory failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
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
    /// A private key file is missing a key or holds an unusable one.
    #[error("bad private key file {path}: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("cannot generate certificate {path}: {source}")]
    Generate {
        /// The certificate file being produced.
        path: PathBuf,
        /// The cause.
        source: rcgen::Error,
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

#[cfg(test)]
mod tests;
