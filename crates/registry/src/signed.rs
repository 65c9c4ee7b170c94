//! What the hub signs when it serves the registry, so that the hub (which
//! signs) and the nodes (which verify) agree on the bytes.

use prost::Message;
use truc_proto::v1::RegistrySnapshot;

/// Domain separation: these bytes can never be mistaken for a tree head.
const CONTEXT: &[u8] = b"truc-registry-v1\0";

/// The snapshot's version: SHA-256 of its encoding without the fields that
/// say who signed it and when, so that it changes exactly when an entry does:
/// hub replicas serving one registry, each signing with its own key, give
/// it the same version, and a node fetching from either sees no change.
pub fn version(snapshot: &RegistrySnapshot) -> [u8; 32] {
    let content = RegistrySnapshot {
        version: Default::default(),
        audit_public_key: Default::default(),
        key_id: Default::default(),
        signed_unix_ms: 0,
        signature: Default::default(),
        unchanged: false,
        ..snapshot.clone()
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, &content.encode_to_vec());
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The exact bytes the hub's signature covers: the context, then the
/// snapshot's encoding with its signature empty (version, key id and time
/// included).
pub fn signed_bytes(snapshot: &RegistrySnapshot) -> Vec<u8> {
    let unsigned = RegistrySnapshot {
        signature: Default::default(),
        unchanged: false,
        ..snapshot.clone()
    };
    let mut out = CONTEXT.to_vec();
    unsigned.encode(&mut out).unwrap_or_default();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_follows_the_entries_and_not_the_signature() {
        let mut s = RegistrySnapshot {
            source_sha256: vec![1; 32].into(),
            ..RegistrySnapshot::default()
        };
        let v = version(&s);
        s.signature = vec![9; 64].into();
        s.signed_unix_ms = 5;
        s.key_id = vec![3; 32].into();
        s.version = v.to_vec().into();
        assert_eq!(version(&s), v);
        // Another replica's key, the same entries: the same version.
        s.audit_public_key = vec![4; 32].into();
        assert_eq!(version(&s), v);
        let signed = signed_bytes(&s);
        s.signature = vec![8; 64].into();
        assert_eq!(signed_bytes(&s), signed, "the signature is not signed");
        s.signed_unix_ms = 6;
        assert_ne!(signed_bytes(&s), signed, "the time is signed");
        s.grants.push(truc_proto::v1::GrantEntry {
            client: "a".into(),
            service: "b".into(),
        });
        assert_ne!(version(&s), v);
        assert!(signed_bytes(&s).starts_with(b"truc-registry-v1\0"));
    }
}
