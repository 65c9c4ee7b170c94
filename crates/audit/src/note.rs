//! C2SP signed notes (c2sp.org/signed-note): a text ending in a newline, a
//! blank line, then signature lines `— <key name> base64(key id || sig)`.
//! Parsing follows the spec's rules and refuses anything else; what the
//! signatures cover is checked by the caller ([`crate::sth`]).

use base64::{Engine as _, engine::general_purpose::STANDARD};

/// Ed25519 signed-note signatures (signature type byte of the key id).
pub const TYPE_ED25519: u8 = 0x01;
/// Timestamped Ed25519 witness cosignatures (c2sp.org/tlog-cosignature).
pub const TYPE_COSIGNATURE_V1: u8 = 0x04;

/// Most signature lines a note may carry (the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 64;
/// Most bytes a note may have.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

/// The em dash that starts a signature line, and the space after it.
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a text is not a well-formed signed note or checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoteError(pub String);

fn bad(m: impl Into<String>) -> NoteError {
    NoteError(m.into())
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The 4-byte key id.
    pub key_id: [u8; 4],
    /// What follows the key id (for Ed25519, the 64-byte signature).
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The signature line, with its final newline.
    pub fn line(&self) -> String {
        let mut blob = self.key_id.to_vec();
        blob.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}\n", self.name, STANDARD.encode(blob))
    }
}

/// A parsed signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The signed text, with its final newline.
    pub text: String,
    /// The signature lines, in order.
    pub signatures: Vec<NoteSignature>,
}

/// The key id of a public key under `name` for signature type `kind`:
/// SHA-256(name || 0x0A || kind || public key)[:4].
pub fn key_id(name: &str, kind: u8, public_key: &[u8]) -> [u8; 4] {
    let mut data = Vec::with_capacity(name.len() + 2 + public_key.len());
    data.extend_from_slice(name.as_bytes());
    data.push(b'\n');
    data.push(kind);
    data.extend_from_slice(public_key);
    let h = crate::sha256(&data);
    [h[0], h[1], h[2], h[3]]
}

/// Whether `name` may be a key name: non-empty, no Unicode space, no `+`,
/// no control character.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// Parses a signed note: valid UTF-8 without control characters other than
/// newline, the text separated from the signatures by the last blank line,
/// at least one signature line, each well formed.
pub fn parse(note: &str) -> Result<Note, NoteError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(bad(format!(
            "note of {} bytes, more than {MAX_NOTE_BYTES}",
            note.len()
        )));
    }
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(bad("note holds a control character other than newline"));
    }
    if !note.ends_with('\n') {
        return Err(bad("note does not end with a newline"));
    }
    // The text ends with a newline and is followed by an empty line: the
    // last "\n\n" splits them.
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| bad("note has no blank line before its signatures"))?;
    let text = &note[..=split];
    let sigs = &note[split + 2..];
    if sigs.is_empty() {
        return Err(bad("note has no signature line"));
    }
    let mut signatures = Vec::new();
    for line in sigs.split_terminator('\n') {
        if signatures.len() == MAX_SIGNATURES {
            return Err(bad(format!(
                "note has more than {MAX_SIGNATURES} signatures"
            )));
        }
        let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(|| {
            bad(format!(
                "signature line {line:?} does not start with an em dash and a space"
            ))
        })?;
        let (name, blob) = rest
            .split_once(' ')
            .ok_or_else(|| bad(format!("signature line {line:?} has no signature")))?;
        if !valid_key_name(name) {
            return Err(bad(format!("bad key name {name:?}")));
        }
        let blob = STANDARD
            .decode(blob)
            .map_err(|e| bad(format!("signature of {name} is not base64: {e}")))?;
        if blob.len() < 5 {
            return Err(bad(format!("signature of {name} is too short")));
        }
        let mut key_id = [0u8; 4];
        key_id.copy_from_slice(&blob[..4]);
        signatures.push(NoteSignature {
            name: name.to_string(),
            key_id,
            signature: blob[4..].to_vec(),
        });
    }
    Ok(Note {
        text: text.to_string(),
        signatures,
    })
}

/// A parsed checkpoint text (c2sp.org/tlog-checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The origin line.
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The root hash.
    pub root: [u8; 32],
    /// Extension lines, without their newlines.
    pub extensions: Vec<String>,
}

/// Parses a checkpoint's note text: origin, decimal size without leading
/// zeroes, base64 of a 32-byte root, then non-empty extension lines.
pub fn parse_checkpoint(text: &str) -> Result<Checkpoint, NoteError> {
    let body = text
        .strip_suffix('\n')
        .ok_or_else(|| bad("checkpoint does not end with a newline"))?;
    let mut lines = body.split('\n');
    let origin = lines.next().unwrap_or_default();
    if origin.is_empty() {
        return Err(bad("checkpoint origin is empty"));
    }
    let size = lines
        .next()
        .ok_or_else(|| bad("checkpoint has no tree size line"))?;
    let digits_ok = !size.is_empty()
        && size.bytes().all(|b| b.is_ascii_digit())
        && (size == "0" || !size.starts_with('0'));
    let size: u64 = match digits_ok {
        true => size.parse().ok(),
        false => None,
    }
    .ok_or_else(|| {
        bad(format!(
            "checkpoint tree size {size:?} is not a decimal without leading zeroes"
        ))
    })?;
    let root = lines
        .next()
        .ok_or_else(|| bad("checkpoint has no root hash line"))?;
    let root: [u8; 32] = STANDARD
        .decode(root)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| {
            bad(format!(
                "checkpoint root {root:?} is not the base64 of 32 bytes"
            ))
        })?;
    let extensions: Vec<String> = lines.map(str::to_string).collect();
    if extensions.iter().any(String::is_empty) {
        return Err(bad("checkpoint has an empty extension line"));
    }
    Ok(Checkpoint {
        origin: origin.to_string(),
        size,
        root,
        extensions,
    })
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ED25519, UnparsedPublicKey};

    // The example note of golang.org/x/mod/sumdb/note, whose format the
    // signed-note spec takes up: its key ("PeterNeumann+c74f20a3+…"), text
    // and signature.
    const PETER_PUBLIC: &str = "ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_SEED: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                              then you don't know what your problem is.\n";
    const PETER_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
        then you don't know what your problem is.\n\
        \n\
        \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    // The checkpoint with a witness cosignature given as the example of
    // c2sp.org/tlog-cosignature.
    const SPEC_COSIGNED: &str = "example.com/behind-the-sofa\n\
        20852163\n\
        CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
        \n\
        \u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
        \u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";

    fn peter_public() -> Vec<u8> {
        let k = STANDARD.decode(PETER_PUBLIC).expect("b64");
        assert_eq!(k[0], TYPE_ED25519);
        k[1..].to_vec()
    }

    #[test]
    fn the_sumdb_example_note_parses_and_verifies() {
        let note = parse(PETER_NOTE).expect("parses");
        assert_eq!(note.text, PETER_TEXT);
        assert_eq!(note.signatures.len(), 1);
        let sig = &note.signatures[0];
        assert_eq!(sig.name, "PeterNeumann");
        // The key id in the verifier key string is c74f20a3; ours computes it.
        assert_eq!(sig.key_id, [0xc7, 0x4f, 0x20, 0xa3]);
        assert_eq!(
            key_id("PeterNeumann", TYPE_ED25519, &peter_public()),
            sig.key_id
        );
        UnparsedPublicKey::new(&ED25519, peter_public())
            .verify(note.text.as_bytes(), &sig.signature)
            .expect("the published signature verifies");
        assert_eq!(sig.line(), PETER_NOTE[PETER_TEXT.len() + 1..]);
    }

    #[test]
    fn signing_the_sumdb_text_gives_the_published_signature() {
        // Ed25519 is deterministic (RFC 8032): the same key and text must
        // give the same bytes as the reference implementation.
        let seed = STANDARD.decode(PETER_SEED).expect("b64");
        let pair =
            ring::signature::Ed25519KeyPair::from_seed_and_public_key(&seed[1..], &peter_public())
                .expect("key");
        let sig = pair.sign(PETER_TEXT.as_bytes());
        let line = NoteSignature {
            name: "PeterNeumann".into(),
            key_id: key_id("PeterNeumann", TYPE_ED25519, &peter_public()),
            signature: sig.as_ref().to_vec(),
        }
        .line();
        assert_eq!(format!("{PETER_TEXT}\n{line}"), PETER_NOTE);
    }

    #[test]
    fn the_spec_cosigned_checkpoint_parses() {
        let note = parse(SPEC_COSIGNED).expect("parses");
        let cp = parse_checkpoint(&note.text).expect("checkpoint");
        assert_eq!(cp.origin, "example.com/behind-the-sofa");
        assert_eq!(cp.size, 20_852_163);
        assert_eq!(
            base64(&cp.root),
            "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
        );
        assert!(cp.extensions.is_empty());
        assert_eq!(note.signatures.len(), 2);
        assert_eq!(note.signatures[0].name, "example.com/behind-the-sofa");
        assert_eq!(note.signatures[0].signature.len(), 64);
        let w = &note.signatures[1];
        assert_eq!(w.name, "witness.example.com/w1");
        // key id, then the timestamp of the spec's example signed message
        // ("time 1679315147"), then 64 bytes of signature.
        assert_eq!(w.signature.len(), 8 + 64);
        let time = u64::from_be_bytes(w.signature[..8].try_into().expect("8"));
        assert_eq!(time, 1_679_315_147);
    }

    #[test]
    fn malformed_notes_and_checkpoints_are_refused() {
        let ok = PETER_NOTE;
        for bad_note in [
            ok.trim_end_matches('\n').to_string(), // no final newline
            ok.replacen("\n\n", "\n", 1),          // no blank line
            ok.replacen('\u{2014}', "-", 1),       // not an em dash
            ok.replacen("PeterNeumann", "Peter+Neumann", 1), // '+' in the name
            ok.replacen("PeterNeumann", "Peter\tNeumann", 1),
            ok.replacen("x08go/", "x08go!", 1), // not base64
            format!("{PETER_TEXT}\n"),          // no signature
            format!("{PETER_TEXT}\n\u{2014} k AAAA\n"), // too short
        ] {
            assert!(parse(&bad_note).is_err(), "{bad_note:?}");
        }
        for text in [
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
            "\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jx\n",
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",
            "o\n1\n",
        ] {
            assert!(parse_checkpoint(text).is_err(), "{text:?}");
        }
        let cp = parse_checkpoint("o\n0\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\nx y\n")
            .expect("size 0 and one extension");
        assert_eq!((cp.size, cp.extensions), (0, vec!["x y".to_string()]));
    }
}
