//! `truc pki init`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use truc_pki::InitOptions;

use super::CliError;

#[derive(Subcommand)]
pub enum PkiCommand {
    /// Creates a development CA, hub, node, admin and client certificates,
    /// and the hub's Ed25519 audit signing key.
    Init(InitArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// Directory to write into (must not hold a CA yet).
    #[arg(long)]
    dir: PathBuf,
    /// The hub's name (its certificate's DNS name).
    #[arg(long, default_value = "hub")]
    hub: String,
    /// A node id; repeat for each node.
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    /// The operator's name.
    #[arg(long, default_value = "admin")]
    admin: String,
    /// An agency system's name (client certificate); repeat for each.
    #[arg(long = "client")]
    clients: Vec<String>,
    /// Validity of every certificate, in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

pub fn run(command: PkiCommand) -> Result<ExitCode, CliError> {
    let PkiCommand::Init(a) = command;
    let layout = truc_pki::init(
        &a.dir,
        &InitOptions {
            hub: a.hub,
            nodes: a.nodes,
            admin: a.admin,
            clients: a.clients,
            validity_days: a.days,
        },
    )
    .map_err(|e| CliError::Usage(e.to_string()))?;
    println!("wrote certificates and keys to {}", layout.dir.display());
    println!("  CA certificate:     {}", layout.ca_cert().display());
    println!("  audit signing key:  {}", layout.audit_key().display());
    println!(
        "  audit public key:   {}",
        layout.audit_public_key().display()
    );
    Ok(ExitCode::SUCCESS)
}
