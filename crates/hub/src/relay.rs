//! `Hub.Relay` and `Hub.RelayStatus`: documents and statuses between nodes.
//! The hub streams attachments through (bounded memory), checks every chunk,
//! answers only once the recipient's node has the document on disk, and
//! audits and counts each delivery and status, through the same pipeline as
//! data calls.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Status, Streaming};
use truc_audit::Receipt;
use truc_doc::chunks::{Opening, only_chunks_after, opening};
use truc_pipeline::{Deadline, Kind, Step, Transaction, TxError, fields};
use truc_pki::Identity;
use truc_proto::v1::{
    Envelope, RelayHeader, RelayRequest, RelayResponse, StatusAck, StatusUpdate, relay_request,
};
use truc_registry::NodeId;

use crate::route::{Inner, only_nodes};

/// A document from a sender hosted by the calling node to one recipient's
/// node, with its attachments streamed through.
pub(crate) struct Relay<'a>(pub(crate) &'a Inner);

/// What an admitted relay carries on.
pub(crate) struct AdmittedRelay {
    target: NodeId,
    header: RelayHeader,
    envelope: Envelope,
    incoming: Streaming<RelayRequest>,
}

impl Step for Relay<'_> {
    type Request = Streaming<RelayRequest>;
    type Admitted = AdmittedRelay;
    type Response = RelayResponse;
    const KIND: Kind = Kind::Document;

    fn cap(&self) -> Duration {
        Duration::from_millis(self.0.limits.relay_timeout_ms)
    }

    fn authenticate(&self, caller: &Identity) -> Result<(), TxError> {
        only_nodes(caller, "relay documents")
    }

    /// The rules: the calling node hosts the sender, the envelope is valid,
    /// names the sender and this recipient, and the registry lets them
    /// exchange.
    async fn admit(
        &self,
        caller: &Identity,
        mut incoming: Streaming<RelayRequest>,
        tx: &mut Transaction,
    ) -> Result<AdmittedRelay, TxError> {
        let registry = self.0.registry.current();
        let node = Inner::calling_node(caller)?;
        let header = opening(&mut incoming, "header", |m| match m.part {
            Some(relay_request::Part::Header(h)) => Some(h),
            _ => None,
        })
        .await
        .map_err(|e| match e {
            Opening::Stream(s) => TxError::from(s),
            Opening::Missing(reason) => TxError::invalid("header", reason),
        })?;
        let sender = self.0.hosted_origin(
            &node,
            tx,
            ("header.transaction_id", &header.transaction_id),
            ("header.sender", &header.sender),
        )?;
        let recipient = fields::agency("header.recipient", &header.recipient)?;
        if registry.agency(&recipient).is_none() {
            return Err(TxError::NotFound(format!(
                "no agency {recipient} in the registry"
            )));
        }
        tx.provider_agency = recipient.to_string();
        let envelope = header
            .envelope
            .clone()
            .ok_or_else(|| TxError::invalid("header.envelope", "required"))?;
        truc_doc::check(&envelope, &self.0.documents)?;
        tx.service = format!("document/{}", business_kind_name(envelope.business_kind));
        tx.request_sha256 = truc_doc::envelope_digest(&envelope);
        if envelope.from.as_ref().map(|o| o.organ_id.as_str()) != Some(sender.as_str()) {
            return Err(TxError::invalid(
                "header.envelope.from",
                "the envelope is not from the sender",
            ));
        }
        if !envelope.to.iter().any(|o| o.organ_id == recipient.as_str()) {
            return Err(TxError::invalid(
                "header.envelope.to",
                "the recipient is not among the envelope's recipients",
            ));
        }
        if !registry.may_send_document(&sender, &recipient) {
            return Err(TxError::Denied(format!(
                "{sender} may not send documents to {recipient}"
            )));
        }
        let target = registry
            .node_hosting(&recipient)
            .map(|n| n.id.clone())
            .ok_or_else(|| TxError::Unreachable {
                peer: format!("recipient {recipient} (no node hosts it)"),
            })?;
        Ok(AdmittedRelay {
            target,
            header,
            envelope,
            incoming,
        })
    }

    /// Streams the document to the recipient's node, checking every chunk
    /// on the way; a bad chunk ends the stream early, and the recipient's
    /// node, finding its attachments incomplete, stores nothing. The record
    /// counts the bytes that really passed, not what the envelope declared.
    async fn forward(
        &self,
        relay: AdmittedRelay,
        deadline: &Deadline,
        tx: &mut Transaction,
    ) -> Result<RelayResponse, TxError> {
        let AdmittedRelay {
            target,
            header,
            envelope,
            mut incoming,
        } = relay;
        let mut client = self.0.node_client(&target)?;
        let (to_node, rx) = mpsc::channel::<RelayRequest>(4);
        let request = deadline.request(ReceiverStream::new(rx));
        // Aborted when dropped: a relay cut by its deadline leaves no task.
        let mut call = AbortOnDrop(tokio::spawn(async move { client.deliver(request).await }));
        let mut check = truc_doc::chunks::AttachmentCheck::new(&envelope)?;
        let mut passed: u64 = 0;
        let pump = async {
            let first = RelayRequest {
                part: Some(relay_request::Part::Header(header)),
            };
            if to_node.send(first).await.is_err() {
                return Ok(());
            }
            while let Some(message) = incoming.next().await {
                let message = message?;
                match &message.part {
                    Some(relay_request::Part::Chunk(c)) => {
                        check.check(c)?;
                        passed = passed.saturating_add(c.data.len() as u64);
                    }
                    _ => return Err(only_chunks_after("header")),
                }
                if to_node.send(message).await.is_err() {
                    // The recipient's node ended the call; its answer says why.
                    return Ok(());
                }
            }
            Ok(check.finish()?)
        };
        let pumped: Result<(), Status> = pump.await;
        tx.request_bytes = passed;
        drop(to_node);
        pumped?;
        let answer = (&mut call.0)
            .await
            .map_err(|e| TxError::Internal(format!("relay task failed: {e}")))?;
        let response = answer
            .map_err(|s| TxError::from_peer(s, format!("recipient node {target}")))?
            .into_inner();
        tx.response_bytes = u64::from(response.duplicate);
        Ok(response)
    }

    fn respond(mut response: RelayResponse, receipt: Option<Receipt>) -> RelayResponse {
        response.receipt = receipt;
        response
    }
}

/// A task handle that aborts its task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A recipient's status, from the recipient's node to the sender's.
pub(crate) struct RelayStatus<'a>(pub(crate) &'a Inner);

impl Step for RelayStatus<'_> {
    type Request = StatusUpdate;
    type Admitted = (NodeId, StatusUpdate);
    type Response = StatusAck;
    const KIND: Kind = Kind::Status;

    fn cap(&self) -> Duration {
        Duration::from_millis(self.0.limits.call_timeout_ms)
    }

    fn authenticate(&self, caller: &Identity) -> Result<(), TxError> {
        only_nodes(caller, "relay statuses")
    }

    async fn admit(
        &self,
        caller: &Identity,
        update: StatusUpdate,
        tx: &mut Transaction,
    ) -> Result<Self::Admitted, TxError> {
        let registry = self.0.registry.current();
        let node = Inner::calling_node(caller)?;
        self.0.hosted_origin(
            &node,
            tx,
            ("transaction_id", &update.transaction_id),
            ("recipient", &update.recipient),
        )?;
        let sender = fields::agency("sender", &update.sender)?;
        let target = registry
            .node_hosting(&sender)
            .map(|n| n.id.clone())
            .ok_or_else(|| TxError::NotFound(format!("no node hosts {sender}")))?;
        tx.provider_agency = sender.to_string();
        // Code, document, event and its author, every text bounded.
        let code = truc_doc::check_status_update(&update)?;
        tx.service = format!("status/{}", code.code());
        Ok((target, update))
    }

    async fn forward(
        &self,
        (target, update): Self::Admitted,
        deadline: &Deadline,
        _tx: &mut Transaction,
    ) -> Result<StatusAck, TxError> {
        self.0
            .node_client(&target)?
            .deliver_status(deadline.request(update))
            .await
            .map_err(|s| TxError::from_peer(s, format!("sender node {target}")))?;
        Ok(StatusAck { receipt: None })
    }

    fn respond(_: StatusAck, receipt: Option<Receipt>) -> StatusAck {
        StatusAck { receipt }
    }
}

fn business_kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "recall",
        2 => "update",
        3 => "replace",
        _ => "new",
    }
}
