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
//! | `N.To` | `to` | at least one recipient |
//! | `R.To.Count` | `to` | at most [`Limits::max_recipients`] recipients |
//! | `N.To.OrganId` | `to[i].organ_id` | every recipient has an organ id |
//! | `R.To.OrganId` | `to[i].organ_id` | an agency code |
//! | `R.To.Duplicate` | `to[i].organ_id` | no recipient listed twice |
//! | `R.To.Self` | `to[i].organ_id` | the sender is not among the recipients |
//! | `N.Code.CodeNumber` | `code.code_number` | the document number is required |
//! | `R.Code.CodeNumber` | `code.code_number` | the number contains no `/` or `,` |
//! | `N.Code.CodeNotation` | `code.code_notation` | the notation is required |
//! | `R.PromulgationInfo.PromulgationDate` | `promulgation_info.promulgation_date` | when set, a real `yyyy/MM/dd` date |
//! | `N.Subject` | `subject` | the subject is required |
//! | `R.Subject.Length` | `subject` | at most 500 characters |
//! | `R.Content.Length` | `content` | at most 500 characters |
//! | `R.DueDate` | `due_date` | when set, a real `yyyy/MM/dd` date |
//! | `R.OtherInfo.Priority` | `other_info.priority` | 0..=4 |
//! | `N.ResponseFor.OrganId` | `response_for[i].organ_id` | each answered document names its organ |
//! | `R.ResponseFor.OrganId` | `response_for[i].organ_id` | an agency code |
//! | `R.ResponseFor.DocumentId` | `response_for[i].document_id` | when set, a well-formed id sent by that organ |
//! | `R.ResponseFor.PromulgationDate` | `response_for[i].promulgation_date` | when set, a real date |
//! | `R.SteeringType` | `steering_type` | 0..=3 |
//! | `N.DocumentId` | `document_id` | the document id is required |
//! | `R.DocumentId.Format` | `document_id` | `{sender},{yyyy/MM/dd},{number}/{notation}` |
//! | `R.DocumentId.Sender` | `document_id` | its sender part is `from.organ_id` |
//! | `R.DocumentId.Date` | `document_id` | its date part is the promulgation date, when that is set |
//! | `R.DocumentId.Code` | `document_id` | its `number/notation` part is `code` |
//! | `R.BusinessKind` | `business_kind` | a known kind (0..=3) |
//! | `N.BusinessReason` | `business_reason` | required for recall, update and replace |
//! | `R.Attachments.Count` | `attachments` | at most [`Limits::max_attachments`] |
//! | `R.Attachments.TotalSize` | `attachments` | sizes sum to at most [`Limits::max_total_bytes`] |
//! | `N.Attachment.Name` | `attachments[i].name` | every attachment has a name |
//! | `R.Attachment.Name` | `attachments[i].name` | a plain file name: no `/`, `\`, control characters, not `.`/`..`, at most 255 characters |
//! | `R.Attachment.Duplicate` | `attachments[i].name` | no two attachments share a name |
//! | `R.Attachment.Size` | `attachments[i].size` | at most [`Limits::max_attachment_bytes`] |
//! | `N.Attachment.Sha256` | `attachments[i].sha256` | the file's SHA-256 is required |
//! | `R.Attachment.Sha256` | `attachments[i].sha256` | exactly 32 bytes |
//!
//! [`StatusCode::parse`] reports `R.StatusCode` (field `status`).
//!
//! Required text counts as missing when it is empty or only whitespace. Text
//! lengths are counted in characters (Unicode scalar values), not bytes.

#![forbid(unsafe_code)]

pub mod chunks;
mod digest;
mod id;
mod status;
mod validate;

pub use digest::envelope_digest;
pub use id::DocumentId;
pub use status::{ChangeKind, DocState, StatusCode, TransitionError};
pub use validate::{Limits, Violation, check, is_valid_date, validate};
