//! The VXP API: an HTTP/1.1 listener speaking the protocol of the VXP Java
//! SDK (`com.vpcp.services`), so a document management system (DMS) built on
//! it exchanges edXML packages through this node by changing only its
//! endpoint, system id and secret.
//!
//! Every route of the SDK is served under any base path (the last path
//! segment names the call; `//` is tolerated). Parameters come only from the
//! signed headers ([`sign`]); bodies other than `sendEdoc`'s are ignored.
//! Every answer, failures included, is a JSON object with string `status`
//! (`OK`/`FAIL`), `ErrorCode` (`0` on success) and `ErrorDesc`, never a
//! `null`, ASCII only (non-ASCII escaped as `\uXXXX`: `sendEdoc`'s answer is
//! read as US-ASCII), never compressed.

mod ops;
pub(crate) use ops::Node;
pub(crate) mod sign;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use truc_ops::Shutdown;

use crate::config::{VxpConfig, VxpSystem};

/// A refused request: the HTTP status, the SDK's `ErrorCode` and `ErrorDesc`.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) http: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) desc: String,
}

impl Refusal {
    pub(crate) fn new(http: StatusCode, code: &'static str, desc: impl Into<String>) -> Self {
        Refusal {
            http,
            code,
            desc: desc.into(),
        }
    }
    pub(crate) fn unauthenticated(desc: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", desc)
    }
    pub(crate) fn invalid(desc: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", desc)
    }
    pub(crate) fn denied(desc: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", desc)
    }
    pub(crate) fn internal(desc: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", desc)
    }
}

impl From<tonic::Status> for Refusal {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let (http, code) = match s.code() {
            Code::InvalidArgument => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Code::AlreadyExists => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
            Code::FailedPrecondition => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        Refusal::new(http, code, s.message())
    }
}

/// An answer in the SDK's shape. `extra` holds the call's own fields.
pub(crate) fn answer(
    http: StatusCode,
    status: &str,
    code: &str,
    desc: &str,
    extra: Map<String, Value>,
) -> Response {
    let mut object = Map::new();
    object.insert("status".into(), status.into());
    object.insert("ErrorCode".into(), code.into());
    object.insert("ErrorDesc".into(), desc.into());
    object.extend(extra);
    let text = ascii_json(&Value::Object(object));
    let mut response = (http, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A success with the call's fields.
pub(crate) fn ok(extra: Map<String, Value>) -> Response {
    answer(StatusCode::OK, "OK", "0", "Success", extra)
}

/// A refusal; `extra` are the fields the call must carry even on errors
/// (`DocId` for `sendEdoc`).
pub(crate) fn refused(r: &Refusal, extra: Map<String, Value>) -> Response {
    answer(r.http, "FAIL", r.code, &r.desc, extra)
}

/// Compact JSON with every non-ASCII character escaped as `\uXXXX`
/// (surrogate pairs beyond the BMP). Non-ASCII characters can only occur
/// inside JSON strings, so escaping them in the serialised text is exact.
pub(crate) fn ascii_json(value: &Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Everything the VXP handlers need.
pub(crate) struct Vxp {
    pub(crate) systems: BTreeMap<String, VxpSystem>,
    pub(crate) node: ops::Node,
}

/// Serves the VXP API on `listener` until `shutdown`, with at most
/// `max_connections` connections open at once; the task ends once open
/// requests finished, or `drain` after the shutdown. While `maintenance`
/// drains, new requests get [`draining`], and requests in flight count in
/// its in-flight number.
pub(crate) fn spawn(
    config: &VxpConfig,
    listener: TcpListener,
    node: ops::Node,
    shutdown: Shutdown,
    max_connections: usize,
    (maintenance, drain): (&truc_ops::Drain, Duration),
) -> Result<tokio::task::JoinHandle<Result<(), truc_ops::ServeError>>, String> {
    let vxp = Arc::new(Vxp {
        systems: config.systems.clone(),
        node,
    });
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(vxp)
        .layer(maintenance.http_layer(draining));
    let tls = match &config.tls {
        None => None,
        Some((cert, key)) => Some(tls_config(cert, key)?),
    };
    let incoming = incoming(listener, tls, shutdown.clone(), max_connections)?;
    Ok(tokio::spawn(async move {
        let served = axum::serve(incoming, router).with_graceful_shutdown(shutdown.clone().wait());
        let bounded = async {
            shutdown.wait().await;
            tokio::time::sleep(drain).await;
        };
        tokio::select! {
            served = served => served.map_err(|e| truc_ops::ServeError::Listener("VXP", e)),
            () = bounded => {
                tracing::warn!(?drain, "VXP requests still open after the drain deadline; closing");
                Ok(())
            }
        }
    }))
}

/// TLS 1.3 and 1.2 (the SDK runs on Java 8 JVMs), no client certificate,
/// HTTP/1.1.
fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("vxp.cert {}: {e}", cert.display()))?;
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("vxp.key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("vxp TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("vxp.cert/vxp.key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A connection's byte stream, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// A connection closed once nothing was read or written on it for
/// [`IDLE_TIMEOUT`]: the SDK's list calls never close their connections, so
/// a polling DMS would otherwise pile up idle ones.
struct Idle {
    inner: Box<dyn Stream>,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The connection's place among those allowed at once.
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// How long a connection may stay silent.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

impl Idle {
    fn new(inner: Box<dyn Stream>, slot: Option<tokio::sync::OwnedSemaphorePermit>) -> Idle {
        Idle {
            inner,
            sleep: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            _slot: slot,
        }
    }

    fn active(&mut self) {
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
    }

    /// `Pending` unless the connection has been idle too long.
    fn expired(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Error> {
        use std::future::Future;
        self.sleep
            .as_mut()
            .poll(cx)
            .map(|()| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle connection"))
    }
}

impl tokio::io::AsyncRead for Idle {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.active();
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx).map(Err),
        }
    }
}

impl tokio::io::AsyncWrite for Idle {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.active();
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx).map(Err),
        }
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepted connections (TLS ones once their handshake completed;
/// handshakes run in their own tasks, at most [`MAX_HANDSHAKES`] at once,
/// each within [`HANDSHAKE_TIMEOUT`], so a slow client holds up no other).
/// A connection over the limit of open ones is closed as soon as it is
/// accepted; each holds its place until it closes.
struct Incoming {
    rx: tokio::sync::mpsc::Receiver<(Idle, SocketAddr)>,
    local: SocketAddr,
}

const MAX_HANDSHAKES: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn incoming(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: Shutdown,
    max_connections: usize,
) -> Result<Incoming, String> {
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = shutdown.wait() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "VXP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, max_connections, "VXP: too many connections open, connection closed");
                continue;
            };
            let Some(acceptor) = acceptor.clone() else {
                let _ = tx.send((Idle::new(Box::new(tcp), Some(slot)), peer)).await;
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "VXP: too many TLS handshakes at once, connection closed");
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx
                            .send((Idle::new(Box::new(stream), Some(slot)), peer))
                            .await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "VXP TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "VXP TLS handshake timed out"),
                }
            });
        }
    });
    Ok(Incoming { rx, local })
}

impl axum::serve::Listener for Incoming {
    type Io = Idle;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop ended (shutdown): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The largest body of a call whose body is ignored (`{}`, `registerAgency`'s JSON).
const MAX_IGNORED_BODY: usize = 64 * 1024;

/// The call a request names: its last path segment.
fn call_name(uri: &Uri) -> &str {
    uri.path().rsplit('/').find(|s| !s.is_empty()).unwrap_or("")
}

/// The fields the call must carry even on errors: `DocId` for `sendEdoc`.
fn error_fields(uri: &Uri) -> Map<String, Value> {
    let mut m = Map::new();
    if call_name(uri) == "sendEdoc" {
        m.insert("DocId".into(), "".into());
    }
    m
}

/// The answer to a request made while the node drains: the SDK's shape
/// (`FAIL`, `UNAVAILABLE`, every field a string), with a 503 the SDK
/// ignores but a proxy or a probe reads.
pub(crate) fn draining(uri: &Uri) -> Response {
    refused(
        &Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "node is draining: send again later or to another node",
        ),
        error_fields(uri),
    )
}

/// Every request: the call named by the last path segment.
async fn handle(
    State(vxp): State<Arc<Vxp>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = call_name(&uri).to_string();
    let send = call == "sendEdoc";
    let error_extra = || error_fields(&uri);
    let expected = if call == "downloadEdoc" {
        Method::GET
    } else {
        Method::POST
    };
    if !ops::CALLS.contains(&call.as_str()) {
        return refused(
            &Refusal::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("no VXP call {call:?}"),
            ),
            error_extra(),
        );
    }
    if method != expected {
        return refused(
            &Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "INVALID_ARGUMENT",
                format!("{call} takes {expected}, not {method}"),
            ),
            error_extra(),
        );
    }
    // Bodies other than sendEdoc's are ignored, but read: hyper sends the
    // interim `100 Continue` HttpClient waits for (3 s otherwise) only once
    // the body is read.
    let body = if send {
        body
    } else {
        match axum::body::to_bytes(body, MAX_IGNORED_BODY).await {
            Ok(_) => Body::empty(),
            Err(e) => {
                return refused(
                    &Refusal::invalid(format!("reading the body: {e}")),
                    error_extra(),
                );
            }
        }
    };
    let signed = match sign::verify(&headers, &vxp.systems) {
        Ok(s) => s,
        Err(r) => {
            tracing::info!(call, reason = %r.desc, "VXP request refused");
            return refused(&r, error_extra());
        }
    };
    tracing::debug!(call, system = %signed.system, "VXP call");
    match ops::dispatch(&vxp, &call, &signed, body).await {
        Ok(r) => r,
        Err(r) => {
            tracing::info!(call, system = %signed.system, code = r.code, reason = %r.desc, "VXP call failed");
            refused(&r, error_extra())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_and_an_active_one_kept() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64);
        let mut idle = Idle::new(Box::new(server), None);
        let mut client = client;
        // Traffic just before each deadline keeps it open, well past one
        // idle time in all.
        let mut buf = [0u8; 1];
        for _ in 0..3 {
            // The read waits (and watches the idle timer) while time passes.
            let (read, ()) = tokio::join!(idle.read_exact(&mut buf), async {
                tokio::time::advance(IDLE_TIMEOUT - Duration::from_secs(1)).await;
                client.write_all(b"x").await.expect("write");
            });
            read.expect("read while active");
        }
        // Then silence: the read fails once the idle time has passed.
        let err = idle.read(&mut buf).await.expect_err("idle");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test]
    async fn a_connection_over_the_limit_is_closed_and_a_closed_one_frees_its_place() {
        use axum::serve::Listener as _;
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = Shutdown::new();
        let mut incoming = incoming(listener, None, shutdown.clone(), 2).expect("incoming");
        let first = tokio::net::TcpStream::connect(addr).await.expect("first");
        let (kept_first, _) = incoming.accept().await;
        let _second = tokio::net::TcpStream::connect(addr).await.expect("second");
        let (_kept_second, _) = incoming.accept().await;
        // The third is accepted by the kernel, then closed: it reads EOF.
        let mut third = tokio::net::TcpStream::connect(addr).await.expect("third");
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf)).await;
        assert_eq!(read.expect("closed at once").expect("read"), 0, "closed");
        // Once the first closes, a new one gets its place.
        drop(kept_first);
        drop(first);
        let _fourth = tokio::net::TcpStream::connect(addr).await.expect("fourth");
        let accepted = tokio::time::timeout(Duration::from_secs(10), incoming.accept()).await;
        assert!(accepted.is_ok(), "a freed place is taken again");
        shutdown.trigger();
    }

    #[test]
    fn answers_are_ascii_json_with_the_three_fields() {
        let mut extra = Map::new();
        extra.insert("DocId".into(), "".into());
        let text = ascii_json(&serde_json::json!({"ErrorDesc": "Văn bản 𝄞", "DocId": ""}));
        assert!(text.is_ascii(), "{text}");
        let back: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(back["ErrorDesc"], "Văn bản 𝄞");
        let r = refused(&Refusal::invalid("Không hợp lệ"), extra);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
