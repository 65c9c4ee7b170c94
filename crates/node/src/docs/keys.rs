//! Where documents live in the node's store, and reading them back.

use prost::Message;
use tonic::Status;
use truc_store::Store;

/// Sent documents (the sender's outbox and tracking), by sender, document id
/// and business kind.
pub(crate) const OUTBOX: &[u8] = b"doc/o/";
/// Deliveries still to make, by sender, document id, kind and recipient;
/// the value is the time of the next attempt (when the document was
/// accepted, until it fails once), the order they are made in.
pub(crate) const QUEUE: &[u8] = b"doc/q/";
/// Received documents, by recipient, sender and document id.
pub(crate) const INBOX: &[u8] = b"doc/i/";
/// Statuses still to send back, by sequence number.
pub(crate) const STATUS_QUEUE: &[u8] = b"doc/s/";
/// One recipient's delivery of a send (without its status history), by
/// sender, document id, kind and recipient: a send to many recipients is
/// many small values, never one large one.
pub(crate) const RECIPIENT: &[u8] = b"doc/r/";
/// One event of a recipient's status history at the sender, by sender,
/// document id, recipient and position.
pub(crate) const HISTORY: &[u8] = b"doc/h/";

/// Small attachments, by their SHA-256 (32 bytes): stored with the
/// document that first carries them, in the same commit.
pub(crate) const BLOB: &[u8] = b"doc/b/";

/// The journal every write of the keys above goes through
/// ([`Store::apply_journaled`]), so that a replay after a crash cannot undo
/// one of them (the migration at open runs before any of them).
pub(crate) const JOURNAL: &[u8] = b"documents";

/// The longest sender, recipient or document id a key is made of.
pub(crate) const MAX_PART: usize = 512;

/// Refuses what cannot be a part of a key: empty, too long, or holding the
/// separator (it would make keys ambiguous and the queues unreadable).
pub(crate) fn check_part(what: &str, part: &str) -> Result<(), Status> {
    if part.is_empty() {
        return Err(Status::invalid_argument(format!("{what} is required")));
    }
    if part.len() > MAX_PART {
        return Err(Status::invalid_argument(format!(
            "{what}: longer than {MAX_PART} bytes"
        )));
    }
    if part.bytes().any(|b| b == SEP || b.is_ascii_control()) {
        return Err(Status::invalid_argument(format!(
            "{what}: control characters are not allowed"
        )));
    }
    Ok(())
}

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

/// The key of the small attachment with this SHA-256.
pub(crate) fn blob(sha256: &[u8]) -> Vec<u8> {
    [BLOB, sha256].concat()
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

/// The key of one recipient's delivery of a send.
pub(crate) fn recipient(sender: &str, document_id: &str, kind: i32, recipient: &str) -> Vec<u8> {
    key(
        RECIPIENT,
        &[
            sender.as_bytes(),
            document_id.as_bytes(),
            &[kind_byte(kind)],
            recipient.as_bytes(),
        ],
    )
}

/// The prefix of one recipient's status history at the sender.
pub(crate) fn history_of(sender: &str, document_id: &str, recipient: &str) -> Vec<u8> {
    let mut k = key(
        HISTORY,
        &[
            sender.as_bytes(),
            document_id.as_bytes(),
            recipient.as_bytes(),
        ],
    );
    k.push(SEP);
    k
}

/// The key of event `seq` of a recipient's status history.
pub(crate) fn history(sender: &str, document_id: &str, recipient: &str, seq: u32) -> Vec<u8> {
    let mut k = history_of(sender, document_id, recipient);
    k.extend_from_slice(&seq.to_be_bytes());
    k
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

/// The prefix of one sender's outbox.
pub(crate) fn outbox_of(sender: &str) -> Vec<u8> {
    let mut k = key(OUTBOX, &[sender.as_bytes()]);
    k.push(SEP);
    k
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

/// Reads and decodes every message under `prefix`, in key order.
pub(crate) fn load_all<M: Message + Default>(
    store: &Store,
    prefix: &[u8],
) -> Result<Vec<M>, Status> {
    store
        .scan_prefix(prefix)
        .map(|item| {
            let (_, v) = item.map_err(storage)?;
            M::decode(v.as_slice()).map_err(storage)
        })
        .collect()
}

/// Reads and decodes a message.
pub(crate) fn load<M: Message + Default>(store: &Store, k: &[u8]) -> Result<Option<M>, Status> {
    match store.get(k).map_err(storage)? {
        Some(bytes) => M::decode(bytes.as_slice()).map(Some).map_err(storage),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_round_trip_and_bad_parts_are_refused() {
        let k = queue("000.00.00.H37", "a,2026/11/28,1/X", 2, "000.00.00.G22");
        assert_eq!(
            parse_queue(&k),
            Some((
                "000.00.00.H37".into(),
                "a,2026/11/28,1/X".into(),
                2,
                "000.00.00.G22".into()
            ))
        );
        assert!(parse_queue(b"doc/q/no separators").is_none());
        assert!(check_part("document_id", "a\0b").is_err());
        assert!(check_part("document_id", "a\nb").is_err());
        assert!(check_part("document_id", "").is_err());
        assert!(check_part("document_id", &"x".repeat(MAX_PART + 1)).is_err());
        assert!(check_part("document_id", "000.00.00.H37,2026/11/28,1/UBND-VP").is_ok());
    }

    #[test]
    fn history_keys_sort_by_position() {
        let a = history("s", "d", "r", 1);
        let b = history("s", "d", "r", 256);
        assert!(a < b);
        assert!(a.starts_with(&history_of("s", "d", "r")));
        assert!(!history("s", "d", "rr", 0).starts_with(&history_of("s", "d", "r")));
    }
}
