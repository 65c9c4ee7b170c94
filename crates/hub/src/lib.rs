//! The hub: the national exchange axis. It holds the registry, checks every
//! routed call against it (the calling node must host the client agency, the
//! service must exist, a grant must allow the call), relays the call to the
//! provider's node over pooled mutual-TLS connections, writes every
//! transaction to its audit log and counts it, and answers reports.
//!
//! It never decodes payloads and keeps no queue: durable queues live at the
//! edges, in the nodes.

#![forbid(unsafe_code)]

mod access;
mod audit_service;
mod config;
mod dashboard;
mod relay;
mod reporting;
mod route;

use std::{sync::Arc, time::Duration};

pub use config::{Dashboard, HubConfig, HubFile};
use tokio::net::TcpListener;
use truc_audit::{AuditLog, Options};
use truc_ops::{GrpcServer, Metrics, ServeError, Servers, Shutdown};
use truc_proto::v1::{
    audit_server::AuditServer, hub_server::HubServer, reporting_server::ReportingServer,
};
use truc_registry::Registry;
use truc_store::Store;

/// Why the hub could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The registry file is invalid.
    #[error(transparent)]
    Registry(#[from] truc_registry::RegistryError),
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

/// A running hub.
pub type RunningHub = truc_ops::Running;

/// Starts the hub on listeners the caller has bound (so tests can use port 0).
pub async fn start(
    config: HubConfig,
    listener: TcpListener,
    ops_listener: TcpListener,
    shutdown: Shutdown,
    options: RunOptions,
) -> Result<RunningHub, HubError> {
    truc_pki::install_crypto_provider();
    let registry = truc_registry::Live::new(Registry::load(&config.registry)?);
    // Accepted and outgoing (to nodes) connections; reloaded by `Servers`.
    let tls = truc_pki::LiveTls::load(config.tls.clone(), Some(truc_pki::Role::Node))?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| truc_store::StoreError::Sync {
        path: config.data_dir.clone(),
        source: e,
    })?;
    let store = Store::open(&config.data_dir)?;
    let signer = truc_audit::sth::Signer::new(truc_pki::load_audit_key(&config.audit_key)?);
    let audit_public_key = signer.public_key();
    let audit_options = truc_audit::Options {
        time_zone: config.time_zone.clone(),
        ..options.audit.clone()
    };
    let audit = AuditLog::open(store.clone(), "hub", audit_options, Some(signer))?;
    let audit_handle = audit.clone();
    let metrics = Arc::new(Metrics::new());
    set_known(&metrics, &registry.current());
    truc_pipeline::watch_audit(&metrics, audit.reader().clone());

    let limit = config.limits.max_message_bytes();
    let audit_service = audit_service::AuditService::new(registry.clone(), audit.reader().clone());
    let reporting = reporting::ReportingService::new(
        registry.clone(),
        store.clone(),
        audit.clone(),
        config.time_zone.clone(),
    );
    let router = route::HubService::new(
        registry.clone(),
        audit_public_key,
        audit,
        tls.clone(),
        metrics.clone(),
        config.limits.clone(),
        config.documents.clone(),
    );
    let server = GrpcServer::new(metrics.clone(), &config.limits)?;
    server
        .health
        .set_serving::<HubServer<route::HubService>>()
        .await;
    server
        .health
        .set_serving::<ReportingServer<reporting::ReportingService>>()
        .await;
    server
        .health
        .set_serving::<AuditServer<audit_service::AuditService>>()
        .await;
    let server = server
        .add_service(
            HubServer::new(router)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(ReportingServer::new(reporting))
        .add_service(AuditServer::new(audit_service));

    let dashboard = dashboard::router(
        registry.clone(),
        audit_handle.clone(),
        config.time_zone.clone(),
        config.dashboard.public,
    );
    let servers = Servers::start(
        server,
        listener,
        tls,
        truc_ops::OpsPort {
            listener: ops_listener,
            metrics: metrics.clone(),
            routes: dashboard,
        },
        shutdown,
        options.drain,
    )?;
    watch_registry(
        servers.reloader(),
        &config.registry,
        registry.clone(),
        &metrics,
    );
    tracing::info!(addr = %servers.addr(), ops_addr = %servers.ops_addr(), agencies = registry.current().agencies().count(), "hub serving");
    Ok(truc_ops::Running::new(servers, async move {
        audit_handle.close().await;
    }))
}

/// The agencies and services metrics may name: those of `registry`.
fn set_known(metrics: &Metrics, registry: &Registry) {
    metrics.set_known(
        registry.agencies().map(|a| a.code.to_string()).collect(),
        registry.services().map(|s| s.id.to_string()).collect(),
    );
}

/// Reloads the registry file into `registry` when it changes (and on
/// SIGHUP); a file that does not validate is refused, the old registry stays.
fn watch_registry(
    reloader: &truc_ops::Reloader,
    path: &std::path::Path,
    registry: truc_registry::Live,
    metrics: &Arc<Metrics>,
) {
    // Weak: the metrics hold the reloader (its counters), which holds this.
    let (file, metrics) = (path.to_path_buf(), Arc::downgrade(metrics));
    reloader.watch("registry", vec![file.clone()], move || {
        let loaded = registry.reload(&file).map_err(|e| truc_ops::ReloadError {
            file: file.clone(),
            message: e.to_string(),
        })?;
        if let Some(metrics) = metrics.upgrade() {
            set_known(&metrics, &loaded);
        }
        tracing::info!(agencies = loaded.agencies().count(), "registry reloaded");
        Ok(())
    });
}

#[cfg(test)]
mod tests;
