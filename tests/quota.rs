#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Quotas through a running deployment: limits put in the registry reach
//! the running hub on reload; an agency over its quota gets
//! RESOURCE_EXHAUSTED with `retry-after-ms` through its node while another
//! agency of the same node calls the same service unaffected; the hub's
//! counts show the refusal as its own outcome.

use tonic::Code;
use truc_pki::Role;
use truc_tests::*;

const ID: &str = r#"{"id":"001089012345"}"#;

#[tokio::test]
async fn an_agency_over_its_quota_is_refused_and_the_others_are_not() {
    let c = start().await;
    let province = c.client(PROVINCE_NODE, PROVINCE_CLIENT);
    // No quota yet: calls pass.
    for _ in 0..5 {
        province
            .call(call(H37, CITIZEN_LOOKUP, ID), None)
            .await
            .expect("no quota");
    }

    // Three calls at once per agency and service, then one every 1000 s.
    let registry = &c.deployment.files.registry;
    let text = std::fs::read_to_string(registry).expect("registry");
    std::fs::write(
        registry,
        format!("{text}\n[quota]\nrate = 0.001\nburst = 3\n"),
    )
    .expect("write");
    let report = c.deployment.hub().reloader().reload();
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    for i in 0..3 {
        province
            .call(call(H37, CITIZEN_LOOKUP, ID), None)
            .await
            .unwrap_or_else(|e| panic!("call {i} of the burst: {e}"));
    }
    let err = province
        .call(call(H37, CITIZEN_LOOKUP, ID), None)
        .await
        .expect_err("over quota");
    let status = err.status().expect("a status");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let wait: u64 = status
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after-ms reaches the agency system");
    assert!(wait > 900_000, "{wait}");

    // The department, on the same node, to the same service: its own bucket.
    for i in 0..3 {
        province
            .call(call(H37_DEPT, CITIZEN_LOOKUP, ID), None)
            .await
            .unwrap_or_else(|e| panic!("the department's call {i}: {e}"));
    }

    let counts = c.counts(Role::Admin, "admin").await.expect("counts");
    let of = |client: &str, outcome: &str| -> u64 {
        counts
            .rows
            .iter()
            .filter(|r| r.client_agency == client && r.outcome == outcome)
            .map(|r| r.count)
            .sum()
    };
    assert_eq!(of(H37, "QUOTA_EXCEEDED"), 1, "{counts:?}");
    assert_eq!(of(H37, "OK"), 8);
    assert_eq!(of(H37_DEPT, "OK"), 3);
    assert_eq!(of(H37_DEPT, "QUOTA_EXCEEDED"), 0);

    // A bad quota table is refused on reload; the limits in force stay.
    std::fs::write(registry, format!("{text}\n[quota]\nrate = 0\n")).expect("write");
    let report = c.deployment.hub().reloader().reload();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(
        format!("{:?}", report.failed).contains("quota.rate"),
        "{report:?}"
    );
    let err = province
        .call(call(H37, CITIZEN_LOOKUP, ID), None)
        .await
        .expect_err("still over quota");
    assert_eq!(
        err.status().map(tonic::Status::code),
        Some(Code::ResourceExhausted)
    );
}
