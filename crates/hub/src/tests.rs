//! The hub's handlers called directly, as a hostile node holding a valid
//! certificate would call them: no server, the peer identity placed in the
//! request as the TLS layer puts it.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use tonic::{Code, Status};
use truc_audit::{AuditLog, Options, sth::Signer};
use truc_pipeline::{client_stream, request_from};
use truc_pki::{Identity, Role};
use truc_proto::v1::{
    Chunk, DataRequest, Envelope, RelayHeader, RelayRequest, StatusEvent, StatusUpdate,
    hub_server::Hub, relay_request,
};
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

pub(crate) struct Hub_ {
    _dir: tempfile::TempDir,
    pub(crate) store: Store,
    pub(crate) service: HubService,
}

fn hub() -> Hub_ {
    hub_with(registry())
}

pub(crate) fn hub_with(registry: Arc<Registry>) -> Hub_ {
    truc_pki::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let signer = Signer::generate().expect("key");
    let audit =
        AuditLog::open(store.clone(), "hub", Options::default(), Some(signer)).expect("log");
    let client_tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    );
    let service = HubService::new(
        registry,
        crate::signed_registry::tests::key(),
        audit,
        client_tls,
        Arc::new(truc_ops::Metrics::new()),
        truc_ops::config::Limits::default(),
        truc_doc::Limits::default(),
        crate::end_user::EndUserKey::parse(&"4b".repeat(32)).expect("key"),
        truc_ops::trace::Tracing::off(),
    );
    Hub_ {
        _dir: dir,
        store,
        service,
    }
}

pub(crate) fn node(name: &str) -> Identity {
    Identity::new(Role::Node, name).expect("identity")
}

pub(crate) fn call(id: &str, client: &str, service: &str) -> DataRequest {
    DataRequest {
        transaction_id: id.into(),
        client_agency: client.into(),
        service: service.into(),
        content_type: "application/json".into(),
        payload: Bytes::from_static(b"{}"),
        ..DataRequest::default()
    }
}

pub(crate) const LOOKUP: &str = "000.00.00.G22/citizen-lookup/v1";
const HOUSEHOLD: &str = "000.00.00.H37/household-registry/v1";

impl Hub_ {
    pub(crate) fn records(&self) -> Vec<truc_audit::AuditRecord> {
        truc_audit::read_records(&self.store, 0)
            .map(|r| r.expect("record").0)
            .collect()
    }
}

#[tokio::test]
async fn a_node_asking_again_and_again_for_the_whole_registry_is_told_to_wait() {
    use truc_proto::v1::GetRegistryRequest;
    let h = hub();
    let ask = |name: &str, known: &[u8]| {
        request_from(
            node(name),
            GetRegistryRequest {
                known_version: Bytes::copy_from_slice(known),
            },
        )
    };
    let answered = async |name: &str, known: &[u8]| {
        h.service
            .get_registry(ask(name, known))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"))
            .into_inner()
    };
    let first = answered("vpcp", b"").await;
    assert!(!first.unchanged && !first.agencies.is_empty());
    let refused = h
        .service
        .get_registry(ask("vpcp", b""))
        .await
        .expect_err("again at once");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let wait: u64 = refused
        .metadata()
        .get(truc_ops::RETRY_AFTER_MS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after-ms");
    assert!((1..=1000).contains(&wait), "{wait}");
    // Asking with the version it has is what a node does, and always works.
    assert!(answered("vpcp", &first.version).await.unchanged);
    // Another node is not held back by this one.
    let other = answered("lgsp-langson", b"").await;
    assert!(!other.unchanged);
    assert_eq!(other.version, first.version);
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

// Relay: a client stream. Its handler gets the `Streaming` a server would
// decode from the request body; the tests build one from its messages.

const H37: &str = "000.00.00.H37";
const G22: &str = "000.00.00.G22";

/// A valid envelope from `from` to `to` with the attachments `files`.
fn envelope(from: &str, to: &str, files: &[&[u8]]) -> Envelope {
    truc_doc::sample::envelope(from, &[to], "1", truc_doc::sample::attachments(files))
}

fn header(n: u32, sender: &str, recipient: &str, envelope: Option<Envelope>) -> RelayRequest {
    RelayRequest {
        part: Some(relay_request::Part::Header(RelayHeader {
            transaction_id: format!("{:032x}", 0x100 + n),
            sender: sender.into(),
            recipient: recipient.into(),
            envelope,
        })),
    }
}

fn chunk(c: Chunk) -> RelayRequest {
    RelayRequest {
        part: Some(relay_request::Part::Chunk(c)),
    }
}

/// A chunk of `data` at `offset` of attachment 0, with its digest.
fn piece(offset: u64, data: &'static [u8]) -> Chunk {
    truc_doc::chunks::chunk(0, offset, Bytes::from_static(data))
}

impl Hub_ {
    async fn relay(&self, caller: Identity, messages: Vec<RelayRequest>) -> Status {
        self.service
            .relay(request_from(caller, client_stream(messages)))
            .await
            .expect_err("refused")
    }
}

/// A recipient node that never answers: a listener nothing accepts from,
/// so the hub's connection to it waits in its TLS handshake while the relay
/// is checked. A refusal is then the hub's own, never a connection error.
fn silent_node() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind")
}

/// The hub over [`REGISTRY`] with node `vpcp` (hosting G22) at `vpcp`'s
/// address and `extra` appended.
fn hub_at(vpcp: &std::net::TcpListener, extra: &str) -> Hub_ {
    let addr = vpcp.local_addr().expect("address").to_string();
    let text = format!("{}{extra}", REGISTRY.replace("127.0.0.1:9", &addr));
    hub_with(Arc::new(
        Registry::from_toml_str(&text, "registry.toml").expect("registry"),
    ))
}

#[tokio::test]
async fn a_node_cannot_relay_for_an_agency_it_does_not_host() {
    let h = hub();
    // vpcp hosts G22, not H37.
    let err = h
        .relay(
            node("vpcp"),
            vec![header(1, H37, G22, Some(envelope(H37, G22, &[])))],
        )
        .await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("does not host"), "{err:?}");
    let r = h.records().pop().expect("the refusal is audited");
    assert_eq!(r.caller, "node/vpcp", "in the real caller's name");
    assert_eq!(r.outcome, "PERMISSION_DENIED");
    assert_eq!(
        (r.client_agency.as_str(), r.transaction_id.as_str()),
        ("", ""),
        "neither the claimed agency nor the id is taken"
    );
    let stats = truc_audit::read_stats(&h.store).expect("stats");
    assert!(
        stats.stats.keys().all(|k| k.client != H37),
        "no statistics in H37's name on vpcp's word: {stats:?}"
    );
}

#[tokio::test]
async fn only_nodes_relay() {
    let h = hub();
    for who in [
        Identity::new(Role::Client, "dms").expect("id"),
        Identity::new(Role::Admin, "ops").expect("id"),
        Identity::new(Role::Hub, "hub").expect("id"),
    ] {
        let err = h
            .relay(
                who.clone(),
                vec![header(2, H37, G22, Some(envelope(H37, G22, &[])))],
            )
            .await;
        assert_eq!(err.code(), Code::PermissionDenied, "{who}: {err:?}");
        assert_eq!(h.records().pop().expect("audited").caller, who.to_string());
    }
}

#[tokio::test]
async fn a_relay_opens_with_its_header() {
    let h = hub();
    let cases = [
        vec![],
        vec![chunk(piece(0, b"hello"))],
        vec![
            RelayRequest { part: None },
            header(3, H37, G22, Some(envelope(H37, G22, &[]))),
        ],
    ];
    for messages in cases {
        let err = h.relay(node("lgsp-langson"), messages).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message()
                .contains("the first message must be the header"),
            "{err:?}"
        );
        let r = h.records().pop().expect("audited");
        assert_eq!(
            (r.caller.as_str(), r.outcome.as_str()),
            ("node/lgsp-langson", "INVALID_ARGUMENT")
        );
        assert_eq!(r.transaction_id, "", "no id was read");
    }
}

#[tokio::test]
async fn a_relay_header_must_agree_with_its_envelope() {
    let h = hub();
    let bad_subject = Envelope {
        subject: "a\0b".into(),
        ..envelope(H37, G22, &[])
    };
    let cases = [
        (
            header(4, H37, "not-a-code", Some(envelope(H37, G22, &[]))),
            "header.recipient",
        ),
        (header(5, H37, G22, None), "header.envelope"),
        (
            header(6, H37, G22, Some(bad_subject)),
            "subject must not contain control characters",
        ),
        // The envelope is from another agency than the header's sender.
        (
            header(7, H37, G22, Some(envelope("000.00.00.A01", G22, &[]))),
            "header.envelope.from",
        ),
        // The recipient is not one the envelope names.
        (
            header(8, H37, "000.00.00.A01", Some(envelope(H37, G22, &[]))),
            "header.envelope.to",
        ),
    ];
    for (message, field) in cases {
        let err = h.relay(node("lgsp-langson"), vec![message]).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field}: {err:?}");
        assert_eq!(
            h.records().pop().expect("audited").outcome,
            "INVALID_ARGUMENT"
        );
    }
}

#[tokio::test]
async fn a_relay_to_an_agency_not_in_the_registry_is_not_found() {
    let h = hub();
    let z99 = "000.00.00.Z99";
    let err = h
        .relay(
            node("lgsp-langson"),
            vec![header(9, H37, z99, Some(envelope(H37, z99, &[])))],
        )
        .await;
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let r = h.records().pop().expect("audited");
    assert_eq!(r.outcome, "NOT_FOUND");
    assert_eq!(r.client_agency, H37, "the hosted sender is recorded");
    assert_eq!(r.provider_agency, "", "an unknown recipient is not");
}

#[tokio::test]
async fn a_relay_the_registry_does_not_allow_is_refused() {
    let vpcp = silent_node();
    let h = hub_at(&vpcp, "\n[documents]\ndefault = \"deny\"\n");
    let err = h
        .relay(
            node("lgsp-langson"),
            vec![header(10, H37, G22, Some(envelope(H37, G22, &[])))],
        )
        .await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("may not send documents"), "{err:?}");
    let r = h.records().pop().expect("audited");
    assert_eq!(
        (r.client_agency.as_str(), r.provider_agency.as_str()),
        (H37, G22)
    );
}

#[tokio::test]
async fn an_admitted_relay_to_a_node_that_is_down_is_unavailable_and_recorded() {
    // The same relay as the refused ones above, under a registry that
    // allows it: it passes every rule and reaches the recipient's node,
    // which listens nowhere (port 9).
    let h = hub();
    let err = h
        .relay(
            node("lgsp-langson"),
            vec![header(11, H37, G22, Some(envelope(H37, G22, &[])))],
        )
        .await;
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let r = h.records().pop().expect("audited");
    assert_eq!(r.outcome, "UNAVAILABLE");
    assert_eq!(r.transaction_id, format!("{:032x}", 0x100 + 11));
    assert_eq!(r.service, "document/new");
}

#[tokio::test]
async fn relayed_chunks_must_match_what_the_envelope_declares() {
    let vpcp = silent_node();
    let h = hub_at(&vpcp, "");
    let file: &'static [u8] = b"hello world";
    let mut altered = piece(0, b"hello world");
    altered.data = Bytes::from_static(b"hellO world");
    // (chunks after the header, code, words of the message, bytes that passed)
    let cases: Vec<(Vec<RelayRequest>, Code, &str, u64)> = vec![
        (
            vec![chunk(piece(0, b"hello world!"))],
            Code::InvalidArgument,
            "more bytes than the 11 declared",
            0,
        ),
        (
            vec![chunk(piece(0, b"hello world")), chunk(piece(11, b"!"))],
            Code::InvalidArgument,
            "where attachment 1 was expected",
            11,
        ),
        (
            vec![chunk(truc_doc::chunks::chunk(
                1,
                0,
                Bytes::from_static(b"x"),
            ))],
            Code::InvalidArgument,
            "chunk for attachment 1",
            0,
        ),
        (
            vec![chunk(piece(6, b"world"))],
            Code::InvalidArgument,
            "where 0 was expected",
            0,
        ),
        (
            vec![chunk(altered)],
            Code::DataLoss,
            "does not match its sha256",
            0,
        ),
        (
            // Each chunk matches its own digest; the file does not match the envelope.
            vec![chunk(piece(0, b"jello world"))],
            Code::DataLoss,
            "the file's sha256 does not match",
            0,
        ),
        (
            vec![chunk(piece(0, b"hello"))],
            Code::InvalidArgument,
            "ended after 5 of 11 bytes",
            5,
        ),
        (
            vec![
                chunk(piece(0, b"hello")),
                header(0, H37, G22, Some(envelope(H37, G22, &[file]))),
            ],
            Code::InvalidArgument,
            "only chunks may follow the header",
            5,
        ),
    ];
    for (n, (chunks, code, words, passed)) in cases.into_iter().enumerate() {
        let n = 20 + n as u32;
        let mut messages = vec![header(n, H37, G22, Some(envelope(H37, G22, &[file])))];
        messages.extend(chunks);
        let err = h.relay(node("lgsp-langson"), messages).await;
        assert_eq!(err.code(), code, "{words}: {err:?}");
        assert!(err.message().contains(words), "{words}: {err:?}");
        let r = h.records().pop().expect("audited");
        assert_eq!(r.transaction_id, format!("{:032x}", 0x100 + n));
        assert_eq!(
            r.request_bytes, passed,
            "{words}: the bytes that really passed"
        );
        assert_ne!(r.outcome, "OK");
    }
}

#[tokio::test]
async fn a_relay_to_an_agency_no_node_hosts_is_unavailable() {
    let vpcp = silent_node();
    let a03 = "000.00.00.A03";
    let h = hub_at(
        &vpcp,
        "\n[[agency]]\ncode = \"000.00.00.A03\"\nname = \"C\"\n",
    );
    let err = h
        .relay(
            node("lgsp-langson"),
            vec![header(12, H37, a03, Some(envelope(H37, a03, &[])))],
        )
        .await;
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("no node hosts it"), "{err:?}");
    let r = h.records().pop().expect("audited");
    assert_eq!(
        (r.client_agency.as_str(), r.provider_agency.as_str()),
        (H37, a03)
    );
}

/// [`REGISTRY`] with the citizen lookup's end users hashed and its grant
/// requiring one of two purposes.
fn registry_with_purposes() -> Arc<Registry> {
    let text = REGISTRY
        .replace(
            "services = [\"000.00.00.G22/citizen-lookup/v1\"]\n",
            "services = [\"000.00.00.G22/citizen-lookup/v1\"]\npurposes = [\"hộ tịch\", \"cư trú\"]\n",
        )
        .replace(
            "description = \"Look up a citizen\"\n",
            "description = \"Look up a citizen\"\nhash_end_user = true\n",
        );
    Arc::new(Registry::from_toml_str(&text, "registry.toml").expect("registry"))
}

fn why(id: u64, purpose: &str, user: &str, case: &str) -> DataRequest {
    DataRequest {
        purpose: purpose.into(),
        end_user: user.into(),
        case: case.into(),
        ..call(&format!("{id:032x}"), "000.00.00.H37", LOOKUP)
    }
}

/// Every file under `dir`, read whole.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).expect("read")));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_grant_requiring_a_purpose_refuses_calls_without_an_allowed_one() {
    let h = hub_with(registry_with_purposes());
    let lg = || node("lgsp-langson");
    for (i, purpose) in [(0x51, ""), (0x52, "other")] {
        let err = h
            .service
            .route(request_from(lg(), why(i, purpose, "", "HS-1")))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::PermissionDenied, "{purpose:?}: {err:?}");
        assert!(err.message().contains("purpose"), "{err:?}");
        let r = h.records().pop().expect("recorded");
        assert_eq!(
            (r.outcome.as_str(), r.purpose.as_str()),
            ("PERMISSION_DENIED", purpose)
        );
        assert_eq!(r.case, "HS-1");
    }
    // An allowed purpose passes the hub's checks; no node listens at the
    // provider's address, so the call ends there.
    let err = h
        .service
        .route(request_from(lg(), why(0x53, "cư trú", "", "")))
        .await
        .expect_err("the provider is down");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(h.records().pop().expect("recorded").purpose, "cư trú");
}

#[tokio::test]
async fn a_hashed_end_user_never_reaches_the_hubs_store_as_given() {
    let h = hub_with(registry_with_purposes());
    let user = "Nguyễn Thị Hồng Nhung 079123456789";
    let _ = h
        .service
        .route(request_from(
            node("lgsp-langson"),
            why(0x61, "hộ tịch", user, "HS-2026/61"),
        ))
        .await;
    let r = h.records().pop().expect("recorded");
    assert!(r.end_user_hashed);
    let key = crate::end_user::EndUserKey::parse(&"4b".repeat(32)).expect("key");
    assert_eq!(Some(r.end_user.clone()), key.hash(user));
    assert_eq!(r.case, "HS-2026/61");
    h.store.flush().expect("flush");
    let files = files_under(h._dir.path());
    assert!(!files.is_empty());
    // The probe is found where it is (the case), so the scan can fail.
    assert!(
        files
            .iter()
            .any(|(_, b)| b.windows(10).any(|w| w == b"HS-2026/61"))
    );
    for needle in [user, "079123456789"] {
        for (path, bytes) in &files {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} in {}",
                path.display()
            );
        }
    }
    // A service not hashed records the user as given.
    let _ = h
        .service
        .route(request_from(
            node("lgsp-langson"),
            DataRequest {
                end_user: "Trần Văn B".into(),
                ..call(&format!("{:032x}", 0x62), "000.00.00.H37", HOUSEHOLD)
            },
        ))
        .await;
    let r = h.records().pop().expect("recorded");
    assert_eq!(
        (r.end_user.as_str(), r.end_user_hashed),
        ("Trần Văn B", false)
    );
}

#[tokio::test]
async fn hostile_why_values_are_refused_and_recorded_in_no_ones_name() {
    let h = hub_with(registry_with_purposes());
    let cases = [
        why(0x71, &"x".repeat(100_000), "", ""),
        why(0x72, "hộ tịch", "a\u{0}b", ""),
        why(0x73, "hộ tịch", "", "HS\n1"),
        why(0x74, "hộ\u{202E}tịch", "", ""),
        why(0x75, "hộ tịch", &"ệ".repeat(201), ""),
    ];
    for req in cases {
        let err = h
            .service
            .route(request_from(node("lgsp-langson"), req))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let r = h.records().pop().expect("recorded");
        assert_eq!(
            (r.purpose.as_str(), r.end_user.as_str(), r.case.as_str()),
            ("", "", "")
        );
        assert!(r.encoded_len() < 1024);
    }
}
