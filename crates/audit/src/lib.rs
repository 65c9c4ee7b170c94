//! The audit log and transaction counters of a hub or a node.
//!
//! Every transaction becomes one [`AuditRecord`]: metadata, sizes and SHA-256
//! digests of the payloads (never the payloads), its outcome and latency. Each
//! stored record holds the hash of the one before it, so that removing,
//! reordering or editing a record breaks the chain at a position that
//! [`verify`] reports. The counters (per day × client × provider × service ×
//! kind × outcome) are written in the same atomic batch as the record, so the
//! counts always equal what the log says.
//!
//! Appends go through one writer thread that commits them in groups: many
//! concurrent transactions share one durable flush, and none is acknowledged
//! before its record and counters are on disk.
//!
//! This crate does not know about gRPC services or the registry; a later
//! format version turns the chain into a Merkle tree with signed tree heads.

#![forbid(unsafe_code)]

mod counts;
mod log;
mod verify;

pub use counts::{CountKey, day_of, read_counts};
pub use log::{Appended, AuditLog, Options, Transaction, read_records};
pub use truc_proto::v1::{AuditRecord, Receipt};
pub use verify::{Problem, VerifyReport, verify};

/// The record format this build writes and verifies.
pub const RECORD_VERSION: u32 = 1;

/// Key prefix of audit records, followed by the big-endian index.
pub(crate) const RECORD_PREFIX: &[u8] = b"audit/r/";
/// Key prefix of counters, followed by the encoded [`CountKey`].
pub(crate) const COUNT_PREFIX: &[u8] = b"audit/c/";

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] truc_store::StoreError),
    /// A stored record or counter cannot be decoded.
    #[error("corrupt audit data at {key}: {reason}")]
    Corrupt {
        /// Hex of the key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The writer thread has stopped (the process is shutting down).
    #[error("the audit log is closed")]
    Closed,
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
