//! What the planner sees and what it decides: plain data, no client types.

use std::time::Duration;

use jiff::Timestamp;
use vigil_crds::AgentHealth;

/// The attributes a failing node group is recognised by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeAttributes {
    /// `status.nodeInfo.osImage`.
    pub os_image: String,
    /// `status.nodeInfo.kernelVersion`.
    pub kernel: String,
    /// `status.nodeInfo.architecture`.
    pub arch: String,
    /// `status.nodeInfo.operatingSystem`.
    pub os: String,
    /// `node.kubernetes.io/instance-type`.
    pub instance_type: String,
    /// `topology.kubernetes.io/zone`.
    pub zone: String,
}

impl NodeAttributes {
    /// (key, value) pairs in the order failing groups are attributed.
    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            ("osImage", &self.os_image),
            ("kernel", &self.kernel),
            ("instanceType", &self.instance_type),
            ("zone", &self.zone),
            ("arch", &self.arch),
        ]
    }

    /// The value of an attribute key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs().into_iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// The agent pod on a node, as the kubelet, the agent's Lease and its AgentStatus report it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentView {
    /// The revision the pod runs.
    pub revision: String,
    /// Pod Ready condition.
    pub ready: bool,
    /// Container restarts.
    pub restarts: u32,
    /// Why the container waits (`CrashLoopBackOff`, `ImagePullBackOff`, `ErrImagePull`…).
    pub waiting_reason: Option<String>,
    /// Why it last terminated (`OOMKilled`, `Error`…).
    pub last_termination_reason: Option<String>,
    /// Last renewal of the agent's heartbeat Lease.
    pub heartbeat: Option<Timestamp>,
    /// The agent's own verdict from AgentStatus.
    pub health: Option<AgentHealth>,
    /// When the agent container last started.
    pub started_at: Option<Timestamp>,
    /// When the pod was created (`None`: unknown, judged as new). A pod older than the node's
    /// turn (adopted from an earlier install, or kept by a retry) shows restarts that were not
    /// this admission's.
    pub created_at: Option<Timestamp>,
}

/// One node as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Node labels (for pins and the operator's own labels), shared with the store.
    pub labels: crate::facts::Labels,
    /// Attributes for the compatibility guard and failure attribution.
    pub attributes: NodeAttributes,
    /// The revision the node is admitted to (its `vigil.dev/revision` label).
    pub revision: Option<String>,
    /// When the node was admitted to that revision (its `vigil.dev/admitted-at` annotation,
    /// written with the label); the health gate judges the node from then.
    pub admitted_at: Option<Timestamp>,
    /// The node's Ready condition.
    pub ready: bool,
    /// When the node entered its current Ready state (its Ready condition's last
    /// transition): since when it has been NotReady, or since when it has been back.
    pub ready_changed_at: Option<Timestamp>,
    /// The agent pod on the node, if any.
    pub agent: Option<AgentView>,
}

/// Everything observed for one reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The nodes the rollout selects.
    pub nodes: Vec<NodeView>,
    /// SHA-256 of the target config as read from its ConfigMap; `None` when it could not be
    /// read (missing ConfigMap or key).
    pub config_sha256: Option<String>,
    /// Why the agent would refuse the target config, in `vigil-agent check-config`'s words
    /// (file, key and line): the same checks, from `vigil-agent-config`. `None` when it
    /// passes or could not be read.
    pub config_error: Option<String>,
    /// Value of the spec's Prometheus gate query, when it has one and it answered.
    pub prometheus_value: Option<f64>,
    /// Why the Prometheus gate query has no value (unreachable, refused, no series).
    pub prometheus_error: Option<String>,
    /// The operator's immutable copy of the target's config, when it holds one (then
    /// `config_sha256` is that copy's hash, and the rollout's ConfigMap is not read).
    pub config_snapshot: Option<String>,
    /// What names a revision besides image and config: the id of the pod template the
    /// operator writes (`AgentTemplate::id`) and the rollout (`controller::revision_scope`);
    /// empty in the simulator.
    pub pod_template: String,
}

/// A label change the planner asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// Node name.
    pub node: String,
    /// Revision before (its current label).
    pub from: Option<String>,
    /// Revision after; `None` removes the label (no agent on the node).
    pub to: Option<String>,
    /// The pin holding the node, for the `vigil.dev/pinned` label.
    pub pin: Option<String>,
}

/// What the planner decided, in words for a person and as a kind for metrics and events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The kind: a small fixed set, the Event reason and the metric label.
    pub kind: DecisionKind,
    /// Why.
    pub reason: String,
}

/// The kinds of decision. Their names ([`DecisionKind::as_str`]) are the Event reasons, the
/// `Progressing` condition's reason and the `vigil_operator_decisions_total` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DecisionKind {
    /// Nodes admitted to the target (a wave starts or grows).
    Admit,
    /// The current wave is healthy; its bake time runs.
    Bake,
    /// A wave passed its gate and bake time; the next one starts.
    Advance,
    /// The wave waits: nodes still starting, or too few to judge.
    Hold,
    /// Paused: by `spec.paused`, or by the `Pause` failure policy.
    Pause,
    /// `spec.frozen`: nothing changes, not even a rollback.
    Freeze,
    /// The target failed its gate: every node goes back to the stable revision.
    RollBack,
    /// The nodes of one failing node group are pinned where they were.
    PinGroup,
    /// The target runs on every eligible node.
    Complete,
    /// Nodes get a revision already proven Good.
    Join,
    /// Nodes fail on a revision proven Good: the node, not the revision.
    NodeProblem,
    /// The rollout cannot go on (a wrong target, an action that cannot be carried out).
    Fail,
    /// Outside every maintenance window.
    Wait,
    /// The target config would not start an agent; no node is admitted to it.
    ConfigInvalid,
}

impl DecisionKind {
    /// Every kind, in declaration order.
    pub const ALL: [DecisionKind; 14] = [
        Self::Admit,
        Self::Bake,
        Self::Advance,
        Self::Hold,
        Self::Pause,
        Self::Freeze,
        Self::RollBack,
        Self::PinGroup,
        Self::Complete,
        Self::Join,
        Self::NodeProblem,
        Self::Fail,
        Self::Wait,
        Self::ConfigInvalid,
    ];

    /// Its name, as Events, conditions and metrics carry it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admit => "Admit",
            Self::Bake => "Bake",
            Self::Advance => "Advance",
            Self::Hold => "Hold",
            Self::Pause => "Pause",
            Self::Freeze => "Freeze",
            Self::RollBack => "RollBack",
            Self::PinGroup => "PinGroup",
            Self::Complete => "Complete",
            Self::Join => "Join",
            Self::NodeProblem => "NodeProblem",
            Self::Fail => "Fail",
            Self::Wait => "Wait",
            Self::ConfigInvalid => "ConfigInvalid",
        }
    }

    /// Whether a person should look: its Event is a Warning.
    pub const fn is_warning(self) -> bool {
        matches!(self, Self::RollBack | Self::PinGroup | Self::Fail | Self::NodeProblem | Self::ConfigInvalid)
    }
}

impl std::fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for DecisionKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The result of one planning step.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Label changes, in the order to apply them.
    pub moves: Vec<Move>,
    /// The status to write.
    pub status: vigil_crds::AgentRolloutStatus,
    /// The decision.
    pub decision: Decision,
    /// When to plan again at the latest.
    pub requeue_after: Duration,
}

/// Settings of the planner that are not in the spec.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Most label changes in one plan (the API write budget of a reconcile; the operator
    /// writes them `vigil_operator::act::NODE_WRITES_AT_ONCE` at a time).
    pub max_moves: usize,
}

impl Default for Limits {
    /// 200: a wave of 3,750 nodes (the last of 5,000) is admitted in 19 reconciles.
    fn default() -> Self {
        Self { max_moves: 200 }
    }
}
