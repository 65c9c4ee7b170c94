//! `truc hub drain`: puts a running hub replica out of service (the admin
//! `Drain` RPC); the replica stops once its calls in flight finish.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Args;
use truc_ops::config::ClientConfig;
use truc_proto::v1::{DrainRequest, admin_client::AdminClient};

use super::{CliError, failed};

#[derive(Args)]
pub(crate) struct DrainArgs {
    /// Client config for the hub replica, with the admin's certificate
    /// (only the admin may drain).
    #[arg(long)]
    config: PathBuf,
    /// How long calls in flight may still run, e.g. 30s, 500ms, 2m (at most
    /// 1h); by default the hub's own (`limits.drain_deadline_secs`, 10 s
    /// unless set).
    #[arg(long, value_parser = parse_duration)]
    deadline: Option<Duration>,
}

pub(super) async fn run(args: DrainArgs) -> Result<ExitCode, CliError> {
    let config = ClientConfig::load(&args.config)?;
    let deadline_ms = args
        .deadline
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut client = AdminClient::new(config.channel().map_err(failed)?);
    let answer = client
        .drain(DrainRequest { deadline_ms })
        .await
        .map_err(super::refused)?
        .into_inner();
    let left_ms = answer.deadline_unix_ms.saturating_sub(truc_ops::now_ms());
    let what = if answer.started {
        "draining"
    } else {
        "already draining"
    };
    println!(
        "hub at {} {what}: {} calls in flight, stops within {:.1} s",
        config.address,
        answer.in_flight,
        Duration::from_millis(left_ms).as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// A duration: a number with `ms`, `s`, `m` or `h` (seconds without one).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit, e.g. 30s"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("{text:?}: the unit is one of ms, s, m, h")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_unit_and_bad_ones_are_refused() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "",
            "s",
            "-1s",
            "1.5s",
            "3d",
            "99999999999999999999h",
            "18446744073709551615h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
