//! The hub: the national exchange axis. It holds the registry, checks every
//! routed call against it (the calling node must host the client agency, the
//! service must exist, a grant must allow the call), holds each client
//! agency to its call quota for each service (the registry's `[quota]`, this
//! replica's share), relays the call to the
//! provider's node over pooled mutual-TLS connections, writes every
//! transaction to its audit log and counts it, and answers reports.
//!
//! It never decodes payloads and keeps no queue: durable queues live at the
//! edges, in the nodes.

#![forbid(unsafe_code)]

mod access;
mod admin;
mod audit_service;
mod config;
mod dashboard;
mod deployment;
mod end_user;
mod i18n;
mod quota;
mod relay;
mod reporting;
mod route;
mod signed_registry;

use std::{sync::Arc, time::Duration};

pub use config::{Dashboard, HubConfig, HubFile, Peer};
use tokio::net::TcpListener;
use truc_audit::Options;
use truc_ops::{Metrics, Shutdown};
use truc_proto::v1::{
    admin_server::AdminServer, audit_server::AuditServer, hub_server::HubServer,
    reporting_server::ReportingServer,
};
use truc_registry::Registry;
pub use truc_server::StartError;
use truc_server::{Common, Server};

/// Why the hub could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The registry file is invalid.
    #[error(transparent)]
    Registry(#[from] truc_registry::RegistryError),
    /// What every server process opens and serves failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The end-user key is missing, or unreadable.
    #[error("end_user_key: {0}")]
    EndUserKey(String),
    /// The span exporter could not be set up.
    #[error(transparent)]
    Tracing(#[from] truc_ops::trace::TracingError),
}

/// Options that are not in the config file, for tests and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// How the audit log commits.
    pub audit: Options,
    /// How long open calls may run after shutdown, and the deadline of a
    /// drain (SIGTERM, `truc hub drain`) that names none; None: the
    /// config's `limits.drain_deadline_secs`.
    pub drain: Option<Duration>,
    /// Where spans go instead of where `[tracing]` says (tests: an
    /// in-memory exporter shared by a whole deployment).
    pub tracing: Option<truc_ops::trace::Tracing>,
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
    let drain = options.drain.unwrap_or(config.limits.drain_deadline());
    let registry = truc_registry::Live::new(Registry::load(&config.registry)?);
    let end_user_key = match &config.end_user_key {
        Some(path) => end_user::EndUserKey::load(path).map_err(HubError::EndUserKey)?,
        None => end_user::EndUserKey::default(),
    };
    if registry.current().hashes_any_end_user() && !end_user_key.is_set() {
        return Err(HubError::EndUserKey(
            "the registry hashes end users (hash_end_user = true): the hub config must name an end_user_key file".into(),
        ));
    }
    let tracing = match options.tracing {
        Some(tracing) => tracing.for_process("hub"),
        None => config.tracing.tracing("truc-hub", "hub")?,
    };
    let origin = config.log_origin();
    let server = Server::open(Common {
        role: truc_pki::Role::Hub,
        name: "hub",
        peers: truc_pki::Role::Node,
        tls: &config.tls,
        data_dir: &config.data_dir,
        limits: &config.limits,
        audit: config.audit_options(options.audit),
        audit_key: Some((&config.audit_key, &origin)),
    })?;
    // A second handle on the audit key, to sign registry snapshots.
    let registry_key =
        truc_pki::load_audit_key(&config.audit_key).map_err(truc_server::StartError::from)?;
    set_known(server.metrics(), &registry.current());
    let audit = server.audit();
    let zone = &config.time_zone;
    let audit_service = audit_service::AuditService::new(
        registry.clone(),
        audit.reader().clone(),
        end_user_key.clone(),
    );
    let reporting = reporting::ReportingService::new(
        registry.clone(),
        server.store().clone(),
        audit.clone(),
        zone.clone(),
    );
    let router = route::HubService::new(
        registry.clone(),
        registry_key,
        audit.clone(),
        server.tls(),
        server.metrics().clone(),
        config.limits.clone(),
        config.documents.clone(),
        end_user_key,
        tracing.clone(),
    );
    let dashboard = dashboard::router(
        registry.clone(),
        audit.clone(),
        zone.clone(),
        config.dashboard.public,
        deployment::Replicas::new(
            config.replica.as_deref(),
            config.log_origin(),
            config.peers.clone(),
            config.tls.clone(),
        ),
    );
    {
        let current = registry.current();
        tracing::info!(
            agencies = current.agencies().count(),
            services = current.services().count(),
            "registry loaded"
        );
    }
    let metrics = server.metrics().clone();
    let admin = admin::AdminService::new(server.drain().clone(), drain);
    let running = server
        .service_answering(
            HubServer::new(router),
            truc_server::MAX_REGISTRY_SNAPSHOT_BYTES,
        )
        .report_service(ReportingServer::new(reporting))
        .report_service(AuditServer::new(audit_service))
        .report_service(AdminServer::new(admin))
        .ops_routes(dashboard)
        .start(listener, ops_listener, shutdown, drain)
        .await?;
    watch_registry(running.reloader(), &config.registry, registry, &metrics);
    // The last calls' spans reach the collector once the drain is over.
    Ok(running.then_after_stop(async move { tracing.stopped().await }))
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
mod quota_tests;
#[cfg(test)]
mod tests;
