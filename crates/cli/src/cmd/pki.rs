//! `truc pki init` and `truc pki issue`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use truc_devca::{DEFAULT_LEAF_VALIDITY_DAYS, InitOptions};
use truc_pki::{Identity, Layout, Role};

use super::CliError;

#[derive(Subcommand)]
pub(crate) enum PkiCommand {
    /// Creates a development CA, hub, node, admin and client certificates,
    /// the hub's Ed25519 audit signing key, and each node's Ed25519 witness
    /// key (`node-ID-witness.key`, its public key in `node-ID-witness.pub`
    /// for the registry's `witness_key`).
    Init(InitArgs),
    /// Issues one more certificate from an existing development CA. A node is
    /// never issued the name of the hub (nor the hub that of a node).
    Issue(IssueArgs),
}

#[derive(Args)]
pub(crate) struct InitArgs {
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
    /// Validity of every participant certificate, in days (at most 366; the
    /// CA itself lasts ten years).
    #[arg(long, default_value_t = DEFAULT_LEAF_VALIDITY_DAYS)]
    days: u32,
}

#[derive(Args)]
pub(crate) struct IssueArgs {
    /// The directory of the CA (`truc pki init --dir`).
    #[arg(long)]
    dir: PathBuf,
    /// The participant's role: hub, node, admin or client.
    #[arg(long)]
    role: String,
    /// The participant's name (a node id, a client's name…).
    #[arg(long)]
    name: String,
    /// Validity in days (at most 366).
    #[arg(long, default_value_t = DEFAULT_LEAF_VALIDITY_DAYS)]
    days: u32,
}

pub(super) fn run(command: PkiCommand) -> Result<ExitCode, CliError> {
    match command {
        PkiCommand::Init(a) => init(a),
        PkiCommand::Issue(a) => issue(a),
    }
}

fn init(a: InitArgs) -> Result<ExitCode, CliError> {
    let nodes = a.nodes.clone();
    let layout = truc_devca::init(
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
        "  audit public key:   {} (pin it in every node's [[hub.audit_keys]])",
        layout.audit_public_key().display()
    );
    for node in &nodes {
        println!(
            "  witness key of {node}: {} (registry witness_key: {})",
            layout.witness_key(node).display(),
            layout.witness_public_key(node).display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn issue(a: IssueArgs) -> Result<ExitCode, CliError> {
    let usage = |e: truc_devca::DevCaError| CliError::Usage(e.to_string());
    let pki_usage = |e: truc_pki::PkiError| CliError::Usage(e.to_string());
    let role: Role = a.role.parse().map_err(pki_usage)?;
    let id = Identity::new(role, &a.name).map_err(pki_usage)?;
    let files = truc_devca::issue(&Layout::new(&a.dir), &id, a.days).map_err(usage)?;
    println!("issued {id}");
    println!("  certificate: {}", files.cert.display());
    println!("  key:         {}", files.key.display());
    if role == Role::Node {
        let layout = Layout::new(&a.dir);
        println!("  witness key: {}", layout.witness_key(&a.name).display());
    }
    Ok(ExitCode::SUCCESS)
}
