//! Attachments to send: their description for the envelope, and their
//! bytes streamed in chunks of at most [`MAX_CHUNK_BYTES`], one chunk in
//! memory at a time.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
};

use bytes::Bytes;
use ring::digest::{Context, SHA256};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    sync::mpsc,
};
use truc_doc::chunks::MAX_CHUNK_BYTES;
use truc_proto::v1::{Attachment, Envelope, SendDocumentRequest, send_document_request};

use crate::Error;

/// Where an attachment's bytes come from.
enum Source {
    File(PathBuf),
    Reader(Pin<Box<dyn AsyncRead + Send>>),
    Bytes(Bytes),
}

/// One attachment of a document to send: its description (name, content
/// type, size, SHA-256) and where its bytes come from.
pub struct Upload {
    attachment: Attachment,
    source: Source,
    /// The most bytes one chunk of it carries (1 to [`MAX_CHUNK_BYTES`]).
    chunk_bytes: usize,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("attachment", &self.attachment)
            .finish_non_exhaustive()
    }
}

impl Upload {
    /// The file at `path`, read once now for its size and SHA-256, and again
    /// as it is sent. Its name is the file's; its content type follows the
    /// extension ([`content_type_for`]).
    pub async fn file(path: impl AsRef<Path>) -> Result<Upload, Error> {
        let path = path.as_ref();
        let unreadable = |e: std::io::Error| Error::file(path, format!("cannot read: {e}"));
        let meta = tokio::fs::metadata(path).await.map_err(unreadable)?;
        if !meta.is_file() {
            return Err(Error::file(path, "not a regular file"));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::file(path, "no file name"))?;
        let mut file = tokio::fs::File::open(path).await.map_err(unreadable)?;
        let mut hash = Context::new(&SHA256);
        let mut buf = vec![0u8; MAX_CHUNK_BYTES];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).await.map_err(unreadable)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Upload {
            attachment: Attachment {
                content_type: content_type_for(&name).to_owned(),
                name,
                size,
                sha256: Bytes::copy_from_slice(hash.finish().as_ref()),
                description: String::new(),
            },
            source: Source::File(path.to_path_buf()),
            chunk_bytes: MAX_CHUNK_BYTES,
        })
    }

    /// `data`, held in memory, named `name`.
    pub fn bytes(name: &str, content_type: &str, data: impl Into<Bytes>) -> Upload {
        let data = data.into();
        Upload {
            attachment: Attachment {
                name: name.to_owned(),
                content_type: content_type.to_owned(),
                size: data.len() as u64,
                sha256: Bytes::copy_from_slice(ring::digest::digest(&SHA256, &data).as_ref()),
                description: String::new(),
            },
            source: Source::Bytes(data),
            chunk_bytes: MAX_CHUNK_BYTES,
        }
    }

    /// The bytes `reader` gives, described by `attachment` (its size and
    /// SHA-256 must be those of what the reader gives: the node refuses the
    /// document otherwise).
    pub fn reader(attachment: Attachment, reader: impl AsyncRead + Send + 'static) -> Upload {
        Upload {
            attachment,
            source: Source::Reader(Box::pin(reader)),
            chunk_bytes: MAX_CHUNK_BYTES,
        }
    }

    /// With a description (free text) in the envelope.
    pub fn described(mut self, description: &str) -> Upload {
        self.attachment.description = description.to_owned();
        self
    }

    /// Sent in chunks of at most `bytes` (clamped to 1 to
    /// [`MAX_CHUNK_BYTES`], the default and the most a node accepts), e.g. to
    /// measure what the chunk size costs.
    pub fn chunk_bytes(mut self, bytes: usize) -> Upload {
        self.chunk_bytes = bytes.clamp(1, MAX_CHUNK_BYTES);
        self
    }

    /// The description that goes into the envelope.
    pub fn attachment(&self) -> &Attachment {
        &self.attachment
    }

    /// What this source is called in errors.
    fn label(&self) -> PathBuf {
        match &self.source {
            Source::File(p) => p.clone(),
            _ => PathBuf::from(&self.attachment.name),
        }
    }
}

/// Sends `envelope`, then every upload's chunks, into `tx`. Stops quietly
/// when the other end is gone (the call failed: its error is the one to
/// report); an error only for local reading problems.
pub(crate) async fn stream(
    envelope: Envelope,
    uploads: Vec<Upload>,
    tx: mpsc::Sender<SendDocumentRequest>,
) -> Result<(), Error> {
    let first = SendDocumentRequest {
        part: Some(send_document_request::Part::Envelope(envelope)),
    };
    if tx.send(first).await.is_err() {
        return Ok(());
    }
    for (index, upload) in uploads.into_iter().enumerate() {
        let index =
            u32::try_from(index).map_err(|_| Error::Protocol("too many attachments".into()))?;
        let label = upload.label();
        let size = upload.attachment.size;
        let chunk_bytes = upload.chunk_bytes as u64;
        let mut reader: Pin<Box<dyn AsyncRead + Send>> = match upload.source {
            Source::File(path) => Box::pin(
                tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| Error::file(&path, format!("cannot open: {e}")))?,
            ),
            Source::Reader(r) => r,
            Source::Bytes(b) => Box::pin(std::io::Cursor::new(b)),
        };
        let mut offset = 0u64;
        while offset < size {
            let want = (size - offset).min(chunk_bytes);
            let mut buf = Vec::with_capacity(want as usize);
            (&mut reader)
                .take(want)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| Error::file(&label, format!("cannot read: {e}")))?;
            if buf.is_empty() {
                return Err(Error::file(
                    &label,
                    format!("became shorter while it was being sent ({offset} of {size} bytes)"),
                ));
            }
            let len = buf.len() as u64;
            let chunk = truc_doc::chunks::chunk(index, offset, Bytes::from(buf));
            let message = SendDocumentRequest {
                part: Some(send_document_request::Part::Chunk(chunk)),
            };
            if tx.send(message).await.is_err() {
                return Ok(());
            }
            offset += len;
        }
    }
    Ok(())
}

/// A content type guessed from the file name's extension.
pub fn content_type_for(name: &str) -> &'static str {
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "xml" => "application/xml",
        "txt" => "text/plain",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type_for("a.pdf"), "application/pdf");
        assert_eq!(content_type_for("A.PDF"), "application/pdf");
        assert_eq!(
            content_type_for("x.docx"),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        );
        assert_eq!(
            content_type_for("x.xlsx"),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        );
        assert_eq!(content_type_for("x.xml"), "application/xml");
        assert_eq!(content_type_for("x.txt"), "text/plain");
        assert_eq!(content_type_for("x.png"), "image/png");
        assert_eq!(content_type_for("x.jpg"), "image/jpeg");
        assert_eq!(content_type_for("x.zip"), "application/zip");
        assert_eq!(content_type_for("x.tar.gz"), "application/octet-stream");
        assert_eq!(content_type_for("noext"), "application/octet-stream");
    }

    #[tokio::test]
    async fn uploads_are_streamed_in_chunks_with_their_sha256() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("big.pdf");
        let data: Vec<u8> = (0..MAX_CHUNK_BYTES + 10).map(|i| i as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let file = Upload::file(&path).await.expect("file");
        assert_eq!(file.attachment().size, data.len() as u64);
        assert_eq!(file.attachment().content_type, "application/pdf");
        let small = Upload::bytes("a.txt", "text/plain", &b"abc"[..]);
        let (tx, mut rx) = mpsc::channel(16);
        stream(Envelope::default(), vec![file, small], tx)
            .await
            .expect("streamed");
        let mut parts = Vec::new();
        while let Some(m) = rx.recv().await {
            parts.push(m.part.expect("part"));
        }
        assert!(matches!(parts[0], send_document_request::Part::Envelope(_)));
        let chunks: Vec<_> = parts[1..]
            .iter()
            .map(|p| match p {
                send_document_request::Part::Chunk(c) => c.clone(),
                _ => panic!("a chunk"),
            })
            .collect();
        let shape: Vec<_> = chunks
            .iter()
            .map(|c| (c.attachment, c.offset, c.data.len()))
            .collect();
        assert_eq!(
            shape,
            [
                (0, 0, MAX_CHUNK_BYTES),
                (0, MAX_CHUNK_BYTES as u64, 10),
                (1, 0, 3)
            ]
        );
        for c in &chunks {
            assert_eq!(
                c.sha256.as_ref(),
                ring::digest::digest(&SHA256, &c.data).as_ref()
            );
        }
    }

    #[tokio::test]
    async fn the_chunk_size_can_be_smaller_but_not_larger_than_the_limit() {
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let small = Upload::bytes("a", "text/plain", data.clone()).chunk_bytes(1000);
        let (tx, mut rx) = mpsc::channel(16);
        stream(Envelope::default(), vec![small], tx)
            .await
            .expect("streamed");
        let mut shape = Vec::new();
        let mut joined = Vec::new();
        while let Some(m) = rx.recv().await {
            if let Some(send_document_request::Part::Chunk(c)) = m.part {
                shape.push((c.offset, c.data.len()));
                joined.extend_from_slice(&c.data);
            }
        }
        assert_eq!(shape, [(0, 1000), (1000, 1000), (2000, 500)]);
        assert_eq!(joined, data);
        let clamped = |n| {
            Upload::bytes("a", "text/plain", &b""[..])
                .chunk_bytes(n)
                .chunk_bytes
        };
        assert_eq!(clamped(0), 1);
        assert_eq!(clamped(usize::MAX), MAX_CHUNK_BYTES);
    }

    #[tokio::test]
    async fn a_reader_shorter_than_declared_is_a_local_error() {
        let declared = Attachment {
            name: "r".into(),
            size: 10,
            ..Attachment::default()
        };
        let upload = Upload::reader(declared, std::io::Cursor::new(b"abc".to_vec()));
        let (tx, _rx) = mpsc::channel(16);
        let e = stream(Envelope::default(), vec![upload], tx)
            .await
            .expect_err("short");
        assert!(e.to_string().contains("became shorter"), "{e}");
    }
}
