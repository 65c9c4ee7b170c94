#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Certificate revocation lists at the handshake, and reloading them while
//! serving: revoked peers are refused, open connections of revoked peers are
//! closed, a bad list leaves the previous one in force.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;

use truc_devca::{RevokeTarget, init, reissue_crl, revoke};
use truc_pki::*;

use truc_devca::testing::options as opts;

fn id(role: Role, name: &str) -> Identity {
    Identity::new(role, name).unwrap()
}

/// Serves `live` on a free port: every connection echoes until it ends;
/// the identity of each connection that ended is sent on the receiver.
async fn echo_server(
    live: Arc<LiveTls>,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Identity>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = Box::pin(tls_incoming_live(listener, live, AcceptLimits::default()));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(conn) = incoming.next().await {
            let mut conn = conn.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = tx.send(conn.peer_info().identity.clone());
            });
        }
    });
    (addr, rx)
}

type Client = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects, writes "ping" and reads the echo; the open connection.
async fn ping(
    addr: std::net::SocketAddr,
    server: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<Client> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(server.to_owned()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    ping_on(&mut tls).await?;
    Ok(tls)
}

async fn ping_on(tls: &mut Client) -> std::io::Result<()> {
    tls.write_all(b"ping").await?;
    tls.flush().await?;
    let mut buf = [0u8; 16];
    let n = tls.read(&mut buf).await?;
    if &buf[..n] == b"ping" {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("read {:?}", &buf[..n])))
    }
}

#[tokio::test]
async fn a_revoked_client_is_refused_after_reload_and_its_open_connection_closed() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let layout = init(dir.path(), &opts()).unwrap();
    let hub_files = layout.files(&id(Role::Hub, "hub"));
    assert_eq!(hub_files.crls, vec![layout.crl()], "init writes the CRL");
    let live = LiveTls::load(hub_files, Some(Role::Node)).unwrap();
    let (addr, mut ended) = echo_server(live.clone()).await;
    let bad = client_config(&layout.files(&id(Role::Node, "lgsp-langson"))).unwrap();
    let good = client_config(&layout.files(&id(Role::Node, "node2"))).unwrap();
    let mut open_bad = ping(addr, "hub", bad.clone())
        .await
        .expect("before revocation");
    let mut open_good = ping(addr, "hub", good.clone()).await.expect("other node");

    revoke(
        &layout,
        &RevokeTarget::Cert(layout.files(&id(Role::Node, "lgsp-langson")).cert),
        None,
    )
    .unwrap();
    // Not reloaded yet: the old list is in force.
    let _open_bad2 = ping(addr, "hub", bad.clone())
        .await
        .expect("old list in force");
    assert_eq!(
        live.reload().unwrap(),
        2,
        "both connections of the revoked node closed"
    );

    // The server ended the revoked node's connections, not the other one's.
    let closed = tokio::time::timeout(Duration::from_secs(10), ended.recv())
        .await
        .expect("closed within 10 s")
        .unwrap();
    assert_eq!(closed, id(Role::Node, "lgsp-langson"));
    assert!(ping_on(&mut open_bad).await.is_err());
    ping_on(&mut open_good)
        .await
        .expect("other node's connection stays");

    let err = ping(addr, "hub", bad)
        .await
        .expect_err("revoked node refused");
    assert!(err.to_string().to_lowercase().contains("revoked"), "{err}");
    ping(addr, "hub", good)
        .await
        .expect("other node still accepted");
    let [revoked, _, _, _] = live.refusals();
    assert_eq!(revoked, 1, "{:?}", live.refusals());
    assert_eq!(live.crls()[0].revoked, 1);
}

#[tokio::test]
async fn a_revoked_server_is_refused_by_a_reloaded_client() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let layout = init(dir.path(), &opts()).unwrap();
    let hub = LiveTls::load(layout.files(&id(Role::Hub, "hub")), Some(Role::Node)).unwrap();
    let (addr, _ended) = echo_server(hub).await;
    let node = LiveTls::load(
        layout.files(&id(Role::Node, "lgsp-langson")),
        Some(Role::Hub),
    )
    .unwrap();
    ping(addr, "hub", node.client_config())
        .await
        .expect("hub accepted");
    revoke(
        &layout,
        &RevokeTarget::Cert(layout.files(&id(Role::Hub, "hub")).cert),
        Some(truc_devca::RevocationReason::KeyCompromise),
    )
    .unwrap();
    node.reload().unwrap();
    let err = ping(addr, "hub", node.client_config())
        .await
        .expect_err("revoked hub refused");
    assert!(err.to_string().to_lowercase().contains("revoked"), "{err}");
    assert_eq!(node.refusals()[0], 1);
}

#[tokio::test]
async fn an_invalid_crl_leaves_the_previous_one_in_force() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let layout = init(&dir.path().join("a"), &opts()).unwrap();
    let other = init(&dir.path().join("b"), &opts()).unwrap();
    let live = LiveTls::load(layout.files(&id(Role::Hub, "hub")), Some(Role::Node)).unwrap();
    let (addr, _ended) = echo_server(live.clone()).await;
    let bad = client_config(&layout.files(&id(Role::Node, "lgsp-langson"))).unwrap();
    let good = client_config(&layout.files(&id(Role::Node, "node2"))).unwrap();
    revoke(
        &layout,
        &RevokeTarget::Cert(layout.files(&id(Role::Node, "lgsp-langson")).cert),
        None,
    )
    .unwrap();
    live.reload().unwrap();
    let revoked_list = std::fs::read(layout.crl()).unwrap();

    // Garbage, then a list of another CA of the same name (bad signature),
    // then an empty file: each is refused, naming the file.
    let foreign = std::fs::read(other.crl()).unwrap();
    for body in [&b"not a crl"[..], &foreign[..], &b""[..]] {
        std::fs::write(layout.crl(), body).unwrap();
        let err = live.reload().expect_err("refused");
        assert!(matches!(err, PkiError::BadCrl { .. }), "{err}");
        assert_eq!(err.path(), Some(layout.crl().as_path()), "{err}");
        ping(addr, "hub", bad.clone())
            .await
            .expect_err("the previous list still revokes");
        ping(addr, "hub", good.clone())
            .await
            .expect("others accepted");
    }
    std::fs::write(layout.crl(), revoked_list).unwrap();
    live.reload().unwrap();
}

#[tokio::test]
async fn a_list_in_der_and_a_serial_in_hex_revoke_too() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let layout = init(dir.path(), &opts()).unwrap();
    let admin = layout.files(&id(Role::Admin, "root-admin"));
    let serial = {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let der = CertificateDer::from_pem_file(&admin.cert).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        c.raw_serial_as_string()
    };
    let out = revoke(&layout, &RevokeTarget::Serial(serial), None).unwrap();
    assert!(!out.already);
    let again = revoke(&layout, &RevokeTarget::Cert(admin.cert.clone()), None).unwrap();
    assert!(again.already && again.total == 1, "{again:?}");

    let der_path = dir.path().join("ca.der.crl");
    let pem = std::fs::read(layout.crl()).unwrap();
    let der = {
        use rustls::pki_types::{CertificateRevocationListDer, pem::PemObject};
        CertificateRevocationListDer::from_pem_slice(&pem).unwrap()
    };
    std::fs::write(&der_path, der.as_ref()).unwrap();
    let mut hub = layout.files(&id(Role::Hub, "hub"));
    hub.crls = vec![der_path];
    let live = LiveTls::load(hub, Some(Role::Node)).unwrap();
    let (addr, _ended) = echo_server(live).await;
    ping(addr, "hub", client_config(&admin).unwrap())
        .await
        .expect_err("admin revoked");
    ping(
        addr,
        "hub",
        client_config(&layout.files(&id(Role::Node, "node2"))).unwrap(),
    )
    .await
    .expect("node accepted");
}

#[tokio::test]
async fn a_stale_list_is_refused_under_refuse_and_tolerated_under_warn() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let layout = init(dir.path(), &opts()).unwrap();
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    reissue_crl(&layout, now - 2 * day, now - day).unwrap();
    let node = client_config(&layout.files(&id(Role::Node, "node2"))).unwrap();

    let mut files = layout.files(&id(Role::Hub, "hub"));
    let warn = LiveTls::load(files.clone(), Some(Role::Node)).unwrap();
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(warn.crls()[0].is_stale(now_s));
    let (addr, _e) = echo_server(warn.clone()).await;
    ping(addr, "hub", node.clone()).await.expect("warn accepts");

    files.crl_policy = CrlPolicy::Refuse;
    let refuse = LiveTls::load(files, Some(Role::Node)).unwrap();
    let (addr, _e) = echo_server(refuse.clone()).await;
    ping(addr, "hub", node.clone())
        .await
        .expect_err("refuse refuses");
    assert_eq!(refuse.refusals()[1], 1, "{:?}", refuse.refusals());
    // A fresh list is picked up by a reload.
    reissue_crl(&layout, now, now + day).unwrap();
    refuse.reload().unwrap();
    ping(addr, "hub", node).await.expect("fresh list");
}
