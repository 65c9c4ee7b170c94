//! Attachment transfer: one large attachment through truc, and the same
//! bytes streamed by plain gRPC to a server that only counts them.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_stream::{
    StreamExt,
    wrappers::{ReceiverStream, TcpListenerStream},
};
use tonic::{
    Request, Response, Status, Streaming,
    transport::{Endpoint, Server},
};
use truc_client::{Client, Upload};
use truc_demo::{G22, H37};
use truc_proto::v1::{
    DataRequest, DataResponse, RelayHeader, RelayRequest, RelayResponse, StatusAck, StatusUpdate,
    node_client::NodeClient,
    node_server::{Node, NodeServer},
    relay_request,
};

use super::{
    DocsArgs, LARGE_TIMEOUT, MAX_MESSAGE_BYTES, MIB, RAW_BYTES_KEY, SEND_QUEUE, common::*,
};

pub(super) struct LargeOutcome {
    pub(super) bytes: u64,
    pub(super) acked: Duration,
    pub(super) delivered: Duration,
}

pub(super) async fn large(client: &Client, args: &DocsArgs) -> Result<LargeOutcome, String> {
    let data = Generated {
        size: args.size_mib * MIB,
        chunk: args.chunk_kib * 1024,
    };
    let sha = data.sha256();
    let number = format!("L{}", truc_ops::now_ms());
    let env = envelope(&number, Vec::new());
    let upload = Upload::reader(
        attachment("large.bin", data.size, sha),
        GeneratedReader::new(data),
    )
    .chunk_bytes(usize::try_from(data.chunk).unwrap_or(usize::MAX));
    // Open the connection (if the small part did not) before timing.
    let _ = client.tracking(H37, &env.document_id).await;
    let start = Instant::now();
    let sent = tokio::time::timeout(LARGE_TIMEOUT, client.send_document(env, vec![upload])).await;
    let acked = start.elapsed();
    let response = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let f = Failure::from(e);
            return Err(format!(
                "large: SendDocument failed: {}: {}",
                truc_ops::code_name(f.code),
                f.message
            ));
        }
        Err(_) => return Err("large: SendDocument not acknowledged within 600 s".into()),
    };
    wait_until_01(client, &response.document_id, start + LARGE_TIMEOUT, None)
        .await
        .map_err(|f| {
            format!(
                "large: waiting for 01: {}: {}",
                truc_ops::code_name(f.code),
                f.message
            )
        })?;
    Ok(LargeOutcome {
        bytes: data.size,
        acked,
        delivered: start.elapsed(),
    })
}

// ------------------------------------------------------------ raw baseline

/// A `truc.v1.Node` server that only counts the attachment bytes relayed to it.
pub(super) struct Sink;

#[tonic::async_trait]
impl Node for Sink {
    async fn invoke(&self, _: Request<DataRequest>) -> Result<Response<DataResponse>, Status> {
        Err(Status::unimplemented("the raw baseline only takes Deliver"))
    }

    async fn deliver(
        &self,
        request: Request<Streaming<RelayRequest>>,
    ) -> Result<Response<RelayResponse>, Status> {
        let mut stream = request.into_inner();
        let mut bytes: u64 = 0;
        while let Some(message) = stream.message().await? {
            if let Some(relay_request::Part::Chunk(c)) = message.part {
                bytes += c.data.len() as u64;
            }
        }
        let mut response = Response::new(RelayResponse::default());
        if let Ok(v) = bytes.to_string().parse() {
            response.metadata_mut().insert(RAW_BYTES_KEY, v);
        }
        Ok(response)
    }

    async fn deliver_status(
        &self,
        _: Request<StatusUpdate>,
    ) -> Result<Response<StatusAck>, Status> {
        Err(Status::unimplemented("the raw baseline only takes Deliver"))
    }
}

pub(super) struct RawOutcome {
    pub(super) bytes: u64,
    pub(super) elapsed: Duration,
}

pub(super) async fn raw(args: &DocsArgs) -> Result<RawOutcome, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("raw: cannot bind a loopback port: {e}"))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| format!("raw: cannot read the bound address: {e}"))?;
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        if let Ok(s) = &stream {
            let _ = s.set_nodelay(true);
        }
        stream
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(
                NodeServer::new(Sink)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            // TCP_NODELAY on accepted connections, as truc's servers do:
            // without it, small HTTP/2 frames (WINDOW_UPDATE) wait for Nagle.
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("raw: address {addr}: {e}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("raw: cannot connect to {addr}: {e}"))?;
    let mut client = NodeClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let data = Generated {
        size: args.size_mib * MIB,
        chunk: args.chunk_kib * 1024,
    };
    let env = envelope(
        "RAW",
        vec![attachment("large.bin", data.size, data.sha256())],
    );
    let header = || RelayRequest {
        part: Some(relay_request::Part::Header(RelayHeader {
            transaction_id: "00".repeat(16),
            sender: H37.into(),
            recipient: G22.into(),
            envelope: Some(env.clone()),
        })),
    };
    // One empty call first, so that the timed one finds the connection warm
    // as the truc one does.
    client
        .deliver(tokio_stream::iter(vec![header()]))
        .await
        .map_err(|s| format!("raw: the first call failed: {}", s.message()))?;
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let start = Instant::now();
    let feeder = tokio::spawn(feed(header(), data, tx, |c| RelayRequest {
        part: Some(relay_request::Part::Chunk(c)),
    }));
    let result = client.deliver(ReceiverStream::new(rx)).await;
    let elapsed = start.elapsed();
    feeder.abort();
    let _ = stop.send(());
    let _ = server.await;
    let response = result.map_err(|s| format!("raw: Deliver failed: {}", s.message()))?;
    let counted = response
        .metadata()
        .get(RAW_BYTES_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if counted != data.size {
        return Err(format!(
            "raw: sent {} bytes, the server counted {counted}",
            data.size
        ));
    }
    Ok(RawOutcome {
        bytes: counted,
        elapsed,
    })
}
