//! The registry as served to nodes: a snapshot signed with the hub's audit
//! key, made once per registry loaded (the holder's `Arc` says which), and
//! a short "unchanged" answer to a node that already has its version.
//!
//! A whole snapshot is megabytes at national size (each answer a copy of
//! it, held until sent), and a node needs one when it starts or when the
//! registry changes; so each caller gets at most one whole snapshot per
//! [`WHOLE_SNAPSHOT_EVERY`]. A node that asks again sooner (a hostile one
//! asking on a thousand streams at once) is told when to come back.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use ring::signature::{Ed25519KeyPair, KeyPair};
use truc_proto::v1::RegistrySnapshot;
use truc_registry::Registry;

/// The least time between two whole snapshots sent to one caller.
pub(crate) const WHOLE_SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// Signs registry snapshots, and keeps the last one signed.
pub(crate) struct SignedRegistry {
    key: Ed25519KeyPair,
    key_id: [u8; 32],
    last: Mutex<Option<(Arc<Registry>, Arc<RegistrySnapshot>)>>,
    /// When each caller (by certificate identity) was last sent a whole
    /// snapshot; at most one entry per certificate the CA issued.
    sent: Mutex<HashMap<String, Instant>>,
}

impl SignedRegistry {
    /// Signing with `key` (the hub's audit key).
    pub(crate) fn new(key: Ed25519KeyPair) -> SignedRegistry {
        let key_id = truc_audit::sth::key_id(key.public_key().as_ref());
        SignedRegistry {
            key,
            key_id,
            last: Mutex::new(None),
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// The signed snapshot of `registry` (signed on first use).
    pub(crate) fn snapshot(&self, registry: &Arc<Registry>) -> Arc<RegistrySnapshot> {
        if let Ok(last) = self.last.lock() {
            if let Some((r, s)) = last.as_ref() {
                if Arc::ptr_eq(r, registry) {
                    return s.clone();
                }
            }
        }
        let mut snapshot = registry.to_snapshot();
        snapshot.audit_public_key = Bytes::copy_from_slice(self.key.public_key().as_ref());
        snapshot.version = Bytes::copy_from_slice(&truc_registry::signed::version(&snapshot));
        snapshot.key_id = Bytes::copy_from_slice(&self.key_id);
        snapshot.signed_unix_ms = truc_proto::now_ms();
        let signature = self
            .key
            .sign(&truc_registry::signed::signed_bytes(&snapshot));
        snapshot.signature = Bytes::copy_from_slice(signature.as_ref());
        let snapshot = Arc::new(snapshot);
        if let Ok(mut last) = self.last.lock() {
            *last = Some((registry.clone(), snapshot.clone()));
        }
        snapshot
    }

    /// What to answer `caller`, which has `known_version`: "unchanged"
    /// when it is current, else the whole signed snapshot; or, when that
    /// caller was sent a whole one less than [`WHOLE_SNAPSHOT_EVERY`] ago,
    /// how long it must wait.
    pub(crate) fn answer(
        &self,
        registry: &Arc<Registry>,
        known_version: &[u8],
        caller: &str,
        now: Instant,
    ) -> Result<RegistrySnapshot, Duration> {
        let snapshot = self.snapshot(registry);
        if !known_version.is_empty() && snapshot.version.as_ref() == known_version {
            return Ok(RegistrySnapshot {
                version: snapshot.version.clone(),
                unchanged: true,
                ..RegistrySnapshot::default()
            });
        }
        if let Ok(mut sent) = self.sent.lock() {
            if let Some(last) = sent.get(caller) {
                let since = now.saturating_duration_since(*last);
                if since < WHOLE_SNAPSHOT_EVERY {
                    return Err(WHOLE_SNAPSHOT_EVERY - since);
                }
            }
            if sent.len() >= 4096 {
                sent.retain(|_, at| now.saturating_duration_since(*at) < WHOLE_SNAPSHOT_EVERY);
            }
            sent.insert(caller.to_owned(), now);
        }
        Ok((*snapshot).clone())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("key");
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key")
    }

    fn registry(text: &str) -> Arc<Registry> {
        Arc::new(Registry::from_toml_str(text, "registry.toml").expect("registry"))
    }

    #[test]
    fn snapshots_are_signed_once_per_registry_and_unchanged_is_short() {
        let signer = SignedRegistry::new(key());
        let public = signer.key.public_key().as_ref().to_vec();
        let one = registry("");
        let first = signer.snapshot(&one);
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
            .verify(
                &truc_registry::signed::signed_bytes(&first),
                &first.signature,
            )
            .expect("signed");
        assert_eq!(
            first.version.as_ref(),
            truc_registry::signed::version(&first)
        );
        assert!(Arc::ptr_eq(&first, &signer.snapshot(&one)), "signed once");
        let t = Instant::now();
        let unchanged = signer.answer(&one, &first.version, "node/a", t).unwrap();
        assert!(unchanged.unchanged && unchanged.signature.is_empty());
        assert_eq!(unchanged.version, first.version);
        assert!(!signer.answer(&one, b"old", "node/a", t).unwrap().unchanged);
        // A registry with other entries has another version.
        let two = registry("[[agency]]\ncode = \"000.00.00.G22\"\nname = \"Bo Cong an\"\n");
        let later = t + WHOLE_SNAPSHOT_EVERY;
        let second = signer
            .answer(&two, &first.version, "node/a", later)
            .unwrap();
        assert!(!second.unchanged);
        assert_ne!(second.version, first.version);
        assert_eq!(second.agencies.len(), 1);
    }

    #[test]
    fn a_caller_gets_one_whole_snapshot_a_second_and_unchanged_always() {
        let signer = SignedRegistry::new(key());
        let one = registry("");
        let t = Instant::now();
        let version = signer.answer(&one, b"", "node/a", t).unwrap().version;
        // Asked again at once, on as many streams as a connection allows.
        for i in 0..1024u32 {
            let soon = t + Duration::from_micros(u64::from(i));
            let wait = signer
                .answer(&one, b"", "node/a", soon)
                .expect_err("too soon");
            assert_eq!(
                wait,
                WHOLE_SNAPSHOT_EVERY - Duration::from_micros(u64::from(i))
            );
        }
        // "Unchanged" is never refused; another caller is not held back.
        let soon = t + Duration::from_millis(1);
        assert!(
            signer
                .answer(&one, &version, "node/a", soon)
                .unwrap()
                .unchanged
        );
        assert!(!signer.answer(&one, b"", "node/b", soon).unwrap().unchanged);
        // After the interval, a whole one again.
        let later = t + WHOLE_SNAPSHOT_EVERY;
        assert!(!signer.answer(&one, b"", "node/a", later).unwrap().unchanged);
    }
}
