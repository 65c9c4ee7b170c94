//! The hub's handlers called directly, as a hostile node holding a valid
//! certificate would call them: no server, the peer identity placed in the
//! request as the TLS layer puts it.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use tonic::Code;
use truc_audit::{AuditLog, Options, sth::Signer};
use truc_pipeline::request_from;
use truc_pki::{Identity, Role};
use truc_proto::v1::{DataRequest, StatusEvent, StatusUpdate, hub_server::Hub};
use truc_registry::Registry;
use truc_store::Store;

use crate::route::HubService;

/// The registry of the hub's unit tests: `vpcp` hosts G22, `lgsp-langson`
/// hosts H37, `other` hosts two agencies that have nothing to do with either;
/// H37 may look up citizens at G22. No node listens at its address.
pub(crate) const REGISTRY: &str = r#"
[[agency]]
code = "000.00.00.G22"
name = "Văn phòng Chính phủ"

[[agency]]
code = "000.00.00.H37"
name = "UBND tỉnh Lạng Sơn"

[[agency]]
code = "000.00.00.A01"
name = "A"

[[agency]]
code = "000.00.00.A02"
name = "B"

[[node]]
id = "vpcp"
address = "127.0.0.1:9"
agencies = ["000.00.00.G22"]

[[node]]
id = "lgsp-langson"
address = "127.0.0.1:7"
agencies = ["000.00.00.H37"]

[[node]]
id = "other"
address = "127.0.0.1:5"
agencies = ["000.00.00.A01", "000.00.00.A02"]

[[service]]
id = "000.00.00.G22/citizen-lookup/v1"
description = "Look up a citizen"

[[service]]
id = "000.00.00.H37/household-registry/v1"
description = "Look up a household"

[[grant]]
client = "000.00.00.H37"
services = ["000.00.00.G22/citizen-lookup/v1"]
"#;

/// [`REGISTRY`], parsed.
pub(crate) fn registry() -> Arc<Registry> {
    Arc::new(Registry::from_toml_str(REGISTRY, "registry.toml").expect("registry"))
}

struct Hub_ {
    _dir: tempfile::TempDir,
    store: Store,
    service: HubService,
}

fn hub() -> Hub_ {
    truc_pki::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let signer = Signer::generate().expect("key");
    let public = signer.public_key();
    let audit =
        AuditLog::open(store.clone(), "hub", Options::default(), Some(signer)).expect("log");
    let registry = registry();
    let client_tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    );
    let service = HubService::new(
        registry,
        public,
        audit,
        client_tls,
        Arc::new(truc_ops::Metrics::new()),
        truc_ops::config::Limits::default(),
        truc_doc::Limits::default(),
    );
    Hub_ {
        _dir: dir,
        store,
        service,
    }
}

fn node(name: &str) -> Identity {
    Identity::new(Role::Node, name).expect("identity")
}

fn call(id: &str, client: &str, service: &str) -> DataRequest {
    DataRequest {
        transaction_id: id.into(),
        client_agency: client.into(),
        service: service.into(),
        content_type: "application/json".into(),
        payload: Bytes::from_static(b"{}"),
    }
}

const LOOKUP: &str = "000.00.00.G22/citizen-lookup/v1";
const HOUSEHOLD: &str = "000.00.00.H37/household-registry/v1";

impl Hub_ {
    fn records(&self) -> Vec<truc_audit::AuditRecord> {
        truc_audit::read_records(&self.store, 0)
            .map(|r| r.expect("record").0)
            .collect()
    }
}

#[tokio::test]
async fn a_node_cannot_call_for_an_agency_it_does_not_host() {
    let h = hub();
    let id = format!("{:032x}", 1);
    let err = h
        .service
        .route(request_from(
            node("vpcp"),
            call(&id, "000.00.00.H37", LOOKUP),
        ))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    let records = h.records();
    let r = records.last().expect("the refusal is audited");
    assert_eq!(r.caller, "node/vpcp", "the record names the real caller");
    assert_eq!(r.client_agency, "", "not attributed to the claimed agency");
    assert_eq!(r.transaction_id, "", "nor does it take the id");
    let stats = truc_audit::read_stats(&h.store).expect("stats");
    assert!(
        stats.stats.keys().all(|k| k.client != "000.00.00.H37"),
        "no statistics in the name of an agency on a foreign node's word: {stats:?}"
    );
}

#[tokio::test]
async fn a_transaction_id_already_recorded_is_refused_and_keeps_its_proof() {
    let h = hub();
    let id = format!("{:032x}", 2);
    // Recorded with its id (the calling node hosts the client); refused for
    // want of a grant.
    let first = h
        .service
        .route(request_from(
            node("lgsp-langson"),
            call(&id, "000.00.00.H37", HOUSEHOLD),
        ))
        .await
        .expect_err("no grant");
    assert_eq!(first.code(), Code::PermissionDenied);
    let reader = h.service.inner().pipeline.audit().reader().clone();
    let genuine = reader.index_of(&id).expect("read").expect("indexed");
    let again = h
        .service
        .route(request_from(
            node("lgsp-langson"),
            call(&id, "000.00.00.H37", LOOKUP),
        ))
        .await
        .expect_err("repeat");
    assert_eq!(again.code(), Code::AlreadyExists);
    assert_eq!(reader.index_of(&id).expect("read"), Some(genuine));
    let (_, r) = reader.record(genuine).expect("read").expect("record");
    assert_eq!(r.service, HOUSEHOLD, "the proof finds the genuine record");
}

#[tokio::test]
async fn malformed_fields_never_reach_a_record_or_a_statistic() {
    let h = hub();
    let huge = "9".repeat(80_000);
    let cases = [
        call(&format!("{}\0", "a".repeat(31)), "000.00.00.H37", LOOKUP),
        call(
            &format!("{:032x}", 3),
            &format!("000.00.00.H37{huge}"),
            LOOKUP,
        ),
        call(
            &format!("{:032x}", 4),
            "000.00.00.H37",
            &format!("{LOOKUP}{huge}"),
        ),
        DataRequest {
            content_type: format!("text/plain\n{huge}"),
            ..call(&format!("{:032x}", 5), "000.00.00.H37", LOOKUP)
        },
    ];
    for req in cases {
        let err = h
            .service
            .route(request_from(node("lgsp-langson"), req))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    for r in h.records() {
        assert!(
            r.encoded_len() < 1024,
            "a bounded record: {}",
            r.encoded_len()
        );
    }
    let stats = truc_audit::read_stats(&h.store).expect("statistics stay readable");
    assert!(stats.unreadable.is_empty(), "{:?}", stats.unreadable);
}

fn status(id: &str, recipient: &str, code: &str) -> StatusUpdate {
    StatusUpdate {
        transaction_id: id.into(),
        sender: "000.00.00.G22".into(),
        document_id: "000.00.00.G22,2026/11/28,12/VPCP-KSTT".into(),
        recipient: recipient.into(),
        event: Some(StatusEvent {
            code: code.into(),
            description: "ok".into(),
            unix_ms: 1,
            by: recipient.into(),
            staff: None,
        }),
        ..StatusUpdate::default()
    }
}

#[tokio::test]
async fn a_huge_status_code_is_refused_and_statistics_stay_readable() {
    let h = hub();
    let code = "0".repeat(80 * 1024);
    let err = h
        .service
        .relay_status(request_from(
            node("lgsp-langson"),
            status(&format!("{:032x}", 6), "000.00.00.H37", &code),
        ))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    let r = h.records().pop().expect("audited");
    assert_eq!(r.service, "", "the code never becomes a statistics key");
    let stats = truc_audit::read_stats(&h.store).expect("statistics stay readable");
    assert!(stats.unreadable.is_empty(), "{:?}", stats.unreadable);
}

#[tokio::test]
async fn a_node_cannot_relay_a_status_for_an_agency_it_does_not_host() {
    let h = hub();
    let err = h
        .service
        .relay_status(request_from(
            node("vpcp"),
            status(&format!("{:032x}", 7), "000.00.00.H37", "03"),
        ))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    let r = h.records().pop().expect("audited");
    assert_eq!(
        (r.caller.as_str(), r.client_agency.as_str()),
        ("node/vpcp", "")
    );
}

#[tokio::test]
async fn a_status_in_someone_elses_name_is_refused() {
    let h = hub();
    let mut update = status(&format!("{:032x}", 8), "000.00.00.H37", "03");
    if let Some(e) = update.event.as_mut() {
        e.by = "000.00.00.H41".into();
    }
    let err = h
        .service
        .relay_status(request_from(node("lgsp-langson"), update))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn only_nodes_route() {
    let h = hub();
    for who in [
        Identity::new(Role::Client, "dms").expect("id"),
        Identity::new(Role::Admin, "ops").expect("id"),
        Identity::new(Role::Hub, "hub").expect("id"),
    ] {
        let err = h
            .service
            .route(request_from(
                who,
                call(&format!("{:032x}", 9), "000.00.00.H37", LOOKUP),
            ))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::PermissionDenied);
    }
}

#[tokio::test]
async fn an_unreachable_provider_node_is_unavailable_and_recorded() {
    let h = hub();
    // The registry's provider node listens nowhere (port 9, discard).
    let err = h
        .service
        .route(request_from(
            node("lgsp-langson"),
            call(&format!("{:032x}", 10), "000.00.00.H37", LOOKUP),
        ))
        .await
        .expect_err("unreachable");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let r = h.records().pop().expect("audited");
    assert_eq!(r.outcome, "UNAVAILABLE");
    assert_eq!(r.client_agency, "000.00.00.H37");
}
