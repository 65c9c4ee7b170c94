//! The VXP SDK's request signature: an HMAC-SHA256, keyed with the system's
//! secret as text, over the raw bytes of the `XroadVnpt-sign-header` JSON.
//!
//! The JSON is never re-serialised (its key order is Java `HashMap` order,
//! which cannot be reproduced); parameters are taken from it, never from the
//! loose headers, and a loose header that disagrees with its signed value
//! refuses the request. No freshness rule on the timestamp: the SDK takes it
//! once per service object, so a long-running DMS sends one days old.

use std::collections::BTreeMap;

use http::HeaderMap;

use super::Refusal;
use crate::config::VxpSystem;

/// The prefix of every SDK header and signed key.
pub(crate) const PREFIX: &str = "XroadVnpt-";

/// A request whose signature verified: the system and its signed parameters.
#[derive(Debug)]
pub(crate) struct Signed {
    /// The system id, as signed.
    pub(crate) system: String,
    /// Signed keys without the prefix (as sent) and their values.
    params: Vec<(String, String)>,
}

impl Signed {
    /// The signed value of `key` (matched case-insensitively: VNPT's own
    /// example writes both `docId` and `docid`).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

fn unsigned(why: impl Into<String>) -> Refusal {
    Refusal::unauthenticated(why)
}

/// Verifies the signature of a request with the secret of the system it
/// names; the same refusal text for an unknown system and a wrong secret
/// would hide a misconfiguration, so they differ (neither reveals a secret).
pub(crate) fn verify(
    headers: &HeaderMap,
    systems: &BTreeMap<String, VxpSystem>,
) -> Result<Signed, Refusal> {
    let sign = headers
        .get("xroadvnpt-sign-header")
        .ok_or_else(|| unsigned("unsigned request: no XroadVnpt-sign-header"))?;
    let hash = headers
        .get("xroadvnpt-hash-header")
        .ok_or_else(|| unsigned("unsigned request: no XroadVnpt-hash-header"))?;
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(sign.as_bytes())
            .map_err(|_| unsigned("XroadVnpt-sign-header is not a JSON object"))?;
    let mut params = Vec::with_capacity(object.len());
    for (k, v) in object {
        let Some(name) = k
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .map(|_| k[PREFIX.len()..].to_string())
        else {
            return Err(unsigned(format!(
                "signed key {k:?} does not start with {PREFIX}"
            )));
        };
        let serde_json::Value::String(value) = v else {
            return Err(unsigned(format!("signed value of {k:?} is not a string")));
        };
        params.push((name, value));
    }
    let signed = Signed {
        system: String::new(),
        params,
    };
    let system = signed
        .get("systemid")
        .ok_or_else(|| unsigned("XroadVnpt-sign-header names no systemid"))?
        .to_string();
    let secret = systems
        .get(&system)
        .ok_or_else(|| unsigned(format!("unknown system {system:?}")))?;
    let tag = hash
        .to_str()
        .ok()
        .filter(|h| h.len() == 64)
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| unsigned("XroadVnpt-hash-header is not 64 hex digits"))?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret.secret);
    ring::hmac::verify(&key, sign.as_bytes(), &tag).map_err(|_| {
        unsigned(format!(
            "the signature does not verify with the secret of system {system:?}"
        ))
    })?;
    // The SDK sends each signed value as its own header too, identical.
    for (k, v) in &signed.params {
        let name = format!("{PREFIX}{k}");
        for loose in headers.get_all(name.as_str()) {
            if loose.as_bytes() != v.as_bytes() {
                return Err(unsigned(format!(
                    "header {name} differs from its signed value"
                )));
            }
        }
    }
    Ok(Signed { system, ..signed })
}

/// SHA-256 of `bytes` the way the SDK writes `hash-file`: each byte as
/// `Integer.toHexString`, i.e. lowercase hex without zero padding.
pub(crate) fn unpadded_hex(digest: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(digest.len() * 2);
    for b in digest {
        let _ = write!(out, "{b:x}");
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SECRET: &str = "TEST-ONLY-not-a-real-secret/0123+abc";
    pub(crate) const SYSTEM: &str = "test.truc.01";

    pub(crate) fn systems() -> BTreeMap<String, VxpSystem> {
        let agencies = ["000.00.00.G22"]
            .iter()
            .map(|a| truc_registry::AgencyCode::parse(a).expect("code"))
            .collect();
        BTreeMap::from([(
            SYSTEM.to_string(),
            VxpSystem {
                secret: SECRET.as_bytes().to_vec(),
                agencies,
            },
        )])
    }

    /// Run A request 1 of the capture (`getAgenciesList`).
    const A1_SIGNED: &str = r#"{"XroadVnpt-systemid":"test.truc.01","XroadVnpt-timestamp":"01122026T070527+0805","XroadVnpt-Content-Type":"application/json"}"#;
    const A1_HASH: &str = "52f2d4037c6468c9dc14470573b75d117ef5d79cc91a3d0154ce5b4eaf23347d";
    /// Run A request 2 (`sendEdoc`).
    const A2_SIGNED: &str = r#"{"XroadVnpt-systemid":"test.truc.01","XroadVnpt-servicetype":"eDoc","XroadVnpt-messagetype":"edoc","XroadVnpt-hash-file":"711959546564ad0ebee3cca0a0c0b577636d7de07dd0d9ff1d139c870d1af","XroadVnpt-from":"000.00.00.G22","XroadVnpt-timestamp":"01122026T070528+0360","XroadVnpt-Content-Type":"application/octet-stream"}"#;
    const A2_HASH: &str = "016ddbc03d4e89e23304802b3c3afa6541c3806632e927aeda66c5cd86b6f71b";
    /// The vector of vxp-wire.md 3.2.
    const W_SIGNED: &str = r#"{"XroadVnpt-systemid":"test.truc.01","XroadVnpt-timestamp":"01122026T070031+0635","XroadVnpt-Content-Type":"application/json"}"#;
    const W_HASH: &str = "bef87ac5cfe5fc3f75f0d49779c39b2a69754de1e9243ac95221680f50a3eb97";

    /// The headers the SDK sends for a signed JSON: each signed key loose,
    /// then the signature headers.
    pub(crate) fn headers(signed: &str, hash: &str) -> HeaderMap {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(signed).expect("json");
        let mut h = HeaderMap::new();
        for (k, v) in object {
            let v = v.as_str().expect("string").to_string();
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h.insert("XroadVnpt-sign-header", signed.parse().expect("value"));
        h.insert("XroadVnpt-hash-header", hash.parse().expect("value"));
        h.insert(
            "User-Agent",
            "JAVASDKAgent/1.0.0 XRoad/VPCP".parse().expect("v"),
        );
        h.insert("XroadVnpt-version", "3.0.201608".parse().expect("v"));
        h
    }

    #[test]
    fn the_captured_requests_verify_with_the_right_secret() {
        for (signed, hash) in [
            (A1_SIGNED, A1_HASH),
            (A2_SIGNED, A2_HASH),
            (W_SIGNED, W_HASH),
        ] {
            let ok = verify(&headers(signed, hash), &systems()).expect("verifies");
            assert_eq!(ok.system, SYSTEM);
        }
        let a2 = verify(&headers(A2_SIGNED, A2_HASH), &systems()).expect("verifies");
        assert_eq!(a2.get("FROM"), Some("000.00.00.G22"));
        assert_eq!(
            a2.get("hash-file"),
            Some("711959546564ad0ebee3cca0a0c0b577636d7de07dd0d9ff1d139c870d1af")
        );
    }

    #[test]
    fn a_wrong_secret_is_refused() {
        let mut systems = systems();
        systems.get_mut(SYSTEM).expect("system").secret =
            b"TEST-ONLY-not-a-real-secret/0123+abd".to_vec();
        let err = verify(&headers(A1_SIGNED, A1_HASH), &systems).expect_err("wrong secret");
        assert!(err.desc.contains("does not verify"), "{err:?}");
    }

    #[test]
    fn an_unknown_system_is_refused() {
        let signed = A1_SIGNED.replace("test.truc.01", "test.truc.02");
        let err = verify(&headers(&signed, A1_HASH), &systems()).expect_err("unknown");
        assert!(err.desc.contains("unknown system"), "{err:?}");
    }

    #[test]
    fn a_changed_signed_value_is_refused() {
        // In the signed JSON: the HMAC breaks.
        let signed = A2_SIGNED.replace("000.00.00.G22", "000.00.00.H37");
        let err = verify(&headers(&signed, A2_HASH), &systems()).expect_err("changed");
        assert!(err.desc.contains("does not verify"), "{err:?}");
        // Only in the loose header: it disagrees with the signed one.
        let mut h = headers(A2_SIGNED, A2_HASH);
        h.insert("XroadVnpt-from", "000.00.00.H37".parse().expect("v"));
        let err = verify(&h, &systems()).expect_err("loose header changed");
        assert!(err.desc.contains("differs"), "{err:?}");
        // Reordered keys (a re-serialisation) no longer verify either.
        let reordered = r#"{"XroadVnpt-timestamp":"01122026T070527+0805","XroadVnpt-systemid":"test.truc.01","XroadVnpt-Content-Type":"application/json"}"#;
        verify(&headers(reordered, A1_HASH), &systems()).expect_err("reordered");
    }

    #[test]
    fn unsigned_and_malformed_signatures_are_refused() {
        let mut h = headers(A1_SIGNED, A1_HASH);
        h.remove("XroadVnpt-hash-header");
        verify(&h, &systems()).expect_err("no hash");
        verify(&HeaderMap::new(), &systems()).expect_err("downloadEdoc2: no header at all");
        verify(
            &headers(A1_SIGNED, &A1_HASH.to_uppercase()[..63]),
            &systems(),
        )
        .expect_err("63");
        let mut h = headers(A1_SIGNED, A1_HASH);
        h.insert("XroadVnpt-sign-header", "[1]".parse().expect("v"));
        verify(&h, &systems()).expect_err("not an object");
    }

    #[test]
    fn the_hash_file_is_unpadded() {
        assert_eq!(unpadded_hex(&[0x07, 0x11, 0x00, 0xaf]), "7110af");
        assert_eq!(unpadded_hex(&[0x00, 0x0a, 0xff]), "0aff");
        // Run A request 2: the padded SHA-256 of the body without CRLF and
        // the signed hash-file.
        let padded =
            hex::decode("0711959546564ad0ebee3cca00a0c0b577636d7de07dd0d9ff1d1309c870d1af")
                .expect("hex");
        assert_eq!(
            unpadded_hex(&padded),
            "711959546564ad0ebee3cca0a0c0b577636d7de07dd0d9ff1d139c870d1af"
        );
    }
}
