#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! What a node checks of the hub's word: the registry it serves is signed by
//! the pinned key and picked up without a restart, and receipts are checked
//! in full, so a hub that lies in a receipt or an inclusion proof is caught.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use tonic::{Request, Response, Status, Streaming, transport::Channel};
use truc_pki::Role;
use truc_proto::v1::{
    ConsistencyProof, DataRequest, DataResponse, GetConsistencyProofRequest,
    GetInclusionProofRequest, GetRegistryRequest, GetTreeHeadRequest, InclusionProof,
    ListRecordsRequest, ListRecordsResponse, RegistrySnapshot, RelayRequest, RelayResponse,
    SignedTreeHead, StatusAck, StatusUpdate,
    audit_client::AuditClient,
    audit_server::{Audit, AuditServer},
    hub_client::HubClient,
    hub_server::{Hub, HubServer},
};
use truc_tests::*;

/// The value of the metric line starting with `sample` in `text`, if any.
fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

/// `truc_registry_fetches_total{result="RESULT"}` in the metrics `text`.
fn fetches(text: &str, result: &str) -> Option<f64> {
    metric(
        text,
        &format!("truc_registry_fetches_total{{result=\"{result}\"}}"),
    )
}

/// Polls node `id`'s metrics until `done` holds (20 s at most): what the
/// node's background tasks do has no event a test can wait on.
async fn wait_for_metrics(c: &Cluster, id: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ops = c.deployment.node(id).expect("node").ops_addr();
        let (_, text) = http_get(ops, "/metrics").await;
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never got there:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn version_label(snapshot: &RegistrySnapshot) -> String {
    let head: String = snapshot.version[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("truc_registry_version_info{{version=\"{head}\"}}")
}

/// The registry as the hub serves it, read with the admin's certificate:
/// the nodes' own fetches (one whole snapshot a second each) are not
/// disturbed.
async fn registry(c: &Cluster, known: &[u8]) -> RegistrySnapshot {
    HubClient::new(c.hub_channel(Role::Admin, "admin"))
        .get_registry(GetRegistryRequest {
            known_version: known.to_vec().into(),
        })
        .await
        .expect("registry")
        .into_inner()
}

/// Restarts the province node asking the hub for the registry every second,
/// and waits until it has `first` in force.
async fn asking_every_second(c: &mut Cluster, first: &RegistrySnapshot) {
    c.restart_node_with(PROVINCE_NODE, |f| f.hub.registry_refresh_secs = 1)
        .await;
    wait_for_metrics(c, PROVINCE_NODE, |m| {
        metric(m, &version_label(first)) == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_is_signed_and_a_changed_one_reaches_the_node_without_restarting_it() {
    let mut c = start().await;
    let key = truc_audit::sth::read_public_key(&c.deployment.files.pki.audit_public_key())
        .expect("pinned key");
    let first = registry(&c, &[]).await;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key)
        .verify(
            &truc_registry::signed::signed_bytes(&first),
            &first.signature,
        )
        .expect("signed with the hub's audit key");
    assert_eq!(
        first.version.as_ref(),
        truc_registry::signed::version(&first)
    );
    let same = registry(&c, &first.version).await;
    assert!(same.unchanged && same.agencies.is_empty() && same.signature.is_empty());

    asking_every_second(&mut c, &first).await;

    // A new registry at the hub (restarted here; a reload does the same).
    let path = c.deployment.files.registry.clone();
    c.deployment
        .restart_hub(async || {
            let text = std::fs::read_to_string(&path).expect("registry");
            std::fs::write(&path, text.replacen("name = \"", "name = \"Renamed ", 1))
                .expect("write");
        })
        .await
        .expect("hub restart");
    let second = registry(&c, &first.version).await;
    assert!(!second.unchanged);
    assert_ne!(second.version, first.version);
    let m = wait_for_metrics(&c, PROVINCE_NODE, |m| {
        metric(m, &version_label(&second)) == Some(1.0)
    })
    .await;
    assert_eq!(fetches(&m, "updated"), Some(2.0), "{m}");
    assert_eq!(fetches(&m, "refused"), Some(0.0), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_larger_than_the_payload_limit_still_reaches_the_node() {
    let mut c = start().await;
    let first = registry(&c, &[]).await;
    asking_every_second(&mut c, &first).await;

    // 25 000 more agencies with long names: a snapshot of about 6 MB, over
    // both the 4 MiB payload limit and tonic's default message limit.
    let path = c.deployment.files.registry.clone();
    let mut text = std::fs::read_to_string(&path).expect("registry");
    let name = "Ủy ban nhân dân ".repeat(12);
    for i in 0..25_000 {
        text.push_str(&format!(
            "\n[[agency]]\ncode = \"{:03}.{:02}.{:02}.K00\"\nname = \"{name}{i}\"\n",
            i / 10_000,
            i / 100 % 100,
            i % 100
        ));
    }
    std::fs::write(&path, text).expect("write");
    let report = c.deployment.hub().reloader().reload();
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    let large = HubClient::new(c.hub_channel(Role::Admin, "admin"))
        .max_decoding_message_size(truc_server::MAX_REGISTRY_SNAPSHOT_BYTES)
        .get_registry(GetRegistryRequest::default())
        .await
        .expect("a large registry is served")
        .into_inner();
    assert_eq!(large.agencies.len(), 3 + 25_000);
    let bytes = prost::Message::encoded_len(&large);
    assert!(bytes > 4 << 20, "{bytes} bytes");
    let m = wait_for_metrics(&c, PROVINCE_NODE, |m| {
        metric(m, &version_label(&large)) == Some(1.0)
    })
    .await;
    assert_eq!(fetches(&m, "updated"), Some(2.0), "{m}");
}

/// How the lying hub lies.
const HONEST: u8 = 0;
const WRONG_LEAF_HASH: u8 = 1;
const WRONG_PROOF: u8 = 2;
const UNSIGNED_REGISTRY: u8 = 3;
/// As a hub of an earlier build: receipts without their proof, then a
/// wrong proof from `GetInclusionProof`.
const WRONG_PROOF_LATER: u8 = 4;

/// A hub in the real hub's place (its certificate), which passes everything
/// on to the real hub as the province node and lies as `mode` says.
#[derive(Clone)]
struct LyingHub {
    hub: HubClient<Channel>,
    audit: AuditClient<Channel>,
    mode: Arc<AtomicU8>,
}

impl LyingHub {
    fn mode(&self) -> u8 {
        self.mode.load(Ordering::SeqCst)
    }
}

#[tonic::async_trait]
impl Hub for LyingHub {
    async fn route(&self, request: Request<DataRequest>) -> Result<Response<DataResponse>, Status> {
        let mut answer = self.hub.clone().route(request.into_inner()).await?;
        if let Some(r) = answer.get_mut().receipt.as_mut() {
            match self.mode() {
                WRONG_LEAF_HASH => r.leaf_hash = vec![0; 32].into(),
                WRONG_PROOF => {
                    if let Some(h) = r.inclusion.as_mut().and_then(|p| p.path.first_mut()) {
                        *h = vec![0; 32].into();
                    }
                }
                WRONG_PROOF_LATER => r.inclusion = None,
                _ => {}
            }
        }
        Ok(answer)
    }

    async fn relay(
        &self,
        _: Request<Streaming<RelayRequest>>,
    ) -> Result<Response<RelayResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn relay_status(&self, _: Request<StatusUpdate>) -> Result<Response<StatusAck>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn get_registry(
        &self,
        request: Request<GetRegistryRequest>,
    ) -> Result<Response<RegistrySnapshot>, Status> {
        let mut answer = self.hub.clone().get_registry(request.into_inner()).await?;
        if self.mode() == UNSIGNED_REGISTRY {
            // Another registry, with the signature stripped.
            let r = answer.get_mut();
            r.unchanged = false;
            r.signature = Default::default();
            r.grants.clear();
        }
        Ok(answer)
    }
}

#[tonic::async_trait]
impl Audit for LyingHub {
    async fn get_tree_head(
        &self,
        request: Request<GetTreeHeadRequest>,
    ) -> Result<Response<SignedTreeHead>, Status> {
        self.audit.clone().get_tree_head(request.into_inner()).await
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<GetInclusionProofRequest>,
    ) -> Result<Response<InclusionProof>, Status> {
        let mut answer = self
            .audit
            .clone()
            .get_inclusion_proof(request.into_inner())
            .await?;
        if self.mode() == WRONG_PROOF_LATER {
            if let Some(h) = answer.get_mut().path.first_mut() {
                *h = vec![0; 32].into();
            }
        }
        Ok(answer)
    }

    async fn get_consistency_proof(
        &self,
        request: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProof>, Status> {
        self.audit
            .clone()
            .get_consistency_proof(request.into_inner())
            .await
    }

    async fn list_records(
        &self,
        request: Request<ListRecordsRequest>,
    ) -> Result<Response<ListRecordsResponse>, Status> {
        self.audit.clone().list_records(request.into_inner()).await
    }

    async fn add_cosignature(
        &self,
        request: Request<truc_proto::v1::AddCosignatureRequest>,
    ) -> Result<Response<truc_proto::v1::AddCosignatureResponse>, Status> {
        self.audit
            .clone()
            .add_cosignature(request.into_inner())
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_lies_in_a_receipt_a_proof_or_the_registry_is_caught_by_its_node() {
    let mut c = start().await;
    let to_hub = c.hub_channel(Role::Node, PROVINCE_NODE);
    let liar = LyingHub {
        hub: HubClient::new(to_hub.clone()),
        audit: AuditClient::new(to_hub),
        mode: Arc::new(AtomicU8::new(HONEST)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let liar_addr = listener.local_addr().expect("addr");
    let tls = truc_pki::server_config(&c.tls(Role::Hub, "hub")).expect("tls");
    let serving = liar.clone();
    let server = tokio::spawn(async move {
        let incoming = truc_pki::tls_incoming(listener, tls, truc_pki::AcceptLimits::default());
        let _ = tonic::transport::Server::builder()
            .add_service(HubServer::new(serving.clone()))
            .add_service(AuditServer::new(serving))
            .serve_with_incoming(incoming)
            .await;
    });
    c.restart_node_with(PROVINCE_NODE, |f| {
        f.hub.address = liar_addr.to_string();
        f.hub.registry_refresh_secs = 1;
    })
    .await;
    wait_for_metrics(&c, PROVINCE_NODE, |m| fetches(m, "updated") == Some(1.0)).await;

    let mut agency = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    let mut call_as = async |mode: u8| {
        liar.mode.store(mode, Ordering::SeqCst);
        let answer = agency
            .call(call(H37, CITIZEN_LOOKUP, r#"{"id":"001089012345"}"#))
            .await
            .expect("the call itself succeeds");
        let tx = answer
            .get_ref()
            .receipt
            .as_ref()
            .expect("receipt")
            .transaction_id
            .clone();
        // A proof without the receipt is fetched after the answer: keep
        // lying until the node has counted it.
        let (label, count) = match mode {
            HONEST => ("verified", 1.0),
            WRONG_LEAF_HASH => ("wrong_leaf_hash", 1.0),
            WRONG_PROOF => ("inclusion_failed", 1.0),
            _ => ("inclusion_failed", 2.0),
        };
        wait_for_metrics(&c, PROVINCE_NODE, |m| {
            metric(m, &format!("truc_receipts_total{{result=\"{label}\"}}")) == Some(count)
        })
        .await;
        (tx, answer.into_inner().receipt)
    };
    let (honest, receipt) = call_as(HONEST).await;
    // The agency system gets the receipt with its proof, checkable with the
    // hub's key alone.
    let receipt = receipt.expect("receipt");
    let proof = receipt
        .inclusion
        .as_ref()
        .expect("the receipt carries its proof");
    let head = receipt.tree_head.as_ref().expect("head");
    let path: Vec<truc_audit::merkle::Hash> = proof
        .path
        .iter()
        .map(|h| h.as_ref().try_into().expect("32 bytes"))
        .collect();
    assert!(truc_audit::merkle::verify_inclusion(
        &receipt.leaf_hash.as_ref().try_into().expect("32 bytes"),
        receipt.record_index,
        head.tree_size,
        &path,
        &truc_audit::sth::root_of(head).expect("root"),
    ));
    let (bad_leaf, _) = call_as(WRONG_LEAF_HASH).await;
    let (bad_proof, _) = call_as(WRONG_PROOF).await;
    let (bad_later_proof, _) = call_as(WRONG_PROOF_LATER).await;

    // A registry without a signature is refused; the node keeps its own.
    liar.mode.store(UNSIGNED_REGISTRY, Ordering::SeqCst);
    let m = wait_for_metrics(&c, PROVINCE_NODE, |m| {
        fetches(m, "refused").is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(fetches(&m, "updated"), Some(1.0), "{m}");
    liar.mode.store(HONEST, Ordering::SeqCst);

    // What `truc audit verify` of the node reads: the two lies, by
    // transaction, and not the honest receipt.
    c.deployment.stop_node(PROVINCE_NODE).await.expect("stop");
    server.abort();
    let store = truc_store::Store::open(&c.dir.path().join("nodes").join(PROVINCE_NODE))
        .expect("node store");
    let mut problems: Vec<(String, String)> = truc_node::receipt_problems(&store)
        .expect("read")
        .into_iter()
        .map(|p| (p.transaction_id, p.result))
        .collect();
    problems.sort();
    let mut expected = vec![
        (bad_leaf.clone(), "wrong_leaf_hash".to_string()),
        (bad_proof, "inclusion_failed".to_string()),
        (bad_later_proof, "inclusion_failed".to_string()),
    ];
    expected.sort();
    assert_eq!(problems, expected, "honest: {honest}");
    // The node's own record of the lying receipt says it did not verify.
    let record = truc_audit::read_records(&store, 0)
        .map(|r| r.expect("record").0)
        .find(|r| r.transaction_id == bad_leaf)
        .expect("the node recorded the call");
    assert!(record.receipt.is_some() && !record.receipt_verified);
}
