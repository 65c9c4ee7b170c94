//! The `truc.v1` gRPC contract: messages, clients and servers generated from
//! `proto/truc/v1`, the descriptor set for server reflection, and the clock
//! the messages' `*_unix_ms` fields are read from. Nothing else lives here.

#![forbid(unsafe_code)]

/// Generated code for the `truc.v1` package.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod v1 {
    tonic::include_proto!("truc.v1");
}

/// Encoded `FileDescriptorSet` of every `truc.v1` proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/truc_descriptor.bin"));

/// Milliseconds since the Unix epoch, now: the unit of every `*_unix_ms`
/// field. 0 for a clock set before 1970.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
