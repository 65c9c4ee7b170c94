//! The audit log and transaction counters of a hub or a node.
//!
//! Every transaction becomes one [`AuditRecord`]: metadata, sizes and SHA-256
//! digests of the payloads (never the payloads), its outcome and latency.
//! Records are the leaves of an append-only Merkle tree in the style of
//! RFC 9162 (certificate transparency): the hub signs a tree head at every
//! commit, hands it out in receipts, and serves inclusion and consistency
//! proofs, so that anyone with the hub's public key can check that a record
//! is in the log and that the log was never rewritten. Each record also holds
//! the leaf hash of the one before it. Removing, reordering or editing a
//! record is reported by [`verify`] at its position. The counters (per day × client × provider × service ×
//! kind × outcome) are written in the same atomic batch as the record, so the
//! counts always equal what the log says.
//!
//! Appends go through one writer thread that commits them in groups: many
//! concurrent transactions share one durable flush, and none is acknowledged
//! before its record and counters are on disk.
//!
//! This crate does not know about gRPC services or the registry.

#![forbid(unsafe_code)]

mod counts;
mod ids;
pub use ids::{DEFAULT_ID_FILTER_IDS, ordered_transaction_id};

/// Length of a transaction id: 32 lowercase hex digits.
pub const TRANSACTION_ID_LEN: usize = 32;
pub mod index;
mod log;
pub mod merkle;
pub mod note;
mod proofs;
mod records;
pub mod report;
pub use proofs::QueryError;
pub mod sth;
#[doc(hidden)]
pub mod tamper;
mod verify;
pub mod witness;
mod zone;
pub use zone::{Zone, day_in, day_of};

pub mod sketch;
pub use sketch::{Sketch, SketchError};

pub use counts::{
    CountKey, Counters, KEY_FIELD_MAX, Stats, Unreadable, note_unreadable, read_counts, read_stats,
    read_stats_of_days, unreadable_skipped,
};
pub use log::{
    Appended, AuditLog, Kind, LogReader, Options, Transaction, read_records, stored_zone,
};
pub use truc_proto::v1::{AuditRecord, InclusionProof, Receipt};
pub use verify::{Problem, VerifyReport, verify};

/// The record format this build writes and verifies: 2 = Merkle-tree leaves.
pub const RECORD_VERSION: u32 = 2;

/// Key prefix of audit records as earlier builds stored them, one key each,
/// followed by the big-endian index. Still read; no longer written.
pub(crate) const RECORD_PREFIX: &[u8] = b"audit/r/";
/// Key prefix of values of consecutive records, followed by the big-endian
/// index of the first (see [`records`]).
pub(crate) const GROUP_PREFIX: &[u8] = b"audit/g/";
/// Key prefix of counters, followed by the encoded [`CountKey`].
pub(crate) const COUNT_PREFIX: &[u8] = b"audit/c/";
/// Key prefix of Merkle tree nodes (complete subtrees) as earlier builds
/// stored them, one key each: the level (one byte), then the big-endian
/// index at that level. Still read; no longer written.
pub(crate) const NODE_PREFIX: &[u8] = b"audit/t/";
/// Key prefix of chunks of Merkle tree nodes, followed by the big-endian
/// index of the chunk's first leaf (see [`log::NodeChunks`]).
pub(crate) const CHUNK_PREFIX: &[u8] = b"audit/n/";
/// Key prefix of signed tree heads, followed by the big-endian tree size.
pub(crate) const HEAD_PREFIX: &[u8] = b"audit/h/";
/// Key prefix of the transaction-id index, followed by the id.
pub(crate) const TX_PREFIX: &[u8] = b"audit/x/";
/// Key prefix of the party index (see [`index`]).
pub(crate) const PARTY_PREFIX: &[u8] = b"audit/p/";

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
    /// The log was started in another time zone than configured.
    #[error(
        "this log cuts days in time zone {stored} but {configured} is configured; a log keeps its time zone"
    )]
    TimeZone {
        /// The zone the log was created with (as stored).
        stored: String,
        /// The zone configured now.
        configured: String,
    },
    /// The writer thread has stopped (the process is shutting down).
    #[error("the audit log is closed")]
    Closed,
    /// A commit failed to reach the disk earlier: the log acknowledges
    /// nothing more until the process is restarted and has reread what is
    /// really on disk (fail-stop, as PostgreSQL does after a failed fsync).
    #[error("the audit log stopped after a failed commit; restart the process")]
    Stopped,
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
