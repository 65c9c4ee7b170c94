//! [`DocumentId`]: `{sender organ id},{yyyy/MM/dd},{number}/{notation}`.

use std::fmt;

use truc_registry::AgencyCode;

use crate::text::{forbidden_in_line, shown};
use crate::validate::{Violation, is_valid_date};

/// Most characters of a document number (`code.code_number`).
pub const MAX_NUMBER_CHARS: usize = 64;
/// Most characters of a document notation (`code.code_notation`).
pub const MAX_NOTATION_CHARS: usize = 100;
/// Most characters of a document id: a 13-character agency code, a date, a number and a notation.
pub const MAX_DOCUMENT_ID_CHARS: usize =
    13 + 1 + 10 + 1 + MAX_NUMBER_CHARS + 1 + MAX_NOTATION_CHARS;

/// A parsed DocumentId: "{sender organ id},{yyyy/MM/dd},{number}/{notation}", e.g. "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT".
///
/// The number is the text before the first '/' (non-empty, no ',', at most
/// [`MAX_NUMBER_CHARS`]); the notation is the rest (non-empty, may contain '/', ','
/// and non-ASCII letters, at most [`MAX_NOTATION_CHARS`]). No part holds a control
/// character, a line separator or a bidirectional mark: ids are parts of storage keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentId {
    /// The sending agency.
    pub sender: AgencyCode,
    /// The promulgation date, `yyyy/MM/dd`.
    pub date: String,
    /// The document number, e.g. `7816`.
    pub number: String,
    /// The document notation, e.g. `VPCP-TTĐT`.
    pub notation: String,
}

/// An `R.DocumentId.Format` violation with `rule`.
fn bad(rule: String) -> Violation {
    Violation::new("R.DocumentId.Format", "document_id", rule)
}

impl DocumentId {
    /// Parses a document id; `N.DocumentId` when empty, `R.DocumentId.Format` when malformed.
    pub fn parse(s: &str) -> Result<DocumentId, Violation> {
        if s.trim().is_empty() {
            return Err(Violation::new(
                "N.DocumentId",
                "document_id",
                "the document id is required",
            ));
        }
        if s.chars().take(MAX_DOCUMENT_ID_CHARS + 1).count() > MAX_DOCUMENT_ID_CHARS {
            return Err(bad(format!(
                "the document id is at most {MAX_DOCUMENT_ID_CHARS} characters (has {} bytes)",
                s.len()
            )));
        }
        if let Some((i, c)) = s.chars().enumerate().find(|&(_, c)| forbidden_in_line(c)) {
            return Err(bad(format!(
                "the document id must not contain control characters, line breaks or bidirectional marks (has U+{:04X} at character {i})",
                u32::from(c)
            )));
        }
        let shape = || {
            bad(format!(
                "the document id must be {{sender organ id}},{{yyyy/MM/dd}},{{number}}/{{notation}} (has {})",
                shown(s)
            ))
        };
        let mut parts = s.splitn(3, ',');
        let (Some(sender), Some(date), Some(code)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(shape());
        };
        let Some((number, notation)) = code.split_once('/') else {
            return Err(shape());
        };
        let sender = AgencyCode::parse(sender).map_err(|_| {
            bad(format!(
                "the document id's sender must be an agency code like 000.00.00.G22 (has {})",
                shown(sender)
            ))
        })?;
        if !is_valid_date(date) {
            return Err(bad(format!(
                "the document id's date must be a real date written yyyy/MM/dd (has {})",
                shown(date)
            )));
        }
        if number.is_empty() || number.contains(',') {
            return Err(bad(format!(
                "the document id's number must be non-empty without ',' (has {})",
                shown(number)
            )));
        }
        if number.chars().count() > MAX_NUMBER_CHARS {
            return Err(bad(format!(
                "the document id's number is at most {MAX_NUMBER_CHARS} characters"
            )));
        }
        if notation.is_empty() {
            return Err(bad(
                "the document id's notation after '/' must be non-empty".to_owned(),
            ));
        }
        if notation.chars().count() > MAX_NOTATION_CHARS {
            return Err(bad(format!(
                "the document id's notation is at most {MAX_NOTATION_CHARS} characters"
            )));
        }
        Ok(DocumentId {
            sender,
            date: date.to_owned(),
            number: number.to_owned(),
            notation: notation.to_owned(),
        })
    }

    /// Writes the parts as a document id, without checking them.
    pub fn format(sender: &str, date: &str, number: &str, notation: &str) -> String {
        format!("{sender},{date},{number}/{notation}")
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&DocumentId::format(
            self.sender.as_str(),
            &self.date,
            &self.number,
            &self.notation,
        ))
    }
}
