//! What a planned move writes on its Node: the label and annotation patch, and the end of a
//! handover. Pure: the operator sends these bodies, the plugin's tests apply them to a fake
//! API, and both read the same contract keys from `vigil_crds::labels`.

use serde_json::{Value, json};
use vigil_crds::labels;
use vigil_crds::selector::LabelSet;

use crate::Move;

/// The merge patch that moves one node (its revision label, its pin label, the rollout that
/// manages it, and when it was admitted) and starts the new revision's agent beside the one
/// running (its run label; the old one's stays until [`handover_done`]). A `None` revision
/// removes the labels and the run labels of the rollout's own revisions (`ours`; `current`
/// are the node's labels), and with them its agents; an agent of an earlier install (a
/// revision the rollout never recorded) keeps running.
pub fn node_label_patch(
    m: &Move,
    rollout_key: &str,
    now: jiff::Timestamp,
    current: &(impl LabelSet + ?Sized),
    ours: &std::collections::BTreeSet<&str>,
) -> Value {
    let (ns, name) = rollout_key.split_once('/').unwrap_or(("", rollout_key));
    let rollout_label = labels::rollout_label_value(ns, name);
    let mut node_labels = serde_json::Map::new();
    node_labels.insert(labels::REVISION.into(), json!(m.to));
    node_labels.insert(labels::PINNED.into(), json!(m.pin));
    node_labels.insert(labels::ROLLOUT.into(), json!(m.to.as_ref().map(|_| rollout_label)));
    match &m.to {
        Some(to) => {
            node_labels.insert(labels::run_label(to), json!(labels::RUN_VALUE));
        }
        None => {
            for (key, _) in current.pairs().filter(|(k, _)| labels::run_revision(k).is_some_and(|r| ours.contains(r))) {
                node_labels.insert(key.to_owned(), Value::Null);
            }
        }
    }
    json!({"metadata": {
        "labels": node_labels,
        "annotations": {labels::ADMITTED_AT: m.to.as_ref().map(|_| now.to_string())},
    }})
}

/// The run labels to take off a node whose handover is done: once the agent of the node's
/// revision holds its heartbeat Lease (`lease_holder`), the agents of every other revision
/// on it go. Empty while the handover runs, and when there is nothing to take off.
pub fn handover_done(node_labels: &(impl LabelSet + ?Sized), lease_holder: Option<&str>) -> Vec<String> {
    let Some(revision) = node_labels.label(labels::REVISION) else { return Vec::new() };
    if lease_holder != Some(revision) {
        return Vec::new();
    }
    node_labels
        .pairs()
        .filter(|(k, _)| labels::run_revision(k).is_some_and(|r| r != revision))
        .map(|(k, _)| k.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_move_patches_the_revision_pin_and_rollout_labels() {
        let m = Move { node: "n".into(), from: Some("r-1".into()), to: Some("r-2".into()), pin: None };
        let now: jiff::Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        assert_eq!(
            node_label_patch(&m, "vigil-system/agent", now, &BTreeMap::new(), &["r-1", "r-2"].into()),
            json!({"metadata": {
                "labels": {"vigil.dev/revision": "r-2", "vigil.dev/pinned": null, "vigil.dev/rollout": "vigil-system.agent", "vigil.dev/run.r-2": "true"},
                "annotations": {"vigil.dev/admitted-at": "2026-12-02T10:00:00Z"},
            }})
        );
        let off = Move { node: "n".into(), from: Some("r-1".into()), to: None, pin: Some("legacy".into()) };
        let on: BTreeMap<String, String> = [
            ("vigil.dev/run.r-1", "true"),
            ("vigil.dev/run.r-0", "true"),
            ("vigil.dev/run.r-earlier", "true"),
            ("pool", "a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let p = node_label_patch(&off, "a/b", now, &on, &["r-0", "r-1"].into());
        assert_eq!(p["metadata"]["labels"]["vigil.dev/revision"], Value::Null);
        assert_eq!(p["metadata"]["labels"]["vigil.dev/run.r-1"], Value::Null, "none of the rollout's agents is left");
        assert_eq!(p["metadata"]["labels"]["vigil.dev/run.r-0"], Value::Null);
        assert!(
            p["metadata"]["labels"].get("vigil.dev/run.r-earlier").is_none(),
            "an earlier install's agent keeps running"
        );
        assert!(p["metadata"]["labels"].get("pool").is_none(), "labels not ours are not touched");
        assert_eq!(p["metadata"]["annotations"]["vigil.dev/admitted-at"], Value::Null);
    }

    #[test]
    fn a_handover_ends_when_the_new_revisions_agent_holds_the_lease() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let mid = labels(&[
            ("vigil.dev/revision", "r-b"),
            ("vigil.dev/run.r-a", "true"),
            ("vigil.dev/run.r-b", "true"),
            ("pool", "x"),
        ]);
        assert!(handover_done(&mid, Some("r-a")).is_empty(), "r-a's agent still works the node");
        assert!(handover_done(&mid, None).is_empty());
        assert!(handover_done(&mid, Some("node-1")).is_empty(), "an agent that names no revision");
        assert_eq!(handover_done(&mid, Some("r-b")), ["vigil.dev/run.r-a"]);
        let settled = labels(&[("vigil.dev/revision", "r-b"), ("vigil.dev/run.r-b", "true")]);
        assert!(handover_done(&settled, Some("r-b")).is_empty(), "nothing to do: no write");
        let mut running: Vec<&str> = vigil_crds::labels::running_revisions(&mid).collect();
        running.sort_unstable();
        assert_eq!(running, ["r-a", "r-b", "r-b"]);
    }
}
