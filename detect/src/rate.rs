//! Rates: how fast a value changes between samples ([`RateOfChange`]), and how many events
//! fall in a sliding window ([`EventRate`]: more than N failed logins or OOM kills in T).

use std::collections::VecDeque;
use std::time::Duration;

use super::{Debounce, Detector, Finding, State, human};

/// Fires when the value changes faster than `limit` per second (either way, or one way).
#[derive(Clone, Debug)]
pub struct RateOfChange {
    /// Series name.
    pub name: String,
    /// Change per second that counts.
    pub limit: f64,
    /// Only rises count (false: falls too).
    pub rising_only: bool,
    last: Option<(jiff::Timestamp, f64)>,
    debounce: Debounce,
}

impl RateOfChange {
    /// A detector firing beyond `limit` per second held for `hold`.
    pub fn new(name: &str, limit: f64, rising_only: bool, hold: Duration) -> Self {
        Self { name: name.to_owned(), limit, rising_only, last: None, debounce: Debounce::new(hold) }
    }
}

impl Detector for RateOfChange {
    fn observe(&mut self, at: jiff::Timestamp, value: f64) -> Option<Finding> {
        if !value.is_finite() {
            return None;
        }
        let (t0, v0) = self.last.replace((at, value))?;
        let dt = at.duration_since(t0).as_secs_f64();
        if dt <= 0.0 {
            return None;
        }
        let rate = (value - v0) / dt;
        let bad = if self.rising_only { rate > self.limit } else { rate.abs() > self.limit };
        let state = self.debounce.update(at, bad)?;
        let explanation = match state {
            State::Firing => format!(
                "{} changed at {rate:+.4}/s (from {v0:.4} to {value:.4} in {dt:.0} s); limit {:.4}/s",
                self.name, self.limit
            ),
            State::Resolved => format!("{} changes at {rate:+.4}/s again", self.name),
        };
        Some(Finding {
            state,
            detector: "rate",
            at,
            value: rate,
            baseline: v0,
            threshold: self.limit,
            window: Duration::from_secs_f64(dt),
            explanation,
        })
    }
}

/// Counts events in a sliding window: fires when more than `max` fall within `window`,
/// resolves when the count drops to `max` or below. Feed `observe(at, n)` with the number of
/// events at `at` (0 to let time pass). Memory: one entry per distinct time in the window,
/// at most `max + 1` of them kept per time with events folded.
#[derive(Clone, Debug)]
pub struct EventRate {
    /// What is counted (`failed ssh logins`).
    pub name: String,
    /// Most events allowed in the window.
    pub max: u64,
    /// The window.
    pub window: Duration,
    events: VecDeque<(jiff::Timestamp, u64)>,
    count: u64,
    firing: bool,
}

impl EventRate {
    /// More than `max` in `window`.
    pub fn new(name: &str, max: u64, window: Duration) -> Self {
        Self { name: name.to_owned(), max, window, events: VecDeque::new(), count: 0, firing: false }
    }
}

impl Detector for EventRate {
    fn observe(&mut self, at: jiff::Timestamp, value: f64) -> Option<Finding> {
        let n = if value.is_finite() && value > 0.0 { value.round() as u64 } else { 0 };
        if n > 0 {
            match self.events.back_mut() {
                Some((t, c)) if *t == at => *c += n,
                _ => self.events.push_back((at, n)),
            }
            self.count += n;
        }
        let window = jiff::SignedDuration::try_from(self.window).unwrap_or(jiff::SignedDuration::MAX);
        while let Some((t, c)) = self.events.front().copied() {
            if at.duration_since(t) < window {
                break;
            }
            self.events.pop_front();
            self.count -= c;
        }
        let bad = self.count > self.max;
        if bad == self.firing {
            return None;
        }
        self.firing = bad;
        let state = if bad { State::Firing } else { State::Resolved };
        let explanation = match state {
            State::Firing => {
                format!("{} {} in the last {}; limit {}", self.count, self.name, human(self.window), self.max)
            }
            State::Resolved => {
                format!("{} {} in the last {}, at or under {}", self.count, self.name, human(self.window), self.max)
            }
        };
        Some(Finding {
            state,
            detector: "event_rate",
            at,
            value: self.count as f64,
            baseline: 0.0,
            threshold: self.max as f64,
            window: self.window,
            explanation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::t;

    #[test]
    fn rate_of_change_either_way_or_rising_only() {
        let mut d = RateOfChange::new("open fds", 10.0, false, Duration::ZERO);
        assert!(d.observe(t(0, 10), 100.0).is_none());
        assert!(d.observe(t(1, 10), 150.0).is_none(), "5/s");
        let f = d.observe(t(2, 10), 400.0).unwrap();
        assert_eq!((f.state, f.value), (State::Firing, 25.0));
        assert!(f.explanation.starts_with("open fds changed at +25.0000/s"), "{}", f.explanation);
        assert_eq!(d.observe(t(3, 10), 401.0).unwrap().state, State::Resolved);
        let mut up = RateOfChange::new("x", 1.0, true, Duration::ZERO);
        up.observe(t(0, 1), 100.0);
        assert!(up.observe(t(1, 1), 0.0).is_none(), "falls do not count");
    }

    #[test]
    fn more_than_n_events_in_a_window() {
        let mut d = EventRate::new("failed ssh logins", 5, Duration::from_secs(60));
        let found: Vec<(usize, State)> = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
            .iter()
            .enumerate()
            .filter_map(|(i, n)| d.observe(t(i, 10), *n).map(|f| (i, f.state)))
            .collect();
        assert_eq!(found, [(5, State::Firing), (6, State::Resolved)], "the first event leaves the 60 s window at 60 s");
        let mut burst = EventRate::new("oom kills", 2, Duration::from_secs(300));
        let f = burst.observe(t(0, 1), 3.0).unwrap();
        assert_eq!(f.explanation, "3 oom kills in the last 5m; limit 2");
    }
}
