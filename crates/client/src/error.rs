//! The errors of the client library.

use std::path::PathBuf;

use tonic::{Code, Status};
use truc_proto::v1::{RecipientTracking, Tracking};

/// The gRPC metadata key under which truc servers name the transaction of a
/// failed call (the same as the servers' `TRANSACTION_ID_HEADER`).
pub const TRANSACTION_ID_HEADER: &str = "x-truc-transaction-id";

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TLS files or the node's address cannot be used.
    #[error("cannot connect: {0}")]
    Connect(#[from] truc_pki::PkiError),
    /// The node (or the connection to it) answered with an error; the gRPC
    /// status is kept as it came.
    #[error("{}", describe(.0))]
    Rpc(Box<Status>),
    /// A local file cannot be read, created or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What happened.
        reason: String,
    },
    /// A file of a fetch is already there (or is a link): nothing is
    /// overwritten and no link is followed.
    #[error(
        "{0} already exists (or is a link); refusing to overwrite it (fetch into an empty directory)"
    )]
    Exists(PathBuf),
    /// The output directory of a fetch is a symbolic link.
    #[error("{0} is a symbolic link; give a real directory")]
    LinkedDirectory(PathBuf),
    /// The node sent something this library cannot accept (attachment bytes
    /// that do not match the envelope, messages out of order…).
    #[error("{0}")]
    Protocol(String),
    /// `wait_for_status`: the deadline passed first; the recipient's latest
    /// tracking, when one was seen.
    #[error("the deadline passed before the status was reached")]
    Timeout(Option<Box<RecipientTracking>>),
    /// `wait_for_tracking`: the deadline passed first; the latest tracking,
    /// when one was seen.
    #[error("the deadline passed before the tracking got there")]
    TrackingTimeout(Option<Box<Tracking>>),
    /// `wait_for_status`: the recipient is not one of the document's.
    #[error("{0} is not a recipient of this document")]
    NotARecipient(String),
    /// A watch ended (the node stopped it) before what was waited for.
    #[error("the node ended the watch")]
    Ended,
}

impl Error {
    /// The gRPC status, for an error from the node.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Rpc(s) => Some(s),
            _ => None,
        }
    }

    /// The gRPC code: the node's, `DeadlineExceeded` for a timeout,
    /// `Unknown` for local errors.
    pub fn code(&self) -> Code {
        match self {
            Error::Rpc(s) => s.code(),
            Error::Timeout(_) | Error::TrackingTimeout(_) => Code::DeadlineExceeded,
            _ => Code::Unknown,
        }
    }

    /// The transaction the node recorded for the failed call, if it named one.
    pub fn transaction_id(&self) -> Option<&str> {
        self.status().and_then(transaction_id)
    }

    pub(crate) fn file(path: &std::path::Path, reason: impl std::fmt::Display) -> Error {
        Error::File {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Error {
        Error::Rpc(Box::new(status))
    }
}

fn transaction_id(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(TRANSACTION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
}

/// "Code: message (transaction id)".
fn describe(status: &Status) -> String {
    let tx = transaction_id(status)
        .map(|t| format!(" (transaction {t})"))
        .unwrap_or_default();
    format!("{:?}: {}{tx}", status.code(), status.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_and_its_transaction_are_kept() {
        assert_eq!(TRANSACTION_ID_HEADER, truc_ops::TRANSACTION_ID_HEADER);
        let mut status = Status::permission_denied("no");
        status
            .metadata_mut()
            .insert(TRANSACTION_ID_HEADER, "ab12".parse().expect("value"));
        let e = Error::from(status);
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(e.transaction_id(), Some("ab12"));
        assert_eq!(e.to_string(), "PermissionDenied: no (transaction ab12)");
        assert_eq!(
            Error::from(Status::not_found("gone")).to_string(),
            "NotFound: gone"
        );
    }
}
