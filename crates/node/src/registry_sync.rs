//! The registry as the hub serves it, kept current at the node: what the
//! node uses it for is warnings about its own config and metric labels.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use truc_ops::{Metrics, Shutdown};
use truc_proto::v1::{GetRegistryRequest, RegistrySnapshot};

use crate::{HubKey, NodeConfig};

/// What the registry task has seen, for metrics, and the signed snapshot
/// in force, for what the node serves from it (the VXP agencies list).
#[derive(Default)]
pub(crate) struct RegistryStats {
    updated: AtomicU64,
    unchanged: AtomicU64,
    refused: AtomicU64,
    unreachable: AtomicU64,
    /// The first 8 bytes of the version in force, big-endian (0: none yet).
    version: AtomicU64,
    in_force: tokio::sync::watch::Sender<Option<Arc<RegistrySnapshot>>>,
}

impl RegistryStats {
    /// The signed snapshot in force; before the first one was fetched and
    /// checked, waits for it up to `timeout`.
    pub(crate) async fn in_force(&self, timeout: Duration) -> Option<Arc<RegistrySnapshot>> {
        let mut changes = self.in_force.subscribe();
        match tokio::time::timeout(timeout, changes.wait_for(Option::is_some)).await {
            Ok(Ok(snapshot)) => snapshot.clone(),
            _ => None,
        }
    }

    /// Writes `truc_registry_fetches_total{result}` and
    /// `truc_registry_version_info{version}`.
    pub(crate) fn write(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        truc_ops::write_metric(
            out,
            "truc_registry_fetches",
            "counter",
            "Registry fetches from the hub, by result: updated (a new signed registry is in force), unchanged, refused (unsigned, badly signed or inconsistent: the previous one stays), unreachable",
            &[
                ("{result=\"updated\"}", get(&self.updated)),
                ("{result=\"unchanged\"}", get(&self.unchanged)),
                ("{result=\"refused\"}", get(&self.refused)),
                ("{result=\"unreachable\"}", get(&self.unreachable)),
            ],
        );
        let version = self.version.load(Ordering::Relaxed);
        if version != 0 {
            let label = format!("{{version=\"{version:016x}\"}}");
            truc_ops::write_metric(
                out,
                "truc_registry_version_info",
                "gauge",
                "The registry version in force at this node (the first 8 bytes of its SHA-256 version)",
                &[(label.as_str(), 1.0)],
            );
        }
    }
}

/// What a registry answer from the hub comes to.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// The node's version is current.
    Unchanged,
    /// A new registry, signed by a pinned key.
    Updated(Arc<RegistrySnapshot>),
    /// Not accepted; the registry in force stays.
    Refused(String),
}

/// Checks `answer` against the pinned keys and the registry in force.
pub(crate) fn check_answer(
    hub_key: &HubKey,
    current: Option<&RegistrySnapshot>,
    answer: RegistrySnapshot,
) -> Fetched {
    if answer.unchanged {
        return match current {
            Some(c) if c.version == answer.version => Fetched::Unchanged,
            _ => Fetched::Refused(format!(
                "the hub says version {} is unchanged, but this node does not have it",
                hex::encode(&answer.version)
            )),
        };
    }
    if answer.signature.is_empty() {
        return Fetched::Refused("the registry is not signed".into());
    }
    if answer.version.as_ref() != truc_registry::signed::version(&answer) {
        return Fetched::Refused(format!(
            "version {} is not the digest of the registry's entries",
            hex::encode(&answer.version)
        ));
    }
    if let Err(e) = hub_key.check_signature(
        &answer.key_id,
        answer.signed_unix_ms,
        &truc_registry::signed::signed_bytes(&answer),
        &answer.signature,
    ) {
        return Fetched::Refused(format!("registry signature: {e}"));
    }
    if current.is_some_and(|c| c.version == answer.version) {
        return Fetched::Unchanged;
    }
    Fetched::Updated(Arc::new(answer))
}

/// Keeps the node's registry current: fetches it from the hub (retrying
/// until the hub answers), then asks every `config.registry_refresh` with
/// the version it has. A registry that is not signed by a pinned key is
/// refused (logged, counted) and the previous one stays in force. Each new
/// registry is checked against the node's config (warnings about entries
/// the hub will refuse) and gives the metrics their labels.
///
/// A versioned fetch rather than a stream: it needs no state at the hub,
/// survives hub restarts and reconnects without a resubscription protocol,
/// and an unchanged answer is a few bytes every few seconds per node.
pub(crate) async fn keep_current(
    hubs: crate::hubs::Hubs,
    config: Arc<NodeConfig>,
    hub_key: HubKey,
    metrics: Arc<Metrics>,
    stats: Arc<RegistryStats>,
    shutdown: Shutdown,
) {
    use backon::BackoffBuilder;
    let timeout = Duration::from_millis(config.limits.call_timeout_ms);
    let mut current: Option<Arc<RegistrySnapshot>> = None;
    let mut backoff = registry_backoff().build();
    loop {
        let mut request = tonic::Request::new(GetRegistryRequest {
            known_version: current
                .as_ref()
                .map(|c| c.version.clone())
                .unwrap_or_default(),
        });
        request.set_timeout(timeout);
        // Any replica serves the registry, signed with its own key; the
        // version is the digest of the entries, the same from each.
        let pick = hubs.pick();
        let answer = truc_proto::v1::hub_client::HubClient::new(pick.channel)
            .max_decoding_message_size(truc_server::MAX_REGISTRY_SNAPSHOT_BYTES)
            .get_registry(request)
            .await;
        if let Err(e) = &answer {
            hubs.observe(pick.index, e);
        }
        let delay = match answer {
            Err(e) => {
                stats.unreachable.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "registry not fetched from the hub");
                let next = backoff.next().unwrap_or(config.registry_refresh);
                if current.is_some() {
                    next.min(config.registry_refresh)
                } else {
                    next
                }
            }
            Ok(answer) => {
                backoff = registry_backoff().build();
                match check_answer(&hub_key, current.as_deref(), answer.into_inner()) {
                    Fetched::Unchanged => {
                        stats.unchanged.fetch_add(1, Ordering::Relaxed);
                    }
                    Fetched::Refused(reason) => {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            %reason,
                            "registry from the hub refused; the previous one stays in force"
                        );
                    }
                    Fetched::Updated(snapshot) => {
                        stats.updated.fetch_add(1, Ordering::Relaxed);
                        install(&config, &metrics, &snapshot);
                        let mut head = [0u8; 8];
                        head.copy_from_slice(&snapshot.version[..8]);
                        stats
                            .version
                            .store(u64::from_be_bytes(head), Ordering::Relaxed);
                        stats.in_force.send_replace(Some(snapshot.clone()));
                        current = Some(snapshot);
                    }
                }
                config.registry_refresh
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.wait() => return,
        }
    }
}

/// Puts a new registry in force: warnings about the node's config, metric
/// labels.
fn install(config: &NodeConfig, metrics: &Metrics, snapshot: &RegistrySnapshot) {
    for warning in registry_mismatches(config, snapshot) {
        tracing::warn!("{warning}");
    }
    metrics.set_known(
        snapshot.agencies.iter().map(|a| a.code.clone()).collect(),
        snapshot.services.iter().map(|s| s.id.clone()).collect(),
    );
    tracing::info!(
        agencies = snapshot.agencies.len(),
        services = snapshot.services.len(),
        version = %hex::encode(&snapshot.version),
        "registry from the hub verified and in force"
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
    use truc_proto::v1::{NodeEntry, ServiceEntry};

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
                ..NodeEntry::default()
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

    /// A registry signed as the hub signs it, by `signer`.
    fn signed(signer: &ring::signature::Ed25519KeyPair, agencies: usize) -> RegistrySnapshot {
        sign(
            signer,
            RegistrySnapshot {
                agencies: (0..agencies)
                    .map(|i| truc_proto::v1::AgencyEntry {
                        code: format!("000.00.00.G{i:02}"),
                        ..Default::default()
                    })
                    .collect(),
                ..RegistrySnapshot::default()
            },
        )
    }

    fn sign(signer: &ring::signature::Ed25519KeyPair, mut s: RegistrySnapshot) -> RegistrySnapshot {
        use ring::signature::KeyPair;
        s.version = truc_registry::signed::version(&s).to_vec().into();
        s.key_id = truc_audit::sth::key_id(signer.public_key().as_ref())
            .to_vec()
            .into();
        s.signed_unix_ms = 1_000;
        s.signature = signer
            .sign(&truc_registry::signed::signed_bytes(&s))
            .as_ref()
            .to_vec()
            .into();
        s
    }

    fn key() -> ring::signature::Ed25519KeyPair {
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .expect("key");
        ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key")
    }

    fn pinned(key: &ring::signature::Ed25519KeyPair) -> HubKey {
        use ring::signature::KeyPair;
        HubKey::new(vec![crate::PinnedKey::new(
            key.public_key().as_ref().to_vec(),
            None,
            None,
        )])
    }

    #[test]
    fn only_a_registry_signed_by_a_pinned_key_is_put_in_force() {
        let hub = key();
        let trust = pinned(&hub);
        let one = signed(&hub, 1);
        let Fetched::Updated(current) = check_answer(&trust, None, one.clone()) else {
            panic!("a signed registry is accepted");
        };
        // The same again, or "unchanged" for the version held: unchanged.
        assert!(matches!(
            check_answer(&trust, Some(&current), one.clone()),
            Fetched::Unchanged
        ));
        let unchanged = RegistrySnapshot {
            version: one.version.clone(),
            unchanged: true,
            ..RegistrySnapshot::default()
        };
        assert!(matches!(
            check_answer(&trust, Some(&current), unchanged.clone()),
            Fetched::Unchanged
        ));
        assert!(matches!(
            check_answer(&trust, None, unchanged),
            Fetched::Refused(_)
        ));
        // A new version is accepted.
        assert!(matches!(
            check_answer(&trust, Some(&current), signed(&hub, 2)),
            Fetched::Updated(_)
        ));
        let refused = |answer: RegistrySnapshot| match check_answer(&trust, Some(&current), answer)
        {
            Fetched::Refused(reason) => reason,
            other => panic!("accepted: {other:?}"),
        };
        // Unsigned.
        let mut unsigned = signed(&hub, 2);
        unsigned.signature = Default::default();
        assert!(refused(unsigned).contains("not signed"));
        // An entry changed after signing, version recomputed or not.
        let mut edited = signed(&hub, 2);
        edited.agencies[0].name = "forged".into();
        assert!(refused(edited.clone()).contains("version"));
        edited.version = truc_registry::signed::version(&edited).to_vec().into();
        assert!(refused(edited).contains("signature"));
        // Signed by a key this node does not pin, even one the snapshot names.
        let other = key();
        let mut foreign = signed(&other, 2);
        foreign.audit_public_key = {
            use ring::signature::KeyPair;
            other.public_key().as_ref().to_vec().into()
        };
        let foreign = sign(&other, foreign);
        assert!(refused(foreign).contains("not pinned"));
    }

    #[test]
    fn two_replicas_serving_one_registry_give_one_version() {
        use ring::signature::KeyPair;
        let (a, b) = (key(), key());
        let keys = HubKey::new(
            [&a, &b]
                .map(|k| crate::PinnedKey::new(k.public_key().as_ref().to_vec(), None, None))
                .to_vec(),
        );
        // As each replica serves it: its own public key in the snapshot.
        let served = |k: &ring::signature::Ed25519KeyPair| {
            let mut s = signed(k, 2);
            s.audit_public_key = k.public_key().as_ref().to_vec().into();
            sign(k, s)
        };
        let Fetched::Updated(first) = check_answer(&keys, None, served(&a)) else {
            panic!("the first registry is taken");
        };
        assert!(matches!(
            check_answer(&keys, Some(&first), served(&b)),
            Fetched::Unchanged
        ));
        // Other entries from the other replica: a new version.
        assert!(matches!(
            check_answer(&keys, Some(&first), sign(&b, signed(&b, 3))),
            Fetched::Updated(_)
        ));
    }
}
