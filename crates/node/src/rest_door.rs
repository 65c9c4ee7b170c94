//! The REST door for data calls: `POST /v1/call/{service}` on the node's
//! HTTP listener, for agency systems that cannot speak gRPC.
//!
//! The caller is the client certificate of the connection (mutual TLS, the
//! same certificates and `[[client]]` mapping as gRPC); `X-Truc-Client`
//! names the agency it acts for, checked like `CallRequest.client_agency`.
//! `truc-purpose`, `truc-end-user` and `truc-case` say why the call is made
//! (percent-encoded UTF-8, the headers REST backends get), checked and
//! recorded like `CallRequest`'s fields. The body is the payload, `Content-Type` is passed through. The call runs
//! the very `Agency.Call` step (same pipeline, audit record and statistics);
//! this module only translates HTTP to it and back. Answers: the response
//! body with its content type, `X-Truc-Transaction-Id`, and `X-Truc-Receipt`
//! (the hub's receipt, protobuf `truc.v1.Receipt` in standard base64); errors
//! as JSON `{"code": "PERMISSION_DENIED", "message": "..."}` with the HTTP
//! status of [`http_status`]; a call over its quota at the hub is 429 with
//! `Retry-After` (seconds) and `retry-after-ms`. A `traceparent` (and
//! `tracestate`) header is read as the gRPC caller's metadata would be.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{Path as UrlPath, Request, State, rejection::PathRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::Engine;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::Message;
use tonic::Code;
use truc_pki::PeerInfo;
use truc_proto::v1::CallRequest;

use crate::{agency::AgencyService, rest_backend::CLIENT_HEADER};

/// The hub's receipt of a REST call: protobuf `truc.v1.Receipt`, base64.
pub const RECEIPT_HEADER: &str = "x-truc-receipt";

struct Door {
    agency: AgencyService,
    max_body: usize,
    timeout: Duration,
}

/// The routes of the REST door, for the node's HTTP listener: bodies up to
/// `max_body` bytes, calls within `timeout`.
pub(crate) fn routes(agency: AgencyService, max_body: usize, timeout: Duration) -> Router {
    let door = Arc::new(Door {
        agency,
        max_body,
        timeout,
    });
    Router::new()
        .route(
            "/v1/call/{*service}",
            post(call).fallback(|| async {
                error(
                    Code::Unimplemented,
                    "only POST is served here".into(),
                    StatusCode::METHOD_NOT_ALLOWED,
                )
            }),
        )
        .with_state(door)
}

/// The HTTP status a call's gRPC code is answered with (the REST backends'
/// table read backwards; documented in the README).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Internal | Code::Unknown | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(code: Code, message: String, status: StatusCode) -> Response {
    let body = serde_json::json!({
        "code": truc_ops::code_name(code),
        "message": message,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The answer to a request made while the node drains (503, UNAVAILABLE;
/// the drain adds `truc-retry: safe`: the call reached nothing).
pub(crate) fn draining(_: &http::Uri) -> Response {
    refuse(
        Code::Unavailable,
        "node is draining: send the call again, to another node if there is one".into(),
    )
}

fn refuse(code: Code, message: String) -> Response {
    error(code, message, http_status(code))
}

/// Why the call is made, from the headers REST backends get them in
/// (`truc-purpose`, `truc-end-user`, `truc-case`, percent-encoded UTF-8):
/// `[purpose, end user, case]`, empty when absent. Their content is checked
/// by the call itself, like `CallRequest`'s fields.
fn why_headers(headers: &HeaderMap) -> Result<[String; 3], String> {
    use truc_pipeline::fields::{CASE_HEADER, END_USER_HEADER, PURPOSE_HEADER, percent_decode};
    let one = |name: &str| match headers.get(name) {
        None => Ok(String::new()),
        Some(v) => percent_decode(v.as_bytes()).map_err(|why| format!("header {name}: {why}")),
    };
    Ok([
        one(PURPOSE_HEADER)?,
        one(END_USER_HEADER)?,
        one(CASE_HEADER)?,
    ])
}

/// A header as printable text (empty if absent), or why it is not.
fn text_header(headers: &HeaderMap, name: &str) -> Result<String, String> {
    match headers.get(name) {
        None => Ok(String::new()),
        Some(v) => v
            .to_str()
            .map(str::to_string)
            .map_err(|_| format!("header {name} is not printable ASCII")),
    }
}

async fn call(
    State(door): State<Arc<Door>>,
    service: Result<UrlPath<String>, PathRejection>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    // The listener puts it there from the verified client certificate.
    let Some(peer) = parts.extensions.get::<PeerInfo>().cloned() else {
        return refuse(Code::Unauthenticated, "no client certificate".into());
    };
    let service = match service {
        Ok(UrlPath(s)) => s,
        Err(e) => return refuse(Code::InvalidArgument, format!("service: {e}")),
    };
    let (client_agency, content_type) = match (
        text_header(&parts.headers, CLIENT_HEADER),
        text_header(&parts.headers, header::CONTENT_TYPE.as_str()),
    ) {
        (Ok(a), Ok(c)) => (a, c),
        (Err(e), _) | (_, Err(e)) => return refuse(Code::InvalidArgument, e),
    };
    let [purpose, end_user, case] = match why_headers(&parts.headers) {
        Ok(why) => why,
        Err(e) => return refuse(Code::InvalidArgument, e),
    };
    let too_large = || {
        error(
            Code::ResourceExhausted,
            format!("the body is larger than {} bytes", door.max_body),
            StatusCode::PAYLOAD_TOO_LARGE,
        )
    };
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > door.max_body as u64) {
        return too_large();
    }
    let read =
        tokio::time::timeout(door.timeout, Limited::new(body, door.max_body).collect()).await;
    let payload = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(e)) => {
            return refuse(
                Code::InvalidArgument,
                format!("the body could not be read: {e}"),
            );
        }
        Err(_) => {
            return refuse(
                Code::DeadlineExceeded,
                "the body did not arrive within the request timeout".into(),
            );
        }
    };
    let mut grpc = tonic::Request::new(CallRequest {
        client_agency,
        service,
        content_type,
        payload,
        purpose,
        end_user,
        case,
    });
    grpc.extensions_mut().insert(peer);
    truc_ops::trace::copy_headers(&parts.headers, grpc.metadata_mut());
    grpc.set_timeout(door.timeout.saturating_sub(started.elapsed()));
    match door.agency.run_call(grpc).await {
        Ok(answer) => {
            let mut response = Response::new(Body::from(answer.payload));
            let headers = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&answer.content_type) {
                if !answer.content_type.is_empty() {
                    headers.insert(header::CONTENT_TYPE, v);
                }
            }
            if let Some(receipt) = answer.receipt {
                if let Ok(v) = HeaderValue::from_str(&receipt.transaction_id) {
                    headers.insert(truc_ops::TRANSACTION_ID_HEADER, v);
                }
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(receipt.encode_to_vec());
                if let Ok(v) = HeaderValue::from_str(&encoded) {
                    headers.insert(RECEIPT_HEADER, v);
                }
            }
            response
        }
        Err(status) => refused(&status),
    }
}

/// The answer to a call refused with `status`: its JSON error, the
/// transaction id, and for a call over its quota (RESOURCE_EXHAUSTED with
/// `retry-after-ms`) `Retry-After` in whole seconds, rounded up, beside
/// `retry-after-ms` itself.
fn refused(status: &tonic::Status) -> Response {
    let mut response = refuse(status.code(), status.message().to_string());
    let headers = response.headers_mut();
    let id = status.metadata().get(truc_ops::TRANSACTION_ID_HEADER);
    // A call refused before it got an id carries an empty one.
    if let Some(id) = id.filter(|id| !id.is_empty()) {
        if let Ok(v) = HeaderValue::from_bytes(id.as_bytes()) {
            headers.insert(truc_ops::TRANSACTION_ID_HEADER, v);
        }
    }
    let retry_ms = status
        .metadata()
        .get(truc_ops::RETRY_AFTER_MS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|_| status.code() == Code::ResourceExhausted);
    if let Some(ms) = retry_ms {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
        headers.insert(truc_ops::RETRY_AFTER_MS_HEADER, HeaderValue::from(ms));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_http_statuses_and_back_to_the_backend_table() {
        use crate::rest_backend::code_for;
        for code in [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::NotFound,
            Code::AlreadyExists,
            Code::ResourceExhausted,
            Code::Unavailable,
            Code::Internal,
        ] {
            assert_eq!(code_for(http_status(code)), code, "{code:?}");
        }
        assert_eq!(http_status(Code::DeadlineExceeded), 504);
        assert_eq!(http_status(Code::Ok), 200);
    }

    #[test]
    fn a_call_over_its_quota_is_429_with_retry_after() {
        let mut status = tonic::Status::resource_exhausted("over its quota");
        let md = status.metadata_mut();
        md.insert(
            truc_ops::RETRY_AFTER_MS_HEADER,
            "1500".parse().expect("ascii"),
        );
        md.insert(
            truc_ops::TRANSACTION_ID_HEADER,
            "ab".parse().expect("ascii"),
        );
        let r = refused(&status);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = r.headers();
        assert_eq!(
            h.get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
        assert_eq!(
            h.get(truc_ops::RETRY_AFTER_MS_HEADER).map(|v| v.as_bytes()),
            Some(&b"1500"[..])
        );
        assert_eq!(
            h.get(truc_ops::TRANSACTION_ID_HEADER).map(|v| v.as_bytes()),
            Some(&b"ab"[..])
        );
        // A hint on another code, or one that is not a number, is dropped.
        let mut other = tonic::Status::unavailable("down");
        other
            .metadata_mut()
            .insert(truc_ops::RETRY_AFTER_MS_HEADER, "5".parse().expect("ascii"));
        assert!(refused(&other).headers().get(header::RETRY_AFTER).is_none());
        let mut junk = tonic::Status::resource_exhausted("x");
        junk.metadata_mut().insert(
            truc_ops::RETRY_AFTER_MS_HEADER,
            "soon".parse().expect("ascii"),
        );
        assert!(refused(&junk).headers().get(header::RETRY_AFTER).is_none());
    }
}
