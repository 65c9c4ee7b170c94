//! Deadline propagation: the time a caller gave us, less what we have spent,
//! goes with every call we make on its behalf.

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// The metadata key of a gRPC deadline (tonic's `Request::set_timeout`
/// writes it under this name).
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// The `grpc-timeout` the caller sent, if any and well formed.
pub fn incoming_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get(GRPC_TIMEOUT_HEADER)?.to_str().ok()?;
    // At most 8 digits and one unit letter (gRPC over HTTP/2 spec).
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// True for a status made by our own client transport (no peer answered:
/// connection refused, reset, TLS failure) rather than returned by a peer,
/// which always sends response headers with its status.
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown
    ) && status.metadata().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", v.parse().expect("ascii"));
        m
    }

    #[test]
    fn parses_every_unit_and_rejects_garbage() {
        assert_eq!(incoming_timeout(&md("2S")), Some(Duration::from_secs(2)));
        assert_eq!(
            incoming_timeout(&md("150m")),
            Some(Duration::from_millis(150))
        );
        assert_eq!(incoming_timeout(&md("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(incoming_timeout(&md("3M")), Some(Duration::from_secs(180)));
        assert_eq!(incoming_timeout(&md("7u")), Some(Duration::from_micros(7)));
        assert_eq!(incoming_timeout(&md("9n")), Some(Duration::from_nanos(9)));
        assert_eq!(incoming_timeout(&md("S")), None);
        assert_eq!(incoming_timeout(&md("12x")), None);
        assert_eq!(incoming_timeout(&md("123456789S")), None);
        assert_eq!(incoming_timeout(&MetadataMap::new()), None);
    }
}
