#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! DocumentId parsing and formatting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use truc_doc::DocumentId;

#[test]
fn parses_the_edxml_example() {
    let s = "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT";
    let id = DocumentId::parse(s).unwrap();
    assert_eq!(id.sender.as_str(), "000.00.00.G22");
    assert_eq!(id.date, "2015/09/30");
    assert_eq!(id.number, "7816");
    assert_eq!(id.notation, "VPCP-TTĐT");
    assert_eq!(id.to_string(), s);
}

#[test]
fn notation_may_contain_slash_comma_and_vietnamese() {
    let s = "000.00.00.H37,2026/11/28,45/QĐ-UBND/VP,ĐT";
    let id = DocumentId::parse(s).unwrap();
    assert_eq!(id.number, "45");
    assert_eq!(id.notation, "QĐ-UBND/VP,ĐT");
    assert_eq!(
        DocumentId::format(id.sender.as_str(), &id.date, &id.number, &id.notation),
        s
    );
}

#[test]
fn format_writes_the_parts() {
    assert_eq!(
        DocumentId::format("000.00.00.H37", "2026/11/28", "123", "UBND-VP"),
        "000.00.00.H37,2026/11/28,123/UBND-VP"
    );
}

#[test]
fn empty_is_missing() {
    for s in ["", "  "] {
        let v = DocumentId::parse(s).unwrap_err();
        assert_eq!(v.code, "N.DocumentId");
        assert_eq!(v.field, "document_id");
    }
}

#[test]
fn bad_forms_are_rejected() {
    for s in [
        "000.00.00.G22",
        "000.00.00.G22,2015/09/30",
        "000.00.00.G22,2015/09/30,7816",
        "000.00.00.G22,2015/09/30,/VPCP-TTĐT",
        "000.00.00.G22,2015/09/30,7816/",
        "000.00.00.G22,2015/09/30,78,16/VPCP",
        "00.00.00.G22,2015/09/30,7816/VPCP",
        " 000.00.00.G22,2015/09/30,7816/VPCP",
        "000.00.00.G22,2015/9/30,7816/VPCP",
        "000.00.00.G22,2015-09-30,7816/VPCP",
        "000.00.00.G22,2015/02/29,7816/VPCP",
        "000.00.00.G22,,7816/VPCP",
        ",2015/09/30,7816/VPCP",
        "7816/VPCP-TTĐT",
    ] {
        let v = DocumentId::parse(s).unwrap_err();
        assert_eq!(v.code, "R.DocumentId.Format", "{s:?}");
        assert_eq!(v.field, "document_id");
        assert!(v.rule.starts_with("the document id"), "{v}");
    }
}

proptest! {
    #[test]
    fn round_trip(
        level in "[0-9]{3}\\.[0-9]{2}\\.[0-9]{2}\\.[A-Z][0-9]{2}",
        year in 1u32..=9999,
        month in 1u32..=12,
        day in 1u32..=28,
        number in "[0-9]{1,20}",
        notation in "[A-Za-zĐđƯươếọ0-9/,. -]{0,20}[A-ZĐ]",
    ) {
        let date = format!("{year:04}/{month:02}/{day:02}");
        let s = DocumentId::format(&level, &date, &number, &notation);
        let id = DocumentId::parse(&s).unwrap();
        prop_assert_eq!(id.sender.as_str(), level.as_str());
        prop_assert_eq!(&id.date, &date);
        prop_assert_eq!(&id.number, &number);
        prop_assert_eq!(&id.notation, &notation);
        prop_assert_eq!(id.to_string(), s);
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,60}") {
        if let Ok(id) = DocumentId::parse(&s) {
            prop_assert_eq!(id.to_string(), s);
        }
    }
}
