//! The end of every data call, on the hub and on nodes: audit it durably,
//! count it, and only then answer.

use std::time::Instant;

use tonic::{Code, Status};
use truc_audit::{Appended, AuditLog, Receipt, Transaction};
use truc_proto::v1::DataResponse;

use crate::{Metrics, code_name, now_ms};

/// Metadata key carrying the transaction id on error responses.
pub const TRANSACTION_ID_HEADER: &str = "x-truc-transaction-id";

/// Adds the transaction id to an error, for the caller to quote.
pub fn tag(mut status: Status, transaction_id: &str) -> Status {
    if let Ok(v) = transaction_id.parse() {
        status.metadata_mut().insert(TRANSACTION_ID_HEADER, v);
    }
    status
}

/// Finishes `tx` with the outcome of `result`, appends it to `audit`
/// (waiting for the flush), with the hub's `receipt` on a node (and whether
/// it verified), and counts it. An audit failure is INTERNAL: the call must
/// not be acknowledged.
pub async fn record_call(
    audit: &AuditLog,
    metrics: &Metrics,
    tx: Transaction,
    result: &Result<DataResponse, Status>,
    receipt: Option<Receipt>,
    receipt_verified: bool,
    started: Instant,
) -> Result<Appended, Status> {
    let (outcome, response) = match result {
        Ok(r) => (Code::Ok, r.payload.as_ref()),
        Err(s) => (s.code(), &[][..]),
    };
    let tx_id = tx.transaction_id.clone();
    let parties = (
        tx.client_agency.clone(),
        tx.provider_agency.clone(),
        tx.service.clone(),
    );
    let mut tx = tx.finish(code_name(outcome), response, now_ms(), started.elapsed());
    tx.receipt = receipt;
    tx.receipt_verified = receipt_verified;
    let appended = audit.append(tx).await.map_err(|e| {
        tracing::error!(error = %e, tx = %tx_id, "audit append failed");
        tag(
            Status::internal("the transaction could not be audited"),
            &tx_id,
        )
    })?;
    metrics.observe(
        "call",
        outcome,
        (&parties.0, &parties.1, &parties.2),
        started.elapsed().as_secs_f64(),
    );
    Ok(appended)
}
