#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Routed data calls end to end: agency system → node → hub → node → backend,
//! and every refusal on the way.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use tonic::{Code, Request, Response, Status};
use truc_pki::Role;
use truc_proto::v1::{DataRequest, DataResponse, backend_server::Backend, hub_client::HubClient};
use truc_tests::*;

const ID: &str = r#"{"id":"001089012345"}"#;

#[tokio::test]
async fn routed_call_both_ways_with_receipts() {
    let c = start().await;
    let d = &c.deployment;
    let mut province = d
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    let r = province
        .call(call(H37, CITIZEN_LOOKUP, ID))
        .await
        .expect("province → ministry")
        .into_inner();
    let body = String::from_utf8(r.payload.to_vec()).expect("utf-8");
    assert!(body.contains("\"asked_by\":\"000.00.00.H37\""), "{body}");
    assert_eq!(r.content_type, "application/json");
    let receipt = r.receipt.expect("hub receipt");
    assert_eq!(receipt.transaction_id.len(), 32);
    assert_eq!(receipt.leaf_hash.len(), 32);
    let head = receipt.tree_head.clone().expect("signed tree head");
    assert!(head.tree_size > receipt.record_index);

    let mut ministry = d
        .agency_client(MINISTRY_NODE, MINISTRY_CLIENT)
        .expect("client");
    let r = ministry
        .call(call(G22, HOUSEHOLD_REGISTRY, ID))
        .await
        .expect("ministry → province")
        .into_inner();
    let second = r.receipt.expect("receipt");
    assert_eq!(second.record_index, receipt.record_index + 1);
    c.deployment.stop().await.expect("stop");
}

#[tokio::test]
async fn backend_errors_keep_their_code() {
    let c = start().await;
    let mut province = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    let e = province
        .call(call(H37, CITIZEN_LOOKUP, r#"{"id":"000123456789"}"#))
        .await
        .expect_err("unknown citizen");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("no citizen"), "{e:?}");
    assert_eq!(
        e.metadata().get("x-truc-transaction-id").map(|v| v.len()),
        Some(32)
    );
    let e = province
        .call(call(H37, CITIZEN_LOOKUP, "not an id"))
        .await
        .expect_err("bad id");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

#[tokio::test]
async fn unknown_service_is_not_found() {
    let c = start().await;
    let mut province = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    let e = province
        .call(call(H37, "000.00.00.G22/no-such-service/v1", ID))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = province
        .call(call(H37, "not a service id", ID))
        .await
        .expect_err("malformed");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

#[tokio::test]
async fn call_without_grant_is_permission_denied() {
    let c = start().await;
    let mut province = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    // The department has a grant for citizen lookup only.
    let e = province
        .call(call(H37_DEPT, HOUSEHOLD_REGISTRY, ID))
        .await
        .expect_err("no grant");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("no grant"), "{e:?}");
}

#[tokio::test]
async fn agency_system_cannot_act_for_an_agency_it_is_not_mapped_to() {
    let c = start().await;
    let mut province = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    // The request field names G22, but the certificate maps to H37 only.
    let e = province
        .call(call(G22, HOUSEHOLD_REGISTRY, ID))
        .await
        .expect_err("spoofed agency");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // The ministry's agency system on the province node is refused too.
    let mut wrong_node = c
        .deployment
        .agency_client(PROVINCE_NODE, MINISTRY_CLIENT)
        .expect("client");
    let e = wrong_node
        .call(call(G22, HOUSEHOLD_REGISTRY, ID))
        .await
        .expect_err("client of another node");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}

#[tokio::test]
async fn node_naming_an_agency_it_does_not_host_is_refused_by_the_hub() {
    let c = start().await;
    let mut hub = HubClient::new(c.hub_channel(Role::Node, MINISTRY_NODE));
    let e = hub
        .route(DataRequest {
            transaction_id: "0123456789abcdef0123456789abcdef".into(),
            client_agency: H37.into(),
            service: CITIZEN_LOOKUP.into(),
            content_type: "application/json".into(),
            payload: Bytes::from_static(ID.as_bytes()),
            ..DataRequest::default()
        })
        .await
        .expect_err("ministry node claiming a province agency");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("does not host"), "{e:?}");

    // An agency system's certificate may not route at all.
    let mut hub = HubClient::new(c.hub_channel(Role::Client, PROVINCE_CLIENT));
    let e = hub
        .route(DataRequest::default())
        .await
        .expect_err("client cert on the hub");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}

#[tokio::test]
async fn certificate_from_another_ca_fails_the_handshake() {
    let c = start().await;
    let other = tempfile::tempdir().expect("dir");
    let layout = truc_devca::init(
        other.path(),
        &truc_devca::InitOptions {
            hub: "hub".into(),
            nodes: vec![PROVINCE_NODE.into()],
            admin: "admin".into(),
            clients: vec![PROVINCE_CLIENT.into()],
            validity_days: 1,
        },
    )
    .expect("second pki");
    // The foreign client trusts our CA (so only its own certificate is wrong).
    let mut files =
        layout.files(&truc_pki::Identity::new(Role::Client, PROVINCE_CLIENT).expect("id"));
    files.ca = c.deployment.files.pki.ca_cert();
    // Its own CA's revocation list is not one of our CA's.
    files.crls.clear();
    let tls = truc_pki::client_config(&files).expect("config");
    let node = c.deployment.node(PROVINCE_NODE).expect("node");
    let channel = truc_pki::channel(&node.addr().to_string(), PROVINCE_NODE, tls).expect("channel");
    let mut client = truc_proto::v1::agency_client::AgencyClient::new(channel);
    let e = client
        .call(call(H37, CITIZEN_LOOKUP, ID))
        .await
        .expect_err("foreign certificate");
    // The client's own transport reports the refused handshake.
    assert!(
        matches!(e.code(), Code::Unavailable | Code::Unknown),
        "{e:?}"
    );
    assert!(format!("{e:?}").contains("alert"), "{e:?}");
}

#[tokio::test]
async fn oversized_payloads_are_resource_exhausted() {
    let c = start_with(BackendKind::Echo, 1024).await;
    let mut province = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    let ok = "x".repeat(1024);
    province
        .call(call(H37, CITIZEN_LOOKUP, &ok))
        .await
        .expect("payload at the limit passes");
    // Over the payload limit, under the gRPC message limit: the node's check.
    let e = province
        .call(call(H37, CITIZEN_LOOKUP, &"x".repeat(1025)))
        .await
        .expect_err("too large");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // Far over: refused by the gRPC decoder, with the same code.
    let e = province
        .call(call(H37, CITIZEN_LOOKUP, &"x".repeat(200_000)))
        .await
        .expect_err("much too large");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
}

#[tokio::test]
async fn backend_down_is_unavailable() {
    let c = start_with(BackendKind::Down, 4096).await;
    let mut province = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    let e = province
        .call(call(H37, CITIZEN_LOOKUP, ID))
        .await
        .expect_err("backend down");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("backend"), "{e:?}");
}

#[tokio::test]
async fn provider_node_down_is_unavailable() {
    let mut c = start().await;
    assert!(c.deployment.stop_node(MINISTRY_NODE).await.expect("stop"));
    let mut province = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    let e = province
        .call(call(H37, CITIZEN_LOOKUP, ID))
        .await
        .expect_err("provider node down");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("provider node"), "{e:?}");
}

/// A backend that holds every call and tells what deadline reached it.
#[derive(Default)]
struct Slow {
    seen: Mutex<Vec<Option<String>>>,
}

#[tonic::async_trait]
impl Backend for Slow {
    async fn invoke(
        &self,
        request: Request<DataRequest>,
    ) -> Result<Response<DataResponse>, Status> {
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.seen.lock().expect("lock").push(timeout);
        // Never answers: only a deadline ends the call.
        std::future::pending().await
    }
}

#[tokio::test]
async fn deadlines_propagate_to_the_backend() {
    let slow = Arc::new(Slow::default());
    let c = start_with(BackendKind::Custom(slow.clone()), 4096).await;
    let mut province = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    let mut req = Request::new(call(H37, CITIZEN_LOOKUP, ID));
    req.set_timeout(Duration::from_millis(800));
    let e = province.call(req).await.expect_err("deadline");
    // tonic's client reports its own expired timeout as CANCELLED; a hop's
    // expiry comes back as DEADLINE_EXCEEDED. Either way the call ended.
    assert!(
        matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{e:?}"
    );
    let seen = slow.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    let timeout = seen[0].clone().expect("backend got a grpc-timeout");
    let d = truc_ops_timeout(&timeout);
    assert!(
        d <= Duration::from_millis(800) && d > Duration::ZERO,
        "{timeout}"
    );
}

fn truc_ops_timeout(v: &str) -> Duration {
    let (n, unit) = v.split_at(v.len() - 1);
    let n: u64 = n.parse().expect("digits");
    match unit {
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        "S" => Duration::from_secs(n),
        _ => panic!("unexpected unit in {v}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_equal_the_audit_log_after_concurrent_traffic() {
    let c = start().await;
    let d = &c.deployment;
    let province = d
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    let ministry = d
        .agency_client(MINISTRY_NODE, MINISTRY_CLIENT)
        .expect("client");
    let mut tasks = Vec::new();
    for i in 0..90u32 {
        let (mut client, agency, service) = match i % 3 {
            0 => (province.clone(), H37, CITIZEN_LOOKUP),
            1 => (ministry.clone(), G22, HOUSEHOLD_REGISTRY),
            _ => (province.clone(), H37_DEPT, HOUSEHOLD_REGISTRY), // no grant
        };
        let id = if i % 7 == 0 {
            format!("{{\"id\":\"000{i:09}\"}}")
        } else {
            ID.to_string()
        };
        tasks.push(tokio::spawn(async move {
            client.call(call(agency, service, &id)).await.map(|_| ())
        }));
    }
    let mut ok = 0u64;
    for t in tasks {
        if t.await.expect("join").is_ok() {
            ok += 1;
        }
    }
    let counts = c.counts(Role::Admin, "admin").await.expect("counts");
    assert_eq!(counts.total, 90);
    let reported_ok: u64 = counts
        .rows
        .iter()
        .filter(|r| r.outcome == "OK")
        .map(|r| r.count)
        .sum();
    assert_eq!(reported_ok, ok);

    // A node sees only rows where its agencies are a party: the ministry is
    // not a party of the department's refused calls to the province.
    let visible = c
        .counts(Role::Node, MINISTRY_NODE)
        .await
        .expect("node counts");
    assert_eq!(visible.total, 60);
    let e = c
        .counts(Role::Client, PROVINCE_CLIENT)
        .await
        .expect_err("agency systems read reports from their node, not the hub");
    assert_eq!(e.code(), Code::PermissionDenied);

    let hub_dir = c.dir.path().join("hub");
    c.deployment.stop().await.expect("stop");
    let key = truc_audit::sth::read_public_key(&c.dir.path().join("pki/audit-signing.pub"))
        .expect("hub public key");
    let store = truc_store::Store::open(&hub_dir).expect("open hub store");
    let report = truc_audit::verify(&store, Some(&key)).expect("verify");
    assert!(report.tree_heads >= 1);
    assert!(report.is_ok(), "{:?}", report.problem);
    assert_eq!(report.records, 90);
    let from_log: u64 = report.counts.values().sum();
    assert_eq!(from_log, counts.total);
    for row in &counts.rows {
        let key = truc_audit::CountKey {
            day: row.day.clone(),
            client: row.client_agency.clone(),
            provider: row.provider_agency.clone(),
            service: row.service.clone(),
            kind: row.kind.clone(),
            outcome: row.outcome.clone(),
        };
        assert_eq!(report.counts.get(&key), Some(&row.count), "{key:?}");
    }
}
