//! Metrics in Prometheus text format: transactions (by kind, parties,
//! service and outcome), gRPC requests (by service, method and code, the
//! names existing dashboards expect), and process metrics. Label values for
//! agencies and services come from a known set (the registry on the hub, the
//! config on a node); anything else is `other`, so cardinality stays bounded.

use std::{
    collections::HashSet,
    sync::{OnceLock, RwLock},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TxLabels {
    kind: &'static str,
    client: String,
    provider: String,
    service: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcMethodLabels {
    grpc_service: String,
    grpc_method: String,
}

/// Writes more metric families into the exposition at scrape time.
pub(crate) type Source = Box<dyn Fn(&mut String) + Send + Sync>;

/// A health check run by `/healthz`: the warnings it has now (none: healthy).
pub type HealthCheck = Box<dyn Fn() -> Vec<String> + Send + Sync>;

/// The metrics of one process.
pub struct Metrics {
    registry: Registry,
    transactions: Family<TxLabels, Counter>,
    latency: Family<KindLabels, Histogram>,
    grpc_handled: Family<GrpcLabels, Counter>,
    grpc_seconds: Family<GrpcMethodLabels, Histogram>,
    known: RwLock<(HashSet<String>, HashSet<String>)>,
    sources: RwLock<Vec<Source>>,
    health: RwLock<Vec<HealthCheck>>,
    /// In maintenance mode (see `Drain`): `truc_draining`, `/healthz` 503.
    draining: std::sync::atomic::AtomicBool,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~52 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 20,
    ))
}

impl Metrics {
    /// Metrics with every family registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let transactions = Family::<TxLabels, Counter>::default();
        registry.register(
            "truc_transactions",
            "Transactions completed, by kind, client and provider agency, service and outcome (gRPC code, or QUOTA_EXCEEDED)",
            transactions.clone(),
        );
        let latency =
            Family::<KindLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "truc_transaction_duration_seconds",
            "Time to complete a transaction, as this process saw it",
            latency.clone(),
        );
        let grpc_handled = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "grpc_server_handled",
            "gRPC requests completed on the server, by service, method and code",
            grpc_handled.clone(),
        );
        let grpc_seconds = Family::<GrpcMethodLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> _,
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time to handle a gRPC request, until its status",
            grpc_seconds.clone(),
        );
        Metrics {
            registry,
            transactions,
            latency,
            grpc_handled,
            grpc_seconds,
            known: RwLock::new((HashSet::new(), HashSet::new())),
            sources: RwLock::new(vec![Box::new(process_metrics)]),
            health: RwLock::new(Vec::new()),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The agencies and services that may appear as label values.
    pub fn set_known(&self, agencies: HashSet<String>, services: HashSet<String>) {
        if let Ok(mut k) = self.known.write() {
            *k = (agencies, services);
        }
    }

    /// Adds families computed at scrape time.
    pub fn add_source(&self, source: Source) {
        if let Ok(mut s) = self.sources.write() {
            s.push(source);
        }
    }

    /// Adds a check whose warnings `/healthz` shows.
    pub fn add_health_check(&self, check: HealthCheck) {
        if let Ok(mut h) = self.health.write() {
            h.push(check);
        }
    }

    /// Marks the process draining (or not).
    pub(crate) fn set_draining(&self, draining: bool) {
        self.draining
            .store(draining, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the process is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The warnings of every health check now.
    pub fn health_warnings(&self) -> Vec<String> {
        self.health
            .read()
            .map(|h| h.iter().flat_map(|c| c()).collect())
            .unwrap_or_default()
    }

    fn bounded(&self, value: &str, services: bool) -> String {
        let known = self.known.read().is_ok_and(|k| {
            if services {
                k.1.contains(value)
                    || value
                        .strip_prefix("document/")
                        .is_some_and(|r| r.len() < 10)
                    || value.strip_prefix("status/").is_some_and(|r| r.len() == 2)
            } else {
                k.0.contains(value)
            }
        });
        if known {
            value.to_string()
        } else {
            "other".into()
        }
    }

    /// Counts one transaction. `outcome` is its audit record's: a gRPC code
    /// name, or `QUOTA_EXCEEDED`.
    pub fn observe(
        &self,
        kind: &'static str,
        outcome: &'static str,
        parties: (&str, &str, &str),
        seconds: f64,
    ) {
        let (client, provider, service) = parties;
        self.transactions
            .get_or_create(&TxLabels {
                kind,
                client: self.bounded(client, false),
                provider: self.bounded(provider, false),
                service: self.bounded(service, true),
                outcome,
            })
            .inc();
        self.latency
            .get_or_create(&KindLabels { kind })
            .observe(seconds);
    }

    /// Counts one gRPC request handled (`path` is `/package.Service/Method`).
    /// A method that is not in our descriptor sets (any path a caller
    /// makes up) is labelled `other`/`other`.
    pub fn observe_grpc(&self, path: &str, code: tonic::Code, seconds: f64) {
        let (service, method) = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
            Some((service, method)) if known_methods().contains(path) => {
                (service.to_string(), method.to_string())
            }
            _ => ("other".to_string(), "other".to_string()),
        };
        self.grpc_handled
            .get_or_create(&GrpcLabels {
                grpc_service: service.clone(),
                grpc_method: method.clone(),
                grpc_code: grpc_code_name(code),
            })
            .inc();
        self.grpc_seconds
            .get_or_create(&GrpcMethodLabels {
                grpc_service: service,
                grpc_method: method,
            })
            .observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        let body = out.strip_suffix("# EOF\n").unwrap_or(&out).to_string();
        let mut out = body;
        write_metric(
            &mut out,
            "truc_draining",
            "gauge",
            "1 while the process drains: it refuses new calls and stops once those in flight finish",
            &[("", f64::from(u8::from(self.is_draining())))],
        );
        if let Ok(sources) = self.sources.read() {
            for source in sources.iter() {
                source(&mut out);
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Every `/package.Service/Method` path in the descriptor sets our servers
/// serve (truc.v1, health, reflection v1 and v1alpha), decoded once.
fn known_methods() -> &'static HashSet<String> {
    static KNOWN: OnceLock<HashSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let sets = [
            truc_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut known = HashSet::new();
        for encoded in sets {
            // Built into the binary; a set that does not decode only makes
            // its methods count as `other`.
            let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(encoded)
            else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = service.name.unwrap_or_default();
                    for method in service.method {
                        let method_name = method.name.unwrap_or_default();
                        known.insert(if package.is_empty() {
                            format!("/{service_name}/{method_name}")
                        } else {
                            format!("/{package}.{service_name}/{method_name}")
                        });
                    }
                }
            }
        }
        known
    })
}

/// Writes one gauge or counter family with a single sample.
pub fn write_metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let sample = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_string()
        };
        let _ = writeln!(out, "{sample}{labels} {value}");
    }
}

/// process_* metrics from /proc (Linux), with the kernel's clock tick and
/// page size; nothing elsewhere.
#[cfg(target_os = "linux")]
fn process_metrics(out: &mut String) {
    let Ok(me) = procfs::process::Process::myself() else {
        return;
    };
    let Ok(stat) = me.stat() else {
        return;
    };
    let ticks = procfs::ticks_per_second().max(1) as f64;
    let cpu = (stat.utime + stat.stime) as f64 / ticks;
    let rss = stat.rss.saturating_mul(procfs::page_size()) as f64;
    let boot = procfs::boot_time_secs().unwrap_or(0) as f64;
    let start = boot + stat.starttime as f64 / ticks;
    let fds = me.fd_count().unwrap_or(0) as f64;
    write_metric(
        out,
        "process_cpu_seconds",
        "counter",
        "User and system CPU time spent in seconds.",
        &[("", cpu)],
    );
    write_metric(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        &[("", rss)],
    );
    write_metric(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch in seconds.",
        &[("", start)],
    );
    write_metric(
        out,
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        &[("", fds)],
    );
}

#[cfg(not(target_os = "linux"))]
fn process_metrics(_out: &mut String) {}

/// gRPC code names as go-grpc-prometheus writes them.
pub(crate) fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// The canonical name of a gRPC code (`OK`, `NOT_FOUND`, …), as audit records
/// and metrics spell it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_plausible() {
        let mut out = String::new();
        process_metrics(&mut out);
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing in {out}"))
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        // Started after 2020 and not in the future (seconds, not ticks).
        assert!(start > 1_577_836_800.0 && start <= now + 1.0, "{start}");
        assert!(value("process_resident_memory_bytes") >= 1_048_576.0);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_open_fds") >= 3.0);
    }

    #[test]
    fn exposition_has_bounded_labels_grpc_and_process_metrics() {
        let m = Metrics::new();
        m.set_known(
            ["000.00.00.H37".to_string(), "000.00.00.G22".to_string()].into(),
            ["000.00.00.G22/citizen-lookup/v1".to_string()].into(),
        );
        let known = (
            "000.00.00.H37",
            "000.00.00.G22",
            "000.00.00.G22/citizen-lookup/v1",
        );
        m.observe("call", "OK", known, 0.002);
        m.observe("call", "OK", known, 0.003);
        m.observe(
            "call",
            "NOT_FOUND",
            ("000.00.00.H37", "999.99.99.X99", "999.99.99.X99/x/v1"),
            0.001,
        );
        m.observe_grpc("/truc.v1.Hub/Route", tonic::Code::Ok, 0.004);
        let text = m.encode();
        assert!(
            text.contains(r#"truc_transactions_total{kind="call",client="000.00.00.H37",provider="000.00.00.G22",service="000.00.00.G22/citizen-lookup/v1",outcome="OK"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"truc_transactions_total{kind="call",client="000.00.00.H37",provider="other",service="other",outcome="NOT_FOUND"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"grpc_server_handled_total{grpc_service="truc.v1.Hub",grpc_method="Route",grpc_code="OK"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("grpc_server_handling_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains(r#"truc_transaction_duration_seconds_count{kind="call"} 3"#),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn unknown_grpc_methods_are_other() {
        let m = Metrics::new();
        m.observe_grpc("/truc.v1.Agency/Call", tonic::Code::Ok, 0.001);
        m.observe_grpc("/grpc.health.v1.Health/Check", tonic::Code::Ok, 0.001);
        m.observe_grpc(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            tonic::Code::Ok,
            0.001,
        );
        // A hostile caller makes up paths: each must land in one series.
        for i in 0..100 {
            m.observe_grpc(
                &format!("/evil.S{i}/M{i}"),
                tonic::Code::Unimplemented,
                0.001,
            );
            m.observe_grpc(
                &format!("/truc.v1.Hub/Nope{i}"),
                tonic::Code::Unimplemented,
                0.001,
            );
        }
        m.observe_grpc("no-slash", tonic::Code::Unimplemented, 0.001);
        let text = m.encode();
        assert!(
            text.contains(r#"grpc_server_handled_total{grpc_service="truc.v1.Agency",grpc_method="Call",grpc_code="OK"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"grpc_service="grpc.health.v1.Health",grpc_method="Check""#),
            "{text}"
        );
        assert!(
            text.contains(r#"grpc_service="grpc.reflection.v1alpha.ServerReflection""#),
            "{text}"
        );
        assert!(
            text.contains(r#"grpc_server_handled_total{grpc_service="other",grpc_method="other",grpc_code="Unimplemented"} 201"#),
            "{text}"
        );
        assert!(!text.contains("evil"), "{text}");
        assert!(!text.contains("Nope"), "{text}");
    }
}
