//! A bounded window of recent samples and the statistics the detectors take over it.

use std::collections::VecDeque;
use std::time::Duration;

/// At most `capacity` samples no older than `max_age` behind the newest.
#[derive(Clone, Debug)]
pub struct Window {
    samples: VecDeque<(jiff::Timestamp, f64)>,
    capacity: usize,
    max_age: Duration,
}

impl Window {
    /// An empty window.
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        Self { samples: VecDeque::with_capacity(capacity.min(4096)), capacity: capacity.max(2), max_age }
    }

    /// Adds a sample (non-finite values are ignored) and drops what fell out.
    pub fn push(&mut self, at: jiff::Timestamp, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.samples.push_back((at, value));
        while self.samples.len() > self.capacity {
            self.samples.pop_front();
        }
        let max_age = jiff::SignedDuration::try_from(self.max_age).unwrap_or(jiff::SignedDuration::MAX);
        while self.samples.front().is_some_and(|(t, _)| at.duration_since(*t) > max_age) {
            self.samples.pop_front();
        }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Time from the oldest to the newest sample.
    pub fn span(&self) -> Duration {
        match (self.samples.front(), self.samples.back()) {
            (Some((a, _)), Some((b, _))) => b.duration_since(*a).unsigned_abs(),
            _ => Duration::ZERO,
        }
    }

    /// The values, oldest first.
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.samples.iter().map(|(_, v)| *v)
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = (jiff::Timestamp, f64)> + '_ {
        self.samples.iter().copied()
    }

    /// Empties the window.
    pub fn clear(&mut self) {
        self.samples.clear();
    }
}

/// Mean and sample standard deviation.
pub fn mean_std(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut n, mut mean, mut m2) = (0.0, 0.0, 0.0);
    for v in values {
        n += 1.0;
        let d = v - mean;
        mean += d / n;
        m2 += d * (v - mean);
    }
    let var = if n > 1.0 { m2 / (n - 1.0) } else { 0.0 };
    (mean, var.max(0.0).sqrt())
}

/// The median (of a copy).
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

/// Median and median absolute deviation.
pub fn median_mad(values: &[f64]) -> (f64, f64) {
    let med = median(values.iter().copied());
    let mad = median(values.iter().map(|v| (v - med).abs()));
    (med, mad)
}

/// Least-squares line through (seconds since the first sample, value): slope per second,
/// value at the last sample, and R².
pub fn linear_fit(samples: &[(jiff::Timestamp, f64)]) -> Option<(f64, f64, f64)> {
    let first = samples.first()?.0;
    let n = samples.len() as f64;
    if n < 3.0 {
        return None;
    }
    let xs: Vec<f64> = samples.iter().map(|(t, _)| t.duration_since(first).as_secs_f64()).collect();
    let (mx, _) = mean_std(xs.iter().copied());
    let (my, _) = mean_std(samples.iter().map(|(_, v)| *v));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, (_, y)) in xs.iter().zip(samples) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let last_x = *xs.last()?;
    let fitted_last = my + slope * (last_x - mx);
    let r2 = if syy == 0.0 { 1.0 } else { (sxy * sxy) / (sxx * syy) };
    Some((slope, fitted_last, r2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::t;

    #[test]
    fn bounded_by_count_and_age() {
        let mut w = Window::new(5, Duration::from_secs(30));
        for i in 0..10 {
            w.push(t(i, 10), i as f64);
        }
        assert_eq!(w.values().collect::<Vec<_>>(), [6.0, 7.0, 8.0, 9.0], "no older than 30 s at 10 s spacing");
        w.push(t(11, 10), f64::NAN);
        assert_eq!(w.len(), 4);
        assert_eq!(w.span(), Duration::from_secs(30));
    }

    #[test]
    fn statistics() {
        let (m, s) = mean_std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0].into_iter());
        assert!((m - 5.0).abs() < 1e-12 && (s - 2.138_089_935).abs() < 1e-6);
        assert_eq!(median_mad(&[1.0, 1.0, 2.0, 2.0, 4.0, 6.0, 9.0]), (2.0, 1.0));
        let line: Vec<_> = (0..10).map(|i| (t(i, 60), 100.0 + 2.0 * i as f64 * 60.0)).collect();
        let (slope, last, r2) = linear_fit(&line).unwrap();
        assert!((slope - 2.0).abs() < 1e-9 && (last - 1180.0).abs() < 1e-6 && (r2 - 1.0).abs() < 1e-12);
    }
}
