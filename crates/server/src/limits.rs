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

/// The largest registry snapshot a hub sends and a node accepts. A
/// registry the size of the country (10 000 agencies, 1 000 services,
/// 100 000 grants) is about 6 MB as a snapshot, more than tonic's default
/// 4 MiB and than a small payload limit; this leaves room for ten times
/// that. The snapshot is signed by a pinned hub key and checked before
/// anything in it is used.
pub const MAX_REGISTRY_SNAPSHOT_BYTES: usize = 64 << 20;

/// A gRPC server whose incoming and outgoing messages can be limited.
pub trait MessageLimits {
    /// The server, refusing to receive more than `incoming` bytes in a
    /// message or to send more than `outgoing`.
    #[must_use]
    fn with_message_limits(self, incoming: usize, outgoing: usize) -> Self;
}

macro_rules! message_limits {
    ($($server:ident<$service:ident>),* $(,)?) => {$(
        impl<T: $service> MessageLimits for $server<T> {
            fn with_message_limits(self, incoming: usize, outgoing: usize) -> Self {
                self.max_decoding_message_size(incoming)
                    .max_encoding_message_size(outgoing)
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
