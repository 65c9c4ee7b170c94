//! Serving a `truc.v1.Backend` in-process, and the demo backend.
//!
//! Real provider backends are the agencies' own systems, which a node reaches
//! over `truc.v1.Backend`; these are for the demo (`truc demo-backend`), the
//! benchmarks and the tests, so the node crate carries none of them.

use std::{future::Future, net::SocketAddr};

use bytes::Bytes;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use truc_proto::v1::{
    DataRequest, DataResponse,
    backend_server::{Backend, BackendServer},
};

/// Serves `backend` over plaintext HTTP/2 on `listener` until `shutdown`
/// completes. Backends sit beside their node on a trusted network.
pub async fn serve_backend<B: Backend>(
    backend: B,
    listener: TcpListener,
    max_message_bytes: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // Small calls must not wait for delayed ACKs (Nagle's algorithm).
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |conn| {
            conn.inspect(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set tcp_nodelay");
                }
            })
        },
    );
    tonic::transport::Server::builder()
        .add_service(
            BackendServer::new(backend)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The demo's citizen-lookup service of Văn phòng Chính phủ: answers a
/// made-up record for the citizen id in the request (JSON `{"id": "..."}` or
/// the bare id). An id that is not 12 digits is INVALID_ARGUMENT; an id
/// starting with `000` is NOT_FOUND, so the demo shows errors too.
#[derive(Clone, Debug, Default)]
pub struct CitizenLookup;

#[tonic::async_trait]
impl Backend for CitizenLookup {
    async fn invoke(
        &self,
        request: Request<DataRequest>,
    ) -> Result<Response<DataResponse>, Status> {
        let req = request.into_inner();
        let text = std::str::from_utf8(&req.payload)
            .map_err(|_| Status::invalid_argument("the request is not UTF-8"))?;
        let id: String = text.chars().filter(char::is_ascii_digit).collect();
        if id.len() != 12 {
            return Err(Status::invalid_argument(
                "expected a 12-digit citizen id, e.g. {\"id\": \"001089012345\"}",
            ));
        }
        if id.starts_with("000") {
            return Err(Status::not_found(format!("no citizen {id}")));
        }
        let body = format!(
            "{{\"id\":\"{id}\",\"name\":\"Nguyễn Văn A\",\"born\":\"19{}-0{}-1{}\",\"province\":\"Lạng Sơn\",\"asked_by\":\"{}\"}}",
            &id[4..6],
            &id[6..7].parse::<u8>().map_or(1, |d| d % 9 + 1),
            &id[7..8],
            req.client_agency
        );
        Ok(Response::new(DataResponse {
            content_type: "application/json".into(),
            payload: Bytes::from(body),
            receipt: None,
        }))
    }
}

/// A backend that answers every call with its own request payload, for
/// benchmarks.
#[derive(Clone, Debug, Default)]
pub struct Echo;

#[tonic::async_trait]
impl Backend for Echo {
    async fn invoke(
        &self,
        request: Request<DataRequest>,
    ) -> Result<Response<DataResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(DataResponse {
            content_type: req.content_type,
            payload: req.payload,
            receipt: None,
        }))
    }
}

/// Binds a loopback listener on a port chosen by the OS.
pub async fn bind_loopback() -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}
