//! Envelope validation: [`validate`], [`check`], [`Violation`], [`Limits`].

use std::collections::HashMap;
use std::fmt;

use tonic::metadata::MetadataValue;
use truc_proto::v1::{Attachment, BusinessKind, Envelope, Organ, ResponseFor};
use truc_registry::AgencyCode;

use crate::id::DocumentId;

/// Most characters of `subject`.
const MAX_SUBJECT_CHARS: usize = 500;
/// Most characters of `content`.
const MAX_CONTENT_CHARS: usize = 500;
/// Most characters of an attachment name.
const MAX_ATTACHMENT_NAME_CHARS: usize = 255;
/// Highest `other_info.priority` (timed express).
const MAX_PRIORITY: u32 = 4;
/// Highest `steering_type` (report on a directive).
const MAX_STEERING_TYPE: u32 = 3;

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// edXML-style code: `N.…` for a missing element, `R.…` for a bad value.
    pub code: &'static str,
    /// Path of the offending field, e.g. `to[1].organ_id`.
    pub field: String,
    /// The rule, as a lowercase sentence.
    pub rule: String,
}

impl Violation {
    /// A violation of `code` at `field`.
    pub fn new(code: &'static str, field: impl Into<String>, rule: impl Into<String>) -> Violation {
        Violation {
            code,
            field: field.into(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code, self.field, self.rule)
    }
}

impl std::error::Error for Violation {}

/// Limits a node enforces (configurable).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most attachments in one envelope (default 50).
    pub max_attachments: usize,
    /// Largest single attachment in bytes (default 1 GiB).
    pub max_attachment_bytes: u64,
    /// Largest sum of attachment sizes in bytes (default 2 GiB).
    pub max_total_bytes: u64,
    /// Most recipients of one envelope (default 500).
    pub max_recipients: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_attachments: 50,
            max_attachment_bytes: 1 << 30,
            max_total_bytes: 2 << 30,
            max_recipients: 500,
        }
    }
}

/// Whether `s` is a real calendar date written `yyyy/MM/dd` (years 0001..=9999).
pub fn is_valid_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'/' || b[7] != b'/' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (Some(year), Some(month), Some(day)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1 && (1..=days).contains(&day)
}

/// Whether required text is missing (empty or only whitespace).
fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// Collects violations in field order.
struct Report(Vec<Violation>);

impl Report {
    fn push(&mut self, code: &'static str, field: impl Into<String>, rule: impl Into<String>) {
        self.0.push(Violation::new(code, field, rule));
    }

    /// `R.{what}` when `value` is set but not a real date.
    fn optional_date(&mut self, code: &'static str, field: &str, value: &str) {
        if !value.is_empty() && !is_valid_date(value) {
            self.push(
                code,
                field,
                format!("{field} must be a real date written yyyy/MM/dd (has {value:?})"),
            );
        }
    }

    /// `R.{what}.Length` when `value` has more than `max` characters.
    fn max_chars(&mut self, code: &'static str, field: &str, value: &str, max: usize) {
        let n = value.chars().count();
        if n > max {
            self.push(
                code,
                field,
                format!("{field} is at most {max} characters (has {n})"),
            );
        }
    }
}

/// Every broken rule of an envelope (empty = valid). Dates are yyyy/MM/dd and must be real calendar dates.
/// Text lengths are counted in characters (chars), not bytes.
pub fn validate(envelope: &Envelope, limits: &Limits) -> Vec<Violation> {
    let mut r = Report(Vec::new());
    let sender = check_from(&mut r, envelope.from.as_ref());
    check_to(&mut r, &envelope.to, sender.as_ref(), limits);

    let (number, notation) = envelope.code.as_ref().map_or(("", ""), |c| {
        (c.code_number.as_str(), c.code_notation.as_str())
    });
    let mut code_ok = true;
    if blank(number) {
        code_ok = false;
        r.push(
            "N.Code.CodeNumber",
            "code.code_number",
            "the document number is required",
        );
    } else if number.contains(['/', ',']) {
        code_ok = false;
        r.push(
            "R.Code.CodeNumber",
            "code.code_number",
            format!("the document number must not contain '/' or ',' (has {number:?})"),
        );
    }
    if blank(notation) {
        code_ok = false;
        r.push(
            "N.Code.CodeNotation",
            "code.code_notation",
            "the document notation is required",
        );
    }

    let promulgation_date = envelope
        .promulgation_info
        .as_ref()
        .map_or("", |p| p.promulgation_date.as_str());
    r.optional_date(
        "R.PromulgationInfo.PromulgationDate",
        "promulgation_info.promulgation_date",
        promulgation_date,
    );

    if blank(&envelope.subject) {
        r.push("N.Subject", "subject", "subject is required");
    } else {
        r.max_chars(
            "R.Subject.Length",
            "subject",
            &envelope.subject,
            MAX_SUBJECT_CHARS,
        );
    }
    r.max_chars(
        "R.Content.Length",
        "content",
        &envelope.content,
        MAX_CONTENT_CHARS,
    );
    r.optional_date("R.DueDate", "due_date", &envelope.due_date);

    if let Some(other) = &envelope.other_info {
        if other.priority > MAX_PRIORITY {
            r.push(
                "R.OtherInfo.Priority",
                "other_info.priority",
                format!(
                    "priority is 0 (normal) to {MAX_PRIORITY} (timed express) (has {})",
                    other.priority
                ),
            );
        }
    }

    for (i, rf) in envelope.response_for.iter().enumerate() {
        check_response_for(&mut r, i, rf);
    }

    if envelope.steering_type > MAX_STEERING_TYPE {
        r.push(
            "R.SteeringType",
            "steering_type",
            format!(
                "steering type is 0 to {MAX_STEERING_TYPE} (has {})",
                envelope.steering_type
            ),
        );
    }

    // DocumentId and its agreement with From, PromulgationDate and Code.
    match DocumentId::parse(&envelope.document_id) {
        Err(v) => r.0.push(v),
        Ok(id) => {
            if let Some(sender) = &sender {
                if id.sender != *sender {
                    r.push(
                        "R.DocumentId.Sender",
                        "document_id",
                        format!(
                            "the document id's sender {} must be from.organ_id {sender}",
                            id.sender
                        ),
                    );
                }
            }
            if is_valid_date(promulgation_date) && id.date != promulgation_date {
                r.push(
                    "R.DocumentId.Date",
                    "document_id",
                    format!(
                        "the document id's date {} must be the promulgation date {promulgation_date}",
                        id.date
                    ),
                );
            }
            if code_ok && (id.number != number || id.notation != notation) {
                r.push(
                    "R.DocumentId.Code",
                    "document_id",
                    format!(
                        "the document id's code {}/{} must be the document code {number}/{notation}",
                        id.number, id.notation
                    ),
                );
            }
        }
    }

    match BusinessKind::try_from(envelope.business_kind) {
        Err(_) => r.push(
            "R.BusinessKind",
            "business_kind",
            format!(
                "business kind is 0 (new), 1 (recall), 2 (update) or 3 (replace) (has {})",
                envelope.business_kind
            ),
        ),
        Ok(BusinessKind::New) => {}
        Ok(kind) => {
            if blank(&envelope.business_reason) {
                r.push(
                    "N.BusinessReason",
                    "business_reason",
                    format!(
                        "a reason is required for a {}",
                        match kind {
                            BusinessKind::Recall => "recall",
                            BusinessKind::Update => "update",
                            _ => "replace",
                        }
                    ),
                );
            }
        }
    }

    check_attachments(&mut r, &envelope.attachments, limits);
    r.0
}

/// Checks `from`; returns the sender's agency code when it is valid.
fn check_from(r: &mut Report, from: Option<&Organ>) -> Option<AgencyCode> {
    let Some(from) = from else {
        r.push("N.From", "from", "the sender organ is required");
        return None;
    };
    if blank(&from.organ_id) {
        r.push("N.From", "from.organ_id", "the sender organ id is required");
        return None;
    }
    match AgencyCode::parse(&from.organ_id) {
        Ok(code) => Some(code),
        Err(_) => {
            r.push(
                "R.From.OrganId",
                "from.organ_id",
                format!(
                    "the sender organ id must be an agency code like 000.00.00.G22 (has {:?})",
                    from.organ_id
                ),
            );
            None
        }
    }
}

/// Checks the recipients.
fn check_to(r: &mut Report, to: &[Organ], sender: Option<&AgencyCode>, limits: &Limits) {
    if to.is_empty() {
        r.push("N.To", "to", "at least one recipient is required");
        return;
    }
    if to.len() > limits.max_recipients {
        r.push(
            "R.To.Count",
            "to",
            format!(
                "at most {} recipients are allowed (has {})",
                limits.max_recipients,
                to.len()
            ),
        );
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, organ) in to.iter().enumerate() {
        let field = format!("to[{i}].organ_id");
        let id = organ.organ_id.as_str();
        if blank(id) {
            r.push("N.To.OrganId", field, "the recipient organ id is required");
            continue;
        }
        if AgencyCode::parse(id).is_err() {
            r.push(
                "R.To.OrganId",
                field,
                format!(
                    "the recipient organ id must be an agency code like 000.00.00.G22 (has {id:?})"
                ),
            );
            continue;
        }
        if let Some(first) = seen.get(id) {
            r.push(
                "R.To.Duplicate",
                field,
                format!("recipient {id} is listed twice (also to[{first}])"),
            );
            continue;
        }
        seen.insert(id, i);
        if sender.is_some_and(|s| s.as_str() == id) {
            r.push(
                "R.To.Self",
                field,
                format!("the sender {id} must not be among the recipients"),
            );
        }
    }
}

/// Checks one `response_for` entry.
fn check_response_for(r: &mut Report, i: usize, rf: &ResponseFor) {
    let organ = match AgencyCode::parse(&rf.organ_id) {
        Ok(code) => Some(code),
        Err(_) if blank(&rf.organ_id) => {
            r.push(
                "N.ResponseFor.OrganId",
                format!("response_for[{i}].organ_id"),
                "the answered document's organ id is required",
            );
            None
        }
        Err(_) => {
            r.push(
                "R.ResponseFor.OrganId",
                format!("response_for[{i}].organ_id"),
                format!(
                    "the answered document's organ id must be an agency code like 000.00.00.G22 (has {:?})",
                    rf.organ_id
                ),
            );
            None
        }
    };
    if !rf.document_id.is_empty() {
        let field = format!("response_for[{i}].document_id");
        match DocumentId::parse(&rf.document_id) {
            Err(v) => r.push("R.ResponseFor.DocumentId", field, v.rule),
            Ok(id) => {
                if let Some(organ) = organ {
                    if id.sender != organ {
                        r.push(
                            "R.ResponseFor.DocumentId",
                            field,
                            format!(
                                "the answered document id's sender {} must be its organ id {organ}",
                                id.sender
                            ),
                        );
                    }
                }
            }
        }
    }
    r.optional_date(
        "R.ResponseFor.PromulgationDate",
        &format!("response_for[{i}].promulgation_date"),
        &rf.promulgation_date,
    );
}

/// Whether an attachment name is a plain file name.
fn plain_file_name(name: &str) -> bool {
    name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// Checks the attachments against each other and `limits`.
fn check_attachments(r: &mut Report, attachments: &[Attachment], limits: &Limits) {
    if attachments.len() > limits.max_attachments {
        r.push(
            "R.Attachments.Count",
            "attachments",
            format!(
                "at most {} attachments are allowed (has {})",
                limits.max_attachments,
                attachments.len()
            ),
        );
    }
    let total = attachments
        .iter()
        .fold(0u64, |sum, a| sum.saturating_add(a.size));
    if total > limits.max_total_bytes {
        r.push(
            "R.Attachments.TotalSize",
            "attachments",
            format!(
                "attachments total at most {} bytes (has {total})",
                limits.max_total_bytes
            ),
        );
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, a) in attachments.iter().enumerate() {
        let name_field = format!("attachments[{i}].name");
        if blank(&a.name) {
            r.push(
                "N.Attachment.Name",
                name_field,
                "the attachment name is required",
            );
        } else if !plain_file_name(&a.name) {
            r.push(
                "R.Attachment.Name",
                name_field,
                format!(
                    "the attachment name must be a plain file name without '/', '\\' or control characters (has {:?})",
                    a.name
                ),
            );
        } else if a.name.chars().count() > MAX_ATTACHMENT_NAME_CHARS {
            r.max_chars(
                "R.Attachment.Name",
                &name_field,
                &a.name,
                MAX_ATTACHMENT_NAME_CHARS,
            );
        } else if let Some(first) = seen.get(a.name.as_str()) {
            r.push(
                "R.Attachment.Duplicate",
                name_field,
                format!(
                    "attachment name {:?} is used twice (also attachments[{first}])",
                    a.name
                ),
            );
        } else {
            seen.insert(a.name.as_str(), i);
        }
        if a.size > limits.max_attachment_bytes {
            r.push(
                "R.Attachment.Size",
                format!("attachments[{i}].size"),
                format!(
                    "an attachment is at most {} bytes (has {})",
                    limits.max_attachment_bytes, a.size
                ),
            );
        }
        let sha_field = format!("attachments[{i}].sha256");
        match a.sha256.len() {
            32 => {}
            0 => r.push(
                "N.Attachment.Sha256",
                sha_field,
                "the attachment's sha-256 is required",
            ),
            n => r.push(
                "R.Attachment.Sha256",
                sha_field,
                format!("the attachment's sha-256 is 32 bytes (has {n})"),
            ),
        }
    }
}

/// validate() as a gRPC status: INVALID_ARGUMENT whose message lists every violation
/// ("; "-separated, each as Display), with the first violation's code in metadata key
/// `x-truc-violation`. Ok(()) when valid.
pub fn check(envelope: &Envelope, limits: &Limits) -> Result<(), tonic::Status> {
    let violations = validate(envelope, limits);
    let Some(first) = violations.first() else {
        return Ok(());
    };
    let message = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let mut status = tonic::Status::invalid_argument(message);
    if let Ok(value) = first.code.parse::<MetadataValue<_>>() {
        status.metadata_mut().insert("x-truc-violation", value);
    }
    Err(status)
}
