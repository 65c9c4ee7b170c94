//! `truc.v1.Node`: routed calls arriving from the hub for this node's backends.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tonic::Streaming;
use tonic::{
    Request, Response, Status,
    transport::{Channel, Endpoint},
};
use truc_pipeline::{Deadline, Kind, Pipeline, Step, Transaction, TxError, fields};
use truc_pki::{Identity, Role, peer};
use truc_proto::v1::{
    DataRequest, DataResponse, RelayRequest, RelayResponse, StatusAck, StatusUpdate,
    backend_client::BackendClient, node_server::Node,
};
use truc_registry::ServiceId;

use crate::{NodeConfig, config::Backend, docs::Documents, rest_backend::RestBackend};

/// The Node service.
#[derive(Clone)]
pub(crate) struct NodeService {
    config: Arc<NodeConfig>,
    backends: Arc<HashMap<ServiceId, Target>>,
    pipeline: Arc<Pipeline>,
    docs: Arc<Documents>,
}

impl NodeService {
    pub(crate) fn new(
        config: Arc<NodeConfig>,
        pipeline: Arc<Pipeline>,
        docs: Arc<Documents>,
    ) -> Result<NodeService, Status> {
        let limit = config.limits.max_message_bytes();
        let mut backends = HashMap::new();
        for (service, backend) in &config.backends {
            let target = match backend {
                Backend::Grpc(address) => {
                    let endpoint = Endpoint::from_shared(format!("http://{address}"))
                        .map_err(|e| Status::internal(format!("backend {address}: {e}")))?
                        .tcp_nodelay(true)
                        .connect_timeout(Duration::from_secs(5));
                    let client = BackendClient::new(endpoint.connect_lazy())
                        .max_decoding_message_size(limit)
                        .max_encoding_message_size(limit);
                    Target::Grpc(client)
                }
                Backend::Http { url, ca } => Target::Rest(Arc::new(
                    RestBackend::new(url, ca.as_deref(), config.limits.max_payload_bytes)
                        .map_err(|e| Status::internal(format!("backend {url}: {e}")))?,
                )),
            };
            backends.insert(service.clone(), target);
        }
        Ok(NodeService {
            config,
            backends: Arc::new(backends),
            pipeline,
            docs,
        })
    }
}

/// A service's backend: a gRPC `truc.v1.Backend` or a REST URL. The
/// [`Invoke`] step is the same for both.
#[derive(Clone)]
pub(crate) enum Target {
    /// gRPC.
    Grpc(BackendClient<Channel>),
    /// REST.
    Rest(Arc<RestBackend>),
}

impl Target {
    /// Calls the backend within `deadline`: the answer's content type and payload.
    async fn invoke(
        self,
        req: DataRequest,
        why: &fields::Why,
        deadline: &Deadline,
        peer: &str,
    ) -> Result<(String, bytes::Bytes), TxError> {
        match self {
            Target::Grpc(mut backend) => {
                let mut request = deadline.request(req);
                why.to_metadata(request.metadata_mut());
                let response = backend
                    .invoke(request)
                    .await
                    .map_err(|s| TxError::from_peer(s, peer))?
                    .into_inner();
                Ok((response.content_type, response.payload))
            }
            Target::Rest(backend) => backend.invoke(&req, why, deadline, peer).await,
        }
    }
}

/// Only the hub may call the Node API.
fn only_the_hub(config: &NodeConfig, caller: &Identity) -> Result<(), TxError> {
    if caller.role != Role::Hub || caller.name != config.hub_name {
        return Err(TxError::Denied(format!(
            "{caller} may not call the node API; only the hub may"
        )));
    }
    Ok(())
}

/// A data call the hub routed to one of this node's services.
struct Invoke<'a>(&'a NodeService);

impl Step for Invoke<'_> {
    type Request = DataRequest;
    type Admitted = (Target, DataRequest);
    type Response = DataResponse;
    const KIND: Kind = Kind::Call;

    fn cap(&self) -> Duration {
        Duration::from_millis(self.0.config.limits.call_timeout_ms)
    }

    fn authenticate(&self, caller: &Identity) -> Result<(), TxError> {
        only_the_hub(&self.0.config, caller)
    }

    async fn admit(
        &self,
        _caller: &Identity,
        req: DataRequest,
        tx: &mut Transaction,
    ) -> Result<Self::Admitted, TxError> {
        // The hub checked the parties and the grant; the fields are checked
        // again, for the record this node keeps.
        tx.transaction_id = fields::transaction_id("transaction_id", &req.transaction_id)?;
        tx.client_agency = fields::agency("client_agency", &req.client_agency)?.to_string();
        let service = fields::service("service", &req.service)?;
        let backend = self.0.backends.get(&service).cloned().ok_or_else(|| {
            TxError::NotFound(format!(
                "node {} has no backend for service {service}",
                self.0.config.id
            ))
        })?;
        fields::request(
            tx,
            &service,
            &req.content_type,
            &req.payload,
            self.0.config.limits.max_payload_bytes,
        )?;
        fields::Why::parse(&req.purpose, &req.end_user, &req.case)?.record(tx);
        Ok((backend, req))
    }

    async fn forward(
        &self,
        (backend, req): Self::Admitted,
        deadline: &Deadline,
        tx: &mut Transaction,
    ) -> Result<DataResponse, TxError> {
        let peer = format!("the backend of {}", req.service);
        // Checked in admit; the backend also finds them in the request.
        let why = fields::Why::parse(&req.purpose, &req.end_user, &req.case).unwrap_or_default();
        let (content_type, payload) = backend.invoke(req, &why, deadline, &peer).await?;
        fields::response(tx, || peer, &content_type, &payload)?;
        Ok(DataResponse {
            content_type,
            payload,
            receipt: None,
        })
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn invoke(
        &self,
        request: Request<DataRequest>,
    ) -> Result<Response<DataResponse>, Status> {
        self.pipeline
            .run(&Invoke(self), request)
            .await
            .map(Response::new)
    }

    async fn deliver(
        &self,
        request: Request<Streaming<RelayRequest>>,
    ) -> Result<Response<RelayResponse>, Status> {
        self.require_hub(&request)?;
        let response = self.docs.deliver(request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn deliver_status(
        &self,
        request: Request<StatusUpdate>,
    ) -> Result<Response<StatusAck>, Status> {
        self.require_hub(&request)?;
        Ok(Response::new(
            self.docs.deliver_status(request.into_inner()).await?,
        ))
    }
}

impl NodeService {
    /// Only the hub may call the Node API.
    fn require_hub<T>(&self, request: &Request<T>) -> Result<(), Status> {
        Ok(only_the_hub(&self.config, &peer(request)?.identity)?)
    }
}
