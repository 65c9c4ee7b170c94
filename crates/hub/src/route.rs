//! `truc.v1.Hub`: routing data calls between nodes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tonic::{Request, Response, Status, transport::Channel};
use truc_audit::Receipt;
use truc_ops::{Metrics, config::Limits};
use truc_pipeline::{Deadline, Kind, Pipeline, Step, Transaction, TxError, fields};
use truc_pki::{Identity, Role, peer};
use truc_proto::v1::{
    DataRequest, DataResponse, GetRegistryRequest, RegistrySnapshot, hub_server::Hub,
    node_client::NodeClient,
};
use truc_registry::{AgencyCode, NodeId, ServiceId};

use crate::end_user::EndUserKey;

/// The Hub service.
#[derive(Clone)]
pub(crate) struct HubService {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The registry in force (reloaded when its file changes).
    pub(crate) registry: truc_registry::Live,
    /// Signs the registry snapshots served to nodes.
    signed_registry: crate::signed_registry::SignedRegistry,
    /// Every transaction goes through it (ids unique in the hub's log).
    pub(crate) pipeline: Pipeline,
    client_tls: truc_pki::ClientTls,
    // One long-lived HTTP/2 channel per provider node, made on first use.
    // Keyed with the address it was made for: a reloaded registry that
    // moves a node gets a new channel.
    nodes: Mutex<HashMap<NodeId, (String, NodeClient<Channel>)>>,
    pub(crate) limits: Limits,
    /// Limits on relayed documents.
    pub(crate) documents: truc_doc::Limits,
    /// The key end users are recorded under, where the registry says so.
    end_user_key: EndUserKey,
    /// This replica's call quotas.
    pub(crate) quotas: crate::quota::Quotas,
}

impl HubService {
    #[allow(
        clippy::too_many_arguments,
        reason = "each is a part the hub's start-up builds once"
    )]
    pub(crate) fn new(
        registry: impl Into<truc_registry::Live>,
        registry_key: ring::signature::Ed25519KeyPair,
        audit: truc_audit::AuditLog,
        client_tls: impl Into<truc_pki::ClientTls>,
        metrics: Arc<Metrics>,
        limits: Limits,
        documents: truc_doc::Limits,
        end_user_key: EndUserKey,
        tracing: truc_ops::trace::Tracing,
    ) -> HubService {
        HubService {
            inner: Arc::new(Inner {
                registry: registry.into(),
                signed_registry: crate::signed_registry::SignedRegistry::new(registry_key),
                pipeline: Pipeline::new(audit, metrics)
                    .with_unique_ids()
                    .with_tracing(tracing),
                client_tls: client_tls.into(),
                nodes: Mutex::new(HashMap::new()),
                limits,
                documents,
                end_user_key,
                quotas: crate::quota::Quotas::new(),
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl Inner {
    pub(crate) fn node_client(&self, id: &NodeId) -> Result<NodeClient<Channel>, TxError> {
        let mut nodes = self
            .nodes
            .lock()
            .map_err(|_| TxError::Internal("node channel map poisoned".into()))?;
        let registry = self.registry.current();
        // A registry reloaded since the call was admitted may have dropped it.
        let node = registry.node(id).ok_or_else(|| TxError::Unreachable {
            peer: format!("node {id} (no longer in the registry)"),
        })?;
        if let Some((address, client)) = nodes.get(id)
            && *address == node.address
        {
            return Ok(client.clone());
        }
        let channel = truc_pki::channel(&node.address, id.as_str(), self.client_tls.clone())
            .map_err(|e| {
                tracing::error!(node = %id, error = %e, "cannot make a channel to node");
                TxError::Unreachable {
                    peer: format!("node {id}"),
                }
            })?;
        let limit = self.limits.max_message_bytes();
        let client = NodeClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        nodes.insert(id.clone(), (node.address.clone(), client.clone()));
        Ok(client)
    }

    /// Records why a call to `service` is made: the end user as given, or
    /// as a keyed hash where the registry says so (never as given then).
    fn record_why(
        &self,
        why: &fields::Why,
        service: &ServiceId,
        tx: &mut Transaction,
    ) -> Result<(), TxError> {
        if why.end_user.is_empty() || !self.registry.current().hashes_end_user(service) {
            why.record(tx);
            return Ok(());
        }
        let hashed = self.end_user_key.hash(&why.end_user).ok_or_else(|| {
            TxError::Internal(
                "the registry hashes end users but the hub has no end_user_key".into(),
            )
        })?;
        why.record(tx);
        tx.end_user = hashed;
        tx.end_user_hashed = true;
        Ok(())
    }

    /// The node id of a calling node, from its certificate.
    pub(crate) fn calling_node(caller: &Identity) -> Result<NodeId, TxError> {
        NodeId::parse(&caller.name).map_err(|_| TxError::Denied("unknown node".into()))
    }

    /// Where a transaction from `node` starts: its id, then the agency it
    /// is made for, which `node` must host; each given as its field name and
    /// value. Checked in that order, and recorded in `tx` (as its id and
    /// client agency) only once both pass.
    pub(crate) fn hosted_origin(
        &self,
        node: &NodeId,
        tx: &mut Transaction,
        (id_field, id): (&'static str, &str),
        (agency_field, agency): (&'static str, &str),
    ) -> Result<AgencyCode, TxError> {
        let id = fields::transaction_id(id_field, id)?;
        let agency = fields::agency(agency_field, agency)?;
        if !self.registry.current().hosts(node, &agency) {
            return Err(TxError::Denied(format!(
                "node {node} does not host agency {agency}"
            )));
        }
        tx.transaction_id = id;
        tx.client_agency = agency.to_string();
        Ok(agency)
    }
}

/// Only nodes make transactions through the hub.
pub(crate) fn only_nodes(caller: &Identity, what: &str) -> Result<(), TxError> {
    if caller.role == Role::Node {
        Ok(())
    } else {
        Err(TxError::Denied(format!(
            "{caller} may not {what}; only nodes may"
        )))
    }
}

/// What a provider node's error answer means ([`TxError::from_peer`]),
/// without its `retry-after-ms`: only the hub's own quota refusals carry a
/// retry hint, and the client's node counts those as `QUOTA_EXCEEDED`.
fn from_provider(mut status: Status, peer: String) -> TxError {
    status
        .metadata_mut()
        .remove(truc_ops::RETRY_AFTER_MS_HEADER);
    TxError::from_peer(status, peer)
}

/// A data call from a client agency hosted by the calling node to the node
/// of the service's provider.
struct Route<'a>(&'a Inner);

impl Step for Route<'_> {
    type Request = DataRequest;
    type Admitted = (NodeId, DataRequest);
    type Response = DataResponse;
    const KIND: Kind = Kind::Call;

    fn cap(&self) -> Duration {
        Duration::from_millis(self.0.limits.call_timeout_ms)
    }

    fn authenticate(&self, caller: &Identity) -> Result<(), TxError> {
        only_nodes(caller, "route calls")
    }

    /// The registry checks, in the order that leaks least: the caller's own
    /// agency first, then the service, then the grant, then the purpose the
    /// grant requires; then the quota, which only a call that passed them
    /// all can spend.
    async fn admit(
        &self,
        caller: &Identity,
        req: DataRequest,
        tx: &mut Transaction,
    ) -> Result<Self::Admitted, TxError> {
        let registry = self.0.registry.current();
        let node = Inner::calling_node(caller)?;
        let client = self.0.hosted_origin(
            &node,
            tx,
            ("transaction_id", &req.transaction_id),
            ("client_agency", &req.client_agency),
        )?;
        let service = fields::service("service", &req.service)?;
        if registry.service(&service).is_none() {
            return Err(TxError::NotFound(format!(
                "no service {service} in the registry"
            )));
        }
        fields::request(
            tx,
            &service,
            &req.content_type,
            &req.payload,
            self.0.limits.max_payload_bytes,
        )?;
        let why = fields::Why::parse(&req.purpose, &req.end_user, &req.case)?;
        self.0.record_why(&why, &service, tx)?;
        if !registry.is_granted(&client, &service) {
            return Err(TxError::Denied(format!(
                "agency {client} has no grant for service {service}"
            )));
        }
        if let Some(rule) = registry.required_purpose(&client, &service) {
            if !rule.allows(&why.purpose) {
                return Err(TxError::Denied(if why.purpose.is_empty() {
                    format!("the grant of service {service} to agency {client} requires a purpose")
                } else {
                    format!(
                        "the grant of service {service} to agency {client} does not allow purpose {:?}",
                        why.purpose
                    )
                }));
            }
        }
        if let Err(retry_after) = self.0.quotas.take(&registry, &client, &service) {
            return Err(TxError::Quota {
                message: format!(
                    "agency {client} is over its quota for service {service}; retry after {} ms",
                    retry_after.as_nanos().div_ceil(1_000_000)
                ),
                retry_after,
            });
        }
        let provider = registry
            .node_hosting(service.provider())
            .map(|n| n.id.clone())
            .ok_or_else(|| TxError::Unreachable {
                peer: format!("provider {} (no node hosts it)", service.provider()),
            })?;
        Ok((provider, req))
    }

    async fn forward(
        &self,
        (provider, req): Self::Admitted,
        deadline: &Deadline,
        tx: &mut Transaction,
    ) -> Result<DataResponse, TxError> {
        let peer = || format!("provider node {provider}");
        let response = self
            .0
            .node_client(&provider)?
            .invoke(deadline.request(req))
            .await
            .map_err(|s| from_provider(s, peer()))?
            .into_inner();
        fields::response(tx, peer, &response.content_type, &response.payload)?;
        Ok(response)
    }

    fn respond(mut response: DataResponse, receipt: Option<Receipt>) -> DataResponse {
        // Whatever the provider's node put there, the receipt is the hub's.
        response.receipt = receipt;
        response
    }
}

#[cfg(test)]
#[test]
fn a_providers_retry_hint_is_not_passed_on() {
    let mut s = Status::resource_exhausted("busy");
    let md = s.metadata_mut();
    md.insert(
        truc_ops::RETRY_AFTER_MS_HEADER,
        "10".parse().expect("ascii"),
    );
    md.insert("content-type", "application/grpc".parse().expect("ascii"));
    let e = from_provider(s, "provider node vpcp".into());
    assert_eq!(e.outcome(), "RESOURCE_EXHAUSTED");
    let answered = Status::from(e);
    assert_eq!(answered.code(), tonic::Code::ResourceExhausted);
    assert!(
        answered
            .metadata()
            .get(truc_ops::RETRY_AFTER_MS_HEADER)
            .is_none()
    );
    // So the client's node does not take it for the hub's quota.
    assert_eq!(TxError::from_hub(answered).outcome(), "RESOURCE_EXHAUSTED");
}

#[tonic::async_trait]
impl Hub for HubService {
    async fn route(&self, request: Request<DataRequest>) -> Result<Response<DataResponse>, Status> {
        let inner = self.inner();
        inner
            .pipeline
            .run(&Route(inner), request)
            .await
            .map(Response::new)
    }

    async fn relay(
        &self,
        request: Request<tonic::Streaming<truc_proto::v1::RelayRequest>>,
    ) -> Result<Response<truc_proto::v1::RelayResponse>, Status> {
        let inner = self.inner();
        inner
            .pipeline
            .run(&crate::relay::Relay(inner), request)
            .await
            .map(Response::new)
    }

    async fn relay_status(
        &self,
        request: Request<truc_proto::v1::StatusUpdate>,
    ) -> Result<Response<truc_proto::v1::StatusAck>, Status> {
        let inner = self.inner();
        inner
            .pipeline
            .run(&crate::relay::RelayStatus(inner), request)
            .await
            .map(Response::new)
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
        // Read the registry at each request, so that a reloaded one is served.
        let registry = self.inner.registry.current();
        let caller = caller.identity.to_string();
        match self.inner.signed_registry.answer(
            &registry,
            &request.get_ref().known_version,
            &caller,
            std::time::Instant::now(),
        ) {
            Ok(snapshot) => Ok(Response::new(snapshot)),
            // RESOURCE_EXHAUSTED with retry-after-ms, as a quota refusal.
            Err(wait) => Err(TxError::Quota {
                message: format!(
                    "{caller} was sent the whole registry less than {} s ago: ask with its version (known_version), or again in {} ms",
                    crate::signed_registry::WHOLE_SNAPSHOT_EVERY.as_secs(),
                    wait.as_nanos().div_ceil(1_000_000)
                ),
                retry_after: wait,
            }
            .into()),
        }
    }
}
