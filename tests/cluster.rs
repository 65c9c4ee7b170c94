//! The fixture the integration tests share: a whole deployment (hub, two
//! nodes, backends) in this process on 127.0.0.1 ports chosen by the OS, in a
//! temporary directory with freshly generated certificates.

#![forbid(unsafe_code)]

pub mod docs;
pub mod hostile;

use std::time::Duration;

use bytes::Bytes;
pub use hostile::{Hostile, SilentPeer};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
pub use truc_demo::*;
use truc_pki::{Identity, Role};
use truc_proto::v1::{
    AuditRecord, CallRequest, DataRequest, DataResponse, GetCountsRequest, GetCountsResponse,
    ListRecordsRequest, audit_client::AuditClient, backend_server::Backend,
    reporting_client::ReportingClient,
};

/// A started deployment and the directory it lives in.
pub struct Cluster {
    /// Keeps the directory alive as long as the cluster.
    pub dir: TempDir,
    /// The deployment.
    pub deployment: Deployment,
}

/// Starts a deployment with the demo's options changed by `configure`.
pub async fn start_configured(configure: impl FnOnce(&mut DemoOptions)) -> Cluster {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let mut options = DemoOptions::new(dir.path());
    configure(&mut options);
    let deployment = Deployment::start(options)
        .await
        .unwrap_or_else(|e| panic!("deployment: {e}"));
    Cluster { dir, deployment }
}

/// Starts a deployment with `backend` and payloads limited to `max_payload`.
pub async fn start_with(backend: BackendKind, max_payload: usize) -> Cluster {
    start_configured(|options| {
        options.backend = backend;
        options.max_payload_bytes = max_payload;
    })
    .await
}

/// Starts the demo deployment with nodes that retry a delivery or a status
/// after 20 ms, then at most every 200 ms: what waits for a peer goes soon
/// after the peer is back.
pub async fn start_fast_retries() -> Cluster {
    start_configured(|options| {
        options.retry = (Duration::from_millis(20), Duration::from_millis(200));
    })
    .await
}

/// Starts the demo deployment with `hubs` hub replicas.
pub async fn start_replicas(hubs: usize) -> Cluster {
    start_configured(|options| options.hubs = hubs).await
}

/// Starts the demo deployment.
pub async fn start() -> Cluster {
    start_with(BackendKind::CitizenLookup, 4 * 1024 * 1024).await
}

/// A data call request.
pub fn call(agency: &str, service: &str, payload: &str) -> CallRequest {
    CallRequest {
        client_agency: agency.into(),
        service: service.into(),
        content_type: "application/json".into(),
        payload: Bytes::from(payload.to_string()),
        ..CallRequest::default()
    }
}

impl Cluster {
    /// TLS files of an identity of this cluster's PKI.
    pub fn tls(&self, role: Role, name: &str) -> truc_pki::TlsFiles {
        let id = Identity::new(role, name).unwrap_or_else(|e| panic!("identity: {e}"));
        self.deployment.files.pki.files(&id)
    }

    /// The client library on node `node`, as agency system `system`, with
    /// the library's default message size limits.
    pub fn client(&self, node: &str, system: &str) -> truc_client::Client {
        let agency = self
            .deployment
            .agency_client(node, system)
            .unwrap_or_else(|e| panic!("agency client on {node}: {e}"));
        truc_client::Client::from_grpc(agency)
            .max_message_bytes(truc_client::DEFAULT_MAX_MESSAGE_BYTES)
    }

    /// A channel to the hub with the certificate of `role`/`name`.
    pub fn hub_channel(&self, role: Role, name: &str) -> tonic::transport::Channel {
        let tls = truc_pki::client_config(&self.tls(role, name))
            .unwrap_or_else(|e| panic!("client config: {e}"));
        truc_pki::channel(&self.deployment.hub().addr().to_string(), "hub", tls)
            .unwrap_or_else(|e| panic!("channel: {e}"))
    }

    /// All the hub's transaction counts that `role`/`name` may see.
    pub async fn counts(&self, role: Role, name: &str) -> Result<GetCountsResponse, tonic::Status> {
        ReportingClient::new(self.hub_channel(role, name))
            .get_counts(GetCountsRequest::default())
            .await
            .map(tonic::Response::into_inner)
    }
}

/// A backend that keeps what `look` reads of each request it gets, and
/// answers `{}`.
pub struct Recorder<T> {
    seen: std::sync::Mutex<Vec<T>>,
    look: fn(&tonic::Request<DataRequest>) -> T,
}

impl<T: Clone> Recorder<T> {
    /// A backend keeping `look(request)` of each request.
    pub fn new(look: fn(&tonic::Request<DataRequest>) -> T) -> Recorder<T> {
        Recorder {
            seen: std::sync::Mutex::new(Vec::new()),
            look,
        }
    }

    /// What it kept, in arrival order.
    pub fn seen(&self) -> Vec<T> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[tonic::async_trait]
impl<T: Clone + Send + 'static> Backend for Recorder<T> {
    async fn invoke(
        &self,
        request: tonic::Request<DataRequest>,
    ) -> Result<tonic::Response<DataResponse>, tonic::Status> {
        let kept = (self.look)(&request);
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(kept);
        }
        Ok(tonic::Response::new(DataResponse {
            content_type: "application/json".into(),
            payload: Bytes::from_static(b"{}"),
            receipt: None,
        }))
    }
}

impl Cluster {
    /// Restarts node `id` with its config file edited by `edit`.
    pub async fn restart_node_with(
        &mut self,
        id: &str,
        edit: impl FnOnce(&mut truc_node::NodeFile),
    ) {
        assert!(
            self.deployment.stop_node(id).await.expect("stop"),
            "node {id} was running"
        );
        self.deployment
            .edit_node_config(id, edit)
            .expect("edit config");
        self.deployment.restart_node(id).await.expect("restart");
    }

    /// The hub's record of transaction `id`, as the admin reads it.
    pub async fn hub_record(&self, id: &str) -> AuditRecord {
        let mut records = AuditClient::new(self.hub_channel(Role::Admin, "admin"))
            .list_records(ListRecordsRequest {
                transaction_id: id.to_string(),
                ..ListRecordsRequest::default()
            })
            .await
            .unwrap_or_else(|e| panic!("records of {id}: {e}"))
            .into_inner()
            .records;
        assert_eq!(records.len(), 1, "records of {id}");
        records
            .remove(0)
            .record
            .unwrap_or_else(|| panic!("record of {id}"))
    }
}

/// `r` without what differs between the records of two like calls: its
/// place in the log, its id, its times and its receipt.
pub fn comparable(mut r: AuditRecord) -> AuditRecord {
    r.index = 0;
    r.prev_hash = Bytes::new();
    r.transaction_id.clear();
    r.started_unix_ms = 0;
    r.finished_unix_ms = 0;
    r.latency_us = 0;
    r.receipt = None;
    r
}

/// GET `path` over plain HTTP/1.1; returns the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("GET {path} timed out"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
