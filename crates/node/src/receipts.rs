//! The hub's receipts, checked in full. On the call path, before the node
//! records the transaction: the transaction id, the hub's record (carried in
//! the receipt) against what this node saw, the leaf hash recomputed from
//! that record, the tree head's signature by a pinned key, and the inclusion
//! proof of the leaf in the signed tree that the receipt carries. A receipt
//! without a proof (from a hub of an earlier build) has it asked of the hub's
//! Audit service by a background task that takes receipts in batches: the
//! call does not wait for it.
//!
//! The node's own audit record keeps the receipt and whether the checks on
//! the call path passed (`receipt_verified`). Every receipt that fails a
//! check, on the call path or in the background, is also written under
//! [`PREFIX`] (transaction id → which check and why) and flushed, so that
//! `truc audit verify` of the node shows it; `truc_receipts_total{result}`
//! counts every outcome. A receipt the task has taken is remembered in the
//! store until it is proven, so that one left unproven when the node stops
//! is proven at the next start.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prost::Message;
use truc_audit::{AuditRecord, Receipt, Transaction, merkle};
use truc_ops::Shutdown;
use truc_proto::v1::{
    GetInclusionProofRequest, SignedTreeHead, audit_client::AuditClient,
    get_inclusion_proof_request::Leaf,
};
use truc_store::Store;

use crate::HubKey;

/// Store key prefix of receipts that failed a check (or could not be
/// checked), followed by the transaction id.
pub(crate) const PREFIX: &[u8] = b"receipt/f/";
/// Store key prefix of receipts waiting for their inclusion proof (proven
/// at the next start if the node stops first), followed by the
/// transaction id.
const PENDING: &[u8] = b"receipt/p/";

/// Receipts waiting for their inclusion proof at most; beyond it a receipt
/// is counted as unchecked rather than holding memory without bound.
const QUEUE: usize = 16_384;
/// Receipts proven per batch.
const BATCH: usize = 256;
/// Proof requests in flight at once.
const PARALLEL: usize = 16;
/// Attempts at a proof while the hub is unreachable, one second apart at
/// first, doubling.
const ATTEMPTS: u32 = 6;

/// Why a receipt is not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptFailure {
    /// The hub answered a call without a receipt.
    #[error("the hub gave no receipt")]
    Missing,
    /// The receipt is for another transaction.
    #[error("the receipt is for transaction {0:?}")]
    WrongTransactionId(String),
    /// The hub's record does not decode, or disagrees with this node's view.
    #[error("the hub's record disagrees with this node's: {0}")]
    RecordMismatch(String),
    /// The leaf hash is not SHA-256(0x00 || record).
    #[error("the leaf hash is not the hash of the hub's record")]
    WrongLeafHash,
    /// The tree head is missing, cannot include the leaf, or is not signed
    /// by a pinned key valid at its time.
    #[error("tree head: {0}")]
    BadSignature(String),
    /// The hub's inclusion proof is refused or does not verify.
    #[error("inclusion proof: {0}")]
    InclusionFailed(String),
    /// No inclusion proof could be obtained (the hub stayed unreachable, or
    /// the queue was full).
    #[error("not checked: {0}")]
    Unchecked(String),
}

impl ReceiptFailure {
    /// The metric label and stored name of the failure.
    pub fn label(&self) -> &'static str {
        match self {
            ReceiptFailure::Missing => "missing",
            ReceiptFailure::WrongTransactionId(_) => "wrong_transaction_id",
            ReceiptFailure::RecordMismatch(_) => "record_mismatch",
            ReceiptFailure::WrongLeafHash => "wrong_leaf_hash",
            ReceiptFailure::BadSignature(_) => "bad_signature",
            ReceiptFailure::InclusionFailed(_) => "inclusion_failed",
            ReceiptFailure::Unchecked(_) => "unchecked",
        }
    }
}

/// Every result label, in the order metrics list them.
const LABELS: [&str; 8] = [
    "verified",
    "missing",
    "wrong_transaction_id",
    "record_mismatch",
    "wrong_leaf_hash",
    "bad_signature",
    "inclusion_failed",
    "unchecked",
];

/// What the node saw of a data call, which the hub's record must repeat.
pub(crate) struct View<'a> {
    /// The transaction as the node is about to record it.
    pub(crate) tx: &'a Transaction,
    /// How the hub names this node as the caller (`node/ID`).
    pub(crate) caller: &'a str,
}

/// The checks that need nothing from the hub: everything but the inclusion
/// proof. The hub's outcome must be OK: a receipt only comes with an answer.
pub(crate) fn check(
    hub_key: &HubKey,
    receipt: &Receipt,
    view: &View<'_>,
) -> Result<(), ReceiptFailure> {
    let tx = view.tx;
    if receipt.transaction_id != tx.transaction_id {
        return Err(ReceiptFailure::WrongTransactionId(
            receipt.transaction_id.clone(),
        ));
    }
    let record = AuditRecord::decode(receipt.record.as_ref())
        .map_err(|e| ReceiptFailure::RecordMismatch(format!("the record does not decode: {e}")))?;
    let differs = |field: &str, hub: &dyn std::fmt::Debug, node: &dyn std::fmt::Debug| {
        Err(ReceiptFailure::RecordMismatch(format!(
            "{field}: the hub recorded {hub:?}, this node saw {node:?}"
        )))
    };
    let strings = [
        ("transaction_id", &record.transaction_id, &tx.transaction_id),
        ("client_agency", &record.client_agency, &tx.client_agency),
        (
            "provider_agency",
            &record.provider_agency,
            &tx.provider_agency,
        ),
        ("service", &record.service, &tx.service),
    ];
    for (field, hub, node) in strings {
        if hub != node {
            return differs(field, hub, node);
        }
    }
    if record.kind != tx.kind.as_str() {
        return differs("kind", &record.kind, &tx.kind.as_str());
    }
    if record.caller != view.caller {
        return differs("caller", &record.caller, &view.caller);
    }
    if record.outcome != "OK" {
        return differs("outcome", &record.outcome, &"OK");
    }
    if record.recorded_by != "hub" {
        return differs("recorded_by", &record.recorded_by, &"hub");
    }
    let digests = [
        ("request_sha256", &record.request_sha256, &tx.request_sha256),
        (
            "response_sha256",
            &record.response_sha256,
            &tx.response_sha256,
        ),
    ];
    for (field, hub, node) in digests {
        if hub.as_ref() != node.as_slice() {
            return differs(field, &hex::encode(hub), &hex::encode(node));
        }
    }
    let sizes = [
        ("request_bytes", record.request_bytes, tx.request_bytes),
        ("response_bytes", record.response_bytes, tx.response_bytes),
    ];
    for (field, hub, node) in sizes {
        if hub != node {
            return differs(field, &hub, &node);
        }
    }
    if record.index != receipt.record_index {
        return differs("index", &record.index, &receipt.record_index);
    }
    if receipt.leaf_hash.as_ref() != merkle::leaf_hash(&receipt.record) {
        return Err(ReceiptFailure::WrongLeafHash);
    }
    let head = receipt
        .tree_head
        .as_ref()
        .ok_or_else(|| ReceiptFailure::BadSignature("the receipt has none".into()))?;
    if head.tree_size <= receipt.record_index {
        return Err(ReceiptFailure::BadSignature(format!(
            "a tree of {} leaves cannot include leaf {}",
            head.tree_size, receipt.record_index
        )));
    }
    hub_key
        .check_receipt_head(head)
        .map_err(|e| ReceiptFailure::BadSignature(e.to_string()))
}

/// Checks an inclusion proof of `leaf` at `index` in `head`'s tree.
pub(crate) fn check_inclusion(
    leaf: &[u8],
    index: u64,
    head: &SignedTreeHead,
    proof: &truc_proto::v1::InclusionProof,
) -> Result<(), ReceiptFailure> {
    let failed = |m: String| Err(ReceiptFailure::InclusionFailed(m));
    // No tree of 2^64 leaves has a longer path; a longer one is not looked at.
    if proof.path.len() > 64 {
        return failed(format!("a path of {} hashes", proof.path.len()));
    }
    if proof.leaf_index != index || proof.tree_size != head.tree_size {
        return failed(format!(
            "the proof is for leaf {} of {}, not leaf {index} of {}",
            proof.leaf_index, proof.tree_size, head.tree_size
        ));
    }
    if proof.leaf_hash.as_ref() != leaf {
        return failed("the proof is for another leaf hash".into());
    }
    let (Ok(leaf), Some(root)) = (merkle::Hash::try_from(leaf), truc_audit::sth::root_of(head))
    else {
        return failed("a hash is not 32 bytes".into());
    };
    let mut path = Vec::with_capacity(proof.path.len());
    for h in &proof.path {
        match merkle::Hash::try_from(h.as_ref()) {
            Ok(h) => path.push(h),
            Err(_) => return failed("a path hash is not 32 bytes".into()),
        }
    }
    if !merkle::verify_inclusion(&leaf, index, head.tree_size, &path, &root) {
        return failed("the path does not lead to the signed root".into());
    }
    Ok(())
}

/// A receipt waiting for its inclusion proof.
#[derive(Clone, Debug)]
struct Pending {
    transaction_id: String,
    index: u64,
    leaf: bytes::Bytes,
    head: SignedTreeHead,
}

enum Job {
    Prove(Pending),
    Failed(String, ReceiptFailure),
}

/// Checks receipts: [`Receipts::accept`] on the call path, the inclusion
/// proofs in the task [`Receipts::start`] spawns.
#[derive(Clone)]
pub(crate) struct Receipts {
    hub_key: HubKey,
    caller: String,
    jobs: tokio::sync::mpsc::Sender<Job>,
    counts: Arc<Counts>,
}

/// Receipts by result.
#[derive(Default)]
struct Counts([AtomicU64; LABELS.len()]);

impl Counts {
    fn add(&self, label: &str) {
        if let Some(i) = LABELS.iter().position(|l| *l == label) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write(&self, out: &mut String) {
        let labels: Vec<String> = LABELS
            .iter()
            .map(|l| format!("{{result=\"{l}\"}}"))
            .collect();
        let samples: Vec<(&str, f64)> = labels
            .iter()
            .zip(&self.0)
            .map(|(l, c)| (l.as_str(), c.load(Ordering::Relaxed) as f64))
            .collect();
        truc_ops::write_metric(
            out,
            "truc_receipts",
            "counter",
            "Hub receipts by result: verified (every check and the inclusion proof passed), or the check that failed; failures are kept in the node's store for truc audit verify",
            &samples,
        );
    }
}

impl Receipts {
    /// Receipts checked with `hub_key`, for node `node` (as the hub names
    /// its caller); the inclusion proofs are asked of the replica whose log
    /// signed the receipt's head, among `hubs`, and failures
    /// written to `store`. Registers the metric with `metrics`.
    pub(crate) fn start(
        hub_key: HubKey,
        node: &truc_registry::NodeId,
        hubs: crate::hubs::Hubs,
        store: Store,
        metrics: &truc_ops::Metrics,
        timeout: Duration,
        shutdown: Shutdown,
    ) -> Receipts {
        let (jobs, rx) = tokio::sync::mpsc::channel(QUEUE);
        let counts = Arc::new(Counts::default());
        let for_metrics = counts.clone();
        metrics.add_source(Box::new(move |out| for_metrics.write(out)));
        let prover = Prover {
            hubs,
            store,
            counts: counts.clone(),
            timeout,
        };
        tokio::spawn(prover.run(rx, shutdown));
        Receipts {
            hub_key,
            caller: format!("node/{node}"),
            jobs,
            counts,
        }
    }

    /// Receipts checked on the call path only, with nothing proven in the
    /// background (handler tests).
    #[cfg(test)]
    pub(crate) fn unstarted(hub_key: HubKey, node: &truc_registry::NodeId) -> Receipts {
        Receipts {
            hub_key,
            caller: format!("node/{node}"),
            jobs: tokio::sync::mpsc::channel(1).0,
            counts: Arc::default(),
        }
    }

    /// The origin of the log that signed `receipt`'s head, if the head
    /// verifies with a pinned key (cached: the call path checks it anyway).
    pub(crate) fn verified_origin<'r>(&self, receipt: Option<&'r Receipt>) -> Option<&'r str> {
        let head = receipt?.tree_head.as_ref()?;
        self.hub_key
            .head_is_valid(head)
            .then_some(head.origin.as_str())
    }

    /// Checks `receipt` for `tx` on the call path, with its inclusion proof
    /// when the receipt carries one, or else queues the proof to be asked
    /// of the hub; true if the checks made here passed.
    pub(crate) fn accept(&self, receipt: Option<&Receipt>, tx: &Transaction) -> bool {
        let result = match receipt {
            None => Err(ReceiptFailure::Missing),
            Some(r) => check(
                &self.hub_key,
                r,
                &View {
                    tx,
                    caller: &self.caller,
                },
            )
            .map(|()| r),
        };
        // A receipt that carries its inclusion proof is checked in full here.
        let result = result.and_then(|r| match (&r.inclusion, &r.tree_head) {
            (Some(proof), Some(head)) => {
                check_inclusion(&r.leaf_hash, r.record_index, head, proof).map(|()| None)
            }
            _ => Ok(Some(r)),
        });
        let job = match result {
            Ok(None) => {
                self.counts.add("verified");
                return true;
            }
            Ok(Some(r)) => Job::Prove(Pending {
                transaction_id: r.transaction_id.clone(),
                index: r.record_index,
                leaf: r.leaf_hash.clone(),
                head: r.tree_head.clone().unwrap_or_default(),
            }),
            Err(failure) => {
                tracing::error!(tx = %tx.transaction_id, %failure, "the hub's receipt failed a check");
                Job::Failed(tx.transaction_id.clone(), failure)
            }
        };
        let passed = matches!(job, Job::Prove(_));
        if let Err(e) = self.jobs.try_send(job) {
            let job = match e {
                tokio::sync::mpsc::error::TrySendError::Full(j)
                | tokio::sync::mpsc::error::TrySendError::Closed(j) => j,
            };
            // Full or stopping: counted, not written (the writer is behind).
            let label = match job {
                Job::Prove(_) => "unchecked",
                Job::Failed(_, f) => f.label(),
            };
            self.counts.add(label);
        }
        passed
    }
}

/// The background task: proves queued receipts in batches.
struct Prover {
    hubs: crate::hubs::Hubs,
    store: Store,
    counts: Arc<Counts>,
    timeout: Duration,
}

impl Prover {
    async fn run(self, mut rx: tokio::sync::mpsc::Receiver<Job>, shutdown: Shutdown) {
        // Receipts left unproven when the node last stopped come first.
        match stored_pending(&self.store) {
            Ok(stored) if !stored.is_empty() => {
                tracing::info!(
                    receipts = stored.len(),
                    "proving receipts left unproven at the last stop"
                );
                for chunk in stored.chunks(BATCH) {
                    if !self.handle(chunk.to_vec(), Vec::new(), &shutdown).await {
                        return;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot read the receipts left unproven"),
        }
        loop {
            let first = tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
                () = shutdown.wait() => {
                    self.keep_queued(&mut rx);
                    return;
                }
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let (pending, failed) = split(batch);
            self.remember(&pending);
            if !self.handle(pending, failed, &shutdown).await {
                self.keep_queued(&mut rx);
                return;
            }
        }
    }

    /// Proves `pending` and records the results with `failed`; false if
    /// shutdown came first (what was not proven stays remembered).
    async fn handle(
        &self,
        pending: Vec<Pending>,
        mut failed: Vec<(String, ReceiptFailure)>,
        shutdown: &Shutdown,
    ) -> bool {
        let (results, stopped) = self.prove_all(pending, shutdown).await;
        let done: Vec<String> = results.iter().map(|(id, _)| id.clone()).collect();
        for (_, r) in &results {
            if r.is_ok() {
                self.counts.add("verified");
            }
        }
        failed.extend(
            results
                .into_iter()
                .filter_map(|(id, r)| r.err().map(|f| (id, f))),
        );
        self.record(failed, &done);
        !stopped
    }

    /// At shutdown: remembers what is still queued, to prove at the next start.
    fn keep_queued(&self, rx: &mut tokio::sync::mpsc::Receiver<Job>) {
        let mut rest = Vec::new();
        while let Ok(job) = rx.try_recv() {
            rest.push(job);
        }
        let (pending, failed) = split(rest);
        self.remember(&pending);
        self.record(failed, &[]);
    }

    /// Writes `pending` under [`PENDING`] (not flushed: sled flushes within
    /// half a second, and a receipt lost here is only a check not made).
    fn remember(&self, pending: &[Pending]) {
        if pending.is_empty() {
            return;
        }
        let mut batch = truc_store::WriteBatch::default();
        for p in pending {
            let receipt = Receipt {
                transaction_id: p.transaction_id.clone(),
                record_index: p.index,
                leaf_hash: p.leaf.clone(),
                tree_head: Some(p.head.clone()),
                ..Receipt::default()
            };
            batch.insert(key(PENDING, &p.transaction_id), receipt.encode_to_vec());
        }
        if let Err(e) = self.store.apply(batch) {
            tracing::error!(error = %e, "cannot remember receipts waiting for their proof");
        }
    }

    /// Proves `pending`, retrying while the hub is unreachable: each
    /// receipt's result (those still unreachable after the last attempt are
    /// unchecked), and whether shutdown stopped it (then the receipts not
    /// proven yet have no result).
    async fn prove_all(
        &self,
        mut pending: Vec<Pending>,
        shutdown: &Shutdown,
    ) -> (Vec<(String, Result<(), ReceiptFailure>)>, bool) {
        let mut results = Vec::new();
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let mut retry = Vec::new();
            let mut rest = pending.into_iter().peekable();
            while rest.peek().is_some() {
                let chunk: Vec<Pending> = rest.by_ref().take(PARALLEL).collect();
                let mut set = tokio::task::JoinSet::new();
                for (i, p) in chunk.iter().enumerate() {
                    // Only the replica that signed the head can prove it;
                    // until the node knows which it is, the proof waits.
                    let Some(channel) = self.hubs.for_log(&p.head.origin) else {
                        set.spawn(async move {
                            (
                                i,
                                Err(tonic::Status::unavailable(
                                    "no known hub replica keeps this receipt's log yet",
                                )),
                            )
                        });
                        continue;
                    };
                    let mut audit = AuditClient::new(channel);
                    let mut request = tonic::Request::new(GetInclusionProofRequest {
                        leaf: Some(Leaf::LeafIndex(p.index)),
                        tree_size: p.head.tree_size,
                    });
                    request.set_timeout(self.timeout);
                    set.spawn(async move { (i, audit.get_inclusion_proof(request).await) });
                }
                let mut answers: Vec<Option<_>> = (0..chunk.len()).map(|_| None).collect();
                while let Some(done) = set.join_next().await {
                    if let Ok((i, answer)) = done {
                        answers[i] = Some(answer);
                    }
                }
                for (p, answer) in chunk.into_iter().zip(answers) {
                    let result = match answer {
                        Some(Ok(proof)) => {
                            check_inclusion(&p.leaf, p.index, &p.head, proof.get_ref())
                        }
                        Some(Err(s)) if is_transient(&s) => {
                            retry.push(p);
                            continue;
                        }
                        Some(Err(s)) => Err(ReceiptFailure::InclusionFailed(format!(
                            "the hub refused it: {:?}: {}",
                            s.code(),
                            s.message()
                        ))),
                        None => Err(ReceiptFailure::Unchecked("the proof task failed".into())),
                    };
                    results.push((p.transaction_id, result));
                }
            }
            pending = retry;
            if pending.is_empty() || attempt == ATTEMPTS {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.wait() => return (results, true),
            }
            delay *= 2;
        }
        for p in pending {
            results.push((
                p.transaction_id,
                Err(ReceiptFailure::Unchecked(
                    "the hub's Audit service stayed unreachable".into(),
                )),
            ));
        }
        (results, false)
    }

    /// Counts the failures, writes them to the store (flushed: they are
    /// evidence) and forgets the receipts in `done`.
    fn record(&self, failed: Vec<(String, ReceiptFailure)>, done: &[String]) {
        if failed.is_empty() && done.is_empty() {
            return;
        }
        let mut batch = truc_store::WriteBatch::default();
        for id in done {
            batch.remove(key(PENDING, id));
        }
        for (id, failure) in &failed {
            self.counts.add(failure.label());
            if !matches!(failure, ReceiptFailure::Unchecked(_)) {
                tracing::error!(tx = %id, %failure, "the hub's receipt failed a check");
            }
            batch.insert(key(PREFIX, id), format!("{}\t{failure}", failure.label()));
        }
        let flush = !failed.is_empty();
        if let Err(e) = self
            .store
            .apply(batch)
            .and_then(|()| if flush { self.store.flush() } else { Ok(()) })
        {
            tracing::error!(error = %e, "cannot record the results of receipt checks");
        }
    }
}

/// The receipts to prove and the failures already known, of a batch of jobs.
fn split(jobs: Vec<Job>) -> (Vec<Pending>, Vec<(String, ReceiptFailure)>) {
    let mut pending = Vec::new();
    let mut failed = Vec::new();
    for job in jobs {
        match job {
            Job::Prove(p) => pending.push(p),
            Job::Failed(id, f) => failed.push((id, f)),
        }
    }
    (pending, failed)
}

fn key(prefix: &[u8], transaction_id: &str) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(transaction_id.as_bytes());
    key
}

/// The receipts remembered as waiting for their proof.
fn stored_pending(store: &Store) -> Result<Vec<Pending>, truc_store::StoreError> {
    let mut out = Vec::new();
    for entry in store.scan_prefix(PENDING) {
        let (k, v) = entry?;
        match Receipt::decode(v.as_slice()) {
            Ok(r) => out.push(Pending {
                transaction_id: r.transaction_id,
                index: r.record_index,
                leaf: r.leaf_hash,
                head: r.tree_head.unwrap_or_default(),
            }),
            Err(e) => {
                tracing::error!(key = %String::from_utf8_lossy(&k), error = %e, "a remembered receipt does not decode; dropped");
                let _ = store.apply({
                    let mut b = truc_store::WriteBatch::default();
                    b.remove(k);
                    b
                });
            }
        }
    }
    Ok(out)
}

/// A failure to ask that may pass: the proof is asked again. That includes
/// any failure of the transport, whatever code tonic gives it (a replica
/// that drains and closes its connections can fail a call with INTERNAL
/// "h2 protocol error"): the hub said nothing, so nothing failed a check.
fn is_transient(s: &tonic::Status) -> bool {
    crate::hubs::transport_failed(s)
        || matches!(
            s.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::ResourceExhausted
                | tonic::Code::Unknown
        )
}

/// A receipt that failed a check (or could not be checked), as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptProblem {
    /// The transaction.
    pub transaction_id: String,
    /// Which check: a `truc_receipts_total` result label.
    pub result: String,
    /// Why.
    pub reason: String,
}

/// The receipts a node's store records as failed or unchecked (read by
/// `truc audit verify` of a stopped node).
pub fn receipt_problems(store: &Store) -> Result<Vec<ReceiptProblem>, truc_store::StoreError> {
    let mut out = Vec::new();
    for entry in store.scan_prefix(PREFIX) {
        let (key, value) = entry?;
        let id = String::from_utf8_lossy(&key[PREFIX.len()..]).into_owned();
        let value = String::from_utf8_lossy(&value);
        let (result, reason) = value.split_once('\t').unwrap_or(("unknown", &value));
        out.push(ReceiptProblem {
            transaction_id: id,
            result: result.to_string(),
            reason: reason.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use truc_audit::{merkle::Hash, sth::Signer};

    const NODE: &str = "node/lgsp-langson";

    /// A node's view of a call, the hub's matching record at leaf 5 of a
    /// tree of 7, the receipt the hub gives, and the tree's leaves.
    struct Case {
        signer: Signer,
        tx: Transaction,
        leaves: Vec<Hash>,
        receipt: Receipt,
    }

    fn view_of(tx: &Transaction) -> View<'_> {
        View { tx, caller: NODE }
    }

    fn hub_record(tx: &Transaction, index: u64) -> AuditRecord {
        AuditRecord {
            version: truc_audit::RECORD_VERSION,
            index,
            prev_hash: Bytes::from(vec![7; 32]),
            transaction_id: tx.transaction_id.clone(),
            kind: tx.kind.as_str().into(),
            client_agency: tx.client_agency.clone(),
            provider_agency: tx.provider_agency.clone(),
            service: tx.service.clone(),
            started_unix_ms: 1,
            finished_unix_ms: 2,
            request_bytes: tx.request_bytes,
            response_bytes: tx.response_bytes,
            request_sha256: Bytes::copy_from_slice(&tx.request_sha256),
            response_sha256: Bytes::copy_from_slice(&tx.response_sha256),
            outcome: "OK".into(),
            latency_us: 3,
            recorded_by: "hub".into(),
            caller: NODE.into(),
            ..AuditRecord::default()
        }
    }

    /// The receipt for `record` as leaf 5 of 7, signed by `signer`.
    fn receipt_for(signer: &Signer, record: &AuditRecord, leaves: &mut [Hash]) -> Receipt {
        let bytes = record.encode_to_vec();
        let leaf = merkle::leaf_hash(&bytes);
        leaves[5] = leaf;
        let root = merkle::root_from_leaf_hashes(leaves);
        Receipt {
            transaction_id: record.transaction_id.clone(),
            record_index: 5,
            leaf_hash: Bytes::copy_from_slice(&leaf),
            recorded_unix_ms: 2,
            tree_head: Some(signer.sign(7, &root, 1_000)),
            record: bytes.into(),
            inclusion: None,
        }
    }

    fn case() -> Case {
        let signer = Signer::generate().expect("key");
        let tx = Transaction::call(
            "0123456789abcdef0123456789abcdef",
            "000.00.00.H37",
            "000.00.00.G22",
            "000.00.00.G22/citizen-lookup/v1",
            b"{\"id\": 1}",
            1,
        )
        .finish("OK", b"{\"name\": \"A\"}", 2, Duration::from_millis(1));
        let mut leaves: Vec<Hash> = (0u8..7).map(|i| merkle::leaf_hash(&[i])).collect();
        let receipt = receipt_for(&signer, &hub_record(&tx, 5), &mut leaves);
        Case {
            signer,
            tx,
            leaves,
            receipt,
        }
    }

    impl Case {
        fn keys(&self) -> HubKey {
            HubKey::new(vec![crate::PinnedKey::new(
                self.signer.public_key(),
                None,
                None,
            )])
        }

        fn check(&self, receipt: &Receipt) -> Result<(), ReceiptFailure> {
            check(&self.keys(), receipt, &view_of(&self.tx))
        }

        /// The hub's record changed by `edit`, receipt rebuilt around it
        /// (leaf hash and head agree with the edited record).
        fn with_record(&self, edit: impl FnOnce(&mut AuditRecord)) -> Receipt {
            let mut record = hub_record(&self.tx, 5);
            edit(&mut record);
            let mut leaves = self.leaves.clone();
            receipt_for(&self.signer, &record, &mut leaves)
        }

        fn proof(&self) -> truc_proto::v1::InclusionProof {
            let path = merkle::inclusion_path::<()>(5, 7, &mut |a, b| {
                Ok(merkle::root_from_leaf_hashes(
                    &self.leaves[a as usize..b as usize],
                ))
            })
            .expect("path");
            truc_proto::v1::InclusionProof {
                leaf_index: 5,
                tree_size: 7,
                leaf_hash: self.receipt.leaf_hash.clone(),
                path: path.iter().map(|h| Bytes::copy_from_slice(h)).collect(),
            }
        }
    }

    #[test]
    fn a_true_receipt_passes_every_check() {
        let c = case();
        assert_eq!(c.check(&c.receipt), Ok(()));
        let head = c.receipt.tree_head.clone().expect("head");
        assert_eq!(
            check_inclusion(&c.receipt.leaf_hash, 5, &head, &c.proof()),
            Ok(())
        );
    }

    #[test]
    fn a_receipt_for_another_transaction_is_flagged() {
        let c = case();
        let mut r = c.receipt.clone();
        r.transaction_id = "ffffffffffffffffffffffffffffffff".into();
        assert!(matches!(
            c.check(&r),
            Err(ReceiptFailure::WrongTransactionId(_))
        ));
        // The record itself naming another transaction.
        let r = c.with_record(|rec| rec.transaction_id = "ffffffffffffffffffffffffffffffff".into());
        let mut r = r;
        r.transaction_id = c.tx.transaction_id.clone();
        assert!(
            matches!(c.check(&r), Err(ReceiptFailure::RecordMismatch(m)) if m.contains("transaction_id"))
        );
    }

    #[test]
    fn a_record_that_disagrees_with_the_nodes_view_is_flagged() {
        let c = case();
        type Edit = Box<dyn Fn(&mut AuditRecord)>;
        let edits: Vec<(&str, Edit)> = vec![
            (
                "request_sha256",
                Box::new(|r| r.request_sha256 = Bytes::from(vec![0; 32])),
            ),
            (
                "response_sha256",
                Box::new(|r| r.response_sha256 = Bytes::from(vec![0; 32])),
            ),
            (
                "client_agency",
                Box::new(|r| r.client_agency = "000.00.00.G01".into()),
            ),
            (
                "provider_agency",
                Box::new(|r| r.provider_agency = "000.00.00.G01".into()),
            ),
            (
                "service",
                Box::new(|r| r.service = "000.00.00.G22/other/v1".into()),
            ),
            ("kind", Box::new(|r| r.kind = "document".into())),
            ("caller", Box::new(|r| r.caller = "node/vpcp".into())),
            ("outcome", Box::new(|r| r.outcome = "NOT_FOUND".into())),
            ("response_bytes", Box::new(|r| r.response_bytes += 1)),
            ("index", Box::new(|r| r.index = 4)),
        ];
        for (field, edit) in edits {
            let r = c.with_record(|rec| edit(rec));
            match c.check(&r) {
                Err(ReceiptFailure::RecordMismatch(m)) => {
                    assert!(m.contains(field), "{field}: {m}")
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut r = c.receipt.clone();
        r.record = Bytes::from_static(b"\xff\xff not a record");
        assert!(matches!(
            c.check(&r),
            Err(ReceiptFailure::RecordMismatch(_))
        ));
    }

    #[test]
    fn a_wrong_leaf_hash_is_flagged() {
        let c = case();
        let mut r = c.receipt.clone();
        r.leaf_hash = Bytes::from(vec![1; 32]);
        assert_eq!(c.check(&r), Err(ReceiptFailure::WrongLeafHash));
    }

    #[test]
    fn a_bad_signature_is_flagged() {
        let c = case();
        // Signed by a key this node does not pin.
        let mut r = c.receipt.clone();
        let other = Signer::generate().expect("key");
        let head = r.tree_head.clone().expect("head");
        r.tree_head = Some(other.sign(
            head.tree_size,
            &truc_audit::sth::root_of(&head).expect("root"),
            1_000,
        ));
        assert!(
            matches!(c.check(&r), Err(ReceiptFailure::BadSignature(m)) if m.contains("not pinned"))
        );
        // A head changed after signing.
        let mut r = c.receipt.clone();
        if let Some(h) = r.tree_head.as_mut() {
            h.tree_size = 8;
        }
        assert!(matches!(c.check(&r), Err(ReceiptFailure::BadSignature(_))));
        // No head, or one too small to include the leaf.
        let mut r = c.receipt.clone();
        r.tree_head = None;
        assert!(matches!(c.check(&r), Err(ReceiptFailure::BadSignature(_))));
        let mut leaves = c.leaves[..5].to_vec();
        leaves.push([0; 32]);
        let small = c
            .signer
            .sign(5, &merkle::root_from_leaf_hashes(&leaves[..5]), 1_000);
        let mut r = c.receipt.clone();
        r.tree_head = Some(small);
        assert!(
            matches!(c.check(&r), Err(ReceiptFailure::BadSignature(m)) if m.contains("cannot include"))
        );
    }

    #[test]
    fn a_failing_inclusion_proof_is_flagged() {
        let c = case();
        let head = c.receipt.tree_head.clone().expect("head");
        let leaf = c.receipt.leaf_hash.clone();
        let inclusion =
            |proof: &truc_proto::v1::InclusionProof| check_inclusion(&leaf, 5, &head, proof);
        let mut p = c.proof();
        p.path[1] = Bytes::from(vec![0; 32]);
        assert!(matches!(
            inclusion(&p),
            Err(ReceiptFailure::InclusionFailed(_))
        ));
        let mut p = c.proof();
        p.path.pop();
        assert!(matches!(
            inclusion(&p),
            Err(ReceiptFailure::InclusionFailed(_))
        ));
        let mut p = c.proof();
        p.leaf_index = 4;
        assert!(matches!(
            inclusion(&p),
            Err(ReceiptFailure::InclusionFailed(_))
        ));
        let mut p = c.proof();
        p.tree_size = 8;
        assert!(matches!(
            inclusion(&p),
            Err(ReceiptFailure::InclusionFailed(_))
        ));
        let mut p = c.proof();
        p.leaf_hash = Bytes::from(vec![3; 32]);
        assert!(matches!(
            inclusion(&p),
            Err(ReceiptFailure::InclusionFailed(_))
        ));
        // A log whose leaf 5 is another record: the true path of that tree
        // does not lead to the root the receipt's head signed.
        let mut other = c.leaves.clone();
        other[5] = [9; 32];
        let path = merkle::inclusion_path::<()>(5, 7, &mut |a, b| {
            Ok(merkle::root_from_leaf_hashes(
                &other[a as usize..b as usize],
            ))
        })
        .expect("path");
        let mut p = c.proof();
        p.path = path.iter().map(|h| Bytes::copy_from_slice(h)).collect();
        p.path[0] = Bytes::from(vec![5; 32]);
        assert!(matches!(
            inclusion(&p),
            Err(ReceiptFailure::InclusionFailed(_))
        ));
    }

    #[tokio::test]
    async fn a_receipt_carrying_its_proof_is_checked_in_full_on_the_call_path() {
        let c = case();
        let node = truc_registry::NodeId::parse("lgsp-langson").expect("id");
        // No background task: a receipt queued for its proof is counted as
        // unchecked at once.
        let receipts = Receipts::unstarted(c.keys(), &node);
        let count = |label: &str| {
            let mut out = String::new();
            receipts.counts.write(&mut out);
            let line = format!("truc_receipts_total{{result=\"{label}\"}} ");
            out.lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        let mut proven = c.receipt.clone();
        proven.inclusion = Some(c.proof());
        assert!(receipts.accept(Some(&proven), &c.tx));
        assert_eq!(count("verified"), "1");
        assert_eq!(count("unchecked"), "0", "nothing was queued");
        // A hub that forges the path: refused on the call path.
        let mut forged = proven.clone();
        if let Some(p) = forged.inclusion.as_mut() {
            p.path[0] = Bytes::from(vec![0; 32]);
        }
        assert!(!receipts.accept(Some(&forged), &c.tx));
        assert_eq!(count("inclusion_failed"), "1");
        // One too long to be a path is not walked.
        let mut long = proven.clone();
        if let Some(p) = long.inclusion.as_mut() {
            p.path = vec![Bytes::from(vec![0; 32]); 65];
        }
        assert!(!receipts.accept(Some(&long), &c.tx));
        assert_eq!(count("inclusion_failed"), "2");
        // A proof for a record the other checks refuse changes nothing.
        let mut bad = proven.clone();
        bad.leaf_hash = Bytes::from(vec![1; 32]);
        assert!(!receipts.accept(Some(&bad), &c.tx));
        assert_eq!(count("wrong_leaf_hash"), "1");
        // Without a proof the receipt waits for one from the hub.
        assert!(receipts.accept(Some(&c.receipt), &c.tx));
        assert_eq!(count("unchecked"), "1");
        assert_eq!(count("verified"), "1");
    }

    #[tokio::test]
    async fn failures_are_counted_and_stored_for_audit_verify() {
        let c = case();
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let metrics = truc_ops::Metrics::new();
        // Nothing listens there: proofs cannot be fetched.
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let shutdown = Shutdown::new();
        let node = truc_registry::NodeId::parse("lgsp-langson").expect("id");
        let receipts = Receipts::start(
            c.keys(),
            &node,
            crate::hubs::Hubs::of(vec![("hub".into(), channel)]),
            store.clone(),
            &metrics,
            Duration::from_millis(200),
            shutdown.clone(),
        );
        let mut bad = c.receipt.clone();
        bad.leaf_hash = Bytes::from(vec![1; 32]);
        assert!(!receipts.accept(Some(&bad), &c.tx));
        assert!(!receipts.accept(None, &c.tx));
        // Counted and written by the background task (no event to wait
        // on): poll with a deadline.
        let counted = |out: &str| {
            out.contains("truc_receipts_total{result=\"wrong_leaf_hash\"} 1")
                && out.contains("truc_receipts_total{result=\"missing\"} 1")
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut out = String::new();
        while !counted(&out) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            out.clear();
            receipts.counts.write(&mut out);
        }
        assert!(counted(&out), "{out}");
        assert!(
            out.contains("truc_receipts_total{result=\"verified\"} 0"),
            "{out}"
        );
        // One transaction, its last failure.
        let problems = receipt_problems(&store).expect("read");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].transaction_id, c.tx.transaction_id);
        assert_eq!(problems[0].result, "missing", "{problems:?}");
        assert!(problems[0].reason.contains("no receipt"), "{problems:?}");
        shutdown.trigger();
    }

    /// An Audit service that answers every inclusion proof with `proof`.
    #[derive(Clone)]
    struct Proofs(truc_proto::v1::InclusionProof);

    #[tonic::async_trait]
    impl truc_proto::v1::audit_server::Audit for Proofs {
        async fn get_tree_head(
            &self,
            _: tonic::Request<truc_proto::v1::GetTreeHeadRequest>,
        ) -> Result<tonic::Response<SignedTreeHead>, tonic::Status> {
            Err(tonic::Status::unimplemented("no"))
        }

        async fn get_inclusion_proof(
            &self,
            _: tonic::Request<GetInclusionProofRequest>,
        ) -> Result<tonic::Response<truc_proto::v1::InclusionProof>, tonic::Status> {
            Ok(tonic::Response::new(self.0.clone()))
        }

        async fn get_consistency_proof(
            &self,
            _: tonic::Request<truc_proto::v1::GetConsistencyProofRequest>,
        ) -> Result<tonic::Response<truc_proto::v1::ConsistencyProof>, tonic::Status> {
            Err(tonic::Status::unimplemented("no"))
        }

        async fn list_records(
            &self,
            _: tonic::Request<truc_proto::v1::ListRecordsRequest>,
        ) -> Result<tonic::Response<truc_proto::v1::ListRecordsResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("no"))
        }

        async fn add_cosignature(
            &self,
            _: tonic::Request<truc_proto::v1::AddCosignatureRequest>,
        ) -> Result<tonic::Response<truc_proto::v1::AddCosignatureResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("no"))
        }
    }

    /// Polls `done` with a deadline: the prover has no event to wait on.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_transport_failure_of_any_code_is_asked_again_not_a_failed_check() {
        let addr = crate::hubs::goes_away().await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy();
        let status = AuditClient::new(channel)
            .get_inclusion_proof(GetInclusionProofRequest::default())
            .await
            .expect_err("went away");
        assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
        assert!(is_transient(&status));
        // The hub's own INTERNAL answer is a refusal.
        assert!(!is_transient(&tonic::Status::internal("no proof")));
    }

    #[tokio::test]
    async fn a_receipt_left_unproven_at_shutdown_is_proven_at_the_next_start() {
        let c = case();
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let node = truc_registry::NodeId::parse("lgsp-langson").expect("id");
        let pending = || store.scan_prefix(PENDING).count();

        // The hub's Audit service is down: the proof waits, remembered.
        let shutdown = Shutdown::new();
        let down = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let metrics = truc_ops::Metrics::new();
        let first = Receipts::start(
            c.keys(),
            &node,
            crate::hubs::Hubs::of(vec![("down".into(), down)]),
            store.clone(),
            &metrics,
            Duration::from_millis(200),
            shutdown.clone(),
        );
        assert!(first.accept(Some(&c.receipt), &c.tx));
        eventually("remembered", || pending() == 1).await;
        shutdown.trigger();

        // Started again with the Audit service up: proven, and forgotten.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(truc_proto::v1::audit_server::AuditServer::new(Proofs(
                    c.proof(),
                )))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let up = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy();
        let shutdown = Shutdown::new();
        let second = Receipts::start(
            c.keys(),
            &node,
            crate::hubs::Hubs::of(vec![("up".into(), up)]),
            store.clone(),
            &truc_ops::Metrics::new(),
            Duration::from_secs(5),
            shutdown.clone(),
        );
        let verified = || {
            let mut out = String::new();
            second.counts.write(&mut out);
            out.contains("truc_receipts_total{result=\"verified\"} 1")
        };
        eventually("proven after the restart", verified).await;
        eventually("forgotten once proven", || pending() == 0).await;
        assert_eq!(receipt_problems(&store).expect("read"), []);
        shutdown.trigger();
        server.abort();
    }
}
