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
mod invoke;
mod vxp;

use std::{sync::Arc, time::Duration};

pub use config::{
    BackendEntry, ClientEntry, DocumentService, HubSection, NodeConfig, NodeFile, VxpConfig,
    VxpSection, VxpSystem, VxpSystemEntry,
};
use tokio::net::TcpListener;
use truc_audit::Options;
use truc_ops::{Metrics, Shutdown};
use truc_proto::v1::{agency_server::AgencyServer, node_server::NodeServer};
use truc_server::{Common, Server};

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
    /// The VXP listener could not start.
    #[error("VXP listener: {0}")]
    Vxp(String),
}

/// Binds the VXP listener of the config.
async fn vxp_listener(vxp: &VxpConfig) -> Result<TcpListener, NodeError> {
    TcpListener::bind(vxp.listen)
        .await
        .map_err(|e| NodeError::Vxp(format!("cannot listen on {}: {e}", vxp.listen)))
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
    let hub_channel = truc_pki::channel(&config.hub_address, &config.hub_name, server.client_tls())
        .map_err(StartError::from)?;
    let hub_key = HubKey::default();
    let documents = docs::Documents::open(
        server.store().clone(),
        &config.data_dir,
        hub_channel.clone(),
        config.documents.clone(),
        config.document_service.clone(),
        options.retry,
    )
    .map_err(|source| StartError::DataDir {
        path: config.data_dir.join("attachments"),
        source,
    })?;
    docs::spawn_workers(documents.clone(), shutdown.clone());
    let pipeline = Arc::new(truc_pipeline::Pipeline::new(
        server.audit().clone(),
        server.metrics().clone(),
    ));
    let agency = agency::AgencyService::new(
        config.clone(),
        hub_channel.clone(),
        pipeline.clone(),
        hub_key.clone(),
        documents.clone(),
    );
    let invoke = invoke::NodeService::new(config.clone(), pipeline, documents.clone())
        .map_err(|s| NodeError::Backend(s.message().to_string()))?;
    tokio::spawn(registry_check(
        hub_channel.clone(),
        config.clone(),
        hub_key,
        server.metrics().clone(),
        shutdown.clone(),
    ));
    if let Some(vxp) = &config.vxp {
        let node = vxp::Node {
            docs: Arc::downgrade(&documents),
            hub: hub_channel.clone(),
            config: config.clone(),
        };
        vxp::spawn(vxp, vxp_listener(vxp).await?, node, shutdown.clone())
            .map_err(NodeError::Vxp)?;
    }
    watch_document_queues(server.metrics(), documents);
    Ok(server
        .service(AgencyServer::new(agency))
        .service(NodeServer::new(invoke))
        .start(listener, ops_listener, shutdown, options.drain)
        .await?)
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

/// A new transaction id: 128 random bits as 32 lowercase hex digits.
pub(crate) fn new_transaction_id() -> Result<String, truc_pipeline::TxError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| truc_pipeline::TxError::Internal("no randomness available".into()))?;
    Ok(hex::encode(bytes))
}

/// The hub's audit public key, learnt from the registry it serves, and the
/// tree heads already verified with it: the hub signs one head per group
/// commit, so concurrent calls share heads, and an Ed25519 verification
/// costs more than the rest of a node's work on a call.
#[derive(Clone, Default)]
pub(crate) struct HubKey(
    Arc<std::sync::RwLock<Option<Vec<u8>>>>,
    Arc<std::sync::Mutex<VerifiedHeads>>,
);

/// The last heads verified, whole (size, time, root, key id, signature).
#[derive(Default)]
pub(crate) struct VerifiedHeads(std::collections::VecDeque<truc_proto::v1::SignedTreeHead>);

impl VerifiedHeads {
    const KEEP: usize = 64;

    fn contains(&self, head: &truc_proto::v1::SignedTreeHead) -> bool {
        self.0.iter().rev().any(|h| h == head)
    }

    fn insert(&mut self, head: truc_proto::v1::SignedTreeHead) {
        if self.0.len() == Self::KEEP {
            self.0.pop_front();
        }
        self.0.push_back(head);
    }
}

impl HubKey {
    /// Whether the key is known.
    pub(crate) fn known(&self) -> bool {
        self.0.read().is_ok_and(|k| k.is_some())
    }

    /// Learns the key from a registry snapshot; false if it carries none.
    pub(crate) fn learn(&self, snapshot: &truc_proto::v1::RegistrySnapshot) -> bool {
        if snapshot.audit_public_key.len() == 32 {
            self.set(snapshot.audit_public_key.to_vec());
            true
        } else {
            false
        }
    }

    fn set(&self, key: Vec<u8>) {
        if let Ok(mut k) = self.0.write() {
            *k = Some(key);
        }
        if let Ok(mut v) = self.1.lock() {
            *v = VerifiedHeads::default();
        }
    }

    /// Whether `receipt` carries a tree head signed by the hub that covers
    /// its record. False while the key is not known yet.
    pub(crate) fn verifies(&self, receipt: &truc_audit::Receipt) -> bool {
        let Ok(key) = self.0.read() else { return false };
        let (Some(key), Some(head)) = (key.as_ref(), receipt.tree_head.as_ref()) else {
            return false;
        };
        if head.tree_size <= receipt.record_index {
            return false;
        }
        let cached = self.1.lock().is_ok_and(|v| v.contains(head));
        if cached {
            return true;
        }
        let ok = truc_audit::sth::verify_tree_head(head, key).is_ok();
        if ok {
            if let Ok(mut v) = self.1.lock() {
                v.insert(head.clone());
            }
        }
        ok
    }
}

/// Fetches the registry from the hub once it is reachable and warns about
/// config entries the hub will refuse: a client mapped to an agency this node
/// does not host, a backend for a service the registry does not know.
async fn registry_check(
    channel: tonic::transport::Channel,
    config: Arc<NodeConfig>,
    hub_key: HubKey,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    use backon::Retryable;
    let hub = truc_proto::v1::hub_client::HubClient::new(channel);
    let timeout = Duration::from_millis(config.limits.call_timeout_ms);
    let fetch = || {
        let mut hub = hub.clone();
        async move {
            let mut request = tonic::Request::new(truc_proto::v1::GetRegistryRequest {});
            request.set_timeout(timeout);
            hub.get_registry(request).await
        }
    };
    let attempts = fetch
        .retry(registry_backoff())
        .sleep(tokio::time::sleep)
        .notify(|e, _| tracing::debug!(error = %e, "registry not fetched yet"));
    let snapshot = tokio::select! {
        result = attempts => match result {
            Ok(r) => r.into_inner(),
            // Only if the backoff ever stops retrying.
            Err(e) => {
                tracing::warn!(error = %e, "registry not fetched from the hub");
                return;
            }
        },
        () = shutdown.wait() => return,
    };
    for warning in registry_mismatches(&config, &snapshot) {
        tracing::warn!("{warning}");
    }
    metrics.set_known(
        snapshot.agencies.iter().map(|a| a.code.clone()).collect(),
        snapshot.services.iter().map(|s| s.id.clone()).collect(),
    );
    if !hub_key.learn(&snapshot) {
        tracing::warn!("the registry carries no hub audit key: receipts cannot be verified");
    }
    tracing::info!(
        agencies = snapshot.agencies.len(),
        services = snapshot.services.len(),
        "registry fetched from the hub"
    );
}

/// Retries until the hub answers: 200 ms, doubling, at most 30 s apart.
fn registry_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_factor(2.0)
        .with_max_delay(Duration::from_secs(30))
        .without_max_times()
}

/// What in `config` disagrees with the hub's registry.
fn registry_mismatches(
    config: &NodeConfig,
    snapshot: &truc_proto::v1::RegistrySnapshot,
) -> Vec<String> {
    let hosted: Vec<&str> = snapshot
        .nodes
        .iter()
        .filter(|n| n.id == config.id.as_str())
        .flat_map(|n| n.agencies.iter().map(String::as_str))
        .collect();
    let mut out = Vec::new();
    for (client, agencies) in &config.clients {
        for a in agencies {
            if !hosted.contains(&a.as_str()) {
                out.push(format!(
                    "client {client} may act for {a}, but the registry does not host {a} on node {}: the hub will refuse its calls",
                    config.id
                ));
            }
        }
    }
    for service in config.backends.keys() {
        if !snapshot.services.iter().any(|s| s.id == service.as_str()) {
            out.push(format!(
                "backend for {service}, which the registry does not list"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_fetch_backs_off_to_30_s_and_never_gives_up() {
        use backon::BackoffBuilder;
        let delays: Vec<u64> = registry_backoff()
            .build()
            .take(12)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .collect();
        assert_eq!(
            delays,
            [
                200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000, 30_000, 30_000
            ]
        );
        assert!(registry_backoff().build().nth(10_000).is_some());
    }
    use truc_proto::v1::{NodeEntry, RegistrySnapshot, ServiceEntry};

    #[test]
    fn mismatches_with_the_registry_are_reported() {
        let config = handler_tests::config(
            "d".as_ref(),
            &[("dms", &["000.00.00.H37", "000.00.00.G22"])],
            &[
                ("000.00.00.H37/known/v1", "127.0.0.1:4"),
                ("000.00.00.H37/unknown/v1", "127.0.0.1:5"),
            ],
        );
        let snapshot = RegistrySnapshot {
            nodes: vec![NodeEntry {
                id: "lgsp-langson".into(),
                address: "127.0.0.1:1".into(),
                agencies: vec!["000.00.00.H37".into()],
            }],
            services: vec![ServiceEntry {
                id: "000.00.00.H37/known/v1".into(),
                provider: "000.00.00.H37".into(),
                description: String::new(),
            }],
            ..RegistrySnapshot::default()
        };
        let found = registry_mismatches(&config, &snapshot);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("000.00.00.G22"), "{found:?}");
        assert!(found[1].contains("unknown"), "{found:?}");
    }
}

#[cfg(test)]
mod handler_tests;
