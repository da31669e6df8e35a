//! Deviation from a baseline, in units of the baseline's spread, with three baselines: a
//! rolling mean and standard deviation ([`RollingMean`], the z-score), an exponentially
//! weighted mean and variance with control limits (`super::ewma`), and a rolling median and
//! MAD for heavy-tailed series (`super::mad`). The sample is judged against the baseline
//! *before* it is learned.

use std::time::Duration;

use super::window::{Window, mean_std};
use super::{Debounce, Detector, Finding, State, human};

/// Where a series normally is and how much it moves.
pub trait Baseline {
    /// Center and scale (one "sigma"), once enough history exists.
    fn center_scale(&self) -> Option<(f64, f64)>;
    /// Learns a sample.
    fn learn(&mut self, at: jiff::Timestamp, value: f64);
    /// The span of history behind the baseline.
    fn span(&self) -> Duration;
    /// The detector's name in findings.
    fn name(&self) -> &'static str;
    /// Samples learned, and samples needed before `center_scale` answers.
    fn filled(&self) -> (usize, usize);
}

/// Rolling mean and standard deviation over a window.
#[derive(Clone, Debug)]
pub struct RollingMean {
    window: Window,
    min_samples: usize,
}

impl RollingMean {
    /// A baseline of the last `capacity` samples within `max_age`, usable from `min_samples`.
    pub fn new(capacity: usize, max_age: Duration, min_samples: usize) -> Self {
        Self { window: Window::new(capacity, max_age), min_samples: min_samples.max(3) }
    }
}

impl Baseline for RollingMean {
    fn center_scale(&self) -> Option<(f64, f64)> {
        (self.window.len() >= self.min_samples).then(|| mean_std(self.window.values()))
    }
    fn learn(&mut self, at: jiff::Timestamp, value: f64) {
        self.window.push(at, value);
    }
    fn span(&self) -> Duration {
        self.window.span()
    }
    fn name(&self) -> &'static str {
        "zscore"
    }
    fn filled(&self) -> (usize, usize) {
        (self.window.len(), self.min_samples)
    }
}

/// Fires when a sample is more than `k` scales from the center and the samples after it stay
/// beyond `k_confirm` for `hold` (a lone spike is not a condition); resolves when samples stay
/// within `k_clear` for `hold`. Samples beyond `k_confirm` are learned clipped to it, so a
/// shift neither hides itself by inflating the spread nor stays an anomaly for ever: the
/// baseline walks to the new level over its window.
#[derive(Clone, Debug)]
pub struct Deviation<B> {
    /// The baseline.
    pub baseline: B,
    /// Scales away that start a condition.
    pub k: f64,
    /// Scales away that keep confirming it during `hold`.
    pub k_confirm: f64,
    /// Scales within which the condition clears (hysteresis).
    pub k_clear: f64,
    /// Smallest scale used, so a flat series does not fire on rounding noise.
    pub min_scale: f64,
    /// Series name for explanations.
    pub name: String,
    debounce: Debounce,
}

impl<B: Baseline> Deviation<B> {
    /// A detector over `baseline`; confirmation at one scale less than `k` (at least
    /// `k_clear`).
    pub fn new(name: &str, baseline: B, k: f64, k_clear: f64, hold: Duration) -> Self {
        Self {
            baseline,
            k,
            k_confirm: (k - 1.0).max(k_clear),
            k_clear,
            min_scale: 1e-9,
            name: name.to_owned(),
            debounce: Debounce::new(hold),
        }
    }
}

/// The usual z-score detector: 60 samples (10 minutes at 10 s, 5 hours at 5 min), 4 sigma, clear under 2, held
/// for one interval (two consecutive samples).
pub fn zscore(name: &str, interval: Duration) -> Deviation<RollingMean> {
    Deviation::new(name, RollingMean::new(60, Duration::MAX, 20), 4.0, 2.0, interval)
}

impl<B: Baseline> Detector for Deviation<B> {
    fn learning(&self) -> Option<super::Progress> {
        let (have, need) = self.baseline.filled();
        (have < need).then(|| super::Progress::samples(have as u64, need as u64))
    }

    fn observe(&mut self, at: jiff::Timestamp, value: f64) -> Option<Finding> {
        if !value.is_finite() {
            return None;
        }
        let Some((center, scale)) = self.baseline.center_scale() else {
            self.baseline.learn(at, value);
            return None;
        };
        let scale = scale.max(self.min_scale).max(center.abs() * 1e-9);
        let z = (value - center) / scale;
        let limit = self.k_confirm * scale;
        self.baseline.learn(at, value.clamp(center - limit, center + limit));
        let bad = if self.debounce.firing() {
            z.abs() > self.k_clear
        } else if self.debounce.pending() {
            z.abs() > self.k_confirm
        } else {
            z.abs() > self.k
        };
        let state = self.debounce.update(at, bad)?;
        let window = self.baseline.span();
        let explanation = match state {
            State::Firing => format!(
                "{} is {value:.4}, {z:+.1} sigma from its baseline {center:.4} (sigma {scale:.4}) over the last {}; limit {:.1} sigma",
                self.name,
                human(window),
                self.k
            ),
            State::Resolved => format!(
                "{} is {value:.4}, within {:.1} sigma of its baseline {center:.4} again",
                self.name, self.k_clear
            ),
        };
        Some(Finding {
            state,
            detector: self.baseline.name(),
            at,
            value,
            baseline: center,
            threshold: center + self.k * scale * z.signum(),
            window,
            explanation,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testkit::{Rng, t};

    /// Samples until the first Firing at or after `from`, or None.
    pub fn delay(d: &mut impl Detector, series: &[f64], from: usize) -> Option<usize> {
        series.iter().enumerate().find_map(|(i, v)| {
            let f = d.observe(t(i, 10), *v)?;
            (f.state == State::Firing && i >= from).then(|| i - from)
        })
    }

    /// Firings in a series.
    /// The samples (10 s apart) at which `d` starts firing.
    pub fn fired_at(d: &mut impl Detector, series: &[f64]) -> Vec<usize> {
        series
            .iter()
            .enumerate()
            .filter_map(|(i, v)| d.observe(t(i, 10), *v).filter(|f| f.state == State::Firing).map(|_| i))
            .collect()
    }

    pub fn firings(d: &mut impl Detector, series: &[f64]) -> usize {
        fired_at(d, series).len()
    }

    pub fn noise(seed: u64, n: usize, mean: f64, sd: f64) -> Vec<f64> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| mean + sd * r.normal()).collect()
    }

    /// Over `runs` seeded series with a step at sample 120: the share found within three
    /// samples, and the worst delay.
    pub fn step_detection(
        runs: u64,
        step: f64,
        make: impl Fn() -> Box<dyn Detector>,
        series: impl Fn(u64) -> Vec<f64>,
    ) -> (f64, usize) {
        let mut within3 = 0;
        let mut worst = 0;
        for seed in 0..runs {
            let mut s = series(seed);
            for v in &mut s[120..] {
                *v += step;
            }
            let mut d = make();
            let found = delay(&mut d, &s, 120).unwrap_or(usize::MAX);
            within3 += usize::from(found <= 2);
            worst = worst.max(found);
        }
        (within3 as f64 / runs as f64, worst)
    }

    impl Detector for Box<dyn Detector> {
        fn observe(&mut self, at: jiff::Timestamp, value: f64) -> Option<Finding> {
            (**self).observe(at, value)
        }
    }

    #[test]
    fn a_six_sigma_step_is_found_within_three_samples() {
        let (share, worst) = step_detection(
            200,
            12.0,
            || Box::new(zscore("latency", Duration::from_secs(10))),
            |seed| noise(seed, 200, 50.0, 2.0),
        );
        assert!(share >= 0.97, "{share}");
        assert!(worst <= 6, "{worst}");
    }

    #[test]
    fn at_most_one_false_positive_per_ten_thousand_samples_of_noise() {
        let mut total = 0;
        for seed in 0..10 {
            let mut d = zscore("noise", Duration::from_secs(10));
            total += firings(&mut d, &noise(1000 + seed, 10_000, 0.0, 1.0));
        }
        assert!(total <= 10, "{total} false positives in 100,000 samples");
    }

    #[test]
    fn the_explanation_carries_value_baseline_and_window() {
        let mut d = zscore("open connections", Duration::from_secs(10));
        let s: Vec<f64> = noise(7, 40, 100.0, 1.0).into_iter().chain([130.0, 130.0]).collect();
        let f = s.iter().enumerate().find_map(|(i, v)| d.observe(t(i, 10), *v)).unwrap();
        assert_eq!(f.detector, "zscore");
        assert!(f.explanation.starts_with("open connections is 130.0000, +"), "{}", f.explanation);
        assert!(f.explanation.contains("over the last 6m"), "{}", f.explanation);
    }
}
