//! Call quotas: how many data calls per second each client agency may make
//! to each service, and how many at once, as the `[quota]` table of the
//! registry says. This module only reads and validates them; the hub
//! enforces them.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::registry::Ctx;
use crate::{AgencyCode, RegistryError, ServiceId};

/// Highest rate a quota may give, in calls per second.
const MAX_RATE: f64 = 1_000_000.0;
/// Lowest rate a quota may give (one call in a bit under three hours).
const MIN_RATE: f64 = 0.0001;
/// Largest burst a quota may give.
const MAX_BURST: u32 = 1_000_000;
/// Most hub replicas a quota may be divided between.
const MAX_REPLICAS: u32 = 1_000;

/// A token bucket: `rate` calls per second on average, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    /// Calls per second, refilled continuously.
    pub rate: f64,
    /// Calls that may come at once after a quiet time (the bucket's size).
    pub burst: u32,
}

impl Limit {
    /// What each of `replicas` hub replicas enforces of this limit: the rate
    /// divided between them, and the burst too, rounded up (at least 1), so
    /// the deployment together allows at most the limit plus one call of
    /// burst per replica.
    pub fn per_replica(self, replicas: u32) -> Limit {
        let n = replicas.max(1);
        Limit {
            rate: self.rate / f64::from(n),
            burst: self.burst.div_ceil(n).max(1),
        }
    }
}

/// The quotas of a registry: a default for every (client agency, service)
/// pair, overrides per client agency, per service and per pair, and the
/// number of hub replicas they are divided between. Each pair has a bucket
/// of its own: one agency's calls never use another agency's quota.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quotas {
    default: Option<Limit>,
    /// `None`: unlimited.
    clients: BTreeMap<AgencyCode, Option<Limit>>,
    services: BTreeMap<ServiceId, Option<Limit>>,
    pairs: BTreeMap<(AgencyCode, ServiceId), Option<Limit>>,
    replicas: u32,
}

impl Quotas {
    /// The limit of `client`'s calls to `service` for the whole deployment,
    /// or `None` when they are not limited. The most specific rule wins: the
    /// pair's override, then the client's, then the service's, then the
    /// default.
    pub fn limit(&self, client: &AgencyCode, service: &ServiceId) -> Option<Limit> {
        if let Some(l) = self.pairs.get(&(client.clone(), service.clone())) {
            return *l;
        }
        if let Some(l) = self.clients.get(client) {
            return *l;
        }
        if let Some(l) = self.services.get(service) {
            return *l;
        }
        self.default
    }

    /// The limit one hub replica enforces: [`limit`](Quotas::limit) divided
    /// between the [`replicas`](Quotas::replicas).
    pub fn per_replica(&self, client: &AgencyCode, service: &ServiceId) -> Option<Limit> {
        self.limit(client, service)
            .map(|l| l.per_replica(self.replicas))
    }

    /// The number of hub replicas the limits are divided between (1 unless
    /// `[quota] replicas` says otherwise).
    pub fn replicas(&self) -> u32 {
        self.replicas.max(1)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQuota {
    rate: Option<Spanned<f64>>,
    burst: Option<Spanned<i64>>,
    replicas: Option<Spanned<i64>>,
    #[serde(default, rename = "override")]
    overrides: Vec<RawOverride>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    client: Option<Spanned<String>>,
    service: Option<Spanned<String>>,
    rate: Option<Spanned<f64>>,
    burst: Option<Spanned<i64>>,
    #[serde(default)]
    unlimited: Option<Spanned<bool>>,
}

/// The scope an override applies to.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Client(AgencyCode),
    Service(ServiceId),
    Pair(AgencyCode, ServiceId),
}

impl Ctx<'_> {
    /// A rate and an optional burst as a limit; `field` is the table's path.
    fn limit(
        &self,
        rate: &Spanned<f64>,
        burst: Option<&Spanned<i64>>,
        field: &str,
    ) -> Result<Limit, RegistryError> {
        let r = *rate.get_ref();
        if !(MIN_RATE..=MAX_RATE).contains(&r) {
            return Err(self.at(
                rate,
                format!("{field}.rate"),
                format!(
                    "{r}: a rate is {MIN_RATE} to {MAX_RATE} calls per second (leave the quota out for no limit)"
                ),
            ));
        }
        let burst = match burst {
            // One second's worth of calls, at least one.
            None => (r.ceil() as u32).max(1),
            Some(b) => u32::try_from(*b.get_ref())
                .ok()
                .filter(|b| (1..=MAX_BURST).contains(b))
                .ok_or_else(|| {
                    self.at(
                        b,
                        format!("{field}.burst"),
                        format!("{}: a burst is 1 to {MAX_BURST} calls", b.get_ref()),
                    )
                })?,
        };
        Ok(Limit { rate: r, burst })
    }

    /// Validates the `[quota]` table against the agencies and services.
    pub(crate) fn quotas(
        &self,
        raw: &RawQuota,
        agencies: &BTreeMap<AgencyCode, crate::Agency>,
        services: &BTreeMap<ServiceId, crate::Service>,
    ) -> Result<Quotas, RegistryError> {
        let default = match (&raw.rate, &raw.burst) {
            (Some(rate), burst) => Some(self.limit(rate, burst.as_ref(), "quota")?),
            (None, Some(b)) => {
                return Err(self.at(
                    b,
                    "quota.burst".into(),
                    "a burst needs a rate (quota.rate)".into(),
                ));
            }
            (None, None) => None,
        };
        let replicas = match &raw.replicas {
            None => 1,
            Some(n) => u32::try_from(*n.get_ref())
                .ok()
                .filter(|n| (1..=MAX_REPLICAS).contains(n))
                .ok_or_else(|| {
                    self.at(
                        n,
                        "quota.replicas".into(),
                        format!(
                            "{}: the number of hub replicas is 1 to {MAX_REPLICAS}",
                            n.get_ref()
                        ),
                    )
                })?,
        };
        let mut quotas = Quotas {
            default,
            replicas,
            ..Quotas::default()
        };
        let mut seen = BTreeMap::new();
        for (i, o) in raw.overrides.iter().enumerate() {
            let field = format!("quota.override[{i}]");
            let client = match &o.client {
                None => None,
                Some(c) => {
                    let f = format!("{field}.client");
                    let code = self.parse(c, f.clone(), AgencyCode::parse)?;
                    if !agencies.contains_key(&code) {
                        return Err(self.at(c, f, format!("unknown agency {code}")));
                    }
                    Some(code)
                }
            };
            let service = match &o.service {
                None => None,
                Some(s) => {
                    let f = format!("{field}.service");
                    let id = self.parse(s, f.clone(), ServiceId::parse)?;
                    if !services.contains_key(&id) {
                        return Err(self.at(s, f, format!("unknown service {id}")));
                    }
                    Some(id)
                }
            };
            let unlimited = o.unlimited.as_ref().is_some_and(|u| *u.get_ref());
            let limit = match (&o.rate, unlimited) {
                (Some(rate), false) => Some(self.limit(rate, o.burst.as_ref(), &field)?),
                (None, true) if o.burst.is_none() => None,
                (_, true) => {
                    return Err(self.err(
                        o.unlimited.as_ref().map(|u| u.span()),
                        format!("{field}.unlimited"),
                        "an unlimited override has no rate nor burst".into(),
                    ));
                }
                (None, false) => {
                    return Err(self.err(
                        o.client.as_ref().or(o.service.as_ref()).map(|v| v.span()),
                        format!("{field}.rate"),
                        "an override needs a rate (or unlimited = true)".into(),
                    ));
                }
            };
            let scope = match (client, service) {
                (Some(c), Some(s)) => Scope::Pair(c, s),
                (Some(c), None) => Scope::Client(c),
                (None, Some(s)) => Scope::Service(s),
                (None, None) => {
                    return Err(self.err(
                        o.rate.as_ref().map(|r| r.span()),
                        format!("{field}.client"),
                        "an override names a client, a service or both".into(),
                    ));
                }
            };
            if let Some(first) = seen.insert(scope.clone(), i) {
                return Err(self.err(
                    o.client.as_ref().or(o.service.as_ref()).map(|v| v.span()),
                    field,
                    format!("the same client and service as quota.override[{first}]"),
                ));
            }
            match scope {
                Scope::Client(c) => {
                    quotas.clients.insert(c, limit);
                }
                Scope::Service(s) => {
                    quotas.services.insert(s, limit);
                }
                Scope::Pair(c, s) => {
                    quotas.pairs.insert((c, s), limit);
                }
            }
        }
        Ok(quotas)
    }
}
