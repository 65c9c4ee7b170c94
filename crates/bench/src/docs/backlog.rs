//! A backlog: documents queued at the province node while the ministry node
//! is down, then delivered once it is back. What an outage leaves behind,
//! and how fast a node works it off: each delivery scan costs the
//! destinations with work, not the length of the queue (ADR 0023).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use truc_client::{Client, Upload};
use truc_demo::{Deployment, G22, H37, MINISTRY_NODE};

use super::{DocsArgs, SMALL_TIMEOUT, common::*, small::attachment_for};

/// The retry delays of the backlog's deployment (first, cap). Short by
/// default (100 ms, 1 s), so that what is measured is the delivery of the
/// backlog, not the wait for the next attempt after the outage.
pub(super) fn backlog_retry(args: &DocsArgs) -> (Duration, Duration) {
    (
        Duration::from_millis(args.retry_first_ms),
        Duration::from_millis(args.retry_cap_ms.max(args.retry_first_ms)),
    )
}

/// What the backlog run measured.
pub(super) struct BacklogOutcome {
    pub(super) documents: u64,
    /// Sending them all, the ministry node down (each acknowledged on disk
    /// at the province node).
    pub(super) queued: Duration,
    /// From the ministry node started again to every document at "01".
    pub(super) drained: Duration,
}

impl BacklogOutcome {
    pub(super) fn drained_per_s(&self) -> f64 {
        self.documents as f64 / self.drained.as_secs_f64().max(1e-9)
    }
}

/// Stops the ministry node, sends `args.backlog` documents from H37 to G22
/// with `args.senders` senders, starts the ministry node again and waits
/// until the province's tracking shows every one of them at "01".
pub(super) async fn backlog(
    deployment: &mut Deployment,
    client: &Client,
    args: &DocsArgs,
) -> Result<BacklogOutcome, String> {
    let documents = args.backlog;
    let stopped = deployment
        .stop_node(MINISTRY_NODE)
        .await
        .map_err(|e| format!("cannot stop the ministry node: {e}"))?;
    if !stopped {
        return Err("the deployment has no ministry node to stop".into());
    }
    let tiny = (args.attachment_bytes > 0)
        .then(|| bytes::Bytes::from(vec![0x5a; args.attachment_bytes as usize]));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..args.senders.min(documents) {
        let (client, next, tiny) = (client.clone(), next.clone(), tiny.clone());
        senders.spawn(async move {
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= documents {
                    return Ok::<_, String>(ids);
                }
                let number = format!("backlog-{n}");
                let (attachments, uploads) = match &tiny {
                    Some(t) => {
                        let (a, data) = attachment_for(t, &number);
                        (
                            vec![a.clone()],
                            vec![Upload::reader(a, std::io::Cursor::new(data))],
                        )
                    }
                    None => (Vec::new(), Vec::new()),
                };
                let sent = tokio::time::timeout(
                    SMALL_TIMEOUT,
                    client.send_document(envelope(&number, attachments), uploads),
                )
                .await
                .map_err(|_| format!("document {number} not acknowledged in time"))?
                .map_err(|e| format!("document {number} refused: {e}"))?;
                ids.push((n, sent.document_id));
            }
        });
    }
    let mut ids = Vec::with_capacity(documents as usize);
    while let Some(done) = senders.join_next().await {
        ids.extend(done.map_err(|e| format!("a sender failed: {e}"))??);
    }
    let queued = started.elapsed();
    ids.sort();
    tokio::time::sleep(Duration::from_secs(args.outage_secs)).await;
    // Nothing can have reached the ministry node meanwhile.
    if let Some((_, first)) = ids.first() {
        let t = client
            .tracking(H37, first)
            .await
            .map_err(|e| format!("the tracking of {first}: {e}"))?;
        if t.recipients.iter().any(|r| r.status == "01") {
            return Err(format!("{first} was delivered with the ministry node down"));
        }
    }
    deployment
        .restart_node(MINISTRY_NODE)
        .await
        .map_err(|e| format!("cannot start the ministry node again: {e}"))?;
    let back = Instant::now();
    let give_up = back + SMALL_TIMEOUT * 10;
    // Oldest first: the last document sent is among the last delivered
    // (at most the destination's allowance, 16, are in flight with it), so
    // it is waited for first. Then each of the others is read once, newest
    // first; one not yet at "01" is waited for, and the time counts to it.
    let Some((_, last)) = ids.last() else {
        return Err("no document was sent".into());
    };
    at_01(client, last, give_up).await?;
    let mut drained = back.elapsed();
    for (_, id) in ids.iter().rev().skip(1) {
        let t = client
            .tracking(H37, id)
            .await
            .map_err(|e| format!("the tracking of {id}: {e}"))?;
        let delivered = t
            .recipients
            .iter()
            .any(|r| r.recipient == G22 && r.status == "01");
        if !delivered {
            at_01(client, id, give_up).await?;
            drained = drained.max(back.elapsed());
        }
    }
    Ok(BacklogOutcome {
        documents,
        queued,
        drained,
    })
}

/// Waits until document `id` is at "01" for G22.
async fn at_01(client: &Client, id: &str, give_up: Instant) -> Result<(), String> {
    wait_until_01(client, id, give_up, None)
        .await
        .map(|_| ())
        .map_err(|f| {
            format!(
                "document {id} was not delivered: {:?} {}",
                f.code, f.message
            )
        })
}

/// Prints the backlog's outcome.
pub(super) fn print_backlog(b: &BacklogOutcome, args: &DocsArgs) {
    println!();
    println!(
        "backlog: {} documents {H37} -> {G22} sent while the ministry node was down (each acknowledged on disk at the province node), then the ministry node started again",
        b.documents
    );
    println!(
        "  queued in {:.2} s ({:.1} docs/s); all at 01 {:.2} s after the ministry node was back: {:.1} docs/s",
        b.queued.as_secs_f64(),
        b.documents as f64 / b.queued.as_secs_f64().max(1e-9),
        b.drained.as_secs_f64(),
        b.drained_per_s(),
    );
    let (first, cap) = backlog_retry(args);
    println!(
        "  the ministry node stayed down {} s more once all were queued; retry delays of this deployment: first {} ms, at most {} ms",
        args.outage_secs,
        first.as_millis(),
        cap.as_millis()
    );
}
