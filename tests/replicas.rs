#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Two hub replicas: calls spread over both logs, a stopped replica costs
//! nothing acknowledged, and each node witnesses each replica's log.

use std::collections::BTreeSet;
use std::time::Duration;

use truc_pki::Role;
use truc_proto::v1::{ListRecordsRequest, audit_client::AuditClient};
use truc_tests::*;

const ID: &str = r#"{"id":"001089012345"}"#;

/// How many records of transaction `tx` the replica at `addr` keeps.
async fn records_of(c: &Cluster, addr: &str, tx: &str) -> usize {
    let tls = truc_pki::client_config(&c.tls(Role::Admin, "admin")).expect("tls");
    let channel = truc_pki::channel(addr, "hub", tls).expect("channel");
    AuditClient::new(channel)
        .list_records(ListRecordsRequest {
            transaction_id: tx.into(),
            ..ListRecordsRequest::default()
        })
        .await
        .expect("records")
        .into_inner()
        .records
        .len()
}

#[tokio::test]
async fn calls_spread_over_replicas_and_survive_one_stopped() {
    let mut c = start_replicas(2).await;
    let addrs: Vec<(String, String)> = c
        .deployment
        .hubs()
        .iter()
        .map(|(n, h)| (n.to_string(), h.addr().to_string()))
        .collect();
    assert_eq!(addrs.len(), 2);
    let mut province = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    let mut origins = BTreeSet::new();
    let mut before = Vec::new();
    for _ in 0..8 {
        let r = province
            .call(call(H37, CITIZEN_LOOKUP, ID))
            .await
            .expect("call")
            .into_inner();
        let receipt = r.receipt.expect("receipt");
        origins.insert(receipt.tree_head.expect("head").origin);
        before.push(receipt.transaction_id);
    }
    assert_eq!(
        origins,
        BTreeSet::from(["hub-2/truc-audit".to_string(), "hub/truc-audit".to_string()]),
        "both replicas' logs have calls"
    );
    // Every acknowledged transaction is in exactly one replica's log.
    for tx in &before {
        let mut n = 0;
        for (_, addr) in &addrs {
            n += records_of(&c, addr, tx).await;
        }
        assert_eq!(n, 1, "{tx}");
    }

    // Each node witnesses each replica's log (its receipts bring the heads).
    let ops = c.deployment.node(PROVINCE_NODE).expect("node").ops_addr();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = http_get(ops, "/metrics").await;
        let logs = ["hub/truc-audit", "hub-2/truc-audit"]
            .map(|o| format!("truc_witness_verified_size{{log=\"{o}\"}}"));
        if logs.iter().all(|l| metrics.contains(l.as_str())) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the witness did not keep both logs:\n{metrics}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One replica away: every call still succeeds, on the other.
    assert!(c.deployment.stop_replica("hub-2").await.expect("stop"));
    for _ in 0..6 {
        let r = province
            .call(call(H37, CITIZEN_LOOKUP, ID))
            .await
            .expect("call with a replica down")
            .into_inner();
        let receipt = r.receipt.expect("receipt");
        assert_eq!(receipt.tree_head.expect("head").origin, "hub/truc-audit");
        assert_eq!(
            records_of(&c, &addrs[0].1, &receipt.transaction_id).await,
            1
        );
    }
    c.deployment.stop().await.expect("stop");
}
