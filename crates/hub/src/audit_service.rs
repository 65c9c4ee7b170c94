//! `truc.v1.Audit`: tree heads, proofs and records of the hub's audit log.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use tonic::{Request, Response, Status};
use truc_audit::{
    AuditError, LogReader, QueryError, Unreadable,
    index::{self, Indexes},
    merkle::Hash,
};
use truc_pki::peer;
use truc_proto::v1::{
    ConsistencyProof, GetConsistencyProofRequest, GetInclusionProofRequest, GetTreeHeadRequest,
    InclusionProof, ListRecordsRequest, ListRecordsResponse, SignedTreeHead, StoredRecord,
    audit_server::Audit, get_inclusion_proof_request::Leaf,
};
use truc_registry::Registry;

use crate::access::Visibility;

/// Most records one page may hold.
const MAX_PAGE: u32 = 1000;

/// Most records one ListRecords call reads: a filter that few records pass
/// returns a short page (maybe empty) with a token to go on, rather than
/// reading the whole log in one call.
const MAX_EXAMINED: usize = 10 * MAX_PAGE as usize;

/// The Audit service.
#[derive(Clone)]
pub struct AuditService {
    registry: Arc<Registry>,
    log: LogReader,
    /// Records read by ListRecords (what its filters cost).
    records_read: Arc<AtomicU64>,
}

impl AuditService {
    pub(crate) fn new(registry: Arc<Registry>, log: LogReader) -> AuditService {
        AuditService {
            registry,
            log,
            records_read: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// The one place audit query errors become statuses.
fn status(e: QueryError) -> Status {
    match e {
        QueryError::OutOfRange(m) => Status::out_of_range(m),
        QueryError::NotFound(m) => Status::not_found(m),
        QueryError::Audit(e) => {
            tracing::error!(error = %e, "audit log read failed");
            Status::internal("cannot read the audit log")
        }
    }
}

fn hashes(path: Vec<Hash>) -> Vec<Bytes> {
    path.into_iter()
        .map(|h| Bytes::copy_from_slice(&h))
        .collect()
}

impl AuditService {
    fn size_or_latest(&self, size: u64) -> u64 {
        if size == 0 { self.log.size() } else { size }
    }
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn get_tree_head(
        &self,
        request: Request<GetTreeHeadRequest>,
    ) -> Result<Response<SignedTreeHead>, Status> {
        Visibility::of(&peer(&request)?.identity, "the audit log")?;
        let size = request.get_ref().tree_size;
        self.log.tree_head(size).map(Response::new).map_err(status)
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<GetInclusionProofRequest>,
    ) -> Result<Response<InclusionProof>, Status> {
        let visibility = Visibility::of(&peer(&request)?.identity, "the audit log")?;
        let req = request.into_inner();
        let size = self.size_or_latest(req.tree_size);
        let index = match req.leaf {
            Some(Leaf::LeafIndex(i)) => i,
            Some(Leaf::TransactionId(tx)) => {
                // Only a party may learn where its transaction is.
                let not_found = || Status::not_found(format!("no transaction {tx} visible to you"));
                let index = self
                    .log
                    .index_of(&tx)
                    .map_err(|e| status(e.into()))?
                    .ok_or_else(not_found)?;
                let (_, record) = self
                    .log
                    .record(index)
                    .map_err(|e| status(e.into()))?
                    .ok_or_else(not_found)?;
                if !visibility.sees(
                    &self.registry,
                    &record.client_agency,
                    &record.provider_agency,
                ) {
                    return Err(not_found());
                }
                index
            }
            None => {
                return Err(Status::invalid_argument(
                    "leaf: give leaf_index or transaction_id",
                ));
            }
        };
        let (leaf, path) = self.log.inclusion_proof(index, size).map_err(status)?;
        Ok(Response::new(InclusionProof {
            leaf_index: index,
            tree_size: size,
            leaf_hash: Bytes::copy_from_slice(&leaf),
            path: hashes(path),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProof>, Status> {
        Visibility::of(&peer(&request)?.identity, "the audit log")?;
        let req = request.into_inner();
        let to = self.size_or_latest(req.to_size);
        let path = self
            .log
            .consistency_proof(req.from_size, to)
            .map_err(status)?;
        Ok(Response::new(ConsistencyProof {
            from_size: req.from_size,
            to_size: to,
            path: hashes(path),
        }))
    }

    async fn list_records(
        &self,
        request: Request<ListRecordsRequest>,
    ) -> Result<Response<ListRecordsResponse>, Status> {
        let visibility = Visibility::of(&peer(&request)?.identity, "the audit log")?;
        let req = request.into_inner();
        let page_size = match req.page_size {
            0 => 100,
            n => n.min(MAX_PAGE),
        } as usize;
        let mut next: u64 = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse()
                .map_err(|_| Status::invalid_argument("page_token: not one this service gave"))?
        };
        // A transaction id narrows the scan to one record.
        let mut end = self.log.size();
        if !req.transaction_id.is_empty() {
            match self
                .log
                .index_of(&req.transaction_id)
                .map_err(|e| status(e.into()))?
            {
                Some(i) if i >= next => {
                    next = i;
                    end = i + 1;
                }
                _ => end = next,
            }
        }
        let matches = |r: &truc_audit::AuditRecord| {
            (req.agency.is_empty()
                || r.client_agency == req.agency
                || r.provider_agency == req.agency)
                && (req.service.is_empty() || r.service == req.service)
                && (req.kind.is_empty() || r.kind == req.kind)
                && r.finished_unix_ms >= req.from_unix_ms
                && (req.to_unix_ms == 0 || r.finished_unix_ms < req.to_unix_ms)
                && (req.transaction_id.is_empty() || r.transaction_id == req.transaction_id)
                && visibility.sees(&self.registry, &r.client_agency, &r.provider_agency)
        };
        let candidates = self.candidates(&req.agency, &visibility, next, end);
        let mut records = Vec::new();
        let mut unreadable = Vec::new();
        // Where the next page starts; none when this one reached the end.
        let mut resume = None;
        for (examined, index) in candidates.enumerate() {
            let index = index.map_err(|e| status(e.into()))?;
            if records.len() == page_size || examined == MAX_EXAMINED {
                resume = Some(index);
                break;
            }
            self.records_read.fetch_add(1, Ordering::Relaxed);
            match self.log.record(index) {
                Ok(Some((bytes, record))) => {
                    if matches(&record) {
                        records.push(StoredRecord {
                            index,
                            record_bytes: Bytes::from(bytes),
                            record: Some(record),
                        });
                    }
                }
                Ok(None) => {}
                // One bad record must not hide the others.
                Err(AuditError::Corrupt { key, reason }) => {
                    unreadable.push(Unreadable { key, reason });
                }
                Err(e) => return Err(status(e.into())),
            }
        }
        truc_audit::note_unreadable("audit records", &unreadable);
        Ok(Response::new(ListRecordsResponse {
            records,
            next_page_token: resume.map(|i| i.to_string()).unwrap_or_default(),
        }))
    }
}

impl AuditService {
    /// The indexes in `next..end` of the records that may match, ascending:
    /// from the party index when the request names an agency or the caller
    /// sees only its own agencies' records, so that only those are read.
    fn candidates(&self, agency: &str, visibility: &Visibility, next: u64, end: u64) -> Indexes {
        let store = self.log.store();
        let visible = visibility.agencies(&self.registry);
        if end <= next {
            return Box::new(std::iter::empty());
        }
        let of = |a: &str| index::records_of(store, a, next, end);
        match (agency.is_empty(), visible) {
            (true, None) => Box::new((next..end).map(Ok)),
            (false, None) => of(agency),
            (true, Some(hosted)) => index::union(hosted.iter().map(|a| of(a)).collect()),
            (false, Some(hosted)) if hosted.iter().any(|a| a == agency) => of(agency),
            (false, Some(hosted)) => index::intersect(
                of(agency),
                index::union(hosted.iter().map(|a| of(a)).collect()),
            ),
        }
    }
}
