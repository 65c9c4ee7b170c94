//! The audited-transaction pipeline: the one path every transaction takes
//! through a hub or a node, whatever its kind (a data call at the client's
//! node, the hub and the provider's node; a document relay; a status relay):
//!
//! 1. **authenticate** the caller from its certificate (never a field);
//! 2. **admit**: validate and bound every field, then authorize against the
//!    registry (or the node's config), writing into the record only what
//!    passed, so that a refused request is audited without being attributed
//!    to an agency on the word of a caller that does not host it;
//! 3. on the hub, **claim** the transaction id (ids are unique in a log);
//! 4. **forward** to the next hop within the deadline: what remains of the
//!    caller's, capped per step; a peer that never answers holds nothing
//!    beyond it;
//! 5. **record**: audit (durable before anything is answered), statistics
//!    (in the same batch) and metrics;
//! 6. answer with the **receipt**, or the error (tagged with the transaction
//!    id) mapped to its gRPC code in one place ([`TxError`]).
//!
//! A new transaction kind is one [`Step`] implementation. This crate knows no
//! registry rules and no services: those are in the steps, in `truc-hub` and
//! `truc-node`.

#![forbid(unsafe_code)]

mod audit_metrics;
mod error;
pub mod fields;

use std::{
    collections::HashSet,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub use audit_metrics::watch_audit;
use bytes::Bytes;
pub use error::{QUOTA_EXCEEDED, TxError};
use tonic::{Code, Request, Status};
use truc_audit::{AuditLog, InclusionProof, Receipt};
pub use truc_audit::{Kind, Transaction};
use truc_ops::{
    Metrics, code_name, now_ms, tag,
    trace::{Finished, Source, Trace, Tracing},
};
use truc_pki::{Identity, Role};

/// One kind of transaction, as the pipeline drives it.
pub trait Step: Send + Sync {
    /// The request as it arrives.
    type Request: Send;
    /// The request once admitted: validated, bounded, authorized.
    type Admitted: Send;
    /// The answer.
    type Response: Send;
    /// What the audit record calls it.
    const KIND: Kind;

    /// The longest the transaction may take; the caller's deadline may
    /// shorten it, never lengthen it.
    fn cap(&self) -> Duration;

    /// Whether a caller of this identity may make this transaction at all.
    fn authenticate(&self, caller: &Identity) -> Result<(), TxError>;

    /// Validates and bounds every field and authorizes the request, writing
    /// into `tx` each field once it is checked.
    fn admit(
        &self,
        caller: &Identity,
        request: Self::Request,
        tx: &mut Transaction,
    ) -> impl Future<Output = Result<Self::Admitted, TxError>> + Send;

    /// Forwards the admitted request to the next hop, within `deadline`,
    /// recording in `tx` what passed (sizes, digests, a receipt).
    fn forward(
        &self,
        admitted: Self::Admitted,
        deadline: &Deadline,
        tx: &mut Transaction,
    ) -> impl Future<Output = Result<Self::Response, TxError>> + Send;

    /// The answer with this process's receipt, where it gives one.
    fn respond(response: Self::Response, _receipt: Option<Receipt>) -> Self::Response {
        response
    }
}

/// When a transaction must be over: what remains of the caller's deadline,
/// less a margin, capped by the step's; and the trace it is part of, both
/// passed on to the next hop by [`Deadline::request`].
///
/// The margin is what lets a process record and answer a transaction that
/// ran out of time before its caller gives up on it: the gRPC server drops a
/// handler the moment the caller's own deadline passes, and a record not yet
/// handed to the audit writer would be lost with it. Each hop keeps a tenth
/// of what it was given (at most 250 ms), so deadlines shrink along the path
/// and the furthest hop gives up first.
#[derive(Clone, Debug)]
pub struct Deadline {
    at: Instant,
    trace: Trace,
}

/// The part of a caller's deadline kept to record and answer.
fn margin(incoming: Duration) -> Duration {
    (incoming / 10).min(Duration::from_millis(250))
}

impl Deadline {
    /// The deadline of a transaction that started at `started`, whose caller
    /// gave `incoming` (its `grpc-timeout`), capped at `cap`.
    pub fn new(incoming: Option<Duration>, started: Instant, cap: Duration) -> Deadline {
        let budget = incoming.map_or(cap, |d| (d - margin(d)).min(cap));
        Deadline {
            at: started + budget,
            trace: Trace::root(),
        }
    }

    /// The same deadline, in `trace`.
    pub fn with_trace(mut self, trace: Trace) -> Deadline {
        self.trace = trace;
        self
    }

    /// The trace of the transaction: what goes to the next hop.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Time left.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// `message` as a request to the next hop, carrying the time left and
    /// the trace context (`traceparent`: this hop's span as the parent).
    ///
    /// Both values are new with every call, so both are sent as HPACK
    /// never-indexed literals: indexed, each call would add two entries to
    /// the connection's header table, evict the entries that do repeat, and
    /// lengthen the list of values every later lookup of those names walks.
    pub fn request<M>(&self, message: M) -> Request<M> {
        let mut request = Request::new(message);
        request.set_timeout(self.remaining());
        if let Some(timeout) = request
            .metadata_mut()
            .get_mut(truc_ops::GRPC_TIMEOUT_HEADER)
        {
            timeout.set_sensitive(true);
        }
        self.trace.inject(request.metadata_mut());
        request
    }
}

/// The pipeline of one process: its audit log and metrics.
pub struct Pipeline {
    audit: AuditLog,
    metrics: Arc<Metrics>,
    /// Ids between admission and record, when ids must be unique in the
    /// log (the hub's): a second transaction with an id in flight or
    /// recorded is refused.
    in_flight: Option<Mutex<HashSet<String>>>,
    /// Where the transactions' spans go (nowhere by default).
    tracing: Tracing,
}

/// A transaction id held between admission and record.
struct Claim<'a> {
    ids: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.remove(&self.id);
        }
    }
}

impl Pipeline {
    /// A pipeline recording into `audit` and `metrics`.
    pub fn new(audit: AuditLog, metrics: Arc<Metrics>) -> Pipeline {
        Pipeline {
            audit,
            metrics,
            in_flight: None,
            tracing: Tracing::off(),
        }
    }

    /// Exports each transaction's span through `tracing`.
    pub fn with_tracing(mut self, tracing: Tracing) -> Pipeline {
        self.tracing = tracing;
        self
    }

    /// Refuses a transaction id already recorded or in flight (the hub,
    /// whose log indexes ids for proofs).
    pub fn with_unique_ids(mut self) -> Pipeline {
        self.in_flight = Some(Mutex::new(HashSet::new()));
        self
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn claim(&self, id: &str) -> Result<Option<Claim<'_>>, TxError> {
        let Some(ids) = &self.in_flight else {
            return Ok(None);
        };
        if id.is_empty() {
            return Ok(None);
        }
        let taken = || TxError::AlreadyExists(format!("transaction {id} was already made"));
        // Held first, then looked up: a call with the same id that ends in
        // between has its record committed before it lets the id go.
        let claim = {
            let mut held = ids
                .lock()
                .map_err(|_| TxError::Internal("transaction id set poisoned".into()))?;
            if !held.insert(id.to_string()) {
                return Err(taken());
            }
            Claim {
                ids,
                id: id.to_string(),
            }
        };
        // Nearly always answered by the log's filter of ids, without the
        // store.
        let recorded = self
            .audit
            .reader()
            .index_of(id)
            .map_err(|e| TxError::Internal(e.to_string()))?;
        if recorded.is_some() {
            return Err(taken());
        }
        Ok(Some(claim))
    }

    /// Runs one transaction of `step` through the pipeline.
    pub async fn run<S: Step>(
        &self,
        step: &S,
        request: Request<S::Request>,
    ) -> Result<S::Response, Status> {
        let started = Instant::now();
        // Without a verified certificate there is no one to attribute a
        // record to; the TLS layer makes this unreachable in practice.
        let caller = truc_pki::peer(&request)?.identity.clone();
        // An agency system's trace context serves correlation only: its
        // sampled flag is not followed, and nothing else reads it.
        let source = if caller.role == Role::Client {
            Source::Outside
        } else {
            Source::Peer
        };
        let (trace, span) = self.tracing.start(request.metadata(), source);
        let deadline = Deadline::new(
            truc_ops::incoming_timeout(request.metadata()),
            started,
            step.cap(),
        )
        .with_trace(trace);
        let mut tx = Transaction {
            kind: S::KIND,
            caller: caller.to_string(),
            started_unix_ms: now_ms(),
            ..Transaction::default()
        };
        let mut claim = None;
        let work = async {
            step.authenticate(&caller)?;
            let admitted = step.admit(&caller, request.into_inner(), &mut tx).await?;
            match self.claim(&tx.transaction_id) {
                Ok(c) => claim = c,
                Err(e) => {
                    // The record of a refused repeat must not carry the id.
                    tx.transaction_id.clear();
                    return Err(e);
                }
            }
            step.forward(admitted, &deadline, &mut tx).await
        };
        let result = tokio::time::timeout(deadline.remaining(), work)
            .await
            .unwrap_or_else(|_| {
                Err(TxError::Deadline {
                    peer: "the next hop".into(),
                })
            });
        let outcome = result
            .as_ref()
            .map_or_else(TxError::outcome, |_| code_name(Code::Ok));
        if result.is_err() {
            tx.response_bytes = 0;
            tx.response_sha256 = truc_audit::sha256(b"");
        }
        tx.outcome = outcome.to_string();
        tx.finished_unix_ms = now_ms();
        tx.latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let tx_id = tx.transaction_id.clone();
        let labels = (
            tx.client_agency.clone(),
            tx.provider_agency.clone(),
            tx.service.clone(),
        );
        // Nothing is answered before the record is durable.
        let appended = self.audit.append(tx).await;
        drop(claim);
        // The span covers the record too: a slow commit shows in it.
        Tracing::finish(
            span,
            Finished {
                kind: S::KIND.as_str(),
                transaction_id: &tx_id,
                client_agency: &labels.0,
                provider_agency: &labels.1,
                service: &labels.2,
                outcome: if appended.is_ok() {
                    outcome
                } else {
                    code_name(Code::Internal)
                },
            },
        );
        let appended = appended.map_err(|e| tag(TxError::Audit(e).into(), &tx_id))?;
        self.metrics.observe(
            S::KIND.as_str(),
            outcome,
            (&labels.0, &labels.1, &labels.2),
            started.elapsed().as_secs_f64(),
        );
        let leaf_hash = Bytes::copy_from_slice(&appended.leaf_hash);
        let inclusion = appended
            .inclusion_path
            .zip(appended.tree_head.as_ref())
            .map(|(path, head)| InclusionProof {
                leaf_index: appended.index,
                tree_size: head.tree_size,
                leaf_hash: leaf_hash.clone(),
                // One allocation for the whole path, sliced per hash.
                path: {
                    let all = Bytes::from(path.concat());
                    (0..path.len())
                        .map(|i| all.slice(i * 32..(i + 1) * 32))
                        .collect()
                },
            });
        let receipt = appended.tree_head.map(|head| Receipt {
            transaction_id: tx_id.clone(),
            record_index: appended.index,
            leaf_hash,
            recorded_unix_ms: now_ms(),
            tree_head: Some(head),
            record: appended.record,
            inclusion,
        });
        match result {
            Ok(response) => Ok(S::respond(response, receipt)),
            Err(e) => Err(tag(e.into(), &tx_id)),
        }
    }
}

/// A request carrying `caller` as its verified peer, as the TLS layer would
/// put it: for handler tests without a server.
pub fn request_from<M>(caller: Identity, message: M) -> Request<M> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(truc_pki::PeerInfo {
        identity: caller,
        remote_addr: None,
    });
    request
}

/// `messages` as a server hands them to a client-streaming handler: framed
/// the way gRPC frames them (uncompressed, length first) in one request
/// body, decoded by tonic's own prost codec. For handler tests of client
/// streams without a server.
pub fn client_stream<M>(messages: Vec<M>) -> tonic::Streaming<M>
where
    M: prost::Message + Default + Send + 'static,
{
    use tonic::codec::Codec;
    let mut body = Vec::new();
    for m in messages {
        let bytes = m.encode_to_vec();
        // A test's messages are small; a bigger one would be framed wrong
        // and fail to decode, failing the test.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        body.push(0);
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(&bytes);
    }
    let decoder = tonic_prost::ProstCodec::<M, M>::default().decoder();
    let body = tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    tonic::Streaming::new_request(decoder, body, None, None)
}

#[cfg(test)]
mod tests;
