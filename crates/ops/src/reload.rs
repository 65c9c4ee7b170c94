//! Reloading files without a restart: the one place that decides when.
//!
//! Each watched item (the TLS files, the hub's registry) names its files
//! and how to load them. Every [`POLL_INTERVAL`] the files' size, mtime and
//! a hash of their content are compared with what was seen last; an item
//! whose files changed is reloaded. SIGHUP reloads every item at once, and
//! so does [`Reloader::reload`] (for tests and tools). A load that fails
//! leaves what is in force untouched (the item decides that: it swaps only
//! what loaded), is logged with the file and the loader's message (which
//! carries the line and field where the parser gives them), and is counted
//! in `truc_reload_errors_total{file}`; successes in `truc_reloads_total`.
//! Polling needs no dependency and works on every filesystem (network
//! mounts and bind mounts included), which inotify does not.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::{Metrics, Shutdown, write_metric};

/// How often watched files are compared with what was loaded.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Why one reload failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadError {
    /// The file at fault.
    pub file: PathBuf,
    /// What is wrong (with line and field where the parser gives them).
    pub message: String,
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

/// What one round of reloading did.
#[derive(Clone, Debug, Default)]
pub struct ReloadReport {
    /// The items reloaded.
    pub reloaded: Vec<String>,
    /// The items whose new files were refused (the old ones stay in force).
    pub failed: Vec<(String, ReloadError)>,
}

type Action = Box<dyn Fn() -> Result<(), ReloadError> + Send + Sync>;

/// What a file looked like: length, mtime, hash of its content (`None`
/// when it cannot be read).
type Fingerprint = Option<(u64, Option<SystemTime>, u64)>;

struct Item {
    name: String,
    paths: Vec<PathBuf>,
    seen: Vec<Fingerprint>,
    action: Action,
}

#[derive(Default)]
struct Inner {
    items: Mutex<Vec<Item>>,
    reloads: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

/// The reload trigger of one process (cheap to clone).
#[derive(Clone, Default)]
pub struct Reloader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

fn fingerprint(path: &PathBuf) -> Fingerprint {
    let meta = std::fs::metadata(path).ok()?;
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some((meta.len(), meta.modified().ok(), h.finish()))
}

impl Reloader {
    /// A reloader watching nothing yet.
    pub fn new() -> Reloader {
        Reloader::default()
    }

    /// Watches `paths`: when one changes (or on SIGHUP, or [`reload`](Self::reload)),
    /// `action` loads them again.
    pub fn watch(
        &self,
        name: &str,
        paths: Vec<PathBuf>,
        action: impl Fn() -> Result<(), ReloadError> + Send + Sync + 'static,
    ) {
        let seen = paths.iter().map(fingerprint).collect();
        if let Ok(mut items) = self.inner.items.lock() {
            items.push(Item {
                name: name.to_string(),
                paths,
                seen,
                action: Box::new(action),
            });
        }
    }

    /// Reloads every item now.
    pub fn reload(&self) -> ReloadReport {
        self.run(true)
    }

    /// Reloads the items whose files changed since they were last seen.
    pub fn poll(&self) -> ReloadReport {
        self.run(false)
    }

    fn run(&self, all: bool) -> ReloadReport {
        let mut report = ReloadReport::default();
        let Ok(mut items) = self.inner.items.lock() else {
            return report;
        };
        for item in items.iter_mut() {
            let now: Vec<Fingerprint> = item.paths.iter().map(fingerprint).collect();
            if !all && now == item.seen {
                continue;
            }
            // A bad file is reported once, not at every poll.
            item.seen = now;
            match (item.action)() {
                Ok(()) => {
                    self.inner.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(item = %item.name, "reloaded");
                    report.reloaded.push(item.name.clone());
                }
                Err(e) => {
                    tracing::error!(item = %item.name, file = %e.file.display(), error = %e.message, "reload refused; the previous configuration stays in force");
                    if let Ok(mut errors) = self.inner.errors.lock() {
                        *errors.entry(e.file.display().to_string()).or_default() += 1;
                    }
                    report.failed.push((item.name.clone(), e));
                }
            }
        }
        report
    }

    /// Polls every `every` and reloads everything on SIGHUP, until
    /// `shutdown` fires.
    pub fn spawn(&self, every: Duration, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut hangup = hangup_signal();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let stop = shutdown.wait();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => break,
                    _ = tick.tick() => {
                        let this = this.clone();
                        let _ = tokio::task::spawn_blocking(move || this.poll()).await;
                    }
                    () = next_hangup(&mut hangup) => {
                        tracing::info!("SIGHUP: reloading");
                        let this = this.clone();
                        let _ = tokio::task::spawn_blocking(move || this.reload()).await;
                    }
                }
            }
        })
    }

    /// Writes `truc_reloads_total` and `truc_reload_errors_total{file}`.
    pub fn write_metrics(&self, out: &mut String) {
        write_metric(
            out,
            "truc_reloads",
            "counter",
            "Reloads of certificates, keys, CRLs or the registry that took effect",
            &[("", self.inner.reloads.load(Ordering::Relaxed) as f64)],
        );
        let errors = self
            .inner
            .errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        let labels: Vec<(String, f64)> = errors
            .iter()
            .map(|(file, n)| (format!("{{file=\"{}\"}}", label_value(file)), *n as f64))
            .collect();
        let samples: Vec<(&str, f64)> = labels.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        write_metric(
            out,
            "truc_reload_errors",
            "counter",
            "Reloads refused because a new file did not load or validate, by file",
            &samples,
        );
    }

    /// Adds this reloader's metrics to `metrics`, which then holds the
    /// reloader: an item's action must hold `metrics` only weakly, or
    /// neither (nor what the metrics read, such as an audit log) is ever
    /// dropped.
    pub fn register(&self, metrics: &Metrics) {
        let this = self.clone();
        metrics.add_source(Box::new(move |out| this.write_metrics(out)));
    }
}

/// `s` escaped for a Prometheus label value.
pub(crate) fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; files are still polled");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

async fn next_hangup(h: &mut Hangup) {
    #[cfg(unix)]
    if let Some(s) = h.as_mut() {
        if s.recv().await.is_some() {
            return;
        }
        *h = None;
    }
    #[cfg(not(unix))]
    let _ = h;
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counting(dir: &std::path::Path) -> (Reloader, PathBuf, Arc<AtomicUsize>) {
        let path = dir.join("f.txt");
        std::fs::write(&path, "good 1").expect("write");
        let r = Reloader::new();
        let loads = Arc::new(AtomicUsize::new(0));
        let (p, l) = (path.clone(), loads.clone());
        r.watch("f", vec![path.clone()], move || {
            let text = std::fs::read_to_string(&p).map_err(|e| ReloadError {
                file: p.clone(),
                message: e.to_string(),
            })?;
            if text.starts_with("good") {
                l.fetch_add(1, Ordering::SeqCst);
                Ok(())
            } else {
                Err(ReloadError {
                    file: p.clone(),
                    message: "line 1, field x: bad".into(),
                })
            }
        });
        (r, path, loads)
    }

    #[test]
    fn a_change_is_reloaded_once_and_a_bad_file_counted_once() {
        let dir = tempfile::tempdir().expect("dir");
        let (r, path, loads) = counting(dir.path());
        assert!(r.poll().reloaded.is_empty(), "nothing changed");
        // Same size, same mtime granularity: the content hash tells.
        std::fs::write(&path, "good 2").expect("write");
        assert_eq!(r.poll().reloaded, ["f"]);
        assert!(r.poll().reloaded.is_empty());
        assert_eq!(loads.load(Ordering::SeqCst), 1);

        std::fs::write(&path, "bad").expect("write");
        let report = r.poll();
        assert_eq!(report.failed.len(), 1);
        assert!(r.poll().failed.is_empty(), "reported once");
        assert_eq!(r.reload().failed.len(), 1, "a forced reload tries again");
        let mut out = String::new();
        r.write_metrics(&mut out);
        assert!(out.contains("truc_reloads_total 1\n"), "{out}");
        let file = label_value(&path.display().to_string());
        assert!(
            out.contains(&format!("truc_reload_errors_total{{file=\"{file}\"}} 2\n")),
            "{out}"
        );
    }

    #[tokio::test]
    async fn the_poll_loop_picks_up_a_change() {
        let dir = tempfile::tempdir().expect("dir");
        let (r, path, loads) = counting(dir.path());
        let shutdown = Shutdown::new();
        let task = r.spawn(Duration::from_millis(20), shutdown.clone());
        std::fs::write(&path, "good, longer").expect("write");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while loads.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.trigger();
        task.await.expect("loop ends on shutdown");
    }
}
