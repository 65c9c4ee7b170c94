//! The delivery and status workers: they take what is queued on disk, relay
//! it through the hub, and on success record the outcome; on failure they
//! record the error and try again later (exponential backoff with jitter),
//! except for errors that no retry can fix.
//!
//! No destination delays another: every delivery (one document to one
//! recipient) is a task of its own, at most
//! `max_in_flight_per_destination` per recipient and `max_in_flight` in all,
//! and every call has a deadline. Statuses keep their order per document and
//! recipient (the state machine needs it) and are otherwise independent: a
//! document whose sender's node does not answer holds back only its own
//! later statuses. A failure that cannot even be recorded (a store error, an
//! unreadable entry) is held back in memory with the same backoff, so no
//! failure path spins.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use truc_ops::Shutdown;
use truc_proto::v1::{
    RecipientTracking, RelayHeader, RelayRequest, RelayResponse, StatusEvent, StatusUpdate,
    Tracking, hub_client::HubClient, relay_request,
};
use truc_store::{Store, WriteBatch};

use super::{Delivery, Documents, Written, keys, now_ms};
use crate::config::DocumentService;

/// Starts the delivery and status workers, which stop with `shutdown`.
pub(crate) fn spawn_workers(docs: Arc<Documents>, shutdown: Shutdown) {
    tokio::spawn(deliveries(docs.clone(), shutdown.clone()));
    tokio::spawn(statuses(docs, shutdown));
}

/// What a refusal means for the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// No retry can fix it: the delivery ends as failed.
    Never,
    /// Transient: try again after a backoff.
    Later,
}

/// The one rule for which refusals are final: what the caller sent is wrong
/// (invalid argument, out of range), the state does not allow it (failed
/// precondition, already exists), nobody may or can take it (permission
/// denied, not found), or it is over a size limit (tonic's message limits
/// say "too large"; other RESOURCE_EXHAUSTED, such as a busy peer, pass).
/// Everything else (unavailable, deadline exceeded, internal, ...) is
/// retried.
pub(crate) fn classify(status: &Status) -> Retry {
    match status.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::PermissionDenied
        | Code::NotFound
        | Code::AlreadyExists => Retry::Never,
        Code::ResourceExhausted if status.message().contains("too large") => Retry::Never,
        _ => Retry::Later,
    }
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The deadline of relaying a document whose attachments hold `bytes`: the
/// base deadline, plus the time the slowest acceptable transfer takes.
pub(crate) fn relay_deadline(service: &DocumentService, bytes: u64) -> Duration {
    let transfer = bytes.saturating_mul(1000) / service.relay_min_bytes_per_sec.max(1);
    Duration::from_millis(service.relay_deadline_ms.saturating_add(transfer))
}

/// How an attempt ended, for the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The destination answered (it took it, or refused it for good), and
    /// that is recorded on disk.
    Answered,
    /// The destination did not answer, or not in time; recorded on disk
    /// with the next attempt's time.
    Unanswered,
    /// Nothing could be recorded: hold it back in memory, with backoff.
    Hold,
}

/// Attempts in flight a destination starts with (or the most allowed, if
/// lower): it gains one for each attempt it answers, up to the most allowed,
/// and loses half for each it does not.
const FIRST_ALLOWANCE: usize = 4;

/// The least time between two recoveries of one destination that bring its
/// waiting entries forward (see [`Lanes::finish`]): a destination that
/// fails and answers by turns costs its queue a pass at most this often,
/// and an entry that keeps failing while the others go through is tried
/// again at most this often.
const RECOVERY_EVERY: Duration = Duration::from_secs(10);

/// Work in flight per destination, and work held back in memory.
///
/// How many attempts a destination may have in flight follows how it
/// answers: additive increase, multiplicative decrease, as TCP's congestion
/// window does. A destination that answers promptly goes up to
/// `max_per_destination` at once, so one busy pair of nodes is not held to
/// a few documents at a time; one that stops answering falls to a single
/// attempt, so it holds few of the `max_total` slots the others need.
struct Lanes {
    busy: HashSet<Vec<u8>>,
    per_destination: HashMap<String, usize>,
    /// Destinations whose allowance is not the first one. An idle
    /// destination's grown allowance is forgotten; a reduced one is kept
    /// until the destination answers again.
    allowance: HashMap<String, usize>,
    /// Lane → (not before, in ms; attempts so far; its destination).
    held: HashMap<Vec<u8>, (u64, u32, String)>,
    /// An unanswered attempt holds its lane back in memory too (statuses,
    /// whose queue keeps no next-attempt time); deliveries write theirs.
    hold_unanswered: bool,
    /// Destinations whose last attempt was not answered.
    unanswered: HashSet<String>,
    /// When each destination's waiting entries were last brought forward.
    recovered: HashMap<String, u64>,
    max_total: usize,
    max_per_destination: usize,
    backoff: (Duration, Duration),
}

impl Lanes {
    fn new(service: &DocumentService, backoff: (Duration, Duration)) -> Lanes {
        Lanes {
            busy: HashSet::new(),
            per_destination: HashMap::new(),
            allowance: HashMap::new(),
            held: HashMap::new(),
            hold_unanswered: false,
            unanswered: HashSet::new(),
            recovered: HashMap::new(),
            max_total: service.max_in_flight.max(1),
            max_per_destination: service.max_in_flight_per_destination.max(1),
            backoff,
        }
    }

    fn full(&self) -> bool {
        self.busy.len() >= self.max_total
    }

    /// When `lane` may go again, if it is held back beyond `now`.
    fn held_until(&self, lane: &[u8], now: u64) -> Option<u64> {
        self.held
            .get(lane)
            .map(|(until, _, _)| *until)
            .filter(|until| *until > now)
    }

    /// Attempts `destination` may have in flight now.
    fn allowed(&self, destination: &str) -> usize {
        self.allowance
            .get(destination)
            .copied()
            .unwrap_or(FIRST_ALLOWANCE.min(self.max_per_destination))
    }

    /// Whether `lane` may start now towards `destination`. Beyond its first
    /// allowance a destination borrows slots, never the node's last quarter:
    /// those stay for destinations within their first allowance, so that
    /// busy destinations that stop answering all at once hold no more of
    /// the node than the fixed limit of four let them.
    fn may_start(&self, lane: &[u8], destination: &str) -> bool {
        let n = self.per_destination.get(destination).copied().unwrap_or(0);
        let first = FIRST_ALLOWANCE.min(self.max_per_destination);
        let reserve = self.max_total / 4;
        !self.busy.contains(lane)
            && n < self.allowed(destination)
            && (n < first || self.busy.len() + reserve < self.max_total)
    }

    fn start(&mut self, lane: Vec<u8>, destination: &str) {
        self.busy.insert(lane);
        *self
            .per_destination
            .entry(destination.to_string())
            .or_default() += 1;
    }

    /// Ends an attempt. Returns the destination if it answered after it
    /// had not: it is back, and what waits for it need not wait out the
    /// retry delays its outage left (at most once per [`RECOVERY_EVERY`]).
    fn finish(&mut self, (lane, destination, outcome): Done) -> Option<String> {
        self.busy.remove(&lane);
        let recovered = match outcome {
            Outcome::Answered if self.unanswered.remove(&destination) => {
                let now = now_ms();
                let last = self.recovered.get(&destination).copied();
                if last.is_none_or(|t| now.saturating_sub(t) >= millis(RECOVERY_EVERY)) {
                    // Only recent recoveries matter: the map stays small.
                    self.recovered
                        .retain(|_, t| now.saturating_sub(*t) < millis(RECOVERY_EVERY));
                    self.recovered.insert(destination.clone(), now);
                    // What it held back goes again now.
                    self.held.retain(|_, h| h.2 != destination);
                    Some(destination.clone())
                } else {
                    None
                }
            }
            Outcome::Unanswered => {
                self.unanswered.insert(destination.clone());
                None
            }
            Outcome::Answered | Outcome::Hold => None,
        };
        let mut idle = true;
        if let Some(n) = self.per_destination.get_mut(&destination) {
            *n = n.saturating_sub(1);
            idle = *n == 0;
            if idle {
                self.per_destination.remove(&destination);
            }
        }
        let allowed = self.allowed(&destination);
        let allowed = match outcome {
            Outcome::Answered => (allowed + 1).min(self.max_per_destination),
            Outcome::Unanswered | Outcome::Hold => (allowed / 2).max(1),
        };
        if idle && allowed >= FIRST_ALLOWANCE.min(self.max_per_destination) {
            self.allowance.remove(&destination);
        } else {
            self.allowance.insert(destination.clone(), allowed);
        }
        match outcome {
            Outcome::Unanswered if self.hold_unanswered => self.hold(lane, destination),
            Outcome::Answered | Outcome::Unanswered => {
                self.held.remove(&lane);
            }
            Outcome::Hold => self.hold(lane, destination),
        }
        recovered
    }

    /// Holds `lane` back for one more backoff step.
    fn hold(&mut self, lane: Vec<u8>, destination: String) {
        let attempts = self.held.get(&lane).map_or(0, |h| h.1).saturating_add(1);
        let until = now_ms().saturating_add(millis(backoff(attempts, self.backoff)));
        self.held.insert(lane, (until, attempts, destination));
    }
}

/// A finished attempt: its lane, its destination, how it ended.
type Done = (Vec<u8>, String, Outcome);

/// The batch that removes `key` from a queue.
fn removal(key: &[u8]) -> WriteBatch {
    let mut b = WriteBatch::default();
    b.remove(key);
    b
}

/// What a write of the scheduler's means for it: held back if it failed.
fn outcome<E: std::fmt::Display>(written: Result<(), E>, what: &str) -> Outcome {
    match written {
        Ok(()) => Outcome::Answered,
        Err(e) => {
            tracing::error!(error = %e, "cannot {what}");
            Outcome::Hold
        }
    }
}

/// Removes `key` (an entry that can never be processed), from the scan's
/// own thread; held back if even that fails.
fn drop_entry(store: &Store, key: &[u8]) -> Outcome {
    let written = store
        .apply_journaled(keys::JOURNAL, removal(key))
        .and_then(|()| store.flush());
    outcome(written, "remove a queue entry")
}

/// Removes `key` once its work is done, durably.
async fn dequeue(docs: &Documents, key: &[u8]) -> Outcome {
    let guard = docs.write_lock.lock().await;
    outcome(
        docs.commit(guard, removal(key)).await,
        "remove a queue entry",
    )
}

/// Runs `work` unless `shutdown` comes first, then reports it done.
fn spawn_attempt(
    work: impl Future<Output = Outcome> + Send + 'static,
    lane: Vec<u8>,
    destination: String,
    done: mpsc::UnboundedSender<Done>,
    shutdown: Shutdown,
) {
    tokio::spawn(async move {
        let outcome = tokio::select! {
            o = work => o,
            () = shutdown.wait() => return,
        };
        let _ = done.send((lane, destination, outcome));
    });
}

/// The entries of the `what` queue under `prefix`, in key order, up to the
/// first that cannot be read (logged; the next scan tries again).
fn entries<'a>(
    store: &Store,
    prefix: &[u8],
    what: &'a str,
) -> impl Iterator<Item = truc_store::Entry> + use<'a> {
    store.scan_prefix(prefix).map_while(move |item| {
        item.map_err(|e| tracing::error!(error = %e, "cannot read the {what} queue"))
            .ok()
    })
}

/// A delivery due now: its queue key, and the sender, document id, kind and
/// recipient the key names.
type Due = (Vec<u8>, (String, String, i32, String));

/// How often a scheduler reads its whole queue again, in case what it
/// keeps in memory and the store have parted (a write that failed half-way
/// and was completed later).
const RESYNC: Duration = Duration::from_secs(60);

/// What the scheduler keeps of a queue entry (key, value): when it may go,
/// its destination, and what more it needs to choose it. `None`: it can
/// never be processed.
type Read<M> = fn(&[u8], &[u8]) -> Option<(u64, String, M)>;

/// One destination's queue entries, earliest first (then in key order).
type ByTime<M> = BTreeMap<(u64, Arc<[u8]>), M>;

/// A queue (deliveries, or statuses) as its scheduler keeps it in memory:
/// every entry's time and destination, and per destination its entries by
/// time. It is read whole from the store at start and every [`RESYNC`]; in
/// between, each entry that changes is read again alone: one just queued
/// (the writer tells the scheduler its key) and one whose attempt ended.
/// So a scan costs the destinations with work and the attempts it starts,
/// not the length of the queue: a backlog of a hundred thousand deliveries
/// after an outage cost about 100 ms of store reads per scan, once per
/// finished attempt, on an async worker.
struct Queue<M> {
    prefix: &'static [u8],
    what: &'static str,
    read: Read<M>,
    by_destination: HashMap<String, ByTime<M>>,
    /// Each entry's time and destination, by key.
    entries: HashMap<Arc<[u8]>, (u64, String)>,
}

/// A queue entry's time; an unreadable one is due (the attempt rewrites it).
fn queued_at(value: &[u8]) -> u64 {
    <[u8; 8]>::try_from(value).map_or(0, u64::from_be_bytes)
}

/// A delivery: the time in its value, the recipient its key names.
fn read_delivery(key: &[u8], value: &[u8]) -> Option<(u64, String, ())> {
    keys::parse_queue(key).map(|(_, _, _, recipient)| (queued_at(value), recipient, ()))
}

/// A status: in the order it was queued (its key), to the sender's node,
/// on its lane.
fn read_status(_key: &[u8], value: &[u8]) -> Option<(u64, String, Vec<u8>)> {
    let update: StatusUpdate = prost::Message::decode(value).ok()?;
    let lane = status_lane(&update);
    Some((0, update.sender, lane))
}

impl<M> Queue<M> {
    fn empty(prefix: &'static [u8], what: &'static str, read: Read<M>) -> Queue<M> {
        Queue {
            prefix,
            what,
            read,
            by_destination: HashMap::new(),
            entries: HashMap::new(),
        }
    }

    /// The whole queue as stored. Entries that can never be processed are
    /// dropped.
    fn load(store: &Store, prefix: &'static [u8], what: &'static str, read: Read<M>) -> Queue<M> {
        let mut queue = Queue::empty(prefix, what, read);
        for (k, v) in entries(store, prefix, what) {
            match read(&k, &v) {
                Some((at, destination, meta)) => queue.set(k, at, destination, meta),
                None => {
                    tracing::error!(key = %hex::encode(&k), "unreadable {what} queue entry dropped");
                    drop_entry(store, &k);
                }
            }
        }
        queue
    }

    /// Reads entry `key` again: it changed, or went.
    fn refresh(&mut self, store: &Store, key: &[u8]) {
        match store.get(key) {
            Ok(Some(v)) => match (self.read)(key, &v) {
                Some((at, destination, meta)) => self.set(key.to_vec(), at, destination, meta),
                None => self.remove(key),
            },
            Ok(None) => self.remove(key),
            // Kept as it was; the next resync reads it again.
            Err(e) => tracing::error!(error = %e, "cannot read a {} queue entry", self.what),
        }
    }

    fn set(&mut self, key: Vec<u8>, at: u64, destination: String, meta: M) {
        self.remove(&key);
        let key: Arc<[u8]> = key.into();
        self.by_destination
            .entry(destination.clone())
            .or_default()
            .insert((at, key.clone()), meta);
        self.entries.insert(key, (at, destination));
    }

    fn remove(&mut self, key: &[u8]) {
        let Some((key, (at, destination))) = self.entries.remove_entry(key) else {
            return;
        };
        if let Some(by_time) = self.by_destination.get_mut(&destination) {
            by_time.remove(&(at, key));
            if by_time.is_empty() {
                self.by_destination.remove(&destination);
            }
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Makes every entry of `destination` due by `now`, in the order they
    /// were (the i-th of n later ones at `now - n + i` ms), in memory only:
    /// an attempt writes its entry's time again, and the next read of the
    /// whole queue takes the stored times back. Returns how many moved.
    fn bring_forward(&mut self, destination: &str, now: u64) -> usize {
        let Some(by_time) = self.by_destination.get_mut(destination) else {
            return 0;
        };
        let later = by_time.split_off(&(now.saturating_add(1), Arc::from(&[][..])));
        let moved = later.len();
        let first = now.saturating_sub(moved as u64);
        for (i, ((_, key), meta)) in later.into_iter().enumerate() {
            let at = first + i as u64;
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.0 = at;
            }
            by_time.insert((at, key), meta);
        }
        moved
    }
}

#[cfg(test)]
impl Queue<()> {
    fn deliveries(store: &Store) -> Queue<()> {
        Queue::load(store, keys::QUEUE, "delivery", read_delivery)
    }
}

#[cfg(test)]
impl Queue<Vec<u8>> {
    fn statuses(store: &Store) -> Queue<Vec<u8>> {
        Queue::load(store, keys::STATUS_QUEUE, "status", read_status)
    }
}

/// The queue read whole from the store again, off the async workers.
async fn reload<M: Send + 'static>(queue: &Queue<M>, store: &Store) -> Option<Queue<M>> {
    let (store, prefix, what, read) = (store.clone(), queue.prefix, queue.what, queue.read);
    tokio::task::spawn_blocking(move || Queue::load(&store, prefix, what, read))
        .await
        .ok()
}

/// What each of the two schedulers (deliveries, statuses) runs on: its
/// lanes, the channel its attempts report on, the keys its queue's writers
/// send, and its queue in memory.
struct Scheduler<M> {
    lanes: Lanes,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    queued: mpsc::UnboundedReceiver<Vec<u8>>,
    queue: Queue<M>,
    loaded: Option<std::time::Instant>,
    /// Where the queue's length is published (the node's metric).
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

impl<M: Send + 'static> Scheduler<M> {
    fn new(docs: &Documents, written: &Written, queue: Queue<M>) -> Option<Scheduler<M>> {
        let Some(queued) = written.take() else {
            tracing::error!("the {} scheduler was started twice", queue.what);
            return None;
        };
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Some(Scheduler {
            lanes: Lanes::new(&docs.service, docs.backoff),
            done_tx,
            done_rx,
            queued,
            queue,
            loaded: None,
            waiting: written.waiting.clone(),
        })
    }

    /// Reads the whole queue at the first turn and every [`RESYNC`]. What
    /// it reads may have been written and not yet flushed (a send whose
    /// commit is under way, or failed): the queue read is used only once
    /// that is durable, so that only entries on disk go out. Every other
    /// entry the scheduler reads was made durable before it was told of it
    /// (after the commit that wrote it), so attempts need not wait.
    async fn resync(&mut self, docs: &Documents) {
        if self.loaded.is_none_or(|t| t.elapsed() >= RESYNC) {
            let fresh = reload(&self.queue, &docs.store).await;
            if let Err(e) = docs.settled().await {
                tracing::warn!(error = %e.message(), "the {} queue read is not durable yet; read again", self.queue.what);
                return;
            }
            if let Some(fresh) = fresh {
                self.queue = fresh;
            }
            self.loaded = Some(std::time::Instant::now());
            self.publish();
        }
    }

    /// Publishes the queue's length, once it has been read.
    fn publish(&self) {
        if self.loaded.is_some() {
            self.waiting
                .store(self.queue.len(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Waits for the next reason to look at the queue again: an attempt
    /// ended (`ended` gives the queue key of its lane), an entry was queued,
    /// the earliest time is near, or `shutdown` (false).
    async fn next_event(
        &mut self,
        store: &Store,
        mut ended: impl FnMut(&[u8]) -> Option<Vec<u8>>,
        next_wake: u64,
        shutdown: &Shutdown,
    ) -> bool {
        let wait = Duration::from_millis(next_wake.saturating_sub(now_ms()).clamp(10, 1000));
        let Scheduler {
            lanes,
            done_rx,
            queued,
            queue,
            ..
        } = self;
        let mut finish = |queue: &mut Queue<M>, lanes: &mut Lanes, d: Done| {
            if let Some(key) = ended(&d.0) {
                queue.refresh(store, &key);
            }
            if let Some(back) = lanes.finish(d) {
                let moved = queue.bring_forward(&back, now_ms());
                if moved > 0 {
                    tracing::info!(destination = %back, moved, "{} destination answers again: its waiting entries are due now", queue.what);
                }
            }
        };
        tokio::select! {
            Some(d) = done_rx.recv() => {
                finish(queue, lanes, d);
                while let Ok(d) = done_rx.try_recv() {
                    finish(queue, lanes, d);
                }
            }
            Some(key) = queued.recv() => {
                queue.refresh(store, &key);
                while let Ok(key) = queued.try_recv() {
                    queue.refresh(store, &key);
                }
            }
            () = tokio::time::sleep(wait) => {}
            () = shutdown.wait() => return false,
        }
        tracing::trace!(queued = queue.len(), "{} queue", queue.what);
        self.publish();
        true
    }
}

/// The deliveries to start now, oldest first, and when to look again at the
/// earliest. Taking them by time, not in key order, is what keeps a
/// document whose key sorts late from waiting behind every document that
/// arrives after it (key order is sender, then document id: an agency
/// sending without pause to a busy destination would hold back every agency
/// whose code sorts after its own). A time further off than any retry is
/// ever put is due now (the clock was set back).
fn due_deliveries(queue: &Queue<()>, lanes: &mut Lanes, now: u64) -> (Vec<Due>, u64) {
    let mut next_wake = now + 1000;
    let cap = millis(lanes.backoff.1);
    let mut waiting = Vec::new();
    for (destination, by_time) in &queue.by_destination {
        let in_flight = lanes.per_destination.get(destination).copied().unwrap_or(0);
        let mut free = lanes.allowed(destination).saturating_sub(in_flight);
        let times = by_time.keys();
        let stepped = times
            .clone()
            .rev()
            .take_while(|(at, _)| *at > now && *at - now > cap);
        for (at, key) in times.take_while(|(at, _)| *at <= now).chain(stepped) {
            if free == 0 {
                break;
            }
            if lanes.busy.contains(&key[..]) {
                continue;
            }
            if let Some(until) = lanes.held_until(key, now) {
                next_wake = next_wake.min(until);
                continue;
            }
            waiting.push((*at, &key[..]));
            free -= 1;
        }
        // The first entry not yet due, found without passing the due ones.
        let later = by_time
            .range((now.saturating_add(1), Arc::from(&[][..]))..)
            .next();
        if let Some(((at, _), ())) = later.filter(|((at, _), ())| *at - now <= cap) {
            next_wake = next_wake.min(*at);
        }
    }
    waiting.sort_unstable();
    let mut due = Vec::new();
    for (_, k) in waiting {
        if lanes.full() {
            break;
        }
        // Every key in the queue was parsed when it was put there.
        let Some(parts) = keys::parse_queue(k) else {
            continue;
        };
        // Checked again with this scan's starts counted (the node's last
        // quarter of slots).
        if !lanes.may_start(k, &parts.3) {
            continue;
        }
        lanes.start(k.to_vec(), &parts.3);
        due.push((k.to_vec(), parts));
    }
    (due, next_wake)
}

/// A status due now: its queue key, its lane and its destination.
type StatusDue = (Vec<u8>, Vec<u8>, String);

/// The statuses to relay now, in the order they were queued: per lane (a
/// document at a recipient) only its first, and not while that lane is in
/// flight or held back; and when to look again.
fn due_statuses(queue: &Queue<Vec<u8>>, lanes: &mut Lanes, now: u64) -> (Vec<StatusDue>, u64) {
    let mut next_wake = now + 1000;
    let mut waiting = Vec::new();
    for (destination, by_time) in &queue.by_destination {
        let in_flight = lanes.per_destination.get(destination).copied().unwrap_or(0);
        let mut free = lanes.allowed(destination).saturating_sub(in_flight);
        // Lanes whose first queued status this scan has passed: their later
        // statuses wait for it.
        let mut heads = HashSet::new();
        for ((_, key), lane) in by_time {
            if free == 0 {
                break;
            }
            if !heads.insert(lane) {
                continue;
            }
            if let Some(until) = lanes.held_until(lane, now) {
                next_wake = next_wake.min(until);
                continue;
            }
            if !lanes.may_start(lane, destination) {
                continue;
            }
            waiting.push((key, lane, destination));
            free -= 1;
        }
    }
    waiting.sort_unstable();
    let mut due = Vec::new();
    for (key, lane, destination) in waiting {
        if lanes.full() {
            break;
        }
        // Checked again with this scan's starts counted.
        if !lanes.may_start(lane, destination) {
            continue;
        }
        lanes.start(lane.clone(), destination);
        due.push((key.to_vec(), lane.clone(), destination.clone()));
    }
    (due, next_wake)
}

async fn deliveries(docs: Arc<Documents>, shutdown: Shutdown) {
    let hub = docs.hub.clone();
    let queue = Queue::empty(keys::QUEUE, "delivery", read_delivery);
    let Some(mut s) = Scheduler::new(&docs, &docs.queued, queue) else {
        return;
    };
    loop {
        s.resync(&docs).await;
        let (due, next_wake) = due_deliveries(&s.queue, &mut s.lanes, now_ms());
        for (k, (sender, doc, kind, recipient)) in due {
            let (d, hub) = (docs.clone(), hub.clone());
            let to = recipient.clone();
            spawn_attempt(
                async move { deliver_one(&d, hub, &sender, &doc, kind, &to).await },
                k,
                recipient,
                s.done_tx.clone(),
                shutdown.clone(),
            );
        }
        // A delivery's lane is its queue key.
        let ended = |lane: &[u8]| Some(lane.to_vec());
        if !s.next_event(&docs.store, ended, next_wake, &shutdown).await {
            return;
        }
    }
}

/// One delivery attempt, and its outcome recorded.
async fn deliver_one(
    docs: &Documents,
    hubs: crate::hubs::Hubs,
    sender: &str,
    doc: &str,
    kind: i32,
    recipient: &str,
) -> Outcome {
    let q_key = keys::queue(sender, doc, kind, recipient);
    let envelope = match keys::load::<Tracking>(&docs.store, &keys::outbox(sender, doc, kind)) {
        Ok(t) => t.and_then(|t| t.envelope),
        Err(_) => return Outcome::Hold,
    };
    let Some(envelope) = envelope else {
        tracing::error!(%sender, %doc, "queued delivery without its outbox entry; dropped");
        return dequeue(docs, &q_key).await;
    };
    // Its acceptance is on disk: the scheduler takes only durable entries.
    let bytes = envelope
        .attachments
        .iter()
        .fold(0u64, |sum, a| sum.saturating_add(a.size));
    let deadline = relay_deadline(&docs.service, bytes);
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
                    .send_chunks(a, i as u32, &tx, |chunk| RelayRequest {
                        part: Some(relay_request::Part::Chunk(chunk)),
                    })
                    .await;
                if sent.is_err() {
                    return;
                }
            }
        }
    };
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.set_timeout(deadline);
    // Each attempt to the next healthy replica: a document is idempotent
    // (its id), so one a replica may have relayed can go again elsewhere.
    let pick = hubs.pick();
    let mut hub = HubClient::new(pick.channel)
        .max_encoding_message_size(4 * 1024 * 1024)
        .max_decoding_message_size(4 * 1024 * 1024);
    let call = async { tokio::join!(hub.relay(request), feeder).0 };
    let result = match tokio::time::timeout(deadline, call).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the hub did not answer within {} ms",
            deadline.as_millis()
        ))),
    };
    if let Err(status) = &result {
        hubs.observe(pick.index, status);
    }
    let answered = result
        .as_ref()
        .map_or_else(|status| classify(status) == Retry::Never, |_| true);
    match record(docs, sender, doc, kind, recipient, result).await {
        Outcome::Answered if !answered => Outcome::Unanswered,
        recorded => recorded,
    }
}

/// The longest error text kept in tracking.
const MAX_ERROR: usize = 1024;

fn error_text(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if text.len() > MAX_ERROR {
        let mut end = MAX_ERROR;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Records a delivery attempt's outcome, under the lock.
async fn record(
    docs: &Documents,
    sender: &str,
    doc: &str,
    kind: i32,
    recipient: &str,
    result: Result<RelayResponse, Status>,
) -> Outcome {
    let q_key = keys::queue(sender, doc, kind, recipient);
    let r_key = keys::recipient(sender, doc, kind, recipient);
    let guard = docs.write_lock.lock().await;
    let mut r = match keys::load::<RecipientTracking>(&docs.store, &r_key) {
        Ok(Some(r)) => r,
        Ok(None) => RecipientTracking {
            recipient: recipient.to_string(),
            ..RecipientTracking::default()
        },
        Err(_) => return Outcome::Hold,
    };
    if Delivery::of(&r) == Delivery::Delivered && result.is_err() {
        // A late failure never undoes a delivery.
        return outcome(
            docs.commit(guard, removal(&q_key)).await,
            "remove a queue entry",
        );
    }
    r.attempts = r.attempts.saturating_add(1);
    let mut batch = WriteBatch::default();
    match result {
        Ok(response) => {
            Delivery::Delivered.set(&mut r);
            r.last_error.clear();
            r.next_attempt_unix_ms = 0;
            r.receipt = response.receipt;
            batch.remove(&q_key);
            // The recipient node's acknowledgement is status 01, unless a
            // later status came first (it implied 01).
            if kind == 0 && r.status.is_empty() {
                let history = keys::history_of(sender, doc, recipient);
                let events = docs.store.scan_prefix(&history).count();
                if events < docs.service.max_history {
                    let arrived = StatusEvent {
                        code: "01".into(),
                        description: "arrived".into(),
                        unix_ms: response.arrived_unix_ms,
                        by: recipient.to_string(),
                        staff: None,
                    };
                    r.status = "01".into();
                    batch.insert(
                        keys::history(
                            sender,
                            doc,
                            recipient,
                            u32::try_from(events).unwrap_or(u32::MAX),
                        ),
                        prost::Message::encode_to_vec(&arrived),
                    );
                }
            }
            tracing::info!(%sender, %doc, %recipient, "document delivered");
        }
        Err(status) => {
            r.last_error = error_text(&status);
            match classify(&status) {
                Retry::Never => {
                    Delivery::Failed.set(&mut r);
                    r.next_attempt_unix_ms = 0;
                    batch.remove(&q_key);
                    tracing::warn!(%sender, %doc, %recipient, error = %status, "delivery refused; not retried");
                }
                Retry::Later => {
                    let delay = backoff(r.attempts, docs.backoff);
                    let at = now_ms().saturating_add(millis(delay));
                    Delivery::Retrying.set(&mut r);
                    r.next_attempt_unix_ms = at;
                    batch.insert(&q_key, at.to_be_bytes());
                    tracing::debug!(%sender, %doc, %recipient, error = %status, ?delay, "delivery failed; will retry");
                }
            }
        }
    }
    // A change's delivery error is also shown in the document's own tracking.
    if kind != 0 {
        let main_key = keys::recipient(sender, doc, 0, recipient);
        if let Ok(Some(mut main)) = keys::load::<RecipientTracking>(&docs.store, &main_key) {
            main.last_error = r.last_error.clone();
            batch.insert(&main_key, prost::Message::encode_to_vec(&main));
        }
    }
    batch.insert(&r_key, prost::Message::encode_to_vec(&r));
    let recorded = outcome(docs.commit(guard, batch).await, "record a delivery outcome");
    if recorded == Outcome::Answered {
        docs.tracking_changed(sender, doc);
    }
    recorded
}

/// The lane of a status: its document at its recipient (statuses of one
/// lane go in order).
fn status_lane(update: &StatusUpdate) -> Vec<u8> {
    let mut lane = b"status\0".to_vec();
    for part in [&update.sender, &update.document_id, &update.recipient] {
        lane.extend_from_slice(&(part.len() as u64).to_be_bytes());
        lane.extend_from_slice(part.as_bytes());
    }
    lane
}

async fn statuses(docs: Arc<Documents>, shutdown: Shutdown) {
    let hub = docs.hub.clone();
    let queue = Queue::empty(keys::STATUS_QUEUE, "status", read_status);
    let Some(mut s) = Scheduler::new(&docs, &docs.status_queued, queue) else {
        return;
    };
    s.lanes.hold_unanswered = true;
    // The queue key of each lane in flight.
    let mut in_flight: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    loop {
        s.resync(&docs).await;
        let (due, next_wake) = due_statuses(&s.queue, &mut s.lanes, now_ms());
        for (key, lane, destination) in due {
            let update = match docs.store.get(&key) {
                Ok(Some(v)) => prost::Message::decode(v.as_slice()).ok(),
                _ => None,
            };
            let Some(update) = update else {
                // Gone or unreadable since it was read: read it again.
                let _ = s.lanes.finish((lane, destination, Outcome::Hold));
                s.queue.refresh(&docs.store, &key);
                continue;
            };
            in_flight.insert(lane.clone(), key.clone());
            let (d, hub) = (docs.clone(), hub.clone());
            spawn_attempt(
                async move { relay_one_status(&d, hub, key, update).await },
                lane,
                destination,
                s.done_tx.clone(),
                shutdown.clone(),
            );
        }
        let ended = |lane: &[u8]| in_flight.remove(lane);
        if !s.next_event(&docs.store, ended, next_wake, &shutdown).await {
            return;
        }
    }
}

/// One status relayed; dequeued once the hub has it or refuses it for good,
/// held back (in memory, with backoff) otherwise.
async fn relay_one_status(
    docs: &Documents,
    hubs: crate::hubs::Hubs,
    key: Vec<u8>,
    mut update: StatusUpdate,
) -> Outcome {
    // Its setting is on disk: the scheduler takes only durable entries.
    update.transaction_id = crate::new_transaction_id().unwrap_or_default();
    let deadline = Duration::from_millis(docs.service.status_deadline_ms);
    let mut request = tonic::Request::new(update);
    request.set_timeout(deadline);
    let pick = hubs.pick();
    let mut hub = HubClient::new(pick.channel);
    let result = match tokio::time::timeout(deadline, hub.relay_status(request)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the hub did not answer within {} ms",
            deadline.as_millis()
        ))),
    };
    if let Err(status) = &result {
        hubs.observe(pick.index, status);
    }
    match result {
        Ok(()) => dequeue(docs, &key).await,
        Err(status) if classify(&status) == Retry::Never => {
            tracing::warn!(error = %status, "status refused by the hub; dropped");
            dequeue(docs, &key).await
        }
        Err(status) => {
            tracing::debug!(error = %status, "status not relayed; will retry");
            // Held back in memory ([`Lanes::hold_unanswered`]), and its
            // destination marked as not answering.
            Outcome::Unanswered
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_no_retry_can_fix_are_final() {
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::OutOfRange,
            Code::PermissionDenied,
            Code::NotFound,
            Code::AlreadyExists,
        ] {
            assert_eq!(classify(&Status::new(code, "x")), Retry::Never, "{code:?}");
        }
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
            Code::Unknown,
            Code::Cancelled,
            Code::Aborted,
        ] {
            assert_eq!(classify(&Status::new(code, "x")), Retry::Later, "{code:?}");
        }
        let size = Status::resource_exhausted(
            "message length too large: found 9000000 bytes, the limit is: 4194304 bytes",
        );
        assert_eq!(classify(&size), Retry::Never);
        let busy = Status::resource_exhausted("too many concurrent streams");
        assert_eq!(classify(&busy), Retry::Later);
    }

    #[test]
    fn relay_deadline_grows_with_size() {
        let s = DocumentService::default();
        assert_eq!(relay_deadline(&s, 0), Duration::from_secs(30));
        assert_eq!(relay_deadline(&s, 1 << 30), Duration::from_secs(30 + 1024));
        assert!(relay_deadline(&s, u64::MAX) > Duration::from_secs(1 << 20));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let b = (Duration::from_millis(100), Duration::from_secs(1));
        for attempts in 1..40 {
            let d = backoff(attempts, b);
            let full = Duration::from_millis(100)
                .saturating_mul(1 << (attempts - 1).min(20))
                .min(Duration::from_secs(1));
            assert!(d >= full / 2 && d <= full, "{attempts}: {d:?}");
        }
    }

    /// A queue in a store of its own, holding what `put` puts in it.
    fn queue() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        (dir, store)
    }

    fn put(store: &Store, sender: &str, doc: &str, at: u64) -> Vec<u8> {
        let key = keys::queue(sender, doc, 0, "R");
        let mut b = WriteBatch::default();
        b.insert(&key, at.to_be_bytes());
        store.apply_journaled(keys::JOURNAL, b).expect("queue");
        key
    }

    /// Waits (without sleeping) until `done` holds, failing after 10 s.
    async fn until(mut done: impl FnMut() -> bool, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn the_waiting_count_is_the_schedulers_once_it_runs() {
        use crate::docs::testing::docs_with;
        let (_dir, mut docs) = docs_with(DocumentService::default()).await;
        // Entries an hour off, within the longest retry: none is attempted
        // while the test runs (an attempt would write its entry again).
        Arc::get_mut(&mut docs).expect("not shared yet").backoff =
            (Duration::from_secs(3600), Duration::from_secs(7200));
        // Before any scheduler runs, the count is read from the store.
        let a = put(&docs.store, "A", "a", now_ms() + 3_600_000);
        assert_eq!(docs.queue_lengths(), (1, 0));
        let shutdown = Shutdown::new();
        spawn_workers(docs.clone(), shutdown.clone());
        until(
            || {
                docs.queued
                    .waiting
                    .load(std::sync::atomic::Ordering::Relaxed)
                    == 1
            },
            "the scheduler counts the entry it read",
        )
        .await;
        // A new entry counts once its writer tells the scheduler of it…
        let b = put(&docs.store, "B", "b", now_ms() + 3_600_000);
        assert_eq!(docs.queue_lengths(), (1, 0), "not told of yet");
        docs.queued.send(b);
        until(|| docs.queue_lengths() == (2, 0), "the new entry counted").await;
        // …and one removed counts no more once the scheduler reads it again.
        let mut r = WriteBatch::default();
        r.remove(&a);
        docs.store
            .apply_journaled(keys::JOURNAL, r)
            .expect("dequeue");
        docs.queued.send(a);
        until(|| docs.queue_lengths() == (1, 0), "the entry gone").await;
        shutdown.trigger();
    }

    #[tokio::test]
    async fn only_a_queue_read_that_is_durable_is_delivered() {
        use std::sync::atomic::Ordering::SeqCst;

        use crate::docs::testing::{R, S, docs_counting_flush, sent};
        let (_dir, docs, failing, tried) = docs_counting_flush().await;
        // A send written but not flushed: its outbox, tracking and queue
        // entry are in the store, and every flush fails.
        failing.store(true, SeqCst);
        sent(&docs, 0);
        let q = keys::queue(S, crate::docs::testing::DOC, 0, R);
        let mut b = WriteBatch::default();
        b.insert(&q, now_ms().to_be_bytes());
        docs.store.apply_journaled(keys::JOURNAL, b).expect("queue");
        // Counted as a commit counts its writes.
        docs.flusher.wrote();
        let attempts = || {
            keys::load::<RecipientTracking>(
                &docs.store,
                &keys::recipient(S, crate::docs::testing::DOC, 0, R),
            )
            .expect("read")
            .map_or(0, |r| r.attempts)
        };
        let shutdown = Shutdown::new();
        spawn_workers(docs.clone(), shutdown.clone());
        // Both schedulers read their queue and found it not durable, twice.
        until(|| tried.load(SeqCst) >= 4, "flushes tried").await;
        assert_eq!(attempts(), 0, "nothing relayed while it is not on disk");
        assert_eq!(
            docs.queued.waiting.load(SeqCst),
            crate::docs::NOT_COUNTED,
            "the queue read was not taken"
        );
        // The disk is back: the entry is durable, and goes out (to a hub
        // that is not there, so its attempt is recorded as failed).
        failing.store(false, SeqCst);
        until(|| attempts() >= 1, "the delivery attempted").await;
        shutdown.trigger();
    }

    #[test]
    fn a_destination_back_after_not_answering_has_its_waiting_deliveries_due_now() {
        let (_dir, store) = queue();
        let service = DocumentService::default();
        let mut lanes = Lanes::new(&service, (Duration::from_secs(1), Duration::from_secs(60)));
        let end = |lanes: &mut Lanes, lane: &str, to: &str, outcome| {
            lanes.finish((lane.as_bytes().to_vec(), to.to_string(), outcome))
        };
        let now = now_ms();
        // R's entries wait out retry delays its outage left; another
        // destination's entry waits too.
        let late = put(&store, "A", "late", now + 50_000);
        let early = put(&store, "A", "early", now + 30_000);
        let other = keys::queue("A", "other", 0, "Q");
        let mut b = WriteBatch::default();
        b.insert(&other, (now + 30_000).to_be_bytes());
        store.apply_journaled(keys::JOURNAL, b).expect("queue");
        let mut q = Queue::deliveries(&store);
        assert!(due_deliveries(&q, &mut lanes, now).0.is_empty());
        // An answer alone says nothing new.
        assert_eq!(end(&mut lanes, "x", "R", Outcome::Answered), None);
        // R did not answer, then answers: it is back.
        assert_eq!(end(&mut lanes, "x", "R", Outcome::Unanswered), None);
        let back = end(&mut lanes, "x", "R", Outcome::Answered);
        assert_eq!(back.as_deref(), Some("R"));
        assert_eq!(q.bring_forward("R", now), 2);
        let (due, _) = due_deliveries(&q, &mut lanes, now);
        // In the order they were, and nothing of Q's.
        assert_eq!(
            due.iter().map(|d| &d.0).collect::<Vec<_>>(),
            [&early, &late]
        );
        // Back again at once: not twice within RECOVERY_EVERY (an entry
        // failing between answers is not retried on every answer).
        assert_eq!(end(&mut lanes, "y", "R", Outcome::Unanswered), None);
        assert_eq!(end(&mut lanes, "y", "R", Outcome::Answered), None);
        // Local trouble says nothing of the destination.
        assert_eq!(end(&mut lanes, "z", "Q", Outcome::Hold), None);
        assert_eq!(end(&mut lanes, "z", "Q", Outcome::Answered), None);
        // The stored times are what a read of the whole queue gives back.
        let q = Queue::deliveries(&store);
        assert!(due_deliveries(&q, &mut lanes, now).0.is_empty());
    }

    #[test]
    fn deliveries_start_oldest_first_whatever_their_keys() {
        let (_dir, store) = queue();
        let service = DocumentService {
            max_in_flight_per_destination: 2,
            ..DocumentService::default()
        };
        let mut lanes = Lanes::new(&service, (Duration::from_secs(1), Duration::from_secs(60)));
        let now = now_ms();
        // An agency whose code sorts last sent first; others sent after it,
        // without pause, and every one of theirs sorts before it.
        let late = put(&store, "Z", "first", now - 10);
        let mut sent = 0u64;
        let mut next = |store: &Store| {
            sent += 1;
            put(store, "A", &format!("doc-{sent:04}"), now - 5 + sent)
        };
        for _ in 0..4 {
            next(&store);
        }
        let (due, _) = due_deliveries(&Queue::deliveries(&store), &mut lanes, now + 100);
        let started: Vec<_> = due.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(started.len(), 2, "the destination's limit");
        assert_eq!(started[0], late, "the oldest goes first");
        assert_eq!(started[1], keys::queue("A", "doc-0001", 0, "R"));
        // Each finished delivery leaves the queue and its sender sends
        // another: the rest still go in the order they came.
        for k in started {
            let mut b = WriteBatch::default();
            b.remove(&k);
            store.apply_journaled(keys::JOURNAL, b).expect("dequeue");
            lanes.finish((k, "R".into(), Outcome::Answered));
            next(&store);
        }
        let (due, _) = due_deliveries(&Queue::deliveries(&store), &mut lanes, now + 100);
        let docs: Vec<_> = due.iter().map(|(_, p)| p.1.as_str()).collect();
        assert_eq!(docs, ["doc-0002", "doc-0003"]);
    }

    #[test]
    fn the_queue_in_memory_follows_each_entry_it_is_told_of() {
        let (_dir, store) = queue();
        let service = DocumentService::default();
        let mut lanes = Lanes::new(&service, (Duration::from_secs(1), Duration::from_secs(60)));
        let now = now_ms();
        let a = put(&store, "A", "a", now - 10);
        // A key that names no delivery is dropped when the queue is read.
        let mut b = WriteBatch::default();
        b.insert([keys::QUEUE, b"no-separators"].concat(), now.to_be_bytes());
        store.apply_journaled(keys::JOURNAL, b).expect("bad key");
        let mut q = Queue::deliveries(&store);
        assert_eq!(q.len(), 1);
        assert_eq!(
            store.scan_prefix(keys::QUEUE).count(),
            1,
            "dropped from the store"
        );
        // Written but not told of: the scheduler does not read the store.
        let b = put(&store, "B", "b", now - 20);
        let (due, _) = due_deliveries(&q, &mut lanes, now);
        assert_eq!(due.iter().map(|d| &d.0).collect::<Vec<_>>(), [&a]);
        q.refresh(&store, &b);
        lanes.finish((a.clone(), "R".into(), Outcome::Unanswered));
        // The attempt on A rescheduled it in 30 s; B is older.
        put(&store, "A", "a", now + 30_000);
        q.refresh(&store, &a);
        let (due, next_wake) = due_deliveries(&q, &mut lanes, now);
        assert_eq!(due.iter().map(|d| &d.0).collect::<Vec<_>>(), [&b]);
        assert_eq!(next_wake, now + 1000);
        // B delivered and gone from the store: gone from the queue too.
        let mut r = WriteBatch::default();
        r.remove(&b);
        store.apply_journaled(keys::JOURNAL, r).expect("dequeue");
        q.refresh(&store, &b);
        lanes.finish((b, "R".into(), Outcome::Answered));
        assert_eq!(q.len(), 1);
        let (due, _) = due_deliveries(&q, &mut lanes, now + 30_000);
        assert_eq!(due.iter().map(|d| &d.0).collect::<Vec<_>>(), [&a]);
    }

    #[test]
    fn statuses_go_in_order_per_lane_and_lanes_apart() {
        let (_dir, store) = queue();
        let service = DocumentService::default();
        let mut lanes = Lanes::new(&service, (Duration::from_secs(1), Duration::from_secs(60)));
        let status = |seq: u64, sender: &str, doc: &str, code: &str| {
            let update = StatusUpdate {
                sender: sender.into(),
                document_id: doc.into(),
                recipient: "R".into(),
                event: Some(StatusEvent {
                    code: code.into(),
                    ..StatusEvent::default()
                }),
                ..StatusUpdate::default()
            };
            let mut b = WriteBatch::default();
            b.insert(keys::status(seq), prost::Message::encode_to_vec(&update));
            store.apply_journaled(keys::JOURNAL, b).expect("queue");
            keys::status(seq)
        };
        let first = status(0, "S", "a", "03");
        let second = status(1, "S", "a", "04");
        let other_doc = status(2, "S", "b", "03");
        let other_sender = status(3, "T", "c", "03");
        let mut q = Queue::statuses(&store);
        let now = now_ms();
        let (due, _) = due_statuses(&q, &mut lanes, now);
        let keys: Vec<_> = due.iter().map(|d| &d.0).collect();
        assert_eq!(keys, [&first, &other_doc, &other_sender], "04 waits for 03");
        // 03 relayed and dequeued: 04 goes next, on the same lane.
        let (_, lane, destination) = due[0].clone();
        store
            .apply_journaled(keys::JOURNAL, removal(&first))
            .expect("dequeue");
        q.refresh(&store, &first);
        lanes.finish((lane.clone(), destination, Outcome::Answered));
        let (due, _) = due_statuses(&q, &mut lanes, now);
        assert_eq!(due.iter().map(|d| &d.0).collect::<Vec<_>>(), [&second]);
        assert_eq!(due[0].1, lane);
    }

    #[test]
    fn a_queued_time_further_off_than_any_retry_is_due_now() {
        let (_dir, store) = queue();
        let service = DocumentService::default();
        let cap = Duration::from_secs(60);
        let mut lanes = Lanes::new(&service, (Duration::from_secs(1), cap));
        let now = now_ms();
        // Accepted before the clock was set back an hour.
        put(&store, "A", "before-the-step", now + 3_600_000);
        let retry = put(&store, "A", "retry-in-30s", now + 30_000);
        let (due, next_wake) = due_deliveries(&Queue::deliveries(&store), &mut lanes, now);
        let docs: Vec<_> = due.iter().map(|(_, p)| p.1.as_str()).collect();
        assert_eq!(docs, ["before-the-step"]);
        assert_eq!(next_wake, now + 1000, "looks again within a second");
        let (due, _) = due_deliveries(&Queue::deliveries(&store), &mut lanes, now + 30_000);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, retry);
    }

    /// Lanes and the attempts started on them, each on a lane of its own.
    struct Flight {
        lanes: Lanes,
        started: usize,
        in_flight: Vec<(Vec<u8>, String)>,
    }

    impl Flight {
        /// Lanes of a node with `total` slots, `per_destination` at most.
        fn of(total: usize, per_destination: usize) -> Flight {
            let service = DocumentService {
                max_in_flight: total,
                max_in_flight_per_destination: per_destination,
                ..DocumentService::default()
            };
            Flight {
                lanes: Lanes::new(&service, (Duration::from_secs(5), Duration::from_secs(60))),
                started: 0,
                in_flight: Vec::new(),
            }
        }

        /// Starts attempts towards `d` until one more is refused or the node
        /// is full, as a scan does: how many.
        fn fill(&mut self, d: &str) -> usize {
            let mut n = 0;
            loop {
                let lane = format!("{d}{}", self.started).into_bytes();
                if self.lanes.full() || !self.lanes.may_start(&lane, d) {
                    return n;
                }
                self.lanes.start(lane.clone(), d);
                self.in_flight.push((lane, d.to_string()));
                self.started += 1;
                n += 1;
            }
        }

        /// Ends the oldest attempt towards `d` with `outcome`.
        fn end(&mut self, d: &str, outcome: Outcome) {
            let i = self.in_flight.iter().position(|f| f.1 == d).expect("one");
            let (lane, d) = self.in_flight.remove(i);
            let _ = self.lanes.finish((lane, d, outcome));
        }

        /// Fills `d`, then `rounds` times ends one answered and fills again:
        /// how many started each time.
        fn grow(&mut self, d: &str, rounds: usize) -> Vec<usize> {
            let mut started = vec![self.fill(d)];
            for _ in 0..rounds {
                self.end(d, Outcome::Answered);
                started.push(self.fill(d));
            }
            started
        }

        fn in_flight(&self, d: &str) -> usize {
            self.in_flight.iter().filter(|f| f.1 == d).count()
        }
    }

    #[test]
    fn a_destination_that_answers_gets_more_in_flight_and_one_that_does_not_less() {
        let mut f = Flight::of(64, 16);
        // Each attempt A answers makes room for two more: it grows by one.
        let started = f.grow("A", 12);
        assert_eq!(started, [vec![FIRST_ALLOWANCE], vec![2; 12]].concat());
        assert_eq!(f.in_flight("A"), 16);
        f.end("A", Outcome::Answered);
        assert_eq!(f.fill("A"), 1, "never more than the most allowed");
        // B stops answering: each attempt it does not answer halves it.
        assert_eq!(f.fill("B"), FIRST_ALLOWANCE);
        f.end("B", Outcome::Unanswered);
        assert_eq!(f.lanes.allowed("B"), 2);
        f.end("B", Outcome::Hold);
        f.end("B", Outcome::Unanswered);
        assert_eq!(f.lanes.allowed("B"), 1, "never below one");
        assert_eq!(f.fill("B"), 0, "one still in flight");
        f.end("B", Outcome::Unanswered);
        // Idle, B starts again at one: what it showed is kept.
        assert_eq!(f.fill("B"), 1);
        f.end("B", Outcome::Answered);
        assert_eq!(f.lanes.allowed("B"), 2);
        // A stays at the most allowed beside it, and once idle starts over.
        assert_eq!(f.in_flight("A"), 16);
        while f.in_flight("A") > 0 {
            f.end("A", Outcome::Answered);
        }
        assert_eq!(f.lanes.allowed("A"), FIRST_ALLOWANCE);
        assert_eq!(
            f.lanes.allowance.keys().collect::<Vec<_>>(),
            ["B"],
            "of idle destinations, only a reduced allowance is kept"
        );
    }

    #[test]
    fn grown_destinations_leave_the_last_quarter_of_the_slots_to_others() {
        let mut f = Flight::of(20, 16);
        f.grow("A", 12);
        assert_eq!(f.lanes.allowed("A"), 16);
        assert_eq!(f.in_flight("A"), 15, "not into the last 5 of 20 slots");
        // A stops answering with 15 in flight: B and C still get theirs.
        assert_eq!(f.fill("B"), FIRST_ALLOWANCE);
        assert_eq!(f.fill("C"), 1, "the node's last slot");
        assert!(f.lanes.full());
    }

    #[test]
    fn a_scan_leaves_the_last_quarter_of_the_slots_to_destinations_within_their_first() {
        let (_dir, store) = queue();
        let service = DocumentService {
            max_in_flight: 8,
            max_in_flight_per_destination: 16,
            ..DocumentService::default()
        };
        let mut lanes = Lanes::new(&service, (Duration::from_secs(1), Duration::from_secs(60)));
        // R has answered enough to be allowed 16.
        lanes.allowance.insert("R".into(), 16);
        let now = now_ms();
        for i in 0..10 {
            put(&store, "A", &format!("doc-{i:02}"), now - 100 + i);
        }
        let mut b = WriteBatch::default();
        let other = keys::queue("A", "doc-99", 0, "Q");
        b.insert(&other, now.to_be_bytes());
        store.apply_journaled(keys::JOURNAL, b).expect("queue");
        let (due, _) = due_deliveries(&Queue::deliveries(&store), &mut lanes, now);
        let to = |r: &str| due.iter().filter(|d| d.1.3 == r).count();
        // 8 slots, 2 of them the last quarter: R gets 6 of its 16, Q one.
        assert_eq!((to("R"), to("Q")), (6, 1));
    }

    #[test]
    fn statuses_held_for_a_destination_go_again_once_it_answers_again() {
        let service = DocumentService::default();
        let mut lanes = Lanes::new(&service, (Duration::from_secs(5), Duration::from_secs(60)));
        lanes.hold_unanswered = true;
        let now = now_ms();
        // Two lanes to S not answered: held back with backoff; one to T.
        for (lane, to) in [(&b"s1"[..], "S"), (b"s2", "S"), (b"t1", "T")] {
            lanes.start(lane.to_vec(), to);
            lanes.finish((lane.to_vec(), to.into(), Outcome::Unanswered));
            assert!(lanes.held_until(lane, now).is_some_and(|t| t > now), "held");
        }
        // S answers a third: S's lanes go again, T's stays held.
        lanes.start(b"s3".to_vec(), "S");
        assert_eq!(
            lanes.finish((b"s3".to_vec(), "S".into(), Outcome::Answered)),
            Some("S".into())
        );
        assert!(lanes.held_until(b"s1", now).is_none());
        assert!(lanes.held_until(b"s2", now).is_none());
        assert!(lanes.held_until(b"t1", now).is_some());
        // Deliveries hold nothing for an unanswered attempt (their stored
        // time says when they go).
        let mut deliveries =
            Lanes::new(&service, (Duration::from_secs(5), Duration::from_secs(60)));
        deliveries.start(b"d1".to_vec(), "S");
        deliveries.finish((b"d1".to_vec(), "S".into(), Outcome::Unanswered));
        assert!(deliveries.held_until(b"d1", now).is_none());
    }

    #[test]
    fn one_destination_full_does_not_stop_another_and_holds_back_off() {
        let service = DocumentService {
            max_in_flight_per_destination: 1,
            ..DocumentService::default()
        };
        let mut lanes = Lanes::new(&service, (Duration::from_secs(5), Duration::from_secs(60)));
        lanes.start(b"a1".to_vec(), "A");
        assert!(!lanes.may_start(b"a2", "A"), "A is at its limit");
        assert!(lanes.may_start(b"b1", "B"), "B is not held by A");
        assert!(!lanes.may_start(b"a1", "B"), "one lane runs once");
        lanes.finish((b"a1".to_vec(), "A".into(), Outcome::Hold));
        let now = now_ms();
        assert!(lanes.held_until(b"a1", now).is_some_and(|t| t > now));
        assert!(lanes.may_start(b"a2", "A"));
        lanes.start(b"a1".to_vec(), "A");
        lanes.finish((b"a1".to_vec(), "A".into(), Outcome::Answered));
        assert!(lanes.held_until(b"a1", now).is_none());
    }
}
