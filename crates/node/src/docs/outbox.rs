//! The sender's side: SendDocument into the outbox, and the tracking of
//! what was sent (GetTracking, WatchTracking).

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use truc_doc::envelope_digest;
use truc_proto::v1::{
    BusinessKind, RecipientTracking, SendDocumentRequest, SendDocumentResponse, Tracking,
    send_document_request,
};
use truc_registry::AgencyCode;
use truc_store::{Store, WriteBatch};

use super::{
    Caller, Delivery, Documents, TrackingChanged, blobs, check_envelope, check_parts, keys,
    keys::storage, kind_of, now_ms, recipients_of, watch,
};

use truc_doc::chunks::{only_chunks_after, opening};

impl Documents {
    /// SendDocument: checks, stores the attachments and the outbox entry
    /// durably, then acknowledges; delivery follows in the background.
    pub(crate) async fn send(
        &self,
        caller: &Caller,
        mut stream: Streaming<SendDocumentRequest>,
    ) -> Result<SendDocumentResponse, Status> {
        let envelope = opening(&mut stream, "envelope", |m| match m.part {
            Some(send_document_request::Part::Envelope(e)) => Some(e),
            _ => None,
        })
        .await?;
        let mut chunks = tokio_stream::StreamExt::map(stream, |m| match m?.part {
            Some(send_document_request::Part::Chunk(c)) => Ok(c),
            _ => Err(only_chunks_after("envelope")),
        });
        self.send_envelope(caller, envelope, &mut chunks).await
    }

    /// SendDocument after its opening message: the envelope, then its
    /// attachments' chunks (also the VXP API's `sendEdoc`).
    pub(crate) async fn send_envelope(
        &self,
        caller: &Caller,
        envelope: truc_proto::v1::Envelope,
        chunks: &mut (
                 impl tokio_stream::Stream<Item = Result<truc_proto::v1::Chunk, Status>> + Unpin + Send
             ),
    ) -> Result<SendDocumentResponse, Status> {
        let from = envelope
            .from
            .as_ref()
            .map(|o| o.organ_id.as_str())
            .unwrap_or("");
        let sender = caller.may_act_for(from)?;
        check_envelope(&envelope, &self.limits)?;
        check_parts(sender.as_str(), &envelope)?;
        let kind = kind_of(&envelope);
        let key = keys::outbox(sender.as_str(), &envelope.document_id, kind);
        let digest = envelope_digest(&envelope);
        let repeat = |existing: Option<Tracking>| -> Result<Option<u64>, Status> {
            match existing {
                None => Ok(None),
                Some(t)
                    if t.envelope
                        .as_ref()
                        .is_some_and(|e| envelope_digest(e) == digest) =>
                {
                    Ok(Some(t.accepted_unix_ms))
                }
                Some(_) => Err(Status::already_exists(format!(
                    "{sender} already sent a different document with id {}",
                    envelope.document_id
                ))),
            }
        };
        let repeated = |accepted_unix_ms| SendDocumentResponse {
            sender: sender.to_string(),
            document_id: envelope.document_id.clone(),
            duplicate: true,
            accepted_unix_ms,
        };
        if let Some(accepted) = repeat(keys::load::<Tracking>(&self.store, &key)?)? {
            // A repeated send: check what comes, store nothing new.
            blobs::check_only(&envelope, chunks).await?;
            self.settled().await?;
            return Ok(repeated(accepted));
        }
        if kind != BusinessKind::New as i32 {
            let original = keys::outbox(sender.as_str(), &envelope.document_id, 0);
            if self.store.get(&original).map_err(storage)?.is_none() {
                return Err(Status::failed_precondition(format!(
                    "a recall, update or replace needs document {} sent first",
                    envelope.document_id
                )));
            }
        }
        let small = self.blobs.receive(&envelope, chunks).await?;
        // The same id may have been sent concurrently: decide under the lock.
        let guard = self.write_lock.lock().await;
        if let Some(accepted) = repeat(keys::load::<Tracking>(&self.store, &key)?)? {
            drop(guard);
            self.durable().await?;
            return Ok(repeated(accepted));
        }
        let accepted = now_ms();
        let recipients = recipients_of(&envelope);
        // The envelope once; each recipient's delivery under its own key.
        let tracking = Tracking {
            sender: sender.to_string(),
            document_id: envelope.document_id.clone(),
            accepted_unix_ms: accepted,
            recipients: Vec::new(),
            envelope: Some(envelope.clone()),
        };
        let mut batch = WriteBatch::default();
        let mut queue_keys = Vec::with_capacity(recipients.len());
        batch.insert(&key, prost::Message::encode_to_vec(&tracking));
        small.add_to(&mut batch);
        for r in &recipients {
            let mut record = RecipientTracking {
                recipient: r.clone(),
                ..RecipientTracking::default()
            };
            Delivery::Pending.set(&mut record);
            batch.insert(
                keys::recipient(sender.as_str(), &envelope.document_id, kind, r),
                prost::Message::encode_to_vec(&record),
            );
            let queued = keys::queue(sender.as_str(), &envelope.document_id, kind, r);
            batch.insert(&queued, accepted.to_be_bytes());
            queue_keys.push(queued);
        }
        self.commit(guard, batch).await?;
        for key in queue_keys {
            self.queued.send(key);
        }
        Ok(SendDocumentResponse {
            sender: sender.to_string(),
            document_id: envelope.document_id,
            duplicate: false,
            accepted_unix_ms: accepted,
        })
    }

    /// GetTracking: the envelope, and each recipient's delivery and history.
    pub(crate) fn tracking(
        &self,
        sender: &AgencyCode,
        document_id: &str,
    ) -> Result<Tracking, Status> {
        truc_doc::check_document_ref(sender.as_str(), document_id)?;
        let sender_s = sender.as_str();
        let mut tracking =
            keys::load::<Tracking>(&self.store, &keys::outbox(sender_s, document_id, 0))?
                .ok_or_else(|| {
                    Status::not_found(format!("{sender} sent no document {document_id}"))
                })?;
        let recipients = tracking
            .envelope
            .as_ref()
            .map(recipients_of)
            .unwrap_or_default();
        for r in recipients {
            let key = keys::recipient(sender_s, document_id, 0, &r);
            let Some(mut record) = keys::load::<RecipientTracking>(&self.store, &key)? else {
                continue;
            };
            record.history =
                keys::load_all(&self.store, &keys::history_of(sender_s, document_id, &r))?;
            tracking.recipients.push(record);
        }
        Ok(tracking)
    }

    /// WatchTracking: the tracking of one sent document now, then again
    /// after each change of a delivery or a status of it (an unchanged
    /// tracking is not sent twice), with the limits and the slow-watcher
    /// rule of [`watch`]. NOT_FOUND when `sender` sent no such document.
    pub(crate) fn watch_tracking(
        self: &Arc<Self>,
        sender: AgencyCode,
        document_id: &str,
    ) -> Result<ReceiverStream<Result<Tracking, Status>>, Status> {
        // Subscribed before the first read: no change falls in between.
        let changes = self
            .tracking_changes
            .subscribe(&[sender.as_str(), document_id]);
        let first = self.tracking(&sender, document_id)?;
        let slot = self.watch_slot(sender.as_str())?;
        let feed = TrackingFeed {
            docs: Arc::downgrade(self),
            document_id: document_id.to_string(),
            last: first.clone(),
            sender,
        };
        Ok(watch::spawn(slot, changes, Some(first), feed))
    }

    /// Tells tracking watchers that a document's tracking changed (after
    /// the change is on disk).
    pub(crate) fn tracking_changed(&self, sender: &str, document_id: &str) {
        let _ = self.tracking_changes.send(
            &[sender, document_id],
            TrackingChanged {
                sender: sender.to_string(),
                document_id: document_id.to_string(),
            },
        );
    }
}

/// `WatchTracking`: the tracking of one document, read again on each of its
/// changes.
struct TrackingFeed {
    /// Weak: a watch does not keep the documents (and their change
    /// channel) alive; it ends with them.
    docs: std::sync::Weak<Documents>,
    sender: AgencyCode,
    document_id: String,
    /// The tracking sent last.
    last: Tracking,
}

impl TrackingFeed {
    /// The current tracking, if it differs from the one sent last.
    fn fresh(&mut self) -> Result<Option<Tracking>, Status> {
        let docs = self
            .docs
            .upgrade()
            .ok_or_else(|| Status::unavailable("the node is stopping"))?;
        let now = docs.tracking(&self.sender, &self.document_id)?;
        if now == self.last {
            return Ok(None);
        }
        self.last = now.clone();
        Ok(Some(now))
    }
}

impl watch::Feed for TrackingFeed {
    type Event = TrackingChanged;
    type Item = Tracking;
    const AGAIN: &'static str = "get the tracking and watch again";

    fn item(&mut self, ev: TrackingChanged) -> Result<Option<Tracking>, Status> {
        if ev.sender != self.sender.as_str() || ev.document_id != self.document_id {
            return Ok(None);
        }
        self.fresh()
    }

    /// The tracking is a state, not a list of events: reading it again
    /// makes up for any change missed.
    fn lagged(&mut self, _missed: u64) -> Result<Option<Tracking>, Status> {
        self.fresh()
    }
}

/// Moves tracking stored by earlier versions (every recipient inside the
/// outbox value) to one key per recipient and per status event.
pub(super) fn split_tracking(store: &Store) -> Result<(), truc_store::StoreError> {
    let mut moved = 0usize;
    for item in store.scan_prefix(keys::OUTBOX) {
        let (k, v) = item?;
        let Ok(mut tracking) = <Tracking as prost::Message>::decode(v.as_slice()) else {
            tracing::error!(key = %hex::encode(&k), "undecodable outbox entry left as is");
            continue;
        };
        if tracking.recipients.is_empty() {
            continue;
        }
        let kind = k.last().map_or(0, |b| i32::from(b.saturating_sub(b'0')));
        let (sender, doc) = (tracking.sender.clone(), tracking.document_id.clone());
        let mut batch = WriteBatch::default();
        for mut r in std::mem::take(&mut tracking.recipients) {
            for (i, ev) in std::mem::take(&mut r.history).iter().enumerate() {
                let seq = u32::try_from(i).unwrap_or(u32::MAX);
                batch.insert(
                    keys::history(&sender, &doc, &r.recipient, seq),
                    prost::Message::encode_to_vec(ev),
                );
            }
            batch.insert(
                keys::recipient(&sender, &doc, kind, &r.recipient),
                prost::Message::encode_to_vec(&r),
            );
        }
        batch.insert(&k, prost::Message::encode_to_vec(&tracking));
        store.apply(batch)?;
        moved += 1;
    }
    if moved > 0 {
        store.flush()?;
        tracing::info!(moved, "document tracking split into per-recipient entries");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt;
    use tonic::Code;
    use truc_doc::StatusCode;
    use truc_proto::v1::{Envelope, Organ};

    use super::*;
    use crate::{
        config::DocumentService,
        docs::{event, testing::*, watch::WATCH_BUFFER},
    };

    #[tokio::test]
    async fn tracking_stored_in_one_value_is_split_at_open() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let store = Store::open(&dir.path().join("db")).expect("store");
            let old = Tracking {
                sender: S.into(),
                document_id: DOC.into(),
                envelope: Some(Envelope {
                    to: vec![Organ {
                        organ_id: R.into(),
                        ..Organ::default()
                    }],
                    document_id: DOC.into(),
                    ..Envelope::default()
                }),
                accepted_unix_ms: 7,
                recipients: vec![RecipientTracking {
                    recipient: R.into(),
                    delivery: "delivered".into(),
                    attempts: 2,
                    status: "03".into(),
                    history: vec![
                        event(StatusCode::Arrived, "", R),
                        event(StatusCode::Accepted, "", R),
                    ],
                    ..RecipientTracking::default()
                }],
            };
            store
                .insert(keys::outbox(S, DOC, 0), prost::Message::encode_to_vec(&old))
                .expect("insert");
            store.flush().expect("flush");
        }
        let docs = open_in(dir.path(), DocumentService::default());
        let stored: Tracking = keys::load(&docs.store, &keys::outbox(S, DOC, 0))
            .expect("load")
            .expect("kept");
        assert!(
            stored.recipients.is_empty(),
            "the outbox value holds no recipients"
        );
        assert_eq!(codes(&docs), ("03".into(), vec!["01".into(), "03".into()]));
        let t = docs
            .tracking(&AgencyCode::parse(S).expect("code"), DOC)
            .expect("tracking");
        assert_eq!(t.recipients[0].attempts, 2);
        assert_eq!(t.recipients[0].delivery, "delivered");
    }

    /// The next message of a watch, which must come.
    async fn next_of<T>(watch: &mut ReceiverStream<Result<T, Status>>) -> Result<T, Status> {
        tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("a message in time")
            .expect("the watch goes on")
    }

    #[tokio::test]
    async fn tracking_is_watched_from_now_on_each_change_once() {
        let (_dir, docs) = docs_with(DocumentService::default()).await;
        let sender = AgencyCode::parse(S).expect("code");
        let e = docs
            .watch_tracking(sender.clone(), DOC)
            .expect_err("nothing sent yet");
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        sent(&docs, 0);
        let mut watch = docs.watch_tracking(sender, DOC).expect("watch");
        let now = next_of(&mut watch).await.expect("the tracking now");
        assert_eq!(now.recipients[0].status, "");
        docs.deliver_status(status("03", 1)).await.expect("03");
        let t = next_of(&mut watch).await.expect("after 03");
        assert_eq!(t.recipients[0].status, "03");
        // A notification that changes nothing sends nothing: the next
        // message is the 04, not the 03 again.
        docs.tracking_changed(S, DOC);
        docs.tracking_changed(S, "000.00.00.H37,2026/11/28,2/UBND-VP");
        docs.deliver_status(status("04", 2)).await.expect("04");
        let t = next_of(&mut watch).await.expect("after 04");
        assert_eq!(t.recipients[0].status, "04");
        let codes: Vec<_> = t.recipients[0]
            .history
            .iter()
            .map(|h| h.code.as_str())
            .collect();
        assert_eq!(codes, ["01", "03", "04"]);
    }

    #[tokio::test]
    async fn tracking_watchers_count_against_the_watcher_limits() {
        let (_dir, docs) = docs_with(DocumentService {
            max_watchers_per_agency: 2,
            max_watchers: 3,
            ..DocumentService::default()
        })
        .await;
        sent(&docs, 0);
        let code = |s: &str| AgencyCode::parse(s).expect("code");
        let _a = docs.watch_tracking(code(S), DOC).expect("1");
        let _b = docs.watch_inbox(code(S)).expect("2");
        let e = docs.watch_tracking(code(S), DOC).expect_err("per agency");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        let _c = docs.watch_inbox(code(R)).expect("another agency");
        let e = docs
            .watch_inbox(code("000.01.37.H37"))
            .expect_err("in total");
        assert_eq!(e.code(), Code::ResourceExhausted);
    }

    #[tokio::test]
    async fn a_tracking_watcher_that_does_not_read_is_dropped_with_a_reason() {
        let (_dir, docs) = docs_with(DocumentService::default()).await;
        sent(&docs, 0);
        let mut watch = docs
            .watch_tracking(AgencyCode::parse(S).expect("code"), DOC)
            .expect("watch");
        let n = WATCH_BUFFER + 10;
        for attempts in 1..=n {
            let record = RecipientTracking {
                recipient: R.into(),
                attempts: attempts as u32,
                ..RecipientTracking::default()
            };
            docs.store
                .insert(
                    keys::recipient(S, DOC, 0, R),
                    prost::Message::encode_to_vec(&record),
                )
                .expect("insert");
            docs.tracking_changed(S, DOC);
            // Each change seen before the next (changes seen together are
            // one new tracking): wait until it is queued or the watch ended.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let queued = watch.as_ref().len();
            while watch.as_ref().len() == queued && !watch.as_ref().is_closed() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "change {attempts} never seen"
                );
                tokio::task::yield_now().await;
            }
            if watch.as_ref().is_closed() {
                break;
            }
        }
        let mut delivered = 0;
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .expect("the stream goes on or ends")
            {
                Some(Ok(_)) => delivered += 1,
                Some(Err(status)) => break status,
                None => panic!("ended without a reason after {delivered} messages"),
            }
        };
        assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
        assert!(delivered < n, "{delivered}");
    }

    #[tokio::test]
    async fn a_send_is_acknowledged_only_once_durable_and_so_is_its_repeat() {
        let (_dir, docs, failing) = docs_failing_flush().await;
        let caller = Caller {
            identity: truc_pki::Identity::new(truc_pki::Role::Client, "dms").expect("identity"),
            agencies: [AgencyCode::parse(S).expect("code")].into(),
            node: truc_registry::NodeId::parse("lgsp-langson").expect("node"),
        };
        let file: &[u8] = b"a small attachment";
        let envelope =
            truc_doc::sample::envelope(S, &[R], "1", truc_doc::sample::attachments(&[file]));
        let send = || async {
            let mut chunks = tokio_stream::iter(vec![Ok(truc_doc::chunks::chunk(
                0,
                0,
                bytes::Bytes::from_static(file),
            ))]);
            docs.send_envelope(&caller, envelope.clone(), &mut chunks)
                .await
        };
        // Written but not durable: the repeat, which finds it, is not
        // acknowledged either while flushes fail.
        let ok = refused_until_durable(&failing, send).await;
        assert!(ok.duplicate, "{ok:?}");
        // The small attachment went with the send's commit.
        let stored = docs
            .store
            .get(keys::blob(&envelope.attachments[0].sha256))
            .expect("read");
        assert_eq!(stored.as_deref(), Some(file));
    }
}
