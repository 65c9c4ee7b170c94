//! `truc-bench --processes`: the routed path with the hub, both nodes and
//! the echo backends each a process of the real `truc` binary (`truc hub`,
//! `truc node`, `truc demo-backend --echo`), as they are deployed; the load
//! generator (and the direct-mtls baseline's echo server) stay in the bench's
//! process. The deployment's files (PKI, registry, configs on loopback ports
//! chosen by the OS) are laid out by starting and stopping the in-process
//! deployment once.
//!
//! Besides the calls' figures it reports every process's CPU time per call
//! in the measured window and its resident memory, and with
//! `--document-mib` each process's peak resident memory while one document
//! with an attachment of that size goes from the province to the ministry.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use truc_demo::{
    BackendKind, DemoOptions, Deployment, MINISTRY_NODE, PROVINCE_CLIENT, PROVINCE_NODE,
};
use truc_pki::{Layout, Role};
use truc_proto::v1::agency_client::AgencyClient;

use crate::docs::LargeOutcome;

/// How long the processes have to come up and route a first call.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process has to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One process of the deployment.
pub(crate) struct Proc {
    pub(crate) name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (VmRSS, VmHWM) in KiB.
    pub(crate) fn rss_kib(&self) -> Option<(u64, u64)> {
        crate::mem::rss_kib_of(&self.pid().to_string())
    }

    /// Resets the process's peak resident size to its current one.
    fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }

    /// The last lines of its log, for an error message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

/// The hub, the nodes and the backends, running.
pub(crate) struct Processes {
    pub(crate) procs: Vec<Proc>,
    pub(crate) pki: Layout,
    province: String,
}

/// The `truc` binary beside this one (`target/release/truc` for
/// `target/release/truc-bench`; for the bench's own tests, in
/// `target/debug/deps/`, the one a directory up), unless `--truc` names
/// another.
pub(crate) fn truc_binary(given: Option<&Path>) -> Result<PathBuf, String> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let me = std::env::current_exe()
                .map_err(|e| format!("cannot find this program's path: {e}"))?;
            let beside = me.with_file_name("truc");
            let in_deps = me.parent().filter(|d| d.ends_with("deps"));
            match in_deps.and_then(Path::parent) {
                Some(up) if !beside.is_file() => up.join("truc"),
                _ => beside,
            }
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no truc binary at {} (build it with `cargo build --release -p truc-cli`, or pass --truc)",
            path.display()
        ))
    }
}

impl Processes {
    /// Lays out a deployment in `dir` and starts its processes from `truc`.
    pub(crate) async fn start(dir: &Path, truc: &Path) -> Result<Processes, String> {
        let deployment = Deployment::start(DemoOptions {
            backend: BackendKind::Echo,
            ..DemoOptions::new(dir)
        })
        .await
        .map_err(|e| format!("cannot lay out the deployment: {e}"))?;
        let described = deployment.describe();
        let files = deployment.files.clone();
        let province = deployment
            .node(PROVINCE_NODE)
            .ok_or("no province node")?
            .addr()
            .to_string();
        deployment
            .stop()
            .await
            .map_err(|e| format!("the in-process deployment did not stop: {e}"))?;
        let backends: Vec<String> = described["backends"]
            .as_array()
            .ok_or("the deployment describes no backends")?
            .iter()
            .filter_map(|b| b.as_str().map(str::to_owned))
            .collect();
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
        let mut processes = Processes {
            procs: Vec::new(),
            pki: files.pki.clone(),
            province,
        };
        let path = |p: &Path| p.to_string_lossy().into_owned();
        for (i, b) in backends.iter().enumerate() {
            processes.spawn(
                truc,
                &logs,
                &format!("backend-{i}"),
                &["demo-backend", "--echo", "--listen", b],
            )?;
        }
        processes.spawn(
            truc,
            &logs,
            "hub",
            &["hub", "--config", &path(&files.hub_config)],
        )?;
        for (id, config) in &files.node_configs {
            processes.spawn(truc, &logs, id, &["node", "--config", &path(config)])?;
        }
        Ok(processes)
    }

    fn spawn(&mut self, truc: &Path, logs: &Path, name: &str, args: &[&str]) -> Result<(), String> {
        let log = logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(truc)
            .env_remove("RUST_LOG")
            .arg("--log-level=warn")
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {} {name}: {e}", truc.display()))?;
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            log,
        });
        Ok(())
    }

    /// An agency client of the province node, as the province's agency system.
    pub(crate) fn province_client(
        &self,
    ) -> Result<AgencyClient<tonic::transport::Channel>, String> {
        let channel = crate::servers::mtls_channel(
            &self.pki,
            (Role::Client, PROVINCE_CLIENT),
            &self.province,
            (Role::Node, PROVINCE_NODE),
        )?;
        Ok(AgencyClient::new(channel))
    }

    /// Waits until a routed call through the processes is answered (the
    /// nodes have the registry and reach the hub and the backend).
    pub(crate) async fn wait_routed(&mut self, client: &mut crate::Client) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut n: u128 = 0;
        loop {
            n += 1;
            let last = client
                .call(
                    &bytes::Bytes::from_static(b"up?"),
                    u128::from(std::process::id()) << 64 | n,
                )
                .await;
            let Err(status) = last else { return Ok(()) };
            for p in &mut self.procs {
                if let Ok(Some(exit)) = p.child.try_wait() {
                    return Err(format!("{} exited ({exit}):\n{}", p.name, p.log_tail()));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no routed call answered within {} s; the last: {}: {}",
                    START_TIMEOUT.as_secs(),
                    truc_ops::code_name(status.code()),
                    status.message()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resets every process's peak resident size; false if any refused.
    pub(crate) fn reset_peaks(&self) -> bool {
        self.procs.iter().all(Proc::reset_peak)
    }

    /// Stops every process with SIGTERM (nodes first, so that their last
    /// audit records reach the hub), killing what does not exit in time.
    pub(crate) async fn stop(mut self) -> Result<(), String> {
        let mut failed = Vec::new();
        let order = |p: &Proc| match p.name.as_str() {
            MINISTRY_NODE | PROVINCE_NODE => 0,
            "hub" => 1,
            _ => 2,
        };
        self.procs.sort_by_key(order);
        for p in &mut self.procs {
            let _ = Command::new("kill")
                .args(["-TERM", &p.pid().to_string()])
                .status();
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                match p.child.try_wait() {
                    Ok(Some(exit)) if exit.success() => break,
                    Ok(Some(exit)) => {
                        failed.push(format!("{} exited {exit}:\n{}", p.name, p.log_tail()));
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => {
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        failed.push(format!(
                            "{} did not stop within {} s",
                            p.name,
                            STOP_TIMEOUT.as_secs()
                        ));
                        break;
                    }
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("\n"))
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// A process's resident size and its peak since it started.
pub(crate) struct ProcFigures {
    pub(crate) name: String,
    pub(crate) rss_kib: Option<u64>,
    pub(crate) peak_kib: Option<u64>,
}

/// Each process's resident size and peak now.
fn figures(procs: &[Proc]) -> Vec<ProcFigures> {
    procs
        .iter()
        .map(|p| {
            let rss = p.rss_kib();
            ProcFigures {
                name: p.name.clone(),
                rss_kib: rss.map(|r| r.0),
                peak_kib: rss.map(|r| r.1),
            }
        })
        .collect()
}

/// `truc-bench --processes`: `modes` (direct-mtls and routed) against a
/// deployment of separate processes; prints the results and returns them as
/// JSON.
pub(crate) async fn bench(
    args: &crate::Args,
    modes: &[crate::Mode],
    cpus: usize,
    cpu: &str,
) -> Result<serde_json::Value, String> {
    use crate::Mode;
    if let Some(m) = modes
        .iter()
        .find(|m| !matches!(m, Mode::DirectMtls | Mode::Routed))
    {
        return Err(format!(
            "--processes measures direct-mtls and routed, not {}",
            m.name()
        ));
    }
    if args.no_flush {
        return Err(
            "--processes runs the hub as configured (durable); --no-flush is not available".into(),
        );
    }
    let truc = truc_binary(args.truc.as_deref())?;
    println!("truc binary: {}", truc.display());
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let mut processes = Processes::start(dir.path(), &truc).await?;
    let result = measure(args, modes, &mut processes).await;
    let stopped = processes.stop().await;
    let (outcomes, document, after_calls) = result?;
    stopped.map_err(|e| format!("the processes did not stop cleanly: {e}"))?;

    let mut j = crate::report(args, &outcomes, cpus, cpu);
    print_processes(&outcomes, &after_calls, document.as_ref());
    j["separate_processes"] = true.into();
    j["processes"] = processes_json(&outcomes, &after_calls, document.as_ref());
    if args.json {
        println!("{j}");
    }
    Ok(j)
}

/// The large document's figures, and each process's peak resident size
/// (KiB) while it moved.
type Document = (LargeOutcome, Vec<(String, Option<u64>)>);

async fn measure(
    args: &crate::Args,
    modes: &[crate::Mode],
    processes: &mut Processes,
) -> Result<(Vec<crate::Outcome>, Option<Document>, Vec<ProcFigures>), String> {
    use crate::Mode;
    let limit = crate::message_limit(args);
    let mut servers = crate::servers::Servers::new();
    let pki = processes.pki.clone();
    let echo = servers.echo_mtls(&pki, limit).await?;
    let routed = |p: &Processes| -> Result<crate::Client, String> {
        Ok(crate::Client::Routed(
            truc_client::Client::from_grpc(p.province_client()?).max_message_bytes(limit),
        ))
    };
    let mut first = routed(processes)?;
    processes.wait_routed(&mut first).await?;
    let watched: Vec<(String, u32)> = processes
        .procs
        .iter()
        .map(|p| (p.name.clone(), p.pid()))
        .collect();
    let mut outcomes = Vec::new();
    for mode in modes {
        let clients = match mode {
            Mode::DirectMtls => crate::mtls_clients(&pki, echo, args)?,
            _ => (0..args.connections)
                .map(|_| routed(processes))
                .collect::<Result<Vec<_>, _>>()?,
        };
        outcomes.push(crate::run_watching(mode.name(), &clients, args, watched.clone()).await?);
    }
    let after_calls = figures(&processes.procs);
    let document = if args.document_mib > 0 {
        let client = truc_client::Client::from_grpc(processes.province_client()?)
            .max_message_bytes(8 * 1024 * 1024);
        if !processes.reset_peaks() {
            return Err("cannot reset the processes' peak memory (/proc/PID/clear_refs)".into());
        }
        let large = crate::docs::large_document(&client, args.document_mib << 20, 1 << 20).await?;
        let peaks = processes
            .procs
            .iter()
            .map(|p| (p.name.clone(), p.rss_kib().map(|r| r.1)))
            .collect();
        Some((large, peaks))
    } else {
        None
    };
    Ok((outcomes, document, after_calls))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn print_processes(
    outcomes: &[crate::Outcome],
    after: &[ProcFigures],
    document: Option<&Document>,
) {
    let routed = outcomes.iter().find(|o| o.mode == "routed");
    println!();
    println!(
        "{:<22} {:>16} {:>12} {:>13} {:>18}",
        "process", "CPU µs/routed", "RSS MiB", "peak MiB", "document peak MiB"
    );
    for p in after {
        let per_call = routed.and_then(|o| {
            let calls = o.calls();
            let (_, s) = o.cpu_by_process.iter().find(|(n, _)| *n == p.name)?;
            s.filter(|_| calls > 0).map(|s| s * 1e6 / calls as f64)
        });
        let doc_peak = document.and_then(|(_, peaks)| {
            peaks
                .iter()
                .find(|(n, _)| *n == p.name)
                .and_then(|(_, k)| *k)
        });
        println!(
            "{:<22} {:>16} {:>12} {:>13} {:>18}",
            p.name,
            per_call.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
            mib(p.rss_kib),
            mib(p.peak_kib),
            mib(doc_peak),
        );
    }
    println!(
        "  RSS and peak after the calls (peak since the process started); document peak: the highest resident size while the document moved (reset when it started)"
    );
    if let Some((l, _)) = document {
        println!(
            "document: one attachment of {} MiB, province -> hub -> ministry: acknowledged in {:.3} s, 01 seen after {:.3} s ({:.1} MB/s)",
            l.bytes >> 20,
            l.acked.as_secs_f64(),
            l.delivered.as_secs_f64(),
            l.bytes as f64 / 1e6 / l.delivered.as_secs_f64(),
        );
    }
}

fn processes_json(
    outcomes: &[crate::Outcome],
    after: &[ProcFigures],
    document: Option<&Document>,
) -> serde_json::Value {
    let cpu = |name: &str| -> serde_json::Map<String, serde_json::Value> {
        outcomes
            .iter()
            .filter_map(|o| {
                let (_, s) = o.cpu_by_process.iter().find(|(n, _)| n == name)?;
                let calls = o.calls();
                let per_call = s
                    .filter(|_| calls > 0)
                    .map(|s| crate::round(s * 1e6 / calls as f64, 1));
                Some((o.mode.to_owned(), per_call.into()))
            })
            .collect()
    };
    let procs: Vec<serde_json::Value> = after
        .iter()
        .map(|p| {
            let doc_peak = document.and_then(|(_, peaks)| {
                peaks
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .and_then(|(_, k)| *k)
            });
            serde_json::json!({
                "name": p.name,
                "cpu_us_per_call": cpu(&p.name),
                "rss_kib": p.rss_kib,
                "peak_kib": p.peak_kib,
                "document_peak_kib": doc_peak,
            })
        })
        .collect();
    serde_json::json!({
        "list": procs,
        "document": document.map(|(l, _)| serde_json::json!({
            "bytes": l.bytes,
            "acked_s": l.acked.as_secs_f64(),
            "delivered_s": l.delivered.as_secs_f64(),
        })),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    /// Needs the `truc` binary of this build (`cargo test --workspace`
    /// builds it before running any test).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_and_a_document_go_through_separate_truc_processes() {
        let args = crate::Args::parse_from([
            "truc-bench",
            "all",
            "--processes",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--concurrency",
            "4",
            "--document-mib",
            "1",
        ]);
        let j = crate::bench(args).await.expect("bench");
        assert_eq!(j["separate_processes"], true);
        let results = j["results"].as_array().expect("results");
        assert_eq!(results.len(), 2);
        for r in results {
            assert!(r["calls"].as_u64().unwrap_or(0) > 0, "{r}");
            assert_eq!(r["errors"], 0, "{r}");
        }
        let list = j["processes"]["list"].as_array().expect("processes");
        let names: Vec<&str> = list.iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(
            names,
            [
                "backend-0",
                "backend-1",
                "hub",
                truc_demo::MINISTRY_NODE,
                truc_demo::PROVINCE_NODE
            ]
        );
        for p in list {
            assert!(p["rss_kib"].as_u64().unwrap_or(0) > 0, "{p}");
            assert!(p["document_peak_kib"].as_u64().unwrap_or(0) > 0, "{p}");
        }
        // The hub and both nodes worked for the routed calls, not for the
        // direct ones.
        for p in &list[2..] {
            let routed = p["cpu_us_per_call"]["routed"].as_f64().unwrap_or(0.0);
            assert!(routed > 0.0, "{p}");
        }
        assert_eq!(j["processes"]["document"]["bytes"], 1 << 20);
    }

    #[test]
    fn a_missing_truc_binary_is_named() {
        let e = super::truc_binary(Some(std::path::Path::new("/nonexistent/truc")))
            .expect_err("missing");
        assert!(e.contains("/nonexistent/truc"), "{e}");
    }
}
