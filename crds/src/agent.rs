//! Names the operator and the agent must agree on: the agent pod's container, labels and
//! environment, and the heartbeat Lease. One place, so the two binaries cannot drift.

/// The agent container's name in every revision's DaemonSet.
pub const CONTAINER: &str = "agent";

/// The label every agent object carries (DaemonSets, pods, heartbeat Leases, the published
/// policies), and its value.
pub const NAME_LABEL: (&str, &str) = ("app.kubernetes.io/name", "vigil-agent");

/// [`NAME_LABEL`] as a label selector.
pub const SELECTOR: &str = "app.kubernetes.io/name=vigil-agent";

/// The agent pod's environment, set by the DaemonSet the operator writes.
pub mod env {
    /// The node the pod runs on (downward API `spec.nodeName`).
    pub const NODE_NAME: &str = "NODE_NAME";
    /// The pod's namespace (downward API `metadata.namespace`): where its Lease lives.
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// The SHA-256 of the config the revision carries; the agent checks the file against it.
    pub const CONFIG_SHA256: &str = "VIGIL_CONFIG_SHA256";
    /// The revision the pod was started for.
    pub const REVISION: &str = "VIGIL_REVISION";
    /// The rollout trace (32 hex digits) the agent's start-up span joins: the operator sets it
    /// in each revision's DaemonSet (beside the pod's `vigil.dev/rollout-trace-id` annotation);
    /// for agents deployed without the operator, whatever set them up may. Unset: the
    /// start-up joins no rollout trace.
    pub const ROLLOUT_TRACE_ID: &str = "VIGIL_ROLLOUT_TRACE_ID";
    /// Where the agent says it is the node's working agent ([`super::READY_FILE`] in a pod):
    /// it writes the file once it holds the node's lock with its sources started, and removes
    /// it when it stops or stands by. Unset: no such file.
    pub const READY_FILE: &str = "VIGIL_READY_FILE";
}

/// The agent's binary in its image.
pub const BINARY: &str = "/usr/local/bin/vigil-agent";

/// The directory (a memory-backed emptyDir of each pod) of [`READY_FILE`].
pub const RUN_DIR: &str = "/run/vigil";

/// The file whose presence makes an agent pod Ready (its readiness probe runs `vigil-agent
/// ready`): only the node's working agent has it, so during a handover the pod that stands by
/// is not Ready.
pub const READY_FILE: &str = "/run/vigil/ready";

/// The operator's immutable copy of a revision's agent config (in the agents' namespace):
/// the ConfigMap that revision's DaemonSet mounts, so editing or deleting the ConfigMap a
/// rollout named never changes a running or rollback revision.
pub fn config_snapshot_name(revision: &str) -> String {
    format!("vigil-agent-config-{revision}")
}

/// The key of the config in a [`config_snapshot_name`] ConfigMap.
pub const SNAPSHOT_KEY: &str = "agent.yaml";

/// The [`crate::labels::COMPONENT`] value of config snapshots.
pub const SNAPSHOT_COMPONENT: &str = "agent-config";

/// The label selector of config snapshots.
pub const SNAPSHOT_SELECTOR: &str = "app.kubernetes.io/managed-by=vigil-operator,vigil.dev/component=agent-config";

/// The heartbeat Lease of the agent on `node` (in the agents' namespace).
pub fn lease_name(node: &str) -> String {
    format!("{LEASE_PREFIX}{node}")
}

/// The node whose agent renews the heartbeat Lease `lease` (the inverse of [`lease_name`]).
pub fn lease_node(lease: &str) -> Option<&str> {
    lease.strip_prefix(LEASE_PREFIX)
}

const LEASE_PREFIX: &str = "vigil-agent-";

/// The Node conditions an agent sets on its own node (and no others: the chart's admission
/// policy lets an agent change only these, only on its node). The names are those
/// node-problem-detector uses where it has one, so remediation tooling that keys on them works.
pub const NODE_CONDITIONS: [&str; 10] = [
    "KernelDeadlock",
    "ReadonlyFilesystem",
    "FrequentOOMKills",
    "DiskIOErrors",
    "ClockUnsynchronized",
    "ConntrackFull",
    "FrequentUnregisterNetDevice",
    "FrequentKubeletRestart",
    "FrequentContainerdRestart",
    "KubeletUnhealthy",
];

/// The field manager of every write of the agent: its AgentStatus, its heartbeat Lease and its
/// Node's conditions.
pub const FIELD_MANAGER: &str = "vigil-agent";

/// The field manager of the agent's writes to its Node's conditions.
pub const NODE_CONDITIONS_MANAGER: &str = FIELD_MANAGER;

/// The agent's state directory on the host (log positions, the file baseline, the alert
/// spool, the node lock), mounted read-write from a hostPath of the same path.
pub const STATE_DIR: &str = "/var/lib/vigil-agent";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_is_the_label_and_lease_names_are_per_node() {
        assert_eq!(SELECTOR, format!("{}={}", NAME_LABEL.0, NAME_LABEL.1));
        assert_eq!(lease_name("node-a"), "vigil-agent-node-a");
        assert_eq!(lease_node(&lease_name("node-a")), Some("node-a"));
        assert_eq!(lease_node("kube-node-a"), None);
        assert_eq!(
            SNAPSHOT_SELECTOR,
            format!(
                "{}={},{}={SNAPSHOT_COMPONENT}",
                crate::labels::MANAGED_BY,
                crate::labels::MANAGER,
                crate::labels::COMPONENT
            )
        );
        assert!(config_snapshot_name("r-0123456789").len() <= 63);
    }
}
