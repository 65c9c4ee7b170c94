//! The node's HTTP listener (`[http]`): HTTP/1.1 and HTTP/2 over the same
//! mutual TLS as the gRPC port (the node's certificate, client certificates
//! from the same CA, the same accept limits). Each request carries the
//! peer's [`PeerInfo`] from its certificate as an extension, as tonic does
//! for gRPC; the routes (the REST door of [`crate::rest_door`], and others
//! merged in `start`) read the caller from there, never from a header.

use std::{sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use truc_ops::{ServeError, Shutdown, config::Limits};
use truc_pki::AcceptLimits;

/// Serves `router` on `listener` over mutual TLS until `shutdown` fires;
/// open requests then get `drain` to finish. `limits` are the node's: the
/// accept limits, streams per HTTP/2 connection, keepalive; request headers
/// must arrive within the handshake timeout.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<truc_pki::LiveTls>,
    limits: &Limits,
    router: axum::Router,
    shutdown: Shutdown,
    drain: Duration,
) -> Result<(), ServeError> {
    // The live config (reloaded certificates and CRLs, revoked peers'
    // connections closed) offers h2 and http/1.1: REST clients often speak
    // HTTP/1.1.
    let accept: AcceptLimits = limits.accept();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper enforces no header timeout: a peer trickling
    // headers would hold its connection until the idle timeout.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(accept.handshake_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .keep_alive_interval(Duration::from_millis(limits.keepalive_interval_ms))
        .keep_alive_timeout(Duration::from_millis(limits.keepalive_timeout_ms));
    let mut incoming = Box::pin(truc_pki::tls_incoming_live(listener, tls, accept));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let conn = tokio::select! {
            conn = incoming.next() => conn,
            () = shutdown.wait() => break,
        };
        let Some(conn) = conn else { break };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "http accept failed");
                continue;
            }
        };
        let peer = conn.peer_info().clone();
        let service = tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(peer.clone());
                request
            },
        );
        let shutdown = shutdown.clone();
        let builder = builder.clone();
        connections.spawn(async move {
            let serving = builder.serve_connection_with_upgrades(
                TokioIo::new(conn),
                TowerToHyperService::new(service),
            );
            tokio::pin!(serving);
            let result = tokio::select! {
                result = serving.as_mut() => result,
                () = shutdown.wait() => {
                    serving.as_mut().graceful_shutdown();
                    serving.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "http connection ended");
            }
        });
        // Reap finished connections as we go.
        while connections.try_join_next().is_some() {}
    }
    // The stream owns the listener: free the address before the drain.
    drop(incoming);
    if tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            ?drain,
            "http requests still open after the drain deadline; closing"
        );
        connections.abort_all();
    }
    Ok(())
}
