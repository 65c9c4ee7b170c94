//! Traces across agencies: W3C trace context (`traceparent`, `tracestate`)
//! read from callers and passed to the next hop, and one span per
//! transaction at each process, exported over OTLP when configured.
//!
//! The header is parsed here, not by the OpenTelemetry SDK, so that what an
//! agency system sends is bounded and checked by rules written down (and
//! tested) in one place: a malformed one is ignored and a new trace started,
//! never an error. What an agency system sends is used for correlation only:
//! its trace id and parent span id are kept, its sampled flag is not (this
//! process decides, at its own ratio), and nothing else reads it.
//!
//! With no `otlp_endpoint` nothing is exported and no span is built: the
//! cost of a call is parsing the incoming header, a few random bytes for the
//! span id and the outgoing header.

use std::{sync::Arc, time::Duration};

use opentelemetry::{
    Context, KeyValue,
    trace::{
        Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
        TraceState, Tracer as _, TracerProvider as _,
    },
};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanExporter};
use ring::rand::SecureRandom;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// The W3C trace context header naming the trace and the caller's span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header of vendor-specific trace data, passed on as received.
pub const TRACESTATE: &str = "tracestate";

/// Longest `traceparent` read: version 00 is 55 characters; a later version
/// may append fields, but not without bound.
pub const MAX_TRACEPARENT: usize = 256;
/// Longest `tracestate` passed on (the W3C limit is 32 members; 512
/// characters is what the specification asks to be kept at least).
pub const MAX_TRACESTATE: usize = 512;

/// Why a `traceparent` was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Not 55 characters (version 00), or too short or too long.
    Length,
    /// Version `ff`, or not two lowercase hex digits.
    Version,
    /// A `-` missing where one must be.
    Separator,
    /// A field that is not lowercase hex.
    Hex,
    /// The all-zero trace id.
    ZeroTraceId,
    /// The all-zero parent span id.
    ZeroParentId,
}

/// A `traceparent` header, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The caller's span.
    pub parent_id: [u8; 8],
    /// The caller's sampled flag.
    pub sampled: bool,
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_field<const N: usize>(text: &[u8]) -> Result<[u8; N], Malformed> {
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        let hi = hex_value(text[2 * i]).ok_or(Malformed::Hex)?;
        let lo = hex_value(text[2 * i + 1]).ok_or(Malformed::Hex)?;
        *byte = hi << 4 | lo;
    }
    Ok(out)
}

impl TraceParent {
    /// Parses a `traceparent` value as the W3C recommendation says:
    /// `version-traceid-parentid-flags`, lowercase hex; version 00 exactly
    /// 55 characters, a later one at least that and a `-` after it.
    pub fn parse(value: &[u8]) -> Result<TraceParent, Malformed> {
        if value.len() < 55 || value.len() > MAX_TRACEPARENT {
            return Err(Malformed::Length);
        }
        let version: [u8; 1] = hex_field(&value[0..2]).map_err(|_| Malformed::Version)?;
        match version[0] {
            0xff => return Err(Malformed::Version),
            0 if value.len() != 55 => return Err(Malformed::Length),
            _ if value.len() > 55 && value[55] != b'-' => return Err(Malformed::Separator),
            _ => {}
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return Err(Malformed::Separator);
        }
        let trace_id: [u8; 16] = hex_field(&value[3..35])?;
        let parent_id: [u8; 8] = hex_field(&value[36..52])?;
        let flags: [u8; 1] = hex_field(&value[53..55])?;
        if trace_id == [0; 16] {
            return Err(Malformed::ZeroTraceId);
        }
        if parent_id == [0; 8] {
            return Err(Malformed::ZeroParentId);
        }
        Ok(TraceParent {
            trace_id,
            parent_id,
            sampled: flags[0] & 1 == 1,
        })
    }
}

/// Whether a `tracestate` may be passed on: bounded, and only the
/// characters its grammar allows (printable ASCII).
fn tracestate_ok(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_TRACESTATE
        && value.iter().all(|c| (0x20..=0x7e).contains(c))
}

/// Who sent the trace context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An agency system: its ids are kept for correlation, its sampled flag
    /// is not.
    Outside,
    /// The hub or a node (mutual TLS, our certificates): its sampled flag is
    /// followed, so every hop of a sampled trace exports its span.
    Peer,
}

/// The trace context of one transaction at this process: the trace, this
/// process's span, and what it passes to the next hop.
#[derive(Clone, Debug)]
pub struct Trace {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    sampled: bool,
    state: Option<AsciiMetadataValue>,
}

/// 32 random bytes: ids and the sampling draw.
fn random() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // No randomness from the OS (never seen): ids from the clock, still
        // non-zero, so the trace is still valid.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos();
        let digest = ring::digest::digest(&ring::digest::SHA256, &nanos.to_le_bytes());
        bytes.copy_from_slice(digest.as_ref());
    }
    bytes
}

fn draw(bytes: &[u8; 32], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[24..32]);
    // The top 53 bits as a uniform number in [0, 1).
    ((u64::from_le_bytes(n) >> 11) as f64 / (1u64 << 53) as f64) < ratio
}

fn nonzero<const N: usize>(mut id: [u8; N]) -> [u8; N] {
    if id == [0; N] {
        id[N - 1] = 1;
    }
    id
}

fn first_only<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let first = values.next()?;
    // Two headers of one name: the W3C rules make it invalid.
    values.next().is_none().then_some(first)
}

impl Trace {
    /// The trace context of a transaction whose caller sent `traceparent`
    /// and `tracestate` (each the header's values; more than one is
    /// malformed), sampled at `ratio` where this process decides.
    pub fn incoming<'a>(
        traceparent: impl Iterator<Item = &'a [u8]>,
        tracestate: impl Iterator<Item = &'a [u8]>,
        source: Source,
        ratio: f64,
    ) -> Trace {
        let bytes = random();
        let span_id = nonzero(<[u8; 8]>::try_from(&bytes[16..24]).unwrap_or([1; 8]));
        let parent = first_only(traceparent).and_then(|v| TraceParent::parse(v).ok());
        match parent {
            Some(parent) => Trace {
                trace_id: parent.trace_id,
                span_id,
                parent_id: Some(parent.parent_id),
                sampled: match source {
                    Source::Peer => parent.sampled,
                    Source::Outside => draw(&bytes, ratio),
                },
                state: first_only(tracestate)
                    .filter(|v| tracestate_ok(v))
                    .and_then(|v| AsciiMetadataValue::try_from(v).ok()),
            },
            None => Trace {
                trace_id: nonzero(<[u8; 16]>::try_from(&bytes[0..16]).unwrap_or([1; 16])),
                span_id,
                parent_id: None,
                sampled: draw(&bytes, ratio),
                state: None,
            },
        }
    }

    /// The trace context of a request's gRPC metadata.
    pub fn from_metadata(metadata: &MetadataMap, source: Source, ratio: f64) -> Trace {
        Trace::incoming(
            metadata.get_all(TRACEPARENT).iter().map(|v| v.as_bytes()),
            metadata.get_all(TRACESTATE).iter().map(|v| v.as_bytes()),
            source,
            ratio,
        )
    }

    /// A new trace, sampled (for a transaction that nothing asked for, and
    /// tests).
    pub fn root() -> Trace {
        Trace::incoming(std::iter::empty(), std::iter::empty(), Source::Peer, 1.0)
    }

    /// The trace id, 32 hex digits.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// This process's span id, 16 hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    /// The caller's span id, where the caller sent a valid one.
    pub fn parent_id(&self) -> Option<String> {
        self.parent_id.as_ref().map(|p| hex(p))
    }

    /// Whether the trace is sampled.
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The `traceparent` this process sends to the next hop: the same
    /// trace, this process's span as the parent.
    pub fn traceparent(&self) -> String {
        String::from_utf8_lossy(&self.traceparent_bytes()).into_owned()
    }

    /// The same, formatted without allocating.
    fn traceparent_bytes(&self) -> [u8; 55] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        let fields = [(3, &self.trace_id[..]), (36, &self.span_id[..])];
        for (start, bytes) in fields {
            for (i, b) in bytes.iter().enumerate() {
                out[start + 2 * i] = DIGITS[usize::from(b >> 4)];
                out[start + 2 * i + 1] = DIGITS[usize::from(b & 15)];
            }
        }
        out[54] = if self.sampled { b'1' } else { b'0' };
        out
    }

    /// Puts the trace context for the next hop into `metadata`. The
    /// `traceparent` is new with every hop, so it is marked never to be
    /// indexed in HPACK's header table (it would only evict what repeats).
    pub fn inject(&self, metadata: &mut MetadataMap) {
        if let Ok(mut v) = AsciiMetadataValue::try_from(&self.traceparent_bytes()[..]) {
            v.set_sensitive(true);
            metadata.insert(TRACEPARENT, v);
        }
        if let Some(state) = &self.state {
            metadata.insert(TRACESTATE, state.clone());
        }
    }

    /// Puts the trace context for the next hop into HTTP `headers`.
    pub fn inject_headers(&self, headers: &mut http::HeaderMap) {
        if let Ok(v) = http::HeaderValue::from_bytes(&self.traceparent_bytes()) {
            headers.insert(TRACEPARENT, v);
        }
        if let Some(v) = self
            .state
            .as_ref()
            .and_then(|s| http::HeaderValue::from_bytes(s.as_bytes()).ok())
        {
            headers.insert(TRACESTATE, v);
        }
    }
}

/// Copies the trace context of HTTP `headers` (an agency system's request
/// at the node's HTTP doors) into gRPC `metadata`, for the pipeline to read
/// as it reads a gRPC caller's. Values past the bounds are left out (they
/// would not parse); repeated headers stay repeated (and are refused).
pub fn copy_headers(headers: &http::HeaderMap, metadata: &mut MetadataMap) {
    for (name, max) in [(TRACEPARENT, MAX_TRACEPARENT), (TRACESTATE, MAX_TRACESTATE)] {
        for value in headers.get_all(name) {
            if value.len() <= max
                && let Ok(v) = AsciiMetadataValue::try_from(value.as_bytes())
            {
                metadata.append(name, v);
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What a finished transaction's span carries.
#[derive(Clone, Copy, Debug)]
pub struct Finished<'a> {
    /// `call`, `document`, `status`.
    pub kind: &'a str,
    /// The transaction id.
    pub transaction_id: &'a str,
    /// The client agency.
    pub client_agency: &'a str,
    /// The provider agency.
    pub provider_agency: &'a str,
    /// The service.
    pub service: &'a str,
    /// The gRPC code name of the outcome (`OK`, `PERMISSION_DENIED`, ...).
    pub outcome: &'a str,
}

/// Span attribute keys.
pub mod attr {
    /// The transaction id (the key of the audit records).
    pub const TRANSACTION_ID: &str = "truc.transaction_id";
    /// The agency calling.
    pub const CLIENT_AGENCY: &str = "truc.client_agency";
    /// The agency providing the service.
    pub const PROVIDER_AGENCY: &str = "truc.provider_agency";
    /// The service.
    pub const SERVICE: &str = "truc.service";
    /// The transaction kind.
    pub const KIND: &str = "truc.kind";
    /// The outcome, a gRPC code name.
    pub const OUTCOME: &str = "truc.outcome";
    /// The process: `hub` or the node's id.
    pub const PROCESS: &str = "truc.process";
}

/// A transaction's span while it runs (only when spans are exported and
/// the trace is sampled).
pub struct Span(opentelemetry_sdk::trace::Span);

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Span")
    }
}

/// A process's tracing: how it samples the traces it starts, and where its
/// spans go (nowhere when off).
#[derive(Clone)]
pub struct Tracing {
    ratio: f64,
    process: Arc<str>,
    tracer: Option<SdkTracer>,
    // Kept to flush; the exporter also flushes when the last handle goes.
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("ratio", &self.ratio)
            .field("process", &self.process)
            .field("exporting", &self.tracer.is_some())
            .finish()
    }
}

impl Default for Tracing {
    fn default() -> Self {
        Tracing::off()
    }
}

/// The exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP span exporter: {0}")]
pub struct TracingError(String);

impl Tracing {
    /// Nothing exported; traces still propagated, all sampled.
    pub fn off() -> Tracing {
        Tracing {
            ratio: 1.0,
            process: Arc::from(""),
            tracer: None,
            provider: None,
        }
    }

    /// Spans exported over OTLP/gRPC to `endpoint` (`http://host:port`) in
    /// batches, as `service_name`; traces this process starts (or that come
    /// from agency systems) sampled at `ratio`. Needs a Tokio runtime.
    pub fn otlp(endpoint: &str, service_name: &str, ratio: f64) -> Result<Tracing, TracingError> {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TracingError(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource(service_name))
            .build();
        Ok(Tracing::with_provider(provider, ratio))
    }

    /// Spans handed to `exporter` as each ends (tests: the SDK's in-memory
    /// exporter).
    pub fn with_exporter(
        exporter: impl SpanExporter + 'static,
        service_name: &str,
        ratio: f64,
    ) -> Tracing {
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(resource(service_name))
            .build();
        Tracing::with_provider(provider, ratio)
    }

    /// Spans handed to `exporter` in batches, exported only when a batch
    /// is full, an hour has passed, or [`Tracing::flush`] is called (tests:
    /// what reaches the exporter when a process stops).
    pub fn with_batch_exporter(
        exporter: impl SpanExporter + 'static,
        service_name: &str,
        ratio: f64,
    ) -> Tracing {
        use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor};
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_secs(3600))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch)
                    .build(),
            )
            .with_resource(resource(service_name))
            .build();
        Tracing::with_provider(provider, ratio)
    }

    fn with_provider(provider: SdkTracerProvider, ratio: f64) -> Tracing {
        Tracing {
            ratio,
            process: Arc::from(""),
            tracer: Some(provider.tracer("truc")),
            provider: Some(provider),
        }
    }

    /// The same, with spans naming `process` (`hub`, a node's id).
    pub fn for_process(mut self, process: &str) -> Tracing {
        self.process = Arc::from(process);
        self
    }

    /// Exports the spans ended so far, waiting for the exporter (blocking:
    /// call it outside the async runtime's workers, e.g. `spawn_blocking`).
    pub fn flush(&self) -> Result<(), TracingError> {
        match &self.provider {
            Some(provider) => provider
                .force_flush()
                .map_err(|e| TracingError(e.to_string())),
            None => Ok(()),
        }
    }

    /// What a process does when it stops (after its drain): exports the
    /// spans still waiting in a batch, so the last calls' spans reach the
    /// collector; a failure is logged.
    pub async fn stopped(&self) {
        if self.provider.is_none() {
            return;
        }
        let this = self.clone();
        let flushed = tokio::task::spawn_blocking(move || this.flush()).await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "spans not flushed on stop"),
            Err(e) => tracing::warn!(error = %e, "spans not flushed on stop"),
        }
    }

    /// Whether spans are exported.
    pub fn is_on(&self) -> bool {
        self.tracer.is_some()
    }

    /// The trace context of a request from `source`, and its span when it
    /// is exported: the span's id is the one passed to the next hop.
    pub fn start(&self, metadata: &MetadataMap, source: Source) -> (Trace, Option<Span>) {
        let mut trace = Trace::from_metadata(metadata, source, self.ratio);
        let Some(tracer) = self.tracer.as_ref().filter(|_| trace.sampled) else {
            return (trace, None);
        };
        let parent = match trace.parent_id {
            Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(trace.trace_id),
                SpanId::from_bytes(parent),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let span = tracer
            .span_builder("truc.transaction")
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new(attr::PROCESS, self.process.to_string())])
            .start_with_context(tracer, &parent);
        // The SDK made the span's ids (and the trace's, for a new trace):
        // the next hop must see those.
        let context = span.span_context();
        trace.trace_id = context.trace_id().to_bytes();
        trace.span_id = context.span_id().to_bytes();
        (trace, Some(Span(span)))
    }

    /// Ends `span` with what the transaction became.
    pub fn finish(span: Option<Span>, finished: Finished<'_>) {
        let Some(Span(mut span)) = span else {
            return;
        };
        span.update_name(format!("truc.{}", finished.kind));
        span.set_attributes([
            KeyValue::new(attr::TRANSACTION_ID, finished.transaction_id.to_string()),
            KeyValue::new(attr::CLIENT_AGENCY, finished.client_agency.to_string()),
            KeyValue::new(attr::PROVIDER_AGENCY, finished.provider_agency.to_string()),
            KeyValue::new(attr::SERVICE, finished.service.to_string()),
            KeyValue::new(attr::KIND, finished.kind.to_string()),
            KeyValue::new(attr::OUTCOME, finished.outcome.to_string()),
        ]);
        if finished.outcome != "OK" {
            span.set_status(Status::error(finished.outcome.to_string()));
        }
        span.end();
    }
}

fn resource(service_name: &str) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_string())
        .build()
}

#[cfg(test)]
mod tests;
