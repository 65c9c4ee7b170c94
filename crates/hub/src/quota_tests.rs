//! Quotas at the `Route` handler, called as nodes holding valid
//! certificates would call it: a burst passes, the next call is refused
//! with RESOURCE_EXHAUSTED and a retry hint, recorded and counted as
//! `QUOTA_EXCEEDED`; one agency over its quota leaves another's alone; a
//! node naming agencies it does not host spends no one's quota.
//!
//! The refill itself is tested on tokio's paused clock in `quota.rs`: here
//! the provider node is unreachable and its connection attempts are real
//! I/O, which a paused clock would race against.

use std::sync::Arc;

use tonic::{Code, Status};
use truc_proto::v1::hub_server::Hub;
use truc_registry::Registry;

use crate::tests::{LOOKUP, REGISTRY, call, hub_with, node};

const H37: &str = "000.00.00.H37";
const A01: &str = "000.00.00.A01";

/// [`REGISTRY`] with A01 (on node `other`) also granted the lookup, and
/// two calls at once per pair, then one every 1000 s: long enough that no
/// test sees a refill.
fn limited() -> Arc<Registry> {
    limited_with("")
}

/// [`limited`] with `overrides` appended.
fn limited_with(overrides: &str) -> Arc<Registry> {
    let text = format!(
        "{REGISTRY}
[[grant]]
client = \"{A01}\"
services = [\"{LOOKUP}\"]

[quota]
rate = 0.001
burst = 2
{overrides}"
    );
    Arc::new(Registry::from_toml_str(&text, "registry.toml").expect("registry"))
}

async fn route(h: &crate::tests::Hub_, from: &str, n: u32, client: &str) -> Status {
    h.service
        .route(truc_pipeline::request_from(
            node(from),
            call(&format!("{:032x}", 0x9000 + n), client, LOOKUP),
        ))
        .await
        .expect_err("no provider node listens")
}

fn retry_after_ms(s: &Status) -> Option<u64> {
    s.metadata()
        .get(truc_ops::RETRY_AFTER_MS_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[tokio::test]
async fn a_burst_passes_then_calls_are_refused_with_a_retry_hint_and_counted() {
    let h = hub_with(limited());
    crate::set_known(h.service.inner().pipeline.metrics(), &limited());
    for n in 0..2 {
        let s = route(&h, "lgsp-langson", n, H37).await;
        assert_ne!(s.code(), Code::ResourceExhausted, "in the burst: {s:?}");
        assert_eq!(retry_after_ms(&s), None);
    }
    let refused = route(&h, "lgsp-langson", 2, H37).await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let wait = retry_after_ms(&refused).expect("retry-after-ms");
    assert!(
        (990_000..=1_000_000).contains(&wait),
        "a call every 1000 s: {wait} ms"
    );
    assert!(refused.message().contains("over its quota"), "{refused:?}");
    assert_eq!(
        refused
            .metadata()
            .get(truc_ops::TRANSACTION_ID_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(format!("{:032x}", 0x9002).as_str()),
        "tagged like any refusal"
    );

    // Audited like a PERMISSION_DENIED call, with an outcome of its own.
    let r = h.records().pop().expect("the refusal is audited");
    assert_eq!(r.outcome, "QUOTA_EXCEEDED");
    assert_eq!(
        (
            r.caller.as_str(),
            r.client_agency.as_str(),
            r.service.as_str()
        ),
        ("node/lgsp-langson", H37, LOOKUP)
    );
    let stats = truc_audit::read_stats(&h.store).expect("stats");
    let quota: u64 = stats
        .stats
        .iter()
        .filter(|(k, _)| k.outcome == "QUOTA_EXCEEDED" && k.client == H37)
        .map(|(_, s)| s.count)
        .sum();
    assert_eq!(quota, 1, "{stats:?}");
    let verified = truc_audit::verify(&h.store, None).expect("verify");
    assert!(verified.is_ok(), "{:?}", verified.problem);
    assert_eq!(verified.stats, stats.stats, "report --verify agrees");
    let metrics = h.service.inner().pipeline.metrics().encode();
    assert!(
        metrics.contains(&format!(
            r#"truc_transactions_total{{kind="call",client="{H37}",provider="000.00.00.G22",service="{LOOKUP}",outcome="QUOTA_EXCEEDED"}} 1"#
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn one_agency_over_its_quota_leaves_the_others_alone() {
    let h = hub_with(limited());
    // H37's runaway system.
    for n in 0..20 {
        route(&h, "lgsp-langson", n, H37).await;
    }
    assert_eq!(
        route(&h, "lgsp-langson", 20, H37).await.code(),
        Code::ResourceExhausted
    );
    // A01, on another node, to the same service: its whole burst.
    for n in 0..2 {
        let s = route(&h, "other", 100 + n, A01).await;
        assert_ne!(s.code(), Code::ResourceExhausted, "{s:?}");
    }
    assert_eq!(
        route(&h, "other", 102, A01).await.code(),
        Code::ResourceExhausted,
        "and its own limit"
    );
}

#[tokio::test]
async fn a_node_naming_agencies_it_does_not_host_spends_no_quota() {
    let h = hub_with(limited());
    // Node `other` hosts A01 and A02; it names H37 (hosted by lgsp-langson)
    // and hundreds of made-up agencies.
    let mut n = 0;
    for client in std::iter::once(H37.to_string())
        .chain((0..300).map(|i| format!("000.00.{:02}.X{:02}", i / 100, i % 100)))
    {
        for _ in 0..3 {
            let s = route(&h, "other", 200 + n, &client).await;
            assert_eq!(s.code(), Code::PermissionDenied, "{client}: {s:?}");
            n += 1;
        }
    }
    assert!(
        h.service.inner().quotas.buckets() <= 2,
        "buckets only for the registry's pairs"
    );
    // H37's own node still has H37's whole burst.
    for i in 0..2 {
        let s = route(&h, "lgsp-langson", 2000 + i, H37).await;
        assert_ne!(s.code(), Code::ResourceExhausted, "{s:?}");
    }
    assert_eq!(
        route(&h, "lgsp-langson", 2002, H37).await.code(),
        Code::ResourceExhausted
    );
}

#[tokio::test]
async fn a_reloaded_registry_changes_the_limit_without_a_restart() {
    let h = hub_with(limited());
    for n in 0..2 {
        route(&h, "lgsp-langson", n, H37).await;
    }
    assert_eq!(
        route(&h, "lgsp-langson", 2, H37).await.code(),
        Code::ResourceExhausted
    );
    // An override for H37: unlimited.
    h.service.inner().registry.replace(limited_with(&format!(
        "[[quota.override]]\nclient = \"{H37}\"\nunlimited = true\n"
    )));
    for n in 3..10 {
        let s = route(&h, "lgsp-langson", n, H37).await;
        assert_ne!(s.code(), Code::ResourceExhausted, "{s:?}");
    }
}
