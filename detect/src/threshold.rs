//! A static threshold with hysteresis and a `for` duration: fires when the value stays at or
//! beyond the limit for `for`, resolves when it stays on the safe side of the clear level for
//! `for`. Seed defaults: CPU 90 %, memory 85 %, disk 90 %, file descriptors 80 %.

use std::time::Duration;

use super::{Debounce, Detector, Finding, State, human};

/// Which side of the limit is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Values at or above the limit.
    Above,
    /// Values at or below the limit.
    Below,
}

/// A threshold detector.
#[derive(Clone, Debug)]
pub struct Threshold {
    /// The limit.
    pub limit: f64,
    /// The level the value must return past to resolve (hysteresis).
    pub clear: f64,
    /// Which side is bad.
    pub direction: Direction,
    /// How long the condition must hold (both ways).
    pub hold: Duration,
    /// What the series is, for the explanation (`cpu utilisation`).
    pub name: String,
    debounce: Debounce,
    last: f64,
}

impl Threshold {
    /// Fires at `limit` (or beyond, per `direction`) held for `hold`; resolves past `clear`.
    pub fn new(name: &str, limit: f64, clear: f64, direction: Direction, hold: Duration) -> Self {
        Self { limit, clear, direction, hold, name: name.to_owned(), debounce: Debounce::new(hold), last: f64::NAN }
    }

    /// Whether the condition is firing now.
    pub fn firing(&self) -> bool {
        self.debounce.firing()
    }

    /// The seed's defaults for a utilisation ratio (0-1): `limit`, clear 5 points lower,
    /// held 5 minutes.
    pub fn utilisation(name: &str, limit: f64) -> Self {
        Self::new(name, limit, limit - 0.05, Direction::Above, Duration::from_secs(300))
    }
}

impl Detector for Threshold {
    fn observe(&mut self, at: jiff::Timestamp, value: f64) -> Option<Finding> {
        if !value.is_finite() {
            return None;
        }
        self.last = value;
        let bad = match self.direction {
            Direction::Above => value >= self.limit || (self.debounce.firing() && value >= self.clear),
            Direction::Below => value <= self.limit || (self.debounce.firing() && value <= self.clear),
        };
        let state = self.debounce.update(at, bad)?;
        let side = if self.direction == Direction::Above { "above" } else { "below" };
        let explanation = match state {
            State::Firing => {
                format!("{} is {value:.3}, {side} the limit of {:.3} for {}", self.name, self.limit, human(self.hold))
            }
            State::Resolved => {
                format!("{} is {value:.3}, back past {:.3} for {}", self.name, self.clear, human(self.hold))
            }
        };
        Some(Finding {
            state,
            detector: "threshold",
            at,
            value,
            baseline: self.clear,
            threshold: self.limit,
            window: self.hold,
            explanation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::t;

    #[test]
    fn fires_after_for_and_does_not_flap_at_the_limit() {
        let mut d = Threshold::new("cpu utilisation", 0.9, 0.85, Direction::Above, Duration::from_secs(60));
        let series = [
            0.5, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.88, 0.91, 0.87, 0.89, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5,
            0.5,
        ];
        let found: Vec<(usize, State)> =
            series.iter().enumerate().filter_map(|(i, v)| d.observe(t(i, 10), *v).map(|f| (i, f.state))).collect();
        assert_eq!(
            found,
            [(7, State::Firing), (18, State::Resolved)],
            "hovering between 0.85 and 0.91 holds the state"
        );
    }

    #[test]
    fn the_explanation_names_value_limit_and_duration() {
        let mut d = Threshold::new("disk / used", 0.9, 0.85, Direction::Above, Duration::ZERO);
        let f = d.observe(t(0, 10), 0.93).unwrap();
        assert_eq!(f.explanation, "disk / used is 0.930, above the limit of 0.900 for 0s");
        let mut low = Threshold::new("free inodes", 0.1, 0.15, Direction::Below, Duration::ZERO);
        assert_eq!(low.observe(t(0, 10), 0.05).unwrap().state, State::Firing);
        assert!(low.observe(t(1, 10), 0.12).is_none());
        assert_eq!(low.observe(t(2, 10), 0.2).unwrap().state, State::Resolved);
    }
}
