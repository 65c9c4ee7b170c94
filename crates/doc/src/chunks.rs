//! Checking attachment chunks as they stream past: each chunk's SHA-256,
//! offsets without gaps, sizes within what the envelope declared, and each
//! whole file's SHA-256 when its last byte has passed. Every hop runs one.
//! And the shape every document stream has: its opening message (the
//! envelope of a send, the header of a relay) first, then chunks only.

use ring::digest::{Context, SHA256};
use truc_proto::v1::{Chunk, Envelope};

use crate::error::Error;

/// The most bytes one chunk may carry.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// Checks the chunks of one envelope's attachments, in order.
pub struct AttachmentCheck {
    expected: Vec<(u64, [u8; 32])>,
    current: usize,
    offset: u64,
    hash: Context,
}

impl AttachmentCheck {
    /// A check for the attachments `envelope` declares.
    pub fn new(envelope: &Envelope) -> Result<AttachmentCheck, Error> {
        let mut expected = Vec::with_capacity(envelope.attachments.len());
        for (i, a) in envelope.attachments.iter().enumerate() {
            let sha: [u8; 32] = a
                .sha256
                .as_ref()
                .try_into()
                .map_err(|_| Error::Chunk(format!("attachments[{i}].sha256: not 32 bytes")))?;
            expected.push((a.size, sha));
        }
        let mut check = AttachmentCheck {
            expected,
            current: 0,
            offset: 0,
            hash: Context::new(&SHA256),
        };
        check.skip_complete()?;
        Ok(check)
    }

    /// Moves past attachments whose bytes are all in (empty ones at once).
    fn skip_complete(&mut self) -> Result<(), Error> {
        while let Some((size, sha)) = self.expected.get(self.current) {
            if self.offset < *size {
                break;
            }
            let hash = std::mem::replace(&mut self.hash, Context::new(&SHA256)).finish();
            if hash.as_ref() != sha {
                return Err(Error::Corrupt(format!(
                    "attachment {}: the file's sha256 does not match the envelope",
                    self.current
                )));
            }
            self.current += 1;
            self.offset = 0;
        }
        Ok(())
    }

    /// Checks the next chunk: [`Error::Corrupt`] when its bytes do not match,
    /// [`Error::Chunk`] when it is out of order or too large.
    pub fn check(&mut self, chunk: &Chunk) -> Result<(), Error> {
        let index = chunk.attachment as usize;
        if index != self.current {
            return Err(Error::Chunk(format!(
                "chunk for attachment {index} where attachment {} was expected",
                self.current
            )));
        }
        if chunk.offset != self.offset {
            return Err(Error::Chunk(format!(
                "attachment {index}: chunk at offset {} where {} was expected",
                chunk.offset, self.offset
            )));
        }
        if chunk.data.is_empty() || chunk.data.len() > MAX_CHUNK_BYTES {
            return Err(Error::Chunk(format!(
                "attachment {index}: chunks carry 1 to {MAX_CHUNK_BYTES} bytes, not {}",
                chunk.data.len()
            )));
        }
        let size = self.expected.get(index).map_or(0, |e| e.0);
        if self.offset.saturating_add(chunk.data.len() as u64) > size {
            return Err(Error::Chunk(format!(
                "attachment {index}: more bytes than the {size} declared"
            )));
        }
        if ring::digest::digest(&SHA256, &chunk.data).as_ref() != chunk.sha256.as_ref() {
            return Err(Error::Corrupt(format!(
                "attachment {index}: chunk at offset {} does not match its sha256",
                chunk.offset
            )));
        }
        self.hash.update(&chunk.data);
        self.offset += chunk.data.len() as u64;
        self.skip_complete()
    }

    /// Whether every attachment has arrived whole.
    pub fn finish(&self) -> Result<(), Error> {
        if self.current < self.expected.len() {
            return Err(Error::Chunk(format!(
                "attachment {} ended after {} of {} bytes",
                self.current, self.offset, self.expected[self.current].0
            )));
        }
        Ok(())
    }
}

/// A chunk of `data` at `offset` of attachment `attachment`, with its sha256.
pub fn chunk(attachment: u32, offset: u64, data: bytes::Bytes) -> Chunk {
    let sha = ring::digest::digest(&SHA256, &data);
    Chunk {
        attachment,
        offset,
        sha256: bytes::Bytes::copy_from_slice(sha.as_ref()),
        data,
    }
}

/// What a document stream opened with, when it was not its opening part.
#[derive(Debug)]
pub enum Opening {
    /// The stream failed before its first message.
    Stream(tonic::Status),
    /// The stream was empty or opened with something else; the reason.
    Missing(String),
}

/// INVALID_ARGUMENT for a missing opening; a stream's own status kept.
impl From<Opening> for tonic::Status {
    fn from(e: Opening) -> tonic::Status {
        match e {
            Opening::Stream(s) => s,
            Opening::Missing(reason) => tonic::Status::invalid_argument(reason),
        }
    }
}

/// The opening part of a document stream, called `what` in the error: what
/// `part` finds in the first message (`None` when it carries anything else).
pub async fn opening<M, P>(
    stream: &mut tonic::Streaming<M>,
    what: &str,
    part: impl FnOnce(M) -> Option<P>,
) -> Result<P, Opening> {
    match stream.message().await {
        Err(s) => Err(Opening::Stream(s)),
        Ok(first) => first
            .and_then(part)
            .ok_or_else(|| Opening::Missing(format!("the first message must be the {what}"))),
    }
}

/// The refusal of anything but a chunk after the opening part `what`.
pub fn only_chunks_after(what: &str) -> tonic::Status {
    tonic::Status::invalid_argument(format!("only chunks may follow the {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use truc_proto::v1::Attachment;

    fn envelope(files: &[&[u8]]) -> Envelope {
        Envelope {
            attachments: files
                .iter()
                .enumerate()
                .map(|(i, f)| Attachment {
                    name: format!("f{i}"),
                    content_type: "application/pdf".into(),
                    size: f.len() as u64,
                    sha256: Bytes::copy_from_slice(ring::digest::digest(&SHA256, f).as_ref()),
                    description: String::new(),
                })
                .collect(),
            ..Envelope::default()
        }
    }

    #[test]
    fn whole_files_in_order_pass() {
        let files: [&[u8]; 3] = [b"hello world", b"", b"abc"];
        let mut c = AttachmentCheck::new(&envelope(&files)).expect("check");
        c.check(&chunk(0, 0, Bytes::from_static(b"hello ")))
            .expect("1");
        assert!(c.finish().is_err(), "incomplete");
        c.check(&chunk(0, 6, Bytes::from_static(b"world")))
            .expect("2");
        c.check(&chunk(2, 0, Bytes::from_static(b"abc")))
            .expect("3");
        c.finish().expect("complete");
    }

    #[test]
    fn corrupted_chunk_is_data_loss() {
        let mut c = AttachmentCheck::new(&envelope(&[b"hello"])).expect("check");
        let mut bad = chunk(0, 0, Bytes::from_static(b"hello"));
        bad.data = Bytes::from_static(b"hellO");
        assert_eq!(
            c.check(&bad).expect_err("corrupt").code(),
            tonic::Code::DataLoss
        );
    }

    #[test]
    fn consistent_chunks_of_another_file_fail_the_file_hash() {
        let mut c = AttachmentCheck::new(&envelope(&[b"hello"])).expect("check");
        let e = c
            .check(&chunk(0, 0, Bytes::from_static(b"jello")))
            .expect_err("other file");
        assert_eq!(e.code(), tonic::Code::DataLoss);
    }

    #[test]
    fn gaps_overruns_and_disorder_are_refused() {
        let mut c = AttachmentCheck::new(&envelope(&[b"hello", b"x"])).expect("check");
        assert!(c.check(&chunk(1, 0, Bytes::from_static(b"x"))).is_err());
        assert!(c.check(&chunk(0, 1, Bytes::from_static(b"ello"))).is_err());
        assert!(
            c.check(&chunk(0, 0, Bytes::from_static(b"hello!")))
                .is_err()
        );
        assert!(c.check(&chunk(0, 0, Bytes::new())).is_err());
    }

    #[test]
    fn a_missing_opening_is_invalid_argument_and_a_stream_error_keeps_its_code() {
        let missing = tonic::Status::from(Opening::Missing(
            "the first message must be the header".into(),
        ));
        assert_eq!(missing.code(), tonic::Code::InvalidArgument);
        assert_eq!(missing.message(), "the first message must be the header");
        let cut = tonic::Status::from(Opening::Stream(tonic::Status::cancelled("gone")));
        assert_eq!(cut.code(), tonic::Code::Cancelled);
        assert_eq!(
            only_chunks_after("envelope").message(),
            "only chunks may follow the envelope"
        );
    }
}
