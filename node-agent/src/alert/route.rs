//! Routing, grouping, dedup, silences and rate limits: from alerts to notifications. Pure:
//! the time is an argument.
//!
//! - **Routes** are tried in order; the first whose matchers all match takes the alert, and
//!   later ones only when it says `continue`. Each of its receivers gets the alert.
//! - **Groups**: alerts of one route and receiver with the same values of `groupBy` form a
//!   group. A new group is sent `groupWait` after its first alert; what changes later (an alert
//!   joins, fires again or resolves) is sent at most every `groupInterval`; an unchanged group
//!   still firing is sent again every `repeatInterval`. A notification carries every alert of
//!   the group that is firing or resolved since the last one.
//! - **Dedup**: alerts are keyed by fingerprint; the same alert again changes nothing.
//! - **Resolved**: an alert that resolves is sent once as resolved, then leaves its group; one
//!   that resolves before it was ever sent is dropped without a word.
//! - **Silences** hold matching alerts back while active; they still resolve.
//! - **Rate limits** per route and receiver: at least `minInterval` between two notifications
//!   of a group, at most `maxPerHour` notifications in all. A notification held back by either
//!   is not lost: the group's state goes out once the limit allows, saying how many
//!   notifications were folded into it ("N suppressed").

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Alert;
use super::policy::{PolicySet, all_match, std_duration};

/// What goes to one receiver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// The receiver's key (`<policy>/<receiver>`).
    pub receiver: String,
    /// The route that took the alerts.
    pub route: String,
    /// The group's key: its `groupBy` labels.
    pub group: BTreeMap<String, String>,
    /// Firing alerts, and those resolved since the last notification.
    pub alerts: Vec<Alert>,
    /// Earlier notifications of this group the rate limit folded into this one.
    pub suppressed: u64,
    /// When it was made.
    pub created: jiff::Timestamp,
    /// A sentence for the receiver before the alerts (the "N suppressed" digest, or why a
    /// fallback receiver got it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Until when its firing alerts stand unless sent again (the group's next repeat, plus
    /// a group interval and the rate limit's spacing): an Alertmanager, which lets an alert
    /// without `endsAt` lapse after its `resolve_timeout` (5 minutes), is given it as `endsAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_until: Option<jiff::Timestamp>,
}

impl Notification {
    /// The digest line for what the rate limit held back, when it held anything.
    pub fn digest(&self) -> Option<String> {
        (self.suppressed > 0).then(|| {
            format!(
                "{} earlier notification{} of this group suppressed by the rate limit; this one carries the group's current state",
                self.suppressed,
                if self.suppressed == 1 { "" } else { "s" }
            )
        })
    }

    /// The note and the digest, for the receivers that show text.
    pub fn preamble(&self) -> Option<String> {
        match (&self.note, self.digest()) {
            (Some(n), Some(d)) => Some(format!("{n}\n{d}")),
            (Some(n), None) => Some(n.clone()),
            (None, d) => d,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
struct GroupId {
    policy: String,
    route: usize,
    receiver: String,
    labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Timing {
    group_wait: Duration,
    group_interval: Duration,
    repeat_interval: Duration,
    min_interval: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Group {
    route_name: String,
    timing: Timing,
    alerts: BTreeMap<String, Alert>,
    /// What the receiver last got of each alert: resolved or not.
    notified: BTreeMap<String, bool>,
    next_flush: Option<jiff::Timestamp>,
    last_sent: Option<jiff::Timestamp>,
    suppressed: u64,
    /// Firing alerts restored after a restart that the rules have not confirmed yet, with
    /// the time they resolve unless confirmed.
    #[serde(default)]
    unconfirmed: BTreeMap<String, jiff::Timestamp>,
}

/// What the router remembers across a restart: its groups and what each receiver was told.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RouterState {
    groups: Vec<(GroupId, Group)>,
}

/// `maxPerHour` as a token bucket.
#[derive(Clone, Debug)]
struct Bucket {
    tokens: f64,
    per_hour: f64,
    at: jiff::Timestamp,
}

impl Bucket {
    fn refill(&mut self, now: jiff::Timestamp) {
        let secs = now.duration_since(self.at).as_secs_f64().max(0.0);
        self.tokens = (self.tokens + secs * self.per_hour / 3600.0).min(self.per_hour);
        self.at = now;
    }
}

/// An alert with its fingerprint.
type Keyed = (String, Alert);

fn after(t: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(d).ok().and_then(|d| t.checked_add(d).ok()).unwrap_or(jiff::Timestamp::MAX)
}

/// Counters of what the router did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Alerts no route took.
    pub unrouted: u64,
    /// Alert states held back by a silence.
    pub silenced: u64,
    /// Notifications deferred by a rate limit.
    pub rate_limited: u64,
}

/// Routes alerts into groups and turns due groups into notifications.
#[derive(Debug, Default)]
pub struct Router {
    groups: BTreeMap<GroupId, Group>,
    buckets: HashMap<(String, usize, String), Bucket>,
    /// What it did.
    pub stats: RouterStats,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one alert of `policy` at `now`.
    pub fn push(&mut self, set: &PolicySet, policy: &str, alert: &Alert, now: jiff::Timestamp) {
        let Some(p) = set.policies.iter().find(|p| p.id == policy) else {
            self.stats.unrouted += 1;
            return;
        };
        let mut taken = false;
        for (i, route) in p.routes.iter().enumerate() {
            if !all_match(&route.matchers, &alert.labels) {
                continue;
            }
            taken = true;
            let spec = &route.spec;
            let timing = Timing {
                group_wait: std_duration(spec.group_wait),
                group_interval: std_duration(spec.group_interval),
                repeat_interval: std_duration(spec.repeat_interval),
                min_interval: std_duration(spec.rate_limit.min_interval),
            };
            let labels: BTreeMap<String, String> =
                spec.group_by.iter().map(|l| (l.clone(), alert.labels.get(l).cloned().unwrap_or_default())).collect();
            for r in &spec.receivers {
                let receiver = p.receiver_key(r);
                self.buckets.entry((receiver.clone(), i, policy.to_owned())).or_insert_with(|| Bucket {
                    tokens: f64::from(spec.rate_limit.max_per_hour),
                    per_hour: f64::from(spec.rate_limit.max_per_hour),
                    at: now,
                });
                let id = GroupId { policy: policy.to_owned(), route: i, receiver, labels: labels.clone() };
                let group = self.groups.entry(id).or_insert_with(|| Group {
                    route_name: spec.name.clone(),
                    timing: timing.clone(),
                    alerts: BTreeMap::new(),
                    notified: BTreeMap::new(),
                    next_flush: None,
                    last_sent: None,
                    suppressed: 0,
                    unconfirmed: BTreeMap::new(),
                });
                group.timing = timing.clone();
                group.add(alert, now);
            }
            if !spec.continue_ {
                break;
            }
        }
        if !taken {
            self.stats.unrouted += 1;
        }
    }

    /// Its state, to save.
    pub fn state(&self) -> RouterState {
        RouterState { groups: self.groups.iter().map(|(k, v)| (k.clone(), v.clone())).collect() }
    }

    /// Takes back a saved state at `now` (after a restart). Its firing alerts stay firing
    /// without a new notification when the rules fire them again within `grace`, and resolve
    /// (one resolved notification) when they do not: a condition that ended while the agent
    /// was down is not left open at the receiver.
    pub fn restore(&mut self, state: RouterState, now: jiff::Timestamp, grace: Duration) {
        let deadline = after(now, grace);
        for (id, mut g) in state.groups {
            for (fp, a) in &g.alerts {
                if !a.resolved() && g.notified.get(fp) == Some(&false) {
                    g.unconfirmed.insert(fp.clone(), deadline);
                }
            }
            g.next_flush = Some(g.next_flush.map_or(deadline, |t| t.min(deadline)));
            self.groups.insert(id, g);
        }
    }

    /// When the next group falls due, if any.
    pub fn next_due(&self) -> Option<jiff::Timestamp> {
        self.groups.values().filter_map(|g| g.next_flush).min()
    }

    /// The notifications due at `now`.
    pub fn tick(&mut self, set: &PolicySet, now: jiff::Timestamp) -> Vec<Notification> {
        let mut out = Vec::new();
        let silences: HashMap<&str, &[super::policy::Silence]> =
            set.policies.iter().map(|p| (p.id.as_str(), p.silences.as_slice())).collect();
        // Groups with news first, plain repeats after: under a tight hourly budget a repeat
        // must not take the token a new or changed group is waiting for.
        let due: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.next_flush.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for news_only in [true, false] {
            for id in &due {
                let Some(g) = self.groups.get_mut(id) else { continue };
                if let Some(n) = Self::flush(&mut self.stats, &mut self.buckets, id, g, now, &silences, news_only) {
                    out.push(n);
                }
            }
        }
        self.groups.retain(|_, g| !g.alerts.is_empty());
        out
    }

    /// One due group at `now`: its notification, if one goes out. With `news_only`, a group
    /// with nothing new (a plain repeat) is left for the second pass.
    fn flush(
        stats: &mut RouterStats,
        buckets: &mut HashMap<(String, usize, String), Bucket>,
        id: &GroupId,
        g: &mut Group,
        now: jiff::Timestamp,
        silences: &HashMap<&str, &[super::policy::Silence]>,
        news_only: bool,
    ) -> Option<Notification> {
        if g.next_flush.is_none_or(|t| t > now) {
            return None;
        }
        // Restored alerts the rules did not fire again in time: they ended while the agent
        // was down.
        let expired: Vec<String> = g.unconfirmed.iter().filter(|(_, d)| **d <= now).map(|(fp, _)| fp.clone()).collect();
        for fp in expired {
            g.unconfirmed.remove(&fp);
            if let Some(a) = g.alerts.get_mut(&fp) {
                a.ends_at = Some(now.max(a.starts_at));
                a.annotations.insert(
                    "description".into(),
                    "not seen again after the agent restarted: the condition ended while it was down".into(),
                );
            }
        }
        let silenced = |a: &Alert| {
            silences.get(id.policy.as_str()).is_some_and(|ss| ss.iter().any(|s| s.silences(&a.labels, now)))
        };
        // The group's alerts are keyed by fingerprint: use the keys, not a hash of each again.
        let (send, held): (Vec<Keyed>, Vec<Keyed>) =
            g.alerts.iter().map(|(fp, a)| (fp.clone(), a.clone())).partition(|(_, a)| !silenced(a));
        let changed = send.iter().any(|(fp, a)| g.notified.get(fp) != Some(&a.resolved()));
        let repeat_due = g.last_sent.is_some_and(|t| now >= after(t, g.timing.repeat_interval));
        if news_only && !changed {
            return None;
        }
        if send.is_empty() || !(changed || repeat_due) {
            stats.silenced += held.len() as u64;
            // Held by a silence (or nothing new): look again in a group interval, so an
            // expiring silence releases its alerts.
            let firing = g.alerts.values().any(|a| !a.resolved());
            g.alerts.retain(|_, a| !a.resolved());
            let next = match g.last_sent {
                Some(last) if held.is_empty() => after(last, g.timing.repeat_interval),
                _ => after(now, g.timing.group_interval),
            };
            g.next_flush = firing.then_some(next);
            return None;
        }
        // Rate limits: the group's own spacing, then the route and receiver's hourly budget.
        if let Some(last) = g.last_sent {
            let allowed = after(last, g.timing.min_interval);
            if now < allowed {
                g.suppressed += 1;
                stats.rate_limited += 1;
                g.next_flush = Some(allowed);
                return None;
            }
        }
        if let Some(b) = buckets.get_mut(&(id.receiver.clone(), id.route, id.policy.clone())) {
            b.refill(now);
            if b.tokens < 1.0 {
                let wait = (1.0 - b.tokens) * 3600.0 / b.per_hour.max(1.0);
                g.suppressed += 1;
                stats.rate_limited += 1;
                g.next_flush = Some(after(now, Duration::from_secs_f64(wait.max(1.0))));
                return None;
            }
            b.tokens -= 1.0;
        }
        let held: std::collections::HashSet<String> = held.into_iter().map(|(fp, _)| fp).collect();
        for (fp, a) in &send {
            g.notified.insert(fp.clone(), a.resolved());
        }
        let alerts = send.into_iter().map(|(_, a)| a).collect();
        let n = Notification {
            receiver: id.receiver.clone(),
            route: g.route_name.clone(),
            group: id.labels.clone(),
            alerts,
            suppressed: std::mem::take(&mut g.suppressed),
            created: now,
            note: None,
            active_until: Some(after(now, g.timing.repeat_interval + g.timing.group_interval + g.timing.min_interval)),
        };
        g.last_sent = Some(now);
        let sent_resolved: Vec<String> =
            g.alerts.iter().filter(|(_, a)| a.resolved()).map(|(k, _)| k.clone()).collect();
        for fp in sent_resolved.iter().filter(|fp| !held.contains(*fp)) {
            g.alerts.remove(fp);
            g.notified.remove(fp);
        }
        let firing = g.alerts.values().any(|a| !a.resolved());
        g.next_flush = if firing {
            Some(after(now, g.timing.repeat_interval))
        } else {
            // Only silenced alerts left: look again, so they leave with the silence.
            (!g.alerts.is_empty()).then(|| after(now, g.timing.group_interval))
        };
        Some(n)
    }

    /// Groups held.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }
}

impl Group {
    fn add(&mut self, alert: &Alert, now: jiff::Timestamp) {
        let fp = alert.fingerprint();
        let known = self.alerts.get(&fp);
        if alert.resolved() && known.is_none() {
            return;
        }
        if alert.resolved() && !self.notified.contains_key(&fp) {
            // Resolved before anyone heard of it.
            self.alerts.remove(&fp);
            if self.alerts.is_empty() && self.last_sent.is_none() {
                self.next_flush = None;
            }
            return;
        }
        self.unconfirmed.remove(&fp);
        let changed = known.is_none_or(|k| k.resolved() != alert.resolved());
        let mut alert = alert.clone();
        if let Some(k) = known.filter(|k| !k.resolved()) {
            // The same condition: it started when the receiver was first told.
            alert.starts_at = k.starts_at;
        }
        self.alerts.insert(fp, alert);
        if !changed {
            return;
        }
        let due = match self.last_sent {
            // A new group: its first notification waits `groupWait` from its first alert.
            None => self.next_flush.unwrap_or_else(|| after(now, self.timing.group_wait)),
            Some(last) => after(last, self.timing.group_interval).max(now),
        };
        self.next_flush = Some(self.next_flush.map_or(due, |t| t.min(due)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::policy::{LabelMatcher, Policy, Route, Silence};
    use crate::events::Severity;
    use vigil_crds::policy::{AlertRoute, MatchOp, Matcher, RateLimit};

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn route(name: &str, matchers: Vec<Matcher>, receivers: &[&str], cont: bool) -> Route {
        let spec = AlertRoute {
            name: name.into(),
            matchers: matchers.clone(),
            receivers: receivers.iter().map(|r| (*r).to_owned()).collect(),
            group_by: vec!["alertname".into()],
            group_wait: Duration::from_secs(30).into(),
            group_interval: Duration::from_secs(300).into(),
            repeat_interval: Duration::from_secs(3600).into(),
            rate_limit: RateLimit { min_interval: Duration::from_secs(60).into(), max_per_hour: 20 },
            continue_: cont,
        };
        Route { matchers: matchers.iter().map(|m| LabelMatcher::new(m).unwrap()).collect(), spec }
    }

    fn set(routes: Vec<Route>, silences: Vec<Silence>) -> PolicySet {
        PolicySet {
            policies: vec![Policy {
                id: "ns/p".into(),
                rules: Vec::new(),
                routes,
                receivers: BTreeMap::new(),
                fallback: None,
                silences,
            }],
            ..PolicySet::default()
        }
    }

    fn alert(name: &str, sev: Severity, at: i64) -> Alert {
        Alert::new(name, "node-a", sev, t(at))
    }

    fn resolved(mut a: Alert, at: i64) -> Alert {
        a.ends_at = Some(t(at));
        a
    }

    fn eq(label: &str, value: &str) -> Matcher {
        Matcher { label: label.into(), op: MatchOp::Eq, value: value.into() }
    }

    fn states(n: &Notification) -> Vec<(String, bool)> {
        n.alerts.iter().map(|a| (a.labels["node"].clone() + "/" + a.name(), a.resolved())).collect()
    }

    #[test]
    fn group_wait_then_group_interval_then_resolved_once() {
        let s = set(vec![route("all", vec![], &["hook"], false)], vec![]);
        let mut r = Router::new();
        let a = alert("DiskFull", Severity::Critical, 0);
        r.push(&s, "ns/p", &a, t(0));
        r.push(&s, "ns/p", &a, t(5));
        assert!(r.tick(&s, t(29)).is_empty(), "group wait");
        let n = r.tick(&s, t(30));
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].receiver.as_str(), n[0].route.as_str()), ("ns/p/hook", "all"));
        assert_eq!(n[0].group, BTreeMap::from([("alertname".to_owned(), "DiskFull".to_owned())]));
        assert_eq!(states(&n[0]), [("node-a/DiskFull".to_owned(), false)]);
        r.push(&s, "ns/p", &a, t(40));
        assert!(r.tick(&s, t(100)).is_empty(), "the same alert again is not news");
        r.push(&s, "ns/p", &resolved(a.clone(), 120), t(120));
        assert!(r.tick(&s, t(329)).is_empty(), "changes wait for the group interval");
        let n = r.tick(&s, t(330));
        assert_eq!(states(&n[0]), [("node-a/DiskFull".to_owned(), true)]);
        assert_eq!(r.groups(), 0, "a resolved alert leaves its group");
        assert!(r.tick(&s, t(10_000)).is_empty());
    }

    #[test]
    fn repeat_interval_resends_a_firing_group() {
        let s = set(vec![route("all", vec![], &["hook"], false)], vec![]);
        let mut r = Router::new();
        r.push(&s, "ns/p", &alert("A", Severity::Warning, 0), t(0));
        assert_eq!(r.tick(&s, t(30)).len(), 1);
        assert!(r.tick(&s, t(3629)).is_empty());
        assert_eq!(r.tick(&s, t(3630)).len(), 1);
        assert_eq!(r.next_due(), Some(t(7230)));
    }

    #[test]
    fn a_flap_inside_the_group_wait_says_nothing() {
        let s = set(vec![route("all", vec![], &["hook"], false)], vec![]);
        let mut r = Router::new();
        let a = alert("A", Severity::Warning, 0);
        r.push(&s, "ns/p", &a, t(0));
        r.push(&s, "ns/p", &resolved(a, 10), t(10));
        assert!(r.tick(&s, t(30)).is_empty());
        assert_eq!(r.groups(), 0);
    }

    #[test]
    fn a_restored_state_dedups_what_fires_again_and_resolves_what_does_not() {
        let s = set(vec![route("all", vec![], &["hook"], false)], vec![]);
        let mut before = Router::new();
        let still = alert("Still", Severity::Warning, 0);
        let gone = alert("Gone", Severity::Warning, 0);
        before.push(&s, "ns/p", &still, t(0));
        before.push(&s, "ns/p", &gone, t(0));
        assert_eq!(before.tick(&s, t(30)).len(), 2);
        let saved = serde_json::to_string(&before.state()).unwrap();

        let mut after_restart = Router::new();
        after_restart.restore(serde_json::from_str(&saved).unwrap(), t(1000), Duration::from_secs(120));
        // The rules fire Still again (a new start time: their state was lost).
        after_restart.push(&s, "ns/p", &alert("Still", Severity::Warning, 1050), t(1050));
        assert!(after_restart.tick(&s, t(1100)).is_empty(), "nothing new to say");
        let n = after_restart.tick(&s, t(1120));
        assert_eq!(n.len(), 1);
        assert_eq!(states(&n[0]), [("node-a/Gone".to_owned(), true)]);
        assert_eq!(n[0].alerts[0].starts_at, t(0), "its original start");
        assert!(n[0].alerts[0].annotations["description"].contains("ended while it was down"));
        // Still keeps its original start, and resolves normally later.
        after_restart.push(&s, "ns/p", &resolved(alert("Still", Severity::Warning, 1050), 1200), t(1200));
        let n = after_restart.tick(&s, t(1500));
        assert_eq!(states(&n[0]), [("node-a/Still".to_owned(), true)]);
        assert_eq!(n[0].alerts[0].starts_at, t(0));
    }

    #[test]
    fn routes_first_match_wins_unless_continue() {
        let s = set(
            vec![
                route("page", vec![eq("severity", "critical")], &["pager"], true),
                route("chat", vec![], &["slack", "mail"], false),
                route("never", vec![], &["other"], false),
            ],
            vec![],
        );
        let mut r = Router::new();
        r.push(&s, "ns/p", &alert("A", Severity::Critical, 0), t(0));
        r.push(&s, "ns/p", &alert("B", Severity::Warning, 0), t(0));
        let mut got: Vec<(String, String)> =
            r.tick(&s, t(30)).iter().map(|n| (n.receiver.clone(), n.alerts[0].name().to_owned())).collect();
        got.sort();
        assert_eq!(
            got,
            [("ns/p/mail", "A"), ("ns/p/mail", "B"), ("ns/p/pager", "A"), ("ns/p/slack", "A"), ("ns/p/slack", "B")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        r.push(&s, "other/policy", &alert("C", Severity::Info, 0), t(0));
        let s2 = set(vec![route("only-critical", vec![eq("severity", "critical")], &["pager"], false)], vec![]);
        r.push(&s2, "ns/p", &alert("D", Severity::Info, 0), t(0));
        assert_eq!(r.stats.unrouted, 2);
    }

    #[test]
    fn grouping_folds_alerts_with_the_same_group_labels() {
        let s = set(vec![route("all", vec![], &["hook"], false)], vec![]);
        let mut r = Router::new();
        let on = |node: &str| Alert::new("HighCpu", node, Severity::Warning, t(0));
        r.push(&s, "ns/p", &on("a"), t(0));
        r.push(&s, "ns/p", &on("b"), t(10));
        let n = r.tick(&s, t(30));
        assert_eq!(n.len(), 1);
        assert_eq!(states(&n[0]), [("a/HighCpu".to_owned(), false), ("b/HighCpu".to_owned(), false)]);
    }

    #[test]
    fn silences_hold_alerts_back_until_they_expire() {
        let silence = Silence {
            matchers: vec![LabelMatcher::new(&eq("alertname", "Noisy")).unwrap()],
            starts_at: None,
            ends_at: t(1000),
            comment: "maintenance".into(),
        };
        let s = set(vec![route("all", vec![], &["hook"], false)], vec![silence]);
        let mut r = Router::new();
        r.push(&s, "ns/p", &alert("Noisy", Severity::Warning, 0), t(0));
        r.push(&s, "ns/p", &alert("Real", Severity::Warning, 0), t(0));
        let n = r.tick(&s, t(30));
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].alerts[0].name(), "Real");
        assert!(r.stats.silenced >= 1);
        let mut released = Vec::new();
        let mut now = 31;
        while released.is_empty() && now < 2000 {
            now = r.next_due().map_or(now + 1, |d| d.as_second() - 1_700_000_000);
            released = r.tick(&s, t(now)).into_iter().filter(|n| n.alerts[0].name() == "Noisy").collect();
        }
        assert!((1000..=1330).contains(&now), "released within a group interval of the expiry, at {now}");
        assert_eq!(released.len(), 1);
    }

    #[test]
    fn rate_limits_defer_and_fold_into_an_n_suppressed_digest() {
        let mut rt = route("all", vec![], &["hook"], false);
        rt.spec.group_interval = Duration::from_secs(10).into();
        rt.spec.rate_limit = RateLimit { min_interval: Duration::from_secs(300).into(), max_per_hour: 3 };
        let s = set(vec![rt], vec![]);
        let mut r = Router::new();
        let a = alert("Flappy", Severity::Warning, 0);
        r.push(&s, "ns/p", &a, t(0));
        assert_eq!(r.tick(&s, t(30)).len(), 1);
        r.push(&s, "ns/p", &resolved(a.clone(), 35), t(35));
        assert!(r.tick(&s, t(45)).is_empty(), "deferred by minInterval");
        assert_eq!(r.next_due(), Some(t(330)));
        let n = r.tick(&s, t(330));
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].suppressed, 1);
        assert!(n[0].digest().unwrap().starts_with("1 earlier notification of this group suppressed"));
        assert_eq!(states(&n[0]), [("node-a/Flappy".to_owned(), true)], "the current state, nothing lost");
        // maxPerHour 3: two used; five new groups at once get what is left, the rest follow
        // as tokens come back, none lost.
        for i in 0..5 {
            r.push(&s, "ns/p", &alert(&format!("G{i}"), Severity::Warning, 400), t(400));
        }
        let first = r.tick(&s, t(430));
        assert_eq!(first.len(), 1, "{first:?}");
        let mut delivered = first.len();
        let mut guard = 0;
        let mut last = t(430);
        while delivered < 5 && guard < 100 {
            guard += 1;
            last = r.next_due().unwrap();
            delivered += r.tick(&s, last).len();
        }
        assert_eq!(delivered, 5);
        // Three tokens an hour: one every 1,200 s; four more deliveries need about 4,000 s.
        assert!(last >= t(430 + 3 * 1200) && last <= t(430 + 5 * 1200), "the rest waited for tokens: {last}");
        assert!(r.stats.rate_limited >= 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..proptest::prelude::ProptestConfig::default() })]

        /// Whatever the sequence of firings and resolutions, group waits and rate limits, each
        /// receiver ends up told the final state of every alert it was told about, and told
        /// about every alert still firing: deferred, never lost.
        #[test]
        fn receivers_end_up_told_the_final_state(
            ops in proptest::collection::vec((0usize..6, proptest::prelude::any::<bool>(), 0i64..400), 1..60),
            min_interval in proptest::prop_oneof![proptest::strategy::Just(0u64), proptest::strategy::Just(60), proptest::strategy::Just(300)],
            per_hour in 1u32..30,
        ) {
            let mut rt = route("all", vec![], &["hook"], false);
            rt.spec.group_by = vec!["g".into()];
            rt.spec.rate_limit = RateLimit { min_interval: Duration::from_secs(min_interval).into(), max_per_hour: per_hour };
            let s = set(vec![rt], vec![]);
            let mut r = Router::new();
            let mut now = 0i64;
            let mut last: BTreeMap<String, bool> = BTreeMap::new();
            let mut told: BTreeMap<String, bool> = BTreeMap::new();
            let record = |ns: Vec<Notification>, told: &mut BTreeMap<String, bool>| {
                for n in ns {
                    for a in n.alerts {
                        told.insert(a.fingerprint(), a.resolved());
                    }
                }
            };
            for (i, resolve, dt) in ops {
                now += dt;
                let mut a = alert(&format!("A{i}"), Severity::Warning, now).label("g", &(i % 2).to_string());
                if resolve {
                    if last.get(&a.fingerprint()).is_none_or(|r| *r) {
                        continue; // nothing firing to resolve
                    }
                    a.ends_at = Some(t(now));
                }
                last.insert(a.fingerprint(), resolve);
                r.push(&s, "ns/p", &a, t(now));
                record(r.tick(&s, t(now)), &mut told);
            }
            let end = t(now + 3 * 86_400);
            for _ in 0..5000 {
                match r.next_due() {
                    Some(due) if due <= end => record(r.tick(&s, due), &mut told),
                    _ => break,
                }
            }
            if last.values().all(|resolved| *resolved) {
                proptest::prop_assert_eq!(r.groups(), 0, "nothing firing: no group left behind");
            }
            for (fp, resolved) in &last {
                match told.get(fp) {
                    Some(t) => proptest::prop_assert_eq!(t, resolved, "told a stale state"),
                    None => proptest::prop_assert!(*resolved, "a firing alert never reached the receiver"),
                }
            }
        }
    }
}
