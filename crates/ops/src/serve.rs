//! Serving gRPC over mutual TLS, and the ops HTTP port.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::server::Router as GrpcRouter;
use tonic_health::server::HealthReporter;

use crate::{Metrics, ServeError, layer::GrpcLayer};

type Layers = tower::layer::util::Stack<GrpcLayer, tower::layer::util::Identity>;

/// A shutdown signal shared by every task of a process.
#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            tx: Arc::new(tx),
            rx,
        }
    }

    /// Fires the signal.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Completes once the signal has fired.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            // An error means every sender is gone: treat as fired.
            let _ = rx.wait_for(|fired| *fired).await;
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

/// The common gRPC server set-up: limits, keepalive, health and reflection.
pub struct GrpcServer {
    /// Report the serving status of each service here.
    pub health: HealthReporter,
    router: GrpcRouter<Layers>,
}

impl GrpcServer {
    /// A server with `grpc.health.v1` and server reflection (for every
    /// `truc.v1` service and health) already added, recording gRPC metrics
    /// into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Result<GrpcServer, ServeError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(truc_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(Some(1024))
            // Connections are long-lived but not forever: peers reconnect
            // (and re-handshake, picking up reissued certificates) hourly.
            .max_connection_age(Duration::from_secs(3600))
            .layer(GrpcLayer::new(metrics))
            .add_service(health_service)
            .add_service(reflection);
        Ok(GrpcServer { health, router })
    }

    /// Adds a service.
    pub fn add_service<S>(mut self, service: S) -> GrpcServer
    where
        S: tower_service::Service<
                http::Request<tonic::body::Body>,
                Error = std::convert::Infallible,
                Response = http::Response<tonic::body::Body>,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.router = self.router.add_service(service);
        self
    }

    /// Serves on `listener` over TLS until `shutdown` fires, then lets open
    /// calls finish for at most `drain`.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: Shutdown,
        drain: Duration,
    ) -> Result<(), ServeError> {
        let incoming = truc_pki::tls_incoming(listener, tls);
        let serve = self
            .router
            .serve_with_incoming_shutdown(incoming, shutdown.wait());
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => return result.map_err(ServeError::from),
            () = shutdown.wait() => {}
        }
        // Open streams would hold the server forever: bound the drain.
        match tokio::time::timeout(drain, serve).await {
            Ok(result) => result.map_err(ServeError::from),
            Err(_) => {
                tracing::warn!(?drain, "calls still open after the drain deadline; closing");
                Ok(())
            }
        }
    }
}

/// Serves `/metrics` (Prometheus text), `/healthz` and the routes of
/// `extra` on `listener` until `shutdown` fires.
pub async fn serve_ops(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    extra: Router,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(metrics)
        .merge(extra);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.wait())
    .await?;
    Ok(())
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

/// The ops HTTP port of a process: where, its metrics, and any routes of
/// its own (the hub's dashboard).
pub struct OpsPort {
    /// The bound listener.
    pub listener: TcpListener,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
    /// More routes.
    pub routes: Router,
}

/// The servers of one process, started: its gRPC port and its ops port.
pub struct Servers {
    addr: std::net::SocketAddr,
    ops_addr: std::net::SocketAddr,
    shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

impl Servers {
    /// Starts `grpc` on `listener` over TLS and the ops HTTP port on
    /// `ops_listener`, both stopping when `shutdown` fires.
    pub fn start(
        grpc: GrpcServer,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        ops: OpsPort,
        shutdown: Shutdown,
        drain: Duration,
    ) -> Result<Servers, ServeError> {
        let OpsPort {
            listener: ops_listener,
            metrics,
            routes: extra,
        } = ops;
        let addr = listener.local_addr()?;
        let ops_addr = ops_listener.local_addr()?;
        let tasks = vec![
            tokio::spawn(grpc.serve(listener, tls, shutdown.clone(), drain)),
            tokio::spawn(serve_ops(ops_listener, metrics, extra, shutdown.clone())),
        ];
        Ok(Servers {
            addr,
            ops_addr,
            shutdown,
            tasks,
        })
    }

    /// The gRPC address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The ops HTTP address.
    pub fn ops_addr(&self) -> std::net::SocketAddr {
        self.ops_addr
    }

    /// Fires the shutdown signal.
    pub fn shutdown(&self) {
        self.shutdown.trigger();
    }

    /// Waits until both servers stop; the first error, if any.
    pub async fn wait(self) -> Result<(), ServeError> {
        let mut first_err = None;
        for task in self.tasks {
            let result = match task.await {
                Ok(r) => r,
                Err(e) => Err(ServeError::Join(e.to_string())),
            };
            if let Err(e) = result {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// A running hub or node: its servers and its audit log.
pub struct Running {
    servers: Servers,
    audit: truc_audit::AuditLog,
}

impl Running {
    /// Servers and the audit log they write.
    pub fn new(servers: Servers, audit: truc_audit::AuditLog) -> Running {
        Running { servers, audit }
    }

    /// The gRPC address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.servers.addr()
    }

    /// The ops HTTP address.
    pub fn ops_addr(&self) -> std::net::SocketAddr {
        self.servers.ops_addr()
    }

    /// Stops serving, lets open calls finish (up to the drain deadline) and
    /// flushes the audit log.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.servers.shutdown();
        self.wait().await
    }

    /// Waits until the servers stop (after the shutdown signal given at
    /// start fires, or a failure), then flushes and closes the audit log,
    /// so the data directory can be reopened (a restart in the same
    /// process, `truc audit verify`).
    pub async fn wait(self) -> Result<(), ServeError> {
        let served = self.servers.wait().await;
        self.audit.close().await;
        served
    }
}
