//! `cleanup`: what an uninstalled Vigil left behind, and only that. Pure: the facts are read
//! by `run`, the plan is written by it.
//!
//! An uninstall (`helm uninstall`, or `kubectl delete` of the rendered chart) removes what the
//! release holds; what the agents and the operator wrote stays: heartbeat Leases, the leader
//! record, the published policies and mirrored secrets, the config copies, and on each node its
//! `vigil.dev/` labels and annotation, its AgentStatus and the agent's Node conditions. A later
//! install judges none of it, but it misleads a person reading the cluster. `cleanup` removes
//! exactly those objects of one install, and refuses while that install still runs.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use vigil_crds::labels;

/// What `run` read from the cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// The install's namespace.
    pub namespace: String,
    /// AgentRollouts in the namespace.
    pub rollouts_here: Vec<String>,
    /// Agent DaemonSets (the agent selector) in the namespace.
    pub daemonsets_here: Vec<String>,
    /// Agent pods in the namespace (orphaned by a DaemonSet deleted without cascade, or still
    /// terminating).
    pub pods_here: Vec<String>,
    /// Operator pods in the namespace (an install without a rollout still runs its operator,
    /// whose leader record and published policies are live).
    pub operators_here: Vec<String>,
    /// The `vigil.dev/rollout` label value of every AgentRollout in the cluster (other installs
    /// included): nodes labelled with one of these belong to a live rollout.
    pub live_rollouts: BTreeSet<String>,
    /// The nodes to clean (those the `--nodes` selector matched).
    pub nodes: Vec<NodeFacts>,
    /// Nodes with an agent pod, of any install in any namespace.
    pub nodes_with_agents: BTreeSet<String>,
    /// Agent heartbeat Leases in the namespace.
    pub leases: Vec<String>,
    /// ConfigMaps in the namespace the operator wrote: the leader record, the published
    /// policies, the revisions' config copies.
    pub config_maps: Vec<String>,
    /// Secrets in the namespace the operator wrote (the mirrored alert credentials).
    pub secrets: Vec<String>,
    /// AgentStatus objects (named by node).
    pub statuses: BTreeSet<String>,
}

/// One node as read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeFacts {
    /// Node name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotation keys.
    pub annotations: BTreeSet<String>,
    /// Its condition types that the agents' field manager owns (a condition of the same name
    /// another writer owns, node-problem-detector's `KernelDeadlock`, is not listed).
    pub conditions: Vec<String>,
}

/// One removal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Removal {
    /// Delete a Lease of the namespace.
    Lease {
        /// Its name.
        name: String,
    },
    /// Delete a ConfigMap of the namespace.
    ConfigMap {
        /// Its name.
        name: String,
    },
    /// Delete a Secret of the namespace.
    Secret {
        /// Its name.
        name: String,
    },
    /// Remove labels and annotations from a node.
    NodeMetadata {
        /// The node.
        node: String,
        /// Label keys.
        labels: Vec<String>,
        /// Annotation keys.
        annotations: Vec<String>,
    },
    /// Remove the agent's conditions from a node's status.
    NodeConditions {
        /// The node.
        node: String,
        /// Condition types.
        types: Vec<String>,
    },
    /// Delete a node's AgentStatus.
    AgentStatus {
        /// Its name (the node's).
        name: String,
    },
}

impl std::fmt::Display for Removal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lease { name } => write!(f, "lease/{name}"),
            Self::ConfigMap { name } => write!(f, "configmap/{name}"),
            Self::Secret { name } => write!(f, "secret/{name}"),
            Self::NodeMetadata { node, labels, annotations } => {
                let keys: Vec<&str> = labels.iter().chain(annotations).map(String::as_str).collect();
                write!(f, "node/{node}: {}", keys.join(", "))
            }
            Self::NodeConditions { node, types } => write!(f, "node/{node} conditions: {}", types.join(", ")),
            Self::AgentStatus { name } => write!(f, "agentstatus/{name}"),
        }
    }
}

/// A node left as it is, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// The node.
    pub node: String,
    /// Why.
    pub why: String,
}

/// What `cleanup` removes and what it leaves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Removals, namespaced objects first.
    pub remove: Vec<Removal>,
    /// Nodes left alone.
    pub kept: Vec<Kept>,
}

/// Plans the cleanup, or says why the install is not gone.
pub fn plan(f: &Facts) -> Result<Plan, String> {
    let ns = &f.namespace;
    if !f.rollouts_here.is_empty() {
        return Err(format!(
            "namespace {ns} still has AgentRollout(s) {}: uninstall first (helm uninstall, or delete them)",
            f.rollouts_here.join(", ")
        ));
    }
    if !f.daemonsets_here.is_empty() {
        return Err(format!(
            "agents still run in namespace {ns} from DaemonSet(s) {}: delete them first (kubectl -n {ns} delete ds -l {})",
            f.daemonsets_here.join(", "),
            vigil_crds::agent::SELECTOR
        ));
    }
    if !f.pods_here.is_empty() {
        return Err(format!(
            "agent pod(s) {} still exist in namespace {ns} (orphaned or terminating): wait for them to go, or delete them (kubectl -n {ns} delete pod -l {})",
            f.pods_here.join(", "),
            vigil_crds::agent::SELECTOR
        ));
    }
    if !f.operators_here.is_empty() {
        return Err(format!(
            "the operator still runs in namespace {ns} (pod(s) {}): uninstall first (helm uninstall); its leader record and published policies are live",
            f.operators_here.join(", ")
        ));
    }
    let mut p = Plan::default();
    p.remove.extend(f.leases.iter().map(|name| Removal::Lease { name: name.clone() }));
    p.remove.extend(f.config_maps.iter().map(|name| Removal::ConfigMap { name: name.clone() }));
    p.remove.extend(f.secrets.iter().map(|name| Removal::Secret { name: name.clone() }));
    for n in &f.nodes {
        if f.nodes_with_agents.contains(&n.name) {
            p.kept.push(Kept { node: n.name.clone(), why: "an agent pod of another namespace runs on it".into() });
            continue;
        }
        if let Some(r) = n.labels.get(labels::ROLLOUT).filter(|r| f.live_rollouts.contains(*r)) {
            p.kept.push(Kept { node: n.name.clone(), why: format!("its rollout {r} (namespace.name) still exists") });
            continue;
        }
        let labels: Vec<String> = n.labels.keys().filter(|k| labels::written_on_nodes(k)).cloned().collect();
        let annotations: Vec<String> = n.annotations.iter().filter(|k| labels::written_on_nodes(k)).cloned().collect();
        if !labels.is_empty() || !annotations.is_empty() {
            p.remove.push(Removal::NodeMetadata { node: n.name.clone(), labels, annotations });
        }
        let types: Vec<String> =
            n.conditions.iter().filter(|c| vigil_crds::agent::NODE_CONDITIONS.contains(&c.as_str())).cloned().collect();
        if !types.is_empty() {
            p.remove.push(Removal::NodeConditions { node: n.name.clone(), types });
        }
        if f.statuses.contains(&n.name) {
            p.remove.push(Removal::AgentStatus { name: n.name.clone() });
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: &[(&str, &str)], conditions: &[&str]) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            annotations: [labels::ADMITTED_AT.to_owned(), "other.io/keep".to_owned()].into(),
            conditions: conditions.iter().map(|c| (*c).into()).collect(),
        }
    }

    fn left_behind() -> Facts {
        Facts {
            namespace: "vigil-system".into(),
            live_rollouts: ["team-b.fleet".to_owned()].into(),
            nodes: vec![
                node(
                    "a",
                    &[
                        (labels::REVISION, "r-1"),
                        (labels::ROLLOUT, "vigil-system.agent"),
                        ("vigil.dev/run.r-1", "true"),
                        ("vigil.dev/e2e", "x"),
                        ("kubernetes.io/os", "linux"),
                    ],
                    &["Ready", "KernelDeadlock", "DiskIOErrors", "NetworkUnavailable"],
                ),
                node("b", &[(labels::REVISION, "r-2"), (labels::ROLLOUT, "team-b.fleet")], &["KernelDeadlock"]),
                node("c", &[(labels::REVISION, "r-1")], &["KernelDeadlock"]),
                node("d", &[], &["Ready"]),
            ],
            nodes_with_agents: ["c".to_owned()].into(),
            leases: vec!["vigil-agent-a".into()],
            config_maps: vec![labels::LEADER_RECORD.into()],
            secrets: vec![vigil_crds::policy::SECRETS_SECRET.into()],
            statuses: ["a".to_owned(), "b".to_owned(), "c".to_owned()].into(),
            ..Facts::default()
        }
    }

    #[test]
    fn removes_only_what_vigil_wrote_on_nodes_no_install_still_uses() {
        let p = plan(&left_behind()).unwrap();
        let shown: Vec<String> = p.remove.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "lease/vigil-agent-a",
                "configmap/vigil-operator-leader",
                "secret/vigil-alert-secrets",
                "node/a: vigil.dev/revision, vigil.dev/rollout, vigil.dev/run.r-1, vigil.dev/admitted-at",
                "node/a conditions: KernelDeadlock, DiskIOErrors",
                "agentstatus/a",
                "node/d: vigil.dev/admitted-at",
            ]
        );
        let kept: Vec<(&str, &str)> = p.kept.iter().map(|k| (k.node.as_str(), k.why.as_str())).collect();
        assert_eq!(
            kept,
            [
                ("b", "its rollout team-b.fleet (namespace.name) still exists"),
                ("c", "an agent pod of another namespace runs on it")
            ]
        );
    }

    #[test]
    fn refuses_while_the_install_still_has_rollouts_or_agents() {
        let mut f = left_behind();
        f.rollouts_here = vec!["agent".into()];
        let e = plan(&f).unwrap_err();
        assert!(e.contains("still has AgentRollout(s) agent"), "{e}");
        f.rollouts_here.clear();
        f.daemonsets_here = vec!["vigil-agent-r-1".into()];
        let e = plan(&f).unwrap_err();
        assert!(e.contains("vigil-agent-r-1") && e.contains("delete ds -l app.kubernetes.io/name=vigil-agent"), "{e}");
        f.daemonsets_here.clear();
        f.pods_here = vec!["vigil-agent-r-1-x7k".into()];
        let e = plan(&f).unwrap_err();
        assert!(e.contains("vigil-agent-r-1-x7k") && e.contains("orphaned or terminating"), "{e}");
        // An install with no rollout (no agent image set) still runs its operator.
        f.pods_here.clear();
        f.operators_here = vec!["vigil-operator-5d8-abc".into()];
        let e = plan(&f).unwrap_err();
        assert!(e.contains("the operator still runs") && e.contains("vigil-operator-5d8-abc"), "{e}");
        f.operators_here.clear();
        assert!(plan(&f).is_ok());
    }

    #[test]
    fn a_clean_cluster_plans_nothing() {
        let mut f =
            Facts { namespace: "vigil-system".into(), nodes: vec![node("d", &[], &["Ready"])], ..Facts::default() };
        f.nodes[0].annotations.retain(|k| !k.starts_with("vigil.dev/"));
        assert_eq!(plan(&f).unwrap(), Plan::default());
    }
}
