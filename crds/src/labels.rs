//! Label and annotation keys shared by the operator, the agent and the chart.
//!
//! All keys live under `vigil.dev/`. The operator is the only writer of the
//! node labels below; the agent only reads them.

/// Node label: the revision the node is admitted to run. The per-revision
/// DaemonSets select nodes on it, so moving a node is one label patch.
pub const REVISION: &str = "vigil.dev/revision";

/// Node label: the rollout (`<namespace>.<name>`) that manages the node.
pub const ROLLOUT: &str = "vigil.dev/rollout";

/// Node label: present while a pin holds the node; its value is the pin name.
pub const PINNED: &str = "vigil.dev/pinned";

/// Node annotation: when the node was admitted to its `vigil.dev/revision` (RFC 3339),
/// written with the label. The health gate judges each node from its own admission.
pub const ADMITTED_AT: &str = "vigil.dev/admitted-at";

/// Annotation on the DaemonSets the operator writes: the SHA-256 of the spec it wants them
/// to have; the operator writes a DaemonSet again only when this changes.
pub const DESIRED_SHA256: &str = "vigil.dev/desired-sha256";

/// Label on every object the operator creates, naming the component.
pub const COMPONENT: &str = "vigil.dev/component";

/// Annotation on agent pods and DaemonSets: the SHA-256 of the agent config
/// the revision carries, checked again by the agent when it loads the config.
pub const CONFIG_SHA256: &str = "vigil.dev/config-sha256";

/// Annotation on agent pods: the trace id of the rollout that started them,
/// so an agent restart can be linked to the rollout trace.
pub const ROLLOUT_TRACE_ID: &str = "vigil.dev/rollout-trace-id";

/// Secret label, value `"true"`: the Secret's owner lets AlertPolicies of its namespace use
/// its keys (the operator mirrors them to the agents). Without it a policy could send any
/// Secret of its namespace to a URL of its choosing (a Telegram `apiUrl`, an Alertmanager
/// bearer token), so the operator refuses.
pub const ALERTING_SECRET: &str = "vigil.dev/alerting";

/// Standard label naming the managing application.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// The value of [`MANAGED_BY`] on everything the operator writes.
pub const MANAGER: &str = "vigil-operator";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vigil_key_is_a_valid_qualified_label_name() {
        for key in [
            REVISION,
            ROLLOUT,
            PINNED,
            ADMITTED_AT,
            DESIRED_SHA256,
            COMPONENT,
            CONFIG_SHA256,
            ROLLOUT_TRACE_ID,
            ALERTING_SECRET,
        ] {
            let (prefix, name) = key.split_once('/').expect("prefixed key");
            assert_eq!(prefix, crate::GROUP, "{key}");
            assert!(!name.is_empty() && name.len() <= 63, "{key}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "{key}");
        }
    }
}
