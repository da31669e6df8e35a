//! Streaming anomaly detectors. Pure: samples go in, in time order, with their time; findings
//! come out. No I/O, no clock, bounded memory per series (a ring of at most `window`
//! samples, or O(1) state).
//!
//! Every finding carries what a person needs to judge it: the value, the baseline it was
//! compared with, the threshold, the window, and a sentence saying so. A detector reports a
//! condition when it starts (`Firing`) and when it ends (`Resolved`), never on every sample in
//! between, and holds each for its `for` duration and hysteresis so a value hovering at a
//! limit does not flap.

pub mod anomaly;
pub mod eval;
pub mod ewma;
pub mod leak;
pub mod mad;
pub mod pickle;
pub mod rate;
pub mod threshold;
pub mod trend;
pub mod window;
pub mod zscore;

use std::time::Duration;

/// Whether a condition starts or ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The condition started.
    Firing,
    /// The condition ended.
    Resolved,
}

/// What a detector found.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// Starts or ends.
    pub state: State,
    /// Which detector (`threshold`, `zscore`, `ewma`, `mad`, `trend`, `leak`, `rate`).
    pub detector: &'static str,
    /// When.
    pub at: jiff::Timestamp,
    /// The value that decided it.
    pub value: f64,
    /// What it was compared with (the mean, the median, the fitted level).
    pub baseline: f64,
    /// The limit it crossed.
    pub threshold: f64,
    /// The span of history the baseline comes from.
    pub window: Duration,
    /// One sentence for a person: value, baseline, threshold, window.
    pub explanation: String,
}

/// A streaming detector over one series.
pub trait Detector {
    /// Feeds one sample; returns a finding when a condition starts or ends.
    fn observe(&mut self, at: jiff::Timestamp, value: f64) -> Option<Finding>;

    /// While the detector cannot judge yet (its baseline is still filling): how far it is.
    /// None once it judges every sample.
    fn learning(&self) -> Option<Progress> {
        None
    }

    /// How close the last sample came to firing: its score divided by the limit it fires at
    /// (1.0 fires), where the detector judges that way. None otherwise, or while learning.
    fn score(&self) -> Option<f64> {
        None
    }
}

/// How much history a learning detector has, of what it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// History held.
    pub have: u64,
    /// History needed before judging.
    pub need: u64,
    /// What `have` and `need` count.
    pub unit: Unit,
}

/// The unit of a [`Progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Samples.
    Samples,
    /// Seconds of history.
    Seconds,
}

impl Progress {
    /// `have` of `need` samples.
    pub fn samples(have: u64, need: u64) -> Self {
        Self { have, need, unit: Unit::Samples }
    }

    /// `have` of `need` of history.
    pub fn span(have: Duration, need: Duration) -> Self {
        Self { have: have.as_secs(), need: need.as_secs(), unit: Unit::Seconds }
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.unit {
            Unit::Samples => write!(f, "{} of {} samples", self.have, self.need),
            Unit::Seconds => write!(
                f,
                "{} of {} of history",
                human(Duration::from_secs(self.have)),
                human(Duration::from_secs(self.need))
            ),
        }
    }
}

/// Holds a raw "is anomalous" signal for a `for` duration before firing, and a clear signal
/// for `for` (and, where asked, for a number of samples in a row) before resolving: the common
/// debounce of every detector.
#[derive(Clone, Debug)]
pub struct Debounce {
    hold: Duration,
    clear_samples: usize,
    firing: bool,
    since: Option<jiff::Timestamp>,
    run: usize,
}

impl Debounce {
    /// A debounce holding each state change for `hold` (zero: immediate).
    pub fn new(hold: Duration) -> Self {
        Self { hold, clear_samples: 1, firing: false, since: None, run: 0 }
    }

    /// Resolving also needs `n` clear samples in a row.
    pub fn clear_after(mut self, n: usize) -> Self {
        self.clear_samples = n.max(1);
        self
    }

    /// Whether the condition is firing now.
    pub fn firing(&self) -> bool {
        self.firing
    }

    /// Whether a change of state is being held (not yet confirmed).
    pub fn pending(&self) -> bool {
        self.since.is_some()
    }

    /// Feeds the raw signal at `at`; returns the transition, if one happened.
    pub fn update(&mut self, at: jiff::Timestamp, anomalous: bool) -> Option<State> {
        if anomalous == self.firing {
            self.since = None;
            self.run = 0;
            return None;
        }
        let since = *self.since.get_or_insert(at);
        self.run += 1;
        let held = at.duration_since(since).unsigned_abs();
        let samples = if self.firing { self.clear_samples } else { 1 };
        if held >= self.hold && self.run >= samples {
            self.firing = anomalous;
            self.since = None;
            self.run = 0;
            return Some(if anomalous { State::Firing } else { State::Resolved });
        }
        None
    }
}

/// `1m30s`-style text of a duration, for explanations.
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

pub mod synth {
    //! Deterministic synthetic series, for the detectors' tests and benchmarks.

    /// SplitMix64: a small, well-distributed, seedable generator.
    pub struct Rng(u64);

    impl Rng {
        /// A generator from `seed`.
        pub fn new(seed: u64) -> Self {
            Self(seed)
        }

        /// The next 64 random bits.
        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        pub fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Standard normal (Box-Muller).
        pub fn normal(&mut self) -> f64 {
            let u1 = self.uniform().max(1e-300);
            let u2 = self.uniform();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    /// The time of sample `i` at `step_secs` spacing.
    pub fn t(i: usize, step_secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + i as i64 * step_secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

#[cfg(test)]
pub(crate) use synth as testkit;

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::t;

    #[test]
    fn debounce_holds_both_ways() {
        let mut d = Debounce::new(Duration::from_secs(30));
        assert_eq!(d.update(t(0, 10), true), None);
        assert_eq!(d.update(t(1, 10), true), None);
        assert_eq!(d.update(t(2, 10), false), None, "a blip resets the hold");
        assert_eq!(d.update(t(3, 10), true), None);
        assert_eq!(d.update(t(6, 10), true), Some(State::Firing));
        assert!(d.firing());
        assert_eq!(d.update(t(7, 10), false), None);
        assert_eq!(d.update(t(10, 10), false), Some(State::Resolved));
        let mut now = Debounce::new(Duration::ZERO);
        assert_eq!(now.update(t(0, 1), true), Some(State::Firing));
    }

    #[test]
    fn a_debounce_can_also_need_clear_samples_in_a_row() {
        // Immediate both ways, but three calm samples in a row before it resolves.
        let mut d = Debounce::new(Duration::ZERO).clear_after(3);
        assert_eq!(d.update(t(0, 10), true), Some(State::Firing), "firing needs one sample");
        assert_eq!(d.update(t(1, 10), false), None);
        assert_eq!(d.update(t(2, 10), false), None);
        assert_eq!(d.update(t(3, 10), true), None, "an anomalous sample restarts the count");
        assert_eq!(d.update(t(4, 10), false), None);
        assert_eq!(d.update(t(5, 10), false), None);
        assert_eq!(d.update(t(6, 10), false), Some(State::Resolved));
        // With a hold too: the hold runs from the first calm sample, and both must be met.
        let mut h = Debounce::new(Duration::from_secs(15)).clear_after(3);
        assert_eq!(h.update(t(0, 10), true), None);
        assert_eq!(h.update(t(2, 10), true), Some(State::Firing));
        assert_eq!(h.update(t(3, 10), false), None);
        assert_eq!(h.update(t(5, 10), false), None, "20 s held, but two samples");
        assert_eq!(h.update(t(6, 10), false), Some(State::Resolved));
    }
}
