//! The errors of a transaction, and the one place they become gRPC statuses.
//!
//! | error | code |
//! | --- | --- |
//! | [`TxError::Unauthenticated`] | UNAUTHENTICATED |
//! | [`TxError::Denied`] | PERMISSION_DENIED |
//! | [`TxError::Invalid`] | INVALID_ARGUMENT |
//! | [`TxError::NotFound`] | NOT_FOUND |
//! | [`TxError::AlreadyExists`] | ALREADY_EXISTS |
//! | [`TxError::Precondition`] | FAILED_PRECONDITION |
//! | [`TxError::TooLarge`] | RESOURCE_EXHAUSTED |
//! | [`TxError::Quota`] | RESOURCE_EXHAUSTED, with `retry-after-ms` in the metadata |
//! | [`TxError::Unreachable`] | UNAVAILABLE |
//! | [`TxError::Deadline`] | DEADLINE_EXCEEDED |
//! | [`TxError::Peer`] | the peer's own code, kept |
//! | [`TxError::Document`] | INVALID_ARGUMENT, or DATA_LOSS for a corrupted chunk |
//! | [`TxError::BadAnswer`] | INTERNAL, naming the peer |
//! | [`TxError::Audit`], [`TxError::Internal`] | INTERNAL, with a generic message (the cause is logged) |

use std::fmt::Display;

use tonic::{Code, Status};

/// Why a transaction did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The caller's certificate is missing or of a role that may not call.
    #[error("{0}")]
    Unauthenticated(String),
    /// The registry or a node's config does not allow it.
    #[error("{0}")]
    Denied(String),
    /// A field is malformed or out of bounds; the caller can fix it.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as named in the proto.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The transaction (or the document) exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// Not allowed in the current state.
    #[error("{0}")]
    Precondition(String),
    /// Over a configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// Over the caller's call quota: the call may be made again after
    /// `retry_after`. Recorded with its own outcome, `QUOTA_EXCEEDED`.
    #[error("{message}")]
    Quota {
        /// What was exceeded, for the message.
        message: String,
        /// How long until the next call can pass.
        retry_after: std::time::Duration,
    },
    /// The next hop did not answer (connection refused, reset, TLS failure).
    #[error("{peer} is unreachable")]
    Unreachable {
        /// Who, for the message.
        peer: String,
    },
    /// The deadline passed before the next hop answered.
    #[error("the deadline passed before {peer} answered")]
    Deadline {
        /// Who, for the message.
        peer: String,
    },
    /// A document or status that breaks the document rules (its violations,
    /// or a chunk that does not match its envelope).
    #[error(transparent)]
    Document(#[from] truc_doc::Error),
    /// The next hop answered something malformed.
    #[error("{peer} answered a malformed response: {reason}")]
    BadAnswer {
        /// Who.
        peer: String,
        /// What was wrong.
        reason: String,
    },
    /// The next hop answered with an error: its code and message are kept.
    #[error("{}", .0.message())]
    Peer(Status),
    /// The transaction could not be written to the audit log.
    #[error("the transaction could not be audited")]
    Audit(#[source] truc_audit::AuditError),
    /// A bug or a local failure; the cause is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl TxError {
    /// A field that failed validation.
    pub fn invalid(field: &'static str, reason: impl Display) -> TxError {
        TxError::Invalid {
            field,
            reason: reason.to_string(),
        }
    }

    /// What a status from the next hop means: a transport failure (no
    /// peer answered, so there are no response headers) is that peer being
    /// unreachable; a status the peer sent keeps its code. The one rule for
    /// every outgoing call.
    pub fn from_peer(status: Status, peer: impl Display) -> TxError {
        if truc_ops::is_transport_failure(&status) {
            tracing::warn!(%peer, error = %status, "peer unreachable");
            TxError::Unreachable {
                peer: peer.to_string(),
            }
        } else if matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled)
            && status.metadata().is_empty()
        {
            // tonic's client reports its own expired `grpc-timeout` as
            // CANCELLED ("Timeout expired"): our deadline, not the peer's word.
            TxError::Deadline {
                peer: peer.to_string(),
            }
        } else {
            TxError::Peer(status)
        }
    }

    /// What the hub's answer to a routed call means: [`TxError::from_peer`],
    /// except that RESOURCE_EXHAUSTED with `retry-after-ms` is the hub's
    /// quota refusal, recorded as such here too (the hub strips that key
    /// from what provider nodes answer, so only its own refusals carry it).
    pub fn from_hub(status: Status) -> TxError {
        let retry_ms = status
            .metadata()
            .get(truc_ops::RETRY_AFTER_MS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match retry_ms {
            Some(ms) if status.code() == Code::ResourceExhausted => TxError::Quota {
                message: status.message().to_string(),
                retry_after: std::time::Duration::from_millis(ms),
            },
            _ => TxError::from_peer(status, "the hub"),
        }
    }

    /// The gRPC code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            TxError::Unauthenticated(_) => Code::Unauthenticated,
            TxError::Denied(_) => Code::PermissionDenied,
            TxError::Invalid { .. } => Code::InvalidArgument,
            TxError::NotFound(_) => Code::NotFound,
            TxError::AlreadyExists(_) => Code::AlreadyExists,
            TxError::Precondition(_) => Code::FailedPrecondition,
            TxError::TooLarge(_) | TxError::Quota { .. } => Code::ResourceExhausted,
            TxError::Unreachable { .. } => Code::Unavailable,
            TxError::Deadline { .. } => Code::DeadlineExceeded,
            TxError::Peer(s) => s.code(),
            TxError::Document(e) => e.code(),
            TxError::BadAnswer { .. } | TxError::Audit(_) | TxError::Internal(_) => Code::Internal,
        }
    }
}

/// The outcome an audit record gives a transaction refused by a quota: a
/// RESOURCE_EXHAUSTED of its own, so statistics count quota refusals apart
/// from oversized requests.
pub const QUOTA_EXCEEDED: &str = "QUOTA_EXCEEDED";

impl TxError {
    /// The outcome an audit record and the metrics give this error: its
    /// gRPC code name, or [`QUOTA_EXCEEDED`].
    pub fn outcome(&self) -> &'static str {
        match self {
            TxError::Quota { .. } => QUOTA_EXCEEDED,
            other => truc_ops::code_name(other.code()),
        }
    }
}

impl From<TxError> for Status {
    fn from(e: TxError) -> Status {
        match e {
            TxError::Peer(status) => status,
            TxError::Quota {
                ref message,
                retry_after,
            } => {
                let mut status = Status::resource_exhausted(message.clone());
                // Whole milliseconds, rounded up: waiting that long is enough.
                let ms = retry_after.as_nanos().div_ceil(1_000_000);
                if let Ok(v) = ms.to_string().parse() {
                    status
                        .metadata_mut()
                        .insert(truc_ops::RETRY_AFTER_MS_HEADER, v);
                }
                status
            }
            // With the first violation's code in the metadata.
            TxError::Document(e) => e.into(),
            TxError::Audit(ref cause) => {
                tracing::error!(error = %cause, "audit append failed");
                Status::internal(e.to_string())
            }
            TxError::Internal(ref cause) => {
                tracing::error!(error = %cause, "internal error");
                Status::internal("internal error")
            }
            other => Status::new(other.code(), other.to_string()),
        }
    }
}

/// A status a handler already made (a peer's, or tonic's own stream error)
/// keeps its code.
impl From<Status> for TxError {
    fn from(status: Status) -> TxError {
        TxError::Peer(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_failure_is_unreachable_and_a_peer_status_keeps_its_code() {
        // Made by our own client: no metadata.
        let local = Status::unavailable("connection refused");
        assert_eq!(
            TxError::from_peer(local, "node x").code(),
            Code::Unavailable
        );
        assert!(matches!(
            TxError::from_peer(Status::unknown("h2 reset"), "node x"),
            TxError::Unreachable { .. }
        ));
        // Sent by the peer: it came with response headers.
        let mut sent = Status::unavailable("backend down");
        sent.metadata_mut()
            .insert("content-type", "application/grpc".parse().expect("ascii"));
        let e = TxError::from_peer(sent, "node x");
        assert!(matches!(e, TxError::Peer(_)));
        assert!(matches!(
            TxError::from_peer(Status::cancelled("Timeout expired"), "node x"),
            TxError::Deadline { .. }
        ));
        let sent = Status::not_found("no such citizen");
        assert_eq!(
            Status::from(TxError::from_peer(sent, "node x")).code(),
            Code::NotFound
        );
    }

    #[test]
    fn a_quota_refusal_has_its_own_outcome_and_a_retry_hint() {
        let e = TxError::Quota {
            message: "over quota".into(),
            retry_after: std::time::Duration::from_micros(2_500),
        };
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert_eq!(e.outcome(), "QUOTA_EXCEEDED");
        assert_eq!(
            TxError::TooLarge("big".into()).outcome(),
            "RESOURCE_EXHAUSTED"
        );
        let s = Status::from(e);
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.metadata()
                .get(truc_ops::RETRY_AFTER_MS_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("3"),
            "rounded up"
        );
    }

    #[test]
    fn the_hubs_quota_refusal_is_one_here_too() {
        let mut s = Status::resource_exhausted("over quota");
        s.metadata_mut().insert(
            truc_ops::RETRY_AFTER_MS_HEADER,
            "250".parse().expect("ascii"),
        );
        let e = TxError::from_hub(s);
        assert_eq!(e.outcome(), "QUOTA_EXCEEDED");
        let back = Status::from(e);
        assert_eq!(back.message(), "over quota");
        assert_eq!(
            back.metadata()
                .get(truc_ops::RETRY_AFTER_MS_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("250")
        );
        // Without the hint, with one that is not a number, or with it on
        // another code: the peer's status.
        let plain = Status::resource_exhausted("too big");
        assert_eq!(TxError::from_hub(plain).outcome(), "RESOURCE_EXHAUSTED");
        let mut junk = Status::resource_exhausted("x");
        junk.metadata_mut().insert(
            truc_ops::RETRY_AFTER_MS_HEADER,
            "-1".parse().expect("ascii"),
        );
        assert_eq!(TxError::from_hub(junk).outcome(), "RESOURCE_EXHAUSTED");
        let mut other = Status::not_found("x");
        other
            .metadata_mut()
            .insert(truc_ops::RETRY_AFTER_MS_HEADER, "5".parse().expect("ascii"));
        assert_eq!(TxError::from_hub(other).outcome(), "NOT_FOUND");
    }

    #[test]
    fn internal_errors_say_nothing_of_their_cause() {
        let s = Status::from(TxError::Internal("disk /dev/sda1 on fire".into()));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("sda1"));
    }
}
