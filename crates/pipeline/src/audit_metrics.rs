//! The audit log's own health as metrics, next to the pipeline that writes
//! the log (so `truc-ops` needs no audit types).

/// Exposes on `metrics` `truc_audit_flush_failures_total` of the log behind
/// `reader`, and `truc_audit_unreadable_entries_total`.
pub fn watch_audit(metrics: &truc_ops::Metrics, reader: truc_audit::LogReader) {
    metrics.add_source(Box::new(move |out| {
        truc_ops::write_metric(
            out,
            "truc_audit_flush_failures",
            "counter",
            "Audit commits that could not be made durable",
            &[("", reader.flush_failures() as f64)],
        );
        truc_ops::write_metric(
            out,
            "truc_audit_unreadable_entries",
            "counter",
            "Stored audit entries (records, counters, index entries) that a read skipped because they do not decode",
            &[("", truc_audit::unreadable_skipped() as f64)],
        );
    }));
}
