//! `truc report`: transaction counts from the hub's Reporting service.

use std::{path::PathBuf, process::ExitCode};

use clap::Args;
use truc_ops::config::ClientConfig;
use truc_proto::v1::{GetCountsRequest, reporting_client::ReportingClient};

use super::{CliError, failed, table};

#[derive(Args)]
pub struct ReportArgs {
    /// Client config for the hub (the admin's certificate sees everything).
    #[arg(long)]
    config: PathBuf,
    /// First day (YYYY-MM-DD, UTC), inclusive.
    #[arg(long, default_value = "")]
    from: String,
    /// Last day (YYYY-MM-DD, UTC), inclusive.
    #[arg(long, default_value = "")]
    to: String,
}

pub async fn run(args: ReportArgs) -> Result<ExitCode, CliError> {
    let config = ClientConfig::load(&args.config)?;
    let rows = fetch(&config, &args.from, &args.to).await?;
    table::print(&rows);
    Ok(ExitCode::SUCCESS)
}

/// The hub's counts as table rows.
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
