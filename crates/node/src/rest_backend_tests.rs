//! REST backends against local HTTP servers.

use std::{net::SocketAddr, time::Instant};

use axum::{
    Router,
    body::Body,
    extract::Path as UrlPath,
    http::{HeaderMap, StatusCode as AxumStatus},
    routing::post,
};
use tokio::net::TcpListener;

use super::*;

const LIMIT: usize = 1024;

async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A backend that answers `/status/{code}` with that status, `/echo` with
/// the request's headers as its body, `/big` with more than [`LIMIT`]
/// bytes (announced), `/stream` with more than [`LIMIT`] bytes in chunks
/// (not announced), `/never` never.
fn router() -> Router {
    Router::new()
        .route(
            "/status/{code}",
            post(|UrlPath(code): UrlPath<u16>| async move {
                AxumStatus::from_u16(code).unwrap_or(AxumStatus::IM_A_TEAPOT)
            }),
        )
        .route(
            "/echo",
            post(|headers: HeaderMap, body: Bytes| async move {
                let get = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string()
                };
                let text = format!(
                    "{} {} {} {} {}",
                    get(CLIENT_HEADER),
                    get(SERVICE_HEADER),
                    get(truc_ops::TRANSACTION_ID_HEADER),
                    get("content-type"),
                    String::from_utf8_lossy(&body)
                );
                ([("content-type", "text/plain; charset=utf-8")], text)
            }),
        )
        .route(
            "/trace",
            post(|headers: HeaderMap| async move {
                headers
                    .get(truc_ops::trace::TRACEPARENT)
                    .map(|v| v.as_bytes().to_vec())
                    .unwrap_or_default()
            }),
        )
        .route("/big", post(|| async { vec![b'x'; LIMIT + 1] }))
        .route(
            "/stream",
            post(|| async {
                let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 200])));
                Body::from_stream(tokio_stream::iter(chunks))
            }),
        )
        .route("/never", post(std::future::pending::<()>))
}

fn request() -> DataRequest {
    DataRequest {
        transaction_id: "ab".repeat(16),
        client_agency: "000.00.00.G22".into(),
        service: "000.00.00.H37/household-registry/v1".into(),
        content_type: "application/json".into(),
        payload: Bytes::from_static(br#"{"id":"001"}"#),
        ..DataRequest::default()
    }
}

fn deadline(ms: u64) -> Deadline {
    Deadline::new(None, Instant::now(), Duration::from_millis(ms))
}

async fn call(url: &str) -> Result<(String, Bytes), TxError> {
    let backend = RestBackend::new(url, None, LIMIT).expect("backend");
    backend
        .invoke(
            &request(),
            &Default::default(),
            &deadline(30_000),
            "the backend",
        )
        .await
}

#[tokio::test]
async fn each_http_status_maps_to_its_grpc_code() {
    let addr = serve(router()).await;
    let table = [
        (400, Code::InvalidArgument),
        (401, Code::PermissionDenied),
        (403, Code::PermissionDenied),
        (404, Code::NotFound),
        (409, Code::AlreadyExists),
        (429, Code::ResourceExhausted),
        (503, Code::Unavailable),
        (504, Code::Unavailable),
        (500, Code::Internal),
        (502, Code::Internal),
        (418, Code::Internal),
        (302, Code::Internal),
    ];
    for (status, code) in table {
        let err = call(&format!("http://{addr}/status/{status}"))
            .await
            .expect_err("an error status");
        assert_eq!(err.code(), code, "HTTP {status}: {err}");
        assert!(err.to_string().contains(&status.to_string()), "{err}");
    }
    let (content_type, body) = call(&format!("http://{addr}/status/200"))
        .await
        .expect("200");
    assert_eq!((content_type.as_str(), body.len()), ("", 0));
}

#[tokio::test]
async fn the_backend_gets_the_payload_its_content_type_and_the_call_headers() {
    let addr = serve(router()).await;
    let (content_type, body) = call(&format!("http://{addr}/echo")).await.expect("echo");
    assert_eq!(content_type, "text/plain; charset=utf-8");
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!(
            "000.00.00.G22 000.00.00.H37/household-registry/v1 {} application/json {{\"id\":\"001\"}}",
            "ab".repeat(16)
        )
    );
}

#[tokio::test]
async fn the_backend_request_carries_the_trace_with_the_nodes_span_as_parent() {
    let addr = serve(router()).await;
    let backend = RestBackend::new(&format!("http://{addr}/trace"), None, LIMIT).expect("backend");
    let deadline = deadline(30_000);
    let (_, body) = backend
        .invoke(&request(), &Default::default(), &deadline, "the backend")
        .await
        .expect("trace");
    let trace = deadline.trace();
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("00-{}-{}-01", trace.trace_id(), trace.span_id())
    );
}

#[tokio::test]
async fn connections_are_reused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let service = hyper_util::service::TowerToHyperService::new(router());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    let backend = RestBackend::new(&format!("http://{addr}/echo"), None, LIMIT).expect("new");
    for _ in 0..5 {
        backend
            .invoke(
                &request(),
                &Default::default(),
                &deadline(30_000),
                "the backend",
            )
            .await
            .expect("echo");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_backend_that_never_answers_is_deadline_exceeded_within_the_deadline() {
    let addr = serve(router()).await;
    let backend = RestBackend::new(&format!("http://{addr}/never"), None, LIMIT).expect("new");
    let (req, deadline) = (request(), deadline(300));
    let why = truc_pipeline::fields::Why::default();
    let call = backend.invoke(&req, &why, &deadline, "the backend");
    // The guard only keeps a broken timeout from hanging the test.
    let err = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call ends by itself")
        .expect_err("no answer");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = call(&format!("http://{addr}/echo"))
        .await
        .expect_err("down");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
}

#[tokio::test]
async fn an_answer_over_the_limit_is_resource_exhausted_announced_or_not() {
    let addr = serve(router()).await;
    for path in ["big", "stream"] {
        let err = call(&format!("http://{addr}/{path}"))
            .await
            .expect_err("too large");
        assert_eq!(err.code(), Code::ResourceExhausted, "{path}: {err}");
    }
}

#[test]
fn an_https_backend_needs_a_ca_and_only_http_urls_are_backends() {
    assert!(RestBackend::new("https://localhost:1/", None, LIMIT).is_err());
    assert!(RestBackend::new("ftp://localhost:1/", None, LIMIT).is_err());
    assert!(RestBackend::new("localhost:1", None, LIMIT).is_err());
}

/// A TLS backend with a certificate for `localhost` issued by a dev CA in
/// `dir`; the CA file's path and the backend's address.
async fn tls_backend(dir: &Path) -> (std::path::PathBuf, SocketAddr) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let layout = truc_devca::init(dir, &truc_devca::testing::options()).expect("ca");
    let id = truc_pki::Identity::new(truc_pki::Role::Node, "localhost").expect("id");
    let files = truc_devca::issue(&layout, &id, 1).expect("issue");
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(&files.key).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(router());
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (layout.ca_cert(), addr)
}

#[tokio::test]
async fn an_https_backend_is_trusted_through_its_ca_file_only() {
    let dir = tempfile::tempdir().expect("dir");
    let (ca, addr) = tls_backend(&dir.path().join("backend")).await;
    let url = format!("https://localhost:{}/echo", addr.port());
    let backend = RestBackend::new(&url, Some(&ca), LIMIT).expect("new");
    let (content_type, _) = backend
        .invoke(
            &request(),
            &Default::default(),
            &deadline(30_000),
            "the backend",
        )
        .await
        .expect("over TLS");
    assert_eq!(content_type, "text/plain; charset=utf-8");

    // Another CA: the backend's certificate is not trusted.
    let other = truc_devca::init(&dir.path().join("other"), &truc_devca::testing::options())
        .expect("other ca");
    let backend = RestBackend::new(&url, Some(&other.ca_cert()), LIMIT).expect("new");
    let err = backend
        .invoke(
            &request(),
            &Default::default(),
            &deadline(30_000),
            "the backend",
        )
        .await
        .expect_err("untrusted");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
}
