//! The one start-up of a truc server process, the hub's and every node's:
//! [`Server::open`] loads the TLS configs, creates the data directory, opens
//! the store and the audit log and sets up the metrics; the process builds
//! its services from what it opened ([`Server::store`], [`Server::audit`],
//! [`Server::metrics`], [`Server::tls`]) and adds them
//! ([`Server::service`]: health and message limits handled); then
//! [`Server::start`] serves them and the ops port, and gives the
//! [`Running`] process, which closes the audit log once it has stopped.
//!
//! It holds no services and no business rules: those are in `truc-hub` and
//! `truc-node`. How gRPC is served (mutual TLS, reflection, the drain) is
//! `truc-ops`; this crate only puts the pieces together in one order.

#![forbid(unsafe_code)]

mod limits;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

pub use limits::{MAX_REGISTRY_SNAPSHOT_BYTES, MessageLimits};
use tokio::net::TcpListener;
use tonic::{
    body::Body,
    codegen::{Service, http},
    server::NamedService,
};
use truc_audit::{AuditLog, Options};
use truc_ops::{
    GrpcServer, Metrics, OpsPort, Running, ServeError, Servers, Shutdown, config::Limits,
};
use truc_pki::{Role, TlsFiles};
use truc_store::Store;

/// Why a server process could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Certificates or keys are unusable.
    #[error(transparent)]
    Pki(#[from] truc_pki::PkiError),
    /// The data directory cannot be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] truc_store::StoreError),
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] truc_audit::AuditError),
    /// A server could not be set up or started.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// What every server process is started with, from its config.
#[derive(Clone, Debug)]
pub struct Common<'a> {
    /// What this process is (the hub or a node): named in the log.
    pub role: Role,
    /// Who writes the audit log: `hub` or the node's id.
    pub name: &'a str,
    /// The role of the servers this process calls (its client TLS config
    /// accepts only their certificates).
    pub peers: Role,
    /// This process's certificate, key and CA.
    pub tls: &'a TlsFiles,
    /// Where its store and audit log are (created if missing).
    pub data_dir: &'a Path,
    /// Connection, stream and message limits.
    pub limits: &'a Limits,
    /// How the audit log commits, and its time zone.
    pub audit: Options,
    /// The Ed25519 key that signs the audit log's tree heads (the hub's),
    /// and the log's origin (the name its checkpoints carry); none for a
    /// log that signs nothing (a node's).
    pub audit_key: Option<(&'a Path, &'a str)>,
}

/// A server process being assembled: what it opened, and the services
/// added so far.
pub struct Server {
    role: Role,
    name: String,
    tls: Arc<truc_pki::LiveTls>,
    store: Store,
    audit: AuditLog,
    audit_public_key: Option<Vec<u8>>,
    metrics: Arc<Metrics>,
    grpc: GrpcServer,
    message_limit: usize,
    /// The services added, in order: each reported SERVING at start.
    services: Vec<&'static str>,
    ops_routes: axum::Router,
}

impl Server {
    /// Loads the TLS configs, creates the data directory, opens the store
    /// and the audit log (signing with `audit_key` if given) and exposes the
    /// log's health in the metrics.
    pub fn open(common: Common<'_>) -> Result<Server, StartError> {
        truc_pki::install_crypto_provider();
        // Accepted and outgoing connections, reloaded by `Servers` when the
        // certificate, key or CRL files change.
        let tls = truc_pki::LiveTls::load(common.tls.clone(), Some(common.peers))?;
        std::fs::create_dir_all(common.data_dir).map_err(|source| StartError::DataDir {
            path: common.data_dir.to_path_buf(),
            source,
        })?;
        let store = Store::open(common.data_dir)?;
        let signer = match common.audit_key {
            Some((path, origin)) => Some(
                truc_audit::sth::Signer::new(truc_pki::load_audit_key(path)?).with_origin(origin),
            ),
            None => None,
        };
        let audit_public_key = signer.as_ref().map(truc_audit::sth::Signer::public_key);
        let audit = AuditLog::open(store.clone(), common.name, common.audit, signer)?;
        let metrics = Arc::new(Metrics::new());
        truc_pipeline::watch_audit(&metrics, audit.reader().clone());
        let grpc = GrpcServer::new(&common.role.to_string(), metrics.clone(), common.limits)?;
        Ok(Server {
            role: common.role,
            name: common.name.to_string(),
            tls,
            store,
            audit,
            audit_public_key,
            metrics,
            grpc,
            message_limit: common.limits.max_message_bytes(),
            services: Vec::new(),
            ops_routes: axum::Router::new(),
        })
    }

    /// The store in the data directory.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The public key of the audit signing key, if the log signs.
    pub fn audit_public_key(&self) -> Option<&[u8]> {
        self.audit_public_key.as_deref()
    }

    /// The gRPC health reporter, for a service whose health the process
    /// reports itself (a node's witness).
    pub fn health(&self) -> &tonic_health::server::HealthReporter {
        &self.grpc.health
    }

    /// The maintenance mode: the hub's `Admin` service starts it.
    pub fn drain(&self) -> &truc_ops::Drain {
        &self.grpc.drain
    }

    /// The metrics the gRPC layer and the ops port use; add sources here.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The live TLS configuration: for calls to the peers named in
    /// [`Common`], and for another listener of the process that accepts the
    /// same certificates (a node's HTTP listener).
    pub fn tls(&self) -> Arc<truc_pki::LiveTls> {
        self.tls.clone()
    }

    /// Adds a service that carries payloads, with the configured message
    /// limit (`limits.max_payload_bytes` and room for the envelope) on what
    /// it receives and sends; health reports it SERVING once started.
    pub fn service<S>(self, service: S) -> Server
    where
        S: MessageLimits + Grpc,
        S::Future: Send + 'static,
    {
        let limited = service.with_message_limits(self.message_limit, self.message_limit);
        self.add(limited)
    }

    /// Adds a service like [`Server::service`] whose answers may also be
    /// as large as `answers` bytes (the hub's, which sends the registry).
    pub fn service_answering<S>(self, service: S, answers: usize) -> Server
    where
        S: MessageLimits + Grpc,
        S::Future: Send + 'static,
    {
        let limited =
            service.with_message_limits(self.message_limit, answers.max(self.message_limit));
        self.add(limited)
    }

    /// Adds a service that carries no payloads (reports, audit proofs)
    /// with tonic's own message limits (4 MiB in, unbounded out): its
    /// answers are pages bounded by its own rules, which a small payload
    /// limit must not cut. Health reports it SERVING once started.
    pub fn report_service<S>(self, service: S) -> Server
    where
        S: Grpc,
        S::Future: Send + 'static,
    {
        self.add(service)
    }

    fn add<S>(mut self, service: S) -> Server
    where
        S: Grpc,
        S::Future: Send + 'static,
    {
        self.services.push(S::NAME);
        self.grpc = self.grpc.add_service(service);
        self
    }

    /// Routes of the ops HTTP port beside `/metrics` and `/healthz` (the
    /// hub's dashboard).
    pub fn ops_routes(mut self, routes: axum::Router) -> Server {
        self.ops_routes = routes;
        self
    }

    /// Reports every service added SERVING and serves them on `listener`
    /// over mutual TLS, and the ops port on `ops_listener`, until `shutdown`
    /// fires; open calls then get `drain` to finish, and the audit log is
    /// closed after the servers stop.
    pub async fn start(
        self,
        listener: TcpListener,
        ops_listener: TcpListener,
        shutdown: Shutdown,
        drain: Duration,
    ) -> Result<Running, StartError> {
        for name in &self.services {
            self.grpc
                .health
                .set_service_status(*name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let servers = Servers::start(
            self.grpc,
            listener,
            self.tls,
            OpsPort {
                listener: ops_listener,
                metrics: self.metrics,
                routes: self.ops_routes,
            },
            shutdown,
            drain,
        )?;
        tracing::info!(
            name = %self.name,
            addr = %servers.addr(),
            ops_addr = %servers.ops_addr(),
            "{} serving",
            self.role
        );
        let audit = self.audit;
        Ok(Running::new(servers, async move {
            audit.close().await;
        }))
    }
}

/// A gRPC service as tonic serves it: generated servers are.
pub trait Grpc:
    Service<http::Request<Body>, Error = std::convert::Infallible, Response = http::Response<Body>>
    + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Grpc for S where
    S: Service<
            http::Request<Body>,
            Error = std::convert::Infallible,
            Response = http::Response<Body>,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

#[cfg(test)]
mod tests;
