#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Nodes witness the hub's audit log: they cosign the heads they verified,
//! the hub serves the cosignatures, and a hub that rewrites its log and
//! re-signs it with its own key is caught by a node at its next contact and
//! by the offline check against the heads the node kept.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use truc_audit::{sth, witness};
use truc_pki::Role;
use truc_proto::v1::{GetTreeHeadRequest, SignedTreeHead, audit_client::AuditClient};
use truc_store::Store;
use truc_tests::*;

/// The value of an unlabelled metric on a node's ops port.
async fn metric(c: &Cluster, node: &str, name: &str) -> Option<f64> {
    let addr = c.deployment.node(node).expect("node").ops_addr();
    let (_, body) = http_get(addr, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `check` until it holds (no event to wait on from outside the node).
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn witness_health(c: &Cluster) -> ServingStatus {
    let tls = truc_pki::client_config(&c.tls(Role::Client, PROVINCE_CLIENT)).expect("tls");
    let addr = c.deployment.node(PROVINCE_NODE).expect("node").addr();
    let channel = truc_pki::channel(&addr.to_string(), PROVINCE_NODE, tls).expect("channel");
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "truc.witness".into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status;
    ServingStatus::try_from(status).expect("status")
}

fn hub_key(c: &Cluster) -> Vec<u8> {
    sth::read_public_key(&c.deployment.files.pki.audit_public_key()).expect("hub key")
}

fn hub_signer(c: &Cluster) -> sth::Signer {
    let config = truc_hub::HubConfig::load(&c.deployment.files.hub_config).expect("hub config");
    let key = truc_pki::load_audit_key(&c.deployment.files.pki.audit_key()).expect("key");
    sth::Signer::new(key).with_origin(&config.log_origin())
}

/// Waits until the hub serves the province's cosignature of the head of
/// `size`, and returns that head.
async fn cosigned_by_province(c: &Cluster, size: u64) -> SignedTreeHead {
    let mut audit = AuditClient::new(c.hub_channel(Role::Admin, "admin"));
    let mut cosigned: Option<SignedTreeHead> = None;
    eventually(
        &format!("the province's cosignature of size {size}"),
        async || {
            let head = audit
                .get_tree_head(GetTreeHeadRequest { tree_size: size })
                .await
                .expect("head")
                .into_inner();
            let found = head.cosignatures.iter().any(|x| x.name == PROVINCE_NODE);
            cosigned = Some(head);
            found
        },
    )
    .await;
    cosigned.expect("head")
}

async fn province_call(c: &Cluster) {
    c.deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client")
        .call(call(H37, CITIZEN_LOOKUP, r#"{"id":"001089012345"}"#))
        .await
        .expect("call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_rewrites_its_log_is_caught_by_a_witnessing_node() {
    let mut c = start().await;
    for _ in 0..4 {
        province_call(&c).await;
    }
    let key = hub_key(&c);
    // The node cosigns the head of its last receipt; the hub serves it.
    let witness_key =
        sth::read_public_key(&c.deployment.files.pki.witness_public_key(PROVINCE_NODE))
            .expect("witness key");
    let cosigned = cosigned_by_province(&c, 4).await;
    sth::verify_tree_head(&cosigned, &key).expect("a checkpoint the hub signed");
    let mine = cosigned
        .cosignatures
        .iter()
        .find(|x| x.name == PROVINCE_NODE)
        .expect("cosignature");
    sth::verify_cosignature(&cosigned, mine, &witness_key).expect("a valid cosignature/v1");
    assert_eq!(
        metric(&c, PROVINCE_NODE, "truc_witness_alarm").await,
        Some(0.0)
    );
    assert_eq!(witness_health(&c).await, ServingStatus::Serving);

    // The hub rewrites record 1 while it is down, recomputes its tree and
    // re-signs every head with its own key.
    let hub_dir = c.dir.path().join("hub");
    let signer = hub_signer(&c);
    c.deployment
        .restart_hub(async || {
            let store = Store::open(&hub_dir).expect("hub store");
            truc_audit::tamper::rewrite_record(&store, 1, &signer, |r| {
                r.request_sha256 = Bytes::from_static(&[7; 32]);
            })
            .expect("rewrite");
            // Alone, the rewritten log verifies.
            let report = truc_audit::verify(&store, Some(&key)).expect("verify");
            assert!(report.is_ok(), "{:?}", report.problem);
        })
        .await
        .expect("restart");

    // The node's next contact: a call, whose receipt carries a new head.
    province_call(&c).await;
    eventually("the witness alarm", async || {
        metric(&c, PROVINCE_NODE, "truc_witness_alarm").await == Some(1.0)
    })
    .await;
    assert_eq!(witness_health(&c).await, ServingStatus::NotServing);
    let node_dir = c.dir.path().join("nodes").join(PROVINCE_NODE);
    c.deployment.stop().await.expect("stop");

    // The node kept both signed heads: each verifies with the hub's key,
    // and they cannot both be of one append-only log.
    let node = Store::open(&node_dir).expect("node store");
    let evidence = witness::evidence(&node).expect("evidence");
    // (A periodic contact may have found the rewrite first, at size 4.)
    assert!(!evidence.is_empty());
    let (seen, conflicting) = (
        evidence[0].seen.clone().expect("seen"),
        evidence[0].conflicting.clone().expect("conflicting"),
    );
    sth::verify_tree_head(&seen, &key).expect("seen is the hub's");
    sth::verify_tree_head(&conflicting, &key).expect("conflicting is the hub's");
    assert_eq!(seen.tree_size, 4);
    assert_eq!(seen.root_hash, cosigned.root_hash);
    // And the head it kept convicts the hub's records offline.
    let kept = witness::latest(&node).expect("latest").expect("a head");
    assert_eq!(kept.root_hash, cosigned.root_hash);
    let hub = Store::open(&hub_dir).expect("hub store");
    let checks = witness::check_witnessed(&hub, &[kept], Some(&key)).expect("check");
    assert!(
        checks[0]
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("give root")),
        "{checks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_contact_catches_a_rewrite_and_the_alarm_outlives_a_restart() {
    let mut c = start().await;
    for _ in 0..3 {
        province_call(&c).await;
    }
    cosigned_by_province(&c, 3).await;
    // The node stops, with the head of size 3 kept in its store, and comes
    // back contacting the hub every 50 ms; no call is made after that, so
    // only the periodic contact can find the rewrite.
    assert!(c.deployment.stop_node(PROVINCE_NODE).await.expect("stop"));
    c.deployment
        .edit_node_config(PROVINCE_NODE, |f| f.witness.interval_ms = 50)
        .expect("edit");
    let dir = c.dir.path().to_path_buf();
    let signer = hub_signer(&c);
    c.deployment
        .restart_hub(async || {
            let store = Store::open(&dir.join("hub")).expect("hub store");
            truc_audit::tamper::rewrite_record(&store, 0, &signer, |r| {
                r.request_sha256 = Bytes::from_static(&[7; 32]);
            })
            .expect("rewrite");
        })
        .await
        .expect("restart hub");
    c.deployment
        .restart_node(PROVINCE_NODE)
        .await
        .expect("restart node");
    eventually("the witness alarm", async || {
        metric(&c, PROVINCE_NODE, "truc_witness_alarm").await == Some(1.0)
    })
    .await;
    assert_eq!(witness_health(&c).await, ServingStatus::NotServing);

    // Restarted again, and contacting the hub only in an hour, the node
    // raises the alarm from its stored evidence at once.
    c.restart_node_with(PROVINCE_NODE, |f| f.witness.interval_ms = 3_600_000)
        .await;
    assert_eq!(
        metric(&c, PROVINCE_NODE, "truc_witness_alarm").await,
        Some(1.0)
    );
    assert_eq!(witness_health(&c).await, ServingStatus::NotServing);
    let node_dir = c.dir.path().join("nodes").join(PROVINCE_NODE);
    c.deployment.stop().await.expect("stop");
    let evidence = witness::evidence(&Store::open(&node_dir).expect("store")).expect("evidence");
    assert!(
        evidence[0]
            .reason
            .contains("two different roots for tree size 3"),
        "{evidence:?}"
    );
}
