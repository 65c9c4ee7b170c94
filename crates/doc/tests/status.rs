#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! The status state machine: every (state, target) pair, and random walks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use truc_doc::{ChangeKind, DocState, StatusCode, TransitionError};
use truc_proto::v1::BusinessKind;

const KINDS: [ChangeKind; 3] = [ChangeKind::Recall, ChangeKind::Update, ChangeKind::Replace];

/// Every combination of status and change, reachable or not.
fn all_states() -> Vec<DocState> {
    let mut out = Vec::new();
    for status in StatusCode::ALL {
        for change in [
            None,
            Some(ChangeKind::Recall),
            Some(ChangeKind::Update),
            Some(ChangeKind::Replace),
        ] {
            out.push(DocState { status, change });
        }
    }
    out
}

/// The states a document can actually be in: no change outside 13/15/16, one inside.
fn reachable_states() -> Vec<DocState> {
    all_states()
        .into_iter()
        .filter(|s| matches!(s.status.code(), "13" | "15" | "16") == s.change.is_some())
        .collect()
}

/// The allowed (from, to) pairs for the recipient, written out as codes.
const ALLOWED: &[(&str, &str)] = &[
    ("01", "02"),
    ("01", "03"),
    ("03", "04"),
    ("03", "05"),
    ("03", "06"),
    ("04", "05"),
    ("04", "06"),
    ("05", "06"),
    ("13", "15"),
    ("13", "16"),
    ("16", "03"),
    ("16", "04"),
    ("16", "05"),
    ("16", "06"),
];

/// 15 after an update or replace: processing resumes.
fn resumes(s: DocState) -> bool {
    s.status.code() == "15" && matches!(s.change, Some(ChangeKind::Update | ChangeKind::Replace))
}

/// 15 after a recall (or an unknown change): withdrawn.
fn withdrawn(s: DocState) -> bool {
    s.status.code() == "15" && !resumes(s)
}

/// The model of set_by_recipient.
fn model_set(s: DocState, to: StatusCode) -> Option<DocState> {
    let pair = (s.status.code(), to.code());
    let ok =
        ALLOWED.contains(&pair) || (resumes(s) && matches!(to.code(), "03" | "04" | "05" | "06"));
    ok.then(|| DocState {
        status: to,
        change: if matches!(to.code(), "15" | "16") {
            s.change
        } else {
            None
        },
    })
}

/// The model of request_change.
fn model_change(s: DocState, kind: ChangeKind) -> Option<DocState> {
    let refused = matches!(s.status.code(), "02" | "13") || withdrawn(s);
    (!refused).then_some(DocState {
        status: StatusCode::ChangeRequested,
        change: Some(kind),
    })
}

#[test]
fn status_codes() {
    let codes: Vec<&str> = StatusCode::ALL.iter().map(|s| s.code()).collect();
    assert_eq!(
        codes,
        ["01", "02", "03", "04", "05", "06", "13", "15", "16"]
    );
    for s in StatusCode::ALL {
        assert_eq!(StatusCode::parse(s.code()).unwrap(), s);
        assert_eq!(s.to_string(), s.code());
        assert!(!s.meaning().is_empty());
        assert_eq!(s.meaning(), s.meaning().to_lowercase());
    }
    let mut sorted = StatusCode::ALL;
    sorted.sort();
    assert_eq!(sorted, StatusCode::ALL);
    assert_eq!(StatusCode::Arrived.meaning(), "arrived");
    assert_eq!(StatusCode::Completed.meaning(), "completed");
    for bad in [
        "", "1", "00", "07", "12", "14", "17", "001", " 01", "01 ", "AB",
    ] {
        let v = StatusCode::parse(bad).unwrap_err();
        assert_eq!(v.code, "R.StatusCode", "{bad:?}");
        assert_eq!(v.field, "status");
    }
}

#[test]
fn change_kind_of_business_kind() {
    assert_eq!(ChangeKind::of(BusinessKind::New), None);
    assert_eq!(
        ChangeKind::of(BusinessKind::Recall),
        Some(ChangeKind::Recall)
    );
    assert_eq!(
        ChangeKind::of(BusinessKind::Update),
        Some(ChangeKind::Update)
    );
    assert_eq!(
        ChangeKind::of(BusinessKind::Replace),
        Some(ChangeKind::Replace)
    );
}

#[test]
fn arrived_is_01_without_change() {
    assert_eq!(
        DocState::arrived(),
        DocState {
            status: StatusCode::Arrived,
            change: None
        }
    );
}

#[test]
fn model_allows_the_expected_number_of_pairs() {
    // 01:2 03:3 04:2 05:1, 13:2 per kind (6), 15 after update/replace: 4 each (8), 16: 4 per kind (12).
    let n = reachable_states()
        .into_iter()
        .flat_map(|s| StatusCode::ALL.map(move |to| (s, to)))
        .filter(|&(s, to)| model_set(s, to).is_some())
        .count();
    assert_eq!(n, 34);
}

#[test]
fn set_by_recipient_every_pair() {
    let mut allowed = 0;
    for s in all_states() {
        for to in StatusCode::ALL {
            let before = s;
            match (s.set_by_recipient(to), model_set(s, to)) {
                (Ok(got), Some(want)) => {
                    assert_eq!(got, want, "{s:?} -> {to:?}");
                    allowed += 1;
                }
                (Err(e), None) => {
                    assert_eq!(e.from, s.status.code());
                    assert_eq!(e.to, to.code());
                    assert!(!e.reason.is_empty());
                    assert_eq!(
                        e.to_string(),
                        format!("status {} cannot go to {}: {}", e.from, e.to, e.reason)
                    );
                }
                (got, want) => panic!("{s:?} -> {to:?}: got {got:?}, want {want:?}"),
            }
            assert_eq!(s, before, "the original value is unchanged");
        }
    }
    // 8 (01..05, any change value) * 4 + 13: 2*4 + 15: 4*2 + 16: 4*4.
    assert_eq!(allowed, 8 * 4 + 8 + 8 + 16);
}

#[test]
fn set_by_recipient_examples() {
    let s = DocState::arrived();
    let s = s.set_by_recipient(StatusCode::Accepted).unwrap();
    let s = s.set_by_recipient(StatusCode::InProcessing).unwrap();
    let s = s.request_change(ChangeKind::Update).unwrap();
    assert_eq!(
        s,
        DocState {
            status: StatusCode::ChangeRequested,
            change: Some(ChangeKind::Update)
        }
    );
    let s = s.set_by_recipient(StatusCode::ChangeAccepted).unwrap();
    assert_eq!(s.change, Some(ChangeKind::Update));
    let s = s.set_by_recipient(StatusCode::AwaitingAssignment).unwrap();
    assert_eq!(
        s,
        DocState {
            status: StatusCode::AwaitingAssignment,
            change: None
        }
    );

    let recalled = DocState::arrived()
        .request_change(ChangeKind::Recall)
        .unwrap()
        .set_by_recipient(StatusCode::ChangeAccepted)
        .unwrap();
    let e = recalled.set_by_recipient(StatusCode::Accepted).unwrap_err();
    assert_eq!(
        e,
        TransitionError {
            from: "15",
            to: "03",
            reason: "the document was withdrawn by a recall".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "status 15 cannot go to 03: the document was withdrawn by a recall"
    );
    assert!(recalled.request_change(ChangeKind::Update).is_err());

    let e = DocState::arrived()
        .set_by_recipient(StatusCode::Completed)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "status 01 cannot go to 06: from 01 the recipient may set only 02, 03"
    );
    let e = DocState::arrived()
        .set_by_recipient(StatusCode::ChangeRequested)
        .unwrap_err();
    assert!(e.reason.contains("never set by the recipient"), "{e}");
}

#[test]
fn request_change_from_every_state() {
    let mut allowed = 0;
    for s in all_states() {
        for kind in KINDS {
            let before = s;
            match (s.request_change(kind), model_change(s, kind)) {
                (Ok(got), Some(want)) => {
                    assert_eq!(got, want, "{s:?} + {kind:?}");
                    allowed += 1;
                }
                (Err(e), None) => {
                    assert_eq!(e.from, s.status.code());
                    assert_eq!(e.to, "13");
                    assert!(!e.reason.is_empty());
                }
                (got, want) => panic!("{s:?} + {kind:?}: got {got:?}, want {want:?}"),
            }
            assert_eq!(s, before);
        }
    }
    // Allowed from 01, 03, 04, 05, 06, 16 (4 change values each) and 15 after update/replace (2).
    assert_eq!(allowed, (6 * 4 + 2) * 3);
    // Spelled out for the reachable states.
    for s in reachable_states() {
        let ok = s.request_change(ChangeKind::Recall).is_ok();
        let want = match s.status.code() {
            "01" | "03" | "04" | "05" | "06" | "16" => true,
            "15" => s.change != Some(ChangeKind::Recall),
            _ => false,
        };
        assert_eq!(ok, want, "{s:?}");
    }
}

/// One step of a random walk.
#[derive(Clone, Copy, Debug)]
enum Op {
    Set(StatusCode),
    Change(ChangeKind),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::sample::select(StatusCode::ALL.to_vec()).prop_map(Op::Set),
        1 => prop::sample::select(KINDS.to_vec()).prop_map(Op::Change),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_walks_follow_the_rules(ops in prop::collection::vec(op(), 0..40)) {
        let mut s = DocState::arrived();
        let mut rejected = false;
        let mut withdrawn_by_recall = false;
        let mut completed = false;
        for op in ops {
            let result = match op {
                Op::Set(to) => s.set_by_recipient(to),
                Op::Change(kind) => s.request_change(kind),
            };
            let want = match op {
                Op::Set(to) => model_set(s, to),
                Op::Change(kind) => model_change(s, kind),
            };
            prop_assert_eq!(result.as_ref().ok().copied(), want, "{:?} {:?}", s, op);
            if rejected || withdrawn_by_recall {
                prop_assert!(result.is_err(), "{:?} after a terminal state", op);
            }
            if completed {
                if let Op::Set(_) = op {
                    prop_assert!(result.is_err(), "set after 06");
                }
            }
            if let Ok(next) = result {
                if let Op::Set(to) = op {
                    prop_assert!(
                        ALLOWED.contains(&(s.status.code(), to.code()))
                            || (resumes(s) && matches!(to.code(), "03" | "04" | "05" | "06")),
                        "{:?} -> {:?} is not in the table", s, to
                    );
                    prop_assert!(!matches!(to.code(), "01" | "13"));
                }
                // A consistent state stays consistent.
                prop_assert_eq!(
                    matches!(next.status.code(), "13" | "15" | "16"),
                    next.change.is_some()
                );
                s = next;
            }
            rejected |= s.status == StatusCode::Rejected;
            withdrawn_by_recall |= s.status == StatusCode::ChangeAccepted
                && s.change == Some(ChangeKind::Recall);
            completed = s.status == StatusCode::Completed && s.change.is_none();
        }
    }
}
