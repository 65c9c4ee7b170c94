//! Small documents: N senders in a closed loop, each sending one document
//! and following its tracking until "01" before the next.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use ring::digest::SHA256;
use tonic::Code;
use truc_client::{Client, Upload};
use truc_proto::v1::Attachment;

use crate::MAX_LATENCY_US;

use super::{DocsArgs, SMALL_TIMEOUT, common::*};

/// What one small-document sender saw.
pub(super) struct SmallTally {
    /// Send start to "01" seen, µs.
    pub(super) delivered_us: Histogram<u64>,
    /// Send start to `SendDocument` acknowledged, µs.
    pub(super) acked_us: Histogram<u64>,
    pub(super) errors: BTreeMap<&'static str, (u64, String)>,
    /// Documents sent whose wait for "01" the window's end cut short.
    pub(super) unfinished: Vec<String>,
}

impl SmallTally {
    pub(super) fn new() -> Result<SmallTally, String> {
        let h = || {
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .map_err(|e| format!("cannot make a histogram: {e}"))
        };
        Ok(SmallTally {
            delivered_us: h()?,
            acked_us: h()?,
            errors: BTreeMap::new(),
            unfinished: Vec::new(),
        })
    }

    pub(super) fn error(&mut self, failure: &Failure) {
        self.errors
            .entry(truc_ops::code_name(failure.code))
            .or_insert_with(|| (0, failure.message.clone()))
            .0 += 1;
    }

    pub(super) fn merge(&mut self, other: SmallTally) -> Result<(), String> {
        let bad = |e| format!("cannot merge histograms: {e:?}");
        self.delivered_us.add(&other.delivered_us).map_err(bad)?;
        self.acked_us.add(&other.acked_us).map_err(bad)?;
        for (code, (n, msg)) in other.errors {
            self.errors.entry(code).or_insert((0, msg)).0 += n;
        }
        self.unfinished.extend(other.unfinished);
        Ok(())
    }
}

pub(super) fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[derive(Clone, Copy)]
pub(super) struct Window {
    pub(super) measure: Instant,
    pub(super) end: Instant,
}

/// The bytes every small document's attachment starts from. Each document
/// writes its own number over the first of them, so that every attachment
/// is a new file at each node: blobs are stored by their SHA-256, and one
/// attachment sent again would be found there and never written.
pub(super) type Tiny = Bytes;

/// The attachment of document `number`: its description and its bytes.
pub(super) fn attachment_for(tiny: &Tiny, number: &str) -> (Attachment, Bytes) {
    let mut data = tiny.to_vec();
    let stamp = number.as_bytes();
    let n = stamp.len().min(data.len());
    data[..n].copy_from_slice(&stamp[..n]);
    let sha = Bytes::copy_from_slice(ring::digest::digest(&SHA256, &data).as_ref());
    let size = data.len() as u64;
    (attachment("tiny.bin", size, sha), Bytes::from(data))
}

/// One small document: sent through `truc_client`, then followed until "01"
/// (or `stop_at`). Returns its id and when it was acknowledged (if it was),
/// and how the wait ended.
pub(super) async fn one_small(
    client: &Client,
    number: &str,
    tiny: Option<&Tiny>,
    stop_at: Option<Instant>,
) -> (Option<(String, Instant)>, Result<Seen, Failure>) {
    let start = Instant::now();
    let uploads = tiny
        .iter()
        .map(|t| {
            let (a, data) = attachment_for(t, number);
            Upload::reader(a, std::io::Cursor::new(data))
        })
        .collect();
    let sent = tokio::time::timeout(
        SMALL_TIMEOUT,
        client.send_document(envelope(number, Vec::new()), uploads),
    )
    .await;
    let document_id = match sent {
        Ok(Ok(r)) => r.document_id,
        Ok(Err(e)) => return (None, Err(e.into())),
        Err(_) => {
            return (
                None,
                Err(Failure {
                    code: Code::DeadlineExceeded,
                    message: "SendDocument not acknowledged within truc-bench's timeout".into(),
                }),
            );
        }
    };
    let acked = Instant::now();
    let seen = wait_until_01(client, &document_id, start + SMALL_TIMEOUT, stop_at).await;
    (Some((document_id, acked)), seen)
}

/// One sender: send a document, wait until "01", repeat until the window
/// ends. A document counts if its "01" is seen inside the measured window.
pub(super) async fn small_sender(
    client: Client,
    task: u64,
    run: u64,
    tiny: Option<Arc<Tiny>>,
    window: Window,
) -> Result<SmallTally, String> {
    let mut tally = SmallTally::new()?;
    let mut n: u64 = 0;
    let in_window = |t: Instant| t >= window.measure && t <= window.end;
    while Instant::now() < window.end {
        n += 1;
        let number = format!("{run}-{task}-{n}");
        let start = Instant::now();
        let (acked, seen) = one_small(&client, &number, tiny.as_deref(), Some(window.end)).await;
        let done = Instant::now();
        match (acked, seen) {
            (Some((_, acked)), Ok(Seen::Delivered)) if in_window(done) => {
                tally.delivered_us.saturating_record(us(done - start));
                tally.acked_us.saturating_record(us(acked - start));
            }
            (Some((document_id, _)), Ok(Seen::WindowEnded)) => {
                tally.unfinished.push(document_id);
            }
            (_, Ok(_)) => {}
            (_, Err(failure)) => {
                if in_window(done) {
                    tally.error(&failure);
                }
            }
        }
    }
    Ok(tally)
}

/// Waits (at most [`SMALL_TIMEOUT`]) until the documents whose wait the
/// window's end cut short are at "01" or failed, so that their deliveries
/// do not share the cores with what is measured next. Nothing is counted.
pub(super) async fn finish_deliveries(client: &Client, unfinished: &[String]) {
    let give_up = Instant::now() + SMALL_TIMEOUT;
    for document_id in unfinished {
        let _ = wait_until_01(client, document_id, give_up, None).await;
    }
}

pub(super) struct SmallOutcome {
    pub(super) tally: SmallTally,
    pub(super) seconds: f64,
}

impl SmallOutcome {
    pub(super) fn docs(&self) -> u64 {
        self.tally.delivered_us.len()
    }
    pub(super) fn rate(&self) -> f64 {
        self.docs() as f64 / self.seconds
    }
    pub(super) fn errors(&self) -> u64 {
        self.tally.errors.values().map(|(n, _)| n).sum()
    }
}

pub(super) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub(super) async fn small(client: &Client, args: &DocsArgs) -> Result<SmallOutcome, String> {
    let tiny = if args.attachment_bytes == 0 {
        None
    } else {
        Some(Arc::new(Bytes::from(vec![
            0x5a_u8;
            usize::try_from(
                args.attachment_bytes
            )
            .unwrap_or(0)
        ])))
    };
    // Document numbers must be new in every run against the same data.
    let run = truc_ops::now_ms() / 1000;
    // One document first: it opens the connections and checks the path works.
    let (_, first) = one_small(client, &format!("{run}-first"), tiny.as_deref(), None).await;
    if let Err(f) = first {
        return Err(format!(
            "small: the first document failed: {}: {}",
            truc_ops::code_name(f.code),
            f.message
        ));
    }
    let start = Instant::now();
    let measure = start + Duration::from_secs(args.warmup);
    let window = Window {
        measure,
        end: measure + Duration::from_secs(args.duration),
    };
    let mut tasks = Vec::new();
    for task in 0..args.senders {
        tasks.push(tokio::spawn(small_sender(
            client.clone(),
            task,
            run,
            tiny.clone(),
            window,
        )));
    }
    let mut total = SmallTally::new()?;
    for t in tasks {
        total.merge(
            t.await
                .map_err(|e| format!("small: a sender failed: {e}"))??,
        )?;
    }
    Ok(SmallOutcome {
        tally: total,
        seconds: args.duration as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_has_an_attachment_of_its_own_of_the_same_size() {
        let tiny = Bytes::from(vec![0x5a_u8; 1024]);
        let (a, data) = attachment_for(&tiny, "1700000000-3-17");
        let (b, _) = attachment_for(&tiny, "1700000000-3-18");
        assert_ne!(a.sha256, b.sha256, "a new blob at each node");
        assert_eq!((a.size, b.size, data.len()), (1024, 1024, 1024));
        assert_eq!(
            a.sha256.as_ref(),
            ring::digest::digest(&SHA256, &data).as_ref()
        );
        // Shorter than the number: the size is still the one asked for.
        let (c, data) = attachment_for(&Bytes::from_static(b"xy"), "123");
        assert_eq!((c.size, data.as_ref()), (2, b"12".as_ref()));
    }
}
