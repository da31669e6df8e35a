//! A robust baseline for heavy-tailed series (request latencies, queue lengths): the rolling
//! median, with the median absolute deviation as the scale (times 1.4826, so it estimates a
//! standard deviation on normal data). Outliers move neither, so one spike does not mask the
//! next.

use std::time::Duration;

use super::window::{Window, median_mad};
use super::zscore::{Baseline, Deviation};

/// Rolling median and MAD.
#[derive(Clone, Debug)]
pub struct RollingMedian {
    window: Window,
    min_samples: usize,
}

impl RollingMedian {
    /// A baseline of the last `capacity` samples within `max_age`.
    pub fn new(capacity: usize, max_age: Duration, min_samples: usize) -> Self {
        Self { window: Window::new(capacity, max_age), min_samples: min_samples.max(5) }
    }
}

impl Baseline for RollingMedian {
    fn center_scale(&self) -> Option<(f64, f64)> {
        if self.window.len() < self.min_samples {
            return None;
        }
        let v: Vec<f64> = self.window.values().collect();
        let (med, mad) = median_mad(&v);
        Some((med, 1.4826 * mad))
    }
    fn learn(&mut self, at: jiff::Timestamp, value: f64) {
        self.window.push(at, value);
    }
    fn span(&self) -> Duration {
        self.window.span()
    }
    fn name(&self) -> &'static str {
        "mad"
    }
    fn filled(&self) -> (usize, usize) {
        (self.window.len(), self.min_samples)
    }
}

/// The usual robust detector: 60 samples, 4.5 robust sigma (confirmed at 3.5), clear under 3,
/// held one interval.
pub fn mad(name: &str, interval: Duration) -> Deviation<RollingMedian> {
    Deviation::new(name, RollingMedian::new(60, Duration::MAX, 20), 4.5, 3.0, interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Rng;
    use crate::zscore::tests::firings;

    /// Log-normal noise: heavy right tail.
    fn heavy(seed: u64, n: usize) -> Vec<f64> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| (3.0 + 0.25 * r.normal()).exp()).collect()
    }

    #[test]
    fn a_level_shift_in_heavy_tailed_noise_is_found_and_the_tail_is_not_an_alarm() {
        use crate::zscore::tests::delay;
        let mut within3 = 0;
        for seed in 0..200 {
            let mut s = heavy(seed, 200);
            for v in &mut s[120..] {
                *v *= 3.0;
            }
            let found = delay(&mut mad("latency ms", Duration::from_secs(10)), &s, 120);
            assert!(found.is_some_and(|k| k <= 12), "seed {seed}: {found:?}");
            within3 += usize::from(found.is_some_and(|k| k <= 2));
        }
        assert!(within3 >= 190, "{within3} of 200 within three samples");
        let mut total = 0;
        for seed in 0..10 {
            total += firings(&mut mad("latency ms", Duration::from_secs(10)), &heavy(900 + seed, 10_000));
        }
        assert!(total <= 10, "{total} false positives in 100,000 heavy-tailed samples");
    }
}
