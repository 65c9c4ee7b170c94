//! What the measurements share: the pseudo-random attachment bytes, the
//! benchmark documents, polling the tracking until "01", and units.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use ring::digest::{Context, SHA256};
use tokio::sync::mpsc;
use tonic::{Status, transport::Channel};
use truc_demo::{G22, H37};
use truc_proto::v1::{
    Attachment, Chunk, DocumentCode, Envelope, GetTrackingRequest, Organ, PromulgationInfo,
    Tracking, agency_client::AgencyClient,
};

use super::{DATE, MIB};

/// The attachment: `size` bytes of pseudo-random data made chunk by chunk
/// from the chunk's index (splitmix64), so that it can be made twice (once
/// for its SHA-256, once to send) without ever being held whole.
#[derive(Clone, Copy)]
pub(super) struct Generated {
    pub(super) size: u64,
    pub(super) chunk: u64,
}

impl Generated {
    pub(super) fn chunks(self) -> u64 {
        self.size.div_ceil(self.chunk)
    }

    /// Chunk `i`: its offset and its bytes.
    pub(super) fn chunk(self, i: u64) -> (u64, Bytes) {
        let offset = i * self.chunk;
        let len = usize::try_from(self.chunk.min(self.size.saturating_sub(offset))).unwrap_or(0);
        let mut state = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x7275_6374_6265_6e63;
        let mut buf = Vec::with_capacity(len + 8);
        while buf.len() < len {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            buf.extend_from_slice(&z.to_le_bytes());
        }
        buf.truncate(len);
        (offset, Bytes::from(buf))
    }

    /// The SHA-256 of the whole attachment (made once, not timed).
    pub(super) fn sha256(self) -> Bytes {
        let mut hash = Context::new(&SHA256);
        for i in 0..self.chunks() {
            hash.update(&self.chunk(i).1);
        }
        Bytes::copy_from_slice(hash.finish().as_ref())
    }
}

/// Sends `first`, then every chunk of `data` (attachment 0, each with its
/// SHA-256, as `truc send` does) wrapped by `wrap`, into `tx`. Stops quietly
/// when the receiving side is gone (the call's error is the one to report).
pub(super) async fn feed<M>(first: M, data: Generated, tx: mpsc::Sender<M>, wrap: fn(Chunk) -> M) {
    if tx.send(first).await.is_err() {
        return;
    }
    for i in 0..data.chunks() {
        let (offset, bytes) = data.chunk(i);
        if tx
            .send(wrap(truc_doc::chunks::chunk(0, offset, bytes)))
            .await
            .is_err()
        {
            return;
        }
    }
}

pub(super) fn envelope(number: &str, attachments: Vec<Attachment>) -> Envelope {
    Envelope {
        from: Some(Organ {
            organ_id: H37.into(),
            organ_name: "UBND tỉnh Lạng Sơn".into(),
            ..Organ::default()
        }),
        to: vec![Organ {
            organ_id: G22.into(),
            ..Organ::default()
        }],
        code: Some(DocumentCode {
            code_number: number.into(),
            code_notation: "BENCH".into(),
        }),
        promulgation_info: Some(PromulgationInfo {
            place: "Lạng Sơn".into(),
            promulgation_date: DATE.into(),
        }),
        subject: "truc-bench".into(),
        document_id: truc_doc::DocumentId::format(H37, DATE, number, "BENCH"),
        attachments,
        ..Envelope::default()
    }
}

pub(super) fn attachment(name: &str, size: u64, sha256: Bytes) -> Attachment {
    Attachment {
        name: name.into(),
        content_type: "application/octet-stream".into(),
        size,
        sha256,
        description: String::new(),
    }
}

pub(super) fn g22_status(t: &Tracking) -> (&str, &str, &str) {
    t.recipients
        .iter()
        .find(|r| r.recipient == G22)
        .map_or(("", "", ""), |r| {
            (
                r.status.as_str(),
                r.delivery.as_str(),
                r.last_error.as_str(),
            )
        })
}

/// How a poll for "01" ended.
pub(super) enum Seen {
    Delivered,
    /// The window ended first (the document is not counted).
    WindowEnded,
}

/// Polls the sender's tracking of `document_id` every `poll` until G22 is
/// at "01"; `polls` counts the calls made.
pub(super) async fn poll_until_01(
    client: &mut AgencyClient<Channel>,
    document_id: &str,
    poll: Duration,
    give_up: Instant,
    stop_at: Option<Instant>,
    polls: &AtomicU64,
) -> Result<Seen, Status> {
    loop {
        tokio::time::sleep(poll).await;
        polls.fetch_add(1, Ordering::Relaxed);
        let t = client
            .get_tracking(GetTrackingRequest {
                sender: H37.into(),
                document_id: document_id.into(),
            })
            .await?
            .into_inner();
        match g22_status(&t) {
            ("01", _, _) => return Ok(Seen::Delivered),
            (_, "failed", error) => {
                return Err(Status::failed_precondition(format!(
                    "delivery failed: {error}"
                )));
            }
            _ => {}
        }
        let now = Instant::now();
        if stop_at.is_some_and(|end| now >= end) {
            return Ok(Seen::WindowEnded);
        }
        if now >= give_up {
            return Err(Status::deadline_exceeded(
                "not at 01 within truc-bench's timeout",
            ));
        }
    }
}

pub(super) fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

pub(super) fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64().max(1e-9)
}
