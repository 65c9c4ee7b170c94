//! The transaction id on error answers, for the caller to quote.

use tonic::Status;

/// Metadata key carrying the transaction id on error responses.
pub const TRANSACTION_ID_HEADER: &str = "x-truc-transaction-id";

/// Adds the transaction id to an error, for the caller to quote.
pub fn tag(mut status: Status, transaction_id: &str) -> Status {
    if let Ok(v) = transaction_id.parse() {
        status.metadata_mut().insert(TRANSACTION_ID_HEADER, v);
    }
    status
}
