//! What the run prints: a table per measurement, and one JSON line.

use std::collections::BTreeMap;

use super::{DocsArgs, MIB, backlog::*, common::*, part_name, small::*, transfer::*};

pub(super) fn print_small(s: &SmallOutcome) {
    let d = &s.tally.delivered_us;
    let a = &s.tally.acked_us;
    println!();
    println!("small documents (closed loop, each sender one document at a time):");
    println!(
        "  {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "docs", "errors", "docs/s", "p50 ms", "p99 ms", "max ms", "ack p50", "ack p99"
    );
    println!(
        "  {:>7} {:>7} {:>9.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.3}",
        s.docs(),
        s.errors(),
        s.rate(),
        ms(d, 0.50),
        ms(d, 0.99),
        d.max() as f64 / 1000.0,
        ms(a, 0.50),
        ms(a, 0.99),
    );
    println!(
        "  latency = SendDocument start -> 01 seen on WatchTracking; ack = SendDocument start -> acknowledged (on disk at the province node)"
    );
    for (code, (n, msg)) in &s.tally.errors {
        println!("  errors: {n} × {code} (first: {msg})");
    }
}

/// Small documents against routed calls measured after them (target 6).
pub(super) fn print_against_routed(s: &SmallOutcome, calls_per_s: f64, errors: u64) {
    println!();
    println!(
        "routed calls for as long, after the small documents (truc-bench routed: 64 in flight, 100 B, on a deployment of their own): {calls_per_s:.1} calls/s, {errors} errors"
    );
    println!(
        "small documents/s over routed calls/s: {:.3}",
        s.rate() / calls_per_s.max(1e-9)
    );
}

pub(super) fn print_large(l: &LargeOutcome) {
    println!();
    println!(
        "large attachment: one document, one attachment of {} MiB ({} bytes), pseudo-random, generated while sent",
        l.bytes / MIB,
        l.bytes
    );
    println!(
        "  acknowledged (on disk at the province node): {:.3} s  {:.1} MB/s ({:.1} MiB/s)",
        l.acked.as_secs_f64(),
        mb_per_s(l.bytes, l.acked),
        mib_per_s(l.bytes, l.acked)
    );
    println!(
        "  delivered (01 seen, on disk at the ministry node): {:.3} s  {:.1} MB/s ({:.1} MiB/s)",
        l.delivered.as_secs_f64(),
        mb_per_s(l.bytes, l.delivered),
        mib_per_s(l.bytes, l.delivered),
    );
    match (l.resident_kib, l.peak_growth_kib) {
        (Some(rss), Some(growth)) => println!(
            "  memory: the process (sender, hub and both nodes) was resident at {:.1} MiB when the send started; its peak rose {:.1} MiB above that",
            rss as f64 / 1024.0,
            growth as f64 / 1024.0
        ),
        _ => println!("  memory: not measured (needs Linux /proc/self/clear_refs)"),
    }
}

pub(super) fn print_raw(r: &RawOutcome, l: Option<&LargeOutcome>) {
    println!();
    println!(
        "raw baseline: the same bytes and chunks, client-streamed by bare tonic as truc.v1.Node/Deliver over mTLS 1.3 to an in-process server that writes them to a file and fsyncs once (one hop; no checks, no audit)"
    );
    println!(
        "  {:.3} s  {:.1} MB/s ({:.1} MiB/s)",
        r.elapsed.as_secs_f64(),
        mb_per_s(r.bytes, r.elapsed),
        mib_per_s(r.bytes, r.elapsed)
    );
    if let Some(l) = l {
        println!(
            "truc/raw MB/s: {:.3} to 01 seen (truc takes {:.1}x as long as raw), {:.3} to SendDocument acknowledged",
            r.elapsed.as_secs_f64() / l.delivered.as_secs_f64(),
            l.delivered.as_secs_f64() / r.elapsed.as_secs_f64(),
            r.elapsed.as_secs_f64() / l.acked.as_secs_f64(),
        );
    }
}

/// What a run measured, each part if it ran.
pub(super) struct Outcomes<'a> {
    pub(super) small: Option<&'a SmallOutcome>,
    pub(super) large: Option<&'a LargeOutcome>,
    pub(super) raw: Option<&'a RawOutcome>,
    pub(super) backlog: Option<&'a BacklogOutcome>,
    /// Routed calls/s and errors.
    pub(super) against_routed: Option<(f64, u64)>,
}

pub(super) fn print_json(args: &DocsArgs, cpus: usize, cpu: &str, o: &Outcomes<'_>) {
    let Outcomes {
        small: s,
        large: l,
        raw: r,
        backlog: b,
        against_routed,
    } = *o;
    let against_routed = against_routed.map(|(calls_per_s, errors)| {
        serde_json::json!({
            "routed_calls_per_s": calls_per_s,
            "routed_errors": errors,
            "small_docs_over_routed_calls": s.map(|s| s.rate() / calls_per_s.max(1e-9)),
        })
    });
    let backlog = b.map(|b| {
        serde_json::json!({
            "documents": b.documents,
            "queued_s": b.queued.as_secs_f64(),
            "drained_s": b.drained.as_secs_f64(),
            "drained_docs_per_s": b.drained_per_s(),
            "outage_s": args.outage_secs,
            "retry_first_ms": backlog_retry(args).0.as_millis() as u64,
            "retry_cap_ms": backlog_retry(args).1.as_millis() as u64,
        })
    });
    let small = s.map(|s| {
        serde_json::json!({
            "docs": s.docs(),
            "errors": s.errors(),
            "errors_by_code": s.tally.errors.iter().map(|(c, (n, _))| (c.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "docs_per_s": s.rate(),
            "p50_ms": ms(&s.tally.delivered_us, 0.5),
            "p99_ms": ms(&s.tally.delivered_us, 0.99),
            "max_ms": s.tally.delivered_us.max() as f64 / 1000.0,
            "ack_p50_ms": ms(&s.tally.acked_us, 0.5),
            "ack_p99_ms": ms(&s.tally.acked_us, 0.99),
        })
    });
    let large = l.map(|l| {
        serde_json::json!({
            "bytes": l.bytes,
            "acked_s": l.acked.as_secs_f64(),
            "acked_mb_per_s": mb_per_s(l.bytes, l.acked),
            "delivered_s": l.delivered.as_secs_f64(),
            "delivered_mb_per_s": mb_per_s(l.bytes, l.delivered),
            "resident_mib_at_start": l.resident_kib.map(|k| k as f64 / 1024.0),
            "peak_growth_mib": l.peak_growth_kib.map(|k| k as f64 / 1024.0),
        })
    });
    let raw = r.map(|r| {
        serde_json::json!({
            "bytes": r.bytes,
            "elapsed_s": r.elapsed.as_secs_f64(),
            "mb_per_s": mb_per_s(r.bytes, r.elapsed),
            "on_disk_bytes": r.on_disk,
            "transport": "mtls",
            "fsync": true,
        })
    });
    let ratio = match (l, r) {
        (Some(l), Some(r)) => {
            serde_json::json!(r.elapsed.as_secs_f64() / l.delivered.as_secs_f64())
        }
        _ => serde_json::Value::Null,
    };
    let j = serde_json::json!({
        "machine": {"nproc": cpus, "cpu": cpu},
        "shared_cores": true,
        "params": {
            "part": part_name(args.part),
            "senders": args.senders,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "attachment_bytes": args.attachment_bytes,
            "size_mib": args.size_mib,
            "backlog": args.backlog,
            "against_routed": args.against_routed,
            "chunk_kib": args.chunk_kib,
            "durable": !args.no_durable,
        },
        "small": small,
        "large": large,
        "raw": raw,
        "backlog": backlog,
        "against_routed": against_routed,
        "truc_over_raw_mb_per_s": ratio,
    });
    println!("{j}");
}
