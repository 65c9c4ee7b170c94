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
    dir: PathBuf,
    /// sled's database file, kept open for the `fdatasync` of every flush.
    file: std::sync::Arc<File>,
    /// sled's blob files already synced, with the length they had then.
    synced_blobs:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<std::ffi::OsString, u64>>>,
}

/// Writes applied together: all of them, or none after a crash.
#[derive(Default)]
pub struct WriteBatch {
    inner: sled::Batch,
    len: usize,
}

impl WriteBatch {
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.inner.insert(key.as_ref(), value.as_ref());
        self.len += 1;
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.inner.remove(key.as_ref());
        self.len += 1;
    }

    /// Number of operations in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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
        let file = File::open(dir.join("db")).map_err(|e| open_err(e.into()))?;
        Ok(Store {
            db,
            tree,
            dir: dir.to_path_buf(),
            file: std::sync::Arc::new(file),
            synced_blobs: Default::default(),
        })
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
        self.tree.apply_batch(batch.inner)?;
        Ok(())
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
