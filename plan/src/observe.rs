//! Cluster objects → what the planner sees. Reads only; no client here: the controller
//! hands in what its reflector stores hold.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use vigil_crds::{AgentStatus, labels};

use crate::{AgentView, NodeAttributes, NodeView};

/// The container of the agent pod the gate looks at.
pub use vigil_crds::agent::CONTAINER as AGENT_CONTAINER;
/// The Lease an agent renews as its heartbeat, named after its node.
pub use vigil_crds::agent::lease_name;

/// Keeps of a Node only what the planner and the nudges read (labels, the `vigil.dev/`
/// annotations, `status.conditions` and `status.nodeInfo`): the reflector then holds a few
/// hundred bytes a node instead of its image list, managed fields and addresses.
pub fn trim_node(node: &mut Node) {
    trim_meta(&mut node.metadata);
    node.spec = None;
    if let Some(st) = node.status.take() {
        node.status = Some(k8s_openapi::api::core::v1::NodeStatus {
            conditions: st.conditions.map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect()),
            node_info: st.node_info,
            ..Default::default()
        });
    }
}

/// Keeps of an agent pod what the gate reads: labels, the node it runs on, its conditions
/// and container states.
pub fn trim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    pod.spec = Some(k8s_openapi::api::core::v1::PodSpec { node_name, ..Default::default() });
    if let Some(st) = pod.status.take() {
        pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: st.phase,
            conditions: st.conditions,
            container_statuses: st.container_statuses,
            ..Default::default()
        });
    }
}

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

/// Keeps of a heartbeat Lease its spec.
pub fn trim_lease(lease: &mut Lease) {
    lease.metadata.managed_fields = None;
    lease.metadata.annotations = None;
}

/// Keeps of an AgentStatus the revision, health and report time the gate reads, and the
/// AgentReporting condition the operator itself writes.
pub fn trim_agent_status(s: &mut AgentStatus) {
    s.metadata.managed_fields = None;
    s.metadata.annotations = None;
    if let Some(st) = s.status.take() {
        let conditions =
            st.conditions.into_iter().filter(|c| c.type_ == vigil_crds::agentstatus::REPORTING_CONDITION).collect();
        s.status = Some(vigil_crds::AgentStatusStatus {
            revision: st.revision,
            health: st.health,
            last_report_time: st.last_report_time,
            conditions,
            ..Default::default()
        });
    }
}

/// The attributes of a node (from `status.nodeInfo` and well-known labels).
pub fn attributes(node: &Node) -> NodeAttributes {
    let info = node.status.as_ref().and_then(|s| s.node_info.as_ref());
    let label = |k: &str| node.metadata.labels.as_ref().and_then(|l| l.get(k)).cloned().unwrap_or_default();
    NodeAttributes {
        os_image: info.map(|i| i.os_image.clone()).unwrap_or_default(),
        kernel: info.map(|i| i.kernel_version.clone()).unwrap_or_default(),
        arch: info.map(|i| i.architecture.clone()).unwrap_or_default(),
        os: info.map(|i| i.operating_system.clone()).unwrap_or_default(),
        instance_type: label("node.kubernetes.io/instance-type"),
        zone: label("topology.kubernetes.io/zone"),
    }
}

/// One node with its agent pod (the one of the node's revision when there are several, as
/// during a label change), heartbeat Lease and AgentStatus.
pub fn node_view(node: &Node, pods: &[&Pod], lease: Option<&Lease>, status: Option<&AgentStatus>) -> NodeView {
    let labels: BTreeMap<String, String> = node.metadata.labels.clone().unwrap_or_default();
    let revision = labels.get(labels::REVISION).cloned();
    let ready_cond =
        node.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    let ready = ready_cond.is_some_and(|c| c.status == "True");
    let ready_changed_at = ready_cond.and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0);
    let pod_rev = |p: &Pod| p.metadata.labels.as_ref().and_then(|l| l.get(labels::REVISION)).cloned();
    let pod = pods.iter().find(|p| pod_rev(p) == revision).or_else(|| pods.first());
    let agent = pod.and_then(|p| {
        let revision = pod_rev(p)?;
        let st = p.status.as_ref();
        let cs =
            st.and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.iter().find(|c| c.name == AGENT_CONTAINER));
        let pod_ready = st
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        let started_at = cs
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.as_ref())
            .map(|t| t.0);
        // Evidence counts only when this container wrote it: renewed or reported after the
        // kubelet started it, both on the node's own clock. A Lease or AgentStatus left by an
        // earlier install's agent of the same revision (the same image and config give the
        // same name), or by this pod before a restart, proves nothing of the agent running now.
        let since_start = |t: Option<jiff::Timestamp>| matches!((t, started_at), (Some(t), Some(s)) if t >= s);
        let health = status
            .filter(|s| s.status.as_ref().and_then(|x| x.revision.as_deref()) == Some(revision.as_str()))
            .and_then(|s| s.status.as_ref())
            .filter(|s| since_start(s.last_report_time.as_ref().map(|t| t.0)))
            .map(|s| s.health);
        let heartbeat = lease
            .and_then(|l| l.spec.as_ref())
            .filter(|s| since_start(s.renew_time.as_ref().map(|t| t.0)))
            .filter(|s| {
                // The heartbeat of this pod's agent: the Lease names the revision whose agent
                // renews it (during a handover, the outgoing agent's renewals are not the new
                // one's), or the node for an agent written before revisions were named there.
                let holder = s.holder_identity.as_deref();
                holder.is_none() || holder == Some(revision.as_str()) || holder == node.metadata.name.as_deref()
            })
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0);
        Some(AgentView {
            revision,
            ready: pod_ready,
            restarts: cs.map_or(0, |c| u32::try_from(c.restart_count).unwrap_or(0)),
            waiting_reason: cs
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone()),
            last_termination_reason: cs
                .and_then(|c| c.last_state.as_ref())
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.reason.clone()),
            heartbeat,
            health,
            started_at,
            created_at: p.metadata.creation_timestamp.as_ref().map(|t| t.0),
        })
    });
    let admitted_at = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::ADMITTED_AT))
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    NodeView {
        name: node.metadata.name.clone().unwrap_or_default(),
        attributes: attributes(node),
        labels,
        revision,
        admitted_at,
        ready,
        ready_changed_at,
        agent,
    }
}

/// Joins nodes with their pods (by `spec.nodeName`), Leases (by name) and AgentStatuses (by
/// name), in node-name order.
pub fn node_views<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    pods: impl IntoIterator<Item = &'a Pod>,
    leases: impl IntoIterator<Item = &'a Lease>,
    statuses: impl IntoIterator<Item = &'a AgentStatus>,
) -> Vec<NodeView> {
    let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for p in pods {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let leases: BTreeMap<&str, &Lease> =
        leases.into_iter().filter_map(|l| Some((l.metadata.name.as_deref()?, l))).collect();
    let statuses: BTreeMap<&str, &AgentStatus> =
        statuses.into_iter().filter_map(|s| Some((s.metadata.name.as_deref()?, s))).collect();
    let mut out: Vec<NodeView> = nodes
        .into_iter()
        .filter_map(|n| {
            let name = n.metadata.name.as_deref()?;
            let pods = by_node.get(name).map(Vec::as_slice).unwrap_or_default();
            Some(node_view(n, pods, leases.get(lease_name(name).as_str()).copied(), statuses.get(name).copied()))
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let views = node_views([&n], [&old, &cur], [&lease], [&status]);
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
        let a = node_view(&n, &[&pod], Some(&lease), Some(&status)).agent.unwrap();
        assert_eq!((a.heartbeat, a.health), (None, None), "no heartbeat yet, not one 4 minutes old");
        // The gate, 10 s after the start: waiting for the first heartbeat, not failed for one
        // 4 minutes old (which rolled back a reinstall and marked a good revision Bad).
        let mut view = node_view(&n, &[&pod], Some(&lease), Some(&status));
        view.ready = true;
        let gate = vigil_crds::rollout::HealthGate::default();
        let (admitted, now) = ("2026-01-05T00:04:59Z".parse().unwrap(), "2026-01-05T00:05:10Z".parse().unwrap());
        assert_eq!(
            crate::gate::judge(&view, "r-aaaaaaaaaa", &gate, admitted, now),
            crate::gate::NodeHealth::Pending("no heartbeat yet".into())
        );
        // Once the new agent renews and reports, it counts.
        let (lease, status) = evidence("2026-01-05T00:05:02.000000Z");
        let a = node_view(&n, &[&pod], Some(&lease), Some(&status)).agent.unwrap();
        assert_eq!(a.heartbeat, Some("2026-01-05T00:05:02Z".parse().unwrap()));
        assert_eq!(a.health, Some(vigil_crds::AgentHealth::Healthy));
    }

    #[test]
    fn a_node_without_pod_or_labels_has_no_agent_and_no_revision() {
        let n: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "bare"}})).unwrap();
        let v = node_view(&n, &[], None, None);
        assert_eq!(v.revision, None);
        assert!(v.agent.is_none());
        assert!(!v.ready);
        assert_eq!(v.ready_changed_at, None);
    }

    #[test]
    fn trimmed_objects_give_the_planner_the_same_view_in_far_fewer_bytes() {
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
        let before = node_views([&node], [&pod], [&lease], [&status]);
        let (mut n, mut p, mut l, mut s) = (node.clone(), pod.clone(), lease.clone(), status.clone());
        trim_node(&mut n);
        trim_pod(&mut p);
        trim_lease(&mut l);
        trim_agent_status(&mut s);
        assert_eq!(node_views([&n], [&p], [&l], [&s]), before, "the planner sees the same");
        let size = |v: &dyn erased::Size| v.bytes();
        assert!(size(&n) * 5 < size(&node), "{} → {} bytes", size(&node), size(&n));
        assert!(size(&p) < size(&pod) && size(&s) < size(&status));
    }

    mod erased {
        pub trait Size {
            fn bytes(&self) -> usize;
        }
        impl<T: serde::Serialize> Size for T {
            fn bytes(&self) -> usize {
                serde_json::to_vec(self).map(|v| v.len()).unwrap_or(0)
            }
        }
    }
}
