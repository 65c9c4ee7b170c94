#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! The operator's checks that do not trust the hub: `truc audit head`
//! prints the checkpoint a node verified and cosigned, `truc audit verify
//! --witness` checks the hub's records against it, and `truc audit
//! consistency --head` checks the running hub against it. Exit codes: 0
//! verified, 1 tampered, 2 bad input.

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::*;
use truc_demo::{CITIZEN_LOOKUP, DemoOptions, Deployment, H37, PROVINCE_CLIENT, PROVINCE_NODE};
use truc_pki::{Identity, Role};
use truc_proto::v1::{CallRequest, GetTreeHeadRequest, audit_client::AuditClient};

async fn calls(d: &Deployment, n: usize) {
    let mut client = d
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    for _ in 0..n {
        client
            .call(CallRequest {
                client_agency: H37.into(),
                service: CITIZEN_LOOKUP.into(),
                content_type: "application/json".into(),
                payload: bytes::Bytes::from_static(br#"{"id":"001089012345"}"#),
                ..CallRequest::default()
            })
            .await
            .expect("call");
    }
}

/// Waits until the hub serves the province's cosignature of the head of
/// `size` (polled: the node gives no event outside).
async fn cosigned(d: &Deployment, size: u64) {
    let files = d
        .files
        .pki
        .files(&Identity::new(Role::Admin, "admin").expect("id"));
    let tls = truc_pki::client_config(&files).expect("tls");
    let channel = truc_pki::channel(&d.hub().addr().to_string(), "hub", tls).expect("channel");
    let mut audit = AuditClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let head = audit
            .get_tree_head(GetTreeHeadRequest { tree_size: size })
            .await
            .expect("head")
            .into_inner();
        if head.cosignatures.iter().any(|c| c.name == PROVINCE_NODE) {
            return;
        }
        assert!(Instant::now() < deadline, "no cosignature of size {size}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

async fn consistency(dir: &Path, head: &Path) -> std::process::Output {
    truc_async(
        [
            "audit",
            "consistency",
            "--config",
            s(&dir.join("admin.toml")),
            "--head",
            s(head),
            "--public-key",
            s(&dir.join("pki/audit-signing.pub")),
        ]
        .map(String::from)
        .to_vec(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_log_fails_the_checks_against_a_node_s_head() {
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path();
    let hub = dir.join("hub");
    let node = dir.join("nodes").join(PROVINCE_NODE);
    let head_file = dir.join("head.txt");

    let d = Deployment::start(DemoOptions::new(dir))
        .await
        .expect("start");
    calls(&d, 3).await;
    cosigned(&d, 3).await;
    d.stop().await.expect("stop");

    // The node's head, as a C2SP checkpoint with the hub's signature and
    // the node's cosignature.
    let out = run(&["audit", "head", "--data", s(&node)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let note = text(&out.stdout);
    assert!(note.starts_with("hub/truc-audit\n3\n"), "{note}");
    assert_eq!(note.matches('\u{2014}').count(), 2, "{note}");
    assert!(
        note.contains(&format!("\u{2014} {PROVINCE_NODE} ")),
        "{note}"
    );
    std::fs::write(&head_file, &note).expect("write");
    let out = run(&["audit", "verify", "--data", s(&hub), "--witness", s(&node)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("matches the hub's records"));

    // The honest hub, later: the supplied head is a prefix of its log.
    let d = Deployment::start(DemoOptions::new(dir))
        .await
        .expect("start");
    calls(&d, 1).await;
    let out = consistency(dir, &head_file).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // A head file that is not the hub's is bad input.
    let forged = dir.join("forged.txt");
    std::fs::write(&forged, note.replacen("\n3\n", "\n2\n", 1)).expect("write");
    let out = consistency(dir, &forged).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("forged.txt"),
        "{}",
        text(&out.stderr)
    );
    d.stop().await.expect("stop");

    // The hub rewrites record 0 and re-signs everything with its own key.
    {
        let store = truc_store::Store::open(&hub).expect("store");
        let key = truc_pki::load_audit_key(&dir.join("pki/audit-signing.key")).expect("key");
        let signer = truc_audit::sth::Signer::new(key).with_origin("hub/truc-audit");
        truc_audit::tamper::rewrite_record(&store, 0, &signer, |r| {
            r.response_sha256 = bytes::Bytes::from_static(&[1; 32]);
        })
        .expect("rewrite");
    }
    // Alone, the hub's data verifies; against the node's head, it does not.
    let out = run(&["audit", "verify", "--data", s(&hub)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = run(&["audit", "verify", "--data", s(&hub), "--witness", s(&node)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("TAMPERED: witness"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&[
        "audit",
        "verify",
        "--data",
        s(&hub),
        "--witness",
        s(&dir.join("nothing")),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // And the running hub fails the check against the supplied head.
    let d = Deployment::start(DemoOptions::new(dir))
        .await
        .expect("start");
    let out = consistency(dir, &head_file).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("TAMPERED"),
        "{}",
        text(&out.stdout)
    );
    d.stop().await.expect("stop");
}
