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

/// Changes spread over a few broadcast channels by a key (an agency, a
/// document): a watcher subscribes to its key's channel, so a change wakes
/// the watchers of one channel, not every watcher on the node (up to
/// `max_watchers`, 256 by default, for every change). Keys share channels:
/// a watcher still checks what it gets. The spread is keyed at random per
/// process, so no caller can choose keys that gather others' changes on
/// one channel.
pub(crate) struct Channels<T> {
    channels: Vec<broadcast::Sender<T>>,
    spread: std::hash::RandomState,
}

/// Channels per kind of change, and unread changes each keeps per
/// subscriber (far more than [`WATCH_BUFFER`]: a watcher keeps up with its
/// channel unless its caller stops reading, and that ends it first).
const CHANNELS: usize = 16;
const CHANNEL_CAPACITY: usize = 256;

impl<T: Clone> Channels<T> {
    pub(crate) fn new() -> Channels<T> {
        Channels {
            channels: (0..CHANNELS)
                .map(|_| broadcast::channel(CHANNEL_CAPACITY).0)
                .collect(),
            spread: std::hash::RandomState::new(),
        }
    }

    fn channel(&self, key: &[&str]) -> &broadcast::Sender<T> {
        let i = std::hash::BuildHasher::hash_one(&self.spread, key) as usize % self.channels.len();
        &self.channels[i]
    }

    /// Sends `change` to the watchers of `key` (and of the keys that share
    /// its channel): how many got it.
    pub(crate) fn send(&self, key: &[&str], change: T) -> usize {
        self.channel(key).send(change).unwrap_or(0)
    }

    /// The changes of `key`, from now on.
    pub(crate) fn subscribe(&self, key: &[&str]) -> broadcast::Receiver<T> {
        self.channel(key).subscribe()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_reaches_its_keys_watchers_and_wakes_few_others() {
        let channels = Channels::<u32>::new();
        let keys: Vec<String> = (0..100).map(|i| format!("000.00.{i:02}.H37")).collect();
        let mut watchers: Vec<_> = keys.iter().map(|k| channels.subscribe(&[k])).collect();
        let sent = channels.send(&[&keys[7]], 42);
        assert_eq!(watchers[7].try_recv().expect("its own watcher"), 42);
        let woken = watchers
            .iter_mut()
            .map(|w| w.try_recv())
            .filter(Result::is_ok)
            .count()
            + 1;
        assert_eq!(sent, woken);
        // 100 keys over 16 channels: about 6 share a channel, never all.
        assert!(woken < 50, "{woken} of 100 watchers woken for one change");
        // The same key always goes to the same channel.
        let mut again = channels.subscribe(&[&keys[7]]);
        channels.send(&[&keys[7]], 43);
        assert_eq!(again.try_recv().expect("same channel"), 43);
    }
}
