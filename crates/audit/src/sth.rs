//! Signed tree heads: the hub's signed statement of its log's size and root.

use std::path::Path;

use bytes::Bytes;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use truc_proto::v1::SignedTreeHead;

use crate::{merkle::Hash, sha256};

const CONTEXT: &[u8] = b"truc-sth-v1";

/// The exact bytes a tree head's signature covers.
pub fn signed_bytes(tree_size: u64, timestamp_unix_ms: u64, root: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONTEXT.len() + 16 + root.len());
    out.extend_from_slice(CONTEXT);
    out.extend_from_slice(&tree_size.to_be_bytes());
    out.extend_from_slice(&timestamp_unix_ms.to_be_bytes());
    out.extend_from_slice(root);
    out
}

/// The key id of a public key: its SHA-256.
pub fn key_id(public_key: &[u8]) -> Hash {
    sha256(public_key)
}

/// Signs tree heads with the hub's Ed25519 audit key.
pub struct Signer {
    key: Ed25519KeyPair,
    key_id: Hash,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", hex::encode(self.key_id))
    }
}

impl Signer {
    /// A signer with `key`.
    pub fn new(key: Ed25519KeyPair) -> Signer {
        let key_id = key_id(key.public_key().as_ref());
        Signer { key, key_id }
    }

    /// A signer with a fresh random key, for tests: the hub loads its key
    /// from a file (`truc pki init` writes it).
    #[doc(hidden)]
    pub fn generate() -> Result<Signer, ring::error::Unspecified> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())?;
        let key =
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| ring::error::Unspecified)?;
        Ok(Signer::new(key))
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// A signed head for the tree of `tree_size` leaves with `root`.
    pub fn sign(&self, tree_size: u64, root: &Hash, timestamp_unix_ms: u64) -> SignedTreeHead {
        let signature = self
            .key
            .sign(&signed_bytes(tree_size, timestamp_unix_ms, root));
        SignedTreeHead {
            tree_size,
            root_hash: Bytes::copy_from_slice(root),
            timestamp_unix_ms,
            key_id: Bytes::copy_from_slice(&self.key_id),
            signature: Bytes::copy_from_slice(signature.as_ref()),
        }
    }
}

/// Why a tree head does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SthError {
    /// Signed by another key.
    #[error("tree head signed by key {0}, not by the hub key")]
    WrongKey(String),
    /// The root is not 32 bytes.
    #[error("tree head root is {0} bytes, not 32")]
    BadRoot(usize),
    /// The signature does not verify.
    #[error("tree head signature does not verify")]
    BadSignature,
}

/// Checks `head`'s key id and signature against the hub's raw public key.
pub fn verify_tree_head(head: &SignedTreeHead, public_key: &[u8]) -> Result<(), SthError> {
    if head.key_id.as_ref() != key_id(public_key) {
        return Err(SthError::WrongKey(hex::encode(&head.key_id)));
    }
    if head.root_hash.len() != 32 {
        return Err(SthError::BadRoot(head.root_hash.len()));
    }
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(
            &signed_bytes(head.tree_size, head.timestamp_unix_ms, &head.root_hash),
            &head.signature,
        )
        .map_err(|_| SthError::BadSignature)
}

/// Reads a public key file: 64 hex digits (as `truc pki init` writes it).
pub fn read_public_key(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = hex::decode(text.trim()).map_err(|e| format!("{}: not hex: {e}", path.display()))?;
    if key.len() != 32 {
        return Err(format!(
            "{}: an Ed25519 public key is 32 bytes, found {}",
            path.display(),
            key.len()
        ));
    }
    Ok(key)
}

/// The root of a head as a fixed-size hash, if it is 32 bytes.
pub fn root_of(head: &SignedTreeHead) -> Option<Hash> {
    head.root_hash.as_ref().try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::generate().expect("key")
    }

    #[test]
    fn heads_verify_and_any_change_fails() {
        let s = signer();
        let head = s.sign(7, &[9; 32], 1234);
        let key = s.public_key();
        assert_eq!(verify_tree_head(&head, &key), Ok(()));
        let mut h = head.clone();
        h.tree_size = 8;
        assert_eq!(verify_tree_head(&h, &key), Err(SthError::BadSignature));
        let mut h = head.clone();
        h.timestamp_unix_ms += 1;
        assert_eq!(verify_tree_head(&h, &key), Err(SthError::BadSignature));
        let mut h = head.clone();
        h.root_hash = Bytes::from(vec![8; 32]);
        assert_eq!(verify_tree_head(&h, &key), Err(SthError::BadSignature));
        let other = signer();
        assert!(matches!(
            verify_tree_head(&head, &other.public_key()),
            Err(SthError::WrongKey(_))
        ));
        // A head re-signed by another key but claiming ours fails too.
        let mut forged = other.sign(7, &[9; 32], 1234);
        forged.key_id = head.key_id.clone();
        assert_eq!(verify_tree_head(&forged, &key), Err(SthError::BadSignature));
    }
}
