//! The operator's web dashboard on the hub's ops port: one page served from
//! the binary (no external assets) and the JSON and event-stream endpoints it
//! reads. Reachable only from loopback unless `[dashboard] public = true`
//! (then put it behind an authenticating proxy): these figures name agencies.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{
    Router,
    extract::{ConnectInfo, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use serde_json::{Value, json};
use tokio::sync::{broadcast, oneshot};
use tokio_stream::StreamExt;
use truc_audit::{
    AuditLog, AuditRecord, CountKey, Counters, Stats, Zone, note_unreadable, read_stats_of_days,
};
use truc_registry::{AgencyCode, Registry};

use crate::{deployment::Replicas, i18n};

const PAGE: &str = include_str!("dashboard.html");

#[derive(Clone)]
struct Dash {
    registry: truc_registry::Live,
    audit: AuditLog,
    zone: Zone,
    public: bool,
    /// This replica and its peers (`/api/replicas`).
    replicas: Arc<Replicas>,
    /// None until seeded.
    totals: Arc<RwLock<Option<Totals>>>,
    /// Dropped with the last clone of the dashboard: stops its totals task.
    _alive: Arc<oneshot::Sender<()>>,
}

impl Dash {
    fn new(
        registry: impl Into<truc_registry::Live>,
        audit: AuditLog,
        zone: Zone,
        public: bool,
        replicas: Replicas,
    ) -> Dash {
        let totals = Arc::new(RwLock::new(None));
        let (alive, dropped) = oneshot::channel();
        tokio::spawn(keep_totals(
            audit.clone(),
            totals.clone(),
            zone.clone(),
            dropped,
        ));
        Dash {
            registry: registry.into(),
            audit,
            zone,
            public,
            replicas: Arc::new(replicas),
            totals,
            _alive: Arc::new(alive),
        }
    }
}

/// The dashboard's routes.
pub(crate) fn router(
    registry: truc_registry::Live,
    audit: AuditLog,
    time_zone: Zone,
    public: bool,
    replicas: Replicas,
) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/summary", get(summary))
        .route("/api/replicas", get(replicas_view))
        .route("/api/recent", get(recent))
        .route("/api/events", get(events))
        .with_state(Dash::new(registry, audit, time_zone, public, replicas))
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

/// The page in the language the request asks for (see [`crate::i18n`]).
async fn page(
    State(d): State<Dash>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if !allowed(&d, peer) {
        return forbidden();
    }
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let (lang, source) = i18n::choose(
        query.as_deref(),
        text(header::COOKIE),
        text(header::ACCEPT_LANGUAGE),
    );
    let mut response = (
        [
            (header::VARY, "Accept-Language, Cookie"),
            (header::CONTENT_LANGUAGE, lang.tag()),
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; worker-src 'self' blob:; style-src 'unsafe-inline'; img-src 'self' data:"),
        ],
        i18n::render(PAGE, lang, source),
    )
        .into_response();
    if source == i18n::Source::Query {
        // The toggle's choice is kept for a year, for this page only.
        let cookie = format!(
            "{}={}; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly",
            i18n::COOKIE,
            lang.tag()
        );
        if let Ok(v) = header::HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    response
}

/// The registry's name of the agency `code`; empty when it has none.
fn agency_name(registry: &Registry, code: &str) -> String {
    AgencyCode::parse(code)
        .ok()
        .and_then(|c| registry.agency(&c).map(|a| a.name.clone()))
        .unwrap_or_default()
}

/// One transaction of the feed: its time also in the hub's time zone, its
/// parties also by name.
fn transaction_json(index: u64, r: &AuditRecord, registry: &Registry, zone: &Zone) -> Value {
    json!({
        "index": index,
        "finished_unix_ms": r.finished_unix_ms,
        "local_time": zone.local_time(r.finished_unix_ms),
        "kind": r.kind,
        "client": r.client_agency,
        "client_name": agency_name(registry, &r.client_agency),
        "provider": r.provider_agency,
        "provider_name": agency_name(registry, &r.provider_agency),
        "service": r.service,
        "outcome": r.outcome,
        "latency_ms": r.latency_us as f64 / 1000.0,
        "transaction_id": r.transaction_id,
    })
}

/// One day of the dashboard's figures.
#[derive(Clone, Debug, Default, PartialEq)]
struct Day {
    stats: Stats,
    errors: u64,
    /// Calls refused by a quota (`QUOTA_EXCEEDED`), also among the errors.
    quota: u64,
    /// Transactions per kind, client and service (kept for the last 30
    /// days only, which is all the summary shows of them).
    kinds: BTreeMap<String, u64>,
    clients: BTreeMap<String, u64>,
    services: BTreeMap<String, u64>,
}

/// The dashboard's running totals: per day, from the first day it shows
/// (the earlier of 1 January and 29 days ago) on. Seeded once from the
/// counters of those days, then kept up to date from the committed records,
/// so a refresh reads nothing from the store.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Totals {
    days: BTreeMap<String, Day>,
    /// Stored entries skipped, unreadable, when seeding.
    unreadable: u64,
}

/// The first day the summary at `now_ms` shows.
fn window_start(now_ms: u64, zone: &Zone) -> String {
    let today = zone.day(now_ms);
    let jan1 = format!("{}-01-01", today.get(..4).unwrap_or(&today));
    let since = zone.days_before(now_ms, 29);
    jan1.min(since)
}

impl Totals {
    /// From counters read back.
    pub(crate) fn from_counters(counters: &Counters) -> Totals {
        let mut t = Totals {
            unreadable: counters.unreadable.len() as u64,
            ..Totals::default()
        };
        for (k, s) in &counters.stats {
            t.add(k, s);
        }
        t
    }

    fn add(&mut self, k: &CountKey, s: &Stats) {
        let day = self.days.entry(k.day.clone()).or_default();
        day.stats.add(s);
        if k.outcome != "OK" {
            day.errors = day.errors.saturating_add(s.count);
        }
        if k.outcome == truc_pipeline::QUOTA_EXCEEDED {
            day.quota = day.quota.saturating_add(s.count);
        }
        for (map, value) in [
            (&mut day.kinds, &k.kind),
            (&mut day.clients, &k.client),
            (&mut day.services, &k.service),
        ] {
            let n = map.entry(value.clone()).or_default();
            *n = n.saturating_add(s.count);
        }
    }

    /// Counts a committed record, as the writer counted it.
    fn add_record(&mut self, r: &AuditRecord, zone: &Zone) {
        self.add(
            &CountKey::of_record(r, zone),
            &Stats::one(r.request_bytes, r.response_bytes, r.latency_us),
        );
    }

    /// Forgets the days the summary at `now_ms` no longer shows (they never
    /// come back into view: the first day shown only moves forward), and
    /// the per-kind, client and service figures beyond 30 days.
    fn prune(&mut self, now_ms: u64, zone: &Zone) {
        let start = window_start(now_ms, zone);
        self.days = self.days.split_off(&start);
        let since = zone.days_before(now_ms, 29);
        for (_, day) in self.days.range_mut(..since) {
            day.kinds.clear();
            day.clients.clear();
            day.services.clear();
        }
    }

    /// The days `from..=to` together (their statistics, errors and quota
    /// refusals).
    fn sum(&self, from: &str, to: &str) -> Day {
        let mut sum = Day::default();
        if from <= to {
            for (_, d) in self.days.range(from.to_string()..=to.to_string()) {
                sum.stats.add(&d.stats);
                sum.errors = sum.errors.saturating_add(d.errors);
                sum.quota = sum.quota.saturating_add(d.quota);
            }
        }
        sum
    }
}

/// The numbers of the dashboard at `now_ms`, from its running totals.
pub(crate) fn summary_json(
    registry: &Registry,
    totals: &Totals,
    zone: &Zone,
    now_ms: u64,
) -> Value {
    let today = zone.day(now_ms);
    let month = today.get(..7).unwrap_or(&today).to_string();
    let year = today.get(..4).unwrap_or(&today).to_string();
    let since = zone.days_before(now_ms, 29);
    let t = totals.sum(&today, &today);
    let m = totals.sum(&format!("{month}-01"), &format!("{month}-31"));
    let y = totals.sum(&format!("{year}-01-01"), &format!("{year}-12-31"));
    let window = totals.sum(&since, &today);
    let last30: Vec<(&String, &Day)> = if since <= today {
        totals.days.range(since.clone()..=today.clone()).collect()
    } else {
        Vec::new()
    };
    let per = |pick: fn(&Day) -> &BTreeMap<String, u64>| {
        let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, d) in &last30 {
            for (k, n) in pick(d) {
                let s = sums.entry(k.as_str()).or_default();
                *s = s.saturating_add(*n);
            }
        }
        sums
    };
    fn top(sums: BTreeMap<&str, u64>) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = sums.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(10);
        v
    }
    let name = |code: &str| agency_name(registry, code);
    let provider_name = |service: &str| {
        truc_registry::ServiceId::parse(service)
            .map(|s| agency_name(registry, s.provider().as_str()))
            .unwrap_or_default()
    };
    let q = |p| t.stats.latency_quantile_ms(p).unwrap_or(0.0);
    json!({
        "time_zone": zone.label(),
        "generated_unix_ms": now_ms,
        "generated_local": zone.local_time(now_ms),
        "today": {"day": today, "count": t.stats.count, "errors": t.errors, "quota": t.quota},
        "month": {"month": month, "count": m.stats.count, "errors": m.errors, "quota": m.quota},
        "year": {"year": year, "count": y.stats.count, "errors": y.errors, "quota": y.quota},
        "per_day": last30.iter().map(|(day, d)| json!({"day": day, "count": d.stats.count, "errors": d.errors, "quota": d.quota})).collect::<Vec<_>>(),
        "by_kind": per(|d| &d.kinds).into_iter().map(|(k, n)| json!({"kind": k, "count": n})).collect::<Vec<_>>(),
        "top_agencies": top(per(|d| &d.clients)).into_iter().map(|(a, n)| json!({"agency": a, "name": name(a), "count": n})).collect::<Vec<_>>(),
        "top_services": top(per(|d| &d.services)).into_iter().map(|(s, n)| json!({"service": s, "provider_name": provider_name(s), "count": n})).collect::<Vec<_>>(),
        "error_rate": if window.stats.count == 0 { 0.0 } else { window.errors as f64 / window.stats.count as f64 },
        "latency_ms": {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99)},
        "unreadable_entries": totals.unreadable,
    })
}

/// Seeds the totals between two commits and follows the committed records;
/// reseeds if it fell behind. Ends when the log closes or the dashboard is
/// dropped.
async fn keep_totals(
    audit: AuditLog,
    totals: Arc<RwLock<Option<Totals>>>,
    zone: Zone,
    mut dropped: oneshot::Receiver<()>,
) {
    loop {
        let start = window_start(truc_ops::now_ms(), &zone);
        let seeded = audit
            .read_and_subscribe(move |store| read_stats_of_days(store, &start, ""))
            .await;
        let mut committed = match seeded {
            Ok((Ok(counters), rx)) => {
                note_unreadable("dashboard statistics", &counters.unreadable);
                if let Ok(mut t) = totals.write() {
                    *t = Some(Totals::from_counters(&counters));
                }
                rx
            }
            Ok((Err(e), _)) => {
                tracing::error!(error = %e, "dashboard: cannot read statistics; reading them at each refresh");
                return;
            }
            Err(_) => return,
        };
        loop {
            let record = tokio::select! {
                r = committed.recv() => r,
                _ = &mut dropped => return,
            };
            match record {
                Ok(record) => {
                    if let Ok(mut t) = totals.write() {
                        if let Some(t) = t.as_mut() {
                            t.add_record(&record.1, &zone);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "dashboard totals fell behind; reseeding");
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// The summary now: from the running totals, or (until they are seeded)
/// from one range read of the days shown.
fn current_summary(d: &Dash, now_ms: u64) -> Result<Value, truc_audit::AuditError> {
    if let Ok(mut guard) = d.totals.write() {
        if let Some(t) = guard.as_mut() {
            t.prune(now_ms, &d.zone);
            return Ok(summary_json(&d.registry.current(), t, &d.zone, now_ms));
        }
    }
    let counters = read_stats_of_days(d.audit.store(), &window_start(now_ms, &d.zone), "")?;
    note_unreadable("dashboard statistics", &counters.unreadable);
    Ok(summary_json(
        &d.registry.current(),
        &Totals::from_counters(&counters),
        &d.zone,
        now_ms,
    ))
}

/// This replica and its peers today, merged (see [`crate::deployment`]).
async fn replicas_view(
    State(d): State<Dash>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !allowed(&d, peer) {
        return forbidden();
    }
    json_response(&d.replicas.view(&d.audit, &d.zone, truc_ops::now_ms()).await)
}

async fn summary(State(d): State<Dash>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if !allowed(&d, peer) {
        return forbidden();
    }
    match current_summary(&d, truc_ops::now_ms()) {
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
                .map(|(i, r)| transaction_json(*i, r, &d.registry.current(), &d.zone))
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
    let (registry, zone) = (d.registry.clone(), d.zone.clone());
    let stream =
        tokio_stream::wrappers::BroadcastStream::new(d.audit.subscribe()).filter_map(move |item| {
            // A lagging browser skips what it missed; the summary catches up.
            let record = item.ok()?;
            let (index, r) = &*record;
            Some(Ok::<_, Infallible>(Event::default().data(
                transaction_json(*index, r, &registry.current(), &zone).to_string(),
            )))
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use truc_audit::day_in;

    fn log() -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().expect("dir");
        let store = truc_store::Store::open(dir.path()).expect("store");
        let audit =
            AuditLog::open(store, "hub", truc_audit::Options::default(), None).expect("log");
        (dir, audit)
    }

    fn registry() -> Arc<Registry> {
        Arc::new(Registry::from_toml_str("", "empty.toml").expect("registry"))
    }

    /// The dashboard of a hub without peers, over `audit`.
    fn dash(audit: AuditLog) -> Dash {
        Dash::new(registry(), audit, Zone::default(), false, Replicas::alone())
    }

    async fn append(audit: &AuditLog, i: u32, outcome: &str, now: u64) {
        let tx = truc_audit::Transaction::call(
            &format!("{i:032x}"),
            "000.00.00.H37",
            "000.00.00.G22",
            "000.00.00.G22/citizen-lookup/v1",
            b"{}",
            now,
        )
        .finish(outcome, b"resp", now, Duration::from_micros(700));
        audit.append(tx).await.expect("append");
    }

    /// Polls (with a deadline) until `check` holds.
    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn today_count(d: &Dash, now: u64) -> u64 {
        current_summary(d, now).expect("summary")["today"]["count"]
            .as_u64()
            .expect("count")
    }

    #[tokio::test]
    async fn only_loopback_unless_public() {
        let (_dir, audit) = log();
        let mut d = dash(audit);
        let local: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let remote: SocketAddr = "10.1.2.3:5000".parse().expect("addr");
        assert!(allowed(&d, local));
        assert!(!allowed(&d, remote));
        // The deployment's view too: it names every replica's figures.
        let refused = replicas_view(State(d.clone()), ConnectInfo(remote)).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let served = replicas_view(State(d.clone()), ConnectInfo(local)).await;
        assert_eq!(served.status(), StatusCode::OK);
        d.public = true;
        assert!(allowed(&d, remote));
        let summary = current_summary(&d, 1_795_887_000_000).expect("summary");
        assert_eq!(summary["today"]["day"], "2026-11-29");
        assert_eq!(summary["today"]["count"], 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_summary_is_kept_from_the_committed_records_not_reread() {
        let (_dir, audit) = log();
        let now = truc_ops::now_ms();
        let outcome = |i| match i {
            0 => "NOT_FOUND",
            // Quota refusals: one counted when seeding, one after.
            1 | 6 => "QUOTA_EXCEEDED",
            _ => "OK",
        };
        for i in 0..5 {
            append(&audit, i, outcome(i), now).await;
        }
        let d = dash(audit.clone());
        until("seeded", || d.totals.read().is_ok_and(|t| t.is_some())).await;
        for i in 5..8 {
            append(&audit, i, outcome(i), now).await;
        }
        until("the new records counted", || today_count(&d, now) == 8).await;
        // The running totals equal what the counters say.
        let counters = read_stats_of_days(audit.store(), &window_start(now, &Zone::default()), "")
            .expect("counters");
        let from_store = summary_json(
            &d.registry.current(),
            &Totals::from_counters(&counters),
            &Zone::default(),
            now,
        );
        let running = current_summary(&d, now).expect("summary");
        assert_eq!(running, from_store);
        assert_eq!(running["today"]["errors"], 3);
        assert_eq!(running["today"]["quota"], 2, "quota refusals shown apart");
        assert_eq!(running["year"]["quota"], 2);
        assert_eq!(running["top_agencies"][0]["count"], 8);
        // A counter written behind the log's back is not seen: a refresh
        // does not read the counters.
        let key = CountKey::new(
            &day_in(now, 420),
            "000.00.00.X01",
            "000.00.00.G22",
            "s",
            "call",
            "OK",
        );
        let mut batch = truc_store::WriteBatch::default();
        batch.insert(
            [b"audit/c/".as_slice(), &encode_for_test(&key)].concat(),
            [0, 0, 0, 0, 0, 0, 0, 9],
        );
        audit.store().apply(batch).expect("write");
        assert_eq!(today_count(&d, now), 8);
        audit.close().await;
    }

    /// The stored form of a counter key, after the prefix (as the log
    /// writes it: each field with its length on two bytes).
    fn encode_for_test(k: &CountKey) -> Vec<u8> {
        let mut out = Vec::new();
        for f in [
            &k.day,
            &k.client,
            &k.provider,
            &k.service,
            &k.kind,
            &k.outcome,
        ] {
            out.extend_from_slice(&(f.len() as u16).to_be_bytes());
            out.extend_from_slice(f.as_bytes());
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_counter_is_reported_and_the_others_served() {
        let (_dir, audit) = log();
        let now = truc_ops::now_ms();
        for i in 0..3 {
            append(&audit, i, "OK", now).await;
        }
        // A counter of today whose client is not UTF-8.
        let mut bad = b"audit/c/".to_vec();
        let day = day_in(now, 420);
        bad.extend_from_slice(&(day.len() as u16).to_be_bytes());
        bad.extend_from_slice(day.as_bytes());
        bad.extend_from_slice(&[0, 2, 0xC3, 0x28]);
        audit.store().insert(&bad, [0u8; 8]).expect("write");
        // Before seeding (one range read) and after (running totals).
        let d = dash(audit.clone());
        let first = current_summary(&d, now).expect("summary");
        assert_eq!(first["today"]["count"], 3);
        assert_eq!(first["unreadable_entries"], 1);
        until("seeded", || d.totals.read().is_ok_and(|t| t.is_some())).await;
        let seeded = current_summary(&d, now).expect("summary");
        assert_eq!(seeded["today"]["count"], 3);
        assert_eq!(seeded["unreadable_entries"], 1);
        audit.close().await;
    }
}
