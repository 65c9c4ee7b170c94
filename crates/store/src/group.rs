//! Group flushing: many writers of one store, one flush for all of them that
//! wrote before it started, on a thread of its own.
//!
//! A writer applies its batch, calls [`GroupFlush::wrote`], lets go of
//! whatever lock it decided under, and only then waits in
//! [`GroupFlush::durable`] before it acknowledges. The writers that come
//! while a flush runs are made durable together by the next one, so a
//! flush's cost is shared by everyone it covers, and no async worker thread
//! is ever blocked in `fdatasync`.
//!
//! What `durable` covers is every write whose `wrote` returned before it was
//! called. A reader that answers from what it read (a repeated request told
//! it is a duplicate) must therefore make sure that the writer of what it
//! read has called `wrote`: the callers here do it by writing and calling
//! `wrote` under one lock, and by taking that lock once before such an
//! answer.

use std::sync::{
    Arc, Condvar, Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::watch;

use crate::StoreError;

/// What makes a store's writes durable; [`crate::Store::flush`] in use.
pub type FlushFn = Box<dyn Fn() -> Result<(), StoreError> + Send + Sync>;

/// A flushing thread shared by a store's writers. It stops when this is
/// dropped, after the flush asked for last.
pub struct GroupFlush {
    shared: Arc<Shared>,
}

struct Shared {
    flush: FlushFn,
    /// Writes so far (each writer's `wrote` counts one).
    written: AtomicU64,
    state: Mutex<State>,
    wake: Condvar,
    flushed: watch::Sender<Flushed>,
}

#[derive(Default)]
struct State {
    /// The most writes a waiter has asked to be covered.
    requested: u64,
    /// A waiter whose writes the last flush failed to cover asks for
    /// another attempt.
    again: bool,
    closed: bool,
    /// The flushing thread waits for a request (so a new one must wake
    /// it; when it is flushing it looks again before it waits, and a
    /// wake-up would be a system call for nothing).
    sleeping: bool,
}

/// How far the flushes have come.
#[derive(Clone, Default)]
struct Flushed {
    /// Writes covered by the last flush that succeeded.
    ok: u64,
    /// Writes covered by the last flush that failed, and its error.
    failed: u64,
    error: Option<Arc<str>>,
    /// Flushes finished, whatever their outcome.
    attempts: u64,
}

impl GroupFlush {
    /// Starts the thread `name` that makes writes durable with `flush`.
    pub fn start(name: &str, flush: FlushFn) -> std::io::Result<GroupFlush> {
        let shared = Arc::new(Shared {
            flush,
            written: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            flushed: watch::Sender::new(Flushed::default()),
        });
        let thread = shared.clone();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || thread.run())?;
        Ok(GroupFlush { shared })
    }

    /// Counts a write just applied: the next flush to start covers it.
    pub fn wrote(&self) {
        self.shared.written.fetch_add(1, Ordering::SeqCst);
    }

    /// Waits until every write counted before this call is durable, sharing
    /// the flush with every writer waiting meanwhile. The error of the
    /// flush that should have covered them, if it failed.
    pub async fn durable(&self) -> Result<(), StoreError> {
        let wanted = self.shared.written.load(Ordering::SeqCst);
        let mut flushed = self.shared.flushed.subscribe();
        let (seen, retry) = {
            let f = flushed.borrow_and_update();
            if f.ok >= wanted {
                return Ok(());
            }
            (f.attempts, f.failed >= wanted)
        };
        {
            let mut state = self.shared.lock();
            let news = wanted > state.requested || (retry && !state.again);
            state.requested = state.requested.max(wanted);
            // What failed to cover these writes is not an answer for a
            // caller that asks again: it gets an attempt of its own.
            state.again |= retry;
            if news && state.sleeping {
                self.shared.wake.notify_one();
            }
        }
        let now = flushed
            .wait_for(|f| f.ok >= wanted || (f.failed >= wanted && f.attempts > seen))
            .await
            .map_err(|_| StoreError::Flush("the store's flushing thread has stopped".into()))?;
        if now.ok >= wanted {
            return Ok(());
        }
        Err(StoreError::Flush(
            now.error.as_deref().unwrap_or("unknown error").to_string(),
        ))
    }
}

impl std::fmt::Debug for GroupFlush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flushed = self.shared.flushed.borrow();
        f.debug_struct("GroupFlush")
            .field("written", &self.shared.written.load(Ordering::SeqCst))
            .field("flushed", &flushed.ok)
            .finish_non_exhaustive()
    }
}

impl Drop for GroupFlush {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        // Writes covered by the last flush, whatever its outcome.
        let mut tried = 0;
        loop {
            {
                let mut state = self.lock();
                while state.requested <= tried && !state.again && !state.closed {
                    state.sleeping = true;
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    state.sleeping = false;
                }
                if state.requested <= tried && !state.again {
                    return;
                }
                state.again = false;
            }
            // Every write counted by now was applied before the flush
            // starts, so the flush covers it.
            let covers = self.written.load(Ordering::SeqCst);
            let result = (self.flush)();
            tried = covers;
            self.flushed.send_modify(|f| {
                f.attempts += 1;
                match result {
                    Ok(()) => f.ok = covers,
                    Err(e) => {
                        f.failed = covers;
                        f.error = Some(e.to_string().into());
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::AtomicBool, time::Instant};

    use super::*;

    /// A flush that counts its runs, fails while `failing` is set, and
    /// blocks while `held` is locked.
    struct Probe {
        entered: AtomicU64,
        runs: AtomicU64,
        failing: AtomicBool,
        held: Mutex<()>,
    }

    fn probed() -> (Arc<Probe>, GroupFlush) {
        let probe = Arc::new(Probe {
            entered: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            held: Mutex::new(()),
        });
        let p = probe.clone();
        let flush: FlushFn = Box::new(move || {
            p.entered.fetch_add(1, Ordering::SeqCst);
            let _held = p.held.lock().unwrap_or_else(PoisonError::into_inner);
            p.runs.fetch_add(1, Ordering::SeqCst);
            if p.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Flush("disk gone".into()));
            }
            Ok(())
        });
        (
            probe,
            GroupFlush::start("test-flush", flush).expect("thread"),
        )
    }

    /// Lets other tasks and threads run until `done`, for at most 30 s.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed().as_secs() < 30, "{what}: not within 30 s");
            tokio::task::yield_now().await;
            std::thread::yield_now();
        }
    }

    #[tokio::test]
    async fn nothing_written_needs_no_flush() {
        let (probe, group) = probed();
        group.durable().await.expect("durable");
        assert_eq!(probe.runs.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    #[expect(
        clippy::await_holding_lock,
        reason = "the lock holds the flushing thread inside its flush meanwhile"
    )]
    async fn writers_waiting_during_a_flush_share_the_next() {
        let (probe, group) = probed();
        let group = Arc::new(group);
        group.wrote();
        // The first flush is held inside the flush while eight more write.
        let held = probe.held.lock().expect("hold");
        let first = tokio::spawn({
            let g = group.clone();
            async move { g.durable().await }
        });
        until("the first flush starts", || {
            probe.entered.load(Ordering::SeqCst) == 1
        })
        .await;
        let mut waiting = Vec::new();
        for _ in 0..8 {
            group.wrote();
            let g = group.clone();
            waiting.push(tokio::spawn(async move { g.durable().await }));
        }
        tokio::task::yield_now().await;
        assert!(!first.is_finished(), "durable before its flush ended");
        drop(held);
        first.await.expect("join").expect("first");
        for w in waiting {
            w.await.expect("join").expect("durable");
        }
        assert_eq!(probe.runs.load(Ordering::SeqCst), 2, "9 writers, 2 flushes");
        // Already covered: no flush more.
        group.durable().await.expect("durable");
        assert_eq!(probe.runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_flush_fails_its_writers_and_asking_again_tries_again() {
        let (probe, group) = probed();
        probe.failing.store(true, Ordering::SeqCst);
        group.wrote();
        let err = group.durable().await.expect_err("the flush failed");
        assert!(err.to_string().contains("disk gone"), "{err}");
        assert_eq!(probe.runs.load(Ordering::SeqCst), 1);
        // Still failing: asked again, it tries again and fails again.
        let err = group.durable().await.expect_err("still failing");
        assert!(err.to_string().contains("disk gone"), "{err}");
        assert_eq!(probe.runs.load(Ordering::SeqCst), 2);
        // The disk is back: the same writes become durable.
        probe.failing.store(false, Ordering::SeqCst);
        group.durable().await.expect("flushed");
        assert_eq!(probe.runs.load(Ordering::SeqCst), 3);
        group.durable().await.expect("still flushed");
        assert_eq!(probe.runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn dropping_it_stops_its_thread() {
        let (probe, group) = probed();
        group.wrote();
        group.durable().await.expect("durable");
        drop(group);
        // The thread held the only other reference to the flush.
        until("the thread stops", || Arc::strong_count(&probe) == 1).await;
    }
}
