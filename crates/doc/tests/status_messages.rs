#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Validation of status messages: StatusEvent, StatusUpdate, UpdateStatusRequest
//! and the (sender, document id) naming a document.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use truc_doc::{
    Error, MAX_DESCRIPTION_CHARS, StatusCode, check_document_ref, check_status_event,
    check_status_update, check_update_status,
};
use truc_proto::v1::{StaffInfo, StatusEvent, StatusUpdate, UpdateStatusRequest};

const SENDER: &str = "000.00.00.H37";
const RECIPIENT: &str = "000.00.00.G22";
const DOC: &str = "000.00.00.H37,2026/11/28,123/UBND-VP";

fn event(code: &str) -> StatusEvent {
    StatusEvent {
        code: code.into(),
        description: "Đã tiếp nhận\nvào sổ".into(),
        unix_ms: 1_790_000_000_000,
        by: RECIPIENT.into(),
        staff: Some(StaffInfo {
            department: "Văn thư".into(),
            staff: "Trần Thị B".into(),
            mobile: "0912 345 678".into(),
            email: "ttb@example.gov.vn".into(),
        }),
    }
}

fn update(code: &str) -> StatusUpdate {
    StatusUpdate {
        transaction_id: "0123456789abcdef0123456789abcdef".into(),
        sender: SENDER.into(),
        document_id: DOC.into(),
        recipient: RECIPIENT.into(),
        event: Some(event(code)),
        ..StatusUpdate::default()
    }
}

fn request(status: &str) -> UpdateStatusRequest {
    UpdateStatusRequest {
        recipient: RECIPIENT.into(),
        sender: SENDER.into(),
        document_id: DOC.into(),
        status: status.into(),
        description: "Đã xử lý".into(),
        staff: event("03").staff,
    }
}

/// The (code, field) pairs of an Invalid error.
fn broken<T: std::fmt::Debug>(r: Result<T, Error>) -> Vec<(&'static str, String)> {
    match r.unwrap_err() {
        Error::Invalid(v) => v.into_iter().map(|v| (v.code, v.field)).collect(),
        e => panic!("not a validation error: {e:?}"),
    }
}

fn one(code: &'static str, field: &str) -> Vec<(&'static str, String)> {
    vec![(code, field.to_owned())]
}

#[test]
fn valid_messages_pass_with_their_code() {
    assert_eq!(check_status_event(&event("03")), Ok(StatusCode::Accepted));
    assert_eq!(
        check_status_update(&update("05")),
        Ok(StatusCode::InProcessing)
    );
    assert_eq!(
        check_update_status(&request("06")),
        Ok(StatusCode::Completed)
    );
    let mut u = update("01");
    u.transaction_id.clear();
    assert_eq!(check_status_update(&u), Ok(StatusCode::Arrived));
    let (sender, id) = check_document_ref(SENDER, DOC).unwrap();
    assert_eq!((sender.as_str(), id.to_string().as_str()), (SENDER, DOC));
}

#[test]
fn status_codes_come_from_the_known_set() {
    for bad in ["", "07", "1", "3 ", "03\0", &"0".repeat(80_000)] {
        assert_eq!(
            broken(check_status_event(&event(bad))),
            one("R.StatusCode", "event.code"),
            "{bad:?}"
        );
        assert_eq!(
            broken(check_status_update(&update(bad))),
            one("R.StatusCode", "event.code")
        );
        assert_eq!(
            broken(check_update_status(&request(bad))),
            one("R.StatusCode", "status")
        );
    }
    // An 80 KB code is not echoed back whole.
    let e = check_update_status(&request(&"0".repeat(80_000))).unwrap_err();
    assert!(e.to_string().len() < 300, "{}", e.to_string().len());
}

#[test]
fn descriptions_are_bounded_free_text() {
    let mut ev = event("03");
    ev.description = "Đ".repeat(MAX_DESCRIPTION_CHARS);
    assert!(check_status_event(&ev).is_ok());
    ev.description.push('Đ');
    assert_eq!(
        broken(check_status_event(&ev)),
        one("R.Status.Description.Length", "event.description")
    );
    ev.description = "a\0b".into();
    assert_eq!(
        broken(check_status_event(&ev)),
        one("R.Status.Description.Characters", "event.description")
    );
    let mut req = request("03");
    req.description = "x".repeat(1 << 20);
    assert_eq!(
        broken(check_update_status(&req)),
        one("R.Status.Description.Length", "description")
    );
}

#[test]
fn staff_fields_are_bounded() {
    let mut ev = event("03");
    ev.staff.as_mut().unwrap().staff = "\u{1b}[31m".into();
    assert_eq!(
        broken(check_status_event(&ev)),
        one("R.StaffInfo.Staff.Characters", "event.staff.staff")
    );
    let mut req = request("03");
    req.staff.as_mut().unwrap().email = "a".repeat(255);
    assert_eq!(
        broken(check_update_status(&req)),
        one("R.StaffInfo.Email.Length", "staff.email")
    );
}

#[test]
fn event_author_and_time() {
    let mut ev = event("03");
    ev.by.clear();
    assert_eq!(
        broken(check_status_event(&ev)),
        one("N.Status.By", "event.by")
    );
    ev.by = "G22".into();
    assert_eq!(
        broken(check_status_event(&ev)),
        one("R.Status.By", "event.by")
    );
    let mut ev = event("03");
    ev.unix_ms = u64::MAX;
    assert_eq!(
        broken(check_status_event(&ev)),
        one("R.Status.Timestamp", "event.unix_ms")
    );
}

#[test]
fn status_updates_name_a_real_document_and_its_recipient() {
    let mut u = update("03");
    u.transaction_id = "x".repeat(33);
    assert_eq!(
        broken(check_status_update(&u)),
        one("R.TransactionId", "transaction_id")
    );
    let mut u = update("03");
    u.document_id = format!("{DOC}\0{RECIPIENT}");
    assert_eq!(
        broken(check_status_update(&u)),
        one("R.DocumentId.Format", "document_id")
    );
    let mut u = update("03");
    u.document_id = "000.00.00.G22,2026/11/28,123/UBND-VP".into();
    assert_eq!(
        broken(check_status_update(&u)),
        one("R.DocumentId.Sender", "document_id")
    );
    let mut u = update("03");
    u.sender = "H37".into();
    assert_eq!(broken(check_status_update(&u)), one("R.Sender", "sender"));
    let mut u = update("03");
    u.recipient = SENDER.into();
    u.event.as_mut().unwrap().by = SENDER.into();
    assert_eq!(
        broken(check_status_update(&u)),
        one("R.Recipient", "recipient")
    );
    let mut u = update("03");
    u.recipient.clear();
    assert_eq!(
        broken(check_status_update(&u)),
        one("N.Recipient", "recipient")
    );
    let mut u = update("03");
    u.event = None;
    assert_eq!(broken(check_status_update(&u)), one("N.Status", "event"));
}

#[test]
fn statuses_are_set_by_the_recipient_and_13_by_the_sender() {
    let mut u = update("03");
    u.event.as_mut().unwrap().by = "000.00.00.H41".into();
    assert_eq!(
        broken(check_status_update(&u)),
        one("R.Status.By", "event.by")
    );
    let mut u = update("13");
    assert_eq!(
        broken(check_status_update(&u)),
        one("R.Status.By", "event.by")
    );
    u.event.as_mut().unwrap().by = SENDER.into();
    assert_eq!(check_status_update(&u), Ok(StatusCode::ChangeRequested));
}

#[test]
fn document_refs() {
    assert_eq!(
        broken(check_document_ref("", DOC)),
        one("N.Sender", "sender")
    );
    assert_eq!(
        broken(check_document_ref(SENDER, "")),
        one("N.DocumentId", "document_id")
    );
    assert_eq!(
        broken(check_document_ref(RECIPIENT, DOC)),
        one("R.DocumentId.Sender", "document_id")
    );
    assert_eq!(
        broken(check_document_ref(SENDER, &format!("{DOC}\0"))),
        one("R.DocumentId.Format", "document_id")
    );
}

#[test]
fn errors_map_to_invalid_argument_with_the_first_code() {
    let status = tonic::Status::from(check_update_status(&request("99")).unwrap_err());
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status
            .metadata()
            .get(truc_doc::VIOLATION_HEADER)
            .unwrap()
            .to_str()
            .unwrap(),
        "R.StatusCode"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Arbitrary fields never panic; an accepted status is in the known set
    /// and its text is bounded and free of control characters.
    #[test]
    fn arbitrary_status_updates(
        code in prop_oneof![any::<String>(), "(0[1-6]|1[356])"],
        description in prop_oneof![any::<String>(), "[a-z\\x00-\\x1f]{0,50}"],
        document_id in prop_oneof![any::<String>(), Just(DOC.to_owned())],
        staff in any::<String>(),
    ) {
        let mut u = update("03");
        u.document_id = document_id.clone();
        let ev = u.event.as_mut().unwrap();
        ev.code = code.clone();
        ev.description = description.clone();
        ev.staff.as_mut().unwrap().staff = staff.clone();
        if let Ok(parsed) = check_status_update(&u) {
            prop_assert_eq!(parsed.code(), code.as_str());
            prop_assert_eq!(document_id.as_str(), DOC);
            prop_assert!(description.chars().count() <= MAX_DESCRIPTION_CHARS);
            prop_assert!(!description.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')));
            prop_assert!(staff.chars().count() <= 255 && !staff.chars().any(char::is_control));
        }
        let req = UpdateStatusRequest { status: code.clone(), description: description.clone(), ..request("03") };
        if check_update_status(&req).is_ok() {
            prop_assert!(StatusCode::ALL.iter().any(|s| s.code() == code));
        }
    }
}
