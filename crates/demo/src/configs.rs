//! The deployment's config files, produced by serializing the config types
//! (`HubFile`, `NodeFile`, `ClientFile`): the demo writes them for the ports
//! it bound, and `deploy/` holds them for fixed example ports
//! ([`deploy_examples`]). A new config key is a field of its type and appears
//! here by itself.

use std::{net::SocketAddr, path::PathBuf};

use serde::Serialize;
use truc_hub::{Dashboard, HubFile, Peer};
use truc_node::{
    AuditKeyEntry, BackendEntry, ClientEntry, DocumentService, HttpSection, HubSection, NodeFile,
    VxpSection, VxpSystemEntry, WitnessSection,
};
use truc_ops::config::{CONFIG_VERSION, ClientFile, Limits, TlsSection};
use truc_pki::{Identity, Layout, Role};

use crate::{
    CITIZEN_LOOKUP, DemoError, G22, H37, H37_DEPT, HOUSEHOLD_REGISTRY, MINISTRY_CLIENT,
    MINISTRY_NODE, PROVINCE_CLIENT, PROVINCE_NODE,
};

/// The addresses and directories one set of config files is written for.
pub(crate) struct Plan {
    /// Per node (ministry, then province): the VXP listener, if any.
    pub(crate) vxp: Option<[SocketAddr; 2]>,
    /// The hub's gRPC and ops addresses.
    pub(crate) hub: (SocketAddr, SocketAddr),
    /// Further hub replicas' gRPC and ops addresses (`hub-2.toml`, ...;
    /// none for one hub).
    pub(crate) replicas: Vec<(SocketAddr, SocketAddr)>,
    /// Per node (ministry, then province): gRPC, ops and backend addresses.
    pub(crate) nodes: [(SocketAddr, SocketAddr, SocketAddr); 2],
    /// Per node: the HTTP listener's address (the REST door).
    pub(crate) http: [SocketAddr; 2],
    /// Whether the province's backend is the REST one
    /// ([`crate::rest::household_registry`]) rather than gRPC.
    pub(crate) province_rest: bool,
    /// The hub's data directory, relative to the configs.
    pub(crate) hub_data: PathBuf,
    /// The directory under which each node's data directory (named by its
    /// id) goes, relative to the configs.
    pub(crate) node_data: PathBuf,
    /// Limits written into the hub's and nodes' configs.
    pub(crate) limits: Limits,
    /// Per node, the hex of its witness public key, for the registry (when
    /// the PKI exists already).
    pub(crate) witness_keys: [Option<String>; 2],
}

/// One config file: its name (in the configs' directory) and text.
pub(crate) struct File {
    pub(crate) name: String,
    pub(crate) text: String,
}

/// Where the PKI is, relative to the configs.
fn pki() -> Layout {
    Layout::new("pki")
}

fn tls(role: Role, name: &str) -> Result<TlsSection, truc_pki::PkiError> {
    let files = pki().files(&Identity::new(role, name)?);
    Ok(TlsSection {
        ca: files.ca,
        cert: files.cert,
        key: files.key,
        // The list `truc pki revoke --dir pki` rewrites: servers reload it.
        crls: vec![pki().crl()],
        crl_policy: truc_ops::config::CrlPolicySetting::Warn,
    })
}

/// `header` (comment lines) then `value` as pretty TOML.
pub(crate) fn toml_file(
    name: String,
    header: &str,
    value: &impl Serialize,
) -> Result<File, DemoError> {
    let body = toml::to_string(value)?;
    Ok(File {
        name,
        text: format!("{header}\n\n{body}"),
    })
}

/// The nodes: id, agency system, its agencies, the service it provides.
fn nodes() -> [(&'static str, &'static str, Vec<&'static str>, &'static str); 2] {
    [
        (MINISTRY_NODE, MINISTRY_CLIENT, vec![G22], CITIZEN_LOOKUP),
        (
            PROVINCE_NODE,
            PROVINCE_CLIENT,
            vec![H37, H37_DEPT],
            HOUSEHOLD_REGISTRY,
        ),
    ]
}

/// The name of hub replica `n` (from 2: the first is `hub`), which names
/// its config file, data directory and PKI directory.
pub(crate) fn replica_name(n: usize) -> String {
    format!("hub-{n}")
}

/// Where replica `name`'s certificate and audit key are (relative to the
/// configs), as [`truc_devca::hub_replica`] writes them.
pub(crate) fn replica_layout(name: &str) -> Layout {
    Layout::new(pki().dir.join(format!("replica-{name}")))
}

/// The log origin of replica `name`, with several replicas.
pub(crate) fn replica_origin(name: &str) -> String {
    format!("{name}/truc-audit")
}

/// The file name of node `id`'s demo VXP secret (under `secrets/`).
pub(crate) fn vxp_secret_name(id: &str) -> String {
    format!("vxp-{id}.secret")
}

/// Every config file of the deployment, registry first.
pub(crate) fn files(plan: &Plan) -> Result<Vec<File>, DemoError> {
    let hub_addr = plan.hub.0.to_string();
    let mut out = vec![File {
        name: "registry.toml".into(),
        text: registry(&plan.nodes[0].0, &plan.nodes[1].0, &plan.witness_keys),
    }];
    let hub = HubFile {
        version: CONFIG_VERSION,
        listen: plan.hub.0.to_string(),
        ops_listen: plan.hub.1.to_string(),
        data_dir: plan.hub_data.clone(),
        registry: "registry.toml".into(),
        audit_key: Some(pki().audit_key()),
        audit_key_dir: None,
        time_zone: "Asia/Ho_Chi_Minh".into(),
        tracing: Default::default(),
        log_origin: None,
        tls: tls(Role::Hub, "hub")?,
        limits: plan.limits.clone(),
        documents: Default::default(),
        dashboard: Dashboard::default(),
        peers: Vec::new(),
        end_user_key: None,
        id_filter_ids: None,
    };
    // With several replicas, each one's dashboard shows them all: every
    // replica lists the others as peers.
    let all: Vec<Peer> = std::iter::once(("hub".to_string(), plan.hub.0))
        .chain(
            plan.replicas
                .iter()
                .enumerate()
                .map(|(i, r)| (replica_name(i + 2), r.0)),
        )
        .map(|(name, listen)| Peer {
            name,
            address: listen.to_string(),
        })
        .collect();
    let others = |me: &str| -> Vec<Peer> {
        if plan.replicas.is_empty() {
            return Vec::new();
        }
        all.iter().filter(|p| p.name != me).cloned().collect()
    };
    // Each further replica: its own ports, data, certificate, audit key and
    // log origin; the same registry.
    let mut replica_files = Vec::new();
    for (i, (listen, ops)) in plan.replicas.iter().enumerate() {
        let name = replica_name(i + 2);
        let layout = replica_layout(&name);
        let id = Identity::new(Role::Hub, "hub")?;
        let files = layout.files(&id);
        let mut tls = tls(Role::Hub, "hub")?;
        tls.cert = files.cert;
        tls.key = files.key;
        let file = HubFile {
            listen: listen.to_string(),
            ops_listen: ops.to_string(),
            data_dir: plan.hub_data.with_file_name(&name),
            audit_key: Some(layout.audit_key()),
            log_origin: Some(replica_origin(&name)),
            tls,
            peers: others(&name),
            ..hub.clone()
        };
        replica_files.push(toml_file(
            format!("{name}.toml"),
            &format!(
                "# truc hub --config {name}.toml: a replica of the hub in hub.toml (the same\n\
                 # registry; its own data, certificate, audit key and log).\n\
                 # Generated from the config types: edit those, not this file."
            ),
            &file,
        )?);
    }
    let hub = HubFile {
        log_origin: (!plan.replicas.is_empty()).then(|| replica_origin("hub")),
        peers: others("hub"),
        ..hub
    };
    out.push(toml_file(
        "hub.toml".into(),
        "# truc hub --config hub.toml\n\
         # Keys: `HubFile` in crates/hub/src/config.rs; paths are relative to this file.\n\
         # Generated from the config types (see deploy/README.md): edit those, not this file.",
        &hub,
    )?);
    out.extend(replica_files);
    // Every node knows every replica, and each replica's key for its log.
    let several = !plan.replicas.is_empty();
    let mut audit_keys = vec![AuditKeyEntry {
        file: pki().audit_public_key(),
        not_before: None,
        not_after: None,
        origin: several.then(|| replica_origin("hub")),
    }];
    for i in 0..plan.replicas.len() {
        let name = replica_name(i + 2);
        audit_keys.push(AuditKeyEntry {
            file: replica_layout(&name).audit_public_key(),
            not_before: None,
            not_after: None,
            origin: Some(replica_origin(&name)),
        });
    }
    let replica_addresses: Vec<String> = plan.replicas.iter().map(|r| r.0.to_string()).collect();
    for (i, ((id, client, agencies, service), (listen, ops, backend))) in
        nodes().into_iter().zip(plan.nodes).enumerate()
    {
        let backend = if plan.province_rest && i == crate::PROVINCE {
            format!("http://{backend}{}", crate::rest::HOUSEHOLD_REGISTRY_PATH)
        } else {
            backend.to_string()
        };
        let node = NodeFile {
            version: CONFIG_VERSION,
            id: id.into(),
            listen: listen.to_string(),
            ops_listen: ops.to_string(),
            tracing: Default::default(),
            data_dir: plan.node_data.join(id),
            hub: HubSection {
                address: hub_addr.clone(),
                addresses: replica_addresses.clone(),
                name: "hub".into(),
                registry_refresh_secs: 10,
                audit_keys: audit_keys.clone(),
            },
            tls: tls(Role::Node, id)?,
            limits: plan.limits.clone(),
            documents: Default::default(),
            document_service: DocumentService::default(),
            clients: vec![ClientEntry {
                name: client.into(),
                agencies: agencies.iter().map(|a| a.to_string()).collect(),
            }],
            backends: vec![BackendEntry {
                service: service.into(),
                address: backend,
                ca: None,
            }],
            witness: WitnessSection {
                key: Some(pki().witness_key(id)),
                ..WitnessSection::default()
            },
            http: Some(HttpSection {
                listen: plan.http[i].to_string(),
                request_timeout_ms: 30_000,
            }),
            vxp: plan.vxp.map(|v| VxpSection {
                listen: v[i].to_string(),
                tls: false,
                cert: None,
                key: None,
                systems: vec![VxpSystemEntry {
                    id: format!("demo.{id}"),
                    secret_file: PathBuf::from("secrets").join(vxp_secret_name(id)),
                    agencies: agencies.iter().map(|a| a.to_string()).collect(),
                }],
            }),
        };
        out.push(toml_file(
            format!("node-{id}.toml"),
            &format!(
                "# truc node --config node-{id}.toml\n\
                 # Keys: `NodeFile` in crates/node/src/config.rs; paths are relative to this file.\n\
                 # `id` must match the node certificate (truc://node/{id}); each [[client]] is an\n\
                 # agency system by client certificate name (truc://client/NAME) and the agencies\n\
                 # it may act for; each [[backend]] is plaintext gRPC truc.v1.Backend on a trusted\n\
                 # network next to the node (host:port), or a REST backend (an http:// or https://\n\
                 # URL, with `ca` for https) the node POSTs each payload to.\n\
                 # Generated from the config types (see deploy/README.md): edit those, not this file."
            ),
            &node,
        )?);
        let client_file = ClientFile {
            version: CONFIG_VERSION,
            address: listen.to_string(),
            addresses: Vec::new(),
            server_name: id.into(),
            tls: tls(Role::Client, client)?,
        };
        out.push(toml_file(
            format!("client-{client}.toml"),
            &format!(
                "# truc call --config client-{client}.toml --as {} --service ... --data ...\n\
                 # An agency system of node {id}. Keys: `ClientFile` in crates/ops/src/config.rs.",
                agencies[0]
            ),
            &client_file,
        )?);
    }
    let admin = ClientFile {
        version: CONFIG_VERSION,
        address: hub_addr,
        addresses: Vec::new(),
        server_name: "hub".into(),
        tls: tls(Role::Admin, "admin")?,
    };
    out.push(toml_file(
        "admin.toml".into(),
        "# truc report --config admin.toml\n\
         # The hub's operator. Keys: `ClientFile` in crates/ops/src/config.rs.",
        &admin,
    )?);
    Ok(out)
}

/// The registry, for the nodes at these addresses. The registry has no
/// serializable model yet, so this one stays a template.
pub(crate) fn registry(
    ministry: &dyn std::fmt::Display,
    province: &dyn std::fmt::Display,
    witness: &[Option<String>; 2],
) -> String {
    // The hub checks a node's cosignatures of its log with this key.
    let witness_key = |i: usize, id: &str| match &witness[i] {
        Some(hex) => format!("witness_key = \"{hex}\"\n"),
        None => format!("# witness_key = \"...\"  # the hex in pki/node-{id}-witness.pub\n"),
    };
    let (w0, w1) = (witness_key(0, MINISTRY_NODE), witness_key(1, PROVINCE_NODE));
    format!(
        r#"# The registry the hub enforces: who exists, which node hosts whom, which
# services exist and who may call them. Keep it under version control.

[[agency]]
code = "{G22}"
name = "Văn phòng Chính phủ"

[[agency]]
code = "{H37}"
name = "UBND tỉnh Lạng Sơn"

[[agency]]
code = "{H37_DEPT}"  # illustrative code of a department
name = "Sở Tư pháp tỉnh Lạng Sơn"
parent = "{H37}"

[[node]]
id = "{MINISTRY_NODE}"
address = "{ministry}"
agencies = ["{G22}"]
{w0}
[[node]]
id = "{PROVINCE_NODE}"
address = "{province}"
agencies = ["{H37}", "{H37_DEPT}"]
{w1}
[[service]]
id = "{CITIZEN_LOOKUP}"
description = "Look up a citizen record by citizen id"

[[service]]
id = "{HOUSEHOLD_REGISTRY}"
description = "Look up a household registration in Lạng Sơn"

# Grants name the exact client agency; a parent's grant does not cover its departments.
[[grant]]
client = "{H37}"
services = ["{CITIZEN_LOOKUP}"]

[[grant]]
client = "{H37_DEPT}"
services = ["{CITIZEN_LOOKUP}"]

[[grant]]
client = "{G22}"
services = ["{HOUSEHOLD_REGISTRY}"]
"#
    )
}

/// The example files of `deploy/` (name, text): the demo's deployment on
/// fixed ports (hub 7000, nodes 7101 and 7201, their HTTP listeners 7102
/// and 7202, backends 7301 and 7401, ops ports 9100, 9101, 9201), data under `data/`, default limits.
/// Then those of `deploy/k8s/` (named `k8s/...`, [`crate::k8s::k8s_examples`]).
/// `tests/deploy.rs` checks that `deploy/` holds exactly these.
pub fn deploy_examples() -> Result<Vec<(String, String)>, DemoError> {
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let plan = Plan {
        vxp: None,
        hub: (at(7000), at(9100)),
        replicas: Vec::new(),
        nodes: [
            (at(7101), at(9101), at(7301)),
            (at(7201), at(9201), at(7401)),
        ],
        province_rest: true,
        http: [at(7102), at(7202)],
        hub_data: "data/hub".into(),
        node_data: "data".into(),
        limits: Limits::default(),
        witness_keys: [None, None],
    };
    let mut out: Vec<(String, String)> = files(&plan)?
        .into_iter()
        .map(|f| (f.name, f.text))
        .collect();
    out.extend(crate::k8s::k8s_examples()?);
    Ok(out)
}
