//! What the node checks of the hub's word: the hub's audit keys are pinned
//! in the node's config (never learnt from the hub), and tree heads,
//! receipts and registry snapshots are accepted only when signed by one of
//! them, valid at the time they were signed.

use std::sync::{Arc, Mutex};

use truc_audit::merkle::Hash;
use truc_proto::v1::SignedTreeHead;

/// One accepted hub audit key and when it is valid (inclusive bounds, in
/// milliseconds since the Unix epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedKey {
    /// The raw 32-byte Ed25519 public key.
    pub key: Vec<u8>,
    /// SHA-256 of the key, as tree heads name it.
    pub key_id: Hash,
    /// Not valid for anything signed before this.
    pub not_before_ms: Option<u64>,
    /// Not valid for anything signed after this.
    pub not_after_ms: Option<u64>,
    /// The log this key signs (a replica's `log_origin`), when pinned:
    /// heads signed with it under another origin are refused.
    pub origin: Option<String>,
}

impl PinnedKey {
    /// A pinned key valid between the bounds given.
    pub fn new(key: Vec<u8>, not_before_ms: Option<u64>, not_after_ms: Option<u64>) -> PinnedKey {
        let key_id = truc_audit::sth::key_id(&key);
        PinnedKey {
            key,
            key_id,
            not_before_ms,
            not_after_ms,
            origin: None,
        }
    }

    /// This key, accepted only for heads of the log `origin`.
    pub fn for_origin(mut self, origin: &str) -> PinnedKey {
        self.origin = Some(origin.to_string());
        self
    }

    /// Whether something signed at `at_ms` may be signed with this key.
    pub fn valid_at(&self, at_ms: u64) -> bool {
        self.not_before_ms.is_none_or(|b| at_ms >= b)
            && self.not_after_ms.is_none_or(|a| at_ms <= a)
    }
}

/// Why something the hub signed is not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// No pinned key has this key id.
    #[error("signed by key {0}, which is not pinned in this node's config")]
    UnknownKey(String),
    /// The key is pinned, but not for that time.
    #[error("signed by key {key} at {at_ms} ms, outside the key's validity in this node's config")]
    Expired {
        /// The key id, hex.
        key: String,
        /// When the head says it was signed.
        at_ms: u64,
    },
    /// The signature (or the signed content) is wrong.
    #[error("{0}")]
    BadSignature(String),
    /// The key is pinned for another log (replica) than the head names.
    #[error("signed by key {key}, pinned for log {pinned:?}, under origin {origin:?}")]
    WrongLog {
        /// The key id, hex.
        key: String,
        /// The origin the key is pinned for.
        pinned: String,
        /// The origin the head names.
        origin: String,
    },
}

/// The hub's pinned audit keys, and the tree heads already verified with
/// them: the hub signs one head per group commit, so concurrent calls share
/// heads, and an Ed25519 verification costs more than the rest of a node's
/// work on a call.
#[derive(Clone)]
pub struct HubKey {
    keys: Arc<[PinnedKey]>,
    verified: Arc<Mutex<VerifiedHeads>>,
    /// The latest head newly verified, for the witness to check.
    sightings: Arc<tokio::sync::watch::Sender<Option<SignedTreeHead>>>,
}

/// The last heads verified, whole (size, time, root, key id, signature).
#[derive(Default)]
struct VerifiedHeads(std::collections::VecDeque<SignedTreeHead>);

impl VerifiedHeads {
    const KEEP: usize = 64;

    fn contains(&self, head: &SignedTreeHead) -> bool {
        self.0.iter().rev().any(|h| h == head)
    }

    fn insert(&mut self, head: SignedTreeHead) {
        if self.0.len() == Self::KEEP {
            self.0.pop_front();
        }
        self.0.push_back(head);
    }
}

impl HubKey {
    /// The keys pinned in the node's config.
    pub fn new(keys: Vec<PinnedKey>) -> HubKey {
        HubKey {
            keys: keys.into(),
            verified: Arc::default(),
            sightings: Arc::new(tokio::sync::watch::Sender::new(None)),
        }
    }

    /// The pinned key named `key_id`, if it is valid at `at_ms`.
    fn key_for(&self, key_id: &[u8], at_ms: u64) -> Result<&PinnedKey, TrustError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.key_id.as_slice() == key_id)
            .ok_or_else(|| TrustError::UnknownKey(hex::encode(key_id)))?;
        if !key.valid_at(at_ms) {
            return Err(TrustError::Expired {
                key: hex::encode(key_id),
                at_ms,
            });
        }
        Ok(key)
    }

    /// Whether `head` is validly signed by a pinned key that was valid at
    /// the head's timestamp.
    pub fn check_head(&self, head: &SignedTreeHead) -> Result<(), TrustError> {
        if self.verified.lock().is_ok_and(|v| v.contains(head)) {
            return Ok(());
        }
        let key = self.key_for(&head.key_id, head.timestamp_unix_ms)?;
        if let Some(pinned) = key.origin.as_ref().filter(|o| **o != head.origin) {
            return Err(TrustError::WrongLog {
                key: hex::encode(&head.key_id),
                pinned: pinned.clone(),
                origin: head.origin.clone(),
            });
        }
        truc_audit::sth::verify_tree_head(head, &key.key)
            .map_err(|e| TrustError::BadSignature(e.to_string()))?;
        if let Ok(mut v) = self.verified.lock() {
            v.insert(head.clone());
        }
        Ok(())
    }

    /// [`HubKey::check_head`] for the head of a receipt: a head not seen
    /// before is also handed to the witness, which checks it against the
    /// one it keeps. (The witness's own checks do not feed it: each of its
    /// contacts may see a newer head, and would start the next.)
    pub(crate) fn check_receipt_head(&self, head: &SignedTreeHead) -> Result<(), TrustError> {
        let seen = self.verified.lock().is_ok_and(|v| v.contains(head));
        self.check_head(head)?;
        if !seen {
            self.sightings.send_replace(Some(head.clone()));
        }
        Ok(())
    }

    /// The heads of receipts newly verified, as they are verified.
    pub(crate) fn sightings(&self) -> tokio::sync::watch::Receiver<Option<SignedTreeHead>> {
        self.sightings.subscribe()
    }

    /// [`HubKey::check_head`] as a yes or no.
    pub fn head_is_valid(&self, head: &SignedTreeHead) -> bool {
        self.check_head(head).is_ok()
    }

    /// Checks an Ed25519 `signature` over `message` by the pinned key
    /// `key_id`, valid at `at_ms`.
    pub fn check_signature(
        &self,
        key_id: &[u8],
        at_ms: u64,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), TrustError> {
        let key = self.key_for(key_id, at_ms)?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key.key)
            .verify(message, signature)
            .map_err(|_| TrustError::BadSignature("the signature does not verify".into()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use truc_audit::sth::Signer;

    pub(crate) fn signer() -> Signer {
        Signer::generate().expect("key")
    }

    #[test]
    fn a_head_is_accepted_only_from_a_pinned_key_valid_at_its_time() {
        let old = signer();
        let new = signer();
        let stranger = signer();
        let keys = HubKey::new(vec![
            PinnedKey::new(old.public_key(), None, Some(1_000)),
            PinnedKey::new(new.public_key(), Some(900), None),
        ]);
        assert_eq!(keys.check_head(&old.sign(3, &[1; 32], 1_000)), Ok(()));
        assert!(matches!(
            keys.check_head(&old.sign(3, &[1; 32], 1_001)),
            Err(TrustError::Expired { at_ms: 1_001, .. })
        ));
        assert_eq!(keys.check_head(&new.sign(3, &[1; 32], 950)), Ok(()));
        assert!(matches!(
            keys.check_head(&new.sign(3, &[1; 32], 899)),
            Err(TrustError::Expired { .. })
        ));
        assert!(matches!(
            keys.check_head(&stranger.sign(3, &[1; 32], 950)),
            Err(TrustError::UnknownKey(_))
        ));
        // Another key's signature under a pinned key's id.
        let mut forged = stranger.sign(3, &[1; 32], 950);
        forged.key_id = new.sign(3, &[1; 32], 950).key_id;
        assert!(matches!(
            keys.check_head(&forged),
            Err(TrustError::BadSignature(_))
        ));
        // A cached head is the exact head: changing it is checked again.
        let good = new.sign(4, &[2; 32], 960);
        assert!(keys.head_is_valid(&good));
        let mut changed = good.clone();
        changed.tree_size = 5;
        assert!(!keys.head_is_valid(&changed));
    }

    #[test]
    fn each_replica_key_verifies_only_its_own_log() {
        let seeded = |origin: &str| {
            let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("seed");
            Signer::new(key).with_origin(origin)
        };
        let a = seeded("hub/replica-a");
        let b = Signer::generate()
            .expect("key")
            .with_origin("hub/replica-b");
        let only_a = HubKey::new(vec![
            PinnedKey::new(a.public_key(), None, None).for_origin("hub/replica-a"),
        ]);
        let both = HubKey::new(vec![
            PinnedKey::new(a.public_key(), None, None).for_origin("hub/replica-a"),
            PinnedKey::new(b.public_key(), None, None).for_origin("hub/replica-b"),
        ]);
        let head_a = a.sign(3, &[1; 32], 950);
        let head_b = b.sign(3, &[1; 32], 950);
        assert_eq!(only_a.check_head(&head_a), Ok(()));
        // Replica B's head against replica A's key alone: refused.
        assert!(matches!(
            only_a.check_head(&head_b),
            Err(TrustError::UnknownKey(_))
        ));
        assert_eq!(both.check_head(&head_b), Ok(()));
        // Replica A's key signing a head that names replica B's log.
        let a_as_b = seeded("hub/replica-b").sign(3, &[1; 32], 950);
        assert!(matches!(
            both.check_head(&a_as_b),
            Err(TrustError::WrongLog { .. })
        ));
    }
}
