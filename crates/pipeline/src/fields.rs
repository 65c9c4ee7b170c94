//! Validation of the fields every transaction carries, before anything is
//! stored, counted, labelled or used as a key.

use truc_registry::{AgencyCode, ServiceId};

use crate::{Transaction, TxError};

/// Length of a transaction id: 32 lowercase hex digits (128 random bits).
pub const TRANSACTION_ID_LEN: usize = 32;
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
