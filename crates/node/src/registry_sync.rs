//! The registry as the hub serves it, kept current at the node: what the
//! node uses it for is warnings about its own config and metric labels.

use std::{sync::Arc, time::Duration};

use truc_ops::{Metrics, Shutdown};

use crate::NodeConfig;

/// Fetches the registry from the hub once it is reachable and warns about
/// config entries the hub will refuse: a client mapped to an agency this node
/// does not host, a backend for a service the registry does not know.
pub(crate) async fn registry_check(
    channel: tonic::transport::Channel,
    config: Arc<NodeConfig>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    use backon::Retryable;
    let hub = truc_proto::v1::hub_client::HubClient::new(channel);
    let timeout = Duration::from_millis(config.limits.call_timeout_ms);
    let fetch = || {
        let mut hub = hub.clone();
        async move {
            let mut request = tonic::Request::new(truc_proto::v1::GetRegistryRequest {});
            request.set_timeout(timeout);
            hub.get_registry(request).await
        }
    };
    let attempts = fetch
        .retry(registry_backoff())
        .sleep(tokio::time::sleep)
        .notify(|e, _| tracing::debug!(error = %e, "registry not fetched yet"));
    let snapshot = tokio::select! {
        result = attempts => match result {
            Ok(r) => r.into_inner(),
            // Only if the backoff ever stops retrying.
            Err(e) => {
                tracing::warn!(error = %e, "registry not fetched from the hub");
                return;
            }
        },
        () = shutdown.wait() => return,
    };
    for warning in registry_mismatches(&config, &snapshot) {
        tracing::warn!("{warning}");
    }
    metrics.set_known(
        snapshot.agencies.iter().map(|a| a.code.clone()).collect(),
        snapshot.services.iter().map(|s| s.id.clone()).collect(),
    );
    tracing::info!(
        agencies = snapshot.agencies.len(),
        services = snapshot.services.len(),
        "registry fetched from the hub"
    );
}

/// Retries until the hub answers: 200 ms, doubling, at most 30 s apart.
fn registry_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_factor(2.0)
        .with_max_delay(Duration::from_secs(30))
        .without_max_times()
}

/// What in `config` disagrees with the hub's registry.
fn registry_mismatches(
    config: &NodeConfig,
    snapshot: &truc_proto::v1::RegistrySnapshot,
) -> Vec<String> {
    let hosted: Vec<&str> = snapshot
        .nodes
        .iter()
        .filter(|n| n.id == config.id.as_str())
        .flat_map(|n| n.agencies.iter().map(String::as_str))
        .collect();
    let mut out = Vec::new();
    for (client, agencies) in &config.clients {
        for a in agencies {
            if !hosted.contains(&a.as_str()) {
                out.push(format!(
                    "client {client} may act for {a}, but the registry does not host {a} on node {}: the hub will refuse its calls",
                    config.id
                ));
            }
        }
    }
    for service in config.backends.keys() {
        if !snapshot.services.iter().any(|s| s.id == service.as_str()) {
            out.push(format!(
                "backend for {service}, which the registry does not list"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_fetch_backs_off_to_30_s_and_never_gives_up() {
        use backon::BackoffBuilder;
        let delays: Vec<u64> = registry_backoff()
            .build()
            .take(12)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .collect();
        assert_eq!(
            delays,
            [
                200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000, 30_000, 30_000
            ]
        );
        assert!(registry_backoff().build().nth(10_000).is_some());
    }
    use truc_proto::v1::{NodeEntry, RegistrySnapshot, ServiceEntry};

    #[test]
    fn mismatches_with_the_registry_are_reported() {
        let config = crate::handler_tests::config(
            "d".as_ref(),
            &[("dms", &["000.00.00.H37", "000.00.00.G22"])],
            &[
                ("000.00.00.H37/known/v1", "127.0.0.1:4"),
                ("000.00.00.H37/unknown/v1", "127.0.0.1:5"),
            ],
        );
        let snapshot = RegistrySnapshot {
            nodes: vec![NodeEntry {
                id: "lgsp-langson".into(),
                address: "127.0.0.1:1".into(),
                agencies: vec!["000.00.00.H37".into()],
            }],
            services: vec![ServiceEntry {
                id: "000.00.00.H37/known/v1".into(),
                provider: "000.00.00.H37".into(),
                description: String::new(),
            }],
            ..RegistrySnapshot::default()
        };
        let found = registry_mismatches(&config, &snapshot);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("000.00.00.G22"), "{found:?}");
        assert!(found[1].contains("unknown"), "{found:?}");
    }
}
