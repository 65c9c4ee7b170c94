//! The node's data-call handlers called directly, as a hostile hub-lookalike,
//! node or agency system holding a valid certificate would call them.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tonic::{Code, transport::Endpoint};
use truc_audit::{AuditLog, Options};
use truc_pipeline::{Pipeline, request_from};
use truc_pki::{Identity, Role};
use truc_proto::v1::{
    CallRequest, DataRequest, Envelope, GetTrackingRequest, Organ, WatchTrackingRequest,
    agency_server::Agency, node_server::Node,
};
use truc_registry::{AgencyCode, NodeId, ServiceId};
use truc_store::Store;

use crate::{HubKey, NodeConfig, agency::AgencyService, docs::Documents, invoke::NodeService};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    node: NodeService,
    agency: AgencyService,
    docs: Arc<Documents>,
}

const SERVICE: &str = "000.00.00.H37/household-registry/v1";

/// The config of node `lgsp-langson` keeping its data in `data_dir`, with
/// the agency systems `(name, agencies it acts for)` of `clients` and the
/// `(service, address)` `backends`. The hub is at 127.0.0.1:9, where nothing
/// listens.
pub(crate) fn config(
    data_dir: &std::path::Path,
    clients: &[(&str, &[&str])],
    backends: &[(&str, &str)],
) -> NodeConfig {
    NodeConfig {
        id: NodeId::parse("lgsp-langson").expect("id"),
        listen: "127.0.0.1:1".parse().expect("addr"),
        ops_listen: "127.0.0.1:2".parse().expect("addr"),
        data_dir: data_dir.into(),
        hub_address: "127.0.0.1:9".into(),
        hub_name: "hub".into(),
        tls: truc_pki::TlsFiles::new("a".into(), "b".into(), "c".into()),
        limits: truc_ops::config::Limits::default(),
        documents: truc_doc::Limits::default(),
        document_service: crate::config::DocumentService::default(),
        clients: clients
            .iter()
            .map(|(name, agencies)| {
                let agencies = agencies
                    .iter()
                    .map(|a| AgencyCode::parse(a).expect("code"))
                    .collect();
                ((*name).to_string(), agencies)
            })
            .collect(),
        backends: backends
            .iter()
            .map(|(s, a)| (ServiceId::parse(s).expect("id"), (*a).to_string()))
            .collect(),
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("db")).expect("store");
    // Nothing listens at the backend's address: the backend is down.
    let config = Arc::new(config(
        dir.path(),
        &[
            ("dms", &["000.00.00.H37"]),
            ("other-dms", &["000.00.00.G22"]),
        ],
        &[(SERVICE, "127.0.0.1:9")],
    ));
    let audit =
        AuditLog::open(store.clone(), "lgsp-langson", Options::default(), None).expect("log");
    let pipeline = Arc::new(Pipeline::new(audit, Arc::new(truc_ops::Metrics::new())));
    // Nothing listens there either: the hub is down.
    let hub = Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
    let docs = Documents::open(
        store.clone(),
        dir.path(),
        hub.clone(),
        truc_doc::Limits::default(),
        crate::config::DocumentService::default(),
        (Duration::from_millis(10), Duration::from_millis(100)),
    )
    .expect("documents");
    let node = NodeService::new(config.clone(), pipeline.clone(), docs.clone()).expect("node");
    let agency = AgencyService::new(config, hub, pipeline, HubKey::default(), docs.clone());
    Fixture {
        _dir: dir,
        store,
        node,
        agency,
        docs,
    }
}

impl Fixture {
    fn last(&self) -> truc_audit::AuditRecord {
        truc_audit::read_records(&self.store, 0)
            .last()
            .expect("a record")
            .expect("readable")
            .0
    }
}

fn routed(id: &str) -> DataRequest {
    DataRequest {
        transaction_id: id.into(),
        client_agency: "000.00.00.G22".into(),
        service: SERVICE.into(),
        content_type: "application/json".into(),
        payload: Bytes::from_static(b"{}"),
    }
}

fn who(role: Role, name: &str) -> Identity {
    Identity::new(role, name).expect("identity")
}

#[tokio::test]
async fn only_the_hub_invokes_backends() {
    let f = fixture();
    for caller in [
        who(Role::Node, "vpcp"),
        who(Role::Node, "hub"),
        who(Role::Client, "dms"),
        who(Role::Hub, "another-hub"),
    ] {
        let err = f
            .node
            .invoke(request_from(caller.clone(), routed(&format!("{:032x}", 1))))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::PermissionDenied, "{caller}");
        let r = f.last();
        assert_eq!(r.caller, caller.to_string());
        assert_eq!(r.outcome, "PERMISSION_DENIED");
        assert_eq!((r.client_agency.as_str(), r.service.as_str()), ("", ""));
    }
}

#[tokio::test]
async fn invoke_fields_are_checked_even_from_the_hub() {
    let f = fixture();
    let hub = who(Role::Hub, "hub");
    let bad = [
        routed("not-an-id"),
        DataRequest {
            client_agency: "000.00.00.G22\0".into(),
            ..routed(&format!("{:032x}", 2))
        },
        DataRequest {
            content_type: "text/plain\r\nx: y".into(),
            ..routed(&format!("{:032x}", 3))
        },
    ];
    for req in bad {
        let err = f
            .node
            .invoke(request_from(hub.clone(), req))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    // A well-formed call to a backend that is down.
    let err = f
        .node
        .invoke(request_from(hub, routed(&format!("{:032x}", 4))))
        .await
        .expect_err("backend down");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(f.last().outcome, "UNAVAILABLE");
}

fn call(agency: &str) -> CallRequest {
    CallRequest {
        client_agency: agency.into(),
        service: "000.00.00.G22/citizen-lookup/v1".into(),
        content_type: "application/json".into(),
        payload: Bytes::from_static(b"{}"),
    }
}

#[tokio::test]
async fn an_agency_system_acts_only_for_its_agencies() {
    let f = fixture();
    let err = f
        .agency
        .call(request_from(
            who(Role::Client, "dms"),
            call("000.00.00.G22"),
        ))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    let r = f.last();
    assert_eq!(
        (r.caller.as_str(), r.client_agency.as_str()),
        ("client/dms", "")
    );
    // A client certificate this node does not know acts for no one.
    let err = f
        .agency
        .call(request_from(
            who(Role::Client, "stranger"),
            call("000.00.00.H37"),
        ))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    // Nodes and the hub are not agency systems.
    let err = f
        .agency
        .call(request_from(who(Role::Node, "vpcp"), call("000.00.00.H37")))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_call_with_bad_fields_never_leaves_the_node() {
    let f = fixture();
    let dms = who(Role::Client, "dms");
    let huge = CallRequest {
        service: format!("000.00.00.G22/citizen-lookup/v1{}", "9".repeat(100_000)),
        ..call("000.00.00.H37")
    };
    let control = CallRequest {
        content_type: "a\0b".into(),
        ..call("000.00.00.H37")
    };
    for req in [huge, control] {
        let err = f
            .agency
            .call(request_from(dms.clone(), req))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument);
        let r = f.last();
        assert_eq!(r.transaction_id, "", "no id was spent on it");
    }
}

#[tokio::test]
async fn a_hub_that_is_down_is_unavailable_and_the_call_is_recorded() {
    let f = fixture();
    let err = f
        .agency
        .call(request_from(
            who(Role::Client, "dms"),
            call("000.00.00.H37"),
        ))
        .await
        .expect_err("hub down");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("the hub"), "{err:?}");
    let r = f.last();
    assert_eq!(r.outcome, "UNAVAILABLE");
    assert_eq!(r.client_agency, "000.00.00.H37");
    assert_eq!(r.transaction_id.len(), 32);
}

#[tokio::test]
async fn tracking_is_watched_only_by_the_sender_like_it_is_read() {
    let f = fixture();
    // G22 (another agency system's agency on this node) sent a document to H37.
    let doc = "000.00.00.G22,2026/11/28,1/UBND-VP";
    f.docs.record_sent(
        "000.00.00.G22",
        Envelope {
            to: vec![Organ {
                organ_id: "000.00.00.H37".into(),
                ..Organ::default()
            }],
            document_id: doc.into(),
            ..Envelope::default()
        },
    );
    let dms = who(Role::Client, "dms");
    let mine = "000.00.00.H37,2026/11/28,1/UBND-VP";
    let cases = [
        // Acting for the sender without being allowed to.
        (dms.clone(), "000.00.00.G22", doc, Code::PermissionDenied),
        // Acting for its own agency: another agency's document id.
        (dms.clone(), "000.00.00.H37", doc, Code::InvalidArgument),
        // Acting for its own agency, which sent no such document.
        (dms.clone(), "000.00.00.H37", mine, Code::NotFound),
        // Nodes and the hub are not agency systems.
        (
            who(Role::Node, "vpcp"),
            "000.00.00.G22",
            doc,
            Code::PermissionDenied,
        ),
        (
            who(Role::Hub, "hub"),
            "000.00.00.G22",
            doc,
            Code::PermissionDenied,
        ),
        (dms, "not-a-code", doc, Code::InvalidArgument),
    ];
    for (caller, sender, doc, code) in cases {
        let watch = WatchTrackingRequest {
            sender: sender.into(),
            document_id: doc.into(),
        };
        let err = f
            .agency
            .watch_tracking(request_from(caller.clone(), watch))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), code, "{caller} as {sender}: {err:?}");
        let get = GetTrackingRequest {
            sender: sender.into(),
            document_id: doc.into(),
        };
        let err = f
            .agency
            .get_tracking(request_from(caller.clone(), get))
            .await
            .expect_err("refused");
        assert_eq!(
            err.code(),
            code,
            "GetTracking agrees for {caller} as {sender}"
        );
    }
    // The sender's own system watches it.
    let mut watch = f
        .agency
        .watch_tracking(request_from(
            who(Role::Client, "other-dms"),
            WatchTrackingRequest {
                sender: "000.00.00.G22".into(),
                document_id: doc.into(),
            },
        ))
        .await
        .expect("the sender watches")
        .into_inner();
    let first = tokio_stream::StreamExt::next(&mut watch)
        .await
        .expect("a first message")
        .expect("the tracking");
    assert_eq!(first.document_id, doc);
    assert_eq!(first.recipients[0].delivery, "pending");
}
