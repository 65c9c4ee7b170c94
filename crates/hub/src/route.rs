//! `truc.v1.Hub`: routing data calls between nodes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use bytes::Bytes;
use tonic::{Request, Response, Status, transport::Channel};
use truc_audit::{AuditLog, Receipt, Transaction};
use truc_ops::{
    Metrics, config::Limits, incoming_timeout, is_transport_failure, now_ms, record_call, tag,
    with_deadline,
};
use truc_pki::{Role, peer};
use truc_proto::v1::{
    DataRequest, DataResponse, GetRegistryRequest, RegistrySnapshot, hub_server::Hub,
    node_client::NodeClient,
};
use truc_registry::{AgencyCode, NodeId, Registry, ServiceId};

/// The Hub service.
#[derive(Clone)]
pub struct HubService {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) registry: Arc<Registry>,
    /// Served with the registry, so nodes can verify receipts.
    audit_public_key: Bytes,
    pub(crate) audit: AuditLog,
    client_tls: Arc<rustls::ClientConfig>,
    // One long-lived HTTP/2 channel per provider node, made on first use.
    nodes: Mutex<HashMap<NodeId, NodeClient<Channel>>>,
    pub(crate) metrics: Arc<Metrics>,
    limits: Limits,
    /// Limits on relayed documents.
    pub(crate) documents: truc_doc::Limits,
}

/// A routed call that passed the shape checks: what the audit record needs.
struct Checked {
    tx_id: String,
    client: AgencyCode,
    service: ServiceId,
}

impl HubService {
    pub(crate) fn new(
        registry: Arc<Registry>,
        audit_public_key: Vec<u8>,
        audit: AuditLog,
        client_tls: Arc<rustls::ClientConfig>,
        metrics: Arc<Metrics>,
        limits: Limits,
        documents: truc_doc::Limits,
    ) -> HubService {
        HubService {
            inner: Arc::new(Inner {
                registry,
                audit_public_key: Bytes::from(audit_public_key),
                audit,
                client_tls,
                nodes: Mutex::new(HashMap::new()),
                metrics,
                limits,
                documents,
            }),
        }
    }
}

impl HubService {
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl Inner {
    pub(crate) fn node_client(&self, id: &NodeId) -> Result<NodeClient<Channel>, Status> {
        let mut nodes = self
            .nodes
            .lock()
            .map_err(|_| Status::internal("internal error"))?;
        if let Some(client) = nodes.get(id) {
            return Ok(client.clone());
        }
        let node = self
            .registry
            .node(id)
            .ok_or_else(|| Status::internal("internal error"))?;
        let channel = truc_pki::channel(&node.address, id.as_str(), self.client_tls.clone())
            .map_err(|e| {
                tracing::error!(node = %id, error = %e, "cannot make a channel to node");
                Status::unavailable(format!("provider node {id} is unreachable"))
            })?;
        let limit = self.limits.max_message_bytes();
        let client = NodeClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        nodes.insert(id.clone(), client.clone());
        Ok(client)
    }

    /// The registry checks, in the order that leaks least: the caller's own
    /// agency first, then the service, then the grant.
    fn authorize(&self, node: &str, checked: &Checked) -> Result<NodeId, Status> {
        let hosts = NodeId::parse(node)
            .map(|n| self.registry.hosts(&n, &checked.client))
            .unwrap_or(false);
        if !hosts {
            return Err(Status::permission_denied(format!(
                "node {node} does not host agency {}",
                checked.client
            )));
        }
        if self.registry.service(&checked.service).is_none() {
            return Err(Status::not_found(format!(
                "no service {} in the registry",
                checked.service
            )));
        }
        if !self.registry.is_granted(&checked.client, &checked.service) {
            return Err(Status::permission_denied(format!(
                "agency {} has no grant for service {}",
                checked.client, checked.service
            )));
        }
        self.registry
            .node_hosting(checked.service.provider())
            .map(|n| n.id.clone())
            .ok_or_else(|| {
                Status::unavailable(format!(
                    "no node hosts provider {}",
                    checked.service.provider()
                ))
            })
    }
}

fn check_shape(req: &DataRequest, max_payload: usize) -> Result<Checked, Status> {
    if req.transaction_id.len() != 32
        || !req
            .transaction_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Status::invalid_argument(
            "transaction_id: expected 32 lowercase hex digits",
        ));
    }
    let client = AgencyCode::parse(&req.client_agency)
        .map_err(|e| Status::invalid_argument(format!("client_agency: {e}")))?;
    let service = ServiceId::parse(&req.service)
        .map_err(|e| Status::invalid_argument(format!("service: {e}")))?;
    if req.payload.len() > max_payload {
        return Err(Status::resource_exhausted(format!(
            "payload of {} bytes exceeds the limit of {max_payload} bytes",
            req.payload.len()
        )));
    }
    Ok(Checked {
        tx_id: req.transaction_id.clone(),
        client,
        service,
    })
}

#[tonic::async_trait]
impl Hub for HubService {
    async fn route(&self, request: Request<DataRequest>) -> Result<Response<DataResponse>, Status> {
        let started = Instant::now();
        let started_ms = now_ms();
        let inner = &self.inner;
        let caller = peer(&request)?;
        if caller.identity.role != Role::Node {
            return Err(Status::permission_denied(format!(
                "{} may not route calls; only nodes may",
                caller.identity
            )));
        }
        let node = caller.identity.name.clone();
        let deadline = incoming_timeout(request.metadata());
        let req = request.into_inner();
        let checked = check_shape(&req, inner.limits.max_payload_bytes)?;
        let tx = Transaction::call(
            &checked.tx_id,
            checked.client.as_str(),
            checked.service.provider().as_str(),
            checked.service.as_str(),
            &req.payload,
            started_ms,
        );

        let result = match inner.authorize(&node, &checked) {
            Ok(provider_node) => match inner.node_client(&provider_node) {
                Ok(mut client) => {
                    let cap = std::time::Duration::from_millis(inner.limits.call_timeout_ms);
                    client
                        .invoke(with_deadline(req, deadline, started, cap))
                        .await
                        .map(Response::into_inner)
                        .map_err(|s| unreachable_as_unavailable(s, &provider_node))
                }
                Err(s) => Err(s),
            },
            Err(s) => Err(s),
        };

        // Nothing is answered before the record is durable.
        let appended = record_call(
            &inner.audit,
            &inner.metrics,
            tx,
            &result,
            None,
            false,
            started,
        )
        .await?;
        let receipt = Receipt {
            transaction_id: checked.tx_id.clone(),
            record_index: appended.index,
            leaf_hash: Bytes::copy_from_slice(&appended.leaf_hash),
            recorded_unix_ms: now_ms(),
            tree_head: appended.tree_head,
        };
        match result {
            Ok(mut response) => {
                response.receipt = Some(receipt);
                Ok(Response::new(response))
            }
            Err(status) => Err(tag(status, &checked.tx_id)),
        }
    }

    async fn relay(
        &self,
        request: Request<tonic::Streaming<truc_proto::v1::RelayRequest>>,
    ) -> Result<Response<truc_proto::v1::RelayResponse>, Status> {
        self.relay_document(request).await
    }

    async fn relay_status(
        &self,
        request: Request<truc_proto::v1::StatusUpdate>,
    ) -> Result<Response<truc_proto::v1::StatusAck>, Status> {
        self.relay_status_update(request).await
    }

    async fn get_registry(
        &self,
        request: Request<GetRegistryRequest>,
    ) -> Result<Response<RegistrySnapshot>, Status> {
        let caller = peer(&request)?;
        if !matches!(caller.identity.role, Role::Node | Role::Admin) {
            return Err(Status::permission_denied(format!(
                "{} may not read the registry",
                caller.identity
            )));
        }
        let mut snapshot = self.inner.registry.to_snapshot();
        snapshot.audit_public_key = self.inner.audit_public_key.clone();
        Ok(Response::new(snapshot))
    }
}

/// A transport failure towards a node is that node being unavailable; any
/// status the node itself returned keeps its code.
fn unreachable_as_unavailable(status: Status, node: &NodeId) -> Status {
    if is_transport_failure(&status) {
        tracing::warn!(%node, error = %status, "provider node unreachable");
        Status::unavailable(format!("provider node {node} is unreachable"))
    } else {
        status
    }
}
