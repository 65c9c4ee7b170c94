#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Every text field of an envelope is bounded and free of control
//! characters; every repeated field has a count limit. One case per field,
//! and properties over arbitrary strings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{organ, valid_envelope};
use proptest::prelude::*;
use truc_doc::{
    DocumentId, Limits, MAX_DOCUMENT_ID_CHARS, MAX_LIST_ENTRIES, MAX_NOTATION_CHARS,
    MAX_NUMBER_CHARS, validate,
};
use truc_proto::v1::{Envelope, ResponseFor};

/// Whether a field is one line (no control characters at all) or free text (tab and line breaks allowed).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Line,
    Free,
}

/// A text field: how to set it, its path, its codes, its bound and kind.
struct Field {
    set: fn(&mut Envelope, String),
    path: &'static str,
    length: &'static str,
    chars: &'static str,
    max: usize,
    kind: Kind,
}

macro_rules! field {
    ($path:literal, $name:literal, $max:expr, $kind:expr, |$e:ident, $v:ident| $set:expr) => {
        Field {
            set: |$e: &mut Envelope, $v: String| $set,
            path: $path,
            length: concat!("R.", $name, ".Length"),
            chars: concat!("R.", $name, ".Characters"),
            max: $max,
            kind: $kind,
        }
    };
}

fn fields() -> Vec<Field> {
    use Kind::*;
    vec![
        field!(
            "from.organization_in_charge",
            "Organ.OrganizationInCharge",
            255,
            Line,
            |e, v| e.from.as_mut().unwrap().organization_in_charge = v
        ),
        field!("from.organ_name", "Organ.OrganName", 255, Line, |e, v| e
            .from
            .as_mut()
            .unwrap()
            .organ_name =
            v),
        field!("from.organ_add", "Organ.OrganAdd", 500, Line, |e, v| e
            .from
            .as_mut()
            .unwrap()
            .organ_add =
            v),
        field!("from.email", "Organ.Email", 254, Line, |e, v| e
            .from
            .as_mut()
            .unwrap()
            .email =
            v),
        field!("from.telephone", "Organ.Telephone", 64, Line, |e, v| e
            .from
            .as_mut()
            .unwrap()
            .telephone =
            v),
        field!("from.fax", "Organ.Fax", 64, Line, |e, v| e
            .from
            .as_mut()
            .unwrap()
            .fax = v),
        field!("from.website", "Organ.Website", 500, Line, |e, v| e
            .from
            .as_mut()
            .unwrap()
            .website =
            v),
        field!("to[0].organ_name", "Organ.OrganName", 255, Line, |e, v| e
            .to[0]
            .organ_name =
            v),
        field!("to[0].email", "Organ.Email", 254, Line, |e, v| e.to[0]
            .email =
            v),
        field!(
            "promulgation_info.place",
            "PromulgationInfo.Place",
            255,
            Line,
            |e, v| e.promulgation_info.as_mut().unwrap().place = v
        ),
        field!(
            "document_type.type_name",
            "DocumentType.TypeName",
            255,
            Line,
            |e, v| e.document_type.as_mut().unwrap().type_name = v
        ),
        field!(
            "document_type.type_detail",
            "DocumentType.TypeDetail",
            500,
            Line,
            |e, v| e.document_type.as_mut().unwrap().type_detail = v
        ),
        field!("subject", "Subject", 500, Free, |e, v| e.subject = v),
        field!("content", "Content", 500, Free, |e, v| e.content = v),
        field!(
            "signer_info.competence",
            "SignerInfo.Competence",
            255,
            Line,
            |e, v| e.signer_info.as_mut().unwrap().competence = v
        ),
        field!(
            "signer_info.position",
            "SignerInfo.Position",
            255,
            Line,
            |e, v| e.signer_info.as_mut().unwrap().position = v
        ),
        field!(
            "signer_info.full_name",
            "SignerInfo.FullName",
            255,
            Line,
            |e, v| e.signer_info.as_mut().unwrap().full_name = v
        ),
        field!("to_places[1]", "ToPlaces.Place", 255, Line, |e, v| e
            .to_places[1] =
            v),
        field!(
            "other_info.sphere_of_promulgation",
            "OtherInfo.SphereOfPromulgation",
            255,
            Line,
            |e, v| e.other_info.as_mut().unwrap().sphere_of_promulgation = v
        ),
        field!(
            "other_info.typer_notation",
            "OtherInfo.TyperNotation",
            255,
            Line,
            |e, v| e.other_info.as_mut().unwrap().typer_notation = v
        ),
        field!(
            "other_info.appendixes[0]",
            "OtherInfo.Appendix",
            500,
            Line,
            |e, v| e.other_info.as_mut().unwrap().appendixes[0] = v
        ),
        field!(
            "response_for[0].code",
            "ResponseFor.Code",
            255,
            Line,
            |e, v| e.response_for[0].code = v
        ),
        field!("business_reason", "BusinessReason", 1000, Free, |e, v| e
            .business_reason =
            v),
        field!(
            "staff_info.department",
            "StaffInfo.Department",
            255,
            Line,
            |e, v| e.staff_info.as_mut().unwrap().department = v
        ),
        field!("staff_info.staff", "StaffInfo.Staff", 255, Line, |e, v| e
            .staff_info
            .as_mut()
            .unwrap()
            .staff =
            v),
        field!("staff_info.mobile", "StaffInfo.Mobile", 64, Line, |e, v| {
            e.staff_info.as_mut().unwrap().mobile = v
        }),
        field!("staff_info.email", "StaffInfo.Email", 254, Line, |e, v| e
            .staff_info
            .as_mut()
            .unwrap()
            .email =
            v),
        field!(
            "attachments[0].description",
            "Attachment.Description",
            500,
            Free,
            |e, v| e.attachments[0].description = v
        ),
    ]
}

/// The envelope with `field` set to `value`.
fn with(field: &Field, value: String) -> Envelope {
    let mut e = valid_envelope();
    (field.set)(&mut e, value);
    e
}

/// The (code, field) pairs `e` breaks.
fn broken(e: &Envelope) -> Vec<(&'static str, String)> {
    validate(e, &Limits::default())
        .into_iter()
        .map(|v| (v.code, v.field))
        .collect()
}

#[test]
fn every_text_field_takes_its_maximum_in_characters() {
    for f in fields() {
        // 'Đ' is two bytes: the bound is in characters.
        assert_eq!(broken(&with(&f, "Đ".repeat(f.max))), vec![], "{}", f.path);
    }
}

#[test]
fn every_text_field_refuses_one_character_more() {
    for f in fields() {
        assert_eq!(
            broken(&with(&f, "Đ".repeat(f.max + 1))),
            vec![(f.length, f.path.to_owned())],
            "{}",
            f.path
        );
    }
}

#[test]
fn every_text_field_refuses_a_nul_an_escape_and_a_delete() {
    for f in fields() {
        for bad in ["a\0b", "\u{1b}[2J", "x\u{7f}", "\u{9b}"] {
            assert_eq!(
                broken(&with(&f, bad.to_owned())),
                vec![(f.chars, f.path.to_owned())],
                "{} {bad:?}",
                f.path
            );
        }
    }
}

#[test]
fn line_breaks_only_in_free_text() {
    for f in fields() {
        let got = broken(&with(&f, "dòng một\r\n\tdòng hai".to_owned()));
        match f.kind {
            Kind::Free => assert_eq!(got, vec![], "{}", f.path),
            Kind::Line => assert_eq!(got, vec![(f.chars, f.path.to_owned())], "{}", f.path),
        }
        let bidi = broken(&with(&f, "abc\u{202E}fdp.exe".to_owned()));
        assert_eq!(bidi.is_empty(), f.kind == Kind::Free, "{} {bidi:?}", f.path);
    }
}

#[test]
fn a_huge_value_is_refused_with_a_short_message() {
    let mut e = valid_envelope();
    e.from.as_mut().unwrap().organ_id = "9".repeat(100_000);
    e.subject = "x".repeat(100_000);
    let message = truc_doc::check(&e, &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(message.len() < 1000, "{} bytes", message.len());
    assert!(
        message.contains("R.From.OrganId") && message.contains("R.Subject.Length"),
        "{message}"
    );
}

#[test]
fn document_ids_refuse_control_characters_and_bidi_marks() {
    for bad in [
        "000.00.00.H37,2026/11/28,123/UBND\0VP",
        "000.00.00.H37,2026/11/28,123/UBND-VP\n",
        "000.00.00.H37,2026/11/28,1\u{202E}3/UBND-VP",
        "000.00.00.H37,2026/11/28,123/UBND\u{85}VP",
    ] {
        let v = DocumentId::parse(bad).unwrap_err();
        assert_eq!(v.code, "R.DocumentId.Format", "{bad:?}");
        assert!(v.rule.contains("control characters"), "{}", v.rule);
    }
    // In an envelope: the id and the notation it must agree with are both refused.
    let mut e = valid_envelope();
    e.document_id = "000.00.00.H37,2026/11/28,123/UBND\0VP".into();
    e.code.as_mut().unwrap().code_notation = "UBND\0VP".into();
    assert_eq!(
        broken(&e),
        vec![
            ("R.Code.CodeNotation", "code.code_notation".to_owned()),
            ("R.DocumentId.Format", "document_id".to_owned())
        ]
    );
}

#[test]
fn document_ids_and_codes_are_bounded() {
    let number = "1".repeat(MAX_NUMBER_CHARS);
    let notation = "Đ".repeat(MAX_NOTATION_CHARS);
    let longest = DocumentId::format("000.00.00.H37", "2026/11/28", &number, &notation);
    assert_eq!(longest.chars().count(), MAX_DOCUMENT_ID_CHARS);
    assert!(DocumentId::parse(&longest).is_ok());
    let mut e = valid_envelope();
    e.code.as_mut().unwrap().code_number = number.clone();
    e.code.as_mut().unwrap().code_notation = notation.clone();
    e.document_id = longest;
    assert_eq!(broken(&e), vec![]);

    for (n, t) in [
        (format!("{number}1"), notation.clone()),
        (number.clone(), format!("{notation}Đ")),
    ] {
        let id = DocumentId::format("000.00.00.H37", "2026/11/28", &n, &t);
        assert_eq!(
            DocumentId::parse(&id).unwrap_err().code,
            "R.DocumentId.Format"
        );
        let mut e = valid_envelope();
        e.code.as_mut().unwrap().code_number = n;
        e.code.as_mut().unwrap().code_notation = t;
        e.document_id = id;
        let got = broken(&e);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].0.starts_with("R.Code."), "{got:?}");
        assert_eq!(got[1].0, "R.DocumentId.Format");
    }
    let huge = "x".repeat(1 << 20);
    let v = DocumentId::parse(&huge).unwrap_err();
    assert!(v.rule.len() < 200, "{}", v.rule);
}

#[test]
fn attachment_names_and_content_types() {
    let mut e = valid_envelope();
    e.attachments[0].name = "invoice\u{202E}fdp.exe".into();
    assert_eq!(
        broken(&e),
        vec![("R.Attachment.Name", "attachments[0].name".to_owned())]
    );
    let mut e = valid_envelope();
    e.attachments[0].name = "a\0.pdf".into();
    assert_eq!(
        broken(&e),
        vec![("R.Attachment.Name", "attachments[0].name".to_owned())]
    );
    for bad in [
        "application/pdf\0",
        "application/pdf\r\nX-Evil: 1",
        "ứng-dụng/pdf",
        &"a".repeat(256),
    ] {
        let mut e = valid_envelope();
        e.attachments[0].content_type = bad.to_owned();
        assert_eq!(
            broken(&e),
            vec![(
                "R.Attachment.ContentType",
                "attachments[0].content_type".to_owned()
            )],
            "{bad:?}"
        );
    }
    let mut e = valid_envelope();
    e.attachments[0].content_type = "text/plain; charset=utf-8".into();
    assert_eq!(broken(&e), vec![]);
}

#[test]
fn repeated_fields_have_a_count_limit() {
    let max = MAX_LIST_ENTRIES;
    let mut e = valid_envelope();
    e.to_places = vec!["Lưu: VT".into(); max];
    e.other_info.as_mut().unwrap().appendixes = vec!["Phụ lục".into(); max];
    e.response_for = vec![e.response_for[0].clone(); max];
    assert_eq!(broken(&e), vec![]);

    let mut e = valid_envelope();
    e.to_places = vec!["\0".into(); max + 1];
    assert_eq!(
        broken(&e),
        vec![("R.ToPlaces.Count", "to_places".to_owned())]
    );
    let mut e = valid_envelope();
    e.other_info.as_mut().unwrap().appendixes = vec![String::new(); max + 1];
    assert_eq!(
        broken(&e),
        vec![(
            "R.OtherInfo.Appendixes.Count",
            "other_info.appendixes".to_owned()
        )]
    );
    let mut e = valid_envelope();
    e.response_for = vec![ResponseFor::default(); max + 1];
    assert_eq!(
        broken(&e),
        vec![("R.ResponseFor.Count", "response_for".to_owned())]
    );
    // Too many recipients or attachments: one violation, not one per entry.
    let limits = Limits::default();
    let mut e = valid_envelope();
    e.to = (0..=limits.max_recipients)
        .map(|_| organ("bad", "\0"))
        .collect();
    assert_eq!(broken(&e), vec![("R.To.Count", "to".to_owned())]);
    let mut e = valid_envelope();
    e.attachments = vec![e.attachments[0].clone(); limits.max_attachments + 1];
    assert_eq!(
        broken(&e),
        vec![("R.Attachments.Count", "attachments".to_owned())]
    );
}

/// Whether `s` holds a character a one-line field refuses.
fn has_line_forbidden(s: &str) -> bool {
    s.chars().any(|c| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any string in any text field is accepted or refused without panicking;
    /// what is accepted fits the bound and holds no forbidden character.
    #[test]
    fn arbitrary_text_is_accepted_only_within_the_rule(
        value in prop_oneof![
            any::<String>(),
            "[\\x00-\\x20a-zĐ\u{202E}\u{2028}]{0,600}",
            (1usize..1100).prop_map(|n| "Đ".repeat(n)),
        ],
        which in any::<prop::sample::Index>(),
    ) {
        let fields = fields();
        let f = &fields[which.index(fields.len())];
        let e = with(f, value.clone());
        let v = validate(&e, &Limits::default());
        let accepted = v.is_empty();
        if accepted {
            prop_assert!(value.chars().count() <= f.max);
            match f.kind {
                Kind::Line => prop_assert!(!has_line_forbidden(&value)),
                Kind::Free => prop_assert!(!value.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))),
            }
        } else {
            // Refused for this field only, with one of its two codes, or,
            // when blank, as a required field left out (the subject).
            prop_assert_eq!(v.len(), 1, "{:?}", v);
            let required = value.trim().is_empty() && v[0].code.starts_with("N.") && v[0].field == f.path;
            prop_assert!(v[0].code == f.length || v[0].code == f.chars || required, "{:?}", v);
        }
    }

    /// A document id that parses fits the bound and holds no forbidden character.
    #[test]
    fn parsed_document_ids_are_bounded_and_clean(
        number in prop_oneof!["[0-9]{1,70}", any::<String>()],
        notation in prop_oneof!["[A-ZĐ/,-]{1,110}", any::<String>(), "[\\x00-\\x1fA-Z]{1,20}"],
    ) {
        let s = DocumentId::format("000.00.00.H37", "2026/11/28", &number, &notation);
        if let Ok(id) = DocumentId::parse(&s) {
            prop_assert!(s.chars().count() <= MAX_DOCUMENT_ID_CHARS);
            prop_assert!(!has_line_forbidden(&s));
            prop_assert_eq!(id.to_string(), s);
        }
    }
}
