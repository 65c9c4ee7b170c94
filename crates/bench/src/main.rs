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
//! `truc-bench edxml` writes and parses an edXML package with one large
//! attachment (see [`edxml`]): throughput and peak memory growth.

#![forbid(unsafe_code)]

mod docs;
mod edxml;

use std::{
    collections::BTreeMap,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};
use truc_demo::{BackendKind, CITIZEN_LOOKUP, DemoOptions, Deployment, H37};
use truc_proto::v1::{CallRequest, DataRequest, backend_client::BackendClient};

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
    Direct,
    /// Province node → hub → ministry node → echo backend, over mTLS, audited.
    Routed,
    /// Direct, then routed, on the same deployment.
    Both,
}

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
    /// Which path to measure.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    mode: Mode,
    /// Audit records are written without flushing to disk (measures what
    /// durability costs).
    #[arg(long)]
    no_durable: bool,
    /// Open loop: this many calls per second in total, on a fixed schedule;
    /// latency is measured from each call's intended send time. At most
    /// `--concurrency` calls are in flight.
    #[arg(long)]
    rate: Option<f64>,
    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    connections: u64,
    /// Also print the results as one JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Documents: small documents per second end to end, one large
    /// attachment's MB/s, and a raw tonic streaming baseline of the same bytes.
    Docs(docs::DocsArgs),
    /// edXML packages: writes then parses one with a large attachment
    /// (`--size-mib`, default 200), reports MiB/s and peak RSS growth.
    Edxml(edxml::EdxmlArgs),
}

/// A client of one path, cheap to clone (clones share the connection).
#[derive(Clone)]
enum Client {
    Direct(BackendClient<Channel>),
    /// The client library agency systems use (`truc_client`).
    Routed(truc_client::Client),
}

impl Client {
    /// One call; the echoed payload must come back whole. A call that takes
    /// longer than [`CALL_TIMEOUT`] counts as DEADLINE_EXCEEDED.
    async fn call(&mut self, payload: &Bytes, tx: u128) -> Result<(), tonic::Status> {
        tokio::time::timeout(CALL_TIMEOUT, self.call_once(payload, tx))
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(
                    "no answer within truc-bench's 60 s timeout",
                ))
            })
    }

    async fn call_once(&mut self, payload: &Bytes, tx: u128) -> Result<(), tonic::Status> {
        let echoed = match self {
            Client::Direct(c) => {
                c.invoke(DataRequest {
                    transaction_id: format!("{tx:032x}"),
                    client_agency: H37.to_owned(),
                    service: CITIZEN_LOOKUP.to_owned(),
                    content_type: CONTENT_TYPE.to_owned(),
                    payload: payload.clone(),
                    ..DataRequest::default()
                })
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
}

impl Outcome {
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

/// Open loop: call `i` (shared ticket counter) is due at `start + i / rate`;
/// its latency runs from then, so time spent waiting for a free task counts.
async fn open_loop(
    mut client: Client,
    payload: Bytes,
    window: Window,
    task: u64,
    rate: f64,
    ticket: Arc<AtomicU64>,
) -> Result<Tally, String> {
    let mut tally = Tally::new()?;
    loop {
        let i = ticket.fetch_add(1, Ordering::Relaxed);
        let due = window.start + Duration::from_secs_f64(i as f64 / rate);
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

/// Runs one mode: warmup, then the measured window, over `clients`.
async fn run(mode: &'static str, clients: &[Client], args: &Args) -> Result<Outcome, String> {
    let payload = Bytes::from(vec![0x5a_u8; usize::try_from(args.payload).unwrap_or(0)]);
    // Open every connection and check the path works before timing anything.
    for (i, c) in clients.iter().enumerate() {
        c.clone()
            .call(&payload, u128::MAX - i as u128)
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
    let ticket = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..args.concurrency {
        let client = clients[(task % clients.len() as u64) as usize].clone();
        let payload = payload.clone();
        tasks.push(match args.rate {
            None => tokio::spawn(closed_loop(client, payload, window, task)),
            Some(rate) => tokio::spawn(open_loop(
                client,
                payload,
                window,
                task,
                rate,
                ticket.clone(),
            )),
        });
    }
    let mut total = Tally::new()?;
    for t in tasks {
        let tally = t
            .await
            .map_err(|e| format!("{mode}: a task failed: {e}"))??;
        total.merge(tally)?;
    }
    Ok(Outcome {
        mode,
        tally: total,
        seconds: args.duration as f64,
    })
}

fn message_limit(args: &Args) -> usize {
    usize::try_from(args.payload)
        .unwrap_or(usize::MAX)
        .max(4 * 1024 * 1024)
        .saturating_add(64 * 1024)
}

fn direct_clients(deployment: &Deployment, args: &Args) -> Result<Vec<Client>, String> {
    let described = deployment.describe();
    let backend = described["backends"][0]
        .as_str()
        .ok_or("the deployment describes no backend")?
        .to_owned();
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        let channel = Endpoint::from_shared(format!("http://{backend}"))
            .map_err(|e| format!("backend address {backend}: {e}"))?
            .tcp_nodelay(true)
            .connect_lazy();
        clients.push(Client::Direct(
            BackendClient::new(channel)
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

fn print_results(args: &Args, outcomes: &[Outcome], cpus: usize, cpu: &str) {
    println!();
    println!(
        "{:<7} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "mode", "calls", "errors", "calls/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for o in outcomes {
        println!(
            "{:<7} {:>9} {:>7} {:>10.1} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            o.mode,
            o.calls(),
            o.tally.error_count(),
            o.rate(),
            o.ms(0.50),
            o.ms(0.90),
            o.ms(0.99),
            o.max_ms()
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
    let ratios = match outcomes {
        [d, r] if d.calls() > 0 && r.calls() > 0 => {
            let throughput = r.rate() / d.rate();
            let p50 = r.ms(0.5) / d.ms(0.5);
            println!(
                "routed/direct: throughput {throughput:.3} ({:.1}× fewer calls/s), p50 latency {p50:.2}×",
                1.0 / throughput
            );
            Some((throughput, p50))
        }
        _ => None,
    };
    if args.json {
        println!("{}", results_json(args, outcomes, cpus, cpu, ratios));
    }
}

/// `x` rounded to `digits` decimals, as the text report shows it.
fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// The machine-readable results (`--json`).
fn results_json(
    args: &Args,
    outcomes: &[Outcome],
    cpus: usize,
    cpu: &str,
    ratios: Option<(f64, f64)>,
) -> serde_json::Value {
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
            })
        })
        .collect();
    let mut j = serde_json::json!({
        "machine": {"nproc": cpus, "cpu": cpu},
        "shared_cores": true,
        "params": {
            "mode": mode_name(args.mode),
            "concurrency": args.concurrency,
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "payload_bytes": args.payload,
            "durable": !args.no_durable,
            "rate": args.rate,
        },
        "results": results,
    });
    if let Some((t, p)) = ratios {
        j["routed_over_direct"] =
            serde_json::json!({"throughput": round(t, 4), "p50": round(p, 4)});
    }
    j
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Direct => "direct",
        Mode::Routed => "routed",
        Mode::Both => "both",
    }
}

async fn bench(args: Args) -> Result<(), String> {
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(format!("--rate must be a positive number, not {rate}"));
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = cpu_model();
    println!("truc-bench: one process, client and servers share the cores");
    println!("  (load generator, hub, two nodes and echo backends; loopback TCP)");
    println!("machine: nproc {cpus}, CPU {cpu}");
    println!(
        "parameters: --mode {} --concurrency {} --connections {} --duration {} --warmup {} --payload {}{}{}",
        mode_name(args.mode),
        args.concurrency,
        args.connections,
        args.duration,
        args.warmup,
        args.payload,
        if args.no_durable { " --no-durable" } else { "" },
        args.rate.map_or(String::new(), |r| format!(" --rate {r}")),
    );
    println!(
        "  {} loop; audit {}; direct = plain gRPC to the echo backend; routed = province node -> hub -> ministry node -> echo backend over mTLS 1.3",
        if args.rate.is_some() {
            "open (latency from intended send time)"
        } else {
            "closed"
        },
        if args.no_durable {
            "NOT flushed (--no-durable)"
        } else {
            "durable (group commit)"
        },
    );

    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let deployment = Deployment::start(DemoOptions {
        dir: dir.path().to_path_buf(),
        backend: BackendKind::Echo,
        durable: !args.no_durable,
        max_payload_bytes: usize::try_from(args.payload)
            .unwrap_or(usize::MAX)
            .max(4 * 1024 * 1024),
        ..DemoOptions::new(dir.path())
    })
    .await
    .map_err(|e| format!("cannot start the deployment: {e}"))?;

    let result = async {
        let mut outcomes = Vec::new();
        if matches!(args.mode, Mode::Direct | Mode::Both) {
            let clients = direct_clients(&deployment, &args)?;
            outcomes.push(run("direct", &clients, &args).await?);
        }
        if matches!(args.mode, Mode::Routed | Mode::Both) {
            let clients = routed_clients(&deployment, &args)?;
            outcomes.push(run("routed", &clients, &args).await?);
        }
        Ok::<_, String>(outcomes)
    }
    .await;
    let stopped = deployment.stop().await;
    let outcomes = result?;
    print_results(&args, &outcomes, cpus, &cpu);
    stopped.map_err(|e| format!("the deployment did not stop cleanly: {e}"))?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    let result = match args.command.take() {
        Some(Command::Docs(docs)) => docs::run(docs).await,
        Some(Command::Edxml(a)) => edxml::run(a),
        None => bench(args).await,
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

    #[test]
    fn the_json_results_are_valid_json_whatever_the_cpu_name() {
        let args = Args::try_parse_from(["truc-bench", "--rate", "250", "--json"]).expect("args");
        let mut tally = Tally::new().expect("tally");
        tally.record(Ok(()), Duration::from_micros(1500));
        tally.record(Err(tonic::Status::unavailable("down")), Duration::ZERO);
        let outcomes = [Outcome {
            mode: "direct",
            tally,
            seconds: 3.0,
        }];
        let cpu = "Odd \"CPU\"\\ with\ta\u{1}control";
        let text = results_json(&args, &outcomes, 2, cpu, Some((0.123_456, 2.0))).to_string();
        let j: serde_json::Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(j["machine"]["cpu"], cpu);
        assert_eq!(j["params"]["rate"], 250.0);
        assert_eq!(j["params"]["durable"], true);
        let r = &j["results"][0];
        assert_eq!(r["calls"], 1);
        assert_eq!(r["errors_by_code"]["UNAVAILABLE"], 1);
        assert_eq!(r["calls_per_s"], 0.3);
        assert_eq!(j["routed_over_direct"]["throughput"], 0.1235);
        let no_rate = Args::try_parse_from(["truc-bench"]).expect("args");
        let j = results_json(&no_rate, &[], 2, "x", None);
        assert!(j["params"]["rate"].is_null());
        assert!(j.get("routed_over_direct").is_none());
    }
}
