//! Where the files of a development PKI are in its directory (the CA writing them is
//! `truc-devca`; servers and tools only read them).

use std::path::PathBuf;

use crate::{Identity, TlsFiles};

/// Where the files of a development PKI are in its directory.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The directory.
    pub dir: PathBuf,
}

impl Layout {
    /// A layout rooted at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Layout { dir: dir.into() }
    }

    /// The CA certificate, `dir/ca.crt`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The CA private key, `dir/ca.key`.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// The CA's certificate revocation list (PEM), `dir/ca.crl`.
    pub fn crl(&self) -> PathBuf {
        self.dir.join("ca.crl")
    }

    /// The CA, certificate and key files of one participant, and the CA's
    /// CRL if there is one (a PKI written before CRLs existed has none).
    pub fn files(&self, id: &Identity) -> TlsFiles {
        let stem = id.stem();
        let mut files = TlsFiles::new(
            self.ca_cert(),
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.key")),
        );
        if self.crl().exists() {
            files.crls.push(self.crl());
        }
        files
    }

    /// The hub's Ed25519 audit signing key (PKCS#8 PEM), `dir/audit-signing.key`.
    pub fn audit_key(&self) -> PathBuf {
        self.dir.join("audit-signing.key")
    }

    /// The audit public key (lowercase hex of the raw 32 bytes), `dir/audit-signing.pub`.
    pub fn audit_public_key(&self) -> PathBuf {
        self.dir.join("audit-signing.pub")
    }

    /// A node's Ed25519 witness key (PKCS#8 PEM), `dir/node-ID-witness.key`:
    /// it cosigns the hub's tree heads.
    pub fn witness_key(&self, node: &str) -> PathBuf {
        self.dir.join(format!("node-{node}-witness.key"))
    }

    /// A node's witness public key (lowercase hex of the raw 32 bytes), for
    /// the registry's `witness_key`: `dir/node-ID-witness.pub`.
    pub fn witness_public_key(&self, node: &str) -> PathBuf {
        self.dir.join(format!("node-{node}-witness.pub"))
    }
}
