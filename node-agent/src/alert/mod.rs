//! Alerts and their receivers.
//!
//! [`Alert`] is what a rule firing or resolving produces (from a detector's finding or a
//! security event); [`receivers`] turns alerts into each service's documented payload (pure)
//! and [`send`] delivers one payload with a timeout, retrying with backoff and honouring
//! `Retry-After`; [`policy`] loads AlertPolicies, [`rules`] applies their rules to samples
//! and events, [`route`] routes, groups, silences and rate-limits, [`spool`] keeps every
//! notification on disk until delivered and [`deliver`] drains it; [`pipeline`] runs the
//! whole in the daemon.

pub mod deliver;
pub mod email;
pub mod pipeline;
pub mod policy;
pub mod receivers;
pub mod route;
pub mod rules;
pub mod send;
pub mod spool;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::events::{Event, Severity};
use vigil_detect::{Finding, State};

/// One alert, firing or resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Identifying labels (`alertname`, `node`, `severity`, …); the fingerprint is theirs.
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description` and other free text.
    pub annotations: BTreeMap<String, String>,
    /// When it started.
    pub starts_at: jiff::Timestamp,
    /// When it ended; `None` while firing.
    pub ends_at: Option<jiff::Timestamp>,
}

impl Alert {
    /// An alert named `name` on `node` with `severity`.
    pub fn new(name: &str, node: &str, severity: Severity, starts_at: jiff::Timestamp) -> Self {
        let labels = BTreeMap::from([
            ("alertname".to_owned(), name.to_owned()),
            ("node".to_owned(), node.to_owned()),
            ("severity".to_owned(), severity.as_str().to_owned()),
        ]);
        Self { labels, annotations: BTreeMap::new(), starts_at, ends_at: None }
    }

    /// The alert for a detector's finding on `series`.
    pub fn from_finding(name: &str, node: &str, severity: Severity, series: &str, f: &Finding) -> Self {
        let mut a = Self::new(name, node, severity, f.at);
        a.labels.insert("series".into(), series.to_owned());
        a.labels.insert("detector".into(), f.detector.to_owned());
        a.annotations.insert("summary".into(), f.explanation.clone());
        a.annotations.insert("value".into(), format!("{}", f.value));
        a.annotations.insert("baseline".into(), format!("{}", f.baseline));
        a.annotations.insert("threshold".into(), format!("{}", f.threshold));
        if f.state == State::Resolved {
            a.ends_at = Some(f.at);
        }
        a
    }

    /// The alert for a security event (the event type is the alert name).
    pub fn from_event(e: &Event) -> Self {
        let mut a = Self::new(e.kind.as_str(), &e.node, e.severity, e.time);
        a.labels.insert("source".into(), e.source.as_str().to_owned());
        a.annotations.insert("summary".into(), e.message.clone());
        if !e.details.is_empty() {
            a.annotations.insert("details".into(), serde_json::Value::Object(e.details.clone()).to_string());
        }
        a
    }

    /// Adds a label.
    #[must_use]
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The dedup key: SHA-256 of the sorted labels, 16 hex digits (the same alert from a
    /// retry or a replay has the same one).
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.labels {
            h.update(k.as_bytes());
            h.update([0xff]);
            h.update(v.as_bytes());
            h.update([0xfe]);
        }
        h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Whether it has ended.
    pub fn resolved(&self) -> bool {
        self.ends_at.is_some()
    }

    /// `alertname`.
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("alert", String::as_str)
    }

    /// The `summary` annotation, or the name.
    pub fn summary(&self) -> &str {
        self.annotations.get("summary").map_or_else(|| self.name(), String::as_str)
    }

    /// The `severity` label.
    pub fn severity(&self) -> &str {
        self.labels.get("severity").map_or("warning", String::as_str)
    }

    /// One line for a person: time, state, name, the identifying labels, the description.
    pub fn render_line(&self, color: bool) -> String {
        let (state, time) = match self.ends_at {
            Some(end) => ("RESOLVED", end),
            None => ("FIRING", self.starts_at),
        };
        let (start, end) = match (color, self.resolved(), self.severity()) {
            (false, _, _) => ("", ""),
            (true, true, _) => ("\x1b[32m", "\x1b[0m"),
            (true, false, "critical") => ("\x1b[1;31m", "\x1b[0m"),
            (true, false, "warning") => ("\x1b[33m", "\x1b[0m"),
            (true, false, _) => ("", ""),
        };
        let time = time.round(jiff::Unit::Second).unwrap_or(time);
        let p = crate::events::printable;
        let mut line = format!("{time} {start}{state:<8}{end} {} ({})", p(self.name()), p(self.severity()));
        for (k, v) in &self.labels {
            if !matches!(k.as_str(), "alertname" | "severity" | "node" | "series" | "detector") {
                line.push_str(&format!(" {}={}", p(k), p(v)));
            }
        }
        if let Some(d) = self.annotations.get("description") {
            line.push_str(&format!(" — {}", p(d)));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    #[test]
    fn the_fingerprint_follows_the_labels_only() {
        let t = jiff::Timestamp::UNIX_EPOCH;
        let a = Alert::new("DiskFull", "node-a", Severity::Critical, t).label("mountpoint", "/var");
        let mut b = a.clone();
        b.annotations.insert("summary".into(), "other words".into());
        b.starts_at = t + jiff::SignedDuration::from_secs(60);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        assert_ne!(a.fingerprint(), a.clone().label("mountpoint", "/").fingerprint());
    }

    #[test]
    fn an_alert_reads_as_one_line() {
        let t: jiff::Timestamp = "2026-11-22T10:00:00.4Z".parse().unwrap();
        let mut a = Alert::new("DiskFull", "node-a", Severity::Critical, t).label("mountpoint", "/var");
        a.annotations.insert("description".into(), "97% used, limit 90%".into());
        assert_eq!(
            a.render_line(false),
            "2026-11-22T10:00:00Z FIRING   DiskFull (critical) mountpoint=/var — 97% used, limit 90%"
        );
        a.ends_at = Some(t + jiff::SignedDuration::from_mins(5));
        assert!(a.render_line(true).starts_with("2026-11-22T10:05:00Z \x1b[32mRESOLVED\x1b[0m DiskFull"));
    }

    #[test]
    fn events_and_findings_become_alerts() {
        let e = Event::new(EventType::OomKill, jiff::Timestamp::UNIX_EPOCH, "OOM killer killed java (pid 7)")
            .with("pid", 7);
        let e = Event { node: "node-a".into(), ..e };
        let a = Alert::from_event(&e);
        assert_eq!(
            (a.name(), a.severity(), a.summary()),
            ("kernel.oom_kill", "critical", "OOM killer killed java (pid 7)")
        );
        assert_eq!(a.labels["node"], "node-a");
        assert!(a.annotations["details"].contains("\"pid\":7"));
        let f = Finding {
            state: State::Resolved,
            detector: "threshold",
            at: jiff::Timestamp::UNIX_EPOCH,
            value: 0.5,
            baseline: 0.85,
            threshold: 0.9,
            window: std::time::Duration::from_secs(300),
            explanation: "cpu back".into(),
        };
        let a = Alert::from_finding("HighCpu", "node-a", Severity::Warning, "cpu", &f);
        assert!(a.resolved());
        assert_eq!(a.labels["detector"], "threshold");
    }
}
