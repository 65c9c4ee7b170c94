//! Receiving a document: its inbox entry, then its attachments written to
//! files in a directory. Nothing there is ever overwritten and no link is
//! followed (a sender chooses the names, and the directory may hold
//! anything); each file's size and SHA-256 are checked against the
//! envelope, and a file that does not match is deleted.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use ring::digest::{Context, SHA256};
use tokio::io::AsyncWriteExt;
use tonic::Streaming;
use truc_proto::v1::{Chunk, FetchDocumentResponse, InboxEntry, fetch_document_response};

use crate::Error;

/// A document being fetched: its entry is here, its attachments follow.
pub struct Incoming {
    entry: InboxEntry,
    stream: Streaming<FetchDocumentResponse>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

/// A file written (or to be written) by a fetch: where, and what the
/// envelope says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedFile {
    /// Where it is written.
    pub path: PathBuf,
    /// Its size, as the envelope declares it.
    pub size: u64,
    /// Its SHA-256, as the envelope declares it.
    pub sha256: Bytes,
}

impl Incoming {
    /// Reads the first message, which must be the entry.
    pub(crate) async fn start(
        mut stream: Streaming<FetchDocumentResponse>,
    ) -> Result<Incoming, Error> {
        let entry = match stream.message().await?.and_then(|m| m.part) {
            Some(fetch_document_response::Part::Entry(entry)) => entry,
            Some(_) => {
                return Err(Error::Protocol(
                    "the node did not start with the document's entry".into(),
                ));
            }
            None => return Err(Error::Protocol("the node sent nothing".into())),
        };
        Ok(Incoming { entry, stream })
    }

    /// The document's inbox entry (envelope, status, history).
    pub fn entry(&self) -> &InboxEntry {
        &self.entry
    }

    /// Decides where each attachment goes in `dir` (a plain file name, made
    /// unique, never one of `reserved`), creates `dir` if needed, and checks
    /// that neither those files nor the `reserved` ones exist there. Nothing
    /// is written yet; [`Incoming::save`] writes them.
    pub async fn plan(&self, dir: &Path, reserved: &[&str]) -> Result<Vec<SavedFile>, Error> {
        plan(&self.entry, dir, reserved).await
    }

    /// Writes the attachments to `files` (from [`Incoming::plan`]) as their
    /// chunks arrive, each created anew; a file that fails its checks is
    /// deleted.
    pub async fn save(mut self, files: Vec<SavedFile>) -> Result<Vec<SavedFile>, Error> {
        let mut writer = Writer::new(files);
        let result = async {
            while let Some(message) = self.stream.message().await? {
                match message.part {
                    Some(fetch_document_response::Part::Chunk(chunk)) => {
                        writer.chunk(chunk).await?;
                    }
                    Some(fetch_document_response::Part::Entry(_)) => {
                        return Err(Error::Protocol("the node sent the entry twice".into()));
                    }
                    None => {}
                }
            }
            writer.finish().await
        }
        .await;
        if let Err(e) = result {
            writer.discard().await;
            return Err(e);
        }
        Ok(writer.files)
    }

    /// [`Incoming::plan`] then [`Incoming::save`] into `dir`.
    pub async fn save_to(self, dir: &Path) -> Result<Vec<SavedFile>, Error> {
        let files = self.plan(dir, &[]).await?;
        self.save(files).await
    }
}

/// See [`Incoming::plan`].
async fn plan(entry: &InboxEntry, dir: &Path, reserved: &[&str]) -> Result<Vec<SavedFile>, Error> {
    let attachments = entry
        .envelope
        .as_ref()
        .map(|e| e.attachments.as_slice())
        .unwrap_or_default();
    let mut used: HashSet<String> = reserved.iter().map(|r| r.to_lowercase()).collect();
    let mut files = Vec::with_capacity(attachments.len());
    for (i, a) in attachments.iter().enumerate() {
        let name = safe_file_name(&a.name).ok_or_else(|| {
            Error::Protocol(format!(
                "attachment {i} has a name that cannot be a file name: {:?}",
                a.name
            ))
        })?;
        files.push(SavedFile {
            path: dir.join(unique_name(&name, &mut used)),
            size: a.size,
            sha256: a.sha256.clone(),
        });
    }
    if is_symlink(dir).await {
        return Err(Error::LinkedDirectory(dir.to_path_buf()));
    }
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
    let reserved = reserved.iter().map(|r| dir.join(r));
    for path in reserved.chain(files.iter().map(|f| f.path.clone())) {
        if tokio::fs::symlink_metadata(&path).await.is_ok() {
            return Err(Error::Exists(path));
        }
    }
    Ok(files)
}

/// Whether `path` is a symbolic link (false if it does not exist).
async fn is_symlink(path: &Path) -> bool {
    tokio::fs::symlink_metadata(path)
        .await
        .is_ok_and(|m| m.file_type().is_symlink())
}

/// Creates `path`, which must not exist yet: `O_CREAT | O_EXCL`, which also
/// refuses a symbolic link in its place, dangling or not.
pub async fn create_new(path: &Path) -> Result<tokio::fs::File, Error> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Exists(path.to_path_buf())
            } else {
                Error::file(path, format!("cannot create: {e}"))
            }
        })
}

/// Writes attachment chunks to their files as they arrive, checking each
/// file's size and SHA-256 once it is complete.
struct Writer {
    files: Vec<SavedFile>,
    /// The attachment being written.
    index: usize,
    /// Its file, once created.
    open: Option<OpenFile>,
}

struct OpenFile {
    file: tokio::fs::File,
    hash: Context,
    written: u64,
}

impl Writer {
    fn new(files: Vec<SavedFile>) -> Writer {
        Writer {
            files,
            index: 0,
            open: None,
        }
    }

    /// The current file, created on first use.
    async fn current(&mut self) -> Result<&mut OpenFile, Error> {
        if self.open.is_none() {
            let path = &self.files[self.index].path;
            let file = create_new(path).await?;
            self.open = Some(OpenFile {
                file,
                hash: Context::new(&SHA256),
                written: 0,
            });
        }
        self.open
            .as_mut()
            .ok_or_else(|| Error::Protocol("internal: no open file".into()))
    }

    async fn chunk(&mut self, chunk: Chunk) -> Result<(), Error> {
        let target = chunk.attachment as usize;
        if target >= self.files.len() {
            return Err(Error::Protocol(format!(
                "a chunk for attachment {target}, but the envelope has {}",
                self.files.len()
            )));
        }
        if target < self.index {
            return Err(Error::Protocol(format!(
                "a chunk for attachment {target} after attachment {} had started",
                self.index
            )));
        }
        while self.index < target {
            self.complete().await?;
        }
        let SavedFile { path, size, .. } = &self.files[self.index];
        let (path, size) = (path.clone(), *size);
        let open = self.current().await?;
        if chunk.offset != open.written {
            return Err(Error::Protocol(format!(
                "{}: a chunk at offset {} where {} was expected",
                path.display(),
                chunk.offset,
                open.written
            )));
        }
        let end = open.written + chunk.data.len() as u64;
        if end > size {
            return Err(Error::Protocol(format!(
                "{}: more than the {size} bytes the envelope declares",
                path.display()
            )));
        }
        open.file
            .write_all(&chunk.data)
            .await
            .map_err(|e| Error::file(&path, format!("cannot write: {e}")))?;
        open.hash.update(&chunk.data);
        open.written = end;
        Ok(())
    }

    /// Checks and closes the current file, and moves to the next attachment.
    async fn complete(&mut self) -> Result<(), Error> {
        let path = self.files[self.index].path.clone();
        let open = self.current().await?;
        open.file
            .flush()
            .await
            .map_err(|e| Error::file(&path, format!("cannot write: {e}")))?;
        let written = open.written;
        let got = open.hash.clone().finish();
        let expected = &self.files[self.index];
        if written != expected.size {
            return Err(Error::Protocol(format!(
                "{}: {written} bytes where the envelope declares {}; the file was deleted",
                path.display(),
                expected.size
            )));
        }
        if got.as_ref() != expected.sha256.as_ref() {
            return Err(Error::Protocol(format!(
                "{}: sha256 {} does not match the envelope's {}; the file was deleted",
                path.display(),
                hex::encode(got.as_ref()),
                hex::encode(&expected.sha256)
            )));
        }
        self.open = None;
        self.index += 1;
        Ok(())
    }

    /// Completes every remaining attachment (empty ones have no chunks).
    async fn finish(&mut self) -> Result<(), Error> {
        while self.index < self.files.len() {
            self.complete().await?;
        }
        Ok(())
    }

    /// Deletes the file that was being written, after a failure.
    async fn discard(&mut self) {
        if let Some(open) = self.open.take() {
            drop(open);
            if let Some(f) = self.files.get(self.index) {
                let _ = tokio::fs::remove_file(&f.path).await;
            }
        }
    }
}

/// The attachment name as a plain local file name: what follows the last `/`
/// or `\`, without control characters or surrounding spaces. None when that
/// is empty, `.` or `..`.
pub fn safe_file_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let cleaned = cleaned.trim();
    match cleaned {
        "" | "." | ".." => None,
        _ => Some(cleaned.to_owned()),
    }
}

/// `name`, or `name` with -1, -2… before its extension when already used
/// (compared without case, for case-insensitive file systems).
fn unique_name(name: &str, used: &mut HashSet<String>) -> String {
    if used.insert(name.to_lowercase()) {
        return name.to_owned();
    }
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    };
    let mut n = 1u32;
    loop {
        let candidate = format!("{stem}-{n}{ext}");
        if used.insert(candidate.to_lowercase()) {
            return candidate;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_reduced_to_a_plain_name() {
        assert_eq!(safe_file_name("report.pdf").as_deref(), Some("report.pdf"));
        assert_eq!(
            safe_file_name("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(safe_file_name(r"C:\docs\a.docx").as_deref(), Some("a.docx"));
        assert_eq!(safe_file_name("a\nb.txt").as_deref(), Some("ab.txt"));
        assert_eq!(
            safe_file_name("công văn.pdf").as_deref(),
            Some("công văn.pdf")
        );
        for bad in ["", "  ", ".", "..", "dir/", "a/..", r"..\..", "\u{7}"] {
            assert_eq!(safe_file_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn repeated_names_get_a_suffix() {
        let mut used = HashSet::from(["envelope.txt".to_owned()]);
        assert_eq!(unique_name("a.pdf", &mut used), "a.pdf");
        assert_eq!(unique_name("a.pdf", &mut used), "a-1.pdf");
        assert_eq!(unique_name("A.PDF", &mut used), "A-2.PDF");
        assert_eq!(unique_name("envelope.txt", &mut used), "envelope-1.txt");
        assert_eq!(unique_name("README", &mut used), "README");
        assert_eq!(unique_name("README", &mut used), "README-1");
        assert_eq!(unique_name(".hidden", &mut used), ".hidden");
        assert_eq!(unique_name(".hidden", &mut used), ".hidden-1");
    }

    fn expected(dir: &Path, name: &str, data: &[u8]) -> SavedFile {
        SavedFile {
            path: dir.join(name),
            size: data.len() as u64,
            sha256: Bytes::copy_from_slice(ring::digest::digest(&SHA256, data).as_ref()),
        }
    }

    #[tokio::test]
    async fn received_files_are_checked_and_bad_ones_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = vec![
            expected(dir.path(), "a.txt", b"hello world"),
            expected(dir.path(), "empty", b""),
            expected(dir.path(), "b.txt", b"abc"),
        ];
        let mut w = Writer::new(files);
        let c = truc_doc::chunks::chunk;
        w.chunk(c(0, 0, Bytes::from_static(b"hello ")))
            .await
            .expect("1");
        w.chunk(c(0, 6, Bytes::from_static(b"world")))
            .await
            .expect("2");
        w.chunk(c(2, 0, Bytes::from_static(b"abc")))
            .await
            .expect("3");
        w.finish().await.expect("complete");
        let read = |n: &str| std::fs::read(dir.path().join(n)).expect("read");
        assert_eq!(read("a.txt"), b"hello world");
        assert_eq!(read("empty"), b"");
        assert_eq!(read("b.txt"), b"abc");

        let mut w = Writer::new(vec![expected(dir.path(), "c.txt", b"hello")]);
        w.chunk(c(0, 0, Bytes::from_static(b"jello")))
            .await
            .expect("written");
        assert!(w.finish().await.is_err(), "hash mismatch");
        w.discard().await;
        assert!(!dir.path().join("c.txt").exists(), "deleted");

        let mut w = Writer::new(vec![expected(dir.path(), "d.txt", b"hello")]);
        w.chunk(c(0, 0, Bytes::from_static(b"hel")))
            .await
            .expect("written");
        assert!(
            w.chunk(c(0, 4, Bytes::from_static(b"o"))).await.is_err(),
            "gap"
        );
        assert!(
            w.chunk(c(0, 3, Bytes::from_static(b"lo!"))).await.is_err(),
            "too long"
        );
        assert!(w.finish().await.is_err(), "short");
        w.discard().await;
        assert!(!dir.path().join("d.txt").exists(), "deleted");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn nothing_is_overwritten_and_no_link_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        // An existing file is not truncated: the writer refuses to create it.
        std::fs::write(dir.path().join("mine.txt"), b"mine").expect("write");
        let mut w = Writer::new(vec![expected(dir.path(), "mine.txt", b"theirs")]);
        let e = w
            .chunk(truc_doc::chunks::chunk(0, 0, Bytes::from_static(b"theirs")))
            .await
            .expect_err("exists");
        assert!(matches!(e, Error::Exists(_)), "{e}");
        assert_eq!(
            std::fs::read(dir.path().join("mine.txt")).expect("kept"),
            b"mine"
        );
        // Nor is a dangling link followed.
        let target = dir.path().join("through-a-link");
        std::os::unix::fs::symlink(&target, dir.path().join("l.txt")).expect("link");
        let e = create_new(&dir.path().join("l.txt"))
            .await
            .expect_err("link");
        assert!(matches!(e, Error::Exists(_)), "{e}");
        assert!(!target.exists());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_plan_refuses_existing_files_and_a_linked_directory() {
        use truc_proto::v1::{Attachment, Envelope};
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = InboxEntry {
            envelope: Some(Envelope {
                attachments: vec![
                    Attachment {
                        name: "../a.pdf".into(),
                        ..Attachment::default()
                    },
                    Attachment {
                        name: "A.pdf".into(),
                        ..Attachment::default()
                    },
                ],
                ..Envelope::default()
            }),
            ..InboxEntry::default()
        };
        let out = dir.path().join("out");
        let files = plan(&entry, &out, &["envelope.txt"]).await.expect("plan");
        let names: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(names, [out.join("a.pdf"), out.join("A-1.pdf")]);
        assert!(out.is_dir(), "created");
        std::fs::write(out.join("envelope.txt"), b"mine").expect("write");
        let e = plan(&entry, &out, &["envelope.txt"])
            .await
            .expect_err("reserved");
        assert!(
            matches!(&e, Error::Exists(p) if p.ends_with("envelope.txt")),
            "{e}"
        );
        std::fs::remove_file(out.join("envelope.txt")).expect("rm");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), out.join("A-1.pdf")).expect("link");
        let e = plan(&entry, &out, &[]).await.expect_err("dangling link");
        assert!(
            matches!(&e, Error::Exists(p) if p.ends_with("A-1.pdf")),
            "{e}"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&out, &link).expect("link");
        let e = plan(&entry, &link, &[])
            .await
            .expect_err("linked directory");
        assert!(matches!(e, Error::LinkedDirectory(_)), "{e}");
    }
}
