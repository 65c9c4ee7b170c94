//! The node's config file.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use truc_ops::config::{
    ConfigError, Limits, TlsSection, TracingSection, check_version, config_version, load_toml,
    resolve, socket_addr,
};
use truc_pki::{Identity, Role, TlsFiles};
use truc_registry::{AgencyCode, NodeId, ServiceId};

use crate::hub_trust::PinnedKey;

/// A node's config file as written (`node-ID.toml`), before validation: the
/// demo and `deploy/node-*.toml` are this struct serialized, so a new key is
/// a new field here (with its doc comment) and in [`NodeConfig`].
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// The config format's version (1; absent means 1).
    #[serde(default = "config_version")]
    pub version: u32,
    /// This node's id; its certificate must say the same (`truc://node/ID`).
    pub id: String,
    /// gRPC listen address (`ip:port`), mutual TLS 1.3: the Agency API and the hub's calls.
    pub listen: String,
    /// Ops HTTP listen address: /metrics, /healthz (keep it internal).
    pub ops_listen: String,
    /// Where the node keeps its audit log and documents (sled).
    pub data_dir: PathBuf,
    /// The hub.
    pub hub: HubSection,
    /// The node's certificate, key and CA.
    pub tls: TlsSection,
    /// Limits on calls and connections.
    #[serde(default)]
    pub limits: Limits,
    /// Where spans are exported (`[tracing]`; off when absent).
    #[serde(default, skip_serializing_if = "TracingSection::is_default")]
    pub tracing: TracingSection,
    /// Limits on the documents agency systems send through this node.
    #[serde(default)]
    pub documents: truc_doc::Limits,
    /// How this node delivers documents and statuses.
    #[serde(default)]
    pub document_service: DocumentService,
    /// Agency systems allowed to use this node (`[[client]]`).
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientEntry>,
    /// Backends of the services this node's agencies provide (`[[backend]]`).
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendEntry>,
    /// How this node witnesses the hub's audit log.
    #[serde(default)]
    pub witness: WitnessSection,
    /// The HTTP listener (`[http]`: the REST door for data calls); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSection>,
    /// The VXP API for document management systems built on the VXP SDK
    /// (`[vxp]`; absent: no VXP listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxp: Option<VxpSection>,
}

/// `[vxp]`: the HTTP/1.1 listener speaking the VXP SDK's protocol.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VxpSection {
    /// Listen address (`ip:port`).
    pub listen: String,
    /// Serve HTTPS (TLS 1.2 and 1.3) with `cert` and `key` (default true);
    /// `false` serves plain HTTP, allowed only on a loopback address (behind
    /// the operator's reverse proxy).
    #[serde(default = "default_true")]
    pub tls: bool,
    /// The server certificate chain (PEM) the DMS's JVM must trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The server certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// The DMS installations allowed to use it (`[[vxp.system]]`).
    #[serde(default, rename = "system")]
    pub systems: Vec<VxpSystemEntry>,
}

fn default_true() -> bool {
    true
}

/// `[[vxp.system]]`: a DMS installation (the SDK's `systemid`), its secret
/// and the agencies it may act for.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VxpSystemEntry {
    /// The system id the SDK is configured with (`systemid`).
    pub id: String,
    /// A file holding the shared secret (the SDK's `secret`), as text; one
    /// trailing newline is ignored.
    pub secret_file: PathBuf,
    /// Agency codes it may act for.
    pub agencies: Vec<String>,
}

/// A validated `[vxp]` section.
#[derive(Clone, Debug)]
pub struct VxpConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Certificate and key files, or `None` for plain HTTP on loopback.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// System id → its secret and agencies.
    pub systems: BTreeMap<String, VxpSystem>,
}

/// One DMS installation allowed on the VXP listener.
#[derive(Clone)]
pub struct VxpSystem {
    /// The shared secret's bytes (the HMAC key).
    pub secret: Vec<u8>,
    /// The agencies it may act for.
    pub agencies: BTreeSet<AgencyCode>,
}

impl std::fmt::Debug for VxpSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VxpSystem")
            .field("secret", &"<redacted>")
            .field("agencies", &self.agencies)
            .finish()
    }
}

impl VxpSection {
    fn validate(&self, path: &Path) -> Result<VxpConfig, ConfigError> {
        let listen = socket_addr(path, "vxp.listen", &self.listen)?;
        let tls = if self.tls {
            let cert = self.cert.as_ref().ok_or_else(|| {
                ConfigError::new(path, "vxp.cert", "required when vxp.tls = true")
            })?;
            let key = self
                .key
                .as_ref()
                .ok_or_else(|| ConfigError::new(path, "vxp.key", "required when vxp.tls = true"))?;
            Some((
                resolve(path, "vxp.cert", cert, true)?,
                resolve(path, "vxp.key", key, true)?,
            ))
        } else {
            if !listen.ip().is_loopback() {
                return Err(ConfigError::new(
                    path,
                    "vxp.tls",
                    format!(
                        "plain HTTP (tls = false) is allowed only on a loopback address, not {listen}"
                    ),
                ));
            }
            None
        };
        let mut systems = BTreeMap::new();
        for (i, s) in self.systems.iter().enumerate() {
            let field = format!("vxp.system[{i}]");
            if s.id.is_empty()
                || s.id.len() > 128
                || !s
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                return Err(ConfigError::new(
                    path,
                    &format!("{field}.id"),
                    format!(
                        "{:?} is not a system id (1 to 128 printable ASCII characters)",
                        s.id
                    ),
                ));
            }
            let secret_path = resolve(path, &format!("{field}.secret_file"), &s.secret_file, true)?;
            let mut secret = std::fs::read(&secret_path).map_err(|e| {
                ConfigError::new(
                    path,
                    &format!("{field}.secret_file"),
                    format!("cannot read: {e}"),
                )
            })?;
            if secret.ends_with(b"\n") {
                secret.pop();
                if secret.ends_with(b"\r") {
                    secret.pop();
                }
            }
            if secret.is_empty() {
                return Err(ConfigError::new(
                    path,
                    &format!("{field}.secret_file"),
                    format!("{} is empty", secret_path.display()),
                ));
            }
            let mut agencies = BTreeSet::new();
            for (j, a) in s.agencies.iter().enumerate() {
                let code = AgencyCode::parse(a).map_err(|e| {
                    ConfigError::new(path, &format!("{field}.agencies[{j}]"), e.to_string())
                })?;
                agencies.insert(code);
            }
            if agencies.is_empty() {
                return Err(ConfigError::new(
                    path,
                    &format!("{field}.agencies"),
                    "must name at least one agency",
                ));
            }
            if systems
                .insert(s.id.clone(), VxpSystem { secret, agencies })
                .is_some()
            {
                return Err(ConfigError::new(
                    path,
                    &format!("{field}.id"),
                    format!("system {:?} is listed twice", s.id),
                ));
            }
        }
        Ok(VxpConfig {
            listen,
            tls,
            systems,
        })
    }
}

/// `[http]`: the node's HTTP listener, mutual TLS with the same client
/// certificates and `[[client]]` mapping as gRPC, serving `POST
/// /v1/call/{service}` (the REST door for data calls).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address (`ip:port`).
    pub listen: String,
    /// Longest a REST call may take, in milliseconds (default 30 s; the
    /// node's `limits.call_timeout_ms` caps it too).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_request_timeout_ms() -> u64 {
    30_000
}

/// The validated `[http]` section.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Longest a REST call may take.
    pub request_timeout: std::time::Duration,
}

/// `[witness]`: the node checks that the hub's log only ever grows (C2SP
/// tlog-witness style) and cosigns the heads it verified.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct WitnessSection {
    /// The node's Ed25519 witness key (PKCS#8 PEM, `truc pki init` writes
    /// `node-ID-witness.key`); its public key goes in the registry's node
    /// entry as `witness_key`. Without it the node still checks the hub's
    /// log but cosigns nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// How often the node asks the hub for its latest head and a
    /// consistency proof, in milliseconds (default 10 s); it also checks
    /// every new head it sees in a receipt.
    pub interval_ms: u64,
}

impl Default for WitnessSection {
    fn default() -> Self {
        WitnessSection {
            key: None,
            interval_ms: 10_000,
        }
    }
}

/// `[hub]`: where the hub is, and the keys its audit log is signed with.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// The hub's address (`host:port`): one hub, or a DNS name that
    /// resolves to every replica (resolved at start and every 30 s, one
    /// channel per address found).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// The addresses of several hub replicas (`host:port` each), besides
    /// or instead of `address`: the node spreads calls over the healthy
    /// ones and fails over between them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The DNS name in the hub's certificate (default `hub`).
    #[serde(default = "default_hub_name")]
    pub name: String,
    /// Seconds between fetches of the hub's registry (default 10): a fetch
    /// names the version the node has, and the hub answers "unchanged"
    /// cheaply when it is current.
    #[serde(default = "default_registry_refresh_secs")]
    pub registry_refresh_secs: u64,
    /// The hub's audit public keys this node accepts (`[[hub.audit_keys]]`),
    /// at least one: tree heads, receipts and registry snapshots are checked
    /// against these, never against a key the hub sends.
    #[serde(default)]
    pub audit_keys: Vec<AuditKeyEntry>,
}

fn default_hub_name() -> String {
    "hub".into()
}

fn default_registry_refresh_secs() -> u64 {
    10
}

/// `[[hub.audit_keys]]`: one accepted hub audit public key and when it is
/// valid. A key rotation lists the old key with a `not_after` and the new
/// one with a `not_before`; one entry without dates is the common case.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditKeyEntry {
    /// The public key file: 64 hex digits (`audit-signing.pub`, written by
    /// `truc pki init`).
    pub file: PathBuf,
    /// Heads signed before this instant (RFC 3339, e.g.
    /// `2027-01-01T00:00:00Z`) are not accepted with this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// Heads signed after this instant (RFC 3339) are not accepted with
    /// this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// The log this key signs (the replica's `log_origin`): with several
    /// hub replicas, each signs its own log with its own key, and a head
    /// signed with this key under another origin is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// `[[client]]`: an agency system, by client certificate name
/// (`truc://client/NAME`), and the agencies it may act for.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The name in the client certificate.
    pub name: String,
    /// Agency codes it may act for.
    pub agencies: Vec<String>,
}

/// `[[backend]]`: where a provided service's backend listens: plaintext
/// gRPC `truc.v1.Backend` on a trusted network next to the node (`host:port`),
/// or a REST backend (`http://` or `https://` URL) the node POSTs each
/// payload to.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendEntry {
    /// The service id.
    pub service: String,
    /// The backend's `host:port` (gRPC) or URL (`http://...`, `https://...`: REST).
    pub address: String,
    /// For an `https://` backend: the CA file (PEM) its certificate must
    /// chain to (required there, refused elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// Where a provided service's backend is, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Plaintext gRPC `truc.v1.Backend` at `host:port`.
    Grpc(String),
    /// A REST backend: `POST url` with the payload.
    Http {
        /// The `http://` or `https://` URL.
        url: String,
        /// For `https://`: the CA file its certificate must chain to.
        ca: Option<PathBuf>,
    },
}

impl Backend {
    /// A backend address without a CA file: a URL is REST, anything else gRPC.
    pub fn from_address(address: &str) -> Backend {
        if is_url(address) {
            Backend::Http {
                url: address.to_string(),
                ca: None,
            }
        } else {
            Backend::Grpc(address.to_string())
        }
    }
}

fn is_url(address: &str) -> bool {
    address.starts_with("http://") || address.starts_with("https://")
}

/// Checks one `[[backend]]` entry of `path` (`field` is `backend[i]`).
fn backend(path: &Path, field: &str, entry: &BackendEntry) -> Result<Backend, ConfigError> {
    let err = |key: &str, reason: String| ConfigError::new(path, &format!("{field}.{key}"), reason);
    if !is_url(&entry.address) {
        if !valid_host_port(&entry.address) {
            return Err(err(
                "address",
                format!(
                    "{:?} is neither host:port (gRPC) nor an http:// or https:// URL",
                    entry.address
                ),
            ));
        }
        if entry.ca.is_some() {
            return Err(err("ca", "only an https:// backend has a CA file".into()));
        }
        return Ok(Backend::Grpc(entry.address.clone()));
    }
    let uri: http::Uri = entry
        .address
        .parse()
        .map_err(|e| err("address", format!("{:?} is not a URL: {e}", entry.address)))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(err("address", format!("{:?} names no host", entry.address)));
    }
    let https = uri.scheme_str() == Some("https");
    let ca = match (&entry.ca, https) {
        (Some(ca), true) => Some(resolve(path, &format!("{field}.ca"), ca, true)?),
        (None, true) => {
            return Err(err(
                "ca",
                "an https:// backend needs the CA file its certificate chains to".into(),
            ));
        }
        (Some(_), false) => {
            return Err(err("ca", "only an https:// backend has a CA file".into()));
        }
        (None, false) => None,
    };
    Ok(Backend::Http {
        url: entry.address.clone(),
        ca,
    })
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
    /// The addresses of the hub's replicas (`host:port` each), at least one.
    pub hub_addresses: Vec<String>,
    /// The name in the hub's certificate.
    pub hub_name: String,
    /// The hub audit keys this node accepts, with their validity.
    pub hub_keys: Vec<PinnedKey>,
    /// Time between registry fetches.
    pub registry_refresh: std::time::Duration,
    /// The node's certificate, key and CA.
    pub tls: TlsFiles,
    /// Limits.
    pub limits: Limits,
    /// Where spans are exported.
    pub tracing: TracingSection,
    /// Agency systems allowed to call this node: client certificate name →
    /// the agencies it may act for.
    pub clients: BTreeMap<String, BTreeSet<AgencyCode>>,
    /// The backend of each provided service: gRPC (`host:port`, plaintext
    /// on a trusted network) or REST (a URL).
    pub backends: BTreeMap<ServiceId, Backend>,
    /// Limits on documents sent through this node.
    pub documents: truc_doc::Limits,
    /// How this node delivers documents and statuses, and what it holds for them.
    pub document_service: DocumentService,
    /// The witness key file, if any (resolved).
    pub witness_key: Option<PathBuf>,
    /// How often the witness contacts the hub.
    pub witness_interval: std::time::Duration,
    /// The HTTP listener, if on.
    pub http: Option<HttpConfig>,
    /// The VXP listener, if configured.
    pub vxp: Option<VxpConfig>,
}

/// `[document_service]`: deadlines of the document workers' calls, how many
/// run at once, and the resources documents may hold at this node.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
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
    /// once, at most (default 16). A destination starts at 4 (or this, if
    /// lower), gains one for each attempt it answers and loses half for each
    /// it does not, down to 1: one that answers promptly gets up to this
    /// many, one that hangs or keeps failing holds one slot.
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
            max_in_flight_per_destination: 16,
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
        let raw: NodeFile = load_toml(path)?;
        check_version(path, raw.version)?;
        let id = NodeId::parse(&raw.id).map_err(|e| ConfigError::new(path, "id", e.to_string()))?;
        let hub_keys = pinned_keys(path, &raw.hub)?;
        let hub_addresses = hub_addresses(path, &raw.hub)?;
        if raw.hub.registry_refresh_secs == 0 {
            return Err(ConfigError::new(
                path,
                "hub.registry_refresh_secs",
                "must be positive",
            ));
        }
        raw.limits.validate(path)?;
        raw.tracing.validate(path)?;
        raw.document_service.validate(path)?;
        let http = match &raw.http {
            None => None,
            Some(h) => {
                if h.request_timeout_ms == 0 {
                    return Err(ConfigError::new(
                        path,
                        "http.request_timeout_ms",
                        "must be positive",
                    ));
                }
                Some(HttpConfig {
                    listen: socket_addr(path, "http.listen", &h.listen)?,
                    request_timeout: std::time::Duration::from_millis(h.request_timeout_ms),
                })
            }
        };
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
            let target = backend(path, &field, b)?;
            if backends.insert(service, target).is_some() {
                return Err(ConfigError::new(
                    path,
                    &format!("{field}.service"),
                    format!("service {} has two backends", b.service),
                ));
            }
        }
        let vxp = raw.vxp.as_ref().map(|v| v.validate(path)).transpose()?;
        Ok(NodeConfig {
            http,
            vxp,
            id,
            listen: socket_addr(path, "listen", &raw.listen)?,
            ops_listen: socket_addr(path, "ops_listen", &raw.ops_listen)?,
            data_dir: resolve(path, "data_dir", &raw.data_dir, false)?,
            hub_addresses,
            hub_name: raw.hub.name,
            hub_keys,
            registry_refresh: std::time::Duration::from_secs(raw.hub.registry_refresh_secs),
            tls,
            limits: raw.limits,
            tracing: raw.tracing,
            clients,
            backends,
            documents: raw
                .documents
                .checked()
                .map_err(|e| ConfigError::new(path, "documents", e.to_string()))?,
            document_service: raw.document_service,
            witness_key: match &raw.witness.key {
                Some(k) => Some(resolve(path, "witness.key", k, true)?),
                None => None,
            },
            witness_interval: match raw.witness.interval_ms {
                0 => {
                    return Err(ConfigError::new(
                        path,
                        "witness.interval_ms",
                        "must be positive",
                    ));
                }
                ms => std::time::Duration::from_millis(ms),
            },
        })
    }
}

/// The pinned hub keys: every file must hold a key, every date must parse,
/// and there must be at least one, since a node that took the hub's key from
/// the hub would believe any log the hub shows it.
fn pinned_keys(path: &Path, hub: &HubSection) -> Result<Vec<PinnedKey>, ConfigError> {
    if hub.audit_keys.is_empty() {
        return Err(ConfigError::new(
            path,
            "hub.audit_keys",
            "no pinned hub audit key: add [[hub.audit_keys]] with file = the hub's \
             audit-signing.pub (written by `truc pki init`, or given by the hub's operator); \
             a node does not take the hub's key from the hub",
        ));
    }
    let mut keys = Vec::with_capacity(hub.audit_keys.len());
    for (i, entry) in hub.audit_keys.iter().enumerate() {
        let field = |f: &str| format!("hub.audit_keys[{i}].{f}");
        let file = resolve(path, &field("file"), &entry.file, true)?;
        let key = truc_audit::sth::read_public_key(&file)
            .map_err(|e| ConfigError::new(path, &field("file"), e))?;
        let instant = |name: &str, value: &Option<String>| -> Result<Option<u64>, ConfigError> {
            value
                .as_deref()
                .map(|v| parse_instant(v).map_err(|e| ConfigError::new(path, &field(name), e)))
                .transpose()
        };
        let mut pinned = PinnedKey::new(
            key,
            instant("not_before", &entry.not_before)?,
            instant("not_after", &entry.not_after)?,
        );
        if let Some(origin) = &entry.origin {
            if !truc_audit::sth::valid_origin(origin) {
                return Err(ConfigError::new(
                    path,
                    &field("origin"),
                    format!("{origin:?} is not a log origin (a key name: no spaces, no '+')"),
                ));
            }
            pinned = pinned.for_origin(origin);
        }
        if let (Some(from), Some(to)) = (pinned.not_before_ms, pinned.not_after_ms) {
            if from > to {
                return Err(ConfigError::new(
                    path,
                    &field("not_after"),
                    "is before not_before",
                ));
            }
        }
        if keys.iter().any(|k: &PinnedKey| k.key_id == pinned.key_id) {
            return Err(ConfigError::new(
                path,
                &field("file"),
                "the same key is listed twice",
            ));
        }
        keys.push(pinned);
    }
    Ok(keys)
}

/// `hub.address` and `hub.addresses`, in that order, each `host:port`,
/// none twice, at least one.
fn hub_addresses(path: &Path, hub: &HubSection) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    let given = (!hub.address.is_empty())
        .then(|| ("hub.address".to_string(), &hub.address))
        .into_iter()
        .chain(
            hub.addresses
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("hub.addresses[{i}]"), a)),
        );
    for (field, address) in given {
        if !valid_host_port(address) {
            return Err(ConfigError::new(
                path,
                &field,
                format!("{address:?} is not host:port"),
            ));
        }
        if out.contains(address) {
            return Err(ConfigError::new(
                path,
                &field,
                format!("{address} is listed twice"),
            ));
        }
        out.push(address.clone());
    }
    if out.is_empty() {
        return Err(ConfigError::new(
            path,
            "hub.address",
            "no hub address: set hub.address or hub.addresses",
        ));
    }
    Ok(out)
}

/// An RFC 3339 instant as milliseconds since the Unix epoch.
fn parse_instant(text: &str) -> Result<u64, String> {
    let t: jiff::Timestamp = text.parse().map_err(|e| {
        format!("{text:?} is not an RFC 3339 instant (e.g. 2027-01-01T00:00:00Z): {e}")
    })?;
    u64::try_from(t.as_millisecond()).map_err(|_| format!("{text:?} is before 1970"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_version_is_refused_naming_the_file_and_field() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "version = 7\nid = \"vpcp\"\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\n\
             data_dir = \"data\"\n[hub]\naddress = \"127.0.0.1:7000\"\n\
             [tls]\nca = \"ca.crt\"\ncert = \"n.crt\"\nkey = \"n.key\"\n",
        )
        .expect("write");
        let err = NodeConfig::load(&path).expect_err("version 7");
        assert_eq!(err.field, "version", "{err}");
        assert_eq!(err.file, path);
        assert!(err.to_string().contains("version 7"), "{err}");
    }

    #[test]
    fn the_file_type_round_trips_through_toml() {
        let text = "id = \"vpcp\"\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\n\
                    data_dir = \"data\"\n[hub]\naddress = \"127.0.0.1:7000\"\n\
                    [tls]\nca = \"ca.crt\"\ncert = \"n.crt\"\nkey = \"n.key\"\n\
                    [[client]]\nname = \"dms\"\nagencies = [\"000.00.00.G22\"]\n";
        let file: NodeFile = toml::from_str(text).expect("parse");
        assert_eq!(file.version, 1, "absent means 1");
        let again: NodeFile =
            toml::from_str(&toml::to_string(&file).expect("serialize")).expect("reparse");
        assert_eq!(again.clients[0].agencies, ["000.00.00.G22"]);
        assert_eq!(again.document_service, DocumentService::default());
        assert_eq!(again.hub.name, "hub");
    }

    const NO_KEYS: &str = "id = \"vpcp\"\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\n\
                           data_dir = \"data\"\n[hub]\naddress = \"127.0.0.1:7000\"\n";

    fn load_with(hub_keys: &str, files: &[(&str, &str)]) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("dir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            format!(
                "{NO_KEYS}{hub_keys}\n[tls]\nca = \"ca.crt\"\ncert = \"n.crt\"\nkey = \"n.key\"\n"
            ),
        )
        .expect("write");
        NodeConfig::load(&path)
    }

    #[test]
    fn a_node_without_a_pinned_hub_key_is_refused() {
        let err = load_with("", &[]).expect_err("no key");
        assert_eq!(err.field, "hub.audit_keys", "{err}");
        assert!(err.to_string().contains("no pinned hub audit key"), "{err}");
    }

    #[test]
    fn replica_addresses_and_key_origins_are_checked_field_by_field() {
        let key = "11".repeat(32);
        let files = [("hub.pub", key.as_str())];
        let field = |text: &str| load_with(text, &files).expect_err("refused").field;
        let pinned = "[[hub.audit_keys]]\nfile = \"hub.pub\"\n";
        assert_eq!(
            field(&format!("addresses = [\"127.0.0.1:7000\"]\n{pinned}")),
            "hub.addresses[0]",
            "the same address as hub.address"
        );
        assert_eq!(
            field(&format!(
                "addresses = [\"127.0.0.1:7001\", \"no-port\"]\n{pinned}"
            )),
            "hub.addresses[1]"
        );
        assert_eq!(
            field(&format!("{pinned}origin = \"two words\"\n")),
            "hub.audit_keys[0].origin"
        );
        // Well-formed: on to the certificate files.
        assert_eq!(
            field(&format!(
                "addresses = [\"127.0.0.1:7001\"]\n{pinned}origin = \"hub-2/truc-audit\"\n"
            )),
            "tls.ca"
        );
    }

    #[test]
    fn pinned_keys_are_checked_field_by_field() {
        let key = "11".repeat(32);
        let other = "22".repeat(32);
        let files = [
            ("hub.pub", key.as_str()),
            ("new.pub", other.as_str()),
            ("bad.pub", "zz"),
        ];
        let field = |keys: &str| load_with(keys, &files).expect_err("refused").field;
        assert_eq!(
            field("[[hub.audit_keys]]\nfile = \"missing.pub\""),
            "hub.audit_keys[0].file"
        );
        assert_eq!(
            field("[[hub.audit_keys]]\nfile = \"bad.pub\""),
            "hub.audit_keys[0].file"
        );
        assert_eq!(
            field("[[hub.audit_keys]]\nfile = \"hub.pub\"\nnot_before = \"yesterday\""),
            "hub.audit_keys[0].not_before"
        );
        assert_eq!(
            field(
                "[[hub.audit_keys]]\nfile = \"hub.pub\"\n\
                 [[hub.audit_keys]]\nfile = \"new.pub\"\n\
                 not_before = \"2027-02-01T00:00:00Z\"\nnot_after = \"2027-01-01T00:00:00Z\""
            ),
            "hub.audit_keys[1].not_after"
        );
        assert_eq!(
            field("[[hub.audit_keys]]\nfile = \"hub.pub\"\n[[hub.audit_keys]]\nfile = \"hub.pub\""),
            "hub.audit_keys[1].file"
        );
        // Well-formed keys pass on to the next check (the certificate files).
        assert_eq!(
            field(
                "[[hub.audit_keys]]\nfile = \"hub.pub\"\nnot_after = \"2027-01-01T00:00:00Z\"\n\
                 [[hub.audit_keys]]\nfile = \"new.pub\"\nnot_before = \"2026-12-01T00:00:00+07:00\""
            ),
            "tls.ca"
        );
    }

    #[test]
    fn instants_are_rfc_3339() {
        assert_eq!(parse_instant("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_instant("1970-01-01T07:00:01+07:00"), Ok(1000));
        assert!(parse_instant("1969-12-31T23:59:59Z").is_err());
        assert!(parse_instant("2027-01-01").is_err());
    }

    #[test]
    fn backends_are_grpc_addresses_or_http_urls_and_https_needs_a_ca() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("node.toml");
        std::fs::write(dir.path().join("ca.crt"), "x").expect("ca");
        let entry = |address: &str, ca: Option<&str>| BackendEntry {
            service: "000.00.00.H37/household-registry/v1".into(),
            address: address.into(),
            ca: ca.map(PathBuf::from),
        };
        let ok = |address, ca| backend(&path, "backend[0]", &entry(address, ca));
        assert_eq!(
            ok("127.0.0.1:4000", None).expect("grpc"),
            Backend::Grpc("127.0.0.1:4000".into())
        );
        assert_eq!(
            ok("http://127.0.0.1:4000/v1/x", None).expect("http"),
            Backend::Http {
                url: "http://127.0.0.1:4000/v1/x".into(),
                ca: None
            }
        );
        assert!(matches!(
            ok("https://backend.example:443/x", Some("ca.crt")).expect("https"),
            Backend::Http { ca: Some(_), .. }
        ));
        for (address, ca, field) in [
            ("https://backend.example/x", None, "backend[0].ca"),
            (
                "https://backend.example/x",
                Some("missing.crt"),
                "backend[0].ca",
            ),
            ("http://backend.example/x", Some("ca.crt"), "backend[0].ca"),
            ("127.0.0.1:4000", Some("ca.crt"), "backend[0].ca"),
            ("backend", None, "backend[0].address"),
            ("http:///x", None, "backend[0].address"),
        ] {
            let err = ok(address, ca).expect_err(address);
            assert_eq!(err.field, field, "{address}: {err}");
        }
    }

    #[test]
    fn the_http_section_is_off_by_default_and_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("node.toml");
        std::fs::write(dir.path().join("hub.pub"), "11".repeat(32)).expect("key");
        let base = "id = \"vpcp\"\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\n\
                    data_dir = \"data\"\n[hub]\naddress = \"127.0.0.1:7000\"\n\
                    [[hub.audit_keys]]\nfile = \"hub.pub\"\n\
                    [tls]\nca = \"ca.crt\"\ncert = \"n.crt\"\nkey = \"n.key\"\n";
        let file: NodeFile = toml::from_str(base).expect("parse");
        assert!(file.http.is_none());
        assert!(!toml::to_string(&file).expect("ser").contains("[http]"));
        let file: NodeFile =
            toml::from_str(&format!("{base}[http]\nlisten = \"127.0.0.1:7102\"\n")).expect("parse");
        assert_eq!(
            file.http,
            Some(HttpSection {
                listen: "127.0.0.1:7102".into(),
                request_timeout_ms: 30_000
            })
        );
        // Checked before the certificates are read.
        for (section, field) in [
            ("[http]\nlisten = \"nowhere\"\n", "http.listen"),
            (
                "[http]\nlisten = \"127.0.0.1:1\"\nrequest_timeout_ms = 0\n",
                "http.request_timeout_ms",
            ),
        ] {
            std::fs::write(&path, format!("{base}{section}")).expect("write");
            let err = NodeConfig::load(&path).expect_err(section);
            assert_eq!(err.field, field, "{err}");
        }
    }

    fn vxp_section(dir: &Path, body: &str) -> Result<VxpConfig, ConfigError> {
        let path = dir.join("node.toml");
        let section: VxpSection = toml::from_str(body).expect("parse");
        section.validate(&path)
    }

    #[test]
    fn a_vxp_system_reads_its_secret_from_a_file_and_never_shows_it() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("dms.secret"), "s3cret/+abc\n").expect("write");
        let vxp = vxp_section(
            dir.path(),
            "listen = \"127.0.0.1:8080\"\ntls = false\n[[system]]\nid = \"test.truc.01\"\n\
             secret_file = \"dms.secret\"\nagencies = [\"000.00.00.G22\"]\n",
        )
        .expect("valid");
        let system = &vxp.systems["test.truc.01"];
        assert_eq!(
            system.secret, b"s3cret/+abc",
            "one trailing newline dropped"
        );
        assert!(vxp.tls.is_none());
        assert!(!format!("{vxp:?}").contains("s3cret"), "{vxp:?}");
    }

    #[test]
    fn vxp_refusals_name_the_field() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("dms.secret"), "x").expect("write");
        let system = "[[system]]\nid = \"a\"\nsecret_file = \"dms.secret\"\nagencies = [\"000.00.00.G22\"]\n";
        let cases = [
            (
                format!("listen = \"0.0.0.0:8080\"\ntls = false\n{system}"),
                "vxp.tls",
            ),
            (format!("listen = \"127.0.0.1:8080\"\n{system}"), "vxp.cert"),
            (
                "listen = \"127.0.0.1:1\"\ntls = false\n[[system]]\nid = \"a\"\n\
                 secret_file = \"missing\"\nagencies = [\"000.00.00.G22\"]\n"
                    .to_string(),
                "vxp.system[0].secret_file",
            ),
            (
                "listen = \"127.0.0.1:1\"\ntls = false\n[[system]]\nid = \"a\"\n\
                 secret_file = \"dms.secret\"\nagencies = [\"nope\"]\n"
                    .to_string(),
                "vxp.system[0].agencies[0]",
            ),
            (
                format!("listen = \"127.0.0.1:1\"\ntls = false\n{system}{system}"),
                "vxp.system[1].id",
            ),
        ];
        for (body, field) in cases {
            let err = vxp_section(dir.path(), &body).expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
    }
}
