//! TLS 1.3 configurations, and tonic served and connected over rustls.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::crl::{CrlPolicy, CrlSet, RefusalCounts};
use crate::keys::read_bytes;
use crate::live::Guard;
use crate::{Identity, LiveTls, PkiError, Role};

const ALPN_H2: &[u8] = b"h2";

/// What one listener accepts at most, and how long it waits for a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptLimits {
    /// Established TLS connections at once; a connection over the limit is
    /// closed right after it is accepted.
    pub max_connections: usize,
    /// TLS handshakes in flight at once. A new connection over the limit
    /// takes the place of the oldest handshake still running, so peers that
    /// open connections and never finish the handshake cannot keep a real
    /// caller out.
    pub max_handshakes: usize,
    /// How long a handshake may take before the connection is dropped.
    pub handshake_timeout: Duration,
    /// An established connection from which nothing at all is read for this
    /// long is closed. Servers ping their peers (HTTP/2 keepalive) more often
    /// than this, so only a peer that stopped answering is cut.
    pub idle_timeout: Duration,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        AcceptLimits {
            max_connections: 1024,
            max_handshakes: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// The CA certificate, own certificate and own private key (PEM files) of a
/// participant, and the CRLs its peers' certificates are checked against.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA certificate that peers must chain to.
    pub ca: PathBuf,
    /// This participant's certificate.
    pub cert: PathBuf,
    /// This participant's private key.
    pub key: PathBuf,
    /// Certificate revocation lists (PEM or DER); none means no revocation check.
    pub crls: Vec<PathBuf>,
    /// What a handshake does when a list is past its nextUpdate.
    pub crl_policy: CrlPolicy,
}

impl TlsFiles {
    /// The three files, with no CRL.
    pub fn new(ca: PathBuf, cert: PathBuf, key: PathBuf) -> TlsFiles {
        TlsFiles {
            ca,
            cert,
            key,
            crls: Vec::new(),
            crl_policy: CrlPolicy::Warn,
        }
    }

    /// Every file a reload reads: CA, certificate, key, CRLs.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.ca.clone(), self.cert.clone(), self.key.clone()];
        v.extend(self.crls.iter().cloned());
        v
    }
}

/// Installs rustls' ring provider as the process default; does nothing if one is installed.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let bytes = read_bytes(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::BadCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PkiError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn load_key(
    path: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<PrivateKeyDer<'static>, PkiError> {
    let bytes = read_bytes(path)?;
    let bad = |reason: String| PkiError::BadKey {
        path: path.to_path_buf(),
        reason,
    };
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => bad("no private key".into()),
        e => bad(e.to_string()),
    })?;
    provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| bad(e.to_string()))?;
    Ok(key)
}

fn load_roots(path: &Path) -> Result<rustls::RootCertStore, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| PkiError::BadCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn tls_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> PkiError + '_ {
    move |e| PkiError::Tls {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// What a server and a client config are both built from: the crypto
/// provider, the CA as the only root, the CRLs, and this participant's
/// chain and key.
pub(crate) struct Material {
    provider: Arc<rustls::crypto::CryptoProvider>,
    roots: Arc<rustls::RootCertStore>,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    pub(crate) crls: CrlSet,
    policy: CrlPolicy,
    /// Why handshakes were refused (shared by every config built from this).
    counts: Arc<RefusalCounts>,
}

impl Material {
    /// Reads and checks every file; a CRL that does not verify against the
    /// CA (bad signature), or a CA without a list while lists are
    /// configured, is refused here rather than failing every handshake later.
    pub(crate) fn load(files: &TlsFiles, counts: Arc<RefusalCounts>) -> Result<Self, PkiError> {
        let provider = provider();
        let roots = Arc::new(load_roots(&files.ca)?);
        let certs = load_certs(&files.cert)?;
        let key = load_key(&files.key, &provider)?;
        let crls = CrlSet::load(&files.crls)?;
        let m = Material {
            provider,
            roots,
            certs,
            key,
            crls,
            policy: files.crl_policy,
            counts,
        };
        m.check_crls(files)?;
        Ok(m)
    }

    /// Checks that every list is signed by the CA, then this participant's
    /// own certificate through a verifier holding the lists: the CA must
    /// have a list (else every certificate would be refused).
    fn check_crls(&self, files: &TlsFiles) -> Result<(), PkiError> {
        if self.crls.is_empty() {
            return Ok(());
        }
        let cas = load_certs(&files.ca)?;
        self.crls.verify_issuers(&cas, &files.ca)?;
        let Some((leaf, chain)) = self.certs.split_first() else {
            return Ok(());
        };
        let now = UnixTime::now();
        let verify = |ders: Vec<CertificateRevocationListDer<'static>>| {
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                self.roots.clone(),
                self.provider.clone(),
            )
            .with_crls(ders)
            .build()
            .map_err(|e| e.to_string())
            .map(|v| v.verify_client_cert(leaf, chain, now).map(|_| ()))
        };
        let result = verify(self.crls.ders.clone()).map_err(|reason| PkiError::BadCrl {
            path: files.crls.first().cloned().unwrap_or_default(),
            reason,
        })?;
        match result {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownRevocationStatus,
            )) => Err(PkiError::BadCrl {
                path: files.crls.first().cloned().unwrap_or_default(),
                reason: format!(
                    "no list is issued by the CA {}: every certificate would be refused",
                    files.ca.display()
                ),
            }),
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)) => {
                tracing::error!(cert = %files.cert.display(), "this participant's own certificate is revoked: peers will refuse it");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn client_verifier(&self, files: &TlsFiles) -> Result<Arc<dyn ClientCertVerifier>, PkiError> {
        let mut b = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            self.provider.clone(),
        );
        if !self.crls.is_empty() {
            // The whole chain is checked (the default depth; with our single
            // CA only the leaf is below the anchor), and a certificate whose
            // issuer has no list is refused: lists are local files, so an
            // unknown status is a configuration error, caught by `load`.
            b = b.with_crls(self.crls.ders.clone());
            if self.policy == CrlPolicy::Refuse {
                b = b.enforce_revocation_expiration();
            }
        }
        let inner = b.build().map_err(tls_err(&files.ca))?;
        Ok(Arc::new(CountingClientVerifier {
            inner,
            counts: self.counts.clone(),
        }))
    }

    /// The TLS 1.3 server config (ALPN h2, then http/1.1) built from this
    /// material. gRPC clients offer only h2; the node's HTTP listener serves
    /// HTTP/1.1 clients with the same (reloaded) config.
    pub(crate) fn server_config(
        &self,
        files: &TlsFiles,
    ) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let verifier = self.client_verifier(files)?;
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err(&files.cert))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(tls_err(&files.cert))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The TLS 1.3 client config (ALPN h2) built from this material.
    pub(crate) fn client_config(
        &self,
        files: &TlsFiles,
        role: Option<Role>,
    ) -> Result<Arc<rustls::ClientConfig>, PkiError> {
        let mut b = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots.clone(),
            self.provider.clone(),
        );
        if !self.crls.is_empty() {
            // As for client certificates (see `client_verifier`).
            b = b.with_crls(self.crls.ders.clone());
            if self.policy == CrlPolicy::Refuse {
                b = b.enforce_revocation_expiration();
            }
        }
        let webpki = b.build().map_err(tls_err(&files.ca))?;
        let verifier = Arc::new(IdentityVerifier {
            inner: webpki,
            role,
            counts: self.counts.clone(),
        });
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err(&files.cert))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.certs.clone(), self.key.clone_key())
            .map_err(tls_err(&files.cert))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}

/// A TLS 1.3 server config (ALPN h2) that requires a client certificate
/// issued by `files.ca` and not revoked by `files.crls`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    Material::load(files, Arc::default())?.server_config(files)
}

/// A TLS 1.3 client config (ALPN h2) trusting only `files.ca` and presenting `files.cert`.
/// The server must present a certificate for the expected DNS name whose
/// `truc://` identity is a server (hub or node) of that same name: a client
/// certificate, or a certificate whose identity names another participant,
/// is refused. Use [`client_config_for`] where the server's role is known.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    build_client_config(files, None)
}

/// Like [`client_config`], and the server's identity must also have `role`:
/// a node connects only to a hub (`truc://hub/NAME`), the hub only to nodes.
/// A node certificate whose DNS name is the hub's therefore cannot pass as
/// the hub.
pub fn client_config_for(
    files: &TlsFiles,
    role: Role,
) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    build_client_config(files, Some(role))
}

/// The role of the servers a tool with this certificate talks to: an
/// operator (admin) talks only to the hub and an agency system (client)
/// only to its node; other roles get any server.
pub(crate) fn tool_server_role(files: &TlsFiles) -> Result<Option<Role>, PkiError> {
    let own = Identity::from_cert_pem(&read_bytes(&files.cert)?).map_err(|e| {
        PkiError::BadCertificate {
            path: files.cert.clone(),
            reason: e.to_string(),
        }
    })?;
    Ok(match own.role {
        Role::Admin => Some(Role::Hub),
        Role::Client => Some(Role::Node),
        Role::Hub | Role::Node => None,
    })
}

/// The client config of an operator's or agency system's tool: the server's
/// role follows from the tool's own certificate, since an operator (admin)
/// talks only to the hub and an agency system (client) only to its node.
/// Other roles get [`client_config`].
pub fn tool_client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    build_client_config(files, tool_server_role(files)?)
}

fn build_client_config(
    files: &TlsFiles,
    role: Option<Role>,
) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    Material::load(files, Arc::default())?.client_config(files, role)
}

/// Counts why client certificates are refused.
#[derive(Debug)]
struct CountingClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    counts: Arc<RefusalCounts>,
}

impl ClientCertVerifier for CountingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                tracing::debug!(error = %e, "refusing client certificate");
                self.counts.count(e);
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The web PKI checks (chain to our CA, validity, DNS name), then the truc
/// identity in the certificate's URI SAN: a server role, the expected role
/// if one is set, and the name that was asked for.
#[derive(Debug)]
struct IdentityVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    role: Option<Role>,
    counts: Arc<RefusalCounts>,
}

/// Why a server certificate was refused after the web PKI checks passed.
#[derive(Debug, thiserror::Error)]
#[error("server certificate is for {found}, expected {expected}")]
struct WrongServer {
    found: String,
    expected: String,
}

/// Checks the identity `der` carries against the server `name` and `role`
/// a client expects.
pub fn check_server_identity(
    der: &[u8],
    name: &str,
    role: Option<Role>,
) -> Result<Identity, String> {
    let id = Identity::from_cert_der(der).map_err(|e| e.to_string())?;
    let role_ok = match role {
        Some(r) => id.role == r,
        None => id.role.is_server(),
    };
    if role_ok && id.name == name {
        Ok(id)
    } else {
        let expected = match role {
            Some(r) => format!("{r}/{name}"),
            None => format!("hub/{name} or node/{name}"),
        };
        Err(WrongServer {
            found: id.to_string(),
            expected,
        }
        .to_string())
    }
}

impl ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| self.counts.count(e))?;
        let name = match server_name {
            ServerName::DnsName(d) => d.as_ref().to_owned(),
            other => other.to_str().into_owned(),
        };
        check_server_identity(end_entity, &name, self.role).map_err(|reason| {
            tracing::warn!(%name, %reason, "refusing server certificate");
            let e = rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                rustls::OtherError(Arc::new(std::io::Error::other(reason))),
            ));
            self.counts.count(&e);
            e
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// What a handler learns about the peer of its connection; inserted by tonic into each request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The identity from the peer's verified client certificate.
    pub identity: Identity,
    /// The peer's TCP address, if known.
    pub remote_addr: Option<SocketAddr>,
}

/// An established server-side TLS connection with a verified peer identity.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerInfo,
    /// Closes the connection when nothing has been read for `idle`.
    idle: Duration,
    idle_timer: Pin<Box<tokio::time::Sleep>>,
    /// This connection's place among the listener's connections.
    _permit: OwnedSemaphorePermit,
    /// Closes the connection when its peer's certificate gets revoked.
    guard: Guard,
}

impl TlsConn {
    /// The peer of this connection.
    pub fn peer_info(&self) -> &PeerInfo {
        &self.peer
    }
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn").field("peer", &self.peer).finish()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.guard.cancel.poll_cancelled(cx) {
            return Poll::Ready(Err(revoked_error()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + this.idle;
                    this.idle_timer.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.idle_timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    tracing::debug!(peer = %this.peer.identity, "closing an idle connection");
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "nothing read from the peer within the idle timeout",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.guard.cancel.is_cancelled() {
            return Poll::Ready(Err(revoked_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.guard.cancel.is_cancelled() {
            return Poll::Ready(Err(revoked_error()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

fn revoked_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the peer's certificate has been revoked",
    )
}

/// An outgoing TLS connection, closed when the server's certificate gets
/// revoked by a reloaded CRL.
struct ClientConn {
    inner: tokio_rustls::client::TlsStream<TcpStream>,
    guard: Guard,
}

impl AsyncRead for ClientConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.guard.cancel.poll_cancelled(cx) {
            return Poll::Ready(Err(revoked_error()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.guard.cancel.is_cancelled() {
            return Poll::Ready(Err(revoked_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

/// Accepts TCP connections, runs TLS handshakes concurrently (each in its own
/// task, within `limits`), reads the peer identity from the client
/// certificate, and yields established connections. Failed or timed-out
/// handshakes, certificates without a valid identity and connections over
/// the limits are logged (tracing::debug/warn) and dropped, never ending the
/// stream. The stream owns the listener: once it is dropped (the server
/// stopped), the address is free at once for a restart to bind.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: AcceptLimits,
) -> impl tokio_stream::Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
    incoming(listener, Source::Fixed(config), limits)
}

/// Like [`tls_incoming`], each handshake with the configuration `live`
/// holds when it starts; established connections are tracked by `live`,
/// which closes those whose peer certificate a reload revokes.
pub fn tls_incoming_live(
    listener: TcpListener,
    live: Arc<LiveTls>,
    limits: AcceptLimits,
) -> impl tokio_stream::Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
    incoming(listener, Source::Live(live), limits)
}

/// Where a listener's server config comes from.
#[derive(Clone)]
enum Source {
    Fixed(Arc<rustls::ServerConfig>),
    Live(Arc<LiveTls>),
}

impl Source {
    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        match self {
            Source::Fixed(c) => tokio_rustls::TlsAcceptor::from(c.clone()),
            Source::Live(l) => tokio_rustls::TlsAcceptor::from(l.server_config()),
        }
    }

    fn guard(&self, peer_cert: Option<&[u8]>, peer: String) -> Guard {
        match self {
            Source::Fixed(_) => Guard::untracked(),
            Source::Live(l) => l.track(peer_cert, peer),
        }
    }
}

fn incoming(
    listener: TcpListener,
    source: Source,
    limits: AcceptLimits,
) -> impl tokio_stream::Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<TlsConn, io::Error>>(64);
    TlsIncoming {
        listener,
        source,
        connections: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        limits,
        handshakes: std::collections::VecDeque::new(),
        backoff: None,
        tx,
        rx,
    }
}

/// The stream [`tls_incoming`] returns.
struct TlsIncoming {
    listener: TcpListener,
    source: Source,
    connections: Arc<Semaphore>,
    limits: AcceptLimits,
    /// Handshakes in flight, oldest first.
    handshakes: std::collections::VecDeque<tokio::task::AbortHandle>,
    /// After a failed accept (typically EMFILE): wait instead of spinning.
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    tx: tokio::sync::mpsc::Sender<Result<TlsConn, io::Error>>,
    rx: tokio::sync::mpsc::Receiver<Result<TlsConn, io::Error>>,
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        for h in &self.handshakes {
            h.abort();
        }
    }
}

impl TlsIncoming {
    /// Starts the handshake of a connection just accepted, within the limits.
    fn start(&mut self, tcp: TcpStream, remote_addr: SocketAddr) {
        if self.connections.available_permits() == 0 {
            tracing::debug!(%remote_addr, max = self.limits.max_connections, "connection limit reached; closing a new connection");
            return;
        }
        let max_handshakes = self.limits.max_handshakes.max(1);
        self.handshakes.retain(|h| !h.is_finished());
        while self.handshakes.len() >= max_handshakes {
            if let Some(oldest) = self.handshakes.pop_front() {
                tracing::debug!(
                    max = max_handshakes,
                    "too many tls handshakes in flight; dropping the oldest"
                );
                oldest.abort();
            }
        }
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%remote_addr, error = %e, "cannot set tcp_nodelay");
        }
        let (source, tx, connections, limits) = (
            self.source.clone(),
            self.tx.clone(),
            self.connections.clone(),
            self.limits,
        );
        let task = tokio::spawn(async move {
            let Some(conn) = handshake(source, tcp, remote_addr, limits, connections).await else {
                return;
            };
            // The receiver is gone only when the server stopped.
            let _ = tx.send(Ok(conn)).await;
        });
        self.handshakes.push_back(task.abort_handle());
    }
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = Result<TlsConn, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(backoff) = this.backoff.as_mut() {
                if backoff.as_mut().poll(cx).is_pending() {
                    break;
                }
                this.backoff = None;
            }
            match this.listener.poll_accept(cx) {
                Poll::Ready(Ok((tcp, remote_addr))) => this.start(tcp, remote_addr),
                Poll::Ready(Err(e)) => {
                    tracing::warn!(error = %e, "accepting a tcp connection failed");
                    this.backoff = Some(Box::pin(tokio::time::sleep(Duration::from_millis(100))));
                }
                Poll::Pending => break,
            }
        }
        // The stream holds a sender itself, so it never ends on its own.
        this.rx.poll_recv(cx)
    }
}

async fn handshake(
    source: Source,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    limits: AcceptLimits,
    connections: Arc<Semaphore>,
) -> Option<TlsConn> {
    let acceptor = source.acceptor();
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%remote_addr, error = %e, "tls handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%remote_addr, "tls handshake timed out");
            return None;
        }
    };
    let identity = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => Identity::from_cert_der(cert),
        None => Err(PkiError::NoIdentity("no client certificate".into())),
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(e) => {
            tracing::warn!(%remote_addr, error = %e, "rejecting tls peer");
            return None;
        }
    };
    let Ok(permit) = connections.try_acquire_owned() else {
        tracing::warn!(%remote_addr, %identity, max = limits.max_connections, "connection limit reached; closing");
        return None;
    };
    tracing::debug!(%remote_addr, %identity, "tls connection established");
    let peer_cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
    let guard = source.guard(peer_cert.map(|c| c.as_ref()), identity.to_string());
    Some(TlsConn {
        guard,
        inner: tls,
        peer: PeerInfo {
            identity,
            remote_addr: Some(remote_addr),
        },
        idle: limits.idle_timeout,
        idle_timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
        _permit: permit,
    })
}

/// The client TLS configuration outgoing connections are made with.
#[derive(Clone, Debug)]
pub enum ClientTls {
    /// One configuration.
    Fixed(Arc<rustls::ClientConfig>),
    /// The configuration a [`LiveTls`] holds at each connect.
    Live(Arc<LiveTls>),
}

impl From<Arc<rustls::ClientConfig>> for ClientTls {
    fn from(c: Arc<rustls::ClientConfig>) -> Self {
        ClientTls::Fixed(c)
    }
}

impl From<Arc<LiveTls>> for ClientTls {
    fn from(l: Arc<LiveTls>) -> Self {
        ClientTls::Live(l)
    }
}

/// The identity of the caller of a request, from its connection (UNAUTHENTICATED Status if absent).
pub fn peer<T>(req: &tonic::Request<T>) -> Result<&PeerInfo, tonic::Status> {
    req.extensions().get::<PeerInfo>().ok_or_else(|| {
        tonic::Status::unauthenticated("no verified peer identity on this connection")
    })
}

/// A lazily connecting channel to `addr` ("host:port") whose server certificate must carry DNS name `server_name`, over TLS 1.3 with the client certificate in `config`. TCP_NODELAY, HTTP/2 keepalive (30 s interval, 10 s timeout), connect timeout 5 s.
/// With a [`LiveTls`], each connection uses the client config in force when
/// it is made, and is closed when a reload revokes the server's certificate.
pub fn channel(
    addr: &str,
    server_name: &str,
    config: impl Into<ClientTls>,
) -> Result<tonic::transport::Channel, PkiError> {
    let connector = config.into();
    let endpoint_err = |reason: String| PkiError::Endpoint {
        addr: addr.to_owned(),
        server_name: server_name.to_owned(),
        reason,
    };
    let name =
        ServerName::try_from(server_name.to_owned()).map_err(|e| endpoint_err(e.to_string()))?;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| endpoint_err(e.to_string()))?
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_timeout(Duration::from_secs(5));
    let addr = addr.to_owned();
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri| {
            let addr = addr.clone();
            let name = name.clone();
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr.as_str()).await?;
                tcp.set_nodelay(true)?;
                let config = match &connector {
                    ClientTls::Fixed(c) => c.clone(),
                    ClientTls::Live(l) => l.client_config(),
                };
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name.clone(), tcp)
                    .await?;
                let guard = match &connector {
                    ClientTls::Fixed(_) => Guard::untracked(),
                    ClientTls::Live(l) => {
                        let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
                        l.track(
                            cert.map(|c| c.as_ref()),
                            format!("server {}", name.to_str()),
                        )
                    }
                };
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(ClientConn {
                    inner: tls,
                    guard,
                }))
            }
        })),
    )
}
