//! The dashboard's view over every replica of the hub: this replica's
//! statistics of today and those of each `[[peer]]` in the config, fetched
//! with `GetStats` over mutual TLS with this hub's own certificate and merged
//! exactly ([`merge_responses`]). A peer that does not answer in time, or
//! answers something that does not merge, is shown as such and the totals
//! say "partial": it is never silently left out. One round of fetches at a
//! time, its answer kept for a second, so a storm of browser refreshes costs
//! the peers at most one call each per second.

use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use tokio::{sync::Mutex, time::Instant};
use truc_audit::{
    AuditLog, Zone, read_stats_of_days,
    report::{Dim, Filter, aggregate, merge_responses},
};
use truc_pki::{Identity, Role, TlsFiles};
use truc_proto::v1::{
    GetStatsRequest, GetStatsResponse, GetTreeHeadRequest, StatsRow, audit_client::AuditClient,
    reporting_client::ReportingClient,
};

use crate::config::Peer;

/// How long a peer has to answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an answer is served again.
const KEEP_FOR: Duration = Duration::from_secs(1);

/// The replicas the dashboard shows.
pub(crate) struct Replicas {
    /// This replica's name (`--replica`; empty without one) and log origin.
    name: String,
    origin: String,
    peers: Vec<Peer>,
    /// This hub's certificate, key and CA, read again each round (so a
    /// renewed certificate is used without a restart).
    tls: TlsFiles,
    /// The name in the peers' certificates: this hub's own.
    server_name: String,
    timeout: Duration,
    last: Mutex<Option<(Instant, Value)>>,
}

/// One replica's answer, or why there is none.
type Answer = Result<(GetStatsResponse, String), String>;

impl Replicas {
    pub(crate) fn new(
        name: Option<&str>,
        origin: String,
        peers: Vec<Peer>,
        tls: TlsFiles,
    ) -> Replicas {
        let server_name = own_name(&tls.cert).unwrap_or_else(|| "hub".to_string());
        Replicas {
            name: name.unwrap_or_default().to_string(),
            origin,
            peers,
            tls,
            server_name,
            timeout: PEER_TIMEOUT,
            last: Mutex::new(None),
        }
    }

    /// A hub with no peers (the dashboard's unit tests).
    #[cfg(test)]
    pub(crate) fn alone() -> Replicas {
        let none = std::path::PathBuf::new();
        Replicas::new(
            None,
            String::new(),
            Vec::new(),
            TlsFiles {
                ca: none.clone(),
                cert: none.clone(),
                key: none,
                crls: Vec::new(),
                crl_policy: truc_pki::CrlPolicy::default(),
            },
        )
    }

    /// The view at `now_ms`, at most [`KEEP_FOR`] old.
    pub(crate) async fn view(&self, audit: &AuditLog, zone: &Zone, now_ms: u64) -> Value {
        // Held during the round: concurrent requests wait for it and reuse it.
        let mut last = self.last.lock().await;
        if let Some((at, v)) = &*last
            && at.elapsed() < KEEP_FOR
        {
            return v.clone();
        }
        let day = zone.day(now_ms);
        let request = GetStatsRequest {
            group_by: vec!["outcome".into()],
            from_day: day.clone(),
            to_day: day.clone(),
            ..GetStatsRequest::default()
        };
        let local = local_stats(audit, zone, &day).map(|s| (s, self.origin.clone()));
        // All peers at once, each within the timeout.
        let mut asked = tokio::task::JoinSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let (tls, name) = (self.tls.clone(), self.server_name.clone());
            let (peer, request, timeout) = (peer.clone(), request.clone(), self.timeout);
            asked.spawn(async move { (i, ask(&tls, &name, &peer, request, timeout).await) });
        }
        let mut answers: Vec<Answer> = vec![Err("not asked".into()); self.peers.len()];
        while let Some(done) = asked.join_next().await {
            if let Ok((i, a)) = done
                && let Some(slot) = answers.get_mut(i)
            {
                *slot = a;
            }
        }
        let v = view_json(
            &day,
            &zone.label(),
            std::iter::once((self.name.as_str(), "", local)).chain(
                self.peers
                    .iter()
                    .zip(answers)
                    .map(|(p, a)| (p.name.as_str(), p.address.as_str(), a)),
            ),
        );
        *last = Some((Instant::now(), v.clone()));
        v
    }
}

/// `peer`'s statistics and log origin, within `timeout`, asked with the
/// certificate in `files` of a hub whose certificate names `server_name`.
async fn ask(
    files: &TlsFiles,
    server_name: &str,
    peer: &Peer,
    request: GetStatsRequest,
    timeout: Duration,
) -> Answer {
    let tls = truc_pki::client_config_for(files, Role::Hub).map_err(|e| e.to_string())?;
    let channel = truc_pki::channel(&peer.address, server_name, tls).map_err(|e| e.to_string())?;
    let call = async {
        let stats = ReportingClient::new(channel.clone())
            .get_stats(request)
            .await?
            .into_inner();
        let head = AuditClient::new(channel)
            .get_tree_head(GetTreeHeadRequest::default())
            .await?
            .into_inner();
        Ok::<_, tonic::Status>((stats, head.origin))
    };
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(format!("did not answer within {} s", timeout.as_secs_f64())),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Ok(Ok(a)) => Ok(a),
    }
}

/// The hub name in the certificate at `cert`.
fn own_name(cert: &Path) -> Option<String> {
    let pem = std::fs::read(cert).ok()?;
    Identity::from_cert_pem(&pem).ok().map(|id| id.name)
}

/// This replica's statistics of `day`, by outcome, as `GetStats` answers.
fn local_stats(audit: &AuditLog, zone: &Zone, day: &str) -> Result<GetStatsResponse, String> {
    let counters = read_stats_of_days(audit.store(), day, day).map_err(|e| e.to_string())?;
    let filter = Filter {
        from_day: day.to_string(),
        to_day: day.to_string(),
        ..Filter::default()
    };
    let (groups, total) = aggregate(&counters.stats, &[Dim::Outcome], &filter, |_| true);
    Ok(GetStatsResponse {
        group_by: vec!["outcome".into()],
        rows: groups.iter().map(|g| g.to_row()).collect(),
        total: Some(total.to_row()),
        time_zone: zone.label(),
    })
}

/// Count, errors, quota refusals and percentiles of an answer by outcome.
fn figures(s: &GetStatsResponse) -> Value {
    let total = s.total.clone().unwrap_or_default();
    let quota: u64 = s
        .rows
        .iter()
        .filter(|r| r.keys.first().map(String::as_str) == Some(truc_pipeline::QUOTA_EXCEEDED))
        .map(|r| r.count)
        .sum();
    let StatsRow {
        count,
        errors,
        p50_ms,
        p99_ms,
        ..
    } = total;
    json!({"count": count, "errors": errors, "quota": quota, "p50_ms": p50_ms, "p99_ms": p99_ms})
}

/// The view: each replica (name, address, answer; this one first) and the exact merge of
/// those that answered with statistics of the same day cut in `zone`.
pub(crate) fn view_json<'a>(
    day: &str,
    zone: &str,
    replicas: impl IntoIterator<Item = (&'a str, &'a str, Answer)>,
) -> Value {
    let mut merged = Vec::new();
    let mut rows = Vec::new();
    for (name, address, answer) in replicas {
        // Each answer is checked alone, so that one that does not merge
        // (another time zone, a row without its sketch) is named.
        let checked = answer.and_then(|(s, origin)| {
            if s.time_zone != zone {
                return Err(format!(
                    "cuts days in {}, this replica in {zone}",
                    s.time_zone
                ));
            }
            let s = merge_responses(std::slice::from_ref(&s)).map_err(|e| e.to_string())?;
            Ok((s, origin))
        });
        // The first is this replica, the one asked over no network.
        let mut row = json!({"name": name, "address": address, "local": rows.is_empty()});
        match checked {
            Ok((s, origin)) => {
                row["up"] = json!(true);
                row["origin"] = json!(origin);
                row["figures"] = figures(&s);
                merged.push(s);
            }
            Err(e) => {
                row["up"] = json!(false);
                row["error"] = json!(e);
            }
        }
        rows.push(row);
    }
    let up = merged.len();
    let total = match merge_responses(&merged) {
        Ok(m) => figures(&m),
        // Each answer merged alone, with the same grouping and zone.
        Err(e) => json!({"error": e.to_string()}),
    };
    json!({
        "day": day,
        "time_zone": zone,
        "replicas": rows.len(),
        "replicas_up": up,
        "partial": up < rows.len(),
        "total": total,
        "per_replica": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use truc_audit::{Stats, report::Group};

    fn answer(outcomes: &[(&str, u64, u64)]) -> GetStatsResponse {
        let mut total = Group::default();
        let mut rows = Vec::new();
        for &(outcome, n, latency_us) in outcomes {
            let mut g = Group {
                keys: vec![outcome.into()],
                ..Group::default()
            };
            for _ in 0..n {
                g.stats.add(&Stats::one(1, 1, latency_us));
            }
            if outcome != "OK" {
                g.errors = n;
            }
            total.stats.add(&g.stats);
            total.errors += g.errors;
            rows.push(g.to_row());
        }
        GetStatsResponse {
            group_by: vec!["outcome".into()],
            rows,
            total: Some(total.to_row()),
            time_zone: "UTC".into(),
        }
    }

    #[test]
    fn the_totals_are_the_exact_merge_and_a_silent_peer_makes_them_partial() {
        let a = answer(&[("OK", 3, 1_000), ("QUOTA_EXCEEDED", 2, 10)]);
        let b = answer(&[("OK", 5, 100_000), ("UNAVAILABLE", 1, 50)]);
        let v = view_json(
            "2026-12-02",
            "UTC",
            [
                ("hub", "", Ok((a.clone(), "hub/truc-audit/hub".into()))),
                (
                    "hub-2",
                    "h2:7000",
                    Ok((b.clone(), "hub/truc-audit/hub-2".into())),
                ),
                ("hub-3", "h3:7000", Err("did not answer within 2 s".into())),
            ],
        );
        assert_eq!(v["replicas"], 3);
        assert_eq!(v["replicas_up"], 2);
        assert_eq!(v["partial"], true);
        assert_eq!(v["total"]["count"], 11);
        assert_eq!(v["total"]["errors"], 3);
        assert_eq!(v["total"]["quota"], 2);
        // The merged p99 is that of the union (the slow replica's calls),
        // not an average of the replicas' p99s.
        let p99 = v["total"]["p99_ms"].as_f64().expect("p99");
        assert!((p99 - 100.0).abs() / 100.0 < 0.02, "{p99}");
        let per = v["per_replica"].as_array().expect("rows");
        assert_eq!(per[0]["figures"]["count"], 5);
        assert_eq!(per[1]["origin"], "hub/truc-audit/hub-2");
        assert_eq!(per[2]["up"], false);
        assert_eq!(per[2]["error"], "did not answer within 2 s");

        // All answering: not partial.
        let v = view_json(
            "2026-12-02",
            "UTC",
            [("hub", "", Ok((a.clone(), String::new())))],
        );
        assert_eq!(v["partial"], false);
    }

    #[test]
    fn a_peer_answer_that_does_not_merge_is_named_not_counted() {
        let good = answer(&[("OK", 3, 1_000)]);
        let mut other_zone = good.clone();
        other_zone.time_zone = "Asia/Ho_Chi_Minh".into();
        let mut no_sketch = good.clone();
        for r in &mut no_sketch.rows {
            r.latency = None;
        }
        // More errors than transactions: a lying peer.
        let mut lying = good.clone();
        if let Some(t) = lying.total.as_mut() {
            t.errors = 99;
        }
        lying.rows[0].errors = 99;
        let v = view_json(
            "2026-12-02",
            "UTC",
            [
                ("hub", "", Ok((good, String::new()))),
                ("z", "z:1", Ok((other_zone, String::new()))),
                ("s", "s:1", Ok((no_sketch, String::new()))),
                ("l", "l:1", Ok((lying, String::new()))),
            ],
        );
        assert_eq!(v["total"]["count"], 3, "{v}");
        assert_eq!(v["replicas_up"], 1);
        assert_eq!(v["partial"], true);
        let per = v["per_replica"].as_array().expect("rows");
        assert!(
            per[1]["error"]
                .as_str()
                .is_some_and(|e| e.contains("Asia/Ho_Chi_Minh")),
            "{v}"
        );
        for p in &per[1..] {
            assert_eq!(p["up"], false, "{p}");
        }
    }
}
