//! Delivery workers: one thread per receiver takes the receiver's spooled notifications in
//! order, and removes each only once the receiver accepted it.
//!
//! A failed attempt is retried on the backoff ladder (5 s, 15 s, 60 s with ±20 % jitter, then
//! every last step; a longer `Retry-After` wins) until `giveUpAfter` has passed since the
//! first failure; the head of a receiver's queue blocks the ones behind it, so a receiver that
//! comes back gets everything in the order it was made. A notification refused for good (a 4xx
//! other than 408/429, an SMTP 5xx) or given up on moves to the dead-letter spool, and a copy
//! goes to the policy's fallback receiver. A receiver failing for longer than `failingAfter`
//! raises the agent's own `VigilAlertDeliveryFailing` alert (to the fallback receiver), resolved
//! when a delivery succeeds again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Alert;
use super::policy::PolicySet;
use super::receivers::Receiver;
use super::route::Notification;
use super::send::{Backoff, Outcome, Sender};
use super::spool::{Entry, Spool};
use crate::events::Severity;
use vigil_detect::synth::Rng;

/// How deliveries are attempted.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryConfig {
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Waits between attempts; the last step repeats.
    pub backoff: Backoff,
    /// Give up (dead-letter) this long after the first failure.
    pub give_up_after: Duration,
    /// Raise the "delivery failing" alert after failing this long.
    pub failing_after: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            give_up_after: Duration::from_secs(3600),
            failing_after: Duration::from_secs(120),
        }
    }
}

/// What one receiver's deliveries came to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Notifications accepted.
    pub delivered: u64,
    /// Attempts that failed (retried later).
    pub failed_attempts: u64,
    /// Notifications moved to the dead-letter spool.
    pub dead_lettered: u64,
    /// Failing since (the head's first failure), while failing.
    pub failing_since: Option<jiff::Timestamp>,
    /// Whether the "delivery failing" alert is raised.
    pub alerted: bool,
}

/// State shared by the workers and the rest of the agent.
pub struct Shared {
    /// The spool.
    pub spool: Arc<Spool>,
    /// The policies in force (receivers are looked up at each attempt).
    pub policies: RwLock<Arc<PolicySet>>,
    /// Per receiver key.
    pub stats: Mutex<BTreeMap<String, ReceiverStats>>,
    /// Attempt settings.
    pub config: DeliveryConfig,
    /// The node, for the agent's own alerts.
    pub node: String,
    /// Receivers of policies since removed, with when: what they were sent before, and the
    /// resolutions their removal caused, still reach them (`giveUpAfter` at most).
    retired: Mutex<BTreeMap<String, (Receiver, jiff::Timestamp)>>,
    /// Whether a policy set was put in force yet (before it, spooled entries wait).
    loaded: AtomicBool,
    stop: AtomicBool,
}

impl Shared {
    fn stats_mut<R>(&self, key: &str, f: impl FnOnce(&mut ReceiverStats) -> R) -> R {
        let mut s = self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(s.entry(key.to_owned()).or_default())
    }

    /// A copy of the per-receiver figures.
    pub fn stats(&self) -> BTreeMap<String, ReceiverStats> {
        self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn policies(&self) -> Arc<PolicySet> {
        self.policies.read().map(|p| p.clone()).unwrap_or_default()
    }

    fn retired(&self, key: &str) -> Option<Receiver> {
        self.retired.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).map(|(r, _)| r.clone())
    }
}

/// The workers.
pub struct Delivery {
    /// Shared state.
    pub shared: Arc<Shared>,
    workers: Mutex<BTreeMap<String, JoinHandle<()>>>,
}

impl Delivery {
    /// Delivery from `spool` with `config`.
    pub fn new(spool: Arc<Spool>, config: DeliveryConfig, node: &str) -> Self {
        let shared = Arc::new(Shared {
            spool,
            policies: RwLock::new(Arc::new(PolicySet::default())),
            stats: Mutex::new(BTreeMap::new()),
            config,
            node: node.to_owned(),
            retired: Mutex::new(BTreeMap::new()),
            loaded: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        Self { shared, workers: Mutex::new(BTreeMap::new()) }
    }

    /// Puts `set` in force and starts a worker for every receiver it defines and every
    /// receiver with spooled entries.
    pub fn set_policies(&self, set: Arc<PolicySet>) {
        let old = self.shared.policies();
        {
            let now = jiff::Timestamp::now();
            let keep = jiff::SignedDuration::try_from(self.shared.config.give_up_after).unwrap_or_default();
            let spooled: std::collections::BTreeSet<String> = self.shared.spool.receivers().into_iter().collect();
            let mut retired = self.shared.retired.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for p in &old.policies {
                for (name, r) in &p.receivers {
                    let key = p.receiver_key(name);
                    if set.receiver(&key).is_none() {
                        retired.insert(key, (r.clone(), now));
                    }
                }
            }
            retired.retain(|k, (_, since)| {
                set.receiver(k).is_none() && (*since + keep > now || spooled.contains(k.as_str()))
            });
        }
        if let Ok(mut p) = self.shared.policies.write() {
            *p = set.clone();
        }
        self.shared.loaded.store(true, Ordering::SeqCst);
        let mut keys: Vec<String> =
            set.policies.iter().flat_map(|p| p.receivers.keys().map(|r| p.receiver_key(r))).collect();
        keys.extend(self.shared.spool.receivers());
        self.ensure_workers(keys);
    }

    /// Starts workers for receivers that have entries but no worker (replayed entries).
    pub fn rescan(&self) {
        let _ = self.shared.spool.rescan();
        self.ensure_workers(self.shared.spool.receivers());
    }

    fn ensure_workers(&self, keys: Vec<String>) {
        let mut workers = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in keys {
            if workers.contains_key(&key) {
                continue;
            }
            let shared = self.shared.clone();
            let k = key.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("deliver-{}", workers.len()))
                .spawn(move || worker(&shared, &k));
            if let Ok(h) = spawned {
                workers.insert(key, h);
            }
        }
    }

    /// Stops the workers (an attempt in flight finishes or times out first; what is not
    /// delivered stays spooled).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.spool.wake_all();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for (_, h) in workers {
            let _ = h.join();
        }
    }
}

/// One attempt at the rest of `entry`'s requests.
fn attempt(receiver: &Receiver, sender: &Sender, entry: &mut Entry, timeout: Duration) -> Outcome {
    if let Receiver::Email(c) = receiver {
        return c.send(&entry.notification.alerts, entry.notification.preamble().as_deref(), timeout);
    }
    let reqs = receiver.requests_for(&entry.notification);
    for req in reqs.iter().skip(entry.requests_done) {
        match sender.post(req) {
            Outcome::Delivered => entry.requests_done += 1,
            other => return other,
        }
    }
    Outcome::Delivered
}

fn seed(key: &str) -> u64 {
    let nanos = jiff::Timestamp::now().as_nanosecond() as u64;
    key.bytes().fold(nanos, |h, b| h.rotate_left(5) ^ u64::from(b))
}

fn worker(shared: &Shared, key: &str) {
    let sender = match Sender::new(shared.config.timeout) {
        Ok(s) => s,
        Err(e) => {
            // Its entries stay spooled for the next start.
            tracing::error!(receiver = %key, error = %e, "alerts: no HTTP client for the receiver");
            return;
        }
    };
    let mut rng = Rng::new(seed(key));
    // The head entry while it waits for its next attempt, so the wait reads no file; read
    // again only when the head changed (a replayed older entry, or this one gone).
    let mut cached: Option<Entry> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let head = shared.spool.head_seq(key);
        let entry = match (head, cached.take()) {
            (Some(seq), Some(e)) if e.seq == seq => Some(e),
            (Some(_), _) => shared.spool.head(key),
            (None, _) => None,
        };
        let Some(mut entry) = entry else {
            shared.spool.wait(Duration::from_secs(1));
            continue;
        };
        let now = jiff::Timestamp::now();
        if let Some(at) = entry.next_attempt
            && at > now
        {
            let wait = at.duration_since(now).unsigned_abs().min(Duration::from_secs(1));
            cached = Some(entry);
            shared.spool.wait(wait);
            continue;
        }
        let set = shared.policies();
        let retired = shared.retired(key);
        let Some(receiver) = set.receiver(key).or(retired.as_ref()) else {
            // Not (or no longer) in the policies. Wait for the first policy load before
            // deciding: the spool of a previous run is read before the policies are.
            if !shared.loaded.load(Ordering::SeqCst) {
                cached = Some(entry);
                shared.spool.wait(Duration::from_secs(1));
                continue;
            }
            give_up(shared, &set, key, entry, "the receiver is not defined in the policies in force", now);
            continue;
        };
        entry.attempts += 1;
        match attempt(receiver, &sender, &mut entry, shared.config.timeout) {
            Outcome::Delivered => {
                let _ = shared.spool.ack(entry.seq);
                let recovered = shared.stats_mut(key, |s| {
                    s.delivered += 1;
                    s.failing_since = None;
                    std::mem::take(&mut s.alerted)
                });
                if recovered {
                    delivery_failing(shared, &set, key, None, now);
                }
            }
            Outcome::Rejected { why } => give_up(shared, &set, key, entry, &format!("{why}; not retried"), now),
            Outcome::Retry { after, why } => {
                let since = *entry.failing_since.get_or_insert(now);
                let failing_for = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
                shared.stats_mut(key, |s| {
                    s.failed_attempts += 1;
                    s.failing_since.get_or_insert(since);
                });
                if failing_for >= shared.config.give_up_after {
                    let why = format!(
                        "{why}; gave up after {} attempts over {}",
                        entry.attempts,
                        vigil_detect::human(failing_for)
                    );
                    give_up(shared, &set, key, entry, &why, now);
                    continue;
                }
                let ladder = &shared.config.backoff;
                let step = (entry.attempts as usize - 1).min(ladder.ladder.len().saturating_sub(1));
                let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                let delay = ladder.delay(step, after, unit).unwrap_or(Duration::from_secs(60));
                entry.next_attempt = jiff::SignedDuration::try_from(delay).ok().and_then(|d| now.checked_add(d).ok());
                entry.last_error = Some(why.clone());
                let _ = shared.spool.update(&entry);
                let raise = shared.stats_mut(key, |s| {
                    let raise = !s.alerted && failing_for >= shared.config.failing_after;
                    s.alerted |= raise;
                    raise
                });
                if raise {
                    delivery_failing(shared, &set, key, Some((since, &why)), now);
                }
                cached = Some(entry);
            }
        }
    }
}

/// Dead-letters `entry` and sends a copy to the fallback receiver.
fn give_up(shared: &Shared, set: &PolicySet, key: &str, entry: Entry, why: &str, now: jiff::Timestamp) {
    let notification = entry.notification.clone();
    if let Err(e) = shared.spool.dead_letter(entry, why, now) {
        // It stays pending (nothing lost); wait before the worker takes it again rather than
        // hammering a receiver that refuses it.
        tracing::error!(receiver = %key, error = %e, "alerts: could not dead-letter a notification");
        for _ in 0..30 {
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        return;
    }
    shared.stats_mut(key, |s| s.dead_lettered += 1);
    if let Some(fallback) = set.fallback_for(key).filter(|f| f != key) {
        let note = format!("Could not be delivered to {key}: {why}");
        let copy = Notification {
            receiver: fallback,
            note: Some(notification.note.as_ref().map_or(note.clone(), |n| format!("{note}\n{n}"))),
            ..notification
        };
        let _ = shared.spool.enqueue(copy);
    }
}

/// Raises (`failing` set) or resolves the agent's own alert about receiver `key`, to the
/// policy's fallback receiver.
fn delivery_failing(
    shared: &Shared,
    set: &PolicySet,
    key: &str,
    failing: Option<(jiff::Timestamp, &str)>,
    now: jiff::Timestamp,
) {
    let Some(fallback) = set.fallback_for(key).filter(|f| f != key) else { return };
    let started = failing.map_or(now, |(since, _)| since);
    let mut a =
        Alert::new("VigilAlertDeliveryFailing", &shared.node, Severity::Critical, started).label("receiver", key);
    match failing {
        Some((since, why)) => {
            a.annotations.insert("summary".into(), format!("Alerts to {key} fail since {since}: {why}"));
        }
        None => {
            a.annotations.insert("summary".into(), format!("Alerts to {key} are delivered again"));
            a.ends_at = Some(now);
        }
    }
    let _ = shared.spool.enqueue(Notification {
        receiver: fallback,
        route: "vigil-self".into(),
        group: BTreeMap::from([("alertname".to_owned(), "VigilAlertDeliveryFailing".to_owned())]),
        alerts: vec![a],
        suppressed: 0,
        created: now,
        note: None,
        active_until: None,
    });
}
