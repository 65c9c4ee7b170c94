//! The rules of official documents exchanged through truc, shaped after edXML
//! (QCVN 102:2016/BTTTT).
//!
//! This crate is for deciding whether a document is acceptable and what may
//! happen to it next:
//!
//! - [`validate`] and [`check`]: every broken rule of an
//!   [`Envelope`](truc_proto::v1::Envelope), each as
//!   a [`Violation`] with an edXML-style code (`N.…` when a required element is
//!   missing, `R.…` when a value is out of range or malformed), the field path
//!   and a readable rule. Node limits are configurable through [`Limits`].
//! - [`DocumentId`]: parsing and formatting of
//!   `{sender organ id},{yyyy/MM/dd},{number}/{notation}`.
//! - [`StatusCode`], [`DocState`] and [`ChangeKind`]: the status state machine
//!   of a document at one recipient (01 arrived … 06 completed, 13/15/16 for a
//!   sender's recall, update or replace).
//! - [`envelope_digest`]: the SHA-256 identity of a send, to tell a repeated
//!   send from a different envelope under the same `DocumentId`.
//! - [`check_status_event`], [`check_status_update`], [`check_update_status`]
//!   and [`check_document_ref`]: the same rules for status messages and for
//!   the (sender, document id) pair naming a document in a request.
//! - [`Error`]: what every check refuses, turned into a `tonic::Status` in one
//!   place (`From<Error> for tonic::Status`: INVALID_ARGUMENT, DATA_LOSS for
//!   corrupted chunks, the first violation's code in [`VIOLATION_HEADER`]).
//!
//! It is not storage and not networking: it keeps no state, does no I/O and
//! knows nothing about nodes, hubs or the registry beyond the syntax of agency
//! codes. Callers hold the [`DocState`] of each document and persist it.
//!
//! # Violation codes
//!
//! | code | field | rule |
//! | --- | --- | --- |
//! | `N.From` | `from`, `from.organ_id` | the sender is required |
//! | `R.From.OrganId` | `from.organ_id` | an agency code `NNN.NN.NN.XNN` |
//! | `R.Organ.{Field}.Length`, `.Characters` | `from.*`, `to[i].*` | `OrganizationInCharge`, `OrganName` (255), `OrganAdd` (500), `Email` (254), `Telephone`, `Fax` (64), `Website` (500): one line |
//! | `N.To` | `to` | at least one recipient |
//! | `R.To.Count` | `to` | at most [`Limits::max_recipients`] recipients |
//! | `N.To.OrganId` | `to[i].organ_id` | every recipient has an organ id |
//! | `R.To.OrganId` | `to[i].organ_id` | an agency code |
//! | `R.To.Duplicate` | `to[i].organ_id` | no recipient listed twice |
//! | `R.To.Self` | `to[i].organ_id` | the sender is not among the recipients |
//! | `N.Code.CodeNumber` | `code.code_number` | the document number is required |
//! | `R.Code.CodeNumber` | `code.code_number` | no `/` or `,`, one line, at most [`MAX_NUMBER_CHARS`] |
//! | `N.Code.CodeNotation` | `code.code_notation` | the notation is required |
//! | `R.Code.CodeNotation` | `code.code_notation` | one line, at most [`MAX_NOTATION_CHARS`] |
//! | `R.PromulgationInfo.Place.Length`, `.Characters` | `promulgation_info.place` | one line, 255 |
//! | `R.PromulgationInfo.PromulgationDate` | `promulgation_info.promulgation_date` | when set, a real `yyyy/MM/dd` date |
//! | `R.DocumentType.TypeName…`, `R.DocumentType.TypeDetail…` | `document_type.*` | one line, 255 and 500 |
//! | `N.Subject` | `subject` | the subject is required |
//! | `R.Subject.Length`, `.Characters` | `subject` | at most 500 characters, free text |
//! | `R.Content.Length`, `.Characters` | `content` | at most 500 characters, free text |
//! | `R.SignerInfo.{Competence,Position,FullName}…` | `signer_info.*` | one line, 255 |
//! | `R.DueDate` | `due_date` | when set, a real `yyyy/MM/dd` date |
//! | `R.ToPlaces.Count` | `to_places` | at most [`MAX_LIST_ENTRIES`] |
//! | `R.ToPlaces.Place.Length`, `.Characters` | `to_places[i]` | one line, 255 |
//! | `R.OtherInfo.Priority` | `other_info.priority` | 0..=4 |
//! | `R.OtherInfo.{SphereOfPromulgation,TyperNotation}…` | `other_info.*` | one line, 255 |
//! | `R.OtherInfo.Appendixes.Count` | `other_info.appendixes` | at most [`MAX_LIST_ENTRIES`] |
//! | `R.OtherInfo.Appendix.Length`, `.Characters` | `other_info.appendixes[i]` | one line, 500 |
//! | `R.ResponseFor.Count` | `response_for` | at most [`MAX_LIST_ENTRIES`] |
//! | `N.ResponseFor.OrganId` | `response_for[i].organ_id` | each answered document names its organ |
//! | `R.ResponseFor.OrganId` | `response_for[i].organ_id` | an agency code |
//! | `R.ResponseFor.DocumentId` | `response_for[i].document_id` | when set, a well-formed id sent by that organ |
//! | `R.ResponseFor.Code.Length`, `.Characters` | `response_for[i].code` | one line, 255 |
//! | `R.ResponseFor.PromulgationDate` | `response_for[i].promulgation_date` | when set, a real date |
//! | `R.SteeringType` | `steering_type` | 0..=3 |
//! | `N.DocumentId` | `document_id` | the document id is required |
//! | `R.DocumentId.Format` | `document_id` | `{sender},{yyyy/MM/dd},{number}/{notation}`, at most [`MAX_DOCUMENT_ID_CHARS`], one line |
//! | `R.DocumentId.Sender` | `document_id` | its sender part is `from.organ_id` |
//! | `R.DocumentId.Date` | `document_id` | its date part is the promulgation date, when that is set |
//! | `R.DocumentId.Code` | `document_id` | its `number/notation` part is `code` |
//! | `R.BusinessKind` | `business_kind` | a known kind (0..=3) |
//! | `N.BusinessReason` | `business_reason` | required for recall, update and replace |
//! | `R.BusinessReason.Length`, `.Characters` | `business_reason` | free text, at most [`MAX_REASON_CHARS`] |
//! | `R.StaffInfo.{Department,Staff}…` (255), `R.StaffInfo.Mobile…` (64), `R.StaffInfo.Email…` (254) | `staff_info.*` | one line |
//! | `R.Attachments.Count` | `attachments` | at most [`Limits::max_attachments`] |
//! | `R.Attachments.TotalSize` | `attachments` | sizes sum to at most [`Limits::max_total_bytes`] |
//! | `N.Attachment.Name` | `attachments[i].name` | every attachment has a name |
//! | `R.Attachment.Name` | `attachments[i].name` | a plain file name: no `/`, `\`, not `.`/`..`, one line, at most 255 characters |
//! | `R.Attachment.ContentType` | `attachments[i].content_type` | ascii, one line, at most 255 characters |
//! | `R.Attachment.Description.Length`, `.Characters` | `attachments[i].description` | free text, 500 |
//! | `R.Attachment.Duplicate` | `attachments[i].name` | no two attachments share a name |
//! | `R.Attachment.Size` | `attachments[i].size` | at most [`Limits::max_attachment_bytes`] |
//! | `N.Attachment.Sha256` | `attachments[i].sha256` | the file's SHA-256 is required |
//! | `R.Attachment.Sha256` | `attachments[i].sha256` | exactly 32 bytes |
//! | `R.Preserved.Size` | `preserved` | at most [`MAX_PRESERVED_BYTES`] |
//!
//! Status messages ([`check_status_update`] and the others):
//!
//! | code | field | rule |
//! | --- | --- | --- |
//! | `R.StatusCode` | `status`, `event.code` | one of 01..06, 13, 15, 16 |
//! | `R.Status.Description.Length`, `.Characters` | `description`, `event.description` | free text, at most [`MAX_DESCRIPTION_CHARS`] |
//! | `N.Status.By`, `R.Status.By` | `event.by` | an agency code: the recipient's (the sender's for 13) |
//! | `R.Status.Timestamp` | `event.unix_ms` | at most [`MAX_UNIX_MS`] (year 9999) |
//! | `R.StaffInfo.…` | `staff.*`, `event.staff.*` | as in the envelope |
//! | `N.Status` | `event` | a status update carries an event |
//! | `R.TransactionId` | `transaction_id` | empty or 32 lowercase hex digits |
//! | `N.Sender`, `R.Sender` | `sender` | an agency code |
//! | `N.Recipient`, `R.Recipient` | `recipient` | an agency code, not the sender |
//! | `N.DocumentId`, `R.DocumentId.Format`, `R.DocumentId.Sender` | `document_id` | a valid id whose sender part is `sender` |
//!
//! Required text counts as missing when it is empty or only whitespace. Text
//! lengths are counted in characters (Unicode scalar values), not bytes.
//! "One line" means no control character (U+0000..U+001F, U+007F..U+009F),
//! no line or paragraph separator and no bidirectional embedding, override or
//! isolate mark; "free text" allows tab, line feed and carriage return and no
//! other control character. These bounds are format rules, like edXML's 500
//! characters of subject, not operator settings: [`Limits`] holds the ones a
//! node may tune. Messages quote at most 64 characters of a refused value.

#![forbid(unsafe_code)]

pub mod chunks;
mod digest;
mod error;
mod event;
mod id;
pub mod sample;
mod status;
mod text;
mod validate;

// A dev-dependency only the integration tests (`tests/`) use; the unit-test build links it too.
#[cfg(test)]
use proptest as _;

pub use digest::envelope_digest;
pub use error::{Error, VIOLATION_HEADER};
pub use event::{
    MAX_DESCRIPTION_CHARS, MAX_UNIX_MS, check_document_ref, check_status_event,
    check_status_update, check_update_status, is_transaction_id,
};
pub use id::{DocumentId, MAX_DOCUMENT_ID_CHARS, MAX_NOTATION_CHARS, MAX_NUMBER_CHARS};
pub use status::{ChangeKind, DocState, StatusCode, TransitionError};
/// Whether a character may not appear in a one-line text field (used by
/// other crates' one-line fields, so that every such field follows one rule).
pub use text::forbidden_in_line;
pub use validate::{
    Limits, LimitsError, MAX_EMAIL_CHARS, MAX_LIST_ENTRIES, MAX_LONG_TEXT_CHARS, MAX_NAME_CHARS,
    MAX_PHONE_CHARS, MAX_PRESERVED_BYTES, MAX_REASON_CHARS, Violation, check, is_valid_date,
    validate,
};
