#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! `truc call --purpose --end-user --case`: the values reach the hub's
//! record; a hostile one is refused before it leaves the node.

mod common;

use common::*;
use truc_demo::{CITIZEN_LOOKUP, DemoOptions, Deployment, H37, PROVINCE_CLIENT};
use truc_pki::{Identity, Role};
use truc_proto::v1::{ListRecordsRequest, audit_client::AuditClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truc_call_says_why_the_call_is_made() {
    let dir = tempfile::tempdir().expect("dir");
    let d = Deployment::start(DemoOptions::new(dir.path().join("d")))
        .await
        .expect("deployment");
    let (_, config) = d
        .files
        .client_configs
        .iter()
        .find(|(c, _)| c == PROVINCE_CLIENT)
        .expect("client config");
    let config = config.to_str().expect("utf-8").to_string();
    let call = |end_user: &str| {
        [
            "call",
            "--config",
            &config,
            "--as",
            H37,
            "--service",
            CITIZEN_LOOKUP,
            "--data",
            r#"{"id":"001089012345"}"#,
            "--purpose",
            "giải quyết thủ tục hành chính",
            "--end-user",
            end_user,
            "--case",
            "HS-2026/7",
        ]
        .map(String::from)
        .to_vec()
    };
    let ok = truc_async(call("Nguyễn Văn A")).await;
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let bad = truc_async(call("Nguyễn\nVăn A")).await;
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("end_user"),
        "{}",
        text(&bad.stderr)
    );

    let admin = d
        .files
        .pki
        .files(&Identity::new(Role::Admin, "admin").expect("id"));
    let tls = truc_pki::client_config(&admin).expect("tls");
    let channel = truc_pki::channel(&d.hub().addr().to_string(), "hub", tls).expect("channel");
    let records = AuditClient::new(channel)
        .list_records(ListRecordsRequest {
            case: "HS-2026/7".into(),
            ..ListRecordsRequest::default()
        })
        .await
        .expect("records")
        .into_inner()
        .records;
    let r = records
        .iter()
        .filter_map(|r| r.record.as_ref())
        .collect::<Vec<_>>();
    assert_eq!(r.len(), 1, "the refused call never reached the hub: {r:?}");
    assert_eq!(
        (
            r[0].purpose.as_str(),
            r[0].end_user.as_str(),
            r[0].outcome.as_str()
        ),
        ("giải quyết thủ tục hành chính", "Nguyễn Văn A", "OK")
    );
    d.stop().await.expect("stop");
}
