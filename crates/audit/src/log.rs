//! Appending records with group commit.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    thread,
};

use bytes::Bytes;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use truc_proto::{now_ms, v1::SignedTreeHead};
use truc_store::{Store, WriteBatch};

use crate::ids::IdFilter;
use crate::index::{Runs, ensure_party_index};
use crate::{
    AuditError, AuditRecord, CHUNK_PREFIX, CountKey, HEAD_PREFIX, NODE_PREFIX, RECORD_VERSION,
    Receipt, TX_PREFIX, Zone,
    counts::Stats,
    merkle::{Frontier, Hash, leaf_hash},
    sha256,
    sth::Signer,
};

/// What kind of transaction a record is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A data call routed to a provider's service.
    #[default]
    Call,
    /// A document relayed to one recipient.
    Document,
    /// A status relayed back to a document's sender.
    Status,
}

impl Kind {
    /// The name stored in records and statistics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::Document => "document",
            Kind::Status => "status",
        }
    }

    /// The kind of a stored name.
    pub fn parse(name: &str) -> Option<Kind> {
        [Kind::Call, Kind::Document, Kind::Status]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// A completed transaction, as its process saw it.
#[derive(Clone, Debug, Default)]
pub struct Transaction {
    /// Transaction id assigned by the client's node.
    pub transaction_id: String,
    /// Transaction kind.
    pub kind: Kind,
    /// Client agency code.
    pub client_agency: String,
    /// Provider agency code.
    pub provider_agency: String,
    /// Service id.
    pub service: String,
    /// Start, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// End, in milliseconds since the Unix epoch.
    pub finished_unix_ms: u64,
    /// Request payload size.
    pub request_bytes: u64,
    /// Response payload size (0 on error).
    pub response_bytes: u64,
    /// SHA-256 of the request payload.
    pub request_sha256: [u8; 32],
    /// SHA-256 of the response payload (of nothing, on error).
    pub response_sha256: [u8; 32],
    /// gRPC code name of the outcome.
    pub outcome: String,
    /// Time spent, in microseconds.
    pub latency_us: u64,
    /// The hub's receipt, on a node.
    pub receipt: Option<Receipt>,
    /// Whether the receipt's tree head verified with the hub's key.
    pub receipt_verified: bool,
    /// Who sent the request, from its certificate (the calling node on the
    /// hub); never from a request field.
    pub caller: String,
    /// Why a data call was made: its purpose (empty when not given).
    pub purpose: String,
    /// The end user on whose behalf, as given or as a keyed hash.
    pub end_user: String,
    /// Whether `end_user` is a keyed hash (lowercase hex HMAC-SHA256).
    pub end_user_hashed: bool,
    /// The case or file number.
    pub case: String,
}

impl Transaction {
    /// A data call from `client` to `service` of `provider`, started at
    /// `started_unix_ms` with `request` as its payload.
    pub fn call(
        transaction_id: &str,
        client: &str,
        provider: &str,
        service: &str,
        request: &[u8],
        started_unix_ms: u64,
    ) -> Transaction {
        Transaction {
            transaction_id: transaction_id.to_string(),
            kind: Kind::Call,
            client_agency: client.to_string(),
            provider_agency: provider.to_string(),
            service: service.to_string(),
            started_unix_ms,
            request_bytes: request.len() as u64,
            request_sha256: sha256(request),
            ..Transaction::default()
        }
    }

    /// Completes the transaction: its outcome (a gRPC code name), the
    /// response payload (empty on error), when it ended and how long it took.
    pub fn finish(
        mut self,
        outcome: &str,
        response: &[u8],
        finished_unix_ms: u64,
        latency: std::time::Duration,
    ) -> Transaction {
        self.outcome = outcome.to_string();
        self.response_bytes = response.len() as u64;
        self.response_sha256 = sha256(response);
        self.finished_unix_ms = finished_unix_ms;
        self.latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self
    }
}

/// Where a record landed.
#[derive(Clone, Debug, PartialEq)]
pub struct Appended {
    /// Leaf index in the log's Merkle tree.
    pub index: u64,
    /// Leaf hash: SHA-256(0x00 || stored record).
    pub leaf_hash: Hash,
    /// The stored record, as receipts carry it.
    pub record: Bytes,
    /// The signed head of the tree that first included the record (on a
    /// log with a signing key).
    pub tree_head: Option<SignedTreeHead>,
    /// The record's audit path in `tree_head`'s tree, bottom-up.
    pub inclusion_path: Option<Vec<Hash>>,
}

/// How the log commits.
#[derive(Clone, Debug)]
pub struct Options {
    /// Flush (and `fdatasync`) before acknowledging. Off only for benchmarks
    /// that measure what durability costs.
    pub durable: bool,
    /// Most records committed by one flush.
    pub max_group: usize,
    /// The time zone days are cut in (default Asia/Ho_Chi_Minh, +07:00).
    /// Fixed for a log once it has been opened.
    pub time_zone: Zone,
    /// Most transaction ids a hub's filter of recorded ids holds before it
    /// answers "may hold" more often (see [`crate::ids`]; default
    /// [`crate::DEFAULT_ID_FILTER_IDS`]). 0: no filter, every id is looked
    /// up in the store. A node's log keeps no filter.
    pub id_filter_ids: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durable: true,
            max_group: 1024,
            time_zone: Zone::default(),
            id_filter_ids: crate::DEFAULT_ID_FILTER_IDS,
        }
    }
}

// Nearly every job is an append: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Job {
    Append {
        tx: Transaction,
        reply: oneshot::Sender<Result<Appended, AuditError>>,
    },
    /// Commit what is queued, flush, and stop the writer.
    Close { done: oneshot::Sender<()> },
    /// Commit what is queued, then run this before the next commit.
    Between(Box<dyn FnOnce() + Send>),
}

/// The audit log of one process. Cheap to clone; one writer thread behind it.
#[derive(Clone)]
pub struct AuditLog {
    jobs: mpsc::Sender<Job>,
    reader: LogReader,
    committed: tokio::sync::broadcast::Sender<Arc<(u64, AuditRecord)>>,
}

/// Read access to a log while it is being written: proofs and records up
/// to the committed size.
#[derive(Clone)]
pub struct LogReader {
    pub(crate) store: Store,
    flush_failures: Arc<AtomicU64>,
    /// Set once a commit failed: the writer acknowledges nothing more.
    stopped: Arc<std::sync::atomic::AtomicBool>,
    size: Arc<AtomicU64>,
    latest_head: Arc<RwLock<Option<SignedTreeHead>>>,
    /// The ids the log may hold (a hub's log being written; see [`crate::ids`]).
    ids: Option<Arc<IdFilter>>,
}

impl LogReader {
    /// A reader of a log that is not being written (offline tools).
    pub fn offline(store: Store) -> Result<LogReader, AuditError> {
        let size = crate::records::stored_size(&store)?;
        let latest = match store.last_with_prefix(HEAD_PREFIX)? {
            Some((key, value)) => Some(decode_head(&key, &value)?),
            None => None,
        };
        Ok(LogReader {
            store,
            flush_failures: Arc::new(AtomicU64::new(0)),
            stopped: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            size: Arc::new(AtomicU64::new(size)),
            latest_head: Arc::new(RwLock::new(latest)),
            ids: None,
        })
    }

    /// `false` only when the log's filter of ids says no record carries
    /// `id`; without a filter, `true`.
    pub(crate) fn may_hold_id(&self, id: &[u8]) -> bool {
        self.ids.as_ref().is_none_or(|f| f.may_hold(id))
    }

    /// Waits until the ids of earlier runs are in the log's filter of ids,
    /// and says whether it answers for new ids without the store (tests and
    /// benches; a log without a filter answers `false` at once).
    pub fn wait_for_id_filter(&self) -> bool {
        self.ids.as_ref().is_some_and(|f| f.wait_filled())
    }

    /// Commits whose flush failed since the process started.
    pub fn flush_failures(&self) -> u64 {
        self.flush_failures.load(Ordering::Relaxed)
    }

    /// Whether the writer has stopped acknowledging after a failed commit
    /// (the process must be restarted).
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Records committed so far.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// The latest signed tree head.
    pub fn latest_head(&self) -> Option<SignedTreeHead> {
        self.latest_head.read().ok().and_then(|h| h.clone())
    }

    /// The store behind the log.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl AuditLog {
    /// Opens the log kept in `store`, written by `recorded_by` (`hub` or a
    /// node id), and starts its writer thread. With a `signer`, every commit
    /// also signs and stores a tree head.
    pub fn open(
        store: Store,
        recorded_by: &str,
        options: Options,
        signer: Option<Signer>,
    ) -> Result<AuditLog, AuditError> {
        Self::open_with(store, recorded_by, options, signer, Box::new(Store::flush))
    }

    /// [`AuditLog::open`] with the durable flush given, so that tests can
    /// make it fail.
    pub(crate) fn open_with(
        store: Store,
        recorded_by: &str,
        options: Options,
        signer: Option<Signer>,
        flush: FlushFn,
    ) -> Result<AuditLog, AuditError> {
        let mut reader = LogReader::offline(store.clone())?;
        let size = reader.size();
        match stored_zone(&store)? {
            Some(z) if !z.cuts_like(&options.time_zone) => {
                return Err(AuditError::TimeZone {
                    stored: z.name().to_string(),
                    configured: options.time_zone.name().to_string(),
                });
            }
            Some(_) => {}
            None => {
                store.insert(TZ_NAME_KEY, options.time_zone.name().as_bytes())?;
                store.flush()?;
            }
        }
        // Counters of an earlier build get their latency sketches now, once,
        // before the writer adds to them.
        crate::counts::migrate_earlier_formats(&store, &options.time_zone)?;
        // Only a log that signs heads (the hub's) keeps the Merkle tree and
        // the transaction index that proofs need; a node's log is a hash
        // chain whose integrity its hub receipts anchor.
        let frontier = match signer {
            Some(_) => Some(Frontier::restore(size, &mut |level, index| {
                read_node(&store, level, index)
            })?),
            None => None,
        };
        // Records written before the party index existed are indexed now,
        // once, before the writer adds any.
        if frontier.is_some() {
            ensure_party_index(&store)?;
        }
        // The hub refuses ids it has recorded: a filter of them spares the
        // store a lookup per call.
        let most = options.id_filter_ids;
        let ids = frontier.as_ref().filter(|_| most > 0).map(|_| {
            Arc::new(IdFilter::new(
                crate::ids::FIRST_CAPACITY.min(most),
                most,
                crate::ids::random_seed(),
            ))
        });
        reader.ids = ids.clone();
        let prev_hash = match size {
            0 => [0; 32],
            n => match crate::records::read(&store, n - 1)? {
                Some(r) => leaf_hash(&r.bytes),
                None => read_node(&store, 0, n - 1)?,
            },
        };
        let (jobs, rx) = mpsc::channel(options.max_group.max(1) * 4);
        let committed = tokio::sync::broadcast::channel(4096).0;
        let writer = Writer {
            store: store.clone(),
            counters: HashMap::new(),
            recorded_by: recorded_by.to_string(),
            options,
            next: size,
            frontier,
            prev_hash,
            signer,
            reader: reader.clone(),
            committed: committed.clone(),
            flush,
        };
        thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::Corrupt {
                key: String::new(),
                reason: format!("cannot start the writer thread: {e}"),
            })?;
        // After the writer: it adds the ids it commits from its first group,
        // the filling those recorded before (an id both reach is added twice).
        if let Some(ids) = ids {
            let store = store.clone();
            let filling = Arc::clone(&ids);
            if let Err(e) = thread::Builder::new()
                .name("audit-id-filter".into())
                .spawn(move || {
                    // A panic must still end the filling, or closing the
                    // log would wait for it forever.
                    let filled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        filling.fill(&store)
                    }));
                    if filled.is_err() {
                        filling.finish(false);
                    }
                })
            {
                tracing::warn!(error = %e, "cannot start filling the filter of transaction ids; every id is looked up in the log");
                ids.finish(false);
            }
        }
        Ok(AuditLog {
            jobs,
            reader,
            committed,
        })
    }

    /// Every record from now on, once it is durable (a slow subscriber
    /// misses records and is told how many).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<(u64, AuditRecord)>> {
        self.committed.subscribe()
    }

    /// Reads the store between two commits (so that it holds exactly the
    /// committed records and their counters) and subscribes at that point:
    /// the subscription delivers every record the read did not see, and no
    /// other. Appends wait while `read` runs: keep it short.
    pub async fn read_and_subscribe<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<(T, tokio::sync::broadcast::Receiver<Arc<(u64, AuditRecord)>>), AuditError> {
        let (reply, rx) = oneshot::channel();
        let store = self.reader.store.clone();
        let committed = self.committed.clone();
        let job = Job::Between(Box::new(move || {
            let receiver = committed.subscribe();
            let _ = reply.send((read(&store), receiver));
        }));
        self.jobs.send(job).await.map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)
    }

    /// Read access to the log.
    pub fn reader(&self) -> &LogReader {
        &self.reader
    }

    /// Appends a record and waits until it (and its counter) is durable.
    ///
    /// The record is queued at the first poll whenever the queue has room
    /// (it nearly always has): a caller that is dropped after that, as the
    /// gRPC server drops a handler whose caller's deadline passed, no
    /// longer waits for it, but the record is still written.
    pub async fn append(&self, tx: Transaction) -> Result<Appended, AuditError> {
        let (reply, rx) = oneshot::channel();
        match self.jobs.try_send(Job::Append { tx, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                self.jobs.send(job).await.map_err(|_| AuditError::Closed)?;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(AuditError::Closed),
        }
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Commits what is queued, flushes, and stops the writer thread, so that
    /// the log's hold on the store ends now rather than when the last clone
    /// is dropped. Appends after this fail with [`AuditError::Closed`].
    pub async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.jobs.send(Job::Close { done }).await.is_ok() {
            // An error means the writer is already gone.
            let _ = rx.await;
        }
    }

    /// The store behind the log.
    pub fn store(&self) -> &Store {
        &self.reader.store
    }
}

type Pending = (Transaction, oneshot::Sender<Result<Appended, AuditError>>);

/// The name of the writer's journal in the store ([`Store::apply_journaled`]).
const JOURNAL: &[u8] = b"audit";

/// The durable flush of the store.
pub(crate) type FlushFn = Box<dyn FnMut(&Store) -> Result<(), truc_store::StoreError> + Send>;

struct Writer {
    store: Store,
    /// Counter values as last written, to spare a read per group.
    counters: HashMap<Vec<u8>, Stats>,
    recorded_by: String,
    options: Options,
    /// Index of the next record.
    next: u64,
    /// The right edge of the Merkle tree of committed records (hub only).
    frontier: Option<Frontier>,
    /// Leaf hash of the last committed record.
    prev_hash: Hash,
    signer: Option<Signer>,
    reader: LogReader,
    committed: tokio::sync::broadcast::Sender<Arc<(u64, AuditRecord)>>,
    flush: FlushFn,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut group = Vec::with_capacity(self.options.max_group);
        let mut closing = None;
        while closing.is_none() {
            let Some(job) = rx.blocking_recv() else { break };
            let mut next = Some(job);
            let mut between = None;
            while let Some(job) = next.take() {
                match job {
                    Job::Append { tx, reply } => group.push((tx, reply)),
                    Job::Close { done } => {
                        closing = Some(done);
                        break;
                    }
                    Job::Between(run) => {
                        between = Some(run);
                        break;
                    }
                }
                if group.len() < self.options.max_group {
                    next = rx.try_recv().ok();
                }
            }
            if !group.is_empty() {
                let results = self.commit(&group);
                for ((_, reply), result) in group.drain(..).zip(results) {
                    // The caller may have given up waiting; the record stays.
                    let _ = reply.send(result);
                }
            }
            if let Some(run) = between {
                run();
            }
        }
        if let Some(ids) = &self.reader.ids {
            ids.stop_filling();
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "final flush of the audit log failed");
        }
        // Drop the store before saying so: the caller may reopen it.
        drop(self);
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// Writes a group in one atomic batch and one flush; one result per job.
    fn commit(&mut self, group: &[Pending]) -> Vec<Result<Appended, AuditError>> {
        if self.reader.stopped() {
            return group.iter().map(|_| Err(AuditError::Stopped)).collect();
        }
        let mut batch = WriteBatch::default();
        let mut deltas: BTreeMap<Vec<u8>, Stats> = BTreeMap::new();
        // Work on copies: nothing changes unless the batch is applied.
        let mut frontier = self.frontier.clone();
        let mut next = self.next;
        let mut prev_hash = self.prev_hash;
        let mut appended = Vec::with_capacity(group.len());
        let mut records = Vec::with_capacity(group.len());
        let mut ids = std::collections::HashSet::new();
        // The Merkle nodes this group completes, for its receipts' proofs.
        let mut fresh = HashMap::new();
        let mut runs = Runs::default();
        let mut chunks = NodeChunks::default();
        let mut stored = crate::records::GroupWriter::default();
        let first = next;
        for (tx, _) in group {
            let index = next;
            next += 1;
            let record = to_record(tx, index, prev_hash, &self.recorded_by);
            let bytes = Bytes::from(record.encode_to_vec());
            records.push((index, record));
            let leaf = leaf_hash(&bytes);
            stored.push(&mut batch, index, &bytes);
            if let Some(frontier) = frontier.as_mut() {
                let completed = frontier.push(leaf);
                chunks.push(&mut batch, index, &completed);
                for (level, at, hash) in completed {
                    fresh.insert((level, at), hash);
                }
                // The index keeps the first record of an id: a later one
                // (refused upstream, or a bug) can never redirect proofs.
                if !tx.transaction_id.is_empty() && ids.insert(tx.transaction_id.as_str()) {
                    let id = tx.transaction_id.as_bytes();
                    let indexed = match &self.reader.ids {
                        Some(filter) if !filter.may_hold(id) => Ok(None),
                        _ => self.store.get(tx_key(&tx.transaction_id)),
                    };
                    match indexed {
                        Ok(None) => {
                            // Into the filter before the commit, so that no
                            // call after it can miss the id.
                            if let Some(filter) = &self.reader.ids {
                                filter.insert(id);
                            }
                            batch.insert(tx_key(&tx.transaction_id), index.to_be_bytes())
                        }
                        Ok(Some(_)) => tracing::warn!(
                            tx = %tx.transaction_id,
                            index,
                            "a second record of a transaction id; the index keeps the first"
                        ),
                        Err(e) => return self.fail_all(group.len(), &e),
                    }
                }
            }
            // The party index, beside the tree (hub only).
            if frontier.is_some() {
                runs.add(&tx.client_agency, &tx.provider_agency, index);
            }
            deltas
                .entry(count_key(tx, &self.options.time_zone).encode())
                .or_default()
                .add(&Stats::one(
                    tx.request_bytes,
                    tx.response_bytes,
                    tx.latency_us,
                ));
            appended.push(Appended {
                index,
                leaf_hash: leaf,
                record: bytes,
                tree_head: None,
                inclusion_path: None,
            });
            prev_hash = leaf;
        }
        stored.finish(&mut batch);
        chunks.finish(&mut batch);
        runs.write(&mut batch);
        // The writer is the only one to touch counters, so reading them here
        // (from its cache, or the store) and writing them in the same batch
        // is race free. A counter leaves the cache while the group is built
        // and goes back once the batch is applied: if it is not, the cache
        // has lost nothing the store does not hold.
        let mut updated = Vec::with_capacity(deltas.len());
        for (key, delta) in deltas {
            let mut value = match self.counters.remove(&key) {
                Some(v) => v,
                None => match self.store.get(&key) {
                    Ok(v) => v.and_then(|v| Stats::decode(&v)).unwrap_or_default(),
                    Err(e) => return self.fail_all(group.len(), &e),
                },
            };
            value.add(&delta);
            batch.insert(&key, value.encode());
            updated.push((key, value));
        }
        // One signed head per commit, stored with the records it covers.
        let head = self
            .signer
            .as_ref()
            .zip(frontier.as_ref())
            .map(|(signer, frontier)| {
                let head = signer.sign(frontier.size(), &frontier.root(), now_ms());
                batch.insert(head_key(head.tree_size), head.encode_to_vec());
                head
            });
        // Each receipt carries its record's audit path in that head's tree:
        // the group's own nodes are at hand, and the older ones it needs are
        // those of the frontier before the group (the store is only a
        // fallback, never reached while that holds).
        if let Some(head) = &head {
            let before: HashMap<(u8, u64), Hash> = self
                .frontier
                .iter()
                .flat_map(|f| f.subtrees())
                .map(|(level, at, hash)| ((level, at), hash))
                .collect();
            let paths =
                crate::proofs::group_paths(first, head.tree_size, &fresh, &mut |level, at| {
                    match before.get(&(level, at)) {
                        Some(hash) => Ok(*hash),
                        None => read_node(&self.store, level, at),
                    }
                });
            match paths {
                Ok(paths) => {
                    for (a, path) in appended.iter_mut().zip(paths) {
                        a.inclusion_path = Some(path);
                    }
                }
                // A Merkle node of its own that the log cannot read: stop as
                // after a failed write (nothing of the group is applied).
                Err(e) => return self.fail_all(group.len(), &e),
            }
        }
        // Journaled: sled's atomic batch costs a log buffer written and
        // waited for per commit (ADR 0022); only this thread writes the
        // log's keys.
        if let Err(e) = self.store.apply_journaled(JOURNAL, batch) {
            return self.fail_all(group.len(), &e);
        }
        // Applied: later records build on these whatever the flush says.
        self.frontier = frontier;
        self.next = next;
        self.prev_hash = prev_hash;
        if self.counters.len() > 100_000 {
            // Counters of past days are seldom touched again.
            self.counters.clear();
        }
        self.counters.extend(updated);
        if self.options.durable {
            if let Err(e) = (self.flush)(&self.store) {
                tracing::error!(error = %e, "audit flush failed; transactions not acknowledged");
                self.reader.flush_failures.fetch_add(1, Ordering::Relaxed);
                return self.fail_all(group.len(), &e);
            }
        }
        // Readers see the new size only once it is durable.
        self.reader.size.store(self.next, Ordering::Release);
        if self.committed.receiver_count() > 0 {
            for r in records {
                let _ = self.committed.send(Arc::new(r));
            }
        }
        if let Some(head) = &head {
            if let Ok(mut latest) = self.reader.latest_head.write() {
                *latest = Some(head.clone());
            }
        }
        appended
            .into_iter()
            .map(|mut a| {
                a.tree_head = head.clone();
                Ok(a)
            })
            .collect()
    }
}

impl Writer {
    /// Fails a whole group and stops the writer: after a failed write or
    /// flush, what is on disk is unknown until the process restarts and
    /// reads it back, so nothing more may be acknowledged.
    fn fail_all(&self, n: usize, e: &dyn std::fmt::Display) -> Vec<Result<Appended, AuditError>> {
        tracing::error!(error = %e, "audit commit failed; the log acknowledges nothing more until restarted");
        self.reader.stopped.store(true, Ordering::Release);
        fail_all(n, e)
    }
}

fn fail_all(n: usize, e: &dyn std::fmt::Display) -> Vec<Result<Appended, AuditError>> {
    (0..n)
        .map(|_| {
            Err(AuditError::Corrupt {
                key: String::new(),
                reason: format!("commit failed: {e}"),
            })
        })
        .collect()
}

fn to_record(tx: &Transaction, index: u64, prev_hash: Hash, by: &str) -> AuditRecord {
    AuditRecord {
        version: RECORD_VERSION,
        index,
        prev_hash: Bytes::copy_from_slice(&prev_hash),
        transaction_id: tx.transaction_id.clone(),
        kind: tx.kind.as_str().to_string(),
        client_agency: tx.client_agency.clone(),
        provider_agency: tx.provider_agency.clone(),
        service: tx.service.clone(),
        started_unix_ms: tx.started_unix_ms,
        finished_unix_ms: tx.finished_unix_ms,
        request_bytes: tx.request_bytes,
        response_bytes: tx.response_bytes,
        request_sha256: Bytes::copy_from_slice(&tx.request_sha256),
        response_sha256: Bytes::copy_from_slice(&tx.response_sha256),
        outcome: tx.outcome.clone(),
        latency_us: tx.latency_us,
        recorded_by: by.to_string(),
        receipt: tx.receipt.clone(),
        receipt_verified: tx.receipt_verified,
        caller: tx.caller.clone(),
        purpose: tx.purpose.clone(),
        end_user: tx.end_user.clone(),
        case: tx.case.clone(),
        end_user_hashed: tx.end_user_hashed,
    }
}

fn count_key(tx: &Transaction, zone: &Zone) -> CountKey {
    CountKey::new(
        &zone.day(tx.finished_unix_ms),
        &tx.client_agency,
        &tx.provider_agency,
        &tx.service,
        tx.kind.as_str(),
        &tx.outcome,
    )
}

pub(crate) fn decode_record(key: &[u8], value: &[u8]) -> Result<AuditRecord, AuditError> {
    AuditRecord::decode(value).map_err(|e| AuditError::Corrupt {
        key: hex::encode(key),
        reason: format!("undecodable record: {e}"),
    })
}

/// Every stored record from `from` on, in order, with its leaf hash.
pub fn read_records(
    store: &Store,
    from: u64,
) -> impl Iterator<Item = Result<(AuditRecord, [u8; 32]), AuditError>> + use<> {
    crate::records::scan(store, from).map(|r| {
        let r = r?;
        let record = decode_record(&r.key, &r.bytes)?;
        Ok((record, leaf_hash(&r.bytes)))
    })
}

pub(crate) fn node_key(level: u8, index: u64) -> Vec<u8> {
    let mut key = NODE_PREFIX.to_vec();
    key.push(level);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

pub(crate) fn head_key(size: u64) -> Vec<u8> {
    let mut key = HEAD_PREFIX.to_vec();
    key.extend_from_slice(&size.to_be_bytes());
    key
}

pub(crate) fn tx_key(transaction_id: &str) -> Vec<u8> {
    let mut key = TX_PREFIX.to_vec();
    key.extend_from_slice(transaction_id.as_bytes());
    key
}

/// Most leaves whose Merkle nodes one chunk holds, so that reading one node
/// never copies more than about 16 KiB.
const CHUNK_LEAVES: u32 = 256;

/// The Merkle nodes a commit group completes, written as chunks of
/// consecutive leaves instead of a key per node: one key per group costs
/// sled far less than two per record ([ADR
/// 0017](../../../docs/adr/0017-fewer-keys-per-record.md)).
///
/// A chunk's key is [`CHUNK_PREFIX`] and its first leaf's index (8 bytes,
/// big-endian); its value the number of leaves (4 bytes, big-endian), then
/// the hash of every node those leaves complete, in the order they complete
/// them: for each leaf, levels 0 up to its count of trailing one bits.
#[derive(Default)]
pub(crate) struct NodeChunks {
    first: u64,
    leaves: u32,
    hashes: Vec<u8>,
}

impl NodeChunks {
    /// Adds the nodes leaf `index` completed (from [`Frontier::push`]);
    /// leaves must come one after the other.
    pub(crate) fn push(
        &mut self,
        batch: &mut WriteBatch,
        index: u64,
        completed: &[(u8, u64, Hash)],
    ) {
        if self.leaves == 0 {
            self.first = index;
        }
        for (_, _, hash) in completed {
            self.hashes.extend_from_slice(hash);
        }
        self.leaves += 1;
        if self.leaves == CHUNK_LEAVES {
            self.finish(batch);
        }
    }

    /// Puts the chunk so far into `batch` and starts a new one.
    pub(crate) fn finish(&mut self, batch: &mut WriteBatch) {
        if self.leaves == 0 {
            return;
        }
        let mut key = CHUNK_PREFIX.to_vec();
        key.extend_from_slice(&self.first.to_be_bytes());
        let mut value = Vec::with_capacity(4 + self.hashes.len());
        value.extend_from_slice(&self.leaves.to_be_bytes());
        value.append(&mut self.hashes);
        batch.insert(key, value);
        self.leaves = 0;
    }
}

/// Nodes completed by leaves `0..n`: each leaf completes one node per
/// level from 0 up to its count of trailing one bits, 2n - popcount(n) in all.
fn nodes_before(n: u64) -> u128 {
    2 * u128::from(n) - u128::from(n.count_ones())
}

/// The leaf whose push completes node `index` at `level`.
fn completing_leaf(level: u8, index: u64) -> Option<u64> {
    if level >= 64 {
        return None;
    }
    u64::try_from(((u128::from(index) + 1) << level) - 1).ok()
}

/// One stored chunk of Merkle nodes, checked to hold exactly the nodes of
/// its leaves.
pub(crate) struct NodeChunk {
    first: u64,
    end: u64,
    hashes: Vec<u8>,
}

impl NodeChunk {
    fn decode(key: &[u8], mut value: Vec<u8>) -> Result<NodeChunk, AuditError> {
        let corrupt = |reason: &str| AuditError::Corrupt {
            key: hex::encode(key),
            reason: reason.to_string(),
        };
        let first = key
            .strip_prefix(CHUNK_PREFIX)
            .and_then(|t| <[u8; 8]>::try_from(t).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| corrupt("not a Merkle chunk key"))?;
        let leaves = value
            .get(..4)
            .and_then(|t| <[u8; 4]>::try_from(t).ok())
            .map(u32::from_be_bytes)
            .filter(|n| *n > 0)
            .ok_or_else(|| corrupt("Merkle chunk without leaves"))?;
        let end = first
            .checked_add(u64::from(leaves))
            .ok_or_else(|| corrupt("Merkle chunk beyond the largest index"))?;
        let expected = (nodes_before(end) - nodes_before(first)) * 32;
        if (value.len() - 4) as u128 != expected {
            return Err(corrupt(&format!(
                "Merkle chunk of {leaves} leaves holds {} bytes of hashes where {expected} were expected",
                value.len() - 4
            )));
        }
        value.drain(..4);
        Ok(NodeChunk {
            first,
            end,
            hashes: value,
        })
    }

    /// Where the stored chunks break the layout the writer leaves: each
    /// chunk starting where the one before it ended, the last ending at
    /// the log's `size`. The verifier reads only the nodes the records
    /// complete, so this is what finds a chunk added beside them (one that
    /// covers leaves the log does not hold, or overlaps another).
    pub(crate) fn layout_problem(
        store: &Store,
        size: u64,
    ) -> Result<Option<(u64, String)>, AuditError> {
        let mut end = None;
        for entry in store.scan_prefix(CHUNK_PREFIX) {
            let (key, value) = entry?;
            let chunk = match NodeChunk::decode(&key, value) {
                Ok(c) => c,
                Err(AuditError::Corrupt { reason, .. }) => {
                    return Ok(Some((
                        size,
                        format!("a Merkle chunk cannot be read ({reason})"),
                    )));
                }
                Err(e) => return Err(e),
            };
            if let Some(end) = end.filter(|e| *e != chunk.first) {
                return Ok(Some((
                    chunk.first,
                    format!(
                        "a Merkle chunk starts at leaf {} where the one before it ended at {end} (chunks overlap or one is missing)",
                        chunk.first
                    ),
                )));
            }
            end = Some(chunk.end);
        }
        Ok(end.filter(|e| *e != size).map(|e| {
            (
                size.min(e),
                format!("the Merkle chunks end at leaf {e} where the log holds {size} records"),
            )
        }))
    }

    /// The chunk that holds the nodes of `leaf`, if one does.
    fn of_leaf(store: &Store, leaf: u64) -> Result<Option<NodeChunk>, AuditError> {
        let mut upper = CHUNK_PREFIX.to_vec();
        upper.extend_from_slice(&leaf.to_be_bytes());
        // The least key above the leaf's own is it followed by a zero byte.
        upper.push(0);
        let Some(entry) = store.scan_range(CHUNK_PREFIX, &upper).next_back() else {
            return Ok(None);
        };
        let (key, value) = entry?;
        let chunk = NodeChunk::decode(&key, value)?;
        Ok((leaf < chunk.end).then_some(chunk))
    }

    fn holds(&self, leaf: u64) -> bool {
        (self.first..self.end).contains(&leaf)
    }

    /// Node `level` completed by `leaf`, which the chunk holds.
    fn node(&self, leaf: u64, level: u8) -> Option<Hash> {
        if !self.holds(leaf) || u32::from(level) > leaf.trailing_ones() {
            return None;
        }
        let at = usize::try_from(nodes_before(leaf) - nodes_before(self.first)).ok()?
            + usize::from(level);
        self.hashes.get(at * 32..at * 32 + 32)?.try_into().ok()
    }
}

/// Reads stored Merkle nodes, keeping the last chunk it read: a reader that
/// walks the tree in leaf order (the verifier) reads each chunk once.
#[derive(Default)]
pub(crate) struct NodeReader {
    chunk: Option<NodeChunk>,
}

impl NodeReader {
    /// The stored hash of the complete subtree at `level` number `index`,
    /// from its chunk or, in a log of an earlier build, its own key.
    pub(crate) fn get(
        &mut self,
        store: &Store,
        level: u8,
        index: u64,
    ) -> Result<Option<Hash>, AuditError> {
        let Some(leaf) = completing_leaf(level, index) else {
            return Ok(None);
        };
        if !self.chunk.as_ref().is_some_and(|c| c.holds(leaf)) {
            self.chunk = NodeChunk::of_leaf(store, leaf)?;
        }
        if let Some(chunk) = &self.chunk {
            return Ok(chunk.node(leaf, level));
        }
        let key = node_key(level, index);
        match store.get(&key)? {
            None => Ok(None),
            Some(value) => value
                .as_slice()
                .try_into()
                .map(Some)
                .map_err(|_| AuditError::Corrupt {
                    key: hex::encode(&key),
                    reason: "tree node is not 32 bytes".into(),
                }),
        }
    }
}

/// The stored hash of the complete subtree at `level` number `index`.
pub(crate) fn read_node(store: &Store, level: u8, index: u64) -> Result<Hash, AuditError> {
    NodeReader::default()
        .get(store, level, index)?
        .ok_or_else(|| AuditError::Corrupt {
            key: hex::encode(node_key(level, index)),
            reason: format!("missing tree node (level {level}, index {index})"),
        })
}

pub(crate) fn decode_head(key: &[u8], value: &[u8]) -> Result<SignedTreeHead, AuditError> {
    SignedTreeHead::decode(value).map_err(|e| AuditError::Corrupt {
        key: hex::encode(key),
        reason: format!("undecodable tree head: {e}"),
    })
}

/// Where logs created by earlier builds keep their time zone: minutes east
/// of UTC, 4 bytes big-endian.
pub(crate) const TZ_KEY: &[u8] = b"audit/m/tz";

/// Where the log's time zone is kept: its name (IANA or `±HH:MM`), UTF-8.
pub(crate) const TZ_NAME_KEY: &[u8] = b"audit/m/tz-name";

/// The time zone a log's days are cut in, once it has been opened: the name
/// stored, or the fixed offset stored by earlier builds. A name this build
/// does not know, or an offset out of range, is an error.
pub fn stored_zone(store: &Store) -> Result<Option<Zone>, AuditError> {
    if let Some(name) = store.get(TZ_NAME_KEY)? {
        let name = String::from_utf8_lossy(&name);
        return Zone::parse(&name)
            .map(Some)
            .ok_or_else(|| AuditError::Corrupt {
                key: hex::encode(TZ_NAME_KEY),
                reason: format!("time zone {name:?} is unknown to this build"),
            });
    }
    let Some(old) = store.get(TZ_KEY)? else {
        return Ok(None);
    };
    <[u8; 4]>::try_from(old.as_slice())
        .ok()
        .map(i32::from_be_bytes)
        .and_then(Zone::fixed)
        .map(Some)
        .ok_or_else(|| AuditError::Corrupt {
            key: hex::encode(TZ_KEY),
            reason: "not a UTC offset in minutes within 14 hours".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::generate().expect("key")
    }

    fn tx(id: &str) -> Transaction {
        Transaction::call(id, "000.00.00.H37", "000.00.00.G22", "s", b"x", 1)
    }

    /// Every node `leaves` leaves complete, written in chunks cut after the
    /// leaves of `cuts` (and every 256): each reads back as `Frontier` made it.
    fn nodes_read_back(leaves: u64, cuts: &[u64]) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let mut batch = WriteBatch::default();
        let mut chunks = NodeChunks::default();
        let mut frontier = Frontier::new();
        let mut all = Vec::new();
        for i in 0..leaves {
            let completed = frontier.push(sha256(&i.to_be_bytes()));
            chunks.push(&mut batch, i, &completed);
            all.extend(completed);
            if cuts.contains(&i) {
                chunks.finish(&mut batch);
            }
        }
        chunks.finish(&mut batch);
        store.apply(batch).expect("apply");
        let mut reader = NodeReader::default();
        for (level, at, hash) in &all {
            assert_eq!(read_node(&store, *level, *at).expect("node"), *hash);
            assert_eq!(reader.get(&store, *level, *at).expect("node"), Some(*hash));
        }
        // Nodes not yet complete are not there.
        let size = frontier.size();
        assert_eq!(reader.get(&store, 0, size).expect("read"), None);
        assert_eq!(reader.get(&store, 1, size / 2).expect("read"), None);
        assert_eq!(reader.get(&store, 200, 0).expect("read"), None);
    }

    #[test]
    fn merkle_nodes_read_back_from_chunks_of_any_length() {
        nodes_read_back(1, &[]);
        nodes_read_back(17, &[0, 1, 2, 7, 8]);
        nodes_read_back(1000, &[300, 301, 511, 600]);
    }

    /// Rewrites a log's Merkle chunks as an earlier build stored its tree:
    /// one key per node.
    fn to_node_keys(store: &Store) {
        let mut batch = WriteBatch::default();
        for entry in store.scan_prefix(CHUNK_PREFIX) {
            let (key, value) = entry.expect("chunk");
            let chunk = NodeChunk::decode(&key, value).expect("decode");
            for leaf in chunk.first..chunk.end {
                for level in 0..=leaf.trailing_ones() as u8 {
                    let hash = chunk.node(leaf, level).expect("node");
                    batch.insert(node_key(level, leaf >> level), hash);
                }
            }
            batch.remove(key);
        }
        store.apply(batch).expect("apply");
    }

    #[tokio::test]
    async fn a_log_with_a_key_per_merkle_node_reads_proves_and_grows() {
        use ring::signature::Ed25519KeyPair;
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("key");
        let signer = || Signer::new(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key"));
        let public = signer().public_key();
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let log =
            AuditLog::open(store.clone(), "hub", Options::default(), Some(signer())).expect("log");
        for i in 0..13 {
            log.append(tx(&format!("old-{i}"))).await.expect("append");
        }
        log.close().await;
        to_node_keys(&store);
        assert!(store.scan_prefix(CHUNK_PREFIX).next().is_none());
        assert!(
            crate::verify(&store, Some(&public))
                .expect("verify")
                .is_ok()
        );
        // This build restores the frontier from the old keys and writes
        // the nodes of new records in chunks; proofs span both.
        let log = AuditLog::open(store.clone(), "hub", Options::default(), Some(signer()))
            .expect("reopen");
        let mut last = None;
        for i in 0..6 {
            last = Some(log.append(tx(&format!("new-{i}"))).await.expect("append"));
        }
        assert!(store.scan_prefix(CHUNK_PREFIX).next().is_some());
        let head = last.and_then(|a| a.tree_head).expect("head");
        assert_eq!(head.tree_size, 19);
        let root = crate::sth::root_of(&head).expect("root");
        for index in 0..19 {
            let (leaf, path) = log.reader().inclusion_proof(index, 19).expect("proof");
            assert!(crate::merkle::verify_inclusion(
                &leaf, index, 19, &path, &root
            ));
        }
        log.close().await;
        assert!(
            crate::verify(&store, Some(&public))
                .expect("verify")
                .is_ok()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_record_comes_with_its_path_in_the_head_that_first_included_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        // The first flush waits until the test lets it go, so that the
        // appends made meanwhile are committed as one group.
        let (started_tx, started) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let mut first = Some((started_tx, released));
        let flush: FlushFn = Box::new(move |s: &Store| {
            if let Some((started, released)) = first.take() {
                let _ = started.send(());
                let _ = released.recv();
            }
            s.flush()
        });
        let log = AuditLog::open_with(store, "hub", Options::default(), Some(signer()), flush)
            .expect("log");
        let append = |i: u32| {
            let log = log.clone();
            tokio::spawn(async move { log.append(tx(&format!("{i:032x}"))).await })
        };
        let mut appends = vec![append(0)];
        tokio::task::spawn_blocking(move || started.recv())
            .await
            .expect("task")
            .expect("the first flush started");
        appends.extend((1..300).map(append));
        while log.jobs.max_capacity() - log.jobs.capacity() < 299 {
            tokio::task::yield_now().await;
        }
        release.send(()).expect("release");
        let mut heads = std::collections::HashSet::new();
        for a in appends {
            let a = a.await.expect("task").expect("appended");
            let head = a.tree_head.as_ref().expect("head");
            heads.insert(head.tree_size);
            let path = a.inclusion_path.as_ref().expect("path");
            let root = crate::sth::root_of(head).expect("root");
            assert!(
                crate::merkle::verify_inclusion(&a.leaf_hash, a.index, head.tree_size, path, &root),
                "leaf {} of {}",
                a.index,
                head.tree_size
            );
            let (leaf, stored) = log
                .reader()
                .inclusion_proof(a.index, head.tree_size)
                .expect("proof");
            assert_eq!((leaf, &stored), (a.leaf_hash, path));
        }
        assert_eq!(heads.len(), 2, "one record, then one group of 299");
    }

    #[tokio::test]
    async fn a_failed_flush_stops_the_log_for_good() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let flushes = Arc::new(AtomicU64::new(0));
        let seen = flushes.clone();
        // The second flush fails; every later one would succeed.
        let flush: FlushFn = Box::new(move |s: &Store| {
            if seen.fetch_add(1, Ordering::SeqCst) == 1 {
                return Err(truc_store::StoreError::Sync {
                    path: "db".into(),
                    source: std::io::Error::other("injected"),
                });
            }
            s.flush()
        });
        let log = AuditLog::open_with(store, "hub", Options::default(), Some(signer()), flush)
            .expect("log");
        log.append(tx(&format!("{:032x}", 1))).await.expect("first");
        assert!(log.append(tx(&format!("{:032x}", 2))).await.is_err());
        assert!(log.reader().stopped());
        let third = log.append(tx(&format!("{:032x}", 3))).await;
        assert!(
            matches!(third, Err(AuditError::Stopped)),
            "nothing is acknowledged after a failed flush: {third:?}"
        );
        assert_eq!(flushes.load(Ordering::SeqCst), 2, "no flush is tried again");
    }

    /// A flush that records how many records it made durable: those
    /// applied when it started.
    fn counting_flush(durable: Arc<AtomicU64>, fail_at: Option<u64>) -> FlushFn {
        let flushes = AtomicU64::new(0);
        Box::new(move |s: &Store| {
            let applied =
                crate::records::stored_size(s).map_err(|e| truc_store::StoreError::Sync {
                    path: "db".into(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            if Some(flushes.fetch_add(1, Ordering::SeqCst)) == fail_at {
                return Err(truc_store::StoreError::Sync {
                    path: "db".into(),
                    source: std::io::Error::other("injected"),
                });
            }
            s.flush()?;
            durable.fetch_max(applied, Ordering::SeqCst);
            Ok(())
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_record_is_acknowledged_before_a_flush_covered_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let durable = Arc::new(AtomicU64::new(0));
        let flush = counting_flush(durable.clone(), None);
        let log = AuditLog::open_with(store, "hub", Options::default(), Some(signer()), flush)
            .expect("log");
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..400u32 {
            let (log, durable) = (log.clone(), durable.clone());
            tasks.spawn(async move {
                let a = log.append(tx(&format!("{i:032x}"))).await.expect("append");
                let flushed = durable.load(Ordering::SeqCst);
                assert!(
                    a.index < flushed,
                    "record {} acknowledged with only {flushed} records flushed",
                    a.index
                );
                assert!(log.reader().size() > a.index);
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task");
        }
        assert_eq!(log.reader().size(), 400);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_flush_fails_the_groups_applied_behind_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let durable = Arc::new(AtomicU64::new(0));
        // The second flush fails, while the writer applies the groups
        // behind it; every later flush would succeed.
        let flush = counting_flush(durable.clone(), Some(1));
        let log = AuditLog::open_with(store, "hub", Options::default(), Some(signer()), flush)
            .expect("log");
        log.append(tx(&format!("{:032x}", 0))).await.expect("first");
        let mut tasks = tokio::task::JoinSet::new();
        for i in 1..400u32 {
            let log = log.clone();
            tasks.spawn(async move { log.append(tx(&format!("{i:032x}"))).await.is_ok() });
        }
        while let Some(done) = tasks.join_next().await {
            assert!(
                !done.expect("task"),
                "nothing applied behind a failed flush is acknowledged"
            );
        }
        assert!(log.reader().stopped());
        assert_eq!(log.reader().size(), 1);
        assert_eq!(log.reader().flush_failures(), 1);
    }

    #[tokio::test]
    async fn the_id_index_keeps_the_first_record_of_an_id() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let log = AuditLog::open(store, "hub", Options::default(), Some(signer())).expect("log");
        let id = format!("{:032x}", 7);
        let first = log.append(tx(&id)).await.expect("first");
        let (a, b) = tokio::join!(log.append(tx(&id)), log.append(tx(&id)));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(
            log.reader().index_of(&id).expect("read"),
            Some(first.index),
            "a later record of the same id never takes over the index"
        );
    }

    #[tokio::test]
    async fn the_filter_of_ids_holds_those_of_earlier_runs_and_of_this_one() {
        let id = |i: u64| format!("{i:032x}");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let log =
            AuditLog::open(store.clone(), "hub", Options::default(), Some(signer())).expect("log");
        for i in 0..5 {
            log.append(tx(&id(i))).await.expect("append");
        }
        log.close().await;
        let log = AuditLog::open(store, "hub", Options::default(), Some(signer())).expect("log");
        assert!(log.reader().wait_for_id_filter(), "the filter answers");
        let reader = log.reader();
        for i in 0..5 {
            assert!(
                reader.may_hold_id(id(i).as_bytes()),
                "{i} of an earlier run"
            );
            assert_eq!(reader.index_of(&id(i)).expect("read"), Some(i));
        }
        let new = log.append(tx(&id(5))).await.expect("append");
        assert!(reader.may_hold_id(id(5).as_bytes()), "an id of this run");
        assert_eq!(reader.index_of(&id(5)).expect("read"), Some(new.index));
        // A repeat of an earlier run's id is still found as the first.
        log.append(tx(&id(2))).await.expect("append");
        assert_eq!(reader.index_of(&id(2)).expect("read"), Some(2));
        // Ids never recorded are answered by the filter (a false positive
        // is 1 in 100; 20 of 100 would be far beyond chance).
        let maybe = (100..200)
            .filter(|&i| reader.may_hold_id(id(i).as_bytes()))
            .count();
        assert!(maybe < 20, "{maybe} of 100 unrecorded ids may be held");
        assert!((100..200).all(|i| reader.index_of(&id(i)).expect("read").is_none()));
        // A node's log has no filter: every id is looked up.
        let node_dir = tempfile::tempdir().expect("temp dir");
        let node = AuditLog::open(
            Store::open(node_dir.path()).expect("open"),
            "node",
            Options::default(),
            None,
        )
        .expect("log");
        assert!(!node.reader().wait_for_id_filter());
        assert!(node.reader().may_hold_id(b"anything"));
    }

    /// While the ids of earlier runs are still being added, a reader's
    /// lookups go to the store: a recorded id is found whatever the filter
    /// holds so far. Once the filter says it is filled, its "no" is taken
    /// as the answer, which is why the fill must add every recorded id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn until_the_filter_is_filled_every_id_is_looked_up_in_the_store() {
        let id = |i: u64| format!("{i:032x}");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let log =
            AuditLog::open(store.clone(), "hub", Options::default(), Some(signer())).expect("log");
        for i in 0..3 {
            log.append(tx(&id(i))).await.expect("append");
        }
        log.close().await;
        drop(log);
        // A reader whose filter is still empty and filling (no thread fills
        // this one: the test says when the filling ends).
        let mut reader = LogReader::offline(store).expect("reader");
        let filter = Arc::new(IdFilter::new(64, 1024, 5));
        reader.ids = Some(Arc::clone(&filter));
        for i in 0..3 {
            assert_eq!(reader.index_of(&id(i)).expect("read"), Some(i), "mid-fill");
        }
        assert!(reader.index_of(&id(9)).expect("read").is_none());
        // Filled with only one of the three: the other two are now missed.
        filter.insert(id(1).as_bytes());
        filter.finish(true);
        assert_eq!(reader.index_of(&id(1)).expect("read"), Some(1));
        let missed = (0..3)
            .filter(|&i| reader.index_of(&id(i)).expect("read").is_none())
            .count();
        assert!(missed >= 1, "a fill that skips ids would let them repeat");
    }

    /// `id_filter_ids = 0` leaves a hub's log without a filter, and a
    /// filter far smaller than the log's ids only answers "may hold" more
    /// often: neither misses a recorded id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hub_log_without_a_filter_or_with_a_small_one_finds_every_id() {
        let id = |i: u64| format!("{i:032x}");
        for most in [0, 2] {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Store::open(dir.path()).expect("open");
            let options = Options {
                id_filter_ids: most,
                ..Options::default()
            };
            let log = AuditLog::open(store, "hub", options, Some(signer())).expect("log");
            assert_eq!(log.reader().wait_for_id_filter(), most > 0);
            for i in 0..40 {
                log.append(tx(&id(i))).await.expect("append");
            }
            let reader = log.reader();
            for i in 0..40 {
                assert!(reader.may_hold_id(id(i).as_bytes()), "{i}, most {most}");
                assert_eq!(reader.index_of(&id(i)).expect("read"), Some(i));
            }
            assert!(reader.index_of(&id(1000)).expect("read").is_none());
            log.close().await;
        }
    }

    fn options_in(zone: &str) -> Options {
        Options {
            time_zone: Zone::parse(zone).expect("zone"),
            ..Options::default()
        }
    }

    #[tokio::test]
    async fn a_log_of_an_earlier_build_with_a_fixed_offset_still_opens() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        // What earlier builds stored: +07:00 as minutes, 4 bytes big-endian.
        store.insert(TZ_KEY, 420i32.to_be_bytes()).expect("insert");
        let zone = stored_zone(&store).expect("read").expect("a zone");
        assert_eq!(zone.label(), "+07:00");
        // The default config (Asia/Ho_Chi_Minh) cuts days alike: it opens,
        // counts in the same days, and the stored form is left as it was.
        let log = AuditLog::open(store.clone(), "hub", Options::default(), None).expect("opens");
        let mut t = tx(&format!("{:032x}", 1));
        t.finished_unix_ms = 1_795_887_000_000; // 00:30 on 2026-11-29 at +07:00
        log.append(t).await.expect("append");
        let days: Vec<String> = crate::read_counts(&store)
            .expect("counts")
            .into_keys()
            .map(|k| k.day)
            .collect();
        assert_eq!(days, ["2026-11-29"]);
        assert_eq!(store.get(TZ_NAME_KEY).expect("get"), None);
        drop(log);
        // Another offset, or a zone with daylight saving, is refused.
        for other in ["+08:00", "Europe/Paris"] {
            let refused = AuditLog::open(store.clone(), "hub", options_in(other), None);
            assert!(
                matches!(refused, Err(AuditError::TimeZone { .. })),
                "{other}: {:?}",
                refused.err()
            );
        }
    }

    #[tokio::test]
    async fn a_new_log_keeps_its_zone_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let log =
            AuditLog::open(store.clone(), "hub", options_in("Europe/Paris"), None).expect("log");
        drop(log);
        assert_eq!(
            store.get(TZ_NAME_KEY).expect("get").as_deref(),
            Some(&b"Europe/Paris"[..])
        );
        assert_eq!(store.get(TZ_KEY).expect("get"), None);
        assert!(AuditLog::open(store.clone(), "hub", options_in("Europe/Paris"), None).is_ok());
        // +01:00 is Paris only in winter: refused.
        let refused = AuditLog::open(store.clone(), "hub", options_in("+01:00"), None);
        assert!(matches!(refused, Err(AuditError::TimeZone { .. })));
        // A name this build does not know is reported, not guessed.
        store
            .insert(TZ_NAME_KEY, &b"Mars/Olympus"[..])
            .expect("insert");
        assert!(matches!(
            stored_zone(&store),
            Err(AuditError::Corrupt { .. })
        ));
    }
}
