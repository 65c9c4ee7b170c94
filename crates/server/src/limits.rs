//! The message limit of a generated gRPC server. tonic generates
//! `max_decoding_message_size` and `max_encoding_message_size` on each
//! server type but no trait for them, so the builder could not set them on
//! a service it only knows as generic: this trait is that, for the servers
//! of `truc.v1`.

use truc_proto::v1::{
    agency_server::{Agency, AgencyServer},
    audit_server::{Audit, AuditServer},
    backend_server::{Backend, BackendServer},
    hub_server::{Hub, HubServer},
    node_server::{Node, NodeServer},
    reporting_server::{Reporting, ReportingServer},
};

/// A gRPC server whose incoming and outgoing messages can be limited.
pub trait MessageLimits {
    /// The server, refusing a message larger than `bytes` either way.
    #[must_use]
    fn with_message_limit(self, bytes: usize) -> Self;
}

macro_rules! message_limits {
    ($($server:ident<$service:ident>),* $(,)?) => {$(
        impl<T: $service> MessageLimits for $server<T> {
            fn with_message_limit(self, bytes: usize) -> Self {
                self.max_decoding_message_size(bytes)
                    .max_encoding_message_size(bytes)
            }
        }
    )*};
}

message_limits!(
    AgencyServer<Agency>,
    AuditServer<Audit>,
    BackendServer<Backend>,
    HubServer<Hub>,
    NodeServer<Node>,
    ReportingServer<Reporting>,
);
