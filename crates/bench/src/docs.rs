//! `truc-bench docs`: what moving official documents through truc costs.
//!
//! Three measurements, in one process, on one `truc-demo` deployment with
//! echo backends:
//!
//! - **small**: N senders on the province node each send a document from
//!   000.00.00.H37 to 000.00.00.G22 (one tiny attachment, or none), then poll
//!   the document's tracking (`Agency.GetTracking`) on the province node until
//!   G22's status is "01". The province node sets "01" when the hub's relay
//!   to the ministry node has been acknowledged, that is once the ministry
//!   node has the document flushed in G22's inbox. Latency runs from the
//!   start of `SendDocument` to the poll that saw "01".
//! - **large**: one document with one attachment of S MiB of pseudo-random
//!   bytes, generated chunk by chunk while it is sent (never held whole in
//!   memory), timed from the first message to "01" seen, and to the
//!   `SendDocument` acknowledgement.
//! - **raw**: the same bytes, in the same chunk size and the same message
//!   type, streamed by plain gRPC (no TLS, no disk, no checks) to a trivial
//!   in-process `truc.v1.Node/Deliver` server that only counts them.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::ValueEnum;
use hdrhistogram::Histogram;
use ring::digest::{Context, SHA256};
use tokio::sync::mpsc;
use tokio_stream::{
    StreamExt,
    wrappers::{ReceiverStream, TcpListenerStream},
};
use tonic::{
    Request, Response, Status, Streaming,
    transport::{Channel, Endpoint, Server},
};
use truc_demo::{BackendKind, DemoOptions, Deployment, G22, H37};
use truc_proto::v1::{
    Attachment, Chunk, DataRequest, DataResponse, DocumentCode, Envelope, GetTrackingRequest,
    Organ, PromulgationInfo, RelayHeader, RelayRequest, RelayResponse, SendDocumentRequest,
    StatusAck, StatusUpdate, Tracking,
    agency_client::AgencyClient,
    node_client::NodeClient,
    node_server::{Node, NodeServer},
    relay_request, send_document_request,
};

use crate::{MAX_LATENCY_US, cpu_model};

const MIB: u64 = 1024 * 1024;
/// Largest gRPC message either side accepts (a 1 MiB chunk and its framing fit).
const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// Messages queued between the task making chunks and the network (as `truc send`).
const SEND_QUEUE: usize = 4;
/// A small document not seen as "01" this long after its send started is an error.
const SMALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The same for the large document.
const LARGE_TIMEOUT: Duration = Duration::from_secs(600);
/// The promulgation date of every benchmark document (any real date will do).
const DATE: &str = "2026/01/15";
/// Response metadata key in which the raw server reports the bytes it counted.
const RAW_BYTES_KEY: &str = "x-bench-bytes";

/// Which measurements to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// Small documents per second.
    Small,
    /// One large attachment through truc, then the raw tonic baseline.
    Large,
    /// Small, then large, then raw.
    All,
}

/// Options of `truc-bench docs`.
#[derive(clap::Args, Debug)]
pub struct DocsArgs {
    /// Concurrent senders of small documents.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    senders: u64,
    /// Seconds measured for small documents.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration: u64,
    /// Seconds of small documents before measuring (not counted).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    warmup: u64,
    /// Bytes of the one attachment of each small document; 0 sends none.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(0..=MIB))]
    attachment_bytes: u64,
    /// Milliseconds between two tracking polls of one document.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    poll_ms: u64,
    /// Size of the large attachment, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    size_mib: u64,
    /// Chunk size for the large attachment and the raw baseline, in KiB (at most 1 MiB, truc's limit).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1024))]
    chunk_kib: u64,
    /// Which measurements to run.
    #[arg(long, value_enum, default_value_t = Part::All)]
    part: Part,
    /// Audit records are written without flushing to disk (documents and
    /// their blobs are still flushed).
    #[arg(long)]
    no_durable: bool,
    /// Also print the results as one JSON line.
    #[arg(long)]
    json: bool,
}

fn part_name(p: Part) -> &'static str {
    match p {
        Part::Small => "small",
        Part::Large => "large",
        Part::All => "all",
    }
}

// ------------------------------------------------------------ the bytes

/// The attachment: `size` bytes of pseudo-random data made chunk by chunk
/// from the chunk's index (splitmix64), so that it can be made twice (once
/// for its SHA-256, once to send) without ever being held whole.
#[derive(Clone, Copy)]
struct Generated {
    size: u64,
    chunk: u64,
}

impl Generated {
    fn chunks(self) -> u64 {
        self.size.div_ceil(self.chunk)
    }

    /// Chunk `i`: its offset and its bytes.
    fn chunk(self, i: u64) -> (u64, Bytes) {
        let offset = i * self.chunk;
        let len = usize::try_from(self.chunk.min(self.size.saturating_sub(offset))).unwrap_or(0);
        let mut state = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x7275_6374_6265_6e63;
        let mut buf = Vec::with_capacity(len + 8);
        while buf.len() < len {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            buf.extend_from_slice(&z.to_le_bytes());
        }
        buf.truncate(len);
        (offset, Bytes::from(buf))
    }

    /// The SHA-256 of the whole attachment (made once, not timed).
    fn sha256(self) -> Bytes {
        let mut hash = Context::new(&SHA256);
        for i in 0..self.chunks() {
            hash.update(&self.chunk(i).1);
        }
        Bytes::copy_from_slice(hash.finish().as_ref())
    }
}

/// Sends `first`, then every chunk of `data` (attachment 0, each with its
/// SHA-256, as `truc send` does) wrapped by `wrap`, into `tx`. Stops quietly
/// when the receiving side is gone (the call's error is the one to report).
async fn feed<M>(first: M, data: Generated, tx: mpsc::Sender<M>, wrap: fn(Chunk) -> M) {
    if tx.send(first).await.is_err() {
        return;
    }
    for i in 0..data.chunks() {
        let (offset, bytes) = data.chunk(i);
        if tx
            .send(wrap(truc_doc::chunks::chunk(0, offset, bytes)))
            .await
            .is_err()
        {
            return;
        }
    }
}

fn envelope(number: &str, attachments: Vec<Attachment>) -> Envelope {
    Envelope {
        from: Some(Organ {
            organ_id: H37.into(),
            organ_name: "UBND tỉnh Lạng Sơn".into(),
            ..Organ::default()
        }),
        to: vec![Organ {
            organ_id: G22.into(),
            ..Organ::default()
        }],
        code: Some(DocumentCode {
            code_number: number.into(),
            code_notation: "BENCH".into(),
        }),
        promulgation_info: Some(PromulgationInfo {
            place: "Lạng Sơn".into(),
            promulgation_date: DATE.into(),
        }),
        subject: "truc-bench".into(),
        document_id: truc_doc::DocumentId::format(H37, DATE, number, "BENCH"),
        attachments,
        ..Envelope::default()
    }
}

fn attachment(name: &str, size: u64, sha256: Bytes) -> Attachment {
    Attachment {
        name: name.into(),
        content_type: "application/octet-stream".into(),
        size,
        sha256,
        description: String::new(),
    }
}

fn g22_status(t: &Tracking) -> (&str, &str, &str) {
    t.recipients
        .iter()
        .find(|r| r.recipient == G22)
        .map_or(("", "", ""), |r| {
            (
                r.status.as_str(),
                r.delivery.as_str(),
                r.last_error.as_str(),
            )
        })
}

/// How a poll for "01" ended.
enum Seen {
    Delivered,
    /// The window ended first (the document is not counted).
    WindowEnded,
}

/// Polls the sender's tracking of `document_id` every `poll` until G22 is
/// at "01"; `polls` counts the calls made.
async fn poll_until_01(
    client: &mut AgencyClient<Channel>,
    document_id: &str,
    poll: Duration,
    give_up: Instant,
    stop_at: Option<Instant>,
    polls: &AtomicU64,
) -> Result<Seen, Status> {
    loop {
        tokio::time::sleep(poll).await;
        polls.fetch_add(1, Ordering::Relaxed);
        let t = client
            .get_tracking(GetTrackingRequest {
                sender: H37.into(),
                document_id: document_id.into(),
            })
            .await?
            .into_inner();
        match g22_status(&t) {
            ("01", _, _) => return Ok(Seen::Delivered),
            (_, "failed", error) => {
                return Err(Status::failed_precondition(format!(
                    "delivery failed: {error}"
                )));
            }
            _ => {}
        }
        let now = Instant::now();
        if stop_at.is_some_and(|end| now >= end) {
            return Ok(Seen::WindowEnded);
        }
        if now >= give_up {
            return Err(Status::deadline_exceeded(
                "not at 01 within truc-bench's timeout",
            ));
        }
    }
}

// ------------------------------------------------------------ small documents

/// What one small-document sender saw.
struct SmallTally {
    /// Send start to "01" seen, µs.
    delivered_us: Histogram<u64>,
    /// Send start to `SendDocument` acknowledged, µs.
    acked_us: Histogram<u64>,
    errors: BTreeMap<&'static str, (u64, String)>,
}

impl SmallTally {
    fn new() -> Result<SmallTally, String> {
        let h = || {
            Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .map_err(|e| format!("cannot make a histogram: {e}"))
        };
        Ok(SmallTally {
            delivered_us: h()?,
            acked_us: h()?,
            errors: BTreeMap::new(),
        })
    }

    fn error(&mut self, status: &Status) {
        self.errors
            .entry(truc_ops::code_name(status.code()))
            .or_insert_with(|| (0, status.message().to_owned()))
            .0 += 1;
    }

    fn merge(&mut self, other: SmallTally) -> Result<(), String> {
        let bad = |e| format!("cannot merge histograms: {e:?}");
        self.delivered_us.add(&other.delivered_us).map_err(bad)?;
        self.acked_us.add(&other.acked_us).map_err(bad)?;
        for (code, (n, msg)) in other.errors {
            self.errors.entry(code).or_insert((0, msg)).0 += n;
        }
        Ok(())
    }
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[derive(Clone, Copy)]
struct Window {
    measure: Instant,
    end: Instant,
}

/// The messages of one small document (envelope and at most one chunk).
fn small_messages(number: &str, tiny: Option<&(Attachment, Chunk)>) -> Vec<SendDocumentRequest> {
    let env = envelope(number, tiny.iter().map(|(a, _)| a.clone()).collect());
    let mut out = vec![SendDocumentRequest {
        part: Some(send_document_request::Part::Envelope(env)),
    }];
    if let Some((_, chunk)) = tiny {
        out.push(SendDocumentRequest {
            part: Some(send_document_request::Part::Chunk(chunk.clone())),
        });
    }
    out
}

/// One small document: sent, then polled until "01" (or `stop_at`).
/// Returns when it was acknowledged (if it was) and how the wait ended.
async fn one_small(
    client: &mut AgencyClient<Channel>,
    number: &str,
    tiny: Option<&(Attachment, Chunk)>,
    poll: Duration,
    stop_at: Option<Instant>,
    polls: &AtomicU64,
) -> (Option<Instant>, Result<Seen, Status>) {
    let start = Instant::now();
    let sent = tokio::time::timeout(
        SMALL_TIMEOUT,
        client.send_document(tokio_stream::iter(small_messages(number, tiny))),
    )
    .await
    .unwrap_or_else(|_| {
        Err(Status::deadline_exceeded(
            "SendDocument not acknowledged within truc-bench's timeout",
        ))
    });
    let document_id = match sent {
        Ok(r) => r.into_inner().document_id,
        Err(status) => return (None, Err(status)),
    };
    let acked = Instant::now();
    let seen = poll_until_01(
        client,
        &document_id,
        poll,
        start + SMALL_TIMEOUT,
        stop_at,
        polls,
    )
    .await;
    (Some(acked), seen)
}

/// One sender: send a document, poll until "01", repeat until the window
/// ends. A document counts if its "01" is seen inside the measured window.
async fn small_sender(
    mut client: AgencyClient<Channel>,
    task: u64,
    run: u64,
    tiny: Option<Arc<(Attachment, Chunk)>>,
    window: Window,
    poll: Duration,
    polls: Arc<AtomicU64>,
) -> Result<SmallTally, String> {
    let mut tally = SmallTally::new()?;
    let mut n: u64 = 0;
    let in_window = |t: Instant| t >= window.measure && t <= window.end;
    while Instant::now() < window.end {
        n += 1;
        let number = format!("{run}-{task}-{n}");
        let start = Instant::now();
        let (acked, seen) = one_small(
            &mut client,
            &number,
            tiny.as_deref(),
            poll,
            Some(window.end),
            &polls,
        )
        .await;
        let done = Instant::now();
        match (acked, seen) {
            (Some(acked), Ok(Seen::Delivered)) if in_window(done) => {
                tally.delivered_us.saturating_record(us(done - start));
                tally.acked_us.saturating_record(us(acked - start));
            }
            (_, Ok(_)) => {}
            (_, Err(status)) => {
                if in_window(done) {
                    tally.error(&status);
                }
            }
        }
    }
    Ok(tally)
}

struct SmallOutcome {
    tally: SmallTally,
    seconds: f64,
    polls: u64,
}

impl SmallOutcome {
    fn docs(&self) -> u64 {
        self.tally.delivered_us.len()
    }
    fn rate(&self) -> f64 {
        self.docs() as f64 / self.seconds
    }
    fn errors(&self) -> u64 {
        self.tally.errors.values().map(|(n, _)| n).sum()
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn small(client: &AgencyClient<Channel>, args: &DocsArgs) -> Result<SmallOutcome, String> {
    let tiny = if args.attachment_bytes == 0 {
        None
    } else {
        let data = Bytes::from(vec![
            0x5a_u8;
            usize::try_from(args.attachment_bytes).unwrap_or(0)
        ]);
        let sha = Bytes::copy_from_slice(ring::digest::digest(&SHA256, &data).as_ref());
        Some(Arc::new((
            attachment("tiny.bin", args.attachment_bytes, sha),
            truc_doc::chunks::chunk(0, 0, data),
        )))
    };
    // Document numbers must be new in every run against the same data.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let poll = Duration::from_millis(args.poll_ms);
    // One document first: it opens the connections and checks the path works.
    let (_, first) = one_small(
        &mut client.clone(),
        &format!("{run}-first"),
        tiny.as_deref(),
        poll,
        None,
        &AtomicU64::new(0),
    )
    .await;
    if let Err(s) = first {
        return Err(format!(
            "small: the first document failed: {}: {}",
            truc_ops::code_name(s.code()),
            s.message()
        ));
    }
    let polls = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure = start + Duration::from_secs(args.warmup);
    let window = Window {
        measure,
        end: measure + Duration::from_secs(args.duration),
    };
    let mut tasks = Vec::new();
    for task in 0..args.senders {
        tasks.push(tokio::spawn(small_sender(
            client.clone(),
            task,
            run,
            tiny.clone(),
            window,
            poll,
            polls.clone(),
        )));
    }
    // Polls counted over the measured window only.
    tokio::time::sleep_until(measure.into()).await;
    let polls_at_measure = polls.load(Ordering::Relaxed);
    tokio::time::sleep_until(window.end.into()).await;
    let polls_in_window = polls.load(Ordering::Relaxed) - polls_at_measure;
    let mut total = SmallTally::new()?;
    for t in tasks {
        total.merge(
            t.await
                .map_err(|e| format!("small: a sender failed: {e}"))??,
        )?;
    }
    Ok(SmallOutcome {
        tally: total,
        seconds: args.duration as f64,
        polls: polls_in_window,
    })
}

// ------------------------------------------------------------ large attachment

struct LargeOutcome {
    bytes: u64,
    acked: Duration,
    delivered: Duration,
    polls: u64,
}

async fn large(client: &AgencyClient<Channel>, args: &DocsArgs) -> Result<LargeOutcome, String> {
    let mut client = client.clone();
    let data = Generated {
        size: args.size_mib * MIB,
        chunk: args.chunk_kib * 1024,
    };
    let sha = data.sha256();
    let number = format!(
        "L{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let env = envelope(&number, vec![attachment("large.bin", data.size, sha)]);
    // Open the connection (if the small part did not) before timing.
    let _ = client
        .get_tracking(GetTrackingRequest {
            sender: H37.into(),
            document_id: env.document_id.clone(),
        })
        .await;
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let first = SendDocumentRequest {
        part: Some(send_document_request::Part::Envelope(env.clone())),
    };
    let start = Instant::now();
    let feeder = tokio::spawn(feed(first, data, tx, |c| SendDocumentRequest {
        part: Some(send_document_request::Part::Chunk(c)),
    }));
    let sent =
        tokio::time::timeout(LARGE_TIMEOUT, client.send_document(ReceiverStream::new(rx))).await;
    let acked = start.elapsed();
    feeder.abort();
    let response = match sent {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => {
            return Err(format!(
                "large: SendDocument failed: {}: {}",
                truc_ops::code_name(s.code()),
                s.message()
            ));
        }
        Err(_) => return Err("large: SendDocument not acknowledged within 600 s".into()),
    };
    let polls = AtomicU64::new(0);
    poll_until_01(
        &mut client,
        &response.document_id,
        Duration::from_millis(args.poll_ms),
        start + LARGE_TIMEOUT,
        None,
        &polls,
    )
    .await
    .map_err(|s| {
        format!(
            "large: waiting for 01: {}: {}",
            truc_ops::code_name(s.code()),
            s.message()
        )
    })?;
    Ok(LargeOutcome {
        bytes: data.size,
        acked,
        delivered: start.elapsed(),
        polls: polls.load(Ordering::Relaxed),
    })
}

// ------------------------------------------------------------ raw baseline

/// A `truc.v1.Node` server that only counts the attachment bytes relayed to it.
struct Sink;

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

struct RawOutcome {
    bytes: u64,
    elapsed: Duration,
}

async fn raw(args: &DocsArgs) -> Result<RawOutcome, String> {
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

// ------------------------------------------------------------ the run

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64().max(1e-9)
}

/// `truc-bench docs`.
pub async fn run(args: DocsArgs) -> Result<(), String> {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = cpu_model();
    println!("truc-bench docs: one process, client and servers share the cores");
    println!(
        "  (load generator, hub, two nodes, echo backends and the raw server; loopback TCP; data in a temporary directory)"
    );
    println!("machine: nproc {cpus}, CPU {cpu}");
    println!(
        "parameters: docs --part {} --senders {} --duration {} --warmup {} --attachment-bytes {} --poll-ms {} --size-mib {} --chunk-kib {}{}",
        part_name(args.part),
        args.senders,
        args.duration,
        args.warmup,
        args.attachment_bytes,
        args.poll_ms,
        args.size_mib,
        args.chunk_kib,
        if args.no_durable { " --no-durable" } else { "" },
    );
    println!(
        "  documents 000.00.00.H37 (province node) -> hub -> 000.00.00.G22 (ministry node), mTLS 1.3; attachments fsynced at each node; audit {}",
        if args.no_durable {
            "NOT flushed (--no-durable)"
        } else {
            "durable (group commit)"
        },
    );
    println!(
        "  delivered = the sender's GetTracking on the province node shows status 01 for G22 (set when the ministry node has acknowledged the document in its inbox, on disk); each document is polled every {} ms after SendDocument returns",
        args.poll_ms
    );

    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let small_outcome;
    let mut large_outcome = None;
    let mut raw_outcome = None;
    {
        let deployment = start(dir.path(), &args).await?;
        let result = async {
            let client = deployment
                .agency_client(truc_demo::PROVINCE_NODE, truc_demo::PROVINCE_CLIENT)
                .map_err(|e| format!("cannot make an agency client: {e}"))?
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            let s = if matches!(args.part, Part::Small | Part::All) {
                let s = small(&client, &args).await?;
                print_small(&s);
                Some(s)
            } else {
                None
            };
            if matches!(args.part, Part::Large | Part::All) {
                // Let the last small documents' deliveries finish.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let l = large(&client, &args).await?;
                print_large(&l);
                large_outcome = Some(l);
            }
            Ok::<_, String>(s)
        }
        .await;
        let stopped = deployment.stop().await;
        small_outcome = result?;
        stopped.map_err(|e| format!("the deployment did not stop cleanly: {e}"))?;
    }
    if matches!(args.part, Part::Large | Part::All) {
        let r = raw(&args).await?;
        print_raw(&r, large_outcome.as_ref());
        raw_outcome = Some(r);
    }
    if args.json {
        print_json(
            &args,
            cpus,
            &cpu,
            small_outcome.as_ref(),
            large_outcome.as_ref(),
            raw_outcome.as_ref(),
        );
    }
    Ok(())
}

async fn start(dir: &Path, args: &DocsArgs) -> Result<Deployment, String> {
    Deployment::start(DemoOptions {
        backend: BackendKind::Echo,
        durable: !args.no_durable,
        ..DemoOptions::new(dir)
    })
    .await
    .map_err(|e| format!("cannot start the deployment: {e}"))
}

fn print_small(s: &SmallOutcome) {
    let d = &s.tally.delivered_us;
    let a = &s.tally.acked_us;
    println!();
    println!("small documents (closed loop, each sender one document at a time):");
    println!(
        "  {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "docs", "errors", "docs/s", "p50 ms", "p99 ms", "max ms", "ack p50", "ack p99", "polls/s"
    );
    println!(
        "  {:>7} {:>7} {:>9.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.3} {:>10.1}",
        s.docs(),
        s.errors(),
        s.rate(),
        ms(d, 0.50),
        ms(d, 0.99),
        d.max() as f64 / 1000.0,
        ms(a, 0.50),
        ms(a, 0.99),
        s.polls as f64 / s.seconds,
    );
    println!(
        "  latency = SendDocument start -> 01 seen (includes up to one poll interval); ack = SendDocument start -> acknowledged (on disk at the province node)"
    );
    if s.docs() > 0 {
        println!(
            "  tracking polls: {} in the window, {:.1} per delivered document",
            s.polls,
            s.polls as f64 / s.docs() as f64
        );
    }
    for (code, (n, msg)) in &s.tally.errors {
        println!("  errors: {n} × {code} (first: {msg})");
    }
}

fn print_large(l: &LargeOutcome) {
    println!();
    println!(
        "large attachment: one document, one attachment of {} MiB ({} bytes), pseudo-random, generated while sent",
        l.bytes / MIB,
        l.bytes
    );
    println!(
        "  acknowledged (on disk at the province node): {:.3} s  {:.1} MB/s ({:.1} MiB/s)",
        l.acked.as_secs_f64(),
        mb_per_s(l.bytes, l.acked),
        mib_per_s(l.bytes, l.acked)
    );
    println!(
        "  delivered (01 seen, on disk at the ministry node): {:.3} s  {:.1} MB/s ({:.1} MiB/s); {} tracking polls",
        l.delivered.as_secs_f64(),
        mb_per_s(l.bytes, l.delivered),
        mib_per_s(l.bytes, l.delivered),
        l.polls
    );
}

fn print_raw(r: &RawOutcome, l: Option<&LargeOutcome>) {
    println!();
    println!(
        "raw tonic baseline: the same bytes and chunks, client-streamed as truc.v1.Node/Deliver over plain HTTP/2 (no TLS, no disk, no checks) to an in-process server that counts them"
    );
    println!(
        "  {:.3} s  {:.1} MB/s ({:.1} MiB/s)",
        r.elapsed.as_secs_f64(),
        mb_per_s(r.bytes, r.elapsed),
        mib_per_s(r.bytes, r.elapsed)
    );
    if let Some(l) = l {
        println!(
            "truc/raw MB/s: {:.3} to 01 seen (truc takes {:.1}x as long as raw), {:.3} to SendDocument acknowledged",
            r.elapsed.as_secs_f64() / l.delivered.as_secs_f64(),
            l.delivered.as_secs_f64() / r.elapsed.as_secs_f64(),
            r.elapsed.as_secs_f64() / l.acked.as_secs_f64(),
        );
    }
}

fn print_json(
    args: &DocsArgs,
    cpus: usize,
    cpu: &str,
    s: Option<&SmallOutcome>,
    l: Option<&LargeOutcome>,
    r: Option<&RawOutcome>,
) {
    let small = s.map(|s| {
        serde_json::json!({
            "docs": s.docs(),
            "errors": s.errors(),
            "errors_by_code": s.tally.errors.iter().map(|(c, (n, _))| (c.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "docs_per_s": s.rate(),
            "p50_ms": ms(&s.tally.delivered_us, 0.5),
            "p99_ms": ms(&s.tally.delivered_us, 0.99),
            "max_ms": s.tally.delivered_us.max() as f64 / 1000.0,
            "ack_p50_ms": ms(&s.tally.acked_us, 0.5),
            "ack_p99_ms": ms(&s.tally.acked_us, 0.99),
            "tracking_polls": s.polls,
        })
    });
    let large = l.map(|l| {
        serde_json::json!({
            "bytes": l.bytes,
            "acked_s": l.acked.as_secs_f64(),
            "acked_mb_per_s": mb_per_s(l.bytes, l.acked),
            "delivered_s": l.delivered.as_secs_f64(),
            "delivered_mb_per_s": mb_per_s(l.bytes, l.delivered),
        })
    });
    let raw = r.map(|r| {
        serde_json::json!({
            "bytes": r.bytes,
            "elapsed_s": r.elapsed.as_secs_f64(),
            "mb_per_s": mb_per_s(r.bytes, r.elapsed),
        })
    });
    let ratio = match (l, r) {
        (Some(l), Some(r)) => {
            serde_json::json!(r.elapsed.as_secs_f64() / l.delivered.as_secs_f64())
        }
        _ => serde_json::Value::Null,
    };
    let j = serde_json::json!({
        "machine": {"nproc": cpus, "cpu": cpu},
        "shared_cores": true,
        "params": {
            "part": part_name(args.part),
            "senders": args.senders,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "attachment_bytes": args.attachment_bytes,
            "poll_ms": args.poll_ms,
            "size_mib": args.size_mib,
            "chunk_kib": args.chunk_kib,
            "durable": !args.no_durable,
        },
        "small": small,
        "large": large,
        "raw": raw,
        "truc_over_raw_mb_per_s": ratio,
    });
    println!("{j}");
}
