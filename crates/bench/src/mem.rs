//! The process's resident memory, from Linux's `/proc/self`: its peak
//! (`VmHWM`) can be reset to the current size (`clear_refs`), so a phase's
//! peak growth is measured alone.

/// (VmRSS, VmHWM) in KiB, from /proc/self/status.
fn rss_kib() -> Option<(u64, u64)> {
    rss_kib_of("self")
}

/// (VmRSS, VmHWM) in KiB of process `pid` (or `self`), from its status.
pub(crate) fn rss_kib_of(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The start of a phase whose peak resident memory growth is measured.
pub(crate) struct PeakGrowth {
    /// VmRSS when the phase started, after the peak was reset to it; `None`
    /// where either is not supported.
    start_kib: Option<u64>,
}

impl PeakGrowth {
    /// Resets the process's peak to its current resident size.
    pub(crate) fn start() -> PeakGrowth {
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        PeakGrowth {
            start_kib: rss_kib().filter(|_| reset).map(|(rss, _)| rss),
        }
    }

    /// How far the peak rose above the resident size at [`PeakGrowth::start`], in KiB.
    pub(crate) fn kib(&self) -> Option<u64> {
        let (_, peak) = rss_kib()?;
        Some(peak.saturating_sub(self.start_kib?))
    }

    /// The current resident size, in KiB.
    pub(crate) fn resident_kib() -> Option<u64> {
        rss_kib().map(|(rss, _)| rss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touching_memory_raises_the_peak_above_the_start() {
        let peak = PeakGrowth::start();
        if peak.start_kib.is_none() {
            return; // not Linux, or clear_refs refused: nothing to measure
        }
        // Other tests of this binary allocate and free at the same time:
        // touch far more than they hold, and ask for half of it.
        let before = peak.kib().expect("peak");
        let touched = vec![1u8; 256 << 20];
        std::hint::black_box(&touched);
        let after = peak.kib().expect("peak");
        assert!(
            after >= before + 128 * 1024,
            "peak growth {before} KiB then {after} KiB after touching 256 MiB"
        );
    }
}
