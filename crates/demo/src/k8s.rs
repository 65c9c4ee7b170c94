//! The config files of `deploy/k8s/`, serialized from the config types like
//! those of `deploy/`: the hub's (one file for every replica of the
//! StatefulSet), the readiness probe's, the ministry node's and the
//! registry. `deploy/k8s/kustomization.yaml` turns them into ConfigMaps;
//! every path in them is where `deploy/k8s/*.yaml` mounts a Secret or a
//! ConfigMap (`deploy/k8s/check.sh` checks that against the manifests).

use std::path::{Path, PathBuf};

use truc_hub::{Dashboard, HubFile, Peer};
use truc_node::{
    AuditKeyEntry, BackendEntry, ClientEntry, DocumentService, HttpSection, HubSection, NodeFile,
    WitnessSection,
};
use truc_ops::config::{CONFIG_VERSION, ClientFile, CrlPolicySetting, Limits, TlsSection};

use crate::{
    CITIZEN_LOOKUP, DemoError, G22, MINISTRY_CLIENT, MINISTRY_NODE,
    configs::{registry, toml_file},
};

/// The namespace the manifests use.
pub const NAMESPACE: &str = "truc";
/// The hub's replicas (the StatefulSet's `replicas`; pods `hub-0`, ...).
pub const HUB_REPLICAS: usize = 3;
/// The hub's gRPC port, its ops port; the node's gRPC, HTTP and ops ports.
const HUB_PORT: u16 = 7000;
const HUB_OPS_PORT: u16 = 9100;
const NODE_PORT: u16 = 7101;
const NODE_HTTP_PORT: u16 = 7102;
const NODE_OPS_PORT: u16 = 9101;

/// A file under a mount point.
fn at(dir: &str, file: &str) -> PathBuf {
    Path::new(dir).join(file)
}

/// The TLS section for a pod whose Secret `dir` holds `tls.crt` and
/// `tls.key`, and whose Secret `/etc/truc/tls` the CA and its CRL.
fn tls(dir: &str) -> TlsSection {
    TlsSection {
        ca: at("/etc/truc/tls", "ca.crt"),
        cert: at(dir, "tls.crt"),
        key: at(dir, "tls.key"),
        // `truc pki revoke` rewrites it; re-applying the Secret updates
        // the mounted file in place and the process reloads it.
        crls: vec![at("/etc/truc/tls", "ca.crl")],
        crl_policy: CrlPolicySetting::Warn,
    }
}

/// The headless Service's name for the hub's pods, in the namespace.
fn hub_dns() -> String {
    format!("hub.{NAMESPACE}.svc.cluster.local:{HUB_PORT}")
}

/// The ministry node's stable address: its StatefulSet's pod 0 behind its
/// headless Service.
fn node_dns() -> String {
    format!("{MINISTRY_NODE}-0.node-{MINISTRY_NODE}.{NAMESPACE}.svc.cluster.local:{NODE_PORT}")
}

/// The files of `deploy/k8s/` that the config types produce (name under
/// `deploy/`, text).
pub fn k8s_examples() -> Result<Vec<(String, String)>, DemoError> {
    let header = |what: &str| {
        format!(
            "# {what}\n\
             # Generated from the config types (see deploy/README.md): edit those, not this file."
        )
    };
    let hub = HubFile {
        version: CONFIG_VERSION,
        listen: format!("0.0.0.0:{HUB_PORT}"),
        ops_listen: format!("0.0.0.0:{HUB_OPS_PORT}"),
        data_dir: "/var/lib/truc/hub".into(),
        registry: at("/etc/truc/registry", "registry.toml"),
        audit_key: None,
        // One key per replica (`hub-0.key`, ...): the pod's name, given as
        // TRUC_REPLICA, picks it and ends the log's origin.
        audit_key_dir: Some("/etc/truc/audit".into()),
        time_zone: "Asia/Ho_Chi_Minh".into(),
        log_origin: None,
        tls: tls("/etc/truc/hub"),
        limits: k8s_limits(),
        documents: Default::default(),
        dashboard: Dashboard::default(),
        // Every replica: each pod leaves itself out by its name, so the
        // dashboard of any shows the whole StatefulSet.
        peers: (0..HUB_REPLICAS)
            .map(|i| Peer {
                name: format!("hub-{i}"),
                address: format!("hub-{i}.hub.{NAMESPACE}.svc.cluster.local:{HUB_PORT}"),
            })
            .collect(),
        end_user_key: None,
        id_filter_ids: None,
        tracing: Default::default(),
    };
    let probe = ClientFile {
        version: CONFIG_VERSION,
        address: format!("127.0.0.1:{HUB_PORT}"),
        addresses: Vec::new(),
        server_name: "hub".into(),
        tls: tls("/etc/truc/probe"),
    };
    let node = NodeFile {
        version: CONFIG_VERSION,
        id: MINISTRY_NODE.into(),
        listen: format!("0.0.0.0:{NODE_PORT}"),
        ops_listen: format!("0.0.0.0:{NODE_OPS_PORT}"),
        data_dir: at("/var/lib/truc", MINISTRY_NODE),
        hub: HubSection {
            address: hub_dns(),
            addresses: Vec::new(),
            name: "hub".into(),
            registry_refresh_secs: 10,
            audit_keys: (0..HUB_REPLICAS)
                .map(|i| AuditKeyEntry {
                    file: at("/etc/truc/hub-audit", &format!("hub-{i}.pub")),
                    // `truc hub --replica hub-{i}` ends the origin with its name.
                    origin: Some(format!("hub/truc-audit/hub-{i}")),
                    not_before: None,
                    not_after: None,
                })
                .collect(),
        },
        tls: tls("/etc/truc/node"),
        limits: k8s_limits(),
        documents: Default::default(),
        document_service: DocumentService::default(),
        tracing: Default::default(),
        clients: vec![ClientEntry {
            name: MINISTRY_CLIENT.into(),
            agencies: vec![G22.into()],
        }],
        backends: vec![BackendEntry {
            service: CITIZEN_LOOKUP.into(),
            // The agency's own system: not part of these manifests.
            address: format!("citizen-lookup.{NAMESPACE}.svc.cluster.local:7301"),
            ca: None,
        }],
        witness: WitnessSection {
            key: Some(at("/etc/truc/witness", "witness.key")),
            ..WitnessSection::default()
        },
        http: Some(HttpSection {
            listen: format!("0.0.0.0:{NODE_HTTP_PORT}"),
            request_timeout_ms: 30_000,
        }),
        vxp: None,
    };
    let files = [
        toml_file(
            "k8s/hub.toml".into(),
            &header(
                "truc hub --config /etc/truc/config/hub.toml, in every pod of the hub's StatefulSet.\n\
                 # Keys: `HubFile` in crates/hub/src/config.rs.",
            ),
            &hub,
        )?,
        toml_file(
            "k8s/probe.toml".into(),
            &header(
                "truc health --config /etc/truc/config/probe.toml: the hub's readiness probe.\n\
                 # Keys: `ClientFile` in crates/ops/src/config.rs.",
            ),
            &probe,
        )?,
        toml_file(
            format!("k8s/node-{MINISTRY_NODE}.toml"),
            &header(&format!(
                "truc node --config /etc/truc/config/node.toml: node {MINISTRY_NODE}.\n\
                 # Keys: `NodeFile` in crates/node/src/config.rs."
            )),
            &node,
        )?,
    ];
    let mut out: Vec<(String, String)> = files.into_iter().map(|f| (f.name, f.text)).collect();
    out.push((
        "k8s/registry.toml".into(),
        registry(
            &node_dns(),
            // The province runs its node in its own data centre (a placeholder).
            &"lgsp-langson.example:7201",
            &[None, None],
        ),
    ));
    Ok(out)
}

/// The drain deadline of the pods' configs: the manifests'
/// `terminationGracePeriodSeconds` (45) stays above it, so calls in flight
/// finish before the kubelet's SIGKILL.
pub const K8S_DRAIN_DEADLINE_SECS: u64 = 30;

/// The default limits, with [`K8S_DRAIN_DEADLINE_SECS`].
fn k8s_limits() -> Limits {
    Limits {
        drain_deadline_secs: K8S_DRAIN_DEADLINE_SECS,
        ..Limits::default()
    }
}
