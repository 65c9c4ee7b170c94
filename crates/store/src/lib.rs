//! The one place truc touches its storage engine. Every crate keeps its data in
//! a [`Store`]: one ordered key space with prefixes per concern, atomic
//! batches, and a flush that is durable against both a killed process and a
//! power cut. It knows nothing about what the keys mean; that is for its
//! callers (audit log, counters, outbox). Keeping the surface this small is
//! what lets the engine be swapped (redb, fjall) if sled's known problems bite.
//!
//! sled 0.34 caveats designed around here: writes are durable only after a
//! flush, and sled's own flush uses `sync_file_range`, which does not reach the
//! disk's cache nor the file's metadata; [`Store::flush`] therefore follows it
//! with `fdatasync` on the database file. A database that refuses to open
//! after a crash is reported with a recovery hint, never unwrapped.

#![forbid(unsafe_code)]

mod group;

pub use group::{FlushFn, GroupFlush};

use std::{
    fs::File,
    path::{Path, PathBuf},
};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error(
        "cannot open the database in {path}: {source}; if another truc process uses this \
         directory, stop it first; if the database is damaged, move the directory aside and \
         restore it from a backup"
    )]
    Open {
        /// Directory of the database.
        path: PathBuf,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
    /// A read, write or flush failed.
    #[error("storage error: {0}")]
    Engine(#[from] sled::Error),
    /// A journal of a batch ([`Store::apply_journaled`]) that cannot be
    /// read back: the database was damaged or altered.
    #[error(
        "the journal {name:?} in {path} is damaged ({reason}); move the directory aside and \
         restore it from a backup"
    )]
    Journal {
        /// Directory of the database.
        path: PathBuf,
        /// The journal's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The group flush that was to make a write durable failed
    /// ([`GroupFlush`]).
    #[error("the flush of these writes failed: {0}")]
    Flush(String),
    /// The durable sync of the database file failed.
    #[error("cannot sync the database file {path}: {source}")]
    Sync {
        /// The file that failed to sync.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// An ordered key-value store with atomic batches and durable flushes.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    /// The journal of the last batch of each journaled writer, by name.
    journals: sled::Tree,
    /// Held while a journaled batch is written: one at a time, so that each
    /// journal is followed by its own writes only. It holds the names whose
    /// last batch failed half-way, to be completed before the next.
    journaling: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<Vec<u8>>>>,
    dir: PathBuf,
    /// sled's database file, kept open for the `fdatasync` of every flush.
    file: std::sync::Arc<File>,
    /// sled's blob files already synced, with the length they had then.
    synced_blobs:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<std::ffi::OsString, u64>>>,
}

/// Writes applied together: all of them, or none after a crash.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    /// Each key with its new value, or `None` to remove it, in order.
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Bytes of the keys and values, for the journal's size.
    bytes: usize,
}

/// The tree that holds the journals of [`Store::apply_journaled`].
const JOURNALS: &str = "truc-journals";

/// A batch whose journal would be larger goes to sled as an atomic batch:
/// sled would write the journal to a file of its own (from 128 KiB), and a
/// batch that large pays sled's fixed cost of a batch over many records.
pub const MAX_JOURNAL_BYTES: usize = 64 * 1024;

/// Version byte that starts a journal.
const JOURNAL_V1: u8 = 1;

impl WriteBatch {
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.bytes += key.len() + value.len();
        self.ops.push((key.to_vec(), Some(value.to_vec())));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        let key = key.as_ref();
        self.bytes += key.len();
        self.ops.push((key.to_vec(), None));
    }

    /// Number of operations in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Its operations in order: each key with its new value, or `None` to
    /// remove it (benches that write them some other way).
    pub fn into_ops(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.ops
    }

    /// The size of its journal, at most: 9 bytes per operation.
    fn journal_len(&self) -> usize {
        5 + self.bytes + 9 * self.ops.len()
    }

    /// The journal: a version byte, the number of operations (4 bytes,
    /// big-endian), then per operation a kind byte (1 set, 0 remove), the
    /// key's length (4 bytes, big-endian) and the key, and for a set the
    /// value's length and the value.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.journal_len());
        out.push(JOURNAL_V1);
        let len = |n: usize| u32::try_from(n).expect("a key or value is far below 4 GiB");
        out.extend_from_slice(&len(self.ops.len()).to_be_bytes());
        for (key, value) in &self.ops {
            out.push(u8::from(value.is_some()));
            out.extend_from_slice(&len(key.len()).to_be_bytes());
            out.extend_from_slice(key);
            if let Some(value) = value {
                out.extend_from_slice(&len(value.len()).to_be_bytes());
                out.extend_from_slice(value);
            }
        }
        out
    }

    /// A journal read back, checked to be framed as [`WriteBatch::encode`] writes it.
    fn decode(mut bytes: &[u8]) -> Result<WriteBatch, String> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
            if bytes.len() < n {
                return Err(format!("it ends inside {what}"));
            }
            let (head, rest) = bytes.split_at(n);
            *bytes = rest;
            Ok(head)
        }
        fn sized<'a>(bytes: &mut &'a [u8], what: &str) -> Result<&'a [u8], String> {
            let len = take(bytes, 4, what)?;
            let len = u32::from_be_bytes(len.try_into().map_err(|_| "length".to_string())?);
            take(bytes, len as usize, what)
        }
        match take(&mut bytes, 1, "its version")? {
            [JOURNAL_V1] => {}
            [v] => return Err(format!("unknown version {v}")),
            _ => unreachable!("one byte taken"),
        }
        let count = take(&mut bytes, 4, "its length")?;
        let count = u32::from_be_bytes(count.try_into().map_err(|_| "length".to_string())?);
        let mut batch = WriteBatch::default();
        for _ in 0..count {
            let kind = take(&mut bytes, 1, "an operation")?[0];
            let key = sized(&mut bytes, "a key")?;
            match kind {
                1 => {
                    let value = sized(&mut bytes, "a value")?;
                    batch.insert(key, value);
                }
                0 => batch.remove(key),
                k => return Err(format!("unknown operation {k}")),
            }
        }
        if !bytes.is_empty() {
            return Err(format!("{} bytes after its last operation", bytes.len()));
        }
        Ok(batch)
    }
}

/// A stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

impl Store {
    /// Opens (or creates) the database in `dir`, with a bounded page cache.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: dir.to_path_buf(),
            source,
        };
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            // Durability is ours to decide (group commit); no timed flushes.
            .flush_every_ms(None);
        // A process that just closed the database may still hold its file
        // lock for a moment (sled's threads stop asynchronously): wait a bit.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if (e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("could not acquire lock"))
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(open_err(e)),
            }
        };
        let tree = db.open_tree("truc").map_err(open_err)?;
        let journals = db.open_tree(JOURNALS).map_err(open_err)?;
        let file = File::open(dir.join("db")).map_err(|e| open_err(e.into()))?;
        let store = Store {
            db,
            tree,
            journals,
            journaling: Default::default(),
            dir: dir.to_path_buf(),
            file: std::sync::Arc::new(file),
            synced_blobs: Default::default(),
        };
        store.complete_journaled()?;
        Ok(store)
    }

    /// Applies again every journaled batch a crash may have cut short, then
    /// forgets the journals (see [`Store::apply_journaled`]).
    fn complete_journaled(&self) -> Result<(), StoreError> {
        let mut any = false;
        for name in self.journals.iter().keys() {
            let name = name?;
            self.complete_journal(&name)?;
            // After the batch's writes: a crash before this applies it again.
            self.journals.remove(&name)?;
            any = true;
        }
        if any {
            self.flush()?;
        }
        Ok(())
    }

    /// The batch's writes, one plain insert or remove each, in order.
    fn write_each(&self, batch: WriteBatch) -> Result<(), StoreError> {
        for (key, value) in batch.ops {
            match value {
                Some(value) => self.tree.insert(key, value)?,
                None => self.tree.remove(key)?,
            };
        }
        Ok(())
    }

    /// Directory of the database.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    /// Sets one key (not durable until [`Store::flush`]).
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), StoreError> {
        self.tree.insert(key.as_ref(), value.as_ref())?;
        Ok(())
    }

    /// Applies a batch atomically (not durable until [`Store::flush`]).
    pub fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut inner = sled::Batch::default();
        for (key, value) in batch.ops {
            match value {
                Some(value) => inner.insert(key, value),
                None => inner.remove(key),
            }
        }
        self.tree.apply_batch(inner)?;
        Ok(())
    }

    /// Applies a batch atomically as [`Store::apply`] does, at less cost
    /// for the single writer that owns the journal `name`: the batch is
    /// written as one value, its journal, then each of its writes on its own
    /// (sled's atomic batch writes and waits for a log buffer of its own
    /// every time). After a crash, opening the store applies the last
    /// journal of each name again.
    ///
    /// That is atomic because sled recovers a prefix of its log, in the
    /// order written, and journaled batches are written one at a time: a
    /// journal that survived is followed by none, some or all of its
    /// writes, and is the last of its name (an earlier journal of the name
    /// that survived had all its writes, since they were written before the
    /// next journal). Every write of the keys a name's batches write must go
    /// through this with that name: a write made otherwise between two of
    /// its batches could be undone by a replay. A batch whose journal would
    /// be over [`MAX_JOURNAL_BYTES`] is applied with [`Store::apply`].
    pub fn apply_journaled(&self, name: &[u8], batch: WriteBatch) -> Result<(), StoreError> {
        let mut unfinished = match self.journaling.lock() {
            Ok(unfinished) => unfinished,
            // A panic in the middle of some batch: any journal in place may
            // be that batch, half written.
            Err(poisoned) => {
                let mut unfinished = poisoned.into_inner();
                for name in self.journals.iter().keys() {
                    unfinished.insert(name?.to_vec());
                }
                self.journaling.clear_poison();
                unfinished
            }
        };
        if unfinished.contains(name) {
            // The journal in place is the batch that failed half-way: it
            // must be whole before another journal replaces it.
            self.complete_journal(name)?;
            unfinished.remove(name);
        }
        if batch.journal_len() > MAX_JOURNAL_BYTES {
            // The journal in place describes an earlier batch, whose writes
            // are all in: replaying it would undo this one.
            self.journals.remove(name)?;
            return self.apply(batch);
        }
        // After a failure here the journal in place may be this batch's,
        // with some of its writes: it is completed before the next batch
        // (the caller was told the batch failed, and it may be applied).
        let written = self
            .journals
            .insert(name, batch.encode())
            .map_err(StoreError::from)
            .and_then(|_| self.write_each(batch));
        if written.is_err() {
            unfinished.insert(name.to_vec());
        }
        written
    }

    /// Applies the journal of `name` again, if there is one.
    fn complete_journal(&self, name: &[u8]) -> Result<(), StoreError> {
        let Some(journal) = self.journals.get(name)? else {
            return Ok(());
        };
        let batch = WriteBatch::decode(&journal).map_err(|reason| StoreError::Journal {
            path: self.dir.clone(),
            name: String::from_utf8_lossy(name).into_owned(),
            reason,
        })?;
        self.write_each(batch)
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<Entry, StoreError>> + use<> {
        self.tree.scan_prefix(prefix).map(|r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        })
    }

    /// Every entry with `start <= key < end`, in key order (none when
    /// `end <= start`).
    pub fn scan_range(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<Entry, StoreError>> + use<> {
        let end = end.max(start);
        self.tree.range(start.to_vec()..end.to_vec()).map(|r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        })
    }

    /// The entry with the greatest key starting with `prefix`.
    pub fn last_with_prefix(&self, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.scan_prefix(prefix).next_back().transpose()
    }

    /// Makes every write so far durable: sled's flush, then `fdatasync` of the
    /// database file so that the data survives a power cut, not only a kill,
    /// then the same for any value sled moved out to its `blobs/` directory.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        // Any handle of the file flushes the inode's data.
        self.file.sync_data().map_err(|source| StoreError::Sync {
            path: self.dir.join("db"),
            source,
        })?;
        self.sync_blobs()
    }

    /// sled writes a large value (or page) to a file of its own under
    /// `blobs/` and never syncs it nor the directory: sync each new or grown
    /// one, then the directory. Callers keep values small, so this is
    /// normally one empty directory read per flush.
    fn sync_blobs(&self) -> Result<(), StoreError> {
        let dir = self.dir.join("blobs");
        let sync_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Sync { path, source }
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(sync_err(&dir)(e)),
        };
        let mut synced = self
            .synced_blobs
            .lock()
            .map_err(|_| sync_err(&dir)(std::io::Error::other("blob sync state poisoned")))?;
        let mut present = std::collections::HashMap::new();
        let mut any = false;
        for entry in entries {
            let entry = entry.map_err(sync_err(&dir))?;
            let path = entry.path();
            let len = entry.metadata().map_err(sync_err(&path))?.len();
            let name = entry.file_name();
            if synced.get(&name) != Some(&len) {
                File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(sync_err(&path))?;
                any = true;
            }
            present.insert(name, len);
        }
        if any {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(sync_err(&dir))?;
        }
        // Blobs sled has since removed are forgotten.
        *synced = present;
        Ok(())
    }

    /// How many of sled's blob files the last flush left synced (tests).
    #[doc(hidden)]
    pub fn synced_blob_files(&self) -> usize {
        self.synced_blobs.lock().map_or(0, |s| s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_sled_moves_to_blob_files_are_synced_by_flush() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path())?;
        // Far over sled's threshold (a quarter of its 512 KiB segments).
        store.insert(b"big", vec![7u8; 1 << 20])?;
        store.flush()?;
        let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
            .expect("sled made a blob")
            .collect();
        assert!(!blobs.is_empty(), "the value went to a blob file");
        assert_eq!(
            store.synced_blob_files(),
            blobs.len(),
            "every blob file present was synced"
        );
        Ok(())
    }

    #[test]
    fn batch_is_applied_and_survives_reopen() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = Store::open(dir.path())?;
            let mut batch = WriteBatch::default();
            batch.insert(b"a/1", b"one");
            batch.insert(b"a/2", b"two");
            batch.insert(b"b/1", b"other");
            assert_eq!(batch.len(), 3);
            store.apply(batch)?;
            store.flush()?;
        }
        let store = Store::open(dir.path())?;
        let keys: Vec<Vec<u8>> = store
            .scan_prefix(b"a/")
            .map(|r| r.map(|(k, _)| k))
            .collect::<Result<_, _>>()?;
        assert_eq!(keys, vec![b"a/1".to_vec(), b"a/2".to_vec()]);
        let range: Vec<Vec<u8>> = store
            .scan_range(b"a/2", b"b/1")
            .map(|r| r.map(|(k, _)| k))
            .collect::<Result<_, _>>()?;
        assert_eq!(range, vec![b"a/2".to_vec()], "end excluded");
        assert_eq!(store.scan_range(b"b/", b"a/").count(), 0, "reversed: empty");
        assert_eq!(
            store.last_with_prefix(b"a/")?.map(|(_, v)| v),
            Some(b"two".to_vec())
        );
        assert_eq!(store.get(b"b/1")?, Some(b"other".to_vec()));
        Ok(())
    }

    fn sets(pairs: &[(&[u8], &[u8])]) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (key, value) in pairs {
            batch.insert(key, value);
        }
        batch
    }

    fn contents(store: &Store) -> Vec<Entry> {
        store
            .scan_prefix(b"")
            .collect::<Result<_, _>>()
            .expect("scan")
    }

    #[test]
    fn a_journaled_batch_cut_short_by_a_crash_is_completed_at_open() -> Result<(), StoreError> {
        let first = sets(&[(b"k/1", b"one"), (b"k/2", b"two"), (b"k/3", b"three")]);
        let mut second = sets(&[(b"k/1", b"ONE")]);
        second.remove(b"k/2");
        second.insert(b"k/4", b"four");
        // Each prefix of what `apply_journaled` writes for the second batch
        // (its journal, then its writes), as sled may recover it.
        for cut in 0..=second.len() + 1 {
            let dir = tempfile::tempdir().expect("temp dir");
            let (before, after) = {
                let store = Store::open(dir.path())?;
                store.apply_journaled(b"log", first.clone())?;
                store.flush()?;
                let before = contents(&store);
                if cut > 0 {
                    store.journals.insert(b"log", second.encode())?;
                    let mut part = second.clone();
                    part.ops.truncate(cut - 1);
                    store.write_each(part)?;
                }
                store.flush()?;
                let whole = Store::open(tempfile::tempdir().expect("dir").path())?;
                whole.apply(first.clone())?;
                whole.apply(second.clone())?;
                (before, contents(&whole))
            };
            let store = Store::open(dir.path())?;
            let want = if cut == 0 { &before } else { &after };
            assert_eq!(&contents(&store), want, "cut after {cut} writes");
            assert_eq!(store.journals.len(), 0, "journals forgotten once applied");
        }
        Ok(())
    }

    #[test]
    fn a_batch_that_failed_half_way_is_completed_before_the_next() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path())?;
        let failed = sets(&[(b"k/1", b"one"), (b"k/2", b"two")]);
        // As a write error after the journal and the first write leaves it.
        store.journals.insert(b"log", failed.encode())?;
        let mut part = failed.clone();
        part.ops.truncate(1);
        store.write_each(part)?;
        store
            .journaling
            .lock()
            .expect("lock")
            .insert(b"log".to_vec());
        store.apply_journaled(b"log", sets(&[(b"k/3", b"three")]))?;
        assert_eq!(store.get(b"k/2")?, Some(b"two".to_vec()), "completed");
        assert_eq!(store.get(b"k/3")?, Some(b"three".to_vec()));
        assert!(store.journaling.lock().expect("lock").is_empty());
        Ok(())
    }

    #[test]
    fn a_batch_too_large_for_a_journal_is_applied_atomically_without_one() -> Result<(), StoreError>
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path())?;
        store.apply_journaled(b"log", sets(&[(b"a", b"1")]))?;
        assert_eq!(store.journals.len(), 1);
        let mut large = WriteBatch::default();
        for i in 0..100u32 {
            large.insert(i.to_be_bytes(), vec![0u8; 1000]);
        }
        assert!(large.journal_len() > MAX_JOURNAL_BYTES);
        store.apply_journaled(b"log", large)?;
        // The small batch's journal is gone: a replay cannot undo the large one.
        assert_eq!(store.journals.len(), 0);
        assert_eq!(store.get(99u32.to_be_bytes())?, Some(vec![0u8; 1000]));
        assert_eq!(store.get(b"a")?, Some(b"1".to_vec()));
        Ok(())
    }

    #[test]
    fn journals_read_back_as_written_and_damaged_ones_are_refused() {
        let mut batch = WriteBatch::default();
        batch.insert(b"key", b"value");
        batch.remove(b"gone");
        batch.insert(b"", b"");
        let journal = batch.encode();
        assert!(journal.len() <= batch.journal_len());
        assert_eq!(WriteBatch::decode(&journal), Ok(batch));
        for cut in 0..journal.len() {
            assert!(WriteBatch::decode(&journal[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = journal.clone();
        longer.push(0);
        assert_eq!(
            WriteBatch::decode(&longer),
            Err("1 bytes after its last operation".into())
        );
        let mut unknown = journal.clone();
        unknown[5] = 7;
        assert_eq!(
            WriteBatch::decode(&unknown),
            Err("unknown operation 7".into())
        );
        assert_eq!(WriteBatch::decode(&[2]), Err("unknown version 2".into()));
    }

    #[test]
    fn a_store_with_a_damaged_journal_does_not_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = Store::open(dir.path()).expect("open");
            store
                .journals
                .insert(b"audit", &[1, 0, 0, 0, 1, 1, 0, 0, 0, 9, b'k'][..])
                .expect("write");
            store.flush().expect("flush");
        }
        let msg = Store::open(dir.path()).err().expect("refused").to_string();
        assert!(
            msg.contains("journal \"audit\"") && msg.contains("ends inside a key"),
            "{msg}"
        );
    }

    #[test]
    fn open_error_names_the_directory() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        // A regular file is not a database directory.
        let msg = Store::open(file.path())
            .err()
            .expect("must fail")
            .to_string();
        assert!(msg.contains("cannot open the database in"), "{msg}");
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn a_database_in_use_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _first = Store::open(dir.path()).expect("open");
        let started = std::time::Instant::now();
        let msg = Store::open(dir.path()).err().expect("in use").to_string();
        assert!(msg.contains("stop it first"), "{msg}");
        // It waited for the lock before giving up.
        assert!(
            started.elapsed() >= std::time::Duration::from_secs(2),
            "{msg}"
        );
    }
}
