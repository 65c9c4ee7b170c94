//! A node: the gateway of a ministry or a province, hosting its agencies.
//!
//! It serves two APIs on one mutual-TLS port: `truc.v1.Agency` to the systems
//! of the agencies it hosts (each identified by its client certificate and
//! mapped, in the node's config, to the agencies it may act for), and
//! `truc.v1.Node` to the hub, which delivers routed calls for the node's
//! provider backends. It keeps its own audit log, holding the hub's receipt
//! beside each of its records, so both sides of a transaction hold evidence.
//!
//! It does not decide who may call which service: the hub does, from the
//! registry.

#![forbid(unsafe_code)]

mod agency;
pub mod backend;
mod config;
mod invoke;

use std::{net::SocketAddr, sync::Arc, time::Duration};

pub use config::NodeConfig;
use tokio::{net::TcpListener, task::JoinHandle};
use truc_audit::{AuditLog, Options};
use truc_ops::{GrpcServer, Metrics, ServeError, Shutdown};
use truc_proto::v1::{agency_server::AgencyServer, node_server::NodeServer};
use truc_store::Store;

/// Metadata key carrying the transaction id on error responses.
pub const TRANSACTION_ID_HEADER: &str = "x-truc-transaction-id";

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Certificates or keys are unusable.
    #[error(transparent)]
    Pki(#[from] truc_pki::PkiError),
    /// The data directory cannot be used.
    #[error(transparent)]
    Store(#[from] truc_store::StoreError),
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] truc_audit::AuditError),
    /// A server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A server task panicked.
    #[error("server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A backend address is unusable.
    #[error("bad backend: {0}")]
    Backend(String),
    /// The data directory cannot be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Options that are not in the config file, for tests and benchmarks.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// How the audit log commits.
    pub audit: Options,
    /// How long open calls may run after shutdown.
    pub drain: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            audit: Options::default(),
            drain: Duration::from_secs(10),
        }
    }
}

/// A running node.
pub struct RunningNode {
    addr: SocketAddr,
    ops_addr: SocketAddr,
    shutdown: Shutdown,
    tasks: Vec<JoinHandle<Result<(), ServeError>>>,
    store: Store,
}

impl RunningNode {
    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The ops HTTP address.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    /// Stops serving, lets open calls finish (up to the drain deadline) and
    /// flushes the audit log.
    pub async fn stop(self) -> Result<(), NodeError> {
        self.shutdown.trigger();
        self.wait().await
    }

    /// Waits until the servers stop.
    pub async fn wait(self) -> Result<(), NodeError> {
        let mut first_err = None;
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(NodeError::Serve(e));
                }
                Err(e) => {
                    first_err.get_or_insert(NodeError::Join(e));
                }
            }
        }
        self.store.flush()?;
        first_err.map_or(Ok(()), Err)
    }
}

/// Starts the node on listeners the caller has bound.
pub async fn start(
    config: NodeConfig,
    listener: TcpListener,
    ops_listener: TcpListener,
    shutdown: Shutdown,
    options: RunOptions,
) -> Result<RunningNode, NodeError> {
    truc_pki::install_crypto_provider();
    let server_tls = truc_pki::server_config(&config.tls)?;
    let client_tls = truc_pki::client_config(&config.tls)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let store = Store::open(&config.data_dir)?;
    let audit = AuditLog::open(store.clone(), config.id.as_str(), options.audit.clone())?;
    let metrics = Arc::new(Metrics::new());
    let addr = listener.local_addr().map_err(ServeError::Ops)?;
    let ops_addr = ops_listener.local_addr().map_err(ServeError::Ops)?;
    let config = Arc::new(config);
    let limit = config.limits.max_message_bytes();

    let hub_channel = truc_pki::channel(&config.hub_address, &config.hub_name, client_tls)?;
    let agency =
        agency::AgencyService::new(config.clone(), hub_channel, audit.clone(), metrics.clone());
    let invoke = invoke::NodeService::new(config.clone(), audit, metrics.clone())
        .map_err(|s| NodeError::Backend(s.message().to_string()))?;
    let server = GrpcServer::new()?;
    server
        .health
        .set_serving::<AgencyServer<agency::AgencyService>>()
        .await;
    server
        .health
        .set_serving::<NodeServer<invoke::NodeService>>()
        .await;
    let server = server
        .add_service(
            AgencyServer::new(agency)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            NodeServer::new(invoke)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        );
    let tasks = vec![
        tokio::spawn(server.serve(listener, server_tls, shutdown.clone(), options.drain)),
        tokio::spawn(truc_ops::serve_ops(ops_listener, metrics, shutdown.clone())),
    ];
    tracing::info!(node = %config.id, %addr, %ops_addr, "node serving");
    Ok(RunningNode {
        addr,
        ops_addr,
        shutdown,
        tasks,
        store,
    })
}

/// A new transaction id: 128 random bits as 32 lowercase hex digits.
pub(crate) fn new_transaction_id() -> Result<String, tonic::Status> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| tonic::Status::internal("no randomness available"))?;
    Ok(hex::encode(bytes))
}

/// Adds the transaction id to an error for the caller to quote.
pub(crate) fn tag(mut status: tonic::Status, tx_id: &str) -> tonic::Status {
    if let Ok(v) = tx_id.parse() {
        status.metadata_mut().insert(TRANSACTION_ID_HEADER, v);
    }
    status
}
