#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! TLS and tonic end to end over certificates from the development CA.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;

use truc_devca::{init, issue};
use truc_pki::*;

use truc_devca::testing::{identities as ids, options as opts};

fn cert_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

#[test]
fn config_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let layout = init(dir.path(), &opts()).unwrap();
    let good = layout.files(&ids()[1]);
    let missing = TlsFiles {
        cert: dir.path().join("nope.crt"),
        ..good.clone()
    };
    let err = server_config(&missing).unwrap_err();
    assert!(matches!(err, PkiError::Read { .. }) && err.to_string().contains("nope.crt"));
    let no_cert = TlsFiles {
        cert: good.key.clone(),
        ..good.clone()
    };
    let err = client_config(&no_cert).unwrap_err();
    assert!(matches!(err, PkiError::NoCertificate(_)), "{err}");
    let bad_key = TlsFiles {
        key: good.cert.clone(),
        ..good.clone()
    };
    let err = client_config(&bad_key).unwrap_err();
    assert!(matches!(err, PkiError::BadKey { .. }), "{err}");
    assert!(err.to_string().contains("node-lgsp-langson.crt"), "{err}");
    server_config(&good).unwrap();
    client_config(&good).unwrap();
}

/// A TLS listener on a free port of 127.0.0.1 that serves with `files`.
async fn listen(
    files: &TlsFiles,
    limits: AcceptLimits,
) -> (
    std::net::SocketAddr,
    impl tokio_stream::Stream<Item = std::io::Result<TlsConn>> + Send + 'static,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tls_incoming(listener, server_config(files).unwrap(), limits);
    (addr, incoming)
}

async fn tls_server(
    files: &TlsFiles,
) -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<TlsConn>) {
    let (addr, incoming) = listen(files, AcceptLimits::default()).await;
    let mut incoming = Box::pin(incoming);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Some(conn) = incoming.next().await {
            let mut conn = conn.unwrap();
            // Echo one chunk so the client can see the connection works.
            let mut buf = [0u8; 16];
            let n = conn.read(&mut buf).await.unwrap();
            conn.write_all(&buf[..n]).await.unwrap();
            conn.flush().await.unwrap();
            if tx.send(conn).await.is_err() {
                break;
            }
        }
    });
    (addr, rx)
}

/// Connects with `config`, writes "ping" and reads the echo.
async fn tls_ping(
    addr: std::net::SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    tls.write_all(b"ping").await?;
    tls.flush().await?;
    let mut buf = [0u8; 16];
    let n = tls.read(&mut buf).await?;
    Ok(buf[..n].to_vec())
}

#[tokio::test]
async fn tls_handshake_identities() {
    let dir = tempfile::tempdir().unwrap();
    let layout = init(&dir.path().join("a"), &opts()).unwrap();
    let other = init(&dir.path().join("b"), &opts()).unwrap();
    let hub = Identity::new(Role::Hub, "hub").unwrap();
    let node = Identity::new(Role::Node, "lgsp-langson").unwrap();
    let (addr, mut conns) = tls_server(&layout.files(&hub)).await;

    // A node of this CA connects; the server sees its identity.
    let cfg = client_config(&layout.files(&node)).unwrap();
    assert_eq!(tls_ping(addr, "hub", cfg.clone()).await.unwrap(), b"ping");
    let conn = conns.recv().await.unwrap();
    assert_eq!(conn.peer_info().identity, node);
    assert!(conn.peer_info().remote_addr.is_some());

    // The server must present a certificate for the expected name.
    assert!(tls_ping(addr, "lgsp-langson", cfg).await.is_err());

    // A client certificate from another CA (trusting our CA for the server) is refused.
    let foreign = TlsFiles {
        ca: layout.ca_cert(),
        crls: vec![],
        ..other.files(&node)
    };
    let res = tls_ping(addr, "hub", client_config(&foreign).unwrap()).await;
    // Both CAs share a subject name, so the signature check is what fails.
    let err = res.unwrap_err();
    assert!(err.to_string().contains("alert"), "{err}");

    // A client that only trusts the other CA refuses our server.
    let res = tls_ping(addr, "hub", client_config(&other.files(&node)).unwrap()).await;
    assert!(res.is_err());

    // A TLS 1.2-only ClientHello gets an alert.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&tls12_client_hello()).await.unwrap();
    let mut buf = [0u8; 7];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    // Alert record, fatal, protocol_version.
    assert_eq!(&buf[..n], &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]);

    // None of the failures produced a connection, and the stream still works.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), conns.recv())
            .await
            .is_err()
    );
    let admin = Identity::new(Role::Admin, "root-admin").unwrap();
    let cfg = client_config(&layout.files(&admin)).unwrap();
    assert_eq!(tls_ping(addr, "hub", cfg).await.unwrap(), b"ping");
    assert_eq!(conns.recv().await.unwrap().peer_info().identity, admin);
}

/// A ClientHello offering only TLS 1.2 (no supported_versions extension).
fn tls12_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]);
    let ext: &[u8] = &[
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17, // supported_groups: secp256r1
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats
        0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03, // signature_algorithms
    ];
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(ext);
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

// ---- tonic over rustls, with a hand-written service and a UTF-8 string codec ----

#[derive(Clone, Copy, Default)]
struct StringCodec;
struct StringCoder;

impl tonic::codec::Codec for StringCodec {
    type Encode = String;
    type Decode = String;
    type Encoder = StringCoder;
    type Decoder = StringCoder;
    fn encoder(&mut self) -> StringCoder {
        StringCoder
    }
    fn decoder(&mut self) -> StringCoder {
        StringCoder
    }
}

impl tonic::codec::Encoder for StringCoder {
    type Item = String;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: String,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, item.as_bytes());
        Ok(())
    }
}

impl tonic::codec::Decoder for StringCoder {
    type Item = String;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<String>, tonic::Status> {
        let bytes = bytes::Buf::copy_to_bytes(src, bytes::Buf::remaining(src));
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))
    }
}

/// Answers `/truc.test.Whoami/Get` with the caller's identity.
#[derive(Clone)]
struct Whoami;

impl tonic::server::NamedService for Whoami {
    const NAME: &'static str = "truc.test.Whoami";
}

struct GetSvc;

impl tonic::server::UnaryService<String> for GetSvc {
    type Response = String;
    type Future = tonic::codegen::BoxFuture<tonic::Response<String>, tonic::Status>;
    fn call(&mut self, req: tonic::Request<String>) -> Self::Future {
        let res =
            peer(&req).map(|p| tonic::Response::new(format!("{}:{}", p.identity, req.get_ref())));
        Box::pin(async move { res })
    }
}

impl<B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Whoami
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;
    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() == "/truc.test.Whoami/Get" {
                Ok(tonic::server::Grpc::new(StringCodec)
                    .unary(GetSvc, req)
                    .await)
            } else {
                Ok(tonic::Status::unimplemented("no such method").into_http())
            }
        })
    }
}

async fn whoami(channel: tonic::transport::Channel, msg: &str) -> Result<String, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/truc.test.Whoami/Get");
    Ok(grpc
        .unary(tonic::Request::new(msg.to_owned()), path, StringCodec)
        .await?
        .into_inner())
}

#[tokio::test]
async fn tonic_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let layout = init(dir.path(), &opts()).unwrap();
    let hub = Identity::new(Role::Hub, "hub").unwrap();
    let (addr, server) = whoami_server(&layout.files(&hub), AcceptLimits::default()).await;

    let node = Identity::new(Role::Node, "lgsp-langson").unwrap();
    let ch = channel(&addr, "hub", client_config(&layout.files(&node)).unwrap()).unwrap();
    assert_eq!(
        whoami(ch.clone(), "hi").await.unwrap(),
        "node/lgsp-langson:hi"
    );
    assert_eq!(
        whoami(ch, "again").await.unwrap(),
        "node/lgsp-langson:again"
    );

    // A client issued later by the same CA works; issuing it twice is refused.
    let late = Identity::new(Role::Client, "late-app").unwrap();
    let files = issue(&layout, &late, 5).unwrap();
    assert_eq!(
        Identity::from_cert_der(&cert_der(&files.cert)).unwrap(),
        late
    );
    assert!(matches!(
        issue(&layout, &late, 5),
        Err(truc_devca::DevCaError::FileExists(_))
    ));
    let ch = channel(&addr, "hub", client_config(&files).unwrap()).unwrap();
    assert_eq!(whoami(ch, "x").await.unwrap(), "client/late-app:x");

    // Wrong expected server name: the connection fails.
    let ch = channel(&addr, "node2", client_config(&layout.files(&node)).unwrap()).unwrap();
    assert!(whoami(ch, "x").await.is_err());
    assert!(
        channel(
            &addr,
            "not a name",
            client_config(&layout.files(&node)).unwrap()
        )
        .is_err()
    );
    server.abort();
}

#[test]
fn server_identity_must_match_role_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let layout = init(dir.path(), &opts()).unwrap();
    let der = |id: &Identity| cert_der(&layout.files(id).cert);
    let [hub, node, _, admin, client] = ids().try_into().unwrap();
    assert!(check_server_identity(&der(&hub), "hub", Some(Role::Hub)).is_ok());
    assert!(check_server_identity(&der(&hub), "hub", None).is_ok());
    assert!(check_server_identity(&der(&hub), "hub", Some(Role::Node)).is_err());
    assert!(check_server_identity(&der(&node), "lgsp-langson", Some(Role::Node)).is_ok());
    let err = check_server_identity(&der(&node), "lgsp-langson", Some(Role::Hub)).unwrap_err();
    assert!(
        err.contains("node/lgsp-langson") && err.contains("hub/lgsp-langson"),
        "{err}"
    );
    assert!(check_server_identity(&der(&node), "hub", None).is_err());
    assert!(check_server_identity(&der(&admin), "root-admin", None).is_err());
    assert!(check_server_identity(&der(&client), "app1", None).is_err());
}

/// A CA holder's mistake, or a stolen CA key: a node certificate whose DNS
/// name is the hub's, from the right CA. Issued in a copy of the CA's
/// directory, since `issue` refuses it next to the real hub.
fn rogue_node_named_hub(layout: &Layout, dir: &Path) -> TlsFiles {
    let rogue = Layout::new(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(layout.ca_cert(), rogue.ca_cert()).unwrap();
    std::fs::copy(layout.ca_key(), rogue.ca_key()).unwrap();
    issue(&rogue, &Identity::new(Role::Node, "hub").unwrap(), 30).unwrap()
}

/// Serves [`Whoami`] with `files` and `limits` on a free port.
async fn whoami_server(
    files: &TlsFiles,
    limits: AcceptLimits,
) -> (String, tokio::task::JoinHandle<()>) {
    let (addr, incoming) = listen(files, limits).await;
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(Whoami)
            .serve_with_incoming(incoming)
            .await;
    });
    (addr.to_string(), server)
}

#[tokio::test]
async fn a_node_certificate_cannot_pass_as_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let layout = init(&dir.path().join("pki"), &opts()).unwrap();
    let rogue = rogue_node_named_hub(&layout, &dir.path().join("rogue"));
    let node = Identity::new(Role::Node, "lgsp-langson").unwrap();
    let hub = Identity::new(Role::Hub, "hub").unwrap();
    let (impostor, impostor_task) = whoami_server(&rogue, AcceptLimits::default()).await;
    let (genuine, genuine_task) = whoami_server(&layout.files(&hub), AcceptLimits::default()).await;

    // The node's connection to the hub, as the node builds it.
    let to_hub = client_config_for(&layout.files(&node), Role::Hub).unwrap();
    let ch = channel(&impostor, "hub", to_hub.clone()).unwrap();
    let err = whoami(ch, "secret").await.unwrap_err();
    assert!(
        err.code() == tonic::Code::Unavailable || err.code() == tonic::Code::Unknown,
        "{err:?}"
    );
    let ch = channel(&genuine, "hub", to_hub).unwrap();
    assert_eq!(whoami(ch, "x").await.unwrap(), "node/lgsp-langson:x");

    // The hub's connections to nodes see role node: the hub is no node.
    let to_node = client_config_for(&layout.files(&hub), Role::Node).unwrap();
    let ch = channel(&genuine, "hub", to_node.clone()).unwrap();
    assert!(whoami(ch, "x").await.is_err());
    let (node_addr, node_task) = whoami_server(&layout.files(&node), AcceptLimits::default()).await;
    let ch = channel(&node_addr, "lgsp-langson", to_node).unwrap();
    assert_eq!(whoami(ch, "x").await.unwrap(), "hub/hub:x");

    // An operator's tool expects the hub, an agency system's a node.
    let rogue_admin = TlsFiles {
        ca: layout.ca_cert(),
        ..layout.files(&Identity::new(Role::Admin, "root-admin").unwrap())
    };
    let ch = channel(&impostor, "hub", tool_client_config(&rogue_admin).unwrap()).unwrap();
    assert!(whoami(ch, "x").await.is_err());
    let ch = channel(&genuine, "hub", tool_client_config(&rogue_admin).unwrap()).unwrap();
    assert_eq!(whoami(ch, "x").await.unwrap(), "admin/root-admin:x");
    let app = layout.files(&Identity::new(Role::Client, "app1").unwrap());
    let ch = channel(&genuine, "hub", tool_client_config(&app).unwrap()).unwrap();
    assert!(whoami(ch, "x").await.is_err());
    let ch = channel(
        &node_addr,
        "lgsp-langson",
        tool_client_config(&app).unwrap(),
    )
    .unwrap();
    assert_eq!(whoami(ch, "x").await.unwrap(), "client/app1:x");

    // Without a role the name must still be the server's own identity.
    let any = client_config(&layout.files(&node)).unwrap();
    let ch = channel(&genuine, "hub", any).unwrap();
    assert_eq!(whoami(ch, "x").await.unwrap(), "node/lgsp-langson:x");
    impostor_task.abort();
    genuine_task.abort();
    node_task.abort();
}

/// Reads from `s` until EOF or an error; true when it was closed within 30 s.
async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut buf = [0u8; 256];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_all)
        .await
        .is_ok()
}

#[tokio::test]
async fn stalled_handshakes_do_not_keep_a_real_caller_out() {
    let dir = tempfile::tempdir().unwrap();
    let layout = init(dir.path(), &opts()).unwrap();
    let hub = Identity::new(Role::Hub, "hub").unwrap();
    let node = Identity::new(Role::Node, "lgsp-langson").unwrap();
    let limits = AcceptLimits {
        max_connections: 2,
        max_handshakes: 3,
        // Far longer than the test: only the bound on handshakes in flight
        // can make room.
        handshake_timeout: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(3600),
    };
    let (addr, server) = whoami_server(&layout.files(&hub), limits).await;

    // Idle TCP connections and half-open TLS ones (a ClientHello cut short),
    // four times the handshake limit.
    let mut idle = Vec::new();
    for i in 0..12 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 1 {
            tcp.write_all(&tls12_client_hello()[..20]).await.unwrap();
        }
        idle.push(tcp);
    }
    // All but the last three are dropped to make room, without any timeout.
    for tcp in &mut idle[..9] {
        assert!(closed_by_server(tcp).await);
    }
    let cfg = client_config_for(&layout.files(&node), Role::Hub).unwrap();
    let ch = channel(&addr, "hub", cfg.clone()).unwrap();
    assert_eq!(
        whoami(ch.clone(), "x").await.unwrap(),
        "node/lgsp-langson:x"
    );

    // Established connections are bounded too: with two open, a third
    // caller is closed, and gets in once one of them goes away.
    let other = channel(&addr, "hub", cfg.clone()).unwrap();
    assert_eq!(
        whoami(other.clone(), "y").await.unwrap(),
        "node/lgsp-langson:y"
    );
    let third = channel(&addr, "hub", cfg.clone()).unwrap();
    assert!(whoami(third, "z").await.is_err());
    drop(other);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let again = channel(&addr, "hub", cfg.clone()).unwrap();
        if whoami(again, "z").await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never let in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(ch);
    server.abort();
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let layout = init(dir.path(), &opts()).unwrap();
    let hub = Identity::new(Role::Hub, "hub").unwrap();
    let node = Identity::new(Role::Node, "lgsp-langson").unwrap();
    let limits = AcceptLimits {
        idle_timeout: Duration::from_millis(300),
        ..AcceptLimits::default()
    };
    let (addr, incoming) = listen(&layout.files(&hub), limits).await;
    let mut incoming = Box::pin(incoming);
    // The server side only reads, as an HTTP/2 server waiting for a preface.
    let server = tokio::spawn(async move {
        while let Some(Ok(mut conn)) = incoming.next().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("hub".to_owned()).unwrap();
    let cfg = client_config_for(&layout.files(&node), Role::Hub).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap();
    // Handshake done, then silence: the server must hang up.
    assert!(closed_by_server(&mut tls).await);
    server.abort();
}

#[tokio::test]
async fn a_stopped_listener_frees_its_address_at_once() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &opts()).unwrap();
    let files = Layout::new(dir.path()).files(&Identity::new(Role::Hub, "hub").unwrap());
    let (addr, incoming) = listen(&files, AcceptLimits::default()).await;
    let mut incoming = Box::pin(incoming);
    // Polled once, as a server does, then dropped as a stopped server drops it.
    let polled = tokio::time::timeout(Duration::from_millis(10), incoming.next()).await;
    assert!(polled.is_err(), "no connection yet");
    drop(incoming);
    // A restart binds the same address right away, without yielding first.
    std::net::TcpListener::bind(addr).expect("the address is free");
}
