//! `truc-bench national`: a national day through one hub.
//!
//! It generates a country (by default 10 000 agencies on 100 nodes, 1 000
//! services, 100 000 grants), times how long its registry takes to load
//! and validate, installs it in a running hub (a reload), and measures:
//!
//! - whether a call costs the hub more with it than with the demo's
//!   registry (the hub-only mode, before and after the reload);
//! - a day of transactions (by default 2.7 million, NDXP's daily volume in
//!   2024) spread over the grants by a Zipf law, sent to `Hub.Route` by the
//!   client agencies' nodes (the generator holds every node's certificate)
//!   and answered by fake provider nodes, one per node id;
//! - `GetStats` for that day by provider, as `truc report --by provider`
//!   asks it;
//! - `truc report --verify` on the hub's store once it has stopped: the
//!   stored statistics recomputed from the log, and the report's totals by
//!   provider compared with the log's.
//!
//! As in the other modes, the generator and the hub share the machine's
//! cores; what counts is the hub hop with a country-sized registry and
//! statistics spread over as many groups as a real day has.

use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tonic::transport::Channel;
use truc_pki::Role;
use truc_proto::v1::{
    DataRequest, GetRegistryRequest, GetStatsRequest, hub_client::HubClient,
    reporting_client::ReportingClient,
};

use crate::{
    Args, Mode, Outcome, Tally, hub_only_clients, message_limit, run,
    schedule::{Arrivals, SplitMix},
    servers, start_deployment,
};

/// The national day's sizes and load.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct NationalArgs {
    /// Agencies in the generated registry.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    agencies: u64,
    /// Nodes hosting them (each its own certificate and fake provider).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    nodes: u64,
    /// Services, each provided by an agency drawn at random.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    services: u64,
    /// Grants: distinct (client agency, service) pairs.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    grants: u64,
    /// Transactions in the day.
    #[arg(long, default_value_t = 2_700_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    transactions: u64,
    /// The Zipf exponent of the grants' popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Calls in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,
    /// Seconds of hub-only load before and after the registry changes.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    compare_secs: u64,
    /// Seed of the generated country and day.
    #[arg(long, default_value_t = 2024)]
    seed: u64,
    /// Run the deployment (the hub, and the demo's nodes, idle here) on a
    /// tokio runtime of its own, two worker threads named `hub-worker`, so
    /// that the hub's own CPU per transaction (those threads, the audit
    /// writers and sled's threads) is counted apart from the generator's.
    /// Four worker threads then share the two cores, so the day's rate is
    /// not comparable with a run without it.
    #[arg(long)]
    hub_apart: bool,
    /// Also print the results as one JSON object (one line).
    #[arg(long)]
    json: bool,
}

/// The threads that are the hub's with `--hub-apart`: its runtime's, the
/// audit writers' (the demo's nodes write nothing in the day) and sled's.
fn is_hub_thread(name: &str) -> bool {
    name == HUB_THREADS || name.starts_with("audit-") || name.starts_with("sled-")
}

/// The name of the hub runtime's threads with `--hub-apart`.
const HUB_THREADS: &str = "hub-worker";

/// A generated country: agency `i` is hosted by node `i * nodes /
/// agencies`, and the first agency of each node is the parent of the
/// others there (a province and its departments).
pub(crate) struct Country {
    agencies: Vec<String>,
    nodes: usize,
    /// Service ids.
    services: Vec<String>,
    /// (client agency, service), most popular first.
    grants: Vec<(u32, u32)>,
}

fn agency_code(i: usize) -> String {
    format!("{:03}.{:02}.{:02}.N00", i / 10_000, i / 100 % 100, i % 100)
}

fn node_id(n: usize) -> String {
    format!("node-{n:03}")
}

impl Country {
    pub(crate) fn generate(
        agencies: usize,
        nodes: usize,
        services: usize,
        grants: usize,
        seed: u64,
    ) -> Result<Country, String> {
        if nodes > agencies {
            return Err(format!(
                "{nodes} nodes for {agencies} agencies: every node hosts one at least"
            ));
        }
        if grants as u64 > agencies as u64 * services as u64 / 2 {
            return Err(format!(
                "{grants} grants of {services} services to {agencies} agencies: at most half of all pairs"
            ));
        }
        let mut rng = SplitMix::new(seed);
        let codes: Vec<String> = (0..agencies).map(agency_code).collect();
        let services = (0..services)
            .map(|j| format!("{}/service-{j:05}/v1", codes[rng.below(agencies)]))
            .collect::<Vec<_>>();
        let mut seen = HashSet::with_capacity(grants);
        let mut pairs = Vec::with_capacity(grants);
        while pairs.len() < grants {
            let pair = (rng.below(agencies) as u32, rng.below(services.len()) as u32);
            if seen.insert(pair) {
                pairs.push(pair);
            }
        }
        Ok(Country {
            agencies: codes,
            nodes,
            services,
            grants: pairs,
        })
    }

    fn node_of(&self, agency: usize) -> usize {
        agency * self.nodes / self.agencies.len()
    }

    /// The registry TOML, the nodes at `addresses` (one per node).
    pub(crate) fn toml(&self, addresses: &[SocketAddr]) -> String {
        let mut out = String::with_capacity(self.grants.len() * 40 + self.agencies.len() * 80);
        let mut first_of = vec![usize::MAX; self.nodes];
        for (i, code) in self.agencies.iter().enumerate() {
            let node = self.node_of(i);
            let _ = write!(
                out,
                "[[agency]]\ncode = \"{code}\"\nname = \"Agency {i}\"\n"
            );
            if first_of[node] == usize::MAX {
                first_of[node] = i;
            } else {
                let _ = writeln!(out, "parent = \"{}\"", self.agencies[first_of[node]]);
            }
        }
        let mut hosted: Vec<Vec<&str>> = vec![Vec::new(); self.nodes];
        for (i, code) in self.agencies.iter().enumerate() {
            hosted[self.node_of(i)].push(code);
        }
        for (n, agencies) in hosted.iter().enumerate() {
            let _ = write!(
                out,
                "\n[[node]]\nid = \"{}\"\naddress = \"{}\"\nagencies = [",
                node_id(n),
                addresses[n]
            );
            for (k, code) in agencies.iter().enumerate() {
                let _ = write!(out, "{}\"{code}\"", if k == 0 { "" } else { ", " });
            }
            out.push_str("]\n");
        }
        for id in &self.services {
            let _ = write!(out, "\n[[service]]\nid = \"{id}\"\n");
        }
        let mut by_client: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for &(client, service) in &self.grants {
            by_client.entry(client).or_default().push(service);
        }
        for (client, services) in by_client {
            let _ = write!(
                out,
                "\n[[grant]]\nclient = \"{}\"\nservices = [",
                self.agencies[client as usize]
            );
            for (k, s) in services.iter().enumerate() {
                let sep = if k == 0 { "" } else { ", " };
                let _ = write!(out, "{sep}\"{}\"", self.services[*s as usize]);
            }
            out.push_str("]\n");
        }
        out
    }

    /// The day's transactions as grant indices, drawn by a Zipf law with
    /// exponent `s` over the grants (the first the most popular).
    pub(crate) fn day(&self, transactions: usize, s: f64, seed: u64) -> Vec<u32> {
        let mut cdf = Vec::with_capacity(self.grants.len());
        let mut total = 0.0;
        for rank in 1..=self.grants.len() {
            total += (rank as f64).powf(-s);
            cdf.push(total);
        }
        let mut rng = SplitMix::new(seed ^ 0x0064_6179);
        (0..transactions)
            .map(|_| {
                let u = rng.uniform() * total;
                cdf.partition_point(|c| *c <= u).min(cdf.len() - 1) as u32
            })
            .collect()
    }
}

fn hub_only_args(a: &NationalArgs) -> Args {
    Args {
        command: None,
        concurrency: a.concurrency,
        duration: a.compare_secs,
        warmup: 1,
        payload: 100,
        mode: Mode::HubOnly,
        mode_arg: None,
        no_flush: false,
        rate: None,
        arrivals: Arrivals::Fixed,
        connections: 1,
        json: false,
        processes: false,
        truc: None,
        document_mib: 0,
    }
}

/// The time `f` takes, with what it returned.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed().as_secs_f64())
}

/// Runs the national day; prints what it measured and returns it as JSON.
pub(crate) async fn run_national(a: NationalArgs) -> Result<serde_json::Value, String> {
    let usize_of = |n: u64| usize::try_from(n).map_err(|_| format!("{n} is too large here"));
    let (agencies, nodes) = (usize_of(a.agencies)?, usize_of(a.nodes)?);
    let (services, grants) = (usize_of(a.services)?, usize_of(a.grants)?);
    let transactions = usize_of(a.transactions)?;
    if !(a.zipf.is_finite() && a.zipf >= 0.0) {
        return Err(format!("--zipf must be a number >= 0, not {}", a.zipf));
    }
    println!("truc-bench national: one hub, the generator plays every node; one process");
    println!(
        "country: {agencies} agencies on {nodes} nodes, {services} services, {grants} grants; day: {transactions} transactions, Zipf exponent {}, {} in flight, seed {}",
        a.zipf, a.concurrency, a.seed
    );
    let (country, generated) =
        timed(|| Country::generate(agencies, nodes, services, grants, a.seed));
    let country = country?;
    let mut listeners = Vec::with_capacity(nodes);
    for _ in 0..nodes {
        listeners.push(
            truc_demo::backend::bind_loopback()
                .await
                .map_err(|e| format!("cannot bind a loopback port: {e}"))?,
        );
    }
    let addresses: Vec<SocketAddr> = listeners.iter().map(|(_, addr)| *addr).collect();
    let national = country.toml(&addresses);
    let (picks, drawn) = timed(|| country.day(transactions, a.zipf, a.seed));
    let distinct = picks.iter().copied().collect::<HashSet<u32>>().len();
    println!(
        "generated in {generated:.2} s; the day's draws in {drawn:.2} s: {distinct} distinct (client, service) pairs, so as many statistics groups"
    );

    let args = hub_only_args(&a);
    // With --hub-apart the deployment's servers spawn their tasks on a
    // runtime of their own.
    let hub_runtime = if a.hub_apart {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(HUB_THREADS)
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the hub's runtime: {e}"))?,
        )
    } else {
        None
    };
    let (dir, mut deployment) = match &hub_runtime {
        Some(rt) => {
            let a = a.clone();
            rt.spawn(async move { start_deployment(&hub_only_args(&a), true).await })
                .await
                .map_err(|e| format!("the deployment's start failed: {e}"))??
        }
        None => start_deployment(&args, true).await?,
    };
    let mut servers = servers::Servers::new();
    let result = async {
        let pki = deployment.files.pki.clone();
        let registry_path = deployment.files.registry.clone();
        let demo = std::fs::read_to_string(&registry_path)
            .map_err(|e| format!("cannot read the demo's registry: {e}"))?;
        let text = format!("{demo}\n# The generated country.\n{national}");
        // Load and validate as the hub does, from the file; the best of 3.
        std::fs::write(&registry_path, &text).map_err(|e| format!("cannot write the registry: {e}"))?;
        let mut load = f64::INFINITY;
        for _ in 0..3 {
            let (loaded, secs) = timed(|| truc_registry::Registry::load(&registry_path));
            loaded.map_err(|e| format!("the generated registry is refused: {e}"))?;
            load = load.min(secs);
        }
        std::fs::write(&registry_path, &demo).map_err(|e| format!("cannot write the registry: {e}"))?;
        println!(
            "registry: {} bytes of TOML, loaded and validated in {load:.3} s (best of 3)",
            text.len()
        );

        for (n, (listener, _)) in listeners.into_iter().enumerate() {
            let id = servers::identity(Role::Node, &node_id(n))?;
            truc_devca::issue(&pki, &id, 2).map_err(|e| format!("cannot issue {id:?}: {e}"))?;
            servers.fake_provider_as(&pki, &node_id(n), listener, message_limit(&args))?;
        }

        // The same hub-only calls, with the demo's registry, then the country's.
        let clients = hub_only_clients(&mut deployment, &mut servers, &args).await?;
        let demo_run = run("hub-only-demo", &clients, &args).await?;
        std::fs::write(&registry_path, &text).map_err(|e| format!("cannot write the registry: {e}"))?;
        let (report, reload) = timed(|| deployment.hub().reloader().reload());
        if !report.failed.is_empty() {
            return Err(format!("the hub refused the national registry: {:?}", report.failed));
        }
        let fetched = Instant::now();
        // As the admin: the nodes' own fetches (one whole snapshot a second
        // each) stay theirs.
        let snapshot = HubClient::new(hub_channel(&deployment, Role::Admin, "admin")?)
            .max_decoding_message_size(truc_server::MAX_REGISTRY_SNAPSHOT_BYTES)
            .get_registry(GetRegistryRequest::default())
            .await
            .map_err(|e| format!("the national registry cannot be fetched: {e}"))?
            .into_inner();
        let fetch = fetched.elapsed().as_secs_f64();
        let snapshot_bytes = prost::Message::encoded_len(&snapshot);
        println!(
            "the hub reloaded it in {reload:.3} s; its signed snapshot ({snapshot_bytes} bytes) was fetched in {fetch:.3} s"
        );
        let national_run = run("hub-only-national", &clients, &args).await?;
        let per_call = demo_run.rate() / national_run.rate();
        println!(
            "hub-only: {:.0} calls/s with the demo's registry, {:.0} with the country's: {per_call:.3} the cost per call",
            demo_run.rate(),
            national_run.rate()
        );

        let hub_cpu0 = crate::threads_cpu_seconds(is_hub_thread);
        let day = national_day(&deployment, &country, &picks, a.concurrency, a.seed).await?;
        let hub_cpu_us = match (a.hub_apart, hub_cpu0, crate::threads_cpu_seconds(is_hub_thread)) {
            (true, Some(before), Some(after)) if day.calls() > 0 => {
                Some((after - before) * 1e6 / day.calls() as f64)
            }
            _ => None,
        };
        let day_secs = day.seconds;
        println!(
            "day: {} transactions in {day_secs:.1} s, {:.0}/s, {} errors, p50 {:.3} ms, p99 {:.3} ms, {} µs of CPU per transaction",
            day.calls(),
            day.rate(),
            day.tally.error_count(),
            day.ms(0.5),
            day.ms(0.99),
            day.cpu_us_per_call().map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
        );
        for (code, (n, msg)) in &day.tally.errors {
            println!("  day errors: {n} × {code} (first: {msg})");
        }
        if let Some(us) = hub_cpu_us {
            println!(
                "  of which the hub's own threads: {us:.0} µs of CPU per transaction (its runtime, audit writer and sled's threads); two cores of its own would carry at most {:.0}/s at that cost",
                2e6 / us
            );
        }

        let asked = Instant::now();
        let stats = ReportingClient::new(hub_channel(&deployment, Role::Admin, "admin")?)
            .get_stats(GetStatsRequest {
                group_by: vec!["provider".into()],
                ..GetStatsRequest::default()
            })
            .await
            .map_err(|e| format!("the report by provider failed: {e}"))?
            .into_inner();
        let report_secs = asked.elapsed().as_secs_f64();
        let by_provider: BTreeMap<String, u64> = stats
            .rows
            .iter()
            .map(|r| (r.keys.join("/"), r.count))
            .collect();
        println!(
            "report by provider: {} rows, {} transactions, in {report_secs:.3} s",
            by_provider.len(),
            by_provider.values().sum::<u64>()
        );
        Ok::<_, String>((
            load,
            text.len(),
            reload,
            (snapshot_bytes, fetch),
            [demo_run, national_run, day],
            (report_secs, by_provider),
            hub_cpu_us,
        ))
    }
    .await;
    drop(servers);
    let stopped = deployment.stop().await;
    let (
        load,
        toml_bytes,
        reload,
        (snapshot_bytes, fetch),
        [demo_run, national_run, day],
        (report_secs, by_provider),
        hub_cpu_us,
    ) = result?;
    stopped.map_err(|e| format!("the deployment did not stop cleanly: {e}"))?;
    if let Some(rt) = hub_runtime {
        rt.shutdown_background();
    }

    // `truc report --verify` on the stopped hub's store.
    let store = truc_store::Store::open(&dir.path().join("hub"))
        .map_err(|e| format!("cannot open the hub's store: {e}"))?;
    let (verified, verify_secs) = timed(|| truc_audit::verify(&store, None));
    let verified = verified.map_err(|e| format!("cannot verify the hub's store: {e}"))?;
    let mut log_by_provider: BTreeMap<String, u64> = BTreeMap::new();
    for (key, n) in &verified.counts {
        *log_by_provider.entry(key.provider.clone()).or_default() += n;
    }
    let equal = verified.problem.is_none() && log_by_provider == by_provider;
    println!(
        "verify: {} records, {} groups, in {verify_secs:.1} s: {}",
        verified.records,
        verified.stats.len(),
        match (&verified.problem, equal) {
            (Some(p), _) => format!("MISMATCH: {p}"),
            (None, true) => "the stored statistics and the report by provider equal the log".into(),
            (None, false) => "MISMATCH: the report by provider differs from the log".into(),
        }
    );
    drop(store);
    drop(dir);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let j = serde_json::json!({
        "national": {
            "agencies": agencies, "nodes": nodes, "services": services, "grants": grants,
            "registry_toml_bytes": toml_bytes,
            "registry_load_s": round(load),
            "hub_reload_s": round(reload),
            "snapshot_bytes": snapshot_bytes,
            "snapshot_fetch_s": round(fetch),
            "hub_only_demo_calls_per_s": round(demo_run.rate()),
            "hub_only_national_calls_per_s": round(national_run.rate()),
            "cost_per_call_national_over_demo": round(demo_run.rate() / national_run.rate()),
            "transactions": day.calls(),
            "errors": day.tally.error_count(),
            "day_s": round(day.seconds),
            "day_per_s": round(day.rate()),
            "day_p50_ms": day.ms(0.5),
            "day_p99_ms": day.ms(0.99),
            "day_cpu_us_per_call": day.cpu_us_per_call().map(round),
            "day_hub_cpu_us_per_call": hub_cpu_us.map(round),
            "distinct_pairs": distinct,
            "groups": verified.stats.len(),
            "report_by_provider_s": round(report_secs),
            "verify_s": round(verify_secs),
            "verify_equal": equal,
        }
    });
    if a.json {
        println!("{j}");
    }
    if !equal || day.tally.error_count() > 0 {
        return Err("the national day had errors or did not verify".into());
    }
    Ok(j)
}

fn hub_channel(
    deployment: &truc_demo::Deployment,
    role: Role,
    name: &str,
) -> Result<Channel, String> {
    servers::mtls_channel(
        &deployment.files.pki,
        (role, name),
        &deployment.hub().addr().to_string(),
        (Role::Hub, "hub"),
    )
}

/// Sends the day's transactions (`picks`, grant indices) to `Hub.Route`,
/// each from its client agency's node, `concurrency` at a time, as fast as
/// the hub takes them.
async fn national_day(
    deployment: &truc_demo::Deployment,
    country: &Country,
    picks: &[u32],
    concurrency: u64,
    seed: u64,
) -> Result<Outcome, String> {
    let mut clients = Vec::with_capacity(country.nodes);
    for n in 0..country.nodes {
        clients.push(HubClient::new(hub_channel(
            deployment,
            Role::Node,
            &node_id(n),
        )?));
    }
    // Each transaction's request, built before the clock starts. Ids are
    // of the nodes' form, issued as if at 9 000 a second from now (the
    // day's target), so the hub indexes them in about the order they come.
    let payload = Bytes::from(vec![0x5a_u8; 100]);
    let issued_from = crate::unix_ms();
    let requests: Arc<Vec<(usize, DataRequest)>> = Arc::new(
        picks
            .iter()
            .enumerate()
            .map(|(i, &g)| {
                let (client, service) = country.grants[g as usize];
                let request = DataRequest {
                    transaction_id: crate::node_like_id(
                        issued_from + i as u64 / 9,
                        u128::from(seed) << 64 | i as u128,
                    ),
                    client_agency: country.agencies[client as usize].clone(),
                    service: country.services[service as usize].clone(),
                    content_type: crate::CONTENT_TYPE.to_owned(),
                    payload: payload.clone(),
                    ..DataRequest::default()
                };
                (country.node_of(client as usize), request)
            })
            .collect(),
    );
    let clients = Arc::new(clients);
    let next = Arc::new(AtomicU64::new(0));
    let total = requests.len() as u64;
    let progress = {
        let next = next.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let done = next.load(Ordering::Relaxed).min(total);
                println!(
                    "  {done} of {total} sent after {:.0} s",
                    start.elapsed().as_secs_f64()
                );
            }
        })
    };
    let start = Instant::now();
    let cpu_at_start = crate::process_cpu_seconds();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (clients, requests, next) = (clients.clone(), requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new()?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((node, request)) = requests.get(i as usize) else {
                    return Ok::<_, String>(tally);
                };
                let sent = Instant::now();
                let mut client = clients[*node].clone();
                let result = crate::within_call_timeout(client.route(request.clone())).await;
                tally.record(result.map(|_| ()), sent.elapsed());
            }
        }));
    }
    let tally = crate::join_tallies(tasks, "the day").await?;
    let seconds = start.elapsed().as_secs_f64();
    progress.abort();
    Ok(Outcome {
        mode: "national-day",
        tally,
        seconds,
        cpu_seconds: crate::process_cpu_seconds()
            .zip(cpu_at_start)
            .map(|(end, start)| end - start),
        cpu_by_process: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_country_is_a_valid_registry_of_its_size() {
        let country = Country::generate(1_000, 10, 100, 5_000, 1).expect("country");
        let addresses: Vec<SocketAddr> = (0..10)
            .map(|n| SocketAddr::from(([127, 0, 0, 1], 20_000 + n)))
            .collect();
        let registry = truc_registry::Registry::from_toml_str(&country.toml(&addresses), "country")
            .expect("valid");
        assert_eq!(registry.agencies().count(), 1_000);
        assert_eq!(registry.services().count(), 100);
        // Every grant is in force, each client agency on its node.
        for &(client, service) in &country.grants {
            let client =
                truc_registry::AgencyCode::parse(&country.agencies[client as usize]).unwrap();
            let service =
                truc_registry::ServiceId::parse(&country.services[service as usize]).unwrap();
            assert!(registry.is_granted(&client, &service), "{client} {service}");
        }
        // And no pair outside them; each agency on the node it is said to be on.
        let granted: HashSet<(u32, u32)> = country.grants.iter().copied().collect();
        let (mut checked, mut rng) = (0, SplitMix::new(9));
        while checked < 1_000 {
            let pair = (rng.below(1_000) as u32, rng.below(100) as u32);
            if granted.contains(&pair) {
                continue;
            }
            checked += 1;
            let client =
                truc_registry::AgencyCode::parse(&country.agencies[pair.0 as usize]).unwrap();
            let service =
                truc_registry::ServiceId::parse(&country.services[pair.1 as usize]).unwrap();
            assert!(
                !registry.is_granted(&client, &service),
                "{client} {service}"
            );
            let node =
                truc_registry::NodeId::parse(&node_id(country.node_of(pair.0 as usize))).unwrap();
            assert!(registry.hosts(&node, &client));
        }
    }

    fn small_day(hub_apart: bool) -> NationalArgs {
        NationalArgs {
            agencies: 300,
            nodes: 6,
            services: 30,
            grants: 1_000,
            transactions: 3_000,
            zipf: 1.0,
            concurrency: 16,
            compare_secs: 1,
            seed: 5,
            hub_apart,
            json: false,
        }
    }

    /// Runs a small day; its figures, once it has run whole and verified.
    async fn small_day_run(hub_apart: bool) -> serde_json::Value {
        let j = run_national(small_day(hub_apart))
            .await
            .expect("the day runs and verifies");
        let n = j["national"].clone();
        assert_eq!(n["transactions"], 3_000);
        assert_eq!(n["errors"], 0);
        assert_eq!(n["verify_equal"], true);
        n
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_national_day_is_reported_and_verified_whole() {
        let n = small_day_run(false).await;
        // The day's groups, plus the hub-only runs' one pair.
        let groups = n["groups"].as_u64().unwrap();
        let pairs = n["distinct_pairs"].as_u64().unwrap();
        assert!(groups == pairs + 1, "{groups} groups, {pairs} pairs");
        assert!(n["day_hub_cpu_us_per_call"].is_null());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_the_hub_apart_its_own_cpu_is_a_part_of_the_days() {
        let n = small_day_run(true).await;
        let hub = n["day_hub_cpu_us_per_call"].as_f64().expect("measured");
        let all = n["day_cpu_us_per_call"].as_f64().expect("measured");
        // The hub did real work, and the generator and providers some too.
        assert!(hub > 0.0 && hub < all, "hub {hub} µs of {all}");
    }

    #[test]
    fn the_hubs_threads_are_told_by_name() {
        for name in [HUB_THREADS, "audit-writer", "audit-id-filter", "sled-io-3"] {
            assert!(is_hub_thread(name), "{name}");
        }
        for name in ["tokio-rt-worker", "truc-bench", "hub-workers-x"] {
            assert!(!is_hub_thread(name), "{name}");
        }
    }

    #[test]
    fn the_day_follows_the_zipf_law_over_the_grants() {
        let country = Country::generate(1_000, 10, 100, 10_000, 1).expect("country");
        let day = country.day(200_000, 1.0, 7);
        let mut counts = vec![0u64; country.grants.len()];
        for g in &day {
            counts[*g as usize] += 1;
        }
        // With exponent 1 over 10 000 ranks, rank 1 takes 1 / H(10 000)
        // (about 10.2 %) and rank 2 half as much.
        let h: f64 = (1..=10_000).map(|r| 1.0 / r as f64).sum();
        let first = counts[0] as f64 / 200_000.0;
        assert!((first - 1.0 / h).abs() < 0.005, "{first}");
        let ratio = counts[0] as f64 / counts[1] as f64;
        assert!((ratio - 2.0).abs() < 0.15, "{ratio}");
        // The same seed draws the same day.
        assert_eq!(country.day(1_000, 1.0, 7), day[..1_000]);
    }

    #[test]
    fn a_country_that_cannot_exist_is_refused() {
        assert!(Country::generate(10, 20, 1, 1, 1).is_err());
        assert!(Country::generate(10, 1, 2, 11, 1).is_err());
    }
}
