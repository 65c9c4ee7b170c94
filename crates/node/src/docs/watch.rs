//! Server streams that follow changes as they happen (`WatchInbox`,
//! `WatchTracking`): one mechanism for both. A watcher holds a slot, limited
//! per agency and on the node (RESOURCE_EXHAUSTED beyond), given back as soon
//! as it is dropped or its caller disconnects; a watcher that leaves
//! [`WATCH_BUFFER`]` - 1` messages unread is ended with RESOURCE_EXHAUSTED.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Messages a watcher may leave unread before it is dropped (plus one slot
/// for the reason).
pub(crate) const WATCH_BUFFER: usize = 65;

/// Subscribers of every watch, in total and per agency.
#[derive(Default)]
pub(crate) struct Watchers {
    total: usize,
    per_agency: HashMap<String, usize>,
}

/// A subscriber's slot, given back when it is dropped.
pub(crate) struct WatchSlot {
    watchers: Arc<Mutex<Watchers>>,
    agency: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        if let Ok(mut w) = self.watchers.lock() {
            w.total = w.total.saturating_sub(1);
            if let Some(n) = w.per_agency.get_mut(&self.agency) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    w.per_agency.remove(&self.agency);
                }
            }
        }
    }
}

/// A watcher's slot for `agency` in `watchers`, if both limits allow one more.
pub(crate) fn slot(
    watchers: &Arc<Mutex<Watchers>>,
    agency: &str,
    per_agency: usize,
    total: usize,
) -> Result<WatchSlot, Status> {
    let mut w = watchers
        .lock()
        .map_err(|_| Status::internal("watchers poisoned"))?;
    let mine = w.per_agency.get(agency).copied().unwrap_or(0);
    if mine >= per_agency {
        return Err(Status::resource_exhausted(format!(
            "{agency} already has {mine} watchers, the most allowed"
        )));
    }
    if w.total >= total {
        return Err(Status::resource_exhausted(
            "this node has as many watchers as it allows",
        ));
    }
    w.total += 1;
    *w.per_agency.entry(agency.to_string()).or_default() += 1;
    Ok(WatchSlot {
        watchers: watchers.clone(),
        agency: agency.to_string(),
    })
}

/// What one watcher makes of the notifications it receives.
pub(crate) trait Feed: Send + 'static {
    type Event: Clone + Send + 'static;
    type Item: Send + 'static;
    /// What the caller should do after the watch ends for being too slow.
    const AGAIN: &'static str;
    /// The message `event` means for this watcher; `Ok(None)` skips it, an
    /// error ends the watch with it.
    fn item(&mut self, event: Self::Event) -> Result<Option<Self::Item>, Status>;
    /// After `missed` notifications were lost: a message that makes up for
    /// them, or an error that ends the watch.
    fn lagged(&mut self, missed: u64) -> Result<Option<Self::Item>, Status>;
}

/// A stream of `first` (when given), then what `feed` makes of each event
/// of `events`, until the caller closes it; `slot` is held meanwhile.
pub(crate) fn spawn<F: Feed>(
    slot: WatchSlot,
    mut events: broadcast::Receiver<F::Event>,
    first: Option<F::Item>,
    mut feed: F,
) -> ReceiverStream<Result<F::Item, Status>> {
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    if let Some(first) = first {
        // The channel is new and empty: this cannot fail for lack of room.
        let _ = tx.try_send(Ok(first));
    }
    tokio::spawn(async move {
        let _slot = slot;
        loop {
            let ev = tokio::select! {
                ev = events.recv() => ev,
                () = tx.closed() => return,
            };
            let item = match ev {
                Ok(ev) => feed.item(ev),
                Err(broadcast::error::RecvError::Lagged(n)) => feed.lagged(n),
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let item = match item {
                Ok(Some(item)) => item,
                Ok(None) => continue,
                Err(status) => {
                    let _ = tx.try_send(Err(status));
                    return;
                }
            };
            // The last slot is kept for the reason it ends.
            if tx.capacity() <= 1 {
                let _ = tx.try_send(Err(Status::resource_exhausted(format!(
                    "this watcher read none of the last {} messages; {}",
                    WATCH_BUFFER - 1,
                    F::AGAIN
                ))));
                return;
            }
            if tx.try_send(Ok(item)).is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
