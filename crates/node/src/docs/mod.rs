//! Documents at a node: the sender's outbox and tracking, the recipient's
//! inbox, attachment blobs on disk, and the workers that deliver documents
//! and statuses through the hub until they are on the other side's disk.
//!
//! Durability: a send is acknowledged once its blobs are `fsync`ed and its
//! outbox entry flushed; a relayed document is acknowledged once it is in the
//! inbox on disk; a status once it is queued on disk. Deliveries and statuses
//! are retried (exponential backoff with jitter) until the other side has
//! them, except when no retry can help; both sides are idempotent, so a
//! retry never makes a second entry.
//!
//! Storage: every stored value stays small (sled writes large values to
//! files it never syncs). A send is its envelope once (`doc/o/`), one small
//! value per recipient for its delivery (`doc/r/`) and one per status event
//! (`doc/h/`); attachments are files in a directory of our own.

mod blobs;
mod delivery;
mod keys;
mod watch;
mod worker;

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::{Notify, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming, transport::Channel};
use truc_doc::{ChangeKind, DocState, StatusCode, envelope_digest};
use truc_pki::Identity;
use truc_proto::v1::{
    BusinessKind, Envelope, FetchDocumentResponse, InboxEntry, InboxEvent, ListInboxRequest,
    ListInboxResponse, RecipientTracking, RelayRequest, RelayResponse, SendDocumentRequest,
    SendDocumentResponse, StatusAck, StatusEvent, StatusUpdate, Tracking, UpdateStatusRequest,
    UpdateStatusResponse, fetch_document_response, relay_request, send_document_request,
};
use truc_registry::{AgencyCode, NodeId};
use truc_store::{Store, WriteBatch};

use self::{blobs::Blobs, keys::storage};
use crate::config::DocumentService;
pub(crate) use delivery::Delivery;
#[cfg(test)]
use watch::WATCH_BUFFER;
pub(crate) use worker::spawn_workers;

/// An agency system calling the node, and the agencies it may act for.
pub(crate) struct Caller {
    pub(crate) identity: Identity,
    pub(crate) agencies: BTreeSet<AgencyCode>,
    pub(crate) node: NodeId,
}

impl Caller {
    /// `claimed` as an agency code, if this caller may act for it.
    pub(crate) fn may_act_for(&self, claimed: &str) -> Result<AgencyCode, Status> {
        let agency = AgencyCode::parse(claimed)
            .map_err(|e| Status::invalid_argument(format!("agency: {e}")))?;
        if !self.agencies.contains(&agency) {
            return Err(Status::permission_denied(format!(
                "{} may not act for agency {agency} on node {}",
                self.identity, self.node
            )));
        }
        Ok(agency)
    }
}

/// The largest status event (encoded) a node stores: its description and
/// staff fields are free text from another participant.
const MAX_EVENT_BYTES: usize = 4096;

/// A change to the tracking of one sent document (a delivery outcome or a
/// status), for `WatchTracking`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TrackingChanged {
    pub(crate) sender: String,
    pub(crate) document_id: String,
}

/// The document side of a node.
pub(crate) struct Documents {
    store: Store,
    blobs: Blobs,
    limits: truc_doc::Limits,
    service: DocumentService,
    hub: Channel,
    /// Wakes the delivery worker.
    deliveries: Notify,
    /// Wakes the status worker.
    statuses: Notify,
    next_status: AtomicU64,
    events: broadcast::Sender<InboxEvent>,
    /// Tracking changes, for `WatchTracking`.
    tracking_changes: broadcast::Sender<TrackingChanged>,
    /// Subscribers of `WatchInbox` and `WatchTracking`.
    watchers: Arc<Mutex<watch::Watchers>>,
    /// Retry delays: the first, and the cap.
    pub(crate) backoff: (std::time::Duration, std::time::Duration),
    /// Held while an outbox, tracking or inbox entry is read, checked,
    /// changed and written back: deliveries to several recipients of one
    /// document finish concurrently, a retried delivery can overlap the
    /// first, and a status can be set while a change arrives.
    pub(crate) write_lock: tokio::sync::Mutex<()>,
}

fn now_ms() -> u64 {
    truc_ops::now_ms()
}

fn kind_of(envelope: &Envelope) -> i32 {
    envelope.business_kind
}

fn event(code: StatusCode, description: &str, by: &str) -> StatusEvent {
    StatusEvent {
        code: code.code().to_string(),
        description: description.to_string(),
        unix_ms: now_ms(),
        by: by.to_string(),
        staff: None,
    }
}

/// The recipients of `envelope`, each once, in the envelope's order.
fn recipients_of(envelope: &Envelope) -> Vec<String> {
    let mut seen = BTreeSet::new();
    envelope
        .to
        .iter()
        .map(|o| o.organ_id.clone())
        .filter(|r| seen.insert(r.clone()))
        .collect()
}

/// The key parts of a document: sender, id and recipients.
fn check_parts(sender: &str, envelope: &Envelope) -> Result<(), Status> {
    keys::check_part("sender", sender)?;
    keys::check_part("document_id", &envelope.document_id)?;
    for r in &envelope.to {
        keys::check_part("to.organ_id", &r.organ_id)?;
    }
    Ok(())
}

impl Documents {
    /// Documents kept in `store` and under `data_dir/attachments`, relayed
    /// through `hub`. Moves what earlier versions stored differently.
    pub(crate) fn open(
        store: Store,
        data_dir: &std::path::Path,
        hub: Channel,
        limits: truc_doc::Limits,
        service: DocumentService,
        backoff: (std::time::Duration, std::time::Duration),
    ) -> std::io::Result<Arc<Documents>> {
        let next_status = store
            .last_with_prefix(keys::STATUS_QUEUE)
            .ok()
            .flatten()
            .and_then(|(k, _)| k.last_chunk::<8>().map(|b| u64::from_be_bytes(*b) + 1))
            .unwrap_or(0);
        let blobs = Blobs::open(
            &data_dir.join("attachments"),
            &data_dir.join("blobs"),
            service.max_open_attachment_files,
        )?;
        split_tracking(&store).map_err(std::io::Error::other)?;
        Ok(Arc::new(Documents {
            store,
            blobs,
            limits,
            service,
            hub,
            deliveries: Notify::new(),
            statuses: Notify::new(),
            next_status: AtomicU64::new(next_status),
            events: broadcast::channel(1024).0,
            tracking_changes: broadcast::channel(1024).0,
            watchers: Arc::default(),
            backoff,
            write_lock: tokio::sync::Mutex::new(()),
        }))
    }

    fn flush(&self) -> Result<(), Status> {
        self.store.flush().map_err(storage)
    }

    /// How many deliveries and statuses are waiting.
    pub(crate) fn queue_lengths(&self) -> (usize, usize) {
        (
            self.store.scan_prefix(keys::QUEUE).count(),
            self.store.scan_prefix(keys::STATUS_QUEUE).count(),
        )
    }

    /// SendDocument: checks, stores the attachments and the outbox entry
    /// durably, then acknowledges; delivery follows in the background.
    pub(crate) async fn send(
        &self,
        caller: &Caller,
        mut stream: Streaming<SendDocumentRequest>,
    ) -> Result<SendDocumentResponse, Status> {
        let envelope = match stream.message().await?.and_then(|m| m.part) {
            Some(send_document_request::Part::Envelope(e)) => e,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be the envelope",
                ));
            }
        };
        let from = envelope
            .from
            .as_ref()
            .map(|o| o.organ_id.as_str())
            .unwrap_or("");
        let sender = caller.may_act_for(from)?;
        truc_doc::check(&envelope, &self.limits)?;
        check_parts(sender.as_str(), &envelope)?;
        let kind = kind_of(&envelope);
        let key = keys::outbox(sender.as_str(), &envelope.document_id, kind);
        let digest = envelope_digest(&envelope);
        let mut chunks = tokio_stream::StreamExt::map(stream, |m| match m?.part {
            Some(send_document_request::Part::Chunk(c)) => Ok(c),
            _ => Err(Status::invalid_argument(
                "only chunks may follow the envelope",
            )),
        });
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
            blobs::check_only(&envelope, &mut chunks).await?;
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
        self.blobs.receive(&envelope, &mut chunks).await?;
        // The same id may have been sent concurrently: decide under the lock.
        let _guard = self.write_lock.lock().await;
        if let Some(accepted) = repeat(keys::load::<Tracking>(&self.store, &key)?)? {
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
        batch.insert(&key, prost::Message::encode_to_vec(&tracking));
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
            batch.insert(
                keys::queue(sender.as_str(), &envelope.document_id, kind, r),
                0u64.to_be_bytes(),
            );
        }
        self.store.apply(batch).map_err(storage)?;
        self.flush()?;
        self.deliveries.notify_one();
        Ok(SendDocumentResponse {
            sender: sender.to_string(),
            document_id: envelope.document_id,
            duplicate: false,
            accepted_unix_ms: accepted,
        })
    }

    /// Node.Deliver: a document relayed by the hub for one of this node's
    /// agencies. Answers once it is in the inbox on disk.
    pub(crate) async fn deliver(
        &self,
        mut stream: Streaming<RelayRequest>,
    ) -> Result<RelayResponse, Status> {
        let header = match stream.message().await?.and_then(|m| m.part) {
            Some(relay_request::Part::Header(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be the header",
                ));
            }
        };
        let mut header = header;
        let envelope = header
            .envelope
            .take()
            .ok_or_else(|| Status::invalid_argument("header.envelope is required"))?;
        truc_doc::check(&envelope, &self.limits)?;
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
            _ => Err(Status::invalid_argument(
                "only chunks may follow the header",
            )),
        });
        // Checked before the attachments stream in (early refusals), and
        // again under the lock before writing (a concurrent delivery of the
        // same document may have landed meanwhile).
        let max_history = self.service.max_history;
        if let Admission::Duplicate(arrived) =
            admit(&header, &envelope, change, existing, max_history)?
        {
            blobs::check_only(&envelope, &mut chunks).await?;
            return Ok(duplicate(arrived));
        }
        self.blobs.receive(&envelope, &mut chunks).await?;
        let _guard = self.write_lock.lock().await;
        let existing = keys::load::<InboxEntry>(&self.store, &key)?;
        let mut entry = match admit(&header, &envelope, change, existing, max_history)? {
            Admission::Duplicate(arrived) => return Ok(duplicate(arrived)),
            Admission::Store(entry) => *entry,
        };
        let mut batch = WriteBatch::default();
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
                batch.insert(keys::status(update.0), update.1);
                "change"
            }
        };
        batch.insert(&key, prost::Message::encode_to_vec(&entry));
        self.store.apply(batch).map_err(storage)?;
        self.flush()?;
        self.statuses.notify_one();
        let arrived = entry.arrived_unix_ms;
        let _ = self.events.send(InboxEvent {
            kind: kind_label.into(),
            entry: Some(entry),
        });
        Ok(RelayResponse {
            arrived_unix_ms: arrived,
            duplicate: false,
            receipt: None,
        })
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
        let _guard = self.write_lock.lock().await;
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
        self.store.apply(batch).map_err(storage)?;
        self.flush()?;
        self.statuses.notify_one();
        let _ = self.events.send(InboxEvent {
            kind: "status".into(),
            entry: Some(entry.clone()),
        });
        Ok(UpdateStatusResponse { entry: Some(entry) })
    }

    /// Node.DeliverStatus: a recipient's status arriving at the sender's
    /// node. It must come from a recipient of the document, make a transition
    /// the state machine allows (FAILED_PRECONDITION otherwise, changing
    /// nothing) and fit in the bounded history (RESOURCE_EXHAUSTED); the same
    /// event again is acknowledged and recorded once.
    pub(crate) async fn deliver_status(
        &self,
        mut update: StatusUpdate,
    ) -> Result<StatusAck, Status> {
        // Checked again here: the hub is not trusted to have done it.
        truc_doc::check_status_update(&update)?;
        keys::check_part("sender", &update.sender)?;
        keys::check_part("document_id", &update.document_id)?;
        keys::check_part("recipient", &update.recipient)?;
        let ev = update
            .event
            .take()
            .ok_or_else(|| Status::invalid_argument("event is required"))?;
        let code =
            StatusCode::parse(&ev.code).map_err(|v| Status::invalid_argument(v.to_string()))?;
        if prost::Message::encoded_len(&ev) > MAX_EVENT_BYTES {
            return Err(Status::invalid_argument(format!(
                "event: more than {MAX_EVENT_BYTES} bytes"
            )));
        }
        // A recipient sets its statuses; a 13 records the sender's own request.
        let by_ok = ev.by == update.recipient
            || (code == StatusCode::ChangeRequested && ev.by == update.sender);
        if !by_ok {
            return Err(Status::invalid_argument(format!(
                "event.by: {} did not set a status of recipient {}",
                ev.by, update.recipient
            )));
        }
        let (sender, doc, recipient) = (&update.sender, &update.document_id, &update.recipient);
        let _guard = self.write_lock.lock().await;
        let tracking = keys::load::<Tracking>(&self.store, &keys::outbox(sender, doc, 0))?
            .ok_or_else(|| Status::not_found(format!("no document {doc} sent by {sender} here")))?;
        let is_recipient = tracking
            .envelope
            .as_ref()
            .is_some_and(|e| e.to.iter().any(|o| &o.organ_id == recipient));
        let r_key = keys::recipient(sender, doc, 0, recipient);
        let record = keys::load::<RecipientTracking>(&self.store, &r_key)?;
        let mut record = match record {
            Some(r) if is_recipient => r,
            _ => {
                return Err(Status::permission_denied(format!(
                    "{recipient} is not a recipient of document {doc}"
                )));
            }
        };
        let history: Vec<StatusEvent> =
            keys::load_all(&self.store, &keys::history_of(sender, doc, recipient))?;
        let seen = history
            .iter()
            .any(|h| h.code == ev.code && h.unix_ms == ev.unix_ms && h.by == ev.by);
        if seen {
            return Ok(StatusAck { receipt: None });
        }
        let mut batch = WriteBatch::default();
        let mut events = history.len();
        let max = self.service.max_history;
        // A status proves the document arrived, even before the delivery's
        // own answer is recorded.
        let state = if record.status.is_empty() {
            if code != StatusCode::Arrived {
                if events + 2 > max {
                    return Err(history_full(max));
                }
                let arrived = StatusEvent {
                    code: StatusCode::Arrived.code().into(),
                    description: "arrived".into(),
                    unix_ms: ev.unix_ms,
                    by: recipient.clone(),
                    staff: None,
                };
                batch.insert(
                    keys::history(sender, doc, recipient, position(events)?),
                    prost::Message::encode_to_vec(&arrived),
                );
                events += 1;
            }
            None
        } else {
            Some(DocState {
                status: StatusCode::parse(&record.status).map_err(storage)?,
                change: ChangeKind::of(
                    BusinessKind::try_from(record.change).unwrap_or(BusinessKind::New),
                ),
            })
        };
        if events >= max {
            return Err(history_full(max));
        }
        let next = match (state, code) {
            (None, StatusCode::Arrived) => DocState::arrived(),
            (None, _) => self.transition(DocState::arrived(), code, &update)?,
            (Some(state), _) => self.transition(state, code, &update)?,
        };
        record.status = next.status.code().into();
        record.change = next.change.map_or(BusinessKind::New, business_kind).into();
        batch.insert(
            keys::history(sender, doc, recipient, position(events)?),
            prost::Message::encode_to_vec(&ev),
        );
        batch.insert(&r_key, prost::Message::encode_to_vec(&record));
        self.store.apply(batch).map_err(storage)?;
        self.flush()?;
        self.tracking_changed(sender, doc);
        Ok(StatusAck { receipt: None })
    }

    /// The state after `code` arrives at the sender for `update`'s recipient.
    fn transition(
        &self,
        state: DocState,
        code: StatusCode,
        update: &StatusUpdate,
    ) -> Result<DocState, Status> {
        let refused = |e: truc_doc::TransitionError| Status::failed_precondition(e.to_string());
        match code {
            StatusCode::Arrived => Err(Status::failed_precondition(format!(
                "status {} cannot go to 01: the document arrived already",
                state.status.code()
            ))),
            StatusCode::ChangeRequested => {
                // The change must be one this sender asked for.
                let kind = BusinessKind::try_from(update.change).unwrap_or(BusinessKind::New);
                let change = ChangeKind::of(kind).ok_or_else(|| {
                    Status::invalid_argument("change: a 13 names the recall, update or replace")
                })?;
                let sent = keys::outbox(&update.sender, &update.document_id, kind as i32);
                if self.store.get(&sent).map_err(storage)?.is_none() {
                    return Err(Status::failed_precondition(format!(
                        "{} sent no {} of document {}",
                        update.sender,
                        change.name(),
                        update.document_id
                    )));
                }
                state.request_change(change).map_err(refused)
            }
            _ => state.set_by_recipient(code).map_err(refused),
        }
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
        let events = self.events.subscribe();
        Ok(watch::spawn(slot, events, None, InboxFeed { recipient }))
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
        let changes = self.tracking_changes.subscribe();
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

    /// Records `envelope` as sent by `sender`, not yet delivered, as a
    /// send leaves the outbox (for tests that need a sent document).
    #[cfg(test)]
    pub(crate) fn record_sent(&self, sender: &str, envelope: Envelope) {
        let kind = envelope.business_kind;
        let mut batch = WriteBatch::default();
        for r in recipients_of(&envelope) {
            let mut record = RecipientTracking {
                recipient: r.clone(),
                ..RecipientTracking::default()
            };
            Delivery::Pending.set(&mut record);
            batch.insert(
                keys::recipient(sender, &envelope.document_id, kind, &r),
                prost::Message::encode_to_vec(&record),
            );
        }
        let tracking = Tracking {
            sender: sender.into(),
            document_id: envelope.document_id.clone(),
            envelope: Some(envelope.clone()),
            ..Tracking::default()
        };
        batch.insert(
            keys::outbox(sender, &envelope.document_id, kind),
            prost::Message::encode_to_vec(&tracking),
        );
        self.store.apply(batch).expect("apply");
    }

    /// Tells tracking watchers that a document's tracking changed (after
    /// the change is on disk).
    pub(crate) fn tracking_changed(&self, sender: &str, document_id: &str) {
        let _ = self.tracking_changes.send(TrackingChanged {
            sender: sender.to_string(),
            document_id: document_id.to_string(),
        });
    }

    /// A watcher's slot for `agency`, if both limits allow one more.
    fn watch_slot(&self, agency: &str) -> Result<watch::WatchSlot, Status> {
        watch::slot(
            &self.watchers,
            agency,
            self.service.max_watchers_per_agency,
            self.service.max_watchers,
        )
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
                    .send_chunks(&a.sha256, i as u32, &tx, |chunk| {
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
}

/// Where the next history event goes.
fn position(events: usize) -> Result<u32, Status> {
    u32::try_from(events).map_err(storage)
}

fn history_full(max: usize) -> Status {
    Status::resource_exhausted(format!(
        "the status history already holds {max} entries, the most allowed"
    ))
}

fn business_kind(change: ChangeKind) -> BusinessKind {
    match change {
        ChangeKind::Recall => BusinessKind::Recall,
        ChangeKind::Update => BusinessKind::Update,
        ChangeKind::Replace => BusinessKind::Replace,
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
fn split_tracking(store: &Store) -> Result<(), truc_store::StoreError> {
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
    use truc_proto::v1::Organ;

    use super::*;

    const S: &str = "000.00.00.H37";
    const R: &str = "000.00.00.G22";
    const DOC: &str = "000.00.00.H37,2026/11/28,1/UBND-VP";

    async fn docs_with(service: DocumentService) -> (tempfile::TempDir, Arc<Documents>) {
        let dir = tempfile::tempdir().expect("dir");
        let docs = open_in(dir.path(), service);
        (dir, docs)
    }

    /// Documents over the store in `dir`, with a hub that is never reached.
    fn open_in(dir: &std::path::Path, service: DocumentService) -> Arc<Documents> {
        let store = Store::open(&dir.join("db")).expect("store");
        let hub = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        Documents::open(
            store,
            dir,
            hub,
            truc_doc::Limits::default(),
            service,
            (Duration::from_millis(10), Duration::from_millis(100)),
        )
        .expect("open")
    }

    /// The outbox as a send of `kind` to R leaves it.
    fn sent(docs: &Documents, kind: i32) {
        let envelope = Envelope {
            to: vec![Organ {
                organ_id: R.into(),
                ..Organ::default()
            }],
            document_id: DOC.into(),
            business_kind: kind,
            ..Envelope::default()
        };
        let tracking = Tracking {
            sender: S.into(),
            document_id: DOC.into(),
            envelope: Some(envelope),
            ..Tracking::default()
        };
        let mut record = RecipientTracking {
            recipient: R.into(),
            ..RecipientTracking::default()
        };
        Delivery::Pending.set(&mut record);
        let mut b = WriteBatch::default();
        b.insert(
            keys::outbox(S, DOC, kind),
            prost::Message::encode_to_vec(&tracking),
        );
        b.insert(
            keys::recipient(S, DOC, kind, R),
            prost::Message::encode_to_vec(&record),
        );
        docs.store.apply(b).expect("apply");
    }

    fn status(code: &str, unix_ms: u64) -> StatusUpdate {
        StatusUpdate {
            transaction_id: "ab".repeat(16),
            sender: S.into(),
            document_id: DOC.into(),
            recipient: R.into(),
            event: Some(StatusEvent {
                code: code.into(),
                description: String::new(),
                unix_ms,
                by: R.into(),
                staff: None,
            }),
            change: 0,
        }
    }

    fn codes(docs: &Documents) -> (String, Vec<String>) {
        let sender = AgencyCode::parse(S).expect("code");
        let t = docs.tracking(&sender, DOC).expect("tracking");
        let r = &t.recipients[0];
        (
            r.status.clone(),
            r.history.iter().map(|h| h.code.clone()).collect(),
        )
    }

    #[tokio::test]
    async fn statuses_at_the_sender_follow_the_state_machine_once_each() {
        let (_dir, docs) = docs_with(DocumentService::default()).await;
        sent(&docs, 0);
        // 01 → 05 is not a transition.
        let e = docs
            .deliver_status(status("05", 1))
            .await
            .expect_err("01 → 05");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        // A status before the delivery's answer implies the arrival.
        docs.deliver_status(status("03", 2)).await.expect("03");
        docs.deliver_status(status("03", 2))
            .await
            .expect("the same event again is acknowledged");
        assert_eq!(codes(&docs), ("03".into(), vec!["01".into(), "03".into()]));
        let e = docs
            .deliver_status(status("02", 3))
            .await
            .expect_err("03 → 02");
        assert_eq!(e.code(), Code::FailedPrecondition);
        let e = docs
            .deliver_status(status("99", 3))
            .await
            .expect_err("unknown");
        assert_eq!(e.code(), Code::InvalidArgument);
        // A 13 needs the change the sender really sent.
        let mut recall = status("13", 4);
        if let Some(ev) = recall.event.as_mut() {
            ev.by = S.into();
        }
        recall.change = BusinessKind::Recall as i32;
        let e = docs
            .deliver_status(recall.clone())
            .await
            .expect_err("no recall sent");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        sent(&docs, BusinessKind::Recall as i32);
        docs.deliver_status(recall).await.expect("13");
        docs.deliver_status(status("15", 5)).await.expect("15");
        let e = docs
            .deliver_status(status("04", 6))
            .await
            .expect_err("withdrawn");
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert_eq!(
            codes(&docs),
            (
                "15".into(),
                vec!["01".into(), "03".into(), "13".into(), "15".into()]
            )
        );
    }

    #[tokio::test]
    async fn statuses_come_only_from_a_recipient_of_the_document() {
        let (_dir, docs) = docs_with(DocumentService::default()).await;
        sent(&docs, 0);
        let mut other = status("03", 1);
        other.recipient = "000.01.37.H37".into();
        if let Some(ev) = other.event.as_mut() {
            ev.by = other.recipient.clone();
        }
        let e = docs
            .deliver_status(other)
            .await
            .expect_err("not a recipient");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let mut forged = status("03", 1);
        if let Some(ev) = forged.event.as_mut() {
            ev.by = "000.00.00.H41".into();
        }
        let e = docs
            .deliver_status(forged)
            .await
            .expect_err("set by another");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let mut unknown = status("03", 1);
        unknown.document_id = "000.00.00.H37,2026/11/28,2/UBND-VP".into();
        let e = docs
            .deliver_status(unknown)
            .await
            .expect_err("no such document");
        assert_eq!(e.code(), Code::NotFound);
        let mut nul = status("03", 1);
        nul.document_id = "a\0b".into();
        let e = docs.deliver_status(nul).await.expect_err("NUL");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(codes(&docs), (String::new(), vec![]));
    }

    #[tokio::test]
    async fn the_history_at_the_sender_is_bounded() {
        let (_dir, docs) = docs_with(DocumentService {
            max_history: 3,
            ..DocumentService::default()
        })
        .await;
        sent(&docs, 0);
        docs.deliver_status(status("03", 1)).await.expect("01, 03");
        docs.deliver_status(status("04", 2)).await.expect("04");
        let e = docs
            .deliver_status(status("05", 3))
            .await
            .expect_err("full");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert_eq!(codes(&docs).1.len(), 3);
    }

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
            docs.events
                .send(InboxEvent {
                    kind: "arrived".into(),
                    entry: Some(entry),
                })
                .expect("subscribed");
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
}
