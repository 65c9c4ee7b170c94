//! The node's config file.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use truc_ops::config::{ConfigError, Limits, TlsSection, load_toml, resolve, socket_addr};
use truc_pki::{Identity, Role, TlsFiles};
use truc_registry::{AgencyCode, NodeId, ServiceId};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    id: String,
    listen: String,
    ops_listen: String,
    data_dir: PathBuf,
    hub: RawHub,
    tls: TlsSection,
    #[serde(default)]
    limits: Limits,
    #[serde(default, rename = "client")]
    clients: Vec<RawClient>,
    #[serde(default, rename = "backend")]
    backends: Vec<RawBackend>,
    #[serde(default)]
    documents: truc_doc::Limits,
    #[serde(default)]
    document_service: DocumentService,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHub {
    address: String,
    #[serde(default = "default_hub_name")]
    name: String,
}

fn default_hub_name() -> String {
    "hub".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: String,
    agencies: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    service: String,
    address: String,
}

/// A validated node config, paths resolved against the file's directory.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id; its certificate must say the same.
    pub id: NodeId,
    /// gRPC listen address (Agency API for agency systems, Node API for the hub).
    pub listen: SocketAddr,
    /// Ops HTTP listen address.
    pub ops_listen: SocketAddr,
    /// Where the node keeps its audit log.
    pub data_dir: PathBuf,
    /// The hub's address (`host:port`).
    pub hub_address: String,
    /// The name in the hub's certificate.
    pub hub_name: String,
    /// The node's certificate, key and CA.
    pub tls: TlsFiles,
    /// Limits.
    pub limits: Limits,
    /// Agency systems allowed to call this node: client certificate name →
    /// the agencies it may act for.
    pub clients: BTreeMap<String, BTreeSet<AgencyCode>>,
    /// Backend address (`host:port`, plaintext gRPC on a trusted network)
    /// per provided service.
    pub backends: BTreeMap<ServiceId, String>,
    /// Limits on documents sent through this node.
    pub documents: truc_doc::Limits,
    /// How this node delivers documents and statuses, and what it holds for them.
    pub document_service: DocumentService,
}

/// `[document_service]`: deadlines of the document workers' calls, how many
/// run at once, and the resources documents may hold at this node.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DocumentService {
    /// Deadline of one `Hub.Relay` call before its attachments are counted,
    /// in milliseconds (default 30 s).
    pub relay_deadline_ms: u64,
    /// The slowest transfer a relay may make: the deadline grows by the
    /// attachments' size over this rate (default 1 MiB/s, so a 1 GiB document
    /// gets 30 s + 1024 s).
    pub relay_min_bytes_per_sec: u64,
    /// Deadline of one `Hub.RelayStatus` call, in milliseconds (default 10 s).
    pub status_deadline_ms: u64,
    /// Deliveries (and, separately, statuses) in flight at once (default 64).
    pub max_in_flight: usize,
    /// Deliveries to one recipient, or statuses to one sender, in flight at
    /// once (default 4): one stuck destination holds no more than this.
    pub max_in_flight_per_destination: usize,
    /// Entries in one recipient's status history at the sender (default 100);
    /// a status beyond it is refused with RESOURCE_EXHAUSTED.
    pub max_history: usize,
    /// Attachment files being received at once on this node (default 256);
    /// a stream needing one more is refused with RESOURCE_EXHAUSTED. One
    /// stream holds one open file at a time (attachments arrive in order).
    pub max_open_attachment_files: usize,
    /// `WatchInbox` and `WatchTracking` subscribers of one agency (default 8).
    pub max_watchers_per_agency: usize,
    /// `WatchInbox` and `WatchTracking` subscribers on this node (default 256).
    pub max_watchers: usize,
}

impl Default for DocumentService {
    fn default() -> Self {
        DocumentService {
            relay_deadline_ms: 30_000,
            relay_min_bytes_per_sec: 1024 * 1024,
            status_deadline_ms: 10_000,
            max_in_flight: 64,
            max_in_flight_per_destination: 4,
            max_history: 100,
            max_open_attachment_files: 256,
            max_watchers_per_agency: 8,
            max_watchers: 256,
        }
    }
}

impl DocumentService {
    /// Every value must be positive.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let fields = [
            ("relay_deadline_ms", self.relay_deadline_ms),
            ("relay_min_bytes_per_sec", self.relay_min_bytes_per_sec),
            ("status_deadline_ms", self.status_deadline_ms),
            ("max_in_flight", self.max_in_flight as u64),
            (
                "max_in_flight_per_destination",
                self.max_in_flight_per_destination as u64,
            ),
            ("max_history", self.max_history as u64),
            (
                "max_open_attachment_files",
                self.max_open_attachment_files as u64,
            ),
            (
                "max_watchers_per_agency",
                self.max_watchers_per_agency as u64,
            ),
            ("max_watchers", self.max_watchers as u64),
        ];
        for (name, value) in fields {
            if value == 0 {
                return Err(ConfigError::new(
                    path,
                    &format!("document_service.{name}"),
                    "must be positive",
                ));
            }
        }
        Ok(())
    }
}

impl NodeConfig {
    /// Loads and validates `path`, including that the certificate is this node's.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let raw: Raw = load_toml(path)?;
        let id = NodeId::parse(&raw.id).map_err(|e| ConfigError::new(path, "id", e.to_string()))?;
        raw.limits.validate(path)?;
        raw.document_service.validate(path)?;
        let tls = raw.tls.resolve(path)?;
        check_certificate(path, &tls, &id)?;
        let mut clients = BTreeMap::new();
        for (i, c) in raw.clients.iter().enumerate() {
            let field = format!("client[{i}]");
            Identity::new(Role::Client, &c.name)
                .map_err(|e| ConfigError::new(path, &format!("{field}.name"), e.to_string()))?;
            let mut agencies = BTreeSet::new();
            for (j, a) in c.agencies.iter().enumerate() {
                let code = AgencyCode::parse(a).map_err(|e| {
                    ConfigError::new(path, &format!("{field}.agencies[{j}]"), e.to_string())
                })?;
                agencies.insert(code);
            }
            if clients.insert(c.name.clone(), agencies).is_some() {
                return Err(ConfigError::new(
                    path,
                    &format!("{field}.name"),
                    format!("client {:?} is listed twice", c.name),
                ));
            }
        }
        let mut backends = BTreeMap::new();
        for (i, b) in raw.backends.iter().enumerate() {
            let field = format!("backend[{i}]");
            let service = ServiceId::parse(&b.service)
                .map_err(|e| ConfigError::new(path, &format!("{field}.service"), e.to_string()))?;
            if !valid_host_port(&b.address) {
                return Err(ConfigError::new(
                    path,
                    &format!("{field}.address"),
                    format!("{:?} is not host:port", b.address),
                ));
            }
            if backends.insert(service, b.address.clone()).is_some() {
                return Err(ConfigError::new(
                    path,
                    &format!("{field}.service"),
                    format!("service {} has two backends", b.service),
                ));
            }
        }
        if !valid_host_port(&raw.hub.address) {
            return Err(ConfigError::new(
                path,
                "hub.address",
                format!("{:?} is not host:port", raw.hub.address),
            ));
        }
        Ok(NodeConfig {
            id,
            listen: socket_addr(path, "listen", &raw.listen)?,
            ops_listen: socket_addr(path, "ops_listen", &raw.ops_listen)?,
            data_dir: resolve(path, "data_dir", &raw.data_dir, false)?,
            hub_address: raw.hub.address,
            hub_name: raw.hub.name,
            tls,
            limits: raw.limits,
            clients,
            backends,
            documents: raw
                .documents
                .checked()
                .map_err(|e| ConfigError::new(path, "documents", e.to_string()))?,
            document_service: raw.document_service,
        })
    }
}

fn valid_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0))
}

/// The node's own certificate must carry the node's identity: a mismatch
/// would only show up as refused calls later.
fn check_certificate(path: &Path, tls: &TlsFiles, id: &NodeId) -> Result<(), ConfigError> {
    let pem = std::fs::read(&tls.cert)
        .map_err(|e| ConfigError::new(path, "tls.cert", format!("cannot read: {e}")))?;
    let identity = Identity::from_cert_pem(&pem)
        .map_err(|e| ConfigError::new(path, "tls.cert", e.to_string()))?;
    if identity.role != Role::Node || identity.name != id.as_str() {
        return Err(ConfigError::new(
            path,
            "tls.cert",
            format!("the certificate is for {identity}, not node/{id}"),
        ));
    }
    Ok(())
}
