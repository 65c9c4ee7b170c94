//! The node's config file.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use truc_ops::config::{
    ConfigError, Limits, TlsSection, check_version, config_version, load_toml, resolve, socket_addr,
};
use truc_pki::{Identity, Role, TlsFiles};
use truc_registry::{AgencyCode, NodeId, ServiceId};

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

/// `[hub]`: where the hub is.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// The hub's address (`host:port`).
    pub address: String,
    /// The DNS name in the hub's certificate (default `hub`).
    #[serde(default = "default_hub_name")]
    pub name: String,
}

fn default_hub_name() -> String {
    "hub".into()
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

/// `[[backend]]`: where a provided service's backend listens (plaintext
/// gRPC `truc.v1.Backend` on a trusted network next to the node).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendEntry {
    /// The service id.
    pub service: String,
    /// The backend's `host:port`.
    pub address: String,
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
        let raw: NodeFile = load_toml(path)?;
        check_version(path, raw.version)?;
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
        let vxp = raw.vxp.as_ref().map(|v| v.validate(path)).transpose()?;
        Ok(NodeConfig {
            vxp,
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
