#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! The operator's tools cannot be turned against the operator: `truc fetch
//! --out` writes only new files, `truc pki` never names a node like the hub,
//! a node refuses a server that shows a node certificate for the hub's name,
//! reflection shows what each server serves (v1 and v1alpha), and the
//! systemd units raise the descriptor limit.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Output,
    sync::Arc,
    time::{Duration, Instant},
};

use common::*;
use tokio_stream::StreamExt;
use truc_demo::{
    DemoOptions, Deployment, G22, H37, MINISTRY_CLIENT, MINISTRY_NODE, PROVINCE_CLIENT,
    PROVINCE_NODE,
};
use truc_pki::{Identity, Layout, Role};

/// Runs the `truc` binary off the async runtime.
async fn truc_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args)
    })
    .await
    .expect("truc")
}

fn client_config(d: &Deployment, client: &str) -> String {
    let (_, path) = d
        .files
        .client_configs
        .iter()
        .find(|(c, _)| c == client)
        .expect("client config");
    path.to_str().expect("utf-8").to_owned()
}

fn fetch_args(d: &Deployment, doc: &str, out: &Path) -> Vec<String> {
    [
        "fetch",
        "--config",
        &client_config(d, MINISTRY_CLIENT),
        "--as",
        G22,
        "--from",
        H37,
        "--document-id",
        doc,
        "--out",
        out.to_str().expect("utf-8"),
    ]
    .map(String::from)
    .to_vec()
}

fn refused(out: &Output, what: &str) {
    assert!(
        !out.status.success(),
        "{what}: fetch succeeded\n{}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("already exists") || err.contains("symbolic link"),
        "{what}: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_out_never_overwrites_nor_follows_a_link() {
    let dir = tempfile::tempdir().expect("dir");
    let d = Deployment::start(DemoOptions::new(dir.path().join("d")))
        .await
        .expect("deployment");
    let attachment = dir.path().join("bao-cao.pdf");
    std::fs::write(&attachment, b"the report").expect("write");
    let doc = "000.00.00.H37,2026/11/30,77/UBND-VP";
    let sent = truc_async(
        [
            "send",
            "--config",
            &client_config(&d, PROVINCE_CLIENT),
            "--as",
            H37,
            "--to",
            G22,
            "--subject",
            "report",
            "--document-id",
            doc,
            "--attach",
            attachment.to_str().expect("utf-8"),
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert!(sent.status.success(), "{}", text(&sent.stderr));

    // Delivered (the sender's tracking says so, on its watch), then fetched
    // into a fresh directory.
    let province = truc_client::Client::from_grpc(
        d.agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
            .expect("client"),
    );
    province
        .wait_for_status(
            H37,
            doc,
            G22,
            truc_client::has_status("01"),
            Instant::now() + Duration::from_secs(60),
        )
        .await
        .expect("delivered");
    let first = dir.path().join("first");
    let out = truc_async(fetch_args(&d, doc, &first)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(first.join("bao-cao.pdf")).expect("fetched"),
        b"the report"
    );

    // An existing file of the same name is left alone (it was truncated and
    // overwritten before), and nothing else is written.
    let out_dir = dir.path().join("existing");
    std::fs::create_dir(&out_dir).expect("dir");
    std::fs::write(out_dir.join("bao-cao.pdf"), b"mine").expect("write");
    let out = truc_async(fetch_args(&d, doc, &out_dir)).await;
    refused(&out, "existing attachment");
    assert_eq!(
        std::fs::read(out_dir.join("bao-cao.pdf")).expect("kept"),
        b"mine"
    );
    assert!(!out_dir.join("envelope.txt").exists());

    // A link in place of a file is not followed, dangling or not.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").expect("write");
    let linked = dir.path().join("linked");
    std::fs::create_dir(&linked).expect("dir");
    std::os::unix::fs::symlink(&victim, linked.join("envelope.txt")).expect("link");
    let out = truc_async(fetch_args(&d, doc, &linked)).await;
    refused(&out, "envelope.txt is a link");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");

    let dangling = dir.path().join("dangling");
    std::fs::create_dir(&dangling).expect("dir");
    let target = dir.path().join("created-through-a-link");
    std::os::unix::fs::symlink(&target, dangling.join("bao-cao.pdf")).expect("link");
    let out = truc_async(fetch_args(&d, doc, &dangling)).await;
    refused(&out, "dangling link");
    assert!(!target.exists());

    // Nor is the output directory itself a link.
    let real = dir.path().join("real");
    std::fs::create_dir(&real).expect("dir");
    let link_dir = dir.path().join("link-dir");
    std::os::unix::fs::symlink(&real, &link_dir).expect("link");
    let out = truc_async(fetch_args(&d, doc, &link_dir)).await;
    refused(&out, "--out is a link");
    assert_eq!(std::fs::read_dir(&real).expect("real").count(), 0);
    d.stop().await.expect("stop");
}

#[test]
fn pki_never_issues_a_node_named_like_the_hub() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = dir.path().join("pki");
    let p = pki.to_str().expect("utf-8");
    let out = run(&["pki", "init", "--dir", p, "--node", "hub"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("named like the hub"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["pki", "init", "--dir", p, "--node", "n1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&[
        "pki", "issue", "--dir", p, "--role", "node", "--name", "hub",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("named like the hub"),
        "{}",
        text(&out.stderr)
    );
    assert!(!pki.join("node-hub.crt").exists());
    // Participant certificates last at most a year.
    let out = run(&[
        "pki", "issue", "--dir", p, "--role", "node", "--name", "n2", "--days", "3650",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run(&["pki", "issue", "--dir", p, "--role", "node", "--name", "n2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(pki.join("node-n2.crt").is_file());
}

/// A node certificate named `hub`, from the deployment's own CA (as a CA
/// holder's mistake or a stolen CA key would make it).
fn rogue_hub_files(layout: &Layout, dir: &Path) -> truc_pki::TlsFiles {
    let rogue = Layout::new(dir);
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::copy(layout.ca_cert(), rogue.ca_cert()).expect("ca");
    std::fs::copy(layout.ca_key(), rogue.ca_key()).expect("ca key");
    truc_devca::issue(&rogue, &Identity::new(Role::Node, "hub").expect("id"), 30).expect("issue")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_node_certificate_posing_as_the_hub() {
    let dir = tempfile::tempdir().expect("dir");
    let mut d = Deployment::start(DemoOptions::new(dir.path().join("d")))
        .await
        .expect("deployment");
    let rogue = rogue_hub_files(&d.files.pki, &dir.path().join("rogue"));

    // The impostor: a TLS server with that certificate, counting the
    // handshakes it gets through.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let rogue_addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(truc_pki::server_config(&rogue).expect("tls"));
    // (Connections, handshakes ended, handshakes through), watched.
    let (counters, mut seen) = tokio::sync::watch::channel((0usize, 0usize, 0usize));
    let counters = Arc::new(counters);
    let impostor = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counters.send_modify(|c| c.0 += 1);
            let (acceptor, counters) = (acceptor.clone(), counters.clone());
            tokio::spawn(async move {
                let result = acceptor.accept(tcp).await;
                counters.send_modify(|c| {
                    c.1 += 1;
                    c.2 += usize::from(result.is_ok());
                });
                // Hold the connection (a real impostor would answer).
                if let Ok(_tls) = result {
                    std::future::pending::<()>().await;
                }
            });
        }
    });

    // The province's node, restarted with the impostor's address for the hub.
    assert!(d.stop_node(PROVINCE_NODE).await.expect("stop node"));
    let (_, config_path) = d
        .files
        .node_configs
        .iter()
        .find(|(id, _)| id == PROVINCE_NODE)
        .expect("config")
        .clone();
    let config = std::fs::read_to_string(&config_path).expect("read");
    let hub_addr = d.hub().addr().to_string();
    assert!(config.contains(&hub_addr), "{config}");
    let moved: PathBuf = config_path.with_file_name("node-impostor.toml");
    std::fs::write(&moved, config.replace(&hub_addr, &rogue_addr.to_string())).expect("write");
    let node_config = truc_node::NodeConfig::load(&moved).expect("config");
    let node_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let node_addr = node_listener.local_addr().expect("addr");
    let ops_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let node = truc_node::start(
        node_config,
        node_listener,
        ops_listener,
        truc_ops::Shutdown::new(),
        truc_node::RunOptions::default(),
    )
    .await
    .expect("node");

    // A call that needs the hub.
    let files = d
        .files
        .pki
        .files(&Identity::new(Role::Client, PROVINCE_CLIENT).expect("id"));
    let tls = truc_pki::client_config(&files).expect("tls");
    let channel = truc_pki::channel(&node_addr.to_string(), PROVINCE_NODE, tls).expect("channel");
    let mut agency = truc_proto::v1::agency_client::AgencyClient::new(channel);
    let err = agency
        .call(truc_proto::v1::CallRequest {
            client_agency: H37.into(),
            service: truc_demo::CITIZEN_LOOKUP.into(),
            content_type: "application/json".into(),
            payload: bytes::Bytes::from_static(br#"{"id":"001089012345"}"#),
            ..truc_proto::v1::CallRequest::default()
        })
        .await
        .expect_err("no hub to route through");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    // The node did try the impostor, and no handshake got through.
    let (_, _, through) = *tokio::time::timeout(
        Duration::from_secs(30),
        seen.wait_for(|(attempts, done, _)| *attempts > 0 && done == attempts),
    )
    .await
    .expect("the node tried the impostor in time")
    .expect("the impostor is listening");
    assert_eq!(through, 0, "a node certificate passed as the hub");
    impostor.abort();
    node.stop().await.expect("stop");
    d.stop().await.expect("stop");
}

async fn list_services(channel: tonic::transport::Channel, v1alpha: bool) -> Vec<String> {
    macro_rules! list {
        ($v:ident) => {{
            use tonic_reflection::pb::$v::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut stream = ServerReflectionClient::new(channel)
                .server_reflection_info(tokio_stream::iter(vec![request]))
                .await
                .expect("reflection")
                .into_inner();
            let answer = stream.next().await.expect("an answer").expect("ok");
            let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
                panic!("{answer:?}");
            };
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }};
    }
    if v1alpha { list!(v1alpha) } else { list!(v1) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_what_each_server_serves_in_v1_and_v1alpha() {
    let dir = tempfile::tempdir().expect("dir");
    let d = Deployment::start(DemoOptions::new(dir.path().join("d")))
        .await
        .expect("deployment");
    let pki = &d.files.pki;
    let admin =
        truc_pki::client_config(&pki.files(&Identity::new(Role::Admin, "admin").expect("id")))
            .expect("tls");
    let hub = truc_pki::channel(&d.hub().addr().to_string(), "hub", admin).expect("channel");
    let client = truc_pki::client_config(
        &pki.files(&Identity::new(Role::Client, MINISTRY_CLIENT).expect("id")),
    )
    .expect("tls");
    let node_addr = d.node(MINISTRY_NODE).expect("node").addr().to_string();
    let node = truc_pki::channel(&node_addr, MINISTRY_NODE, client).expect("channel");
    let common = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    for v1alpha in [false, true] {
        let mut want: Vec<&str> = common.to_vec();
        want.extend([
            "truc.v1.Admin",
            "truc.v1.Audit",
            "truc.v1.Hub",
            "truc.v1.Reporting",
        ]);
        want.sort();
        assert_eq!(
            list_services(hub.clone(), v1alpha).await,
            want,
            "hub, v1alpha {v1alpha}"
        );
        let mut want: Vec<&str> = common.to_vec();
        want.extend(["truc.v1.Agency", "truc.v1.Node"]);
        want.sort();
        assert_eq!(
            list_services(node.clone(), v1alpha).await,
            want,
            "node, v1alpha {v1alpha}"
        );
    }
    d.stop().await.expect("stop");
}

#[test]
fn systemd_units_raise_the_descriptor_limit() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/systemd"));
    for unit in ["truc-hub.service", "truc-node@.service"] {
        let text = std::fs::read_to_string(dir.join(unit)).expect("unit");
        let limit = text
            .lines()
            .find_map(|l| l.strip_prefix("LimitNOFILE="))
            .unwrap_or_else(|| panic!("{unit} sets no LimitNOFILE"));
        let n: u64 = limit.trim().parse().expect("a number");
        // Above the default connection and handshake limits, with room for files.
        assert!(n >= 8192, "{unit}: LimitNOFILE={n}");
    }
}
