//! The node's handlers (data calls and documents) called directly, as a
//! hostile hub-lookalike, node or agency system holding a valid certificate
//! would call them.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tonic::{Code, Status, transport::Endpoint};
use truc_audit::{AuditLog, Options};
use truc_pipeline::{Pipeline, client_stream, request_from};
use truc_pki::{Identity, Role};
use truc_proto::v1::{
    CallRequest, Chunk, DataRequest, Envelope, FetchDocumentRequest, GetTrackingRequest,
    ListInboxRequest, Organ, RelayHeader, RelayRequest, SendDocumentRequest, StatusEvent,
    StatusUpdate, UpdateStatusRequest, WatchInboxRequest, WatchTrackingRequest,
    agency_server::Agency, node_server::Node, relay_request, send_document_request,
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
        hub_addresses: vec!["127.0.0.1:9".into()],
        hub_name: "hub".into(),
        hub_keys: Vec::new(),
        registry_refresh: Duration::from_secs(10),
        tls: truc_pki::TlsFiles::new("a".into(), "b".into(), "c".into()),
        limits: truc_ops::config::Limits::default(),
        tracing: Default::default(),
        documents: truc_doc::Limits::default(),
        document_service: crate::config::DocumentService::default(),
        witness_key: None,
        witness_interval: std::time::Duration::from_secs(10),
        http: None,
        vxp: None,
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
            .map(|(s, a)| {
                (
                    ServiceId::parse(s).expect("id"),
                    crate::config::Backend::from_address(a),
                )
            })
            .collect(),
    }
}

fn fixture() -> Fixture {
    // Nothing listens there: the hub is down.
    fixture_with_hub(Endpoint::from_static("http://127.0.0.1:9").connect_lazy())
}

/// The fixture with its hub at `hub`.
fn fixture_with_hub(hub: tonic::transport::Channel) -> Fixture {
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
    let hub = crate::hubs::Hubs::of(vec![("the hub".into(), hub)]);
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
    let receipts = crate::receipts::Receipts::unstarted(HubKey::new(Vec::new()), &config.id);
    let agency = AgencyService::new(config, hub, pipeline, receipts, docs.clone());
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
        ..Default::default()
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
        ..Default::default()
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

/// A call from H37 with a purpose, an end user and a case that are valid.
fn valid_why() -> CallRequest {
    CallRequest {
        purpose: "hộ tịch".into(),
        end_user: "Nguyễn Văn A".into(),
        case: "HS-1".into(),
        ..call("000.00.00.H37")
    }
}

#[tokio::test]
async fn hostile_why_values_never_leave_the_node_nor_reach_its_record() {
    let f = fixture();
    let dms = who(Role::Client, "dms");
    let cases = [
        CallRequest {
            end_user: "Nguyễn\0Văn A".into(),
            ..call("000.00.00.H37")
        },
        CallRequest {
            purpose: "x".repeat(201),
            ..call("000.00.00.H37")
        },
        CallRequest {
            case: "HS-1\r\nx: y".into(),
            ..call("000.00.00.H37")
        },
    ];
    for req in cases {
        let err = f
            .agency
            .call(request_from(dms.clone(), req))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let r = f.last();
        assert_eq!(
            (r.purpose.as_str(), r.end_user.as_str(), r.case.as_str()),
            ("", "", "")
        );
    }
    // Valid values are recorded as given (the hub is down here).
    let _ = f.agency.call(request_from(dms, valid_why())).await;
    let r = f.last();
    assert_eq!(
        (r.purpose.as_str(), r.end_user.as_str(), r.case.as_str()),
        ("hộ tịch", "Nguyễn Văn A", "HS-1")
    );
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

/// A hub that refuses every routed call as over its quota, as the hub
/// answers it (RESOURCE_EXHAUSTED, `retry-after-ms`).
struct QuotaHub;

#[tonic::async_trait]
impl truc_proto::v1::hub_server::Hub for QuotaHub {
    async fn route(
        &self,
        _: tonic::Request<DataRequest>,
    ) -> Result<tonic::Response<truc_proto::v1::DataResponse>, Status> {
        let mut s = Status::resource_exhausted("agency 000.00.00.H37 is over its quota");
        s.metadata_mut().insert(
            truc_ops::RETRY_AFTER_MS_HEADER,
            "1234".parse().expect("ascii"),
        );
        Err(s)
    }

    async fn relay(
        &self,
        _: tonic::Request<tonic::Streaming<RelayRequest>>,
    ) -> Result<tonic::Response<truc_proto::v1::RelayResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn relay_status(
        &self,
        _: tonic::Request<StatusUpdate>,
    ) -> Result<tonic::Response<truc_proto::v1::StatusAck>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn get_registry(
        &self,
        _: tonic::Request<truc_proto::v1::GetRegistryRequest>,
    ) -> Result<tonic::Response<truc_proto::v1::RegistrySnapshot>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

#[tokio::test]
async fn a_quota_refusal_reaches_the_agency_system_with_its_retry_hint() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(truc_proto::v1::hub_server::HubServer::new(QuotaHub))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let hub = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy();
    let f = fixture_with_hub(hub);
    let err = f
        .agency
        .call(request_from(
            who(Role::Client, "dms"),
            call("000.00.00.H37"),
        ))
        .await
        .expect_err("over quota");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.metadata()
            .get(truc_ops::RETRY_AFTER_MS_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some("1234"),
        "{err:?}"
    );
    assert!(err.message().contains("over its quota"), "{err:?}");
    let r = f.last();
    assert_eq!(r.outcome, "QUOTA_EXCEEDED", "counted apart here too");
    assert_eq!(
        err.metadata()
            .get(truc_ops::TRANSACTION_ID_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(r.transaction_id.as_str())
    );
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

// Documents. `dms` acts for H37, `other-dms` for G22, both on this node;
// the client streams (SendDocument, Deliver) are built from their messages.

const H37: &str = "000.00.00.H37";
const G22: &str = "000.00.00.G22";
const A01: &str = "000.00.00.A01";

/// A valid envelope from `from` to `to` with the attachments `files`.
fn envelope(from: &str, to: &str, files: &[&[u8]]) -> Envelope {
    truc_doc::sample::envelope(from, &[to], "1", truc_doc::sample::attachments(files))
}

/// A chunk of `data` at `offset` of attachment 0, with its digest.
fn piece(offset: u64, data: &'static [u8]) -> Chunk {
    truc_doc::chunks::chunk(0, offset, Bytes::from_static(data))
}

fn opening(envelope: Envelope) -> SendDocumentRequest {
    SendDocumentRequest {
        part: Some(send_document_request::Part::Envelope(envelope)),
    }
}

fn send_chunk(c: Chunk) -> SendDocumentRequest {
    SendDocumentRequest {
        part: Some(send_document_request::Part::Chunk(c)),
    }
}

/// The header of a Deliver stream of `envelope` from A01 to G22.
fn relay_header(envelope: Option<Envelope>) -> RelayRequest {
    RelayRequest {
        part: Some(relay_request::Part::Header(RelayHeader {
            transaction_id: format!("{:032x}", 0x200),
            sender: A01.into(),
            recipient: G22.into(),
            envelope,
        })),
    }
}

fn relay_chunk(c: Chunk) -> RelayRequest {
    RelayRequest {
        part: Some(relay_request::Part::Chunk(c)),
    }
}

/// The Deliver stream of a document from A01 to G22 without attachments.
fn delivery() -> Vec<RelayRequest> {
    vec![relay_header(Some(envelope(A01, G22, &[])))]
}

impl Fixture {
    async fn send(
        &self,
        caller: Identity,
        messages: Vec<SendDocumentRequest>,
    ) -> Result<truc_proto::v1::SendDocumentResponse, Status> {
        self.agency
            .send_document(request_from(caller, client_stream(messages)))
            .await
            .map(|r| r.into_inner())
    }

    /// Whether `sender` has a tracking of `document_id` (an outbox entry).
    fn sent(&self, sender: &str, document_id: &str) -> bool {
        let sender = AgencyCode::parse(sender).expect("code");
        match self.docs.tracking(&sender, document_id) {
            Ok(_) => true,
            Err(e) if e.code() == Code::NotFound => false,
            Err(e) => panic!("tracking: {e:?}"),
        }
    }

    /// The entries of `recipient`'s inbox, read past the handlers.
    fn inbox(&self, recipient: &str) -> Vec<truc_proto::v1::InboxEntry> {
        let recipient = AgencyCode::parse(recipient).expect("code");
        self.docs
            .list_inbox(&recipient, &ListInboxRequest::default())
            .expect("inbox")
            .entries
    }
}

#[tokio::test]
async fn a_document_is_sent_only_for_an_agency_the_system_acts_for() {
    let f = fixture();
    let from_g22 = || vec![opening(envelope(G22, H37, &[]))];
    for caller in [
        // Acts for H37 only.
        who(Role::Client, "dms"),
        // A client certificate this node does not know acts for no one.
        who(Role::Client, "stranger"),
        // Nodes and the hub are not agency systems.
        who(Role::Node, "vpcp"),
        who(Role::Hub, "hub"),
    ] {
        let err = f
            .send(caller.clone(), from_g22())
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::PermissionDenied, "{caller}: {err:?}");
    }
    assert_eq!(f.docs.queue_lengths(), (0, 0), "nothing queued");
    let doc = envelope(G22, H37, &[]).document_id;
    assert!(!f.sent(G22, &doc), "nothing in the outbox");
    // G22's own system sends it.
    let ok = f
        .send(who(Role::Client, "other-dms"), from_g22())
        .await
        .expect("the sender's own system");
    assert_eq!((ok.sender.as_str(), ok.duplicate), (G22, false));
    assert_eq!(f.docs.queue_lengths(), (1, 0), "one delivery queued");
    assert!(f.sent(G22, &doc));
}

#[tokio::test]
async fn a_bad_send_is_refused_and_nothing_is_queued() {
    let f = fixture();
    let dms = who(Role::Client, "dms");
    let file: &'static [u8] = b"hello world";
    let with_file = || envelope(H37, G22, &[file]);
    let mut altered = piece(0, b"hello world");
    altered.data = Bytes::from_static(b"hellO world");
    let cases: Vec<(Vec<SendDocumentRequest>, Code, &str)> = vec![
        (
            vec![],
            Code::InvalidArgument,
            "the first message must be the envelope",
        ),
        (
            vec![send_chunk(piece(0, b"hello world"))],
            Code::InvalidArgument,
            "the first message must be the envelope",
        ),
        (
            vec![opening(Envelope {
                subject: "a\0b".into(),
                ..envelope(H37, G22, &[])
            })],
            Code::InvalidArgument,
            "subject must not contain control characters",
        ),
        (
            vec![opening(Envelope {
                to: Vec::new(),
                ..envelope(H37, G22, &[])
            })],
            Code::InvalidArgument,
            "at least one recipient is required",
        ),
        (
            vec![opening(with_file()), send_chunk(piece(0, b"hello world!"))],
            Code::InvalidArgument,
            "more bytes than the 11 declared",
        ),
        (
            vec![opening(with_file()), send_chunk(altered)],
            Code::DataLoss,
            "does not match its sha256",
        ),
        (
            vec![opening(with_file()), send_chunk(piece(0, b"hello"))],
            Code::InvalidArgument,
            "ended after 5 of 11 bytes",
        ),
        (
            vec![
                opening(with_file()),
                send_chunk(piece(0, b"hello")),
                opening(with_file()),
            ],
            Code::InvalidArgument,
            "only chunks may follow the envelope",
        ),
    ];
    let doc = with_file().document_id;
    for (messages, code, words) in cases {
        let err = f.send(dms.clone(), messages).await.expect_err("refused");
        assert_eq!(err.code(), code, "{words}: {err:?}");
        assert!(err.message().contains(words), "{words}: {err:?}");
        assert_eq!(f.docs.queue_lengths(), (0, 0), "{words}: nothing queued");
        assert!(!f.sent(H37, &doc), "{words}: nothing in the outbox");
        // The attachment is small: it would be stored with the send's commit.
        assert!(
            f.store.scan_prefix(b"doc/b/").next().is_none(),
            "{words}: no attachment stored"
        );
    }
    // The whole document, after all that, is accepted as a first send.
    let ok = f
        .send(
            dms,
            vec![opening(with_file()), send_chunk(piece(0, b"hello world"))],
        )
        .await
        .expect("a good send");
    assert!(!ok.duplicate);
    assert_eq!(f.docs.queue_lengths(), (1, 0));
    assert_eq!(f.store.scan_prefix(b"doc/b/").count(), 1, "its attachment");
}

#[tokio::test]
async fn another_agencys_inbox_is_neither_read_nor_changed() {
    let f = fixture();
    // A01 sent G22 (other-dms's agency) a document; dms acts for H37.
    f.node
        .deliver(request_from(
            who(Role::Hub, "hub"),
            client_stream(delivery()),
        ))
        .await
        .expect("delivered");
    let doc = envelope(A01, G22, &[]).document_id;
    let before = f.inbox(G22);
    assert_eq!(before.len(), 1);
    let dms = who(Role::Client, "dms");
    let denied = |e: Status| assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let not_found = |e: Status| assert_eq!(e.code(), Code::NotFound, "{e:?}");
    for caller in [dms.clone(), who(Role::Node, "vpcp"), who(Role::Hub, "hub")] {
        let list = ListInboxRequest {
            recipient: G22.into(),
            ..ListInboxRequest::default()
        };
        denied(
            f.agency
                .list_inbox(request_from(caller.clone(), list))
                .await
                .expect_err("list"),
        );
        let watch = WatchInboxRequest {
            recipient: G22.into(),
        };
        denied(
            f.agency
                .watch_inbox(request_from(caller.clone(), watch))
                .await
                .expect_err("watch"),
        );
    }
    // Its own inbox holds nothing of G22's.
    let own = f
        .agency
        .list_inbox(request_from(
            dms.clone(),
            ListInboxRequest {
                recipient: H37.into(),
                ..ListInboxRequest::default()
            },
        ))
        .await
        .expect("its own inbox")
        .into_inner();
    assert!(own.entries.is_empty(), "{own:?}");
    let fetch = |recipient: &str| FetchDocumentRequest {
        recipient: recipient.into(),
        sender: A01.into(),
        document_id: doc.clone(),
    };
    denied(
        f.agency
            .fetch_document(request_from(dms.clone(), fetch(G22)))
            .await
            .expect_err("fetch as G22"),
    );
    not_found(
        f.agency
            .fetch_document(request_from(dms.clone(), fetch(H37)))
            .await
            .expect_err("fetch from its own inbox"),
    );
    let update = |recipient: &str| UpdateStatusRequest {
        recipient: recipient.into(),
        sender: A01.into(),
        document_id: doc.clone(),
        status: "03".into(),
        description: "đã nhận".into(),
        staff: None,
    };
    denied(
        f.agency
            .update_status(request_from(dms.clone(), update(G22)))
            .await
            .expect_err("update as G22"),
    );
    not_found(
        f.agency
            .update_status(request_from(dms.clone(), update(H37)))
            .await
            .expect_err("update in its own inbox"),
    );
    assert_eq!(f.inbox(G22), before, "G22's entry is unchanged");
    assert_eq!(f.docs.queue_lengths(), (0, 0), "no status queued");
    // G22's own system reads it and sets its status.
    let other = who(Role::Client, "other-dms");
    let mut fetched = f
        .agency
        .fetch_document(request_from(other.clone(), fetch(G22)))
        .await
        .expect("fetch by the recipient")
        .into_inner();
    let first = tokio_stream::StreamExt::next(&mut fetched)
        .await
        .expect("a first message")
        .expect("the entry");
    assert!(first.part.is_some());
    f.agency
        .update_status(request_from(other, update(G22)))
        .await
        .expect("the recipient sets its status");
    assert_eq!(f.inbox(G22)[0].status, "03");
    assert_eq!(f.docs.queue_lengths(), (0, 1), "its status queued");
}

#[tokio::test]
async fn only_the_hub_delivers_documents_and_statuses() {
    let f = fixture();
    // H37 (dms's agency) sent G22 a document.
    let sent = envelope(H37, G22, &[]);
    f.docs.record_sent(H37, sent.clone());
    let status = |recipient: &str, by: &str| StatusUpdate {
        transaction_id: format!("{:032x}", 0x300),
        sender: H37.into(),
        document_id: sent.document_id.clone(),
        recipient: recipient.into(),
        event: Some(StatusEvent {
            code: "03".into(),
            description: "đã nhận".into(),
            unix_ms: 1,
            by: by.into(),
            staff: None,
        }),
        change: 0,
    };
    let tracking = || {
        f.docs
            .tracking(&AgencyCode::parse(H37).expect("code"), &sent.document_id)
            .expect("tracking")
            .recipients
    };
    let before = tracking();
    for caller in [
        who(Role::Node, "vpcp"),
        who(Role::Node, "hub"),
        who(Role::Client, "dms"),
        who(Role::Hub, "another-hub"),
        who(Role::Admin, "hub"),
    ] {
        let err = f
            .node
            .deliver(request_from(caller.clone(), client_stream(delivery())))
            .await
            .expect_err("deliver refused");
        assert_eq!(err.code(), Code::PermissionDenied, "{caller}: {err:?}");
        let err = f
            .node
            .deliver_status(request_from(caller.clone(), status(G22, G22)))
            .await
            .expect_err("status refused");
        assert_eq!(err.code(), Code::PermissionDenied, "{caller}: {err:?}");
    }
    assert!(f.inbox(G22).is_empty(), "nothing delivered");
    assert_eq!(tracking(), before, "no status recorded");
    // Even the hub cannot set a status for an agency the document was not sent to.
    let err = f
        .node
        .deliver_status(request_from(who(Role::Hub, "hub"), status(A01, A01)))
        .await
        .expect_err("not a recipient");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(tracking(), before);
    // The hub delivers both.
    let hub = who(Role::Hub, "hub");
    let delivered = f
        .node
        .deliver(request_from(hub.clone(), client_stream(delivery())))
        .await
        .expect("the hub delivers")
        .into_inner();
    assert!(!delivered.duplicate);
    assert_eq!(f.inbox(G22).len(), 1);
    f.node
        .deliver_status(request_from(hub, status(G22, G22)))
        .await
        .expect("the hub delivers a status");
    assert_eq!(tracking()[0].status, "03");
}

#[tokio::test]
async fn a_bad_delivery_even_from_the_hub_is_refused_and_nothing_stored() {
    let f = fixture();
    let hub = who(Role::Hub, "hub");
    let file: &'static [u8] = b"hello world";
    let with_file = || Some(envelope(A01, G22, &[file]));
    let mut altered = piece(0, b"hello world");
    altered.data = Bytes::from_static(b"hellO world");
    let cases: Vec<(Vec<RelayRequest>, Code, &str)> = vec![
        (
            vec![],
            Code::InvalidArgument,
            "the first message must be the header",
        ),
        (
            vec![relay_chunk(piece(0, b"hello world"))],
            Code::InvalidArgument,
            "the first message must be the header",
        ),
        (
            vec![relay_header(None)],
            Code::InvalidArgument,
            "header.envelope is required",
        ),
        (
            vec![relay_header(Some(Envelope {
                subject: "a\0b".into(),
                ..envelope(A01, G22, &[])
            }))],
            Code::InvalidArgument,
            "subject must not contain control characters",
        ),
        (
            vec![
                relay_header(with_file()),
                relay_chunk(piece(0, b"hello world!")),
            ],
            Code::InvalidArgument,
            "more bytes than the 11 declared",
        ),
        (
            vec![relay_header(with_file()), relay_chunk(altered)],
            Code::DataLoss,
            "does not match its sha256",
        ),
        (
            vec![relay_header(with_file()), relay_chunk(piece(0, b"hello"))],
            Code::InvalidArgument,
            "ended after 5 of 11 bytes",
        ),
        (
            vec![
                relay_header(with_file()),
                relay_chunk(piece(0, b"hello")),
                relay_header(with_file()),
            ],
            Code::InvalidArgument,
            "only chunks may follow the header",
        ),
    ];
    for (messages, code, words) in cases {
        let err = f
            .node
            .deliver(request_from(hub.clone(), client_stream(messages)))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), code, "{words}: {err:?}");
        assert!(err.message().contains(words), "{words}: {err:?}");
        assert!(f.inbox(G22).is_empty(), "{words}: nothing in the inbox");
    }
    // The whole document is then delivered as a first delivery.
    let ok = f
        .node
        .deliver(request_from(
            hub,
            client_stream(vec![
                relay_header(with_file()),
                relay_chunk(piece(0, b"hello world")),
            ]),
        ))
        .await
        .expect("a good delivery")
        .into_inner();
    assert!(!ok.duplicate);
    assert_eq!(f.inbox(G22).len(), 1);
}

/// An envelope carrying kept edXML content: a signature and one unknown
/// element whose XML is `unknown`.
fn with_edxml(mut e: Envelope, unknown: &str) -> Envelope {
    let extra = truc_edxml::Preserved {
        signature: Some("<edXML:DigitalSignature><Signature/></edXML:DigitalSignature>".into()),
        unknown: vec![truc_edxml::Fragment {
            parent: "edXML/edXMLEnvelope/edXMLHeader/MessageHeader".into(),
            xml: unknown.into(),
        }],
        ..truc_edxml::Preserved::default()
    };
    e.preserved = extra.to_bytes().into();
    e
}

/// A second Subject hidden in an "unknown" element: the recipient's
/// package would say something the audited envelope does not.
const FORGED: &str = "<edXML:Subject>Giả mạo</edXML:Subject>";

fn violation(s: &Status) -> Option<&str> {
    s.metadata()
        .get(truc_doc::VIOLATION_HEADER)
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn kept_edxml_content_that_changes_the_document_is_refused_by_both_nodes() {
    let f = fixture();
    // A sending system with a valid certificate.
    let dms = who(Role::Client, "dms");
    let forged = with_edxml(envelope(H37, G22, &[]), FORGED);
    let err = f
        .send(dms.clone(), vec![opening(forged)])
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(violation(&err), Some("R.Preserved"), "{err:?}");
    let mut oversized = envelope(H37, G22, &[]);
    oversized.preserved = vec![b' '; truc_doc::MAX_PRESERVED_BYTES + 1].into();
    let err = f
        .send(dms.clone(), vec![opening(oversized)])
        .await
        .expect_err("refused");
    assert_eq!(violation(&err), Some("R.Preserved.Size"), "{err:?}");
    assert_eq!(f.docs.queue_lengths(), (0, 0), "nothing queued");

    // A sending node that skipped the check: the recipient's node refuses.
    let hub = who(Role::Hub, "hub");
    let err = f
        .node
        .deliver(request_from(
            hub.clone(),
            client_stream(vec![relay_header(Some(with_edxml(
                envelope(A01, G22, &[]),
                FORGED,
            )))]),
        ))
        .await
        .expect_err("refused");
    assert_eq!(violation(&err), Some("R.Preserved"), "{err:?}");
    assert!(f.inbox(G22).is_empty(), "nothing stored");

    // A real unknown element passes both and is kept as it came.
    let good = with_edxml(envelope(A01, G22, &[]), "<edXML:Ghi>chú</edXML:Ghi>");
    f.node
        .deliver(request_from(
            hub,
            client_stream(vec![relay_header(Some(good.clone()))]),
        ))
        .await
        .expect("delivered");
    let inbox = f.inbox(G22);
    assert_eq!(
        inbox[0].envelope.as_ref().map(|e| &e.preserved),
        Some(&good.preserved)
    );
    f.send(
        dms,
        vec![opening(with_edxml(envelope(H37, G22, &[]), "<edXML:Ghi/>"))],
    )
    .await
    .expect("sent");
}

/// `POST /v1/call/{service}` to the REST door as agency system `dms`
/// (its verified certificate), with `headers`: the HTTP status and the
/// JSON error's code, if any.
async fn door_call(f: &Fixture, headers: &[(&str, &[u8])]) -> (u16, String) {
    use tower::ServiceExt;
    let door = crate::rest_door::routes(f.agency.clone(), 1 << 20, Duration::from_secs(5));
    let mut request = axum::http::Request::post("/v1/call/000.00.00.G22/citizen-lookup/v1")
        .header("content-type", "application/json")
        .header("x-truc-client", "000.00.00.H37");
    for (name, value) in headers {
        request = request.header(
            *name,
            axum::http::HeaderValue::from_bytes(value).expect("header value"),
        );
    }
    let mut request = request.body(axum::body::Body::from("{}")).expect("request");
    request.extensions_mut().insert(truc_pki::PeerInfo {
        identity: who(Role::Client, "dms"),
        remote_addr: None,
    });
    let response = door.oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    (status, json["code"].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn the_rest_door_takes_why_a_call_is_made_in_headers_and_refuses_hostile_ones() {
    let f = fixture();
    let long = "x".repeat(truc_pipeline::fields::MAX_PURPOSE_CHARS + 1);
    let hostile: [(&str, &[u8]); 6] = [
        // Too long.
        ("truc-purpose", long.as_bytes()),
        // A control character, percent-encoded, and a header injection.
        ("truc-end-user", b"Nguy%E1%BB%85n%00A"),
        ("truc-case", b"HS-1%0D%0Ax-truc-client: 000.00.00.G22"),
        // Not percent-encoded: raw UTF-8 bytes; a broken escape; not UTF-8.
        ("truc-purpose", "hộ tịch".as_bytes()),
        ("truc-case", b"HS-1%"),
        ("truc-end-user", b"%C3%28"),
    ];
    for (name, value) in hostile {
        let answer = door_call(&f, &[(name, value)]).await;
        assert_eq!(
            answer,
            (400, "INVALID_ARGUMENT".into()),
            "{name}: {value:?}"
        );
        let r = f.last();
        assert_eq!(
            (r.purpose.as_str(), r.end_user.as_str(), r.case.as_str()),
            ("", "", ""),
            "{name}: nothing of it recorded"
        );
    }
    // Valid values are recorded as given, as Agency.Call records them (the
    // hub is down here: the call fails, its record is written).
    let (status, code) = door_call(
        &f,
        &[
            ("truc-purpose", b"h%E1%BB%99 t%E1%BB%8Bch"),
            ("truc-end-user", b"Nguy%E1%BB%85n V%C4%83n A"),
            ("truc-case", b"HS-1"),
        ],
    )
    .await;
    assert_eq!((status, code.as_str()), (503, "UNAVAILABLE"));
    let by_rest = f.last();
    let _ = f
        .agency
        .call(request_from(who(Role::Client, "dms"), valid_why()))
        .await;
    let by_grpc = f.last();
    assert_eq!(
        (
            by_rest.purpose.as_str(),
            by_rest.end_user.as_str(),
            by_rest.case.as_str()
        ),
        ("hộ tịch", "Nguyễn Văn A", "HS-1")
    );
    let why = |r: &truc_audit::AuditRecord| {
        (
            r.purpose.clone(),
            r.end_user.clone(),
            r.case.clone(),
            r.end_user_hashed,
        )
    };
    assert_eq!(why(&by_rest), why(&by_grpc));
}

#[test]
fn the_node_issues_valid_ids_in_the_order_of_their_millisecond() {
    let ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64
    };
    let before = ms();
    let ids: Vec<String> = (0..64)
        .map(|_| crate::new_transaction_id().expect("id"))
        .collect();
    let after = ms();
    let mut distinct = std::collections::HashSet::new();
    for id in &ids {
        truc_pipeline::fields::transaction_id("transaction_id", id).expect("a valid id");
        let issued = u64::from_str_radix(&id[..12], 16).expect("hex");
        assert!(before <= issued && issued <= after, "{id} not issued now");
        assert!(distinct.insert(id.clone()), "{id} issued twice");
    }
    // Issued one after the other, their time prefixes never go back.
    assert!(ids.windows(2).all(|w| w[0][..12] <= w[1][..12]));
}

#[tokio::test]
async fn a_small_attachment_is_stored_with_its_document_and_fetched_whole() {
    use crate::docs::INLINE_MAX;
    let f = fixture();
    let small: Vec<u8> = (0..INLINE_MAX as u32).map(|i| (i % 251) as u8).collect();
    let large: Vec<u8> = (0..=INLINE_MAX as u32).map(|i| (i % 241) as u8).collect();
    let env = truc_doc::sample::envelope(
        A01,
        &[G22],
        "7",
        truc_doc::sample::attachments(&[&small, b"", &large]),
    );
    let mut messages = vec![relay_header(Some(env.clone()))];
    for (i, data) in [(0u32, &small), (2, &large)] {
        messages.push(relay_chunk(truc_doc::chunks::chunk(
            i,
            0,
            Bytes::from(data.clone()),
        )));
    }
    f.node
        .deliver(request_from(who(Role::Hub, "hub"), client_stream(messages)))
        .await
        .expect("delivered");
    // The small ones are in the store, not files; the large one is a file.
    let dir = f._dir.path().join("attachments");
    let file = |a: &truc_proto::v1::Attachment| dir.join(hex::encode(&a.sha256));
    for (a, bytes) in env.attachments.iter().zip([&small, &Vec::new()]) {
        let stored = f.store.get(crate::docs::blob_key(&a.sha256)).expect("read");
        assert_eq!(stored.as_ref(), Some(bytes), "{} in the store", a.name);
        assert!(!file(a).exists(), "{}: no file", a.name);
    }
    assert!(
        f.store
            .get(crate::docs::blob_key(&env.attachments[2].sha256))
            .expect("read")
            .is_none()
    );
    assert_eq!(
        std::fs::read(file(&env.attachments[2])).expect("file"),
        large
    );
    // The recipient's system fetches all three whole, in order.
    let mut fetched = f
        .agency
        .fetch_document(request_from(
            who(Role::Client, "other-dms"),
            FetchDocumentRequest {
                recipient: G22.into(),
                sender: A01.into(),
                document_id: env.document_id.clone(),
            },
        ))
        .await
        .expect("fetch")
        .into_inner();
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); 3];
    while let Some(m) = tokio_stream::StreamExt::next(&mut fetched).await {
        if let Some(truc_proto::v1::fetch_document_response::Part::Chunk(c)) =
            m.expect("a message").part
        {
            assert_eq!(c.offset as usize, got[c.attachment as usize].len());
            got[c.attachment as usize].extend_from_slice(&c.data);
        }
    }
    assert_eq!(got, [small, Vec::new(), large]);
}

#[tokio::test]
async fn a_send_of_many_small_attachments_keeps_only_its_budget_in_the_store() {
    use crate::docs::INLINE_MAX;
    // As many 4 KiB attachments as the limits allow: what one sender can
    // make a node hold in memory and in one commit is bounded.
    let f = fixture();
    let n = truc_doc::Limits::default().max_attachments;
    let files: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; INLINE_MAX as usize]).collect();
    let refs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let env = envelope(H37, G22, &refs);
    let mut messages = vec![opening(env.clone())];
    for (i, data) in files.iter().enumerate() {
        messages.push(send_chunk(truc_doc::chunks::chunk(
            i as u32,
            0,
            Bytes::from(data.clone()),
        )));
    }
    f.send(who(Role::Client, "dms"), messages)
        .await
        .expect("sent");
    let in_store = f.store.scan_prefix(b"doc/b/").count();
    let dir = f._dir.path().join("attachments");
    let as_files = env
        .attachments
        .iter()
        .filter(|a| dir.join(hex::encode(&a.sha256)).exists())
        .count();
    let budget = (crate::docs::INLINE_PER_DOCUMENT / INLINE_MAX) as usize;
    assert_eq!((in_store, as_files), (budget, n - budget));
}
