#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! The example files in `deploy/` are what the config types produce
//! (`truc_demo::deploy_examples`), and they load: registry, hub, nodes,
//! clients.

use std::path::Path;

use truc_devca::InitOptions;

fn deploy_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy"))
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
    truc_devca::init(
        &dir.path().join("pki"),
        &InitOptions {
            hub: "hub".into(),
            nodes: vec!["vpcp".into(), "lgsp-langson".into()],
            admin: "admin".into(),
            clients: vec!["vpcp-dms".into(), "langson-dms".into()],
            validity_days: 1,
        },
    )
    .expect("pki");
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
}

/// Rewrites `deploy/*.toml` from the config types.
#[test]
#[ignore = "writes deploy/: run it to regenerate the example configs"]
fn regenerate_deploy_examples() {
    for (name, text) in truc_demo::deploy_examples().expect("examples") {
        std::fs::write(deploy_dir().join(&name), text).expect("write");
    }
}
