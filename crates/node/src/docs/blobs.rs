//! Attachments. A small one (at most [`INLINE_MAX`] bytes, up to
//! [`INLINE_PER_DOCUMENT`] of them per document) is kept in the store under
//! its SHA-256, written in the same journaled commit as the document that
//! carries it: no file, no `fsync` and no rename of its own. Every other
//! attachment is a file on disk, named by its SHA-256, in a directory of our
//! own (never sled's `blobs/`, which sled writes without syncing). A file is
//! written to a temporary name, checked, `fsync`ed, then renamed into place
//! (and the directory synced), so a blob that exists is whole, verified and
//! durable; a file half received never becomes visible. Memory stays at one
//! chunk per transfer, whatever the file's size (plus the small attachments
//! held until the document is committed), and a transfer holds one open file
//! at a time (attachments arrive in order), counted against a limit for the
//! whole node.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use tokio::{
    fs::File,
    io::{AsyncReadExt, AsyncWriteExt},
};
use tonic::Status;
use truc_proto::v1::{Attachment, Chunk, Envelope};
use truc_store::{Store, WriteBatch};

use super::keys::{self, storage};

/// Bytes read per chunk when sending a blob.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// The largest attachment kept in the store rather than in a file of its
/// own. Stored values stay small: sled writes large values to files it
/// never syncs.
pub(crate) const INLINE_MAX: u64 = 4 * 1024;

/// The most bytes of small attachments kept in the store for one document;
/// the attachments past it are files, so a document's commit stays well
/// inside one journal ([`truc_store::MAX_JOURNAL_BYTES`]).
pub(crate) const INLINE_PER_DOCUMENT: u64 = 32 * 1024;

/// Which attachments of `envelope` are kept in the store: in order, each
/// small one while the document's total allows. Decided from the envelope
/// alone, so the same at every node.
pub(crate) fn inline(envelope: &Envelope) -> Vec<bool> {
    let mut total = 0u64;
    envelope
        .attachments
        .iter()
        .map(|a| {
            let fits = a.size <= INLINE_MAX && total + a.size <= INLINE_PER_DOCUMENT;
            if fits {
                total += a.size;
            }
            fits
        })
        .collect()
}

/// The small attachments of a document received whole and verified, to be
/// written in the document's own commit ([`Received::add_to`]).
#[derive(Debug, Default)]
#[must_use = "small attachments are stored only with the document's commit"]
pub(crate) struct Received {
    inline: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Received {
    /// Adds the small attachments to the document's batch.
    pub(crate) fn add_to(self, batch: &mut WriteBatch) {
        for (key, bytes) in self.inline {
            batch.insert(key, bytes);
        }
    }
}

/// The blob directory of a node.
#[derive(Clone)]
pub(crate) struct Blobs {
    dir: PathBuf,
    /// Where small attachments are kept.
    store: Store,
    /// Temporary files being written, on the whole node.
    open_files: Arc<tokio::sync::Semaphore>,
    /// Syncs the directory: one `fsync` for every blob renamed into it
    /// while the one before ran.
    dir_sync: Arc<truc_store::GroupFlush>,
}

/// Whether `name` is a blob's (64 lowercase hex digits): sled's own files
/// never are.
fn is_blob_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Status {
    tracing::error!(path = %path.display(), error = %e, "{what}");
    Status::internal(format!("{what}: storage error"))
}

impl Blobs {
    /// Opens (creating) `dir`, removing transfers a crash interrupted, with
    /// at most `max_open` files being received at once. Blobs an earlier
    /// version kept in `legacy` (sled's directory) are moved here first.
    pub(crate) fn open(
        store: Store,
        dir: &Path,
        legacy: &Path,
        max_open: usize,
    ) -> std::io::Result<Blobs> {
        let tmp = dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        migrate(legacy, dir)?;
        let dir_sync = {
            let dir = dir.to_path_buf();
            truc_store::GroupFlush::start(
                "truc-blob-sync",
                Box::new(move || {
                    std::fs::File::open(&dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|source| truc_store::StoreError::Sync {
                            path: dir.clone(),
                            source,
                        })
                }),
            )?
        };
        Ok(Blobs {
            dir: dir.to_path_buf(),
            store,
            open_files: Arc::new(tokio::sync::Semaphore::new(max_open)),
            dir_sync: Arc::new(dir_sync),
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
        let permit = self.open_files.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(
                "too many attachments are being received on this node; try again later",
            )
        })?;
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
            dir_sync: self.dir_sync.clone(),
            _permit: permit,
        }))
    }

    /// A small attachment's bytes, if the store holds them (an attachment
    /// stored before small ones were kept there is a file).
    fn small(&self, a: &Attachment) -> Result<Option<Vec<u8>>, Status> {
        if a.size > INLINE_MAX {
            return Ok(None);
        }
        self.store.get(keys::blob(&a.sha256)).map_err(storage)
    }

    /// Reads attachment `a`, from the store or its file (blocking).
    pub(crate) fn read_sync(&self, a: &Attachment) -> std::io::Result<Box<dyn std::io::Read>> {
        if let Some(bytes) = self
            .small(a)
            .map_err(|e| std::io::Error::other(e.message().to_owned()))?
        {
            return Ok(Box::new(std::io::Cursor::new(bytes)));
        }
        Ok(Box::new(std::io::BufReader::new(std::fs::File::open(
            self.path(&a.sha256),
        )?)))
    }

    /// Sends attachment `a`'s bytes as chunks of attachment `index` into
    /// `tx`, each wrapped by `wrap`.
    pub(crate) async fn send_chunks<T>(
        &self,
        a: &Attachment,
        index: u32,
        tx: &tokio::sync::mpsc::Sender<T>,
        wrap: fn(Chunk) -> T,
    ) -> Result<(), Status> {
        if let Some(bytes) = self.small(a)? {
            if bytes.is_empty() {
                return Ok(());
            }
            let chunk = truc_doc::chunks::chunk(index, 0, Bytes::from(bytes));
            return match tx.send(wrap(chunk)).await {
                Ok(()) => Ok(()),
                Err(_) => Err(Status::cancelled("the receiver went away")),
            };
        }
        let path = self.path(&a.sha256);
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
    dir_sync: Arc<truc_store::GroupFlush>,
    /// Released when the file is closed, whole or abandoned.
    _permit: tokio::sync::OwnedSemaphorePermit,
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
        // The rename is durable once the directory is synced, in a sync
        // shared with the blobs renamed meanwhile.
        self.dir_sync.wrote();
        self.dir_sync.durable().await.map_err(|e| {
            tracing::error!(error = %e, "cannot sync the blob directory");
            Status::internal("cannot sync the blob directory: storage error")
        })
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

/// Where the attachment being received goes.
enum Sink {
    /// A small attachment, held until the document's commit.
    Memory(Vec<u8>),
    /// A file being written.
    File(BlobWriter),
    /// A file already stored: its chunks are checked, not written.
    Stored,
}

impl Blobs {
    /// Receives the attachments `envelope` declares from `chunks` (until the
    /// stream ends), checking every chunk and file and storing each file
    /// durably once it is whole and verified. The small attachments come
    /// back, to be written with the document that refers to them; the
    /// caller stores that document only once all have arrived.
    pub(crate) async fn receive(
        &self,
        envelope: &Envelope,
        chunks: &mut (impl tokio_stream::Stream<Item = Result<Chunk, Status>> + Unpin + Send),
    ) -> Result<Received, Status> {
        use tokio_stream::StreamExt;
        let mut check = truc_doc::chunks::AttachmentCheck::new(envelope)?;
        let inline = inline(envelope);
        let mut received = Received::default();
        // The attachment being received: its index, where it goes and the
        // bytes in so far.
        let mut current: Option<(usize, Sink, u64)> = None;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            check.check(&chunk)?;
            let index = chunk.attachment as usize;
            let attachment = envelope
                .attachments
                .get(index)
                .ok_or_else(|| Status::invalid_argument("chunk of no attachment"))?;
            if current.as_ref().is_none_or(|c| c.0 != index) {
                let sink = if inline[index] {
                    // At most INLINE_MAX: the check refuses any byte more.
                    Sink::Memory(Vec::with_capacity(attachment.size as usize))
                } else {
                    match self.writer(&attachment.sha256).await? {
                        Some(w) => Sink::File(w),
                        None => Sink::Stored,
                    }
                };
                current = Some((index, sink, 0));
            }
            if let Some((_, sink, so_far)) = current.as_mut() {
                match sink {
                    Sink::Memory(bytes) => bytes.extend_from_slice(&chunk.data),
                    Sink::File(w) => w.write(&chunk.data).await?,
                    Sink::Stored => {}
                }
                *so_far += chunk.data.len() as u64;
                if *so_far == attachment.size {
                    // Whole and verified (the check saw its last byte): close it now.
                    match current.take() {
                        Some((_, Sink::File(w), _)) => w.finish().await?,
                        Some((_, Sink::Memory(bytes), _)) => {
                            received
                                .inline
                                .push((keys::blob(&attachment.sha256), bytes));
                        }
                        _ => {}
                    }
                }
            }
        }
        check.finish()?;
        // Empty attachments have no chunks (and are always small).
        for (a, _) in envelope
            .attachments
            .iter()
            .zip(&inline)
            .filter(|(a, inline)| a.size == 0 && **inline)
        {
            received.inline.push((keys::blob(&a.sha256), Vec::new()));
        }
        Ok(received)
    }
}

/// Checks chunks without storing them (a repeated send).
pub(crate) async fn check_only(
    envelope: &Envelope,
    chunks: &mut (impl tokio_stream::Stream<Item = Result<Chunk, Status>> + Unpin + Send),
) -> Result<(), Status> {
    use tokio_stream::StreamExt;
    let mut check = truc_doc::chunks::AttachmentCheck::new(envelope)?;
    while let Some(chunk) = chunks.next().await {
        check.check(&chunk?)?;
    }
    Ok(check.finish()?)
}

/// Moves blobs from `legacy` (sled's own `blobs/` directory, where earlier
/// versions kept them) into `dir`, and removes the old temporary directory.
fn migrate(legacy: &Path, dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(legacy) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut moved = 0usize;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == "tmp" && entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else if is_blob_name(name) && entry.file_type()?.is_file() {
            let target = dir.join(name);
            if target.exists() {
                std::fs::remove_file(entry.path())?;
            } else {
                std::fs::rename(entry.path(), target)?;
                moved += 1;
            }
        }
    }
    if moved > 0 {
        std::fs::File::open(dir)?.sync_all()?;
        std::fs::File::open(legacy)?.sync_all()?;
        tracing::info!(moved, dir = %dir.display(), "attachments moved out of the database's blob directory");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_in_the_old_directory_are_moved_and_sled_files_stay() {
        let root = tempfile::tempdir().expect("dir");
        let legacy = root.path().join("blobs");
        std::fs::create_dir_all(legacy.join("tmp")).expect("mkdir");
        let name = "ab".repeat(32);
        std::fs::write(legacy.join(&name), b"attachment").expect("write");
        std::fs::write(legacy.join("123456"), b"sled's").expect("write");
        let dir = root.path().join("attachments");
        let store = Store::open(&root.path().join("db")).expect("store");
        let blobs = Blobs::open(store, &dir, &legacy, 4).expect("open");
        assert_eq!(
            std::fs::read(blobs.path(&[0xab; 32])).expect("moved"),
            b"attachment"
        );
        assert!(!legacy.join(&name).exists());
        assert!(!legacy.join("tmp").exists());
        assert!(legacy.join("123456").exists(), "sled's files are not ours");
    }

    /// Blobs (at most 2 files received at once) over a store, both in `root`.
    fn blobs_in(root: &Path) -> Blobs {
        let store = Store::open(&root.join("db")).expect("store");
        Blobs::open(store, &root.join("a"), &root.join("b"), 2).expect("open")
    }

    #[tokio::test]
    async fn files_being_received_are_limited_per_node() {
        let root = tempfile::tempdir().expect("dir");
        let blobs = blobs_in(root.path());
        let one = blobs.writer(&[1; 32]).await.expect("one");
        let two = blobs.writer(&[2; 32]).await.expect("two");
        let e = blobs.writer(&[3; 32]).await.err().expect("over the limit");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        drop(one);
        assert!(blobs.writer(&[3; 32]).await.expect("released").is_some());
        drop(two);
    }

    fn attachment(size: u64, tag: u8) -> Attachment {
        Attachment {
            name: format!("f{tag}.pdf"),
            size,
            sha256: vec![tag; 32].into(),
            ..Attachment::default()
        }
    }

    #[test]
    fn small_attachments_are_kept_in_the_store_up_to_a_total_per_document() {
        let per = (INLINE_PER_DOCUMENT / INLINE_MAX) as usize;
        let mut attachments: Vec<_> = (0..per + 2)
            .map(|i| attachment(INLINE_MAX, i as u8))
            .collect();
        // One byte too large, then an empty one past the total.
        attachments.insert(1, attachment(INLINE_MAX + 1, 100));
        attachments.push(attachment(0, 101));
        let envelope = Envelope {
            attachments,
            ..Envelope::default()
        };
        let mut expected = vec![true, false];
        expected.extend(std::iter::repeat_n(true, per - 1));
        expected.extend([false, false, true]);
        assert_eq!(inline(&envelope), expected);
    }

    #[tokio::test]
    async fn a_small_attachment_stored_as_a_file_by_an_earlier_version_is_still_read() {
        let root = tempfile::tempdir().expect("dir");
        let blobs = blobs_in(root.path());
        let a = attachment(5, 7);
        std::fs::write(blobs.path(&a.sha256), b"hello").expect("write");
        let mut read = Vec::new();
        std::io::Read::read_to_end(&mut blobs.read_sync(&a).expect("open"), &mut read)
            .expect("read");
        assert_eq!(read, b"hello");
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        blobs.send_chunks(&a, 3, &tx, |c| c).await.expect("sent");
        let chunk = rx.recv().await.expect("a chunk");
        assert_eq!((chunk.attachment, chunk.data.as_ref()), (3, &b"hello"[..]));
    }
}
