//! `truc.v1.Node`: routed calls arriving from the hub for this node's backends.

use std::{collections::HashMap, sync::Arc, time::Instant};

use tonic::Streaming;
use tonic::{
    Request, Response, Status,
    transport::{Channel, Endpoint},
};
use truc_audit::{AuditLog, Transaction};
use truc_ops::{
    Metrics, incoming_timeout, is_transport_failure, now_ms, record_call, tag, with_deadline,
};
use truc_pki::{Role, peer};
use truc_proto::v1::{
    DataRequest, DataResponse, RelayRequest, RelayResponse, StatusAck, StatusUpdate,
    backend_client::BackendClient, node_server::Node,
};
use truc_registry::{AgencyCode, ServiceId};

use crate::{NodeConfig, docs::Documents};

/// The Node service.
#[derive(Clone)]
pub struct NodeService {
    config: Arc<NodeConfig>,
    backends: Arc<HashMap<ServiceId, BackendClient<Channel>>>,
    audit: AuditLog,
    metrics: Arc<Metrics>,
    docs: Arc<Documents>,
}

impl NodeService {
    pub(crate) fn new(
        config: Arc<NodeConfig>,
        audit: AuditLog,
        metrics: Arc<Metrics>,
        docs: Arc<Documents>,
    ) -> Result<NodeService, Status> {
        let limit = config.limits.max_message_bytes();
        let mut backends = HashMap::new();
        for (service, address) in &config.backends {
            let endpoint = Endpoint::from_shared(format!("http://{address}"))
                .map_err(|e| Status::internal(format!("backend {address}: {e}")))?
                .tcp_nodelay(true)
                .connect_timeout(std::time::Duration::from_secs(5));
            let client = BackendClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit);
            backends.insert(service.clone(), client);
        }
        Ok(NodeService {
            config,
            backends: Arc::new(backends),
            audit,
            metrics,
            docs,
        })
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn invoke(
        &self,
        request: Request<DataRequest>,
    ) -> Result<Response<DataResponse>, Status> {
        let started = Instant::now();
        let started_ms = now_ms();
        self.require_hub(&request)?;
        let deadline = incoming_timeout(request.metadata());
        let req = request.into_inner();
        let client = AgencyCode::parse(&req.client_agency)
            .map_err(|e| Status::invalid_argument(format!("client_agency: {e}")))?;
        let service = ServiceId::parse(&req.service)
            .map_err(|e| Status::invalid_argument(format!("service: {e}")))?;
        let tx_id = req.transaction_id.clone();
        let tx = Transaction::call(
            &tx_id,
            client.as_str(),
            service.provider().as_str(),
            service.as_str(),
            &req.payload,
            started_ms,
        );
        let result = match self.backends.get(&service) {
            None => Err(Status::not_found(format!(
                "node {} has no backend for service {service}",
                self.config.id
            ))),
            Some(backend) => {
                let cap = std::time::Duration::from_millis(self.config.limits.call_timeout_ms);
                backend
                    .clone()
                    .invoke(with_deadline(req, deadline, started, cap))
                    .await
                    .map(Response::into_inner)
                    .map_err(|status| {
                        if is_transport_failure(&status) {
                            tracing::warn!(%service, error = %status, "backend unreachable");
                            Status::unavailable(format!("the backend of {service} is unavailable"))
                        } else {
                            status
                        }
                    })
            }
        };
        record_call(
            &self.audit,
            &self.metrics,
            tx,
            &result,
            None,
            false,
            started,
        )
        .await?;
        match result {
            Ok(r) => Ok(Response::new(DataResponse {
                content_type: r.content_type,
                payload: r.payload,
                receipt: None,
            })),
            Err(status) => Err(tag(status, &tx_id)),
        }
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
        let caller = &peer(request)?.identity;
        if caller.role != Role::Hub || caller.name != self.config.hub_name {
            return Err(Status::permission_denied(format!(
                "{caller} may not call the node API; only the hub may"
            )));
        }
        Ok(())
    }
}
