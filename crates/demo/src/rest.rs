//! The demo's REST backend: the household registry of Lạng Sơn, as plain
//! HTTP/JSON, the way many agencies' data services already speak.
//!
//! A node reaches it through a `[[backend]]` whose address is a URL: it
//! POSTs the payload with its content type and the `X-Truc-Client`,
//! `X-Truc-Service` and `X-Truc-Transaction-Id` headers. Like the gRPC demo
//! backends, this is for the demo and the tests only.

use std::future::Future;

use axum::{
    Router,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::Bytes;
use tokio::net::TcpListener;

/// The path the household registry answers on.
pub const HOUSEHOLD_REGISTRY_PATH: &str = "/v1/household-registry";

/// The household registry: a made-up household for the citizen id in the
/// request (JSON `{"id": "..."}` or the bare id). An id that is not 12
/// digits is HTTP 400; an id starting with `000` is HTTP 404.
pub fn household_registry() -> Router {
    Router::new().route(HOUSEHOLD_REGISTRY_PATH, post(lookup))
}

async fn lookup(headers: HeaderMap, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let id: String = text.chars().filter(char::is_ascii_digit).collect();
    if id.len() != 12 {
        return (
            StatusCode::BAD_REQUEST,
            "expected a 12-digit citizen id, e.g. {\"id\": \"001089012345\"}",
        )
            .into_response();
    }
    if id.starts_with("000") {
        return (StatusCode::NOT_FOUND, format!("no household for {id}")).into_response();
    }
    let asked_by = headers
        .get(truc_node::CLIENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let transaction = headers
        .get(truc_node::TRANSACTION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let body = serde_json::json!({
        "citizen": id,
        "household": format!("HK-{}", &id[6..]),
        "head": "Hoàng Thị B",
        "address": "Phường Chi Lăng, Lạng Sơn",
        "members": 4,
        "asked_by": asked_by,
        "transaction_id": transaction,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Serves `router` over plain HTTP/1.1 on `listener` until `shutdown`
/// completes (backends sit beside their node on a trusted network).
pub async fn serve_rest(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
