//! Validation of status messages: a [`StatusEvent`], a [`StatusUpdate`]
//! travelling between nodes through the hub, an [`UpdateStatusRequest`] from
//! a recipient's agency system, and the (sender, document id) pair that names
//! a document in every request about one.

use truc_proto::v1::{StatusEvent, StatusUpdate, UpdateStatusRequest};
use truc_registry::AgencyCode;

use crate::error::Error;
use crate::id::DocumentId;
use crate::status::StatusCode;
use crate::text::{Kind, Rule, shown};
use crate::validate::{MAX_REASON_CHARS, Report, blank, check_staff};

/// Most characters of a status description: room for a 13's "Recall requested: " and its business reason.
pub const MAX_DESCRIPTION_CHARS: usize = 2 * MAX_REASON_CHARS;

/// The last millisecond of 9999-12-31 UTC: later timestamps are refused.
pub const MAX_UNIX_MS: u64 = 253_402_300_799_999;

const DESCRIPTION: Rule = Rule {
    length: "R.Status.Description.Length",
    chars: "R.Status.Description.Characters",
    max: MAX_DESCRIPTION_CHARS,
    kind: Kind::Multiline,
};

/// Checks a status event alone (`field` is its path, e.g. `event`); returns its code when it is valid.
fn event(r: &mut Report, field: &str, ev: &StatusEvent) -> Option<StatusCode> {
    let code = match StatusCode::parse(&ev.code) {
        Ok(code) => Some(code),
        Err(mut v) => {
            v.field = format!("{field}.code");
            r.0.push(v);
            None
        }
    };
    r.text(
        &DESCRIPTION,
        &format!("{field}.description"),
        &ev.description,
    );
    if ev.unix_ms > MAX_UNIX_MS {
        r.push(
            "R.Status.Timestamp",
            format!("{field}.unix_ms"),
            format!("a timestamp is at most {MAX_UNIX_MS} (has {})", ev.unix_ms),
        );
    }
    agency(
        r,
        ("N.Status.By", "R.Status.By"),
        &format!("{field}.by"),
        &ev.by,
    );
    if let Some(staff) = &ev.staff {
        check_staff(r, &format!("{field}.staff"), staff);
    }
    code
}

/// Checks a required agency code; returns it when it is valid.
fn agency(
    r: &mut Report,
    (missing, bad): (&'static str, &'static str),
    field: &str,
    value: &str,
) -> Option<AgencyCode> {
    if blank(value) {
        r.push(missing, field, format!("{field} is required"));
        return None;
    }
    match AgencyCode::parse(value) {
        Ok(code) => Some(code),
        Err(_) => {
            r.push(
                bad,
                field,
                format!(
                    "{field} must be an agency code like 000.00.00.G22 (has {})",
                    shown(value)
                ),
            );
            None
        }
    }
}

/// Checks a document named by its sender and id: both well formed, and the id's sender part is the sender.
fn document(r: &mut Report, sender: &str, document_id: &str) -> Option<(AgencyCode, DocumentId)> {
    let sender = agency(r, ("N.Sender", "R.Sender"), "sender", sender);
    let id = match DocumentId::parse(document_id) {
        Ok(id) => Some(id),
        Err(v) => {
            r.0.push(v);
            None
        }
    };
    let (sender, id) = (sender?, id?);
    if id.sender != sender {
        r.push(
            "R.DocumentId.Sender",
            "document_id",
            format!(
                "the document id's sender {} must be the sender {sender}",
                id.sender
            ),
        );
        return None;
    }
    Some((sender, id))
}

/// The result of a report that found `value` when it found nothing wrong.
fn result<T>(r: Report, value: Option<T>) -> Result<T, Error> {
    match (r.0.is_empty(), value) {
        (true, Some(value)) => Ok(value),
        _ => Err(Error::Invalid(r.0)),
    }
}

/// A status event's code in the known set, its description and staff fields
/// bounded and without control characters, its author an agency code and its
/// timestamp before year 10000. Returns the status code.
pub fn check_status_event(ev: &StatusEvent) -> Result<StatusCode, Error> {
    let mut r = Report(Vec::new());
    let code = event(&mut r, "event", ev);
    result(r, code)
}

/// A status travelling to the sender's node: the transaction id empty or 32
/// lowercase hex digits, the document named by a valid sender and id, the
/// recipient an agency code other than the sender, a valid event set by the
/// recipient (or by the sender for 13, the sender's own change request).
/// Returns the event's status code.
pub fn check_status_update(update: &StatusUpdate) -> Result<StatusCode, Error> {
    let mut r = Report(Vec::new());
    let tx = &update.transaction_id;
    if !tx.is_empty() && !is_transaction_id(tx) {
        r.push(
            "R.TransactionId",
            "transaction_id",
            format!(
                "a transaction id is 32 lowercase hex digits (has {})",
                shown(tx)
            ),
        );
    }
    let doc = document(&mut r, &update.sender, &update.document_id);
    let recipient = agency(
        &mut r,
        ("N.Recipient", "R.Recipient"),
        "recipient",
        &update.recipient,
    );
    if let (Some((sender, _)), Some(recipient)) = (&doc, &recipient) {
        if sender == recipient {
            r.push(
                "R.Recipient",
                "recipient",
                format!("the recipient {recipient} is the document's sender"),
            );
        }
    }
    let code = match &update.event {
        None => {
            r.push("N.Status", "event", "the status event is required");
            None
        }
        Some(ev) => {
            let code = event(&mut r, "event", ev);
            let by_ok = match code {
                Some(StatusCode::ChangeRequested) => ev.by == update.sender,
                _ => ev.by == update.recipient,
            };
            let parties_ok = doc.is_some() && recipient.is_some();
            if code.is_some() && parties_ok && !by_ok && AgencyCode::parse(&ev.by).is_ok() {
                r.push(
                    "R.Status.By",
                    "event.by",
                    format!(
                        "a status is set by the recipient (13 by the sender), not {}",
                        ev.by
                    ),
                );
            }
            code
        }
    };
    result(r, code)
}

/// An agency system's UpdateStatus: the recipient an agency code, the
/// document named by a valid sender and id, the status in the known set, the
/// description and staff fields bounded. Returns the requested status code.
pub fn check_update_status(req: &UpdateStatusRequest) -> Result<StatusCode, Error> {
    let mut r = Report(Vec::new());
    agency(
        &mut r,
        ("N.Recipient", "R.Recipient"),
        "recipient",
        &req.recipient,
    );
    document(&mut r, &req.sender, &req.document_id);
    let code = match StatusCode::parse(&req.status) {
        Ok(code) => Some(code),
        Err(v) => {
            r.0.push(v);
            None
        }
    };
    r.text(&DESCRIPTION, "description", &req.description);
    if let Some(staff) = &req.staff {
        check_staff(&mut r, "staff", staff);
    }
    result(r, code)
}

/// A document named in a request (FetchDocument, GetTracking, …): `sender` an
/// agency code and `document_id` a valid id sent by it. Returns both parsed.
pub fn check_document_ref(
    sender: &str,
    document_id: &str,
) -> Result<(AgencyCode, DocumentId), Error> {
    let mut r = Report(Vec::new());
    let doc = document(&mut r, sender, document_id);
    result(r, doc)
}

/// Whether `s` is a transaction id: 32 lowercase hex digits.
pub fn is_transaction_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
