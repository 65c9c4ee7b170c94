//! The hub's end-user key: with it the hub records the end user of a data
//! call as HMAC-SHA256(key, user) in lowercase hex when the registry says
//! so (`hash_end_user = true`), so that its log can be searched for a
//! person without holding the person's identifier.

use std::path::Path;

use ring::hmac;

/// Fewest key bytes accepted (the HMAC-SHA256 output size).
const MIN_KEY_BYTES: usize = 32;

/// The key, when the hub config names one (`end_user_key`).
#[derive(Clone, Default)]
pub(crate) struct EndUserKey(Option<hmac::Key>);

impl std::fmt::Debug for EndUserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "EndUserKey(set)"
        } else {
            "EndUserKey(none)"
        })
    }
}

impl EndUserKey {
    /// The key in `text`: hex digits (surrounding whitespace ignored), at
    /// least 32 bytes.
    pub(crate) fn parse(text: &str) -> Result<EndUserKey, String> {
        let bytes = hex::decode(text.trim()).map_err(|e| format!("not hex: {e}"))?;
        if bytes.len() < MIN_KEY_BYTES {
            return Err(format!(
                "{} bytes; at least {MIN_KEY_BYTES} are needed",
                bytes.len()
            ));
        }
        Ok(EndUserKey(Some(hmac::Key::new(hmac::HMAC_SHA256, &bytes))))
    }

    /// The key in the file at `path`.
    pub(crate) fn load(path: &Path) -> Result<EndUserKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        EndUserKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether there is a key.
    pub(crate) fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// `user` hashed under the key, in lowercase hex; None without a key.
    pub(crate) fn hash(&self, user: &str) -> Option<String> {
        self.0
            .as_ref()
            .map(|k| hex::encode(hmac::sign(k, user.as_bytes()).as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_hex_and_hash_deterministically() {
        let key = EndUserKey::parse(&format!("{}\n", "ab".repeat(32))).expect("key");
        let h = key.hash("Nguyễn Văn A").expect("hash");
        assert_eq!(h.len(), 64);
        assert_eq!(key.hash("Nguyễn Văn A"), Some(h.clone()));
        assert_ne!(key.hash("Nguyễn Văn B"), Some(h.clone()));
        let other = EndUserKey::parse(&"cd".repeat(32)).expect("key");
        assert_ne!(other.hash("Nguyễn Văn A"), Some(h));
        assert!(EndUserKey::parse(&"ab".repeat(31)).is_err());
        assert!(EndUserKey::parse("zz").is_err());
        assert_eq!(EndUserKey::default().hash("x"), None);
    }
}
