//! What is left when an AgentRollout is gone: the DaemonSets it orphaned once no node runs
//! them, and the `vigil.dev/` labels of nodes whose agent is gone.
//!
//! Deleting an AgentRollout takes no finalizer: a finalizer would hold the rollout (and its
//! namespace, and `helm uninstall`) for ever whenever the operator is gone at the same time.
//! Instead its deletion policy decides at once (`Orphan`: its DaemonSets have no owner and
//! stay; `Delete`: they are owned and Kubernetes' garbage collector removes them), and this
//! pass, run by the leader every minute from its watch stores, clears up after the fact:
//!
//! - a node labelled by a rollout that no longer exists keeps its labels while a DaemonSet of
//!   its revision exists (its agent depends on them) and loses them once none does;
//! - a DaemonSet the operator wrote, owned by no one and written for a rollout that no longer
//!   exists, is deleted once no node is labelled for its revision (it runs nothing);
//! - a config snapshot taken for a rollout that no longer exists is deleted once no DaemonSet
//!   of its revision is left to mount it.
//!
//! Anything younger than [`GRACE`] (by the node's admission, the DaemonSet's creation) is left
//! for the next pass, so a rollout created a moment ago, not yet in the store, loses nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use vigil_crds::AgentRollout;
use vigil_crds::labels;
use vigil_crds::selector::LabelSet;
use vigil_plan::facts::NodeFacts;

/// How old an admission or a DaemonSet must be before the janitor touches it.
pub const GRACE: Duration = Duration::from_secs(120);

/// How often the leader looks.
pub const EVERY: Duration = Duration::from_secs(60);

/// What one pass removes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// DaemonSets to delete, as (namespace, name).
    pub daemonsets: Vec<(String, String)>,
    /// Nodes whose `vigil.dev/` labels and admission annotation go.
    pub nodes: Vec<String>,
    /// Config snapshots to delete, as (namespace, name).
    pub snapshots: Vec<(String, String)>,
}

fn older_than(t: Option<Timestamp>, now: Timestamp, grace: Duration) -> bool {
    t.is_none_or(|t| now.duration_since(t) >= jiff::SignedDuration::try_from(grace).unwrap_or_default())
}

/// One pass over what the stores hold. Pure.
pub fn plan(
    rollouts: &[&AgentRollout],
    daemonsets: &[&DaemonSet],
    snapshots: &[&ConfigMap],
    nodes: &[&NodeFacts],
    now: Timestamp,
) -> Cleanup {
    let keys: BTreeSet<String> = rollouts
        .iter()
        .map(|r| {
            format!("{}/{}", r.metadata.namespace.as_deref().unwrap_or(""), r.metadata.name.as_deref().unwrap_or(""))
        })
        .collect();
    let values: BTreeSet<String> = rollouts
        .iter()
        .map(|r| {
            labels::rollout_label_value(
                r.metadata.namespace.as_deref().unwrap_or(""),
                r.metadata.name.as_deref().unwrap_or(""),
            )
        })
        .collect();
    let ours = |d: &&&DaemonSet| {
        d.metadata.labels.as_ref().and_then(|l| l.get(labels::MANAGED_BY)).map(String::as_str) == Some(labels::MANAGER)
            && d.metadata.deletion_timestamp.is_none()
    };
    let revision_of = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.labels.as_ref().and_then(|l| l.get(labels::REVISION)).cloned()
    };
    // Revisions some DaemonSet of ours still runs.
    let served: BTreeSet<String> = daemonsets.iter().filter(ours).filter_map(|d| revision_of(&d.metadata)).collect();
    let labelled: BTreeSet<String> =
        nodes.iter().flat_map(|n| vigil_crds::labels::running_revisions(&n.labels)).map(str::to_owned).collect();

    let mut out = Cleanup::default();
    for d in daemonsets.iter().filter(ours) {
        let m = &d.metadata;
        let owner = m.annotations.as_ref().and_then(|a| a.get(labels::OWNER_ROLLOUT));
        let orphaned = m.owner_references.as_ref().is_none_or(Vec::is_empty) && owner.is_none_or(|k| !keys.contains(k));
        let idle = revision_of(m).is_none_or(|r| !labelled.contains(&r));
        if orphaned && idle && older_than(m.creation_timestamp.as_ref().map(|t| t.0), now, GRACE) {
            out.daemonsets.push((m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default()));
        }
    }
    for n in nodes {
        let Some(value) = n.labels.get(labels::ROLLOUT) else { continue };
        if values.contains(value) {
            continue;
        }
        let needed = vigil_crds::labels::running_revisions(&n.labels).any(|r| served.contains(r));
        if !needed && older_than(n.admitted_at, now, GRACE) {
            out.nodes.push(n.name.clone());
        }
    }
    for c in snapshots {
        let m = &c.metadata;
        let owner = m.annotations.as_ref().and_then(|a| a.get(labels::OWNER_ROLLOUT));
        let orphaned = owner.is_none_or(|k| !keys.contains(k));
        let mounted = revision_of(m).is_some_and(|r| served.contains(&r));
        if orphaned && !mounted && older_than(m.creation_timestamp.as_ref().map(|t| t.0), now, GRACE) {
            out.snapshots.push((m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default()));
        }
    }
    out.daemonsets.sort();
    out.nodes.sort();
    out.snapshots.sort();
    out
}

/// The merge patch that clears a node (with `current` labels) of what the operator wrote on
/// it: its revision, rollout, pin and run labels and its admission annotation.
pub fn unlabel_patch(current: &(impl LabelSet + ?Sized)) -> serde_json::Value {
    let mut l = serde_json::Map::new();
    for key in labels::NODE_LABELS {
        l.insert(key.to_owned(), serde_json::Value::Null);
    }
    for (key, _) in current.pairs().filter(|(k, _)| labels::run_revision(k).is_some()) {
        l.insert(key.to_owned(), serde_json::Value::Null);
    }
    serde_json::json!({"metadata": {"labels": l, "annotations": {labels::ADMITTED_AT: null}}})
}

impl Cleanup {
    /// The pass as the operator's writes: config copies, then DaemonSets, then node labels
    /// (each stands alone; `nodes` are the nodes' current objects, for their run labels).
    pub fn effects(&self, nodes: &[&NodeFacts]) -> Vec<crate::act::Effect> {
        use crate::act::Effect;
        let mut out: Vec<Effect> = self
            .snapshots
            .iter()
            .map(|(namespace, name)| Effect::DeleteSnapshot { namespace: namespace.clone(), name: name.clone() })
            .collect();
        out.extend(
            self.daemonsets
                .iter()
                .map(|(namespace, name)| Effect::DeleteDaemonSet { namespace: namespace.clone(), name: name.clone() }),
        );
        // The nodes' labels by name, looked up once each (a fleet's worth of nodes may go).
        let empty = vigil_plan::facts::Labels::default();
        let labels: std::collections::BTreeMap<&str, &vigil_plan::facts::Labels> =
            nodes.iter().map(|n| (n.name.as_str(), &n.labels)).collect();
        // One node per effect: a node that cannot be patched holds back no other.
        out.extend(self.nodes.iter().map(|node| {
            let current = labels.get(node.as_str()).copied().unwrap_or(&empty);
            Effect::Nodes(vec![(node.clone(), unlabel_patch(current))])
        }));
        out
    }
}

/// Runs a pass every [`EVERY`] until the task is dropped, stamped by `clock`. Reads only the
/// stores; writes (through `act::apply_each`) only what a pass finds (nothing, on a cluster
/// with nothing left behind).
pub async fn run(client: kube::Client, stores: crate::controller::Stores, clock: fn() -> Timestamp) {
    let writer = crate::act::Writer::new(client);
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = clock();
        let todo = {
            let (rollouts, daemonsets, nodes) =
                (stores.rollouts.state(), stores.daemonsets.state(), stores.nodes.state());
            let snapshots = stores.snapshots.state();
            let nodes: Vec<&NodeFacts> = nodes.iter().map(AsRef::as_ref).collect();
            let cleanup = plan(
                &rollouts.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
                &daemonsets.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
                &snapshots.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
                &nodes,
                now,
            );
            (cleanup.effects(&nodes), cleanup)
        };
        let (todo, said) = todo;
        let failed: Vec<crate::act::WriteError> = crate::act::apply_each(&writer, None, todo, now).await;
        // What failed, by kind and name.
        let failure = |kind: &str, what: &str| {
            failed.iter().find_map(|e| {
                let (k, n, cause) = match e {
                    crate::act::WriteError::Snapshot(n, c) => ("snapshot", n, c),
                    crate::act::WriteError::DaemonSet(n, _, c) => ("daemonset", n, c),
                    crate::act::WriteError::Node(n, c) => ("node", n, c),
                    _ => return None,
                };
                (k == kind && n == what).then_some(cause)
            })
        };
        for (ns, name) in &said.snapshots {
            let snapshot = format!("{ns}/{name}");
            match failure("snapshot", name) {
                None => {
                    tracing::info!(%snapshot, "deleted the config copy of a deleted rollout's revision no agent runs")
                }
                Some(e) => tracing::warn!(%snapshot, error = %e, "deleting an orphaned config copy"),
            }
        }
        for (ns, name) in &said.daemonsets {
            let daemonset = format!("{ns}/{name}");
            match failure("daemonset", name) {
                None => tracing::info!(%daemonset, "deleted an orphaned agent DaemonSet no node runs"),
                Some(e) => tracing::warn!(%daemonset, error = %e, "deleting an orphaned DaemonSet"),
            }
        }
        for node in &said.nodes {
            match failure("node", node) {
                None => tracing::info!(%node, "cleared the labels of a deleted rollout; no agent needs them"),
                Some(e) => tracing::warn!(%node, error = %e, "clearing the labels of a deleted rollout"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn rollout(ns: &str, name: &str) -> AgentRollout {
        let mut r = AgentRollout::new(name, vigil_plan::simulate::spec(vigil_crds::rollout::FailurePolicy::Rollback));
        r.metadata.namespace = Some(ns.into());
        r
    }

    fn ds(name: &str, rev: &str, owner_rollout: Option<&str>, owned: bool, created: i64) -> DaemonSet {
        let mut v = json!({"metadata": {
            "name": name, "namespace": "vigil-system",
            "labels": {labels::MANAGED_BY: labels::MANAGER, labels::REVISION: rev},
            "creationTimestamp": t(created).to_string(),
        }});
        if let Some(k) = owner_rollout {
            v["metadata"]["annotations"] = json!({labels::OWNER_ROLLOUT: k});
        }
        if owned {
            v["metadata"]["ownerReferences"] =
                json!([{"apiVersion": "vigil.dev/v1alpha1", "kind": "AgentRollout", "name": "x", "uid": "u"}]);
        }
        serde_json::from_value(v).unwrap()
    }

    fn node(name: &str, rev: Option<&str>, rollout: Option<&str>, admitted: Option<i64>) -> NodeFacts {
        let mut labels_ = serde_json::Map::new();
        if let Some(r) = rev {
            labels_.insert(labels::REVISION.into(), r.into());
        }
        if let Some(r) = rollout {
            labels_.insert(labels::ROLLOUT.into(), r.into());
        }
        let ann = admitted.map(|a| json!({labels::ADMITTED_AT: t(a).to_string()})).unwrap_or(json!({}));
        let node: k8s_openapi::api::core::v1::Node =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels_, "annotations": ann}})).unwrap();
        NodeFacts::from(&node)
    }

    fn run(rollouts: &[AgentRollout], dss: &[DaemonSet], nodes: &[NodeFacts], now: i64) -> Cleanup {
        run_with(rollouts, dss, &[], nodes, now)
    }

    fn run_with(
        rollouts: &[AgentRollout],
        dss: &[DaemonSet],
        snaps: &[ConfigMap],
        nodes: &[NodeFacts],
        now: i64,
    ) -> Cleanup {
        plan(
            &rollouts.iter().collect::<Vec<_>>(),
            &dss.iter().collect::<Vec<_>>(),
            &snaps.iter().collect::<Vec<_>>(),
            &nodes.iter().collect::<Vec<_>>(),
            t(now),
        )
    }

    #[test]
    fn a_deleted_rollouts_config_copies_go_once_no_daemonset_mounts_them() {
        let snap = |rev: &str, owner: &str, created: i64| {
            let mut c = crate::act::config_snapshot(rev, &"a".repeat(64), "x: 1\n", owner, None, "vigil-system");
            c.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(created)));
            c
        };
        let snaps = [
            snap("r-a", "vigil-system/fleet", 0),
            snap("r-b", "vigil-system/fleet", 0),
            snap("r-c", "vigil-system/fleet", 3590),
            snap("r-d", "vigil-system/live", 0),
        ];
        let dss = [ds("vigil-agent-r-a", "r-a", Some("vigil-system/fleet"), false, 0)];
        let nodes = [node("n1", Some("r-a"), Some("vigil-system.fleet"), Some(0))];
        let c = run_with(&[rollout("vigil-system", "live")], &dss, &snaps, &nodes, 3600);
        assert_eq!(
            c.snapshots,
            [("vigil-system".to_owned(), "vigil-agent-config-r-b".to_owned())],
            "r-a is mounted by an orphaned DaemonSet, r-c is new, r-d's rollout exists (it keeps its history's copies)"
        );
    }

    #[test]
    fn an_orphaned_fleet_keeps_its_agents_and_labels() {
        // The rollout was deleted under Orphan: its DaemonSet has no owner and nodes run it.
        let dss = [ds("vigil-agent-r-a", "r-a", Some("vigil-system/fleet"), false, 0)];
        let nodes = [node("n1", Some("r-a"), Some("vigil-system.fleet"), Some(0))];
        assert_eq!(run(&[], &dss, &nodes, 3600), Cleanup::default());
    }

    #[test]
    fn labels_go_once_no_daemonset_of_the_revision_is_left() {
        // Deleted under Delete: the garbage collector took the DaemonSet.
        let nodes = [
            node("n1", Some("r-a"), Some("vigil-system.fleet"), Some(0)),
            node("n2", Some("r-a"), Some("vigil-system.fleet"), Some(3590)),
            node("n3", None, None, None),
            node("n4", Some("r-a"), Some("vigil-system.other"), Some(0)),
        ];
        let other = rollout("vigil-system", "other");
        let c = run(std::slice::from_ref(&other), &[], &nodes, 3600);
        assert_eq!(c.nodes, ["n1"], "n2 was admitted a moment ago; n4's rollout exists; n3 is not ours");
        assert!(c.daemonsets.is_empty());
        // A DaemonSet being deleted serves no one.
        let mut going = ds("vigil-agent-r-a", "r-a", Some("vigil-system/fleet"), true, 0);
        going.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(3500)));
        assert_eq!(run(std::slice::from_ref(&other), &[going], &nodes, 3600).nodes, ["n1"]);
        // A rollout of the same name back again: its nodes are its own once more.
        let back = rollout("vigil-system", "fleet");
        assert_eq!(run(&[other, back], &[], &nodes, 3600), Cleanup::default());
    }

    #[test]
    fn an_orphaned_daemonset_goes_once_no_node_is_labelled_for_it() {
        let dss = [
            ds("vigil-agent-r-a", "r-a", Some("vigil-system/fleet"), false, 0),
            ds("vigil-agent-r-b", "r-b", Some("vigil-system/fleet"), false, 0),
            ds("vigil-agent-r-c", "r-c", Some("vigil-system/fleet"), false, 3590),
            ds("vigil-agent-r-d", "r-d", Some("vigil-system/live"), false, 0),
            ds("vigil-agent-r-e", "r-e", Some("vigil-system/gone"), true, 0),
        ];
        let nodes = [node("n1", Some("r-a"), Some("vigil-system.fleet"), Some(0))];
        let live = rollout("vigil-system", "live");
        let c = run(&[live], &dss, &nodes, 3600);
        assert_eq!(
            c.daemonsets,
            [("vigil-system".to_owned(), "vigil-agent-r-b".to_owned())],
            "r-a runs on n1, r-c is new, r-d's rollout exists, r-e has an owner (the garbage collector's)"
        );
        // Not ours: never touched.
        let mut foreign = ds("someone-else", "r-z", None, false, 0);
        foreign.metadata.labels.as_mut().unwrap().remove(labels::MANAGED_BY);
        assert_eq!(run(&[], &[foreign], &[], 3600), Cleanup::default());
    }

    #[test]
    fn a_node_running_an_agent_by_its_run_label_keeps_its_labels_and_the_daemonset_stays() {
        // Mid-handover when the rollout was deleted: r-a runs by its run label only.
        let mut n = node("n1", Some("r-b"), Some("vigil-system.fleet"), Some(0));
        n.labels.insert("vigil.dev/run.r-a", "true");
        let dss = [ds("vigil-agent-r-a", "r-a", Some("vigil-system/fleet"), false, 0)];
        assert_eq!(run(&[], &dss, std::slice::from_ref(&n), 3600), Cleanup::default());
        let patch = unlabel_patch(&n.labels);
        assert_eq!(patch["metadata"]["labels"]["vigil.dev/run.r-a"], serde_json::Value::Null);
        assert_eq!(patch["metadata"]["labels"]["vigil.dev/revision"], serde_json::Value::Null);
    }

    #[test]
    fn long_rollout_names_are_matched_by_their_label_value() {
        let name = "a".repeat(120);
        let value = labels::rollout_label_value("vigil-system", &name);
        let nodes = [node("n1", Some("r-a"), Some(&value), Some(0))];
        assert_eq!(run(&[rollout("vigil-system", &name)], &[], &nodes, 3600), Cleanup::default());
        assert_eq!(run(&[], &[], &nodes, 3600).nodes, ["n1"]);
    }

    #[test]
    fn a_pass_is_the_operators_writes_one_per_object_each_standing_alone() {
        use crate::act::Effect;
        let cleanup = Cleanup {
            daemonsets: vec![("vigil-system".into(), "vigil-agent-r-a".into())],
            nodes: vec!["n1".into(), "gone".into()],
            snapshots: vec![("vigil-system".into(), "vigil-agent-config-r-a".into())],
        };
        let mut n1 = node("n1", Some("r-a"), Some("vigil-system.old"), Some(0));
        n1.labels.insert(&labels::run_label("r-a"), "true");
        let todo = cleanup.effects(&[&n1]);
        assert_eq!(
            todo[..2],
            [
                Effect::DeleteSnapshot { namespace: "vigil-system".into(), name: "vigil-agent-config-r-a".into() },
                Effect::DeleteDaemonSet { namespace: "vigil-system".into(), name: "vigil-agent-r-a".into() },
            ]
        );
        let Effect::Nodes(first) = &todo[2] else { panic!("{todo:?}") };
        assert_eq!(first.len(), 1, "a node per effect");
        assert_eq!(first[0].0, "n1");
        assert_eq!(
            first[0].1["metadata"]["labels"]["vigil.dev/run.r-a"],
            serde_json::Value::Null,
            "its run label goes"
        );
        assert_eq!(todo[3], Effect::Nodes(vec![("gone".into(), unlabel_patch(&vigil_plan::facts::Labels::default()))]));
        assert_eq!(todo.len(), 4);
        assert!(Cleanup::default().effects(&[&n1]).is_empty(), "nothing left behind: no write");
    }
}
