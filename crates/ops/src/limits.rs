//! Message size limits answered with the right code.
//!
//! tonic refuses a request larger than the server's decoding limit with
//! OUT_OF_RANGE; callers of truc are told RESOURCE_EXHAUSTED for every size
//! limit, whether the payload check or the gRPC framing caught it.

/// An HTTP response as tonic's routes produce it.
pub(crate) type GrpcResponse = http::Response<tonic::body::Body>;

/// Rewrites the status in `headers` if it is tonic's size refusal.
pub(crate) fn rewrite(headers: &mut http::HeaderMap) {
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers
        .get("grpc-message")
        // tonic percent-encodes the message's spaces.
        .is_some_and(|v| contains(v.as_bytes(), b"message%20length%20too%20large"));
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: &'static str, message: &'static str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from_static(status));
        h.insert("grpc-message", http::HeaderValue::from_static(message));
        rewrite(&mut h);
        h
    }

    #[test]
    fn only_the_size_error_is_rewritten() {
        let r = response(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%209%20bytes",
        );
        assert_eq!(r["grpc-status"], "8");
        let r = response("11", "index out of range");
        assert_eq!(r["grpc-status"], "11");
        let r = response("5", "message%20length%20too%20large");
        assert_eq!(r["grpc-status"], "5");
    }
}
