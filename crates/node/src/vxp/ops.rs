//! The VXP calls, on the node's documents and the hub's registry.

use std::sync::Arc;

use axum::{body::Body, http::StatusCode, response::Response};
use serde_json::{Map, Value};

use super::{Refusal, Vxp, ok, sign::Signed};
use crate::docs::Documents;

/// Every call name the SDK uses.
pub(crate) const CALLS: &[&str] = &[
    "sendEdoc",
    "getReceivedEdocList",
    "getSentEdocList",
    "getEdoc",
    "downloadEdoc",
    "updateStatus",
    "countReceiveEdoc",
    "countReceiveStatus",
    "getAgenciesList",
    "getAgenciesListQD20",
    "getSynchronizeUnit",
    "registerAgency",
    "deleteAgency",
];

/// What the calls act on.
#[derive(Clone)]
pub(crate) struct Node {
    pub(crate) docs: Arc<Documents>,
    pub(crate) hub: tonic::transport::Channel,
    pub(crate) config: Arc<crate::NodeConfig>,
}

pub(crate) async fn dispatch(
    vxp: &Vxp,
    call: &str,
    signed: &Signed,
    body: Body,
) -> Result<Response, Refusal> {
    drop(body);
    let _ = &vxp.node.docs;
    match call {
        "getAgenciesList" => agencies(vxp, false).await,
        "getAgenciesListQD20" => agencies(vxp, true).await,
        "registerAgency" | "deleteAgency" => Err(Refusal::denied(
            "agencies are registered in the hub's registry, not through VXP",
        )),
        _ => {
            let _ = signed;
            Err(Refusal::new(
                StatusCode::NOT_IMPLEMENTED,
                "UNIMPLEMENTED",
                format!("{call} is not served yet"),
            ))
        }
    }
}

async fn registry(vxp: &Vxp) -> Result<truc_proto::v1::RegistrySnapshot, Refusal> {
    let mut hub = truc_proto::v1::hub_client::HubClient::new(vxp.node.hub.clone());
    let mut request = tonic::Request::new(truc_proto::v1::GetRegistryRequest {});
    request.set_timeout(std::time::Duration::from_millis(
        vxp.node.config.limits.call_timeout_ms,
    ));
    Ok(hub.get_registry(request).await?.into_inner())
}

/// getAgenciesList (`oldCode`) and getAgenciesListQD20 (`code102`): the
/// registry's agencies, numbered in registry order.
async fn agencies(vxp: &Vxp, qd20: bool) -> Result<Response, Refusal> {
    let snapshot = registry(vxp).await?;
    let index: std::collections::BTreeMap<&str, usize> = snapshot
        .agencies
        .iter()
        .enumerate()
        .map(|(i, a)| (a.code.as_str(), i + 1))
        .collect();
    let data: Vec<Value> = snapshot
        .agencies
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let pid = index.get(a.parent.as_str()).copied().unwrap_or(0);
            let mut o = Map::new();
            o.insert("id".into(), (i + 1).to_string().into());
            o.insert("pid".into(), pid.to_string().into());
            o.insert("code".into(), a.code.clone().into());
            o.insert("name".into(), a.name.clone().into());
            o.insert("mail".into(), "".into());
            let legacy = if qd20 { "code102" } else { "oldCode" };
            o.insert(
                legacy.into(),
                if qd20 { a.code.clone() } else { String::new() }.into(),
            );
            Value::Object(o)
        })
        .collect();
    let mut extra = Map::new();
    extra.insert("data".into(), Value::Array(data));
    Ok(ok(extra))
}
