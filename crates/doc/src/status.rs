//! The status state machine of a document at one recipient.

use std::fmt;

use truc_proto::v1::BusinessKind;

use crate::text::shown;
use crate::validate::Violation;

/// Status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusCode {
    /// 01: arrived (đã đến).
    Arrived,
    /// 02: rejected (từ chối tiếp nhận).
    Rejected,
    /// 03: accepted / registered (đã tiếp nhận).
    Accepted,
    /// 04: awaiting assignment (đang chờ phân công).
    AwaitingAssignment,
    /// 05: assigned, in processing (đã phân công, đang xử lý).
    InProcessing,
    /// 06: completed (đã xử lý xong).
    Completed,
    /// 13: the sender asked for a recall, update or replace.
    ChangeRequested,
    /// 15: the recipient accepted the change.
    ChangeAccepted,
    /// 16: the recipient refused the change.
    ChangeRefused,
}

impl StatusCode {
    /// Every status code, in code order.
    pub const ALL: [StatusCode; 9] = [
        StatusCode::Arrived,
        StatusCode::Rejected,
        StatusCode::Accepted,
        StatusCode::AwaitingAssignment,
        StatusCode::InProcessing,
        StatusCode::Completed,
        StatusCode::ChangeRequested,
        StatusCode::ChangeAccepted,
        StatusCode::ChangeRefused,
    ];

    /// Parses a two-digit code ("01".."06", "13", "15", "16"); else `R.StatusCode`.
    pub fn parse(code: &str) -> Result<StatusCode, Violation> {
        StatusCode::ALL
            .into_iter()
            .find(|s| s.code() == code)
            .ok_or_else(|| {
                Violation::new(
                    "R.StatusCode",
                    "status",
                    format!(
                        "status is one of 01, 02, 03, 04, 05, 06, 13, 15, 16 (has {})",
                        shown(code)
                    ),
                )
            })
    }

    /// The two-digit code, e.g. "03".
    pub fn code(self) -> &'static str {
        match self {
            StatusCode::Arrived => "01",
            StatusCode::Rejected => "02",
            StatusCode::Accepted => "03",
            StatusCode::AwaitingAssignment => "04",
            StatusCode::InProcessing => "05",
            StatusCode::Completed => "06",
            StatusCode::ChangeRequested => "13",
            StatusCode::ChangeAccepted => "15",
            StatusCode::ChangeRefused => "16",
        }
    }

    /// What the code means, in English.
    pub fn meaning(self) -> &'static str {
        match self {
            StatusCode::Arrived => "arrived",
            StatusCode::Rejected => "rejected",
            StatusCode::Accepted => "accepted",
            StatusCode::AwaitingAssignment => "awaiting assignment",
            StatusCode::InProcessing => "in processing",
            StatusCode::Completed => "completed",
            StatusCode::ChangeRequested => "change requested",
            StatusCode::ChangeAccepted => "change accepted",
            StatusCode::ChangeRefused => "change refused",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The kind of change a sender asked for with a later envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// Withdraw the document.
    Recall,
    /// Amend the document.
    Update,
    /// Replace the document with a new version.
    Replace,
}

impl ChangeKind {
    /// The change a business kind asks for; None for New.
    pub fn of(kind: BusinessKind) -> Option<ChangeKind> {
        match kind {
            BusinessKind::New => None,
            BusinessKind::Recall => Some(ChangeKind::Recall),
            BusinessKind::Update => Some(ChangeKind::Update),
            BusinessKind::Replace => Some(ChangeKind::Replace),
        }
    }

    /// Lowercase English name, e.g. "recall".
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Recall => "recall",
            ChangeKind::Update => "update",
            ChangeKind::Replace => "replace",
        }
    }
}

/// A document's state at one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DocState {
    /// The current status.
    pub status: StatusCode,
    /// The change the last 13 asked for, kept through 15/16; None once processing resumes (03..06).
    pub change: Option<ChangeKind>,
}

/// A refused status change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("status {from} cannot go to {to}: {reason}")]
pub struct TransitionError {
    /// The current status code.
    pub from: &'static str,
    /// The requested status code.
    pub to: &'static str,
    /// Why not, as a lowercase sentence.
    pub reason: String,
}

impl DocState {
    /// A document that just arrived: 01.
    pub fn arrived() -> DocState {
        DocState {
            status: StatusCode::Arrived,
            change: None,
        }
    }

    /// Whether the document was withdrawn: 15 after a recall (or after an unknown change).
    fn withdrawn(self) -> bool {
        self.status == StatusCode::ChangeAccepted
            && !matches!(
                self.change,
                Some(ChangeKind::Update) | Some(ChangeKind::Replace)
            )
    }

    /// The refusal of going to `to` because `reason`.
    fn refuse(self, to: StatusCode, reason: impl Into<String>) -> TransitionError {
        TransitionError {
            from: self.status.code(),
            to: to.code(),
            reason: reason.into(),
        }
    }

    /// A status the recipient sets (UpdateStatus). Rules:
    ///   01 → 02 | 03;  03 → 04 | 05 | 06;  04 → 05 | 06;  05 → 06;
    ///   13 → 15 | 16;  15 after an update/replace → 03 | 04 | 05 | 06 (processing resumes on the new version);
    ///   15 after a recall: terminal (the document is withdrawn);  16 → 03 | 04 | 05 | 06;
    ///   02 and 06 are terminal for the recipient; 01 and 13 are never set by the recipient.
    ///
    /// Going to 15 or 16 keeps `change`; going to 02..06 clears it.
    pub fn set_by_recipient(self, to: StatusCode) -> Result<DocState, TransitionError> {
        use StatusCode::*;
        if matches!(to, Arrived | ChangeRequested) {
            return Err(self.refuse(
                to,
                format!(
                    "{} is never set by the recipient ({})",
                    to.code(),
                    if to == Arrived {
                        "01 is set on arrival"
                    } else {
                        "13 is set by the sender's recall, update or replace"
                    }
                ),
            ));
        }
        let allowed: &[StatusCode] = match self.status {
            Arrived => &[Rejected, Accepted],
            Accepted => &[AwaitingAssignment, InProcessing, Completed],
            AwaitingAssignment => &[InProcessing, Completed],
            InProcessing => &[Completed],
            ChangeRequested => &[ChangeAccepted, ChangeRefused],
            ChangeAccepted if self.withdrawn() => {
                return Err(self.refuse(to, "the document was withdrawn by a recall"));
            }
            ChangeAccepted | ChangeRefused => {
                &[Accepted, AwaitingAssignment, InProcessing, Completed]
            }
            Rejected => {
                return Err(self.refuse(to, "the document was rejected (02 is terminal)"));
            }
            Completed => {
                return Err(self.refuse(
                    to,
                    "the document is completed (06 is terminal for the recipient)",
                ));
            }
        };
        if !allowed.contains(&to) {
            let list = allowed
                .iter()
                .map(|s| s.code())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(self.refuse(
                to,
                format!(
                    "from {} the recipient may set only {list}",
                    self.status.code()
                ),
            ));
        }
        let change = match to {
            ChangeAccepted | ChangeRefused => self.change,
            _ => None,
        };
        Ok(DocState { status: to, change })
    }

    /// The sender's recall/update/replace arrives: → 13 with that change. Allowed from 01, 03, 04, 05, 06, 16,
    /// and 15 after an update/replace; refused from 02 (rejected), 13 (a change is already pending) and 15 after
    /// a recall (withdrawn).
    pub fn request_change(self, change: ChangeKind) -> Result<DocState, TransitionError> {
        let to = StatusCode::ChangeRequested;
        let reason = match self.status {
            StatusCode::Rejected => Some("the document was rejected (02 is terminal)".to_owned()),
            StatusCode::ChangeRequested => Some(format!(
                "a {} is already pending",
                self.change.map_or("change", ChangeKind::name)
            )),
            StatusCode::ChangeAccepted if self.withdrawn() => {
                Some("the document was withdrawn by a recall".to_owned())
            }
            _ => None,
        };
        match reason {
            Some(reason) => Err(self.refuse(to, reason)),
            None => Ok(DocState {
                status: to,
                change: Some(change),
            }),
        }
    }
}
