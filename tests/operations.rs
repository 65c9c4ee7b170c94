#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! What operators and tools rely on: health, reflection, metrics, the
//! registry served to nodes.

use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};
use truc_pki::Role;
use truc_proto::v1::{GetRegistryRequest, hub_client::HubClient};
use truc_tests::*;

#[tokio::test]
async fn hub_answers_health_and_reflection() {
    let c = start().await;
    let channel = c.hub_channel(Role::Admin, "admin");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "truc.v1.Hub", "truc.v1.Reporting"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let e = health
        .check(HealthCheckRequest {
            service: "truc.v1.Nothing".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(e.code(), Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = stream.next().await.expect("one answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected answer {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["truc.v1.Hub", "truc.v1.Reporting", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn node_answers_health() {
    let c = start().await;
    let node = c.deployment.node(PROVINCE_NODE).expect("node");
    let tls = truc_pki::client_config(&c.tls(Role::Client, PROVINCE_CLIENT)).expect("tls");
    let channel = truc_pki::channel(&node.addr().to_string(), PROVINCE_NODE, tls).expect("channel");
    let mut health = HealthClient::new(channel);
    for service in ["truc.v1.Agency", "truc.v1.Node"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }
}

#[tokio::test]
async fn ops_port_serves_metrics_and_healthz() {
    let c = start().await;
    let mut province = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    province
        .call(call(H37, CITIZEN_LOOKUP, r#"{"id":"001089012345"}"#))
        .await
        .expect("call");
    province
        .call(call(H37_DEPT, HOUSEHOLD_REGISTRY, "{}"))
        .await
        .expect_err("no grant");

    let hub_ops = c.deployment.hub().ops_addr();
    let (status, body) = http_get(hub_ops, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, metrics) = http_get(hub_ops, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"truc_transactions_total{kind="call",client="000.00.00.H37",provider="000.00.00.G22",service="000.00.00.G22/citizen-lookup/v1",outcome="OK"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"truc_transactions_total{kind="call",client="000.01.37.H37",provider="000.00.00.H37",service="000.00.00.H37/household-registry/v1",outcome="PERMISSION_DENIED"} 1"#),
        "{metrics}"
    );
    // The names existing gRPC dashboards expect, and process metrics.
    assert!(
        metrics.contains(r#"grpc_server_handled_total{grpc_service="truc.v1.Hub",grpc_method="Route",grpc_code="OK"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"grpc_server_handled_total{grpc_service="truc.v1.Hub",grpc_method="Route",grpc_code="PermissionDenied"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("grpc_server_handling_seconds_bucket{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("process_resident_memory_bytes "),
        "{metrics}"
    );
    assert!(
        metrics.contains("truc_audit_flush_failures_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"truc_transaction_duration_seconds_count{kind="call"} 2"#),
        "{metrics}"
    );
    let node_ops = c.deployment.node(PROVINCE_NODE).expect("node").ops_addr();
    let (status, metrics) = http_get(node_ops, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"outcome="OK"} 1"#)
            && metrics.contains("truc_transactions_total{kind=\"call\""),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"truc_document_queue{queue="deliveries"} 0"#),
        "{metrics}"
    );
    let (status, _) = http_get(hub_ops, "/nothing").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn hub_serves_the_registry_to_nodes_only() {
    let c = start().await;
    let mut as_node = HubClient::new(c.hub_channel(Role::Node, PROVINCE_NODE));
    let snapshot = as_node
        .get_registry(GetRegistryRequest::default())
        .await
        .expect("registry")
        .into_inner();
    assert_eq!(snapshot.agencies.len(), 3);
    assert_eq!(snapshot.nodes.len(), 2);
    assert!(snapshot.services.iter().any(|s| s.id == CITIZEN_LOOKUP));
    assert_eq!(snapshot.source_sha256.len(), 32);
    let mut as_client = HubClient::new(c.hub_channel(Role::Client, PROVINCE_CLIENT));
    let e = as_client
        .get_registry(GetRegistryRequest::default())
        .await
        .expect_err("agency system");
    assert_eq!(e.code(), Code::PermissionDenied);
}
