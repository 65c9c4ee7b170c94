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
//! (`doc/h/`); a small attachment is a value of its own (`doc/b/`, in the
//! commit of the document that carries it), any other a file in a directory
//! of our own.
//!
//! Files: `outbox` (send and tracking at the sender), `inbox` (deliver,
//! list, watch, fetch and status updates at the recipient), `status`
//! (statuses arriving at the sender), `worker` (delivery and status
//! retries), `blobs`, `keys`, `watch`; this file holds what they share.

mod blobs;
mod delivery;
mod inbox;
mod keys;
mod outbox;
mod status;
#[cfg(test)]
mod testing;
mod watch;
mod worker;

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize},
    },
};

use tonic::Status;
use truc_doc::{ChangeKind, StatusCode};
use truc_pki::Identity;
use truc_proto::v1::{BusinessKind, Envelope, InboxEvent, StatusEvent};
use truc_registry::{AgencyCode, NodeId};
use truc_store::{GroupFlush, Store, WriteBatch};

use self::{blobs::Blobs, keys::storage, outbox::split_tracking};
#[cfg(test)]
pub(crate) use self::{
    blobs::{INLINE_MAX, INLINE_PER_DOCUMENT},
    keys::blob as blob_key,
};
use crate::config::DocumentService;
pub(crate) use delivery::Delivery;
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
    hub: crate::hubs::Hubs,
    /// Wakes the delivery worker.
    /// Keys of delivery queue entries just written, for its scheduler.
    queued: Written,
    /// Wakes the status worker.
    /// The same for the status queue.
    status_queued: Written,
    next_status: AtomicU64,
    /// Inbox changes, by recipient agency, for `WatchInbox`.
    events: watch::Channels<InboxEvent>,
    /// Tracking changes, for `WatchTracking`.
    tracking_changes: watch::Channels<TrackingChanged>,
    /// Subscribers of `WatchInbox` and `WatchTracking`.
    watchers: Arc<Mutex<watch::Watchers>>,
    /// Retry delays: the first, and the cap.
    pub(crate) backoff: (std::time::Duration, std::time::Duration),
    /// Held while an outbox, tracking or inbox entry is read, checked,
    /// changed and written back: deliveries to several recipients of one
    /// document finish concurrently, a retried delivery can overlap the
    /// first, and a status can be set while a change arrives.
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    /// Makes the documents' writes durable, one flush for every write made
    /// while the one before ran (see [`GroupFlush`]).
    pub(super) flusher: GroupFlush,
}

use truc_ops::now_ms;

/// Keys of a queue's entries as they are written, for the one scheduler of
/// that queue, which takes the receiving end when it starts.
pub(crate) struct Written {
    tx: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>>>,
    /// How many entries the scheduler holds, once it has read the queue
    /// ([`NOT_COUNTED`] until then).
    pub(crate) waiting: Arc<AtomicUsize>,
}

/// A queue no scheduler has counted yet.
pub(crate) const NOT_COUNTED: usize = usize::MAX;

impl Written {
    fn new() -> Written {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Written {
            tx,
            rx: Mutex::new(Some(rx)),
            waiting: Arc::new(AtomicUsize::new(NOT_COUNTED)),
        }
    }

    /// The entries waiting: as the scheduler counts them in memory, or,
    /// with no scheduler running, read from the store under `prefix`.
    fn waiting(&self, store: &Store, prefix: &[u8]) -> usize {
        match self.waiting.load(std::sync::atomic::Ordering::Relaxed) {
            NOT_COUNTED => store.scan_prefix(prefix).count(),
            n => n,
        }
    }

    /// Tells the scheduler that entry `key` was written (after it is durable).
    fn send(&self, key: Vec<u8>) {
        let _ = self.tx.send(key);
    }

    /// The receiving end, the first time only.
    pub(crate) fn take(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>> {
        self.rx.lock().ok()?.take()
    }
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

/// The envelope's rules and, when it carries kept edXML content (a
/// signature, unknown elements), that writing that content into a package
/// changes none of the envelope's fields: it comes from another participant
/// and ends up in a recipient's package.
fn check_envelope(envelope: &Envelope, limits: &truc_doc::Limits) -> Result<(), Status> {
    truc_doc::check(envelope, limits)?;
    truc_edxml::check_preserved(envelope)
        .map_err(|e| Status::from(truc_doc::Error::Invalid(e.violations().to_vec())))?;
    Ok(())
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
        hub: crate::hubs::Hubs,
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
            store.clone(),
            &data_dir.join("attachments"),
            &data_dir.join("blobs"),
            service.max_open_attachment_files,
        )?;
        split_tracking(&store).map_err(std::io::Error::other)?;
        let flusher = {
            let store = store.clone();
            GroupFlush::start("truc-docs-flush", Box::new(move || store.flush()))?
        };
        Ok(Arc::new(Documents {
            store,
            blobs,
            limits,
            service,
            hub,
            queued: Written::new(),
            status_queued: Written::new(),
            next_status: AtomicU64::new(next_status),
            events: watch::Channels::new(),
            tracking_changes: watch::Channels::new(),
            watchers: Arc::default(),
            backoff,
            write_lock: tokio::sync::Mutex::new(()),
            flusher,
        }))
    }

    /// Writes `batch`, decided under `guard` (the write lock), lets go of
    /// the lock, and waits until the batch is durable: the next writer
    /// decides and writes while this one's flush runs, and is flushed with
    /// the others that come meanwhile.
    async fn commit(
        &self,
        guard: tokio::sync::MutexGuard<'_, ()>,
        batch: WriteBatch,
    ) -> Result<(), Status> {
        self.store
            .apply_journaled(keys::JOURNAL, batch)
            .map_err(storage)?;
        self.flusher.wrote();
        drop(guard);
        self.durable().await
    }

    /// Writes `value` at `key` (a key no other writer decides on) and waits
    /// until it is durable, in a shared flush.
    pub(crate) async fn insert_durably(&self, key: &[u8], value: &[u8]) -> Result<(), Status> {
        self.store.insert(key, value).map_err(storage)?;
        self.flusher.wrote();
        self.durable().await
    }

    /// Waits until every write made so far under the write lock is durable.
    async fn durable(&self) -> Result<(), Status> {
        self.flusher.durable().await.map_err(storage)
    }

    /// Before an answer (or a relay) from what was read: what it read may
    /// have been written but not yet flushed. The lock, taken once, lets
    /// any writer still between its write and its count finish.
    pub(crate) async fn settled(&self) -> Result<(), Status> {
        drop(self.write_lock.lock().await);
        self.durable().await
    }

    /// The inbox entry of document `document_id` from `sender` at `recipient`.
    pub(crate) fn inbox_entry(
        &self,
        recipient: &AgencyCode,
        sender: &str,
        document_id: &str,
    ) -> Result<Option<truc_proto::v1::InboxEntry>, Status> {
        keys::check_part("sender", sender)?;
        keys::check_part("document_id", document_id)?;
        keys::load(
            &self.store,
            &keys::inbox(recipient.as_str(), sender, document_id),
        )
    }

    /// The trackings of the (new) documents `sender` sent, at most `max`,
    /// oldest key first.
    pub(crate) fn sent_by(
        &self,
        sender: &AgencyCode,
        max: usize,
    ) -> Result<Vec<truc_proto::v1::Tracking>, Status> {
        let mut out = Vec::new();
        for item in self.store.scan_prefix(&keys::outbox_of(sender.as_str())) {
            let (k, v) = item.map_err(storage)?;
            if k.last() != Some(&b'0') {
                continue;
            }
            let Ok(t) = <truc_proto::v1::Tracking as prost::Message>::decode(v.as_slice()) else {
                tracing::error!(key = %hex::encode(&k), "undecodable outbox entry skipped");
                continue;
            };
            out.push(self.tracking(sender, &t.document_id)?);
            if out.len() == max {
                break;
            }
        }
        Ok(out)
    }

    /// The node's store (the VXP API keeps its receipts there).
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Reads a stored attachment (blocking).
    pub(crate) fn read_attachment(
        &self,
        a: &truc_proto::v1::Attachment,
    ) -> std::io::Result<Box<dyn std::io::Read>> {
        self.blobs.read_sync(a)
    }

    /// How many deliveries and statuses are waiting: counted in memory by
    /// their schedulers once they run (a scrape never reads a backlog from
    /// the store), read from the store before.
    pub(crate) fn queue_lengths(&self) -> (usize, usize) {
        (
            self.queued.waiting(&self.store, keys::QUEUE),
            self.status_queued.waiting(&self.store, keys::STATUS_QUEUE),
        )
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
