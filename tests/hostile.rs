//! A hostile participant for tests: certificates from the cluster's own CA,
//! and clients that send whatever a test wants to whoever it wants.
//!
//! - [`Hostile::hub_as_node`]: `truc.v1.Hub` as a registered node (the demo's
//!   `vpcp` or `lgsp-langson`), or as any node name with a certificate.
//! - [`Hostile::node_as`]: `truc.v1.Node` on a running node, as anyone
//!   (the hub's own certificate to test what a node accepts from the hub).
//! - [`Hostile::agency_as`]: `truc.v1.Agency` on a node, as an agency system.
//! - [`Hostile::unregistered_node`]: a fresh node certificate signed by the
//!   cluster's CA for a name the registry does not know.
//! - [`SilentPeer`]: a TLS gRPC server with a valid node certificate, in a
//!   registered node's place, that accepts `Invoke`, `Deliver` and
//!   `DeliverStatus` and never answers.
//!
//! ```ignore
//! let c = truc_tests::start().await;
//! let bad = c.hostile();
//! let mut hub = bad.hub_as_node(PROVINCE_NODE);      // a registered node gone bad
//! let mut agency = bad.agency_as(PROVINCE_NODE, PROVINCE_CLIENT);
//! let stranger = bad.unregistered_node("rogue");     // CA-signed, not in the registry
//! let silent = SilentPeer::replace(&mut c.deployment, MINISTRY_NODE).await;
//! ```
//!
//! Clients are lazy (they connect on the first call) and accept answers up to
//! 64 MiB; what they send is limited only by the server.

use std::time::Duration;

use tokio::{sync::watch, task::JoinHandle};
use tonic::{Request, Response, Status, Streaming, transport::Channel};
use truc_pki::{Identity, Role, TlsFiles};
use truc_proto::v1::{
    DataRequest, DataResponse, RelayRequest, RelayResponse, StatusAck, StatusUpdate,
    agency_client::AgencyClient,
    hub_client::HubClient,
    node_client::NodeClient,
    node_server::{Node, NodeServer},
};

use crate::Cluster;

/// The largest answer a hostile client accepts.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// A hostile participant of one cluster: see the module documentation.
pub struct Hostile<'a> {
    cluster: &'a Cluster,
}

impl Cluster {
    /// A hostile participant holding this cluster's certificates.
    pub fn hostile(&self) -> Hostile<'_> {
        Hostile { cluster: self }
    }
}

impl Hostile<'_> {
    /// A lazy channel to `addr` whose server must be `server_name`, with the certificate in `files`.
    pub fn channel(&self, addr: &str, server_name: &str, files: &TlsFiles) -> Channel {
        let tls = truc_pki::client_config(files).unwrap_or_else(|e| panic!("client config: {e}"));
        truc_pki::channel(addr, server_name, tls).unwrap_or_else(|e| panic!("channel: {e}"))
    }

    /// The certificate files of `role`/`name` in the cluster's PKI (issued by `truc pki init`).
    pub fn files(&self, role: Role, name: &str) -> TlsFiles {
        self.cluster.tls(role, name)
    }

    /// `truc.v1.Hub` as node `node`, with the certificate the PKI has for it.
    pub fn hub_as_node(&self, node: &str) -> HubClient<Channel> {
        self.hub_with(&self.files(Role::Node, node))
    }

    /// `truc.v1.Hub` with any certificate (e.g. from [`Hostile::unregistered_node`]).
    pub fn hub_with(&self, files: &TlsFiles) -> HubClient<Channel> {
        let addr = self.cluster.deployment.hub().addr().to_string();
        HubClient::new(self.channel(&addr, "hub", files)).max_decoding_message_size(MAX_ANSWER)
    }

    /// `truc.v1.Node` on running node `target`, as `role`/`name` (e.g. `Role::Hub, "hub"`).
    pub fn node_as(&self, target: &str, role: Role, name: &str) -> NodeClient<Channel> {
        let node = self
            .cluster
            .deployment
            .node(target)
            .unwrap_or_else(|| panic!("no running node {target}"));
        let channel = self.channel(&node.addr().to_string(), target, &self.files(role, name));
        NodeClient::new(channel).max_decoding_message_size(MAX_ANSWER)
    }

    /// `truc.v1.Agency` on running node `target`, as agency system `client`.
    pub fn agency_as(&self, target: &str, client: &str) -> AgencyClient<Channel> {
        self.cluster
            .deployment
            .agency_client(target, client)
            .unwrap_or_else(|e| panic!("agency client: {e}"))
            .max_decoding_message_size(MAX_ANSWER)
    }

    /// A fresh certificate for node `name`, signed by the cluster's CA; the
    /// registry does not know the name. Panics if it was issued before.
    pub fn unregistered_node(&self, name: &str) -> TlsFiles {
        let id = Identity::new(Role::Node, name).unwrap_or_else(|e| panic!("identity: {e}"));
        truc_devca::issue(&self.cluster.deployment.files.pki, &id, 30)
            .unwrap_or_else(|e| panic!("issuing {name}: {e}"))
    }
}

/// A node that accepts every call and never answers: TLS with the real
/// certificate of the node it replaces, so the hub connects to it as to that
/// node. `Deliver` reads the whole stream first, then hangs. Calls are
/// counted, and each count wakes [`SilentPeer::wait_for`]; the server stops
/// when the peer is dropped.
pub struct SilentPeer {
    /// The address it listens on (the replaced node's).
    pub addr: std::net::SocketAddr,
    calls: watch::Receiver<Calls>,
    server: JoinHandle<()>,
}

/// (Invoke, Deliver, DeliverStatus) calls received so far.
type Calls = (usize, usize, usize);

impl SilentPeer {
    /// Stops node `id` of `deployment` and listens on its address in its place.
    pub async fn replace(deployment: &mut crate::Deployment, id: &str) -> SilentPeer {
        let addr = deployment
            .node(id)
            .unwrap_or_else(|| panic!("no running node {id}"))
            .addr();
        deployment
            .stop_node(id)
            .await
            .unwrap_or_else(|e| panic!("stopping {id}: {e}"));
        let identity = Identity::new(Role::Node, id).unwrap_or_else(|e| panic!("identity: {e}"));
        let files = deployment.files.pki.files(&identity);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("binding {addr}: {e}"));
        SilentPeer::serve(listener, &files)
    }

    /// Serves silently on `listener` with the server certificate in `files`.
    pub fn serve(listener: tokio::net::TcpListener, files: &TlsFiles) -> SilentPeer {
        truc_pki::install_crypto_provider();
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local addr: {e}"));
        let config = truc_pki::server_config(files).unwrap_or_else(|e| panic!("tls: {e}"));
        let (counter, calls) = watch::channel(Calls::default());
        let service = NodeServer::new(Silent(counter))
            .max_decoding_message_size(MAX_ANSWER)
            .max_encoding_message_size(MAX_ANSWER);
        let server = tokio::spawn(async move {
            let incoming =
                truc_pki::tls_incoming(listener, config, truc_pki::AcceptLimits::default());
            // Runs until the peer is dropped (the task is aborted).
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        SilentPeer {
            addr,
            calls,
            server,
        }
    }

    /// (Invoke, Deliver, DeliverStatus) calls received so far.
    pub fn calls(&self) -> (usize, usize, usize) {
        *self.calls.borrow()
    }

    /// Waits (20 s at most, else panics) until `done` holds for
    /// [`SilentPeer::calls`]: woken by each call, no polling.
    pub async fn wait_for(&self, done: impl Fn((usize, usize, usize)) -> bool) {
        let mut calls = self.calls.clone();
        let reached =
            tokio::time::timeout(Duration::from_secs(20), calls.wait_for(|c| done(*c))).await;
        match reached {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => panic!("the silent peer stopped: {:?}", self.calls()),
            Err(_) => panic!("the silent peer never got there: {:?}", self.calls()),
        }
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The Node API of a [`SilentPeer`]: counts each call where the peer sees it.
struct Silent(watch::Sender<Calls>);

/// Never returns.
async fn hang<T>() -> Result<Response<T>, Status> {
    std::future::pending().await
}

#[tonic::async_trait]
impl Node for Silent {
    async fn invoke(&self, _: Request<DataRequest>) -> Result<Response<DataResponse>, Status> {
        self.0.send_modify(|c| c.0 += 1);
        hang().await
    }

    async fn deliver(
        &self,
        request: Request<Streaming<RelayRequest>>,
    ) -> Result<Response<RelayResponse>, Status> {
        self.0.send_modify(|c| c.1 += 1);
        let mut stream = request.into_inner();
        while let Ok(Some(_)) = stream.message().await {}
        hang().await
    }

    async fn deliver_status(
        &self,
        _: Request<StatusUpdate>,
    ) -> Result<Response<StatusAck>, Status> {
        self.0.send_modify(|c| c.2 += 1);
        hang().await
    }
}
