//! The operator's web dashboard on the hub's ops port: one page served from
//! the binary (no external assets) and the JSON and event-stream endpoints it
//! reads. Reachable only from loopback unless `[dashboard] public = true`
//! (then put it behind an authenticating proxy): these figures name agencies.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{ConnectInfo, State},
    http::{StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use truc_audit::{
    AuditLog, AuditRecord, day_in, read_stats,
    report::{Dim, Filter, aggregate},
};
use truc_registry::{AgencyCode, Registry};

const PAGE: &str = include_str!("dashboard.html");

#[derive(Clone)]
struct Dash {
    registry: Arc<Registry>,
    audit: AuditLog,
    offset: i32,
    public: bool,
}

/// The dashboard's routes.
pub(crate) fn router(
    registry: Arc<Registry>,
    audit: AuditLog,
    utc_offset_minutes: i32,
    public: bool,
) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/summary", get(summary))
        .route("/api/recent", get(recent))
        .route("/api/events", get(events))
        .with_state(Dash {
            registry,
            audit,
            offset: utc_offset_minutes,
            public,
        })
}

fn allowed(d: &Dash, peer: SocketAddr) -> bool {
    d.public || peer.ip().is_loopback()
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "the dashboard is served to loopback only; set [dashboard] public = true in the hub config to serve it behind an authenticating proxy\n",
    )
        .into_response()
}

fn json_response(v: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

async fn page(State(d): State<Dash>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if !allowed(&d, peer) {
        return forbidden();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; worker-src 'self' blob:; style-src 'unsafe-inline'; img-src 'self' data:"),
        ],
        PAGE,
    )
        .into_response()
}

fn transaction_json(index: u64, r: &AuditRecord) -> Value {
    json!({
        "index": index,
        "finished_unix_ms": r.finished_unix_ms,
        "kind": r.kind,
        "client": r.client_agency,
        "provider": r.provider_agency,
        "service": r.service,
        "outcome": r.outcome,
        "latency_ms": r.latency_us as f64 / 1000.0,
        "transaction_id": r.transaction_id,
    })
}

/// The numbers of the dashboard, from the durable statistics.
pub(crate) fn summary_json(
    registry: &Registry,
    audit: &AuditLog,
    offset: i32,
    now_ms: u64,
) -> Result<Value, truc_audit::AuditError> {
    let stats = read_stats(audit.store())?;
    let today = day_in(now_ms, offset);
    let month = today.get(..7).unwrap_or(&today).to_string();
    let year = today.get(..4).unwrap_or(&today).to_string();
    let since = day_in(now_ms.saturating_sub(29 * 86_400_000), offset);
    let all = |_: &truc_audit::CountKey| true;
    let total_of = |from: &str, to: &str| {
        let f = Filter {
            from_day: from.into(),
            to_day: to.into(),
            ..Filter::default()
        };
        aggregate(&stats, &[], &f, all).1
    };
    let t = total_of(&today, &today);
    let m = total_of(&format!("{month}-01"), &format!("{month}-31"));
    let y = total_of(&format!("{year}-01-01"), &format!("{year}-12-31"));
    let last30 = Filter {
        from_day: since,
        to_day: today.clone(),
        ..Filter::default()
    };
    let (days, window) = aggregate(&stats, &[Dim::Day], &last30, all);
    let (kinds, _) = aggregate(&stats, &[Dim::Kind], &last30, all);
    let (clients, _) = aggregate(&stats, &[Dim::Client], &last30, all);
    let (services, _) = aggregate(&stats, &[Dim::Service], &last30, all);
    let top = |mut groups: Vec<truc_audit::report::Group>| {
        groups.sort_by(|a, b| b.stats.count.cmp(&a.stats.count).then(a.keys.cmp(&b.keys)));
        groups.truncate(10);
        groups
    };
    let name = |code: &str| {
        AgencyCode::parse(code)
            .ok()
            .and_then(|c| registry.agency(&c).map(|a| a.name.clone()))
            .unwrap_or_default()
    };
    let first = |g: &truc_audit::report::Group| g.keys.first().cloned().unwrap_or_default();
    let q = |p| t.stats.latency_quantile_ms(p).unwrap_or(0.0);
    Ok(json!({
        "time_zone": crate::reporting::offset_name(offset),
        "generated_unix_ms": now_ms,
        "today": {"day": today, "count": t.stats.count, "errors": t.errors},
        "month": {"month": month, "count": m.stats.count, "errors": m.errors},
        "year": {"year": year, "count": y.stats.count, "errors": y.errors},
        "per_day": days.iter().map(|g| json!({"day": first(g), "count": g.stats.count, "errors": g.errors})).collect::<Vec<_>>(),
        "by_kind": kinds.iter().map(|g| json!({"kind": first(g), "count": g.stats.count})).collect::<Vec<_>>(),
        "top_agencies": top(clients).iter().map(|g| json!({"agency": first(g), "name": name(&first(g)), "count": g.stats.count})).collect::<Vec<_>>(),
        "top_services": top(services).iter().map(|g| json!({"service": first(g), "count": g.stats.count})).collect::<Vec<_>>(),
        "error_rate": if window.stats.count == 0 { 0.0 } else { window.errors as f64 / window.stats.count as f64 },
        "latency_ms": {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99)},
    }))
}

async fn summary(State(d): State<Dash>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if !allowed(&d, peer) {
        return forbidden();
    }
    match summary_json(&d.registry, &d.audit, d.offset, truc_ops::now_ms()) {
        Ok(v) => json_response(&v),
        Err(e) => {
            tracing::error!(error = %e, "dashboard summary failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read statistics\n",
            )
                .into_response()
        }
    }
}

async fn recent(State(d): State<Dash>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if !allowed(&d, peer) {
        return forbidden();
    }
    match d.audit.reader().recent(50) {
        Ok(records) => json_response(&Value::Array(
            records
                .iter()
                .map(|(i, r)| transaction_json(*i, r))
                .collect(),
        )),
        Err(e) => {
            tracing::error!(error = %e, "dashboard feed failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the log\n").into_response()
        }
    }
}

async fn events(State(d): State<Dash>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if !allowed(&d, peer) {
        return forbidden();
    }
    let stream =
        tokio_stream::wrappers::BroadcastStream::new(d.audit.subscribe()).filter_map(|item| {
            // A lagging browser skips what it missed; the summary catches up.
            let record = item.ok()?;
            let (index, r) = &*record;
            Some(Ok::<_, Infallible>(
                Event::default().data(transaction_json(*index, r).to_string()),
            ))
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_unless_public() {
        let dir = tempfile::tempdir().expect("dir");
        let store = truc_store::Store::open(dir.path()).expect("store");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let _guard = rt.enter();
        let audit =
            AuditLog::open(store, "hub", truc_audit::Options::default(), None).expect("log");
        let registry = Arc::new(Registry::from_toml_str("", "empty.toml").expect("registry"));
        let mut d = Dash {
            registry,
            audit,
            offset: 420,
            public: false,
        };
        let local: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let remote: SocketAddr = "10.1.2.3:5000".parse().expect("addr");
        assert!(allowed(&d, local));
        assert!(!allowed(&d, remote));
        d.public = true;
        assert!(allowed(&d, remote));
        let summary = summary_json(&d.registry, &d.audit, 420, 1_795_887_000_000).expect("summary");
        assert_eq!(summary["today"]["day"], "2026-11-29");
        assert_eq!(summary["today"]["count"], 0);
    }
}
