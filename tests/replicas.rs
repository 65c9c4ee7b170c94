#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Two hub replicas: calls spread over both logs, a stopped replica costs
//! nothing acknowledged, and each node witnesses each replica's log.

use std::collections::BTreeSet;
use std::time::Duration;

use truc_pki::Role;
use truc_proto::v1::{
    GetStatsRequest, ListRecordsRequest, audit_client::AuditClient,
    reporting_client::ReportingClient,
};
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

/// The `GET /api/replicas` answer of the hub whose ops port is `ops`.
async fn replicas_view(ops: std::net::SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(ops, "/api/replicas").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

/// Today's total at the replica `addr`, as the admin's `GetStats` answers.
async fn admin_total(c: &Cluster, addr: &str) -> u64 {
    let tls = truc_pki::client_config(&c.tls(Role::Admin, "admin")).expect("tls");
    let channel = truc_pki::channel(addr, "hub", tls).expect("channel");
    ReportingClient::new(channel)
        .get_stats(GetStatsRequest::default())
        .await
        .expect("stats")
        .into_inner()
        .total
        .expect("total")
        .count
}

/// Either replica's dashboard shows the deployment: each replica's figures
/// (fetched with the hub's own certificate), their exact merge, and, once
/// one replica is stopped, that replica as unreachable and the totals as
/// partial, not silently smaller.
#[tokio::test]
async fn the_dashboard_of_either_replica_shows_the_deployment_and_a_stopped_one() {
    let mut c = start_replicas(2).await;
    let mut province = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    for _ in 0..6 {
        province
            .call(call(H37, CITIZEN_LOOKUP, ID))
            .await
            .expect("call");
    }
    let hubs: Vec<(String, String, std::net::SocketAddr)> = c
        .deployment
        .hubs()
        .iter()
        .map(|(n, h)| (n.to_string(), h.addr().to_string(), h.ops_addr()))
        .collect();
    let mut own = Vec::new();
    for (_, addr, _) in &hubs {
        own.push(admin_total(&c, addr).await);
    }
    assert!(
        own.iter().all(|&n| n > 0),
        "both replicas carried calls: {own:?}"
    );
    for (i, (name, _, ops)) in hubs.iter().enumerate() {
        let v = replicas_view(*ops).await;
        assert_eq!(v["replicas"], 2, "{v}");
        assert_eq!(v["replicas_up"], 2, "{v}");
        assert_eq!(v["partial"], false, "{v}");
        let per = v["per_replica"].as_array().expect("rows");
        // This replica first, then its peer, by the name the config gives it.
        assert_eq!(per[0]["local"], true, "{v}");
        assert_eq!(per[0]["origin"], format!("{name}/truc-audit"), "{v}");
        assert_eq!(per[1]["name"], hubs[1 - i].0.as_str(), "{v}");
        let other = 1 - i;
        assert_eq!(per[0]["figures"]["count"], own[i], "{v}");
        assert_eq!(per[1]["figures"]["count"], own[other], "{v}");
        assert_eq!(
            per[1]["origin"],
            format!("{}/truc-audit", hubs[other].0),
            "{v}"
        );
        assert_eq!(v["total"]["count"], own[0] + own[1], "{v}");
    }

    // A storm of refreshes costs the peer one round of calls, not one each.
    let asked = |metrics: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with(r#"grpc_server_handled_total{grpc_service="truc.v1.Reporting",grpc_method="GetStats""#)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let peer_ops = hubs[1].2;
    let before = asked(&http_get(peer_ops, "/metrics").await.1);
    let storm: Vec<_> = (0..20)
        .map(|_| tokio::spawn(replicas_view(hubs[0].2)))
        .collect();
    for v in storm {
        assert_eq!(v.await.expect("view")["replicas_up"], 2);
    }
    let after = asked(&http_get(peer_ops, "/metrics").await.1);
    assert!(
        after - before <= 2,
        "20 refreshes asked the peer {} times",
        after - before
    );

    c.deployment.stop_replica("hub-2").await.expect("stop");
    let ops = hubs[0].2;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let v = loop {
        // The answer of a second ago may be served again: wait for a fresh one.
        let v = replicas_view(ops).await;
        if v["replicas_up"] == 1 {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v["partial"], true, "{v}");
    assert_eq!(v["replicas"], 2, "the stopped replica is still listed: {v}");
    let per = v["per_replica"].as_array().expect("rows");
    assert_eq!(per[1]["name"], "hub-2");
    assert_eq!(per[1]["up"], false, "{v}");
    assert!(
        per[1]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{v}"
    );
    assert_eq!(v["total"]["count"], own[0], "{v}");
}
