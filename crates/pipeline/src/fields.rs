//! Validation of the fields every transaction carries, before anything is
//! stored, counted, labelled or used as a key.

use truc_registry::{AgencyCode, ServiceId};

use crate::{Transaction, TxError};

/// Length of a transaction id: 32 lowercase hex digits.
pub use truc_audit::TRANSACTION_ID_LEN;
/// Longest content type accepted (RFC 6838 names are at most 127 + 127).
pub const MAX_CONTENT_TYPE: usize = 255;

/// A transaction id: exactly 32 lowercase hex digits.
pub fn transaction_id(field: &'static str, id: &str) -> Result<String, TxError> {
    if id.len() == TRANSACTION_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(id.to_string())
    } else {
        Err(TxError::invalid(
            field,
            format!("expected {TRANSACTION_ID_LEN} lowercase hex digits"),
        ))
    }
}

/// An agency code (`NNN.NN.NN.XNN`).
pub fn agency(field: &'static str, code: &str) -> Result<AgencyCode, TxError> {
    AgencyCode::parse(code).map_err(|e| TxError::invalid(field, e))
}

/// A service id (`{provider}/{code}/{version}`).
pub fn service(field: &'static str, id: &str) -> Result<ServiceId, TxError> {
    ServiceId::parse(id).map_err(|e| TxError::invalid(field, e))
}

/// A content type: printable ASCII, at most [`MAX_CONTENT_TYPE`] bytes;
/// empty is allowed (opaque bytes).
pub fn content_type(field: &'static str, value: &str) -> Result<(), TxError> {
    if value.len() > MAX_CONTENT_TYPE {
        return Err(TxError::invalid(
            field,
            format!("at most {MAX_CONTENT_TYPE} bytes"),
        ));
    }
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(TxError::invalid(field, "printable ASCII only"));
    }
    Ok(())
}

/// Longest purpose accepted, in characters.
pub const MAX_PURPOSE_CHARS: usize = 200;
/// Longest end user accepted, in characters.
pub const MAX_END_USER_CHARS: usize = 200;
/// Longest case or file number accepted, in characters.
pub const MAX_CASE_CHARS: usize = 100;

/// The HTTP header (and gRPC metadata key) of [`Why::purpose`], as REST
/// backends get it and the REST door takes it.
pub const PURPOSE_HEADER: &str = "truc-purpose";
/// The header of [`Why::end_user`].
pub const END_USER_HEADER: &str = "truc-end-user";
/// The header of [`Why::case`].
pub const CASE_HEADER: &str = "truc-case";

/// Why a data call is made: its purpose, the end user on whose behalf and
/// a case or file number, each empty when not given, each one line of at
/// most its bound (the rule of every one-line text field,
/// [`truc_doc::forbidden_in_line`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Why {
    /// The purpose.
    pub purpose: String,
    /// The end user, as given.
    pub end_user: String,
    /// The case or file number.
    pub case: String,
}

impl Why {
    /// The three values checked, in this order.
    pub fn parse(purpose: &str, end_user: &str, case: &str) -> Result<Why, TxError> {
        line("purpose", purpose, MAX_PURPOSE_CHARS)?;
        line("end_user", end_user, MAX_END_USER_CHARS)?;
        line("case", case, MAX_CASE_CHARS)?;
        Ok(Why {
            purpose: purpose.to_string(),
            end_user: end_user.to_string(),
            case: case.to_string(),
        })
    }

    /// The values as HTTP header or gRPC metadata pairs (`truc-purpose`,
    /// `truc-end-user`, `truc-case`), those given only, each
    /// percent-encoded as `grpc-message` is (UTF-8 bytes outside printable
    /// ASCII, and `%`, as `%XX`), since header values are ASCII.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        [
            (PURPOSE_HEADER, &self.purpose),
            (END_USER_HEADER, &self.end_user),
            (CASE_HEADER, &self.case),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, percent_encode(v)))
        .collect()
    }

    /// Adds [`Why::headers`] to `metadata`.
    pub fn to_metadata(&self, metadata: &mut tonic::metadata::MetadataMap) {
        for (key, value) in self.headers() {
            // Percent-encoded values are printable ASCII: always valid.
            if let Ok(value) = value.parse() {
                metadata.insert(key, value);
            }
        }
    }

    /// Records the purpose, the case and the end user as given (a node's
    /// record; the hub may record a keyed hash of the user instead).
    pub fn record(&self, tx: &mut Transaction) {
        tx.purpose.clone_from(&self.purpose);
        tx.end_user.clone_from(&self.end_user);
        tx.case.clone_from(&self.case);
        tx.end_user_hashed = false;
    }
}

/// A one-line text field of at most `max` characters (empty is allowed).
pub fn line(field: &'static str, value: &str, max: usize) -> Result<(), TxError> {
    // Bytes bound the count first: a huge value is not walked twice.
    if value.len() > max * 4 || value.chars().count() > max {
        return Err(TxError::invalid(field, format!("at most {max} characters")));
    }
    if value.chars().any(truc_doc::forbidden_in_line) {
        return Err(TxError::invalid(
            field,
            "no control characters, line separators or bidirectional marks",
        ));
    }
    Ok(())
}

/// The text [`percent_encode`] made `value` from: every `%XX` a byte, the
/// bytes UTF-8. Refused: a `%` not followed by two hex digits, bytes that
/// are not UTF-8, and anything outside printable ASCII (a header value
/// carries text only percent-encoded).
pub fn percent_decode(value: &[u8]) -> Result<String, &'static str> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        if !(0x20..0x7f).contains(&b) {
            return Err("only printable ASCII, the rest percent-encoded");
        }
        if b == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a % not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoded bytes that are not UTF-8")
}

/// `value` with its UTF-8 bytes outside printable ASCII, and `%`, as `%XX`.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A payload of `len` bytes against the limit of `max`.
pub fn payload(len: usize, max: usize) -> Result<(), TxError> {
    if len > max {
        return Err(TxError::TooLarge(format!(
            "payload of {len} bytes exceeds the limit of {max} bytes"
        )));
    }
    Ok(())
}

/// A data call to `service`, as every hop records and checks it: the
/// service and its provider recorded in `tx`, the content type checked,
/// then the payload's size and digest recorded (a payload refused as too
/// large is recorded with its size), then its size checked against `max`.
pub fn request(
    tx: &mut Transaction,
    service: &ServiceId,
    content_type: &str,
    payload: &[u8],
    max: usize,
) -> Result<(), TxError> {
    tx.service = service.to_string();
    tx.provider_agency = service.provider().to_string();
    self::content_type("content_type", content_type)?;
    tx.request_bytes = payload.len() as u64;
    tx.request_sha256 = truc_audit::sha256(payload);
    self::payload(payload.len(), max)
}

/// The answer to a data call from the next hop, `peer`: its content type
/// checked (a bad one is the peer's fault: [`TxError::BadAnswer`]), then
/// its payload recorded as by [`response_payload`].
pub fn response(
    tx: &mut Transaction,
    peer: impl FnOnce() -> String,
    content_type: &str,
    payload: &[u8],
) -> Result<(), TxError> {
    self::content_type("content_type", content_type).map_err(|e| TxError::BadAnswer {
        peer: peer(),
        reason: e.to_string(),
    })?;
    response_payload(tx, payload);
    Ok(())
}

/// The size and digest of an answer's payload, recorded in `tx`.
pub fn response_payload(tx: &mut Transaction, payload: &[u8]) {
    tx.response_bytes = payload.len() as u64;
    tx.response_sha256 = truc_audit::sha256(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_have_one_format() {
        assert!(transaction_id("id", &"a1".repeat(16)).is_ok());
        for bad in [
            String::new(),
            "A1".repeat(16),
            "a1".repeat(17),
            format!("{}\0", "a".repeat(31)),
            "é".repeat(16),
        ] {
            assert!(transaction_id("id", &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_types_are_short_printable_ascii() {
        assert!(content_type("ct", "application/json; charset=utf-8").is_ok());
        assert!(content_type("ct", "").is_ok());
        assert!(content_type("ct", "text/plain\n").is_err());
        assert!(content_type("ct", "a\0b").is_err());
        assert!(content_type("ct", &"x".repeat(256)).is_err());
        assert!(content_type("ct", "tệp").is_err());
    }

    #[test]
    fn why_fields_are_bounded_lines() {
        let why = Why::parse("Giải quyết thủ tục", "Nguyễn Văn A", "HS-2026/17").expect("ok");
        assert_eq!(why.end_user, "Nguyễn Văn A");
        assert!(Why::parse("", "", "").is_ok());
        assert!(Why::parse(&"ệ".repeat(200), "", "").is_ok());
        for (p, u, c) in [
            ("a\nb", "", ""),
            ("", "x\0", ""),
            ("", "", "\u{202E}fdp"),
            (&*"x".repeat(201), "", ""),
            ("", &*"ệ".repeat(201), ""),
            ("", "", &*"1".repeat(101)),
        ] {
            let err = Why::parse(p, u, c).expect_err("refused");
            assert!(matches!(err, TxError::Invalid { .. }), "{err:?}");
        }
    }

    #[test]
    fn percent_decoding_undoes_encoding_and_refuses_the_rest() {
        for v in ["hộ tịch 100%", "Nguyễn Văn A", "", "a%b", "HS-1/2"] {
            assert_eq!(
                percent_decode(percent_encode(v).as_bytes()).as_deref(),
                Ok(v)
            );
        }
        // Decoded control characters come out, for Why::parse to refuse.
        assert_eq!(percent_decode(b"a%0Ab").as_deref(), Ok("a\nb"));
        for bad in [
            &b"100%"[..],
            b"%zz",
            b"%4",
            b"%FF",
            "hộ".as_bytes(),
            b"a\tb",
        ] {
            assert!(percent_decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn why_goes_to_backends_percent_encoded() {
        let why = Why::parse("hộ tịch 100%", "", "HS-1").expect("ok");
        assert_eq!(
            why.headers(),
            vec![
                ("truc-purpose", "h%E1%BB%99 t%E1%BB%8Bch 100%25".to_string()),
                ("truc-case", "HS-1".to_string()),
            ]
        );
        let mut md = tonic::metadata::MetadataMap::new();
        why.to_metadata(&mut md);
        assert_eq!(
            md.get("truc-case").and_then(|v| v.to_str().ok()),
            Some("HS-1")
        );
        assert!(md.get("truc-end-user").is_none());
    }

    #[test]
    fn a_request_is_recorded_before_its_size_is_refused() {
        let svc = ServiceId::parse("000.00.00.G22/citizen-lookup/v1").expect("id");
        let mut tx = Transaction::default();
        assert!(request(&mut tx, &svc, "text/plain", b"12345", 5).is_ok());
        assert_eq!(tx.request_bytes, 5);
        assert_eq!(tx.service, svc.as_str());
        assert_eq!(tx.provider_agency, "000.00.00.G22");
        assert_eq!(tx.request_sha256, truc_audit::sha256(b"12345"));
        let mut tx = Transaction::default();
        let err = request(&mut tx, &svc, "", b"123456", 5).expect_err("too large");
        assert!(matches!(err, TxError::TooLarge(_)), "{err:?}");
        assert_eq!(tx.request_bytes, 6);
        // A bad content type is refused before anything is recorded.
        let mut tx = Transaction::default();
        let err = request(&mut tx, &svc, "a\nb", b"x", 5).expect_err("content type");
        assert!(matches!(err, TxError::Invalid { .. }), "{err:?}");
        assert_eq!(tx.request_bytes, 0);
    }

    #[test]
    fn a_bad_answer_names_the_peer_and_records_nothing() {
        let mut tx = Transaction::default();
        let err = response(&mut tx, || "node x".into(), "a\0b", b"xy").expect_err("refused");
        assert!(
            matches!(&err, TxError::BadAnswer { peer, .. } if peer == "node x"),
            "{err:?}"
        );
        assert_eq!(tx.response_bytes, 0);
        assert!(response(&mut tx, || unreachable!(), "text/plain", b"xy").is_ok());
        assert_eq!(tx.response_bytes, 2);
        assert_eq!(tx.response_sha256, truc_audit::sha256(b"xy"));
    }
}
