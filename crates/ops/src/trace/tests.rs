use opentelemetry_sdk::trace::InMemorySpanExporter;
use tonic::metadata::MetadataMap;

use super::*;

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn parse(s: &str) -> Result<TraceParent, Malformed> {
    TraceParent::parse(s.as_bytes())
}

#[test]
fn a_valid_traceparent_is_read() {
    let p = parse(VALID).expect("valid");
    assert_eq!(hex(&p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&p.parent_id), "00f067aa0ba902b7");
    assert!(p.sampled);
    let unsampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("00");
    assert!(!unsampled.sampled);
    // Unknown flag bits are ignored.
    assert!(
        parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe").is_ok_and(|p| !p.sampled)
    );
    // A later version may append fields after a dash.
    let later = format!("cc-{}-what-comes-next", &VALID[3..]);
    assert!(parse(&later).is_ok(), "{later}");
}

#[test]
fn each_malformed_traceparent_is_refused_for_its_reason() {
    let cases: &[(&str, Malformed)] = &[
        ("", Malformed::Length),
        (&VALID[..54], Malformed::Length),
        (&format!("{VALID}-"), Malformed::Length),
        (&format!("{VALID}0"), Malformed::Length),
        (
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Malformed::Version,
        ),
        (
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Malformed::Version,
        ),
        (
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Malformed::Version,
        ),
        (
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Malformed::Separator,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            Malformed::Separator,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            Malformed::Separator,
        ),
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            Malformed::Separator,
        ),
        (
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            Malformed::Hex,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
            Malformed::Hex,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9 2b7-01",
            Malformed::Hex,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            Malformed::Hex,
        ),
        (
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            Malformed::ZeroTraceId,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            Malformed::ZeroParentId,
        ),
    ];
    for (text, reason) in cases {
        assert_eq!(parse(text), Err(*reason), "{text:?}");
    }
    // Oversize, even for a later version that may be longer.
    let huge = format!("cc-{}-{}", &VALID[3..], "a".repeat(MAX_TRACEPARENT));
    assert_eq!(parse(&huge), Err(Malformed::Length));
    // Not UTF-8 at all.
    let mut bytes = VALID.as_bytes().to_vec();
    bytes[10] = 0xff;
    assert_eq!(TraceParent::parse(&bytes), Err(Malformed::Hex));
}

fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
    let mut m = MetadataMap::new();
    for (k, v) in pairs {
        m.append(*k, v.parse().expect("ascii"));
    }
    m
}

#[test]
fn a_trace_continues_with_a_new_span_and_keeps_its_state() {
    let incoming = metadata(&[(TRACEPARENT, VALID), (TRACESTATE, "congo=t61rcWkgMzE")]);
    let trace = Trace::from_metadata(&incoming, Source::Peer, 0.0);
    assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(trace.parent_id().as_deref(), Some("00f067aa0ba902b7"));
    assert_ne!(trace.span_id(), "00f067aa0ba902b7");
    // A peer's sampled flag is followed whatever this process's ratio.
    assert!(trace.sampled());
    let mut out = MetadataMap::new();
    trace.inject(&mut out);
    let sent = out
        .get(TRACEPARENT)
        .expect("traceparent")
        .to_str()
        .expect("ascii");
    let parsed = parse(sent).expect("what is sent parses");
    assert_eq!(hex(&parsed.trace_id), trace.trace_id());
    assert_eq!(hex(&parsed.parent_id), trace.span_id());
    assert_eq!(
        out.get(TRACESTATE).map(|v| v.as_bytes()),
        Some(&b"congo=t61rcWkgMzE"[..])
    );
    let mut headers = http::HeaderMap::new();
    trace.inject_headers(&mut headers);
    assert_eq!(
        headers.get(TRACEPARENT).map(|v| v.as_bytes()),
        Some(sent.as_bytes())
    );
}

#[test]
fn a_malformed_or_repeated_header_starts_a_new_trace() {
    for incoming in [
        metadata(&[]),
        metadata(&[(
            TRACEPARENT,
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]),
        metadata(&[(TRACEPARENT, &"0".repeat(10_000))]),
        metadata(&[(TRACEPARENT, VALID), (TRACEPARENT, VALID)]),
    ] {
        let trace = Trace::from_metadata(&incoming, Source::Peer, 1.0);
        assert_ne!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(trace.trace_id(), "0".repeat(32));
        assert_eq!(trace.parent_id(), None);
        assert!(parse(&trace.traceparent()).is_ok());
    }
    // A tracestate without a valid traceparent, or oversize, is dropped.
    let trace = Trace::from_metadata(&metadata(&[(TRACESTATE, "a=b")]), Source::Peer, 1.0);
    let mut out = MetadataMap::new();
    trace.inject(&mut out);
    assert!(out.get(TRACESTATE).is_none());
    let big = "a=".to_string() + &"b".repeat(MAX_TRACESTATE);
    let trace = Trace::from_metadata(
        &metadata(&[(TRACEPARENT, VALID), (TRACESTATE, &big)]),
        Source::Peer,
        1.0,
    );
    let mut out = MetadataMap::new();
    trace.inject(&mut out);
    assert!(out.get(TRACESTATE).is_none());
}

#[test]
fn an_outside_callers_sampled_flag_is_not_followed() {
    let incoming = metadata(&[(TRACEPARENT, VALID)]);
    let trace = Trace::from_metadata(&incoming, Source::Outside, 0.0);
    // Its trace id is kept for correlation, its flag is not.
    assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(!trace.sampled());
    assert!(Trace::from_metadata(&incoming, Source::Outside, 1.0).sampled());
    assert!(!Trace::from_metadata(&metadata(&[]), Source::Peer, 0.0).sampled());
}

#[test]
fn a_sampled_span_takes_the_ids_it_passes_on() {
    let exporter = InMemorySpanExporter::default();
    let tracing = Tracing::with_exporter(exporter.clone(), "truc-test", 1.0).for_process("hub");
    let (trace, span) = tracing.start(&metadata(&[(TRACEPARENT, VALID)]), Source::Peer);
    assert!(span.is_some());
    Tracing::finish(
        span,
        Finished {
            kind: "call",
            transaction_id: "t1",
            client_agency: "a",
            provider_agency: "b",
            service: "b/s/v1",
            outcome: "PERMISSION_DENIED",
        },
    );
    let spans = exporter.get_finished_spans().expect("spans");
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s.span_context.trace_id().to_string(), trace.trace_id());
    assert_eq!(s.span_context.span_id().to_string(), trace.span_id());
    assert_eq!(s.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(s.name, "truc.call");
    let get = |k: &str| {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(get(attr::PROCESS).as_deref(), Some("hub"));
    assert_eq!(get(attr::TRANSACTION_ID).as_deref(), Some("t1"));
    assert_eq!(get(attr::OUTCOME).as_deref(), Some("PERMISSION_DENIED"));
    // An unsampled trace builds no span.
    let (_, span) = tracing.start(
        &metadata(&[(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )]),
        Source::Peer,
    );
    assert!(span.is_none());
    // Off: no span at all.
    assert!(
        Tracing::off()
            .start(&metadata(&[]), Source::Peer)
            .1
            .is_none()
    );
}

#[test]
fn http_headers_are_copied_bounded_and_repeats_kept() {
    let mut headers = http::HeaderMap::new();
    headers.append(TRACEPARENT, http::HeaderValue::from_static(VALID));
    headers.append(TRACESTATE, http::HeaderValue::from_static("a=b"));
    let mut m = MetadataMap::new();
    copy_headers(&headers, &mut m);
    let trace = Trace::from_metadata(&m, Source::Outside, 1.0);
    assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(m.get(TRACESTATE).map(|v| v.as_bytes()), Some(&b"a=b"[..]));

    // A repeated header stays repeated, so it is refused as the W3C says.
    headers.append(TRACEPARENT, http::HeaderValue::from_static(VALID));
    let mut m = MetadataMap::new();
    copy_headers(&headers, &mut m);
    assert_eq!(
        Trace::from_metadata(&m, Source::Outside, 1.0).parent_id(),
        None
    );

    // Oversize values are not copied at all.
    let mut headers = http::HeaderMap::new();
    let big = "0".repeat(MAX_TRACEPARENT + 1);
    headers.insert(
        TRACEPARENT,
        http::HeaderValue::try_from(big).expect("ascii"),
    );
    let mut m = MetadataMap::new();
    copy_headers(&headers, &mut m);
    assert!(m.is_empty());
}
