//! The delivery and status workers: they take what is queued on disk, relay
//! it through the hub, and on success record the outcome; on failure they
//! record the error and try again later (exponential backoff with jitter),
//! forever, except for errors that no retry can fix.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use truc_ops::Shutdown;
use truc_proto::v1::{
    RelayHeader, RelayRequest, StatusEvent, StatusUpdate, Tracking, hub_client::HubClient,
    relay_request,
};
use truc_store::WriteBatch;

use super::{Documents, keys, now_ms};

/// Starts the delivery and status workers, which stop with `shutdown`.
pub(crate) fn spawn_workers(docs: Arc<Documents>, shutdown: Shutdown) {
    tokio::spawn(deliveries(docs.clone(), shutdown.clone()));
    tokio::spawn(statuses(docs, shutdown));
}

/// Errors a retry cannot fix: the delivery is marked failed.
fn permanent(code: Code) -> bool {
    matches!(
        code,
        Code::PermissionDenied | Code::InvalidArgument | Code::NotFound | Code::AlreadyExists
    )
}

/// The delay before attempt `attempts + 1`: doubling from the first delay up
/// to the cap, then a random 50–100% of it, so retries do not come in waves.
fn backoff(attempts: u32, (first, cap): (Duration, Duration)) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(20);
    let delay = first.saturating_mul(factor).min(cap);
    let mut r = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
    delay.mul_f64(0.5 + f64::from(r[0]) / 510.0)
}

async fn deliveries(docs: Arc<Documents>, shutdown: Shutdown) {
    let hub = HubClient::new(docs.hub.clone())
        .max_encoding_message_size(4 * 1024 * 1024)
        .max_decoding_message_size(4 * 1024 * 1024);
    loop {
        let now = now_ms();
        let mut due = Vec::new();
        let mut next_due = now + 1000;
        for item in docs.store.scan_prefix(keys::QUEUE) {
            let Ok((k, v)) = item else { break };
            let at = <[u8; 8]>::try_from(v.as_slice()).map_or(0, u64::from_be_bytes);
            if at <= now {
                if let Some(parsed) = keys::parse_queue(&k) {
                    due.push(parsed);
                }
            } else {
                next_due = next_due.min(at);
            }
            if due.len() == 16 {
                break;
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (sender, doc, kind, recipient) in due {
            let (docs, hub) = (docs.clone(), hub.clone());
            tasks.spawn(
                async move { deliver_one(&docs, hub, &sender, &doc, kind, &recipient).await },
            );
        }
        let busy = !tasks.is_empty();
        while tasks.join_next().await.is_some() {}
        if busy {
            continue;
        }
        let wait = Duration::from_millis(next_due.saturating_sub(now_ms()).clamp(10, 1000));
        tokio::select! {
            () = docs.deliveries.notified() => {}
            () = tokio::time::sleep(wait) => {}
            () = shutdown.wait() => return,
        }
    }
}

/// One delivery attempt, and its outcome recorded.
async fn deliver_one(
    docs: &Documents,
    mut hub: HubClient<tonic::transport::Channel>,
    sender: &str,
    doc: &str,
    kind: i32,
    recipient: &str,
) {
    let out_key = keys::outbox(sender, doc, kind);
    let q_key = keys::queue(sender, doc, kind, recipient);
    let Ok(Some(tracking)) = keys::load::<Tracking>(&docs.store, &out_key) else {
        tracing::error!(%sender, %doc, "queued delivery without its outbox entry; dropped");
        let _ = docs.store.apply({
            let mut b = WriteBatch::default();
            b.remove(&q_key);
            b
        });
        return;
    };
    let Some(envelope) = tracking.envelope.clone() else {
        return;
    };
    let (tx, rx) = mpsc::channel(4);
    let transaction_id = crate::new_transaction_id().unwrap_or_default();
    let header = RelayRequest {
        part: Some(relay_request::Part::Header(RelayHeader {
            transaction_id,
            sender: sender.to_string(),
            recipient: recipient.to_string(),
            envelope: Some(envelope.clone()),
        })),
    };
    let feeder = {
        let blobs = docs.blobs.clone();
        async move {
            if tx.send(header).await.is_err() {
                return;
            }
            for (i, a) in envelope.attachments.iter().enumerate() {
                let sent = blobs
                    .send_chunks(&a.sha256, i as u32, &tx, |chunk| RelayRequest {
                        part: Some(relay_request::Part::Chunk(chunk)),
                    })
                    .await;
                if sent.is_err() {
                    return;
                }
            }
        }
    };
    let (result, ()) = tokio::join!(hub.relay(ReceiverStream::new(rx)), feeder);
    // Record the outcome on a fresh copy, under the lock.
    let _guard = docs.write_lock.lock().await;
    let Ok(Some(mut tracking)) = keys::load::<Tracking>(&docs.store, &out_key) else {
        return;
    };
    let mut batch = WriteBatch::default();
    let main_key = keys::outbox(sender, doc, 0);
    let Some(r) = tracking
        .recipients
        .iter_mut()
        .find(|r| r.recipient == recipient)
    else {
        return;
    };
    r.attempts += 1;
    match result {
        Ok(response) => {
            let response = response.into_inner();
            r.delivery = "delivered".into();
            r.last_error.clear();
            r.next_attempt_unix_ms = 0;
            r.receipt = response.receipt;
            batch.remove(&q_key);
            if kind == 0 {
                // The recipient node's acknowledgement is status 01.
                let arrived = StatusEvent {
                    code: "01".into(),
                    description: "arrived".into(),
                    unix_ms: response.arrived_unix_ms,
                    by: recipient.to_string(),
                    staff: None,
                };
                if !r.history.iter().any(|h| h.code == "01") {
                    r.status = "01".into();
                    r.history.push(arrived);
                }
            }
            tracing::info!(%sender, %doc, %recipient, "document delivered");
        }
        Err(status) => {
            r.last_error = format!("{:?}: {}", status.code(), status.message());
            if permanent(status.code()) {
                r.delivery = "failed".into();
                batch.remove(&q_key);
                tracing::warn!(%sender, %doc, %recipient, error = %status, "delivery refused; not retried");
            } else {
                let delay = backoff(r.attempts, docs.backoff);
                let at = now_ms() + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                r.delivery = "retrying".into();
                r.next_attempt_unix_ms = at;
                batch.insert(&q_key, at.to_be_bytes());
                tracing::debug!(%sender, %doc, %recipient, error = %status, ?delay, "delivery failed; will retry");
            }
        }
    }
    batch.insert(&out_key, prost::Message::encode_to_vec(&tracking));
    // A change's delivery is also shown in the document's own tracking.
    if kind != 0 {
        if let Ok(Some(mut main)) = keys::load::<Tracking>(&docs.store, &main_key) {
            if let (Some(m), Some(c)) = (
                main.recipients
                    .iter_mut()
                    .find(|m| m.recipient == recipient),
                tracking
                    .recipients
                    .iter()
                    .find(|c| c.recipient == recipient),
            ) {
                m.last_error = c.last_error.clone();
            }
            batch.insert(&main_key, prost::Message::encode_to_vec(&main));
        }
    }
    if let Err(e) = docs.store.apply(batch).and_then(|()| docs.store.flush()) {
        tracing::error!(error = %e, "cannot record a delivery outcome");
    }
}

async fn statuses(docs: Arc<Documents>, shutdown: Shutdown) {
    let mut hub = HubClient::new(docs.hub.clone());
    let mut attempts = 0u32;
    loop {
        // Strictly in order: a document's statuses must arrive as they were set.
        let head = docs.store.scan_prefix(keys::STATUS_QUEUE).next();
        let wait = match head {
            Some(Ok((k, v))) => match prost::Message::decode(v.as_slice()) {
                Ok(update) => {
                    let mut update: StatusUpdate = update;
                    update.transaction_id = crate::new_transaction_id().unwrap_or_default();
                    match hub.relay_status(update).await {
                        Ok(_) => {
                            attempts = 0;
                            let mut b = WriteBatch::default();
                            b.remove(&k);
                            if let Err(e) = docs.store.apply(b).and_then(|()| docs.store.flush()) {
                                tracing::error!(error = %e, "cannot dequeue a status");
                            }
                            continue;
                        }
                        Err(status) if permanent(status.code()) => {
                            tracing::warn!(error = %status, "status refused by the hub; dropped");
                            let mut b = WriteBatch::default();
                            b.remove(&k);
                            let _ = docs.store.apply(b).and_then(|()| docs.store.flush());
                            continue;
                        }
                        Err(status) => {
                            attempts += 1;
                            tracing::debug!(error = %status, "status not relayed; will retry");
                            backoff(attempts, docs.backoff)
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "undecodable queued status; dropped");
                    let mut b = WriteBatch::default();
                    b.remove(&k);
                    let _ = docs.store.apply(b);
                    continue;
                }
            },
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot read the status queue");
                Duration::from_secs(1)
            }
            None => Duration::from_secs(1),
        };
        tokio::select! {
            () = docs.statuses.notified(), if attempts == 0 => {}
            () = tokio::time::sleep(wait) => {}
            () = shutdown.wait() => return,
        }
    }
}
