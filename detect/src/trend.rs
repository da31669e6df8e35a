//! Time until full: a line fitted over a window of a filling quantity (disk bytes, inodes,
//! file descriptors) and its capacity; fires when the fit says "full within `horizon`".

use std::time::Duration;

use super::window::{Window, linear_fit};
use super::{Debounce, Detector, Finding, State, human};

/// A time-to-full detector.
#[derive(Clone, Debug)]
pub struct TimeToFull {
    /// Series name (`disk /var`).
    pub name: String,
    /// The capacity the quantity fills up to.
    pub capacity: f64,
    /// Fire when full sooner than this.
    pub horizon: Duration,
    /// Least history to fit over.
    pub min_span: Duration,
    /// Least R² of the fit (a noisy series says nothing about when it fills).
    pub min_r2: f64,
    window: Window,
    debounce: Debounce,
}

impl TimeToFull {
    /// Fits over the last `window` (at most 720 samples); fires when full within `horizon`.
    pub fn new(name: &str, capacity: f64, horizon: Duration, window: Duration) -> Self {
        Self {
            name: name.to_owned(),
            capacity,
            horizon,
            min_span: window / 4,
            min_r2: 0.6,
            window: Window::new(720, window),
            debounce: Debounce::new(Duration::ZERO),
        }
    }

    /// Seconds until full, from the fit, when it is filling.
    pub fn eta(&self) -> Option<(f64, f64, f64)> {
        if self.window.span() < self.min_span {
            return None;
        }
        let samples: Vec<_> = self.window.samples().collect();
        let (slope, level, r2) = linear_fit(&samples)?;
        (slope > 0.0 && r2 >= self.min_r2).then(|| (((self.capacity - level) / slope).max(0.0), slope, level))
    }
}

impl Detector for TimeToFull {
    fn learning(&self) -> Option<super::Progress> {
        let span = self.window.span();
        (span < self.min_span).then(|| super::Progress::span(span, self.min_span))
    }

    fn observe(&mut self, at: jiff::Timestamp, value: f64) -> Option<Finding> {
        if !value.is_finite() {
            return None;
        }
        self.window.push(at, value);
        let eta = self.eta();
        let horizon = self.horizon.as_secs_f64();
        let bad = match eta {
            // Hysteresis: once firing, it clears only when full is 1.5 horizons away.
            Some((secs, _, _)) if self.debounce.firing() => secs < horizon * 1.5,
            Some((secs, _, _)) => secs < horizon,
            None => false,
        };
        let state = self.debounce.update(at, bad)?;
        let (secs, slope, level) = eta.unwrap_or((f64::INFINITY, 0.0, value));
        let explanation = match state {
            State::Firing => format!(
                "{} full in {} at the rate of the last {} ({:.4} of {:.4} used, +{:.4}/h); limit {}",
                self.name,
                human(Duration::from_secs_f64(secs.min(1e12))),
                human(self.window.span()),
                level,
                self.capacity,
                slope * 3600.0,
                human(self.horizon)
            ),
            State::Resolved => format!("{} no longer on course to fill within {}", self.name, human(self.horizon)),
        };
        Some(Finding {
            state,
            detector: "trend",
            at,
            value,
            baseline: level,
            threshold: self.capacity,
            window: self.window.span(),
            explanation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{Rng, t};

    #[test]
    fn a_disk_filling_toward_its_capacity_is_found_with_its_eta() {
        // 100 GiB disk at 50 GiB, +2 GiB/h, sampled every minute with noise.
        let gib = 1024.0 * 1024.0 * 1024.0;
        let mut d =
            TimeToFull::new("disk /var", 100.0 * gib, Duration::from_secs(24 * 3600), Duration::from_secs(3600));
        let mut r = Rng::new(1);
        let mut fired = None;
        for i in 0..120 {
            let v = 50.0 * gib + 2.0 * gib * (i as f64 / 60.0) + 0.05 * gib * r.normal();
            if let Some(f) = d.observe(t(i, 60), v) {
                fired = Some((i, f));
                break;
            }
        }
        let (i, f) = fired.expect("fires");
        assert!(i <= 16, "after a quarter of the window: {i}");
        assert!(f.explanation.contains("disk /var full in 2"), "about 25 h: {}", f.explanation);
        assert!(f.explanation.contains("limit 1day"), "{}", f.explanation);
    }

    #[test]
    fn a_steady_or_noisy_disk_is_not_an_alarm() {
        let mut d = TimeToFull::new("disk /", 100.0, Duration::from_secs(6 * 3600), Duration::from_secs(3600));
        let mut r = Rng::new(2);
        for i in 0..2000 {
            assert!(d.observe(t(i, 60), 80.0 + r.normal()).is_none(), "sample {i}");
        }
    }
}
