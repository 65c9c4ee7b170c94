//! `truc.v1.Reporting`: transaction counts.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use truc_audit::read_counts;
use truc_pki::peer;
use truc_proto::v1::{CountRow, GetCountsRequest, GetCountsResponse, reporting_server::Reporting};
use truc_registry::Registry;

use crate::access::Visibility;
use truc_store::Store;

/// The Reporting service.
#[derive(Clone)]
pub struct ReportingService {
    registry: Arc<Registry>,
    store: Store,
}

impl ReportingService {
    pub(crate) fn new(registry: Arc<Registry>, store: Store) -> ReportingService {
        ReportingService { registry, store }
    }
}

#[tonic::async_trait]
impl Reporting for ReportingService {
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
        let counts = read_counts(&self.store).map_err(|e| {
            tracing::error!(error = %e, "cannot read counters");
            Status::internal("cannot read counters")
        })?;
        let matches = |filter: &str, value: &str| filter.is_empty() || filter == value;
        let rows: Vec<CountRow> = counts
            .into_iter()
            .filter(|(k, _)| {
                (req.from_day.is_empty() || k.day >= req.from_day)
                    && (req.to_day.is_empty() || k.day <= req.to_day)
                    && matches(&req.client_agency, &k.client)
                    && matches(&req.provider_agency, &k.provider)
                    && matches(&req.service, &k.service)
                    && visibility.sees(&self.registry, &k.client, &k.provider)
            })
            .map(|(k, count)| CountRow {
                day: k.day,
                client_agency: k.client,
                provider_agency: k.provider,
                service: k.service,
                kind: k.kind,
                outcome: k.outcome,
                count,
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
