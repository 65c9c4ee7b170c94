//! A mergeable latency sketch in the manner of DDSketch (Masson, Rim and Lee,
//! VLDB 2019): latencies fall in log-spaced buckets, bucket `i` holding the
//! latencies `x` (µs) with γ^(i-1) < x ≤ γ^i, γ = (1+α)/(1-α), α = 1%; a
//! bucket is reported as 2γ^i/(γ+1), within α of every value in it. Two
//! sketches merge by adding their bucket counts, so the sketch of a union is
//! exactly the merge of the sketches (replicas, days and months alike).
//!
//! Bucket boundaries are integers computed once with integer arithmetic
//! (γ = 101/99 exactly, in 32.32 fixed point), not with `f64::ln`, so that
//! every build on every platform puts a latency in the same bucket and the
//! stored statistics can be recomputed from the log to the unit.

use std::{collections::BTreeMap, sync::OnceLock};

use truc_proto::v1::LatencySketch;

/// The bucket layout this build writes and reads ([`LatencySketch::version`]).
pub const SKETCH_VERSION: u32 = 1;

/// Relative accuracy of a reported quantile.
pub const ALPHA: f64 = 0.01;

/// γ = (1+α)/(1-α) = 101/99.
const GAMMA_NUM: u128 = 101;
const GAMMA_DEN: u128 = 99;
const FRAC_BITS: u32 = 32;

/// The highest bucket index: γ^MAX_INDEX ≥ u64::MAX µs.
pub const MAX_INDEX: u32 = 2218;

/// Upper bounds of the buckets in 32.32 fixed point: `bounds()[i]` ≈ γ^i.
/// Each step rounds down, so a bound is at most 2218 · 2^-32 relatively
/// below γ^i, far inside α.
fn bounds() -> &'static [u128] {
    static BOUNDS: OnceLock<Vec<u128>> = OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut out = Vec::with_capacity(MAX_INDEX as usize + 1);
        let mut b = 1u128 << FRAC_BITS;
        out.push(b);
        for _ in 0..MAX_INDEX {
            // Below 2^97 · 101: no overflow.
            b = b * GAMMA_NUM / GAMMA_DEN;
            out.push(b);
        }
        out
    })
}

/// The bucket of a latency of `us` ≥ 1 µs: the least `i` with `us` ≤ γ^i.
pub fn index_of(us: u64) -> u32 {
    let v = u128::from(us) << FRAC_BITS;
    // bounds()[MAX_INDEX] ≥ u64::MAX << 32 ≥ v, so the point is in range.
    bounds().partition_point(|b| *b < v) as u32
}

/// The value bucket `index` stands for, in µs: 2γ^i/(γ+1).
pub fn value_of(index: u32) -> f64 {
    let i = (index.min(MAX_INDEX)) as usize;
    let gamma_i = bounds()[i] as f64 / (1u64 << FRAC_BITS) as f64;
    let gamma = GAMMA_NUM as f64 / GAMMA_DEN as f64;
    2.0 * gamma_i / (gamma + 1.0)
}

/// A latency sketch: how many latencies were 0 µs, and the non-empty buckets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sketch {
    zero: u64,
    buckets: BTreeMap<u32, u64>,
}

/// A sketch that cannot be read (from a store record or a `GetStats` row).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SketchError {
    /// Another bucket layout.
    #[error("latency sketch version {0} is not the version this build reads ({SKETCH_VERSION})")]
    Version(u32),
    /// Indexes and counts do not pair up.
    #[error("latency sketch has {indexes} bucket indexes but {counts} counts")]
    Lengths {
        /// Indexes sent.
        indexes: usize,
        /// Counts sent.
        counts: usize,
    },
    /// An index out of range, repeated or out of order.
    #[error("latency sketch bucket {index} is out of order or beyond {MAX_INDEX}")]
    Index {
        /// The index.
        index: u32,
    },
    /// A bucket listed with no latencies in it.
    #[error("latency sketch bucket {index} is listed empty")]
    Empty {
        /// The index.
        index: u32,
    },
    /// Cut short, or longer than it says.
    #[error("latency sketch bytes are truncated or too long")]
    Bytes,
}

impl Sketch {
    /// The sketch of one latency.
    pub fn of(us: u64) -> Sketch {
        let mut s = Sketch::default();
        s.add_n(us, 1);
        s
    }

    /// Adds `n` latencies of `us` µs.
    pub fn add_n(&mut self, us: u64, n: u64) {
        if n == 0 {
            return;
        }
        let slot = match us {
            0 => &mut self.zero,
            _ => self.buckets.entry(index_of(us)).or_default(),
        };
        *slot = slot.saturating_add(n);
    }

    /// Adds `other` in: bucket counts add (saturating).
    pub fn merge(&mut self, other: &Sketch) {
        self.zero = self.zero.saturating_add(other.zero);
        for (i, n) in &other.buckets {
            let slot = self.buckets.entry(*i).or_default();
            *slot = slot.saturating_add(*n);
        }
    }

    /// Latencies counted.
    pub fn total(&self) -> u64 {
        self.buckets
            .values()
            .fold(self.zero, |t, n| t.saturating_add(*n))
    }

    /// Non-empty buckets.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// The latency (µs) at rank ⌈q·n⌉ (q in 0..=1): within α of the true
    /// value at that rank. None for an empty sketch.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        if rank <= self.zero {
            return Some(0.0);
        }
        let mut seen = self.zero;
        for (i, n) in &self.buckets {
            seen = seen.saturating_add(*n);
            if seen >= rank {
                return Some(value_of(*i));
            }
        }
        // Only when counts saturated: the slowest bucket.
        self.buckets.keys().next_back().map(|i| value_of(*i))
    }

    /// Appends the stored form: varints for the zero count and the number of
    /// buckets, then for each bucket its index's distance from the previous
    /// one (the first from 0) and its count.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.zero);
        put_varint(out, self.buckets.len() as u64);
        let mut prev = 0;
        for (i, n) in &self.buckets {
            put_varint(out, u64::from(i - prev));
            put_varint(out, *n);
            prev = *i;
        }
    }

    /// Reads what [`Sketch::encode_into`] wrote from the front of `input`.
    /// The bucket count is checked against the bytes left before anything
    /// is read, so hostile bytes cost at most their own length.
    pub(crate) fn decode_from(input: &mut &[u8]) -> Result<Sketch, SketchError> {
        let mut s = Sketch {
            zero: get_varint(input)?,
            buckets: BTreeMap::new(),
        };
        let n = get_varint(input)?;
        // Each bucket takes at least two bytes.
        if n > (input.len() / 2) as u64 {
            return Err(SketchError::Bytes);
        }
        let mut index: u64 = 0;
        for k in 0..n {
            let delta = get_varint(input)?;
            index = index.saturating_add(delta);
            let bad = || SketchError::Index {
                index: u32::try_from(index).unwrap_or(u32::MAX),
            };
            if (k > 0 && delta == 0) || index > u64::from(MAX_INDEX) {
                return Err(bad());
            }
            let count = get_varint(input)?;
            let i = index as u32;
            if count == 0 {
                return Err(SketchError::Empty { index: i });
            }
            s.buckets.insert(i, count);
        }
        Ok(s)
    }

    /// The sketch as a `GetStats` row carries it.
    pub fn to_proto(&self) -> LatencySketch {
        LatencySketch {
            version: SKETCH_VERSION,
            zero_count: self.zero,
            indexes: self.buckets.keys().copied().collect(),
            counts: self.buckets.values().copied().collect(),
        }
    }

    /// A sketch sent in a `GetStats` row, checked: the version, indexes
    /// strictly increasing and in range, no empty bucket.
    pub fn from_proto(p: &LatencySketch) -> Result<Sketch, SketchError> {
        if p.version != SKETCH_VERSION {
            return Err(SketchError::Version(p.version));
        }
        if p.indexes.len() != p.counts.len() {
            return Err(SketchError::Lengths {
                indexes: p.indexes.len(),
                counts: p.counts.len(),
            });
        }
        let mut s = Sketch {
            zero: p.zero_count,
            buckets: BTreeMap::new(),
        };
        let mut prev: Option<u32> = None;
        for (i, n) in p.indexes.iter().zip(&p.counts) {
            if *i > MAX_INDEX || prev.is_some_and(|p| p >= *i) {
                return Err(SketchError::Index { index: *i });
            }
            if *n == 0 {
                return Err(SketchError::Empty { index: *i });
            }
            s.buckets.insert(*i, *n);
            prev = Some(*i);
        }
        Ok(s)
    }
}

/// LEB128, the protobuf varint: prost's own encoder.
pub(crate) fn put_varint(out: &mut Vec<u8>, v: u64) {
    prost::encoding::encode_varint(v, out);
}

/// Reads one varint and advances `input` past it.
pub(crate) fn get_varint(input: &mut &[u8]) -> Result<u64, SketchError> {
    prost::encoding::decode_varint(input).map_err(|_| SketchError::Bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64: a fixed, seeded sequence.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in (0, 1].
        fn unit(&mut self) -> f64 {
            ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
        }

        /// Standard normal (Box–Muller).
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.unit(), self.unit());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }

        fn lognormal(&mut self, median_us: f64, sigma: f64) -> u64 {
            (median_us * (sigma * self.normal()).exp()).round() as u64
        }
    }

    fn sketch_of(values: &[u64]) -> Sketch {
        let mut s = Sketch::default();
        for v in values {
            s.add_n(*v, 1);
        }
        s
    }

    /// The value at rank ⌈q·n⌉, as the sketch defines its quantiles.
    fn exact(sorted: &[u64], q: f64) -> f64 {
        let n = sorted.len() as u64;
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        sorted[rank as usize - 1] as f64
    }

    fn assert_within_2_percent(name: &str, mut values: Vec<u64>) {
        let s = sketch_of(&values);
        values.sort_unstable();
        for q in [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let want = exact(&values, q);
            let got = s.quantile_us(q).expect("not empty");
            let err = if want == 0.0 {
                got
            } else {
                (got - want).abs() / want
            };
            assert!(err <= 0.02, "{name} q={q}: sketch {got}, exact {want}");
            // The construction promises α, with the fixed-point rounding.
            assert!(err <= ALPHA * 1.0001, "{name} q={q}: error {err}");
        }
    }

    #[test]
    fn quantiles_are_within_2_percent_on_several_distributions() {
        let mut rng = Rng(7);
        let uniform: Vec<u64> = (0..20_000).map(|_| 1 + rng.next() % 1_000_000).collect();
        assert_within_2_percent("uniform", uniform);
        let lognormal: Vec<u64> = (0..20_000).map(|_| rng.lognormal(3_000.0, 1.2)).collect();
        assert_within_2_percent("lognormal", lognormal);
        // A fast path around 2 ms and a slow one around 300 ms.
        let bimodal: Vec<u64> = (0..20_000)
            .map(|k| match k % 10 {
                0..=6 => rng.lognormal(2_000.0, 0.2),
                _ => rng.lognormal(300_000.0, 0.3),
            })
            .collect();
        assert_within_2_percent("bimodal", bimodal);
        // Every small integer, zero, and the extremes.
        let mut edges: Vec<u64> = (0..5_000).collect();
        edges.extend([u64::MAX, u64::MAX - 1, 1 << 63, 300_000_000_000]);
        assert_within_2_percent("edges", edges);
    }

    #[test]
    fn the_old_p50_p95_p99_collapse_is_gone_on_a_mixed_workload() {
        // Latencies between 17 and 32 ms all read 32.768 ms with
        // power-of-two buckets.
        let mut rng = Rng(11);
        let values: Vec<u64> = (0..10_000).map(|_| 17_000 + rng.next() % 15_000).collect();
        let s = sketch_of(&values);
        let q = |p| s.quantile_us(p).expect("not empty");
        let (p50, p95, p99) = (q(0.5), q(0.95), q(0.99));
        assert!(p50 < p95 && p95 < p99, "{p50} {p95} {p99}");
        let mut sorted = values.clone();
        sorted.sort_unstable();
        assert!((p50 - exact(&sorted, 0.5)).abs() / exact(&sorted, 0.5) < 0.02);
    }

    #[test]
    fn bucket_bounds_follow_the_definition() {
        assert_eq!(bounds().len(), MAX_INDEX as usize + 1);
        assert!(*bounds().last().expect("bounds") >= u128::from(u64::MAX) << FRAC_BITS);
        assert!(bounds()[MAX_INDEX as usize - 1] < u128::from(u64::MAX) << FRAC_BITS);
        assert_eq!(index_of(1), 0);
        assert_eq!(index_of(u64::MAX), MAX_INDEX);
        let gamma = 101.0f64 / 99.0;
        for us in [2u64, 3, 10, 999, 1_000, 32_768, 1 << 40] {
            let i = index_of(us);
            // γ^(i-1) < us ≤ γ^i, up to the fixed-point rounding.
            let float = (us as f64).ln() / gamma.ln();
            assert!((f64::from(i) - float.ceil()).abs() <= 1.0, "{us}");
            assert!(f64::from(i) >= float - 1e-6 && f64::from(i) < float + 1.0);
            let v = value_of(i);
            assert!(
                (v - us as f64).abs() / us as f64 <= ALPHA * 1.0001,
                "{us}: {v}"
            );
        }
    }

    #[test]
    fn merging_is_exact_associative_and_commutative() {
        let mut rng = Rng(3);
        let parts: Vec<Vec<u64>> = (0..3)
            .map(|k| {
                (0..2_000)
                    .map(|_| rng.lognormal(1_000.0 * (k + 1) as f64, 1.0))
                    .collect()
            })
            .collect();
        let [a, b, c] = [0, 1, 2].map(|k| sketch_of(&parts[k]));
        let union: Vec<u64> = parts.concat();
        let merged = |x: &Sketch, y: &Sketch| {
            let mut m = x.clone();
            m.merge(y);
            m
        };
        assert_eq!(merged(&merged(&a, &b), &c), sketch_of(&union));
        assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        assert_eq!(merged(&a, &b), merged(&b, &a));
        assert_eq!(merged(&a, &Sketch::default()), a);
        assert_eq!(sketch_of(&union).total(), 6_000);
    }

    #[test]
    fn stored_and_proto_forms_round_trip() {
        let mut rng = Rng(5);
        let values: Vec<u64> = (0..1_000).map(|_| rng.lognormal(5_000.0, 2.0)).collect();
        let mut s = sketch_of(&values);
        s.add_n(0, 4);
        s.add_n(u64::MAX, 1);
        let mut bytes = Vec::new();
        s.encode_into(&mut bytes);
        let mut input = bytes.as_slice();
        assert_eq!(Sketch::decode_from(&mut input), Ok(s.clone()));
        assert!(input.is_empty());
        assert_eq!(Sketch::from_proto(&s.to_proto()), Ok(s));
    }

    #[test]
    fn hostile_stored_bytes_are_errors_without_allocating() {
        let s = sketch_of(&[5, 50, 500]);
        let mut bytes = Vec::new();
        s.encode_into(&mut bytes);
        // Every truncation is an error (or leaves a shorter, valid prefix
        // that the caller then finds is not the whole value).
        for cut in 0..bytes.len() {
            let mut input = &bytes[..cut];
            assert!(Sketch::decode_from(&mut input).is_err(), "cut at {cut}");
        }
        // A bucket count of 2^63 in three bytes.
        let mut huge = vec![0];
        put_varint(&mut huge, 1 << 63);
        huge.extend_from_slice(&[1, 1]);
        assert_eq!(
            Sketch::decode_from(&mut huge.as_slice()),
            Err(SketchError::Bytes)
        );
        // An index beyond the layout, a repeated index, an empty bucket.
        for (pairs, want) in [
            (
                vec![(MAX_INDEX as u64 + 1, 1)],
                SketchError::Index { index: 2219 },
            ),
            (vec![(u64::MAX, 1)], SketchError::Index { index: u32::MAX }),
            (vec![(3, 1), (0, 1)], SketchError::Index { index: 3 }),
            (vec![(3, 0)], SketchError::Empty { index: 3 }),
        ] {
            let mut b = vec![0];
            put_varint(&mut b, pairs.len() as u64);
            for (d, n) in pairs {
                put_varint(&mut b, d);
                put_varint(&mut b, n);
            }
            assert_eq!(Sketch::decode_from(&mut b.as_slice()), Err(want));
        }
    }

    #[test]
    fn hostile_proto_sketches_are_refused() {
        let good = sketch_of(&[5, 50, 500]).to_proto();
        let cases = [
            (
                LatencySketch {
                    version: 2,
                    ..good.clone()
                },
                SketchError::Version(2),
            ),
            (
                LatencySketch {
                    counts: vec![1],
                    ..good.clone()
                },
                SketchError::Lengths {
                    indexes: 3,
                    counts: 1,
                },
            ),
            (
                LatencySketch {
                    indexes: vec![9, 9, 10],
                    ..good.clone()
                },
                SketchError::Index { index: 9 },
            ),
            (
                LatencySketch {
                    indexes: vec![1, 2, MAX_INDEX + 1],
                    ..good.clone()
                },
                SketchError::Index { index: 2219 },
            ),
            (
                LatencySketch {
                    counts: vec![1, 0, 1],
                    ..good.clone()
                },
                SketchError::Empty {
                    index: good.indexes[1],
                },
            ),
        ];
        for (p, want) in cases {
            assert_eq!(Sketch::from_proto(&p), Err(want));
        }
        // Saturating counts still give an answer.
        let mut s = Sketch::from_proto(&LatencySketch {
            version: 1,
            zero_count: u64::MAX,
            indexes: vec![1, 2],
            counts: vec![u64::MAX, u64::MAX],
        })
        .expect("valid");
        s.merge(&s.clone());
        assert_eq!(s.total(), u64::MAX);
        assert!(s.quantile_us(1.0).is_some());
    }
}
