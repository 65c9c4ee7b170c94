//! The `truc.v1` gRPC contract: messages, clients and servers generated from
//! `proto/truc/v1`, and the descriptor set for server reflection. Nothing else
//! lives here.

#![forbid(unsafe_code)]

/// Generated code for the `truc.v1` package.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod v1 {
    tonic::include_proto!("truc.v1");
}

/// Encoded `FileDescriptorSet` of every `truc.v1` proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/truc_descriptor.bin"));
