//! The hub's call quotas: one token bucket (governor's GCRA) per (client
//! agency, service) pair that the registry grants and limits, enforcing
//! this replica's share of the registry's limit ([`Quotas::per_replica`]).
//!
//! The buckets are made from the registry alone, never from a request: a
//! call only looks its pair up, after the registry checks admitted it, so a
//! node naming agencies or services it made up can neither grow the map nor
//! spend anyone's quota. A reloaded registry is taken up at the next call;
//! a pair whose limit did not change keeps its bucket (a reload refills no
//! one), a pair no longer limited or granted loses it.
//!
//! Time is tokio's clock, so tests can pause and advance it.
//!
//! [`Quotas::per_replica`]: truc_registry::Quotas::per_replica

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, RwLock},
    time::Duration,
};

use governor::{
    Quota, RateLimiter,
    clock::Clock,
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed},
};
use truc_registry::{AgencyCode, Limit, Registry, ServiceId};

/// Tokio's clock as governor counts time: the time since the quotas were
/// made.
#[derive(Clone, Copy, Debug)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// The buckets made from one registry.
struct Built {
    /// The registry they were made from (compared by pointer: a reload is
    /// a new `Arc`).
    registry: Option<Arc<Registry>>,
    buckets: Buckets,
}

/// Client agency → service → its limit and bucket (nested, so that a call
/// looks its pair up by reference, allocating nothing).
type Buckets = HashMap<AgencyCode, HashMap<ServiceId, (Limit, Arc<Bucket>)>>;

impl Built {
    /// The bucket of the pair, if it is limited.
    fn get(&self, client: &AgencyCode, service: &ServiceId) -> Option<Arc<Bucket>> {
        self.buckets
            .get(client)?
            .get(service)
            .map(|(_, b)| b.clone())
    }

    /// Whether these are the buckets of `registry`.
    fn is_of(&self, registry: &Arc<Registry>) -> bool {
        self.registry
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, registry))
    }
}

/// The quotas of this replica.
pub(crate) struct Quotas {
    clock: TokioClock,
    built: RwLock<Built>,
}

impl Quotas {
    /// No buckets yet; they are made from the registry of the first call.
    pub(crate) fn new() -> Quotas {
        Quotas {
            clock: TokioClock {
                origin: tokio::time::Instant::now(),
            },
            built: RwLock::new(Built {
                registry: None,
                buckets: HashMap::new(),
            }),
        }
    }

    /// Takes one call of `client` to `service` from its bucket, under
    /// `registry`; `Err` is how long until the bucket has one again. A pair
    /// without a limit always passes. Only for pairs the registry grants:
    /// the caller checks that first.
    pub(crate) fn take(
        &self,
        registry: &Arc<Registry>,
        client: &AgencyCode,
        service: &ServiceId,
    ) -> Result<(), Duration> {
        let bucket = self.bucket(registry, client, service);
        let Some(bucket) = bucket else {
            return Ok(());
        };
        bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// How many buckets there are now.
    #[cfg(test)]
    pub(crate) fn buckets(&self) -> usize {
        self.built
            .read()
            .map(|b| b.buckets.values().map(HashMap::len).sum())
            .unwrap_or(0)
    }

    fn bucket(
        &self,
        registry: &Arc<Registry>,
        client: &AgencyCode,
        service: &ServiceId,
    ) -> Option<Arc<Bucket>> {
        {
            let built = match self.built.read() {
                Ok(b) => b,
                Err(poisoned) => poisoned.into_inner(),
            };
            if built.is_of(registry) {
                return built.get(client, service);
            }
        }
        let mut built = match self.built.write() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Another call may have rebuilt it meanwhile.
        if !built.is_of(registry) {
            let buckets = self.rebuild(registry, &built.buckets);
            tracing::info!(buckets = buckets.len(), "quotas taken from the registry");
            *built = Built {
                registry: Some(registry.clone()),
                buckets,
            };
        }
        built.get(client, service)
    }

    /// The buckets of `registry`: one per granted pair it limits, the
    /// bucket of `old` kept where the limit is the same.
    fn rebuild(&self, registry: &Registry, old: &Buckets) -> Buckets {
        let quotas = registry.quotas();
        let mut buckets = Buckets::new();
        for (client, service) in registry.grants() {
            let Some(limit) = quotas.per_replica(client, service) else {
                continue;
            };
            let bucket = match old.get(client).and_then(|s| s.get(service)) {
                Some((l, b)) if *l == limit => b.clone(),
                _ => Arc::new(RateLimiter::direct_with_clock(quota(limit), self.clock)),
            };
            buckets
                .entry(client.clone())
                .or_default()
                .insert(service.clone(), (limit, bucket));
        }
        buckets
    }
}

/// A limit as governor's quota: one call every `1 / rate` seconds, `burst`
/// at once. The registry bounds both, so the period is a positive number of
/// seconds that fits a `Duration`.
fn quota(limit: Limit) -> Quota {
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    let period = Duration::try_from_secs_f64(1.0 / limit.rate)
        .ok()
        .filter(|p| !p.is_zero())
        .unwrap_or(Duration::from_nanos(1));
    Quota::with_period(period)
        .unwrap_or(Quota::per_second(burst))
        .allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tests::{LOOKUP, REGISTRY};

    fn registry(quota: &str) -> Arc<Registry> {
        Arc::new(
            Registry::from_toml_str(&format!("{REGISTRY}{quota}"), "test.toml")
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    fn pair() -> (AgencyCode, ServiceId) {
        (
            AgencyCode::parse("000.00.00.H37").unwrap_or_else(|e| panic!("{e}")),
            ServiceId::parse(LOOKUP).unwrap_or_else(|e| panic!("{e}")),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_the_rate_refills_it() {
        let q = Quotas::new();
        let r = registry("[quota]\nrate = 2\nburst = 3\n");
        let (c, s) = pair();
        for i in 0..3 {
            assert_eq!(q.take(&r, &c, &s), Ok(()), "call {i} of the burst");
        }
        let wait = q.take(&r, &c, &s).expect_err("over the burst");
        assert_eq!(wait, Duration::from_millis(500), "one call every 500 ms");
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(q.take(&r, &c, &s).is_err(), "not yet");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(q.take(&r, &c, &s), Ok(()));
        assert!(q.take(&r, &c, &s).is_err(), "one call refilled, not two");
    }

    #[tokio::test(start_paused = true)]
    async fn each_replica_enforces_its_share() {
        let q = Quotas::new();
        let r = registry("[quota]\nrate = 30\nburst = 9\nreplicas = 3\n");
        let (c, s) = pair();
        for _ in 0..3 {
            assert_eq!(q.take(&r, &c, &s), Ok(()));
        }
        assert_eq!(
            q.take(&r, &c, &s),
            Err(Duration::from_millis(100)),
            "10 calls per second here"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_changes_the_limit_and_keeps_an_unchanged_bucket() {
        let q = Quotas::new();
        let (c, s) = pair();
        let one = registry("[quota]\nrate = 1\nburst = 1\n");
        assert_eq!(q.take(&one, &c, &s), Ok(()));
        assert!(q.take(&one, &c, &s).is_err());
        // The same limits from a reloaded file: the bucket stays empty.
        let same = registry("[quota]\nrate = 1\nburst = 1\n");
        assert!(q.take(&same, &c, &s).is_err(), "a reload refills no one");
        let more = registry("[quota]\nrate = 1\nburst = 5\n");
        for _ in 0..5 {
            assert_eq!(q.take(&more, &c, &s), Ok(()));
        }
        assert!(q.take(&more, &c, &s).is_err());
        let none = registry("");
        for _ in 0..100 {
            assert_eq!(q.take(&none, &c, &s), Ok(()), "no longer limited");
        }
    }

    #[test]
    fn tiny_and_huge_rates_make_a_quota() {
        let slow = quota(Limit {
            rate: 0.0001,
            burst: 1,
        });
        assert_eq!(slow.replenish_interval(), Duration::from_secs(10_000));
        let fast = quota(Limit {
            rate: 1_000_000.0,
            burst: 1_000_000,
        });
        assert_eq!(fast.replenish_interval(), Duration::from_micros(1));
        assert_eq!(fast.burst_size().get(), 1_000_000);
    }
}
