//! `truc hub` and `truc node`: the long-running servers.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use tokio::net::TcpListener;
use truc_hub::HubConfig;
use truc_node::NodeConfig;
use truc_ops::Shutdown;

use super::{CliError, failed, interrupted};

#[derive(Subcommand)]
enum HubCommand {
    /// Puts a running hub replica out of service: health NOT_SERVING, new
    /// calls refused (UNAVAILABLE, `truc-retry: safe`), calls in flight
    /// finish within the deadline, then it exits 0. SIGTERM does the same.
    Drain(super::drain::DrainArgs),
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// The config file.
    #[arg(long)]
    config: PathBuf,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct HubArgs {
    #[command(subcommand)]
    command: Option<HubCommand>,
    /// The config file.
    #[arg(long, required = true)]
    config: Option<PathBuf>,
    /// This replica's name (a DNS label, e.g. a StatefulSet pod's `hub-0`):
    /// picks `<audit_key_dir>/<NAME>.key` and ends the log's origin with
    /// `/<NAME>`, so replicas sharing one config each keep their own log.
    #[arg(long, env = "TRUC_REPLICA")]
    replica: Option<String>,
}

async fn bind(addr: std::net::SocketAddr, field: &str) -> Result<TcpListener, CliError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| failed(format!("cannot listen on {addr} ({field}): {e}")))
}

pub(super) async fn hub(args: HubArgs) -> Result<ExitCode, CliError> {
    let path = match (args.command, args.config) {
        (Some(HubCommand::Drain(drain)), _) => return super::drain::run(drain).await,
        (None, Some(path)) => path,
        (None, None) => return Err(CliError::Usage("--config is required".into())),
    };
    let config = HubConfig::load_replica(&path, args.replica.as_deref())?;
    let options = truc_hub::RunOptions::default();
    let deadline = config.limits.drain_deadline();
    let listener = bind(config.listen, "listen").await?;
    let ops = bind(config.ops_listen, "ops_listen").await?;
    let shutdown = Shutdown::new();
    let hub = truc_hub::start(config, listener, ops, shutdown.clone(), options)
        .await
        .map_err(failed)?;
    println!("hub listening on {} (ops {})", hub.addr(), hub.ops_addr());
    tokio::spawn(drain_on_signal(hub.drain().clone(), deadline, shutdown));
    hub.wait().await.map_err(failed)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn node(args: ServeArgs) -> Result<ExitCode, CliError> {
    let config = NodeConfig::load(&args.config)?;
    let listener = bind(config.listen, "listen").await?;
    let ops = bind(config.ops_listen, "ops_listen").await?;
    let shutdown = Shutdown::new();
    let options = truc_node::RunOptions::default();
    let deadline = config.limits.drain_deadline();
    let node = truc_node::start(config, listener, ops, shutdown.clone(), options)
        .await
        .map_err(failed)?;
    println!(
        "node listening on {} (ops {})",
        node.addr(),
        node.ops_addr()
    );
    tokio::spawn(drain_on_signal(node.drain().clone(), deadline, shutdown));
    node.wait().await.map_err(failed)?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or Ctrl-C drains the process (it stops once its calls in flight
/// finish, or at `deadline`, the config's `limits.drain_deadline_secs`); a second one cuts the calls still open and
/// stops it (the audit log is still flushed and closed).
async fn drain_on_signal(
    drain: truc_ops::Drain,
    deadline: std::time::Duration,
    shutdown: Shutdown,
) {
    interrupted().await;
    tracing::info!(?deadline, "signal: draining");
    drain.start(deadline).await;
    interrupted().await;
    tracing::warn!(in_flight = drain.in_flight(), "second signal: stopping now");
    drain.cut();
    shutdown.trigger();
}

#[derive(Args)]
pub(crate) struct BackendArgs {
    /// Address to listen on.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Serve the REST household registry (HTTP/1.1, `POST
    /// /v1/household-registry`) instead of the gRPC citizen lookup.
    #[arg(long, conflicts_with = "echo")]
    rest: bool,
    /// Answer every call with its own request payload (the benchmarks'
    /// echo backend) instead of the citizen lookup.
    #[arg(long)]
    echo: bool,
}

pub(super) async fn backend(args: BackendArgs) -> Result<ExitCode, CliError> {
    let listener = bind(args.listen, "--listen").await?;
    if args.rest {
        println!(
            "demo REST backend listening on http://{}{}",
            args.listen,
            truc_demo::rest::HOUSEHOLD_REGISTRY_PATH
        );
        truc_demo::rest::serve_rest(
            truc_demo::rest::household_registry(),
            listener,
            interrupted(),
        )
        .await
        .map_err(failed)?;
        return Ok(ExitCode::SUCCESS);
    }
    // As large as the demo deployment's payloads, and their framing.
    let limit = 4 * 1024 * 1024 + 64 * 1024;
    if args.echo {
        println!("echo backend listening on {}", args.listen);
        truc_demo::backend::serve_backend(truc_demo::backend::Echo, listener, limit, interrupted())
            .await
            .map_err(failed)?;
    } else {
        println!("demo backend listening on {}", args.listen);
        truc_demo::backend::serve_backend(
            truc_demo::backend::CitizenLookup,
            listener,
            limit,
            interrupted(),
        )
        .await
        .map_err(failed)?;
    }
    Ok(ExitCode::SUCCESS)
}
