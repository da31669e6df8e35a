//! Events that tell the truth: every decision is an `events.k8s.io/v1` Event of its own, with
//! its own note.
//!
//! kube's `Recorder` folds events with the same reason, action and object into one series and
//! keeps the first note: after `Admit` for one revision, an `Admit` for the next showed the old
//! revision with a growing count. Decisions are rare (one per planner decision, not per
//! reconcile) and each says something new, so each gets its own object, named after the
//! object and the instant.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

/// The API caps an Event's note at 1 kB.
const NOTE_MAX: usize = 1024;

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Something that goes as planned.
    Normal,
    /// Something a person should look at.
    Warning,
}

/// Publishes the operator's Events.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    /// This replica (its pod name), as `reportingInstance`.
    instance: String,
}

impl Publisher {
    /// A publisher for `client`, reporting as replica `instance`.
    pub fn new(client: Client, instance: String) -> Self {
        Self { client, instance }
    }

    /// Writes one Event about `regarding` (which must name its namespace), stamped `now`.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        kind: Kind,
        reason: &str,
        action: &str,
        note: &str,
        now: jiff::Timestamp,
    ) -> Result<(), kube::Error> {
        let ns = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let event = build(regarding, kind, reason, action, note, &self.instance, now);
        Api::<Event>::namespaced(self.client.clone(), &ns).create(&PostParams::default(), &event).await.map(|_| ())
    }
}

/// The Event object (pure, for tests).
pub fn build(
    regarding: &ObjectReference,
    kind: Kind,
    reason: &str,
    action: &str,
    note: &str,
    instance: &str,
    now: jiff::Timestamp,
) -> Event {
    let mut note: String = note.to_owned();
    if note.len() > NOTE_MAX {
        let mut cut = NOTE_MAX - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    let object = regarding.name.clone().unwrap_or_else(|| "object".into());
    Event {
        metadata: ObjectMeta {
            // Unique per object and instant: never an update of an earlier Event.
            name: Some(format!("{object}.{:x}", now.as_nanosecond())),
            namespace: regarding.namespace.clone(),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        reporting_controller: Some(vigil_crds::labels::MANAGER.into()),
        reporting_instance: Some(instance.to_owned()),
        action: Some(action.to_owned()),
        reason: Some(reason.to_owned()),
        note: Some(note),
        type_: Some(match kind {
            Kind::Normal => "Normal".into(),
            Kind::Warning => "Warning".into(),
        }),
        regarding: Some(regarding.clone()),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout() -> ObjectReference {
        ObjectReference {
            api_version: Some("vigil.dev/v1alpha1".into()),
            kind: Some("AgentRollout".into()),
            name: Some("agent".into()),
            namespace: Some("vigil-system".into()),
            uid: Some("u".into()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn two_decisions_with_the_same_reason_are_two_events_each_with_its_own_note() {
        let t0: jiff::Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let a = build(&rollout(), Kind::Normal, "Admit", "Admit", "wave 1: admitting 1 node(s) to r-a", "op-0", t0);
        let b = build(
            &rollout(),
            Kind::Normal,
            "Admit",
            "Admit",
            "wave 1: admitting 1 node(s) to r-b",
            "op-0",
            t0 + jiff::SignedDuration::from_millis(1),
        );
        assert_ne!(a.metadata.name, b.metadata.name, "never folded into one series");
        assert_eq!(b.note.as_deref(), Some("wave 1: admitting 1 node(s) to r-b"));
        assert!(a.series.is_none() && a.deprecated_count.is_none());
        assert_eq!(a.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("agent"));
        assert_eq!(a.reporting_controller.as_deref(), Some("vigil-operator"));
    }

    #[test]
    fn a_long_note_is_cut_at_the_api_limit_on_a_character_boundary() {
        let note = "é".repeat(2000);
        let e = build(&rollout(), Kind::Warning, "RollBack", "RollBack", &note, "op-0", jiff::Timestamp::UNIX_EPOCH);
        let n = e.note.unwrap();
        assert!(n.len() <= NOTE_MAX && n.ends_with("..."), "{}", n.len());
        assert_eq!(e.type_.as_deref(), Some("Warning"));
    }
}
