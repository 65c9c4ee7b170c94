//! Documents in the integration tests: envelopes, sending them, waiting for
//! the sender's tracking, reading inboxes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::{Status, transport::Channel};
use truc_proto::v1::{
    Attachment, DocumentCode, Envelope, GetTrackingRequest, InboxEntry, ListInboxRequest, Organ,
    PromulgationInfo, RelayHeader, RelayRequest, SendDocumentRequest, SendDocumentResponse,
    Tracking, UpdateStatusRequest, agency_client::AgencyClient, relay_request,
    send_document_request,
};

/// The promulgation date of every test document.
pub const DATE: &str = "2026/11/28";

/// The size of the chunks [`messages`] cuts attachments into.
pub const CHUNK: usize = 256 * 1024;

/// The SHA-256 of `data`.
pub fn sha(data: &[u8]) -> Bytes {
    Bytes::copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// A valid envelope from `from` to `to`, numbered `number/UBND-VP` and
/// dated [`DATE`], with the attachments `files` (name and content).
pub fn envelope(from: &str, to: &[&str], number: &str, files: &[(&str, &[u8])]) -> Envelope {
    Envelope {
        from: Some(Organ {
            organ_id: from.into(),
            organ_name: "UBND tỉnh Lạng Sơn".into(),
            ..Organ::default()
        }),
        to: to
            .iter()
            .map(|t| Organ {
                organ_id: (*t).into(),
                ..Organ::default()
            })
            .collect(),
        code: Some(DocumentCode {
            code_number: number.into(),
            code_notation: "UBND-VP".into(),
        }),
        promulgation_info: Some(PromulgationInfo {
            place: "Lạng Sơn".into(),
            promulgation_date: DATE.into(),
        }),
        subject: "V/v báo cáo tình hình kinh tế - xã hội tháng 11".into(),
        document_id: format!("{from},{DATE},{number}/UBND-VP"),
        attachments: files
            .iter()
            .map(|(name, data)| Attachment {
                name: (*name).into(),
                content_type: "application/pdf".into(),
                size: data.len() as u64,
                sha256: sha(data),
                description: String::new(),
            })
            .collect(),
        ..Envelope::default()
    }
}

/// The `SendDocument` stream of `envelope` and the content of its `files`.
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

/// Sends `envelope` with the content of its `files` on `client`.
pub async fn send(
    client: &mut AgencyClient<Channel>,
    envelope: &Envelope,
    files: &[(&str, &[u8])],
) -> Result<SendDocumentResponse, Status> {
    client
        .send_document(tokio_stream::iter(messages(envelope, files)))
        .await
        .map(|r| r.into_inner())
}

/// Polls `sender`'s tracking of `document_id` on `client` until `done` holds
/// (20 s at most, else panics).
pub async fn tracking_until(
    client: &mut AgencyClient<Channel>,
    sender: &str,
    document_id: &str,
    done: impl Fn(&Tracking) -> bool,
) -> Tracking {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = client
            .get_tracking(GetTrackingRequest {
                sender: sender.into(),
                document_id: document_id.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("tracking of {document_id}: {e:?}"))
            .into_inner();
        if done(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "tracking never got there: {t:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `sender`'s tracking of `document_id` on `client` until `recipient`
/// is at status `code` (20 s at most, else panics).
pub async fn tracking_at(
    client: &mut AgencyClient<Channel>,
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

/// The status `recipient` is at in `t`, empty if none.
pub fn status_of<'a>(t: &'a Tracking, recipient: &str) -> &'a str {
    t.recipients
        .iter()
        .find(|r| r.recipient == recipient)
        .map_or("", |r| r.status.as_str())
}

/// `recipient`'s inbox on `client`.
pub async fn inbox(client: &mut AgencyClient<Channel>, recipient: &str) -> Vec<InboxEntry> {
    client
        .list_inbox(ListInboxRequest {
            recipient: recipient.into(),
            ..ListInboxRequest::default()
        })
        .await
        .unwrap_or_else(|e| panic!("inbox of {recipient}: {e:?}"))
        .into_inner()
        .entries
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
