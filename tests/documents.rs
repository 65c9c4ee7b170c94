#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Documents between agencies: store and forward through the hub, exactly
//! once, with statuses travelling back, across nodes and hub going down.

use std::time::Duration;

use bytes::Bytes;
use tonic::Code;
use truc_client::Client;
use truc_pki::Role;
use truc_proto::v1::{
    BusinessKind, RelayRequest, UpdateStatusRequest, hub_client::HubClient, relay_request,
    send_document_request,
};
use truc_tests::{docs::*, *};

/// The client library on each node, as the province's and the ministry's
/// systems.
fn clients(c: &Cluster) -> (Client, Client) {
    (
        c.client(PROVINCE_NODE, PROVINCE_CLIENT),
        c.client(MINISTRY_NODE, MINISTRY_CLIENT),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_reaches_recipients_on_two_nodes_with_its_attachment() {
    let c = start_fast_retries().await;
    let (province, ministry) = clients(&c);
    let pdf: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let files: [(&str, &[u8]); 2] = [("bao-cao.pdf", &pdf), ("empty.txt", b"")];
    let env = envelope(H37, &[G22, H37_DEPT], "101", &files);
    let mut watch = ministry.watch_inbox(G22).await.expect("watch");
    let sent = send(&province, &env, &files).await.expect("send");
    assert!(!sent.duplicate);
    let t = tracking_until(&province, H37, &env.document_id, |t| {
        status_of(t, G22) == "01" && status_of(t, H37_DEPT) == "01"
    })
    .await;
    assert!(
        t.recipients
            .iter()
            .all(|r| r.delivery == "delivered" && r.receipt.is_some())
    );

    let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event")
        .expect("stream open")
        .expect("event");
    assert_eq!(event.kind, "arrived");
    assert_eq!(event.entry.expect("entry").document_id, env.document_id);

    let entries = inbox(&ministry, G22).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].status, "01");

    let out = c.dir.path().join("fetched");
    let saved = ministry
        .fetch(G22, H37, &env.document_id)
        .await
        .expect("fetch")
        .save_to(&out)
        .await
        .expect("saved, sizes and SHA-256 checked");
    assert_eq!(saved.len(), 2);
    assert_eq!(std::fs::read(out.join("bao-cao.pdf")).expect("read"), pdf);
    assert!(
        std::fs::read(out.join("empty.txt"))
            .expect("read")
            .is_empty()
    );

    // The department, on the sender's own node, got it through the hub too.
    let dept = inbox(&province, H37_DEPT).await;
    assert_eq!(dept.len(), 1);
}

#[tokio::test]
async fn repeated_send_makes_one_entry_and_another_envelope_is_refused() {
    let c = start_fast_retries().await;
    let (province, ministry) = clients(&c);
    let files: [(&str, &[u8]); 1] = [("a.pdf", b"%PDF-1.7 test")];
    let env = envelope(H37, &[G22], "102", &files);
    assert!(
        !send(&province, &env, &files)
            .await
            .expect("first")
            .duplicate
    );
    assert!(
        send(&province, &env, &files)
            .await
            .expect("again")
            .duplicate
    );
    tracking_at(&province, H37, &env.document_id, G22, "01").await;
    let mut other = env.clone();
    other.subject = "another subject".into();
    let e = send(&province, &other, &files).await.expect_err("same id");
    assert_eq!(e.code(), Code::AlreadyExists);
    let entries = inbox(&ministry, G22).await;
    assert_eq!(entries.len(), 1);
}

#[tokio::test]
async fn statuses_travel_back_and_invalid_transitions_change_nothing() {
    let c = start_fast_retries().await;
    let (province, ministry) = clients(&c);
    let env = envelope(H37, &[G22], "103", &[]);
    send(&province, &env, &[]).await.expect("send");
    tracking_at(&province, H37, &env.document_id, G22, "01").await;
    let set = |status: &str| UpdateStatusRequest {
        recipient: G22.into(),
        sender: H37.into(),
        document_id: env.document_id.clone(),
        status: status.into(),
        description: "Văn thư".into(),
        staff: None,
    };
    for invalid in ["04", "05", "06", "13", "15", "16", "01"] {
        let e = ministry
            .update_status(set(invalid))
            .await
            .expect_err(invalid);
        assert_eq!(e.code(), Code::FailedPrecondition, "01 → {invalid}");
    }
    let e = ministry
        .update_status(set("99"))
        .await
        .expect_err("unknown code");
    assert_eq!(e.code(), Code::InvalidArgument);
    for next in ["03", "04", "05", "06"] {
        let entry = ministry.update_status(set(next)).await.expect(next);
        assert_eq!(entry.status, next);
    }
    let e = ministry
        .update_status(set("02"))
        .await
        .expect_err("06 → 02");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let entries = inbox(&ministry, G22).await;
    assert_eq!(
        entries[0].status, "06",
        "a refused transition changed nothing"
    );
    let t = tracking_at(&province, H37, &env.document_id, G22, "06").await;
    let codes: Vec<&str> = t.recipients[0]
        .history
        .iter()
        .map(|h| h.code.as_str())
        .collect();
    assert_eq!(codes, ["01", "03", "04", "05", "06"]);
}

#[tokio::test]
async fn recall_is_requested_and_answered() {
    let c = start_fast_retries().await;
    let (province, ministry) = clients(&c);
    let env = envelope(H37, &[G22], "104", &[]);
    send(&province, &env, &[]).await.expect("send");
    tracking_at(&province, H37, &env.document_id, G22, "01").await;
    let mut recall = env.clone();
    recall.business_kind = BusinessKind::Recall as i32;
    recall.business_reason = "Sai số liệu".into();
    send(&province, &recall, &[]).await.expect("recall");
    tracking_at(&province, H37, &env.document_id, G22, "13").await;
    ministry
        .update_status(UpdateStatusRequest {
            recipient: G22.into(),
            sender: H37.into(),
            document_id: env.document_id.clone(),
            status: "15".into(),
            ..UpdateStatusRequest::default()
        })
        .await
        .expect("accept recall");
    tracking_at(&province, H37, &env.document_id, G22, "15").await;
    // Withdrawn: nothing more may happen to it.
    let e = ministry
        .update_status(UpdateStatusRequest {
            recipient: G22.into(),
            sender: H37.into(),
            document_id: env.document_id.clone(),
            status: "03".into(),
            ..UpdateStatusRequest::default()
        })
        .await
        .expect_err("withdrawn");
    assert_eq!(e.code(), Code::FailedPrecondition);
    // A recall of a document never sent is refused.
    let mut orphan = envelope(H37, &[G22], "999", &[]);
    orphan.business_kind = BusinessKind::Recall as i32;
    orphan.business_reason = "x".into();
    let e = send(&province, &orphan, &[])
        .await
        .expect_err("nothing to recall");
    assert_eq!(e.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_node_down_then_back_gets_it_once() {
    let mut c = start_fast_retries().await;
    let (province, _) = clients(&c);
    assert!(c.deployment.stop_node(MINISTRY_NODE).await.expect("stop"));
    let env = envelope(H37, &[G22], "105", &[("x.pdf", b"content")]);
    send(&province, &env, &[("x.pdf", b"content")])
        .await
        .expect("send while down");
    let t = tracking_until(&province, H37, &env.document_id, |t| {
        t.recipients[0].attempts >= 2 && !t.recipients[0].last_error.is_empty()
    })
    .await;
    assert_eq!(t.recipients[0].delivery, "retrying");
    assert!(t.recipients[0].last_error.contains("Unavailable"), "{t:#?}");
    c.deployment
        .restart_node(MINISTRY_NODE)
        .await
        .expect("restart");
    tracking_at(&province, H37, &env.document_id, G22, "01").await;
    let (_, ministry) = clients(&c);
    let entries = inbox(&ministry, G22).await;
    assert_eq!(entries.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_restart_mid_delivery_loses_nothing() {
    let mut c = start_fast_retries().await;
    let (province, _) = clients(&c);
    let env = envelope(H37, &[G22, H37_DEPT], "106", &[]);
    let client = province.clone();
    let env2 = env.clone();
    c.deployment
        .restart_hub(async move || {
            // Accepted while the hub is down; delivered once it is back.
            send(&client, &env2, &[])
                .await
                .expect("send while the hub is down");
        })
        .await
        .expect("restart hub");
    tracking_until(&province, H37, &env.document_id, |t| {
        status_of(t, G22) == "01" && status_of(t, H37_DEPT) == "01"
    })
    .await;
}

#[tokio::test]
async fn corrupted_chunks_are_refused_at_the_node_and_at_the_hub() {
    let c = start_fast_retries().await;
    let (province, ministry) = clients(&c);
    let data = b"the real content".to_vec();
    let files: [(&str, &[u8]); 1] = [("a.pdf", &data)];
    let env = envelope(H37, &[G22], "107", &files);
    let mut msgs = messages(&env, &files);
    if let Some(send_document_request::Part::Chunk(chunk)) = msgs[1].part.as_mut() {
        chunk.data = Bytes::from_static(b"the fake content");
    }
    // The raw stream: the client library sends only what the envelope says.
    let e = province
        .grpc()
        .send_document(tokio_stream::iter(msgs))
        .await
        .expect_err("corrupt chunk");
    assert_eq!(e.code(), Code::DataLoss);
    let e = province
        .tracking(H37, &env.document_id)
        .await
        .expect_err("nothing stored");
    assert_eq!(e.code(), Code::NotFound);

    // A node relaying a corrupted chunk: the hub refuses it, the recipient keeps nothing.
    let mut hub = HubClient::new(c.hub_channel(Role::Node, PROVINCE_NODE));
    let relay = vec![
        relay_header(&"ab".repeat(16), H37, G22, env.clone()),
        RelayRequest {
            part: Some(relay_request::Part::Chunk(truc_proto::v1::Chunk {
                sha256: sha(&data),
                ..truc_doc::chunks::chunk(0, 0, Bytes::from_static(b"the fake content"))
            })),
        },
    ];
    let e = hub
        .relay(tokio_stream::iter(relay))
        .await
        .expect_err("hub check");
    assert_eq!(e.code(), Code::DataLoss);
    let entries = inbox(&ministry, G22).await;
    assert!(entries.is_empty());
}

#[tokio::test]
async fn invalid_envelopes_are_refused_with_the_rule() {
    let c = start_fast_retries().await;
    let (province, _) = clients(&c);
    let mut env = envelope(H37, &[G22], "108", &[]);
    env.subject.clear();
    let e = send(&province, &env, &[]).await.expect_err("no subject");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.to_string().contains("N.Subject"), "{e}");
    let mut env = envelope(H37, &[G22], "109", &[]);
    env.document_id = "not a document id".into();
    let e = send(&province, &env, &[]).await.expect_err("bad id");
    assert!(e.to_string().contains("R.DocumentId"), "{e}");
    // Sending for an agency the certificate is not mapped to.
    let env = envelope(G22, &[H37], "110", &[]);
    let e = send(&province, &env, &[]).await.expect_err("not mine");
    assert_eq!(e.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn hub_enforces_who_may_send_and_audits_documents_and_statuses() {
    let c = start_fast_retries().await;
    let (province, ministry) = clients(&c);
    // A node relaying for an agency it does not host.
    let env = envelope(H37, &[G22], "111", &[]);
    let mut as_ministry = HubClient::new(c.hub_channel(Role::Node, MINISTRY_NODE));
    let e = as_ministry
        .relay(tokio_stream::iter(vec![relay_header(
            &"cd".repeat(16),
            H37,
            G22,
            env.clone(),
        )]))
        .await
        .expect_err("not its agency");
    assert_eq!(e.code(), Code::PermissionDenied);

    // A recipient the registry does not know: refused for good, visible in tracking.
    let stranger = envelope(H37, &["000.00.00.H41"], "112", &[]);
    send(&province, &stranger, &[])
        .await
        .expect("accepted by the node");
    let t = tracking_until(&province, H37, &stranger.document_id, |t| {
        t.recipients[0].delivery == "failed"
    })
    .await;
    assert!(t.recipients[0].last_error.contains("NotFound"), "{t:#?}");

    // A delivery and a status are transactions of the hub, counted by kind.
    send(&province, &env, &[]).await.expect("send");
    tracking_at(&province, H37, &env.document_id, G22, "01").await;
    ministry
        .update_status(UpdateStatusRequest {
            recipient: G22.into(),
            sender: H37.into(),
            document_id: env.document_id.clone(),
            status: "03".into(),
            ..UpdateStatusRequest::default()
        })
        .await
        .expect("03");
    tracking_at(&province, H37, &env.document_id, G22, "03").await;
    // The hub records the status once the sender's node has it: the
    // tracking above can come first, so wait for the hub's count.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let counts = loop {
        let counts = c.counts(Role::Admin, "admin").await.expect("counts");
        if count_of(&counts, "status", "OK") >= 1 || std::time::Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let count = |kind: &str, outcome: &str| count_of(&counts, kind, outcome);
    assert_eq!(count("document", "OK"), 1);
    assert_eq!(count("document", "NOT_FOUND"), 1);
    assert_eq!(count("document", "PERMISSION_DENIED"), 1);
    assert_eq!(count("status", "OK"), 1);
}

/// Transactions of `kind` with `outcome` in the hub's counts.
fn count_of(counts: &truc_proto::v1::GetCountsResponse, kind: &str, outcome: &str) -> u64 {
    counts
        .rows
        .iter()
        .filter(|r| r.kind == kind && r.outcome == outcome)
        .map(|r| r.count)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_of_one_id_keep_one_envelope() {
    let c = start_fast_retries().await;
    let (province, ministry) = clients(&c);
    let files: [(&str, &[u8]); 1] = [("a.pdf", &[5u8; 600_000])];
    let mut tasks = Vec::new();
    for i in 0..6 {
        let client = province.clone();
        let mut env = envelope(H37, &[G22], "113", &files);
        env.subject = format!("version {}", i % 2);
        tasks.push(tokio::spawn(async move {
            send(&client, &env, &files)
                .await
                .map(|r| (env.subject, r.duplicate))
        }));
    }
    let mut accepted = Vec::new();
    for t in tasks {
        match t.await.expect("join") {
            Ok((subject, false)) => accepted.push(subject),
            Ok((_, true)) => {}
            Err(e) => assert_eq!(e.code(), Code::AlreadyExists, "{e:?}"),
        }
    }
    assert_eq!(accepted.len(), 1, "exactly one send stored: {accepted:?}");
    let doc = "000.00.00.H37,2026/11/28,113/UBND-VP";
    let t = tracking_at(&province, H37, doc, G22, "01").await;
    assert_eq!(t.envelope.expect("envelope").subject, accepted[0]);
    let entries = inbox(&ministry, G22).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].envelope.as_ref().expect("envelope").subject,
        accepted[0]
    );
}

/// The config file of node `id`.
fn node_config_path(c: &Cluster, id: &str) -> std::path::PathBuf {
    c.deployment
        .files
        .node_configs
        .iter()
        .find(|(n, _)| n == id)
        .map(|(_, p)| p.clone())
        .expect("node config")
}

/// A node that accepts connections, completes the TLS handshake with the
/// real node's certificate, and then never answers anything. Dropping it
/// closes every connection.
struct HungNode(tokio::task::JoinHandle<()>);

impl HungNode {
    /// Closes every connection and frees the address.
    async fn release(self) {
        self.0.abort();
        let _ = self.0.await;
    }
}

/// Stops node `id` and puts a peer that never answers on its address.
async fn hang_node(c: &mut Cluster, id: &str) -> HungNode {
    assert!(c.deployment.stop_node(id).await.expect("stop"));
    let config = truc_node::NodeConfig::load(&node_config_path(c, id)).expect("config");
    let tls = truc_pki::server_config(&config.tls).expect("tls");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .expect("bind the node's address");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    HungNode(tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(stream) = acceptor.accept(tcp).await {
                held.push(stream);
            }
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_delays_no_other_delivery_nor_another_documents_statuses() {
    let mut c = start_fast_retries().await;
    // Long deadlines: what follows must not depend on them firing.
    c.restart_node_with(PROVINCE_NODE, |f| {
        f.document_service.relay_deadline_ms = 600_000;
        f.document_service.status_deadline_ms = 600_000;
    })
    .await;
    let (province, ministry) = clients(&c);
    // A document from the ministry, there before its node hangs.
    let from_ministry = envelope(G22, &[H37], "201", &[]);
    send(&ministry, &from_ministry, &[]).await.expect("send");
    tracking_at(&ministry, G22, &from_ministry.document_id, H37, "01").await;
    let hung = hang_node(&mut c, MINISTRY_NODE).await;
    // A status and a delivery bound for the hung node, first in their queues.
    province
        .update_status(status(H37, G22, &from_ministry.document_id, "03"))
        .await
        .expect("03 at the recipient");
    let to_ministry = envelope(H37, &[G22], "202", &[]);
    send(&province, &to_ministry, &[]).await.expect("send");
    // Another document, and its status, between live agencies: not held back.
    let local = envelope(H37_DEPT, &[H37], "203", &[]);
    send(&province, &local, &[]).await.expect("send");
    tracking_at(&province, H37_DEPT, &local.document_id, H37, "01").await;
    province
        .update_status(status(H37, H37_DEPT, &local.document_id, "03"))
        .await
        .expect("03");
    tracking_at(&province, H37_DEPT, &local.document_id, H37, "03").await;
    // The hung delivery's first attempt is still waiting.
    let t = tracking(&province, H37, &to_ministry.document_id).await;
    assert_eq!(t.recipients[0].attempts, 0, "{t:#?}");
    // Once the node answers again, what waited for it goes through.
    hung.release().await;
    c.deployment
        .restart_node(MINISTRY_NODE)
        .await
        .expect("restart");
    let (province, ministry) = clients(&c);
    tracking_at(&province, H37, &to_ministry.document_id, G22, "01").await;
    tracking_at(&ministry, G22, &from_ministry.document_id, H37, "03").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_to_a_hung_node_ends_at_its_deadline_and_is_retried() {
    let mut c = start_fast_retries().await;
    c.restart_node_with(PROVINCE_NODE, |f| {
        f.document_service.relay_deadline_ms = 300;
    })
    .await;
    let hung = hang_node(&mut c, MINISTRY_NODE).await;
    let province = c.client(PROVINCE_NODE, PROVINCE_CLIENT);
    let env = envelope(H37, &[G22], "204", &[("x.pdf", b"content")]);
    send(&province, &env, &[("x.pdf", b"content")])
        .await
        .expect("send");
    // (An attempt may first meet the hub's connection to the stopped node.)
    let t = tracking_until(&province, H37, &env.document_id, |t| {
        t.recipients[0].last_error.contains("DeadlineExceeded")
    })
    .await;
    assert_eq!(t.recipients[0].delivery, "retrying", "{t:#?}");
    hung.release().await;
    c.deployment
        .restart_node(MINISTRY_NODE)
        .await
        .expect("restart");
    tracking_at(&province, H37, &env.document_id, G22, "01").await;
}

/// The node's queue lengths from its metrics: (deliveries, statuses).
async fn queues(c: &Cluster, id: &str) -> (f64, f64) {
    let node = c.deployment.node(id).expect("node");
    let (code, body) = http_get(node.ops_addr(), "/metrics").await;
    assert_eq!(code, 200);
    let value = |queue: &str| {
        body.lines()
            .find(|l| l.starts_with(&format!("truc_document_queue{{queue=\"{queue}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    (value("deliveries"), value("statuses"))
}

#[tokio::test]
async fn a_refusal_no_retry_can_fix_ends_the_delivery() {
    let c = start_fast_retries().await;
    let (province, ministry) = clients(&c);
    let env = envelope(H37, &[G22], "205", &[]);
    send(&province, &env, &[]).await.expect("send");
    tracking_at(&province, H37, &env.document_id, G22, "01").await;
    ministry
        .update_status(status(G22, H37, &env.document_id, "02"))
        .await
        .expect("rejected");
    tracking_at(&province, H37, &env.document_id, G22, "02").await;
    // A recall of a rejected document: the recipient's node refuses it
    // (FAILED_PRECONDITION), and no retry can change that.
    let mut recall = env.clone();
    recall.business_kind = BusinessKind::Recall as i32;
    recall.business_reason = "Sai số liệu".into();
    send(&province, &recall, &[]).await.expect("recall");
    let t = tracking_until(&province, H37, &env.document_id, |t| {
        t.recipients[0].last_error.contains("FailedPrecondition")
    })
    .await;
    assert_eq!(status_of(&t, G22), "02");
    // The queue entry went in the same write as that error: nothing is left.
    let (deliveries, _) = queues(&c, PROVINCE_NODE).await;
    assert_eq!(deliveries, 0.0, "the refused recall is still queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_to_many_recipients_keeps_every_stored_value_small() {
    let mut c = start_fast_retries().await;
    let (province, _) = clients(&c);
    // G22 and 99 agencies unknown to the registry: each delivery ends,
    // delivered or refused, with its receipt or error.
    let codes: Vec<String> = (0..100).map(|i| format!("000.00.{i:02}.G22")).collect();
    let to: Vec<&str> = codes.iter().map(String::as_str).collect();
    let pdf: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
    let files: [(&str, &[u8]); 1] = [("big.pdf", &pdf)];
    let env = envelope(H37, &to, "206", &files);
    send(&province, &env, &files).await.expect("send");
    let t = tracking_until(&province, H37, &env.document_id, |t| {
        t.recipients.len() == 100
            && t.recipients[1..].iter().all(|r| r.delivery == "failed")
            && status_of(t, G22) == "01"
    })
    .await;
    assert!(t.recipients[1].last_error.contains("NotFound"), "{t:#?}");
    let data_dir = truc_node::NodeConfig::load(&node_config_path(&c, PROVINCE_NODE))
        .expect("config")
        .data_dir;
    assert!(c.deployment.stop_node(PROVINCE_NODE).await.expect("stop"));
    let store = truc_store::Store::open(&data_dir).expect("store");
    let mut largest = (0, Vec::new());
    for item in store.scan_prefix(b"") {
        let (k, v) = item.expect("entry");
        if v.len() > largest.0 {
            largest = (v.len(), k);
        }
    }
    assert!(
        largest.0 <= 8 * 1024,
        "a stored value of {} bytes under {:?}",
        largest.0,
        String::from_utf8_lossy(&largest.1)
    );
    let sled_blobs: Vec<_> = std::fs::read_dir(data_dir.join("blobs"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(sled_blobs.is_empty(), "{sled_blobs:?}");
    let name: String = sha(&pdf).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        std::fs::read(data_dir.join("attachments").join(name)).expect("attachment"),
        pdf
    );
}
