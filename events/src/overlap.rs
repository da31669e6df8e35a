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

/// The file in the state directory the outgoing agent leaves for the incoming one. The
/// incoming agent removes it once read, so a later handover never reads an old one.
pub const FILE: &str = "process-reported.json";

/// How far back the stamps of handled messages are kept: a handover takes well under a
/// second (the outgoing agent sees a request within 200 ms and stops within 2 s), so 30 s is
/// ample.
pub const WINDOW_NS: u64 = 30_000_000_000;

/// At most this many stamps are kept (16 bytes each: 1 MiB), and a record with more is no
/// record.
pub const CAP: usize = 65_536;

/// How far back a waiting agent holds what it reads: the agent working meanwhile handles
/// everything older (it stops within 2 s of a request).
pub const HOLD_NS: u64 = 10_000_000_000;

/// At most this many bytes of held events (by [`Held::push`]'s `size`): a storm while an agent
/// waits cannot grow it past the pod's memory limit. Events let go are counted.
pub const HOLD_BYTES: usize = 4 << 20;

/// At most this many moments of loss are kept in a record.
const LOSSES: usize = 1024;

/// Room kept beyond what the stamps need before it is given back (16 KiB of stamps).
const SLACK: usize = 1024;

/// What the agent that stopped handled, for the one taking over.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reported {
    /// The boot it is about (the kernel's clock restarts at boot).
    pub boot: String,
    /// When it began listening (the kernel's monotonic clock, ns).
    pub listening_since: u64,
    /// From when on the stamp of every message it read is in `stamps`; the older ones it read
    /// too, but their stamps fell out of the window.
    pub complete_since: u64,
    /// When it stopped listening.
    pub until: u64,
    /// The stamps of the messages it read from `complete_since` on, sorted.
    pub stamps: Vec<Stamp>,
    /// When it found messages lost (a gap in a CPU's numbers, an overrun): the messages
    /// before those moments may never have reached it.
    #[serde(default)]
    pub losses: Vec<u64>,
}

impl Reported {
    /// Whether the agent that wrote this handled the message with `stamp`. Before it listened
    /// or after it stopped: no. In between, a message whose stamp it kept: yes. One older than
    /// its kept stamps: yes, unless it found a loss within a second after it (the message may
    /// be what it lost: reported again rather than by nobody). A message still unread in its
    /// socket when it stopped is not kept, so it is the incoming agent's.
    pub fn handled(&self, stamp: Stamp) -> bool {
        if stamp.ns < self.listening_since || stamp.ns > self.until {
            return false;
        }
        if stamp.ns >= self.complete_since {
            return self.stamps.binary_search(&stamp).is_ok();
        }
        let after = stamp.ns.saturating_add(1_000_000_000);
        !self.losses.iter().any(|l| (stamp.ns..=after).contains(l))
    }

    /// Reads a saved record. `None` (nothing held is taken for handled: a duplicate rather
    /// than a miss) when it is unreadable, of another boot than `boot`, inconsistent
    /// (`listening_since ≤ complete_since ≤ until ≤ now` must hold, `now` being the kernel's
    /// monotonic clock), too large, or older than `since`, when the reader began listening
    /// (a record of an earlier handover: the agent before it left none).
    pub fn parse(bytes: &[u8], boot: &str, since: u64, now: u64) -> Option<Self> {
        let mut r: Reported = serde_json::from_slice(bytes).ok()?;
        let ordered = r.listening_since <= r.complete_since && r.complete_since <= r.until && r.until <= now;
        if boot.is_empty() || r.boot != boot || !ordered || r.until < since {
            return None;
        }
        if r.stamps.len() > CAP || r.losses.len() > LOSSES {
            return None;
        }
        r.stamps.sort_unstable();
        Some(r)
    }
}

/// The stamps of the messages the working agent read lately, and when it found losses.
#[derive(Debug)]
pub struct Handled {
    since: u64,
    complete_since: u64,
    stamps: VecDeque<Stamp>,
    losses: VecDeque<u64>,
}

impl Handled {
    /// Nothing handled yet; listening since `since` (the kernel's monotonic clock, ns).
    pub fn new(since: u64) -> Self {
        Self { since, complete_since: since, stamps: VecDeque::new(), losses: VecDeque::new() }
    }

    /// Notes a message read (reported, dropped by a rate limit, or of no interest: a fork, a
    /// thread's exit).
    ///
    /// Room is made before the stamp is added and grows to at most [`CAP`] stamps (a burst
    /// once grew it to twice that), and the room a burst took is given back once the table
    /// holds well under a quarter of it.
    pub fn note(&mut self, stamp: Stamp) {
        self.forget(stamp.ns, CAP - 1);
        if self.stamps.len() == self.stamps.capacity() {
            // Grown here, not by the deque's doubling, which from a size given back could
            // pass the cap.
            let room = (2 * self.stamps.capacity()).clamp(SLACK, CAP);
            self.stamps.reserve_exact(room - self.stamps.len());
        }
        self.stamps.push_back(stamp);
        self.give_back();
    }

    /// Forgets the stamps older than the window at `now` (the kernel's monotonic clock, ns),
    /// so a burst's stamps go once they are old even on a host that has fallen quiet. For a
    /// reader that is caught up (its last read found its socket empty): one that lags must
    /// not take the clock for how far it has read.
    pub fn expire(&mut self, now: u64) {
        self.forget(now, CAP);
        self.give_back();
    }

    /// Drops the oldest stamps while they are older than the window at `now` or more than
    /// `keep` are kept; the record is complete only after what it dropped.
    fn forget(&mut self, now: u64, keep: usize) {
        while let Some(front) = self.stamps.front().copied() {
            if front.ns.saturating_add(WINDOW_NS) >= now && self.stamps.len() <= keep {
                break;
            }
            self.stamps.pop_front();
            self.complete_since = self.complete_since.max(front.ns.saturating_add(1));
        }
    }

    fn give_back(&mut self) {
        if self.stamps.capacity() > 4 * self.stamps.len() + SLACK {
            self.stamps.shrink_to(2 * self.stamps.len() + SLACK);
        }
    }

    /// The room the stamps take, in stamps.
    pub fn room(&self) -> usize {
        self.stamps.capacity()
    }

    /// Notes that messages were lost, found at `at` (the kernel's monotonic clock, ns).
    pub fn lost(&mut self, at: u64) {
        self.losses.push_back(at);
        while self.losses.len() > LOSSES || self.losses.front().is_some_and(|l| l.saturating_add(WINDOW_NS) < at) {
            self.losses.pop_front();
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
            losses: self.losses.iter().copied().collect(),
        }
    }
}

/// What an agent waiting for the node read, held until it takes over: the newest events
/// within [`HOLD_NS`] of the newest, at most [`HOLD_BYTES`] of them (older ones the working
/// agent handled), and the moments it found messages lost.
#[derive(Debug)]
pub struct Held<T> {
    events: VecDeque<(Stamp, T, usize)>,
    bytes: usize,
    newest: u64,
    /// When messages were lost while holding, and how many.
    pub losses: Vec<(u64, u64)>,
    /// Events let go past [`HOLD_BYTES`] while younger than [`HOLD_NS`]: the working agent
    /// reported them unless it lost them too.
    pub let_go: u64,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Self { events: VecDeque::new(), bytes: 0, newest: 0, losses: Vec::new(), let_go: 0 }
    }
}

impl<T> Held<T> {
    /// Holds one event of about `size` bytes.
    pub fn push(&mut self, stamp: Stamp, event: T, size: usize) {
        self.newest = self.newest.max(stamp.ns);
        self.events.push_back((stamp, event, size));
        self.bytes += size;
        while let Some((front, _, size)) = self.events.front() {
            let old = front.ns.saturating_add(HOLD_NS) < self.newest;
            if !old && self.bytes <= HOLD_BYTES {
                break;
            }
            self.bytes -= size;
            if !old {
                self.let_go += 1;
            }
            self.events.pop_front();
        }
    }

    /// Notes `n` messages lost, found at `at` (bounded: the newest 1,024 moments).
    pub fn lost(&mut self, at: u64, n: u64) {
        if self.losses.len() >= LOSSES {
            self.losses.remove(0);
        }
        self.losses.push((at, n));
    }

    /// How many events are held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// About how many bytes the held events take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The held events, in the order they were read.
    pub fn into_events(self) -> impl Iterator<Item = (Stamp, T)> {
        self.events.into_iter().map(|(s, e, _)| (s, e))
    }
}

/// The working agent's gate: which events it reports, and the stamps of what it read.
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
    /// loss, is always reported). Either way its message is handled: by this agent or the one
    /// before.
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

    /// Notes a message read that reports nothing (a fork, a thread's exit).
    pub fn note(&mut self, stamp: Stamp) {
        self.handled.note(stamp);
    }

    /// Lets time pass with no message: see [`Handled::expire`].
    pub fn expire(&mut self, now: u64) {
        self.handled.expire(now);
    }

    /// Notes messages lost, found at `at`.
    pub fn lost(&mut self, at: u64) {
        self.handled.lost(at);
    }

    /// Takes in the losses found while holding: those the agent before could not have
    /// covered (found after it stopped listening; all of them without a record) are this
    /// agent's, noted as its own and counted. Returns how many messages they lost.
    pub fn take_held_losses(&mut self, losses: &[(u64, u64)]) -> u64 {
        let mut charged = 0;
        for &(at, n) in losses {
            if self.before.as_ref().is_none_or(|b| at > b.until) {
                self.handled.lost(at);
                charged += n;
            }
        }
        charged
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

    /// What the incoming agent reports of `held`, through `gate`.
    fn passed<T>(held: Held<T>, gate: &mut Gate) -> Vec<T> {
        held.into_events().filter(|(s, _)| gate.pass(Some(*s))).map(|(_, e)| e).collect()
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
            held.push(*s, s.seq, 1);
        }
        let mut gate = Gate::new(120, Some(reported));
        assert_eq!(passed(held, &mut gate), vec![6, 7, 8]);
        // What the gate leaves for a third agent covers the pair's messages from its start on.
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
        assert!(!r.handled(st(20, 0, 9)), "at its last moment, not kept");
    }

    #[test]
    fn before_the_outgoing_agent_listened_nothing_is_handled() {
        let r = Handled::new(1_000).reported("b", 2_000);
        assert!(!r.handled(st(999, 0, 1)));
    }

    #[test]
    fn stamps_past_the_window_are_taken_as_handled_unless_a_loss_followed() {
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

    /// The outgoing agent lost a message in a storm of 4,000 messages a second: its stamps pass
    /// the cap within the window, and the lost message is still the incoming agent's.
    #[test]
    fn a_loss_in_the_span_past_the_cap_is_not_taken_as_handled() {
        const MS: u64 = 1_000_000;
        let at = |i: u64| i * MS / 4;
        let mut out = Handled::new(0);
        for i in 1..200_000u64 {
            match i {
                120_000 => continue,
                // The gap shows with the next message.
                120_001 => out.lost(at(i)),
                _ => {}
            }
            out.note(st(at(i), 0, i as u32));
        }
        let r = out.reported("b", at(200_000));
        assert!(r.complete_since > at(120_001), "the cap pushed the loss's time out of the kept stamps");
        assert!(!r.handled(st(at(120_000), 0, 120_000)), "the lost message is not handled");
        assert!(!r.handled(st(at(119_000), 0, 119_000)), "nor one in the second before the loss (it cannot tell)");
        assert!(r.handled(st(at(110_000), 0, 110_000)), "older ones it read are handled");
        assert!(r.handled(st(at(199_000), 0, 199_000)), "kept stamps are handled");
    }

    #[test]
    fn a_burst_stays_within_the_cap_and_its_room_is_given_back() {
        let mut h = Handled::new(0);
        // A burst: 100,000 messages in 10 s, all within the window.
        for i in 0..100_000_u64 {
            h.note(st(i * 100_000, 0, i as u32));
            assert!(h.room() <= CAP, "{} stamps of room at message {i}", h.room());
        }
        assert_eq!(h.reported("b", u64::MAX).stamps.len(), CAP);
        // Then a quiet host: 1 message a second, for a minute after the window has passed.
        let quiet = 10_000_000_000 + WINDOW_NS;
        for i in 0..60_u64 {
            h.note(st(quiet + i * 1_000_000_000, 1, i as u32));
        }
        let kept = h.reported("b", u64::MAX).stamps.len();
        assert_eq!(kept, 31, "the last 30 s of messages, both ends in");
        assert!(h.room() <= 4 * kept + SLACK, "{} stamps of room for {kept}", h.room());

        // A second burst after the room was given back grows it no further than the cap.
        for i in 0..100_000_u64 {
            h.note(st(quiet + 60_000_000_000 + i * 100_000, 2, i as u32));
            assert!(h.room() <= CAP, "{} stamps of room at message {i} of the second burst", h.room());
        }

        // A host that falls silent after a burst: time alone lets the stamps and room go.
        let mut h = Handled::new(0);
        for i in 0..50_000_u64 {
            h.note(st(i * 100_000, 0, i as u32));
        }
        let last = 49_999 * 100_000;
        h.expire(last + WINDOW_NS);
        assert_eq!(h.reported("b", u64::MAX).stamps.len(), 1, "only the last message is within the window");
        h.expire(last + WINDOW_NS + 1);
        let r = h.reported("b", u64::MAX);
        assert!(r.stamps.is_empty());
        assert_eq!(r.complete_since, last + 1, "complete only after what it forgot");
        assert!(h.room() <= SLACK, "{} stamps of room for none", h.room());
    }

    #[test]
    fn the_cap_bounds_what_is_kept_and_held_by_bytes() {
        let mut h = Handled::new(0);
        for i in 0..(CAP as u64 + 10) {
            h.note(st(i, 0, i as u32));
        }
        assert_eq!(h.reported("b", u64::MAX).stamps.len(), CAP);
        let mut held = Held::default();
        for i in 0..10_000u64 {
            held.push(st(i, 0, i as u32), i, 1024);
        }
        assert!(held.bytes() <= HOLD_BYTES, "{} bytes held", held.bytes());
        assert_eq!(held.len(), HOLD_BYTES / 1024);
        assert_eq!(held.let_go, 10_000 - (HOLD_BYTES / 1024) as u64);
        // By age: one far newer pushes out everything older than the hold window.
        held.push(st(HOLD_NS + 20_000, 0, 1), 0, 1);
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn a_record_must_be_of_this_boot_consistent_and_not_older_than_the_listener() {
        let mut h = Handled::new(100);
        h.note(st(150, 0, 1));
        let r = h.reported("boot-a", 200);
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(Reported::parse(&bytes, "boot-a", 50, 1_000), Some(r.clone()));
        assert_eq!(Reported::parse(&bytes, "boot-b", 50, 1_000), None, "another boot");
        assert_eq!(Reported::parse(&bytes, "", 50, 1_000), None, "no boot known");
        assert_eq!(Reported::parse(&bytes, "boot-a", 201, 1_000), None, "left before this agent listened");
        assert_eq!(Reported::parse(&bytes, "boot-a", 50, 199), None, "ends in the future");
        assert_eq!(Reported::parse(b"{\"boot\":", "boot-a", 0, 1_000), None);
        assert_eq!(Reported::parse(b"\xff\xfe", "boot-a", 0, 1_000), None);
        // A forged record claiming everything: refused.
        let forged = Reported {
            boot: "boot-a".into(),
            listening_since: 0,
            complete_since: u64::MAX,
            until: u64::MAX,
            ..Reported::default()
        };
        assert_eq!(Reported::parse(&serde_json::to_vec(&forged).unwrap(), "boot-a", 0, 1_000), None);
        let inverted = Reported {
            boot: "boot-a".into(),
            listening_since: 10,
            complete_since: 5,
            until: 20,
            ..Reported::default()
        };
        assert_eq!(Reported::parse(&serde_json::to_vec(&inverted).unwrap(), "boot-a", 0, 1_000), None);
        let huge = Reported { stamps: vec![st(150, 0, 1); CAP + 1], ..r };
        assert_eq!(Reported::parse(&serde_json::to_vec(&huge).unwrap(), "boot-a", 0, 1_000), None);
    }

    #[test]
    fn only_losses_after_the_agent_before_stopped_are_charged_to_the_incoming_one() {
        let r = Handled::new(0).reported("b", 100);
        let mut gate = Gate::new(0, Some(r));
        assert_eq!(gate.take_held_losses(&[(50, 3), (150, 2)]), 2);
        assert_eq!(Gate::new(0, None).take_held_losses(&[(50, 3), (150, 2)]), 5);
    }

    proptest! {
        /// However the two agents' listening overlaps, whatever order messages arrive in (CPUs
        /// interleave) and whichever the outgoing agent lost, every event is reported exactly
        /// once: by the outgoing agent if it read it before stopping, else by the incoming one.
        #[test]
        fn exactly_once_whatever_the_overlap(
            n in 1usize..300,
            gaps in proptest::collection::vec(0u64..30_000_000, 300),
            cpus in proptest::collection::vec(0u32..4, 300),
            incoming_from in 0usize..300,
            outgoing_reads in 0usize..300,
            swap in proptest::collection::vec(any::<bool>(), 300),
            lose in proptest::collection::vec(any::<bool>(), 300),
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
            // before the outgoing agent's last read: the two overlap. The outgoing agent loses
            // some of what it would have read (found at the next message it reads).
            let from = incoming_from.min(n - 1);
            let read = outgoing_reads.clamp(from, n - 1) + 1;
            let mut out = Handled::new(0);
            let mut reported: Vec<Stamp> = Vec::new();
            let mut pending_loss = false;
            for (i, s) in arrival[..read].iter().enumerate() {
                // Only what the incoming agent also hears can be recovered from a loss.
                if lose[i] && i >= from {
                    pending_loss = true;
                    continue;
                }
                if pending_loss {
                    out.lost(s.ns);
                    pending_loss = false;
                }
                out.note(*s);
                reported.push(*s);
            }
            let until = arrival[..read].iter().map(|s| s.ns).max().unwrap_or(0);
            let r = out.reported("b", until);
            let mut held = Held::default();
            for s in &arrival[from..] {
                held.push(*s, *s, 1);
            }
            let mut gate = Gate::new(0, Some(r));
            reported.extend(passed(held, &mut gate));
            reported.sort_unstable();
            let mut expected = events.clone();
            expected.sort_unstable();
            prop_assert_eq!(reported, expected);
        }
    }
}
