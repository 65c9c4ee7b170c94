//! `Hub.Relay` and `Hub.RelayStatus`: documents and statuses between nodes.
//! The hub streams attachments through (bounded memory), checks every chunk,
//! answers only once the recipient's node has the document on disk, and
//! audits and counts each delivery and status.

use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Code, Request, Response, Status, Streaming};
use truc_audit::{Receipt, Transaction};
use truc_ops::{code_name, is_transport_failure, now_ms, tag};
use truc_pki::{Role, peer};
use truc_proto::v1::{RelayRequest, RelayResponse, StatusAck, StatusUpdate, relay_request};
use truc_registry::{AgencyCode, NodeId};

use crate::route::HubService;

impl HubService {
    fn calling_node<T>(request: &Request<T>) -> Result<NodeId, Status> {
        let caller = &peer(request)?.identity;
        if caller.role != Role::Node {
            return Err(Status::permission_denied(format!(
                "{caller} may not relay; only nodes may"
            )));
        }
        NodeId::parse(&caller.name).map_err(|_| Status::permission_denied("unknown node"))
    }

    fn agency(field: &str, code: &str) -> Result<AgencyCode, Status> {
        AgencyCode::parse(code).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
    }

    /// Audits a document or status transaction; its receipt.
    async fn audit(
        &self,
        tx: Transaction,
        outcome: Code,
        started: Instant,
    ) -> Result<Receipt, Status> {
        let inner = self.inner();
        let kind = if tx.kind == "document" {
            "document"
        } else {
            "status"
        };
        let tx_id = tx.transaction_id.clone();
        let parties = (
            tx.client_agency.clone(),
            tx.provider_agency.clone(),
            tx.service.clone(),
        );
        let mut tx = tx;
        tx.outcome = code_name(outcome).to_string();
        tx.finished_unix_ms = now_ms();
        tx.latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let appended = inner.audit.append(tx).await.map_err(|e| {
            tracing::error!(error = %e, "audit append failed");
            tag(
                Status::internal("the transaction could not be audited"),
                &tx_id,
            )
        })?;
        inner.metrics.observe(
            kind,
            outcome,
            (&parties.0, &parties.1, &parties.2),
            started.elapsed().as_secs_f64(),
        );
        Ok(Receipt {
            transaction_id: tx_id,
            record_index: appended.index,
            leaf_hash: Bytes::copy_from_slice(&appended.leaf_hash),
            recorded_unix_ms: now_ms(),
            tree_head: appended.tree_head,
        })
    }

    pub(crate) async fn relay_document(
        &self,
        request: Request<Streaming<RelayRequest>>,
    ) -> Result<Response<RelayResponse>, Status> {
        let started = Instant::now();
        let node = Self::calling_node(&request)?;
        let mut incoming = request.into_inner();
        let header = match incoming.message().await?.and_then(|m| m.part) {
            Some(relay_request::Part::Header(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be the header",
                ));
            }
        };
        let envelope = header
            .envelope
            .clone()
            .ok_or_else(|| Status::invalid_argument("header.envelope is required"))?;
        let sender = Self::agency("header.sender", &header.sender)?;
        let recipient = Self::agency("header.recipient", &header.recipient)?;
        let tx_id = header.transaction_id.clone();
        let registry = &self.inner().registry;
        let mut tx = Transaction {
            transaction_id: tx_id.clone(),
            kind: "document".into(),
            client_agency: sender.to_string(),
            provider_agency: recipient.to_string(),
            service: format!("document/{}", business_kind_name(envelope.business_kind)),
            started_unix_ms: now_ms(),
            request_bytes: envelope.attachments.iter().map(|a| a.size).sum(),
            request_sha256: truc_doc::envelope_digest(&envelope),
            ..Transaction::default()
        };
        // The rules: the calling node hosts the sender, the envelope names
        // the sender and this recipient, and the registry lets them exchange.
        let checked = (|| {
            if !registry.hosts(&node, &sender) {
                return Err(Status::permission_denied(format!(
                    "node {node} does not host agency {sender}"
                )));
            }
            truc_doc::check(&envelope, &self.inner().documents)?;
            if envelope.from.as_ref().map(|o| o.organ_id.as_str()) != Some(sender.as_str()) {
                return Err(Status::invalid_argument(
                    "the envelope is not from the sender",
                ));
            }
            if !envelope.to.iter().any(|o| o.organ_id == recipient.as_str()) {
                return Err(Status::invalid_argument(
                    "the recipient is not among the envelope's recipients",
                ));
            }
            if registry.agency(&recipient).is_none() {
                return Err(Status::not_found(format!(
                    "no agency {recipient} in the registry"
                )));
            }
            if !registry.may_send_document(&sender, &recipient) {
                return Err(Status::permission_denied(format!(
                    "{sender} may not send documents to {recipient}"
                )));
            }
            registry
                .node_hosting(&recipient)
                .map(|n| n.id.clone())
                .ok_or_else(|| Status::unavailable(format!("no node hosts {recipient}")))
        })();
        let target = match checked {
            Ok(t) => t,
            Err(status) => {
                self.audit(tx, status.code(), started).await?;
                return Err(tag(status, &tx_id));
            }
        };
        let result = self.forward(&target, header, envelope, &mut incoming).await;
        let outcome = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        if let Ok(r) = &result {
            tx.response_bytes = u64::from(r.duplicate);
        }
        let receipt = self.audit(tx, outcome, started).await?;
        match result {
            Ok(mut response) => {
                response.receipt = Some(receipt);
                Ok(Response::new(response))
            }
            Err(status) => Err(tag(status, &tx_id)),
        }
    }

    /// Streams the document to the recipient's node, checking every chunk
    /// on the way; a bad chunk ends the stream early, and the recipient's
    /// node, finding its attachments incomplete, stores nothing.
    async fn forward(
        &self,
        target: &NodeId,
        header: truc_proto::v1::RelayHeader,
        envelope: truc_proto::v1::Envelope,
        incoming: &mut Streaming<RelayRequest>,
    ) -> Result<RelayResponse, Status> {
        let mut client = self.inner().node_client(target)?;
        let (tx, rx) = mpsc::channel::<RelayRequest>(4);
        let call = tokio::spawn(async move { client.deliver(ReceiverStream::new(rx)).await });
        let mut check = truc_doc::chunks::AttachmentCheck::new(&envelope)?;
        let pump = async {
            let first = RelayRequest {
                part: Some(relay_request::Part::Header(header)),
            };
            if tx.send(first).await.is_err() {
                return Ok(());
            }
            while let Some(message) = incoming.next().await {
                let message = message?;
                match &message.part {
                    Some(relay_request::Part::Chunk(c)) => check.check(c)?,
                    _ => {
                        return Err(Status::invalid_argument(
                            "only chunks may follow the header",
                        ));
                    }
                }
                if tx.send(message).await.is_err() {
                    // The recipient's node ended the call; its answer says why.
                    return Ok(());
                }
            }
            Ok(check.finish()?)
        };
        let pumped: Result<(), Status> = pump.await;
        drop(tx);
        if let Err(status) = pumped {
            call.abort();
            return Err(status);
        }
        let answer = call
            .await
            .map_err(|_| Status::internal("relay task failed"))?;
        answer.map(Response::into_inner).map_err(|s| {
            if is_transport_failure(&s) {
                Status::unavailable(format!("recipient node {target} is unreachable"))
            } else {
                s
            }
        })
    }

    pub(crate) async fn relay_status_update(
        &self,
        request: Request<StatusUpdate>,
    ) -> Result<Response<StatusAck>, Status> {
        let started = Instant::now();
        let node = Self::calling_node(&request)?;
        let update = request.into_inner();
        let recipient = Self::agency("recipient", &update.recipient)?;
        let sender = Self::agency("sender", &update.sender)?;
        let code = update
            .event
            .as_ref()
            .map(|e| e.code.clone())
            .unwrap_or_default();
        let registry = &self.inner().registry;
        let tx = Transaction {
            transaction_id: update.transaction_id.clone(),
            kind: "status".into(),
            client_agency: recipient.to_string(),
            provider_agency: sender.to_string(),
            service: format!("status/{code}"),
            started_unix_ms: now_ms(),
            ..Transaction::default()
        };
        let checked = (|| {
            if !registry.hosts(&node, &recipient) {
                return Err(Status::permission_denied(format!(
                    "node {node} does not host agency {recipient}"
                )));
            }
            truc_doc::StatusCode::parse(&code)
                .map_err(|v| Status::invalid_argument(v.to_string()))?;
            registry
                .node_hosting(&sender)
                .map(|n| n.id.clone())
                .ok_or_else(|| Status::not_found(format!("no node hosts {sender}")))
        })();
        let result = match checked {
            Ok(target) => match self.inner().node_client(&target) {
                Ok(mut client) => client
                    .deliver_status(update.clone())
                    .await
                    .map(Response::into_inner)
                    .map_err(|s| {
                        if is_transport_failure(&s) {
                            Status::unavailable(format!("sender node {target} is unreachable"))
                        } else {
                            s
                        }
                    }),
                Err(s) => Err(s),
            },
            Err(s) => Err(s),
        };
        let outcome = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        let receipt = self.audit(tx, outcome, started).await?;
        match result {
            Ok(_) => Ok(Response::new(StatusAck {
                receipt: Some(receipt),
            })),
            Err(s) => Err(tag(s, &update.transaction_id)),
        }
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
