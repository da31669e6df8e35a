//! The rule engine: the policies' rules applied to metric samples and security events. Pure:
//! samples and events go in with their time, alerts (firing or resolved) come out.
//!
//! A metric rule keeps one detector per series it selects (a series is the metric with one
//! set of labels: `vigil_node_filesystem_utilization_ratio{mountpoint="/var"}`); an event rule
//! keeps one event-rate window per value of its `per` field. Both are bounded
//! ([`MAX_SERIES_PER_RULE`]); series beyond the bound are counted, not tracked. A series that
//! stops reporting (an unmounted filesystem, an exited process) resolves after
//! [`STALE_INTERVALS`] intervals and is forgotten.
//!
//! When the policies change, a rule whose definition did not change keeps its detectors and
//! their history; alerts of removed or changed rules resolve.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use vigil_crds::policy::{AlertRule, DetectorSpec, Severity as RuleSeverity};

use super::Alert;
use super::policy::{PolicySet, std_duration};
use crate::events::{Event, Severity};
use vigil_detect::anomaly::{self, Anomaly};
use vigil_detect::ewma::Ewma;
use vigil_detect::leak::Leak;
use vigil_detect::mad::RollingMedian;
use vigil_detect::rate::{EventRate, RateOfChange};
use vigil_detect::threshold::{Direction, Threshold};
use vigil_detect::trend::TimeToFull;
use vigil_detect::zscore::{Deviation, RollingMean};
use vigil_detect::{Detector, Finding, Progress, State};

/// The engine's maps' hasher: fast on short keys, seeded per process.
type Hasher = foldhash::fast::RandomState;

/// Series one rule tracks at most.
pub const MAX_SERIES_PER_RULE: usize = 1000;
/// Intervals without a sample after which a series resolves and is forgotten.
pub const STALE_INTERVALS: u32 = 5;

pub use crate::export::catalog::Sample;

/// An alert and the policy whose routes take it.
#[derive(Clone, Debug, PartialEq)]
pub struct Routed {
    /// Policy id.
    pub policy: String,
    /// The alert.
    pub alert: Alert,
}

/// Samples a windowed baseline (z-score, MAD) learns before it judges: a third of its window,
/// at least 8.
fn window_warmup(window: u32) -> u32 {
    (window / 3).max(8)
}

/// Samples the EWMA baseline learns before it judges.
const EWMA_WARMUP: u32 = 30;

/// History a leak rule needs before it judges: a sixth of its window.
fn leak_span(window: Duration) -> Duration {
    window / 6
}

enum Det {
    Anomaly(Box<Anomaly>),
    Threshold(Vec<Threshold>, bool),
    Mean(Deviation<RollingMean>),
    Ewma(Deviation<Ewma>),
    Median(Deviation<RollingMedian>),
    Trend(TimeToFull),
    Leak(Leak),
    Rate(RateOfChange),
    Events(EventRate),
}

impl Det {
    fn new(spec: &DetectorSpec, name: &str, hold: Duration, interval: Duration) -> Option<Self> {
        let confirm = hold.max(interval);
        if let Some(a) = &spec.anomaly {
            return Some(Self::Anomaly(Box::new(Anomaly::new(name, anomaly::WINDOW, a.sensitivity.risk(), hold))));
        }
        if let Some(t) = &spec.threshold {
            let mut v = Vec::new();
            if let Some(a) = t.above {
                v.push(Threshold::new(name, a, a - t.hysteresis, Direction::Above, hold));
            }
            if let Some(b) = t.below {
                v.push(Threshold::new(name, b, b + t.hysteresis, Direction::Below, hold));
            }
            return Some(Self::Threshold(v, false));
        }
        // Counted in samples; bounded in time only when the rule says so.
        let window = |w: &vigil_crds::policy::WindowDetector| {
            (w.window as usize, w.max_age.map_or(Duration::MAX, std_duration), window_warmup(w.window) as usize)
        };
        if let Some(w) = &spec.z_score {
            let (n, age, min) = window(w);
            let b = RollingMean::new(n, age, min);
            return Some(Self::Mean(Deviation::new(name, b, w.threshold, w.threshold / 2.0, confirm)));
        }
        if let Some(w) = &spec.mad {
            let (n, age, min) = window(w);
            let b = RollingMedian::new(n, age, min);
            return Some(Self::Median(Deviation::new(name, b, w.threshold, w.threshold * 2.0 / 3.0, confirm)));
        }
        if let Some(e) = &spec.ewma {
            let b = Ewma::new(e.alpha, EWMA_WARMUP as usize, interval);
            return Some(Self::Ewma(Deviation::new(name, b, e.limit, e.limit / 2.0, confirm)));
        }
        if let Some(t) = &spec.trend {
            let cap = t.capacity.unwrap_or(f64::NAN);
            return Some(Self::Trend(TimeToFull::new(name, cap, std_duration(t.horizon), std_duration(t.window))));
        }
        if let Some(l) = &spec.leak {
            let window = std_duration(l.window);
            let mut d = Leak::new(name, l.min_growth_per_minute / 60.0, window, leak_span(window));
            d.min_r2 = l.min_r2;
            return Some(Self::Leak(d));
        }
        if let Some(r) = &spec.rate_of_change {
            return Some(Self::Rate(RateOfChange::new(name, r.per_second, false, hold)));
        }
        if let Some(e) = &spec.event_rate {
            return Some(Self::Events(EventRate::new(name, u64::from(e.count), std_duration(e.window))));
        }
        None
    }

    fn observe(&mut self, at: jiff::Timestamp, value: f64, capacity: Option<f64>) -> Option<Finding> {
        match self {
            Self::Threshold(ds, firing) => {
                let mut out = None;
                for d in ds.iter_mut() {
                    if let Some(f) = d.observe(at, value) {
                        out = Some(f);
                    }
                }
                let now = ds.iter().any(|d| d.firing());
                if now == *firing {
                    return None;
                }
                *firing = now;
                out
            }
            Self::Anomaly(d) => d.observe(at, value),
            Self::Mean(d) => d.observe(at, value),
            Self::Ewma(d) => d.observe(at, value),
            Self::Median(d) => d.observe(at, value),
            Self::Trend(d) => {
                if let Some(c) = capacity {
                    d.capacity = c;
                }
                if d.capacity.is_finite() { d.observe(at, value) } else { None }
            }
            Self::Leak(d) => d.observe(at, value),
            Self::Rate(d) => d.observe(at, value),
            Self::Events(d) => d.observe(at, value),
        }
    }
}

impl Det {
    fn learning(&self) -> Option<Progress> {
        match self {
            Self::Anomaly(d) => d.learning(),
            Self::Mean(d) => d.learning(),
            Self::Ewma(d) => d.learning(),
            Self::Median(d) => d.learning(),
            Self::Trend(d) => d.learning(),
            Self::Leak(d) => d.learning(),
            Self::Threshold(..) | Self::Rate(_) | Self::Events(_) => None,
        }
    }

    fn score(&self) -> Option<f64> {
        match self {
            Self::Anomaly(d) => d.score(),
            _ => None,
        }
    }
}

/// How close a series is to firing: its last score divided by the limit it fires at.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// The policy's name.
    pub policy: String,
    /// The rule's name.
    pub rule: String,
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// 1.0 fires.
    pub score: f64,
}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}{} {:.2}", self.policy, self.rule, labels_text(&self.labels), self.score)
    }
}

/// A series a rule watches whose detector cannot judge yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learning {
    /// Policy id.
    pub policy: String,
    /// Rule name.
    pub rule: String,
    /// The series' labels (empty for a series without labels).
    pub labels: BTreeMap<String, String>,
    /// How much history it has, of what it needs.
    pub progress: Progress,
}

impl std::fmt::Display for Learning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}{}: learning, {}", self.policy, self.rule, labels_text(&self.labels), self.progress)
    }
}

/// ` {k=v, ...}` for a series' labels, nothing without labels.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(" {{{}}}", l.join(", "))
}

/// A series' labels as one unambiguous value, `{command="x",pid="1"}` (`{}` for none):
/// values quoted and escaped, so a label value cannot pass for another label.
pub fn series_text(labels: &BTreeMap<String, String>) -> String {
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", l.join(","))
}

impl Learning {
    fn key(&self) -> (&str, &str, &BTreeMap<String, String>) {
        (&self.policy, &self.rule, &self.labels)
    }
}

/// Between two [`Engine::learning`] lists: the series that started learning (new, or
/// re-learning after a level shift) and the series that judge now (or went).
pub fn learning_changes<'a>(before: &'a [Learning], now: &'a [Learning]) -> (Vec<&'a Learning>, Vec<&'a Learning>) {
    let was: std::collections::HashSet<_> = before.iter().map(Learning::key).collect();
    let is: std::collections::HashSet<_> = now.iter().map(Learning::key).collect();
    (
        now.iter().filter(|l| !was.contains(&l.key())).collect(),
        before.iter().filter(|l| !is.contains(&l.key())).collect(),
    )
}

struct Series {
    det: Det,
    labels: BTreeMap<String, String>,
    firing: Option<Alert>,
    last_seen: jiff::Timestamp,
    last_message: Option<String>,
}

struct RuleState {
    policy: String,
    spec: AlertRule,
    series: HashMap<String, Series, Hasher>,
    /// Series refused for the bound.
    refused: u64,
}

/// The rules of every policy and the state of their series.
pub struct Engine {
    node: String,
    interval: Duration,
    rules: Vec<RuleState>,
}

fn severity(s: RuleSeverity) -> Severity {
    match s {
        RuleSeverity::Info => Severity::Info,
        RuleSeverity::Warning => Severity::Warning,
        RuleSeverity::Critical => Severity::Critical,
    }
}

fn series_key(labels: &BTreeMap<String, String>) -> String {
    let mut k = String::with_capacity(labels.iter().map(|(n, v)| n.len() + v.len() + 2).sum());
    for (n, v) in labels {
        k.push_str(n);
        k.push('\u{1}');
        k.push_str(v);
        k.push('\u{2}');
    }
    k
}

impl RuleState {
    /// The alert a finding of series `key` makes: a firing one, or the stored firing alert
    /// ended.
    fn alert(&mut self, node: &str, key: &str, f: &Finding) -> Option<Routed> {
        let series = self.series.get_mut(key)?;
        let alert = match f.state {
            State::Firing => {
                let what = self
                    .spec
                    .metric
                    .as_ref()
                    .map_or_else(|| self.spec.event.as_ref().map_or("", |e| e.type_.as_str()), |m| m.name.as_str());
                let mut a = Alert::from_finding(&self.spec.name, node, severity(self.spec.severity), what, f);
                for (k, v) in series.labels.iter().chain(&self.spec.labels) {
                    a.labels.insert(k.clone(), v.clone());
                }
                a.annotations.insert("description".into(), f.explanation.clone());
                for (k, v) in &self.spec.annotations {
                    a.annotations.insert(k.clone(), v.clone());
                }
                if let Some(m) = &series.last_message {
                    a.annotations.insert("lastEvent".into(), m.clone());
                }
                series.firing = Some(a.clone());
                a
            }
            State::Resolved => {
                let mut a = series.firing.take()?;
                a.ends_at = Some(f.at.max(a.starts_at));
                a.annotations.insert("description".into(), f.explanation.clone());
                a.annotations.insert("value".into(), format!("{}", f.value));
                a
            }
        };
        Some(Routed { policy: self.policy.clone(), alert })
    }

    fn resolve_all(&mut self, at: jiff::Timestamp, why: &str) -> Vec<Routed> {
        let mut out = Vec::new();
        for s in self.series.values_mut() {
            if let Some(mut a) = s.firing.take() {
                a.ends_at = Some(at.max(a.starts_at));
                a.annotations.insert("description".into(), why.to_owned());
                out.push(Routed { policy: self.policy.clone(), alert: a });
            }
        }
        out
    }

    fn series_mut(&mut self, key: &str, labels: &BTreeMap<String, String>, hold: Duration, interval: Duration) -> bool {
        if self.series.contains_key(key) {
            return true;
        }
        if self.series.len() >= MAX_SERIES_PER_RULE {
            self.refused += 1;
            return false;
        }
        let name = format!("{}{}", self.spec.name, labels_text(labels));
        let Some(det) = Det::new(&self.spec.detector, &name, hold, interval) else { return false };
        self.series.insert(
            key.to_owned(),
            Series {
                det,
                labels: labels.clone(),
                firing: None,
                last_seen: jiff::Timestamp::UNIX_EPOCH,
                last_message: None,
            },
        );
        true
    }
}

impl Engine {
    /// An engine for `node`, fed every `interval` (the sampling interval: windows counted in
    /// samples become durations with it).
    pub fn new(node: &str, interval: Duration) -> Self {
        Self { node: node.to_owned(), interval, rules: Vec::new() }
    }

    /// Takes a new set of policies at `now`. Unchanged rules keep their state; alerts of the
    /// rules that changed or went are returned resolved.
    pub fn set_policies(&mut self, set: &PolicySet, now: jiff::Timestamp) -> Vec<Routed> {
        let mut old: Vec<RuleState> = std::mem::take(&mut self.rules);
        for p in &set.policies {
            for r in &p.rules {
                let kept = old.iter().position(|o| o.policy == p.id && o.spec == *r).map(|i| old.swap_remove(i));
                self.rules.push(kept.unwrap_or_else(|| RuleState {
                    policy: p.id.clone(),
                    spec: r.clone(),
                    series: HashMap::default(),
                    refused: 0,
                }));
            }
        }
        old.iter_mut().flat_map(|r| r.resolve_all(now, "the rule was changed or removed")).collect()
    }

    /// Feeds the samples of one scan at `now`; returns the alerts that fired or resolved.
    pub fn observe_metrics(&mut self, now: jiff::Timestamp, samples: &[Sample]) -> Vec<Routed> {
        let mut by_name: HashMap<&str, Vec<&Sample>, Hasher> =
            HashMap::with_capacity_and_hasher(samples.len().min(1024), Hasher::default());
        for s in samples {
            by_name.entry(s.name.as_str()).or_default().push(s);
        }
        let mut out = Vec::new();
        let interval = self.interval;
        let stale = jiff::SignedDuration::try_from(interval * STALE_INTERVALS).unwrap_or(jiff::SignedDuration::MAX);
        for rule in &mut self.rules {
            let Some(m) = rule.spec.metric.clone() else { continue };
            let hold = rule.spec.for_.map(std_duration).unwrap_or_default();
            let capacity_metric = rule.spec.detector.trend.as_ref().and_then(|t| t.capacity_metric.clone());
            let capacities: HashMap<String, f64> = capacity_metric
                .and_then(|c| by_name.get(c.as_str()))
                .map(|v| v.iter().map(|s| (series_key(&s.labels), s.value)).collect())
                .unwrap_or_default();
            for s in by_name.get(m.name.as_str()).into_iter().flatten() {
                if !m.labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)) {
                    continue;
                }
                let key = series_key(&s.labels);
                let capacity = if capacities.is_empty() { None } else { capacities.get(&key).copied() };
                let observe = |series: &mut Series| {
                    series.last_seen = now;
                    series.det.observe(now, s.value, capacity)
                };
                // One lookup for a known series; a new one is admitted within the bound.
                let f = if let Some(series) = rule.series.get_mut(&key) {
                    observe(series)
                } else if rule.series_mut(&key, &s.labels, hold, interval) {
                    rule.series.get_mut(&key).and_then(observe)
                } else {
                    continue;
                };
                if let Some(f) = f {
                    out.extend(rule.alert(&self.node, &key, &f));
                }
            }
            let gone: Vec<String> = rule
                .series
                .iter()
                .filter(|(_, s)| now.duration_since(s.last_seen) > stale)
                .map(|(k, _)| k.clone())
                .collect();
            for k in gone {
                if let Some(mut s) = rule.series.remove(&k)
                    && let Some(mut a) = s.firing.take()
                {
                    a.ends_at = Some(now.max(a.starts_at));
                    a.annotations.insert("description".into(), "the series stopped reporting".into());
                    out.push(Routed { policy: rule.policy.clone(), alert: a });
                }
            }
        }
        out
    }

    /// Feeds one security event; returns the alerts that fired.
    pub fn observe_event(&mut self, e: &Event) -> Vec<Routed> {
        let mut out = Vec::new();
        let interval = self.interval;
        for rule in &mut self.rules {
            let Some(sel) = &rule.spec.event else { continue };
            if sel.type_ != e.kind.as_str() {
                continue;
            }
            let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            if !sel.details.iter().all(|(k, v)| e.details.get(k).is_some_and(|d| text(d) == *v)) {
                continue;
            }
            let per = rule.spec.detector.event_rate.as_ref().and_then(|r| r.per.clone());
            let labels: BTreeMap<String, String> = per
                .map(|field| {
                    let v = e.details.get(&field).map(text).unwrap_or_default();
                    BTreeMap::from([(field, v)])
                })
                .unwrap_or_default();
            let key = series_key(&labels);
            if !rule.series_mut(&key, &labels, Duration::ZERO, interval) {
                continue;
            }
            let f = rule.series.get_mut(&key).and_then(|s| {
                s.last_seen = e.time;
                s.last_message = Some(e.message.clone());
                s.det.observe(e.time, 1.0, None)
            });
            if let Some(f) = f {
                out.extend(rule.alert(&self.node, &key, &f));
            }
        }
        out
    }

    /// Lets time pass for the event rules (their windows empty and they resolve); forgets
    /// idle event series.
    pub fn tick(&mut self, now: jiff::Timestamp) -> Vec<Routed> {
        let mut out = Vec::new();
        for rule in &mut self.rules {
            let Some(rate) = &rule.spec.detector.event_rate else { continue };
            let window = jiff::SignedDuration::try_from(std_duration(rate.window)).unwrap_or(jiff::SignedDuration::MAX);
            let keys: Vec<String> = rule.series.keys().cloned().collect();
            for key in keys {
                let f = rule.series.get_mut(&key).and_then(|s| s.det.observe(now, 0.0, None));
                if let Some(f) = f {
                    out.extend(rule.alert(&self.node, &key, &f));
                }
            }
            rule.series.retain(|_, s| s.firing.is_some() || now.duration_since(s.last_seen) <= window);
        }
        out
    }

    /// Alerts firing now.
    pub fn active(&self) -> usize {
        self.rules.iter().flat_map(|r| r.series.values()).filter(|s| s.firing.is_some()).count()
    }

    /// The series whose detectors are still learning, by rule and series.
    pub fn learning(&self) -> Vec<Learning> {
        let mut out = Vec::new();
        for r in &self.rules {
            for s in r.series.values() {
                if let Some(progress) = s.det.learning() {
                    out.push(Learning {
                        policy: r.policy.clone(),
                        rule: r.spec.name.clone(),
                        labels: s.labels.clone(),
                        progress,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.policy, &a.rule, &a.labels).cmp(&(&b.policy, &b.rule, &b.labels)));
        out
    }

    /// Every series whose detector scores its samples (the `anomaly` rules'), with its last
    /// score relative to its limit, ordered by policy, rule and labels.
    pub fn scores(&self) -> Vec<Score> {
        let mut out: Vec<Score> = self
            .rules
            .iter()
            .flat_map(|r| {
                r.series.values().filter_map(|s| {
                    s.det.score().map(|score| Score {
                        policy: r.policy.clone(),
                        rule: r.spec.name.clone(),
                        labels: s.labels.clone(),
                        score,
                    })
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.policy, &a.rule, &a.labels).cmp(&(&b.policy, &b.rule, &b.labels)));
        out
    }

    /// Per rule (policy, rule name): how many of its series are learning. Every rule is
    /// listed, with 0 when none is, so the gauge goes back to 0.
    pub fn learning_counts(&self) -> Vec<(String, String, u64)> {
        self.rules
            .iter()
            .map(|r| {
                let n = r.series.values().filter(|s| s.det.learning().is_some()).count();
                (r.policy.clone(), r.spec.name.clone(), n as u64)
            })
            .collect()
    }

    /// Series tracked, and series refused for the per-rule bound.
    pub fn series(&self) -> (usize, u64) {
        (self.rules.iter().map(|r| r.series.len()).sum(), self.rules.iter().map(|r| r.refused).sum())
    }
}

/// Series of single processes, for rules only (too many to export): the top processes by
/// memory and by CPU of a snapshot (`processes.top` of each), labelled with `pid`, `command`
/// and `user`. A leak rule on `vigil_process_resident_memory_bytes` names the leaking process.
///
/// - `vigil_process_resident_memory_bytes`
/// - `vigil_process_cpu_ratio` (share of one CPU since the previous scan)
/// - `vigil_process_threads`
pub fn process_samples(s: &crate::snapshot::Snapshot) -> Vec<Sample> {
    use vigil_crds::metrics as m;
    let Some(p) = &s.processes else { return Vec::new() };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for t in p.top_rss.iter().chain(&p.top_cpu) {
        if !seen.insert(t.pid) {
            continue;
        }
        let labels = BTreeMap::from([
            ("pid".to_owned(), t.pid.to_string()),
            ("command".to_owned(), t.command.clone()),
            ("user".to_owned(), t.user.clone().unwrap_or_else(|| t.uid.map_or_else(String::new, |u| u.to_string()))),
        ]);
        let mut push = |name: &str, value: f64| out.push(Sample { name: name.into(), labels: labels.clone(), value });
        push(&m::PROCESS_RESIDENT_MEMORY.name(), t.rss_bytes as f64);
        push(&m::PROCESS_THREADS.name(), t.threads as f64);
        if let Some(c) = t.cpu {
            push(&m::PROCESS_CPU.name(), c);
        }
    }
    out
}

/// How long after a restart the rules of `set` may take to fire a condition that still holds:
/// the longest `for` plus the longest detector warm-up, plus three intervals. Restored firing
/// alerts not confirmed within it resolve.
pub fn confirm_within(set: &PolicySet, interval: Duration) -> Duration {
    let samples = |n: u32| interval * n;
    set.policies
        .iter()
        .flat_map(|p| &p.rules)
        .map(|r| {
            let d = &r.detector;
            let warmup = if d.anomaly.is_some() {
                samples(anomaly::WARMUP as u32 + 1)
            } else if let Some(w) = d.z_score.as_ref().or(d.mad.as_ref()) {
                samples(window_warmup(w.window) + 1)
            } else if d.ewma.is_some() {
                samples(EWMA_WARMUP + 1)
            } else if let Some(t) = &d.trend {
                TimeToFull::new("", 0.0, std_duration(t.horizon), std_duration(t.window)).min_span
            } else if let Some(l) = &d.leak {
                leak_span(std_duration(l.window))
            } else {
                samples(2)
            };
            r.for_.map(std_duration).unwrap_or_default() + warmup
        })
        .max()
        .unwrap_or_default()
        + samples(3)
}

/// The samples the rules see after a scan: every row of the agent's exports, named as
/// `/metrics` shows it (read after the scan's snapshot is in place), plus `processes` (from
/// [`process_samples`] of the same snapshot).
pub fn scan_samples(tables: &crate::export::catalog::Tables, processes: Vec<Sample>) -> Vec<Sample> {
    let mut samples = tables.samples();
    samples.extend(processes);
    samples
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::policy::parse;
    use crate::events::EventType;

    fn set(yaml: &str) -> PolicySet {
        let policies = parse(yaml, "test.yaml").unwrap();
        let policies = policies
            .into_iter()
            .map(|p| super::super::policy::Policy {
                id: p.metadata.name.clone().unwrap(),
                rules: p.spec.rules.clone(),
                routes: Vec::new(),
                receivers: BTreeMap::new(),
                fallback: None,
                silences: Vec::new(),
            })
            .collect();
        PolicySet { policies, ..PolicySet::default() }
    }

    fn t(i: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + i * 10).unwrap()
    }

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            value,
        }
    }

    #[test]
    fn a_threshold_rule_fires_per_series_and_resolves_keeping_its_start() {
        let mut e = Engine::new("node-a", Duration::from_secs(10));
        e.set_policies(
            &set("rules:\n  - name: DiskFull\n    metric: {name: fs_ratio}\n    detector: {threshold: {above: 0.9, hysteresis: 0.05}}\n    for: 20s\n    severity: critical\n    labels: {team: storage}\n    annotations: {runbook_url: http://runbooks/disk}\n"),
            t(0),
        );
        let feed = |e: &mut Engine, i: i64, var: f64, root: f64| {
            e.observe_metrics(
                t(i),
                &[
                    sample("fs_ratio", &[("mountpoint", "/var")], var),
                    sample("fs_ratio", &[("mountpoint", "/")], root),
                    sample("other", &[], 1.0),
                ],
            )
        };
        assert!(feed(&mut e, 0, 0.95, 0.5).is_empty());
        assert!(feed(&mut e, 1, 0.95, 0.5).is_empty(), "held for 20 s");
        let fired = feed(&mut e, 2, 0.95, 0.5);
        assert_eq!(fired.len(), 1);
        let a = &fired[0].alert;
        assert_eq!(fired[0].policy, "test-1");
        assert_eq!(a.labels["alertname"], "DiskFull");
        assert_eq!(a.labels["mountpoint"], "/var");
        assert_eq!(a.labels["team"], "storage");
        assert_eq!(a.labels["severity"], "critical");
        assert_eq!(a.annotations["runbook_url"], "http://runbooks/disk");
        assert!(a.annotations["description"].contains("0.95"), "{:?}", a.annotations);
        assert_eq!(e.active(), 1);
        assert!(feed(&mut e, 3, 0.88, 0.5).is_empty(), "inside the hysteresis band");
        for i in 4..6 {
            assert!(feed(&mut e, i, 0.5, 0.5).is_empty());
        }
        let resolved = feed(&mut e, 6, 0.5, 0.5);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].alert.fingerprint(), a.fingerprint());
        assert_eq!(resolved[0].alert.starts_at, a.starts_at);
        assert_eq!(resolved[0].alert.ends_at, Some(t(6)));
        assert_eq!(e.active(), 0);
    }

    /// The sample indices at which a rule of `detector` fires and resolves over `values` fed
    /// every `cadence` to an engine whose agent samples every `interval`.
    fn transitions(detector: &str, values: &[f64], cadence: u64, interval: u64) -> Vec<(usize, bool)> {
        let mut e = Engine::new("n", Duration::from_secs(interval));
        let at = |i: usize| jiff::Timestamp::from_second(1_700_000_000 + i as i64 * cadence as i64).unwrap();
        e.set_policies(
            &set(&format!("rules:\n  - name: Shift\n    metric: {{name: m}}\n    detector: {detector}\n")),
            at(0),
        );
        let mut out = Vec::new();
        for (i, v) in values.iter().enumerate() {
            for n in e.observe_metrics(at(i), &[sample("m", &[], *v)]) {
                out.push((i, n.alert.ends_at.is_none()));
            }
        }
        out
    }

    /// Gaussian noise (mean 100, σ 1) from a fixed seed, with a step of `step` σ from sample 150
    /// to 170.
    fn noise_with_step(step: f64) -> Vec<f64> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut uniform = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..220)
            .map(|i| {
                let z = (-2.0 * uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * uniform()).cos();
                100.0 + z + if (150..170).contains(&i) { step } else { 0.0 }
            })
            .collect()
    }

    #[test]
    fn anomaly_series_say_how_close_they_are_to_firing() {
        let mut e = Engine::new("n", Duration::from_secs(10));
        e.set_policies(
            &set("rules:\n  - name: Odd\n    metric: {name: m}\n    detector: {anomaly: {}}\n  - name: High\n    metric: {name: m}\n    detector: {threshold: {above: 1000}}\n"),
            t(0),
        );
        let values = noise_with_step(30.0);
        let mut at_step = None;
        for (i, v) in values.iter().enumerate() {
            e.observe_metrics(t(i as i64), &[sample("m", &[("disk", "a")], *v)]);
            let scores = e.scores();
            if scores.is_empty() {
                assert!(i <= anomaly::WARMUP + 1, "scored once it judges: none at sample {i}");
                continue;
            }
            assert!(i >= anomaly::WARMUP, "no score while learning: {scores:?} at {i}");
            assert_eq!(scores.len(), 1, "the anomaly rule's series only: {scores:?}");
            assert_eq!((scores[0].rule.as_str(), scores[0].labels["disk"].as_str()), ("Odd", "a"));
            if i == 150 {
                at_step = Some(scores[0].score);
            } else if i < 150 {
                assert!(scores[0].score < 1.0, "sample {i}: {}", scores[0]);
            }
        }
        assert!(at_step.is_some_and(|s| s > 1.0), "a 30σ step is past the limit: {at_step:?}");
        assert!(e.scores()[0].to_string().starts_with("test-1/Odd {disk=a} 0."), "{}", e.scores()[0]);
        let hostile: BTreeMap<String, String> =
            [("command".to_owned(), "x\", pid=\"1".to_owned()), ("pid".to_owned(), "2".to_owned())].into();
        assert_eq!(series_text(&hostile), r#"{command="x\", pid=\"1",pid="2"}"#);
        assert_eq!(series_text(&BTreeMap::new()), "{}");
    }

    #[test]
    fn window_detectors_judge_the_same_samples_at_any_cadence() {
        let values = noise_with_step(8.0);
        for detector in [
            "{zScore: {window: 60, threshold: 4}}",
            "{mad: {window: 60, threshold: 5}}",
            "{ewma: {alpha: 0.05, limit: 5}}",
            "{anomaly: {}}",
            "{anomaly: {sensitivity: low}}",
        ] {
            // The agent at 10 s, the series at 10 s; and series at 1 min and 5 min, with the
            // agent's interval at 10 s (a slow source) or at the series' own cadence.
            let reference = transitions(detector, &values, 10, 10);
            let fired: Vec<usize> = reference.iter().filter(|(_, f)| *f).map(|(i, _)| *i).collect();
            assert!(
                !fired.is_empty() && (150..=153).contains(&fired[0]),
                "{detector}: the step found within 3 samples: {reference:?}"
            );
            for (cadence, interval) in [(60, 10), (60, 60), (300, 10), (300, 300)] {
                assert_eq!(
                    transitions(detector, &values, cadence, interval),
                    reference,
                    "{detector} at {cadence} s samples, agent interval {interval} s"
                );
            }
        }
    }

    #[test]
    fn series_that_cannot_judge_yet_say_so_until_they_do() {
        let mut e = Engine::new("n", Duration::from_secs(10));
        e.set_policies(
            &set("rules:\n  - name: Odd\n    metric: {name: m}\n    detector: {anomaly: {}}\n  - name: High\n    metric: {name: m}\n    detector: {threshold: {above: 1000}}\n"),
            t(0),
        );
        assert_eq!(e.learning_counts(), [("test-1".into(), "Odd".into(), 0), ("test-1".into(), "High".into(), 0)]);
        let values = noise_with_step(0.0);
        let feed = |e: &mut Engine, i: usize| {
            e.observe_metrics(
                t(i as i64),
                &[sample("m", &[("disk", "a")], values[i]), sample("m", &[("disk", "b")], values[i + 1])],
            )
        };
        feed(&mut e, 0);
        let first = e.learning();
        assert_eq!(first.len(), 2, "both series of the anomaly rule, none of the threshold rule: {first:?}");
        assert_eq!(first[0].to_string(), "test-1/Odd {disk=a}: learning, 1 of 32 samples");
        assert_eq!(e.learning_counts()[0].2, 2);
        let (started, done) = learning_changes(&[], &first);
        assert_eq!((started.len(), done.len()), (2, 0));
        for i in 1..31 {
            feed(&mut e, i);
        }
        assert_eq!(e.learning()[1].progress, Progress::samples(31, 32));
        feed(&mut e, 31);
        let now = e.learning();
        assert!(now.is_empty(), "{now:?}");
        assert_eq!(e.learning_counts()[0].2, 0);
        let (started, done) = learning_changes(&first, &now);
        assert_eq!((started.len(), done.len()), (0, 2));
    }

    #[test]
    fn max_age_bounds_a_window_in_time_and_its_warm_up_starts_again() {
        let values = noise_with_step(8.0);
        // A window kept for an hour at 5-minute samples holds 12 samples, under the warm-up of
        // 20: the rule never judges.
        assert!(transitions("{zScore: {window: 60, threshold: 4, maxAge: 1h}}", &values, 300, 300).is_empty());
        // At 10 s the hour holds the whole window: the same as without maxAge.
        assert_eq!(
            transitions("{zScore: {window: 60, threshold: 4, maxAge: 1h}}", &values, 10, 10),
            transitions("{zScore: {window: 60, threshold: 4}}", &values, 10, 10)
        );
    }

    #[test]
    fn trend_takes_its_capacity_from_the_matching_series() {
        let mut e = Engine::new("n", Duration::from_secs(10));
        e.set_policies(&set("rules:\n  - name: Filling\n    metric: {name: used}\n    detector: {trend: {window: 10m, horizon: 1h, capacityMetric: size}}\n"), t(0));
        let mut fired = Vec::new();
        for i in 0..60 {
            // 1 MB per sample towards 1000 MB, from 800: full in about 200 samples (33 min).
            let used = 800.0 + i as f64;
            fired.extend(e.observe_metrics(
                t(i),
                &[sample("used", &[("mountpoint", "/data")], used), sample("size", &[("mountpoint", "/data")], 1000.0)],
            ));
        }
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0].alert.labels["mountpoint"], "/data");
        assert_eq!(fired[0].alert.labels["detector"], "trend");
    }

    #[test]
    fn event_rules_count_per_field_and_resolve_as_the_window_empties() {
        let mut e = Engine::new("n", Duration::from_secs(10));
        e.set_policies(&set("rules:\n  - name: SshBruteForce\n    event: {type: auth.ssh.failed}\n    detector: {eventRate: {count: 2, window: 1m, per: source_ip}}\n  - name: Sudo\n    event: {type: auth.sudo, details: {user: alice}}\n    detector: {eventRate: {count: 0, window: 5m}}\n"), t(0));
        let failed = |ip: &str, i: i64| {
            let mut ev = Event::new(EventType::SshFailed, t(i), format!("Failed password for root from {ip}"));
            ev.details.insert("source_ip".into(), ip.into());
            ev
        };
        let mut fired = Vec::new();
        for i in 0..3 {
            fired.extend(e.observe_event(&failed("10.0.0.1", i)));
            fired.extend(e.observe_event(&failed("10.0.0.2", i * 10)));
        }
        assert_eq!(fired.len(), 1, "three from .1 within a minute; .2 spread out");
        assert_eq!(fired[0].alert.labels["source_ip"], "10.0.0.1");
        assert_eq!(fired[0].alert.annotations["lastEvent"], "Failed password for root from 10.0.0.1");
        let mut sudo = Event::new(EventType::Sudo, t(3), "alice ran sudo");
        sudo.details.insert("user".into(), "alice".into());
        let forwarded = e.observe_event(&sudo);
        assert_eq!(forwarded.len(), 1, "count 0 forwards every event");
        sudo.details.insert("user".into(), "bob".into());
        assert!(e.observe_event(&sudo).is_empty(), "details narrow the rule");
        let resolved = e.tick(t(40));
        assert_eq!(resolved.len(), 2, "both windows emptied: {resolved:?}");
        assert!(resolved.iter().all(|r| r.alert.resolved()));
        assert_eq!(e.series().0, 0, "idle series forgotten");
    }

    #[test]
    fn reload_keeps_unchanged_rules_and_resolves_the_rest() {
        let mut e = Engine::new("n", Duration::from_secs(10));
        let a = "rules:\n  - name: A\n    metric: {name: m}\n    detector: {threshold: {above: 1}}\n  - name: B\n    metric: {name: m}\n    detector: {threshold: {above: 1}}\n";
        e.set_policies(&set(a), t(0));
        assert_eq!(e.observe_metrics(t(0), &[sample("m", &[], 5.0)]).len(), 2);
        let b = "rules:\n  - name: A\n    metric: {name: m}\n    detector: {threshold: {above: 1}}\n";
        let resolved = e.set_policies(&set(b), t(1));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].alert.name(), "B");
        assert!(resolved[0].alert.resolved());
        assert_eq!(e.active(), 1, "A kept its firing state");
        assert!(e.observe_metrics(t(1), &[sample("m", &[], 5.0)]).is_empty(), "no second firing of A");
    }

    #[test]
    fn stale_series_resolve_and_series_are_bounded() {
        let mut e = Engine::new("n", Duration::from_secs(10));
        e.set_policies(
            &set("rules:\n  - name: A\n    metric: {name: m}\n    detector: {threshold: {above: 1}}\n"),
            t(0),
        );
        let many: Vec<Sample> =
            (0..MAX_SERIES_PER_RULE + 5).map(|i| sample("m", &[("i", &i.to_string())], 0.0)).collect();
        e.observe_metrics(t(0), &many);
        assert_eq!(e.series(), (MAX_SERIES_PER_RULE, 5));
        let fired = e.observe_metrics(t(1), &[sample("m", &[("i", "0")], 9.0)]);
        assert_eq!(fired.len(), 1);
        let later = e.observe_metrics(t(1 + i64::from(STALE_INTERVALS) + 1), &[]);
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].alert.annotations["description"], "the series stopped reporting");
        assert_eq!(e.series().0, 0);
    }

    #[test]
    fn a_leak_rule_names_the_process() {
        let mut e = Engine::new("n", Duration::from_secs(10));
        e.set_policies(&set("rules:\n  - name: MemoryLeak\n    metric: {name: vigil_process_resident_memory_bytes}\n    detector: {leak: {window: 2h, minGrowthPerMinute: 262144}}\n"), t(0));
        let mut fired = Vec::new();
        // 1 MiB a minute at 10 s sampling, with a little noise.
        for i in 0..240 {
            let rss = 500e6 + i as f64 * (1024.0 * 1024.0 / 6.0) + if i % 2 == 0 { 4096.0 } else { 0.0 };
            let steady = sample("vigil_process_resident_memory_bytes", &[("pid", "7"), ("command", "nginx")], 80e6);
            let leaking = sample("vigil_process_resident_memory_bytes", &[("pid", "4242"), ("command", "java")], rss);
            fired.extend(e.observe_metrics(t(i), &[steady, leaking]).into_iter().map(|r| (i, r)));
        }
        assert_eq!(fired.len(), 1, "{fired:?}");
        let (at, r) = &fired[0];
        assert_eq!((r.alert.labels["command"].as_str(), r.alert.labels["pid"].as_str()), ("java", "4242"));
        assert!(*at <= 180, "a 1 MiB/min leak found within 30 minutes at 10 s sampling, found after {at} samples");
    }
}
