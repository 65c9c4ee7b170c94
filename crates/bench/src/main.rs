//! `truc-bench`: a load generator that measures what routing a data call
//! through truc costs. It starts a whole deployment in this process (the
//! `truc-demo` PKI, registry, hub, two nodes and echo backends, on loopback),
//! then sends calls two ways: *direct*, plain gRPC to the echo backend, and
//! *routed*, through the province node, the hub and the ministry node over
//! mutual TLS 1.3, with every hop auditing. It prints calls, errors, calls per
//! second and latency percentiles for each, and their ratios.
//!
//! It is not a capacity test of a real deployment: the load generator and all
//! the servers share the machine's cores, the network is loopback and the
//! backend does no work. The figures compare the two paths on one machine;
//! they do not predict throughput between agencies.
//!
//! `truc-bench docs` measures documents instead (see [`docs`]): small
//! documents per second end to end, one large attachment's MB/s, and a raw
//! tonic streaming baseline of the same bytes.
//!
//! `truc-bench national` runs a national day through one hub (see
//! [`national`]).
//!
//! `truc-bench edxml` writes and parses an edXML package with one large
//! attachment (see [`edxml`]): throughput and peak memory growth.

#![forbid(unsafe_code)]

mod audit;
mod docs;
mod edxml;
mod mem;
mod national;
mod processes;
mod schedule;
mod servers;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};
use truc_demo::{BackendKind, CITIZEN_LOOKUP, DemoOptions, Deployment, H37};
use truc_pki::Role;
use truc_proto::v1::{
    CallRequest, DataRequest, backend_client::BackendClient, hub_client::HubClient,
};

use schedule::{Arrivals, Schedule};

/// mimalloc instead of the system allocator: the per-call path allocates
/// (HTTP/2 frames, protobuf messages, sled nodes) from several threads, and
/// glibc malloc cost about a fifth of all CPU there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Largest latency the histograms hold, in microseconds (one minute); longer
/// ones are recorded as one minute.
const MAX_LATENCY_US: u64 = 60_000_000;
const CONTENT_TYPE: &str = "application/octet-stream";
/// How long one call may take before the generator gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Which path the calls take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Plain gRPC (no TLS, no audit) straight to the echo backend.
    #[value(alias = "direct")]
    DirectPlain,
    /// Mutual TLS 1.3 (truc's TLS stack) straight to an echo backend: the
    /// baseline.
    DirectMtls,
    /// A bare tonic forwarder hop over mTLS in front of the mTLS echo
    /// backend: the baseline of one hop.
    Forwarder,
    /// The hub hop alone: the generator calls `Hub.Route` as the province
    /// node, a fake provider node answers the hub's `Node.Invoke`.
    HubOnly,
    /// Province node -> hub -> ministry node -> echo backend, over mTLS, audited.
    Routed,
    /// Every mode in one run, plus routed on a second deployment whose
    /// audit does not flush, and their ratios.
    All,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::DirectPlain => "direct-plain",
            Mode::DirectMtls => "direct-mtls",
            Mode::Forwarder => "forwarder",
            Mode::HubOnly => "hub-only",
            Mode::Routed => "routed",
            Mode::All => "all",
        }
    }
}

/// The name of routed on the deployment whose audit does not flush.
const ROUTED_NO_FLUSH: &str = "routed-no-flush";

/// Load generator for truc: direct and routed data calls, latency
/// percentiles; `truc-bench docs` for documents.
#[derive(Parser, Debug)]
#[command(name = "truc-bench", version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Calls in flight: the number of sending tasks.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,
    /// Seconds measured, per mode.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration: u64,
    /// Seconds of load before measuring, per mode (not counted).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    warmup: u64,
    /// Payload size in bytes (the echo backend sends it back).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=(256 * 1024 * 1024)))]
    payload: u64,
    /// Which path to measure (also as the first argument: `truc-bench all`).
    #[arg(long, value_enum, default_value_t = Mode::All)]
    mode: Mode,
    /// The mode, given without `--mode`.
    #[arg(value_enum, conflicts_with = "mode")]
    mode_arg: Option<Mode>,
    /// Audit records are written without flushing to disk (measures what
    /// durability costs; never the default).
    #[arg(long, alias = "no-durable")]
    no_flush: bool,
    /// Open loop: this many calls per second in total; latency is measured
    /// from each call's intended send time. At most `--concurrency` calls
    /// are in flight.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: fixed intervals or a Poisson process.
    #[arg(long, value_enum, default_value_t = Arrivals::Fixed)]
    arrivals: Arrivals,
    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    connections: u64,
    /// Also print the results as one JSON object (one line).
    #[arg(long)]
    json: bool,
    /// The hub, both nodes and the echo backends run as separate processes
    /// of the `truc` binary (see `--truc`); measures direct-mtls (served by
    /// this process) and routed only, with each process's CPU and memory.
    #[arg(long)]
    processes: bool,
    /// With `--processes`: the `truc` binary to run (default: the one beside
    /// this program).
    #[arg(long, requires = "processes")]
    truc: Option<std::path::PathBuf>,
    /// With `--processes`: after the calls, send one document with an
    /// attachment of this many MiB through the processes and report each
    /// one's peak resident memory while it moves (0: none).
    #[arg(long, default_value_t = 0, requires = "processes", value_parser = clap::value_parser!(u64).range(0..=1024))]
    document_mib: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Documents: small documents per second end to end, one large
    /// attachment's MB/s, and a raw tonic streaming baseline of the same bytes.
    Docs(docs::DocsArgs),
    /// edXML packages: writes then parses one with a large attachment
    /// (`--size-mib`, default 200), reports MiB/s and peak RSS growth.
    Edxml(edxml::EdxmlArgs),
    /// A national day through one hub: a generated country-sized registry
    /// (10 000 agencies, 100 nodes, 1 000 services, 100 000 grants), 2.7
    /// million Zipf-distributed transactions, the report by provider and
    /// the verification of the statistics against the log.
    National(national::NationalArgs),
    /// The audit log's writer alone, no network: records appended from many
    /// tasks to a hub's or a node's log; records/s and CPU per record.
    Audit(audit::AuditArgs),
    /// Batches of sled keys shaped like a hub's commit groups, one flush
    /// each: CPU per record of a chosen set of keys (`--keys`).
    StoreKeys(audit::StoreKeysArgs),
}

/// A client of one path, cheap to clone (clones share the connection).
#[derive(Clone)]
enum Client {
    /// `Backend.Invoke`: the echo backend, plain or over mTLS, or the forwarder.
    Direct(BackendClient<Channel>),
    /// `Hub.Route` as the province node.
    Hub(HubClient<Channel>),
    /// The client library agency systems use (`truc_client`).
    Routed(truc_client::Client),
}

impl Client {
    /// One call; the echoed payload must come back whole. A call that takes
    /// longer than [`CALL_TIMEOUT`] counts as DEADLINE_EXCEEDED.
    async fn call(&mut self, payload: &Bytes, tx: u128) -> Result<(), tonic::Status> {
        within_call_timeout(self.call_once(payload, tx)).await
    }

    async fn call_once(&mut self, payload: &Bytes, tx: u128) -> Result<(), tonic::Status> {
        let echoed = match self {
            Client::Direct(c) => {
                c.invoke(data_request(payload, tx))
                    .await?
                    .into_inner()
                    .payload
            }
            Client::Hub(c) => {
                c.route(data_request(payload, tx))
                    .await?
                    .into_inner()
                    .payload
            }
            Client::Routed(c) => {
                let request = CallRequest {
                    client_agency: H37.to_owned(),
                    service: CITIZEN_LOOKUP.to_owned(),
                    content_type: CONTENT_TYPE.to_owned(),
                    payload: payload.clone(),
                    ..CallRequest::default()
                };
                c.call(request, None)
                    .await
                    .map_err(|e| {
                        e.status()
                            .cloned()
                            .unwrap_or_else(|| tonic::Status::unknown(e.to_string()))
                    })?
                    .payload
            }
        };
        if echoed.len() == payload.len() {
            Ok(())
        } else {
            Err(tonic::Status::data_loss(format!(
                "sent {} bytes, {} came back",
                payload.len(),
                echoed.len()
            )))
        }
    }
}

/// `call`'s result, or DEADLINE_EXCEEDED after [`CALL_TIMEOUT`].
async fn within_call_timeout<T>(
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(
                "no answer within truc-bench's 60 s timeout",
            ))
        })
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A transaction id of the form nodes issue (the millisecond `at`, then 80
/// bits), the 80 bits drawn from `tx` rather than from the system's
/// randomness so that the generator spends nothing on it: distinct `tx`
/// give distinct-looking ids, in no order within the millisecond.
fn node_like_id(at: u64, tx: u128) -> String {
    let x = tx.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    let x = x ^ (x >> 64);
    let mut random = [0u8; 10];
    random.copy_from_slice(&x.to_be_bytes()[6..]);
    truc_audit::ordered_transaction_id(at, &random)
}

/// The request of direct and hub-only calls: what a client node sends,
/// with an id issued now as a node issues it.
fn data_request(payload: &Bytes, tx: u128) -> DataRequest {
    DataRequest {
        transaction_id: node_like_id(unix_ms(), tx),
        client_agency: H37.to_owned(),
        service: CITIZEN_LOOKUP.to_owned(),
        content_type: CONTENT_TYPE.to_owned(),
        payload: payload.clone(),
        ..DataRequest::default()
    }
}

/// What one sending task saw.
struct Tally {
    latency_us: Histogram<u64>,
    /// Errors by gRPC code name: count and the first message.
    errors: BTreeMap<&'static str, (u64, String)>,
    /// Open loop: calls due in the measured window that were never sent
    /// because every task was busy until it ended.
    not_sent: u64,
}

impl Tally {
    fn new() -> Result<Tally, String> {
        Ok(Tally {
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .map_err(|e| format!("cannot make a histogram: {e}"))?,
            errors: BTreeMap::new(),
            not_sent: 0,
        })
    }

    fn record(&mut self, result: Result<(), tonic::Status>, latency: Duration) {
        match result {
            Ok(()) => {
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latency_us.saturating_record(us.max(1));
            }
            Err(status) => {
                let entry = self
                    .errors
                    .entry(truc_ops::code_name(status.code()))
                    .or_insert_with(|| (0, status.message().to_owned()));
                entry.0 += 1;
            }
        }
    }

    fn merge(&mut self, other: Tally) -> Result<(), String> {
        self.latency_us
            .add(&other.latency_us)
            .map_err(|e| format!("cannot merge histograms: {e:?}"))?;
        for (code, (n, msg)) in other.errors {
            self.errors.entry(code).or_insert((0, msg)).0 += n;
        }
        self.not_sent += other.not_sent;
        Ok(())
    }

    fn error_count(&self) -> u64 {
        self.errors.values().map(|(n, _)| n).sum()
    }
}

/// The measured figures of one mode.
struct Outcome {
    mode: &'static str,
    tally: Tally,
    seconds: f64,
    /// CPU seconds (user and system) of the whole process in the measured
    /// window, when the system said; with `--processes`, of the bench's and
    /// every deployment process's together.
    cpu_seconds: Option<f64>,
    /// With `--processes`: each deployment process's CPU seconds in the
    /// measured window, by name.
    cpu_by_process: Vec<(String, Option<f64>)>,
}

/// User and system CPU time of this process so far, from `/proc/self/stat`
/// (Linux; in clock ticks of 1/100 s, the USER_HZ of every Linux the bench
/// runs on): the generator and every server of the run together.
fn process_cpu_seconds() -> Option<f64> {
    cpu_seconds_of("self")
}

/// CPU seconds of this process's threads whose names `chosen` picks (from
/// `/proc/self/task`); threads that have ended are not counted.
fn threads_cpu_seconds(chosen: impl Fn(&str) -> bool) -> Option<f64> {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(task) = task else { continue };
        let tid = task.file_name();
        let Some(tid) = tid.to_str() else { continue };
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if chosen(comm.trim_end()) {
            total += cpu_seconds_of(&format!("self/task/{tid}")).unwrap_or(0.0);
        }
    }
    Some(total)
}

/// [`process_cpu_seconds`] of process `pid` (or `self`).
fn cpu_seconds_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

impl Outcome {
    /// CPU microseconds per call: what one call costs all the processes'
    /// threads together (generator, servers, audit writers, sled).
    fn cpu_us_per_call(&self) -> Option<f64> {
        let calls = self.calls();
        self.cpu_seconds
            .filter(|_| calls > 0)
            .map(|s| s * 1e6 / calls as f64)
    }

    fn calls(&self) -> u64 {
        self.tally.latency_us.len()
    }

    fn rate(&self) -> f64 {
        self.calls() as f64 / self.seconds
    }

    fn ms(&self, q: f64) -> f64 {
        self.tally.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.tally.latency_us.max() as f64 / 1000.0
    }
}

/// When a run measures.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure: Instant,
    end: Instant,
}

/// Closed loop: one call at a time until the window ends; calls that
/// complete inside the measured window count.
async fn closed_loop(
    mut client: Client,
    payload: Bytes,
    window: Window,
    task: u64,
) -> Result<Tally, String> {
    let mut tally = Tally::new()?;
    let mut n: u64 = 0;
    while Instant::now() < window.end {
        n += 1;
        let sent = Instant::now();
        let result = client
            .call(&payload, (u128::from(task) << 64) | u128::from(n))
            .await;
        let done = Instant::now();
        if done >= window.measure && done <= window.end {
            tally.record(result, done - sent);
        }
    }
    Ok(tally)
}

/// Open loop: the shared schedule says when call `i` is due; its latency
/// runs from then, so time spent waiting for a free task counts.
async fn open_loop(
    mut client: Client,
    payload: Bytes,
    window: Window,
    task: u64,
    schedule: Arc<Mutex<Schedule>>,
) -> Result<Tally, String> {
    let mut tally = Tally::new()?;
    loop {
        let (i, at) = schedule
            .lock()
            .map_err(|_| "the schedule lock is poisoned".to_owned())?
            .next_call();
        let due = window.start + at;
        if due >= window.end {
            return Ok(tally);
        }
        let measured = due >= window.measure;
        if Instant::now() >= window.end {
            // Behind schedule: this call would start after the end.
            if measured {
                tally.not_sent += 1;
            }
            continue;
        }
        tokio::time::sleep_until(due.into()).await;
        let result = client
            .call(&payload, (u128::from(task) << 64) | u128::from(i))
            .await;
        if measured {
            tally.record(result, due.elapsed());
        }
    }
}

/// Waits for every sending task and merges what they counted.
async fn join_tallies(
    tasks: Vec<tokio::task::JoinHandle<Result<Tally, String>>>,
    what: &str,
) -> Result<Tally, String> {
    let mut total = Tally::new()?;
    for t in tasks {
        total.merge(
            t.await
                .map_err(|e| format!("{what}: a sending task failed: {e}"))??,
        )?;
    }
    Ok(total)
}

/// Runs one mode: warmup, then the measured window, over `clients`.
async fn run(mode: &'static str, clients: &[Client], args: &Args) -> Result<Outcome, String> {
    run_watching(mode, clients, args, Vec::new()).await
}

/// [`run`], also measuring the CPU time of the processes `watched` (name,
/// pid) in the measured window.
async fn run_watching(
    mode: &'static str,
    clients: &[Client],
    args: &Args,
    watched: Vec<(String, u32)>,
) -> Result<Outcome, String> {
    let payload = Bytes::from(vec![0x5a_u8; usize::try_from(args.payload).unwrap_or(0)]);
    // Ids of the hub's log are unique across modes and runs.
    let salt = u128::from(std::process::id()) << 96
        ^ u128::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        ) << 64
        ^ u128::from(mode.len() as u64) << 120;
    // Open every connection and check the path works before timing anything.
    for (i, c) in clients.iter().enumerate() {
        c.clone()
            .call(&payload, salt ^ (u128::MAX - i as u128))
            .await
            .map_err(|s| {
                format!(
                    "{mode}: the first call failed: {}: {}",
                    truc_ops::code_name(s.code()),
                    s.message()
                )
            })?;
    }
    let start = Instant::now();
    let measure = start + Duration::from_secs(args.warmup);
    let window = Window {
        start,
        measure,
        end: measure + Duration::from_secs(args.duration),
    };
    let schedule = args.rate.map(|rate| {
        Arc::new(Mutex::new(Schedule::new(
            rate,
            args.arrivals,
            0x7275_635f_6265_6e63,
        )))
    });
    let mut tasks = Vec::new();
    for task in 0..args.concurrency {
        let client = clients[(task % clients.len() as u64) as usize].clone();
        let payload = payload.clone();
        let task = task ^ (salt >> 64) as u64;
        tasks.push(match &schedule {
            None => tokio::spawn(closed_loop(client, payload, window, task)),
            Some(s) => tokio::spawn(open_loop(client, payload, window, task, s.clone())),
        });
    }
    // The processes' CPU time over the measured window: this one's, then
    // each watched one's.
    let cpu = tokio::spawn(async move {
        let sample = || {
            std::iter::once(process_cpu_seconds())
                .chain(
                    watched
                        .iter()
                        .map(|(_, pid)| cpu_seconds_of(&pid.to_string())),
                )
                .collect::<Vec<_>>()
        };
        tokio::time::sleep_until(window.measure.into()).await;
        let start = sample();
        tokio::time::sleep_until(window.end.into()).await;
        let used: Vec<Option<f64>> = sample()
            .into_iter()
            .zip(start)
            .map(|(end, start)| Some(end? - start?))
            .collect();
        let total = used.iter().copied().sum::<Option<f64>>();
        let by_process = watched
            .into_iter()
            .map(|(name, _)| name)
            .zip(used.into_iter().skip(1))
            .collect();
        (total, by_process)
    });
    let total = join_tallies(tasks, mode).await?;
    let (cpu_seconds, cpu_by_process) = cpu.await.unwrap_or((None, Vec::new()));
    Ok(Outcome {
        mode,
        tally: total,
        seconds: args.duration as f64,
        cpu_seconds,
        cpu_by_process,
    })
}

fn message_limit(args: &Args) -> usize {
    usize::try_from(args.payload)
        .unwrap_or(usize::MAX)
        .max(4 * 1024 * 1024)
        .saturating_add(64 * 1024)
}

fn direct_clients(backend: &str, args: &Args) -> Result<Vec<Client>, String> {
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        let channel = Endpoint::from_shared(format!("http://{backend}"))
            .map_err(|e| format!("backend address {backend}: {e}"))?
            .tcp_nodelay(true)
            .connect_lazy();
        clients.push(backend_client(channel, args));
    }
    Ok(clients)
}

fn backend_client(channel: Channel, args: &Args) -> Client {
    Client::Direct(
        BackendClient::new(channel)
            .max_decoding_message_size(message_limit(args))
            .max_encoding_message_size(message_limit(args)),
    )
}

/// `Backend.Invoke` over mTLS as the province's agency system (one
/// connection each), to the echo backend or the forwarder.
fn mtls_clients(
    pki: &truc_pki::Layout,
    to: SocketAddr,
    args: &Args,
) -> Result<Vec<Client>, String> {
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        let channel = servers::mtls_channel(
            pki,
            (Role::Client, truc_demo::PROVINCE_CLIENT),
            &to.to_string(),
            (Role::Node, servers::SERVER_NAME),
        )?;
        clients.push(backend_client(channel, args));
    }
    Ok(clients)
}

/// `Hub.Route` with the province node's certificate.
fn hub_clients(deployment: &Deployment, args: &Args) -> Result<Vec<Client>, String> {
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        let channel = servers::mtls_channel(
            &deployment.files.pki,
            (Role::Node, truc_demo::PROVINCE_NODE),
            &deployment.hub().addr().to_string(),
            (Role::Hub, "hub"),
        )?;
        clients.push(Client::Hub(
            HubClient::new(channel)
                .max_decoding_message_size(message_limit(args))
                .max_encoding_message_size(message_limit(args)),
        ));
    }
    Ok(clients)
}

fn routed_clients(deployment: &Deployment, args: &Args) -> Result<Vec<Client>, String> {
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        let client = deployment
            .agency_client(truc_demo::PROVINCE_NODE, truc_demo::PROVINCE_CLIENT)
            .map_err(|e| format!("cannot make an agency client: {e}"))?;
        clients.push(Client::Routed(
            truc_client::Client::from_grpc(client).max_message_bytes(message_limit(args)),
        ));
    }
    Ok(clients)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn print_results(outcomes: &[Outcome], ratios: &[Ratio], added: &[Added]) {
    println!();
    println!(
        "{:<15} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>11}",
        "mode", "calls", "errors", "calls/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "CPU µs/call"
    );
    for o in outcomes {
        println!(
            "{:<15} {:>9} {:>7} {:>10.1} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>11}",
            o.mode,
            o.calls(),
            o.tally.error_count(),
            o.rate(),
            o.ms(0.50),
            o.ms(0.90),
            o.ms(0.99),
            o.max_ms(),
            o.cpu_us_per_call()
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
        );
    }
    for o in outcomes {
        for (code, (n, msg)) in &o.tally.errors {
            println!("  {} errors: {n} × {code} (first: {msg})", o.mode);
        }
        if o.tally.not_sent > 0 {
            println!(
                "  {}: {} calls due in the window were never sent (every task busy): the rate was not reached",
                o.mode, o.tally.not_sent
            );
        }
    }
    for r in ratios {
        println!(
            "{}/{}: throughput {:.3}, p50 latency {:.2}×{}",
            r.of,
            r.over,
            r.throughput,
            r.p50,
            r.target.map_or(String::new(), |t| format!(
                " (target ≥ {t:.2}: {})",
                if r.throughput >= t { "met" } else { "NOT met" }
            ))
        );
    }
    for a in added {
        println!(
            "{} added latency over direct-mtls at the same rate: p50 {:+.3} ms, p99 {:+.3} ms",
            a.mode, a.p50_ms, a.p99_ms
        );
    }
}

/// One mode's throughput and p50 over another's, in the same run.
#[derive(Debug, Clone, PartialEq)]
struct Ratio {
    of: &'static str,
    over: &'static str,
    throughput: f64,
    p50: f64,
    /// The target for `throughput`, if it has one.
    target: Option<f64>,
}

/// Open loop: a mode's latency minus direct-mtls's at the same rate.
#[derive(Debug, Clone, PartialEq)]
struct Added {
    mode: &'static str,
    p50_ms: f64,
    p99_ms: f64,
}

/// The ratios the performance targets are stated in, for the modes measured.
/// Throughput targets hold for a closed loop only: an open loop sends every
/// mode the same rate.
fn ratios(outcomes: &[Outcome], payload: u64, closed: bool) -> Vec<Ratio> {
    let find = |m: &str| outcomes.iter().find(|o| o.mode == m && o.calls() > 0);
    let routed_target = if payload >= 4096 { 0.20 } else { 0.25 };
    [
        ("routed", "direct-mtls", Some(routed_target)),
        ("routed", "direct-plain", None),
        ("direct-mtls", "direct-plain", None),
        ("hub-only", "forwarder", Some(0.90)),
        ("routed", ROUTED_NO_FLUSH, Some(0.90)),
    ]
    .into_iter()
    .filter_map(|(of, over, target)| {
        let (a, b) = (find(of)?, find(over)?);
        Some(Ratio {
            of: a.mode,
            over: b.mode,
            throughput: a.rate() / b.rate(),
            p50: a.ms(0.5) / b.ms(0.5),
            target: target.filter(|_| closed),
        })
    })
    .collect()
}

/// Open loop: each mode's p50 and p99 minus direct-mtls's.
fn added_latency(outcomes: &[Outcome]) -> Vec<Added> {
    let Some(base) = outcomes
        .iter()
        .find(|o| o.mode == "direct-mtls" && o.calls() > 0)
    else {
        return Vec::new();
    };
    outcomes
        .iter()
        .filter(|o| o.mode != base.mode && o.mode != "direct-plain" && o.calls() > 0)
        .map(|o| Added {
            mode: o.mode,
            p50_ms: o.ms(0.5) - base.ms(0.5),
            p99_ms: o.ms(0.99) - base.ms(0.99),
        })
        .collect()
}

/// `x` rounded to `digits` decimals, as the text report shows it.
fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// The machine-readable results (`--json`).
fn results_json(args: &Args, outcomes: &[Outcome], cpus: usize, cpu: &str) -> serde_json::Value {
    let results: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            serde_json::json!({
                "mode": o.mode,
                "calls": o.calls(),
                "errors": o.tally.error_count(),
                "errors_by_code": o.tally.errors.iter().map(|(code, (n, _))| (*code, *n)).collect::<BTreeMap<_, _>>(),
                "not_sent": o.tally.not_sent,
                "calls_per_s": round(o.rate(), 1),
                "p50_ms": round(o.ms(0.50), 3),
                "p90_ms": round(o.ms(0.90), 3),
                "p99_ms": round(o.ms(0.99), 3),
                "max_ms": round(o.max_ms(), 3),
                "cpu_us_per_call": o.cpu_us_per_call().map(|v| round(v, 1)),
            })
        })
        .collect();
    let ratios: serde_json::Map<String, serde_json::Value> =
        ratios(outcomes, args.payload, args.rate.is_none())
            .into_iter()
            .map(|r| {
                let mut v = serde_json::json!({
                    "throughput": round(r.throughput, 4),
                    "p50": round(r.p50, 4),
                });
                if let Some(t) = r.target {
                    v["target"] = t.into();
                    v["met"] = (r.throughput >= t).into();
                }
                (format!("{}/{}", r.of, r.over), v)
            })
            .collect();
    let mut j = serde_json::json!({
        "machine": {"nproc": cpus, "cpu": cpu},
        "shared_cores": true,
        "config": {
            "mode": args.mode.name(),
            "concurrency": args.concurrency,
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "payload_bytes": args.payload,
            "durable": !args.no_flush,
            "rate": args.rate,
            "arrivals": args.rate.map(|_| args.arrivals.name()),
        },
        "results": results,
        "ratios": ratios,
    });
    let added = added_latency(outcomes);
    if args.rate.is_some() && !added.is_empty() {
        j["added_latency_ms"] = added
            .iter()
            .map(|a| {
                (
                    a.mode.to_owned(),
                    serde_json::json!({"p50": round(a.p50_ms, 3), "p99": round(a.p99_ms, 3)}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    j
}

/// The hub-only mode's clients: `Hub.Route` as the province node, with a
/// fake provider node in place of the ministry node (stopped), at its
/// address, where the registry sends the hub.
async fn hub_only_clients(
    deployment: &mut Deployment,
    servers: &mut servers::Servers,
    args: &Args,
) -> Result<Vec<Client>, String> {
    let addr = deployment
        .node(truc_demo::MINISTRY_NODE)
        .ok_or("no ministry node")?
        .addr();
    deployment
        .stop_node(truc_demo::MINISTRY_NODE)
        .await
        .map_err(|e| format!("cannot stop the ministry node: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot bind the ministry node's address {addr}: {e}"))?;
    servers.fake_provider_as(
        &deployment.files.pki,
        servers::SERVER_NAME,
        listener,
        message_limit(args),
    )?;
    let clients = hub_clients(deployment, args)?;
    // The hub's channel to the stopped node reconnects on the first call,
    // which may fail.
    let _ = clients[0]
        .clone()
        .call(&Bytes::new(), u128::from(std::process::id()))
        .await;
    Ok(clients)
}

/// Starts a deployment with the echo backend in a new temporary directory.
async fn start_deployment(
    args: &Args,
    durable: bool,
) -> Result<(tempfile::TempDir, Deployment), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let deployment = Deployment::start(DemoOptions {
        dir: dir.path().to_path_buf(),
        backend: BackendKind::Echo,
        durable,
        max_payload_bytes: usize::try_from(args.payload)
            .unwrap_or(usize::MAX)
            .max(4 * 1024 * 1024),
        ..DemoOptions::new(dir.path())
    })
    .await
    .map_err(|e| format!("cannot start the deployment: {e}"))?;
    Ok((dir, deployment))
}

/// Routed calls (the `routed` mode with its defaults: 64 in flight, 100 B,
/// durable unless `durable` is false) for `duration` seconds after `warmup`,
/// on a deployment of their own: the baseline `truc-bench docs
/// --against-routed` puts small documents against. Calls/s and errors.
pub(crate) async fn routed_baseline(
    duration: u64,
    warmup: u64,
    durable: bool,
) -> Result<(f64, u64), String> {
    let args = Args::try_parse_from([
        "truc-bench".to_string(),
        "routed".into(),
        "--duration".into(),
        duration.to_string(),
        "--warmup".into(),
        warmup.to_string(),
    ])
    .map_err(|e| format!("routed baseline: {e}"))?;
    let (dir, deployment) = start_deployment(&args, durable).await?;
    let result = match routed_clients(&deployment, &args) {
        Ok(clients) => run("routed", &clients, &args).await,
        Err(e) => Err(e),
    };
    let stopped = deployment.stop().await;
    drop(dir);
    let outcome = result?;
    stopped.map_err(|e| format!("the deployment did not stop cleanly: {e}"))?;
    let errors = outcome.tally.errors.values().map(|(n, _)| n).sum();
    Ok((outcome.rate(), errors))
}

/// Runs the modes `args` asks for on one deployment (and routed on a second,
/// not flushing one, with `all`). Prints the results and returns them as JSON.
async fn bench(mut args: Args) -> Result<serde_json::Value, String> {
    if let Some(m) = args.mode_arg.take() {
        args.mode = m;
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(format!("--rate must be a positive number, not {rate}"));
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = cpu_model();
    if args.processes {
        println!("truc-bench: separate processes, sharing the cores");
        println!(
            "  (this process: load generator and the direct-mtls echo server; truc hub, truc node x2 and truc demo-backend --echo x2 each their own process; loopback TCP)"
        );
    } else {
        println!("truc-bench: one process, client and servers share the cores");
        println!("  (load generator, hub, two nodes and echo backends; loopback TCP)");
    }
    println!("machine: nproc {cpus}, CPU {cpu}");
    println!(
        "parameters: --mode {} --concurrency {} --connections {} --duration {} --warmup {} --payload {}{}{}",
        args.mode.name(),
        args.concurrency,
        args.connections,
        args.duration,
        args.warmup,
        args.payload,
        if args.no_flush { " --no-flush" } else { "" },
        args.rate.map_or(String::new(), |r| format!(
            " --rate {r} --arrivals {}",
            args.arrivals.name()
        )),
    );
    println!(
        "  {} loop; direct-plain = plain gRPC to the echo backend; direct-mtls = mTLS 1.3 to it; forwarder = a bare tonic mTLS hop in front of direct-mtls; hub-only = Hub.Route as the province node, a fake provider node; routed = province node -> hub -> ministry node -> echo backend over mTLS 1.3",
        if args.rate.is_some() {
            "open (latency from intended send time)"
        } else {
            "closed"
        },
    );
    if args.no_flush {
        println!(
            "durable: NO. --no-flush: audit records are NOT flushed before calls are acknowledged"
        );
    } else {
        println!("durable: yes (audit group commit flushed before each acknowledgement)");
    }

    let modes: Vec<Mode> = match args.mode {
        Mode::All if args.processes => vec![Mode::DirectMtls, Mode::Routed],
        Mode::All => vec![
            Mode::DirectPlain,
            Mode::DirectMtls,
            Mode::Forwarder,
            Mode::Routed,
            Mode::HubOnly,
        ],
        m => vec![m],
    };
    if args.processes {
        return processes::bench(&args, &modes, cpus, &cpu).await;
    }
    let (dir, mut deployment) = start_deployment(&args, !args.no_flush).await?;
    let mut servers = servers::Servers::new();
    let result = async {
        let limit = message_limit(&args);
        let pki = deployment.files.pki.clone();
        let echo = servers.echo_mtls(&pki, limit).await?;
        let mut outcomes = Vec::new();
        for mode in modes {
            let clients = match mode {
                Mode::DirectPlain => {
                    let backend = deployment.describe()["backends"][0]
                        .as_str()
                        .ok_or("the deployment describes no backend")?
                        .to_owned();
                    direct_clients(&backend, &args)?
                }
                Mode::DirectMtls => mtls_clients(&pki, echo, &args)?,
                Mode::Forwarder => {
                    let forwarder = servers.forwarder(&pki, echo, limit).await?;
                    mtls_clients(&pki, forwarder, &args)?
                }
                Mode::Routed => routed_clients(&deployment, &args)?,
                Mode::HubOnly => hub_only_clients(&mut deployment, &mut servers, &args).await?,
                Mode::All => unreachable!("all is expanded above"),
            };
            outcomes.push(run(mode.name(), &clients, &args).await?);
        }
        Ok::<_, String>(outcomes)
    }
    .await;
    drop(servers);
    let stopped = deployment.stop().await;
    drop(dir);
    let mut outcomes = result?;
    stopped.map_err(|e| format!("the deployment did not stop cleanly: {e}"))?;
    if args.mode == Mode::All && !args.no_flush {
        let (dir, deployment) = start_deployment(&args, false).await?;
        let result = match routed_clients(&deployment, &args) {
            Ok(clients) => run(ROUTED_NO_FLUSH, &clients, &args).await,
            Err(e) => Err(e),
        };
        let stopped = deployment.stop().await;
        drop(dir);
        outcomes.push(result?);
        stopped.map_err(|e| format!("the deployment did not stop cleanly: {e}"))?;
    }
    let j = report(&args, &outcomes, cpus, &cpu);
    if args.json {
        println!("{j}");
    }
    Ok(j)
}

/// Prints the modes' figures, their ratios and (open loop) the latency
/// they add, and returns them as JSON.
fn report(args: &Args, outcomes: &[Outcome], cpus: usize, cpu: &str) -> serde_json::Value {
    let ratios = ratios(outcomes, args.payload, args.rate.is_none());
    let added = if args.rate.is_some() {
        added_latency(outcomes)
    } else {
        Vec::new()
    };
    print_results(outcomes, &ratios, &added);
    results_json(args, outcomes, cpus, cpu)
}

#[tokio::main]
async fn main() -> ExitCode {
    // As the `truc` binary does, so that the in-process deployments are
    // measured as the real processes run.
    if let Err(e) = truc_ops::memory::small_pages_unless_asked(
        std::env::var_os(truc_ops::memory::ALLOW_THP_VAR).as_deref(),
    ) {
        eprintln!("truc-bench: transparent huge pages could not be turned off: {e}");
    }
    let mut args = Args::parse();
    let result = match args.command.take() {
        Some(Command::Docs(docs)) => docs::run(docs).await,
        Some(Command::Edxml(a)) => edxml::run(a),
        Some(Command::National(a)) => national::run_national(a).await.map(|_| ()),
        Some(Command::Audit(a)) => audit::run_audit(a).await,
        Some(Command::StoreKeys(a)) => audit::run_store_keys(a),
        None => bench(args).await.map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("truc-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `j`'s results name every mode of `all`, in the order they run.
    fn assert_every_mode(j: &serde_json::Value) {
        let modes: Vec<&str> = j["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["mode"].as_str().expect("mode"))
            .collect();
        assert_eq!(
            modes,
            [
                "direct-plain",
                "direct-mtls",
                "forwarder",
                "routed",
                "hub-only",
                ROUTED_NO_FLUSH
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_routed_call_through_the_client_library_comes_back_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let deployment = Deployment::start(DemoOptions {
            backend: BackendKind::Echo,
            durable: false,
            ..DemoOptions::new(dir.path())
        })
        .await
        .expect("deployment");
        let args = Args::try_parse_from(["truc-bench", "--payload", "1000"]).expect("args");
        let mut routed = routed_clients(&deployment, &args).expect("clients");
        let payload = Bytes::from(vec![7u8; 1000]);
        let answer = routed[0].call(&payload, 1).await;
        assert!(answer.is_ok(), "{answer:?}");
        deployment.stop().await.expect("stop");
    }

    fn outcome(mode: &'static str, calls: u64, latency_us: u64, errors: u64) -> Outcome {
        let mut tally = Tally::new().expect("tally");
        for _ in 0..calls {
            tally.record(Ok(()), Duration::from_micros(latency_us));
        }
        for _ in 0..errors {
            tally.record(Err(tonic::Status::unavailable("down")), Duration::ZERO);
        }
        Outcome {
            mode,
            tally,
            seconds: 1.0,
            cpu_seconds: Some(calls as f64 * 300e-6),
            cpu_by_process: Vec::new(),
        }
    }

    #[test]
    fn the_json_names_every_mode_with_its_figures_and_the_target_ratios() {
        let args = Args::try_parse_from(["truc-bench", "all", "--json"]).expect("args");
        let outcomes = [
            outcome("direct-plain", 1000, 500, 0),
            outcome("direct-mtls", 800, 600, 0),
            outcome("forwarder", 500, 1000, 0),
            outcome("routed", 100, 5000, 2),
            outcome("hub-only", 460, 1100, 0),
            outcome(ROUTED_NO_FLUSH, 200, 2500, 0),
        ];
        let cpu = "Odd \"CPU\"\\ with\ta\u{1}control";
        let text = results_json(&args, &outcomes, 2, cpu).to_string();
        let j: serde_json::Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(j["machine"]["cpu"], cpu);
        assert_eq!(j["machine"]["nproc"], 2);
        assert_eq!(j["config"]["durable"], true);
        assert_eq!(j["config"]["payload_bytes"], 100);
        assert!(j["config"]["rate"].is_null());
        assert_every_mode(&j);
        let routed = &j["results"][3];
        assert_eq!(routed["calls_per_s"], 100.0);
        // The histogram keeps 3 significant digits.
        for q in ["p50_ms", "p99_ms"] {
            let ms = routed[q].as_f64().expect(q);
            assert!((ms - 5.0).abs() < 0.01, "{q} {ms}");
        }
        assert_eq!(routed["errors"], 2);
        assert_eq!(routed["errors_by_code"]["UNAVAILABLE"], 2);
        let r = &j["ratios"];
        assert_eq!(r["routed/direct-mtls"]["throughput"], 0.125);
        assert_eq!(r["routed/direct-mtls"]["target"], 0.25);
        assert_eq!(r["routed/direct-mtls"]["met"], false);
        assert_eq!(r["hub-only/forwarder"]["throughput"], 0.92);
        assert_eq!(r["hub-only/forwarder"]["met"], true);
        assert_eq!(r["routed/routed-no-flush"]["throughput"], 0.5);
        assert_eq!(r["routed/direct-plain"]["throughput"], 0.1);
        assert!(r["routed/direct-plain"].get("target").is_none());
        assert!(j.get("added_latency_ms").is_none(), "closed loop");
    }

    #[test]
    fn the_json_of_an_open_loop_run_gives_the_latency_added_over_direct_mtls() {
        let args = Args::try_parse_from([
            "truc-bench",
            "--mode",
            "all",
            "--rate",
            "250",
            "--arrivals",
            "poisson",
            "--payload",
            "4096",
            "--no-flush",
        ])
        .expect("args");
        let outcomes = [
            outcome("direct-mtls", 250, 400, 0),
            outcome("routed", 250, 1900, 0),
        ];
        let j = results_json(&args, &outcomes, 2, "x");
        assert_eq!(j["config"]["rate"], 250.0);
        assert_eq!(j["config"]["arrivals"], "poisson");
        assert_eq!(j["config"]["durable"], false);

        for q in ["p50", "p99"] {
            let ms = j["added_latency_ms"]["routed"][q].as_f64().expect(q);
            assert!((ms - 1.5).abs() < 0.01, "{q} {ms}");
        }
        assert!(j["added_latency_ms"].get("direct-mtls").is_none());
        assert!(
            j["ratios"]["routed/direct-mtls"].get("met").is_none(),
            "no throughput target in an open loop"
        );
    }

    #[test]
    fn the_process_cpu_time_counts_this_threads_work() {
        let before = process_cpu_seconds().expect("/proc/self/stat");
        // Work until the clock ticks (1/100 s) at least five times.
        let (mut x, start) = (0u64, Instant::now());
        while process_cpu_seconds().expect("stat") < before + 0.05 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            assert!(start.elapsed() < Duration::from_secs(30), "{x}");
        }
        assert!(process_cpu_seconds().expect("stat") >= before + 0.05);
    }

    /// Every mode, in a debug build, for one second each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn all_runs_every_mode_without_errors() {
        let args = Args::try_parse_from([
            "truc-bench",
            "all",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--json",
        ])
        .expect("args");
        let j = bench(args).await.expect("bench");
        assert_every_mode(&j);
        let results = j["results"].as_array().expect("results");
        for r in results {
            assert_eq!(r["errors"], 0, "{r}");
            assert!(r["calls"].as_u64().expect("calls") > 0, "{r}");
            // A second of calls over mTLS costs the process CPU time.
            let cpu = r["cpu_us_per_call"].as_f64().expect("CPU per call");
            assert!(cpu > 0.0, "{r}");
        }
        for ratio in [
            "routed/direct-mtls",
            "hub-only/forwarder",
            "routed/routed-no-flush",
        ] {
            assert!(
                j["ratios"][ratio]["throughput"].as_f64().is_some(),
                "{ratio}"
            );
        }
    }
}
