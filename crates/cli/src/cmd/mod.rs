//! The subcommands.

mod audit;
mod call;
mod demo;
mod doc;
mod drain;
mod edxml;
mod health;
mod pki;
mod report;
mod serve;
mod table;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// truc: inter-agency data-sharing gateway (hub and nodes).
#[derive(Parser)]
#[command(name = "truc", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Logging options, for every subcommand.
#[derive(Args)]
pub(crate) struct LogArgs {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Log filter (tracing env-filter syntax); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Certificates: a development CA and everyone's certificates.
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// Runs the hub; `truc hub drain` puts a running one out of service.
    Hub(serve::HubArgs),
    /// Runs a node.
    Node(serve::ServeArgs),
    /// Runs the demo's citizen-lookup backend (plaintext gRPC `truc.v1.Backend`).
    DemoBackend(serve::BackendArgs),
    /// Runs a hub, two nodes and demo backends on this machine, with sample traffic.
    Demo(demo::DemoArgs),
    /// Calls a data service as an agency system.
    Call(call::CallArgs),
    /// Audit log checks.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Asks a server for its grpc.health.v1 status over mutual TLS (exit 0: SERVING).
    Health(health::HealthArgs),
    /// Transaction counts from the hub.
    Report(report::ReportArgs),
    /// Sends an official document, with attachments, to other agencies.
    Send(doc::SendArgs),
    /// Lists the documents received by an agency; --watch follows new ones.
    Inbox(doc::InboxArgs),
    /// Downloads a received document's attachments and envelope.
    Fetch(doc::FetchArgs),
    /// Sets the processing status of a received document.
    Status(doc::StatusArgs),
    /// Shows where a sent document stands with each recipient.
    Track(doc::TrackArgs),
    /// edXML packages (QCVN 102:2016): check one, write or read a status package.
    #[command(subcommand)]
    Edxml(edxml::EdxmlCommand),
}

/// A failed command, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Bad usage or config: exit 2.
    #[error("{0}")]
    Usage(String),
    /// Something failed: exit 1.
    #[error("{0}")]
    Failed(String),
    /// A check could not be made: exit 3.
    #[error("{0}")]
    CannotCheck(String),
}

impl CliError {
    /// The same error, its message naming the hub replica it is about.
    pub(crate) fn in_replica(self, name: &str) -> CliError {
        let named = |m: String| format!("replica {name}: {m}");
        match self {
            CliError::Usage(m) => CliError::Usage(named(m)),
            CliError::Failed(m) => CliError::Failed(named(m)),
            CliError::CannotCheck(m) => CliError::CannotCheck(named(m)),
        }
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Failed(_) => ExitCode::from(1),
            CliError::Usage(_) => ExitCode::from(2),
            CliError::CannotCheck(_) => ExitCode::from(3),
        }
    }
}

impl From<truc_ops::config::ConfigError> for CliError {
    fn from(e: truc_ops::config::ConfigError) -> Self {
        CliError::Usage(e.to_string())
    }
}

/// Turns any error into a failure (exit 1).
fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

/// A gRPC refusal from the hub: INVALID_ARGUMENT is the caller's mistake
/// (exit 2), anything else a failure (exit 1), with its code.
fn refused(s: tonic::Status) -> CliError {
    match s.code() {
        tonic::Code::InvalidArgument => CliError::Usage(s.message().to_string()),
        _ => failed(format!("{:?}: {}", s.code(), s.message())),
    }
}

pub(crate) fn init_tracing(log: &LogArgs) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (never in the binary) is harmless.
    let _ = match log.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub(crate) async fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Pki(c) => pki::run(c),
        Command::Hub(a) => serve::hub(a).await,
        Command::Node(a) => serve::node(a).await,
        Command::DemoBackend(a) => serve::backend(a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Call(a) => call::run(a).await,
        Command::Audit(c) => audit::run(c).await,
        Command::Health(a) => health::run(a).await,
        Command::Report(a) => report::run(a).await,
        Command::Send(a) => doc::send(a).await,
        Command::Inbox(a) => doc::inbox(a).await,
        Command::Fetch(a) => doc::fetch(a).await,
        Command::Status(a) => doc::status(a).await,
        Command::Track(a) => doc::track(a).await,
        Command::Edxml(c) => edxml::run(c),
    }
}

/// Waits for Ctrl-C or SIGTERM.
async fn interrupted() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
