//! Slicing the statistics: filter the counters, group them by any of their
//! dimensions (or by month or year of their day), and add them up.

use std::collections::BTreeMap;

use crate::{CountKey, Stats};

/// A dimension to group by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// Client agency.
    Client,
    /// Provider agency.
    Provider,
    /// Service (or `document/…`, `status/…`).
    Service,
    /// call, document, status.
    Kind,
    /// gRPC code name.
    Outcome,
    /// `YYYY-MM-DD`.
    Day,
    /// `YYYY-MM`.
    Month,
    /// `YYYY`.
    Year,
}

impl Dim {
    /// `client`, `provider`, `service`, `kind`, `outcome`, `day`, `month`, `year`.
    pub fn parse(name: &str) -> Option<Dim> {
        Some(match name {
            "client" => Dim::Client,
            "provider" => Dim::Provider,
            "service" => Dim::Service,
            "kind" => Dim::Kind,
            "outcome" => Dim::Outcome,
            "day" => Dim::Day,
            "month" => Dim::Month,
            "year" => Dim::Year,
            _ => return None,
        })
    }

    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Dim::Client => "client",
            Dim::Provider => "provider",
            Dim::Service => "service",
            Dim::Kind => "kind",
            Dim::Outcome => "outcome",
            Dim::Day => "day",
            Dim::Month => "month",
            Dim::Year => "year",
        }
    }

    fn value(self, k: &CountKey) -> String {
        match self {
            Dim::Client => k.client.clone(),
            Dim::Provider => k.provider.clone(),
            Dim::Service => k.service.clone(),
            Dim::Kind => k.kind.clone(),
            Dim::Outcome => k.outcome.clone(),
            Dim::Day => k.day.clone(),
            Dim::Month => k.day.get(..7).unwrap_or(&k.day).to_string(),
            Dim::Year => k.day.get(..4).unwrap_or(&k.day).to_string(),
        }
    }
}

/// Which counters to count; empty fields match everything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// First day, inclusive.
    pub from_day: String,
    /// Last day, inclusive.
    pub to_day: String,
    /// Client agency.
    pub client: String,
    /// Provider agency.
    pub provider: String,
    /// Service.
    pub service: String,
    /// Kind.
    pub kind: String,
    /// Outcome.
    pub outcome: String,
}

impl Filter {
    /// Whether the counter `k` is in.
    pub fn matches(&self, k: &CountKey) -> bool {
        let eq = |f: &str, v: &str| f.is_empty() || f == v;
        (self.from_day.is_empty() || k.day >= self.from_day)
            && (self.to_day.is_empty() || k.day <= self.to_day)
            && eq(&self.client, &k.client)
            && eq(&self.provider, &k.provider)
            && eq(&self.service, &k.service)
            && eq(&self.kind, &k.kind)
            && eq(&self.outcome, &k.outcome)
    }
}

/// One group of counters added up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    /// The group's value for each dimension.
    pub keys: Vec<String>,
    /// The sums.
    pub stats: Stats,
    /// Transactions whose outcome is not OK.
    pub errors: u64,
}

impl Group {
    fn add(&mut self, k: &CountKey, s: &Stats) {
        self.stats.add(s);
        if k.outcome != "OK" {
            self.errors += s.count;
        }
    }
}

/// The groups (ordered by their keys) and the total of the counters that
/// pass `filter` and `visible`.
pub fn aggregate<'a>(
    cells: impl IntoIterator<Item = (&'a CountKey, &'a Stats)>,
    dims: &[Dim],
    filter: &Filter,
    visible: impl Fn(&CountKey) -> bool,
) -> (Vec<Group>, Group) {
    let mut groups: BTreeMap<Vec<String>, Group> = BTreeMap::new();
    let mut total = Group::default();
    for (k, s) in cells {
        if !filter.matches(k) || !visible(k) {
            continue;
        }
        let keys: Vec<String> = dims.iter().map(|d| d.value(k)).collect();
        let g = groups.entry(keys.clone()).or_insert_with(|| Group {
            keys,
            ..Group::default()
        });
        g.add(k, s);
        total.add(k, s);
    }
    (groups.into_values().collect(), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(day: &str, client: &str, outcome: &str) -> CountKey {
        CountKey {
            day: day.into(),
            client: client.into(),
            provider: "000.00.00.G22".into(),
            service: "s".into(),
            kind: "call".into(),
            outcome: outcome.into(),
        }
    }

    #[test]
    fn groups_by_month_and_client_with_totals() {
        let cells = [
            (key("2026-10-31", "A", "OK"), Stats::one(1, 1, 10)),
            (key("2026-11-01", "A", "OK"), Stats::one(1, 1, 10)),
            (key("2026-11-02", "A", "NOT_FOUND"), Stats::one(1, 0, 10)),
            (key("2026-11-02", "B", "OK"), Stats::one(1, 1, 10)),
        ];
        let (groups, total) = aggregate(
            cells.iter().map(|(k, s)| (k, s)),
            &[Dim::Month, Dim::Client],
            &Filter {
                from_day: "2026-11-01".into(),
                ..Filter::default()
            },
            |_| true,
        );
        assert_eq!(total.stats.count, 3);
        assert_eq!(total.errors, 1);
        let keys: Vec<Vec<String>> = groups.iter().map(|g| g.keys.clone()).collect();
        assert_eq!(
            keys,
            vec![
                vec!["2026-11".to_string(), "A".to_string()],
                vec!["2026-11".to_string(), "B".to_string()]
            ]
        );
        assert_eq!(groups[0].stats.count, 2);
        assert_eq!(groups[0].errors, 1);
        assert_eq!(Dim::parse("year"), Some(Dim::Year));
        assert_eq!(Dim::parse("week"), None);
    }
}
