//! `truc pki init`, `truc pki issue`, `truc pki revoke` and `truc pki audit-key`.

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
    /// Adds a certificate to the development CA's revocation list
    /// (`DIR/ca.crl`) and rewrites it. Hub and nodes whose `tls.crls` name
    /// the list reload it within seconds (or at once on SIGHUP), refuse the
    /// certificate at the handshake and close its open connections.
    Revoke(RevokeArgs),
    /// Writes a new audit signing key for one hub replica, `DIR/NAME.key`,
    /// and its public key `DIR/NAME.pub` (for the hub config's
    /// `audit_key_dir` and the nodes' `[[hub.audit_keys]]`).
    AuditKey(AuditKeyArgs),
}

#[derive(Args)]
pub(crate) struct AuditKeyArgs {
    /// The directory of the replicas' keys (created if absent).
    #[arg(long)]
    dir: PathBuf,
    /// The replica's name, as given to `truc hub --replica` (`hub-0`).
    #[arg(long)]
    name: String,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["cert", "serial"])))]
pub(crate) struct RevokeArgs {
    /// The directory of the CA (`truc pki init --dir`).
    #[arg(long)]
    dir: PathBuf,
    /// The certificate to revoke (PEM), issued by this CA.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// The serial number to revoke, in hex (colons allowed).
    #[arg(long)]
    serial: Option<String>,
    /// Why: unspecified, key-compromise, ca-compromise, affiliation-changed,
    /// superseded, cessation-of-operation, certificate-hold,
    /// privilege-withdrawn or aa-compromise.
    #[arg(long)]
    reason: Option<String>,
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
        PkiCommand::Revoke(a) => revoke(a),
        PkiCommand::AuditKey(a) => audit_key(a),
    }
}

fn audit_key(a: AuditKeyArgs) -> Result<ExitCode, CliError> {
    let (key, public) = truc_devca::replica_audit_key(&a.dir, &a.name)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    println!("audit signing key of replica {}", a.name);
    println!("  key:        {}", key.display());
    println!("  public key: {}", public.display());
    Ok(ExitCode::SUCCESS)
}

fn revoke(a: RevokeArgs) -> Result<ExitCode, CliError> {
    let reason = match &a.reason {
        None => None,
        Some(r) => Some(truc_devca::parse_reason(r).ok_or_else(|| {
            CliError::Usage(format!(
                "--reason {r:?}: expected one of {}",
                truc_devca::REASONS.join(", ")
            ))
        })?),
    };
    let target = match (a.cert, a.serial) {
        (Some(cert), _) => truc_devca::RevokeTarget::Cert(cert),
        (None, Some(serial)) => truc_devca::RevokeTarget::Serial(serial),
        (None, None) => return Err(CliError::Usage("give --cert FILE or --serial HEX".into())),
    };
    let out = truc_devca::revoke(&Layout::new(&a.dir), &target, reason)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if out.already {
        println!("serial {} was already revoked", out.serial);
    } else {
        println!("revoked serial {}", out.serial);
    }
    println!(
        "  list: {} ({} revoked; valid {} days)",
        out.crl.display(),
        out.total,
        truc_devca::CRL_VALIDITY_DAYS
    );
    Ok(ExitCode::SUCCESS)
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
    println!("  revocation list:    {}", layout.crl().display());
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
