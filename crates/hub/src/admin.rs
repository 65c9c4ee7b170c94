//! `truc.v1.Admin`: operating this hub replica. Only the admin certificate
//! may call it; the drain itself is `truc_ops::Drain`.

use std::time::Duration;

use tonic::{Request, Response, Status};
use truc_pki::{Role, peer};
use truc_proto::v1::{DrainRequest, DrainResponse, admin_server::Admin};

/// The longest drain asked for: past it the caller surely made a mistake
/// (and a systemd or Kubernetes stop timeout would kill the process first).
pub(crate) const MAX_DRAIN: Duration = Duration::from_secs(3600);

/// Why an admin call was refused.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("no verified peer identity on this connection")]
    NoPeer,
    #[error("{0} may not operate the hub: the admin certificate may")]
    NotAdmin(String),
    #[error("deadline_ms: {0} ms is more than the most, {max} ms", max = MAX_DRAIN.as_millis())]
    DeadlineTooLong(u64),
}

impl From<AdminError> for Status {
    /// The one mapping of this service's errors.
    fn from(e: AdminError) -> Status {
        match e {
            AdminError::NoPeer => Status::unauthenticated(e.to_string()),
            AdminError::NotAdmin(_) => Status::permission_denied(e.to_string()),
            AdminError::DeadlineTooLong(_) => Status::invalid_argument(e.to_string()),
        }
    }
}

/// The Admin service of one hub process.
#[derive(Clone)]
pub(crate) struct AdminService {
    drain: truc_ops::Drain,
    /// The deadline of a drain that names none.
    default_deadline: Duration,
}

impl AdminService {
    pub(crate) fn new(drain: truc_ops::Drain, default_deadline: Duration) -> AdminService {
        AdminService {
            drain,
            default_deadline,
        }
    }

    fn authorize<T>(request: &Request<T>) -> Result<(), AdminError> {
        let caller = &peer(request).map_err(|_| AdminError::NoPeer)?.identity;
        match caller.role {
            Role::Admin => Ok(()),
            _ => Err(AdminError::NotAdmin(caller.to_string())),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn drain(
        &self,
        request: Request<DrainRequest>,
    ) -> Result<Response<DrainResponse>, Status> {
        Self::authorize(&request)?;
        let deadline = match request.get_ref().deadline_ms {
            0 => self.default_deadline,
            ms if Duration::from_millis(ms) > MAX_DRAIN => {
                return Err(AdminError::DeadlineTooLong(ms).into());
            }
            ms => Duration::from_millis(ms),
        };
        let caller = peer(&request).map(|p| p.identity.to_string()).ok();
        let started = self.drain.start(deadline).await;
        tracing::info!(
            caller,
            started = started.started,
            deadline_unix_ms = started.deadline_unix_ms,
            in_flight = started.in_flight,
            "drain asked"
        );
        Ok(Response::new(DrainResponse {
            started: started.started,
            deadline_unix_ms: started.deadline_unix_ms,
            in_flight: started.in_flight,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use truc_pki::{Identity, PeerInfo};

    fn as_peer(role: Role, name: &str, deadline_ms: u64) -> Request<DrainRequest> {
        let mut r = Request::new(DrainRequest { deadline_ms });
        r.extensions_mut().insert(PeerInfo {
            identity: Identity {
                role,
                name: name.into(),
            },
            remote_addr: None,
        });
        r
    }

    /// A service on the drain of a server that is not started (no listener).
    fn service() -> (AdminService, truc_ops::Drain) {
        let server = truc_ops::GrpcServer::new(
            "hub",
            std::sync::Arc::new(truc_ops::Metrics::new()),
            &truc_ops::config::Limits::default(),
        )
        .unwrap();
        let drain = server.drain.clone();
        (
            AdminService::new(drain.clone(), Duration::from_secs(10)),
            drain,
        )
    }

    #[tokio::test]
    async fn the_admin_drains_and_a_second_drain_changes_nothing() {
        let (svc, drain) = service();
        let first = svc
            .drain(as_peer(Role::Admin, "admin", 30_000))
            .await
            .unwrap()
            .into_inner();
        assert!(first.started);
        assert!(drain.is_draining());
        let before = truc_ops::now_ms();
        assert!(first.deadline_unix_ms > before + 20_000, "{first:?}");
        let second = svc
            .drain(as_peer(Role::Admin, "admin", 0))
            .await
            .unwrap()
            .into_inner();
        assert!(!second.started);
        assert_eq!(second.deadline_unix_ms, first.deadline_unix_ms);
    }

    #[tokio::test]
    async fn a_node_or_an_agency_system_with_a_valid_certificate_cannot_drain() {
        let (svc, drain) = service();
        for (role, name) in [(Role::Node, "vpcp"), (Role::Client, "langson-dms")] {
            let status = svc.drain(as_peer(role, name, 0)).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{role}");
            assert!(status.message().contains(name), "{}", status.message());
        }
        // The hub's own certificate is no admin either.
        let status = svc.drain(as_peer(Role::Hub, "hub", 0)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        let status = svc
            .drain(Request::new(DrainRequest { deadline_ms: 0 }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(!drain.is_draining());
    }

    #[tokio::test]
    async fn a_deadline_over_an_hour_is_refused_and_drains_nothing() {
        let (svc, drain) = service();
        let ms = u64::try_from(MAX_DRAIN.as_millis()).unwrap() + 1;
        let status = svc
            .drain(as_peer(Role::Admin, "admin", ms))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(!drain.is_draining());
        // The most is accepted.
        svc.drain(as_peer(Role::Admin, "admin", ms - 1))
            .await
            .unwrap();
        assert!(drain.is_draining());
    }
}
