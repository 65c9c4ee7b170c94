//! [`envelope_digest`]: the identity of a send.

use prost::Message;
use truc_proto::v1::Envelope;

/// SHA-256 of the envelope's protobuf encoding (deterministic for these messages): the identity
/// of a send, telling a repeated send (same digest) from a different envelope under the same DocumentId.
pub fn envelope_digest(envelope: &Envelope) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, &envelope.encode_to_vec());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
