//! `truc.v1.Agency`: what agency systems call.

use std::{sync::Arc, time::Duration};

use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::{Request, Response, Status};
use truc_pipeline::{Deadline, Kind, Pipeline, Step, Transaction, TxError, fields};
use truc_pki::{Identity, Role, peer};
use truc_proto::v1::{
    CallRequest, CallResponse, DataRequest, FetchDocumentRequest, FetchDocumentResponse,
    GetTrackingRequest, InboxEvent, ListInboxRequest, ListInboxResponse, SendDocumentRequest,
    SendDocumentResponse, Tracking, UpdateStatusRequest, UpdateStatusResponse, WatchInboxRequest,
    WatchTrackingRequest, agency_server::Agency, hub_client::HubClient,
};
use truc_registry::AgencyCode;

use crate::{
    NodeConfig,
    docs::{Caller, Documents},
    hubs::Hubs,
    new_transaction_id,
    receipts::Receipts,
};

/// The Agency service.
#[derive(Clone)]
pub(crate) struct AgencyService {
    config: Arc<NodeConfig>,
    hubs: Hubs,
    pipeline: Arc<Pipeline>,
    receipts: Receipts,
    docs: Arc<Documents>,
}

impl AgencyService {
    pub(crate) fn new(
        config: Arc<NodeConfig>,
        hubs: Hubs,
        pipeline: Arc<Pipeline>,
        receipts: Receipts,
        docs: Arc<Documents>,
    ) -> AgencyService {
        AgencyService {
            config,
            hubs,
            pipeline,
            receipts,
            docs,
        }
    }

    /// The agency `claimed` as an agency code, if the agency system
    /// `caller` may act for it.
    fn acting_for(&self, caller: &Identity, claimed: &str) -> Result<AgencyCode, TxError> {
        let agency = fields::agency("client_agency", claimed)?;
        let allowed = self
            .config
            .clients
            .get(&caller.name)
            .is_some_and(|agencies| agencies.contains(&agency));
        if !allowed {
            return Err(TxError::Denied(format!(
                "{caller} may not act for agency {agency} on node {}",
                self.config.id
            )));
        }
        Ok(agency)
    }

    /// The agency system calling, from its certificate.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = &peer(request)?.identity;
        only_agency_systems(caller)?;
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

impl AgencyService {
    /// `Agency.Call`: the one step every data call of an agency system runs,
    /// over gRPC or through the REST door.
    pub(crate) async fn run_call(
        &self,
        request: Request<CallRequest>,
    ) -> Result<CallResponse, Status> {
        self.pipeline.run(&Call(self), request).await
    }
}

/// A data call from an agency system to another agency's service, through
/// the hub.
struct Call<'a>(&'a AgencyService);

impl Step for Call<'_> {
    type Request = CallRequest;
    type Admitted = DataRequest;
    type Response = CallResponse;
    const KIND: Kind = Kind::Call;

    fn cap(&self) -> Duration {
        Duration::from_millis(self.0.config.limits.call_timeout_ms)
    }

    fn authenticate(&self, caller: &Identity) -> Result<(), TxError> {
        only_agency_systems(caller)
    }

    async fn admit(
        &self,
        caller: &Identity,
        req: CallRequest,
        tx: &mut Transaction,
    ) -> Result<DataRequest, TxError> {
        let client = self.0.acting_for(caller, &req.client_agency)?;
        tx.client_agency = client.to_string();
        let service = fields::service("service", &req.service)?;
        fields::request(
            tx,
            &service,
            &req.content_type,
            &req.payload,
            self.0.config.limits.max_payload_bytes,
        )?;
        // Checked before anything of them is recorded: a refused value is
        // not recorded in anyone's name.
        let why = fields::Why::parse(&req.purpose, &req.end_user, &req.case)?;
        why.record(tx);
        tx.transaction_id = new_transaction_id()?;
        Ok(DataRequest {
            transaction_id: tx.transaction_id.clone(),
            client_agency: client.to_string(),
            service: service.to_string(),
            content_type: req.content_type,
            payload: req.payload,
            purpose: why.purpose,
            end_user: why.end_user,
            case: why.case,
        })
    }

    async fn forward(
        &self,
        routed: DataRequest,
        deadline: &Deadline,
        tx: &mut Transaction,
    ) -> Result<CallResponse, TxError> {
        // Sent again to another replica only when it provably reached none
        // (see `crate::hubs`): a call that may be in a log is not repeated.
        let limit = self.0.config.limits.max_message_bytes();
        let (replica, response) = self
            .0
            .hubs
            .call(|pick| {
                let request = deadline.request(routed.clone());
                async move {
                    HubClient::new(pick.channel)
                        .max_decoding_message_size(limit)
                        .max_encoding_message_size(limit)
                        .route(request)
                        .await
                }
            })
            .await
            .map_err(TxError::from_hub)?;
        let response = response.into_inner();
        if let Some(origin) = self.0.receipts.verified_origin(response.receipt.as_ref()) {
            self.0.hubs.learn_origin(replica, origin);
        }
        fields::response_payload(tx, &response.payload);
        // The call path checks the receipt, with the inclusion proof it
        // carries (or asks the hub for it in the background).
        let verified = self.0.receipts.accept(response.receipt.as_ref(), tx);
        // The node's record keeps the receipt without its proof: the proof
        // is checked, and the hub's log can give it again.
        tx.receipt = response.receipt.clone().map(|mut r| {
            r.inclusion = None;
            r
        });
        tx.receipt_verified = verified;
        Ok(CallResponse {
            content_type: response.content_type,
            payload: response.payload,
            receipt: response.receipt,
        })
    }
}

/// Only agency systems (client certificates) use the Agency API.
fn only_agency_systems(caller: &Identity) -> Result<(), TxError> {
    if caller.role != Role::Client {
        return Err(TxError::Denied(format!("{caller} is not an agency system")));
    }
    Ok(())
}

#[tonic::async_trait]
impl Agency for AgencyService {
    async fn call(&self, request: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        self.run_call(request).await.map(Response::new)
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

    type WatchTrackingStream = ReceiverStream<Result<Tracking, Status>>;

    async fn watch_tracking(
        &self,
        request: Request<WatchTrackingRequest>,
    ) -> Result<Response<Self::WatchTrackingStream>, Status> {
        let sender = self.authorize(&request, &request.get_ref().sender)?;
        Ok(Response::new(
            self.docs
                .watch_tracking(sender, &request.get_ref().document_id)?,
        ))
    }
}
