//! `truc-bench audit` and `truc-bench store-keys`: what the audit log costs
//! without the network.
//!
//! `audit` appends records through the real [`AuditLog`] (its writer
//! thread, commit groups, flushes, and on a hub log the signed tree heads,
//! Merkle chunks, id and party index) from many tasks at once, as calls in
//! flight do, and reports records per second and the CPU of the whole
//! process per record (the appending tasks, the writer, sled's threads).
//!
//! `store-keys` writes batches of keys shaped like a hub's commit groups
//! straight into the store, one flush per batch, and reports the same CPU
//! per record for a chosen set of keys. It is how the cost of each kind of
//! key was told apart (docs/performance.md, "Fewer sled keys per record"):
//! the layouts are synthetic, the store is the product's.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Instant,
};

use truc_audit::{AuditLog, Options, Transaction, sth::Signer};
use truc_store::{Store, WriteBatch};

use crate::process_cpu_seconds;

/// Which log `truc-bench audit` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum LogKind {
    /// A hub's: signed heads, Merkle tree, transaction-id and party index.
    Hub,
    /// A node's: records and counters.
    Node,
}

/// How the ids of `truc-bench audit`'s records are drawn.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum IdKind {
    /// As nodes issue them: the millisecond first, so a later id sorts after
    /// (about 30 records per millisecond here).
    Node,
    /// 128 bits in no order, as nodes issued them before ADR 0021 (and as a
    /// hostile node still may).
    Random,
}

#[derive(clap::Args, Debug)]
pub(crate) struct AuditArgs {
    /// Which log to write.
    #[arg(long, value_enum, default_value_t = LogKind::Hub)]
    log: LogKind,
    /// Records appended.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    records: u64,
    /// Appends in flight (tasks, each waiting for its record before the next).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,
    /// Commit without flushing (what durability costs; never the default).
    #[arg(long)]
    no_flush: bool,
    /// How the records' transaction ids are drawn.
    #[arg(long, value_enum, default_value_t = IdKind::Node)]
    ids: IdKind,
    /// Also print the results as one JSON object (one line).
    #[arg(long)]
    json: bool,
}

/// Agencies the records name: a few clients and providers, as the demo's.
const CLIENTS: [&str; 4] = [
    "000.00.00.H37",
    "000.00.00.H12",
    "000.00.00.H40",
    "000.00.00.H55",
];
const PROVIDERS: [&str; 2] = ["000.00.00.G22", "000.00.00.G01"];

/// A data call like the bench's routed ones, its id of the kind asked for.
fn transaction(i: u64, ids: IdKind, issued_from: u64) -> Transaction {
    let id = match ids {
        IdKind::Node => crate::node_like_id(issued_from + i / 30, u128::from(i)),
        IdKind::Random => format!(
            "{:032x}",
            u128::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
        ),
    };
    let client = CLIENTS[(i % 4) as usize];
    let provider = PROVIDERS[(i % 2) as usize];
    let mut tx = Transaction::call(
        &id,
        client,
        provider,
        &format!("{provider}/citizen-lookup/v1"),
        &[0u8; 100],
        1_764_633_600_000 + i,
    )
    .finish(
        "OK",
        &[1u8; 100],
        1_764_633_600_001 + i,
        std::time::Duration::from_micros(900),
    );
    tx.caller = "node:lgsp-langson".into();
    tx.purpose = "cap-giay-phep".into();
    tx
}

/// What one `audit` run measured.
struct Measured {
    seconds: f64,
    cpu_seconds: Option<f64>,
    /// Distinct signed heads the receipts carried: the commits (hub log).
    commits: usize,
    /// The log's size at the end.
    size: u64,
    /// Hub log: how long the log, opened again, took to fill its filter of
    /// transaction ids from the index (seconds).
    refill_seconds: Option<f64>,
}

async fn append_all(args: &AuditArgs) -> Result<Measured, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let store = Store::open(dir.path()).map_err(|e| e.to_string())?;
    let options = Options {
        durable: !args.no_flush,
        ..Options::default()
    };
    let (name, signer) = match args.log {
        LogKind::Hub => (
            "hub",
            Some(Signer::generate().map_err(|_| "generating a signing key".to_string())?),
        ),
        LogKind::Node => ("lgsp-langson", None),
    };
    let hub = signer.is_some();
    let log =
        AuditLog::open(store.clone(), name, options.clone(), signer).map_err(|e| e.to_string())?;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let heads = Arc::new(Mutex::new(HashSet::new()));
    let cpu0 = process_cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    let (ids, issued_from) = (args.ids, crate::unix_ms());
    for _ in 0..args.concurrency {
        let (log, next, heads, total) = (log.clone(), next.clone(), heads.clone(), args.records);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), String>(());
                }
                let appended = log
                    .append(transaction(i, ids, issued_from))
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(head) = appended.tree_head {
                    heads.lock().map_err(|_| "poisoned")?.insert(head.tree_size);
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    let size = log.reader().size();
    log.close().await;
    drop(log);
    let commits = heads.lock().map_err(|_| "poisoned")?.len();
    // A restart: the filter of ids is filled from the index on a thread.
    let refill_seconds = if hub {
        let signer = Signer::generate().map_err(|_| "generating a signing key".to_string())?;
        let reopened =
            AuditLog::open(store, name, options, Some(signer)).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let filled = reopened.reader().wait_for_id_filter();
        let took = started.elapsed().as_secs_f64();
        reopened.close().await;
        if !filled {
            return Err("the filter of transaction ids was not filled".into());
        }
        Some(took)
    } else {
        None
    };
    Ok(Measured {
        seconds,
        cpu_seconds,
        commits,
        refill_seconds,
        size,
    })
}

pub(crate) async fn run_audit(args: AuditArgs) -> Result<(), String> {
    let m = append_all(&args).await?;
    let n = args.records as f64;
    let per_record = m.cpu_seconds.map(|c| c * 1e6 / n);
    println!(
        "audit ({:?} log, {}, {} in flight, {:?} ids): {} records in {:.2} s, {:.0} records/s, CPU {} µs per record{}",
        args.log,
        if args.no_flush { "no flush" } else { "durable" },
        args.concurrency,
        args.ids,
        m.size,
        m.seconds,
        n / m.seconds,
        per_record.map_or("?".into(), |c| format!("{c:.1}")),
        if m.commits > 0 {
            format!(
                ", {} commits ({:.1} records each)",
                m.commits,
                n / m.commits as f64
            )
        } else {
            String::new()
        },
    );
    if let Some(s) = m.refill_seconds {
        println!("opened again: the filter of transaction ids filled from the index in {s:.3} s");
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "mode": "audit",
                "log": format!("{:?}", args.log).to_lowercase(),
                "durable": !args.no_flush,
                "concurrency": args.concurrency,
                "ids": format!("{:?}", args.ids).to_lowercase(),
                "records": m.size,
                "seconds": m.seconds,
                "records_per_second": n / m.seconds,
                "cpu_us_per_record": per_record,
                "commits": m.commits,
                "id_filter_fill_seconds": m.refill_seconds,
            })
        );
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub(crate) struct StoreKeysArgs {
    /// The keys of each batch, one letter each: r a key per record; g the
    /// records as one value per batch; t a key per Merkle node (two per two
    /// records); T the Merkle nodes as one chunk per batch; p two
    /// party-index keys per record; P one party-index run per agency per
    /// batch; x a transaction-id key per record (random ids); o the same
    /// with ids of the nodes' form (time first, ADR 0021); c one counter
    /// per batch; h one tree head per batch. A hub before ADR 0017 wrote
    /// `rtpxch`; since, `rTPxch`.
    #[arg(long, default_value = "rTPxch")]
    keys: String,
    /// Batches written, each flushed.
    #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    batches: u64,
    /// Records per batch (a hub's commit group at 64 calls in flight holds
    /// about 17).
    #[arg(long, default_value_t = 17, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    per_batch: u64,
    /// Bytes of each record.
    #[arg(long, default_value_t = 420, value_parser = clap::value_parser!(u64).range(8..=1_000_000))]
    record_bytes: u64,
    /// How each batch reaches the store.
    #[arg(long, value_enum, default_value_t = Writes::Batch)]
    writes: Writes,
}

/// How `store-keys` writes a batch.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writes {
    /// sled's atomic batch (`Store::apply`).
    Batch,
    /// One plain insert per key, not atomic: what sled's batch itself costs.
    Inserts,
    /// A journal, then one insert per key (`Store::apply_journaled`, as
    /// the audit writer commits since ADR 0022).
    Journaled,
}

fn key(prefix: &[u8], tail: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    for t in tail {
        k.extend_from_slice(t);
    }
    k
}

/// One batch of `store-keys`: records `first..first + per` of batch `g`.
fn batch_of(keys: &str, g: u64, first: u64, per: u64, record: &[u8]) -> WriteBatch {
    let has = |c| keys.contains(c);
    let mut b = WriteBatch::default();
    let mut blob = Vec::new();
    for idx in first..first + per {
        let mut r = record.to_vec();
        r[..8].copy_from_slice(&idx.to_be_bytes());
        if has('r') {
            b.insert(key(b"audit/r/", &[&idx.to_be_bytes()]), &r);
        } else if has('g') {
            blob.extend_from_slice(&r);
        }
        if has('t') {
            b.insert(key(b"audit/t/", &[&[0], &idx.to_be_bytes()]), [1u8; 32]);
            if idx % 2 == 1 {
                b.insert(
                    key(b"audit/t/", &[&[1], &(idx / 2).to_be_bytes()]),
                    [1u8; 32],
                );
            }
        }
        if has('p') {
            for p in [CLIENTS[0], PROVIDERS[0]] {
                b.insert(key(b"audit/p/", &[p.as_bytes(), &idx.to_be_bytes()]), []);
            }
        }
        if has('x') {
            let id = format!("{:032x}", idx.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            b.insert(key(b"audit/x/", &[id.as_bytes()]), idx.to_be_bytes());
        }
        if has('o') {
            // The nodes' form, one batch a millisecond.
            let id = crate::node_like_id(1_764_633_600_000 + g, u128::from(idx));
            b.insert(key(b"audit/x/", &[id.as_bytes()]), idx.to_be_bytes());
        }
    }
    if !blob.is_empty() {
        b.insert(key(b"audit/g/", &[&g.to_be_bytes()]), &blob);
    }
    if has('T') {
        // About two nodes per record, 32 bytes each.
        let nodes = vec![1u8; 32 * 2 * per as usize];
        b.insert(key(b"audit/n/", &[&first.to_be_bytes()]), &nodes);
    }
    if has('P') {
        for p in [CLIENTS[0], PROVIDERS[0]] {
            b.insert(
                key(b"audit/p/", &[p.as_bytes(), &first.to_be_bytes()]),
                vec![1u8; per as usize],
            );
        }
    }
    if has('c') {
        b.insert(b"audit/c/2026-12-02/x", [3u8; 60]);
    }
    if has('h') {
        b.insert(
            key(b"audit/h/", &[&(first + per).to_be_bytes()]),
            [5u8; 150],
        );
    }
    b
}

/// Writes `batch` into `store` as `how` says.
fn write(store: &Store, batch: WriteBatch, how: Writes) -> Result<(), truc_store::StoreError> {
    match how {
        Writes::Batch => store.apply(batch),
        Writes::Inserts => batch.into_ops().into_iter().try_for_each(|(k, v)| match v {
            Some(v) => store.insert(k, v),
            None => unreachable!("store-keys batches only set keys"),
        }),
        Writes::Journaled => store.apply_journaled(b"store-keys", batch),
    }
}

pub(crate) fn run_store_keys(args: StoreKeysArgs) -> Result<(), String> {
    if let Some(bad) = args.keys.chars().find(|c| !"rgtTpPxoch".contains(*c)) {
        return Err(format!("--keys: unknown key kind {bad:?} (see --help)"));
    }
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let store = Store::open(dir.path()).map_err(|e| e.to_string())?;
    let record = vec![7u8; args.record_bytes as usize];
    let cpu0 = process_cpu_seconds();
    let started = Instant::now();
    for g in 0..args.batches {
        let batch = batch_of(&args.keys, g, g * args.per_batch, args.per_batch, &record);
        write(&store, batch, args.writes).map_err(|e| e.to_string())?;
        store.flush().map_err(|e| e.to_string())?;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    let n = (args.batches * args.per_batch) as f64;
    println!(
        "store-keys {} ({:?}): {} batches of {} records of {} B, CPU {} µs per record, {:.1} µs wall per record",
        args.keys,
        args.writes,
        args.batches,
        args.per_batch,
        args.record_bytes,
        cpu.map_or("?".into(), |c| format!("{:.1}", c * 1e6 / n)),
        wall * 1e6 / n,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_holds_the_keys_asked_for() {
        let count = |keys| batch_of(keys, 0, 0, 4, &[0u8; 16]).len();
        // Four records: four record keys; six Merkle nodes (4 + 2).
        assert_eq!(count("r"), 4);
        assert_eq!(count("g"), 1);
        assert_eq!(count("t"), 6);
        assert_eq!(count("T"), 1);
        assert_eq!(count("p"), 8);
        assert_eq!(count("P"), 2);
        assert_eq!(count("x"), 4);
        assert_eq!(count("o"), 4);
        assert_eq!(count("xo"), 8, "random and ordered ids are different keys");
        assert_eq!(count("rtpxch"), 4 + 6 + 8 + 4 + 2);
        assert_eq!(count("rTPxch"), 4 + 1 + 2 + 4 + 2);
    }

    #[test]
    fn every_way_of_writing_a_batch_leaves_the_same_keys() {
        let mut seen = Vec::new();
        for how in [Writes::Batch, Writes::Inserts, Writes::Journaled] {
            let dir = tempfile::tempdir().expect("dir");
            let store = Store::open(dir.path()).expect("open");
            for g in 0..3 {
                let batch = batch_of("gTPoch", g, g * 4, 4, &[7u8; 16]);
                write(&store, batch, how).expect("write");
            }
            let keys: Vec<_> = store
                .scan_prefix(b"audit/")
                .collect::<Result<_, _>>()
                .expect("scan");
            assert!(!keys.is_empty());
            seen.push(keys);
        }
        assert_eq!(seen[0], seen[1]);
        assert_eq!(seen[0], seen[2]);
    }

    #[tokio::test]
    async fn the_audit_mode_writes_every_record_of_a_hub_log_in_groups() {
        for ids in [IdKind::Node, IdKind::Random] {
            let m = append_all(&AuditArgs {
                log: LogKind::Hub,
                records: 200,
                concurrency: 16,
                no_flush: false,
                ids,
                json: false,
            })
            .await
            .expect("runs");
            assert_eq!(m.size, 200);
            // Every record's receipt names a head; several records share one.
            assert!(m.commits >= 1 && m.commits <= 200, "{}", m.commits);
        }
    }

    #[test]
    fn node_like_ids_are_valid_distinct_and_ordered_by_their_millisecond() {
        let ids: Vec<String> = (0..1000u64)
            .map(|i| crate::node_like_id(1_764_633_600_000 + i / 30, u128::from(i)))
            .collect();
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids {
            assert_eq!(id.len(), truc_audit::TRANSACTION_ID_LEN);
            assert!(id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        }
        assert!(ids.windows(2).all(|w| w[0][..12] <= w[1][..12]));
        // Within a millisecond they are in no order (the point of `random`).
        assert!(ids.windows(2).any(|w| w[0] > w[1]));
    }
}
