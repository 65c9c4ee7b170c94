//! Attachment files on disk, named by their SHA-256. A file is written to a
//! temporary name, checked, `fsync`ed, then renamed into place (and the
//! directory synced), so a blob that exists is whole and durable; a file
//! half received never becomes visible. Memory stays at one chunk per
//! transfer, whatever the file's size.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::{
    fs::File,
    io::{AsyncReadExt, AsyncWriteExt},
};
use tonic::Status;
use truc_proto::v1::Chunk;

/// Bytes read per chunk when sending a blob.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// The blob directory of a node.
#[derive(Clone, Debug)]
pub(crate) struct Blobs {
    dir: PathBuf,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Status {
    tracing::error!(path = %path.display(), error = %e, "{what}");
    Status::internal(format!("{what}: storage error"))
}

impl Blobs {
    /// Opens (creating) `dir`, removing transfers a crash interrupted.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Blobs> {
        let tmp = dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Blobs {
            dir: dir.to_path_buf(),
        })
    }

    /// Where the blob with `sha256` lives.
    pub(crate) fn path(&self, sha256: &[u8]) -> PathBuf {
        self.dir.join(hex::encode(sha256))
    }

    /// A writer for a blob of `sha256`; none if the blob is already stored
    /// (chunks must still be checked, but need not be written).
    pub(crate) async fn writer(&self, sha256: &[u8]) -> Result<Option<BlobWriter>, Status> {
        let target = self.path(sha256);
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            return Ok(None);
        }
        let mut random = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| Status::internal("no randomness available"))?;
        let tmp = self.dir.join("tmp").join(hex::encode(random));
        let file = File::create(&tmp)
            .await
            .map_err(|e| io_error("cannot create a blob", &tmp, e))?;
        Ok(Some(BlobWriter {
            file: Some(file),
            tmp,
            target,
            dir: self.dir.clone(),
        }))
    }

    /// Sends the blob's bytes as chunks of attachment `index` into `tx`,
    /// each wrapped by `wrap`.
    pub(crate) async fn send_chunks<T>(
        &self,
        sha256: &[u8],
        index: u32,
        tx: &tokio::sync::mpsc::Sender<T>,
        wrap: fn(Chunk) -> T,
    ) -> Result<(), Status> {
        let path = self.path(sha256);
        let mut file = File::open(&path)
            .await
            .map_err(|e| io_error("cannot open a blob", &path, e))?;
        let mut offset = 0u64;
        loop {
            let mut buf = vec![0u8; READ_CHUNK];
            let mut filled = 0;
            while filled < READ_CHUNK {
                let n = file
                    .read(&mut buf[filled..])
                    .await
                    .map_err(|e| io_error("cannot read a blob", &path, e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return Ok(());
            }
            buf.truncate(filled);
            let chunk = truc_doc::chunks::chunk(index, offset, Bytes::from(buf));
            offset += filled as u64;
            if tx.send(wrap(chunk)).await.is_err() {
                return Err(Status::cancelled("the receiver went away"));
            }
        }
    }
}

/// A blob being received.
pub(crate) struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
}

impl BlobWriter {
    /// Appends checked bytes.
    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), Status> {
        match self.file.as_mut() {
            Some(f) => f
                .write_all(data)
                .await
                .map_err(|e| io_error("cannot write a blob", &self.tmp, e)),
            None => Err(Status::internal("blob already finished")),
        }
    }

    /// Makes the blob durable and visible under its hash.
    pub(crate) async fn finish(mut self) -> Result<(), Status> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        file.flush()
            .await
            .map_err(|e| io_error("cannot write a blob", &self.tmp, e))?;
        file.sync_all()
            .await
            .map_err(|e| io_error("cannot sync a blob", &self.tmp, e))?;
        drop(file);
        tokio::fs::rename(&self.tmp, &self.target)
            .await
            .map_err(|e| io_error("cannot store a blob", &self.target, e))?;
        // The rename is durable once the directory is synced.
        let dir = File::open(&self.dir)
            .await
            .map_err(|e| io_error("cannot open the blob directory", &self.dir, e))?;
        dir.sync_all()
            .await
            .map_err(|e| io_error("cannot sync the blob directory", &self.dir, e))?;
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Abandoned half-way: nothing partial stays behind.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Blobs {
    /// Receives the attachments `envelope` declares from `next` (which
    /// yields chunks until the stream ends), checking every chunk and file
    /// and storing each file durably. Nothing is visible unless all arrive.
    pub(crate) async fn receive(
        &self,
        envelope: &truc_proto::v1::Envelope,
        chunks: &mut (impl tokio_stream::Stream<Item = Result<Chunk, Status>> + Unpin + Send),
    ) -> Result<(), Status> {
        use tokio_stream::StreamExt;
        let mut check = truc_doc::chunks::AttachmentCheck::new(envelope)?;
        let mut writers = Vec::with_capacity(envelope.attachments.len());
        for a in &envelope.attachments {
            writers.push(self.writer(&a.sha256).await?);
        }
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            check.check(&chunk)?;
            if let Some(Some(w)) = writers.get_mut(chunk.attachment as usize) {
                w.write(&chunk.data).await?;
            }
        }
        check.finish()?;
        for w in writers.into_iter().flatten() {
            w.finish().await?;
        }
        Ok(())
    }
}

/// Checks chunks without storing them (a repeated send).
pub(crate) async fn check_only(
    envelope: &truc_proto::v1::Envelope,
    chunks: &mut (impl tokio_stream::Stream<Item = Result<Chunk, Status>> + Unpin + Send),
) -> Result<(), Status> {
    use tokio_stream::StreamExt;
    let mut check = truc_doc::chunks::AttachmentCheck::new(envelope)?;
    while let Some(chunk) = chunks.next().await {
        check.check(&chunk?)?;
    }
    Ok(check.finish()?)
}
