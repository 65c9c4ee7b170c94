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
mod config;
mod docs;
mod hub_trust;
mod invoke;
mod receipts;
mod registry_sync;

use std::{sync::Arc, time::Duration};

pub use config::{
    AuditKeyEntry, BackendEntry, ClientEntry, DocumentService, HubSection, NodeConfig, NodeFile,
};
pub use hub_trust::{HubKey, PinnedKey, TrustError};
pub use receipts::{ReceiptFailure, ReceiptProblem, receipt_problems};
use tokio::net::TcpListener;
use truc_audit::{AuditLog, Options};
use truc_ops::{GrpcServer, Metrics, ServeError, Servers, Shutdown};
use truc_proto::v1::{agency_server::AgencyServer, node_server::NodeServer};
use truc_store::Store;

pub use truc_ops::TRANSACTION_ID_HEADER;

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
    /// Document and status delivery retries: the first delay and the cap.
    pub retry: (Duration, Duration),
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            audit: Options::default(),
            drain: Duration::from_secs(10),
            retry: (Duration::from_millis(500), Duration::from_secs(60)),
        }
    }
}

/// A running node.
pub type RunningNode = truc_ops::Running;

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
    let client_tls = truc_pki::client_config_for(&config.tls, truc_pki::Role::Hub)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let store = Store::open(&config.data_dir)?;
    let audit = AuditLog::open(
        store.clone(),
        config.id.as_str(),
        options.audit.clone(),
        None,
    )?;
    let audit_handle = audit.clone();
    let metrics = Arc::new(Metrics::new());
    let config = Arc::new(config);
    let limit = config.limits.max_message_bytes();

    let hub_channel = truc_pki::channel(&config.hub_address, &config.hub_name, client_tls)?;
    let hub_channel_for_check = hub_channel.clone();
    let hub_key = HubKey::new(config.hub_keys.clone());
    let documents = docs::Documents::open(
        store.clone(),
        &config.data_dir,
        hub_channel.clone(),
        config.documents.clone(),
        config.document_service.clone(),
        options.retry,
    )
    .map_err(|source| NodeError::DataDir {
        path: config.data_dir.join("attachments"),
        source,
    })?;
    docs::spawn_workers(documents.clone(), shutdown.clone());
    let pipeline = Arc::new(truc_pipeline::Pipeline::new(audit, metrics.clone()));
    let receipts = receipts::Receipts::start(
        hub_key.clone(),
        &config.id,
        hub_channel.clone(),
        store.clone(),
        &metrics,
        Duration::from_millis(config.limits.call_timeout_ms),
        shutdown.clone(),
    );
    let agency = agency::AgencyService::new(
        config.clone(),
        hub_channel,
        pipeline.clone(),
        receipts,
        documents.clone(),
    );
    let invoke = invoke::NodeService::new(config.clone(), pipeline, documents.clone())
        .map_err(|s| NodeError::Backend(s.message().to_string()))?;
    let server = GrpcServer::new(metrics.clone(), &config.limits)?;
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
    let registry_stats = Arc::new(registry_sync::RegistryStats::default());
    tokio::spawn(registry_sync::keep_current(
        hub_channel_for_check,
        config.clone(),
        hub_key.clone(),
        metrics.clone(),
        registry_stats.clone(),
        shutdown.clone(),
    ));
    metrics.add_source(Box::new(move |out| registry_stats.write(out)));
    {
        truc_pipeline::watch_audit(&metrics, audit_handle.reader().clone());
        let docs = documents.clone();
        metrics.add_source(Box::new(move |out| {
            let (deliveries, statuses) = docs.queue_lengths();
            truc_ops::write_metric(
                out,
                "truc_document_queue",
                "gauge",
                "Documents waiting to be delivered, and statuses waiting to be sent back",
                &[
                    ("{queue=\"deliveries\"}", deliveries as f64),
                    ("{queue=\"statuses\"}", statuses as f64),
                ],
            );
        }));
    }
    let servers = Servers::start(
        server,
        listener,
        server_tls,
        truc_ops::OpsPort {
            listener: ops_listener,
            metrics,
            routes: axum::Router::new(),
        },
        shutdown,
        options.drain,
    )?;
    tracing::info!(node = %config.id, addr = %servers.addr(), ops_addr = %servers.ops_addr(), "node serving");
    Ok(truc_ops::Running::new(servers, async move {
        audit_handle.close().await;
    }))
}

/// A new transaction id: 128 random bits as 32 lowercase hex digits.
pub(crate) fn new_transaction_id() -> Result<String, truc_pipeline::TxError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| truc_pipeline::TxError::Internal("no randomness available".into()))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod handler_tests;
