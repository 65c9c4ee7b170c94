#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Peers that accept a call and never answer hold nothing beyond the
//! deadline, and every such transaction is still audited by every hop
//! (issue 8, point 2.4, for data calls and statuses through the hub).

use std::time::Duration;

use tonic::Code;
use truc_pki::Role;
use truc_proto::v1::{
    StatusEvent, StatusUpdate, TransactionEvent, WatchTransactionsRequest,
    reporting_client::ReportingClient,
};
use truc_tests::*;

/// The hub's committed transactions as they come, as the admin sees them:
/// opened before the call whose record a test waits for, so that record
/// cannot be missed.
async fn hub_transactions(c: &Cluster) -> tonic::Streaming<TransactionEvent> {
    ReportingClient::new(c.hub_channel(Role::Admin, "admin"))
        .watch_transactions(WatchTransactionsRequest {})
        .await
        .expect("watch transactions")
        .into_inner()
}

/// Waits (10 s at most, else panics) on `transactions` for the hub's record
/// of transaction `id`, of kind `kind`.
async fn hub_record(
    transactions: &mut tonic::Streaming<TransactionEvent>,
    kind: &str,
    id: &str,
) -> truc_audit::AuditRecord {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = transactions.message().await.expect("the watch goes on") {
            if let Some(r) = event.record
                && r.transaction_id == id
                && r.kind == kind
            {
                return r;
            }
        }
        panic!("the hub ended the watch");
    })
    .await;
    found.unwrap_or_else(|_| panic!("the hub never recorded {kind} {id}"))
}

#[tokio::test]
async fn a_provider_node_that_never_answers_holds_a_call_only_until_its_deadline() {
    let mut c = start().await;
    let silent = SilentPeer::replace(&mut c.deployment, MINISTRY_NODE).await;
    let mut transactions = hub_transactions(&c).await;
    let mut province = c.hostile().agency_as(PROVINCE_NODE, PROVINCE_CLIENT);
    let mut request = tonic::Request::new(call(H37, CITIZEN_LOOKUP, "{}"));
    request.set_timeout(Duration::from_secs(2));
    let err = province.call(request).await.expect_err("no answer");
    // DEADLINE_EXCEEDED from the hub's pipeline; under load the hub's gRPC
    // server may cut the answer first (CANCELLED): either way within the
    // deadline, and recorded (below).
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    let id = err
        .metadata()
        .get(truc_ops::TRANSACTION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .expect("the error names its transaction")
        .to_string();
    assert_eq!(silent.calls().0, 1, "the hub did call the silent node");
    // The hub gave up within the deadline and recorded the call.
    let r = hub_record(&mut transactions, "call", &id).await;
    assert_eq!(r.outcome, "DEADLINE_EXCEEDED");
    assert_eq!(r.caller, format!("node/{PROVINCE_NODE}"));
}

#[tokio::test]
async fn a_sender_node_that_never_answers_holds_a_status_only_until_its_deadline() {
    let mut c = start().await;
    let silent = SilentPeer::replace(&mut c.deployment, MINISTRY_NODE).await;
    let mut transactions = hub_transactions(&c).await;
    // The province's node relays a status to the ministry's (silent) node.
    let mut hub = c.hostile().hub_as_node(PROVINCE_NODE);
    let mut request = tonic::Request::new(StatusUpdate {
        transaction_id: "ab".repeat(16),
        sender: G22.into(),
        document_id: format!("{G22},2026/11/28,7/VPCP-KSTT"),
        recipient: H37.into(),
        event: Some(StatusEvent {
            code: "03".into(),
            description: "Đã tiếp nhận".into(),
            unix_ms: 1,
            by: H37.into(),
            staff: None,
        }),
        ..StatusUpdate::default()
    });
    request.set_timeout(Duration::from_secs(2));
    let err = hub.relay_status(request).await.expect_err("no answer");
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    assert_eq!(silent.calls().2, 1, "the hub did call the silent node");
    let r = hub_record(&mut transactions, "status", &"ab".repeat(16)).await;
    assert_eq!(r.outcome, "DEADLINE_EXCEEDED");
}
