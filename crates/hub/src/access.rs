//! Who may read what on the hub: the admin sees everything, a node sees the
//! transactions where one of the agencies it hosts is a party; another
//! replica of the hub sees the statistics and the signed heads.

use tonic::Status;
use truc_pki::{Identity, Role};
use truc_registry::{AgencyCode, NodeId, Registry};

/// What a caller may read.
pub(crate) enum Visibility {
    /// Everything (the admin certificate).
    All,
    /// Transactions where an agency of this node is client or provider.
    Node(NodeId),
}

impl Visibility {
    /// The visibility of `caller`; other roles are refused.
    pub(crate) fn of(caller: &Identity, what: &str) -> Result<Visibility, Status> {
        match caller.role {
            Role::Admin => Ok(Visibility::All),
            Role::Node => NodeId::parse(&caller.name)
                .map(Visibility::Node)
                .map_err(|_| Status::permission_denied("unknown node")),
            _ => Err(Status::permission_denied(format!(
                "{caller} may not read {what}"
            ))),
        }
    }

    /// Like [`Visibility::of`], and a hub certificate (another replica of
    /// this hub, whose dashboard shows the deployment) sees everything too:
    /// for the statistics and the signed heads, not the records.
    pub(crate) fn of_replica_or(caller: &Identity, what: &str) -> Result<Visibility, Status> {
        match caller.role {
            Role::Hub => Ok(Visibility::All),
            _ => Visibility::of(caller, what),
        }
    }

    /// The agencies whose transactions are visible; None: all of them.
    pub(crate) fn agencies(&self, registry: &Registry) -> Option<Vec<String>> {
        match self {
            Visibility::All => None,
            Visibility::Node(node) => Some(
                registry
                    .node(node)
                    .map(|n| n.agencies.iter().map(|a| a.to_string()).collect())
                    .unwrap_or_default(),
            ),
        }
    }

    /// Whether a transaction between `client` and `provider` is visible.
    pub(crate) fn sees(&self, registry: &Registry, client: &str, provider: &str) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Node(node) => [client, provider]
                .iter()
                .any(|a| AgencyCode::parse(a).is_ok_and(|a| registry.hosts(node, &a))),
        }
    }
}
