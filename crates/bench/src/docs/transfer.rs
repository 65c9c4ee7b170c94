//! Attachment transfer: one large attachment through truc, and the same
//! bytes streamed by a bare tonic client over mutual TLS to a server that
//! writes them to a file and fsyncs it once.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tokio::{io::AsyncWriteExt, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming, transport::Server};
use truc_client::{Client, Upload};
use truc_demo::{G22, H37};
use truc_pki::{Layout, Role};
use truc_proto::v1::{
    DataRequest, DataResponse, RelayHeader, RelayRequest, RelayResponse, StatusAck, StatusUpdate,
    node_client::NodeClient,
    node_server::{Node, NodeServer},
    relay_request,
};

use crate::{
    mem::PeakGrowth,
    servers::{SERVER_NAME, Servers, mtls_channel},
};

use super::{
    DocsArgs, LARGE_TIMEOUT, MAX_MESSAGE_BYTES, MIB, RAW_BYTES_KEY, SEND_QUEUE, common::*,
};

pub(crate) struct LargeOutcome {
    pub(crate) bytes: u64,
    pub(crate) acked: Duration,
    pub(crate) delivered: Duration,
    /// This process's resident size when the send started, in KiB.
    pub(crate) resident_kib: Option<u64>,
    /// How far this process's peak resident size rose above that until the
    /// document was delivered, in KiB (in `truc-bench docs`, the sender, the
    /// hub and both nodes together, since they share the process).
    pub(crate) peak_growth_kib: Option<u64>,
}

pub(super) async fn large(client: &Client, args: &DocsArgs) -> Result<LargeOutcome, String> {
    large_document(client, args.size_mib * MIB, args.chunk_kib * 1024).await
}

/// Sends one document from H37 to G22 with one attachment of `size`
/// pseudo-random bytes in chunks of `chunk`, and follows it until G22's
/// status is "01".
pub(crate) async fn large_document(
    client: &Client,
    size: u64,
    chunk: u64,
) -> Result<LargeOutcome, String> {
    let data = Generated { size, chunk };
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
    let peak = PeakGrowth::start();
    let resident_kib = PeakGrowth::resident_kib();
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
    let delivered = start.elapsed();
    Ok(LargeOutcome {
        bytes: data.size,
        acked,
        delivered,
        resident_kib,
        peak_growth_kib: peak.kib(),
    })
}

// ------------------------------------------------------------ raw baseline

/// A `truc.v1.Node` server that writes the attachment bytes relayed to it
/// into one file, as a node writes a blob (tokio's file, chunk by chunk),
/// and fsyncs it once before answering.
pub(super) struct Sink {
    pub(super) path: PathBuf,
}

#[tonic::async_trait]
impl Node for Sink {
    async fn invoke(&self, _: Request<DataRequest>) -> Result<Response<DataResponse>, Status> {
        Err(Status::unimplemented("the raw baseline only takes Deliver"))
    }

    async fn deliver(
        &self,
        request: Request<Streaming<RelayRequest>>,
    ) -> Result<Response<RelayResponse>, Status> {
        let disk = |e: std::io::Error| Status::internal(format!("raw sink: {e}"));
        let mut stream = request.into_inner();
        let mut file = tokio::fs::File::create(&self.path).await.map_err(disk)?;
        let mut bytes: u64 = 0;
        while let Some(message) = stream.message().await? {
            if let Some(relay_request::Part::Chunk(c)) = message.part {
                file.write_all(&c.data).await.map_err(disk)?;
                bytes += c.data.len() as u64;
            }
        }
        file.flush().await.map_err(disk)?;
        file.sync_all().await.map_err(disk)?;
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
    /// The file the sink wrote, as long as it was.
    pub(super) on_disk: u64,
}

/// The same bytes, in the same chunks, streamed as `truc.v1.Node/Deliver`
/// over mutual TLS 1.3 (the hub's certificate to the ministry node's, as the
/// hub relays a document) to [`Sink`], which writes them to a file in `dir`
/// and fsyncs it once: the time until its answer.
pub(super) async fn raw(pki: &Layout, dir: &Path, args: &DocsArgs) -> Result<RawOutcome, String> {
    let path = dir.join("raw-baseline.bin");
    let mut servers = Servers::new();
    let addr = servers
        .serve_mtls(
            pki,
            Server::builder().add_service(
                NodeServer::new(Sink { path: path.clone() })
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            ),
        )
        .await?;
    let channel = mtls_channel(
        pki,
        (Role::Hub, "hub"),
        &addr.to_string(),
        (Role::Node, SERVER_NAME),
    )?;
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
    // (TLS handshake done) as the truc one does.
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
    drop(servers);
    let response = result.map_err(|s| format!("raw: Deliver failed: {}", s.message()))?;
    let counted = response
        .metadata()
        .get(RAW_BYTES_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let on_disk = std::fs::metadata(&path).map_or(0, |m| m.len());
    let _ = std::fs::remove_file(&path);
    if counted != data.size || on_disk != data.size {
        return Err(format!(
            "raw: sent {} bytes, the server counted {counted} and wrote {on_disk}",
            data.size
        ));
    }
    Ok(RawOutcome {
        bytes: counted,
        elapsed,
        on_disk,
    })
}
