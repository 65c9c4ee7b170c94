//! Signed tree heads: the hub's signed statement of its log's size and root,
//! as C2SP checkpoints (c2sp.org/tlog-checkpoint) signed as C2SP notes, and
//! the witnesses' cosignatures of them (c2sp.org/tlog-cosignature,
//! `cosignature/v1`).
//!
//! Heads that earlier builds stored carry no origin and were signed over the
//! `truc-sth-v1` bytes; they still verify.

use std::path::Path;

use bytes::Bytes;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use truc_proto::v1::{Cosignature, SignedTreeHead};

use crate::{
    merkle::Hash,
    note::{self, NoteError, NoteSignature, TYPE_COSIGNATURE_V1, TYPE_ED25519},
    sha256,
};

const CONTEXT: &[u8] = b"truc-sth-v1";

/// The origin of a hub whose config names none and whose name is unknown.
pub const DEFAULT_ORIGIN: &str = "hub/truc-audit";

/// The checkpoint extension line that carries the head's timestamp.
const TIMESTAMP_LINE: &str = "timestamp ";

/// The exact bytes a head of an earlier build (no origin) was signed over.
pub fn signed_bytes(tree_size: u64, timestamp_unix_ms: u64, root: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONTEXT.len() + 16 + root.len());
    out.extend_from_slice(CONTEXT);
    out.extend_from_slice(&tree_size.to_be_bytes());
    out.extend_from_slice(&timestamp_unix_ms.to_be_bytes());
    out.extend_from_slice(root);
    out
}

/// The checkpoint text (note body) of a head: origin, size, base64 root,
/// and the timestamp as an extension line.
pub fn checkpoint_text(
    origin: &str,
    tree_size: u64,
    root: &[u8],
    timestamp_unix_ms: u64,
) -> String {
    format!(
        "{origin}\n{tree_size}\n{}\n{TIMESTAMP_LINE}{timestamp_unix_ms}\n",
        note::base64(root)
    )
}

/// The checkpoint text of `head` (empty for a head without origin).
pub fn head_text(head: &SignedTreeHead) -> String {
    if head.origin.is_empty() {
        return String::new();
    }
    checkpoint_text(
        &head.origin,
        head.tree_size,
        &head.root_hash,
        head.timestamp_unix_ms,
    )
}

/// The key id of a public key: its SHA-256.
pub fn key_id(public_key: &[u8]) -> Hash {
    sha256(public_key)
}

/// Whether `origin` may name a log: a valid note key name (the hub signs
/// under its origin) of at most 255 bytes.
pub fn valid_origin(origin: &str) -> bool {
    origin.len() <= 255 && note::valid_key_name(origin)
}

/// Signs tree heads with the hub's Ed25519 audit key.
pub struct Signer {
    key: Ed25519KeyPair,
    key_id: Hash,
    origin: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({}, {})", self.origin, hex::encode(self.key_id))
    }
}

impl Signer {
    /// A signer with `key`, for the log named [`DEFAULT_ORIGIN`].
    pub fn new(key: Ed25519KeyPair) -> Signer {
        let key_id = key_id(key.public_key().as_ref());
        Signer {
            key,
            key_id,
            origin: DEFAULT_ORIGIN.to_string(),
        }
    }

    /// The same signer for the log named `origin` (checked with
    /// [`valid_origin`] by the config).
    pub fn with_origin(mut self, origin: &str) -> Signer {
        self.origin = origin.to_string();
        self
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

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A signed head for the tree of `tree_size` leaves with `root`.
    pub fn sign(&self, tree_size: u64, root: &Hash, timestamp_unix_ms: u64) -> SignedTreeHead {
        let text = checkpoint_text(&self.origin, tree_size, root, timestamp_unix_ms);
        let signature = self.key.sign(text.as_bytes());
        let mut head = SignedTreeHead {
            tree_size,
            root_hash: Bytes::copy_from_slice(root),
            timestamp_unix_ms,
            key_id: Bytes::copy_from_slice(&self.key_id),
            signature: Bytes::copy_from_slice(signature.as_ref()),
            origin: self.origin.clone(),
            ..SignedTreeHead::default()
        };
        head.note = render_note(&head, &self.public_key());
        head
    }

    /// A head in the format of earlier builds, for tests of old logs.
    #[doc(hidden)]
    pub fn sign_legacy(
        &self,
        tree_size: u64,
        root: &Hash,
        timestamp_unix_ms: u64,
    ) -> SignedTreeHead {
        let signature = self
            .key
            .sign(&signed_bytes(tree_size, timestamp_unix_ms, root));
        SignedTreeHead {
            tree_size,
            root_hash: Bytes::copy_from_slice(root),
            timestamp_unix_ms,
            key_id: Bytes::copy_from_slice(&self.key_id),
            signature: Bytes::copy_from_slice(signature.as_ref()),
            ..SignedTreeHead::default()
        }
    }
}

/// The signed note of a checkpoint head: its text, a blank line and the
/// hub's signature line (named by the origin, key id per signed-note).
fn render_note(head: &SignedTreeHead, public_key: &[u8]) -> String {
    let line = NoteSignature {
        name: head.origin.clone(),
        key_id: note::key_id(&head.origin, TYPE_ED25519, public_key),
        signature: head.signature.to_vec(),
    }
    .line();
    format!("{}\n{line}", head_text(head))
}

/// The note of `head` with the signature lines of its cosignatures
/// appended, as witnessed checkpoints are exchanged (empty for a head
/// without origin).
pub fn note_with_cosignatures(head: &SignedTreeHead) -> String {
    if head.note.is_empty() {
        return String::new();
    }
    let mut out = head.note.clone();
    for c in &head.cosignatures {
        out.push_str(&cosignature_line(c));
    }
    out
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
    /// The note text is not the checkpoint of the head's fields.
    #[error("tree head note does not match its fields")]
    BadNote,
    /// Not a well-formed checkpoint or note.
    #[error("not a well-formed checkpoint: {0}")]
    Malformed(#[from] NoteError),
}

/// Checks `head`'s key id and signature against the hub's raw public key:
/// a checkpoint's note signature, or the `truc-sth-v1` signature of a head
/// of an earlier build (no origin).
pub fn verify_tree_head(head: &SignedTreeHead, public_key: &[u8]) -> Result<(), SthError> {
    if head.key_id.as_ref() != key_id(public_key) {
        return Err(SthError::WrongKey(hex::encode(&head.key_id)));
    }
    if head.root_hash.len() != 32 {
        return Err(SthError::BadRoot(head.root_hash.len()));
    }
    let key = UnparsedPublicKey::new(&ED25519, public_key);
    if head.origin.is_empty() {
        if !head.note.is_empty() {
            return Err(SthError::BadNote);
        }
        return key
            .verify(
                &signed_bytes(head.tree_size, head.timestamp_unix_ms, &head.root_hash),
                &head.signature,
            )
            .map_err(|_| SthError::BadSignature);
    }
    if !valid_origin(&head.origin) {
        return Err(SthError::Malformed(NoteError(format!(
            "origin {:?} is not a key name",
            head.origin
        ))));
    }
    key.verify(head_text(head).as_bytes(), &head.signature)
        .map_err(|_| SthError::BadSignature)?;
    // What tooling reads must be what was verified.
    if !head.note.is_empty() && head.note != render_note(head, public_key) {
        return Err(SthError::BadNote);
    }
    Ok(())
}

/// Reads a head back from its signed note (as `truc audit head` writes it,
/// cosignature lines included) and verifies it with the hub's key. Lines
/// of unknown keys are ignored, as the signed-note spec asks; cosignature
/// lines are kept unverified (check them with [`verify_cosignature`]).
pub fn head_from_note(text: &str, public_key: &[u8]) -> Result<SignedTreeHead, SthError> {
    let parsed = note::parse(text)?;
    let cp = note::parse_checkpoint(&parsed.text)?;
    let timestamp = match cp.extensions.as_slice() {
        [line] => line
            .strip_prefix(TIMESTAMP_LINE)
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| NoteError(format!("extension line {line:?} is not a timestamp")))?,
        _ => {
            return Err(SthError::Malformed(NoteError(
                "a truc checkpoint has exactly one extension line, its timestamp".into(),
            )));
        }
    };
    let hub_id = note::key_id(&cp.origin, TYPE_ED25519, public_key);
    let hub_sig = parsed
        .signatures
        .iter()
        .find(|s| s.name == cp.origin && s.key_id == hub_id)
        .ok_or_else(|| {
            SthError::WrongKey(format!("no signature of {} by the hub key", cp.origin))
        })?;
    let mut head = SignedTreeHead {
        tree_size: cp.size,
        root_hash: Bytes::copy_from_slice(&cp.root),
        timestamp_unix_ms: timestamp,
        key_id: Bytes::copy_from_slice(&key_id(public_key)),
        signature: Bytes::from(hub_sig.signature.clone()),
        origin: cp.origin.clone(),
        ..SignedTreeHead::default()
    };
    head.note = render_note(&head, public_key);
    // The text must be exactly what this head renders to.
    if head_text(&head) != parsed.text {
        return Err(SthError::BadNote);
    }
    verify_tree_head(&head, public_key)?;
    for s in &parsed.signatures {
        if s.name != cp.origin && s.signature.len() == 8 + 64 {
            let mut t = [0u8; 8];
            t.copy_from_slice(&s.signature[..8]);
            head.cosignatures.push(Cosignature {
                name: s.name.clone(),
                key_id: Bytes::copy_from_slice(&s.key_id),
                timestamp: u64::from_be_bytes(t),
                signature: Bytes::copy_from_slice(&s.signature[8..]),
            });
        }
    }
    Ok(head)
}

/// The message a `cosignature/v1` signs: the header line, the time line,
/// then the checkpoint text.
pub fn cosigned_message(head: &SignedTreeHead, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{}", head_text(head)).into_bytes()
}

/// The witness key id of `public_key` under `name` (type 0x04).
pub fn cosignature_key_id(name: &str, public_key: &[u8]) -> [u8; 4] {
    note::key_id(name, TYPE_COSIGNATURE_V1, public_key)
}

/// A witness's cosignature of `head` at `timestamp` (seconds).
pub fn cosign(
    key: &Ed25519KeyPair,
    name: &str,
    head: &SignedTreeHead,
    timestamp: u64,
) -> Cosignature {
    let signature = key.sign(&cosigned_message(head, timestamp));
    Cosignature {
        name: name.to_string(),
        key_id: Bytes::copy_from_slice(&cosignature_key_id(name, key.public_key().as_ref())),
        timestamp,
        signature: Bytes::copy_from_slice(signature.as_ref()),
    }
}

/// Why a cosignature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureError {
    /// The head is in the format of an earlier build: nothing to cosign.
    #[error("the head has no checkpoint form (no origin)")]
    NotACheckpoint,
    /// The key id is not that of the witness's key under its name.
    #[error("cosignature key id is not that of {0}'s witness key")]
    WrongKey(String),
    /// The timestamp is beyond 2^63 - 1.
    #[error("cosignature timestamp out of range")]
    BadTime,
    /// The signature does not verify.
    #[error("cosignature of {0} does not verify")]
    BadSignature(String),
}

/// Checks a cosignature of `head` by the witness `name` whose raw Ed25519
/// public key is `public_key`.
pub fn verify_cosignature(
    head: &SignedTreeHead,
    cosignature: &Cosignature,
    public_key: &[u8],
) -> Result<(), CosignatureError> {
    if head.origin.is_empty() {
        return Err(CosignatureError::NotACheckpoint);
    }
    let name = &cosignature.name;
    if cosignature.key_id.as_ref() != cosignature_key_id(name, public_key) {
        return Err(CosignatureError::WrongKey(name.clone()));
    }
    if cosignature.timestamp > i64::MAX as u64 {
        return Err(CosignatureError::BadTime);
    }
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(
            &cosigned_message(head, cosignature.timestamp),
            &cosignature.signature,
        )
        .map_err(|_| CosignatureError::BadSignature(name.clone()))
}

/// The note signature line of a cosignature.
pub fn cosignature_line(c: &Cosignature) -> String {
    let mut blob = c.timestamp.to_be_bytes().to_vec();
    blob.extend_from_slice(&c.signature);
    let mut key_id = [0u8; 4];
    if c.key_id.len() == 4 {
        key_id.copy_from_slice(&c.key_id);
    }
    NoteSignature {
        name: c.name.clone(),
        key_id,
        signature: blob,
    }
    .line()
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
        let s = signer().with_origin("hub.example/log");
        let head = s.sign(7, &[9; 32], 1234);
        let key = s.public_key();
        assert_eq!(head.origin, "hub.example/log");
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
        let mut h = head.clone();
        h.origin = "hub.example/other".into();
        assert_eq!(verify_tree_head(&h, &key), Err(SthError::BadSignature));
        // Dropping the origin turns it into an old-format head, whose
        // signature covers other bytes.
        let mut h = head.clone();
        h.origin.clear();
        h.note.clear();
        assert_eq!(verify_tree_head(&h, &key), Err(SthError::BadSignature));
        let mut h = head.clone();
        h.note = h.note.replace("1234", "1235");
        assert_eq!(verify_tree_head(&h, &key), Err(SthError::BadNote));
        let other = signer();
        assert!(matches!(
            verify_tree_head(&head, &other.public_key()),
            Err(SthError::WrongKey(_))
        ));
        // A head re-signed by another key but claiming ours fails too.
        let mut forged = other.with_origin("hub.example/log").sign(7, &[9; 32], 1234);
        forged.key_id = head.key_id.clone();
        forged.note = head.note.clone();
        assert_eq!(verify_tree_head(&forged, &key), Err(SthError::BadSignature));
    }

    #[test]
    fn a_head_is_a_c2sp_checkpoint_note() {
        let s = signer().with_origin("hub.example/log");
        let head = s.sign(3, &[0xab; 32], 1_700_000_000_123);
        let parsed = note::parse(&head.note).expect("a signed note");
        let cp = note::parse_checkpoint(&parsed.text).expect("a checkpoint");
        assert_eq!(cp.origin, "hub.example/log");
        assert_eq!(cp.size, 3);
        assert_eq!(cp.root, [0xab; 32]);
        assert_eq!(cp.extensions, ["timestamp 1700000000123"]);
        assert_eq!(parsed.signatures.len(), 1);
        let sig = &parsed.signatures[0];
        assert_eq!(sig.name, "hub.example/log");
        // key id = SHA-256(name || 0x0A || 0x01 || key)[:4]
        let mut data = b"hub.example/log\n\x01".to_vec();
        data.extend_from_slice(&s.public_key());
        assert_eq!(sig.key_id, sha256(&data)[..4]);
        UnparsedPublicKey::new(&ED25519, s.public_key())
            .verify(parsed.text.as_bytes(), &sig.signature)
            .expect("the note signature covers the checkpoint text");
        // And it reads back.
        assert_eq!(
            head_from_note(&head.note, &s.public_key()),
            Ok(head.clone())
        );
        let other = signer();
        assert!(head_from_note(&head.note, &other.public_key()).is_err());
        let edited = head.note.replacen("\n3\n", "\n4\n", 1);
        assert!(head_from_note(&edited, &s.public_key()).is_err());
    }

    // A head of size 5 stored by an earlier build (format truc-sth-v1),
    // signed by the key of seed [7; 32]: its encoded bytes as stored.
    const LEGACY_KEY_SEED: [u8; 32] = [7; 32];
    const LEGACY_HEAD: &str = "080512200505050505050505050505050505050505050505050505050505050505050505188080babbc82e2220fe812c12f3ab4ce6ac5db69ac352f906cb1b11ef43fb33e252ef7ff5522638892a4041941284589be5a9ce2a6b07bd06a7fee3363b505c65562b42d58ceb6f3124a84b96c061d5e22e199c7055105f5ccb6b0f132d4582bb08bd3d9201082c56bc09";

    #[test]
    fn heads_stored_by_earlier_builds_still_verify() {
        let pair = Ed25519KeyPair::from_seed_unchecked(&LEGACY_KEY_SEED).expect("seed");
        let public = pair.public_key().as_ref().to_vec();
        // What the signer of earlier builds wrote is what sign_legacy writes.
        let again = Signer::new(pair).sign_legacy(5, &[5; 32], 1_600_000_000_000);
        assert_eq!(
            hex::encode(prost::Message::encode_to_vec(&again)),
            LEGACY_HEAD
        );
        let bytes = hex::decode(LEGACY_HEAD).expect("hex");
        let head: SignedTreeHead = prost::Message::decode(bytes.as_slice()).expect("decodes");
        assert!(head.origin.is_empty() && head.note.is_empty());
        assert_eq!(
            (head.tree_size, head.timestamp_unix_ms),
            (5, 1_600_000_000_000)
        );
        assert_eq!(verify_tree_head(&head, &public), Ok(()));
        let mut h = head.clone();
        h.tree_size = 6;
        assert_eq!(verify_tree_head(&h, &public), Err(SthError::BadSignature));
        // An old head cannot be cosigned (it is no checkpoint).
        let witness = Signer::generate().expect("key");
        let c = cosign(&witness.key, "n", &head, 1);
        assert_eq!(
            verify_cosignature(&head, &c, &witness.public_key()),
            Err(CosignatureError::NotACheckpoint)
        );
    }

    #[test]
    fn cosignatures_verify_only_for_their_head_and_key() {
        let hub = signer().with_origin("hub.example/log");
        let head = hub.sign(9, &[1; 32], 5);
        let witness = Ed25519KeyPair::from_seed_unchecked(&[3; 32]).expect("seed");
        let wkey = witness.public_key().as_ref().to_vec();
        let c = cosign(&witness, "lgsp-a", &head, 1_679_315_147);
        assert_eq!(verify_cosignature(&head, &c, &wkey), Ok(()));
        // The message is the spec's: header, time line, checkpoint text.
        assert_eq!(
            String::from_utf8(cosigned_message(&head, 1_679_315_147)).expect("utf8"),
            format!("cosignature/v1\ntime 1679315147\n{}", head_text(&head))
        );
        let mut data = b"lgsp-a\n\x04".to_vec();
        data.extend_from_slice(&wkey);
        assert_eq!(c.key_id.as_ref(), &sha256(&data)[..4]);
        let other = hub.sign(10, &[1; 32], 5);
        assert!(matches!(
            verify_cosignature(&other, &c, &wkey),
            Err(CosignatureError::BadSignature(_))
        ));
        let mut renamed = c.clone();
        renamed.name = "lgsp-b".into();
        assert!(matches!(
            verify_cosignature(&head, &renamed, &wkey),
            Err(CosignatureError::WrongKey(_))
        ));
        let mut later = c.clone();
        later.timestamp += 1;
        assert!(matches!(
            verify_cosignature(&head, &later, &wkey),
            Err(CosignatureError::BadSignature(_))
        ));
        // The cosigned note reads back with its cosignature line.
        let mut served = head.clone();
        served.cosignatures.push(c.clone());
        let text = note_with_cosignatures(&served);
        assert_eq!(text.matches('\u{2014}').count(), 2);
        let back = head_from_note(&text, &hub.public_key()).expect("reads back");
        assert_eq!(back.cosignatures, vec![c.clone()]);
        assert_eq!(
            verify_cosignature(&back, &back.cosignatures[0], &wkey),
            Ok(())
        );
    }
}
