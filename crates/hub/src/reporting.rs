//! `truc.v1.Reporting`: transaction counts.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use truc_audit::Zone;
use truc_audit::{
    AuditLog, CountKey, Stats, note_unreadable, read_stats_of_days,
    report::{Dim, Filter, Group, aggregate},
};
use truc_pki::peer;
use truc_proto::v1::{
    CountRow, GetCountsRequest, GetCountsResponse, GetStatsRequest, GetStatsResponse, StatsRow,
    TransactionEvent, WatchTransactionsRequest, reporting_server::Reporting,
};

use crate::access::Visibility;
use truc_store::Store;

/// The Reporting service.
#[derive(Clone)]
pub(crate) struct ReportingService {
    registry: truc_registry::Live,
    store: Store,
    audit: AuditLog,
    time_zone: Zone,
    /// Counter entries read (what the day ranges asked for cost).
    scanned: Arc<AtomicU64>,
}

impl ReportingService {
    pub(crate) fn new(
        registry: impl Into<truc_registry::Live>,
        store: Store,
        audit: AuditLog,
        time_zone: Zone,
    ) -> ReportingService {
        ReportingService {
            registry: registry.into(),
            store,
            audit,
            time_zone,
            scanned: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl ReportingService {
    /// The counters of the days `from..=to` (one range scan over those days
    /// only). Entries that do not decode are skipped, logged and counted
    /// (`truc_audit_unreadable_entries_total`); the others are served.
    fn counters(&self, from: &str, to: &str) -> Result<BTreeMap<CountKey, Stats>, Status> {
        let counters = read_stats_of_days(&self.store, from, to).map_err(|e| {
            tracing::error!(error = %e, "cannot read statistics");
            Status::internal("cannot read statistics")
        })?;
        note_unreadable("statistics", &counters.unreadable);
        self.scanned.fetch_add(counters.scanned, Ordering::Relaxed);
        Ok(counters.stats)
    }
}

fn row(g: &Group) -> StatsRow {
    g.to_row()
}

#[tonic::async_trait]
impl Reporting for ReportingService {
    async fn get_stats(
        &self,
        request: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        let visibility = Visibility::of_replica_or(&peer(&request)?.identity, "reports")?;
        let req = request.into_inner();
        let dims = req
            .group_by
            .iter()
            .map(|d| {
                Dim::parse(d).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "group_by: {d:?} is not one of client, provider, service, kind, outcome, day, month, year"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (field, day) in [("from_day", &req.from_day), ("to_day", &req.to_day)] {
            if !day.is_empty() && !is_day(day) {
                return Err(Status::invalid_argument(format!(
                    "{field}: expected YYYY-MM-DD, got {day:?}"
                )));
            }
        }
        let stats = self.counters(&req.from_day, &req.to_day)?;
        let filter = Filter {
            from_day: req.from_day,
            to_day: req.to_day,
            client: req.client,
            provider: req.provider,
            service: req.service,
            kind: req.kind,
            outcome: req.outcome,
        };
        let (groups, total) = aggregate(&stats, &dims, &filter, |k| {
            visibility.sees(&self.registry.current(), &k.client, &k.provider)
        });
        Ok(Response::new(GetStatsResponse {
            group_by: req.group_by,
            rows: groups.iter().map(row).collect(),
            total: Some(row(&total)),
            time_zone: self.time_zone.label(),
        }))
    }

    type WatchTransactionsStream = ReceiverStream<Result<TransactionEvent, Status>>;

    async fn watch_transactions(
        &self,
        request: Request<WatchTransactionsRequest>,
    ) -> Result<Response<Self::WatchTransactionsStream>, Status> {
        let visibility = Visibility::of(&peer(&request)?.identity, "transactions")?;
        let mut committed = self.audit.subscribe();
        let registry = self.registry.current();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let event = match committed.recv().await {
                    Ok(r) => r,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "{n} transactions were missed; watch again"
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let (index, record) = &*event;
                if !visibility.sees(&registry, &record.client_agency, &record.provider_agency) {
                    continue;
                }
                let message = TransactionEvent {
                    index: *index,
                    record: Some(record.clone()),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_counts(
        &self,
        request: Request<GetCountsRequest>,
    ) -> Result<Response<GetCountsResponse>, Status> {
        let visibility = Visibility::of(&peer(&request)?.identity, "reports")?;
        let req = request.into_inner();
        for (field, day) in [("from_day", &req.from_day), ("to_day", &req.to_day)] {
            if !day.is_empty() && !is_day(day) {
                return Err(Status::invalid_argument(format!(
                    "{field}: expected YYYY-MM-DD, got {day:?}"
                )));
            }
        }
        let counts = self.counters(&req.from_day, &req.to_day)?;
        let matches = |filter: &str, value: &str| filter.is_empty() || filter == value;
        let rows: Vec<CountRow> = counts
            .into_iter()
            .filter(|(k, _)| {
                (req.from_day.is_empty() || k.day >= req.from_day)
                    && (req.to_day.is_empty() || k.day <= req.to_day)
                    && matches(&req.client_agency, &k.client)
                    && matches(&req.provider_agency, &k.provider)
                    && matches(&req.service, &k.service)
                    && visibility.sees(&self.registry.current(), &k.client, &k.provider)
            })
            .map(|(k, stats)| CountRow {
                day: k.day,
                client_agency: k.client,
                provider_agency: k.provider,
                service: k.service,
                kind: k.kind,
                outcome: k.outcome,
                count: stats.count,
            })
            .collect();
        let total = rows.iter().map(|r| r.count).sum();
        Ok(Response::new(GetCountsResponse { rows, total }))
    }
}

fn is_day(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use truc_audit::{Options, Transaction, day_in};
    use truc_pki::{Identity, PeerInfo, Role};

    fn admin<T>(req: T) -> Request<T> {
        from(Role::Admin, "admin", req)
    }

    fn from<T>(role: Role, name: &str, req: T) -> Request<T> {
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

    /// Another replica's certificate (the dashboard over the deployment)
    /// reads every row, like the admin's; a node's still sees only its own
    /// agencies' rows, and an agency system's none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hub_certificate_reads_every_row_and_a_node_only_its_own() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let audit = AuditLog::open(store.clone(), "hub", Options::default(), None).expect("log");
        // H37 calls G22; A01 calls A02 (node `other` hosts both).
        for (i, (client, provider)) in [
            ("000.00.00.H37", "000.00.00.G22"),
            ("000.00.00.A01", "000.00.00.A02"),
            ("000.00.00.A01", "000.00.00.A02"),
        ]
        .into_iter()
        .enumerate()
        {
            let tx = Transaction::call(
                &format!("{i:032x}"),
                client,
                provider,
                &format!("{provider}/lookup/v1"),
                b"{}",
                DAY0,
            )
            .finish("OK", b"", DAY0, std::time::Duration::from_micros(5));
            audit.append(tx).await.expect("append");
        }
        let service = ReportingService::new(
            crate::tests::registry(),
            store.clone(),
            audit.clone(),
            Zone::default(),
        );
        let ask = |role, name| {
            from(
                role,
                name,
                GetStatsRequest {
                    group_by: vec!["client".into()],
                    ..GetStatsRequest::default()
                },
            )
        };
        let count = |r: GetStatsResponse| r.total.expect("total").count;
        for (role, name, want) in [
            (Role::Hub, "hub", 3),
            (Role::Admin, "admin", 3),
            (Role::Node, "vpcp", 1),
            (Role::Node, "other", 2),
            (Role::Node, "lgsp-langson", 1),
        ] {
            let got = service
                .get_stats(ask(role, name))
                .await
                .expect("stats")
                .into_inner();
            assert_eq!(count(got), want, "{role:?} {name}");
        }
        let refused = service
            .get_stats(ask(Role::Client, "some-system"))
            .await
            .expect_err("an agency system reads no statistics");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        audit.close().await;
    }

    const DAY0: u64 = 1_795_910_000_000;
    const DAY: u64 = 86_400_000;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_day_range_reads_only_its_days_and_skips_a_bad_counter() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let audit = AuditLog::open(store.clone(), "hub", Options::default(), None).expect("log");
        // One transaction on each of 60 days, two kinds of outcome.
        for d in 0..60u64 {
            let outcome = if d % 2 == 0 { "OK" } else { "NOT_FOUND" };
            let tx = Transaction::call(
                &format!("{d:032x}"),
                "000.00.00.H37",
                "000.00.00.G22",
                "000.00.00.G22/citizen-lookup/v1",
                b"{}",
                DAY0 + d * DAY,
            )
            .finish(
                outcome,
                b"",
                DAY0 + d * DAY,
                std::time::Duration::from_micros(5),
            );
            audit.append(tx).await.expect("append");
        }
        let registry =
            Arc::new(truc_registry::Registry::from_toml_str("", "empty.toml").expect("registry"));
        let service =
            ReportingService::new(registry, store.clone(), audit.clone(), Zone::default());
        let (from, to) = (day_in(DAY0 + 30 * DAY, 420), day_in(DAY0 + 32 * DAY, 420));
        let ask = || GetStatsRequest {
            from_day: from.clone(),
            to_day: to.clone(),
            group_by: vec!["day".into()],
            ..GetStatsRequest::default()
        };
        let stats = service
            .get_stats(admin(ask()))
            .await
            .expect("stats")
            .into_inner();
        assert_eq!(stats.total.expect("total").count, 3);
        assert_eq!(stats.rows.len(), 3);
        assert_eq!(
            service.scanned.load(Ordering::Relaxed),
            3,
            "three of 60 counters read"
        );

        // A counter in that range whose key does not decode.
        let mut bad = b"audit/c/".to_vec();
        bad.extend_from_slice(&[0, 10]);
        bad.extend_from_slice(from.as_bytes());
        bad.extend_from_slice(&[0, 1, 0xFF]);
        store.insert(&bad, [0u8; 8]).expect("corrupt");
        let before = truc_audit::unreadable_skipped();
        let stats = service
            .get_stats(admin(ask()))
            .await
            .expect("still served")
            .into_inner();
        assert_eq!(stats.total.expect("total").count, 3);
        assert!(truc_audit::unreadable_skipped() > before, "counted");
        let counts = service
            .get_counts(admin(GetCountsRequest {
                from_day: from.clone(),
                to_day: to.clone(),
                ..GetCountsRequest::default()
            }))
            .await
            .expect("counts")
            .into_inner();
        assert_eq!(counts.total, 3);
        // Unbounded, everything (and the bad entry skipped).
        let all = service
            .get_stats(admin(GetStatsRequest::default()))
            .await
            .expect("stats")
            .into_inner();
        assert_eq!(all.total.expect("total").count, 60);
        audit.close().await;
    }
}
