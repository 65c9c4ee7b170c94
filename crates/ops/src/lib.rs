//! What every truc server process shares, so that the hub and the nodes serve
//! alike: gRPC over mutual TLS 1.3 with `grpc.health.v1`, server reflection
//! a bounded drain on shutdown and a maintenance mode (drain, then stop); the ops HTTP port (`/metrics`,
//! `/healthz`); transaction metrics; deadline propagation; the clock;
//! reloading certificates, CRLs and other files without a restart; W3C
//! trace context and spans over OTLP.
//!
//! It holds no business rules: those are in `truc-hub` and `truc-node`.

#![forbid(unsafe_code)]

pub mod config;
mod deadline;
mod drain;
mod layer;
mod limits;
pub mod memory;
mod metrics;
mod record;
pub mod reload;
mod revocation;
mod serve;
pub mod trace;

pub use deadline::{GRPC_TIMEOUT_HEADER, incoming_timeout, is_transport_failure};
pub use drain::{
    Drain, HttpDrainLayer, HttpDrainService, HttpRefusal, RETRY_HEADER, RETRY_SAFE, is_retry_safe,
};
pub use metrics::{HealthCheck, Metrics, code_name, write_metric};
pub use record::{RETRY_AFTER_MS_HEADER, TRANSACTION_ID_HEADER, tag};
pub use reload::{ReloadError, ReloadReport, Reloader};
pub use revocation::watch_tls;
pub use serve::{GrpcServer, OpsPort, Running, ServerTls, Servers, Shutdown, serve_ops};

pub use truc_proto::now_ms;

/// Errors of starting a server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor sets.
    #[error("cannot build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server stopped with an error.
    #[error("grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A server task panicked.
    #[error("server task failed: {0}")]
    Join(String),
    /// The ops HTTP server failed.
    #[error("ops server failed: {0}")]
    Ops(#[from] std::io::Error),
    /// Another listener of the process (named) failed.
    #[error("{0} listener failed: {1}")]
    Listener(&'static str, std::io::Error),
}
