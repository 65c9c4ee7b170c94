//! The recipient's side: documents relayed by the hub into the inbox
//! (Deliver), and ListInbox, WatchInbox, FetchDocument and UpdateStatus.

use std::sync::{Arc, atomic::Ordering};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use truc_doc::{ChangeKind, DocState, StatusCode, envelope_digest};
use truc_proto::v1::{
    BusinessKind, Envelope, FetchDocumentResponse, InboxEntry, InboxEvent, ListInboxRequest,
    ListInboxResponse, RelayRequest, RelayResponse, StatusUpdate, UpdateStatusRequest,
    UpdateStatusResponse, fetch_document_response, relay_request,
};
use truc_registry::AgencyCode;
use truc_store::WriteBatch;

use super::{
    Documents, MAX_EVENT_BYTES, blobs, event, history_full, keys, keys::storage, now_ms, watch,
};

use truc_doc::chunks::{only_chunks_after, opening};

impl Documents {
    /// Node.Deliver: a document relayed by the hub for one of this node's
    /// agencies. Answers once it is in the inbox on disk.
    pub(crate) async fn deliver(
        &self,
        mut stream: Streaming<RelayRequest>,
    ) -> Result<RelayResponse, Status> {
        let mut header = opening(&mut stream, "header", |m| match m.part {
            Some(relay_request::Part::Header(h)) => Some(h),
            _ => None,
        })
        .await?;
        let envelope = header
            .envelope
            .take()
            .ok_or_else(|| Status::invalid_argument("header.envelope is required"))?;
        super::check_envelope(&envelope, &self.limits)?;
        keys::check_part("sender", &header.sender)?;
        keys::check_part("recipient", &header.recipient)?;
        keys::check_part("document_id", &envelope.document_id)?;
        let key = keys::inbox(&header.recipient, &header.sender, &envelope.document_id);
        let existing = keys::load::<InboxEntry>(&self.store, &key)?;
        let change = ChangeKind::of(
            BusinessKind::try_from(envelope.business_kind).unwrap_or(BusinessKind::New),
        );
        let mut chunks = tokio_stream::StreamExt::map(stream, |m| match m?.part {
            Some(relay_request::Part::Chunk(c)) => Ok(c),
            _ => Err(only_chunks_after("header")),
        });
        // Checked before the attachments stream in (early refusals), and
        // again under the lock before writing (a concurrent delivery of the
        // same document may have landed meanwhile).
        let max_history = self.service.max_history;
        if let Admission::Duplicate(arrived) =
            admit(&header, &envelope, change, existing, max_history)?
        {
            blobs::check_only(&envelope, &mut chunks).await?;
            self.settled().await?;
            return Ok(duplicate(arrived));
        }
        let small = self.blobs.receive(&envelope, &mut chunks).await?;
        let guard = self.write_lock.lock().await;
        let existing = keys::load::<InboxEntry>(&self.store, &key)?;
        let mut entry = match admit(&header, &envelope, change, existing, max_history)? {
            Admission::Duplicate(arrived) => {
                drop(guard);
                self.durable().await?;
                return Ok(duplicate(arrived));
            }
            Admission::Store(entry) => *entry,
        };
        let mut batch = WriteBatch::default();
        let mut status_key = None;
        let kind_label = match change {
            None => {
                entry.envelope = Some(envelope);
                "arrived"
            }
            Some(_) => {
                let business_kind = envelope.business_kind;
                entry.pending_change = Some(envelope);
                // The sender learns of the 13 like of any status.
                let update = self.status_update(&entry, business_kind)?;
                status_key = Some(keys::status(update.0));
                batch.insert(keys::status(update.0), update.1);
                "change"
            }
        };
        batch.insert(&key, prost::Message::encode_to_vec(&entry));
        small.add_to(&mut batch);
        self.commit(guard, batch).await?;
        if let Some(key) = status_key {
            self.status_queued.send(key);
        }
        let arrived = entry.arrived_unix_ms;
        let recipient = entry.recipient.clone();
        let _ = self.events.send(
            &[recipient.as_str()],
            InboxEvent {
                kind: kind_label.into(),
                entry: Some(entry),
            },
        );
        Ok(RelayResponse {
            arrived_unix_ms: arrived,
            duplicate: false,
            receipt: None,
        })
    }

    /// ListInbox.
    pub(crate) fn list_inbox(
        &self,
        recipient: &AgencyCode,
        req: &ListInboxRequest,
    ) -> Result<ListInboxResponse, Status> {
        let page = match req.page_size {
            0 => 50,
            n => n.min(500),
        } as usize;
        let prefix = keys::inbox_of(recipient.as_str());
        let after = hex::decode(&req.page_token)
            .map_err(|_| Status::invalid_argument("page_token: not one this node gave"))?;
        let mut entries = Vec::new();
        let mut next_page_token = String::new();
        for item in self.store.scan_prefix(&prefix) {
            let (k, v) = item.map_err(storage)?;
            if !after.is_empty() && k <= after {
                continue;
            }
            let entry: InboxEntry = match prost::Message::decode(v.as_slice()) {
                Ok(e) => e,
                Err(e) => {
                    // One bad entry must not hide the others.
                    tracing::error!(key = %hex::encode(&k), error = %e, "undecodable inbox entry skipped");
                    continue;
                }
            };
            let matches = (req.status.is_empty() || entry.status == req.status)
                && (req.sender.is_empty() || entry.sender == req.sender)
                && entry.updated_unix_ms >= req.since_unix_ms;
            if !matches {
                continue;
            }
            if entries.len() == page {
                next_page_token = hex::encode(entries_last_key(&entries));
                break;
            }
            entries.push(entry);
        }
        Ok(ListInboxResponse {
            entries,
            next_page_token,
        })
    }

    /// WatchInbox: arrivals and status changes of one recipient's inbox,
    /// with the limits and the slow-watcher rule of [`watch`].
    pub(crate) fn watch_inbox(
        &self,
        recipient: AgencyCode,
    ) -> Result<ReceiverStream<Result<InboxEvent, Status>>, Status> {
        let slot = self.watch_slot(recipient.as_str())?;
        let events = self.events.subscribe(&[recipient.as_str()]);
        Ok(watch::spawn(slot, events, None, InboxFeed { recipient }))
    }

    /// FetchDocument: the entry, then every attachment's chunks.
    pub(crate) fn fetch(
        self: &Arc<Self>,
        recipient: &AgencyCode,
        req: &truc_proto::v1::FetchDocumentRequest,
    ) -> Result<ReceiverStream<Result<FetchDocumentResponse, Status>>, Status> {
        truc_doc::check_document_ref(&req.sender, &req.document_id)?;
        let key = keys::inbox(recipient.as_str(), &req.sender, &req.document_id);
        let entry = keys::load::<InboxEntry>(&self.store, &key)?.ok_or_else(|| {
            Status::not_found(format!(
                "no document {} from {} in the inbox of {recipient}",
                req.document_id, req.sender
            ))
        })?;
        let (tx, rx) = mpsc::channel(4);
        let docs = self.clone();
        tokio::spawn(async move {
            let attachments = entry
                .envelope
                .as_ref()
                .map(|e| e.attachments.clone())
                .unwrap_or_default();
            let first = FetchDocumentResponse {
                part: Some(fetch_document_response::Part::Entry(entry)),
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            for (i, a) in attachments.iter().enumerate() {
                let sent = docs
                    .blobs
                    .send_chunks(a, i as u32, &tx, |chunk| {
                        Ok(FetchDocumentResponse {
                            part: Some(fetch_document_response::Part::Chunk(chunk)),
                        })
                    })
                    .await;
                if let Err(e) = sent {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    /// UpdateStatus: the recipient's processing status, enforced by the
    /// state machine, stored, and queued to travel back to the sender.
    pub(crate) async fn update_status(
        &self,
        recipient: &AgencyCode,
        req: UpdateStatusRequest,
    ) -> Result<UpdateStatusResponse, Status> {
        // The status, the document and every text bounded.
        let to = truc_doc::check_update_status(&req)?;
        keys::check_part("sender", &req.sender)?;
        keys::check_part("document_id", &req.document_id)?;
        let key = keys::inbox(recipient.as_str(), &req.sender, &req.document_id);
        let guard = self.write_lock.lock().await;
        let mut entry = keys::load::<InboxEntry>(&self.store, &key)?.ok_or_else(|| {
            Status::not_found(format!(
                "no document {} from {} in the inbox of {recipient}",
                req.document_id, req.sender
            ))
        })?;
        let state = state_of(&entry)?;
        if entry.history.len() >= self.service.max_history {
            return Err(history_full(self.service.max_history));
        }
        let next = state
            .set_by_recipient(to)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        // An accepted update or replace becomes the current version.
        if to == StatusCode::ChangeAccepted
            && matches!(next.change, Some(ChangeKind::Update | ChangeKind::Replace))
        {
            if let Some(new) = entry.pending_change.clone() {
                entry.envelope = Some(new);
            }
        }
        entry.status = next.status.code().into();
        entry.updated_unix_ms = now_ms();
        let mut ev = event(next.status, &req.description, recipient.as_str());
        ev.staff = req.staff;
        if prost::Message::encoded_len(&ev) > MAX_EVENT_BYTES {
            return Err(Status::invalid_argument(format!(
                "description and staff: more than {MAX_EVENT_BYTES} bytes"
            )));
        }
        entry.history.push(ev);
        let (seq, update) = self.status_update(&entry, 0)?;
        let mut batch = WriteBatch::default();
        batch.insert(&key, prost::Message::encode_to_vec(&entry));
        batch.insert(keys::status(seq), update);
        self.commit(guard, batch).await?;
        self.status_queued.send(keys::status(seq));
        let _ = self.events.send(
            &[recipient.as_str()],
            InboxEvent {
                kind: "status".into(),
                entry: Some(entry.clone()),
            },
        );
        Ok(UpdateStatusResponse { entry: Some(entry) })
    }

    /// The next status-queue slot and the encoded update for `entry`'s
    /// latest status; `change` is the business kind a 13 answers.
    fn status_update(&self, entry: &InboxEntry, change: i32) -> Result<(u64, Vec<u8>), Status> {
        let seq = self.next_status.fetch_add(1, Ordering::SeqCst);
        let update = StatusUpdate {
            transaction_id: String::new(),
            sender: entry.sender.clone(),
            document_id: entry.document_id.clone(),
            recipient: entry.recipient.clone(),
            event: entry.history.last().cloned(),
            change,
        };
        Ok((seq, prost::Message::encode_to_vec(&update)))
    }
}

/// `WatchInbox`: the events of one recipient's inbox.
struct InboxFeed {
    recipient: AgencyCode,
}

impl watch::Feed for InboxFeed {
    type Event = InboxEvent;
    type Item = InboxEvent;
    const AGAIN: &'static str = "list the inbox and watch again";

    fn item(&mut self, ev: InboxEvent) -> Result<Option<InboxEvent>, Status> {
        let mine = ev
            .entry
            .as_ref()
            .is_some_and(|e| e.recipient == self.recipient.as_str());
        Ok(mine.then_some(ev))
    }

    fn lagged(&mut self, missed: u64) -> Result<Option<InboxEvent>, Status> {
        Err(Status::data_loss(format!(
            "{missed} events were missed; {}",
            Self::AGAIN
        )))
    }
}

fn entries_last_key(entries: &[InboxEntry]) -> Vec<u8> {
    entries
        .last()
        .map(|e| keys::inbox(&e.recipient, &e.sender, &e.document_id))
        .unwrap_or_default()
}

/// What a relayed document does to an inbox.
enum Admission {
    /// The same envelope is already here (arrived at this time).
    Duplicate(u64),
    /// The entry to store.
    Store(Box<InboxEntry>),
}

fn duplicate(arrived_unix_ms: u64) -> RelayResponse {
    RelayResponse {
        arrived_unix_ms,
        duplicate: true,
        receipt: None,
    }
}

/// Whether a relayed document is new, a repeat, a change the state machine
/// allows, or refused; `existing` is the recipient's entry for its id.
fn admit(
    header: &truc_proto::v1::RelayHeader,
    envelope: &Envelope,
    change: Option<ChangeKind>,
    existing: Option<InboxEntry>,
    max_history: usize,
) -> Result<Admission, Status> {
    let digest = envelope_digest(envelope);
    let same = |e: Option<&Envelope>| e.is_some_and(|x| envelope_digest(x) == digest);
    match (change, existing) {
        (None, Some(e)) if same(e.envelope.as_ref()) => Ok(Admission::Duplicate(e.arrived_unix_ms)),
        (Some(_), Some(e)) if same(e.pending_change.as_ref()) => {
            Ok(Admission::Duplicate(e.arrived_unix_ms))
        }
        (None, Some(_)) => Err(Status::already_exists(format!(
            "another document with id {} from {} is already here",
            envelope.document_id, header.sender
        ))),
        (None, None) => {
            let arrived = now_ms();
            Ok(Admission::Store(Box::new(InboxEntry {
                sender: header.sender.clone(),
                document_id: envelope.document_id.clone(),
                recipient: header.recipient.clone(),
                envelope: None,
                status: StatusCode::Arrived.code().into(),
                arrived_unix_ms: arrived,
                updated_unix_ms: arrived,
                history: vec![event(StatusCode::Arrived, "arrived", &header.recipient)],
                pending_change: None,
            })))
        }
        (Some(_), None) => Err(Status::failed_precondition(format!(
            "document {} has not arrived here yet",
            envelope.document_id
        ))),
        (Some(_), Some(entry)) if entry.history.len() >= max_history => {
            Err(history_full(max_history))
        }
        (Some(kind), Some(mut entry)) => {
            let next = state_of(&entry)?
                .request_change(kind)
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            entry.status = next.status.code().into();
            entry.updated_unix_ms = now_ms();
            entry.history.push(event(
                next.status,
                &format!("{kind:?} requested: {}", envelope.business_reason),
                &header.sender,
            ));
            Ok(Admission::Store(Box::new(entry)))
        }
    }
}

/// The state machine's view of an inbox entry.
fn state_of(entry: &InboxEntry) -> Result<DocState, Status> {
    let status = StatusCode::parse(&entry.status).map_err(storage)?;
    // The last change matters only while it is pending or just answered.
    let answered = matches!(
        status,
        StatusCode::ChangeRequested | StatusCode::ChangeAccepted | StatusCode::ChangeRefused
    );
    let change = entry
        .pending_change
        .as_ref()
        .filter(|_| answered)
        .and_then(|e| {
            ChangeKind::of(BusinessKind::try_from(e.business_kind).unwrap_or(BusinessKind::New))
        });
    Ok(DocState { status, change })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt;
    use tonic::Code;

    use super::*;
    use crate::{
        config::DocumentService,
        docs::{testing::*, watch::WATCH_BUFFER},
    };

    #[tokio::test]
    async fn watchers_are_limited_and_a_dropped_one_frees_its_slot() {
        let (_dir, docs) = docs_with(DocumentService {
            max_watchers_per_agency: 2,
            max_watchers: 3,
            ..DocumentService::default()
        })
        .await;
        let code = |s: &str| AgencyCode::parse(s).expect("code");
        let a = docs.watch_inbox(code(R)).expect("1");
        let _b = docs.watch_inbox(code(R)).expect("2");
        let e = docs.watch_inbox(code(R)).expect_err("per agency");
        assert_eq!(e.code(), Code::ResourceExhausted);
        let _c = docs.watch_inbox(code(S)).expect("another agency");
        let e = docs
            .watch_inbox(code("000.01.37.H37"))
            .expect_err("in total");
        assert_eq!(e.code(), Code::ResourceExhausted);
        drop(a);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match docs.watch_inbox(code(R)) {
                Ok(_) => break,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("the slot was never freed: {e:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_watcher_that_does_not_read_is_dropped_with_a_reason() {
        let (_dir, docs) = docs_with(DocumentService::default()).await;
        let mut watch = docs
            .watch_inbox(AgencyCode::parse(R).expect("code"))
            .expect("watch");
        let n = WATCH_BUFFER + 10;
        for i in 0..n {
            let entry = InboxEntry {
                recipient: R.into(),
                document_id: format!("{i}"),
                ..InboxEntry::default()
            };
            let sent = docs.events.send(
                &[R],
                InboxEvent {
                    kind: "arrived".into(),
                    entry: Some(entry),
                },
            );
            assert_eq!(sent, 1, "subscribed");
        }
        let mut delivered = 0;
        let ended = loop {
            let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .expect("the stream goes on or ends");
            match next {
                Some(Ok(_)) => delivered += 1,
                Some(Err(status)) => break status,
                None => panic!("ended without a reason after {delivered} events"),
            }
        };
        assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
        assert!(delivered < n, "{delivered}");
    }

    #[tokio::test]
    async fn a_relayed_document_is_acknowledged_only_once_durable_and_so_is_its_repeat() {
        let (_dir, docs, failing) = docs_failing_flush().await;
        let envelope = truc_doc::sample::envelope(S, &[R], "1", Vec::new());
        let relay = || {
            docs.deliver(truc_pipeline::client_stream(vec![RelayRequest {
                part: Some(relay_request::Part::Header(truc_proto::v1::RelayHeader {
                    transaction_id: "ab".repeat(16),
                    sender: S.into(),
                    recipient: R.into(),
                    envelope: Some(envelope.clone()),
                })),
            }]))
        };
        let ok = refused_until_durable(&failing, relay).await;
        assert!(ok.duplicate, "{ok:?}");
    }
}
