//! `truc.v1.Agency`: what agency systems call.

use std::{sync::Arc, time::Instant};

use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::{Request, Response, Status, transport::Channel};
use truc_audit::{AuditLog, Transaction};
use truc_ops::{
    Metrics, incoming_timeout, is_transport_failure, now_ms, record_call, tag, with_deadline,
};
use truc_pki::{Role, peer};
use truc_proto::v1::{
    CallRequest, CallResponse, DataRequest, FetchDocumentRequest, FetchDocumentResponse,
    GetRegistryRequest, GetTrackingRequest, InboxEvent, ListInboxRequest, ListInboxResponse,
    SendDocumentRequest, SendDocumentResponse, Tracking, UpdateStatusRequest, UpdateStatusResponse,
    WatchInboxRequest, agency_server::Agency, hub_client::HubClient,
};
use truc_registry::{AgencyCode, ServiceId};

use crate::{
    HubKey, NodeConfig,
    docs::{Caller, Documents},
    new_transaction_id,
};

/// The Agency service.
#[derive(Clone)]
pub struct AgencyService {
    config: Arc<NodeConfig>,
    hub: HubClient<Channel>,
    audit: AuditLog,
    metrics: Arc<Metrics>,
    hub_key: HubKey,
    docs: Arc<Documents>,
}

impl AgencyService {
    pub(crate) fn new(
        config: Arc<NodeConfig>,
        channel: Channel,
        audit: AuditLog,
        metrics: Arc<Metrics>,
        hub_key: HubKey,
        docs: Arc<Documents>,
    ) -> AgencyService {
        let limit = config.limits.max_message_bytes();
        let hub = HubClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        AgencyService {
            config,
            hub,
            audit,
            metrics,
            hub_key,
            docs,
        }
    }

    /// The agency system calling, from its certificate.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = &peer(request)?.identity;
        if caller.role != Role::Client {
            return Err(Status::permission_denied(format!(
                "{caller} is not an agency system"
            )));
        }
        Ok(Caller {
            identity: caller.clone(),
            agencies: self
                .config
                .clients
                .get(&caller.name)
                .cloned()
                .unwrap_or_default(),
            node: self.config.id.clone(),
        })
    }

    /// The agency the caller acts for, if its certificate allows it.
    fn authorize<T>(&self, request: &Request<T>, claimed: &str) -> Result<AgencyCode, Status> {
        self.caller(request)?.may_act_for(claimed)
    }
}

#[tonic::async_trait]
impl Agency for AgencyService {
    async fn call(&self, request: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        let started = Instant::now();
        let started_ms = now_ms();
        let client = self.authorize(&request, &request.get_ref().client_agency)?;
        let deadline = incoming_timeout(request.metadata());
        let req = request.into_inner();
        let service = ServiceId::parse(&req.service)
            .map_err(|e| Status::invalid_argument(format!("service: {e}")))?;
        let max = self.config.limits.max_payload_bytes;
        if req.payload.len() > max {
            return Err(Status::resource_exhausted(format!(
                "payload of {} bytes exceeds the limit of {max} bytes",
                req.payload.len()
            )));
        }
        let tx_id = new_transaction_id()?;
        let tx = Transaction::call(
            &tx_id,
            client.as_str(),
            service.provider().as_str(),
            service.as_str(),
            &req.payload,
            started_ms,
        );
        let routed = DataRequest {
            transaction_id: tx_id.clone(),
            client_agency: client.to_string(),
            service: service.to_string(),
            content_type: req.content_type,
            payload: req.payload,
        };
        let cap = std::time::Duration::from_millis(self.config.limits.call_timeout_ms);
        let result = self
            .hub
            .clone()
            .route(with_deadline(routed, deadline, started, cap))
            .await
            .map(Response::into_inner);
        let receipt = result.as_ref().ok().and_then(|r| r.receipt.clone());
        if receipt.is_some() && !self.hub_key.known() {
            // The first receipts may come before the start-up fetch of the
            // registry: fetch the hub's key now.
            if let Ok(r) = self.hub.clone().get_registry(GetRegistryRequest {}).await {
                self.hub_key.learn(r.get_ref());
            }
        }
        let verified = receipt.as_ref().is_some_and(|r| self.hub_key.verifies(r));
        if receipt.is_some() && !verified {
            tracing::warn!(tx = %tx_id, "the hub's receipt did not verify (or the hub key is not known yet)");
        }
        record_call(
            &self.audit,
            &self.metrics,
            tx,
            &result,
            receipt,
            verified,
            started,
        )
        .await?;
        match result {
            Ok(r) => Ok(Response::new(CallResponse {
                content_type: r.content_type,
                payload: r.payload,
                receipt: r.receipt,
            })),
            Err(status) => {
                tracing::debug!(tx = %tx_id, %status, "call failed");
                let status = if is_transport_failure(&status) {
                    Status::unavailable("the hub is unreachable")
                } else {
                    status
                };
                Err(tag(status, &tx_id))
            }
        }
    }

    async fn send_document(
        &self,
        request: Request<Streaming<SendDocumentRequest>>,
    ) -> Result<Response<SendDocumentResponse>, Status> {
        let caller = self.caller(&request)?;
        let response = self.docs.send(&caller, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn list_inbox(
        &self,
        request: Request<ListInboxRequest>,
    ) -> Result<Response<ListInboxResponse>, Status> {
        let recipient = self.authorize(&request, &request.get_ref().recipient)?;
        Ok(Response::new(
            self.docs.list_inbox(&recipient, request.get_ref())?,
        ))
    }

    type WatchInboxStream = ReceiverStream<Result<InboxEvent, Status>>;

    async fn watch_inbox(
        &self,
        request: Request<WatchInboxRequest>,
    ) -> Result<Response<Self::WatchInboxStream>, Status> {
        let recipient = self.authorize(&request, &request.get_ref().recipient)?;
        Ok(Response::new(self.docs.watch_inbox(recipient)?))
    }

    type FetchDocumentStream = ReceiverStream<Result<FetchDocumentResponse, Status>>;

    async fn fetch_document(
        &self,
        request: Request<FetchDocumentRequest>,
    ) -> Result<Response<Self::FetchDocumentStream>, Status> {
        let recipient = self.authorize(&request, &request.get_ref().recipient)?;
        Ok(Response::new(
            self.docs.fetch(&recipient, request.get_ref())?,
        ))
    }

    async fn update_status(
        &self,
        request: Request<UpdateStatusRequest>,
    ) -> Result<Response<UpdateStatusResponse>, Status> {
        let recipient = self.authorize(&request, &request.get_ref().recipient)?;
        let response = self
            .docs
            .update_status(&recipient, request.into_inner())
            .await?;
        Ok(Response::new(response))
    }

    async fn get_tracking(
        &self,
        request: Request<GetTrackingRequest>,
    ) -> Result<Response<Tracking>, Status> {
        let sender = self.authorize(&request, &request.get_ref().sender)?;
        Ok(Response::new(
            self.docs
                .tracking(&sender, &request.get_ref().document_id)?,
        ))
    }
}
