//! Cluster objects → what the planner sees. Reads only; no client here: the controller
//! hands in the facts its stores keep ([`crate::facts`]).

use std::collections::BTreeMap;

use vigil_crds::labels;

use crate::facts::{LeaseFacts, NodeFacts, PodFacts, StatusFacts};
use crate::{AgentView, NodeView};

/// The container of the agent pod the gate looks at.
pub use vigil_crds::agent::CONTAINER as AGENT_CONTAINER;
/// The Lease an agent renews as its heartbeat, named after its node.
pub use vigil_crds::agent::lease_name;

/// Keeps of an agent DaemonSet what the controller and the janitor read: name, namespace,
/// labels, the operator's annotations, owners, creation and deletion times.
pub fn trim_daemonset(ds: &mut k8s_openapi::api::apps::v1::DaemonSet) {
    trim_meta(&mut ds.metadata);
    ds.spec = None;
    ds.status = None;
}

/// Keeps of a config snapshot its metadata (the controller reads names, labels and the
/// `vigil.dev/` annotations); the config text stays in the API.
pub fn trim_snapshot(cm: &mut k8s_openapi::api::core::v1::ConfigMap) {
    trim_meta(&mut cm.metadata);
    cm.data = None;
    cm.binary_data = None;
}

/// Drops an object's managed fields and every annotation but the operator's (`vigil.dev/`).
fn trim_meta(m: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    m.managed_fields = None;
    if let Some(a) = m.annotations.as_mut() {
        a.retain(|k, _| k.starts_with(vigil_crds::labels::PREFIX));
    }
}

/// One node with its agent pod (the one of the node's revision when there are several, as
/// during a label change), heartbeat Lease and AgentStatus.
pub fn node_view(
    node: &NodeFacts,
    pods: &[&PodFacts],
    lease: Option<&LeaseFacts>,
    status: Option<&StatusFacts>,
) -> NodeView {
    let revision = node.labels.get(labels::REVISION);
    let pod = pods.iter().find(|p| p.revision.as_deref() == revision).or_else(|| pods.first());
    let agent = pod.and_then(|p| {
        let revision = p.revision.as_deref()?;
        let cs = p.agent.as_ref();
        let started_at = cs.and_then(|c| c.started_at);
        // Evidence counts only when this container wrote it: renewed or reported after the
        // kubelet started it, both on the node's own clock. A Lease or AgentStatus left by an
        // earlier install's agent of the same revision (the same image and config give the
        // same name), or by this pod before a restart, proves nothing of the agent running now.
        let since_start = |t: Option<jiff::Timestamp>| matches!((t, started_at), (Some(t), Some(s)) if t >= s);
        let health = status
            .filter(|s| s.revision.as_deref() == Some(revision))
            .filter(|s| since_start(s.last_report_time))
            .map(|s| s.health);
        let heartbeat = lease
            .filter(|l| since_start(l.renewed_at))
            .filter(|l| {
                // The heartbeat of this pod's agent: the Lease names the revision whose agent
                // renews it (during a handover, the outgoing agent's renewals are not the new
                // one's), or the node for an agent written before revisions were named there.
                let holder = l.holder.as_deref();
                holder.is_none() || holder == Some(revision) || holder == Some(node.name.as_str())
            })
            .and_then(|l| l.renewed_at);
        Some(AgentView {
            revision: revision.to_owned(),
            ready: p.ready,
            restarts: cs.map_or(0, |c| c.restarts),
            waiting_reason: cs.and_then(|c| c.waiting_reason.clone()),
            last_termination_reason: cs.and_then(|c| c.last_termination_reason.clone()),
            heartbeat,
            health,
            started_at,
            created_at: p.created_at,
        })
    });
    NodeView {
        name: node.name.clone(),
        attributes: node.attributes(),
        labels: node.labels.clone(),
        revision: revision.map(str::to_owned),
        admitted_at: node.admitted_at,
        ready: node.ready,
        ready_changed_at: node.ready_changed_at,
        agent,
    }
}

/// Joins nodes with their pods (by the node they run on), Leases (by name) and AgentStatuses
/// (by name), in node-name order.
pub fn node_views<'a>(
    nodes: impl IntoIterator<Item = &'a NodeFacts>,
    pods: impl IntoIterator<Item = &'a PodFacts>,
    leases: impl IntoIterator<Item = &'a LeaseFacts>,
    statuses: impl IntoIterator<Item = &'a StatusFacts>,
) -> Vec<NodeView> {
    let mut by_node: BTreeMap<&str, Vec<&PodFacts>> = BTreeMap::new();
    for p in pods {
        if let Some(n) = p.node.as_deref() {
            by_node.entry(n).or_default().push(p);
        }
    }
    let leases: BTreeMap<&str, &LeaseFacts> = leases.into_iter().map(|l| (l.name.as_str(), l)).collect();
    let statuses: BTreeMap<&str, &StatusFacts> = statuses.into_iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out: Vec<NodeView> = nodes
        .into_iter()
        .filter(|n| !n.name.is_empty())
        .map(|n| {
            let pods = by_node.get(n.name.as_str()).map(Vec::as_slice).unwrap_or_default();
            node_view(
                n,
                pods,
                leases.get(lease_name(&n.name).as_str()).copied(),
                statuses.get(n.name.as_str()).copied(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use vigil_crds::AgentStatus;

    /// [`node_view`] of the API's objects, through their facts.
    fn view(n: &Node, pods: &[&Pod], lease: Option<&Lease>, status: Option<&AgentStatus>) -> NodeView {
        let pods: Vec<PodFacts> = pods.iter().map(|p| PodFacts::from(*p)).collect();
        node_view(
            &NodeFacts::from(n),
            &pods.iter().collect::<Vec<_>>(),
            lease.map(LeaseFacts::from).as_ref(),
            status.map(StatusFacts::from).as_ref(),
        )
    }

    fn node() -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-a", "labels": {"vigil.dev/revision": "r-aaaaaaaaaa", "topology.kubernetes.io/zone": "eu-1a", "node.kubernetes.io/instance-type": "m5.large"}},
            "status": {
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-05T00:00:10Z"}],
                "nodeInfo": {"osImage": "CentOS Linux 7 (Core)", "kernelVersion": "3.10.0", "architecture": "amd64", "operatingSystem": "linux",
                             "bootID": "", "containerRuntimeVersion": "", "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "", "systemUUID": ""}
            }
        }))
        .unwrap()
    }

    fn pod(rev: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("vigil-agent-{rev}-x"), "labels": {"vigil.dev/revision": rev}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "agent"}]},
            "status": {
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{
                    "name": "agent", "ready": false, "restartCount": 4, "image": "", "imageID": "",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
                }]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_node_its_pod_lease_and_status_become_one_view() {
        let n = node();
        let (old, cur) = (pod("r-0000000000"), pod("r-aaaaaaaaaa"));
        let lease: Lease = serde_json::from_value(serde_json::json!({"metadata": {"name": "vigil-agent-node-a"}, "spec": {"renewTime": "2026-01-05T00:01:00.000000Z"}})).unwrap();
        let status: AgentStatus = serde_json::from_value(serde_json::json!({"metadata": {"name": "node-a"}, "spec": {"nodeName": "node-a"}, "status": {"revision": "r-aaaaaaaaaa", "health": "Degraded"}})).unwrap();
        let (pods, lease, status) =
            ([PodFacts::from(&old), PodFacts::from(&cur)], LeaseFacts::from(&lease), StatusFacts::from(&status));
        let views = node_views([&NodeFacts::from(&n)], &pods, [&lease], [&status]);
        let v = &views[0];
        assert_eq!(v.name, "node-a");
        assert_eq!(v.revision.as_deref(), Some("r-aaaaaaaaaa"));
        assert!(!v.ready);
        assert_eq!(v.ready_changed_at, Some("2026-01-05T00:00:10Z".parse().unwrap()));
        assert_eq!(v.attributes.os_image, "CentOS Linux 7 (Core)");
        assert_eq!(v.attributes.zone, "eu-1a");
        assert_eq!(v.attributes.instance_type, "m5.large");
        let a = v.agent.as_ref().unwrap();
        assert_eq!(a.revision, "r-aaaaaaaaaa", "the pod of the node's revision, not the old one");
        assert_eq!(a.restarts, 4);
        assert_eq!(a.waiting_reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(a.last_termination_reason.as_deref(), Some("OOMKilled"));
        // Its container is not running: nothing it wrote before counts.
        assert_eq!((a.heartbeat, a.health), (None, None));
    }

    /// The agent of `rev` on node-a, running since `started`.
    fn running(rev: &str, started: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("vigil-agent-{rev}-x"), "labels": {"vigil.dev/revision": rev}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "agent"}]},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "agent", "ready": true, "restartCount": 0, "image": "", "imageID": "",
                                       "state": {"running": {"startedAt": started}}}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn evidence_written_before_the_agent_started_is_no_evidence() {
        let n = node();
        let evidence = |at: &str| -> (Lease, AgentStatus) {
            (
                serde_json::from_value(serde_json::json!({"metadata": {"name": "vigil-agent-node-a"}, "spec": {"holderIdentity": "r-aaaaaaaaaa", "renewTime": at}})).unwrap(),
                serde_json::from_value(serde_json::json!({"metadata": {"name": "node-a"}, "spec": {"nodeName": "node-a"}, "status": {"revision": "r-aaaaaaaaaa", "health": "Healthy", "lastReportTime": at}})).unwrap(),
            )
        };
        // A reinstall: the previous install's agent of the same revision left its Lease and
        // AgentStatus at 00:01; the new agent started at 00:05.
        let pod = running("r-aaaaaaaaaa", "2026-01-05T00:05:00Z");
        let (lease, status) = evidence("2026-01-05T00:01:00.000000Z");
        let a = view(&n, &[&pod], Some(&lease), Some(&status)).agent.unwrap();
        assert_eq!((a.heartbeat, a.health), (None, None), "no heartbeat yet, not one 4 minutes old");
        // The gate, 10 s after the start: waiting for the first heartbeat, not failed for one
        // 4 minutes old (which rolled back a reinstall and marked a good revision Bad).
        let mut seen = view(&n, &[&pod], Some(&lease), Some(&status));
        seen.ready = true;
        let gate = vigil_crds::rollout::HealthGate::default();
        let (admitted, now) = ("2026-01-05T00:04:59Z".parse().unwrap(), "2026-01-05T00:05:10Z".parse().unwrap());
        assert_eq!(
            crate::gate::judge(&seen, "r-aaaaaaaaaa", &gate, admitted, now),
            crate::gate::NodeHealth::Pending("no heartbeat yet".into())
        );
        // Once the new agent renews and reports, it counts.
        let (lease, status) = evidence("2026-01-05T00:05:02.000000Z");
        let a = view(&n, &[&pod], Some(&lease), Some(&status)).agent.unwrap();
        assert_eq!(a.heartbeat, Some("2026-01-05T00:05:02Z".parse().unwrap()));
        assert_eq!(a.health, Some(vigil_crds::AgentHealth::Healthy));
    }

    #[test]
    fn a_node_without_pod_or_labels_has_no_agent_and_no_revision() {
        let n: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "bare"}})).unwrap();
        let v = view(&n, &[], None, None);
        assert_eq!(v.revision, None);
        assert!(v.agent.is_none());
        assert!(!v.ready);
        assert_eq!(v.ready_changed_at, None);
    }

    #[test]
    fn the_facts_of_an_object_are_what_the_planner_reads_and_unchanged_by_the_rest() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-a", "labels": {"pool": "web", "vigil.dev/revision": "r-aaaaaaaaaa", "topology.kubernetes.io/zone": "eu-1a"},
                         "annotations": {"vigil.dev/admitted-at": "2026-01-05T00:00:00Z", "node.alpha.kubernetes.io/ttl": "0", "big": "x".repeat(2000)},
                         "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}]},
            "spec": {"podCIDR": "10.0.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-05T00:00:10Z"}
                ],
                "nodeInfo": {"osImage": "CentOS Linux 7 (Core)", "kernelVersion": "3.10.0", "architecture": "amd64", "operatingSystem": "linux",
                             "bootID": "", "containerRuntimeVersion": "", "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "", "systemUUID": ""},
                "images": (0..50).map(|i| serde_json::json!({"names": [format!("registry.example/image-{i}@sha256:{}", "a".repeat(64))], "sizeBytes": 1})).collect::<Vec<_>>(),
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]
            }
        }))
        .unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "agent-x", "labels": {"vigil.dev/revision": "r-aaaaaaaaaa"}, "annotations": {"a": "b"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "agent", "image": "i", "args": ["run"]}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "agent", "ready": true, "restartCount": 3, "image": "i", "imageID": "",
                                              "lastState": {"terminated": {"exitCode": 1, "reason": "OOMKilled"}}}],
                       "podIP": "10.0.0.5"}
        }))
        .unwrap();
        let status: AgentStatus = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-a"}, "spec": {"nodeName": "node-a"},
            "status": {"revision": "r-aaaaaaaaaa", "health": "Degraded", "healthReason": "x".repeat(500), "kernel": "3.10.0"}
        }))
        .unwrap();
        let lease: Lease = serde_json::from_value(serde_json::json!({"metadata": {"name": "vigil-agent-node-a"}, "spec": {"renewTime": "2026-01-05T00:01:00.000000Z"}})).unwrap();
        let v = view(&node, &[&pod], Some(&lease), Some(&status));
        assert_eq!(v.admitted_at, Some("2026-01-05T00:00:00Z".parse().unwrap()), "from the vigil.dev/ annotation");
        assert_eq!(v.labels.get("pool"), Some("web"));
        assert_eq!(v.ready_changed_at, Some("2026-01-05T00:00:10Z".parse().unwrap()));
        assert_eq!(v.attributes.kernel, "3.10.0");
        let a = v.agent.unwrap();
        assert_eq!((a.ready, a.restarts, a.last_termination_reason.as_deref()), (true, 3, Some("OOMKilled")));
        // What no one reads changes nothing the operator keeps: a kubelet's heartbeat, new
        // images, other annotations, other conditions, the pod's IP.
        let (mut n2, mut p2) = (node.clone(), pod.clone());
        let st = n2.status.as_mut().unwrap();
        st.images = None;
        st.conditions.as_mut().unwrap()[0].status = "True".into();
        st.conditions.as_mut().unwrap()[1].last_heartbeat_time =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-01-05T00:09:00Z".parse().unwrap()));
        n2.metadata.annotations.as_mut().unwrap().insert("other".into(), "y".into());
        n2.metadata.resource_version = Some("99".into());
        p2.status.as_mut().unwrap().pod_ip = Some("10.0.0.6".into());
        assert_eq!(NodeFacts::from(&n2), NodeFacts::from(&node));
        assert_eq!(PodFacts::from(&p2), PodFacts::from(&pod));
        // What the planner reads does.
        n2.metadata.annotations.as_mut().unwrap().insert("vigil.dev/admitted-at".into(), "2026-01-05T00:02:00Z".into());
        assert_ne!(NodeFacts::from(&n2), NodeFacts::from(&node));
    }
}
