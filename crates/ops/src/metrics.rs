//! Transaction metrics in Prometheus text format.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TxLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The metrics of one process.
pub struct Metrics {
    registry: Registry,
    transactions: Family<TxLabels, Counter>,
    latency: Family<KindLabels, Histogram>,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~52 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 20,
    ))
}

impl Metrics {
    /// Metrics with every family registered under the `truc_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("truc");
        let transactions = Family::<TxLabels, Counter>::default();
        registry.register(
            "transactions",
            "Transactions completed, by kind and outcome (gRPC code)",
            transactions.clone(),
        );
        let latency =
            Family::<KindLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "transaction_duration_seconds",
            "Time to complete a transaction, as this process saw it",
            latency.clone(),
        );
        Metrics {
            registry,
            transactions,
            latency,
        }
    }

    /// Counts one transaction. `outcome` is a gRPC code name.
    pub fn observe(&self, kind: &'static str, outcome: tonic::Code, seconds: f64) {
        self.transactions
            .get_or_create(&TxLabels {
                kind,
                outcome: code_name(outcome),
            })
            .inc();
        self.latency
            .get_or_create(&KindLabels { kind })
            .observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
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

    #[test]
    fn exposition_has_counts_and_histogram() {
        let m = Metrics::new();
        m.observe("call", tonic::Code::Ok, 0.002);
        m.observe("call", tonic::Code::Ok, 0.003);
        m.observe("call", tonic::Code::NotFound, 0.001);
        let text = m.encode();
        assert!(
            text.contains(r#"truc_transactions_total{kind="call",outcome="OK"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"truc_transactions_total{kind="call",outcome="NOT_FOUND"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"truc_transaction_duration_seconds_count{kind="call"} 3"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
