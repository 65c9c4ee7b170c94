#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! The example files in `deploy/` are what the config types produce
//! (`truc_demo::deploy_examples`), and they load: registry, hub, nodes,
//! clients; those of `deploy/k8s/` load too, from where the manifests mount
//! the Secrets and ConfigMaps that `kustomization.yaml` makes.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use truc_devca::InitOptions;

fn deploy_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy"))
}

/// The development PKI of the demo's deployment in `dir` (what `truc pki
/// init` writes for it).
fn dev_pki(dir: &Path) -> truc_pki::Layout {
    truc_devca::init(
        dir,
        &InitOptions {
            hub: "hub".into(),
            nodes: vec!["vpcp".into(), "lgsp-langson".into()],
            admin: "admin".into(),
            clients: vec!["vpcp-dms".into(), "langson-dms".into()],
            validity_days: 1,
        },
    )
    .expect("pki")
}

#[test]
fn example_configs_are_valid() {
    let dir = tempfile::tempdir().expect("dir");
    for entry in std::fs::read_dir(deploy_dir()).expect("deploy/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_name().expect("name");
            std::fs::copy(&path, dir.path().join(name)).expect("copy");
        }
    }
    dev_pki(&dir.path().join("pki"));
    let registry =
        truc_registry::Registry::load(&dir.path().join("registry.toml")).expect("registry");
    let hub = truc_hub::HubConfig::load(&dir.path().join("hub.toml")).expect("hub.toml");
    assert_eq!(hub.registry, dir.path().join("registry.toml"));
    for node in ["vpcp", "lgsp-langson"] {
        let config = truc_node::NodeConfig::load(&dir.path().join(format!("node-{node}.toml")))
            .unwrap_or_else(|e| panic!("node-{node}.toml: {e}"));
        let in_registry = registry.node(&config.id).expect("node in registry");
        assert_eq!(in_registry.address, config.listen.to_string());
        // Every agency a client may act for is hosted by this node.
        for agencies in config.clients.values() {
            for a in agencies {
                assert!(registry.hosts(&config.id, a), "{a} not hosted by {node}");
            }
        }
        for service in config.backends.keys() {
            assert!(registry.service(service).is_some(), "{service}");
        }
    }
    for client in [
        "client-langson-dms.toml",
        "client-vpcp-dms.toml",
        "admin.toml",
    ] {
        truc_ops::config::ClientConfig::load(&dir.path().join(client))
            .unwrap_or_else(|e| panic!("{client}: {e}"));
    }
}

/// Every example config is exactly what the types produce, and every
/// produced file is in `deploy/`: a new config key shows up here until the
/// files are regenerated (`cargo test -p truc-tests --test deploy -- --ignored`).
#[test]
fn example_configs_are_generated_from_the_types() {
    let examples = truc_demo::deploy_examples().expect("examples");
    assert!(examples.len() >= 6, "{} files", examples.len());
    for (name, text) in &examples {
        let on_disk = std::fs::read_to_string(deploy_dir().join(name))
            .unwrap_or_else(|e| panic!("deploy/{name}: {e}"));
        assert!(
            on_disk == *text,
            "deploy/{name} differs from what the config types produce; regenerate with \
             `cargo test -p truc-tests --test deploy -- --ignored regenerate`"
        );
    }
    for entry in std::fs::read_dir(deploy_dir()).expect("deploy/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        if name.ends_with(".toml") {
            assert!(
                examples.iter().any(|(n, _)| *n == name),
                "deploy/{name} is not produced by deploy_examples()"
            );
        }
    }
    for entry in std::fs::read_dir(deploy_dir().join("k8s")).expect("deploy/k8s/") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        if name.ends_with(".toml") {
            assert!(
                examples.iter().any(|(n, _)| *n == format!("k8s/{name}")),
                "deploy/k8s/{name} is not produced by deploy_examples()"
            );
        }
    }
}

/// `kustomization.yaml`'s generators: object name → (key in the object,
/// file beside `kustomization.yaml`). Read line by line: the file keeps to
/// `- name: N` then `files:` then `- KEY=FILE` or `- FILE`.
fn generators(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- name: ") {
            current = Some(name.to_string());
        } else if let (Some(name), Some(item)) = (&current, line.strip_prefix("- ")) {
            let (key, file) = match item.split_once('=') {
                Some((k, f)) => (k.to_string(), f.to_string()),
                None => (item.to_string(), item.to_string()),
            };
            out.entry(name.clone()).or_default().push((key, file));
        } else if !line.starts_with("files:") {
            current = None;
        }
    }
    out
}

/// A StatefulSet manifest's mounts: mount path → the ConfigMap or Secret
/// mounted there (`None` for a volume claim or an emptyDir). Read line by
/// line: volumeMounts keep to `- name: V` then `mountPath: P`, volumes to
/// `- name: V` then `configMap:` / `secret:` then `name: N` / `secretName: N`.
fn mounts(text: &str) -> BTreeMap<String, Option<String>> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut paths = BTreeMap::new();
    let mut objects = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(volume) = line.strip_prefix("- name: ") else {
            continue;
        };
        let next = |k: usize| lines.get(i + k).copied().unwrap_or("");
        if let Some(path) = next(1).strip_prefix("mountPath: ") {
            paths.insert(volume.to_string(), path.to_string());
        } else if next(1) == "configMap:" || next(1) == "secret:" {
            let object = next(2)
                .strip_prefix("name: ")
                .or_else(|| next(2).strip_prefix("secretName: "))
                .unwrap_or_else(|| panic!("volume {volume}: {:?}", next(2)));
            objects.insert(volume.to_string(), object.to_string());
        }
    }
    assert!(!paths.is_empty(), "no volumeMounts");
    paths
        .into_iter()
        .map(|(volume, path)| (path, objects.get(&volume).cloned()))
        .collect()
}

/// Lays out one pod's files under `root` as kubelet would mount them:
/// every generated object's keys in its mount directory, the sources taken
/// from `sources` (what `deploy/k8s/pki.sh` and the generated configs
/// make). Returns the mount paths of the volumes that are not objects.
fn mount_pod(root: &Path, manifest: &str, sources: &Path) -> Vec<PathBuf> {
    let kustomization =
        std::fs::read_to_string(deploy_dir().join("k8s/kustomization.yaml")).expect("read");
    let generated = generators(&kustomization);
    let mut plain = Vec::new();
    for (path, object) in mounts(manifest) {
        let dir = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).expect("mount dir");
        let Some(object) = object else {
            plain.push(dir);
            continue;
        };
        let files = generated.get(&object).unwrap_or_else(|| {
            panic!("{object} mounted at {path} is not made by kustomization.yaml")
        });
        for (key, file) in files {
            std::fs::copy(sources.join(file), dir.join(key))
                .unwrap_or_else(|e| panic!("{object}: {file}: {e}"));
        }
    }
    plain
}

/// Points the absolute paths of a pod's config below `root`.
fn rooted(config: &Path, root: &Path) -> PathBuf {
    let text = std::fs::read_to_string(config).expect("read");
    let moved = root.join("moved").join(config.file_name().expect("name"));
    std::fs::create_dir_all(moved.parent().expect("dir")).expect("dir");
    let root = root.to_str().expect("utf-8");
    let text = text
        .replace("\"/etc/truc/", &format!("\"{root}/etc/truc/"))
        .replace("\"/var/lib/truc/", &format!("\"{root}/var/lib/truc/"));
    std::fs::write(&moved, text).expect("write");
    moved
}

/// The configs of `deploy/k8s/` load in each pod from the files the
/// manifests mount there: every path they name is in a mounted Secret or
/// ConfigMap that `kustomization.yaml` makes from what `deploy/k8s/pki.sh`
/// writes, every hub replica finds its own key, and the data directories
/// are on the pods' volumes.
#[test]
fn k8s_configs_load_from_what_the_manifests_mount() {
    let sources = tempfile::tempdir().expect("dir");
    let src = sources.path();
    for (name, text) in truc_demo::deploy_examples().expect("examples") {
        if let Some(name) = name.strip_prefix("k8s/") {
            std::fs::write(src.join(name), text).expect("write");
        }
    }
    // What deploy/k8s/pki.sh makes, by the same calls as its `truc pki` lines.
    let pki_sh = std::fs::read_to_string(deploy_dir().join("k8s/pki.sh")).expect("pki.sh");
    assert!(pki_sh.contains("--role admin --name probe"), "{pki_sh}");
    let layout = dev_pki(&src.join("pki"));
    let probe = truc_pki::Identity::new(truc_pki::Role::Admin, "probe").expect("name");
    truc_devca::issue(&layout, &probe, 1).expect("probe");
    for i in 0..truc_demo::k8s::HUB_REPLICAS {
        truc_devca::replica_audit_key(&src.join("keys"), &format!("hub-{i}")).expect("key");
    }

    let hub_root = tempfile::tempdir().expect("dir");
    let root = hub_root.path();
    let manifest = std::fs::read_to_string(deploy_dir().join("k8s/hub.yaml")).expect("hub.yaml");
    assert!(
        manifest.contains(&format!("replicas: {}", truc_demo::k8s::HUB_REPLICAS)),
        "the StatefulSet runs as many replicas as there are keys"
    );
    let volumes = mount_pod(root, &manifest, src);
    let hub_toml = rooted(&root.join("etc/truc/config/hub.toml"), root);
    let mut origins = std::collections::BTreeSet::new();
    for i in 0..truc_demo::k8s::HUB_REPLICAS {
        let name = format!("hub-{i}");
        let hub = truc_hub::HubConfig::load_replica(&hub_toml, Some(&name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            hub.audit_key.ends_with(format!("{name}.key")),
            "{:?}",
            hub.audit_key
        );
        assert!(
            volumes.iter().any(|v| hub.data_dir.starts_with(v)),
            "{:?} is on no volume of the pod",
            hub.data_dir
        );
        let identity = truc_pki::Identity::from_cert_pem(
            &std::fs::read(&hub.tls.cert).expect("hub certificate"),
        )
        .expect("a truc certificate");
        assert_eq!(identity.role, truc_pki::Role::Hub);
        origins.insert(hub.log_origin());
        let registry = truc_registry::Registry::load(&hub.registry).expect("registry");
        let vpcp = truc_registry::NodeId::parse("vpcp").expect("id");
        assert!(registry.node(&vpcp).is_some());
    }
    assert_eq!(origins.len(), truc_demo::k8s::HUB_REPLICAS, "{origins:?}");
    let probe = truc_ops::config::ClientConfig::load(&rooted(
        &root.join("etc/truc/config/probe.toml"),
        root,
    ))
    .expect("probe.toml");
    let identity =
        truc_pki::Identity::from_cert_pem(&std::fs::read(&probe.tls.cert).expect("cert"))
            .expect("a truc certificate");
    assert_eq!(
        identity.role,
        truc_pki::Role::Admin,
        "the probe asks the hub"
    );

    let node_root = tempfile::tempdir().expect("dir");
    let root = node_root.path();
    let manifest =
        std::fs::read_to_string(deploy_dir().join("k8s/node-vpcp.yaml")).expect("node-vpcp.yaml");
    let volumes = mount_pod(root, &manifest, src);
    let node = truc_node::NodeConfig::load(&rooted(&root.join("etc/truc/config/node.toml"), root))
        .expect("node.toml");
    assert_eq!(node.id.to_string(), "vpcp");
    assert!(
        volumes.iter().any(|v| node.data_dir.starts_with(v)),
        "{:?}",
        node.data_dir
    );
    let identity = truc_pki::Identity::from_cert_pem(&std::fs::read(&node.tls.cert).expect("cert"))
        .expect("a truc certificate");
    assert_eq!(identity.name, "vpcp");
    for manifest in ["hub.yaml", "node-vpcp.yaml"] {
        let text = std::fs::read_to_string(deploy_dir().join("k8s").join(manifest)).expect("read");
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with("subPath")),
            "{manifest}: a subPath mount is never updated by kubelet"
        );
    }
}

/// The number after `key` (`key: 45`, `key=30`) on the first line of
/// `text` that has it.
fn number_after(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(key))
        .and_then(|rest| rest.trim_start_matches([':', '=', ' ']).trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key}"))
}

/// Every service manager gives a stopping process more time than its
/// config's drain deadline: calls in flight finish before SIGKILL.
#[test]
fn stop_timeouts_are_above_the_drain_deadlines() {
    let examples: BTreeMap<String, String> = truc_demo::deploy_examples()
        .expect("examples")
        .into_iter()
        .collect();
    let deadline = |name: &str| -> u64 {
        let text = examples.get(name).unwrap_or_else(|| panic!("{name}"));
        number_after(text, "drain_deadline_secs")
    };
    let read = |p: &str| std::fs::read_to_string(deploy_dir().join(p)).expect(p);
    for (manager, config) in [
        ("k8s/hub.yaml", "k8s/hub.toml"),
        ("k8s/node-vpcp.yaml", "k8s/node-vpcp.toml"),
    ] {
        let grace = number_after(&read(manager), "terminationGracePeriodSeconds");
        assert_eq!(deadline(config), truc_demo::k8s::K8S_DRAIN_DEADLINE_SECS);
        assert!(grace > deadline(config), "{manager}: {grace} s");
    }
    for (manager, config) in [
        ("systemd/truc-hub.service", "hub.toml"),
        ("systemd/truc-node@.service", "node-vpcp.toml"),
        ("systemd/truc-node@.service", "node-lgsp-langson.toml"),
    ] {
        let stop = number_after(&read(manager), "TimeoutStopSec");
        assert!(stop > deadline(config), "{manager}: {stop} s");
    }
}

/// Rewrites `deploy/*.toml` from the config types.
#[test]
#[ignore = "writes deploy/: run it to regenerate the example configs"]
fn regenerate_deploy_examples() {
    for (name, text) in truc_demo::deploy_examples().expect("examples") {
        let path = deploy_dir().join(&name);
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        std::fs::write(path, text).expect("write");
    }
}
