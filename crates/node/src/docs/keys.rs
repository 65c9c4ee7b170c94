//! Where documents live in the node's store, and reading them back.

use prost::Message;
use tonic::Status;
use truc_store::Store;

/// Sent documents (the sender's outbox and tracking), by sender, document id
/// and business kind.
pub(crate) const OUTBOX: &[u8] = b"doc/o/";
/// Deliveries still to make, by sender, document id, kind and recipient;
/// the value is the time of the next attempt.
pub(crate) const QUEUE: &[u8] = b"doc/q/";
/// Received documents, by recipient, sender and document id.
pub(crate) const INBOX: &[u8] = b"doc/i/";
/// Statuses still to send back, by sequence number.
pub(crate) const STATUS_QUEUE: &[u8] = b"doc/s/";

const SEP: u8 = 0;

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(SEP);
        }
        k.extend_from_slice(p);
    }
    k
}

/// The business kind as an ASCII digit: never the separator.
fn kind_byte(kind: i32) -> u8 {
    b'0' + u8::try_from(kind.clamp(0, 9)).unwrap_or(0)
}

/// The outbox key of a send.
pub(crate) fn outbox(sender: &str, document_id: &str, kind: i32) -> Vec<u8> {
    key(
        OUTBOX,
        &[
            sender.as_bytes(),
            document_id.as_bytes(),
            &[kind_byte(kind)],
        ],
    )
}

/// The queue key of one delivery.
pub(crate) fn queue(sender: &str, document_id: &str, kind: i32, recipient: &str) -> Vec<u8> {
    key(
        QUEUE,
        &[
            sender.as_bytes(),
            document_id.as_bytes(),
            &[kind_byte(kind)],
            recipient.as_bytes(),
        ],
    )
}

/// The parts of a queue key: sender, document id, kind, recipient.
pub(crate) fn parse_queue(k: &[u8]) -> Option<(String, String, i32, String)> {
    let rest = k.strip_prefix(QUEUE)?;
    let mut parts = rest.splitn(4, |b| *b == SEP);
    let sender = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let doc = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let kind = i32::from(parts.next()?.first()?.checked_sub(b'0')?);
    let recipient = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((sender, doc, kind, recipient))
}

/// The inbox key of a received document.
pub(crate) fn inbox(recipient: &str, sender: &str, document_id: &str) -> Vec<u8> {
    key(
        INBOX,
        &[
            recipient.as_bytes(),
            sender.as_bytes(),
            document_id.as_bytes(),
        ],
    )
}

/// The prefix of one recipient's inbox.
pub(crate) fn inbox_of(recipient: &str) -> Vec<u8> {
    let mut k = key(INBOX, &[recipient.as_bytes()]);
    k.push(SEP);
    k
}

/// The status queue key of sequence number `seq`.
pub(crate) fn status(seq: u64) -> Vec<u8> {
    key(STATUS_QUEUE, &[&seq.to_be_bytes()])
}

/// Storage failures are logged and answered INTERNAL.
pub(crate) fn storage(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "document storage failed");
    Status::internal("document storage failed")
}

/// Reads and decodes a message.
pub(crate) fn load<M: Message + Default>(store: &Store, k: &[u8]) -> Result<Option<M>, Status> {
    match store.get(k).map_err(storage)? {
        Some(bytes) => M::decode(bytes.as_slice()).map(Some).map_err(storage),
        None => Ok(None),
    }
}
