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
/// sample transactions) in `dir/d` and returns that directory.
pub(crate) fn demo_files(dir: &Path, calls: &str) -> std::path::PathBuf {
    let data = dir.join("d");
    let out = run(&[
        "demo",
        "--data",
        data.to_str().expect("utf-8"),
        "--duration",
        "0",
        "--calls",
        calls,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    data
}
