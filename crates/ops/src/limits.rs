//! Message size limits answered with the right code.
//!
//! tonic refuses a request larger than the server's decoding limit with
//! OUT_OF_RANGE; callers of truc are told RESOURCE_EXHAUSTED for every size
//! limit, whether the payload check or the gRPC framing caught it.

/// An HTTP response as tonic's routes produce it.
pub type GrpcResponse = http::Response<tonic::body::Body>;

/// Rewrites tonic's "message length too large" OUT_OF_RANGE into
/// RESOURCE_EXHAUSTED, in the headers of a trailers-only response or in the
/// trailers; leaves every other status alone.
pub fn size_limit_as_resource_exhausted(mut response: GrpcResponse) -> GrpcResponse {
    if response.headers().contains_key("grpc-status") {
        rewrite(response.headers_mut());
        return response;
    }
    response.map(|body| {
        tonic::body::Body::new(http_body_util::BodyExt::map_frame(
            body,
            |frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    rewrite(&mut trailers);
                    http_body::Frame::trailers(trailers)
                }
                Err(frame) => frame,
            },
        ))
    })
}

fn rewrite(headers: &mut http::HeaderMap) {
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

    fn response(status: &'static str, message: &'static str) -> GrpcResponse {
        let mut r = http::Response::new(tonic::body::Body::empty());
        r.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static(status));
        r.headers_mut()
            .insert("grpc-message", http::HeaderValue::from_static(message));
        r
    }

    #[test]
    fn only_the_size_error_is_rewritten() {
        let r = size_limit_as_resource_exhausted(response(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%209%20bytes",
        ));
        assert_eq!(r.headers()["grpc-status"], "8");
        let r = size_limit_as_resource_exhausted(response("11", "index out of range"));
        assert_eq!(r.headers()["grpc-status"], "11");
        let r = size_limit_as_resource_exhausted(response("5", "message%20length%20too%20large"));
        assert_eq!(r.headers()["grpc-status"], "5");
    }
}
