//! Clock events: loss and return of synchronisation, and an offset beyond a threshold, from the
//! kernel's clock state ([`vigil_host::clock`]) at each interval. Pure.

use super::{Event, EventType, Severity};
use vigil_host::clock::ClockState;

/// Follows the clock state and reports its transitions.
#[derive(Debug)]
pub struct ClockWatch {
    /// An offset beyond this (seconds, either sign) is reported.
    pub max_offset_seconds: f64,
    synchronized: Option<bool>,
    offset_high: bool,
}

impl ClockWatch {
    /// A watch reporting offsets beyond `max_offset_seconds`.
    pub fn new(max_offset_seconds: f64) -> Self {
        Self { max_offset_seconds, synchronized: None, offset_high: false }
    }

    /// Events for the state read at `now`. An unsynchronised clock at the first read is
    /// reported (it is news to whoever reads the events); a synchronised one is not.
    pub fn observe(&mut self, state: &ClockState, now: jiff::Timestamp) -> Vec<Event> {
        let mut out = Vec::new();
        let details = |e: Event| {
            e.with("offsetSeconds", state.offset_seconds)
                .with("maxErrorSeconds", state.max_error_seconds)
                .with("estimatedErrorSeconds", state.estimated_error_seconds)
        };
        match (self.synchronized, state.synchronized) {
            (Some(true) | None, false) => out.push(details(Event::new(
                EventType::ClockUnsynchronized,
                now,
                format!("clock not synchronised (maximum error {:.3} s)", state.max_error_seconds),
            ))),
            (Some(false), true) => {
                out.push(details(Event::new(EventType::ClockSynchronized, now, "clock synchronised again")))
            }
            _ => {}
        }
        self.synchronized = Some(state.synchronized);
        let offset = state.offset_seconds.abs();
        if state.synchronized && offset > self.max_offset_seconds && !self.offset_high {
            self.offset_high = true;
            let severity = if offset > 10.0 * self.max_offset_seconds { Severity::Critical } else { Severity::Warning };
            out.push(
                details(Event::new(
                    EventType::ClockOffset,
                    now,
                    format!("clock offset {:+.3} s beyond {:.3} s", state.offset_seconds, self.max_offset_seconds),
                ))
                .with("thresholdSeconds", self.max_offset_seconds)
                .severity(severity),
            );
        } else if offset < 0.8 * self.max_offset_seconds {
            // Hysteresis: an offset hovering at the threshold reports once.
            self.offset_high = false;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(sync: bool, offset: f64) -> ClockState {
        ClockState {
            synchronized: sync,
            offset_seconds: offset,
            estimated_error_seconds: 0.0,
            max_error_seconds: 0.1,
            frequency_ppm: 0.0,
        }
    }

    #[test]
    fn transitions_and_hysteresis() {
        let mut w = ClockWatch::new(0.1);
        let t = jiff::Timestamp::UNIX_EPOCH;
        let kinds = |v: Vec<Event>| v.into_iter().map(|e| e.kind).collect::<Vec<_>>();
        assert!(w.observe(&st(true, 0.0), t).is_empty());
        assert_eq!(kinds(w.observe(&st(false, 0.0), t)), [EventType::ClockUnsynchronized]);
        assert!(w.observe(&st(false, 0.0), t).is_empty(), "a state is reported once");
        assert_eq!(kinds(w.observe(&st(true, 0.0), t)), [EventType::ClockSynchronized]);
        assert_eq!(kinds(w.observe(&st(true, -0.2), t)), [EventType::ClockOffset]);
        assert!(w.observe(&st(true, 0.095), t).is_empty(), "still near the threshold");
        assert!(w.observe(&st(true, 0.12), t).is_empty());
        assert!(w.observe(&st(true, 0.01), t).is_empty());
        let e = w.observe(&st(true, 5.0), t);
        assert_eq!((e[0].kind, e[0].severity), (EventType::ClockOffset, Severity::Critical));
        let mut fresh = ClockWatch::new(0.1);
        assert_eq!(kinds(fresh.observe(&st(false, 0.0), t)), [EventType::ClockUnsynchronized]);
    }
}
