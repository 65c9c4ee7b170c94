//! `truc report`: statistics from the hub's Reporting service, sliced by any
//! dimension, as a table, CSV or JSON; and `--verify`, which recomputes the
//! stored statistics from a stopped hub's audit log.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, ValueEnum};
use truc_ops::config::ClientConfig;
use truc_proto::v1::{
    GetCountsRequest, GetStatsRequest, StatsRow, reporting_client::ReportingClient,
};

use super::{CliError, failed, table};

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Args)]
pub struct ReportArgs {
    /// Client config for the hub (the admin's certificate sees everything).
    #[arg(long, required_unless_present = "verify")]
    config: Option<PathBuf>,
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
    /// The hub's data directory, for --verify.
    #[arg(long)]
    data: Option<PathBuf>,
}

pub async fn run(args: ReportArgs) -> Result<ExitCode, CliError> {
    if args.verify {
        return verify(args.data.as_deref());
    }
    let Some(path) = args.config.as_deref() else {
        return Err(CliError::Usage("--config is required".into()));
    };
    let config = ClientConfig::load(path)?;
    let mut client = ReportingClient::new(config.channel().map_err(failed)?);
    let response = client
        .get_stats(GetStatsRequest {
            from_day: args.from,
            to_day: args.to,
            group_by: args.by.clone(),
            client: args.client,
            provider: args.provider,
            service: args.service,
            kind: args.kind,
            outcome: args.outcome,
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::InvalidArgument => CliError::Usage(s.message().to_string()),
            _ => failed(format!("{:?}: {}", s.code(), s.message())),
        })?
        .into_inner();
    let total = response.total.unwrap_or_default();
    match args.format {
        Format::Table => print_table(&args.by, &response.rows, &total, &response.time_zone),
        Format::Csv => print_csv(&args.by, &response.rows, &total),
        Format::Json => print_json(&args.by, &response.rows, &total, &response.time_zone)?,
    }
    Ok(ExitCode::SUCCESS)
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

fn print_table(by: &[String], rows: &[StatsRow], total: &StatsRow, tz: &str) {
    let mut header: Vec<String> = by.iter().map(|b| b.to_uppercase()).collect();
    header.extend(NUMBERS.iter().map(|s| s.to_string()));
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
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    let keys = by.len();
    let show = |cells: &[String]| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i < keys {
                out.push_str(&format!("{c:<w$}  "));
            } else {
                out.push_str(&format!("{c:>w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    show(&header);
    for l in &lines {
        show(l);
    }
    println!(
        "days in {tz}; latency percentiles are bucket upper bounds (at most 2x the true value)"
    );
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn print_csv(by: &[String], rows: &[StatsRow], total: &StatsRow) {
    let header: Vec<String> = by
        .iter()
        .cloned()
        .chain(
            [
                "count",
                "errors",
                "request_bytes",
                "response_bytes",
                "p50_ms",
                "p95_ms",
                "p99_ms",
            ]
            .map(String::from),
        )
        .collect();
    println!("{}", header.join(","));
    for r in rows {
        let cells: Vec<String> = r
            .keys
            .iter()
            .map(|k| csv_field(k))
            .chain(numbers(r))
            .collect();
        println!("{}", cells.join(","));
    }
    let mut t: Vec<String> = vec![String::new(); by.len()];
    if let Some(first) = t.first_mut() {
        *first = "TOTAL".into();
    }
    t.extend(numbers(total));
    println!("{}", t.join(","));
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
) -> Result<(), CliError> {
    let v = serde_json::json!({
        "time_zone": tz,
        "group_by": by,
        "rows": rows.iter().map(|r| row_json(by, r)).collect::<Vec<_>>(),
        "total": row_json(&[], total),
    });
    println!("{}", serde_json::to_string_pretty(&v).map_err(failed)?);
    Ok(())
}

fn verify(data: Option<&std::path::Path>) -> Result<ExitCode, CliError> {
    let Some(dir) = data else {
        return Err(CliError::Usage("--verify needs --data".into()));
    };
    if !dir.join("db").exists() {
        return Err(CliError::CannotCheck(format!(
            "{} holds no truc database",
            dir.display()
        )));
    }
    let store = truc_store::Store::open(dir).map_err(|e| CliError::CannotCheck(e.to_string()))?;
    let report =
        truc_audit::verify(&store, None).map_err(|e| CliError::CannotCheck(e.to_string()))?;
    match report.problem {
        None => {
            let transactions: u64 = report.counts.values().sum();
            println!(
                "verified: the stored statistics equal the audit log to the unit: {} groups, {transactions} transactions, their bytes and latency histograms",
                report.stats.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(problem) => {
            println!("MISMATCH: {problem}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The hub's counts as table rows (for the demo's table).
pub async fn fetch(
    config: &ClientConfig,
    from: &str,
    to: &str,
) -> Result<std::collections::BTreeMap<table::RowKey, u64>, CliError> {
    let mut client = ReportingClient::new(config.channel().map_err(failed)?);
    let response = client
        .get_counts(GetCountsRequest {
            from_day: from.into(),
            to_day: to.into(),
            ..GetCountsRequest::default()
        })
        .await
        .map_err(|s| failed(format!("{:?}: {}", s.code(), s.message())))?
        .into_inner();
    let mut rows = std::collections::BTreeMap::new();
    for r in response.rows {
        *rows
            .entry((
                r.client_agency,
                r.provider_agency,
                r.service,
                r.kind,
                r.outcome,
            ))
            .or_default() += r.count;
    }
    Ok(rows)
}
