//! `truc-bench docs`: what moving official documents through truc costs.
//!
//! Three measurements, in one process, on one `truc-demo` deployment with
//! echo backends:
//!
//! - **small**: N senders on the province node each send a document from
//!   000.00.00.H37 to 000.00.00.G22 (one tiny attachment of its own, a
//!   new file at each node, or none) with
//!   `truc_client`, then follow the document's tracking
//!   (`Agency.WatchTracking`, `Client::wait_for_status`) on the province node
//!   until G22's status is "01". The province node sets "01" when the hub's
//!   relay to the ministry node has been acknowledged, that is once the
//!   ministry node has the document flushed in G22's inbox. Latency runs
//!   from the start of `SendDocument` to the tracking that shows "01".
//! - **large**: one document with one attachment of S MiB of pseudo-random
//!   bytes, generated chunk by chunk while it is sent (never held whole in
//!   memory), timed from the first message to "01" seen, and to the
//!   `SendDocument` acknowledgement.
//!   The process's peak resident memory growth over the transfer is
//!   reported too (Linux `VmHWM`, reset when the send starts).
//! - **backlog** (alone, not part of `all`): the ministry node stopped, N
//!   documents sent (each acknowledged on disk at the province node), the
//!   ministry node started again, and the time until every one is at "01".
//! - **raw**: the same bytes, in the same chunk size and the same message
//!   type, streamed by a bare tonic client as `truc.v1.Node/Deliver` over
//!   mutual TLS 1.3 (the hub's certificate to the ministry node's) to an
//!   in-process server that writes them to a file and fsyncs it once
//!   before answering: one hop's transport and disk, none of truc's checks,
//!   audit or second hop.

mod backlog;
mod common;
mod report;
mod small;
mod transfer;

use std::{path::Path, time::Duration};

use clap::ValueEnum;
use truc_client::Client;
use truc_demo::{BackendKind, DemoOptions, Deployment, PROVINCE_NODE};

pub(crate) use self::transfer::{LargeOutcome, large_document};
use self::{backlog::*, report::*, small::*, transfer::*};
use crate::cpu_model;

const MIB: u64 = 1024 * 1024;
/// Largest gRPC message either side accepts (a 1 MiB chunk and its framing fit).
const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// Messages queued between the task making chunks and the network in the
/// raw baseline (as `truc_client` does).
const SEND_QUEUE: usize = 4;
/// A small document not seen as "01" this long after its send started is an error.
const SMALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The same for the large document.
const LARGE_TIMEOUT: Duration = Duration::from_secs(600);
/// Response metadata key in which the raw server reports the bytes it counted.
const RAW_BYTES_KEY: &str = "x-bench-bytes";

/// Which measurements to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Part {
    /// Small documents per second.
    Small,
    /// One large attachment through truc, then the raw tonic baseline.
    Large,
    /// Small, then large, then raw.
    All,
    /// A backlog left by the ministry node down, delivered once it is back.
    Backlog,
}

/// Options of `truc-bench docs`.
#[derive(clap::Args, Debug)]
pub(crate) struct DocsArgs {
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
    /// Size of the large attachment, in MiB.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1024))]
    size_mib: u64,
    /// Chunk size for the large attachment and the raw baseline, in KiB (at most 1 MiB, truc's limit).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1024))]
    chunk_kib: u64,
    /// Which measurements to run.
    #[arg(long, value_enum, default_value_t = Part::All)]
    part: Part,
    /// Documents of the backlog (`--part backlog`).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    backlog: u64,
    /// Seconds the ministry node stays down once the backlog is queued
    /// (`--part backlog`), while the province node keeps retrying.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    outage_secs: u64,
    /// The nodes' first retry delay in the backlog's deployment, ms.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    retry_first_ms: u64,
    /// The nodes' longest retry delay in the backlog's deployment, ms.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    retry_cap_ms: u64,
    /// After the small documents, routed calls for as long (the `routed`
    /// mode, 64 in flight, on a deployment of their own) and the ratio of
    /// small documents/s to routed calls/s (target 6).
    #[arg(long)]
    against_routed: bool,
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
        Part::Backlog => "backlog",
    }
}

/// `truc-bench docs`.
pub(crate) async fn run(args: DocsArgs) -> Result<(), String> {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = cpu_model();
    println!("truc-bench docs: one process, client and servers share the cores");
    println!(
        "  (load generator, hub, two nodes, echo backends and the raw server; loopback TCP; data in a temporary directory)"
    );
    println!("machine: nproc {cpus}, CPU {cpu}");
    println!(
        "parameters: docs --part {} --senders {} --duration {} --warmup {} --attachment-bytes {} --size-mib {} --chunk-kib {}{}",
        part_name(args.part),
        args.senders,
        args.duration,
        args.warmup,
        args.attachment_bytes,
        args.size_mib,
        args.chunk_kib,
        if args.no_durable { " --no-durable" } else { "" },
    );
    if args.against_routed {
        println!("  then routed calls for as long: --against-routed");
    }
    println!(
        "  documents 000.00.00.H37 (province node) -> hub -> 000.00.00.G22 (ministry node), mTLS 1.3; each document's own attachment fsynced at each node; audit {}",
        if args.no_durable {
            "NOT flushed (--no-durable)"
        } else {
            "durable (group commit)"
        },
    );
    println!(
        "  delivered = the sender's tracking on the province node shows status 01 for G22 (set when the ministry node has acknowledged the document in its inbox, on disk); each sender follows its document on WatchTracking from when SendDocument returns (the province node allows {} watchers per agency)",
        watchers_for(args.senders)
    );

    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let mut small_outcome = None;
    let mut pki = None;
    let mut large_outcome = None;
    let mut raw_outcome = None;
    let mut backlog_outcome = None;
    if args.part == Part::Backlog {
        let mut deployment = start(dir.path(), &args).await?;
        let client = province_client(&deployment)?;
        let b = backlog(&mut deployment, &client, &args).await;
        let stopped = deployment.stop().await;
        let b = b?;
        stopped.map_err(|e| format!("the deployment did not stop cleanly: {e}"))?;
        print_backlog(&b, &args);
        backlog_outcome = Some(b);
    } else {
        let deployment = start(dir.path(), &args).await?;
        pki = Some(deployment.files.pki.clone());
        let result = async {
            let client = province_client(&deployment)?;
            let s = if matches!(args.part, Part::Small | Part::All) {
                let s = small(&client, &args).await?;
                print_small(&s);
                Some(s)
            } else {
                None
            };
            if matches!(args.part, Part::Large | Part::All) {
                // Let the last small documents' deliveries finish.
                if let Some(s) = &s {
                    finish_deliveries(&client, &s.tally.unfinished).await;
                }
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
    let mut against_routed = None;
    if let Some(s) = small_outcome.as_ref().filter(|_| args.against_routed) {
        let (calls_per_s, errors) =
            crate::routed_baseline(args.duration, args.warmup, !args.no_durable).await?;
        print_against_routed(s, calls_per_s, errors);
        against_routed = Some((calls_per_s, errors));
    }
    if let Some(pki) = pki.filter(|_| matches!(args.part, Part::Large | Part::All)) {
        let r = raw(&pki, dir.path(), &args).await?;
        print_raw(&r, large_outcome.as_ref());
        raw_outcome = Some(r);
    }
    if args.json {
        print_json(
            &args,
            cpus,
            &cpu,
            &Outcomes {
                small: small_outcome.as_ref(),
                large: large_outcome.as_ref(),
                raw: raw_outcome.as_ref(),
                backlog: backlog_outcome.as_ref(),
                against_routed,
            },
        );
    }
    Ok(())
}

/// The province's agency client of `deployment`.
fn province_client(deployment: &Deployment) -> Result<Client, String> {
    Ok(Client::from_grpc(
        deployment
            .agency_client(truc_demo::PROVINCE_NODE, truc_demo::PROVINCE_CLIENT)
            .map_err(|e| format!("cannot make an agency client: {e}"))?,
    )
    .max_message_bytes(MAX_MESSAGE_BYTES))
}

async fn start(dir: &Path, args: &DocsArgs) -> Result<Deployment, String> {
    let mut options = DemoOptions {
        backend: BackendKind::Echo,
        durable: !args.no_durable,
        ..DemoOptions::new(dir)
    };
    if args.part == Part::Backlog {
        options.retry = backlog_retry(args);
    }
    let mut deployment = Deployment::start(options)
        .await
        .map_err(|e| format!("cannot start the deployment: {e}"))?;
    // Each sender follows its document on a WatchTracking stream of its
    // own, and a node allows few watchers per agency by default: the
    // province node restarts with room for every sender's watch (and for
    // watches that ended before the node noticed).
    let watchers = watchers_for(args.senders);
    let restarted = async {
        deployment.stop_node(PROVINCE_NODE).await?;
        deployment.edit_node_config(PROVINCE_NODE, |f| {
            let service = &mut f.document_service;
            service.max_watchers_per_agency = service.max_watchers_per_agency.max(watchers);
            service.max_watchers = service.max_watchers.max(watchers);
        })?;
        deployment.restart_node(PROVINCE_NODE).await
    }
    .await;
    if let Err(e) = restarted {
        let _ = deployment.stop().await;
        return Err(format!(
            "cannot restart the province node with room for {watchers} watchers: {e}"
        ));
    }
    Ok(deployment)
}

/// The tracking watchers the province node allows H37 for `senders`
/// senders: two each, and some to spare.
fn watchers_for(senders: u64) -> usize {
    usize::try_from(senders)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .saturating_add(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(part: Part) -> DocsArgs {
        DocsArgs {
            senders: 16,
            duration: 1,
            warmup: 0,
            attachment_bytes: 0,
            size_mib: 1,
            chunk_kib: 64,
            part,
            backlog: 40,
            outage_secs: 0,
            retry_first_ms: 100,
            retry_cap_ms: 1000,
            against_routed: false,
            no_durable: true,
            json: false,
        }
    }

    /// The benchmark's deployment in a new directory, and the province's
    /// agency client of it.
    async fn started(args: &DocsArgs) -> (tempfile::TempDir, Deployment, Client) {
        let dir = tempfile::tempdir().expect("dir");
        let deployment = start(dir.path(), args).await.expect("started");
        let client = Client::from_grpc(
            deployment
                .agency_client(PROVINCE_NODE, truc_demo::PROVINCE_CLIENT)
                .expect("client"),
        );
        (dir, deployment, client)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_attachment_and_the_raw_baseline_both_land_whole_on_disk() {
        let args = args(Part::Large);
        let (dir, deployment, client) = started(&args).await;
        let large = large(&client, &args).await;
        let pki = deployment.files.pki.clone();
        deployment.stop().await.expect("stop");
        let large = large.expect("the large document was delivered");
        assert_eq!(large.bytes, MIB);
        assert!(large.delivered >= large.acked);
        let raw = raw(&pki, dir.path(), &args).await.expect("raw baseline");
        // The sink wrote every byte (raw() also refuses a short file).
        assert_eq!((raw.bytes, raw.on_disk), (MIB, MIB));
        assert!(
            !dir.path().join("raw-baseline.bin").exists(),
            "the baseline's file is removed after it is measured"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_province_node_has_room_for_a_tracking_watch_per_sender() {
        let args = args(Part::Small);
        let (_dir, deployment, client) = started(&args).await;
        let (_, sent) = small::one_small(&client, "watchers", None, None).await;
        assert!(sent.is_ok(), "the first document went through");
        // More watches at once than the node's default allows one agency
        // (8), as many senders do.
        let env = common::envelope("watchers", Vec::new());
        let mut watches = Vec::new();
        for i in 0..args.senders {
            let w = client
                .watch_tracking(truc_demo::H37, &env.document_id)
                .await;
            assert!(w.is_ok(), "watch {i}: {:?}", w.err());
            watches.push(w);
        }
        drop(watches);
        deployment.stop().await.expect("stop");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backlog_left_while_the_ministry_node_was_down_is_delivered_once_it_is_back() {
        let args = DocsArgs {
            attachment_bytes: 100,
            ..args(Part::Backlog)
        };
        let (_dir, mut deployment, client) = started(&args).await;
        let b = backlog(&mut deployment, &client, &args).await;
        deployment.stop().await.expect("stop");
        let b = b.expect("every document delivered");
        assert_eq!(b.documents, 40);
        assert!(b.drained > Duration::ZERO && b.queued > Duration::ZERO);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_routed_baseline_runs_on_a_deployment_of_its_own() {
        let (calls_per_s, errors) = crate::routed_baseline(1, 0, false)
            .await
            .expect("routed calls");
        assert!(calls_per_s > 0.0, "{calls_per_s}");
        assert_eq!(errors, 0);
    }
}
