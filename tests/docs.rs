//! Documents in the integration tests: envelopes, sending them and waiting
//! for the sender's tracking through the client library (`truc_client`),
//! reading inboxes; and raw messages for the tests whose point is a
//! malformed stream.

use std::time::{Duration, Instant};

use bytes::Bytes;
use truc_client::{Client, Error, Upload};
use truc_proto::v1::{
    Envelope, InboxEntry, ListInboxRequest, RelayHeader, RelayRequest, SendDocumentRequest,
    SendDocumentResponse, Tracking, UpdateStatusRequest, relay_request, send_document_request,
};

/// The promulgation date of every test document.
pub const DATE: &str = truc_doc::sample::DATE;

/// The size of the chunks [`messages`] cuts attachments into (the client
/// library sends chunks of 1 MiB).
pub const CHUNK: usize = 256 * 1024;

/// The SHA-256 of `data`.
pub fn sha(data: &[u8]) -> Bytes {
    Bytes::copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// A valid envelope from `from` to `to`, numbered `number/UBND-VP` and
/// dated [`DATE`], with the attachments `files` (name and content).
pub fn envelope(from: &str, to: &[&str], number: &str, files: &[(&str, &[u8])]) -> Envelope {
    let attachments = files
        .iter()
        .map(|(name, data)| truc_doc::sample::attachment(name, data))
        .collect();
    truc_doc::sample::envelope(from, to, number, attachments)
}

/// The uploads of `envelope`'s attachments, described exactly as the
/// envelope describes them, with the bytes of `files` by position (an
/// attachment without an entry in `files` is sent empty).
pub fn uploads(envelope: &Envelope, files: &[(&str, &[u8])]) -> Vec<Upload> {
    envelope
        .attachments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let data = files
                .get(i)
                .map_or_else(Bytes::new, |(_, d)| Bytes::copy_from_slice(d));
            Upload::reader(a.clone(), std::io::Cursor::new(data))
        })
        .collect()
}

/// Sends `envelope` with the content of its `files` through the client
/// library, as an agency system does.
pub async fn send(
    client: &Client,
    envelope: &Envelope,
    files: &[(&str, &[u8])],
) -> Result<SendDocumentResponse, Error> {
    client
        .send_document(envelope.clone(), uploads(envelope, files))
        .await
}

/// How long a test waits for a tracking to get somewhere before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Waits (on the node's `WatchTracking` stream, [`WAIT`] at most, else
/// panics with the latest tracking) until `sender`'s tracking of
/// `document_id` satisfies `done`.
pub async fn tracking_until(
    client: &Client,
    sender: &str,
    document_id: &str,
    done: impl FnMut(&Tracking) -> bool,
) -> Tracking {
    match client
        .wait_for_tracking(sender, document_id, done, Instant::now() + WAIT)
        .await
    {
        Ok(t) => t,
        Err(Error::TrackingTimeout(last)) => panic!("tracking never got there: {last:#?}"),
        Err(e) => panic!("tracking of {document_id}: {e}"),
    }
}

/// Waits as [`tracking_until`] until `recipient` is at status `code`.
pub async fn tracking_at(
    client: &Client,
    sender: &str,
    document_id: &str,
    recipient: &str,
    code: &str,
) -> Tracking {
    tracking_until(client, sender, document_id, |t| {
        status_of(t, recipient) == code
    })
    .await
}

/// `sender`'s tracking of `document_id` as it stands now.
pub async fn tracking(client: &Client, sender: &str, document_id: &str) -> Tracking {
    client
        .tracking(sender, document_id)
        .await
        .unwrap_or_else(|e| panic!("tracking of {document_id}: {e}"))
}

/// The status `recipient` is at in `t`, empty if none.
pub fn status_of<'a>(t: &'a Tracking, recipient: &str) -> &'a str {
    t.recipients
        .iter()
        .find(|r| r.recipient == recipient)
        .map_or("", |r| r.status.as_str())
}

/// `recipient`'s inbox on `client`.
pub async fn inbox(client: &Client, recipient: &str) -> Vec<InboxEntry> {
    client
        .list_inbox_all(ListInboxRequest {
            recipient: recipient.into(),
            ..ListInboxRequest::default()
        })
        .await
        .unwrap_or_else(|e| panic!("inbox of {recipient}: {e}"))
}

/// The raw `SendDocument` stream of `envelope` and the content of its
/// `files`, in chunks of [`CHUNK`]: only for tests that break the stream
/// itself (everything else sends with [`send`]).
pub fn messages(envelope: &Envelope, files: &[(&str, &[u8])]) -> Vec<SendDocumentRequest> {
    let mut out = vec![SendDocumentRequest {
        part: Some(send_document_request::Part::Envelope(envelope.clone())),
    }];
    for (i, (_, data)) in files.iter().enumerate() {
        for (j, piece) in data.chunks(CHUNK).enumerate() {
            out.push(SendDocumentRequest {
                part: Some(send_document_request::Part::Chunk(truc_doc::chunks::chunk(
                    i as u32,
                    (j * CHUNK) as u64,
                    Bytes::copy_from_slice(piece),
                ))),
            });
        }
    }
    out
}

/// `recipient` sets the status of `sender`'s document `document_id` to `code`.
pub fn status(recipient: &str, sender: &str, document_id: &str, code: &str) -> UpdateStatusRequest {
    UpdateStatusRequest {
        recipient: recipient.into(),
        sender: sender.into(),
        document_id: document_id.into(),
        status: code.into(),
        ..UpdateStatusRequest::default()
    }
}

/// The header of a relay (or delivery) of `envelope` from `sender` to
/// `recipient` in transaction `transaction_id`.
pub fn relay_header(
    transaction_id: &str,
    sender: &str,
    recipient: &str,
    envelope: Envelope,
) -> RelayRequest {
    RelayRequest {
        part: Some(relay_request::Part::Header(RelayHeader {
            transaction_id: transaction_id.into(),
            sender: sender.into(),
            recipient: recipient.into(),
            envelope: Some(envelope),
        })),
    }
}
