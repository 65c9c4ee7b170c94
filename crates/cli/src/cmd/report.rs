//! `truc report`: statistics from the hub's Reporting service, sliced by any
//! dimension, as a table, CSV or JSON, merged over every hub replica the
//! configs list; and `--verify`, which recomputes the stored statistics from
//! a stopped hub's audit log.

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, ValueEnum};
use truc_ops::config::ClientConfig;
use truc_proto::v1::{
    GetStatsRequest, GetStatsResponse, StatsRow, reporting_client::ReportingClient,
};

use super::{CliError, failed, table};

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// Client config for the hub (the admin's certificate sees everything).
    /// Repeat it, or list `addresses` in it, for several hub replicas: their
    /// statistics are merged exactly.
    #[arg(long, required_unless_present = "verify")]
    config: Vec<PathBuf>,
    /// With several replicas, report on those that answer (and name the
    /// others) rather than fail.
    #[arg(long)]
    allow_partial: bool,
    /// Seconds to wait for each replica's answer.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// First day (YYYY-MM-DD, in the hub's time zone), inclusive.
    #[arg(long, default_value = "")]
    from: String,
    /// Last day (YYYY-MM-DD), inclusive.
    #[arg(long, default_value = "")]
    to: String,
    /// Group by any of: client, provider, service, kind, outcome, day, month, year.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "client,provider,service,kind,outcome"
    )]
    by: Vec<String>,
    /// Only this client agency, provider agency, service, kind or outcome.
    #[arg(long, default_value = "")]
    client: String,
    #[arg(long, default_value = "")]
    provider: String,
    #[arg(long, default_value = "")]
    service: String,
    #[arg(long, default_value = "")]
    kind: String,
    #[arg(long, default_value = "")]
    outcome: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Recompute the statistics from the audit log of a stopped hub (with
    /// --data) and compare them, to the unit, with the stored ones.
    #[arg(long, requires = "data")]
    verify: bool,
    /// The hub's data directory, for --verify; repeat it for each replica:
    /// each is compared with its own log, then their statistics are merged.
    #[arg(long)]
    data: Vec<PathBuf>,
}

pub(super) async fn run(args: ReportArgs) -> Result<ExitCode, CliError> {
    if args.verify {
        return verify(&args.data);
    }
    if args.config.is_empty() {
        return Err(CliError::Usage("--config is required".into()));
    }
    let mut replicas = Vec::new();
    for path in &args.config {
        let config = ClientConfig::load(path)?;
        for one in config.each_replica() {
            // The same replica twice would count its transactions twice.
            if replicas
                .iter()
                .any(|(_, r): &(String, ClientConfig)| r.address == one.address)
            {
                return Err(CliError::Usage(format!(
                    "hub replica {} is given twice ({})",
                    one.address,
                    path.display()
                )));
            }
            let name = format!("{} ({})", one.address, path.display());
            replicas.push((name, one));
        }
    }
    let request = GetStatsRequest {
        from_day: args.from.clone(),
        to_day: args.to.clone(),
        group_by: args.by.clone(),
        client: args.client.clone(),
        provider: args.provider.clone(),
        service: args.service.clone(),
        kind: args.kind.clone(),
        outcome: args.outcome.clone(),
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut asks = tokio::task::JoinSet::new();
    for (position, (_, config)) in replicas.iter().enumerate() {
        let (config, request) = (config.clone(), request.clone());
        asks.spawn(async move { (position, ask(&config, request, timeout).await) });
    }
    let mut answers: Vec<Option<Result<GetStatsResponse, CliError>>> =
        replicas.iter().map(|_| None).collect();
    while let Some(done) = asks.join_next().await {
        let (position, answer) = done.map_err(failed)?;
        answers[position] = Some(answer);
    }
    let mut got = Vec::new();
    let mut missing = Vec::new();
    for ((name, _), answer) in replicas.iter().zip(answers) {
        match answer {
            Some(Ok(a)) => got.push(a),
            // What the caller can fix is the same on every replica.
            Some(Err(CliError::Usage(m))) => return Err(CliError::Usage(m)),
            Some(Err(e)) => missing.push(format!("{name}: {e}")),
            None => missing.push(format!("{name}: no answer")),
        }
    }
    if !missing.is_empty() && (!args.allow_partial || got.is_empty()) {
        return Err(failed(format!(
            "{} of {} hub replicas did not answer (--allow-partial reports on the others):\n  {}",
            missing.len(),
            replicas.len(),
            missing.join("\n  ")
        )));
    }
    let answered = got.len();
    let response = match got.len() {
        // One replica: its answer as it is (a hub of an earlier build sends
        // no sketches, and needs none here).
        1 => got.remove(0),
        _ => truc_audit::report::merge_responses(&got)
            .map_err(|e| failed(format!("cannot merge the replicas' statistics: {e}")))?,
    };
    for m in &missing {
        eprintln!("missing replica {m}");
    }
    let scope = Scope {
        replicas: replicas.len(),
        answered,
        missing: missing.len(),
    };
    let total = response.total.unwrap_or_default();
    match args.format {
        Format::Table => print_table(
            &args.by,
            &response.rows,
            &total,
            &response.time_zone,
            &scope,
        ),
        Format::Csv => print_csv(&args.by, &response.rows, &total)?,
        Format::Json => print_json(
            &args.by,
            &response.rows,
            &total,
            &response.time_zone,
            &scope,
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

/// How many replicas the report covers.
struct Scope {
    replicas: usize,
    answered: usize,
    missing: usize,
}

impl Scope {
    fn describe(&self) -> String {
        match (self.replicas, self.missing) {
            (1, _) => String::new(),
            (n, 0) => format!("; merged over {n} hub replicas"),
            (n, m) => format!(
                "; PARTIAL: merged over {} of {n} hub replicas, {m} missing (named on stderr)",
                self.answered
            ),
        }
    }
}

/// One replica's answer, or why there is none.
async fn ask(
    config: &ClientConfig,
    request: GetStatsRequest,
    timeout: Duration,
) -> Result<GetStatsResponse, CliError> {
    let mut client = ReportingClient::new(config.channel().map_err(failed)?);
    let answer = tokio::time::timeout(timeout, client.get_stats(request))
        .await
        .map_err(|_| failed(format!("no answer within {} s", timeout.as_secs())))?;
    answer
        .map(tonic::Response::into_inner)
        .map_err(super::refused)
}

const NUMBERS: [&str; 7] = [
    "COUNT",
    "ERRORS",
    "REQ BYTES",
    "RESP BYTES",
    "P50 MS",
    "P95 MS",
    "P99 MS",
];

fn numbers(r: &StatsRow) -> [String; 7] {
    [
        r.count.to_string(),
        r.errors.to_string(),
        r.request_bytes.to_string(),
        r.response_bytes.to_string(),
        format!("{:.3}", r.p50_ms),
        format!("{:.3}", r.p95_ms),
        format!("{:.3}", r.p99_ms),
    ]
}

fn print_table(by: &[String], rows: &[StatsRow], total: &StatsRow, tz: &str, scope: &Scope) {
    println!("{}", render_table(by, rows, total));
    println!(
        "days in {tz}; latency percentiles within 1% of the true value{}",
        scope.describe()
    );
}

/// The rows, then a `TOTAL` row (its key columns empty but the first).
fn lines(by: &[String], rows: &[StatsRow], total: &StatsRow) -> Vec<Vec<String>> {
    let mut lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.keys.iter().cloned().chain(numbers(r)).collect())
        .collect();
    let mut total_line: Vec<String> = vec![String::new(); by.len()];
    if let Some(first) = total_line.first_mut() {
        *first = "TOTAL".into();
    }
    total_line.extend(numbers(total));
    lines.push(total_line);
    lines
}

fn render_table(by: &[String], rows: &[StatsRow], total: &StatsRow) -> String {
    let mut header: Vec<String> = by.iter().map(|b| b.to_uppercase()).collect();
    header.extend(NUMBERS.iter().map(|s| s.to_string()));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    table::render(&header, lines(by, rows, total), by.len())
}

fn print_csv(by: &[String], rows: &[StatsRow], total: &StatsRow) -> Result<(), CliError> {
    print!("{}", render_csv(by, rows, total).map_err(failed)?);
    Ok(())
}

fn render_csv(by: &[String], rows: &[StatsRow], total: &StatsRow) -> Result<String, csv::Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(by.iter().map(String::as_str).chain([
        "count",
        "errors",
        "request_bytes",
        "response_bytes",
        "p50_ms",
        "p95_ms",
        "p99_ms",
    ]))?;
    for line in lines(by, rows, total) {
        out.write_record(&line)?;
    }
    let bytes = out
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn row_json(by: &[String], r: &StatsRow) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in by.iter().zip(&r.keys) {
        m.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    for (k, v) in [
        ("count", r.count),
        ("errors", r.errors),
        ("request_bytes", r.request_bytes),
        ("response_bytes", r.response_bytes),
    ] {
        m.insert(k.into(), v.into());
    }
    for (k, v) in [
        ("p50_ms", r.p50_ms),
        ("p95_ms", r.p95_ms),
        ("p99_ms", r.p99_ms),
    ] {
        m.insert(k.into(), serde_json::json!(v));
    }
    serde_json::Value::Object(m)
}

fn print_json(
    by: &[String],
    rows: &[StatsRow],
    total: &StatsRow,
    tz: &str,
    scope: &Scope,
) -> Result<(), CliError> {
    let v = serde_json::json!({
        "time_zone": tz,
        "replicas": scope.replicas,
        "replicas_answered": scope.answered,
        "replicas_missing": scope.missing,
        "group_by": by,
        "rows": rows.iter().map(|r| row_json(by, r)).collect::<Vec<_>>(),
        "total": row_json(&[], total),
    });
    println!("{}", serde_json::to_string_pretty(&v).map_err(failed)?);
    Ok(())
}

fn verify(dirs: &[PathBuf]) -> Result<ExitCode, CliError> {
    if dirs.is_empty() {
        return Err(CliError::Usage("--verify needs --data".into()));
    }
    for (i, dir) in dirs.iter().enumerate() {
        if !dir.join("db").exists() {
            return Err(CliError::CannotCheck(format!(
                "{} holds no truc database",
                dir.display()
            )));
        }
        if dirs[..i].contains(dir) {
            return Err(CliError::Usage(format!(
                "--data {} given twice: it would be counted twice",
                dir.display()
            )));
        }
    }
    let several = dirs.len() > 1;
    let mut merged: BTreeMap<truc_audit::CountKey, truc_audit::Stats> = BTreeMap::new();
    let mut mismatched = Vec::new();
    for dir in dirs {
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let prefix = if several {
            format!("replica {name}: ")
        } else {
            String::new()
        };
        let store = truc_store::Store::open(dir)
            .map_err(|e| CliError::CannotCheck(format!("{prefix}{e}")))?;
        let report = truc_audit::verify(&store, None)
            .map_err(|e| CliError::CannotCheck(format!("{prefix}{e}")))?;
        match report.problem {
            None => {
                let transactions: u64 = report.counts.values().sum();
                println!(
                    "{prefix}verified: the stored statistics equal the audit log to the unit: {} groups, {transactions} transactions, their bytes and latency sketches",
                    report.stats.len()
                );
                for (k, s) in report.stats {
                    merged.entry(k).or_default().add(&s);
                }
            }
            Some(problem) => {
                println!("{prefix}MISMATCH: {problem}");
                mismatched.push(name);
            }
        }
    }
    if !mismatched.is_empty() {
        if several {
            println!(
                "MISMATCH: replica {} ({} of {} replicas verified)",
                mismatched.join(", replica "),
                dirs.len() - mismatched.len(),
                dirs.len()
            );
        }
        return Ok(ExitCode::from(1));
    }
    if several {
        let total = merged
            .values()
            .fold(truc_audit::Stats::default(), |mut t, s| {
                t.add(s);
                t
            });
        let ms = |q| {
            total
                .latency_quantile_ms(q)
                .map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
        };
        println!(
            "deployment: {} replicas, merged: {} groups, {} transactions, {} request and {} response bytes, p50 {} ms, p99 {} ms",
            dirs.len(),
            merged.len(),
            total.count,
            total.request_bytes,
            total.response_bytes,
            ms(0.5),
            ms(0.99)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Every hub in `configs` (one address each), asked for all its
/// statistics by client, provider, service, kind and outcome, and merged
/// exactly: each replica's total, and the merged rows as table rows (for
/// the demo's table).
pub(super) async fn merged_rows(
    configs: &[(String, ClientConfig)],
) -> Result<(Vec<(String, u64)>, BTreeMap<table::RowKey, u64>), CliError> {
    let request = GetStatsRequest {
        group_by: ["client", "provider", "service", "kind", "outcome"]
            .map(String::from)
            .to_vec(),
        ..GetStatsRequest::default()
    };
    let mut answers = Vec::new();
    let mut per_replica = Vec::new();
    for (name, config) in configs {
        let answer = ask(config, request.clone(), Duration::from_secs(30))
            .await
            .map_err(|e| failed(format!("replica {name}: {e}")))?;
        per_replica.push((name.clone(), answer.total.as_ref().map_or(0, |t| t.count)));
        answers.push(answer);
    }
    let merged = truc_audit::report::merge_responses(&answers).map_err(failed)?;
    let mut rows = BTreeMap::new();
    for r in merged.rows {
        let [client, provider, service, kind, outcome] = <[String; 5]>::try_from(r.keys)
            .map_err(|k| failed(format!("a row with keys {k:?}")))?;
        *rows
            .entry((client, provider, service, kind, outcome))
            .or_default() += r.count;
    }
    Ok((per_replica, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(keys: &[&str], count: u64) -> StatsRow {
        StatsRow {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            count,
            errors: 1,
            request_bytes: 2048,
            response_bytes: 10,
            p50_ms: 0.004,
            p95_ms: 2.048,
            p99_ms: 65.536,
            latency: None,
        }
    }

    #[test]
    fn the_table_aligns_keys_left_and_numbers_right() {
        let by = ["provider".to_string(), "outcome".to_string()];
        let rows = [
            row(&["000.00.00.G22", "OK"], 7),
            row(&["G22", "NOT_FOUND"], 12),
        ];
        let total = row(&[], 19);
        assert_eq!(
            render_table(&by, &rows, &total),
            "\
PROVIDER       OUTCOME    COUNT  ERRORS  REQ BYTES  RESP BYTES  P50 MS  P95 MS  P99 MS
000.00.00.G22  OK             7       1       2048          10   0.004   2.048  65.536
G22            NOT_FOUND     12       1       2048          10   0.004   2.048  65.536
TOTAL                        19       1       2048          10   0.004   2.048  65.536"
        );
    }

    #[test]
    fn csv_quotes_what_needs_it_and_reads_back() {
        let by = ["service".to_string()];
        let odd = "a,b \"quoted\"\r\nnext line";
        let rows = [row(&["plain"], 1), row(&[odd], 2)];
        let out = render_csv(&by, &rows, &row(&[], 3)).expect("csv");
        assert!(
            out.starts_with(
                "service,count,errors,request_bytes,response_bytes,p50_ms,p95_ms,p99_ms\n\
                 plain,1,1,2048,10,0.004,2.048,65.536\n"
            ),
            "{out}"
        );
        assert!(
            out.ends_with("\nTOTAL,3,1,2048,10,0.004,2.048,65.536\n"),
            "{out}"
        );
        let read: Vec<csv::StringRecord> = csv::Reader::from_reader(out.as_bytes())
            .records()
            .collect::<Result<_, _>>()
            .expect("reads back");
        assert_eq!(read.len(), 3);
        assert_eq!(&read[1][0], odd);
        assert_eq!(&read[1][1], "2");
    }
}
