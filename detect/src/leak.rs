//! A leak: steady growth of a process's RSS or file descriptors over a long window, judged by
//! the slope and the quality of a straight-line fit (a garbage collector's saw-tooth or a
//! cache warming up fits badly, a leak fits well).

use std::time::Duration;

use super::window::{Window, linear_fit};
use super::{Debounce, Detector, Finding, State, human};

/// A leak detector for one process's series.
#[derive(Clone, Debug)]
pub struct Leak {
    /// What leaks (`rss of java (pid 4242)`).
    pub name: String,
    /// Least growth per second that counts.
    pub min_slope: f64,
    /// Least R² of the fit.
    pub min_r2: f64,
    /// Least history before judging.
    pub min_span: Duration,
    window: Window,
    debounce: Debounce,
}

impl Leak {
    /// Judges the last `window` (at most 720 samples) once `min_span` of it exists.
    pub fn new(name: &str, min_slope_per_sec: f64, window: Duration, min_span: Duration) -> Self {
        Self {
            name: name.to_owned(),
            min_slope: min_slope_per_sec,
            min_r2: 0.9,
            min_span,
            window: Window::new(720, window),
            debounce: Debounce::new(Duration::ZERO),
        }
    }

    /// The usual RSS leak detector: growth of at least 256 KiB/min, fitted over the last
    /// 2 hours, judged after 20 minutes.
    pub fn rss(name: &str) -> Self {
        Self::new(name, 256.0 * 1024.0 / 60.0, Duration::from_secs(7200), Duration::from_secs(1200))
    }
}

impl Detector for Leak {
    fn learning(&self) -> Option<super::Progress> {
        let span = self.window.span();
        (span < self.min_span).then(|| super::Progress::span(span, self.min_span))
    }

    fn observe(&mut self, at: jiff::Timestamp, value: f64) -> Option<Finding> {
        if !value.is_finite() {
            return None;
        }
        self.window.push(at, value);
        let fit = if self.window.span() >= self.min_span {
            let samples: Vec<_> = self.window.samples().collect();
            linear_fit(&samples)
        } else {
            None
        };
        let bad = fit.is_some_and(|(slope, _, r2)| {
            if self.debounce.firing() {
                slope > self.min_slope / 2.0 && r2 > self.min_r2 - 0.2
            } else {
                slope > self.min_slope && r2 >= self.min_r2
            }
        });
        let state = self.debounce.update(at, bad)?;
        let (slope, level, r2) = fit.unwrap_or((0.0, value, 0.0));
        let explanation = match state {
            State::Firing => format!(
                "{} grew steadily over the last {}: {:+.0}/min to {level:.0} (fit R² {r2:.2}); limit {:.0}/min",
                self.name,
                human(self.window.span()),
                slope * 60.0,
                self.min_slope * 60.0
            ),
            State::Resolved => format!("{} stopped growing ({:+.0}/min)", self.name, slope * 60.0),
        };
        Some(Finding {
            state,
            detector: "leak",
            at,
            value,
            baseline: level,
            threshold: self.min_slope,
            window: self.window.span(),
            explanation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{Rng, t};

    const MIB: f64 = 1024.0 * 1024.0;

    #[test]
    fn a_one_mib_per_minute_leak_is_found_within_thirty_minutes_at_ten_second_sampling() {
        for seed in 0..20 {
            let mut d = Leak::rss("rss of app");
            let mut r = Rng::new(seed);
            let found = (0..360).find_map(|i| {
                let v = 300.0 * MIB + MIB * (i as f64 * 10.0 / 60.0) + 2.0 * MIB * r.normal();
                d.observe(t(i, 10), v).map(|f| (i, f))
            });
            let (i, f) = found.unwrap_or_else(|| panic!("seed {seed}: not found in an hour"));
            assert!(i * 10 <= 30 * 60, "seed {seed}: found after {} s", i * 10);
            assert!(f.explanation.contains("rss of app grew steadily"), "{}", f.explanation);
        }
    }

    #[test]
    fn a_sawtooth_or_a_flat_noisy_process_is_not_a_leak() {
        let mut r = Rng::new(9);
        let mut saw = Leak::rss("gc");
        let mut flat = Leak::rss("flat");
        for i in 0..2160 {
            // A collector: +2 MiB per sample for 5 minutes, then back down.
            let v = 400.0 * MIB + 2.0 * MIB * ((i % 30) as f64);
            assert!(saw.observe(t(i, 10), v).is_none(), "saw-tooth at {i}");
            assert!(flat.observe(t(i, 10), 200.0 * MIB + 3.0 * MIB * r.normal()).is_none(), "flat at {i}");
        }
    }
}
