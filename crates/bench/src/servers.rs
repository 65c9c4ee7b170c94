//! The baselines' servers: the echo backend behind mutual TLS 1.3, a bare
//! tonic forwarder hop, and a fake provider node for the hub-only mode. They
//! use the same TLS stack as truc's hops (`truc_pki`'s server and client
//! configs, `tls_incoming`, `channel`) and plain tonic otherwise: no audit,
//! no registry, no metrics.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::{
    Request, Response, Status, Streaming,
    transport::{Channel, Server, server::Router},
};
use truc_demo::backend::Echo;
use truc_pki::{AcceptLimits, Identity, Layout, Role};
use truc_proto::v1::{
    DataRequest, DataResponse, RelayRequest, RelayResponse, StatusAck, StatusUpdate,
    backend_client::BackendClient,
    backend_server::{Backend, BackendServer},
    node_server::{Node, NodeServer},
};

/// The server name (and node identity) every baseline server presents.
pub(crate) const SERVER_NAME: &str = truc_demo::MINISTRY_NODE;

/// Stops the servers started here when dropped.
pub(crate) struct Servers {
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Servers {
    pub(crate) fn new() -> Servers {
        Servers { stop: Vec::new() }
    }

    /// Serves `router` over mTLS (the ministry node's certificate) on
    /// `listener`, until `self` is dropped.
    fn serve(&mut self, pki: &Layout, listener: TcpListener, router: Router) -> Result<(), String> {
        self.serve_as(pki, SERVER_NAME, listener, router)
    }

    /// Serves `router` over mTLS with node `name`'s certificate.
    fn serve_as(
        &mut self,
        pki: &Layout,
        name: &str,
        listener: TcpListener,
        router: Router,
    ) -> Result<(), String> {
        let files = pki.files(&identity(Role::Node, name)?);
        let config = truc_pki::server_config(&files).map_err(|e| format!("server TLS: {e}"))?;
        let incoming = truc_pki::tls_incoming(listener, config, AcceptLimits::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.stop.push(tx);
        tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = rx.await;
        }));
        Ok(())
    }

    /// Serves `router` over mTLS (the ministry node's certificate) on a new
    /// loopback port, until `self` is dropped.
    pub(crate) async fn serve_mtls(
        &mut self,
        pki: &Layout,
        router: Router,
    ) -> Result<SocketAddr, String> {
        let (listener, addr) = bind().await?;
        self.serve(pki, listener, router)?;
        Ok(addr)
    }

    /// The echo backend over mTLS 1.3 (the direct-mtls baseline).
    pub(crate) async fn echo_mtls(
        &mut self,
        pki: &Layout,
        limit: usize,
    ) -> Result<SocketAddr, String> {
        self.serve_mtls(
            pki,
            Server::builder().add_service(
                BackendServer::new(Echo)
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            ),
        )
        .await
    }

    /// A bare forwarder hop: takes `Backend.Invoke` over mTLS, makes a new
    /// call to the mTLS echo backend at `to` over one pooled channel (the
    /// hub's certificate, as the hub calls a node), and answers what came
    /// back. The payload stays `Bytes` (prost decodes it without a copy).
    pub(crate) async fn forwarder(
        &mut self,
        pki: &Layout,
        to: SocketAddr,
        limit: usize,
    ) -> Result<SocketAddr, String> {
        let files = pki.files(&identity(Role::Hub, "hub")?);
        let tls = truc_pki::client_config_for(&files, Role::Node)
            .map_err(|e| format!("forwarder TLS: {e}"))?;
        let channel = truc_pki::channel(&to.to_string(), SERVER_NAME, tls)
            .map_err(|e| format!("forwarder channel: {e}"))?;
        let next = BackendClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        self.serve_mtls(
            pki,
            Server::builder().add_service(
                BackendServer::new(Forwarder { next })
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            ),
        )
        .await
    }

    /// A provider node that answers the hub's `Node.Invoke` with the
    /// request's payload, on `listener` (the real node's address), with
    /// node `name`'s certificate.
    pub(crate) fn fake_provider_as(
        &mut self,
        pki: &Layout,
        name: &str,
        listener: TcpListener,
        limit: usize,
    ) -> Result<(), String> {
        self.serve_as(
            pki,
            name,
            listener,
            Server::builder().add_service(
                NodeServer::new(FakeProvider)
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
            ),
        )
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for tx in self.stop.drain(..) {
            let _ = tx.send(());
        }
    }
}

pub(crate) fn identity(role: Role, name: &str) -> Result<Identity, String> {
    Identity::new(role, name).map_err(|e| format!("identity {name}: {e}"))
}

async fn bind() -> Result<(TcpListener, SocketAddr), String> {
    truc_demo::backend::bind_loopback()
        .await
        .map_err(|e| format!("cannot bind a loopback port: {e}"))
}

/// A mTLS channel from the identity `(role, name)` to `addr`, whose server
/// must be `server_name` with role `server_role`.
pub(crate) fn mtls_channel(
    pki: &Layout,
    (role, name): (Role, &str),
    addr: &str,
    (server_role, server_name): (Role, &str),
) -> Result<Channel, String> {
    let files = pki.files(&identity(role, name)?);
    let tls = truc_pki::client_config_for(&files, server_role)
        .map_err(|e| format!("client TLS of {name}: {e}"))?;
    truc_pki::channel(addr, server_name, tls).map_err(|e| format!("channel to {addr}: {e}"))
}

#[derive(Clone)]
struct Forwarder {
    next: BackendClient<Channel>,
}

#[tonic::async_trait]
impl Backend for Forwarder {
    async fn invoke(
        &self,
        request: Request<DataRequest>,
    ) -> Result<Response<DataResponse>, Status> {
        let answer = self.next.clone().invoke(request.into_inner()).await?;
        Ok(Response::new(answer.into_inner()))
    }
}

struct FakeProvider;

#[tonic::async_trait]
impl Node for FakeProvider {
    async fn invoke(
        &self,
        request: Request<DataRequest>,
    ) -> Result<Response<DataResponse>, Status> {
        // The provider's node adds nothing to its backend's answer here.
        Echo.invoke(request).await
    }

    async fn deliver(
        &self,
        _: Request<Streaming<RelayRequest>>,
    ) -> Result<Response<RelayResponse>, Status> {
        Err(Status::unimplemented(
            "the fake provider only answers Invoke",
        ))
    }

    async fn deliver_status(
        &self,
        _: Request<StatusUpdate>,
    ) -> Result<Response<StatusAck>, Status> {
        Err(Status::unimplemented(
            "the fake provider only answers Invoke",
        ))
    }
}
