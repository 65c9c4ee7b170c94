#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Traces across agencies, through a running cluster whose hub and nodes
//! export their spans into one in-memory exporter: one routed call is one
//! trace at the client's node, the hub and the provider's node, continued
//! to the backend; an agency system's trace context changes nothing but the
//! trace.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tonic::{Request, Response, Status};
use truc_proto::v1::DataRequest;
use truc_tests::*;

const FROM_OUTSIDE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

/// What a backend sees of a call's trace context.
type Seen = (Option<String>, Option<String>);

fn look(request: &Request<DataRequest>) -> Seen {
    let get = |name: &str| {
        request
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    (get("traceparent"), get("tracestate"))
}

async fn traced_cluster() -> (Cluster, InMemorySpanExporter, Arc<Recorder<Seen>>) {
    let exporter = InMemorySpanExporter::default();
    let recorder = Arc::new(Recorder::new(look));
    let (e, r) = (exporter.clone(), recorder.clone());
    let c = start_configured(move |o| {
        o.backend = BackendKind::Custom(r);
        o.tracing = Some(truc_ops::trace::Tracing::with_exporter(e, "truc-test", 1.0));
    })
    .await;
    (c, exporter, recorder)
}

/// A call from G22's system on the ministry node to H37's service on the
/// province node, with `metadata` added: the hub's receipt's transaction id.
async fn call_with(c: &Cluster, metadata: &[(&'static str, &str)]) -> String {
    let mut client = c
        .deployment
        .agency_client(MINISTRY_NODE, MINISTRY_CLIENT)
        .expect("client");
    let mut request = Request::new(call(G22, HOUSEHOLD_REGISTRY, r#"{"id":"001089012345"}"#));
    for (k, v) in metadata {
        request.metadata_mut().append(*k, v.parse().expect("ascii"));
    }
    let answer = client.call(request).await.expect("call").into_inner();
    answer.receipt.expect("receipt").transaction_id
}

fn attr(span: &SpanData, key: &str) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
        .unwrap_or_default()
}

/// The spans of transaction `tx`, by process.
fn spans_of(exporter: &InMemorySpanExporter, tx: &str) -> Vec<SpanData> {
    let mut spans: Vec<SpanData> = exporter
        .get_finished_spans()
        .expect("spans")
        .into_iter()
        .filter(|s| attr(s, truc_ops::trace::attr::TRANSACTION_ID) == tx)
        .collect();
    spans.sort_by_key(|s| match attr(s, truc_ops::trace::attr::PROCESS).as_str() {
        MINISTRY_NODE => 0,
        "hub" => 1,
        _ => 2,
    });
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_routed_call_is_one_trace_at_node_hub_and_provider_node() {
    let (c, exporter, recorder) = traced_cluster().await;
    let tx = call_with(&c, &[("traceparent", FROM_OUTSIDE)]).await;

    let spans = spans_of(&exporter, &tx);
    let processes: Vec<String> = spans
        .iter()
        .map(|s| attr(s, truc_ops::trace::attr::PROCESS))
        .collect();
    assert_eq!(processes, [MINISTRY_NODE, "hub", PROVINCE_NODE]);
    let (node, hub, provider) = (&spans[0], &spans[1], &spans[2]);
    // One trace, the agency system's, each hop's parent the hop before.
    for s in &spans {
        assert_eq!(
            s.span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(s.name, "truc.call");
        for (key, value) in [
            (truc_ops::trace::attr::CLIENT_AGENCY, G22),
            (truc_ops::trace::attr::PROVIDER_AGENCY, H37),
            (truc_ops::trace::attr::SERVICE, HOUSEHOLD_REGISTRY),
            (truc_ops::trace::attr::KIND, "call"),
            (truc_ops::trace::attr::OUTCOME, "OK"),
        ] {
            assert_eq!(attr(s, key), value, "{key} at {}", attr(s, "truc.process"));
        }
    }
    assert_eq!(node.parent_span_id.to_string(), "b7ad6b7169203331");
    assert_eq!(hub.parent_span_id, node.span_context.span_id());
    assert_eq!(provider.parent_span_id, hub.span_context.span_id());
    // The backend is called with the provider node's span as the parent.
    let seen = recorder.seen();
    assert_eq!(
        seen,
        [(
            Some(format!(
                "00-0af7651916cd43dd8448eb211c80319c-{}-01",
                provider.span_context.span_id()
            )),
            None
        )]
    );

    // Without a traceparent the node starts the trace, and the hops share it.
    let tx = call_with(&c, &[]).await;
    let spans = spans_of(&exporter, &tx);
    assert_eq!(spans.len(), 3);
    assert_eq!(spans[0].parent_span_id.to_string(), "0".repeat(16));
    assert!(
        spans
            .iter()
            .all(|s| s.span_context.trace_id() == spans[0].span_context.trace_id())
    );
    c.deployment.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_trace_context_changes_nothing_but_the_trace() {
    let (c, exporter, recorder) = traced_cluster().await;
    let plain = call_with(&c, &[]).await;
    let huge = format!("00-{}", "a".repeat(4_000));
    let state = format!("k={}", "v".repeat(600));
    let hostile: [&[(&'static str, &str)]; 4] = [
        // Version ff, and an all-zero trace id: ignored.
        &[(
            "traceparent",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )],
        &[(
            "traceparent",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        )],
        // Oversize, repeated, with an oversize tracestate.
        &[("traceparent", &huge), ("tracestate", &state)],
        &[("traceparent", FROM_OUTSIDE), ("traceparent", FROM_OUTSIDE)],
    ];
    let expected = comparable(c.hub_record(&plain).await);
    for metadata in hostile {
        let tx = call_with(&c, metadata).await;
        // The hub's record is the one a plain call gets.
        assert_eq!(
            comparable(c.hub_record(&tx).await),
            expected,
            "{metadata:?}"
        );
        // A new trace was started and followed through.
        let spans = spans_of(&exporter, &tx);
        assert_eq!(spans.len(), 3, "{metadata:?}");
        let trace = spans[0].span_context.trace_id().to_string();
        assert_ne!(trace, "0af7651916cd43dd8448eb211c80319c", "{metadata:?}");
        assert_ne!(trace, "0".repeat(32));
        assert!(
            spans
                .iter()
                .all(|s| s.span_context.trace_id().to_string() == trace)
        );
    }
    // No forged tracestate reached a backend.
    let seen = recorder.seen();
    assert_eq!(seen.len(), 5);
    assert!(
        seen.iter()
            .all(|(parent, state)| parent.is_some() && state.is_none())
    );
    c.deployment.stop().await.expect("stop");
}

/// An OTLP collector that keeps what it is sent.
#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
    arrived: Arc<tokio::sync::Notify>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        if let Ok(mut all) = self.spans.lock() {
            all.extend(spans);
        }
        self.arrived.notify_waiters();
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_as_configured() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    let section = truc_ops::config::TracingSection {
        otlp_endpoint: Some(format!("http://{addr}")),
        ..Default::default()
    };
    let tracing = section.tracing("truc-test", "").expect("exporter");
    let t = tracing.clone();
    let c = start_configured(move |o| o.tracing = Some(t)).await;
    let tx = call_with(&c, &[("traceparent", FROM_OUTSIDE)]).await;
    // Batches go every few seconds; ask for this one now.
    let arrived = collector.arrived.notified();
    let flush = tokio::task::spawn_blocking(move || tracing.flush());
    flush.await.expect("join").expect("flush");
    let ours = |spans: &[opentelemetry_proto::tonic::trace::v1::Span]| {
        spans
            .iter()
            .filter(|s| {
                s.attributes.iter().any(|kv| {
                    kv.key == truc_ops::trace::attr::TRANSACTION_ID
                        && format!("{:?}", kv.value).contains(&tx)
                })
            })
            .count()
    };
    if ours(&collector.spans.lock().expect("spans")) < 3 {
        tokio::time::timeout(std::time::Duration::from_secs(20), arrived)
            .await
            .expect("the collector got spans");
    }
    let spans = collector.spans.lock().expect("spans").clone();
    assert_eq!(ours(&spans), 3, "{spans:?}");
    assert!(
        spans
            .iter()
            .all(|s| s.trace_id == hex_bytes("0af7651916cd43dd8448eb211c80319c"))
    );
    c.deployment.stop().await.expect("stop");
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spans_still_in_a_batch_are_exported_when_a_node_or_a_drained_hub_stops() {
    let exporter = InMemorySpanExporter::default();
    let e = exporter.clone();
    let mut c = start_configured(move |o| {
        // Batches sent only when full or after an hour: only a flush on
        // stop exports them.
        o.tracing = Some(truc_ops::trace::Tracing::with_batch_exporter(
            e,
            "truc-test",
            1.0,
        ));
    })
    .await;
    let tx = call_with(&c, &[]).await;
    assert!(spans_of(&exporter, &tx).is_empty(), "still in the batch");
    assert!(c.deployment.stop_node(PROVINCE_NODE).await.expect("stops"));
    assert_eq!(
        spans_of(&exporter, &tx).len(),
        3,
        "flushed when the node stopped"
    );

    c.deployment
        .restart_node(PROVINCE_NODE)
        .await
        .expect("restart");
    let tx = call_with(&c, &[]).await;
    assert!(spans_of(&exporter, &tx).is_empty(), "still in the batch");
    c.deployment
        .hub()
        .drain()
        .start(std::time::Duration::from_secs(5))
        .await;
    c.deployment
        .wait_hub()
        .await
        .expect("the drained hub stops");
    assert_eq!(
        spans_of(&exporter, &tx).len(),
        3,
        "flushed when the hub stopped"
    );
    c.deployment.stop().await.expect("stop");
}
