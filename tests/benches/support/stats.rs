//! Latency statistics shared by the benchmarks: percentiles of a sample and durations
//! printed in the unit that suits them.

use std::time::Duration;

/// Latency percentiles of one measurement.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
    pub n: usize,
}

impl Stats {
    pub fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort_unstable();
        let n = samples.len();
        let at = |q: usize| {
            samples
                .get((n * q / 100).min(n.saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        let total: Duration = samples.iter().sum();
        Stats {
            p50: at(50),
            p99: at(99),
            mean: total / u32::try_from(n.max(1)).unwrap_or(u32::MAX),
            n,
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {}, p99 {}, mean {} (n={})",
            fmt(self.p50),
            fmt(self.p99),
            fmt(self.mean),
            self.n
        )
    }
}

/// `duration` in µs, ms or s, whichever reads best.
pub fn fmt(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.1} µs")
    } else if micros < 1_000_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}
