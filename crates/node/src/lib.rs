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
mod http;
mod hub_trust;
mod hubs;
mod invoke;
mod receipts;
mod registry_sync;
mod rest_backend;
mod rest_door;
mod vxp;
mod witness;

use std::{sync::Arc, time::Duration};

pub use config::{
    AuditKeyEntry, Backend, BackendEntry, ClientEntry, DocumentService, HttpConfig, HttpSection,
    HubSection, NodeConfig, NodeFile, VxpConfig, VxpSection, VxpSystem, VxpSystemEntry,
    WitnessSection,
};
pub use hub_trust::{HubKey, PinnedKey, TrustError};
pub use receipts::{ReceiptFailure, ReceiptProblem, receipt_problems};
use tokio::net::TcpListener;
use truc_audit::Options;
use truc_ops::{Metrics, Shutdown};
use truc_proto::v1::{agency_server::AgencyServer, node_server::NodeServer};
use truc_server::{Common, Server};

pub use rest_backend::{CLIENT_HEADER, SERVICE_HEADER};
pub use rest_door::{RECEIPT_HEADER, http_status};
pub use truc_ops::TRANSACTION_ID_HEADER;
pub use truc_server::StartError;

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// What every server process opens and serves failed (certificates,
    /// data directory, store, audit log, servers).
    #[error(transparent)]
    Start(#[from] StartError),
    /// A backend address is unusable.
    #[error("bad backend: {0}")]
    Backend(String),
    /// The HTTP listener could not be set up.
    #[error("http listener: {0}")]
    Http(String),
    /// The VXP listener could not start.
    #[error("VXP listener: {0}")]
    Vxp(String),
    /// The span exporter could not be set up.
    #[error(transparent)]
    Tracing(#[from] truc_ops::trace::TracingError),
}

/// Binds the VXP listener of the config. The address may still be held
/// for a moment by the listener of this node's previous run in the same
/// process, which stops on its own shutdown signal: wait a little for it.
async fn vxp_listener(vxp: &VxpConfig) -> Result<TcpListener, NodeError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(vxp.listen).await {
            Ok(listener) => return Ok(listener),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(NodeError::Vxp(format!(
                    "cannot listen on {}: {e}",
                    vxp.listen
                )));
            }
        }
    }
}

/// Options that are not in the config file, for tests and benchmarks.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// How the audit log commits.
    pub audit: Options,
    /// How long open calls may run after shutdown, and the deadline of a
    /// drain (SIGTERM) that names none; None: the config's
    /// `limits.drain_deadline_secs`.
    pub drain: Option<Duration>,
    /// Document and status delivery retries: the first delay and the cap.
    pub retry: (Duration, Duration),
    /// A listener already bound for `[http]` (tests bind port 0); without
    /// one, the node binds `http.listen` itself.
    pub http_listener: Option<PreBound>,
    /// Where spans go instead of where `[tracing]` says (tests: an
    /// in-memory exporter shared by a whole deployment).
    pub tracing: Option<truc_ops::trace::Tracing>,
}

/// A listener bound by the caller, handed to [`start`] through
/// [`RunOptions`] (which is cloned): the first start takes it.
#[derive(Clone, Debug)]
pub struct PreBound(Arc<std::sync::Mutex<Option<TcpListener>>>);

impl PreBound {
    /// Wraps `listener`.
    pub fn new(listener: TcpListener) -> PreBound {
        PreBound(Arc::new(std::sync::Mutex::new(Some(listener))))
    }

    fn take(&self) -> Option<TcpListener> {
        self.0.lock().ok().and_then(|mut l| l.take())
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            audit: Options::default(),
            drain: None,
            retry: (Duration::from_millis(500), Duration::from_secs(60)),
            http_listener: None,
            tracing: None,
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
    let drain = options.drain.unwrap_or(config.limits.drain_deadline());
    let http_listener = bind_http(&config, &options).await?;
    let server = Server::open(Common {
        role: truc_pki::Role::Node,
        name: config.id.as_str(),
        peers: truc_pki::Role::Hub,
        tls: &config.tls,
        data_dir: &config.data_dir,
        limits: &config.limits,
        audit: options.audit,
        audit_key: None,
    })?;
    let config = Arc::new(config);
    let hubs = hubs::Hubs::new(&config.hub_addresses, &config.hub_name, server.tls())
        .map_err(StartError::from)?;
    hubs.keep_resolving(hubs::system_resolver(), shutdown.clone())
        .await;
    hubs.spawn_probes(
        Duration::from_millis(config.limits.call_timeout_ms),
        shutdown.clone(),
    );
    let hub_key = HubKey::new(config.hub_keys.clone());
    let documents = docs::Documents::open(
        server.store().clone(),
        &config.data_dir,
        hubs.clone(),
        config.documents.clone(),
        config.document_service.clone(),
        options.retry,
    )
    .map_err(|source| StartError::DataDir {
        path: config.data_dir.join("attachments"),
        source,
    })?;
    docs::spawn_workers(documents.clone(), shutdown.clone());
    let server_tls = server.tls();
    let tracing = match &options.tracing {
        Some(tracing) => tracing.clone().for_process(config.id.as_str()),
        None => config.tracing.tracing("truc-node", config.id.as_str())?,
    };
    let pipeline = Arc::new(
        truc_pipeline::Pipeline::new(server.audit().clone(), server.metrics().clone())
            .with_tracing(tracing.clone()),
    );
    let receipts = receipts::Receipts::start(
        hub_key.clone(),
        &config.id,
        hubs.clone(),
        server.store().clone(),
        server.metrics(),
        Duration::from_millis(config.limits.call_timeout_ms),
        shutdown.clone(),
    );
    let agency = agency::AgencyService::new(
        config.clone(),
        hubs.clone(),
        pipeline.clone(),
        receipts,
        documents.clone(),
    );
    let invoke = invoke::NodeService::new(config.clone(), pipeline, documents.clone())
        .map_err(|s| NodeError::Backend(s.message().to_string()))?;
    witness::start(
        &config,
        server.store().clone(),
        hubs.clone(),
        &hub_key,
        server.health(),
        server.metrics(),
        &shutdown,
    )
    .await?;
    let registry_stats = Arc::new(registry_sync::RegistryStats::default());
    tokio::spawn(registry_sync::keep_current(
        hubs.clone(),
        config.clone(),
        hub_key.clone(),
        server.metrics().clone(),
        registry_stats.clone(),
        shutdown.clone(),
    ));
    let stats = registry_stats.clone();
    server
        .metrics()
        .add_source(Box::new(move |out| stats.write(out)));
    let vxp_task = if let Some(vxp) = &config.vxp {
        let node = vxp::Node {
            docs: Arc::downgrade(&documents),
            config: config.clone(),
            registry: registry_stats.clone(),
        };
        let accept = config.limits.accept();
        Some(
            vxp::spawn(
                vxp,
                vxp_listener(vxp).await?,
                node,
                shutdown.clone(),
                accept.max_connections,
                (server.drain(), drain),
            )
            .map_err(NodeError::Vxp)?,
        )
    } else {
        None
    };
    watch_document_queues(server.metrics(), documents);
    let http_routes =
        http_routes(&config, &agency).layer(server.drain().http_layer(rest_door::draining));
    let running = server
        .service(AgencyServer::new(agency))
        .service(NodeServer::new(invoke))
        .start(listener, ops_listener, shutdown.clone(), drain)
        .await?;
    let running = match vxp_task {
        Some(task) => running.with_task(task),
        None => running,
    };
    // The last calls' spans reach the collector once the drain is over.
    let running = running.then_after_stop(async move { tracing.stopped().await });
    Ok(match http_listener {
        Some(listener) => {
            let limits = config.limits.clone();
            running.with_task(tokio::spawn(async move {
                http::serve(listener, server_tls, &limits, http_routes, shutdown, drain).await
            }))
        }
        None => running,
    })
}

/// The routes of the node's HTTP listener: the REST door for data calls
/// (merge more here).
fn http_routes(config: &NodeConfig, agency: &agency::AgencyService) -> axum::Router {
    let timeout = config
        .http
        .as_ref()
        .map_or(Duration::from_secs(30), |h| h.request_timeout);
    rest_door::routes(agency.clone(), config.limits.max_payload_bytes, timeout)
}

/// The HTTP listener if `[http]` is on: the one the caller bound, or
/// `http.listen`.
async fn bind_http(
    config: &NodeConfig,
    options: &RunOptions,
) -> Result<Option<TcpListener>, NodeError> {
    let Some(http) = &config.http else {
        return Ok(None);
    };
    if let Some(listener) = options.http_listener.as_ref().and_then(PreBound::take) {
        return Ok(Some(listener));
    }
    TcpListener::bind(http.listen)
        .await
        .map(Some)
        .map_err(|e| NodeError::Http(format!("cannot listen on {}: {e}", http.listen)))
}

/// Exposes on `metrics` how many deliveries and statuses wait to be sent.
fn watch_document_queues(metrics: &Metrics, documents: Arc<docs::Documents>) {
    metrics.add_source(Box::new(move |out| {
        let (deliveries, statuses) = documents.queue_lengths();
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

/// A new transaction id: the time in milliseconds, then 80 random bits
/// ([`truc_audit::ordered_transaction_id`]), so that the hub indexes ids in
/// the order they come.
pub(crate) fn new_transaction_id() -> Result<String, truc_pipeline::TxError> {
    use ring::rand::SecureRandom;
    let mut random = [0u8; 10];
    ring::rand::SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| truc_pipeline::TxError::Internal("no randomness available".into()))?;
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(truc_audit::ordered_transaction_id(unix_ms, &random))
}

#[cfg(test)]
mod handler_tests;
