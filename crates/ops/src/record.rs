//! The transaction id on error answers, for the caller to quote, and the
//! retry hint of a call refused by a quota.

use tonic::Status;

/// Metadata key carrying the transaction id on error responses.
pub const TRANSACTION_ID_HEADER: &str = "x-truc-transaction-id";

/// Metadata key carrying, on a RESOURCE_EXHAUSTED answer to a call over its
/// quota, how many milliseconds to wait before the next call can pass
/// (decimal ASCII).
pub const RETRY_AFTER_MS_HEADER: &str = "retry-after-ms";

/// Adds the transaction id to an error, for the caller to quote.
pub fn tag(mut status: Status, transaction_id: &str) -> Status {
    if let Ok(v) = transaction_id.parse() {
        status.metadata_mut().insert(TRANSACTION_ID_HEADER, v);
    }
    status
}
