//! Two agents listening at once, and neither reporting what the other did.
//!
//! During a handover (docs/adr/0005-zero-gap-handover.md) the incoming agent opens the process
//! connector when it asks for the node, while the outgoing agent still works, and holds what
//! it reads. The kernel sends every listener the same message with the same [`Stamp`], so:
//!
//! - the working agent notes the stamp of every process event it handled, reported or dropped
//!   by its rate limit ([`Handled`], the last [`WINDOW_NS`] of them, at most [`CAP`]);
//! - when it stops it saves them with the span they cover ([`Reported`], in
//!   `<stateDir>/`[`FILE`]) before it releases the node's lock;
//! - the incoming agent, once it holds the lock, reports what it held and what it reads on
//!   only where [`Reported::handled`] says the outgoing agent did not handle it ([`Gate`]).
//!
//! So each event is reported once: by the outgoing agent up to its last read, by the incoming
//! one after, and no window exists in which no agent listens. Pure; the I/O is in the runner.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::cnproc::Stamp;

/// The file in the state directory the outgoing agent leaves for the incoming one.
pub const FILE: &str = "process-reported.json";

/// How far back the stamps of handled events are kept: a handover takes well under a second
/// (the outgoing agent sees a request within 200 ms and stops within 2 s), so 30 s is ample.
pub const WINDOW_NS: u64 = 30_000_000_000;

/// At most this many stamps are kept (a fork storm of 2,000 processes a second for 30 s,
/// starts and exits): about 1 MiB.
pub const CAP: usize = 65_536;

/// What the agent that stopped handled, for the one taking over.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reported {
    /// The boot it is about (the kernel's clock restarts at boot).
    pub boot: String,
    /// When it began listening (the kernel's monotonic clock, ns).
    pub listening_since: u64,
    /// From when on every event it handled is in `stamps`; the older ones it handled too, but
    /// their stamps fell out of the window.
    pub complete_since: u64,
    /// When it stopped listening.
    pub until: u64,
    /// The stamps of the events it handled from `complete_since` on, sorted.
    pub stamps: Vec<Stamp>,
}

impl Reported {
    /// Whether the agent that wrote this handled the event with `stamp`. Before it listened
    /// or after it stopped: no. In between, an event older than its kept stamps: yes (it was
    /// listening and working); else whether its stamp is kept. An event still unread in its
    /// socket when it stopped is not kept, so it is the incoming agent's.
    pub fn handled(&self, stamp: Stamp) -> bool {
        if stamp.ns < self.listening_since || stamp.ns > self.until {
            return false;
        }
        stamp.ns < self.complete_since || self.stamps.binary_search(&stamp).is_ok()
    }

    /// Reads a saved record; `None` when it is unreadable or of another boot than `boot`
    /// (then nothing held is taken for handled: a duplicate rather than a miss).
    pub fn parse(bytes: &[u8], boot: &str) -> Option<Self> {
        let mut r: Reported = serde_json::from_slice(bytes).ok()?;
        if boot.is_empty() || r.boot != boot || r.complete_since < r.listening_since {
            return None;
        }
        r.stamps.sort_unstable();
        Some(r)
    }
}

/// The stamps of the events the working agent handled lately.
#[derive(Debug)]
pub struct Handled {
    since: u64,
    complete_since: u64,
    stamps: VecDeque<Stamp>,
}

impl Handled {
    /// Nothing handled yet; listening since `since` (the kernel's monotonic clock, ns).
    pub fn new(since: u64) -> Self {
        Self { since, complete_since: since, stamps: VecDeque::new() }
    }

    /// Notes an event handled (reported, or dropped by a rate limit).
    pub fn note(&mut self, stamp: Stamp) {
        self.stamps.push_back(stamp);
        while let Some(front) = self.stamps.front().copied() {
            let old = front.ns.saturating_add(WINDOW_NS) < stamp.ns;
            if !old && self.stamps.len() <= CAP {
                break;
            }
            self.stamps.pop_front();
            self.complete_since = self.complete_since.max(front.ns.saturating_add(1));
        }
    }

    /// What to leave for an incoming agent: stopped listening at `until`, on boot `boot`.
    pub fn reported(&self, boot: &str, until: u64) -> Reported {
        let mut stamps: Vec<Stamp> = self.stamps.iter().copied().collect();
        stamps.sort_unstable();
        stamps.dedup();
        Reported {
            boot: boot.to_owned(),
            listening_since: self.since,
            complete_since: self.complete_since,
            until: until.max(self.complete_since),
            stamps,
        }
    }
}

/// What an agent waiting for the node read, held until it takes over: the newest [`CAP`]
/// events within [`WINDOW_NS`] of the newest (older ones the working agent had handled).
#[derive(Debug)]
pub struct Held<T> {
    events: VecDeque<(Option<Stamp>, T)>,
    newest: u64,
    /// Messages the kernel could not deliver while holding.
    pub lost: u64,
    /// Events let go because they were older than the window or past the cap.
    pub let_go: u64,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Self { events: VecDeque::new(), newest: 0, lost: 0, let_go: 0 }
    }
}

impl<T> Held<T> {
    /// Holds one event.
    pub fn push(&mut self, stamp: Option<Stamp>, event: T) {
        if let Some(s) = stamp {
            self.newest = self.newest.max(s.ns);
        }
        self.events.push_back((stamp, event));
        while let Some((front, _)) = self.events.front() {
            let old = front.is_some_and(|s| s.ns.saturating_add(WINDOW_NS) < self.newest);
            if !old && self.events.len() <= CAP {
                break;
            }
            self.events.pop_front();
            self.let_go += 1;
        }
    }

    /// How many events are held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The held events, in the order they were read.
    pub fn into_events(self) -> impl Iterator<Item = (Option<Stamp>, T)> {
        self.events.into_iter()
    }
}

/// The working agent's gate: which events it reports, and the stamps of those it handled.
#[derive(Debug)]
pub struct Gate {
    handled: Handled,
    before: Option<Reported>,
}

impl Gate {
    /// Listening since `since` (the kernel's monotonic clock, ns); `before` is what the agent
    /// that worked before it handled, when it left a record.
    pub fn new(since: u64, before: Option<Reported>) -> Self {
        Self { handled: Handled::new(since), before }
    }

    /// Whether to report the event with `stamp` (one without a stamp, found in /proc after a
    /// loss, is always reported). Either way it is handled: by this agent or the one before.
    pub fn pass(&mut self, stamp: Option<Stamp>) -> bool {
        let Some(s) = stamp else { return true };
        self.handled.note(s);
        let Some(before) = &self.before else { return true };
        if before.handled(s) {
            return false;
        }
        // A second past the other agent's last read, nothing of its time is still in flight.
        if s.ns > before.until.saturating_add(1_000_000_000) {
            self.before = None;
        }
        true
    }

    /// What to leave for the next agent: stopped listening at `until`, on boot `boot`.
    pub fn reported(&self, boot: &str, until: u64) -> Reported {
        self.handled.reported(boot, until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn st(ns: u64, cpu: u32, seq: u32) -> Stamp {
        Stamp { ns, cpu, seq }
    }

    #[test]
    fn the_pair_reports_each_event_once() {
        // The outgoing agent listens from 100 and handles 1..=5; the incoming one holds from 3.
        let mut out = Handled::new(100);
        let all: Vec<Stamp> = (1..=8).map(|i| st(100 + i * 10, (i % 2) as u32, i as u32)).collect();
        for s in &all[..5] {
            out.note(*s);
        }
        let reported = out.reported("boot-a", 155);
        let mut held = Held::default();
        for s in &all[2..] {
            held.push(Some(*s), s.seq);
        }
        let mut gate = Gate::new(120, Some(reported));
        let passed: Vec<u32> = held.into_events().filter(|(s, _)| gate.pass(*s)).map(|(_, e)| e).collect();
        assert_eq!(passed, vec![6, 7, 8]);
        // What the gate leaves for a third agent covers the pair's events from its start on.
        let next = gate.reported("boot-a", 200);
        assert!(all[2..].iter().all(|s| next.handled(*s)));
        assert!(!next.handled(all[1]), "before it listened");
    }

    #[test]
    fn an_event_the_outgoing_agent_never_read_is_the_incoming_ones() {
        let mut out = Handled::new(0);
        out.note(st(10, 0, 1));
        // Message 2 of CPU 1 (time 12) sat unread in the outgoing socket when it stopped at 20.
        let r = out.reported("b", 20);
        assert!(r.handled(st(10, 0, 1)));
        assert!(!r.handled(st(12, 1, 2)), "not handled: reported by the incoming agent");
        assert!(!r.handled(st(25, 0, 2)), "after it stopped");
    }

    #[test]
    fn before_the_outgoing_agent_listened_nothing_is_handled() {
        let r = Handled::new(1_000).reported("b", 2_000);
        assert!(!r.handled(st(999, 0, 1)));
    }

    #[test]
    fn stamps_past_the_window_are_taken_as_handled() {
        let mut h = Handled::new(0);
        h.note(st(5, 0, 1));
        h.note(st(WINDOW_NS + 10, 0, 2));
        let r = h.reported("b", WINDOW_NS + 20);
        assert_eq!(r.stamps, vec![st(WINDOW_NS + 10, 0, 2)]);
        assert_eq!(r.complete_since, 6);
        assert!(r.handled(st(5, 0, 1)), "fell out of the window, but it was handled");
        assert!(r.handled(st(3, 1, 9)), "older than the kept stamps, while it listened");
        assert!(!r.handled(st(7, 1, 9)), "within the kept span and not kept");
    }

    #[test]
    fn the_cap_bounds_what_is_kept_and_held() {
        let mut h = Handled::new(0);
        let mut held = Held::default();
        for i in 0..(CAP as u64 + 10) {
            h.note(st(i, 0, i as u32));
            held.push(Some(st(i, 0, i as u32)), i);
        }
        assert_eq!(h.reported("b", u64::MAX).stamps.len(), CAP);
        assert_eq!(held.len(), CAP);
        assert_eq!(held.let_go, 10);
    }

    #[test]
    fn a_record_of_another_boot_or_garbage_is_no_record() {
        let r = Handled::new(1).reported("boot-a", 2);
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(Reported::parse(&bytes, "boot-a"), Some(r));
        assert_eq!(Reported::parse(&bytes, "boot-b"), None);
        assert_eq!(Reported::parse(&bytes, ""), None);
        assert_eq!(Reported::parse(b"{\"boot\":", "boot-a"), None);
        assert_eq!(Reported::parse(b"\xff\xfe", "boot-a"), None);
    }

    proptest! {
        /// However the two agents' listening overlaps and whatever order messages arrive in
        /// (CPUs interleave), every event is reported exactly once: by the outgoing agent if it
        /// read it before stopping, else by the incoming one.
        #[test]
        fn exactly_once_whatever_the_overlap(
            n in 1usize..300,
            gaps in proptest::collection::vec(0u64..50_000_000, 300),
            cpus in proptest::collection::vec(0u32..4, 300),
            incoming_from in 0usize..300,
            outgoing_reads in 0usize..300,
            swap in proptest::collection::vec(any::<bool>(), 300),
        ) {
            let mut ns = 1_000u64;
            let mut seqs = [0u32; 4];
            let mut events = Vec::new();
            for i in 0..n {
                ns += gaps[i];
                let cpu = cpus[i];
                seqs[cpu as usize] += 1;
                events.push(st(ns, cpu, seqs[cpu as usize]));
            }
            // Delivery order: neighbours of different CPUs may arrive swapped.
            let mut arrival = events.clone();
            for i in 1..n {
                if swap[i] && arrival[i - 1].cpu != arrival[i].cpu {
                    arrival.swap(i - 1, i);
                }
            }
            // The incoming agent listens from message `from` (in arrival order), which comes
            // before the outgoing agent's last read: the two overlap.
            let from = incoming_from.min(n - 1);
            let read = outgoing_reads.clamp(from, n - 1) + 1;
            let mut out = Handled::new(0);
            for s in &arrival[..read] {
                out.note(*s);
            }
            let until = arrival[..read].iter().map(|s| s.ns).max().unwrap_or(0);
            let r = out.reported("b", until);
            let mut held = Held::default();
            for s in &arrival[from..] {
                held.push(Some(*s), *s);
            }
            let mut reported: Vec<Stamp> = arrival[..read].to_vec();
            let mut gate = Gate::new(0, Some(r));
            reported.extend(held.into_events().filter(|(s, _)| gate.pass(*s)).map(|(_, e)| e));
            reported.sort_unstable();
            let mut expected = events.clone();
            expected.sort_unstable();
            prop_assert_eq!(reported, expected);
        }
    }
}
