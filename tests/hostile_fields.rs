#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Oversized fields and control characters sent by a hostile agency system
//! or node are refused with INVALID_ARGUMENT, and nothing is stored, queued
//! or counted (issue 8, point 2.1, for documents and statuses).

use bytes::Bytes;
use tonic::Code;
use truc_client::Client;
use truc_pki::Role;
use truc_proto::v1::{
    DocumentCode, Envelope, GetStatsRequest, StatusEvent, StatusUpdate, UpdateStatusRequest,
    reporting_client::ReportingClient,
};
use truc_tests::{docs::*, *};

/// An envelope from H37 to G22 whose notation, and so its id, holds a NUL.
fn nul_envelope(number: &str) -> Envelope {
    let notation = "UBND\0VP";
    Envelope {
        code: Some(DocumentCode {
            code_number: number.into(),
            code_notation: notation.into(),
        }),
        document_id: format!("{H37},{DATE},{number}/{notation}"),
        ..envelope(H37, &[G22], number, &[])
    }
}

/// H37's status `event` on G22's document `document_id`, relayed in
/// transaction `transaction_id`.
fn h37_status(transaction_id: &str, document_id: &str, event: StatusEvent) -> StatusUpdate {
    StatusUpdate {
        transaction_id: transaction_id.into(),
        sender: G22.into(),
        document_id: document_id.into(),
        recipient: H37.into(),
        event: Some(event),
        ..StatusUpdate::default()
    }
}

/// Asserts the node's answer in `e` is INVALID_ARGUMENT with a short
/// message naming `code`.
#[track_caller]
fn refused_by_node(e: &truc_client::Error, code: &str) {
    let status = e
        .status()
        .unwrap_or_else(|| panic!("not the node's refusal: {e}"));
    refused(status, code);
}

/// Asserts `e` is INVALID_ARGUMENT with a short message naming `code`.
#[track_caller]
fn refused(e: &tonic::Status, code: &str) {
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains(code), "{code} not in {}", e.message());
    assert!(
        e.message().len() < 4096,
        "{} bytes of message",
        e.message().len()
    );
}

/// A G22 document sent by the ministry to H37, arrived (01) at the province.
async fn document_to_h37(c: &Cluster, number: &str) -> (Client, Envelope) {
    let ministry = c.client(MINISTRY_NODE, MINISTRY_CLIENT);
    let env = envelope(G22, &[H37], number, &[]);
    send(&ministry, &env, &[]).await.expect("send");
    tracking_at(&ministry, G22, &env.document_id, H37, "01").await;
    (ministry, env)
}

#[tokio::test]
async fn agency_send_with_a_nul_in_the_document_id_is_refused_and_nothing_queued() {
    let c = start_fast_retries().await;
    // The client library checks no envelope: the node must.
    let province = c.client(PROVINCE_NODE, PROVINCE_CLIENT);
    let ministry = c.client(MINISTRY_NODE, MINISTRY_CLIENT);
    // Consistent everywhere: the number, the notation and the id agree.
    let evil = nul_envelope("201");
    let e = send(&province, &evil, &[])
        .await
        .map(|_| ())
        .expect_err("nul");
    refused_by_node(&e, "R.DocumentId.Format");
    let e = province
        .tracking(H37, &evil.document_id)
        .await
        .map(|_| ())
        .expect_err("nothing stored");
    assert!(
        matches!(e.code(), Code::NotFound | Code::InvalidArgument),
        "{e:?}"
    );
    // The delivery queue still works, and only the valid document arrives.
    let good = envelope(H37, &[G22], "202", &[]);
    send(&province, &good, &[]).await.expect("valid send");
    tracking_at(&province, H37, &good.document_id, G22, "01").await;
    let arrived: Vec<String> = inbox(&ministry, G22)
        .await
        .into_iter()
        .map(|e| e.document_id)
        .collect();
    assert_eq!(arrived, vec![good.document_id]);
}

/// Breaks one field of an envelope.
type Breaker = Box<dyn Fn(&mut Envelope)>;

#[tokio::test]
async fn agency_send_with_oversized_or_control_character_fields_is_refused() {
    let c = start_fast_retries().await;
    let province = c.client(PROVINCE_NODE, PROVINCE_CLIENT);
    let base = envelope(H37, &[G22], "203", &[]);
    // The bytes of the attachment the last case declares (the others declare
    // none), so that the node's refusal is what comes back.
    let one_byte: [(&str, &[u8]); 1] = [("a.pdf", b"x")];
    let cases: Vec<(&str, Breaker)> = vec![
        (
            "R.Organ.OrganName.Length",
            Box::new(|e| e.from.as_mut().expect("from").organ_name = "Đ".repeat(100_000)),
        ),
        (
            "R.Subject.Characters",
            Box::new(|e| e.subject = "\u{1b}[2J".into()),
        ),
        (
            "R.ToPlaces.Count",
            Box::new(|e| e.to_places = vec!["Lưu".into(); 10_000]),
        ),
        (
            "R.StaffInfo.Staff.Characters",
            Box::new(|e| {
                e.staff_info = Some(truc_proto::v1::StaffInfo {
                    staff: "a\0b".into(),
                    ..Default::default()
                })
            }),
        ),
        (
            "R.Attachment.ContentType",
            Box::new(|e| {
                e.attachments = vec![truc_proto::v1::Attachment {
                    name: "a.pdf".into(),
                    content_type: "application/pdf\r\nX-Evil: 1".into(),
                    size: 1,
                    sha256: Bytes::from(vec![0u8; 32]),
                    description: String::new(),
                }]
            }),
        ),
    ];
    for (code, break_it) in cases {
        let mut env = base.clone();
        break_it(&mut env);
        let e = send(&province, &env, &one_byte)
            .await
            .map(|_| ())
            .expect_err(code);
        refused_by_node(&e, code);
    }
    let e = province
        .tracking(H37, &base.document_id)
        .await
        .map(|_| ())
        .expect_err("nothing stored");
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn hostile_node_relaying_a_nul_document_id_is_refused_at_the_hub() {
    let c = start_fast_retries().await;
    let bad = c.hostile();
    let mut hub = bad.hub_as_node(PROVINCE_NODE);
    let env = nul_envelope("204");
    let e = hub
        .relay(tokio_stream::iter(vec![relay_header(
            &"ef".repeat(16),
            H37,
            G22,
            env,
        )]))
        .await
        .map(|_| ())
        .expect_err("nul");
    refused(&e, "R.DocumentId.Format");
    let ministry = c.client(MINISTRY_NODE, MINISTRY_CLIENT);
    assert!(inbox(&ministry, G22).await.is_empty());
}

#[tokio::test]
async fn node_refuses_a_delivery_with_a_nul_document_id_even_from_the_hub() {
    let c = start_fast_retries().await;
    let bad = c.hostile();
    let mut node = bad.node_as(MINISTRY_NODE, Role::Hub, "hub");
    let env = nul_envelope("205");
    let e = node
        .deliver(tokio_stream::iter(vec![relay_header(
            &"ab".repeat(16),
            H37,
            G22,
            env,
        )]))
        .await
        .map(|_| ())
        .expect_err("nul");
    refused(&e, "R.DocumentId.Format");
    let ministry = c.client(MINISTRY_NODE, MINISTRY_CLIENT);
    assert!(inbox(&ministry, G22).await.is_empty());
}

#[tokio::test]
async fn agency_status_with_a_huge_description_is_refused_and_nothing_queued() {
    let c = start_fast_retries().await;
    let (ministry, env) = document_to_h37(&c, "206").await;
    let province = c.client(PROVINCE_NODE, PROVINCE_CLIENT);
    let huge = UpdateStatusRequest {
        description: "x".repeat(1 << 20),
        ..status(H37, G22, &env.document_id, "03")
    };
    let e = province
        .update_status(huge)
        .await
        .map(|_| ())
        .expect_err("huge");
    refused_by_node(&e, "R.Status.Description.Length");
    let e = province
        .update_status(UpdateStatusRequest {
            description: "ok".into(),
            staff: Some(truc_proto::v1::StaffInfo {
                staff: "\0".into(),
                ..Default::default()
            }),
            ..status(H37, G22, &env.document_id, "03")
        })
        .await
        .map(|_| ())
        .expect_err("nul in staff");
    refused_by_node(&e, "R.StaffInfo.Staff.Characters");
    // Nothing was stored or queued: the next valid status is the first to travel.
    province
        .update_status(UpdateStatusRequest {
            description: "đã tiếp nhận".into(),
            ..status(H37, G22, &env.document_id, "03")
        })
        .await
        .expect("valid status");
    let t = tracking_at(&ministry, G22, &env.document_id, H37, "03").await;
    let history = &t.recipients[0].history;
    assert!(
        history.iter().all(|h| h.description.len() < 100),
        "{history:?}"
    );
}

#[tokio::test]
async fn hostile_node_status_with_a_huge_code_is_refused_and_not_counted() {
    let c = start_fast_retries().await;
    let bad = c.hostile();
    let mut hub = bad.hub_as_node(PROVINCE_NODE);
    let e = hub
        .relay_status(h37_status(
            &"cd".repeat(16),
            &format!("{G22},{DATE},1/VPCP"),
            StatusEvent {
                code: "0".repeat(80_000),
                by: H37.into(),
                ..StatusEvent::default()
            },
        ))
        .await
        .map(|_| ())
        .expect_err("huge code");
    refused(&e, "R.StatusCode");
    let counts = c.counts(Role::Admin, "admin").await.expect("counts");
    assert!(
        counts.rows.iter().all(|r| r.service.len() < 100),
        "a counted service of {} bytes",
        counts
            .rows
            .iter()
            .map(|r| r.service.len())
            .max()
            .unwrap_or(0)
    );
    ReportingClient::new(c.hub_channel(Role::Admin, "admin"))
        .get_stats(GetStatsRequest {
            group_by: vec!["service".into()],
            ..GetStatsRequest::default()
        })
        .await
        .expect("stats still readable");
}

#[tokio::test]
async fn hostile_node_status_with_a_huge_description_never_reaches_the_sender() {
    let c = start_fast_retries().await;
    let (ministry, env) = document_to_h37(&c, "207").await;
    let mut hub = c.hostile().hub_as_node(PROVINCE_NODE);
    let e = hub
        .relay_status(h37_status(
            &"de".repeat(16),
            &env.document_id,
            StatusEvent {
                code: "03".into(),
                description: "x".repeat(1 << 20),
                unix_ms: 1,
                by: H37.into(),
                staff: None,
            },
        ))
        .await
        .map(|_| ())
        .expect_err("huge description");
    refused(&e, "R.Status.Description.Length");
    let t = tracking(&ministry, G22, &env.document_id).await;
    assert_eq!(status_of(&t, H37), "01", "{t:#?}");
}

#[tokio::test]
async fn node_refuses_a_status_with_control_characters_even_from_the_hub() {
    let c = start_fast_retries().await;
    let (ministry, env) = document_to_h37(&c, "208").await;
    let mut node = c.hostile().node_as(MINISTRY_NODE, Role::Hub, "hub");
    let e = node
        .deliver_status(h37_status(
            &"fa".repeat(16),
            &env.document_id,
            StatusEvent {
                code: "03".into(),
                description: "\u{1b}]0;pwned\u{7}".into(),
                unix_ms: 1,
                by: H37.into(),
                staff: None,
            },
        ))
        .await
        .map(|_| ())
        .expect_err("control characters");
    refused(&e, "R.Status.Description.Characters");
    let t = tracking(&ministry, G22, &env.document_id).await;
    assert_eq!(status_of(&t, H37), "01", "{t:#?}");
}

#[tokio::test]
async fn an_unregistered_node_with_a_ca_signed_certificate_is_refused() {
    let c = start_fast_retries().await;
    let bad = c.hostile();
    let rogue = bad.unregistered_node("rogue");
    let mut hub = bad.hub_with(&rogue);
    let e = hub
        .relay_status(h37_status(
            &"ad".repeat(16),
            &format!("{G22},{DATE},1/VPCP"),
            StatusEvent {
                code: "03".into(),
                by: H37.into(),
                ..StatusEvent::default()
            },
        ))
        .await
        .map(|_| ())
        .expect_err("not registered");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = hub
        .relay(tokio_stream::iter(vec![relay_header(
            &"ae".repeat(16),
            H37,
            G22,
            envelope(H37, &[G22], "209", &[]),
        )]))
        .await
        .map(|_| ())
        .expect_err("not registered");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}

#[tokio::test]
async fn a_silent_peer_takes_a_registered_nodes_place() {
    let mut c = start_fast_retries().await;
    let silent = SilentPeer::replace(&mut c.deployment, MINISTRY_NODE).await;
    let province = c.client(PROVINCE_NODE, PROVINCE_CLIENT);
    let env = envelope(H37, &[G22], "210", &[]);
    send(&province, &env, &[])
        .await
        .expect("accepted by the node");
    // The hub connects to the silent peer as to the ministry node, which never answers.
    silent.wait_for(|(_, deliver, _)| deliver >= 1).await;
    let t = tracking(&province, H37, &env.document_id).await;
    assert_eq!(status_of(&t, G22), "", "{t:#?}");
}
