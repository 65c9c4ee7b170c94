//! Serving gRPC over mutual TLS, and the ops HTTP port.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::server::Router as GrpcRouter;
use tonic_health::server::HealthReporter;

use crate::{
    Drain, Metrics, Reloader, ServeError, config::Limits, drain::DrainLayer, layer::GrpcLayer,
};

type Layers = tower::layer::util::Stack<
    DrainLayer,
    tower::layer::util::Stack<GrpcLayer, tower::layer::util::Identity>,
>;

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
    /// The process's maintenance mode.
    pub drain: Drain,
    router: GrpcRouter<Layers>,
    /// The services added, for reflection.
    services: Vec<&'static str>,
    accept: truc_pki::AcceptLimits,
}

/// The health service's name, always served.
const HEALTH: &str = "grpc.health.v1.Health";
/// Both reflection versions are served: grpcurl before 1.9 (and other
/// older tools) speak only v1alpha.
const REFLECTION: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

impl GrpcServer {
    /// A server with `grpc.health.v1` already added, recording gRPC metrics
    /// into `metrics`, holding each listener and connection within `limits`.
    /// Server reflection (v1 and v1alpha) is added when it starts serving and
    /// lists exactly the services added, health and reflection. `what`
    /// (`hub`, `node`) names the process in a draining refusal.
    pub fn new(
        what: &str,
        metrics: Arc<Metrics>,
        limits: &Limits,
    ) -> Result<GrpcServer, ServeError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let drain = Drain::new(what, health.clone(), metrics.clone());
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_millis(limits.keepalive_interval_ms)))
            .http2_keepalive_timeout(Some(Duration::from_millis(limits.keepalive_timeout_ms)))
            .max_concurrent_streams(Some(limits.max_streams_per_connection))
            // Connections are long-lived but not forever: peers reconnect
            // (and re-handshake, picking up reissued certificates) hourly,
            // and a closing connection's calls get a bounded time to finish.
            .max_connection_age(Duration::from_secs(3600))
            .max_connection_age_grace(Duration::from_millis(limits.request_timeout_ms))
            // Bounds every handler until it answers (a call that never sends
            // its last message, a stuck peer behind it); tonic applies the
            // caller's own grpc-timeout when shorter.
            .layer(GrpcLayer::new(
                metrics,
                Duration::from_millis(limits.request_timeout_ms),
            ))
            // Inside the metrics layer: refusals are counted (UNAVAILABLE).
            .layer(DrainLayer::new(drain.clone()))
            .add_service(health_service);
        Ok(GrpcServer {
            health,
            drain,
            router,
            services: Vec::new(),
            accept: limits.accept(),
        })
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
        self.services.push(S::NAME);
        self.drain.add_service(S::NAME);
        self.router = self.router.add_service(service);
        self
    }

    /// The names reflection lists: the services added, health, reflection.
    pub fn service_names(&self) -> Vec<&'static str> {
        let mut names = self.services.clone();
        names.push(HEALTH);
        names.extend(REFLECTION);
        names
    }

    /// The router with both reflection services added.
    fn with_reflection(self) -> Result<GrpcRouter<Layers>, ServeError> {
        let names = self.service_names();
        let builder = || {
            let mut b = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(truc_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                );
            for name in &names {
                b = b.with_service_name(*name);
            }
            b
        };
        let v1 = builder().build_v1()?;
        let v1alpha = builder().build_v1alpha()?;
        Ok(self.router.add_service(v1).add_service(v1alpha))
    }

    /// Serves on `listener` over TLS until `shutdown` fires, then lets open
    /// calls finish for at most `drain`, or what is left of the drain's
    /// deadline when the process drained (see [`Drain`]). With a
    /// [`ServerTls::Live`] configuration each handshake uses the one in
    /// force when it starts.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: impl Into<ServerTls>,
        shutdown: Shutdown,
        drain: Duration,
    ) -> Result<(), ServeError> {
        let accept = self.accept;
        let maintenance = self.drain.clone();
        let router = self.with_reflection()?;
        type Incoming = std::pin::Pin<
            Box<dyn tokio_stream::Stream<Item = Result<truc_pki::TlsConn, std::io::Error>> + Send>,
        >;
        let incoming: Incoming = match tls.into() {
            ServerTls::Fixed(config) => Box::pin(truc_pki::tls_incoming(listener, config, accept)),
            ServerTls::Live(live) => Box::pin(truc_pki::tls_incoming_live(listener, live, accept)),
        };
        let serve = router.serve_with_incoming_shutdown(incoming, shutdown.wait());
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => return result.map_err(ServeError::from),
            () = shutdown.wait() => {}
        }
        // Open streams would hold the server forever: bound the drain.
        let drain = maintenance.remaining().unwrap_or(drain);
        match tokio::time::timeout(drain, serve).await {
            Ok(result) => result.map_err(ServeError::from),
            Err(_) => {
                tracing::warn!(?drain, "calls still open after the drain deadline; closing");
                Ok(())
            }
        }
    }
}

/// The TLS configuration a gRPC server accepts with.
#[derive(Clone, Debug)]
pub enum ServerTls {
    /// One configuration for the server's life.
    Fixed(Arc<rustls::ServerConfig>),
    /// Reloaded from its files (see [`Servers::start`]).
    Live(Arc<truc_pki::LiveTls>),
}

impl From<Arc<rustls::ServerConfig>> for ServerTls {
    fn from(c: Arc<rustls::ServerConfig>) -> Self {
        ServerTls::Fixed(c)
    }
}

impl From<Arc<truc_pki::LiveTls>> for ServerTls {
    fn from(l: Arc<truc_pki::LiveTls>) -> Self {
        ServerTls::Live(l)
    }
}

/// Serves `/metrics` (Prometheus text), `/healthz` and the routes of
/// `extra` on `listener` until `shutdown` fires. `/healthz` answers 200
/// with `ok`, or with `warn` and one line per warning of the health checks
/// (a CRL past its nextUpdate under `crl_policy = "warn"`): the process
/// serves, and needs an operator; or 503 `draining` while the process
/// drains (a readiness probe stops routing to it).
pub async fn serve_ops(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    extra: Router,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health_handler))
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

async fn health_handler(State(metrics): State<Arc<Metrics>>) -> (StatusCode, String) {
    if metrics.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into());
    }
    let warnings = metrics.health_warnings();
    if warnings.is_empty() {
        (StatusCode::OK, "ok\n".into())
    } else {
        let mut out = String::from("warn\n");
        for w in warnings {
            out.push_str(&w);
            out.push('\n');
        }
        (StatusCode::OK, out)
    }
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
    reloader: Reloader,
    shutdown: Shutdown,
    drain: Drain,
    tasks: Vec<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

impl Servers {
    /// Starts `grpc` on `listener` over TLS and the ops HTTP port on
    /// `ops_listener`, both stopping when `shutdown` fires. A
    /// [`ServerTls::Live`] configuration is reloaded when its files change
    /// (polled every [`POLL_INTERVAL`](crate::reload::POLL_INTERVAL)) and on
    /// SIGHUP, by the process's [`Reloader`], which other files (the hub's
    /// registry) join with [`Servers::reloader`]. Once the server's
    /// [`Drain`] is over, `shutdown` fires.
    pub fn start(
        grpc: GrpcServer,
        listener: TcpListener,
        tls: impl Into<ServerTls>,
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
        let tls = tls.into();
        let reloader = Reloader::new();
        reloader.register(&metrics);
        if let ServerTls::Live(live) = &tls {
            crate::watch_tls(&reloader, &metrics, live.clone());
        }
        let reload_task = reloader.spawn(crate::reload::POLL_INTERVAL, shutdown.clone());
        let maintenance = grpc.drain.clone();
        let drained = {
            let (drain, shutdown) = (maintenance.clone(), shutdown.clone());
            async move {
                tokio::select! {
                    finished = drain.finish() => {
                        if !finished {
                            tracing::warn!(
                                in_flight = drain.in_flight(),
                                "drain deadline passed with calls in flight; closing them"
                            );
                        }
                        shutdown.trigger();
                    }
                    () = shutdown.wait() => {}
                }
                Ok(())
            }
        };
        let tasks = vec![
            tokio::spawn(drained),
            tokio::spawn(grpc.serve(listener, tls, shutdown.clone(), drain)),
            tokio::spawn(serve_ops(ops_listener, metrics, extra, shutdown.clone())),
            tokio::spawn(async move {
                reload_task
                    .await
                    .map_err(|e| ServeError::Join(e.to_string()))
            }),
        ];
        Ok(Servers {
            addr,
            ops_addr,
            reloader,
            shutdown,
            drain: maintenance,
            tasks,
        })
    }

    /// The reloader of this process's files: add files to it, or reload
    /// them now (tests, tools).
    pub fn reloader(&self) -> &Reloader {
        &self.reloader
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

    /// The maintenance mode: [`Drain::start`] drains, then stops, the process.
    pub fn drain(&self) -> &Drain {
        &self.drain
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

/// A running hub or node: its servers and what closes after them (its
/// audit log).
pub struct Running {
    servers: Servers,
    after_stop: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Running {
    /// Servers, and `after_stop`, run once they have stopped (the hub and
    /// nodes flush and close their audit log there).
    pub fn new(servers: Servers, after_stop: impl Future<Output = ()> + Send + 'static) -> Running {
        Running {
            servers,
            after_stop: Box::pin(after_stop),
        }
    }

    /// Also runs `then` once the servers have stopped, after what is run
    /// there already (the audit log's close): the span flush.
    pub fn then_after_stop(mut self, then: impl Future<Output = ()> + Send + 'static) -> Running {
        let first = std::mem::replace(&mut self.after_stop, Box::pin(async {}));
        self.after_stop = Box::pin(async move {
            first.await;
            then.await;
        });
        self
    }

    /// Also waits, on stopping, for `task`: another server of the process
    /// (a node's HTTP listener) that stops on the same shutdown signal.
    pub fn with_task(mut self, task: tokio::task::JoinHandle<Result<(), ServeError>>) -> Running {
        self.servers.tasks.push(task);
        self
    }

    /// The gRPC address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.servers.addr()
    }

    /// The ops HTTP address.
    pub fn ops_addr(&self) -> std::net::SocketAddr {
        self.servers.ops_addr()
    }

    /// The reloader of this process's certificates, keys, CRLs (and the
    /// hub's registry): [`Reloader::reload`] does what SIGHUP does.
    pub fn reloader(&self) -> &Reloader {
        self.servers.reloader()
    }

    /// The maintenance mode: [`Drain::start`] drains the process, which then
    /// stops ([`Running::wait`] returns).
    pub fn drain(&self) -> &Drain {
        self.servers.drain()
    }

    /// Stops serving, lets open calls finish (up to the drain deadline) and
    /// runs what closes after the servers (the audit log's flush).
    pub async fn stop(self) -> Result<(), ServeError> {
        self.servers.shutdown();
        self.wait().await
    }

    /// Waits until the servers stop (after the shutdown signal given at
    /// start fires, or a failure), then runs what closes after them (the
    /// hub and nodes flush and close their audit log), so the data directory
    /// can be reopened (a restart in the same
    /// process, `truc audit verify`).
    pub async fn wait(self) -> Result<(), ServeError> {
        let served = self.servers.wait().await;
        self.after_stop.await;
        served
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio_stream::StreamExt;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use truc_devca::InitOptions;
    use truc_pki::{Identity, Role};

    struct Fixture {
        _dir: tempfile::TempDir,
        layout: truc_pki::Layout,
    }

    fn pki() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let layout = truc_devca::init(
            dir.path(),
            &InitOptions {
                hub: "hub".into(),
                nodes: vec!["n1".into()],
                admin: "admin".into(),
                clients: vec![],
                validity_days: 1,
            },
        )
        .unwrap();
        Fixture { _dir: dir, layout }
    }

    fn files(f: &Fixture, role: Role, name: &str) -> truc_pki::TlsFiles {
        f.layout.files(&Identity::new(role, name).unwrap())
    }

    /// Serves a bare GrpcServer (health and reflection only) with `limits`.
    async fn serve(f: &Fixture, limits: &Limits) -> (std::net::SocketAddr, Shutdown) {
        truc_pki::install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = truc_pki::server_config(&files(f, Role::Hub, "hub")).unwrap();
        let server = GrpcServer::new("hub", Arc::new(Metrics::new()), limits).unwrap();
        let shutdown = Shutdown::new();
        tokio::spawn(server.serve(listener, tls, shutdown.clone(), Duration::from_secs(1)));
        (addr, shutdown)
    }

    fn admin_channel(f: &Fixture, addr: std::net::SocketAddr) -> tonic::transport::Channel {
        let tls = truc_pki::client_config_for(&files(f, Role::Admin, "admin"), Role::Hub).unwrap();
        truc_pki::channel(&addr.to_string(), "hub", tls).unwrap()
    }

    async fn health_check(channel: tonic::transport::Channel) -> Result<i32, tonic::Status> {
        Ok(HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner()
            .status)
    }

    #[tokio::test]
    async fn idle_and_half_open_connections_beyond_the_limits_leave_room_for_a_real_call() {
        let f = pki();
        let limits = Limits {
            max_connections: 4,
            max_handshakes: 2,
            handshake_timeout_ms: 3_600_000,
            ..Limits::default()
        };
        let (addr, shutdown) = serve(&f, &limits).await;
        // Ten times the handshake limit in idle TCP and half-open TLS
        // connections (a ClientHello that never ends).
        let mut idle = Vec::new();
        for i in 0..20 {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            if i % 2 == 0 {
                tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                    .await
                    .unwrap();
            }
            idle.push(tcp);
        }
        let status = tokio::time::timeout(
            Duration::from_secs(30),
            health_check(admin_channel(&f, addr)),
        )
        .await
        .expect("the real call is not kept waiting")
        .expect("health");
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        shutdown.trigger();
    }

    async fn list_services(channel: tonic::transport::Channel, v1alpha: bool) -> Vec<String> {
        // The two reflection versions have the same messages in two modules.
        macro_rules! list {
            ($v:ident) => {{
                use tonic_reflection::pb::$v::{
                    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                    server_reflection_request::MessageRequest,
                    server_reflection_response::MessageResponse,
                };
                let request = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::ListServices(String::new())),
                };
                let mut stream = ServerReflectionClient::new(channel)
                    .server_reflection_info(tokio_stream::iter(vec![request]))
                    .await
                    .unwrap()
                    .into_inner();
                let answer = stream.next().await.unwrap().unwrap();
                let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response
                else {
                    panic!("{answer:?}");
                };
                list.service.into_iter().map(|s| s.name).collect()
            }};
        }
        if v1alpha { list!(v1alpha) } else { list!(v1) }
    }

    #[tokio::test]
    async fn reflection_lists_only_what_is_served_in_v1_and_v1alpha() {
        let f = pki();
        let (addr, shutdown) = serve(&f, &Limits::default()).await;
        for v1alpha in [false, true] {
            let mut names = list_services(admin_channel(&f, addr), v1alpha).await;
            names.sort();
            assert_eq!(
                names,
                [
                    "grpc.health.v1.Health",
                    "grpc.reflection.v1.ServerReflection",
                    "grpc.reflection.v1alpha.ServerReflection",
                ],
                "v1alpha: {v1alpha}"
            );
        }
        shutdown.trigger();
    }
}
