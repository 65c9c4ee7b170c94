//! Which transaction ids a hub's log may hold, kept in memory so that a new
//! id (nearly every call) is known to be new without reading the store.
//!
//! The hub refuses a second transaction with an id it has recorded, so every
//! call looks its id up in the log's id index before it is forwarded. In
//! sled 0.34 that read waits on the process-wide lock the audit writer holds
//! while it applies a commit group (see `docs/performance.md`). A Bloom
//! filter of the recorded ids answers "not recorded" for a new id without
//! the store; only an id it may hold (one recorded, or a false positive, about
//! 1 in 100) is looked up. It never answers "not recorded" for an id in the
//! log: every id is added before the commit that records it, and the ids of
//! earlier runs are added from the index by a thread at start-up, during
//! which every id is looked up as before.
//!
//! The filters' hash keys are random per process, so that a caller cannot
//! choose ids that all fall on the same bits; the most such a caller could do
//! is what any repeated id does, a lookup in the store.

use std::sync::{
    Condvar, Mutex, RwLock,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use fastbloom::AtomicBloomFilter;
use truc_store::Store;

use crate::TX_PREFIX;

/// A transaction id as nodes issue them: 32 lowercase hex digits, the first
/// 12 the Unix time in milliseconds (48 bits), the other 20 random (80
/// bits). Ids issued later sort after earlier ones, so a hub's id index
/// takes each new id near the last instead of in a random leaf of its
/// B-tree (see `docs/adr/0021-time-ordered-transaction-ids.md`). Within a
/// millisecond the 80 random bits keep ids apart: even a whole day's 2.7
/// million ids issued within one second would collide with a chance below
/// 10^-14.
pub fn ordered_transaction_id(unix_ms: u64, random: &[u8; 10]) -> String {
    use std::fmt::Write;
    let mut id = String::with_capacity(crate::TRANSACTION_ID_LEN);
    let _ = write!(id, "{:012x}", unix_ms & 0xffff_ffff_ffff);
    for b in random {
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// The share of ids not recorded that a full filter still takes for recorded.
const FALSE_POSITIVES: f64 = 0.01;

/// The ids the first filter holds at [`FALSE_POSITIVES`] in a hub's log.
pub(crate) const FIRST_CAPACITY: usize = 1 << 20;

/// Filters are added, each holding twice the ids of the one before, while
/// all of them together hold no more than this many (255 Mi ids from a first of 1 Mi:
/// about 300 MiB of bits, some 90 days at the national rate of 2.7 million a
/// day). Past it, the last filter keeps taking ids beyond its size and
/// answers "may hold" more often: more lookups go to the store, as they
/// all did without a filter, and none is answered wrongly. A hub's
/// `id_filter_ids` sets another bound ([`crate::Options::id_filter_ids`]).
pub const DEFAULT_ID_FILTER_IDS: usize = 1 << 28;

/// The ids of a hub's log, as Bloom filters of growing size.
pub(crate) struct IdFilter {
    /// Each filter with the number of ids it was sized for; the last one
    /// takes new ids.
    filters: RwLock<Vec<(AtomicBloomFilter, usize)>>,
    /// Ids added to the last filter.
    in_last: AtomicUsize,
    /// Set once the ids of earlier runs have all been added.
    ready: AtomicBool,
    /// Set once the filling is over, whether or not it succeeded.
    finished: (Mutex<bool>, Condvar),
    /// Set when the log closes: the filling stops and lets the store go.
    cancelled: AtomicBool,
    seed: u128,
    /// [`DEFAULT_ID_FILTER_IDS`], or as configured.
    most: usize,
}

impl IdFilter {
    /// An empty filter whose first part holds `first` ids, growing while
    /// its parts together hold no more than `most`, with hash keys from `seed`
    /// (random, in production).
    pub(crate) fn new(first: usize, most: usize, seed: u128) -> IdFilter {
        let first = first.max(1);
        IdFilter {
            filters: RwLock::new(vec![(Self::sized(first, seed), first)]),
            in_last: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
            finished: (Mutex::new(false), Condvar::new()),
            cancelled: AtomicBool::new(false),
            seed,
            most,
        }
    }

    fn sized(ids: usize, seed: u128) -> AtomicBloomFilter {
        AtomicBloomFilter::with_false_pos(FALSE_POSITIVES)
            .seed(&seed)
            .expected_items(ids)
    }

    /// Adds an id (before the commit that records it).
    pub(crate) fn insert(&self, id: &[u8]) {
        let grow = {
            let filters = self.filters.read().unwrap_or_else(|e| e.into_inner());
            let (last, capacity) = filters.last().expect("one filter at least");
            last.insert(id);
            let held: usize = filters.iter().map(|(_, c)| c).sum();
            let n = self.in_last.fetch_add(1, Ordering::Relaxed) + 1;
            let next = capacity.saturating_mul(2);
            (n >= *capacity && held.saturating_add(next) <= self.most)
                .then_some((filters.len(), next))
        };
        if let Some((len, next)) = grow {
            let mut filters = self.filters.write().unwrap_or_else(|e| e.into_inner());
            // Another insert may have grown it meanwhile.
            if filters.len() == len {
                filters.push((Self::sized(next, self.seed), next));
                self.in_last.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Adds the ids of the log's index (those of earlier runs), then, if
    /// every one was read, lets [`IdFilter::may_hold`] answer. Runs on a
    /// thread of its own while the log is written: the writer adds the ids
    /// it commits meanwhile, so none is missed.
    pub(crate) fn fill(&self, store: &Store) {
        let mut added = 0u64;
        // Ok(false): stopped because the log closes.
        let mut read = || -> Result<bool, truc_store::StoreError> {
            for entry in store.scan_prefix(TX_PREFIX) {
                if self.cancelled.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                let (key, _) = entry?;
                self.insert(&key[TX_PREFIX.len()..]);
                added += 1;
            }
            Ok(true)
        };
        match read() {
            Ok(all) => {
                tracing::debug!(ids = added, all, "the filter of transaction ids is filled");
                self.finish(all);
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "the filter of transaction ids could not be filled; every id is looked up in the log"
                );
                self.finish(false);
            }
        }
    }

    /// Ends the filling: with `ready`, a `false` from
    /// [`IdFilter::may_hold`] is an answer from now on.
    pub(crate) fn finish(&self, ready: bool) {
        if ready {
            self.ready.store(true, Ordering::Release);
        }
        let (done, changed) = &self.finished;
        *done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        changed.notify_all();
    }

    /// Stops the filling and waits for it: the log is closing, and the
    /// store must be free to open again.
    pub(crate) fn stop_filling(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
        self.wait_filled();
    }

    /// Waits until the filling is over; whether the filter answers.
    pub(crate) fn wait_filled(&self) -> bool {
        let (done, changed) = &self.finished;
        let mut over = done.lock().unwrap_or_else(|e| e.into_inner());
        while !*over {
            over = changed.wait(over).unwrap_or_else(|e| e.into_inner());
        }
        self.is_ready()
    }

    /// Whether the ids of earlier runs have all been added.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// `false` only if `id` is in no record of the log; `true` when it may
    /// be (and always, until the ids of earlier runs are all in).
    pub(crate) fn may_hold(&self, id: &[u8]) -> bool {
        if !self.is_ready() {
            return true;
        }
        let filters = self.filters.read().unwrap_or_else(|e| e.into_inner());
        filters.iter().any(|(f, _)| f.contains(id))
    }

    /// How many filters there are (tests).
    #[cfg(test)]
    fn parts(&self) -> usize {
        self.filters.read().map(|f| f.len()).unwrap_or(0)
    }
}

/// A random seed for a filter's hash keys.
pub(crate) fn random_seed() -> u128 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // Without randomness the keys are only less secret: a caller who knew
    // them could make more ids look recorded, each a lookup in the store.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        tracing::warn!(
            "no system randomness for the filter of transaction ids: its hash keys are fixed"
        );
    }
    u128::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_ids_carry_their_millisecond_first_and_sort_by_it() {
        let low = [0u8; 10];
        let high = [0xffu8; 10];
        let id = ordered_transaction_id(0x0193_8a2b_4c5d, &[0xab; 10]);
        assert_eq!(id, format!("01938a2b4c5d{}", "ab".repeat(10)));
        assert_eq!(id.len(), crate::TRANSACTION_ID_LEN);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        // A later millisecond sorts after, whatever the random bits.
        for ms in [0u64, 1, 0xfff, 0x0193_8a2b_4c5d, (1 << 48) - 2] {
            assert!(ordered_transaction_id(ms, &high) < ordered_transaction_id(ms + 1, &low));
        }
        // Only the low 48 bits of the time are kept (year 10889 and on wrap).
        assert_eq!(
            ordered_transaction_id(1 << 48, &low),
            ordered_transaction_id(0, &low)
        );
    }

    fn id(i: u64) -> Vec<u8> {
        format!("tx-{i}").into_bytes()
    }

    #[test]
    fn before_it_is_ready_every_id_may_be_held() {
        let f = IdFilter::new(16, DEFAULT_ID_FILTER_IDS, 7);
        assert!(f.may_hold(b"never-added"));
        f.finish(true);
        assert!(!f.may_hold(b"never-added"));
    }

    #[test]
    fn every_added_id_is_held_as_the_filter_grows_and_few_others_are() {
        let f = IdFilter::new(64, DEFAULT_ID_FILTER_IDS, 1);
        f.finish(true);
        for i in 0..20_000 {
            f.insert(&id(i));
        }
        // 64, 128, ... 16 384: nine parts hold the 20 000.
        assert_eq!(f.parts(), 9);
        assert!((0..20_000).all(|i| f.may_hold(&id(i))), "a false negative");
        let false_positives = (1_000_000..1_020_000)
            .filter(|&i| f.may_hold(&id(i)))
            .count();
        // Nine parts at 1% each: under 9%, and far from all.
        assert!(
            false_positives < 20_000 * 9 / 100,
            "{false_positives} of 20 000"
        );
    }

    #[test]
    fn growth_stops_at_the_most_ids_and_the_last_part_keeps_taking_them() {
        // Parts of 4, 8 and 16 hold 28 ids; a fourth would pass 30.
        let f = IdFilter::new(4, 30, 3);
        f.finish(true);
        for i in 0..1_000 {
            f.insert(&id(i));
        }
        assert_eq!(f.parts(), 3);
        assert!((0..1_000).all(|i| f.may_hold(&id(i))), "a false negative");
    }

    #[test]
    fn seeds_differ_between_filters() {
        assert_ne!(random_seed(), random_seed());
    }
}
