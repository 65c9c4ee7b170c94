//! [`Error`]: what this crate refuses, and its one mapping to a gRPC status.

use tonic::metadata::MetadataValue;

use crate::validate::Violation;

/// Metadata key carrying the first violation's code on an INVALID_ARGUMENT status.
pub const VIOLATION_HEADER: &str = "x-truc-violation";

/// The most violations listed in one error message (the rest are counted).
const MAX_LISTED: usize = 20;

/// Why a document, a status or an attachment chunk is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Broken rules (never empty), in field order.
    #[error("{}", list(.0))]
    Invalid(Vec<Violation>),
    /// A chunk out of order, of a bad size, or past what the envelope declared.
    #[error("{0}")]
    Chunk(String),
    /// Bytes that do not match their SHA-256: corrupted on the way.
    #[error("{0}")]
    Corrupt(String),
}

impl Error {
    /// The violations, when the error is [`Error::Invalid`].
    pub fn violations(&self) -> &[Violation] {
        match self {
            Error::Invalid(v) => v,
            _ => &[],
        }
    }

    /// The gRPC code this error maps to: INVALID_ARGUMENT, or DATA_LOSS for corruption.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::Invalid(_) | Error::Chunk(_) => tonic::Code::InvalidArgument,
            Error::Corrupt(_) => tonic::Code::DataLoss,
        }
    }

    /// `Err(Invalid(violations))` unless there are none.
    pub(crate) fn check(violations: Vec<Violation>) -> Result<(), Error> {
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(violations))
        }
    }
}

/// The violations "; "-separated, at most [`MAX_LISTED`] of them.
fn list(violations: &[Violation]) -> String {
    let mut s = violations
        .iter()
        .take(MAX_LISTED)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if violations.len() > MAX_LISTED {
        s.push_str(&format!(
            "; and {} more violations",
            violations.len() - MAX_LISTED
        ));
    }
    s
}

/// The one mapping to gRPC: [`Error::code`] with the message, and for
/// [`Error::Invalid`] the first violation's code in metadata
/// [`VIOLATION_HEADER`].
impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        let mut status = tonic::Status::new(e.code(), e.to_string());
        if let Some(first) = e.violations().first() {
            if let Ok(value) = first.code.parse::<MetadataValue<_>>() {
                status.metadata_mut().insert(VIOLATION_HEADER, value);
            }
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_maps_to_invalid_argument_with_the_first_code() {
        let e = Error::Invalid(vec![
            Violation::new("N.Subject", "subject", "subject is required"),
            Violation::new("N.To", "to", "at least one recipient is required"),
        ]);
        let s = tonic::Status::from(e);
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "N.Subject subject: subject is required; N.To to: at least one recipient is required"
        );
        assert_eq!(
            s.metadata()
                .get(VIOLATION_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("N.Subject")
        );
    }

    #[test]
    fn long_lists_are_cut() {
        let many = (0..1000)
            .map(|i| Violation::new("R.ToPlaces.Place", format!("to_places[{i}]"), "bad"))
            .collect();
        let message = Error::Invalid(many).to_string();
        assert!(message.ends_with("; and 980 more violations"), "{message}");
        assert_eq!(message.matches("R.ToPlaces.Place").count(), MAX_LISTED);
    }

    #[test]
    fn corruption_is_data_loss_and_chunk_errors_invalid_argument() {
        assert_eq!(
            tonic::Status::from(Error::Corrupt("x".into())).code(),
            tonic::Code::DataLoss
        );
        assert_eq!(
            tonic::Status::from(Error::Chunk("x".into())).code(),
            tonic::Code::InvalidArgument
        );
    }
}
