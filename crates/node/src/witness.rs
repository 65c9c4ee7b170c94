//! The node as a witness of the hub's audit log (after C2SP tlog-witness):
//! it keeps, durably, the latest signed head of the hub it verified; every
//! `[witness] interval_ms` and on every new head it sees in a receipt it
//! asks the hub for a consistency proof from that head, verifies it, and
//! cosigns the new head (`cosignature/v1`) for the hub to serve.
//!
//! A hub that contradicts itself (a proof that does not verify, two roots
//! for one size, a latest head smaller than one it signed before, a new
//! origin) is caught at the next contact: the node logs it, keeps both
//! signed heads as evidence in its store, sets `truc_witness_alarm 1`,
//! reports `NOT_SERVING` for the gRPC health service [`HEALTH_SERVICE`],
//! and cosigns nothing more. The alarm outlives restarts (the evidence is
//! stored) until an operator has looked at it and cleared the store's
//! evidence.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::Duration;

use ring::signature::Ed25519KeyPair;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic_health::{ServingStatus, server::HealthReporter};
use truc_audit::{merkle::verify_consistency, sth, witness as stored};
use truc_ops::{Metrics, Shutdown};
use truc_proto::v1::{
    AddCosignatureRequest, GetConsistencyProofRequest, GetTreeHeadRequest, SignedTreeHead,
    WitnessEvidence, audit_client::AuditClient,
};
use truc_store::Store;

use crate::HubKey;

/// The gRPC health service name that turns `NOT_SERVING` once the hub was
/// caught contradicting itself.
pub const HEALTH_SERVICE: &str = "truc.witness";

/// What one contact with the hub found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The head verified and extends (or equals, or precedes) the one kept.
    Consistent,
    /// The hub contradicted itself; evidence kept.
    Conflict(String),
    /// Nothing could be checked (hub unreachable, key not known yet, a
    /// head that does not verify…).
    Unchecked(String),
}

#[derive(Default)]
struct Counts {
    consistent: AtomicU64,
    conflict: AtomicU64,
    unchecked: AtomicU64,
    cosigned: AtomicU64,
    size: AtomicU64,
}

/// The witness of one node.
pub(crate) struct Witness {
    store: Store,
    name: String,
    key: Option<Ed25519KeyPair>,
    hub: AuditClient<Channel>,
    hub_key: HubKey,
    timeout: Duration,
    alarm: Arc<AtomicBool>,
    health: HealthReporter,
    counts: Arc<Counts>,
}

impl Witness {
    /// A witness keeping its state in `store`; the alarm is raised at once
    /// if the store holds evidence from before.
    pub(crate) async fn open(
        config: &crate::NodeConfig,
        store: Store,
        key: Option<Ed25519KeyPair>,
        hub: Channel,
        hub_key: HubKey,
        health: HealthReporter,
        metrics: &Metrics,
    ) -> Result<Witness, truc_audit::AuditError> {
        let name = config.id.as_str();
        let timeout = Duration::from_millis(config.limits.call_timeout_ms);
        let evidence = stored::evidence(&store)?;
        let counts = Arc::new(Counts::default());
        if let Some(h) = stored::latest(&store)? {
            counts.size.store(h.tree_size, Ordering::Relaxed);
        }
        let w = Witness {
            store,
            name: name.to_string(),
            key,
            hub: AuditClient::new(hub),
            hub_key,
            timeout,
            alarm: Arc::new(AtomicBool::new(false)),
            health,
            counts,
        };
        if let Some(e) = evidence.first() {
            tracing::error!(reason = %e.reason, "this node holds evidence that the hub rewrote its audit log");
            w.raise().await;
        } else {
            w.health
                .set_service_status(HEALTH_SERVICE, ServingStatus::Serving)
                .await;
        }
        let (alarm, counts) = (w.alarm.clone(), w.counts.clone());
        metrics.add_source(Box::new(move |out| {
            let alarm = if alarm.load(Ordering::Relaxed) { 1.0 } else { 0.0 };
            truc_ops::write_metric(
                out,
                "truc_witness_alarm",
                "gauge",
                "1 once the hub was caught contradicting its own audit log (evidence in the node's store)",
                &[("", alarm)],
            );
            truc_ops::write_metric(
                out,
                "truc_witness_verified_size",
                "gauge",
                "Tree size of the latest hub head this node verified",
                &[("", counts.size.load(Ordering::Relaxed) as f64)],
            );
            let c = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
            truc_ops::write_metric(
                out,
                "truc_witness_checks_total",
                "counter",
                "Contacts with the hub's log by result",
                &[
                    ("{result=\"consistent\"}", c(&counts.consistent)),
                    ("{result=\"conflict\"}", c(&counts.conflict)),
                    ("{result=\"unchecked\"}", c(&counts.unchecked)),
                ],
            );
            truc_ops::write_metric(
                out,
                "truc_witness_cosignatures_total",
                "counter",
                "Cosignatures the hub accepted from this node",
                &[("", c(&counts.cosigned))],
            );
        }));
        Ok(w)
    }

    async fn raise(&self) {
        self.alarm.store(true, Ordering::Relaxed);
        self.health
            .set_service_status(HEALTH_SERVICE, ServingStatus::NotServing)
            .await;
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout);
        r
    }

    /// One contact: checks `seen` (a head from a receipt) or, without one,
    /// the hub's latest head, against the head kept.
    pub(crate) async fn contact(&mut self, seen: Option<SignedTreeHead>) -> Outcome {
        let outcome = self.check(seen).await;
        let counter = match &outcome {
            Outcome::Consistent => &self.counts.consistent,
            Outcome::Conflict(_) => &self.counts.conflict,
            Outcome::Unchecked(why) => {
                tracing::debug!(why, "hub log not checked");
                &self.counts.unchecked
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    async fn check(&mut self, seen: Option<SignedTreeHead>) -> Outcome {
        let from_receipt = seen.is_some();
        let head = match seen {
            Some(h) => h,
            None => match self
                .hub
                .get_tree_head(self.request(GetTreeHeadRequest { tree_size: 0 }))
                .await
            {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    return Outcome::Unchecked(format!("no head from the hub: {}", s.message()));
                }
            },
        };
        match self.hub_key.verify_head(&head) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(size = head.tree_size, error = %e, "a hub tree head does not verify");
                return Outcome::Unchecked(format!("head of size {}: {e}", head.tree_size));
            }
        }
        if head.origin.is_empty() {
            return Outcome::Unchecked("the head is in the format of an earlier build".into());
        }
        let kept = match stored::latest(&self.store) {
            Ok(k) => k,
            Err(e) => return Outcome::Unchecked(format!("cannot read the kept head: {e}")),
        };
        let Some(kept) = kept.filter(|k| k.tree_size > 0) else {
            return self.accept(head).await;
        };
        if kept.origin != head.origin {
            let reason = format!(
                "the hub's log origin changed from {:?} to {:?}",
                kept.origin, head.origin
            );
            return self.conflict(reason, kept, head).await;
        }
        if head.tree_size == kept.tree_size {
            if head.root_hash != kept.root_hash {
                let reason = format!("two different roots for tree size {}", head.tree_size);
                return self.conflict(reason, kept, head).await;
            }
            return Outcome::Consistent;
        }
        if head.tree_size < kept.tree_size && !from_receipt {
            let reason = format!(
                "the hub's latest head has size {}, smaller than the head of size {} it signed before",
                head.tree_size, kept.tree_size
            );
            return self.conflict(reason, kept, head).await;
        }
        let (old, new) = if head.tree_size < kept.tree_size {
            (&head, &kept)
        } else {
            (&kept, &head)
        };
        let proof = match self
            .hub
            .get_consistency_proof(self.request(GetConsistencyProofRequest {
                from_size: old.tree_size,
                to_size: new.tree_size,
            }))
            .await
        {
            Ok(p) => p.into_inner(),
            Err(s) => {
                return Outcome::Unchecked(format!(
                    "no consistency proof from {} to {}: {}",
                    old.tree_size,
                    new.tree_size,
                    s.message()
                ));
            }
        };
        let ok = match (sth::root_of(old), sth::root_of(new)) {
            (Some(old_root), Some(new_root)) => proof
                .path
                .iter()
                .map(|h| h.as_ref().try_into().ok())
                .collect::<Option<Vec<_>>>()
                .is_some_and(|path| {
                    proof.from_size == old.tree_size
                        && proof.to_size == new.tree_size
                        && verify_consistency(
                            old.tree_size,
                            new.tree_size,
                            &old_root,
                            &new_root,
                            &path,
                        )
                }),
            _ => false,
        };
        if !ok {
            let reason = format!(
                "no valid consistency proof from size {} to size {}: the log was rewritten",
                old.tree_size, new.tree_size
            );
            return self.conflict(reason, kept, head).await;
        }
        if head.tree_size > kept.tree_size {
            return self.accept(head).await;
        }
        Outcome::Consistent
    }

    /// Keeps `head` as the latest verified, then cosigns it.
    async fn accept(&mut self, mut head: SignedTreeHead) -> Outcome {
        // Others' cosignatures, as the hub served them, are not ours to keep.
        head.cosignatures.clear();
        let cosignature = match (&self.key, self.alarm.load(Ordering::Relaxed)) {
            // A witness that has seen the hub lie vouches for nothing more.
            (Some(key), false) => Some(sth::cosign(key, &self.name, &head, now_s())),
            _ => None,
        };
        head.cosignatures.extend(cosignature.clone());
        if let Err(e) = stored::set_latest(&self.store, &head) {
            tracing::error!(error = %e, "cannot keep the verified hub head");
            return Outcome::Unchecked(format!("cannot store the head: {e}"));
        }
        self.counts.size.store(head.tree_size, Ordering::Relaxed);
        if let Some(c) = cosignature {
            let req = AddCosignatureRequest {
                tree_size: head.tree_size,
                root_hash: head.root_hash.clone(),
                cosignature: Some(c),
            };
            match self.hub.add_cosignature(self.request(req)).await {
                Ok(_) => {
                    self.counts.cosigned.fetch_add(1, Ordering::Relaxed);
                }
                Err(s) => tracing::warn!(
                    code = ?s.code(),
                    message = s.message(),
                    "the hub refused this node's cosignature"
                ),
            }
        }
        Outcome::Consistent
    }

    async fn conflict(
        &mut self,
        reason: String,
        seen: SignedTreeHead,
        conflicting: SignedTreeHead,
    ) -> Outcome {
        tracing::error!(
            %reason,
            seen_size = seen.tree_size,
            conflicting_size = conflicting.tree_size,
            "the hub contradicts its own audit log; both signed heads are kept as evidence"
        );
        let duplicate = stored::evidence(&self.store).is_ok_and(|all| {
            all.iter().any(|e| {
                e.conflicting.as_ref().is_some_and(|c| {
                    c.tree_size == conflicting.tree_size && c.root_hash == conflicting.root_hash
                })
            })
        });
        if !duplicate {
            let evidence = WitnessEvidence {
                reason: reason.clone(),
                seen: Some(seen),
                conflicting: Some(conflicting),
                detected_unix_ms: now_s().saturating_mul(1000),
            };
            if let Err(e) = stored::add_evidence(&self.store, &evidence) {
                tracing::error!(error = %e, "cannot store the evidence");
            }
        }
        self.raise().await;
        Outcome::Conflict(reason)
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Opens the node's witness and runs it (the wiring of `crate::start`).
pub(crate) async fn start(
    config: &crate::NodeConfig,
    store: Store,
    hub: Channel,
    hub_key: &HubKey,
    health: &HealthReporter,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> Result<(), crate::NodeError> {
    let key = match &config.witness_key {
        Some(path) => Some(truc_pki::load_audit_key(path)?),
        None => {
            tracing::info!("no [witness] key: this node checks the hub's log but cosigns nothing");
            None
        }
    };
    let witness = Witness::open(
        config,
        store,
        key,
        hub,
        hub_key.clone(),
        health.clone(),
        metrics,
    )
    .await?;
    spawn(
        witness,
        config.witness_interval,
        hub_key.sightings(),
        shutdown.clone(),
    );
    Ok(())
}

/// Runs the witness: every `interval`, and whenever a new head is seen in
/// a receipt, until shutdown.
pub(crate) fn spawn(
    mut witness: Witness,
    interval: Duration,
    mut sightings: watch::Receiver<Option<SignedTreeHead>>,
    shutdown: Shutdown,
) {
    tokio::spawn(async move {
        // The first contact after one interval: at start the hub's key is
        // not known yet.
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = shutdown.wait();
        tokio::pin!(stop);
        let mut sightings_open = true;
        loop {
            let seen = tokio::select! {
                _ = ticker.tick() => None,
                changed = sightings.changed(), if sightings_open => match changed {
                    Ok(()) => sightings.borrow_and_update().clone(),
                    Err(_) => {
                        sightings_open = false;
                        continue;
                    }
                },
                () = &mut stop => return,
            };
            witness.contact(seen).await;
        }
    });
}
