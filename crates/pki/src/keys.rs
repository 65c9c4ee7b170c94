//! The hub's Ed25519 audit signing key, read from the PKCS#8 PEM file the development CA
//! (or an operator) writes.

use std::fs;
use std::path::Path;

use crate::PkiError;

/// Loads the Ed25519 audit signing key written by `init`.
pub fn load_audit_key(path: &Path) -> Result<ring::signature::Ed25519KeyPair, PkiError> {
    use rustls::pki_types::{PrivatePkcs8KeyDer, pem::PemObject};
    let bytes = read_bytes(path)?;
    let bad = |reason: String| PkiError::BadKey {
        path: path.to_path_buf(),
        reason,
    };
    let der = PrivatePkcs8KeyDer::from_pem_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
        .map_err(|e| bad(format!("not an ed25519 pkcs#8 key: {e}")))
}

pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}
