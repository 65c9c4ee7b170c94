//! The client library of agency systems: everything an agency's own system
//! does through its truc node, over TLS with its client certificate.
//!
//! - [`Client::call`]: a data call to another agency's service;
//! - [`Client::send_document`]: a document with its attachments, streamed
//!   from files, readers or memory in chunks ([`Upload`]);
//! - [`Client::list_inbox`], [`Client::watch_inbox`], [`Client::fetch`]:
//!   received documents, as they arrive, and their attachments written to a
//!   directory without ever overwriting a file or following a link
//!   ([`Incoming`]);
//! - [`Client::update_status`]: the processing status of a received
//!   document, which travels back to its sender;
//! - [`Client::tracking`], [`Client::watch_tracking`] and
//!   [`Client::wait_for_status`] (or [`Client::wait_for_tracking`] for
//!   conditions on several recipients): where a sent document stands with
//!   each recipient, and waiting for a status without polling (the node's
//!   `WatchTracking` stream).
//!
//! Every error is an [`Error`]; one from the node keeps its gRPC status
//! ([`Error::status`]) and the transaction the node recorded
//! ([`Error::transaction_id`]).
//!
//! # Example
//!
//! An agency sends a letter with an attachment to another agency, then waits
//! (at most a minute) until the recipient has accepted it:
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//!
//! use truc_client::{Client, Upload, has_status};
//! use truc_pki::TlsFiles;
//! use truc_proto::v1::{DocumentCode, Envelope, Organ, PromulgationInfo};
//!
//! # async fn run() -> Result<(), truc_client::Error> {
//! let mut tls = TlsFiles::new(
//!     "pki/ca.pem".into(),
//!     "pki/clients/dms.pem".into(),
//!     "pki/clients/dms-key.pem".into(),
//! );
//! tls.crls.push("pki/ca.crl".into());
//! let client = Client::connect("node.example:7443", "node-langson", &tls)?;
//!
//! let sender = "000.00.00.H37";
//! let recipient = "000.00.00.G22";
//! let organ = |id: &str| Organ { organ_id: id.into(), ..Organ::default() };
//! let envelope = Envelope {
//!     from: Some(organ(sender)),
//!     to: vec![organ(recipient)],
//!     code: Some(DocumentCode {
//!         code_number: "12".into(),
//!         code_notation: "UBND-VP".into(),
//!     }),
//!     promulgation_info: Some(PromulgationInfo {
//!         place: "Lạng Sơn".into(),
//!         promulgation_date: "2026/11/30".into(),
//!     }),
//!     subject: "Báo cáo tháng 11".into(),
//!     document_id: format!("{sender},2026/11/30,12/UBND-VP"),
//!     ..Envelope::default()
//! };
//! let report = Upload::file("bao-cao.pdf").await?;
//! let sent = client.send_document(envelope, vec![report]).await?;
//!
//! let accepted = client
//!     .wait_for_status(
//!         sender,
//!         &sent.document_id,
//!         recipient,
//!         has_status("03"),
//!         Instant::now() + Duration::from_secs(60),
//!     )
//!     .await?;
//! println!("{recipient}: {} after {} attempts", accepted.status, accepted.attempts);
//! # Ok(())
//! # }
//! ```
//!
//! The `examples/` directory has runnable programs: `call` (a data call) and
//! `send_and_wait` (a document, then its statuses as they come).

mod error;
mod fetch;
mod upload;

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Streaming, transport::Channel};
use truc_pki::TlsFiles;
use truc_proto::v1::{
    CallRequest, CallResponse, Envelope, FetchDocumentRequest, GetTrackingRequest, InboxEntry,
    InboxEvent, ListInboxRequest, ListInboxResponse, RecipientTracking, SendDocumentResponse,
    Tracking, UpdateStatusRequest, WatchInboxRequest, WatchTrackingRequest,
    agency_client::AgencyClient,
};

pub use error::{Error, TRANSACTION_ID_HEADER};
pub use fetch::{Incoming, SavedFile, create_new, safe_file_name};
pub use upload::{Upload, content_type_for};

/// The largest gRPC message sent or accepted by default: a chunk (at most
/// 1 MiB) and its framing fit easily.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// How many messages may wait between the reading of attachments and the
/// network.
const SEND_QUEUE: usize = 4;

/// How a data call is made: its deadline, and why it is made (recorded
/// in the audit records at every hop and passed to the provider's
/// backend; a grant may require a purpose). Empty values are not sent.
///
/// ```
/// let options = truc_client::CallOptions::default()
///     .timeout(std::time::Duration::from_secs(10))
///     .purpose("giải quyết thủ tục hành chính")
///     .end_user("001089012345")
///     .case("HS-2026/123");
/// assert_eq!(options.case, "HS-2026/123");
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CallOptions {
    /// The deadline of the whole call.
    pub timeout: Option<Duration>,
    /// Why the call is made.
    pub purpose: String,
    /// The end user on whose behalf.
    pub end_user: String,
    /// The case or file number.
    pub case: String,
}

impl CallOptions {
    /// With a deadline.
    pub fn timeout(mut self, timeout: Duration) -> CallOptions {
        self.timeout = Some(timeout);
        self
    }

    /// With a purpose.
    pub fn purpose(mut self, purpose: impl Into<String>) -> CallOptions {
        self.purpose = purpose.into();
        self
    }

    /// With an end user.
    pub fn end_user(mut self, end_user: impl Into<String>) -> CallOptions {
        self.end_user = end_user.into();
        self
    }

    /// With a case or file number.
    pub fn case(mut self, case: impl Into<String>) -> CallOptions {
        self.case = case.into();
        self
    }
}

/// A connection to a node, as one agency system. Cheap to clone; clones
/// share the connection.
#[derive(Clone, Debug)]
pub struct Client {
    agency: AgencyClient<Channel>,
}

impl Client {
    /// A client of the node at `address` (`host:port`) whose certificate
    /// must carry the DNS name `server_name` and be a node's, presenting the
    /// certificate in `tls`. Connects on first use (and again after a
    /// connection is lost).
    pub fn connect(address: &str, server_name: &str, tls: &TlsFiles) -> Result<Client, Error> {
        truc_pki::install_crypto_provider();
        let config = truc_pki::tool_client_config(tls)?;
        let channel = truc_pki::channel(address, server_name, config)?;
        Ok(Client::from_channel(channel))
    }

    /// A client on a channel made elsewhere.
    pub fn from_channel(channel: Channel) -> Client {
        Client {
            agency: AgencyClient::new(channel)
                .max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
                .max_encoding_message_size(DEFAULT_MAX_MESSAGE_BYTES),
        }
    }

    /// A client wrapping a generated one (its message size limits are kept).
    pub fn from_grpc(agency: AgencyClient<Channel>) -> Client {
        Client { agency }
    }

    /// With another limit on the size of one gRPC message, both ways (data
    /// calls carry their whole payload in one message).
    pub fn max_message_bytes(self, limit: usize) -> Client {
        Client {
            agency: self
                .agency
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        }
    }

    /// The generated gRPC client, for what this library does not wrap.
    pub fn grpc(&self) -> AgencyClient<Channel> {
        self.agency.clone()
    }

    /// A data call to another agency's service (`request.service` is
    /// `{provider}/{code}/{version}`), within `timeout` when given.
    pub async fn call(
        &self,
        request: CallRequest,
        timeout: Option<Duration>,
    ) -> Result<CallResponse, Error> {
        let options = CallOptions {
            timeout,
            ..CallOptions::default()
        };
        self.call_with(request, &options).await
    }

    /// A data call with `options`: its deadline and why it is made (each
    /// value given there replaces the request's own).
    pub async fn call_with(
        &self,
        mut request: CallRequest,
        options: &CallOptions,
    ) -> Result<CallResponse, Error> {
        for (field, value) in [
            (&mut request.purpose, &options.purpose),
            (&mut request.end_user, &options.end_user),
            (&mut request.case, &options.case),
        ] {
            if !value.is_empty() {
                field.clone_from(value);
            }
        }
        let mut request = tonic::Request::new(request);
        if let Some(t) = options.timeout {
            request.set_timeout(t);
        }
        Ok(self.agency.clone().call(request).await?.into_inner())
    }

    /// Sends `envelope` with `uploads` as its attachments (the envelope's
    /// `attachments` are replaced by their descriptions), streaming their
    /// bytes in chunks. Answers once the document is on the node's disk;
    /// delivery follows. A local reading problem is reported rather than
    /// the node's complaint about a short attachment.
    pub async fn send_document(
        &self,
        mut envelope: Envelope,
        uploads: Vec<Upload>,
    ) -> Result<SendDocumentResponse, Error> {
        envelope.attachments = uploads.iter().map(|u| u.attachment().clone()).collect();
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        let reader = tokio::spawn(upload::stream(envelope, uploads, tx));
        let response = match self
            .agency
            .clone()
            .send_document(ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(status) => {
                // A local read error ends the stream early and the node then
                // complains of a short file: the local error says more.
                reader.abort();
                if let Ok(Err(local)) = reader.await {
                    return Err(local);
                }
                return Err(status.into());
            }
        };
        match reader.await {
            Ok(Ok(())) => Ok(response),
            Ok(Err(local)) => Err(local),
            Err(e) => Err(Error::Protocol(format!(
                "the attachment reader stopped: {e}"
            ))),
        }
    }

    /// One page of an inbox (see `ListInboxRequest` for the filters).
    pub async fn list_inbox(&self, request: ListInboxRequest) -> Result<ListInboxResponse, Error> {
        Ok(self.agency.clone().list_inbox(request).await?.into_inner())
    }

    /// Every entry of an inbox matching `filter` (its `page_token` is
    /// ignored), page after page.
    pub async fn list_inbox_all(
        &self,
        mut filter: ListInboxRequest,
    ) -> Result<Vec<InboxEntry>, Error> {
        let mut entries = Vec::new();
        filter.page_token.clear();
        if filter.page_size == 0 {
            filter.page_size = 500;
        }
        loop {
            let page = self.list_inbox(filter.clone()).await?;
            entries.extend(page.entries);
            if page.next_page_token.is_empty() {
                return Ok(entries);
            }
            filter.page_token = page.next_page_token;
        }
    }

    /// Arrivals and status changes in `recipient`'s inbox, as they happen.
    /// Watch before listing, so that nothing happening meanwhile is missed.
    pub async fn watch_inbox(&self, recipient: &str) -> Result<Watch<InboxEvent>, Error> {
        let request = WatchInboxRequest {
            recipient: recipient.to_owned(),
        };
        let stream = self.agency.clone().watch_inbox(request).await?.into_inner();
        Ok(Watch { stream })
    }

    /// Starts fetching a received document: its entry now, its attachments
    /// through [`Incoming::save_to`] (or [`Incoming::plan`] and
    /// [`Incoming::save`]).
    pub async fn fetch(
        &self,
        recipient: &str,
        sender: &str,
        document_id: &str,
    ) -> Result<Incoming, Error> {
        let request = FetchDocumentRequest {
            recipient: recipient.to_owned(),
            sender: sender.to_owned(),
            document_id: document_id.to_owned(),
        };
        let stream = self
            .agency
            .clone()
            .fetch_document(request)
            .await?
            .into_inner();
        Incoming::start(stream).await
    }

    /// Sets the processing status of a received document (`request.recipient`
    /// is the agency acting); the entry as it now stands.
    pub async fn update_status(&self, request: UpdateStatusRequest) -> Result<InboxEntry, Error> {
        let response = self
            .agency
            .clone()
            .update_status(request)
            .await?
            .into_inner();
        response
            .entry
            .ok_or_else(|| Error::Protocol("the node answered without the entry".into()))
    }

    /// Where a sent document stands with each recipient.
    pub async fn tracking(&self, sender: &str, document_id: &str) -> Result<Tracking, Error> {
        let request = GetTrackingRequest {
            sender: sender.to_owned(),
            document_id: document_id.to_owned(),
        };
        Ok(self
            .agency
            .clone()
            .get_tracking(request)
            .await?
            .into_inner())
    }

    /// The tracking of a sent document now, then again each time a delivery
    /// or a status of it changes. The watch holds one of the node's watcher
    /// slots until it is dropped (`document_service.max_watchers_per_agency`,
    /// 8 per agency by default; RESOURCE_EXHAUSTED beyond), as do
    /// [`Client::wait_for_status`] and [`Client::wait_for_tracking`] while
    /// they wait.
    pub async fn watch_tracking(
        &self,
        sender: &str,
        document_id: &str,
    ) -> Result<Watch<Tracking>, Error> {
        let request = WatchTrackingRequest {
            sender: sender.to_owned(),
            document_id: document_id.to_owned(),
        };
        let stream = self
            .agency
            .clone()
            .watch_tracking(request)
            .await?
            .into_inner();
        Ok(Watch { stream })
    }

    /// Waits until `recipient`'s tracking of the document satisfies
    /// `predicate` (e.g. [`has_status`], [`is_delivered`]) and returns it;
    /// [`Error::Timeout`] once `deadline` passes (with the latest tracking
    /// seen). Follows `WatchTracking`: no polling.
    pub async fn wait_for_status(
        &self,
        sender: &str,
        document_id: &str,
        recipient: &str,
        mut predicate: impl FnMut(&RecipientTracking) -> bool,
        deadline: Instant,
    ) -> Result<RecipientTracking, Error> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let mut last: Option<Box<RecipientTracking>> = None;
        let waited = tokio::time::timeout_at(deadline, async {
            let mut watch = self.watch_tracking(sender, document_id).await?;
            while let Some(tracking) = watch.next().await? {
                let mine = tracking
                    .recipients
                    .into_iter()
                    .find(|r| r.recipient == recipient)
                    .ok_or_else(|| Error::NotARecipient(recipient.to_owned()))?;
                if predicate(&mine) {
                    return Ok(mine);
                }
                last = Some(Box::new(mine));
            }
            Err(Error::Ended)
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(last)),
        }
    }

    /// Waits until the document's whole tracking (every recipient)
    /// satisfies `predicate` and returns it; [`Error::TrackingTimeout`] once
    /// `deadline` passes (with the latest tracking seen). For conditions on
    /// several recipients, or on something other than one recipient's
    /// status; [`Client::wait_for_status`] for one. Follows `WatchTracking`:
    /// no polling.
    pub async fn wait_for_tracking(
        &self,
        sender: &str,
        document_id: &str,
        mut predicate: impl FnMut(&Tracking) -> bool,
        deadline: Instant,
    ) -> Result<Tracking, Error> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let mut last: Option<Box<Tracking>> = None;
        let waited = tokio::time::timeout_at(deadline, async {
            let mut watch = self.watch_tracking(sender, document_id).await?;
            while let Some(tracking) = watch.next().await? {
                if predicate(&tracking) {
                    return Ok(tracking);
                }
                last = Some(Box::new(tracking));
            }
            Err(Error::Ended)
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => Err(Error::TrackingTimeout(last)),
        }
    }
}

/// A recipient whose latest status is `code` (e.g. "03" accepted).
pub fn has_status(code: &str) -> impl FnMut(&RecipientTracking) -> bool + use<> {
    let code = code.to_owned();
    move |r| r.status == code
}

/// A recipient whose node has the document on disk.
pub fn is_delivered(r: &RecipientTracking) -> bool {
    r.delivery == "delivered"
}

/// A server stream of a watch: [`Watch::next`] until it ends.
#[derive(Debug)]
pub struct Watch<T> {
    stream: Streaming<T>,
}

impl<T> Watch<T> {
    /// The next message; `None` when the node ended the watch.
    pub async fn next(&mut self) -> Result<Option<T>, Error> {
        Ok(self.stream.message().await?)
    }

    /// The gRPC stream itself.
    pub fn into_inner(self) -> Streaming<T> {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_look_at_the_recipient() {
        let r = RecipientTracking {
            status: "03".into(),
            delivery: "delivered".into(),
            ..RecipientTracking::default()
        };
        assert!(has_status("03")(&r));
        assert!(!has_status("06")(&r));
        assert!(is_delivered(&r));
        assert!(!is_delivered(&RecipientTracking::default()));
    }
}
