//! The development certificate authority of truc: `init` writes a CA, one certificate per
//! participant (hub, nodes, admin, clients) and the hub's audit signing key into a
//! [`Layout`]; `issue` adds one more certificate later. Only the CLI (`truc pki`), the demo
//! and tests use it; the hub and nodes read the files it writes through `truc-pki` and never
//! link a certificate generator. `revoke` adds a certificate to the CA's revocation list
//! (`ca.crl`, written empty by `init`). It is not a production CA: there is no key
//! protection beyond file permissions.

#![forbid(unsafe_code)]

mod ca;
mod crl;

use std::path::PathBuf;

pub use ca::{
    DEFAULT_LEAF_VALIDITY_DAYS, InitOptions, MAX_LEAF_VALIDITY_DAYS, hub_replica, init, issue,
    replica_audit_key,
};
pub use crl::{
    CRL_VALIDITY_DAYS, REASONS, RevokeTarget, Revoked, parse_reason, reissue_crl, revoke,
};
pub use rcgen::RevocationReason;
pub use truc_pki::{Identity, Layout, PkiError, Role, TlsFiles};

/// Everything that can go wrong while writing a development PKI.
#[derive(Debug, thiserror::Error)]
pub enum DevCaError {
    /// A name, a file read or a certificate read back is refused by `truc-pki`.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The same server name is given to the hub and a node (or twice).
    #[error("duplicate name {0:?} among hub and nodes: a node must never be named like the hub")]
    DuplicateName(String),
    /// The validity period of a participant certificate is out of range.
    #[error(
        "invalid validity of {0} days: expected 1 to 366 (participant certificates last at most a year)"
    )]
    InvalidValidity(u32),
    /// The CA certificate already exists and would be overwritten.
    #[error("refusing to overwrite existing ca certificate {0}")]
    CaExists(PathBuf),
    /// A file that would be written already exists.
    #[error("refusing to overwrite existing file {0}")]
    FileExists(PathBuf),
    /// Writing a file or creating a directory failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A serial number given to `revoke` is not hex.
    #[error("invalid serial number {0}")]
    BadSerial(String),
    /// Certificate generation failed.
    #[error("cannot generate certificate {path}: {source}")]
    Generate {
        /// The certificate file being produced.
        path: PathBuf,
        /// The cause.
        source: rcgen::Error,
    },
}

#[cfg(test)]
mod tests;

/// A small development PKI for tests: the options of one, and the
/// identities it issues (the hub, two nodes, an admin, an agency system).
#[doc(hidden)]
pub mod testing {
    use truc_pki::{Identity, Role};

    use crate::InitOptions;

    /// Options of a PKI with certificates valid for 30 days.
    pub fn options() -> InitOptions {
        InitOptions {
            hub: "hub".into(),
            nodes: vec!["lgsp-langson".into(), "node2".into()],
            admin: "root-admin".into(),
            clients: vec!["app1".into()],
            validity_days: 30,
        }
    }

    /// The identities [`options`] issues certificates to.
    pub fn identities() -> Vec<Identity> {
        [
            (Role::Hub, "hub"),
            (Role::Node, "lgsp-langson"),
            (Role::Node, "node2"),
            (Role::Admin, "root-admin"),
            (Role::Client, "app1"),
        ]
        .into_iter()
        .filter_map(|(role, name)| Identity::new(role, name).ok())
        .collect()
    }
}
