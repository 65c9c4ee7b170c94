#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! A hub replica as a Kubernetes StatefulSet runs it: one config for every
//! replica, the replica's name from `TRUC_REPLICA`, its key picked from a
//! directory of keys; and `truc health`, the readiness probe, over mutual TLS.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::Stdio,
};

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// Asserts the exit code, showing stderr otherwise.
fn exits(out: &std::process::Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", text(&out.stderr));
}

/// `truc health --config CONFIG [more]`.
fn health(config: &Path, more: &[&str]) -> std::process::Output {
    let mut args = vec!["health", "--config", s(config)];
    args.extend_from_slice(more);
    run(&args)
}

fn client_file(path: &Path, address: &str, role_name: &str) {
    std::fs::write(
        path,
        format!(
            "address = \"{address}\"\nserver_name = \"hub\"\n[tls]\nca = \"pki/ca.crt\"\n\
             cert = \"pki/{role_name}.crt\"\nkey = \"pki/{role_name}.key\"\n"
        ),
    )
    .expect("write");
}

#[test]
fn a_replica_picks_its_key_by_name_and_truc_health_probes_it_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let pki = d.join("pki");
    let keys = d.join("keys");
    let out = run(&[
        "pki",
        "init",
        "--dir",
        s(&pki),
        "--node",
        "vpcp",
        "--node",
        "lgsp-langson",
        "--client",
        "vpcp-dms",
        "--client",
        "langson-dms",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&[
        "pki",
        "issue",
        "--dir",
        s(&pki),
        "--role",
        "admin",
        "--name",
        "probe",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["pki", "audit-key", "--dir", s(&keys), "--name", "hub-0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(keys.join("hub-0.key").exists() && keys.join("hub-0.pub").exists());
    // Never overwritten; a name that is no DNS label is refused.
    let again = run(&["pki", "audit-key", "--dir", s(&keys), "--name", "hub-0"]);
    exits(&again, 2);
    let bad = run(&["pki", "audit-key", "--dir", s(&keys), "--name", "../hub-0"]);
    exits(&bad, 2);
    assert!(!d.join("hub-0.key").exists());

    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/registry.toml"),
        d.join("registry.toml"),
    )
    .expect("registry");
    let hub_toml = d.join("hub.toml");
    std::fs::write(
        &hub_toml,
        "listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
         registry = \"registry.toml\"\naudit_key_dir = \"keys\"\n\
         [tls]\nca = \"pki/ca.crt\"\ncert = \"pki/hub-hub.crt\"\nkey = \"pki/hub-hub.key\"\n",
    )
    .expect("write");

    // A replica without a key of its own does not start (exit 2, naming the file).
    let no_key = truc()
        .args(["hub", "--config", s(&hub_toml)])
        .env("TRUC_REPLICA", "hub-1")
        .output()
        .expect("run");
    exits(&no_key, 2);
    assert!(
        text(&no_key.stderr).contains("hub-1.key"),
        "{}",
        text(&no_key.stderr)
    );
    let unnamed = run(&["hub", "--config", s(&hub_toml)]);
    exits(&unnamed, 2);
    assert!(
        text(&unnamed.stderr).contains("TRUC_REPLICA"),
        "{}",
        text(&unnamed.stderr)
    );

    // The replica's key is the one read: a broken `hub-2.key` stops hub-2.
    std::fs::write(keys.join("hub-2.key"), "not a key").expect("write");
    let broken = truc()
        .args(["hub", "--config", s(&hub_toml)])
        .env("TRUC_REPLICA", "hub-2")
        .output()
        .expect("run");
    assert_ne!(broken.status.code(), Some(0));
    assert!(
        text(&broken.stderr).contains("hub-2.key"),
        "{}",
        text(&broken.stderr)
    );

    let mut child = truc()
        .args(["hub", "--config", s(&hub_toml)])
        .env("TRUC_REPLICA", "hub-0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let mut hub = Process(child);
    // "hub listening on ADDR (ops ADDR)"
    let addr = line
        .strip_prefix("hub listening on ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();

    let probe = d.join("probe.toml");
    client_file(&probe, &addr, "admin-probe");
    let up = health(&probe, &[]);
    exits(&up, 0);
    assert_eq!(text(&up.stdout), "SERVING\n");
    let hub_service = health(&probe, &["--service", "truc.v1.Hub"]);
    exits(&hub_service, 0);
    let unknown = health(&probe, &["--service", "truc.v1.Nope"]);
    exits(&unknown, 1);
    assert!(
        text(&unknown.stderr).contains("no such service"),
        "{}",
        text(&unknown.stderr)
    );
    // An agency system's certificate expects a node at the other end: the
    // hub's certificate is refused, nothing is asked (exit 3).
    let agency = d.join("agency.toml");
    client_file(&agency, &addr, "client-vpcp-dms");
    let wrong = health(&agency, &[]);
    exits(&wrong, 3);
    let bad_timeout = health(&probe, &["--timeout", "0"]);
    exits(&bad_timeout, 2);

    assert!(hub.signal_and_wait("TERM").success());
    // Nothing listens any more: the probe cannot check (exit 3).
    let down = health(&probe, &["--timeout", "2"]);
    exits(&down, 3);
}
