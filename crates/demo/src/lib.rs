//! A whole truc deployment on one machine, for `truc demo`, the integration
//! tests and the benchmarks: a development PKI, a registry, config files for
//! a hub and two nodes, demo backends, all on loopback ports chosen by the OS,
//! started in this process.
//!
//! The files it writes are ordinary truc config files: the same hub and nodes
//! can be run as separate processes with `truc hub --config` and
//! `truc node --config`. It is not a deployment tool for production.

#![forbid(unsafe_code)]

pub mod backend;
mod configs;
pub mod k8s;
pub mod rest;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use tokio::{net::TcpListener, task::JoinHandle};
use tonic::transport::Channel;
use truc_devca::InitOptions;
use truc_hub::{HubConfig, RunningHub};
use truc_node::{NodeConfig, RunningNode};
use truc_ops::{Shutdown, config::ConfigError};
use truc_pki::{Identity, Layout, Role};
use truc_proto::v1::{
    DataRequest, DataResponse, agency_client::AgencyClient, backend_server::Backend,
};

/// Văn phòng Chính phủ (the Government Office).
pub const G22: &str = "000.00.00.G22";
/// UBND tỉnh Lạng Sơn (People's Committee of Lạng Sơn province).
pub const H37: &str = "000.00.00.H37";
/// A department of Lạng Sơn province (illustrative code).
pub const H37_DEPT: &str = "000.01.37.H37";
/// The ministry node, hosting G22.
pub const MINISTRY_NODE: &str = "vpcp";
/// The province node, hosting H37 and its department.
pub const PROVINCE_NODE: &str = "lgsp-langson";
/// The agency system (client certificate) on the ministry node.
pub const MINISTRY_CLIENT: &str = "vpcp-dms";
/// The agency system (client certificate) on the province node.
pub const PROVINCE_CLIENT: &str = "langson-dms";
/// G22's citizen-lookup service.
pub const CITIZEN_LOOKUP: &str = "000.00.00.G22/citizen-lookup/v1";
/// H37's household-registry service.
pub const HOUSEHOLD_REGISTRY: &str = "000.00.00.H37/household-registry/v1";

/// What can go wrong setting up or running the deployment.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Writing or binding failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be made.
    #[error(transparent)]
    Pki(#[from] truc_pki::PkiError),
    /// The development CA failed.
    #[error(transparent)]
    DevCa(#[from] truc_devca::DevCaError),
    /// A written config does not load (a bug here).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The hub failed.
    #[error(transparent)]
    Hub(#[from] truc_hub::HubError),
    /// A node failed.
    #[error(transparent)]
    Node(#[from] truc_node::NodeError),
    /// A server failed while running or stopping.
    #[error(transparent)]
    Serve(#[from] truc_ops::ServeError),
    /// A config could not be serialized (a bug here).
    #[error("writing a config: {0}")]
    Toml(#[from] toml::ser::Error),
}

pub use configs::deploy_examples;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

/// The province node's index in the deployment's nodes and backends.
const PROVINCE: usize = 1;

/// Which backend answers the demo services.
#[derive(Clone)]
pub enum BackendKind {
    /// Made-up citizen records (the demo): the ministry's citizen lookup
    /// over gRPC, the province's household registry over REST
    /// ([`rest::household_registry`]).
    CitizenLookup,
    /// The request payload back (benchmarks).
    Echo,
    /// Nothing listens at the backend addresses (tests of a backend down).
    Down,
    /// A backend of the caller's (tests).
    Custom(Arc<dyn Backend>),
}

impl std::fmt::Debug for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::CitizenLookup => "CitizenLookup",
            BackendKind::Echo => "Echo",
            BackendKind::Down => "Down",
            BackendKind::Custom(_) => "Custom",
        })
    }
}

/// Serves a shared trait object as a backend.
#[derive(Clone)]
struct Shared(Arc<dyn Backend>);

#[tonic::async_trait]
impl Backend for Shared {
    async fn invoke(
        &self,
        request: tonic::Request<DataRequest>,
    ) -> Result<tonic::Response<DataResponse>, tonic::Status> {
        self.0.invoke(request).await
    }
}

/// How to start.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where certificates, configs, data and `demo.json` go.
    pub dir: PathBuf,
    /// Which backend answers calls.
    pub backend: BackendKind,
    /// Hub and node run options (audit durability, drain).
    pub durable: bool,
    /// Largest payload, in bytes.
    pub max_payload_bytes: usize,
    /// The hub's and nodes' `limits.drain_deadline_secs`.
    pub drain_deadline_secs: u64,
    /// Document delivery retries: first delay and cap.
    pub retry: (std::time::Duration, std::time::Duration),
    /// Give each node a VXP listener (plain HTTP on loopback) with one demo
    /// DMS system (`truc demo`; off by default).
    pub vxp: bool,
    /// Where the hub's and the nodes' spans go (tests: one in-memory
    /// exporter for the whole deployment); none: as their configs say.
    pub tracing: Option<truc_ops::trace::Tracing>,
    /// How many hub replicas (at least 1): each its own process state,
    /// certificate, audit key and log; the nodes know them all.
    pub hubs: usize,
}

impl DemoOptions {
    /// Defaults for `dir`: demo backends, durable audit, 4 MiB payloads.
    pub fn new(dir: impl Into<PathBuf>) -> DemoOptions {
        DemoOptions {
            dir: dir.into(),
            backend: BackendKind::CitizenLookup,
            durable: true,
            max_payload_bytes: 4 * 1024 * 1024,
            drain_deadline_secs: truc_ops::config::Limits::default().drain_deadline_secs,
            retry: truc_node::RunOptions::default().retry,
            vxp: false,
            tracing: None,
            hubs: 1,
        }
    }
}

/// The files of a deployment.
#[derive(Clone, Debug)]
pub struct Files {
    /// The PKI directory.
    pub pki: Layout,
    /// The registry.
    pub registry: PathBuf,
    /// The hub's config.
    pub hub_config: PathBuf,
    /// Config per node id.
    pub node_configs: Vec<(String, PathBuf)>,
    /// Client config (for `truc call`) per client name.
    pub client_configs: Vec<(String, PathBuf)>,
    /// Admin client config (for `truc report`).
    pub admin_config: PathBuf,
    /// Further hub replicas' configs, by replica name (`hub-2`, ...).
    pub replica_configs: Vec<(String, PathBuf)>,
}

/// Addresses bound for a deployment.
struct Bound {
    hub: (TcpListener, TcpListener),
    /// Further hub replicas.
    replicas: Vec<(TcpListener, TcpListener)>,
    nodes: Vec<(TcpListener, TcpListener)>,
    /// Each node's HTTP listener (the REST door).
    http: Vec<TcpListener>,
    backends: Vec<(TcpListener, SocketAddr)>,
}

async fn bind() -> Result<TcpListener, DemoError> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("binding a loopback port"))
}

/// Ports a deployment keeps while it lasts, so that a process restarted on
/// its old address finds it free.
///
/// Each port is held by a socket bound to it (with `SO_REUSEADDR`) that
/// never listens. The process's listener binds the same address beside it,
/// as a listener may next to a bound socket that does not listen; while the
/// process is down, connections are refused as before. Linux hands neither
/// a listener on port 0 nor an outgoing connection a port that a socket is
/// bound to, so another process can no longer take the port in the gap of
/// a restart.
#[derive(Default)]
struct Reserved(Vec<tokio::net::TcpSocket>);

impl Reserved {
    /// A listener on a loopback port that stays reserved.
    async fn bind(&mut self) -> Result<TcpListener, DemoError> {
        let hold = tokio::net::TcpSocket::new_v4().map_err(io("creating a socket"))?;
        hold.set_reuseaddr(true)
            .map_err(io("setting SO_REUSEADDR"))?;
        hold.bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(io("binding a loopback port"))?;
        let at = hold.local_addr().map_err(io("reading a bound address"))?;
        let listener = TcpListener::bind(at)
            .await
            .map_err(io(format!("binding {at} beside its reservation")))?;
        self.0.push(hold);
        Ok(listener)
    }
}

fn addr(l: &TcpListener) -> Result<SocketAddr, DemoError> {
    l.local_addr().map_err(io("reading a bound address"))
}

/// A running deployment.
pub struct Deployment {
    /// Its files.
    pub files: Files,
    hub: Option<RunningHub>,
    /// Further hub replicas (name, process); a stopped one is `None`.
    replicas: Vec<(String, Option<RunningHub>)>,
    /// The nodes: ministry first, then province.
    pub nodes: Vec<(String, RunningNode)>,
    backends: Vec<JoinHandle<()>>,
    backend_addrs: Vec<SocketAddr>,
    backend_shutdown: Shutdown,
    options: DemoOptions,
    /// Held until the deployment is dropped: restarts bind these again.
    _ports: Reserved,
}

impl Deployment {
    /// Writes (or reuses) everything under `options.dir` and starts the hub,
    /// the nodes and the backends.
    pub async fn start(options: DemoOptions) -> Result<Deployment, DemoError> {
        // The addresses in the configs; ops ports are new on each start.
        let mut ports = Reserved::default();
        let mut replicas = Vec::new();
        for _ in 1..options.hubs.max(1) {
            replicas.push((ports.bind().await?, bind().await?));
        }
        let bound = Bound {
            hub: (ports.bind().await?, bind().await?),
            replicas,
            nodes: vec![
                (ports.bind().await?, bind().await?),
                (ports.bind().await?, bind().await?),
            ],
            http: vec![ports.bind().await?, ports.bind().await?],
            backends: {
                let mut v = Vec::new();
                for _ in 0..2 {
                    let l = bind().await?;
                    let a = addr(&l)?;
                    v.push((l, a));
                }
                v
            },
        };
        let files = write_files(&options, &bound)?;
        let backend_shutdown = Shutdown::new();
        let max_message = options.max_payload_bytes + 64 * 1024;
        let mut backends = Vec::new();
        let mut backend_addrs = Vec::new();
        for (i, (listener, a)) in bound.backends.into_iter().enumerate() {
            backend_addrs.push(a);
            let stop = backend_shutdown.wait();
            // The province's household registry is a REST backend.
            if i == PROVINCE && matches!(options.backend, BackendKind::CitizenLookup) {
                let serving = rest::serve_rest(rest::household_registry(), listener, stop);
                backends.push(tokio::spawn(async move {
                    if let Err(e) = serving.await {
                        tracing::warn!(error = %e, "demo REST backend failed");
                    }
                }));
                continue;
            }
            let serve = |b| {
                let serving = backend::serve_backend(b, listener, max_message, stop);
                tokio::spawn(async move {
                    if let Err(e) = serving.await {
                        tracing::warn!(error = %e, "demo backend failed");
                    }
                })
            };
            backends.push(match &options.backend {
                BackendKind::CitizenLookup => serve(Shared(Arc::new(backend::CitizenLookup))),
                BackendKind::Echo => serve(Shared(Arc::new(backend::Echo))),
                BackendKind::Custom(b) => serve(Shared(b.clone())),
                // The listener is dropped: connections to it are refused.
                BackendKind::Down => continue,
            });
        }
        let audit = truc_audit::Options {
            durable: options.durable,
            ..truc_audit::Options::default()
        };
        let hub = truc_hub::start(
            HubConfig::load(&files.hub_config)?,
            bound.hub.0,
            bound.hub.1,
            Shutdown::new(),
            truc_hub::RunOptions {
                audit: audit.clone(),
                tracing: options.tracing.clone(),
                ..truc_hub::RunOptions::default()
            },
        )
        .await?;
        let mut replicas = Vec::new();
        for ((name, path), (l, ops)) in files.replica_configs.iter().zip(bound.replicas) {
            let replica = truc_hub::start(
                HubConfig::load(path)?,
                l,
                ops,
                Shutdown::new(),
                truc_hub::RunOptions {
                    audit: audit.clone(),
                    ..truc_hub::RunOptions::default()
                },
            )
            .await?;
            replicas.push((name.clone(), Some(replica)));
        }
        let mut nodes = Vec::new();
        for (((id, path), (l, ops)), http) in
            files.node_configs.iter().zip(bound.nodes).zip(bound.http)
        {
            let node = truc_node::start(
                NodeConfig::load(path)?,
                l,
                ops,
                Shutdown::new(),
                truc_node::RunOptions {
                    audit: audit.clone(),
                    retry: options.retry,
                    http_listener: Some(truc_node::PreBound::new(http)),
                    tracing: options.tracing.clone(),
                    ..truc_node::RunOptions::default()
                },
            )
            .await?;
            nodes.push((id.clone(), node));
        }
        Ok(Deployment {
            files,
            hub: Some(hub),
            replicas,
            nodes,
            backends,
            backend_addrs,
            backend_shutdown,
            options,
            _ports: ports,
        })
    }

    /// The address of node `id`'s HTTP listener (the REST door), from its config.
    pub fn http_addr(&self, id: &str) -> Option<SocketAddr> {
        let config = NodeConfig::load(&self.node_config(id).ok()?).ok()?;
        config.http.map(|h| h.listen)
    }

    /// The running node `id`.
    pub fn node(&self, id: &str) -> Option<&RunningNode> {
        self.nodes.iter().find(|(n, _)| n == id).map(|(_, n)| n)
    }

    /// An Agency API client on node `node_id`, authenticated as agency system
    /// `client` (its certificate must exist in the deployment's PKI).
    pub fn agency_client(
        &self,
        node_id: &str,
        client: &str,
    ) -> Result<AgencyClient<Channel>, DemoError> {
        let node = self.node(node_id).ok_or_else(|| DemoError::Io {
            what: format!("no node {node_id}"),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        let files = self.files.pki.files(&Identity::new(Role::Client, client)?);
        let tls = truc_pki::client_config(&files)?;
        let channel = truc_pki::channel(&node.addr().to_string(), node_id, tls)?;
        Ok(AgencyClient::new(channel))
    }

    /// Node `id`'s VXP endpoint and demo system, from its config file;
    /// `null` without one.
    fn describe_vxp(&self, id: &str) -> serde_json::Value {
        let Ok(path) = self.node_config(id) else {
            return serde_json::Value::Null;
        };
        let Ok(file) = truc_ops::config::load_toml::<truc_node::NodeFile>(&path) else {
            return serde_json::Value::Null;
        };
        let Some(vxp) = file.vxp else {
            return serde_json::Value::Null;
        };
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        let systems: Vec<_> = vxp
            .systems
            .iter()
            .map(|s| {
                let secret = std::fs::read_to_string(base.join(&s.secret_file)).unwrap_or_default();
                serde_json::json!({"id": s.id, "secret": secret.trim_end(), "agencies": s.agencies})
            })
            .collect();
        let scheme = if vxp.tls { "https" } else { "http" };
        serde_json::json!({
            "url": format!("{scheme}://{}", vxp.listen),
            "system": systems.first(),
        })
    }

    /// A summary for `demo.json`: every endpoint and certificate path.
    pub fn describe(&self) -> serde_json::Value {
        let pki = &self.files.pki;
        let tls = |role: Role, name: &str| match Identity::new(role, name) {
            Ok(id) => {
                let f = pki.files(&id);
                serde_json::json!({"ca": f.ca, "cert": f.cert, "key": f.key})
            }
            Err(_) => serde_json::Value::Null,
        };
        let nodes: Vec<_> = self
            .nodes
            .iter()
            .map(|(id, n)| {
                serde_json::json!({
                    "id": id,
                    "grpc": n.addr().to_string(),
                    "tls_server_name": id,
                    "ops": format!("http://{}", n.ops_addr()),
                    "rest_call": self.http_addr(id).map(|a| format!("https://{id}:{}/v1/call/{{service}}", a.port())),
                    "config": self.files.node_configs.iter().find(|(i, _)| i == id).map(|(_, p)| p),
                    "vxp": self.describe_vxp(id),
                })
            })
            .collect();
        serde_json::json!({
            "hub": {
                "grpc": self.hub().addr().to_string(),
                "tls_server_name": "hub",
                "ops": format!("http://{}", self.hub().ops_addr()),
                "config": self.files.hub_config,
                "data_dir": self.files.pki.dir.parent().map(|d| d.join("hub")),
            },
            "replicas": self.describe_replicas(),
            "nodes": nodes,
            "backends": self.backend_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "registry": self.files.registry,
            "clients": {
                MINISTRY_CLIENT: {
                    "node": MINISTRY_NODE,
                    "agencies": [G22],
                    "tls": tls(Role::Client, MINISTRY_CLIENT),
                    "config": self.files.client_configs.iter().find(|(c, _)| c == MINISTRY_CLIENT).map(|(_, p)| p),
                },
                PROVINCE_CLIENT: {
                    "node": PROVINCE_NODE,
                    "agencies": [H37, H37_DEPT],
                    "tls": tls(Role::Client, PROVINCE_CLIENT),
                    "config": self.files.client_configs.iter().find(|(c, _)| c == PROVINCE_CLIENT).map(|(_, p)| p),
                },
            },
            "admin": {
                "tls": tls(Role::Admin, "admin"),
                "config": self.files.admin_config,
            },
            "services": [CITIZEN_LOOKUP, HOUSEHOLD_REGISTRY],
        })
    }

    /// Every hub replica running, the first (`hub.toml`) first: its name,
    /// and the process.
    pub fn hubs(&self) -> Vec<(&str, &RunningHub)> {
        let first = self.hub.as_ref().map(|h| ("hub", h));
        first
            .into_iter()
            .chain(
                self.replicas
                    .iter()
                    .filter_map(|(n, h)| h.as_ref().map(|h| (n.as_str(), h))),
            )
            .collect()
    }

    /// Stops the further hub replica `name` (tests of a replica down, as a
    /// killed process leaves it: nothing drained); false if none runs.
    pub async fn stop_replica(&mut self, name: &str) -> Result<bool, DemoError> {
        let Some(slot) = self.replicas.iter_mut().find(|(n, _)| n == name) else {
            return Ok(false);
        };
        match slot.1.take() {
            Some(hub) => {
                hub.stop().await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The hub replicas for `demo.json`: name, endpoints, config, log origin.
    fn describe_replicas(&self) -> serde_json::Value {
        let configs = std::iter::once(("hub".to_string(), self.files.hub_config.clone()))
            .chain(self.files.replica_configs.iter().cloned());
        let list: Vec<_> = configs
            .map(|(name, config)| {
                let running = self
                    .hubs()
                    .into_iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, h)| h);
                let origin = HubConfig::load(&config).ok().map(|c| c.log_origin());
                serde_json::json!({
                    "name": name,
                    "grpc": running.map(|h| h.addr().to_string()),
                    "ops": running.map(|h| format!("http://{}", h.ops_addr())),
                    "config": config,
                    "log_origin": origin,
                })
            })
            .collect();
        serde_json::Value::Array(list)
    }

    /// Stops node `id` alone (tests of a node down); false if there is none.
    pub async fn stop_node(&mut self, id: &str) -> Result<bool, DemoError> {
        match self.nodes.iter().position(|(n, _)| n == id) {
            Some(i) => {
                let (_, node) = self.nodes.remove(i);
                node.stop().await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Rewrites node `id`'s config file through its type, e.g. to restart
    /// the node with other settings (tests).
    pub fn edit_node_config(
        &self,
        id: &str,
        edit: impl FnOnce(&mut truc_node::NodeFile),
    ) -> Result<(), DemoError> {
        let path = self.node_config(id)?;
        let mut file: truc_node::NodeFile = truc_ops::config::load_toml(&path)?;
        edit(&mut file);
        let text = toml::to_string(&file)?;
        std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))
    }

    fn node_config(&self, id: &str) -> Result<PathBuf, DemoError> {
        self.files
            .node_configs
            .iter()
            .find(|(n, _)| n == id)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| DemoError::Io {
                what: format!("no node {id}"),
                source: std::io::ErrorKind::NotFound.into(),
            })
    }

    /// Starts node `id` again from its config file, on the same address.
    pub async fn restart_node(&mut self, id: &str) -> Result<(), DemoError> {
        let config = NodeConfig::load(&self.node_config(id)?)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(io(format!("binding {}", config.listen)))?;
        let ops = bind().await?;
        let node = truc_node::start(
            config,
            listener,
            ops,
            Shutdown::new(),
            truc_node::RunOptions {
                audit: self.audit_options(),
                retry: self.options.retry,
                tracing: self.options.tracing.clone(),
                ..truc_node::RunOptions::default()
            },
        )
        .await?;
        self.nodes.push((id.to_string(), node));
        Ok(())
    }

    /// Stops the hub, runs `between` while it is down, and starts it again
    /// from its config on the same address.
    pub async fn restart_hub(&mut self, between: impl AsyncFnOnce()) -> Result<(), DemoError> {
        if let Some(hub) = self.hub.take() {
            hub.stop().await?;
        }
        between().await;
        let config = HubConfig::load(&self.files.hub_config)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(io(format!("binding {}", config.listen)))?;
        let hub = truc_hub::start(
            config,
            listener,
            bind().await?,
            Shutdown::new(),
            truc_hub::RunOptions {
                audit: self.audit_options(),
                tracing: self.options.tracing.clone(),
                ..truc_hub::RunOptions::default()
            },
        )
        .await?;
        self.hub = Some(hub);
        Ok(())
    }

    fn audit_options(&self) -> truc_audit::Options {
        truc_audit::Options {
            durable: self.options.durable,
            ..truc_audit::Options::default()
        }
    }

    /// Waits until the hub stops by itself (after a drain: `Admin.Drain`,
    /// [`RunningHub::drain`]) and closes its log; the deployment then has
    /// no hub ([`Deployment::hub`] panics).
    pub async fn wait_hub(&mut self) -> Result<(), DemoError> {
        if let Some(hub) = self.hub.take() {
            hub.wait().await?;
        }
        Ok(())
    }

    /// The running hub.
    pub fn hub(&self) -> &RunningHub {
        // Only `restart_hub`, which holds `&mut self`, leaves it empty.
        self.hub.as_ref().expect("the hub runs outside restart_hub")
    }

    /// Stops everything (nodes first, so their last calls reach the hub) and
    /// waits for it.
    pub async fn stop(self) -> Result<(), DemoError> {
        let mut node_result = Ok(());
        for (_, node) in self.nodes {
            if let Err(e) = node.stop().await {
                node_result = Err(e);
            }
        }
        let mut hub = match self.hub {
            Some(hub) => hub.stop().await,
            None => Ok(()),
        };
        for (_, replica) in self.replicas {
            if let Some(r) = replica {
                let stopped = r.stop().await;
                if hub.is_ok() {
                    hub = stopped;
                }
            }
        }
        self.backend_shutdown.trigger();
        for b in self.backends {
            // A backend that failed has already shown it in the calls.
            let _ = b.await;
        }
        hub?;
        node_result?;
        Ok(())
    }
}

/// Writes the PKI (once), the registry and the configs for the bound ports.
/// A random secret per node's demo VXP system, kept if already written.
fn write_vxp_secrets(dir: &std::path::Path) -> Result<(), DemoError> {
    use ring::rand::SecureRandom;
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).map_err(io(format!("creating {}", secrets.display())))?;
    for id in [MINISTRY_NODE, PROVINCE_NODE] {
        let path = secrets.join(configs::vxp_secret_name(id));
        if path.exists() {
            continue;
        }
        let mut bytes = [0u8; 18];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| DemoError::Io {
                what: "no randomness for a VXP secret".into(),
                source: std::io::ErrorKind::Other.into(),
            })?;
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, secret).map_err(io(format!("writing {}", path.display())))?;
    }
    Ok(())
}

fn write_files(options: &DemoOptions, bound: &Bound) -> Result<Files, DemoError> {
    let dir = &options.dir;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let pki = Layout::new(dir.join("pki"));
    if !pki.ca_cert().exists() {
        truc_devca::init(
            &pki.dir,
            &InitOptions {
                hub: "hub".into(),
                nodes: vec![MINISTRY_NODE.into(), PROVINCE_NODE.into()],
                admin: "admin".into(),
                clients: vec![MINISTRY_CLIENT.into(), PROVINCE_CLIENT.into()],
                validity_days: 365,
            },
        )?;
    }
    if !pki.crl().exists() {
        // A PKI written before CRLs existed: give it an empty list.
        let now = std::time::SystemTime::now();
        let days = u64::from(truc_devca::CRL_VALIDITY_DAYS);
        truc_devca::reissue_crl(
            &pki,
            now,
            now + std::time::Duration::from_secs(days * 86_400),
        )?;
    }
    let node = |i: usize| -> Result<_, DemoError> {
        Ok((
            addr(&bound.nodes[i].0)?,
            addr(&bound.nodes[i].1)?,
            bound.backends[i].1,
        ))
    };
    let vxp = if options.vxp {
        // Ports the OS chose, for the nodes to bind again.
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(io("choosing a VXP port"))
        };
        write_vxp_secrets(dir)?;
        Some([port()?, port()?])
    } else {
        None
    };
    let mut replicas = Vec::new();
    let mut replica_configs = Vec::new();
    for (i, (l, ops)) in bound.replicas.iter().enumerate() {
        let name = configs::replica_name(i + 2);
        truc_devca::hub_replica(&pki, "hub", &name, 365)?;
        replica_configs.push((name.clone(), dir.join(format!("{name}.toml"))));
        replicas.push((addr(l)?, addr(ops)?));
    }
    let plan = configs::Plan {
        vxp,
        hub: (addr(&bound.hub.0)?, addr(&bound.hub.1)?),
        replicas,
        nodes: [node(0)?, node(1)?],
        http: [addr(&bound.http[0])?, addr(&bound.http[1])?],
        province_rest: matches!(options.backend, BackendKind::CitizenLookup),
        hub_data: "hub".into(),
        node_data: "nodes".into(),
        limits: truc_ops::config::Limits {
            max_payload_bytes: options.max_payload_bytes,
            drain_deadline_secs: options.drain_deadline_secs,
            ..truc_ops::config::Limits::default()
        },
        witness_keys: [MINISTRY_NODE, PROVINCE_NODE].map(|id| {
            std::fs::read_to_string(pki.witness_public_key(id))
                .ok()
                .map(|k| k.trim().to_string())
        }),
    };
    for file in configs::files(&plan)? {
        let path = dir.join(&file.name);
        std::fs::write(&path, file.text).map_err(io(format!("writing {}", path.display())))?;
    }
    let nodes = [
        (MINISTRY_NODE, MINISTRY_CLIENT),
        (PROVINCE_NODE, PROVINCE_CLIENT),
    ];
    Ok(Files {
        pki,
        registry: dir.join("registry.toml"),
        hub_config: dir.join("hub.toml"),
        node_configs: nodes
            .iter()
            .map(|(id, _)| (id.to_string(), dir.join(format!("node-{id}.toml"))))
            .collect(),
        client_configs: nodes
            .iter()
            .map(|(_, c)| (c.to_string(), dir.join(format!("client-{c}.toml"))))
            .collect(),
        admin_config: dir.join("admin.toml"),
        replica_configs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reserved_port_refuses_while_down_and_binds_again() {
        let mut ports = Reserved::default();
        let listener = ports.bind().await.expect("bind");
        let at = listener.local_addr().expect("addr");
        tokio::net::TcpStream::connect(at).await.expect("listening");
        drop(listener);
        // Down: the reservation does not accept connections.
        let refused = tokio::net::TcpStream::connect(at).await.expect_err("down");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        // The port stays taken for a socket that does not share it.
        let other = tokio::net::TcpSocket::new_v4().expect("socket");
        let taken = other.bind(at).expect_err("held");
        assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
        // Restarted: the same address binds again.
        let again = TcpListener::bind(at).await.expect("binds again");
        tokio::net::TcpStream::connect(at)
            .await
            .expect("listening again");
        drop(again);
        drop(ports);
    }
}
