//! Small documents: N senders in a closed loop, each sending one document
//! and polling its tracking until "01" before the next.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use ring::digest::SHA256;
use tonic::{Status, transport::Channel};
use truc_proto::v1::{
    Attachment, Chunk, SendDocumentRequest, agency_client::AgencyClient, send_document_request,
};

use crate::MAX_LATENCY_US;

use super::{DocsArgs, SMALL_TIMEOUT, common::*};

/// What one small-document sender saw.
pub(super) struct SmallTally {
    /// Send start to "01" seen, µs.
    pub(super) delivered_us: Histogram<u64>,
    /// Send start to `SendDocument` acknowledged, µs.
    pub(super) acked_us: Histogram<u64>,
    pub(super) errors: BTreeMap<&'static str, (u64, String)>,
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
        })
    }

    pub(super) fn error(&mut self, status: &Status) {
        self.errors
            .entry(truc_ops::code_name(status.code()))
            .or_insert_with(|| (0, status.message().to_owned()))
            .0 += 1;
    }

    pub(super) fn merge(&mut self, other: SmallTally) -> Result<(), String> {
        let bad = |e| format!("cannot merge histograms: {e:?}");
        self.delivered_us.add(&other.delivered_us).map_err(bad)?;
        self.acked_us.add(&other.acked_us).map_err(bad)?;
        for (code, (n, msg)) in other.errors {
            self.errors.entry(code).or_insert((0, msg)).0 += n;
        }
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

/// The messages of one small document (envelope and at most one chunk).
pub(super) fn small_messages(
    number: &str,
    tiny: Option<&(Attachment, Chunk)>,
) -> Vec<SendDocumentRequest> {
    let env = envelope(number, tiny.iter().map(|(a, _)| a.clone()).collect());
    let mut out = vec![SendDocumentRequest {
        part: Some(send_document_request::Part::Envelope(env)),
    }];
    if let Some((_, chunk)) = tiny {
        out.push(SendDocumentRequest {
            part: Some(send_document_request::Part::Chunk(chunk.clone())),
        });
    }
    out
}

/// One small document: sent, then polled until "01" (or `stop_at`).
/// Returns when it was acknowledged (if it was) and how the wait ended.
pub(super) async fn one_small(
    client: &mut AgencyClient<Channel>,
    number: &str,
    tiny: Option<&(Attachment, Chunk)>,
    poll: Duration,
    stop_at: Option<Instant>,
    polls: &AtomicU64,
) -> (Option<Instant>, Result<Seen, Status>) {
    let start = Instant::now();
    let sent = tokio::time::timeout(
        SMALL_TIMEOUT,
        client.send_document(tokio_stream::iter(small_messages(number, tiny))),
    )
    .await
    .unwrap_or_else(|_| {
        Err(Status::deadline_exceeded(
            "SendDocument not acknowledged within truc-bench's timeout",
        ))
    });
    let document_id = match sent {
        Ok(r) => r.into_inner().document_id,
        Err(status) => return (None, Err(status)),
    };
    let acked = Instant::now();
    let seen = poll_until_01(
        client,
        &document_id,
        poll,
        start + SMALL_TIMEOUT,
        stop_at,
        polls,
    )
    .await;
    (Some(acked), seen)
}

/// One sender: send a document, poll until "01", repeat until the window
/// ends. A document counts if its "01" is seen inside the measured window.
pub(super) async fn small_sender(
    mut client: AgencyClient<Channel>,
    task: u64,
    run: u64,
    tiny: Option<Arc<(Attachment, Chunk)>>,
    window: Window,
    poll: Duration,
    polls: Arc<AtomicU64>,
) -> Result<SmallTally, String> {
    let mut tally = SmallTally::new()?;
    let mut n: u64 = 0;
    let in_window = |t: Instant| t >= window.measure && t <= window.end;
    while Instant::now() < window.end {
        n += 1;
        let number = format!("{run}-{task}-{n}");
        let start = Instant::now();
        let (acked, seen) = one_small(
            &mut client,
            &number,
            tiny.as_deref(),
            poll,
            Some(window.end),
            &polls,
        )
        .await;
        let done = Instant::now();
        match (acked, seen) {
            (Some(acked), Ok(Seen::Delivered)) if in_window(done) => {
                tally.delivered_us.saturating_record(us(done - start));
                tally.acked_us.saturating_record(us(acked - start));
            }
            (_, Ok(_)) => {}
            (_, Err(status)) => {
                if in_window(done) {
                    tally.error(&status);
                }
            }
        }
    }
    Ok(tally)
}

pub(super) struct SmallOutcome {
    pub(super) tally: SmallTally,
    pub(super) seconds: f64,
    pub(super) polls: u64,
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

pub(super) async fn small(
    client: &AgencyClient<Channel>,
    args: &DocsArgs,
) -> Result<SmallOutcome, String> {
    let tiny = if args.attachment_bytes == 0 {
        None
    } else {
        let data = Bytes::from(vec![
            0x5a_u8;
            usize::try_from(args.attachment_bytes).unwrap_or(0)
        ]);
        let sha = Bytes::copy_from_slice(ring::digest::digest(&SHA256, &data).as_ref());
        Some(Arc::new((
            attachment("tiny.bin", args.attachment_bytes, sha),
            truc_doc::chunks::chunk(0, 0, data),
        )))
    };
    // Document numbers must be new in every run against the same data.
    let run = truc_ops::now_ms() / 1000;
    let poll = Duration::from_millis(args.poll_ms);
    // One document first: it opens the connections and checks the path works.
    let (_, first) = one_small(
        &mut client.clone(),
        &format!("{run}-first"),
        tiny.as_deref(),
        poll,
        None,
        &AtomicU64::new(0),
    )
    .await;
    if let Err(s) = first {
        return Err(format!(
            "small: the first document failed: {}: {}",
            truc_ops::code_name(s.code()),
            s.message()
        ));
    }
    let polls = Arc::new(AtomicU64::new(0));
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
            poll,
            polls.clone(),
        )));
    }
    // Polls counted over the measured window only.
    tokio::time::sleep_until(measure.into()).await;
    let polls_at_measure = polls.load(Ordering::Relaxed);
    tokio::time::sleep_until(window.end.into()).await;
    let polls_in_window = polls.load(Ordering::Relaxed) - polls_at_measure;
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
        polls: polls_in_window,
    })
}
