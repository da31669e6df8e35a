//! Label and annotation keys shared by the operator, the agent and the chart.
//!
//! All keys live under `vigil.dev/`. The operator is the only writer of the
//! node labels below; the agent only reads them.

/// The prefix of every Vigil label and annotation key.
pub const PREFIX: &str = "vigil.dev/";

/// Node label: the revision the node is admitted to run. The per-revision
/// DaemonSets select nodes on it, so moving a node is one label patch.
pub const REVISION: &str = "vigil.dev/revision";

/// Node labels `vigil.dev/run.<revision>=true`: which revisions' agents run on the node. The
/// per-revision DaemonSets select nodes on them. A node moving from revision A to B carries
/// both until B's agent has taken the node over (its heartbeat Lease names B), so the node is
/// never without a working agent; then A's goes (docs/adr/0005-zero-gap-handover.md).
pub const RUN_PREFIX: &str = "vigil.dev/run.";

/// The value of a [`RUN_PREFIX`] label.
pub const RUN_VALUE: &str = "true";

/// The run label of `revision`.
pub fn run_label(revision: &str) -> String {
    format!("{RUN_PREFIX}{revision}")
}

/// The revision a label key names when it is a run label.
pub fn run_revision(key: &str) -> Option<&str> {
    key.strip_prefix(RUN_PREFIX).filter(|r| !r.is_empty())
}

/// The revisions whose agents a node runs: its run labels, and its revision label (which an
/// agent of a DaemonSet written before run labels selects on).
pub fn running_revisions(node_labels: &(impl crate::selector::LabelSet + ?Sized)) -> impl Iterator<Item = &str> {
    node_labels.pairs().filter_map(|(k, v)| if k == REVISION { Some(v) } else { run_revision(k) })
}

/// Node label: the rollout (`<namespace>.<name>`) that manages the node.
pub const ROLLOUT: &str = "vigil.dev/rollout";

/// The value of the [`ROLLOUT`] node label for the rollout `namespace/name`:
/// `<namespace>.<name>`, or, when that is longer than a label value may be (63), its first
/// 52 characters, `-` and 10 hex characters of its SHA-256, so every rollout has its own.
pub fn rollout_label_value(namespace: &str, name: &str) -> String {
    let full = format!("{namespace}.{name}");
    if full.len() <= 63 {
        return full;
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(full.as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    // Namespaces and names are ASCII (DNS labels and subdomains), so any byte is a boundary.
    let head = full[..52].trim_end_matches(['.', '-']);
    format!("{head}-{hex}")
}

/// Annotation on the DaemonSets and config snapshots the operator writes: the
/// `<namespace>/<name>` of the AgentRollout that writes them, whatever its deletion policy
/// (an orphaned DaemonSet has no owner reference, and a rollout of that name adopts it).
pub const OWNER_ROLLOUT: &str = "vigil.dev/owner-rollout";

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

/// Annotation on agent pods: the trace id of the rollout that started their revision
/// (`vigil_crds::trace`); the agent reads it from its pod and sends its start-up as a span of
/// that trace.
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

/// The node labels the operator writes besides the run labels ([`run_label`]).
pub const NODE_LABELS: [&str; 3] = [REVISION, ROLLOUT, PINNED];

/// Whether `key` is a node label or annotation the operator writes: [`NODE_LABELS`], the run
/// labels and [`ADMITTED_AT`].
pub fn written_on_nodes(key: &str) -> bool {
    NODE_LABELS.contains(&key) || key == ADMITTED_AT || run_revision(key).is_some()
}

/// The operator's pods (the chart's Deployment `vigil-operator`).
pub const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=vigil-operator";

/// The ConfigMap (in the operator's namespace) holding the operator's leader record; the
/// chart grants `get` and `update` on it by this name.
pub const LEADER_RECORD: &str = "vigil-operator-leader";

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
            OWNER_ROLLOUT,
        ] {
            let (prefix, name) = key.split_once('/').expect("prefixed key");
            assert_eq!(prefix, crate::GROUP, "{key}");
            assert!(!name.is_empty() && name.len() <= 63, "{key}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "{key}");
        }
    }

    #[test]
    fn run_labels_name_their_revision_and_are_valid_keys() {
        let k = run_label("r-0123456789");
        assert_eq!(run_revision(&k), Some("r-0123456789"));
        assert_eq!(run_revision(REVISION), None);
        assert_eq!(run_revision(RUN_PREFIX), None);
        let (prefix, name) = k.split_once('/').unwrap();
        assert_eq!(prefix, crate::GROUP);
        assert!(name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
    }

    #[test]
    fn rollout_label_values_are_valid_and_distinct_however_long_the_names() {
        let short = rollout_label_value("vigil-system", "fleet");
        assert_eq!(short, "vigil-system.fleet");
        let long_ns = "n".repeat(63);
        let a = rollout_label_value(&long_ns, &"a".repeat(200));
        let b = rollout_label_value(&long_ns, &format!("{}b", "a".repeat(199)));
        assert_ne!(a, b, "names that differ only past the cut still differ");
        for v in [&short, &a, &b, &rollout_label_value("ns", &"x".repeat(61))] {
            assert!(v.len() <= 63, "{v}");
            let ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
            assert!(v.chars().all(ok), "{v}");
            assert!(v.starts_with(|c: char| c.is_ascii_alphanumeric()), "{v}");
            assert!(v.ends_with(|c: char| c.is_ascii_alphanumeric()), "{v}");
        }
        assert_eq!(rollout_label_value("ns", &"x".repeat(60)).len(), 63, "63 fits as it is");
    }
}
