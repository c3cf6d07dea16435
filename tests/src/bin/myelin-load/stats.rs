//! Latency statistics: nearest-rank percentiles over a set of durations.

use std::time::Duration;

/// Summary of a set of latencies, all in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// Smallest sample.
    pub min_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Median (nearest rank).
    pub p50_ms: f64,
    /// 90th percentile (nearest rank).
    pub p90_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let sum: f64 = ms.iter().sum();
        Some(Self {
            count: ms.len(),
            min_ms: ms[0],
            mean_ms: sum / ms.len() as f64,
            p50_ms: percentile_sorted(&ms, 50.0),
            p90_ms: percentile_sorted(&ms, 90.0),
            p99_ms: percentile_sorted(&ms, 99.0),
            max_ms: ms[ms.len() - 1],
        })
    }
}

/// The nearest-rank percentile `p` (0 < p <= 100) of ascending, non-empty
/// `sorted`: the smallest sample with at least p% of the samples at or below it.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    debug_assert!(!sorted.is_empty());
    let n = sorted.len();
    // Rank is 1-based; ceil(p/100 * n), clamped into 1..=n.
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Events per second over `elapsed`; zero when no time passed.
pub fn rate(count: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn no_samples_no_summary() {
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let s = Summary::of(&ms(&[7])).expect("one sample");
        assert_eq!(s.count, 1);
        for v in [s.min_ms, s.mean_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms] {
            assert_eq!(v, 7.0);
        }
    }

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        // Shuffled input: the summary must sort.
        let mut values: Vec<u64> = (1..=100).collect();
        values.reverse();
        values.swap(3, 70);
        let s = Summary::of(&ms(&values)).expect("samples");
        assert_eq!(s.min_ms, 1.0);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p90_ms, 90.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
        assert_eq!(s.mean_ms, 50.5);
    }

    #[test]
    fn nearest_rank_on_small_sets() {
        let sorted = [10.0, 20.0, 30.0, 40.0];
        assert_eq!(percentile_sorted(&sorted, 50.0), 20.0);
        assert_eq!(percentile_sorted(&sorted, 51.0), 30.0);
        assert_eq!(percentile_sorted(&sorted, 99.0), 40.0);
        assert_eq!(percentile_sorted(&sorted, 100.0), 40.0);
        // p close to zero still picks the first sample, never index -1.
        assert_eq!(percentile_sorted(&sorted, 0.1), 10.0);
        assert_eq!(percentile_sorted(&sorted, 0.0), 10.0);
    }

    #[test]
    fn p99_of_two_hundred_is_the_198th() {
        let values: Vec<u64> = (1..=200).collect();
        let s = Summary::of(&ms(&values)).expect("samples");
        assert_eq!(s.p99_ms, 198.0);
        assert_eq!(s.p90_ms, 180.0);
        assert_eq!(s.p50_ms, 100.0);
    }

    #[test]
    fn sub_millisecond_precision_is_kept() {
        let s = Summary::of(&[Duration::from_micros(1500)]).expect("sample");
        assert!((s.p50_ms - 1.5).abs() < 1e-9);
    }

    #[test]
    fn rate_handles_zero_elapsed() {
        assert_eq!(rate(10, Duration::ZERO), 0.0);
        assert_eq!(rate(10, Duration::from_secs(2)), 5.0);
    }
}
