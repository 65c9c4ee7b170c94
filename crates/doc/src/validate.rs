//! Envelope validation: [`validate`], [`check`], [`Violation`], [`Limits`].

use std::collections::HashMap;
use std::fmt;

use truc_proto::v1::{
    Attachment, BusinessKind, Envelope, Organ, OtherInfo, ResponseFor, StaffInfo,
};
use truc_registry::AgencyCode;

use crate::error::Error;
use crate::id::DocumentId;
use crate::text::{self, Kind, Rule, shown};

/// A one-line text rule with codes `R.{name}.Length` and `R.{name}.Characters`.
macro_rules! line_rule {
    ($name:literal, $max:expr) => {
        Rule {
            length: concat!("R.", $name, ".Length"),
            chars: concat!("R.", $name, ".Characters"),
            max: $max,
            kind: Kind::Line,
        }
    };
}

/// A free-text rule (tabs and line breaks allowed) with codes `R.{name}.Length` and `R.{name}.Characters`.
macro_rules! free_rule {
    ($name:literal, $max:expr) => {
        Rule {
            kind: Kind::Multiline,
            ..line_rule!($name, $max)
        }
    };
}

/// Most characters of a name (organ, place, signer, staff, type name).
pub const MAX_NAME_CHARS: usize = 255;
/// Most characters of an address, a web site, a type detail, an appendix or a description.
pub const MAX_LONG_TEXT_CHARS: usize = 500;
/// Most characters of an email address (RFC 5321).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Most characters of a telephone, fax or mobile number.
pub const MAX_PHONE_CHARS: usize = 64;
/// Most characters of a business reason or a status description.
pub const MAX_REASON_CHARS: usize = 1000;
/// Most entries of `to_places`, `other_info.appendixes` and `response_for`.
pub const MAX_LIST_ENTRIES: usize = 100;
/// Largest [`Envelope::preserved`] in bytes: the edXML content the envelope
/// does not model (a `DigitalSignature` with its certificates is a few KiB).
pub const MAX_PRESERVED_BYTES: usize = 256 * 1024;

const SUBJECT: Rule = free_rule!("Subject", 500);
const CONTENT: Rule = free_rule!("Content", 500);
const CODE_NUMBER: Rule = Rule {
    length: "R.Code.CodeNumber",
    chars: "R.Code.CodeNumber",
    ..line_rule!("Code.CodeNumber", crate::id::MAX_NUMBER_CHARS)
};
const CODE_NOTATION: Rule = Rule {
    length: "R.Code.CodeNotation",
    chars: "R.Code.CodeNotation",
    ..line_rule!("Code.CodeNotation", crate::id::MAX_NOTATION_CHARS)
};
const ORGANIZATION_IN_CHARGE: Rule = line_rule!("Organ.OrganizationInCharge", MAX_NAME_CHARS);
const ORGAN_NAME: Rule = line_rule!("Organ.OrganName", MAX_NAME_CHARS);
const ORGAN_ADD: Rule = line_rule!("Organ.OrganAdd", MAX_LONG_TEXT_CHARS);
const ORGAN_EMAIL: Rule = line_rule!("Organ.Email", MAX_EMAIL_CHARS);
const ORGAN_TELEPHONE: Rule = line_rule!("Organ.Telephone", MAX_PHONE_CHARS);
const ORGAN_FAX: Rule = line_rule!("Organ.Fax", MAX_PHONE_CHARS);
const ORGAN_WEBSITE: Rule = line_rule!("Organ.Website", MAX_LONG_TEXT_CHARS);
const PLACE: Rule = line_rule!("PromulgationInfo.Place", MAX_NAME_CHARS);
const TYPE_NAME: Rule = line_rule!("DocumentType.TypeName", MAX_NAME_CHARS);
const TYPE_DETAIL: Rule = line_rule!("DocumentType.TypeDetail", MAX_LONG_TEXT_CHARS);
const COMPETENCE: Rule = line_rule!("SignerInfo.Competence", MAX_NAME_CHARS);
const POSITION: Rule = line_rule!("SignerInfo.Position", MAX_NAME_CHARS);
const FULL_NAME: Rule = line_rule!("SignerInfo.FullName", MAX_NAME_CHARS);
const TO_PLACE: Rule = line_rule!("ToPlaces.Place", MAX_NAME_CHARS);
const SPHERE: Rule = line_rule!("OtherInfo.SphereOfPromulgation", MAX_NAME_CHARS);
const TYPER_NOTATION: Rule = line_rule!("OtherInfo.TyperNotation", MAX_NAME_CHARS);
const APPENDIX: Rule = line_rule!("OtherInfo.Appendix", MAX_LONG_TEXT_CHARS);
const RESPONSE_FOR_CODE: Rule = line_rule!("ResponseFor.Code", MAX_NAME_CHARS);
const BUSINESS_REASON: Rule = free_rule!("BusinessReason", MAX_REASON_CHARS);
const DEPARTMENT: Rule = line_rule!("StaffInfo.Department", MAX_NAME_CHARS);
const STAFF: Rule = line_rule!("StaffInfo.Staff", MAX_NAME_CHARS);
const MOBILE: Rule = line_rule!("StaffInfo.Mobile", MAX_PHONE_CHARS);
const STAFF_EMAIL: Rule = line_rule!("StaffInfo.Email", MAX_EMAIL_CHARS);
const ATTACHMENT_NAME: Rule = Rule {
    length: "R.Attachment.Name",
    chars: "R.Attachment.Name",
    ..line_rule!("Attachment.Name", 255)
};
const CONTENT_TYPE: Rule = Rule {
    length: "R.Attachment.ContentType",
    chars: "R.Attachment.ContentType",
    ..line_rule!("Attachment.ContentType", 255)
};
const ATTACHMENT_DESCRIPTION: Rule = free_rule!("Attachment.Description", MAX_LONG_TEXT_CHARS);
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

/// Limits a node enforces (configurable): the `[documents]` section of the hub
/// and node configs, every key optional (the defaults below).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
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

/// A `[documents]` section with a limit of zero.
#[derive(Debug, thiserror::Error)]
#[error("limits must be positive")]
pub struct LimitsError;

impl Limits {
    /// These limits, if every one is positive (a zero limit would refuse
    /// every document).
    pub fn checked(self) -> Result<Limits, LimitsError> {
        if self.max_attachments == 0
            || self.max_recipients == 0
            || self.max_total_bytes == 0
            || self.max_attachment_bytes == 0
        {
            return Err(LimitsError);
        }
        Ok(self)
    }
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
pub(crate) fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// Collects violations in field order.
pub(crate) struct Report(pub(crate) Vec<Violation>);

impl Report {
    pub(crate) fn push(
        &mut self,
        code: &'static str,
        field: impl Into<String>,
        rule: impl Into<String>,
    ) {
        self.0.push(Violation::new(code, field, rule));
    }

    /// `R.{what}` when `value` is set but not a real date.
    pub(crate) fn optional_date(&mut self, code: &'static str, field: &str, value: &str) {
        if !value.is_empty() && !is_valid_date(value) {
            self.push(
                code,
                field,
                format!(
                    "{field} must be a real date written yyyy/MM/dd (has {})",
                    shown(value)
                ),
            );
        }
    }

    /// The length and character rule of a text field.
    pub(crate) fn text(&mut self, rule: &Rule, field: &str, value: &str) -> bool {
        match text::check(rule, field, value) {
            Some((code, why)) => {
                self.push(code, field, why);
                false
            }
            None => true,
        }
    }

    /// `code` when `list` has more than `max` entries; whether it has at most `max`.
    pub(crate) fn count(
        &mut self,
        code: &'static str,
        field: &str,
        len: usize,
        max: usize,
    ) -> bool {
        if len > max {
            self.push(
                code,
                field,
                format!("{field} has at most {max} entries (has {len})"),
            );
            return false;
        }
        true
    }

    /// A list of texts: `code` when it has more than [`MAX_LIST_ENTRIES`]
    /// entries, else each entry checked against `rule` as `field[i]`.
    pub(crate) fn text_list(
        &mut self,
        code: &'static str,
        rule: &Rule,
        field: &str,
        values: &[String],
    ) {
        if self.count(code, field, values.len(), MAX_LIST_ENTRIES) {
            for (i, value) in values.iter().enumerate() {
                self.text(rule, &format!("{field}[{i}]"), value);
            }
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
            format!(
                "the document number must not contain '/' or ',' (has {})",
                shown(number)
            ),
        );
    } else if !r.text(&CODE_NUMBER, "code.code_number", number) {
        code_ok = false;
    }
    if blank(notation) {
        code_ok = false;
        r.push(
            "N.Code.CodeNotation",
            "code.code_notation",
            "the document notation is required",
        );
    } else if !r.text(&CODE_NOTATION, "code.code_notation", notation) {
        code_ok = false;
    }

    let promulgation_date = envelope
        .promulgation_info
        .as_ref()
        .map_or("", |p| p.promulgation_date.as_str());
    if let Some(p) = &envelope.promulgation_info {
        r.text(&PLACE, "promulgation_info.place", &p.place);
    }
    r.optional_date(
        "R.PromulgationInfo.PromulgationDate",
        "promulgation_info.promulgation_date",
        promulgation_date,
    );
    if let Some(t) = &envelope.document_type {
        r.text(&TYPE_NAME, "document_type.type_name", &t.type_name);
        r.text(&TYPE_DETAIL, "document_type.type_detail", &t.type_detail);
    }

    if blank(&envelope.subject) {
        r.push("N.Subject", "subject", "subject is required");
    } else {
        r.text(&SUBJECT, "subject", &envelope.subject);
    }
    r.text(&CONTENT, "content", &envelope.content);
    if let Some(s) = &envelope.signer_info {
        r.text(&COMPETENCE, "signer_info.competence", &s.competence);
        r.text(&POSITION, "signer_info.position", &s.position);
        r.text(&FULL_NAME, "signer_info.full_name", &s.full_name);
    }
    r.optional_date("R.DueDate", "due_date", &envelope.due_date);
    r.text_list(
        "R.ToPlaces.Count",
        &TO_PLACE,
        "to_places",
        &envelope.to_places,
    );

    if let Some(other) = &envelope.other_info {
        check_other_info(&mut r, other);
    }

    if r.count(
        "R.ResponseFor.Count",
        "response_for",
        envelope.response_for.len(),
        MAX_LIST_ENTRIES,
    ) {
        for (i, rf) in envelope.response_for.iter().enumerate() {
            check_response_for(&mut r, i, rf);
        }
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
                        "the document id's code {}/{} must be the document code {}/{}",
                        shown(&id.number),
                        shown(&id.notation),
                        shown(number),
                        shown(notation)
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
    r.text(
        &BUSINESS_REASON,
        "business_reason",
        &envelope.business_reason,
    );
    if let Some(staff) = &envelope.staff_info {
        check_staff(&mut r, "staff_info", staff);
    }

    check_attachments(&mut r, &envelope.attachments, limits);
    if envelope.preserved.len() > MAX_PRESERVED_BYTES {
        r.push(
            "R.Preserved.Size",
            "preserved",
            format!(
                "the kept edXML content (signature, unknown elements) is at most {MAX_PRESERVED_BYTES} bytes (has {})",
                envelope.preserved.len()
            ),
        );
    }
    r.0
}

/// Checks the text fields of `other_info`.
fn check_other_info(r: &mut Report, other: &OtherInfo) {
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
    r.text(
        &SPHERE,
        "other_info.sphere_of_promulgation",
        &other.sphere_of_promulgation,
    );
    r.text(
        &TYPER_NOTATION,
        "other_info.typer_notation",
        &other.typer_notation,
    );
    r.text_list(
        "R.OtherInfo.Appendixes.Count",
        &APPENDIX,
        "other_info.appendixes",
        &other.appendixes,
    );
}

/// Checks a staff member's fields under `prefix` (`staff_info`, `staff`, `event.staff`).
pub(crate) fn check_staff(r: &mut Report, prefix: &str, staff: &StaffInfo) {
    r.text(
        &DEPARTMENT,
        &format!("{prefix}.department"),
        &staff.department,
    );
    r.text(&STAFF, &format!("{prefix}.staff"), &staff.staff);
    r.text(&MOBILE, &format!("{prefix}.mobile"), &staff.mobile);
    r.text(&STAFF_EMAIL, &format!("{prefix}.email"), &staff.email);
}

/// Checks the descriptive fields of an organ (`from` or `to[i]`); its id is checked by the caller.
fn check_organ_text(r: &mut Report, prefix: &str, organ: &Organ) {
    let fields: [(&Rule, &str, &str); 7] = [
        (
            &ORGANIZATION_IN_CHARGE,
            "organization_in_charge",
            &organ.organization_in_charge,
        ),
        (&ORGAN_NAME, "organ_name", &organ.organ_name),
        (&ORGAN_ADD, "organ_add", &organ.organ_add),
        (&ORGAN_EMAIL, "email", &organ.email),
        (&ORGAN_TELEPHONE, "telephone", &organ.telephone),
        (&ORGAN_FAX, "fax", &organ.fax),
        (&ORGAN_WEBSITE, "website", &organ.website),
    ];
    for (rule, name, value) in fields {
        r.text(rule, &format!("{prefix}.{name}"), value);
    }
}

/// Checks `from`; returns the sender's agency code when it is valid.
fn check_from(r: &mut Report, from: Option<&Organ>) -> Option<AgencyCode> {
    let Some(from) = from else {
        r.push("N.From", "from", "the sender organ is required");
        return None;
    };
    check_organ_text(r, "from", from);
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
                    "the sender organ id must be an agency code like 000.00.00.G22 (has {})",
                    shown(&from.organ_id)
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
        // Reporting on each of too many recipients would only make a huge answer.
        return;
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, organ) in to.iter().enumerate() {
        check_organ_text(r, &format!("to[{i}]"), organ);
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
                    "the recipient organ id must be an agency code like 000.00.00.G22 (has {})",
                    shown(id)
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
                    "the answered document's organ id must be an agency code like 000.00.00.G22 (has {})",
                    shown(&rf.organ_id)
                ),
            );
            None
        }
    };
    r.text(
        &RESPONSE_FOR_CODE,
        &format!("response_for[{i}].code"),
        &rf.code,
    );
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

/// Whether an attachment name is a plain file name (its characters are checked by [`ATTACHMENT_NAME`]).
fn plain_file_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains(['/', '\\'])
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
        return;
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
                    "the attachment name must be a plain file name without '/' or '\\', not '.' or '..' (has {})",
                    shown(&a.name)
                ),
            );
        } else if !r.text(&ATTACHMENT_NAME, &name_field, &a.name) {
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
        let type_field = format!("attachments[{i}].content_type");
        if r.text(&CONTENT_TYPE, &type_field, &a.content_type) && !a.content_type.is_ascii() {
            r.push(
                "R.Attachment.ContentType",
                type_field,
                format!(
                    "a content type is ascii, like application/pdf (has {})",
                    shown(&a.content_type)
                ),
            );
        }
        r.text(
            &ATTACHMENT_DESCRIPTION,
            &format!("attachments[{i}].description"),
            &a.description,
        );
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

/// [`validate`] as a result: [`Error::Invalid`] with every violation, Ok(()) when valid.
pub fn check(envelope: &Envelope, limits: &Limits) -> Result<(), Error> {
    Error::check(validate(envelope, limits))
}

#[cfg(test)]
mod limits_tests {
    use super::Limits;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        documents: Limits,
    }

    fn parse(text: &str) -> Result<File, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn document_limits_are_read_and_checked() {
        let limits = parse("[documents]\nmax_attachments = 3\n")
            .expect("parse")
            .documents
            .checked()
            .expect("limits");
        assert_eq!(limits.max_attachments, 3);
        assert_eq!(limits.max_recipients, Limits::default().max_recipients);
        assert_eq!(parse("").expect("parse").documents, Limits::default());
        let zero = parse("[documents]\nmax_total_bytes = 0\n").expect("parse");
        assert!(zero.documents.checked().is_err());
        let e = parse("[documents]\nmax_pages = 3\n")
            .err()
            .expect("unknown field");
        assert!(e.to_string().contains("max_pages"), "{e}");
    }
}
