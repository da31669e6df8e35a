//! Exponentially weighted mean and variance with control limits (an EWMA chart): O(1) state,
//! reacts to shifts within a few samples, forgets old history smoothly.

use std::time::Duration;

use super::zscore::{Baseline, Deviation};

/// EWMA mean and variance; `alpha` is the weight of each new sample in the mean (a quarter of
/// it in the variance).
#[derive(Clone, Debug)]
pub struct Ewma {
    alpha: f64,
    mean: f64,
    var: f64,
    seen: usize,
    warmup: usize,
    interval: Duration,
}

impl Ewma {
    /// A baseline with weight `alpha` (0.05: about 40 samples of memory), usable after
    /// `warmup` samples; `interval` is the sampling interval (for the reported window).
    pub fn new(alpha: f64, warmup: usize, interval: Duration) -> Self {
        Self { alpha: alpha.clamp(1e-4, 1.0), mean: 0.0, var: 0.0, seen: 0, warmup: warmup.max(2), interval }
    }
}

impl Baseline for Ewma {
    fn center_scale(&self) -> Option<(f64, f64)> {
        (self.seen >= self.warmup).then(|| (self.mean, self.var.max(0.0).sqrt()))
    }
    fn learn(&mut self, _at: jiff::Timestamp, value: f64) {
        if self.seen < self.warmup {
            // Warm-up: equal weights (Welford), so the first limits rest on every sample seen.
            let n = (self.seen + 1) as f64;
            let d = value - self.mean;
            self.mean += d / n;
            self.var += (d * (value - self.mean) - self.var) / n;
        } else {
            // The spread learns four times slower than the level: a shift moves the mean
            // within a few samples but does not inflate the sigma it is judged by.
            let d = value - self.mean;
            let a_var = self.alpha / 4.0;
            self.mean += self.alpha * d;
            self.var = (1.0 - a_var) * (self.var + a_var * d * d);
        }
        self.seen += 1;
    }
    fn span(&self) -> Duration {
        // The effective memory of the weights: 1/alpha samples.
        self.interval.mul_f64(1.0 / self.alpha)
    }
    fn name(&self) -> &'static str {
        "ewma"
    }
    fn filled(&self) -> (usize, usize) {
        (self.seen, self.warmup)
    }
}

/// The usual EWMA detector: alpha 0.05, 30 samples of warm-up, limits at 4 sigma (confirmed
/// at 3), clear under 2, held one interval.
pub fn ewma(name: &str, interval: Duration) -> Deviation<Ewma> {
    Deviation::new(name, Ewma::new(0.05, 30, interval), 4.0, 2.0, interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zscore::tests::{firings, noise, step_detection};

    #[test]
    fn steps_within_three_samples_and_quiet_on_noise() {
        let (share, worst) = step_detection(
            200,
            6.0,
            || Box::new(ewma("x", Duration::from_secs(10))),
            |seed| noise(seed, 200, 10.0, 1.0),
        );
        assert!(share >= 0.95, "{share}");
        assert!(worst <= 8, "{worst}");
        let mut total = 0;
        for seed in 0..10 {
            total += firings(&mut ewma("x", Duration::from_secs(10)), &noise(500 + seed, 10_000, 0.0, 1.0));
        }
        assert!(total <= 10, "{total} false positives in 100,000 samples");
    }
}
