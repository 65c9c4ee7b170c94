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
    let answer = tokio::time::timeout(timeout, check)
        .await
        .map(|r| r.map(|a| a.into_inner().status));
    verdict(&config.address, &args.service, args.timeout, answer)
}

/// What one answer means: SERVING is success; another status, or a server
/// that knows no such service, is a failure (exit 1); no answer, or an
/// error before the check was made, means it could not be checked (exit 3).
fn verdict(
    address: &str,
    service: &str,
    timeout_secs: f64,
    answer: Result<Result<i32, tonic::Status>, tokio::time::error::Elapsed>,
) -> Result<ExitCode, CliError> {
    let status = match answer {
        Err(_) => {
            return Err(CliError::CannotCheck(format!(
                "{address}: no answer within {timeout_secs}s"
            )));
        }
        Ok(Err(status)) if status.code() == Code::NotFound => {
            return Err(CliError::Failed(format!(
                "{address}: no such service {service:?}"
            )));
        }
        Ok(Err(status)) => {
            return Err(CliError::CannotCheck(format!(
                "{address}: {:?}: {}",
                status.code(),
                status.message()
            )));
        }
        Ok(Ok(status)) => status,
    };
    let status = ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown);
    if status == ServingStatus::Serving {
        println!("SERVING");
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Failed(format!(
            "{address}: {}",
            status.as_str_name()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(answer: Result<i32, tonic::Status>) -> u8 {
        match verdict("hub-0:7000", "", 1.0, Ok(answer)) {
            Ok(_) => 0,
            Err(CliError::Failed(_)) => 1,
            Err(CliError::Usage(_)) => 2,
            Err(CliError::CannotCheck(_)) => 3,
        }
    }

    #[test]
    fn only_serving_passes_the_probe() {
        assert_eq!(code(Ok(ServingStatus::Serving as i32)), 0);
        // A draining hub says NOT_SERVING: the pod must leave the endpoints.
        assert_eq!(code(Ok(ServingStatus::NotServing as i32)), 1);
        assert_eq!(code(Ok(ServingStatus::Unknown as i32)), 1);
        assert_eq!(code(Ok(ServingStatus::ServiceUnknown as i32)), 1);
        // A status no version of the protocol has.
        assert_eq!(code(Ok(42)), 1);
        assert_eq!(code(Err(tonic::Status::not_found("unknown service"))), 1);
        assert_eq!(
            code(Err(tonic::Status::unavailable("connection refused"))),
            3
        );
        assert_eq!(code(Err(tonic::Status::unauthenticated("certificate"))), 3);
    }

    #[tokio::test]
    async fn no_answer_in_time_cannot_be_checked() {
        // A zero timeout on an answer that never comes: elapsed at once.
        let elapsed = tokio::time::timeout(
            Duration::ZERO,
            std::future::pending::<Result<i32, tonic::Status>>(),
        )
        .await;
        let err = verdict("hub-0:7000", "", 1.0, elapsed).expect_err("no answer");
        assert!(matches!(err, CliError::CannotCheck(_)), "{err}");
        assert!(err.to_string().contains("within 1s"), "{err}");
    }
}
