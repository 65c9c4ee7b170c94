#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Envelope validation: one test per rule, plus check().

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{attachment, organ, valid_envelope};
use truc_doc::{Limits, Violation, check, is_valid_date, validate};
use truc_proto::v1::{BusinessKind, Envelope, OtherInfo, ResponseFor};

/// Asserts that `e` breaks exactly one rule, `code` at `field`; returns it.
#[track_caller]
fn only(e: &Envelope, code: &str, field: &str) -> Violation {
    only_with(e, &Limits::default(), code, field)
}

#[track_caller]
fn only_with(e: &Envelope, limits: &Limits, code: &str, field: &str) -> Violation {
    let v = validate(e, limits);
    assert_eq!(v.len(), 1, "expected exactly {code} at {field}, got {v:#?}");
    assert_eq!(v[0].code, code, "{v:#?}");
    assert_eq!(v[0].field, field, "{v:#?}");
    assert!(!v[0].rule.is_empty());
    v.into_iter().next().unwrap()
}

fn codes(e: &Envelope) -> Vec<&'static str> {
    validate(e, &Limits::default())
        .into_iter()
        .map(|v| v.code)
        .collect()
}

#[test]
fn valid_envelope_passes() {
    assert_eq!(validate(&valid_envelope(), &Limits::default()), vec![]);
    assert!(check(&valid_envelope(), &Limits::default()).is_ok());
}

#[test]
fn minimal_envelope_passes() {
    let mut e = valid_envelope();
    e.promulgation_info = None;
    e.document_type = None;
    e.content.clear();
    e.signer_info = None;
    e.due_date.clear();
    e.to_places.clear();
    e.other_info = None;
    e.response_for.clear();
    e.steering_type = 0;
    e.staff_info = None;
    e.attachments.clear();
    assert_eq!(validate(&e, &Limits::default()), vec![]);
}

#[test]
fn limits_defaults() {
    let l = Limits::default();
    assert_eq!(l.max_attachments, 50);
    assert_eq!(l.max_attachment_bytes, 1 << 30);
    assert_eq!(l.max_total_bytes, 2 << 30);
    assert_eq!(l.max_recipients, 500);
}

#[test]
fn violation_display() {
    let v = Violation::new(
        "R.Subject.Length",
        "subject",
        "subject is at most 500 characters (has 612)",
    );
    assert_eq!(
        v.to_string(),
        "R.Subject.Length subject: subject is at most 500 characters (has 612)"
    );
}

#[test]
fn dates() {
    for ok in [
        "2026/11/28",
        "2024/02/29",
        "2000/02/29",
        "0001/01/01",
        "9999/12/31",
    ] {
        assert!(is_valid_date(ok), "{ok}");
    }
    for bad in [
        "",
        "2026/11/2",
        "2026-11-28",
        "2026/13/01",
        "2026/00/10",
        "2026/11/00",
        "2026/11/31",
        "2025/02/29",
        "1900/02/29",
        "0000/01/01",
        "2026/1a/01",
        "２026/11/28",
        " 2026/11/28",
        "2026/11/28 ",
    ] {
        assert!(!is_valid_date(bad), "{bad:?}");
    }
}

// --- From ---

#[test]
fn from_missing() {
    let mut e = valid_envelope();
    e.from = None;
    only(&e, "N.From", "from");
}

#[test]
fn from_organ_id_empty() {
    let mut e = valid_envelope();
    e.from.as_mut().unwrap().organ_id = " ".into();
    only(&e, "N.From", "from.organ_id");
}

#[test]
fn from_organ_id_malformed() {
    let mut e = valid_envelope();
    e.from.as_mut().unwrap().organ_id = "H37".into();
    only(&e, "R.From.OrganId", "from.organ_id");
}

// --- To ---

#[test]
fn to_missing() {
    let mut e = valid_envelope();
    e.to.clear();
    only(&e, "N.To", "to");
}

#[test]
fn to_too_many() {
    let mut e = valid_envelope();
    e.to.push(organ("000.00.00.H41", "UBND tỉnh Nghệ An"));
    let limits = Limits {
        max_recipients: 1,
        ..Limits::default()
    };
    let v = only_with(&e, &limits, "R.To.Count", "to");
    assert_eq!(v.rule, "at most 1 recipients are allowed (has 2)");
    assert!(validate(&e, &Limits::default()).is_empty());
}

#[test]
fn to_organ_id_empty() {
    let mut e = valid_envelope();
    e.to.push(organ("", "?"));
    only(&e, "N.To.OrganId", "to[1].organ_id");
}

#[test]
fn to_organ_id_malformed() {
    let mut e = valid_envelope();
    e.to.push(organ("000.00.00.h41", "UBND tỉnh Nghệ An"));
    only(&e, "R.To.OrganId", "to[1].organ_id");
}

#[test]
fn to_duplicate() {
    let mut e = valid_envelope();
    e.to.push(organ("000.00.00.H41", "UBND tỉnh Nghệ An"));
    e.to.push(organ("000.00.00.G22", "Văn phòng Chính phủ"));
    let v = only(&e, "R.To.Duplicate", "to[2].organ_id");
    assert!(v.rule.contains("to[0]"), "{v}");
}

#[test]
fn to_self() {
    let mut e = valid_envelope();
    e.to.push(organ("000.00.00.H37", "UBND tỉnh Lạng Sơn"));
    only(&e, "R.To.Self", "to[1].organ_id");
}

// --- Code ---

#[test]
fn code_number_missing() {
    let mut e = valid_envelope();
    e.code.as_mut().unwrap().code_number.clear();
    only(&e, "N.Code.CodeNumber", "code.code_number");
}

#[test]
fn code_number_malformed() {
    for number in ["12/3", "12,3"] {
        let mut e = valid_envelope();
        e.code.as_mut().unwrap().code_number = number.into();
        only(&e, "R.Code.CodeNumber", "code.code_number");
    }
}

#[test]
fn code_notation_missing() {
    let mut e = valid_envelope();
    e.code.as_mut().unwrap().code_notation = "\t".into();
    only(&e, "N.Code.CodeNotation", "code.code_notation");
}

#[test]
fn code_absent_reports_both_parts() {
    let mut e = valid_envelope();
    e.code = None;
    assert_eq!(codes(&e), ["N.Code.CodeNumber", "N.Code.CodeNotation"]);
}

// --- Dates ---

#[test]
fn promulgation_date_malformed() {
    for date in ["2026/02/30", "28/11/2026", "2026-11-28"] {
        let mut e = valid_envelope();
        e.promulgation_info.as_mut().unwrap().promulgation_date = date.into();
        only(
            &e,
            "R.PromulgationInfo.PromulgationDate",
            "promulgation_info.promulgation_date",
        );
    }
}

#[test]
fn due_date_malformed() {
    let mut e = valid_envelope();
    e.due_date = "2026/13/01".into();
    only(&e, "R.DueDate", "due_date");
}

// --- Subject and content ---

#[test]
fn subject_missing() {
    for subject in ["", "   \n"] {
        let mut e = valid_envelope();
        e.subject = subject.into();
        only(&e, "N.Subject", "subject");
    }
}

#[test]
fn subject_counts_characters_not_bytes() {
    let mut e = valid_envelope();
    e.subject = "Đ".repeat(499) + "ữ";
    assert_eq!(e.subject.chars().count(), 500);
    assert!(e.subject.len() > 1000);
    assert!(validate(&e, &Limits::default()).is_empty());
    e.subject.push('ệ');
    let v = only(&e, "R.Subject.Length", "subject");
    assert_eq!(v.rule, "subject is at most 500 characters (has 501)");
    assert_eq!(
        v.to_string(),
        "R.Subject.Length subject: subject is at most 500 characters (has 501)"
    );
}

#[test]
fn content_too_long() {
    let mut e = valid_envelope();
    e.content = "ư".repeat(500);
    assert!(validate(&e, &Limits::default()).is_empty());
    e.content = "ư".repeat(612);
    let v = only(&e, "R.Content.Length", "content");
    assert_eq!(v.rule, "content is at most 500 characters (has 612)");
}

// --- OtherInfo, SteeringType ---

#[test]
fn priority_out_of_range() {
    let mut e = valid_envelope();
    e.other_info.as_mut().unwrap().priority = 4;
    assert!(validate(&e, &Limits::default()).is_empty());
    e.other_info = Some(OtherInfo {
        priority: 5,
        ..OtherInfo::default()
    });
    only(&e, "R.OtherInfo.Priority", "other_info.priority");
}

#[test]
fn steering_type_out_of_range() {
    let mut e = valid_envelope();
    e.steering_type = 3;
    assert!(validate(&e, &Limits::default()).is_empty());
    e.steering_type = 4;
    only(&e, "R.SteeringType", "steering_type");
}

// --- ResponseFor ---

#[test]
fn response_for_organ_id_missing() {
    let mut e = valid_envelope();
    e.response_for.push(ResponseFor::default());
    only(&e, "N.ResponseFor.OrganId", "response_for[1].organ_id");
}

#[test]
fn response_for_organ_id_malformed() {
    let mut e = valid_envelope();
    e.response_for[0].organ_id = "G22".into();
    only(&e, "R.ResponseFor.OrganId", "response_for[0].organ_id");
}

#[test]
fn response_for_document_id_malformed() {
    let mut e = valid_envelope();
    e.response_for[0].document_id = "000.00.00.G22,2015/09/30,7816".into();
    only(
        &e,
        "R.ResponseFor.DocumentId",
        "response_for[0].document_id",
    );
}

#[test]
fn response_for_document_id_other_sender() {
    let mut e = valid_envelope();
    e.response_for[0].document_id = "000.00.00.H41,2015/09/30,7816/VPCP-TTĐT".into();
    let v = only(
        &e,
        "R.ResponseFor.DocumentId",
        "response_for[0].document_id",
    );
    assert!(v.rule.contains("000.00.00.H41"), "{v}");
}

#[test]
fn response_for_promulgation_date_malformed() {
    let mut e = valid_envelope();
    e.response_for[0].promulgation_date = "2015/09/31".into();
    only(
        &e,
        "R.ResponseFor.PromulgationDate",
        "response_for[0].promulgation_date",
    );
}

#[test]
fn response_for_only_organ_is_enough() {
    let mut e = valid_envelope();
    e.response_for = vec![ResponseFor {
        organ_id: "000.00.00.G22".into(),
        ..ResponseFor::default()
    }];
    assert!(validate(&e, &Limits::default()).is_empty());
}

// --- DocumentId ---

#[test]
fn document_id_missing() {
    let mut e = valid_envelope();
    e.document_id.clear();
    only(&e, "N.DocumentId", "document_id");
}

#[test]
fn document_id_malformed() {
    for id in [
        "000.00.00.H37,2026/11/28",
        "000.00.00.H37,2026/11/28,123",
        "000.00.00.H37,2026/11/31,123/UBND-VP",
        "H37,2026/11/28,123/UBND-VP",
    ] {
        let mut e = valid_envelope();
        e.document_id = id.into();
        only(&e, "R.DocumentId.Format", "document_id");
    }
}

#[test]
fn document_id_sender_differs_from_from() {
    let mut e = valid_envelope();
    e.document_id = "000.00.00.G22,2026/11/28,123/UBND-VP".into();
    only(&e, "R.DocumentId.Sender", "document_id");
}

#[test]
fn document_id_date_differs_from_promulgation_date() {
    let mut e = valid_envelope();
    e.document_id = "000.00.00.H37,2026/11/27,123/UBND-VP".into();
    only(&e, "R.DocumentId.Date", "document_id");
    // Without a promulgation date, any real date is accepted.
    e.promulgation_info = None;
    assert!(validate(&e, &Limits::default()).is_empty());
}

#[test]
fn document_id_code_differs_from_code() {
    for id in [
        "000.00.00.H37,2026/11/28,124/UBND-VP",
        "000.00.00.H37,2026/11/28,123/UBND-TH",
    ] {
        let mut e = valid_envelope();
        e.document_id = id.into();
        only(&e, "R.DocumentId.Code", "document_id");
    }
}

#[test]
fn document_id_notation_with_slash_matches_code() {
    let mut e = valid_envelope();
    e.code.as_mut().unwrap().code_notation = "QĐ-UBND/VP".into();
    e.document_id = "000.00.00.H37,2026/11/28,123/QĐ-UBND/VP".into();
    assert!(validate(&e, &Limits::default()).is_empty());
}

// --- Business ---

#[test]
fn business_kind_unknown() {
    let mut e = valid_envelope();
    e.business_kind = 7;
    only(&e, "R.BusinessKind", "business_kind");
}

#[test]
fn business_reason_required_for_changes() {
    for (kind, name) in [
        (BusinessKind::Recall, "recall"),
        (BusinessKind::Update, "update"),
        (BusinessKind::Replace, "replace"),
    ] {
        let mut e = valid_envelope();
        e.business_kind = kind as i32;
        let v = only(&e, "N.BusinessReason", "business_reason");
        assert_eq!(v.rule, format!("a reason is required for a {name}"));
        e.business_reason = "Sai sót về số lượng".into();
        assert!(validate(&e, &Limits::default()).is_empty(), "{kind:?}");
    }
}

// --- Attachments ---

#[test]
fn attachments_too_many() {
    let mut e = valid_envelope();
    e.attachments.push(attachment("phu-luc.pdf"));
    let limits = Limits {
        max_attachments: 1,
        ..Limits::default()
    };
    only_with(&e, &limits, "R.Attachments.Count", "attachments");
}

#[test]
fn attachments_total_too_large() {
    let mut e = valid_envelope();
    e.attachments.push(attachment("phu-luc.pdf"));
    let limits = Limits {
        max_total_bytes: 2047,
        ..Limits::default()
    };
    only_with(&e, &limits, "R.Attachments.TotalSize", "attachments");
    let limits = Limits {
        max_total_bytes: 2048,
        ..Limits::default()
    };
    assert!(validate(&e, &limits).is_empty());
}

#[test]
fn attachments_total_does_not_overflow() {
    let mut e = valid_envelope();
    e.attachments[0].size = u64::MAX;
    e.attachments.push(attachment("phu-luc.pdf"));
    let limits = Limits {
        max_attachment_bytes: u64::MAX,
        max_total_bytes: u64::MAX - 1,
        ..Limits::default()
    };
    only_with(&e, &limits, "R.Attachments.TotalSize", "attachments");
}

#[test]
fn attachment_name_missing() {
    let mut e = valid_envelope();
    e.attachments[0].name.clear();
    only(&e, "N.Attachment.Name", "attachments[0].name");
}

#[test]
fn attachment_name_not_plain() {
    let long = "á".repeat(252) + ".pdf";
    for name in [
        "../etc/passwd",
        "a/b.pdf",
        "a\\b.pdf",
        ".",
        "..",
        "a\nb.pdf",
        long.as_str(),
    ] {
        let mut e = valid_envelope();
        e.attachments[0].name = name.into();
        only(&e, "R.Attachment.Name", "attachments[0].name");
    }
    let mut e = valid_envelope();
    e.attachments[0].name = "á".repeat(251) + ".pdf";
    assert!(validate(&e, &Limits::default()).is_empty());
}

#[test]
fn attachment_name_duplicate() {
    let mut e = valid_envelope();
    e.attachments.push(attachment("phu-luc.pdf"));
    e.attachments.push(attachment("bao-cao-thang-11.pdf"));
    let v = only(&e, "R.Attachment.Duplicate", "attachments[2].name");
    assert!(v.rule.contains("attachments[0]"), "{v}");
}

#[test]
fn attachment_too_large() {
    let mut e = valid_envelope();
    e.attachments[0].size = (1 << 30) + 1;
    only(&e, "R.Attachment.Size", "attachments[0].size");
    e.attachments[0].size = 1 << 30;
    assert!(validate(&e, &Limits::default()).is_empty());
}

#[test]
fn attachment_sha256_missing() {
    let mut e = valid_envelope();
    e.attachments[0].sha256 = Bytes::new();
    only(&e, "N.Attachment.Sha256", "attachments[0].sha256");
}

#[test]
fn attachment_sha256_wrong_length() {
    for n in [31, 33, 64] {
        let mut e = valid_envelope();
        e.attachments[0].sha256 = Bytes::from(vec![1u8; n]);
        let v = only(&e, "R.Attachment.Sha256", "attachments[0].sha256");
        assert!(v.rule.contains(&format!("(has {n})")), "{v}");
    }
}

// --- Several at once, and check() ---

/// An envelope breaking four rules.
fn broken() -> Envelope {
    let mut e = valid_envelope();
    e.subject.clear();
    e.to.push(organ("000.00.00.G22", "Văn phòng Chính phủ"));
    e.steering_type = 9;
    e.attachments[0].sha256 = Bytes::from_static(b"short");
    e
}

#[test]
fn several_violations_all_reported_in_field_order() {
    let v = validate(&broken(), &Limits::default());
    let got: Vec<(&str, &str)> = v.iter().map(|v| (v.code, v.field.as_str())).collect();
    assert_eq!(
        got,
        [
            ("R.To.Duplicate", "to[1].organ_id"),
            ("N.Subject", "subject"),
            ("R.SteeringType", "steering_type"),
            ("R.Attachment.Sha256", "attachments[0].sha256"),
        ]
    );
}

#[test]
fn everything_missing() {
    let got = codes(&Envelope::default());
    assert_eq!(
        got,
        [
            "N.From",
            "N.To",
            "N.Code.CodeNumber",
            "N.Code.CodeNotation",
            "N.Subject",
            "N.DocumentId",
        ]
    );
}

#[test]
fn check_reports_every_violation() {
    let e = broken();
    let violations = validate(&e, &Limits::default());
    let status = tonic::Status::from(check(&e, &Limits::default()).unwrap_err());
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let expected = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    assert_eq!(status.message(), expected);
    for v in &violations {
        assert!(status.message().contains(&v.to_string()));
    }
    assert_eq!(
        status
            .metadata()
            .get("x-truc-violation")
            .unwrap()
            .to_str()
            .unwrap(),
        "R.To.Duplicate"
    );
}

#[test]
fn check_respects_limits() {
    let e = valid_envelope();
    let limits = Limits {
        max_attachments: 0,
        ..Limits::default()
    };
    let status = tonic::Status::from(check(&e, &limits).unwrap_err());
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "R.Attachments.Count attachments: at most 0 attachments are allowed (has 1)"
    );
}

#[test]
fn preserved_edxml_content_is_bounded() {
    let mut e = valid_envelope();
    e.preserved = Bytes::from(vec![b'x'; truc_doc::MAX_PRESERVED_BYTES]);
    assert!(codes(&e).is_empty(), "{:?}", codes(&e));
    e.preserved = Bytes::from(vec![b'x'; truc_doc::MAX_PRESERVED_BYTES + 1]);
    only(&e, "R.Preserved.Size", "preserved");
}
