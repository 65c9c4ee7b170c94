#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! The client library end to end: an agency system connects to its node
//! with its certificate, calls, sends a document with streamed attachments,
//! and follows it through WatchTracking while the recipient fetches it and
//! sets statuses.

use std::time::{Duration, Instant};

use tonic::Code;
use truc_client::{Client, Error, Upload, has_status, is_delivered};
use truc_pki::Role;
use truc_proto::v1::{
    DocumentCode, Envelope, ListInboxRequest, Organ, PromulgationInfo, UpdateStatusRequest,
};
use truc_tests::*;

fn client(c: &Cluster, node: &str, system: &str) -> Client {
    let addr = c
        .deployment
        .node(node)
        .unwrap_or_else(|| panic!("no node {node}"))
        .addr()
        .to_string();
    Client::connect(&addr, node, &c.tls(Role::Client, system)).expect("client")
}

fn organ(id: &str) -> Organ {
    Organ {
        organ_id: id.into(),
        ..Organ::default()
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_the_library_keeps_the_grpc_status() {
    let c = start().await;
    let province = client(&c, PROVINCE_NODE, PROVINCE_CLIENT);
    let r = province
        .call(
            call(H37, CITIZEN_LOOKUP, r#"{"id":"001089012345"}"#),
            Some(Duration::from_secs(30)),
        )
        .await
        .expect("call");
    assert!(r.receipt.is_some(), "the hub's receipt");
    // Acting for an agency this certificate is not allowed to.
    let e = province
        .call(call(G22, HOUSEHOLD_REGISTRY, "{}"), None)
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert_eq!(
        e.status().map(tonic::Status::code),
        Some(Code::PermissionDenied)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_is_sent_fetched_and_its_statuses_waited_for_without_polling() {
    let c = start().await;
    let province = client(&c, PROVINCE_NODE, PROVINCE_CLIENT);
    let ministry = client(&c, MINISTRY_NODE, MINISTRY_CLIENT);

    // More than one chunk from a file, and a small one from memory.
    let big: Vec<u8> = (0..(1024 * 1024 + 4321)).map(|i| (i % 251) as u8).collect();
    let path = c.dir.path().join("bao-cao.pdf");
    std::fs::write(&path, &big).expect("write");
    let doc = format!("{H37},2026/12/01,41/UBND-VP");
    let envelope = Envelope {
        from: Some(organ(H37)),
        to: vec![organ(G22)],
        code: Some(DocumentCode {
            code_number: "41".into(),
            code_notation: "UBND-VP".into(),
        }),
        promulgation_info: Some(PromulgationInfo {
            place: "Lạng Sơn".into(),
            promulgation_date: "2026/12/01".into(),
        }),
        subject: "Báo cáo tháng 11".into(),
        document_id: doc.clone(),
        ..Envelope::default()
    };
    let uploads = vec![
        Upload::file(&path).await.expect("file"),
        Upload::bytes("phu-luc.txt", "text/plain", &b"phu luc"[..]),
    ];
    // The watch starts before the send exists: NOT_FOUND.
    let e = province
        .watch_tracking(H37, &doc)
        .await
        .expect_err("not sent yet");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let sent = province
        .send_document(envelope, uploads)
        .await
        .expect("sent");
    assert_eq!(sent.document_id, doc);
    assert!(!sent.duplicate);
    let mut watch = province.watch_tracking(H37, &doc).await.expect("watch");

    // Delivered: the tracking says so, without a GetTracking loop.
    let delivered = province
        .wait_for_status(H37, &doc, G22, is_delivered, soon())
        .await
        .expect("delivered");
    assert_eq!(delivered.status, "01");

    // Only the sender's systems follow it.
    let e = ministry
        .watch_tracking(H37, &doc)
        .await
        .expect_err("not the sender's system");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = province
        .wait_for_status(H37, &doc, H37_DEPT, is_delivered, soon())
        .await
        .expect_err("not a recipient");
    assert!(matches!(e, Error::NotARecipient(_)), "{e}");

    // The recipient lists and fetches it; the files match what was sent.
    let listed = ministry
        .list_inbox_all(ListInboxRequest {
            recipient: G22.into(),
            sender: H37.into(),
            ..ListInboxRequest::default()
        })
        .await
        .expect("list");
    assert!(listed.iter().any(|e| e.document_id == doc));
    let out = c.dir.path().join("fetched");
    let incoming = ministry.fetch(G22, H37, &doc).await.expect("fetch");
    assert_eq!(incoming.entry().document_id, doc);
    let files = incoming.save_to(&out).await.expect("saved");
    assert_eq!(files.len(), 2);
    assert_eq!(std::fs::read(out.join("bao-cao.pdf")).expect("read"), big);
    assert_eq!(
        std::fs::read(out.join("phu-luc.txt")).expect("read"),
        b"phu luc"
    );
    // A second fetch into the same directory overwrites nothing.
    std::fs::write(out.join("phu-luc.txt"), b"edited").expect("write");
    let again = ministry.fetch(G22, H37, &doc).await.expect("fetch");
    let e = again.save_to(&out).await.expect_err("exists");
    assert!(matches!(e, Error::Exists(_)), "{e}");
    assert_eq!(
        std::fs::read(out.join("phu-luc.txt")).expect("kept"),
        b"edited"
    );

    // A status the recipient never sets: the wait ends at its deadline with
    // the latest tracking seen.
    let e = province
        .wait_for_status(
            H37,
            &doc,
            G22,
            has_status("06"),
            Instant::now() + Duration::from_millis(300),
        )
        .await
        .expect_err("never 06");
    match e {
        Error::Timeout(Some(last)) => assert_eq!(last.status, "01"),
        other => panic!("{other}"),
    }

    // Accepted, then in processing: each comes back to the sender.
    let waiting = {
        let province = province.clone();
        let doc = doc.clone();
        tokio::spawn(async move {
            province
                .wait_for_status(H37, &doc, G22, has_status("05"), soon())
                .await
        })
    };
    for code in ["03", "05"] {
        let entry = ministry
            .update_status(UpdateStatusRequest {
                recipient: G22.into(),
                sender: H37.into(),
                document_id: doc.clone(),
                status: code.into(),
                ..UpdateStatusRequest::default()
            })
            .await
            .expect("status");
        assert_eq!(entry.status, code);
    }
    let done = waiting.await.expect("task").expect("05 came back");
    let codes: Vec<_> = done.history.iter().map(|h| h.code.as_str()).collect();
    assert_eq!(codes, ["01", "03", "05"]);

    // The watch opened after the send saw every step, each state once.
    let mut seen = Vec::new();
    while seen
        .last()
        .is_none_or(|t: &truc_proto::v1::Tracking| t.recipients[0].status != "05")
    {
        let t = tokio::time::timeout(Duration::from_secs(60), watch.next())
            .await
            .expect("in time")
            .expect("the watch goes on")
            .expect("a tracking");
        seen.push(t);
    }
    let statuses: Vec<&str> = seen
        .iter()
        .map(|t| t.recipients[0].status.as_str())
        .collect();
    for code in ["01", "03", "05"] {
        assert!(statuses.contains(&code), "{statuses:?}");
    }
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "an unchanged tracking was sent again: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_on_every_recipient_is_waited_for_on_the_watch() {
    let c = start().await;
    let province = client(&c, PROVINCE_NODE, PROVINCE_CLIENT);
    let env = docs::envelope(H37, &[G22, H37_DEPT], "42", &[("a.pdf", b"%PDF")]);
    let sent = province
        .send_document(env.clone(), docs::uploads(&env, &[("a.pdf", b"%PDF")]))
        .await
        .expect("sent");
    // Both recipients, one on each node: a condition wait_for_status cannot say.
    let both = province
        .wait_for_tracking(
            H37,
            &sent.document_id,
            |t| t.recipients.len() == 2 && t.recipients.iter().all(is_delivered),
            soon(),
        )
        .await
        .expect("both delivered");
    assert!(
        both.recipients.iter().all(|r| r.status == "01"),
        "{both:#?}"
    );
    // Never true: the deadline ends it, with the latest tracking seen.
    let e = province
        .wait_for_tracking(
            H37,
            &sent.document_id,
            |t| t.recipients.is_empty(),
            Instant::now() + Duration::from_millis(300),
        )
        .await
        .expect_err("never");
    assert_eq!(e.code(), Code::DeadlineExceeded);
    match e {
        Error::TrackingTimeout(Some(last)) => assert_eq!(last.recipients, both.recipients),
        other => panic!("{other}"),
    }
}
