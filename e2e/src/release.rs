//! The chart as a release on real nodes: its values, what its agents are doing on each node,
//! and the guard that takes the operator's labels off the nodes when a test ends.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // test helpers fail loudly

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use vigil_crds::{AgentHealth, AgentRollout, AgentStatus};

/// The agent pods of a release.
pub const AGENTS: &str = vigil_crds::agent::SELECTOR;

/// The chart values of the real-node tests: the two images, the agents' `interval`, two
/// quick waves and a gate that fails on any unhealthy node.
pub fn values(agent: &str, operator: &str, interval: &str) -> serde_json::Value {
    let (repository, digest) = operator.split_once('@').expect("VIGIL_E2E_OPERATOR_IMAGE must be REPO@sha256:...");
    json!({
        "operator": {"image": {"repository": repository, "digest": digest}, "replicas": 1},
        "agent": {"image": agent, "config": {"interval": interval}},
        "rollout": {
            "waves": [{"percent": 50, "bakeTime": "5s"}, {"percent": 100, "bakeTime": "0s"}],
            "healthGate": {"heartbeatGap": "60s", "progressDeadline": "4m", "maxRestarts": 2, "maxFailedNodes": 0},
        },
    })
}

/// Nodes a DaemonSet pod can run on: Ready and not cordoned.
pub async fn schedulable_nodes(client: &Client) -> BTreeSet<String> {
    let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await.unwrap();
    nodes
        .items
        .iter()
        .filter(|n| !n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false))
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(ResourceExt::name_any)
        .collect()
}

/// A pod not being deleted whose Ready condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Per node, whether an agent pod of the release is Ready there, and on which revisions.
pub async fn agents_by_node(pods: &Api<Pod>) -> BTreeMap<String, Vec<(String, bool)>> {
    let mut out: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for p in pods.list(&ListParams::default().labels(AGENTS)).await.map(|l| l.items).unwrap_or_default() {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
        let rev = p.labels().get(vigil_crds::labels::REVISION).cloned().unwrap_or_default();
        out.entry(node).or_default().push((rev, pod_ready(&p)));
    }
    out
}

/// The chart's rollout `vigil-agent` Completed on a revision other than `not`: its revision;
/// otherwise what it is doing.
pub async fn rollout_done(rollouts: &Api<AgentRollout>, not: Option<&str>) -> Result<Option<String>, String> {
    let r = rollouts.get("vigil-agent").await.map_err(|e| e.to_string())?;
    let st = r.status.unwrap_or_default();
    let target = st.target_revision.clone().unwrap_or_default();
    if st.phase == Some(vigil_crds::rollout::RolloutPhase::Completed) && Some(target.as_str()) != not {
        return Ok(Some(target));
    }
    Err(format!("phase {:?}, target {target}, {}", st.phase, st.reason.unwrap_or_default()))
}

/// The release's pods in a line, for a failure message: name, phase, and why not ready.
pub async fn pods_summary(pods: &Api<Pod>) -> String {
    let list = match pods.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => return format!("cannot list: {e}"),
    };
    list.iter()
        .map(|p| {
            let st = p.status.as_ref();
            let why: Vec<String> = st
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.status != "True")
                .map(|c| format!("{} {}", c.type_, c.message.clone().unwrap_or_default()))
                .collect();
            format!("{} {} [{}]", p.name_any(), st.and_then(|s| s.phase.clone()).unwrap_or_default(), why.join("; "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every node runs a Ready agent on `rev` and reports it in its AgentStatus, written after
/// `since` (what an earlier install's agent wrote does not count), with each event source and a
/// health that is not Unhealthy (Degraded only for a source the node cannot give).
pub async fn all_on(
    client: &Client,
    pods: &Api<Pod>,
    nodes: &BTreeSet<String>,
    rev: &str,
    since: jiff::Timestamp,
) -> Result<Option<()>, String> {
    let agents = agents_by_node(pods).await;
    let statuses: Api<AgentStatus> = Api::all(client.clone());
    for n in nodes {
        if !agents.get(n).is_some_and(|a| a.iter().any(|(r, ready)| r == rev && *ready)) {
            return Err(format!("{n}: no Ready agent on {rev} ({:?})", agents.get(n)));
        }
        let st = statuses.get_opt(n).await.map_err(|e| e.to_string())?.and_then(|s| s.status);
        let Some(st) = st else { return Err(format!("{n}: no AgentStatus yet")) };
        if st.revision.as_deref() != Some(rev) {
            return Err(format!("{n}: AgentStatus on {:?}", st.revision));
        }
        let reported = st.last_report_time.as_ref().map(|t| t.0);
        if reported.is_none_or(|t| t < since) {
            return Err(format!("{n}: AgentStatus last written {reported:?}, before {since}"));
        }
        if st.sources.is_empty() {
            return Err(format!("{n}: AgentStatus reports no event source"));
        }
        match st.health {
            AgentHealth::Healthy => {}
            AgentHealth::Degraded if st.health_reason.as_deref().is_some_and(|r| r.starts_with("event sources:")) => {}
            h => return Err(format!("{n}: {h:?}: {:?}", st.health_reason)),
        }
    }
    Ok(Some(()))
}

/// Removes the `vigil.dev/` labels the release's operator set on nodes (only on nodes whose
/// `vigil.dev/rollout` names the release's rollout), when dropped.
pub struct NodeLabels {
    /// The `vigil.dev/rollout` value: `NAMESPACE.vigil-agent`.
    pub rollout_label: String,
}

impl Drop for NodeLabels {
    fn drop(&mut self) {
        let value = self.rollout_label.clone();
        crate::blocking(move |client| async move {
            let nodes: Api<Node> = Api::all(client);
            let lp = ListParams::default().labels(&format!("{}={value}", vigil_crds::labels::ROLLOUT));
            let Ok(list) = nodes.list(&lp).await else { return };
            let clear = json!({"metadata": {
                "labels": {
                    vigil_crds::labels::REVISION: null, vigil_crds::labels::ROLLOUT: null, vigil_crds::labels::PINNED: null,
                },
                "annotations": {vigil_crds::labels::ADMITTED_AT: null},
            }});
            for n in list.items {
                let _ = nodes.patch(&n.name_any(), &PatchParams::default(), &Patch::Merge(&clear)).await;
            }
        });
    }
}

/// Makes sure CRDs are installed and Vigil runs nowhere on the cluster (the agents write one
/// AgentStatus per node); panics otherwise, having changed nothing.
pub async fn not_installed(client: &Client) {
    crate::install_crds(client, std::time::Duration::from_secs(60)).await.unwrap();
    let statuses: Api<AgentStatus> = Api::all(client.clone());
    let already = statuses.list(&ListParams::default().limit(1)).await.unwrap();
    assert!(already.items.is_empty(), "Vigil already runs on this cluster (AgentStatus exists): not touching it");
    assert!(!schedulable_nodes(client).await.is_empty(), "no schedulable node");
}

/// Installs (or upgrades) the chart as `release` into `ns` with `vals`, registering what it
/// creates with `cleanup`, and waits until its rollout is Completed on a revision other than
/// `not` and every one of `nodes` runs a Ready agent on that revision that has reported since
/// the apply: the revision.
pub async fn install_into(
    client: &Client,
    release: &str,
    ns: &str,
    vals: &serde_json::Value,
    not: Option<&str>,
    nodes: &BTreeSet<String>,
    cleanup: &mut crate::Cleanup,
) -> String {
    let since = jiff::Timestamp::now();
    let objects = crate::chart::render(release, ns, vals).unwrap();
    crate::chart::apply(client, ns, &objects, cleanup).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), ns);
    let wait = std::time::Duration::from_secs(420);
    let every = std::time::Duration::from_secs(2);
    let rev = crate::wait_for("the revision Completed", wait, every, || async {
        match rollout_done(&rollouts, not).await {
            Err(e) => Err(format!("{e}; pods: {}", pods_summary(&pods).await)),
            done => done,
        }
    })
    .await
    .unwrap();
    let wait = std::time::Duration::from_secs(240);
    crate::wait_for("an agent Ready and reporting on every node", wait, every, || {
        all_on(client, &pods, nodes, &rev, since)
    })
    .await
    .unwrap();
    rev
}

/// Removes, when dropped, the agents' conditions (those their field manager set) from `nodes`;
/// the conditions of others (node-problem-detector's of the same names) stay.
pub struct AgentConditions {
    /// The nodes the test's agents ran on.
    pub nodes: BTreeSet<String>,
}

impl Drop for AgentConditions {
    fn drop(&mut self) {
        let nodes = self.nodes.clone();
        crate::blocking(move |client| async move {
            let api: Api<Node> = Api::all(client);
            for n in nodes {
                let Ok(node) = api.get(&n).await else { continue };
                let ours = kubectl_vigil::run::agent_conditions(&node);
                if ours.is_empty() {
                    continue;
                }
                let remove: Vec<serde_json::Value> =
                    ours.iter().map(|t| json!({"type": t, "$patch": "delete"})).collect();
                let patch = json!({"status": {"conditions": remove}});
                let _ = api.patch_status(&n, &PatchParams::default(), &Patch::Strategic(&patch)).await;
            }
        });
    }
}
