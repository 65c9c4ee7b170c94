//! Slicing the statistics: filter the counters, group them by any of their
//! dimensions (or by month or year of their day), and add them up; and
//! merging the `GetStats` answers of several hub replicas exactly.

use std::collections::BTreeMap;

use truc_proto::v1::{GetStatsResponse, StatsRow};

use crate::{CountKey, Sketch, SketchError, Stats};

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
            self.errors = self.errors.saturating_add(s.count);
        }
    }

    fn merge(&mut self, other: &Group) {
        self.stats.add(&other.stats);
        self.errors = self.errors.saturating_add(other.errors);
    }

    /// The row `GetStats` answers: sums, percentiles read from the sketch,
    /// and the sketch itself, so that a client can merge rows.
    pub fn to_row(&self) -> StatsRow {
        let q = |p| self.stats.latency_quantile_ms(p).unwrap_or(0.0);
        StatsRow {
            keys: self.keys.clone(),
            count: self.stats.count,
            errors: self.errors,
            request_bytes: self.stats.request_bytes,
            response_bytes: self.stats.response_bytes,
            p50_ms: q(0.5),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            latency: Some(self.stats.latency.to_proto()),
        }
    }

    /// A row as a replica sent it, checked: its sketch reads and counts as
    /// many latencies as the row transactions, and its errors are some of them.
    pub fn from_row(row: &StatsRow) -> Result<Group, MergeError> {
        let keys = || row.keys.clone();
        let sketch = row
            .latency
            .as_ref()
            .ok_or_else(|| MergeError::NoSketch { keys: keys() })?;
        let latency = Sketch::from_proto(sketch).map_err(|source| MergeError::Sketch {
            keys: keys(),
            source,
        })?;
        if latency.total() != row.count || row.errors > row.count {
            return Err(MergeError::Inconsistent {
                keys: keys(),
                count: row.count,
                errors: row.errors,
                latencies: latency.total(),
            });
        }
        Ok(Group {
            keys: row.keys.clone(),
            stats: Stats {
                count: row.count,
                request_bytes: row.request_bytes,
                response_bytes: row.response_bytes,
                latency,
            },
            errors: row.errors,
        })
    }
}

/// `GetStats` answers that cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A row without a sketch: a hub of an earlier build.
    #[error(
        "row {keys:?} carries no latency sketch (a hub of an earlier build): its percentiles cannot be merged"
    )]
    NoSketch {
        /// The row's keys.
        keys: Vec<String>,
    },
    /// A sketch that does not read.
    #[error("row {keys:?}: {source}")]
    Sketch {
        /// The row's keys.
        keys: Vec<String>,
        /// What is wrong with the sketch.
        #[source]
        source: SketchError,
    },
    /// Counts that contradict each other.
    #[error("row {keys:?} counts {count} transactions, {errors} errors and {latencies} latencies")]
    Inconsistent {
        /// The row's keys.
        keys: Vec<String>,
        /// Transactions.
        count: u64,
        /// Errors.
        errors: u64,
        /// Latencies in its sketch.
        latencies: u64,
    },
    /// A row with another number of keys than the grouping.
    #[error("row {keys:?} has {} keys where the grouping has {want}", keys.len())]
    Keys {
        /// The row's keys.
        keys: Vec<String>,
        /// Dimensions grouped by.
        want: usize,
    },
    /// Answers grouped differently, or with days cut in other time zones.
    #[error("answers differ in {what}: {first:?} and {other:?}")]
    Mismatch {
        /// `group_by` or `time zone`.
        what: &'static str,
        /// The first answer's.
        first: String,
        /// Another answer's.
        other: String,
    },
}

/// The answers of several replicas as one: rows with the same keys add up
/// (counts and bytes add, sketches merge), then the percentiles are read
/// from the merged sketches, so the merge of the replicas' rows is what one
/// hub holding all their transactions would answer. Every row of every
/// answer is checked first; nothing is merged from an answer that fails.
pub fn merge_responses(answers: &[GetStatsResponse]) -> Result<GetStatsResponse, MergeError> {
    let Some(first) = answers.first() else {
        return Ok(GetStatsResponse::default());
    };
    let mut groups: BTreeMap<Vec<String>, Group> = BTreeMap::new();
    let mut total = Group::default();
    for answer in answers {
        if answer.group_by != first.group_by {
            return Err(MergeError::Mismatch {
                what: "group_by",
                first: first.group_by.join(","),
                other: answer.group_by.join(","),
            });
        }
        if answer.time_zone != first.time_zone {
            return Err(MergeError::Mismatch {
                what: "time zone",
                first: first.time_zone.clone(),
                other: answer.time_zone.clone(),
            });
        }
        let rows = answer
            .rows
            .iter()
            .map(|row| {
                if row.keys.len() != first.group_by.len() {
                    return Err(MergeError::Keys {
                        keys: row.keys.clone(),
                        want: first.group_by.len(),
                    });
                }
                Group::from_row(row)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let answer_total = match &answer.total {
            Some(t) => Group::from_row(t)?,
            None => Group::default(),
        };
        for g in rows {
            match groups.get_mut(&g.keys) {
                Some(existing) => existing.merge(&g),
                None => {
                    groups.insert(g.keys.clone(), g);
                }
            }
        }
        total.merge(&answer_total);
    }
    total.keys = Vec::new();
    Ok(GetStatsResponse {
        group_by: first.group_by.clone(),
        rows: groups.values().map(Group::to_row).collect(),
        total: Some(total.to_row()),
        time_zone: first.time_zone.clone(),
    })
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

#[cfg(test)]
mod merge_tests {
    use super::*;

    fn key(day: &str, client: &str, outcome: &str) -> CountKey {
        CountKey::new(day, client, "G22", "s", "call", outcome)
    }

    /// A replica's answer over `cells`, grouped by client and outcome.
    fn answer(cells: &[(CountKey, Stats)]) -> GetStatsResponse {
        let (groups, total) = aggregate(
            cells.iter().map(|(k, s)| (k, s)),
            &[Dim::Client, Dim::Outcome],
            &Filter::default(),
            |_| true,
        );
        GetStatsResponse {
            group_by: vec!["client".into(), "outcome".into()],
            rows: groups.iter().map(Group::to_row).collect(),
            total: Some(total.to_row()),
            time_zone: "+07:00".into(),
        }
    }

    fn cells(seed: u64, n: u64) -> Vec<(CountKey, Stats)> {
        (0..n)
            .map(|i| {
                let client = ["A", "B", "C"][((i + seed) % 3) as usize];
                let outcome = if (i * seed) % 7 == 0 {
                    "NOT_FOUND"
                } else {
                    "OK"
                };
                let day = if i % 2 == 0 {
                    "2026-11-01"
                } else {
                    "2026-11-02"
                };
                let latency = 1 + (i * 7919 + seed * 104_729) % 400_000;
                (key(day, client, outcome), Stats::one(i, 2 * i, latency))
            })
            .collect()
    }

    #[test]
    fn merged_replica_answers_equal_the_answer_over_the_union() {
        let replicas = [cells(1, 300), cells(2, 500), cells(3, 50)];
        let answers: Vec<GetStatsResponse> = replicas.iter().map(|c| answer(c)).collect();
        let merged = merge_responses(&answers).expect("merges");
        let union: Vec<(CountKey, Stats)> = replicas.concat();
        assert_eq!(merged, answer(&union));
        let total = merged.total.expect("total");
        assert_eq!(total.count, 850);
        assert!(total.p50_ms < total.p95_ms && total.p95_ms < total.p99_ms);
        // Any order, any grouping of the merge.
        let rev: Vec<GetStatsResponse> = answers.iter().rev().cloned().collect();
        assert_eq!(merge_responses(&rev).expect("merges"), answer(&union));
        let ab = merge_responses(&answers[..2]).expect("merges");
        assert_eq!(
            merge_responses(&[ab, answers[2].clone()]).expect("merges"),
            answer(&union)
        );
    }

    #[test]
    fn hostile_or_unmergeable_rows_are_errors() {
        let good = answer(&cells(1, 20));
        let with_row = |f: &dyn Fn(&mut StatsRow)| {
            let mut a = good.clone();
            f(&mut a.rows[0]);
            merge_responses(&[good.clone(), a]).expect_err("refused")
        };
        assert!(matches!(
            with_row(&|r| r.latency = None),
            MergeError::NoSketch { .. }
        ));
        assert!(matches!(
            with_row(&|r| r.count += 1),
            MergeError::Inconsistent { .. }
        ));
        assert!(matches!(
            with_row(&|r| r.errors = r.count + 1),
            MergeError::Inconsistent { .. }
        ));
        assert!(matches!(
            with_row(&|r| r.keys.push("x".into())),
            MergeError::Keys { .. }
        ));
        let e = with_row(&|r| {
            if let Some(l) = r.latency.as_mut() {
                l.indexes.push(u32::MAX);
                l.counts.push(1);
            }
        });
        assert!(
            matches!(
                e,
                MergeError::Sketch {
                    source: SketchError::Index { .. },
                    ..
                }
            ),
            "{e}"
        );
        let mut other_zone = good.clone();
        other_zone.time_zone = "+00:00".into();
        let e = merge_responses(&[good.clone(), other_zone]).expect_err("zones");
        assert!(e.to_string().contains("time zone"), "{e}");
        // Sums at their limits saturate rather than wrap or panic.
        let mut big = good.clone();
        for r in big.rows.iter_mut().chain(big.total.as_mut()) {
            r.request_bytes = u64::MAX;
        }
        let merged = merge_responses(&[big.clone(), big]).expect("merges");
        assert_eq!(merged.total.expect("total").request_bytes, u64::MAX);
    }
}
