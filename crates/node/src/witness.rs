//! The node as a witness of the hub's audit log (after C2SP tlog-witness):
//! it keeps, durably, the latest signed head of each hub log it verified
//! (one per replica, by origin: each replica signs its own log); every
//! `[witness] interval_ms` and on every new head it sees in a receipt it
//! asks the replica keeping that log for a consistency proof from that
//! head, verifies it, and cosigns the new head (`cosignature/v1`) for that
//! replica to serve.
//!
//! A hub that contradicts itself (a proof that does not verify, two roots
//! for one size, a latest head smaller than one it signed before, a new
//! origin) is caught at the next contact: the node logs it, keeps both
//! signed heads as evidence in its store, sets `truc_witness_alarm 1`,
//! reports `NOT_SERVING` for the gRPC health service [`HEALTH_SERVICE`],
//! and cosigns nothing more of that log; the other replicas' logs are
//! still checked and cosigned. The alarm outlives restarts (the evidence is
//! stored) until an operator has looked at it and cleared the store's
//! evidence.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::Duration;

use ring::signature::Ed25519KeyPair;
use tokio::sync::watch;
use tonic_health::{ServingStatus, server::HealthReporter};
use truc_audit::{merkle::verify_consistency, sth, witness as stored};
use truc_ops::{Metrics, Shutdown};
use truc_proto::v1::{
    AddCosignatureRequest, GetConsistencyProofRequest, GetTreeHeadRequest, SignedTreeHead,
    WitnessEvidence, audit_client::AuditClient,
};
use truc_store::Store;

use crate::{HubKey, hubs::Hubs};

/// The gRPC health service name that turns `NOT_SERVING` once the hub was
/// caught contradicting itself.
pub(crate) const HEALTH_SERVICE: &str = "truc.witness";

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
    /// The verified size of each log, by origin.
    sizes: Mutex<BTreeMap<String, u64>>,
}

impl Counts {
    fn set_size(&self, origin: &str, size: u64) {
        if let Ok(mut s) = self.sizes.lock() {
            s.insert(origin.to_string(), size);
        }
    }
}

/// The witness of one node.
pub(crate) struct Witness {
    store: Store,
    name: String,
    key: Option<Ed25519KeyPair>,
    hubs: Hubs,
    hub_key: HubKey,
    timeout: Duration,
    alarm: Arc<AtomicBool>,
    /// The logs caught contradicting themselves: cosigned no more.
    lying: BTreeSet<String>,
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
        hubs: Hubs,
        hub_key: HubKey,
        health: HealthReporter,
        metrics: &Metrics,
    ) -> Result<Witness, truc_audit::AuditError> {
        let name = config.id.as_str();
        let timeout = Duration::from_millis(config.limits.call_timeout_ms);
        let evidence = stored::evidence(&store)?;
        let counts = Arc::new(Counts::default());
        for h in stored::latest_heads(&store)? {
            counts.set_size(&h.origin, h.tree_size);
        }
        // A log's own heads name it: the evidence says which lied.
        let lying = evidence
            .iter()
            .filter_map(|e| e.conflicting.as_ref().or(e.seen.as_ref()))
            .map(|h| h.origin.clone())
            .collect();
        let w = Witness {
            store,
            name: name.to_string(),
            key,
            hubs,
            hub_key,
            timeout,
            alarm: Arc::new(AtomicBool::new(false)),
            lying,
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
            let sizes: Vec<(String, f64)> = counts.sizes.lock().map_or_else(
                |_| Vec::new(),
                |s| {
                    s.iter()
                        .map(|(o, n)| (format!("{{log=\"{}\"}}", o.escape_default()), *n as f64))
                        .collect()
                },
            );
            let sizes: Vec<(&str, f64)> = sizes.iter().map(|(l, n)| (l.as_str(), *n)).collect();
            truc_ops::write_metric(
                out,
                "truc_witness_verified_size",
                "gauge",
                "Tree size of the latest head this node verified, by hub log (replica origin)",
                &sizes,
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

    /// One contact: checks `seen` (a head from a receipt) with the replica
    /// keeping its log or, without one, each replica's latest head, against
    /// the head kept of that log. Several outcomes: the worst.
    pub(crate) async fn contact(&mut self, seen: Option<SignedTreeHead>) -> Outcome {
        match seen {
            Some(head) => {
                let Some(replica) = self.replica_of(&head.origin) else {
                    return self.count(Outcome::Unchecked(format!(
                        "no known hub replica keeps the log {:?} yet",
                        head.origin
                    )));
                };
                self.contact_replica(replica, Some(head)).await
            }
            None => {
                let mut worst = Outcome::Consistent;
                for replica in 0..self.hubs.len() {
                    let o = self.contact_replica(replica, None).await;
                    worst = match (&worst, &o) {
                        (Outcome::Conflict(_), _) => worst,
                        (_, Outcome::Conflict(_)) | (Outcome::Consistent, _) => o,
                        _ => worst,
                    };
                }
                worst
            }
        }
    }

    /// The replica keeping the log `origin`: known to the node's replicas,
    /// or the only one.
    fn replica_of(&self, origin: &str) -> Option<usize> {
        match self.hubs.for_origin(origin) {
            Some(p) => Some(p.index),
            None if self.hubs.len() == 1 => Some(0),
            None => None,
        }
    }

    fn audit(&self, replica: usize) -> Option<AuditClient<tonic::transport::Channel>> {
        self.hubs.channel(replica).map(AuditClient::new)
    }

    async fn contact_replica(&mut self, replica: usize, seen: Option<SignedTreeHead>) -> Outcome {
        let outcome = self.check(replica, seen).await;
        self.count(outcome)
    }

    fn count(&self, outcome: Outcome) -> Outcome {
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

    async fn check(&mut self, replica: usize, seen: Option<SignedTreeHead>) -> Outcome {
        let from_receipt = seen.is_some();
        let Some(mut audit) = self.audit(replica) else {
            return Outcome::Unchecked(format!("no hub replica {replica}"));
        };
        let head = match seen {
            Some(h) => h,
            None => match audit
                .get_tree_head(self.request(GetTreeHeadRequest { tree_size: 0 }))
                .await
            {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    return Outcome::Unchecked(format!("no head from the hub: {}", s.message()));
                }
            },
        };
        match self.hub_key.check_head(&head) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(size = head.tree_size, error = %e, "a hub tree head does not verify");
                return Outcome::Unchecked(format!("head of size {}: {e}", head.tree_size));
            }
        }
        if head.origin.is_empty() {
            return Outcome::Unchecked("the head is in the format of an earlier build".into());
        }
        if !from_receipt {
            // Verified: from now on this replica's log is known by its name.
            self.hubs.learn_origin(replica, &head.origin);
        }
        let heads = match stored::latest_heads(&self.store) {
            Ok(k) => k,
            Err(e) => return Outcome::Unchecked(format!("cannot read the kept heads: {e}")),
        };
        // One key signs one log: a key that signed another log before now
        // names a new origin.
        if let Some(other) = heads
            .iter()
            .find(|k| k.key_id == head.key_id && k.origin != head.origin)
        {
            let reason = format!(
                "the hub's log origin changed from {:?} to {:?}",
                other.origin, head.origin
            );
            return self.conflict(reason, other.clone(), head).await;
        }
        let kept = heads.into_iter().find(|k| k.origin == head.origin);
        let Some(kept) = kept.filter(|k| k.tree_size > 0) else {
            return self.accept(&mut audit, head).await;
        };
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
        let proof = match audit
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
            return self.accept(&mut audit, head).await;
        }
        Outcome::Consistent
    }

    /// Keeps `head` as the latest verified of its log, then cosigns it
    /// to the replica `audit` keeping that log.
    async fn accept(
        &mut self,
        audit: &mut AuditClient<tonic::transport::Channel>,
        mut head: SignedTreeHead,
    ) -> Outcome {
        // Others' cosignatures, as the hub served them, are not ours to keep.
        head.cosignatures.clear();
        let cosignature = match (&self.key, self.lying.contains(&head.origin)) {
            // A witness that has seen a log lie vouches for nothing more of it.
            (Some(key), false) => Some(sth::cosign(key, &self.name, &head, now_s())),
            _ => None,
        };
        head.cosignatures.extend(cosignature.clone());
        if let Err(e) = stored::set_latest(&self.store, &head) {
            tracing::error!(error = %e, "cannot keep the verified hub head");
            return Outcome::Unchecked(format!("cannot store the head: {e}"));
        }
        self.counts.set_size(&head.origin, head.tree_size);
        if let Some(c) = cosignature {
            let req = AddCosignatureRequest {
                tree_size: head.tree_size,
                root_hash: head.root_hash.clone(),
                cosignature: Some(c),
            };
            match audit.add_cosignature(self.request(req)).await {
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
        let origin = conflicting.origin.clone();
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
            // The head that contradicts names the log that lied.
            if let Err(e) = stored::add_evidence(&self.store, &evidence) {
                tracing::error!(error = %e, "cannot store the evidence");
            }
        }
        self.lying.insert(origin);
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
    hubs: Hubs,
    hub_key: &HubKey,
    health: &HealthReporter,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> Result<(), crate::NodeError> {
    let key = match &config.witness_key {
        Some(path) => Some(truc_pki::load_audit_key(path).map_err(truc_server::StartError::from)?),
        None => {
            tracing::info!("no [witness] key: this node checks the hub's log but cosigns nothing");
            None
        }
    };
    let witness = Witness::open(
        config,
        store,
        key,
        hubs,
        hub_key.clone(),
        health.clone(),
        metrics,
    )
    .await
    .map_err(truc_server::StartError::from)?;
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ring::signature::KeyPair;
    use tonic::{Request, Response, Status};
    use truc_audit::{AuditLog, LogReader, Options, Transaction, sth::Signer};
    use truc_proto::v1::{
        AddCosignatureResponse, ConsistencyProof, GetInclusionProofRequest, InclusionProof,
        ListRecordsRequest, ListRecordsResponse, audit_server::Audit, audit_server::AuditServer,
    };

    use super::*;

    const ORIGIN: &str = "hub.test/truc-audit";

    fn hub_signer() -> Signer {
        let key = Ed25519KeyPair::from_seed_unchecked(&[5; 32]).expect("seed");
        Signer::new(key).with_origin(ORIGIN)
    }

    fn witness_key() -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[6; 32]).expect("seed")
    }

    /// A hub log of `n` records whose payloads start with `tag`.
    struct Log {
        _dir: tempfile::TempDir,
        log: AuditLog,
    }

    async fn log(tag: &str, n: u64) -> Log {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let log =
            AuditLog::open(store, "hub", Options::default(), Some(hub_signer())).expect("log");
        let l = Log { _dir: dir, log };
        grow(&l, tag, n).await;
        l
    }

    async fn grow(l: &Log, tag: &str, n: u64) {
        for i in 0..n {
            let id = format!("{:032x}", l.log.reader().size() + i);
            let tx = Transaction::call(
                &id,
                "000.00.00.H37",
                "000.00.00.G22",
                "s",
                tag.as_bytes(),
                1,
            );
            l.log.append(tx).await.expect("append");
        }
    }

    /// A hub that answers from whichever log it is given, and keeps the
    /// cosignatures it receives.
    #[derive(Clone, Default)]
    struct FakeHub {
        log: Arc<Mutex<Option<LogReader>>>,
        cosignatures: Arc<Mutex<Vec<AddCosignatureRequest>>>,
    }

    impl FakeHub {
        fn reader(&self) -> Result<LogReader, Status> {
            self.log
                .lock()
                .ok()
                .and_then(|l| l.clone())
                .ok_or_else(|| Status::unavailable("no log"))
        }
        fn serve(&self, l: &Log) {
            *self.log.lock().expect("lock") = Some(l.log.reader().clone());
        }
        fn cosigned(&self) -> Vec<u64> {
            self.cosignatures
                .lock()
                .expect("lock")
                .iter()
                .map(|c| c.tree_size)
                .collect()
        }
    }

    #[tonic::async_trait]
    impl Audit for FakeHub {
        async fn get_tree_head(
            &self,
            r: Request<GetTreeHeadRequest>,
        ) -> Result<Response<SignedTreeHead>, Status> {
            self.reader()?
                .tree_head(r.into_inner().tree_size)
                .map(Response::new)
                .map_err(|e| Status::not_found(e.to_string()))
        }
        async fn get_inclusion_proof(
            &self,
            _: Request<GetInclusionProofRequest>,
        ) -> Result<Response<InclusionProof>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn get_consistency_proof(
            &self,
            r: Request<GetConsistencyProofRequest>,
        ) -> Result<Response<ConsistencyProof>, Status> {
            let r = r.into_inner();
            let path = self
                .reader()?
                .consistency_proof(r.from_size, r.to_size)
                .map_err(|e| Status::out_of_range(e.to_string()))?;
            Ok(Response::new(ConsistencyProof {
                from_size: r.from_size,
                to_size: r.to_size,
                path: path
                    .iter()
                    .map(|h| bytes::Bytes::copy_from_slice(h))
                    .collect(),
            }))
        }
        async fn list_records(
            &self,
            _: Request<ListRecordsRequest>,
        ) -> Result<Response<ListRecordsResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn add_cosignature(
            &self,
            r: Request<AddCosignatureRequest>,
        ) -> Result<Response<AddCosignatureResponse>, Status> {
            self.cosignatures.lock().expect("lock").push(r.into_inner());
            Ok(Response::new(AddCosignatureResponse {}))
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        store: Store,
        hub: FakeHub,
        witness: Witness,
    }

    async fn setup() -> Setup {
        let hub = FakeHub::default();
        let served = serve_fake(&hub).await;
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let config = crate::handler_tests::config(dir.path(), &[], &[]);
        let hub_key = HubKey::new(vec![crate::PinnedKey::new(
            hub_signer().public_key(),
            None,
            None,
        )]);
        let (health, _) = tonic_health::server::health_reporter();
        let witness = Witness::open(
            &config,
            store.clone(),
            Some(witness_key()),
            Hubs::of(vec![served]),
            hub_key,
            health,
            &Metrics::new(),
        )
        .await
        .expect("witness");
        Setup {
            _dir: dir,
            store,
            hub,
            witness,
        }
    }

    fn conflict(o: &Outcome, needle: &str) -> bool {
        matches!(o, Outcome::Conflict(r) if r.contains(needle))
    }

    #[tokio::test]
    async fn an_honest_log_is_followed_and_cosigned() {
        let mut s = setup().await;
        let a = log("a", 3).await;
        s.hub.serve(&a);
        assert_eq!(s.witness.contact(None).await, Outcome::Consistent);
        grow(&a, "a", 2).await;
        assert_eq!(s.witness.contact(None).await, Outcome::Consistent);
        // An older head, as a slow receipt brings it, is checked and fine.
        let old = a.log.reader().tree_head(3).expect("head");
        assert_eq!(s.witness.contact(Some(old)).await, Outcome::Consistent);
        assert_eq!(s.hub.cosigned(), [3, 5]);
        let kept = stored::latest(&s.store).expect("read").expect("kept");
        assert_eq!(kept.tree_size, 5);
        let c = &kept.cosignatures[0];
        sth::verify_cosignature(&kept, c, witness_key().public_key().as_ref())
            .expect("cosignature");
        assert!(!s.witness.alarm.load(Ordering::Relaxed));
        assert!(stored::evidence(&s.store).expect("read").is_empty());
    }

    #[tokio::test]
    async fn a_fork_is_kept_as_evidence_and_nothing_more_is_cosigned() {
        let mut s = setup().await;
        let a = log("a", 5).await;
        s.hub.serve(&a);
        assert_eq!(s.witness.contact(None).await, Outcome::Consistent);
        // Same key, same size, other records.
        let b = log("b", 5).await;
        s.hub.serve(&b);
        let o = s.witness.contact(None).await;
        assert!(conflict(&o, "two different roots for tree size 5"), "{o:?}");
        // It goes on: larger, but not an extension of what was seen.
        grow(&b, "b", 2).await;
        let o = s.witness.contact(None).await;
        assert!(
            conflict(&o, "no valid consistency proof from size 5 to size 7"),
            "{o:?}"
        );
        // Again: the same conflicting head is not stored twice.
        let o = s.witness.contact(None).await;
        assert!(matches!(o, Outcome::Conflict(_)), "{o:?}");
        let evidence = stored::evidence(&s.store).expect("read");
        assert_eq!(evidence.len(), 2);
        let key = hub_signer().public_key();
        for e in &evidence {
            for h in [e.seen.as_ref(), e.conflicting.as_ref()] {
                sth::verify_tree_head(h.expect("head"), &key).expect("signed by the hub");
            }
        }
        assert!(s.witness.alarm.load(Ordering::Relaxed));
        assert_eq!(s.hub.cosigned(), [5], "nothing cosigned after the fork");
        assert_eq!(
            stored::latest(&s.store)
                .expect("read")
                .expect("kept")
                .root_hash,
            a.log.reader().tree_head(5).expect("head").root_hash
        );
    }

    #[tokio::test]
    async fn a_log_that_shrinks_or_changes_origin_is_caught() {
        let mut s = setup().await;
        let a = log("a", 4).await;
        s.hub.serve(&a);
        assert_eq!(s.witness.contact(None).await, Outcome::Consistent);
        let short = log("a", 2).await;
        s.hub.serve(&short);
        let o = s.witness.contact(None).await;
        assert!(conflict(&o, "smaller than the head of size 4"), "{o:?}");

        let mut s = setup().await;
        s.hub.serve(&a);
        assert_eq!(s.witness.contact(None).await, Outcome::Consistent);
        let renamed = hub_signer()
            .with_origin("other.test/log")
            .sign(6, &[0; 32], 1);
        let o = s.witness.contact(Some(renamed)).await;
        assert!(conflict(&o, "origin changed"), "{o:?}");
    }

    #[tokio::test]
    async fn what_cannot_be_checked_raises_no_alarm() {
        let mut s = setup().await;
        // No log to serve: the hub is "down".
        assert!(matches!(
            s.witness.contact(None).await,
            Outcome::Unchecked(_)
        ));
        // A head signed by another key.
        let a = log("a", 2).await;
        s.hub.serve(&a);
        let forged = Signer::generate()
            .expect("key")
            .with_origin(ORIGIN)
            .sign(2, &[0; 32], 1);
        assert!(matches!(
            s.witness.contact(Some(forged)).await,
            Outcome::Unchecked(_)
        ));
        assert!(!s.witness.alarm.load(Ordering::Relaxed));
        assert!(stored::latest(&s.store).expect("read").is_none());
    }

    /// A fake hub served on a port of its own, and the channel to it.
    async fn serve_fake(hub: &FakeHub) -> (String, tonic::transport::Channel) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tonic::transport::Server::builder()
            .add_service(AuditServer::new(hub.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect_lazy();
        (addr.to_string(), channel)
    }

    const OTHER: &str = "hub-2.test/truc-audit";

    fn other_signer() -> Signer {
        let key = Ed25519KeyPair::from_seed_unchecked(&[8; 32]).expect("seed");
        Signer::new(key).with_origin(OTHER)
    }

    #[tokio::test]
    async fn each_replica_is_witnessed_apart_and_a_lying_one_spoils_only_its_log() {
        let (first, second) = (FakeHub::default(), FakeHub::default());
        let channels = vec![serve_fake(&first).await, serve_fake(&second).await];
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let config = crate::handler_tests::config(dir.path(), &[], &[]);
        let hub_key = HubKey::new(vec![
            crate::PinnedKey::new(hub_signer().public_key(), None, None).for_origin(ORIGIN),
            crate::PinnedKey::new(other_signer().public_key(), None, None).for_origin(OTHER),
        ]);
        let hubs = Hubs::of(channels);
        let (health, _) = tonic_health::server::health_reporter();
        let mut witness = Witness::open(
            &config,
            store.clone(),
            Some(witness_key()),
            hubs.clone(),
            hub_key,
            health,
            &Metrics::new(),
        )
        .await
        .expect("witness");

        let a = log("a", 3).await;
        first.serve(&a);
        let dir2 = tempfile::tempdir().expect("dir");
        let b_log = AuditLog::open(
            Store::open(dir2.path()).expect("store"),
            "hub",
            Options::default(),
            Some(other_signer()),
        )
        .expect("log");
        let b = Log {
            _dir: dir2,
            log: b_log,
        };
        grow(&b, "b", 5).await;
        second.serve(&b);
        // Two logs of different sizes: neither is a rewrite of the other.
        assert_eq!(witness.contact(None).await, Outcome::Consistent);
        assert_eq!(first.cosigned(), [3]);
        assert_eq!(second.cosigned(), [5]);
        assert_eq!(hubs.for_origin(OTHER).map(|p| p.index), Some(1));
        let sizes: Vec<(String, u64)> = stored::latest_heads(&store)
            .expect("heads")
            .into_iter()
            .map(|h| (h.origin, h.tree_size))
            .collect();
        assert!(sizes.contains(&(ORIGIN.to_string(), 3)), "{sizes:?}");
        assert!(sizes.contains(&(OTHER.to_string(), 5)), "{sizes:?}");

        // The first replica forks its log; the second grows honestly.
        let forked = log("x", 3).await;
        first.serve(&forked);
        grow(&b, "b", 2).await;
        let o = witness.contact(None).await;
        assert!(conflict(&o, "two different roots for tree size 3"), "{o:?}");
        assert!(witness.alarm.load(Ordering::Relaxed));
        // The honest replica's log is still followed and cosigned.
        assert_eq!(second.cosigned(), [5, 7]);
        grow(&b, "b", 1).await;
        let receipt_head = b.log.reader().tree_head(8).expect("head");
        assert_eq!(
            witness.contact(Some(receipt_head)).await,
            Outcome::Consistent
        );
        assert_eq!(second.cosigned(), [5, 7, 8]);
        // Nothing more of the lying log is cosigned.
        grow(&a, "a", 2).await;
        first.serve(&a);
        let _ = witness.contact(None).await;
        assert_eq!(first.cosigned(), [3]);
    }
}
