//! `truc audit verify`: offline check of a hub's or a node's audit log.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use truc_store::Store;

use super::{CliError, table};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Checks the chain of records and that the counters equal them. Exit 0:
    /// verified; 1: tampered (the first broken position is named); 3: could
    /// not check.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The data directory of a hub or a node (the process must be stopped).
    #[arg(long)]
    data: PathBuf,
}

pub fn run(command: AuditCommand) -> Result<ExitCode, CliError> {
    let AuditCommand::Verify(args) = command;
    if !args.data.join("db").exists() {
        return Err(CliError::CannotCheck(format!(
            "{} holds no truc database",
            args.data.display()
        )));
    }
    let store = Store::open(&args.data).map_err(|e| CliError::CannotCheck(e.to_string()))?;
    let report = truc_audit::verify(&store).map_err(|e| CliError::CannotCheck(e.to_string()))?;
    table::print(&table::from_counts(&report.counts));
    match &report.problem {
        None => {
            println!(
                "verified: {} records, chain intact, counters equal the records; head {}",
                report.records,
                report
                    .head_hash
                    .map(|h| h.iter().map(|b| format!("{b:02x}")).collect::<String>())
                    .unwrap_or_else(|| "(empty log)".into())
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(problem) => {
            println!("TAMPERED: {problem}");
            println!("{} records verified before it", report.records);
            Ok(ExitCode::from(1))
        }
    }
}
