//! `truc health`: asks a hub (or node) for its `grpc.health.v1` status over
//! mutual TLS, for a Kubernetes exec probe or a script. Kubernetes' own
//! `grpc:` probe speaks plaintext or server-only TLS and cannot present a
//! client certificate, so it cannot reach a port that serves mutual TLS only.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Args;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use truc_ops::config::ClientConfig;

use super::CliError;

#[derive(Args)]
pub(crate) struct HealthArgs {
    /// Client config naming the server and the certificate to present (an
    /// operator's for the hub).
    #[arg(long)]
    config: PathBuf,
    /// The service to ask about (`truc.v1.Hub`); empty: the whole server.
    #[arg(long, default_value = "")]
    service: String,
    /// Seconds to wait for the answer, connecting included.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

/// Exit 0 and prints SERVING when the server says so; exit 1 when it
/// answers anything else (NOT_SERVING while it drains, or an unknown
/// service); exit 3 when it cannot be asked (unreachable, refused
/// certificate, timeout); exit 2 for a bad config.
pub(super) async fn run(args: HealthArgs) -> Result<ExitCode, CliError> {
    if !(args.timeout > 0.0 && args.timeout < 3600.0) {
        return Err(CliError::Usage(
            "--timeout must be between 0 and 3600 seconds".into(),
        ));
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let config = ClientConfig::load(&args.config)?;
    let channel = config
        .channel()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let mut client = HealthClient::new(channel);
    let check = client.check(HealthCheckRequest {
        service: args.service.clone(),
    });
    let answer = match tokio::time::timeout(timeout, check).await {
        Err(_) => {
            return Err(CliError::CannotCheck(format!(
                "{}: no answer within {}s",
                config.address, args.timeout
            )));
        }
        Ok(Err(status)) if status.code() == Code::NotFound => {
            return Err(CliError::Failed(format!(
                "{}: no such service {:?}",
                config.address, args.service
            )));
        }
        Ok(Err(status)) => {
            return Err(CliError::CannotCheck(format!(
                "{}: {:?}: {}",
                config.address,
                status.code(),
                status.message()
            )));
        }
        Ok(Ok(answer)) => answer.into_inner().status,
    };
    let status = ServingStatus::try_from(answer).unwrap_or(ServingStatus::Unknown);
    if status == ServingStatus::Serving {
        println!("SERVING");
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Failed(format!(
            "{}: {}",
            config.address,
            status.as_str_name()
        )))
    }
}
