//! [`DocumentId`]: `{sender organ id},{yyyy/MM/dd},{number}/{notation}`.

use std::fmt;

use truc_registry::AgencyCode;

use crate::validate::{Violation, is_valid_date};

/// A parsed DocumentId: "{sender organ id},{yyyy/MM/dd},{number}/{notation}", e.g. "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT".
///
/// The number is the text before the first '/' (non-empty, no ','); the notation is
/// the rest (non-empty, may contain '/', ',' and non-ASCII letters).
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
        let shape = || {
            bad(format!(
                "the document id must be {{sender organ id}},{{yyyy/MM/dd}},{{number}}/{{notation}} (has {s:?})"
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
                "the document id's sender must be an agency code like 000.00.00.G22 (has {sender:?})"
            ))
        })?;
        if !is_valid_date(date) {
            return Err(bad(format!(
                "the document id's date must be a real date written yyyy/MM/dd (has {date:?})"
            )));
        }
        if number.is_empty() || number.contains(',') {
            return Err(bad(format!(
                "the document id's number must be non-empty without ',' (has {number:?})"
            )));
        }
        if notation.is_empty() {
            return Err(bad(
                "the document id's notation after '/' must be non-empty".to_owned(),
            ));
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
