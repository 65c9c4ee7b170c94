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
    AddCosignatureRequest, AddCosignatureResponse, ConsistencyProof, GetConsistencyProofRequest,
    GetInclusionProofRequest, GetTreeHeadRequest, InclusionProof, ListRecordsRequest,
    ListRecordsResponse, SignedTreeHead, StoredRecord, audit_server::Audit,
    get_inclusion_proof_request::Leaf,
};

use truc_registry::NodeId;

use crate::{access::Visibility, end_user::EndUserKey};

/// Most records one page may hold.
const MAX_PAGE: u32 = 1000;

/// Most records one ListRecords call reads: a filter that few records pass
/// returns a short page (maybe empty) with a token to go on, rather than
/// reading the whole log in one call.
const MAX_EXAMINED: usize = 10 * MAX_PAGE as usize;

/// The Audit service.
#[derive(Clone)]
pub(crate) struct AuditService {
    registry: truc_registry::Live,
    log: LogReader,
    /// Records read by ListRecords (what its filters cost).
    records_read: Arc<AtomicU64>,
    /// Most records one ListRecords call reads.
    max_examined: usize,
    /// To find records whose end user is hashed.
    end_user_key: EndUserKey,
}

impl AuditService {
    pub(crate) fn new(
        registry: impl Into<truc_registry::Live>,
        log: LogReader,
        end_user_key: EndUserKey,
    ) -> AuditService {
        AuditService {
            registry: registry.into(),
            log,
            records_read: Arc::new(AtomicU64::new(0)),
            max_examined: MAX_EXAMINED,
            end_user_key,
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

    /// Adds the stored cosignatures of registered witnesses to `head`. A
    /// head whose cosignatures cannot be read is still served, without.
    fn attach_cosignatures(&self, head: &mut SignedTreeHead) {
        let names: Vec<String> = self
            .registry
            .current()
            .nodes()
            .filter(|n| n.witness_key.is_some())
            .map(|n| n.id.to_string())
            .collect();
        match truc_audit::witness::cosignatures_of(
            self.log.store(),
            head.tree_size,
            names.iter().map(String::as_str),
        ) {
            Ok(c) => head.cosignatures = c,
            Err(e) => {
                tracing::error!(error = %e, size = head.tree_size, "cannot read cosignatures")
            }
        }
    }
}

/// How far in the future a cosignature's timestamp may be (clock skew).
const MAX_COSIGNATURE_SKEW_S: u64 = 300;

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn get_tree_head(
        &self,
        request: Request<GetTreeHeadRequest>,
    ) -> Result<Response<SignedTreeHead>, Status> {
        Visibility::of_replica_or(&peer(&request)?.identity, "the audit log")?;
        let size = request.get_ref().tree_size;
        let mut head = self.log.tree_head(size).map_err(status)?;
        self.attach_cosignatures(&mut head);
        Ok(Response::new(head))
    }

    async fn add_cosignature(
        &self,
        request: Request<AddCosignatureRequest>,
    ) -> Result<Response<AddCosignatureResponse>, Status> {
        use truc_audit::sth::{CosignatureError, verify_cosignature};
        let caller = &peer(&request)?.identity;
        if caller.role != truc_pki::Role::Node {
            return Err(Status::permission_denied(format!(
                "{caller} may not cosign the log: only nodes witness it"
            )));
        }
        let node = NodeId::parse(&caller.name)
            .ok()
            .and_then(|id| self.registry.current().node(&id).cloned())
            .ok_or_else(|| Status::permission_denied("unknown node"))?;
        let req = request.into_inner();
        let c = req
            .cosignature
            .ok_or_else(|| Status::invalid_argument("cosignature: missing"))?;
        // Identity comes from the certificate: a node cosigns in its own name.
        if c.name != node.id.as_str() {
            return Err(Status::permission_denied(format!(
                "node {} may not cosign as {:?}",
                node.id, c.name
            )));
        }
        let key = node.witness_key.ok_or_else(|| {
            Status::failed_precondition(format!(
                "the registry lists no witness_key for node {}",
                node.id
            ))
        })?;
        if c.signature.len() != 64 || c.key_id.len() != 4 {
            return Err(Status::invalid_argument(
                "cosignature: a 4-byte key id and a 64-byte Ed25519 signature",
            ));
        }
        if c.timestamp > now_s() + MAX_COSIGNATURE_SKEW_S {
            return Err(Status::invalid_argument(
                "cosignature: timestamp in the future",
            ));
        }
        if req.tree_size == 0 {
            return Err(Status::invalid_argument(
                "tree_size: give the cosigned head's size",
            ));
        }
        let head = self.log.tree_head(req.tree_size).map_err(status)?;
        if head.root_hash != req.root_hash {
            return Err(Status::invalid_argument(format!(
                "root_hash is not the root of the hub's head of size {}",
                req.tree_size
            )));
        }
        match verify_cosignature(&head, &c, &key) {
            Ok(()) => {}
            Err(e @ CosignatureError::NotACheckpoint) => {
                return Err(Status::failed_precondition(e.to_string()));
            }
            Err(e) => return Err(Status::invalid_argument(e.to_string())),
        }
        // One of a head no larger than the node's last is valid but dropped.
        let stored = truc_audit::witness::store_cosignature(self.log.store(), req.tree_size, &c)
            .map_err(|e| {
                tracing::error!(error = %e, "cannot store a cosignature");
                Status::internal("cannot store the cosignature")
            })?;
        tracing::debug!(node = %node.id, size = req.tree_size, stored, "cosignature checked");
        Ok(Response::new(AddCosignatureResponse {}))
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
                    &self.registry.current(),
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
        // The end user as hashed records hold it (under the hub's key).
        let hashed_user = if req.end_user.is_empty() {
            None
        } else {
            self.end_user_key.hash(&req.end_user)
        };
        let user_matches = |r: &truc_audit::AuditRecord| {
            req.end_user.is_empty()
                || if r.end_user_hashed {
                    hashed_user.as_deref() == Some(r.end_user.as_str())
                } else {
                    r.end_user == req.end_user
                }
        };
        let matches = |r: &truc_audit::AuditRecord| {
            (req.agency.is_empty()
                || r.client_agency == req.agency
                || r.provider_agency == req.agency)
                && (req.service.is_empty() || r.service == req.service)
                && (req.kind.is_empty() || r.kind == req.kind)
                && r.finished_unix_ms >= req.from_unix_ms
                && (req.to_unix_ms == 0 || r.finished_unix_ms < req.to_unix_ms)
                && (req.transaction_id.is_empty() || r.transaction_id == req.transaction_id)
                && (req.purpose.is_empty() || r.purpose == req.purpose)
                && (req.case.is_empty() || r.case == req.case)
                && user_matches(r)
                && visibility.sees(
                    &self.registry.current(),
                    &r.client_agency,
                    &r.provider_agency,
                )
        };
        let candidates = self
            .candidates(&req.agency, &visibility, next, end)
            .map_err(|e| status(e.into()))?;
        let mut records = Vec::new();
        let mut unreadable = Vec::new();
        // Where the next page starts; none when this one reached the end.
        let mut resume = None;
        for (examined, index) in candidates.enumerate() {
            let index = index.map_err(|e| status(e.into()))?;
            if records.len() == page_size || examined == self.max_examined {
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
    fn candidates(
        &self,
        agency: &str,
        visibility: &Visibility,
        next: u64,
        end: u64,
    ) -> Result<Indexes, AuditError> {
        let store = self.log.store();
        let visible = visibility.agencies(&self.registry.current());
        if end <= next {
            return Ok(Box::new(std::iter::empty()));
        }
        // Only a log with tree heads (the hub's) keeps the index.
        if !index::has_party_index(store)? {
            return Ok(Box::new((next..end).map(Ok)));
        }
        let of = |a: &str| index::records_of(store, a, next, end);
        Ok(match (agency.is_empty(), visible) {
            (true, None) => Box::new((next..end).map(Ok)),
            (false, None) => of(agency),
            (true, Some(hosted)) => index::union(hosted.iter().map(|a| of(a)).collect()),
            (false, Some(hosted)) if hosted.iter().any(|a| a == agency) => of(agency),
            (false, Some(hosted)) => index::intersect(
                of(agency),
                index::union(hosted.iter().map(|a| of(a)).collect()),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use truc_audit::{AuditLog, Options, Transaction, sth::Signer};
    use truc_pki::{Identity, PeerInfo, Role};

    const H37: &str = "000.00.00.H37";
    const G22: &str = "000.00.00.G22";

    struct Fixture {
        _dir: tempfile::TempDir,
        log: AuditLog,
        service: AuditService,
    }

    /// A hub log of 300 records: every 50th between H37 and G22, the
    /// others between two agencies of a third node.
    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("dir");
        let store = truc_store::Store::open(dir.path()).expect("store");
        let signer = Signer::generate().expect("key");
        let log = AuditLog::open(store, "hub", Options::default(), Some(signer)).expect("log");
        let mut tasks = Vec::new();
        for i in 0..300u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let (client, provider, service) = if i % 50 == 0 {
                    (H37, G22, "000.00.00.G22/citizen-lookup/v1")
                } else {
                    ("000.00.00.A01", "000.00.00.A02", "000.00.00.A02/x/v1")
                };
                let tx =
                    Transaction::call(&format!("{i:032x}"), client, provider, service, b"{}", i)
                        .finish(
                            "OK",
                            b"",
                            1_795_910_000_000 + i,
                            std::time::Duration::from_micros(5),
                        );
                log.append(tx).await
            }));
            // In log order, so that record i is transaction i.
            tasks
                .pop()
                .expect("task")
                .await
                .expect("join")
                .expect("append");
        }
        let service = AuditService::new(
            crate::tests::registry(),
            log.reader().clone(),
            EndUserKey::default(),
        );
        Fixture {
            _dir: dir,
            log,
            service,
        }
    }

    fn request(role: Role, name: &str, req: ListRecordsRequest) -> Request<ListRecordsRequest> {
        let mut r = Request::new(req);
        r.extensions_mut().insert(PeerInfo {
            identity: Identity {
                role,
                name: name.into(),
            },
            remote_addr: None,
        });
        r
    }

    /// Every page of a listing: the indexes, and how many records it read.
    async fn list_all(
        f: &Fixture,
        role: Role,
        name: &str,
        req: ListRecordsRequest,
    ) -> (Vec<u64>, u64) {
        let before = f.service.records_read.load(Ordering::Relaxed);
        let mut token = String::new();
        let mut seen = Vec::new();
        for _ in 0..1000 {
            let page = f
                .service
                .list_records(request(
                    role,
                    name,
                    ListRecordsRequest {
                        page_token: token.clone(),
                        ..req.clone()
                    },
                ))
                .await
                .expect("page")
                .into_inner();
            seen.extend(page.records.iter().map(|r| r.index));
            if page.next_page_token.is_empty() {
                let read = f.service.records_read.load(Ordering::Relaxed) - before;
                return (seen, read);
            }
            token = page.next_page_token;
        }
        panic!("the listing never ended");
    }

    /// Another replica's certificate (the dashboard asking for the log's
    /// origin) reads the signed head, but no record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hub_certificate_reads_the_head_but_no_record() {
        let f = fixture().await;
        let mut head = Request::new(GetTreeHeadRequest::default());
        head.extensions_mut().insert(PeerInfo {
            identity: Identity {
                role: Role::Hub,
                name: "hub".into(),
            },
            remote_addr: None,
        });
        let head = f.service.get_tree_head(head).await.expect("head");
        assert_eq!(head.into_inner().tree_size, 300);
        let refused = f
            .service
            .list_records(request(Role::Hub, "hub", ListRecordsRequest::default()))
            .await
            .expect_err("no records for a hub certificate");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        f.log.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn filtered_listings_read_only_the_records_they_return() {
        let f = fixture().await;
        let parties: Vec<u64> = (0..300).step_by(50).collect();
        // By agency, paged by two: 6 records read, not 300.
        let by_agency = ListRecordsRequest {
            agency: H37.into(),
            page_size: 2,
            ..ListRecordsRequest::default()
        };
        assert_eq!(
            list_all(&f, Role::Admin, "admin", by_agency.clone()).await,
            (parties.clone(), 6)
        );
        // A node sees its agencies' records, and reads only those.
        let mine = ListRecordsRequest {
            page_size: 4,
            ..ListRecordsRequest::default()
        };
        assert_eq!(
            list_all(&f, Role::Node, "vpcp", mine.clone()).await,
            (parties.clone(), 6)
        );
        // Its partner, through a node that hosts the other party.
        let partner = ListRecordsRequest {
            agency: G22.into(),
            ..ListRecordsRequest::default()
        };
        assert_eq!(
            list_all(&f, Role::Node, "lgsp-langson", partner).await,
            (parties.clone(), 6)
        );
        // An agency the node has no record with: nothing read at all.
        let foreign = ListRecordsRequest {
            agency: "000.00.00.A01".into(),
            ..ListRecordsRequest::default()
        };
        assert_eq!(
            list_all(&f, Role::Node, "vpcp", foreign).await,
            (Vec::new(), 0)
        );
        // The third node sees the 294 others.
        let (others, read) = list_all(&f, Role::Node, "other", mine).await;
        assert_eq!((others.len(), read), (294, 294));
        f.log.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_filter_few_records_pass_is_read_in_bounded_calls() {
        let mut f = fixture().await;
        f.service.max_examined = 40;
        let before = f.service.records_read.load(Ordering::Relaxed);
        let page = f
            .service
            .list_records(request(
                Role::Admin,
                "admin",
                ListRecordsRequest {
                    service: "000.00.00.G22/citizen-lookup/v1".into(),
                    ..ListRecordsRequest::default()
                },
            ))
            .await
            .expect("page")
            .into_inner();
        assert_eq!(f.service.records_read.load(Ordering::Relaxed) - before, 40);
        assert_eq!(
            page.records.iter().map(|r| r.index).collect::<Vec<_>>(),
            [0]
        );
        assert_eq!(page.next_page_token, "40", "go on from where it stopped");
        let (all, read) = list_all(
            &f,
            Role::Admin,
            "admin",
            ListRecordsRequest {
                service: "000.00.00.G22/citizen-lookup/v1".into(),
                ..ListRecordsRequest::default()
            },
        )
        .await;
        assert_eq!(all, (0..300).step_by(50).collect::<Vec<_>>());
        assert_eq!(read, 300);
        f.log.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_record_is_skipped_and_the_others_listed() {
        let f = fixture().await;
        truc_audit::tamper::edit_stored_records(f.log.store(), |records| {
            records[100] = vec![0xFF; 7];
        })
        .expect("corrupt");
        let before = truc_audit::unreadable_skipped();
        let (seen, _) = list_all(
            &f,
            Role::Admin,
            "admin",
            ListRecordsRequest {
                agency: H37.into(),
                ..ListRecordsRequest::default()
            },
        )
        .await;
        assert_eq!(seen, [0, 50, 150, 200, 250]);
        assert!(truc_audit::unreadable_skipped() > before, "counted");
        let (all, _) = list_all(&f, Role::Admin, "admin", ListRecordsRequest::default()).await;
        assert_eq!(all.len(), 299);
        f.log.close().await;
    }

    fn witness(seed: u8) -> ring::signature::Ed25519KeyPair {
        ring::signature::Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("seed")
    }

    /// The fixture's service, with a registry where vpcp and lgsp-langson
    /// have witness keys (seeds 1 and 2) and "other" has none.
    fn witnessed(f: &Fixture) -> AuditService {
        use ring::signature::KeyPair;
        let key = |seed| hex::encode(witness(seed).public_key().as_ref());
        let text = crate::tests::REGISTRY
            .replacen(
                "id = \"vpcp\"\n",
                &format!("id = \"vpcp\"\nwitness_key = \"{}\"\n", key(1)),
                1,
            )
            .replacen(
                "id = \"lgsp-langson\"\n",
                &format!("id = \"lgsp-langson\"\nwitness_key = \"{}\"\n", key(2)),
                1,
            );
        let registry = Arc::new(
            truc_registry::Registry::from_toml_str(&text, "registry.toml").expect("registry"),
        );
        AuditService::new(registry, f.log.reader().clone(), Default::default())
    }

    fn as_peer<T>(role: Role, name: &str, req: T) -> Request<T> {
        let mut r = Request::new(req);
        r.extensions_mut().insert(PeerInfo {
            identity: Identity {
                role,
                name: name.into(),
            },
            remote_addr: None,
        });
        r
    }

    fn add(head: &SignedTreeHead, c: truc_proto::v1::Cosignature) -> AddCosignatureRequest {
        AddCosignatureRequest {
            tree_size: head.tree_size,
            root_hash: head.root_hash.clone(),
            cosignature: Some(c),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cosignatures_are_checked_stored_and_served() {
        use truc_audit::sth::cosign;
        let f = fixture().await;
        let service = witnessed(&f);
        let head = f.log.reader().latest_head().expect("head");
        let now = now_s();
        let good = cosign(&witness(1), "vpcp", &head, now);
        service
            .add_cosignature(as_peer(Role::Node, "vpcp", add(&head, good.clone())))
            .await
            .expect("accepted");
        let served = service
            .get_tree_head(as_peer(
                Role::Admin,
                "admin",
                GetTreeHeadRequest { tree_size: 0 },
            ))
            .await
            .expect("head")
            .into_inner();
        assert_eq!(served.cosignatures, vec![good.clone()]);

        let code = |r: Result<Response<AddCosignatureResponse>, Status>| {
            r.map(|_| ()).map_err(|s| s.code())
        };
        // Another node's name, even with that node's valid signature.
        assert_eq!(
            code(
                service
                    .add_cosignature(as_peer(
                        Role::Node,
                        "lgsp-langson",
                        add(&head, good.clone())
                    ))
                    .await
            ),
            Err(tonic::Code::PermissionDenied)
        );
        // Its own name, signed with another node's key.
        let forged = cosign(&witness(1), "lgsp-langson", &head, now);
        assert_eq!(
            code(
                service
                    .add_cosignature(as_peer(Role::Node, "lgsp-langson", add(&head, forged)))
                    .await
            ),
            Err(tonic::Code::InvalidArgument)
        );
        // A bad signature.
        let mut bad = cosign(&witness(2), "lgsp-langson", &head, now);
        bad.timestamp -= 1;
        assert_eq!(
            code(
                service
                    .add_cosignature(as_peer(Role::Node, "lgsp-langson", add(&head, bad)))
                    .await
            ),
            Err(tonic::Code::InvalidArgument)
        );
        // A root the hub never signed at that size.
        let mut wrong_root = add(&head, cosign(&witness(2), "lgsp-langson", &head, now));
        wrong_root.root_hash = Bytes::from(vec![0; 32]);
        assert_eq!(
            code(
                service
                    .add_cosignature(as_peer(Role::Node, "lgsp-langson", wrong_root))
                    .await
            ),
            Err(tonic::Code::InvalidArgument)
        );
        // A node without a registered key, the admin, a client.
        let other = cosign(&witness(3), "other", &head, now);
        assert_eq!(
            code(
                service
                    .add_cosignature(as_peer(Role::Node, "other", add(&head, other.clone())))
                    .await
            ),
            Err(tonic::Code::FailedPrecondition)
        );
        for role in [Role::Admin, Role::Client] {
            assert_eq!(
                code(
                    service
                        .add_cosignature(as_peer(role, "other", add(&head, other.clone())))
                        .await
                ),
                Err(tonic::Code::PermissionDenied)
            );
        }
        // Too far in the future.
        let future = cosign(&witness(2), "lgsp-langson", &head, now + 3600);
        assert_eq!(
            code(
                service
                    .add_cosignature(as_peer(Role::Node, "lgsp-langson", add(&head, future)))
                    .await
            ),
            Err(tonic::Code::InvalidArgument)
        );
        // Nothing of the refused ones was kept.
        let served = service
            .get_tree_head(as_peer(
                Role::Node,
                "vpcp",
                GetTreeHeadRequest { tree_size: 0 },
            ))
            .await
            .expect("head")
            .into_inner();
        assert_eq!(served.cosignatures, vec![good]);
        f.log.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_cosigning_every_head_keeps_a_bounded_number() {
        use truc_audit::sth::cosign;
        let f = fixture().await;
        let service = witnessed(&f);
        let heads = f.log.reader().tree_heads().expect("heads");
        assert!(
            heads.len() > truc_audit::witness::KEEP_PER_WITNESS,
            "{}",
            heads.len()
        );
        for head in &heads {
            let c = cosign(&witness(1), "vpcp", head, now_s());
            service
                .add_cosignature(as_peer(Role::Node, "vpcp", add(head, c)))
                .await
                .expect("accepted");
        }
        assert_eq!(
            truc_audit::witness::cosignature_count(f.log.store(), "vpcp"),
            truc_audit::witness::KEEP_PER_WITNESS
        );
        f.log.close().await;
    }
}
