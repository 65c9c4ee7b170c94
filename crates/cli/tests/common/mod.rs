//! Helpers shared by the tests that run the real `truc` binary.

#![allow(dead_code)]

use std::{
    path::Path,
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

pub(crate) fn truc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_truc"));
    c.env_remove("RUST_LOG").arg("--log-level=warn");
    c
}

pub(crate) fn run(args: &[&str]) -> Output {
    truc().args(args).output().expect("run truc")
}

/// [`run`] from async code, off the runtime's worker threads.
pub(crate) async fn truc_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args)
    })
    .await
    .expect("truc")
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn spawn(args: &[&str]) -> Process {
    Process(
        truc()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn truc"),
    )
}

/// Polls `truc call` until it gets an answer other than UNAVAILABLE.
pub(crate) fn call_until_up(client: &Path, agency: &str, service: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run(&[
            "call",
            "--config",
            client.to_str().expect("utf-8"),
            "--as",
            agency,
            "--service",
            service,
            "--data",
            r#"{"id":"001089012345"}"#,
            "--timeout",
            "5",
        ]);
        let unavailable = text(&out.stderr).contains("Unavailable");
        if !unavailable || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Process {
    /// Sends `signal` (TERM, KILL) and waits for the process to exit.
    pub(crate) fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill")
            .args([format!("-{signal}").as_str(), &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        self.wait_for_exit()
    }

    /// Kills the process with SIGKILL and reaps it: when this returns, the
    /// process is gone and the kernel has closed its sockets.
    pub(crate) fn kill_now(&mut self) -> ExitStatus {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("wait")
    }

    /// Waits (at most 30 s) for the process to exit by itself.
    pub(crate) fn wait_for_exit(&mut self) -> ExitStatus {
        let pid = self.0.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "process {pid} did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A hub, two nodes and the ministry's backend, each its own process, on
/// the files `truc demo` wrote to `data`.
pub(crate) struct Deployment {
    pub hub: Process,
    pub ministry: Process,
    pub province: Process,
    pub backend: Process,
}

impl Deployment {
    pub(crate) fn spawn(data: &Path) -> Deployment {
        let p = |f: &str| data.join(f).to_str().expect("utf-8").to_string();
        let ministry = std::fs::read_to_string(data.join("node-vpcp.toml")).expect("config");
        // The first `address` in the node config is the hub's; the backend's is the last.
        let backend_addr = ministry
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("address = \""))
            .and_then(|v| v.strip_suffix('"'))
            .expect("backend address")
            .to_string();
        Deployment {
            hub: spawn(&["hub", "--config", &p("hub.toml")]),
            ministry: spawn(&["node", "--config", &p("node-vpcp.toml")]),
            province: spawn(&["node", "--config", &p("node-lgsp-langson.toml")]),
            backend: spawn(&["demo-backend", "--listen", &backend_addr]),
        }
    }
}

/// Runs `truc audit verify` on the stopped hub's data directory of the
/// deployment in `data`, asserts it exits 0, and returns its output.
pub(crate) fn verify_hub_log(data: &Path) -> Output {
    let hub_dir = data.join("hub");
    let verify = run(&[
        "audit",
        "verify",
        "--data",
        hub_dir.to_str().expect("utf-8"),
    ]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
    verify
}

/// Lays out a deployment with `truc demo` (PKI, registry, configs, a few
/// sample transactions) in a directory under `dir` and returns it, with
/// the ports of its configs held (see [`demo_held`]).
pub(crate) fn demo_files(dir: &Path, calls: &str) -> std::path::PathBuf {
    demo_held(dir, calls, &[])
}

/// `truc demo` into a directory under `dir`, then a socket bound (with
/// `SO_REUSEADDR`, never listening) to every loopback port its configs name,
/// held until the test process ends. The processes a test starts on those
/// configs bind beside the sockets; no other process is handed those ports
/// meanwhile, while the test's processes are down included. Another
/// process may have taken a port in the moment between the demo's exit and
/// the reservation: then the demo runs again into a new directory, on new
/// ports.
pub(crate) fn demo_held(dir: &Path, calls: &str, extra: &[&str]) -> std::path::PathBuf {
    static HELD: std::sync::Mutex<Vec<tokio::net::TcpSocket>> = std::sync::Mutex::new(Vec::new());
    let mut taken = Vec::new();
    for attempt in 0..5 {
        let data = dir.join(if attempt == 0 {
            "d".to_string()
        } else {
            format!("d{attempt}")
        });
        let out = demo_into(&data, calls, extra);
        assert!(out.status.success(), "{}", text(&out.stderr));
        match hold_ports(&config_ports(&data)) {
            Ok(sockets) => {
                HELD.lock().expect("lock").extend(sockets);
                return data;
            }
            Err(port) => taken.push(port),
        }
    }
    panic!("other processes took ports of five demos in a row: {taken:?}");
}

/// The loopback ports named in the `.toml` files of `data`.
pub(crate) fn config_ports(data: &Path) -> std::collections::BTreeSet<u16> {
    let mut ports = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(data).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let config = std::fs::read_to_string(&path).expect("config");
        const LOOPBACK: &str = "127.0.0.1:";
        for (at, _) in config.match_indices(LOOPBACK) {
            let digits: String = config[at + LOOPBACK.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(port @ 1..) = digits.parse::<u16>() {
                ports.insert(port);
            }
        }
    }
    ports
}

/// A socket bound to each port, or the first port another socket holds.
fn hold_ports(ports: &std::collections::BTreeSet<u16>) -> Result<Vec<tokio::net::TcpSocket>, u16> {
    ports
        .iter()
        .map(|&port| {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_reuseaddr(true).expect("SO_REUSEADDR");
            socket
                .bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                .map(|()| socket)
                .map_err(|_| port)
        })
        .collect()
}

/// `truc demo --data DATA --duration 0 --calls CALLS EXTRA…`, as it ran.
pub(crate) fn demo_into(data: &Path, calls: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "demo",
        "--data",
        data.to_str().expect("utf-8"),
        "--duration",
        "0",
        "--calls",
        calls,
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// The dimensions `truc report` groups by by default.
pub(crate) const REPORT_BY: [&str; 5] = ["client", "provider", "service", "kind", "outcome"];

/// The output of `truc report --format json`, asserting it exited 0.
pub(crate) fn report_json(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// A JSON report's rows (grouped by [`REPORT_BY`]) by their keys: count,
/// errors, request and response bytes.
pub(crate) fn report_sums(
    v: &serde_json::Value,
) -> std::collections::BTreeMap<Vec<String>, [u64; 4]> {
    let mut out = std::collections::BTreeMap::new();
    for row in v["rows"].as_array().expect("rows") {
        let keys = REPORT_BY
            .map(|k| row[k].as_str().expect("key").to_string())
            .to_vec();
        let n = ["count", "errors", "request_bytes", "response_bytes"]
            .map(|k| row[k].as_u64().expect("number"));
        out.insert(keys, n);
    }
    out
}

/// The statistics recomputed from the audit log of the stopped hub whose
/// data directory is `dir`, asserting that the log verifies.
pub(crate) fn verified_stats(
    dir: &Path,
) -> std::collections::BTreeMap<truc_audit::CountKey, truc_audit::Stats> {
    let store = truc_store::Store::open(dir).expect("store");
    let verified = truc_audit::verify(&store, None).expect("verify");
    assert!(
        verified.is_ok(),
        "{}: {:?}",
        dir.display(),
        verified.problem
    );
    verified.stats
}

/// Adds the statistics `more` into `into`, key by key.
pub(crate) fn add_stats(
    into: &mut std::collections::BTreeMap<truc_audit::CountKey, truc_audit::Stats>,
    more: std::collections::BTreeMap<truc_audit::CountKey, truc_audit::Stats>,
) {
    for (k, s) in more {
        into.entry(k).or_default().add(&s);
    }
}

/// Asserts that a JSON report (grouped by [`REPORT_BY`]) is, row by row and
/// in total, the statistics `logs` (of verified logs), counts, errors,
/// bytes and percentiles alike.
pub(crate) fn assert_report_equals_logs(
    report: &serde_json::Value,
    logs: &std::collections::BTreeMap<truc_audit::CountKey, truc_audit::Stats>,
) {
    use truc_audit::report::{Dim, Filter, aggregate};
    let dims = REPORT_BY.map(|d| Dim::parse(d).expect("dim"));
    let (groups, total) = aggregate(logs, &dims, &Filter::default(), |_| true);
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), groups.len(), "{report}");
    for (row, g) in rows.iter().zip(&groups) {
        let want = g.to_row();
        let keys: Vec<&str> = REPORT_BY
            .iter()
            .map(|k| row[k].as_str().unwrap_or(""))
            .collect();
        assert_eq!(keys, g.keys, "the same groups in the same order");
        for (k, v) in [
            ("count", want.count),
            ("errors", want.errors),
            ("request_bytes", want.request_bytes),
            ("response_bytes", want.response_bytes),
        ] {
            assert_eq!(row[k].as_u64(), Some(v), "{k} of {:?}", g.keys);
        }
        for (k, v) in [
            ("p50_ms", want.p50_ms),
            ("p95_ms", want.p95_ms),
            ("p99_ms", want.p99_ms),
        ] {
            // The same bucket (neighbours are 2% apart); JSON parsing may
            // change the last digit.
            let got = row[k].as_f64().expect("a number");
            assert!(
                (got - v).abs() <= v * 1e-12,
                "{k} of {:?}: {got} vs {v}",
                g.keys
            );
        }
    }
    let total = total.to_row();
    assert_eq!(report["total"]["count"].as_u64(), Some(total.count));
    assert_eq!(report["total"]["errors"].as_u64(), Some(total.errors));
    let p99 = report["total"]["p99_ms"].as_f64().expect("a number");
    assert!(
        (p99 - total.p99_ms).abs() <= total.p99_ms * 1e-12,
        "{p99} vs {}",
        total.p99_ms
    );
}
