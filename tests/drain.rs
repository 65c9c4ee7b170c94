#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Maintenance mode on the in-process deployment: a drained hub finishes
//! the call in flight, refuses new ones before auditing them (UNAVAILABLE,
//! `truc-retry: safe`), reports NOT_SERVING, stops within its deadline, and
//! the call it finished is in its log.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::sync::{Semaphore, watch};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use truc_pki::Role;
use truc_proto::v1::{
    DataRequest, DataResponse, DrainRequest, admin_client::AdminClient, backend_server::Backend,
    hub_client::HubClient,
};
use truc_tests::*;

/// A backend that holds each call until the test lets one through.
struct Gate {
    /// Calls that reached the backend so far.
    entered: watch::Sender<usize>,
    open: Semaphore,
}

#[tonic::async_trait]
impl Backend for Gate {
    async fn invoke(&self, _: Request<DataRequest>) -> Result<Response<DataResponse>, Status> {
        self.entered.send_modify(|n| *n += 1);
        let permit = self
            .open
            .acquire()
            .await
            .map_err(|_| Status::internal("gate closed"))?;
        permit.forget();
        Ok(Response::new(DataResponse {
            content_type: "application/json".into(),
            payload: Bytes::from_static(b"{}"),
            receipt: None,
        }))
    }
}

type AgencyClient = truc_proto::v1::agency_client::AgencyClient<tonic::transport::Channel>;

/// The deployment, its backends behind a closed gate, and the province's
/// agency system on its node.
async fn gated() -> (Arc<Gate>, Cluster, AgencyClient) {
    let gate = Arc::new(Gate {
        entered: watch::Sender::new(0),
        open: Semaphore::new(0),
    });
    let c = start_configured(|o| {
        o.backend = BackendKind::Custom(gate.clone());
        o.max_payload_bytes = 4096;
        o.vxp = true;
    })
    .await;
    let agency = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    (gate, c, agency)
}

async fn health(channel: tonic::transport::Channel, service: &str) -> i32 {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers while draining")
        .into_inner()
        .status
}

type Answer = Result<Response<truc_proto::v1::CallResponse>, Status>;

/// Starts a call for `id` that the gate holds, and returns once it has
/// reached the backend, the `nth` call to.
async fn held_call(
    agency: &AgencyClient,
    id: &str,
    entered: &mut watch::Receiver<usize>,
    nth: usize,
) -> tokio::task::JoinHandle<Answer> {
    let mut agency = agency.clone();
    let payload = format!(r#"{{"id":"{id}"}}"#);
    let held = tokio::spawn(async move { agency.call(call(H37, CITIZEN_LOOKUP, &payload)).await });
    entered.wait_for(|n| *n == nth).await.expect("entered");
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_naming_no_deadline_takes_the_configs_drain_deadline() {
    let c = start_configured(|o| o.drain_deadline_secs = 45).await;
    let before = truc_ops::now_ms();
    let answer = AdminClient::new(c.hub_channel(Role::Admin, "admin"))
        .drain(DrainRequest { deadline_ms: 0 })
        .await
        .expect("the admin drains")
        .into_inner();
    assert!(answer.started);
    let after = truc_ops::now_ms();
    assert!(
        (before + 45_000..=after + 45_000).contains(&answer.deadline_unix_ms),
        "{answer:?}, asked at {before}..{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_hub_finishes_the_call_in_flight_refuses_new_ones_and_stops() {
    let (gate, mut c, agency) = gated().await;
    let mut entered = gate.entered.subscribe();

    // A first call, let through: the log's size before the drain.
    gate.open.add_permits(1);
    let before = agency
        .clone()
        .call(call(H37, CITIZEN_LOOKUP, r#"{"id":"1"}"#))
        .await
        .expect("first call")
        .into_inner()
        .receipt
        .expect("receipt");

    // A second call, held by the backend: in flight at the hub.
    let in_flight = held_call(&agency, "2", &mut entered, 2).await;

    // A node cannot drain the hub, with its valid certificate.
    let mut as_node = AdminClient::new(c.hub_channel(Role::Node, PROVINCE_NODE));
    let e = as_node
        .drain(DrainRequest { deadline_ms: 0 })
        .await
        .expect_err("a node may not drain");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(
        health(c.hub_channel(Role::Admin, "admin"), "").await,
        ServingStatus::Serving as i32
    );

    let deadline = Duration::from_secs(30);
    let mut admin = AdminClient::new(c.hub_channel(Role::Admin, "admin"));
    let answer = admin
        .drain(DrainRequest {
            deadline_ms: deadline.as_millis() as u64,
        })
        .await
        .expect("the admin drains")
        .into_inner();
    assert!(answer.started);
    assert_eq!(answer.in_flight, 1, "{answer:?}");
    // Twice is fine.
    let again = admin
        .drain(DrainRequest { deadline_ms: 1 })
        .await
        .expect("drain again")
        .into_inner();
    assert!(!again.started);
    assert_eq!(again.deadline_unix_ms, answer.deadline_unix_ms);

    // Out of service: health, /healthz, the metric.
    for service in ["", "truc.v1.Hub", "truc.v1.Reporting", "truc.v1.Audit"] {
        assert_eq!(
            health(c.hub_channel(Role::Admin, "admin"), service).await,
            ServingStatus::NotServing as i32,
            "{service:?}"
        );
    }
    let ops = c.deployment.hub().ops_addr();
    assert_eq!(http_get(ops, "/healthz").await, (503, "draining\n".into()));
    let (_, metrics) = http_get(ops, "/metrics").await;
    assert!(metrics.contains("\ntruc_draining 1\n"), "{metrics}");

    // A new call is refused before any handler, with the marker.
    let mut hub = HubClient::new(c.hub_channel(Role::Node, PROVINCE_NODE));
    let e = hub
        .route(DataRequest::default())
        .await
        .expect_err("refused while draining");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(e.message(), "hub is draining");
    assert!(truc_ops::is_retry_safe(&e), "{:?}", e.metadata());
    // Through the node, the agency system gets UNAVAILABLE too.
    let e = agency
        .clone()
        .call(call(H37, CITIZEN_LOOKUP, r#"{"id":"3"}"#))
        .await
        .expect_err("refused while draining");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(*entered.borrow(), 2, "the refused calls reached no backend");

    // The call in flight finishes, then the hub stops by itself.
    gate.open.add_permits(1);
    let finished = in_flight
        .await
        .expect("task")
        .expect("the call in flight finishes")
        .into_inner()
        .receipt
        .expect("receipt");
    tokio::time::timeout(deadline, c.deployment.wait_hub())
        .await
        .expect("the hub stops within the deadline")
        .expect("cleanly");

    // Its record is in the log, and nothing refused was recorded.
    let hub_data = c
        .deployment
        .files
        .pki
        .dir
        .parent()
        .expect("dir")
        .join("hub");
    let store = truc_store::Store::open(&hub_data).expect("store");
    let log = truc_audit::LogReader::offline(store).expect("log");
    assert_eq!(finished.record_index, before.record_index + 1);
    assert_eq!(log.size(), finished.record_index + 1);
    let (leaf, _) = log
        .inclusion_proof(finished.record_index, log.size())
        .expect("the finished call's record");
    assert_eq!(&leaf[..], finished.leaf_hash.as_ref());
    c.deployment.stop().await.expect("nodes stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_refuses_agency_calls_with_the_marker_and_finishes_its_own() {
    let (gate, mut c, agency) = gated().await;
    let mut entered = gate.entered.subscribe();
    // A call in flight through the province's node, held by the backend.
    let in_flight = held_call(&agency, "1", &mut entered, 1).await;

    let node = c.deployment.node(PROVINCE_NODE).expect("node");
    let started = node.drain().start(Duration::from_secs(30)).await;
    assert!(started.started);
    assert_eq!(started.in_flight, 1);
    let e = agency
        .clone()
        .call(call(H37, CITIZEN_LOOKUP, r#"{"id":"2"}"#))
        .await
        .expect_err("refused while draining");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(e.message(), "node is draining");
    assert!(truc_ops::is_retry_safe(&e), "{:?}", e.metadata());
    let tls = truc_pki::client_config(&c.tls(Role::Client, PROVINCE_CLIENT)).expect("tls");
    let channel = truc_pki::channel(&node.addr().to_string(), PROVINCE_NODE, tls).expect("channel");
    for service in ["", "truc.v1.Agency", "truc.v1.Node"] {
        assert_eq!(
            health(channel.clone(), service).await,
            ServingStatus::NotServing as i32,
            "{service:?}"
        );
    }
    let (code, body) = http_get(node.ops_addr(), "/healthz").await;
    assert_eq!((code, body.as_str()), (503, "draining\n"));

    // The REST door, to the agency system with its valid certificate:
    // 503 UNAVAILABLE with the marker, before the call is looked at.
    let path = c
        .deployment
        .files
        .node_configs
        .iter()
        .find(|(n, _)| n == PROVINCE_NODE);
    let config = truc_node::NodeConfig::load(&path.expect("config").1).expect("node config");
    let rest = config.http.as_ref().expect("[http]").listen;
    let tls = truc_pki::client_config_for(&c.tls(Role::Client, PROVINCE_CLIENT), Role::Node)
        .expect("tls");
    let answer = exchange(
        rest,
        Some((tls, PROVINCE_NODE)),
        &format!("POST /v1/call/{CITIZEN_LOOKUP} HTTP/1.1\r\nHost: n\r\nX-Truc-Client: {H37}\r\nContent-Type: application/json\r\nContent-Length: 10\r\nConnection: close\r\n\r\n{{\"id\":\"3\"}}"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\ntruc-retry: safe\r\n"),
        "{answer}"
    );
    let json = json_body(&answer);
    assert_eq!(json["code"], "UNAVAILABLE", "{answer}");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("draining")),
        "{json}"
    );

    // The VXP listener: the SDK's shape, every field a string, DocId on
    // sendEdoc, even unsigned (refused before anything is read).
    let vxp = config.vxp.as_ref().expect("[vxp]").listen;
    for (call, doc_id) in [("sendEdoc", true), ("getReceivedEdocList", false)] {
        let answer = exchange(
            vxp,
            None,
            &format!("POST /{call} HTTP/1.1\r\nHost: n\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        let json = json_body(&answer);
        assert_eq!(json["status"], "FAIL", "{json}");
        assert_eq!(json["ErrorCode"], "UNAVAILABLE", "{json}");
        assert!(json["ErrorDesc"].is_string(), "{json}");
        assert_eq!(
            json.get("DocId").is_some_and(|d| d == ""),
            doc_id,
            "{call}: {json}"
        );
    }
    assert_eq!(*entered.borrow(), 1, "the refused calls reached no backend");

    // The call in flight finishes with its receipt, then the node stops.
    gate.open.add_permits(1);
    let done = in_flight.await.expect("task").expect("finishes");
    assert!(done.into_inner().receipt.is_some());
    c.deployment.stop_node(PROVINCE_NODE).await.expect("stops");
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) to
/// `addr`, over TLS with `tls` (config, server name) when given; the whole
/// answer as text.
async fn exchange(
    addr: std::net::SocketAddr,
    tls: Option<(Arc<rustls::ClientConfig>, &str)>,
    request: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut buf = Vec::new();
        match tls {
            Some((config, name)) => {
                let mut config = (*config).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = rustls::pki_types::ServerName::try_from(name.to_string())
                    .map_err(std::io::Error::other)?;
                let mut s = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await?;
                s.write_all(request.as_bytes()).await?;
                s.read_to_end(&mut buf).await?;
            }
            None => {
                let mut s = tcp;
                s.write_all(request.as_bytes()).await?;
                s.read_to_end(&mut buf).await?;
            }
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .expect("answered in time")
        .expect("exchange")
}

/// The JSON body of a whole HTTP answer.
fn json_body(answer: &str) -> serde_json::Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}
