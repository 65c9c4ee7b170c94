//! The registry model and its loading and validation from TOML.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use truc_proto::v1 as pb;

use crate::quota::{Quotas, RawQuota};
use crate::{AgencyCode, IdError, NodeId, ServiceId};

/// An error loading a registry file.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file could not be read.
    #[error("cannot read registry {path}: {source}")]
    Read {
        /// The path as given.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or breaks a registry rule.
    #[error("registry {origin}{}, {field}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Invalid {
        /// Where the text came from (usually the file path).
        origin: String,
        /// The 1-based line of the offending value, when known.
        line: Option<usize>,
        /// The field path, e.g. `service[1].id` (`toml` for syntax errors).
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// An agency (government organ).
#[derive(Clone, Debug)]
pub struct Agency {
    /// Its electronic organ code.
    pub code: AgencyCode,
    /// Its display name.
    pub name: String,
    /// The agency it belongs to, if any.
    pub parent: Option<AgencyCode>,
}

/// A node: a gateway hosting one or more agencies.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// Where it listens, `host:port`.
    pub address: String,
    /// The agencies it hosts, in file order.
    pub agencies: Vec<AgencyCode>,
    /// Its raw Ed25519 witness public key, with which the hub checks the
    /// cosignatures it returns of the hub's tree heads.
    pub witness_key: Option<[u8; 32]>,
}

/// A service offered by a provider agency.
#[derive(Clone, Debug)]
pub struct Service {
    /// Its id (which names the provider).
    pub id: ServiceId,
    /// What it does.
    pub description: String,
}

/// A validated registry: agencies, nodes, services and grants.
#[derive(Clone, Debug)]
pub struct Registry {
    agencies: BTreeMap<AgencyCode, Agency>,
    nodes: BTreeMap<NodeId, Node>,
    hosting: BTreeMap<AgencyCode, NodeId>,
    services: BTreeMap<ServiceId, Service>,
    grants: BTreeMap<AgencyCode, BTreeSet<ServiceId>>,
    /// Whether documents may go between any two agencies without a grant.
    documents_by_default: bool,
    document_grants: BTreeMap<AgencyCode, BTreeSet<AgencyCode>>,
    /// The purposes data calls of a grant must give, where it requires one.
    purposes: BTreeMap<(AgencyCode, ServiceId), PurposeRule>,
    /// Whether the hub records every call's end user as a keyed hash.
    hash_end_user: bool,
    /// The services whose calls' end users it records as a keyed hash.
    hashed_end_users: BTreeSet<ServiceId>,
    /// The call quotas the hub enforces.
    quotas: Quotas,
    sha256: [u8; 32],
}

/// The purpose a grant requires of its data calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurposeRule {
    /// Any purpose, as long as there is one (`require_purpose = true`).
    Any,
    /// One of these (`purposes = [..]`).
    OneOf(BTreeSet<String>),
}

impl PurposeRule {
    /// Whether a call giving `purpose` (empty: none) meets the rule.
    pub fn allows(&self, purpose: &str) -> bool {
        match self {
            PurposeRule::Any => !purpose.is_empty(),
            PurposeRule::OneOf(list) => list.contains(purpose),
        }
    }

    /// The rule of two grants of the same pair: either suffices.
    fn or(self, other: PurposeRule) -> PurposeRule {
        match (self, other) {
            (PurposeRule::OneOf(mut a), PurposeRule::OneOf(b)) => {
                a.extend(b);
                PurposeRule::OneOf(a)
            }
            _ => PurposeRule::Any,
        }
    }
}

/// Longest purpose a grant may list, in characters (as calls may give).
const MAX_PURPOSE_CHARS: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    agency: Vec<RawAgency>,
    #[serde(default)]
    node: Vec<RawNode>,
    #[serde(default)]
    service: Vec<RawService>,
    #[serde(default)]
    grant: Vec<RawGrant>,
    #[serde(default)]
    documents: RawDocuments,
    #[serde(default)]
    document_grant: Vec<RawDocumentGrant>,
    /// Record every call's end user at the hub as a keyed hash.
    #[serde(default)]
    hash_end_user: bool,
    /// Call quotas.
    #[serde(default)]
    quota: RawQuota,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocuments {
    /// "allow" (the default) or "deny".
    #[serde(default = "allow")]
    default: Spanned<String>,
}

impl Default for RawDocuments {
    fn default() -> Self {
        RawDocuments { default: allow() }
    }
}

fn allow() -> Spanned<String> {
    Spanned::new(0..0, "allow".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocumentGrant {
    sender: Spanned<String>,
    recipients: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgency {
    code: Spanned<String>,
    name: Spanned<String>,
    parent: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: Spanned<String>,
    address: Spanned<String>,
    #[serde(default)]
    agencies: Vec<Spanned<String>>,
    /// 64 hex digits (as `truc pki init` writes `node-ID-witness.pub`).
    #[serde(default)]
    witness_key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    id: Spanned<String>,
    #[serde(default)]
    description: String,
    /// Record this service's calls' end users at the hub as a keyed hash.
    #[serde(default)]
    hash_end_user: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    client: Spanned<String>,
    services: Vec<Spanned<String>>,
    /// Calls must give a purpose.
    #[serde(default)]
    require_purpose: bool,
    /// Calls must give one of these purposes.
    #[serde(default)]
    purposes: Vec<Spanned<String>>,
}

/// Builds `Invalid` errors for one text.
pub(crate) struct Ctx<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let upto = self.text.as_bytes().get(..span.start).unwrap_or_default();
        upto.iter().filter(|&&b| b == b'\n').count() + 1
    }

    pub(crate) fn err(
        &self,
        span: Option<Range<usize>>,
        field: String,
        message: String,
    ) -> RegistryError {
        RegistryError::Invalid {
            origin: self.origin.to_owned(),
            line: span.map(|s| self.line(s)),
            field,
            message,
        }
    }

    pub(crate) fn at<T>(
        &self,
        value: &Spanned<T>,
        field: String,
        message: String,
    ) -> RegistryError {
        self.err(Some(value.span()), field, message)
    }

    pub(crate) fn parse<T>(
        &self,
        value: &Spanned<String>,
        field: String,
        parse: fn(&str) -> Result<T, IdError>,
    ) -> Result<T, RegistryError> {
        parse(value.get_ref()).map_err(|e| self.at(value, field, e.to_string()))
    }
}

/// Checks `host:port`: a non-empty host without whitespace and a non-zero u16 port.
fn address_ok(address: &str) -> bool {
    address.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.contains(char::is_whitespace)
            && port.parse::<u16>().is_ok_and(|p| p != 0)
    })
}

impl Registry {
    /// Reads and validates a registry file.
    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates registry TOML; `origin` names the source in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Registry, RegistryError> {
        let cx = Ctx { text, origin };
        let raw: RawFile = toml::from_str(text)
            .map_err(|e| cx.err(e.span(), "toml".into(), e.message().trim_end().to_owned()))?;

        // Agencies.
        let mut agencies = BTreeMap::new();
        let mut codes = Vec::new();
        for (i, a) in raw.agency.iter().enumerate() {
            let code = cx.parse(&a.code, format!("agency[{i}].code"), AgencyCode::parse)?;
            if a.name.get_ref().trim().is_empty() {
                return Err(cx.at(&a.name, format!("agency[{i}].name"), "name is empty".into()));
            }
            let parent = match &a.parent {
                Some(p) => Some(cx.parse(p, format!("agency[{i}].parent"), AgencyCode::parse)?),
                None => None,
            };
            if agencies.contains_key(&code) {
                return Err(cx.at(
                    &a.code,
                    format!("agency[{i}].code"),
                    format!("duplicate agency code {code}"),
                ));
            }
            codes.push(code.clone());
            agencies.insert(
                code.clone(),
                Agency {
                    code,
                    name: a.name.get_ref().clone(),
                    parent,
                },
            );
        }
        // Each agency's chain is walked once: a walk stops at an agency
        // already known to reach a root, so the check is linear in the
        // number of agencies whatever the depth (a national registry has
        // tens of thousands).
        for (i, (a, code)) in raw.agency.iter().zip(&codes).enumerate() {
            let Some(p) = &a.parent else { continue };
            let field = format!("agency[{i}].parent");
            let parent = agencies.get(code).and_then(|x| x.parent.as_ref());
            let Some(parent) = parent else { continue };
            if parent == code {
                return Err(cx.at(p, field, format!("agency {code} is its own parent")));
            }
            if !agencies.contains_key(parent) {
                return Err(cx.at(p, field, format!("unknown parent agency {parent}")));
            }
        }
        let index: BTreeMap<&AgencyCode, usize> =
            codes.iter().enumerate().map(|(i, c)| (c, i)).collect();
        let mut rooted: BTreeSet<&AgencyCode> = BTreeSet::new();
        // The walk so far, and each agency's place in it.
        let mut path: Vec<&AgencyCode> = Vec::new();
        let mut at: BTreeMap<&AgencyCode, usize> = BTreeMap::new();
        for code in &codes {
            path.clear();
            at.clear();
            let mut cur = Some(code);
            while let Some(c) = cur {
                if rooted.contains(c) {
                    break;
                }
                if let Some(&start) = at.get(c) {
                    // The cycle is named at its first agency in the file,
                    // whichever agency's walk ran into it.
                    let first = path[start..]
                        .iter()
                        .map(|c| index[c])
                        .min()
                        .expect("a cycle has agencies");
                    let code = &codes[first];
                    let p = raw.agency[first].parent.as_ref().expect("in a cycle");
                    return Err(cx.at(
                        p,
                        format!("agency[{first}].parent"),
                        format!("parent chain of agency {code} forms a cycle"),
                    ));
                }
                at.insert(c, path.len());
                path.push(c);
                cur = agencies.get(c).and_then(|x| x.parent.as_ref());
            }
            rooted.extend(path.iter().copied());
        }

        // Nodes.
        let mut nodes = BTreeMap::new();
        let mut hosting = BTreeMap::new();
        let mut addresses = BTreeSet::new();
        for (i, n) in raw.node.iter().enumerate() {
            let id = cx.parse(&n.id, format!("node[{i}].id"), NodeId::parse)?;
            if nodes.contains_key(&id) {
                return Err(cx.at(
                    &n.id,
                    format!("node[{i}].id"),
                    format!("duplicate node id {id}"),
                ));
            }
            let address = n.address.get_ref();
            if !address_ok(address) {
                return Err(cx.at(
                    &n.address,
                    format!("node[{i}].address"),
                    format!("invalid address {address:?}: expected host:port, e.g. 127.0.0.1:7101"),
                ));
            }
            if !addresses.insert(address.clone()) {
                return Err(cx.at(
                    &n.address,
                    format!("node[{i}].address"),
                    format!("duplicate node address {address}"),
                ));
            }
            let mut hosted = Vec::new();
            for (j, a) in n.agencies.iter().enumerate() {
                let field = format!("node[{i}].agencies[{j}]");
                let code = cx.parse(a, field.clone(), AgencyCode::parse)?;
                if !agencies.contains_key(&code) {
                    return Err(cx.at(a, field, format!("unknown agency {code}")));
                }
                if let Some(other) = hosting.get(&code) {
                    return Err(cx.at(
                        a,
                        field,
                        format!("agency {code} is already hosted by node {other}"),
                    ));
                }
                hosting.insert(code.clone(), id.clone());
                hosted.push(code);
            }
            let witness_key = match &n.witness_key {
                None => None,
                Some(k) => Some(
                    hex::decode(k.get_ref().trim())
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .ok_or_else(|| {
                            cx.at(
                                k,
                                format!("node[{i}].witness_key"),
                                "expected the 64 hex digits of an Ed25519 public key".into(),
                            )
                        })?,
                ),
            };
            nodes.insert(
                id.clone(),
                Node {
                    id,
                    address: address.clone(),
                    agencies: hosted,
                    witness_key,
                },
            );
        }

        // Services.
        let mut services = BTreeMap::new();
        for (i, s) in raw.service.iter().enumerate() {
            let field = format!("service[{i}].id");
            let id = cx.parse(&s.id, field.clone(), ServiceId::parse)?;
            if services.contains_key(&id) {
                return Err(cx.at(&s.id, field, format!("duplicate service id {id}")));
            }
            let provider = id.provider();
            if !agencies.contains_key(provider) {
                return Err(cx.at(&s.id, field, format!("unknown provider agency {provider}")));
            }
            if !hosting.contains_key(provider) {
                return Err(cx.at(
                    &s.id,
                    field,
                    format!("provider agency {provider} is not hosted by any node"),
                ));
            }
            services.insert(
                id.clone(),
                Service {
                    id,
                    description: s.description.clone(),
                },
            );
        }

        let hashed_end_users = raw
            .service
            .iter()
            .filter(|s| s.hash_end_user)
            .filter_map(|s| ServiceId::parse(s.id.get_ref()).ok())
            .collect();

        // Grants. A pair granted twice requires a purpose only if both
        // grants do (either grant suffices).
        let mut grants: BTreeMap<AgencyCode, BTreeSet<ServiceId>> = BTreeMap::new();
        let mut rules: BTreeMap<(AgencyCode, ServiceId), Option<PurposeRule>> = BTreeMap::new();
        for (i, g) in raw.grant.iter().enumerate() {
            let field = format!("grant[{i}].client");
            let client = cx.parse(&g.client, field.clone(), AgencyCode::parse)?;
            if !agencies.contains_key(&client) {
                return Err(cx.at(&g.client, field, format!("unknown client agency {client}")));
            }
            let mut listed = BTreeSet::new();
            for (j, p) in g.purposes.iter().enumerate() {
                let text = p.get_ref();
                if text.is_empty()
                    || text.chars().count() > MAX_PURPOSE_CHARS
                    || text.chars().any(char::is_control)
                {
                    return Err(cx.at(
                        p,
                        format!("grant[{i}].purposes[{j}]"),
                        format!(
                            "a purpose is 1 to {MAX_PURPOSE_CHARS} characters without control characters"
                        ),
                    ));
                }
                listed.insert(text.clone());
            }
            let rule = if !listed.is_empty() {
                Some(PurposeRule::OneOf(listed))
            } else if g.require_purpose {
                Some(PurposeRule::Any)
            } else {
                None
            };
            for (j, s) in g.services.iter().enumerate() {
                let field = format!("grant[{i}].services[{j}]");
                let id = cx.parse(s, field.clone(), ServiceId::parse)?;
                if !services.contains_key(&id) {
                    return Err(cx.at(s, field, format!("unknown service {id}")));
                }
                grants.entry(client.clone()).or_default().insert(id.clone());
                let merged = match rules.remove(&(client.clone(), id.clone())) {
                    None => rule.clone(),
                    Some(old) => old.zip(rule.clone()).map(|(a, b)| a.or(b)),
                };
                rules.insert((client.clone(), id), merged);
            }
        }
        let purposes = rules
            .into_iter()
            .filter_map(|(pair, rule)| rule.map(|r| (pair, r)))
            .collect();

        // Documents.
        let documents_by_default = match raw.documents.default.get_ref().as_str() {
            "allow" => true,
            "deny" => false,
            other => {
                return Err(cx.at(
                    &raw.documents.default,
                    "documents.default".into(),
                    format!("{other:?}: expected \"allow\" or \"deny\""),
                ));
            }
        };
        let mut document_grants: BTreeMap<AgencyCode, BTreeSet<AgencyCode>> = BTreeMap::new();
        for (i, g) in raw.document_grant.iter().enumerate() {
            let field = format!("document_grant[{i}].sender");
            let sender = cx.parse(&g.sender, field.clone(), AgencyCode::parse)?;
            if !agencies.contains_key(&sender) {
                return Err(cx.at(&g.sender, field, format!("unknown agency {sender}")));
            }
            for (j, r) in g.recipients.iter().enumerate() {
                let field = format!("document_grant[{i}].recipients[{j}]");
                let recipient = cx.parse(r, field.clone(), AgencyCode::parse)?;
                if !agencies.contains_key(&recipient) {
                    return Err(cx.at(r, field, format!("unknown agency {recipient}")));
                }
                document_grants
                    .entry(sender.clone())
                    .or_default()
                    .insert(recipient);
            }
        }

        let quotas = cx.quotas(&raw.quota, &agencies, &services)?;

        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.as_ref());
        Ok(Registry {
            agencies,
            nodes,
            hosting,
            services,
            grants,
            documents_by_default,
            document_grants,
            purposes,
            hash_end_user: raw.hash_end_user,
            hashed_end_users,
            quotas,
            sha256,
        })
    }

    /// The agency with this code.
    pub fn agency(&self, code: &AgencyCode) -> Option<&Agency> {
        self.agencies.get(code)
    }

    /// All agencies, ordered by code.
    pub fn agencies(&self) -> impl Iterator<Item = &Agency> {
        self.agencies.values()
    }

    /// The node with this id.
    pub fn node(&self, id: &NodeId) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// All nodes, ordered by id.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// The node hosting this agency (at most one, by validation).
    pub fn node_hosting(&self, agency: &AgencyCode) -> Option<&Node> {
        self.hosting.get(agency).and_then(|id| self.nodes.get(id))
    }

    /// Whether `node` hosts `agency`.
    pub fn hosts(&self, node: &NodeId, agency: &AgencyCode) -> bool {
        self.hosting.get(agency) == Some(node)
    }

    /// The service with this id.
    pub fn service(&self, id: &ServiceId) -> Option<&Service> {
        self.services.get(id)
    }

    /// All services, ordered by id.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// Whether `client` itself is granted `service`; grants to a parent agency
    /// are not inherited by its children (nor the reverse).
    pub fn is_granted(&self, client: &AgencyCode, service: &ServiceId) -> bool {
        self.grants.get(client).is_some_and(|s| s.contains(service))
    }

    /// The purpose `client`'s calls to `service` must give, if its grant
    /// requires one.
    pub fn required_purpose(
        &self,
        client: &AgencyCode,
        service: &ServiceId,
    ) -> Option<&PurposeRule> {
        self.purposes.get(&(client.clone(), service.clone()))
    }

    /// Whether the hub records the end users of calls to `service` as a
    /// keyed hash (`hash_end_user = true`, globally or for the service).
    pub fn hashes_end_user(&self, service: &ServiceId) -> bool {
        self.hash_end_user || self.hashed_end_users.contains(service)
    }

    /// Whether any service's end users are recorded as a keyed hash.
    pub fn hashes_any_end_user(&self) -> bool {
        self.hash_end_user || !self.hashed_end_users.is_empty()
    }

    /// Whether `sender` may send documents to `recipient`: both must exist,
    /// and either `[documents] default = "allow"` (the default) or a
    /// `[[document_grant]]` names the pair.
    pub fn may_send_document(&self, sender: &AgencyCode, recipient: &AgencyCode) -> bool {
        self.agencies.contains_key(sender)
            && self.agencies.contains_key(recipient)
            && (self.documents_by_default
                || self
                    .document_grants
                    .get(sender)
                    .is_some_and(|r| r.contains(recipient)))
    }

    /// All grants as (client, service), ordered by client then service.
    pub fn grants(&self) -> impl Iterator<Item = (&AgencyCode, &ServiceId)> {
        self.grants
            .iter()
            .flat_map(|(c, ss)| ss.iter().map(move |s| (c, s)))
    }

    /// The call quotas (`[quota]`), which the hub enforces.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// SHA-256 of the registry text this was loaded from.
    pub fn source_sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// The registry as a protobuf snapshot (entries in sorted order). The
    /// hub adds its audit public key, which is not part of the file.
    pub fn to_snapshot(&self) -> pb::RegistrySnapshot {
        pb::RegistrySnapshot {
            source_sha256: bytes::Bytes::copy_from_slice(&self.sha256),
            agencies: self
                .agencies()
                .map(|a| pb::AgencyEntry {
                    code: a.code.to_string(),
                    name: a.name.clone(),
                    parent: a.parent.as_ref().map(|p| p.to_string()).unwrap_or_default(),
                })
                .collect(),
            nodes: self
                .nodes()
                .map(|n| pb::NodeEntry {
                    id: n.id.to_string(),
                    address: n.address.clone(),
                    agencies: n.agencies.iter().map(|a| a.to_string()).collect(),
                    witness_key: n
                        .witness_key
                        .map(|k| bytes::Bytes::copy_from_slice(&k))
                        .unwrap_or_default(),
                })
                .collect(),
            services: self
                .services()
                .map(|s| pb::ServiceEntry {
                    id: s.id.to_string(),
                    provider: s.id.provider().to_string(),
                    description: s.description.clone(),
                })
                .collect(),
            grants: self
                .grants()
                .map(|(c, s)| pb::GrantEntry {
                    client: c.to_string(),
                    service: s.to_string(),
                })
                .collect(),
            ..pb::RegistrySnapshot::default()
        }
    }
}
