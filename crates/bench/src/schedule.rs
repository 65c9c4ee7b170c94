//! The open loop's arrival schedule: when call `i` is due, counted from the
//! start of the run, at fixed intervals or as a Poisson process.

use std::time::Duration;

use clap::ValueEnum;

/// How open-loop calls arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Arrivals {
    /// Call `i` is due at `i / rate`.
    Fixed,
    /// Exponentially distributed gaps of mean `1 / rate` (a Poisson
    /// process), from a fixed seed so runs are repeatable.
    Poisson,
}

impl Arrivals {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Arrivals::Fixed => "fixed",
            Arrivals::Poisson => "poisson",
        }
    }
}

/// The due times of successive calls, shared by the sending tasks.
#[derive(Debug)]
pub(crate) struct Schedule {
    rate: f64,
    arrivals: Arrivals,
    next: u64,
    /// Poisson: seconds from the start of the last call handed out.
    at: f64,
    rng: SplitMix,
}

/// splitmix64: a small, fast generator with a fixed seed, so that every
/// run of the bench draws the same numbers.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform number in [0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform number in [0, n), n > 0.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

impl Schedule {
    /// `rate` calls per second; it must be positive and finite.
    pub(crate) fn new(rate: f64, arrivals: Arrivals, seed: u64) -> Schedule {
        Schedule {
            rate,
            arrivals,
            next: 0,
            at: 0.0,
            rng: SplitMix::new(seed),
        }
    }

    /// The next call: its number and when it is due after the start.
    pub(crate) fn next_call(&mut self) -> (u64, Duration) {
        let i = self.next;
        self.next += 1;
        let at = match self.arrivals {
            // Computed from `i`, so rounding does not accumulate.
            Arrivals::Fixed => i as f64 / self.rate,
            Arrivals::Poisson => {
                let u = self.rng.uniform();
                self.at += -(1.0 - u).ln() / self.rate;
                self.at
            }
        };
        (i, Duration::from_secs_f64(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_arrivals_are_evenly_spaced_from_zero() {
        let mut s = Schedule::new(250.0, Arrivals::Fixed, 1);
        assert_eq!(s.next_call(), (0, Duration::ZERO));
        assert_eq!(s.next_call(), (1, Duration::from_millis(4)));
        for _ in 2..1000 {
            s.next_call();
        }
        assert_eq!(s.next_call(), (1000, Duration::from_secs(4)));
    }

    #[test]
    fn poisson_arrivals_have_the_rate_and_exponential_gaps() {
        let rate = 1000.0;
        let mut s = Schedule::new(rate, Arrivals::Poisson, 42);
        let n = 100_000;
        let mut last = Duration::ZERO;
        let mut gaps = Vec::with_capacity(n);
        for k in 0..n {
            let (i, at) = s.next_call();
            assert_eq!(i, k as u64);
            assert!(at >= last, "due times never go back");
            gaps.push((at - last).as_secs_f64());
            last = at;
        }
        // n calls at 1000/s take about 100 s (within 2 %).
        let total = last.as_secs_f64();
        assert!((total - 100.0).abs() < 2.0, "{total}");
        // Exponential: the standard deviation equals the mean, and about
        // e^-1 of the gaps are longer than the mean (fixed gaps: none).
        let mean = total / n as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.05,
            "{}",
            var.sqrt() / mean
        );
        let long = gaps.iter().filter(|g| **g > mean).count() as f64 / n as f64;
        assert!((long - (-1f64).exp()).abs() < 0.01, "{long}");
        // The same seed gives the same schedule.
        let mut again = Schedule::new(rate, Arrivals::Poisson, 42);
        let mut first = Schedule::new(rate, Arrivals::Poisson, 42);
        assert_eq!(again.next_call(), first.next_call());
    }
}
