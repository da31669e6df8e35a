//! The bounded path from the sources to the consumers: a token bucket per source in front of
//! one bounded queue, with every drop counted by source and reason.
//!
//! Memory is bounded by construction: the queue holds at most `capacity` events, a source
//! never blocks on it (a source that blocked would make the kernel drop netlink messages or
//! overflow inotify instead, silently), and an event that does not fit is counted as dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Event, EventType, Severity, Source, UnparsedReason};

pub use vigil_agent_config::RateLimit;

/// A token bucket. Pure: the caller passes the time.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Self {
        Self { limit, tokens: f64::from(limit.burst), last: None }
    }

    /// Takes one token at `now`; false when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.limit.per_second;
            self.tokens = (self.tokens + refill).min(f64::from(self.limit.burst));
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why an event was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The source's rate limit.
    RateLimited,
    /// The queue was full: the consumers fell behind.
    QueueFull,
    /// One container's share of the source's rate was used up.
    ContainerLimited,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 3] = [Self::RateLimited, Self::QueueFull, Self::ContainerLimited];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::QueueFull => "queue_full",
            Self::ContainerLimited => "container_limited",
        }
    }
}

/// The most containers one emitter keeps a bucket for; beyond it the idlest is forgotten.
const MAX_CONTAINER_BUCKETS: usize = 4096;
/// The most containers whose drops are remembered between two drop summaries.
const MAX_DROPPING_CONTAINERS: usize = 256;

/// Counters of the event path, shared by the emitters and read by the exporters.
#[derive(Debug)]
pub struct EventStats {
    emitted: Vec<AtomicU64>,
    dropped: Vec<AtomicU64>,
    /// Drops by event type, of the events the agent saw and dropped (rate limits, a full
    /// queue); what the kernel lost before the agent saw it has no type.
    dropped_kinds: Vec<AtomicU64>,
    unparsed: Vec<AtomicU64>,
    /// Per source: records the host lost before the agent could read them (the kernel's
    /// netlink buffer or inotify queue overflowed, the kernel log's ring buffer overwrote
    /// records, a file pending a check was evicted from a full set). Not drops: the agent
    /// never saw them.
    lost: Vec<AtomicU64>,
    /// Container → events of it dropped by its own limit since the last [`EventStats::take_container_drops`].
    by_container: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl Default for EventStats {
    fn default() -> Self {
        let zeroes = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        Self {
            emitted: zeroes(EventType::ALL.len()),
            dropped: zeroes(Source::ALL.len() * DropReason::ALL.len()),
            dropped_kinds: zeroes(EventType::ALL.len()),
            unparsed: zeroes(Source::ALL.len() * UnparsedReason::ALL.len()),
            lost: zeroes(Source::ALL.len()),
            by_container: std::sync::Mutex::default(),
        }
    }
}

impl EventStats {
    fn drop_slot(source: Source, reason: DropReason) -> usize {
        source.index() * DropReason::ALL.len() + reason as usize
    }

    /// Counts `n` drops.
    pub fn count_drop(&self, source: Source, reason: DropReason, n: u64) {
        self.dropped[Self::drop_slot(source, reason)].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` records of `source` the host lost before the agent read them.
    pub fn count_lost(&self, source: Source, n: u64) {
        // Saturating: a count read from the host (a sequence gap in a file) may be anything.
        let _ =
            self.lost[source.index()].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_add(n)));
    }

    /// Records of `source` the host lost before the agent read them, so far.
    pub fn lost(&self, source: Source) -> u64 {
        self.lost[source.index()].load(Ordering::Relaxed)
    }

    /// All records lost so far.
    pub fn total_lost(&self) -> u64 {
        self.lost.iter().fold(0u64, |a, c| a.saturating_add(c.load(Ordering::Relaxed)))
    }

    /// Counts a drop of `container`'s event of `kind` by its own limit.
    fn count_container_drop(&self, source: Source, container: &str, kind: EventType) {
        self.count_seen_drop(source, DropReason::ContainerLimited, kind);
        if let Ok(mut m) = self.by_container.lock()
            && (m.len() < MAX_DROPPING_CONTAINERS || m.contains_key(container))
        {
            *m.entry(container.to_owned()).or_insert(0) += 1;
        }
    }

    /// The containers whose events their own limit dropped since the last call, most first.
    pub fn take_container_drops(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> =
            self.by_container.lock().map(|mut m| std::mem::take(&mut *m).into_iter().collect()).unwrap_or_default();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// Counts one line or record of host input a source could not parse (it still goes out
    /// as an `agent.unparsed` event when the rate limit allows).
    pub fn count_unparsed(&self, source: Source, reason: UnparsedReason) {
        self.unparsed[source.index() * UnparsedReason::ALL.len() + reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Events of `kind` the agent saw and dropped (rate limits, a full queue) so far.
    pub fn dropped_of(&self, kind: EventType) -> u64 {
        self.dropped_kinds[kind as usize].load(Ordering::Relaxed)
    }

    /// Counts one drop of an event of `kind` the agent saw.
    fn count_seen_drop(&self, source: Source, reason: DropReason, kind: EventType) {
        self.count_drop(source, reason, 1);
        self.dropped_kinds[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Events of `kind` queued so far.
    pub fn emitted(&self, kind: EventType) -> u64 {
        self.emitted[kind as usize].load(Ordering::Relaxed)
    }

    /// Drops of `source` for `reason` so far.
    pub fn dropped(&self, source: Source, reason: DropReason) -> u64 {
        self.dropped[Self::drop_slot(source, reason)].load(Ordering::Relaxed)
    }

    /// Unparseable inputs of `source` so far.
    pub fn unparsed(&self, source: Source) -> u64 {
        UnparsedReason::ALL.iter().map(|r| self.unparsed_for(source, *r)).sum()
    }

    /// Unparseable inputs of `source` for `reason` so far.
    pub fn unparsed_for(&self, source: Source, reason: UnparsedReason) -> u64 {
        self.unparsed[source.index() * UnparsedReason::ALL.len() + reason as usize].load(Ordering::Relaxed)
    }

    /// All events queued so far.
    pub fn total_emitted(&self) -> u64 {
        self.emitted.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// All drops so far.
    pub fn total_dropped(&self) -> u64 {
        self.dropped.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Non-zero drop counters.
    pub fn drops(&self) -> Vec<(Source, DropReason, u64)> {
        let mut out = Vec::new();
        for s in Source::ALL {
            for r in DropReason::ALL {
                let n = self.dropped(s, r);
                if n > 0 {
                    out.push((s, r, n));
                }
            }
        }
        out
    }
}

/// Creates emitters and owns the receiving end's counters.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<Event>,
    stats: Arc<EventStats>,
    node: Arc<str>,
}

impl EventQueue {
    /// A queue of `capacity` events for `node`, and its receiving end.
    pub fn new(capacity: usize, node: &str) -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self { tx, stats: Arc::new(EventStats::default()), node: node.into() }, rx)
    }

    /// Events waiting in the queue.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The most events the queue holds.
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<EventStats> {
        self.stats.clone()
    }

    /// An emitter for `source` under `limit`.
    pub fn emitter(&self, source: Source, limit: RateLimit) -> Emitter {
        Emitter {
            tx: self.tx.clone(),
            source,
            normal: TokenBucket::new(limit),
            critical: TokenBucket::new(limit),
            endings: TokenBucket::new(limit),
            per_container: None,
            containers: std::collections::HashMap::new(),
            stats: self.stats.clone(),
            node: self.node.clone(),
        }
    }

    /// An emitter for `source` under `limit`, and each container's events (those whose
    /// details name a `containerId`) also under `per_container` of their own.
    pub fn emitter_per_container(&self, source: Source, limit: RateLimit, per_container: RateLimit) -> Emitter {
        Emitter { per_container: Some(per_container), ..self.emitter(source, limit) }
    }
}

/// One source's way into the queue. Never blocks.
pub struct Emitter {
    tx: mpsc::Sender<Event>,
    source: Source,
    // Critical events have a bucket of their own, so a flood of link flaps or process starts
    // cannot starve an OOM kill or a brute-force finding.
    normal: TokenBucket,
    critical: TokenBucket,
    // Process exits have a bucket of their own: a flood of exits (each start has one) cannot
    // use up the budget of the starts, which are what a reader must not miss.
    endings: TokenBucket,
    // One container's share: a noisy container uses up its own bucket, not the source's.
    per_container: Option<RateLimit>,
    containers: std::collections::HashMap<String, (TokenBucket, Instant)>,
    stats: Arc<EventStats>,
    node: Arc<str>,
}

impl Emitter {
    /// Queues `event` (its node filled in); false when it was dropped (and counted) or the
    /// queue is closed.
    pub fn emit(&mut self, event: Event) -> bool {
        self.emit_at(Instant::now(), event)
    }

    fn emit_at(&mut self, now: Instant, mut event: Event) -> bool {
        // Exits are held by the source's own exits bucket only: charged to a container's
        // share they would use up the starts' budget there.
        if let Some(limit) = self.per_container
            && event.severity != Severity::Critical
            && event.kind != EventType::ProcessExit
            && let Some(id) = event.detail_str("containerId")
        {
            if !self.containers.contains_key(id) && self.containers.len() >= MAX_CONTAINER_BUCKETS {
                // Forget the container heard from least recently.
                if let Some(idlest) = self.containers.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone()) {
                    self.containers.remove(&idlest);
                }
            }
            let (bucket, seen) = self.containers.entry(id.to_owned()).or_insert_with(|| (TokenBucket::new(limit), now));
            *seen = now;
            if !bucket.take(now) {
                self.stats.count_container_drop(self.source, id, event.kind);
                return false;
            }
        }
        let bucket = match (event.severity, event.kind) {
            (Severity::Critical, _) => &mut self.critical,
            (_, EventType::ProcessExit) => &mut self.endings,
            _ => &mut self.normal,
        };
        if !bucket.take(now) {
            self.stats.count_seen_drop(self.source, DropReason::RateLimited, event.kind);
            return false;
        }
        if event.node.is_empty() {
            event.node = self.node.to_string();
        }
        let kind = event.kind;
        match self.tx.try_send(event) {
            Ok(()) => {
                self.stats.emitted[kind as usize].fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.count_seen_drop(self.source, DropReason::QueueFull, kind);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Counts host input this source could not parse.
    pub fn count_unparsed(&self, reason: UnparsedReason) {
        self.stats.count_unparsed(self.source, reason);
    }

    /// Counts records lost before the agent saw them (a kernel buffer overflowed or overwrote
    /// them): `vigil_agent_events_lost_total{source}`.
    pub fn count_lost(&self, n: u64) {
        self.stats.count_lost(self.source, n);
    }

    /// True once every receiver is gone: the source should stop.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// The source this emitter speaks for.
    pub fn source(&self) -> Source {
        self.source
    }
}

/// How long a source thread waits for input before looking at whether it should stop.
pub const POLL_SLICE: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let mut b = TokenBucket::new(RateLimit::new(10.0, 5));
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| b.take(t0)).count(), 5);
        assert!(!b.take(t0 + Duration::from_millis(50)), "half a token is not a token");
        assert!(b.take(t0 + Duration::from_millis(110)));
        // A long quiet period refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.take(later)).count(), 5);
    }

    #[test]
    fn a_full_queue_and_the_rate_limit_drop_and_count_never_block() {
        let (q, mut rx) = EventQueue::new(3, "node-a");
        let mut e = q.emitter(Source::Process, RateLimit::new(0.0, 5));
        let ev = || Event::new(EventType::ProcessStart, jiff::Timestamp::UNIX_EPOCH, "x");
        let sent = (0..10).filter(|_| e.emit(ev())).count();
        assert_eq!(sent, 3);
        let stats = q.stats();
        assert_eq!(stats.dropped(Source::Process, DropReason::QueueFull), 2);
        assert_eq!(stats.dropped(Source::Process, DropReason::RateLimited), 5);
        assert_eq!(stats.emitted(EventType::ProcessStart), 3);
        assert_eq!(stats.total_dropped(), 7);
        assert_eq!(stats.dropped_of(EventType::ProcessStart), 7);
        assert_eq!(rx.try_recv().unwrap().node, "node-a");
    }

    #[test]
    fn a_flood_of_exits_does_not_use_up_the_starts_budget() {
        let (q, _rx) = EventQueue::new(1000, "node-a");
        let mut e = q.emitter(Source::Process, RateLimit::new(0.0, 10));
        let at = |kind| Event::new(kind, jiff::Timestamp::UNIX_EPOCH, "x");
        assert_eq!((0..50).filter(|_| e.emit(at(EventType::ProcessExit))).count(), 10);
        assert_eq!((0..50).filter(|_| e.emit(at(EventType::ProcessStart))).count(), 10, "the starts keep their budget");
        let stats = q.stats();
        assert_eq!((stats.dropped_of(EventType::ProcessExit), stats.dropped_of(EventType::ProcessStart)), (40, 40));
    }

    #[test]
    fn a_noisy_container_uses_up_its_own_share_not_the_others() {
        let (q, mut rx) = EventQueue::new(1000, "node-a");
        let mut e = q.emitter_per_container(Source::Process, RateLimit::new(0.0, 100), RateLimit::new(0.0, 10));
        let ev = |c: Option<&str>| {
            Event::new(EventType::ProcessStart, jiff::Timestamp::UNIX_EPOCH, "x").with("containerId", c)
        };
        let t = Instant::now();
        let noisy = (0..500).filter(|_| e.emit_at(t, ev(Some("noisy")))).count();
        assert_eq!(noisy, 10, "the noisy container gets its share");
        assert_eq!((0..5).filter(|_| e.emit_at(t, ev(Some("quiet")))).count(), 5, "the others are not starved");
        assert_eq!((0..5).filter(|_| e.emit_at(t, ev(None))).count(), 5, "nor the host's events");
        let crit = Event::new(EventType::OomKill, jiff::Timestamp::UNIX_EPOCH, "x").with("containerId", "noisy");
        assert!(e.emit_at(t, crit), "a critical event of the noisy container still goes");
        let stats = q.stats();
        assert_eq!(stats.dropped(Source::Process, DropReason::ContainerLimited), 490);
        assert_eq!(stats.take_container_drops(), [("noisy".to_owned(), 490)]);
        assert!(stats.take_container_drops().is_empty(), "taken once");
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 21);
        // Buckets are bounded: a stream of new containers never grows the map past its cap.
        for i in 0..(MAX_CONTAINER_BUCKETS + 100) {
            e.emit_at(t, ev(Some(&format!("c{i}"))));
        }
        assert!(e.containers.len() <= MAX_CONTAINER_BUCKETS);
    }

    #[test]
    fn critical_events_are_not_starved_by_a_flood() {
        let (q, mut rx) = EventQueue::new(100, "n");
        let mut e = q.emitter(Source::Kernel, RateLimit::new(0.0, 2));
        let t = jiff::Timestamp::UNIX_EPOCH;
        for _ in 0..10 {
            e.emit(Event::new(EventType::LinkDown, t, "flap"));
        }
        assert!(e.emit(Event::new(EventType::OomKill, t, "oom")));
        let kinds: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).map(|e| e.kind).collect();
        assert_eq!(kinds, [EventType::LinkDown, EventType::LinkDown, EventType::OomKill]);
    }

    #[test]
    fn a_closed_queue_is_seen_by_the_source() {
        let (q, rx) = EventQueue::new(1, "n");
        let e = q.emitter(Source::Clock, RateLimit::new(1.0, 1));
        assert!(!e.is_closed());
        drop(rx);
        assert!(e.is_closed());
    }
}
