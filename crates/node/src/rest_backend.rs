//! REST backends: a provided service whose backend is an `http://` or
//! `https://` URL. The node POSTs the payload there with its content type
//! and three headers naming the call (and `traceparent`, the W3C trace
//! context, with the node's span as the parent), reads the answer within the call's
//! deadline and at most `max_payload_bytes` of it, and maps the HTTP status
//! to a gRPC code (see [`code_for`]).
//!
//! Connections are pooled per backend (hyper-util's client, HTTP/1.1); TLS
//! is rustls with the ring provider, trusting only the backend's CA file.

use std::{
    future::Future,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection, HttpConnector},
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio::net::TcpStream;
use tonic::{Code, Status};
use truc_pipeline::{Deadline, TxError};
use truc_proto::v1::DataRequest;

/// Headers of a REST backend call: the agency on whose behalf the call is made (the calling agency's code).
pub const CLIENT_HEADER: &str = "x-truc-client";
/// The service id called.
pub const SERVICE_HEADER: &str = "x-truc-service";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One REST backend: its URL and its pool of connections.
#[derive(Clone)]
pub(crate) struct RestBackend {
    url: Uri,
    client: Client<Connector, Full<Bytes>>,
    max_bytes: usize,
}

impl RestBackend {
    /// A backend at `url` (`http://` or `https://`, then trusting only the
    /// certificates of `ca`), answers bounded to `max_bytes`.
    pub(crate) fn new(url: &str, ca: Option<&Path>, max_bytes: usize) -> Result<Self, String> {
        let url: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let tls = match (url.scheme_str(), ca) {
            (Some("https"), Some(ca)) => Some(tls_connector(ca)?),
            (Some("https"), None) => return Err(format!("{url}: https needs a CA file")),
            (Some("http"), _) => None,
            _ => return Err(format!("{url}: not an http:// or https:// URL")),
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build(Connector { http, tls });
        Ok(RestBackend {
            url,
            client,
            max_bytes,
        })
    }

    /// POSTs `req`'s payload; the answer's content type and body, within
    /// `deadline`.
    pub(crate) async fn invoke(
        &self,
        req: &DataRequest,
        why: &truc_pipeline::fields::Why,
        deadline: &Deadline,
        peer: &str,
    ) -> Result<(String, Bytes), TxError> {
        let mut request = self.request(req, why)?;
        deadline.trace().inject_headers(request.headers_mut());
        match tokio::time::timeout(deadline.remaining(), self.exchange(request, peer)).await {
            Ok(result) => result,
            Err(_) => Err(TxError::Deadline {
                peer: peer.to_string(),
            }),
        }
    }

    fn request(
        &self,
        req: &DataRequest,
        why: &truc_pipeline::fields::Why,
    ) -> Result<Request<Full<Bytes>>, TxError> {
        // The fields were validated on admission (printable ASCII): a
        // failure here is ours.
        let value = |v: &str| {
            HeaderValue::from_str(v)
                .map_err(|e| TxError::Internal(format!("header value {v:?}: {e}")))
        };
        let mut builder = Request::post(self.url.clone())
            .header(CLIENT_HEADER, value(&req.client_agency)?)
            .header(SERVICE_HEADER, value(&req.service)?)
            .header(truc_ops::TRANSACTION_ID_HEADER, value(&req.transaction_id)?);
        if !req.content_type.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, value(&req.content_type)?);
        }
        // Why the call is made (percent-encoded, so always ASCII).
        for (name, v) in why.headers() {
            builder = builder.header(name, value(&v)?);
        }
        builder
            .body(Full::new(req.payload.clone()))
            .map_err(|e| TxError::Internal(format!("backend request: {e}")))
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        peer: &str,
    ) -> Result<(String, Bytes), TxError> {
        let response = self.client.request(request).await.map_err(|e| {
            tracing::warn!(%peer, error = %e, "REST backend unreachable");
            TxError::Unreachable {
                peer: peer.to_string(),
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            let code = code_for(status);
            return Err(TxError::Peer(Status::new(
                code,
                format!("{peer} answered HTTP {status}"),
            )));
        }
        let content_type = match response.headers().get(header::CONTENT_TYPE) {
            None => String::new(),
            Some(v) => v
                .to_str()
                .map_err(|_| TxError::BadAnswer {
                    peer: peer.to_string(),
                    reason: "content-type is not ASCII".into(),
                })?
                .to_string(),
        };
        let too_large = || {
            TxError::TooLarge(format!(
                "{peer} answered more than {} bytes",
                self.max_bytes
            ))
        };
        let announced = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > self.max_bytes as u64) {
            return Err(too_large());
        }
        // Read frame by frame: never more than the limit (plus one frame) held.
        let mut body = response.into_body();
        let mut out = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                tracing::warn!(%peer, error = %e, "REST backend answer cut");
                TxError::Unreachable {
                    peer: peer.to_string(),
                }
            })?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > self.max_bytes {
                    return Err(too_large());
                }
                out.extend_from_slice(&data);
            }
        }
        Ok((content_type, out.freeze()))
    }
}

/// The gRPC code of a backend's HTTP error status (documented in the README).
pub(crate) fn code_for(status: StatusCode) -> Code {
    match status.as_u16() {
        400 | 422 => Code::InvalidArgument,
        401 | 403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 => Code::DeadlineExceeded,
        409 => Code::AlreadyExists,
        413 | 429 => Code::ResourceExhausted,
        503 | 504 => Code::Unavailable,
        // Other 4xx and 5xx, and 1xx/3xx (redirects are not followed): the
        // backend misbehaved as far as the caller can tell.
        _ => Code::Internal,
    }
}

fn tls_connector(ca: &Path) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let shown = ca.display();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{shown}: {e}"))? {
        let cert = cert.map_err(|e| format!("{shown}: {e}"))?;
        roots.add(cert).map_err(|e| format!("{shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{shown}: no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{shown}: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Connects TCP, then TLS for `https://`.
#[derive(Clone)]
struct Connector {
    http: HttpConnector,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl tower::Service<Uri> for Connector {
    type Response = Io;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Io, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
                .ok_or("the URL names no host")?;
            let tcp = tower::Service::call(&mut http, uri).await?;
            let Some(tls) = tls else {
                return Ok(Io::Plain(tcp));
            };
            let name = rustls::pki_types::ServerName::try_from(host)?;
            let stream = tls.connect(name, tcp.into_inner()).await?;
            Ok(Io::Tls(TokioIo::new(Box::new(stream))))
        })
    }
}

/// A connection to a backend, plain or TLS.
enum Io {
    Plain(TokioIo<TcpStream>),
    // Boxed: a TLS stream is 25 times the size of a TCP one.
    Tls(TokioIo<Box<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for Io {
    fn connected(&self) -> Connected {
        match self {
            Io::Plain(s) => s.connected(),
            Io::Tls(s) => s.inner().get_ref().0.connected(),
        }
    }
}

impl hyper::rt::Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
#[path = "rest_backend_tests.rs"]
mod tests;
