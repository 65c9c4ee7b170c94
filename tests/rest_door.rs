#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! The REST door (`POST /v1/call/{service}` on a node's HTTP listener) and
//! REST backends, through a running cluster: a REST call is the same
//! transaction as a gRPC call (audit records on the hub and the node,
//! statistics), identity comes from the client certificate only, errors are
//! JSON with matching HTTP statuses.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prost::Message;
use truc_pki::Role;
use truc_proto::v1::{AuditRecord, ListRecordsRequest, Receipt, audit_client::AuditClient};
use truc_tests::*;

const ID: &str = r#"{"id":"001089012345"}"#;

/// What a REST call answered: status, headers, body.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The JSON error's `code`.
    fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body));
        assert!(v["message"].is_string(), "{v}");
        v["code"].as_str().unwrap_or("").to_string()
    }
}

/// POSTs `body` to `/v1/call/{service}` on node `node`'s HTTP listener as
/// agency system `client` (no client certificate if `None`), acting for
/// `act_for`.
async fn rest_call(
    c: &Cluster,
    node: &str,
    client: Option<&str>,
    act_for: &str,
    service: &str,
    body: Vec<u8>,
) -> Result<Answer, String> {
    rest_call_with(c, node, client, act_for, service, body, &[]).await
}

/// [`rest_call`] with more request headers.
async fn rest_call_with(
    c: &Cluster,
    node: &str,
    client: Option<&str>,
    act_for: &str,
    service: &str,
    body: Vec<u8>,
    more: &[(&str, &str)],
) -> Result<Answer, String> {
    let addr = c.deployment.http_addr(node).expect("the node has [http]");
    let mut tls = match client {
        Some(name) => (*truc_pki::client_config_for(&c.tls(Role::Client, name), Role::Node)
            .expect("client config"))
        .clone(),
        None => {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(c.deployment.files.pki.ca_cert()).expect("ca")
            {
                roots.add(cert.expect("cert")).expect("root");
            }
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
        }
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name =
            rustls::pki_types::ServerName::try_from(node.to_string()).map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let mut request = http::Request::post(format!("/v1/call/{service}"))
            .header("host", node)
            .header("content-type", "application/json")
            .header("x-truc-client", act_for);
        for (name, value) in more {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .unwrap_or_else(|_| panic!("the REST call hung"))
}

/// The node's `truc_transactions_total` lines of data calls: labels → count.
async fn call_counts(c: &Cluster, node: &str) -> BTreeMap<String, u64> {
    let ops = c.deployment.node(node).expect("node").ops_addr();
    let (code, text) = http_get(ops, "/metrics").await;
    assert_eq!(code, 200);
    text.lines()
        .filter(|l| l.starts_with("truc_transactions_total{kind=\"call\""))
        .filter_map(|l| {
            let (labels, n) = l.rsplit_once(' ')?;
            Some((labels.to_string(), n.parse().ok()?))
        })
        .collect()
}

fn increments(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_call_is_the_same_transaction_as_a_grpc_call() {
    let c = start().await;
    let mut province = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    // Until the node knows the registry, its metrics label providers
    // "other": call until they carry the real one.
    let known = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        province
            .call(call(H37, CITIZEN_LOOKUP, ID))
            .await
            .expect("warm-up call");
        let counts = call_counts(&c, PROVINCE_NODE).await;
        if counts
            .keys()
            .any(|k| k.contains("provider=\"000.00.00.G22\""))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < known,
            "registry never fetched"
        );
    }

    let m0 = call_counts(&c, PROVINCE_NODE).await;
    let grpc = province
        .call(call(H37, CITIZEN_LOOKUP, ID))
        .await
        .expect("gRPC call")
        .into_inner();
    let m1 = call_counts(&c, PROVINCE_NODE).await;
    let rest = rest_call(
        &c,
        PROVINCE_NODE,
        Some(PROVINCE_CLIENT),
        H37,
        CITIZEN_LOOKUP,
        ID.into(),
    )
    .await
    .expect("REST call");
    let m2 = call_counts(&c, PROVINCE_NODE).await;

    // The same answer, with the transaction id and the hub's receipt.
    assert_eq!(rest.status, 200, "{:?}", rest.body);
    assert_eq!(rest.header("content-type"), grpc.content_type);
    assert_eq!(rest.body, grpc.payload);
    let tx = rest.header("x-truc-transaction-id").to_string();
    assert_eq!(tx.len(), 32, "{tx:?}");
    let receipt = Receipt::decode(
        base64::engine::general_purpose::STANDARD
            .decode(rest.header("x-truc-receipt"))
            .expect("base64")
            .as_slice(),
    )
    .expect("receipt");
    assert_eq!(receipt.transaction_id, tx);
    assert_eq!(receipt.leaf_hash.len(), 32);
    let grpc_receipt = grpc.receipt.expect("gRPC receipt");
    assert_eq!(receipt.record_index, grpc_receipt.record_index + 1);

    // The node counted both alike.
    let (by_grpc, by_rest) = (increments(&m0, &m1), increments(&m1, &m2));
    assert_eq!(by_grpc.len(), 1, "{by_grpc:?}");
    assert_eq!(by_grpc, by_rest);

    // The hub's records are the same but for ids and times.
    let (g, r) = (
        c.hub_record(&grpc_receipt.transaction_id).await,
        c.hub_record(&tx).await,
    );
    assert_eq!(r.outcome, "OK");
    assert_eq!(comparable(g), comparable(r));

    // So are the node's, once the deployment has stopped and closed them.
    let dir = c.dir.path().join("nodes").join(PROVINCE_NODE);
    c.deployment.stop().await.expect("stop");
    let store = truc_store::Store::open(&dir).expect("node store");
    let records: BTreeMap<String, AuditRecord> = truc_audit::read_records(&store, 0)
        .map(|r| r.expect("record").0)
        .map(|r| (r.transaction_id.clone(), r))
        .collect();
    let g = records[&grpc_receipt.transaction_id].clone();
    let r = records[&tx].clone();
    assert_eq!(r.caller, format!("client/{PROVINCE_CLIENT}"));
    assert!(r.receipt_verified && r.receipt.is_some());
    assert_eq!(comparable(g), comparable(r));
}

#[tokio::test]
async fn a_rest_call_reaches_a_rest_backend_with_the_call_headers() {
    let c = start().await;
    // The province's household registry is the demo's REST backend.
    let answer = rest_call(
        &c,
        MINISTRY_NODE,
        Some(MINISTRY_CLIENT),
        G22,
        HOUSEHOLD_REGISTRY,
        ID.into(),
    )
    .await
    .expect("call");
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.header("content-type"), "application/json");
    let body: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
    assert_eq!(body["asked_by"], G22);
    assert_eq!(
        body["transaction_id"],
        answer.header("x-truc-transaction-id")
    );
    // The backend's HTTP 404 comes back as NOT_FOUND, and as 404 again.
    let answer = rest_call(
        &c,
        MINISTRY_NODE,
        Some(MINISTRY_CLIENT),
        G22,
        HOUSEHOLD_REGISTRY,
        br#"{"id":"000089012345"}"#.to_vec(),
    )
    .await
    .expect("call");
    assert_eq!((answer.status, answer.code().as_str()), (404, "NOT_FOUND"));
    assert_eq!(answer.header("x-truc-transaction-id").len(), 32);
    c.deployment.stop().await.expect("stop");
}

#[tokio::test]
async fn acting_for_an_agency_the_certificate_may_not_is_403_permission_denied() {
    let c = start().await;
    // The header names G22; the province's certificate maps to H37 only.
    let answer = rest_call(
        &c,
        PROVINCE_NODE,
        Some(PROVINCE_CLIENT),
        G22,
        HOUSEHOLD_REGISTRY,
        ID.into(),
    )
    .await
    .expect("answered");
    assert_eq!(answer.status, 403);
    assert_eq!(answer.code(), "PERMISSION_DENIED");
    assert_eq!(answer.header("content-type"), "application/json");
    // Refused before it got a transaction id: no empty header either.
    assert!(answer.headers.get("x-truc-transaction-id").is_none());
    // The ministry's certificate on the province's node: not one of its clients.
    let answer = rest_call(
        &c,
        PROVINCE_NODE,
        Some(MINISTRY_CLIENT),
        G22,
        HOUSEHOLD_REGISTRY,
        ID.into(),
    )
    .await
    .expect("answered");
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (403, "PERMISSION_DENIED")
    );
    c.deployment.stop().await.expect("stop");
}

#[tokio::test]
async fn without_a_client_certificate_the_tls_handshake_is_refused() {
    let c = start().await;
    let refused = rest_call(&c, PROVINCE_NODE, None, H37, CITIZEN_LOOKUP, ID.into()).await;
    let Err(e) = refused else {
        panic!("answered without a client certificate");
    };
    assert!(!e.starts_with("connect"), "{e}");
    c.deployment.stop().await.expect("stop");
}

#[tokio::test]
async fn an_unknown_service_is_404_not_found_and_a_malformed_one_400() {
    let c = start().await;
    let answer = rest_call(
        &c,
        PROVINCE_NODE,
        Some(PROVINCE_CLIENT),
        H37,
        "000.00.00.G22/no-such-service/v1",
        ID.into(),
    )
    .await
    .expect("answered");
    assert_eq!((answer.status, answer.code().as_str()), (404, "NOT_FOUND"));
    let answer = rest_call(
        &c,
        PROVINCE_NODE,
        Some(PROVINCE_CLIENT),
        H37,
        "nonsense",
        ID.into(),
    )
    .await
    .expect("answered");
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (400, "INVALID_ARGUMENT")
    );
    c.deployment.stop().await.expect("stop");
}

#[tokio::test]
async fn a_body_over_the_payload_limit_is_413_resource_exhausted() {
    let c = start_with(truc_demo::BackendKind::CitizenLookup, 1024).await;
    let answer = rest_call(
        &c,
        PROVINCE_NODE,
        Some(PROVINCE_CLIENT),
        H37,
        CITIZEN_LOOKUP,
        vec![b' '; 1025],
    )
    .await
    .expect("answered");
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (413, "RESOURCE_EXHAUSTED")
    );
    // At the limit it goes through (the citizen id padded with spaces).
    let mut body = ID.as_bytes().to_vec();
    body.resize(1024, b' ');
    let answer = rest_call(
        &c,
        PROVINCE_NODE,
        Some(PROVINCE_CLIENT),
        H37,
        CITIZEN_LOOKUP,
        body,
    )
    .await
    .expect("answered");
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    c.deployment.stop().await.expect("stop");
}

/// A backend that never answers.
struct Never;

#[tonic::async_trait]
impl truc_proto::v1::backend_server::Backend for Never {
    async fn invoke(
        &self,
        _request: tonic::Request<truc_proto::v1::DataRequest>,
    ) -> Result<tonic::Response<truc_proto::v1::DataResponse>, tonic::Status> {
        std::future::pending().await
    }
}

// Several threads: the node's tasks must see its stop and let go of its
// store while the restart waits for the store's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_the_request_timeout_is_504_deadline_exceeded() {
    let mut c = start_with(truc_demo::BackendKind::Custom(Arc::new(Never)), 4096).await;
    c.deployment
        .edit_node_config(PROVINCE_NODE, |f| {
            if let Some(http) = f.http.as_mut() {
                http.request_timeout_ms = 500;
            }
        })
        .expect("edit");
    assert!(c.deployment.stop_node(PROVINCE_NODE).await.expect("stop"));
    c.deployment
        .restart_node(PROVINCE_NODE)
        .await
        .expect("restart");
    let answer = rest_call(
        &c,
        PROVINCE_NODE,
        Some(PROVINCE_CLIENT),
        H37,
        CITIZEN_LOOKUP,
        ID.into(),
    )
    .await
    .expect("answered");
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (504, "DEADLINE_EXCEEDED")
    );
    assert_eq!(answer.header("x-truc-transaction-id").len(), 32);
    c.deployment.stop().await.expect("stop");
}

#[tokio::test]
async fn why_a_rest_call_is_made_is_taken_from_its_headers_and_recorded_at_the_hub() {
    let c = start().await;
    // "giải quyết hồ sơ" and its case number, percent-encoded as REST
    // backends get them.
    let why = [
        (
            "truc-purpose",
            "gi%E1%BA%A3i quy%E1%BA%BFt h%E1%BB%93 s%C6%A1",
        ),
        ("truc-case", "HS-2026/000077"),
    ];
    let call_with = |headers| {
        rest_call_with(
            &c,
            PROVINCE_NODE,
            Some(PROVINCE_CLIENT),
            H37,
            CITIZEN_LOOKUP,
            ID.into(),
            headers,
        )
    };
    let answer = call_with(&why).await.expect("call");
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let tx = answer.header("x-truc-transaction-id").to_string();
    let mut admin = AuditClient::new(c.hub_channel(Role::Admin, "admin"));
    let records = admin
        .list_records(ListRecordsRequest {
            purpose: "giải quyết hồ sơ".into(),
            case: "HS-2026/000077".into(),
            ..ListRecordsRequest::default()
        })
        .await
        .expect("records")
        .into_inner()
        .records;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        records[0]
            .record
            .as_ref()
            .map(|r| r.transaction_id.as_str()),
        Some(tx.as_str())
    );

    // A hostile value from a caller with a valid certificate: a decoded
    // line break (a header injection once passed on) is refused before the
    // call leaves the node.
    let answer = call_with(&[("truc-case", "HS-1%0D%0Ax-truc-client: 000.00.00.G22")])
        .await
        .expect("call");
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (400, "INVALID_ARGUMENT")
    );
    c.deployment.stop().await.expect("stop");
}
