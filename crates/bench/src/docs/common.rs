//! What the measurements share: the pseudo-random attachment bytes, the
//! benchmark documents, waiting (on the tracking watch) until "01", and
//! units.

use std::{
    pin::Pin,
    task::{Context as TaskContext, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use ring::digest::{Context, SHA256};
use tokio::{
    io::{AsyncRead, ReadBuf},
    sync::mpsc,
};
use tonic::Code;
use truc_client::Client;
use truc_demo::{G22, H37};
use truc_proto::v1::{Attachment, Chunk, Envelope, RecipientTracking};

use super::MIB;

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

/// The bytes of a [`Generated`] attachment as a reader, made chunk by chunk
/// as they are read (one chunk in memory at a time), for `truc_client`'s
/// `Upload::reader`.
pub(super) struct GeneratedReader {
    data: Generated,
    next: u64,
    current: Bytes,
}

impl GeneratedReader {
    pub(super) fn new(data: Generated) -> GeneratedReader {
        GeneratedReader {
            data,
            next: 0,
            current: Bytes::new(),
        }
    }
}

impl AsyncRead for GeneratedReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.current.is_empty() && this.next < this.data.chunks() {
            this.current = this.data.chunk(this.next).1;
            this.next += 1;
        }
        let n = this.current.len().min(buf.remaining());
        buf.put_slice(&this.current.split_to(n));
        Poll::Ready(Ok(()))
    }
}

/// Sends `first`, then every chunk of `data` (attachment 0, each with its
/// SHA-256, as `truc send` does) wrapped by `wrap`, into `tx`: the raw
/// baseline's stream, which no client library sends. Stops quietly
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
    truc_doc::sample::envelope(H37, &[G22], number, attachments)
}

pub(super) use truc_doc::sample::attachment_of as attachment;

/// Why a document did not count: a gRPC code (as the error tallies name
/// them) and the first message.
pub(super) struct Failure {
    pub(super) code: Code,
    pub(super) message: String,
}

impl From<truc_client::Error> for Failure {
    fn from(e: truc_client::Error) -> Failure {
        let message = match (&e, e.status()) {
            (truc_client::Error::Timeout(_), _) => "not at 01 within truc-bench's timeout".into(),
            (_, Some(status)) => status.message().to_owned(),
            (_, None) => e.to_string(),
        };
        Failure {
            code: e.code(),
            message,
        }
    }
}

/// How a wait for "01" ended.
pub(super) enum Seen {
    Delivered,
    /// The window ended first (the document is not counted).
    WindowEnded,
}

/// Follows the sender's tracking of `document_id` (the node's
/// `WatchTracking` stream, through `truc_client`) until G22 is at "01", its
/// delivery has failed, `stop_at` (the window's end) or `give_up`.
pub(super) async fn wait_until_01(
    client: &Client,
    document_id: &str,
    give_up: Instant,
    stop_at: Option<Instant>,
) -> Result<Seen, Failure> {
    let window_first = stop_at.filter(|end| *end < give_up);
    let deadline = window_first.unwrap_or(give_up);
    let done = |r: &RecipientTracking| r.status == "01" || r.delivery == "failed";
    match client
        .wait_for_status(H37, document_id, G22, done, deadline)
        .await
    {
        Ok(r) if r.status == "01" => Ok(Seen::Delivered),
        Ok(r) => Err(Failure {
            code: Code::FailedPrecondition,
            message: format!("delivery failed: {}", r.last_error),
        }),
        Err(truc_client::Error::Timeout(_)) if window_first.is_some() => Ok(Seen::WindowEnded),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

pub(super) fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn the_reader_gives_the_generated_bytes_whose_sha256_was_declared() {
        let data = Generated {
            size: 10_000,
            chunk: 4096,
        };
        let mut read = Vec::new();
        GeneratedReader::new(data)
            .read_to_end(&mut read)
            .await
            .expect("read");
        let chunks: Vec<u8> = (0..data.chunks())
            .flat_map(|i| data.chunk(i).1.to_vec())
            .collect();
        assert_eq!(read.len(), 10_000);
        assert_eq!(read, chunks);
        assert_eq!(
            data.sha256().as_ref(),
            ring::digest::digest(&SHA256, &read).as_ref()
        );
        // Another chunk size makes other bytes: the size is part of the data.
        let other = Generated {
            size: 10_000,
            chunk: 1000,
        };
        assert_ne!(other.sha256(), data.sha256());
    }
}
