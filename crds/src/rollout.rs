//! `AgentRollout`: move the agent to a new revision in waves, safely.
//!
//! The operator is the only writer of `status`; people and GitOps write `spec`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema, core::Duration};
use serde::{Deserialize, Serialize};

/// Desired state of an agent rollout: which revision, to which nodes, how fast,
/// and what to do when a wave goes bad.
// Each printcolumn repeats `type_ = …`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vigil.dev",
    version = "v1alpha1",
    kind = "AgentRollout",
    namespaced,
    status = "AgentRolloutStatus",
    shortname = "ar",
    category = "vigil",
    doc = "Moves the Vigil agent to a new revision (image by digest, config by SHA-256) in waves, gated on health, with pins and automatic rollback.",
    derive = "PartialEq",
    cel,
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the rollout stands"
    ),
    printcolumn(
        name = "Wave",
        type_ = "integer",
        json_path = ".status.currentWave",
        description = "The wave being rolled out or baked (1-based)"
    ),
    printcolumn(
        name = "Updated",
        type_ = "string",
        json_path = ".status.progress",
        description = "Nodes on the target revision / nodes selected"
    ),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".status.targetRevision",
        description = "The revision being rolled out"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        description = "Why the operator made its last decision"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct AgentRolloutSpec {
    /// The agent revision to roll out: an image pinned by digest and a config pinned by SHA-256.
    pub target: AgentTarget,

    /// The nodes this rollout manages. Omitted, it selects every node. Two rollouts must
    /// select disjoint nodes; the operator refuses the second one on overlapping nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// The release channel of the target revision (alpha, beta, stable, lts). Informational
    /// for the planner; shown in AgentStatus and used to pick a rollout per node group.
    #[serde(default)]
    pub channel: Channel,

    /// The waves, cumulative: each says how many of the selected nodes run the target once the
    /// wave is done. Percent waves must be strictly increasing, count waves likewise, and the
    /// last wave must be `percent: 100`. Default 5% → 25% → 100%, 10 minutes bake time each.
    #[serde(default = "default_waves")]
    #[schemars(length(min = 1, max = 10))]
    #[x_kube(validation = Rule::new("has(self[size(self) - 1].percent) && self[size(self) - 1].percent == 100").message("the last wave must be percent: 100"))]
    #[x_kube(validation = Rule::new("self.filter(w, has(w.percent)).map(w, w.percent).isSorted() && self.filter(w, has(w.percent)).all(a, self.filter(w, has(w.percent)).exists_one(b, b.percent == a.percent))").message("percent waves must be strictly increasing"))]
    #[x_kube(validation = Rule::new("self.filter(w, has(w.count)).map(w, w.count).isSorted() && self.filter(w, has(w.count)).all(a, self.filter(w, has(w.count)).exists_one(b, b.count == a.count))").message("count waves must be strictly increasing"))]
    pub waves: Vec<Wave>,

    /// What must hold before a wave counts as healthy.
    #[serde(default)]
    pub health_gate: HealthGate,

    /// What to do when a wave fails its health gate: `Rollback` every node moved to the
    /// target back to the last good revision, `Pause` where it stands, or `PinFailingGroup`:
    /// pin the node group the failing nodes share (OS image, kernel, instance type, zone)
    /// to the last good revision and go on with the rest.
    #[serde(default)]
    pub failure_policy: FailurePolicy,

    /// Node groups held on a given revision whatever the target is. A pinned node never
    /// changes revision until its pin is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("pin names must be unique"))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.nodeSelector == p.nodeSelector))").message("two pins have the same nodeSelector"))]
    pub pins: Vec<Pin>,

    /// When the rollout may move nodes forward. Outside every window it holds; rollback is
    /// always allowed. Empty means at any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub maintenance_windows: Vec<MaintenanceWindow>,

    /// Nodes that fail this guard are never moved: they stay on their revision and are
    /// counted in status with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatibility: Option<CompatibilityGuard>,

    /// Stop admitting nodes to the target; health checks and rollback go on.
    #[serde(default)]
    pub paused: bool,

    /// Change nothing at all, not even a rollback: for incident response when a person
    /// must hold the fleet exactly as it is.
    #[serde(default)]
    pub frozen: bool,

    /// What deleting this AgentRollout does to the agents it runs. `Orphan` (the default):
    /// the agents keep running on their revisions, so a `kubectl delete` by mistake or a
    /// GitOps prune never removes monitoring from the fleet; an AgentRollout of the same name
    /// created later takes them back. `Delete`: the agents' DaemonSets go with the rollout
    /// (Kubernetes garbage collection), and the operator then clears the `vigil.dev/` node
    /// labels no agent needs any more. Deleting the namespace removes the DaemonSets in any
    /// case.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// A one-off request to the operator, carried out once per `id` (the operator records the
    /// last id it handled in status.handledAction): `Promote` ends the current wave's bake
    /// time now (its health gate must still pass), `Abort` rolls the target back to the
    /// stable revision and never admits it again, `Rollback` does the same to the revision
    /// named in `to` (a Good revision of status.history), `Retry` admits a target marked Bad
    /// again from wave 1 (once its cause is fixed). To resume after `paused`, set it false;
    /// after `frozen`, set it false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ManualAction>,
}

/// A one-off request to the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind == 'Rollback' || !has(self.to)").message("only Rollback takes a target revision in to").field_path(".to"))]
pub struct ManualAction {
    /// Identifies the request; a new id makes a new request (e.g. a timestamp or ticket).
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
    /// What to do.
    pub kind: ManualActionKind,
    /// With Rollback: the revision to go back to (from status.history); the stable revision
    /// when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub to: Option<String>,
}

/// The kinds of manual action.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManualActionKind {
    /// End the current wave's bake time now.
    Promote,
    /// Roll the target back to the stable revision and mark it bad.
    Abort,
    /// Roll back to a named Good revision (or the stable one) and mark the target bad.
    Rollback,
    /// Admit a target marked Bad again, from wave 1.
    Retry,
}

/// The revision to roll out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.allowTagReference || self.image.matches('^[^@\\\\s]+@sha256:[0-9a-f]{64}$')").message("image must be pinned by digest (name@sha256:<64 lowercase hex>); set allowTagReference: true to opt out").field_path(".image"))]
pub struct AgentTarget {
    /// The agent image, pinned by digest: `registry/repository[:tag]@sha256:<64 hex>`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Accept an image without a digest. A tag can move under a running rollout, so the
    /// revision would no longer say what runs; use only for development clusters.
    #[serde(default)]
    pub allow_tag_reference: bool,

    /// The agent config the revision carries.
    pub config: ConfigRef,

    /// The agent version the image carries (e.g. `1.10.0`), shown in status and used by pins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub version: Option<String>,
}

/// A ConfigMap key holding the agent config, pinned by the SHA-256 of its bytes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigRef {
    /// Name of the ConfigMap, in the rollout's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub config_map: String,

    /// Key inside the ConfigMap.
    #[serde(default = "default_config_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,

    /// SHA-256 of the key's bytes, 64 lowercase hex characters (`sha256sum agent.yaml`).
    /// The operator checks it before using the config and the agent checks it again when it
    /// loads it; a mismatch stops the rollout.
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-f]{64}$')").message("sha256 must be 64 lowercase hex characters"))]
    pub sha256: String,
}

/// Release channel of a revision.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Early builds for test fleets.
    Alpha,
    /// Release candidates.
    Beta,
    /// General availability.
    #[default]
    Stable,
    /// Long-term support.
    Lts,
}

/// One wave: how many of the selected nodes run the target once it is done, and how long
/// it must stay healthy before the next wave starts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.percent) != has(self.count)").message("set exactly one of percent or count"))]
pub struct Wave {
    /// Cumulative share of the selected nodes, 1–100, rounded up to at least one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub percent: Option<u32>,

    /// Cumulative number of the selected nodes (capped at the number selected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<u32>,

    /// How long the wave must stay healthy after its last node became ready before the next
    /// wave starts (Go duration, e.g. `10m`).
    #[serde(default = "default_bake_time")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('0s')").message("bakeTime must not be negative"))]
    pub bake_time: Duration,
}

/// What a wave must show before it counts as healthy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.heartbeatGap) > duration('0s') && duration(self.progressDeadline) > duration('0s')").message("heartbeatGap and progressDeadline must be positive"))]
pub struct HealthGate {
    /// Restarts of an agent pod on the target revision that fail its node.
    #[serde(default = "default_max_restarts")]
    #[schemars(range(min = 0, max = 100))]
    pub max_restarts: u32,

    /// The longest a node's heartbeat Lease may go unrenewed before the node fails. Time the
    /// node spent NotReady does not count: a node that was down gets a whole gap once it is back.
    #[serde(default = "default_heartbeat_gap")]
    pub heartbeat_gap: Duration,

    /// Nodes of a wave that may fail before the wave fails (0 means none). Nodes that were
    /// already unavailable before the wave started are not counted.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_failed_nodes: u32,

    /// How long a node may take to become healthy after it was admitted to the target
    /// (each node from its own admission, so a throttled, paused or windowed admission
    /// cannot fail a good revision) before it counts as failed. The deadline stands still
    /// while the node is NotReady and starts again, whole, when it is back: a node that was
    /// down (a reboot, a drain, a partition) never fails a revision for the time it was down.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: Duration,

    /// Admitted nodes that must be healthy for a wave to pass: a wave made only of nodes
    /// that were unavailable before it started tested nothing and holds until one is.
    #[serde(default = "default_min_healthy_nodes")]
    #[schemars(range(min = 0, max = 10000))]
    pub min_healthy_nodes: u32,

    /// Require the agent's own health report in AgentStatus to be Healthy.
    #[serde(default = "default_true")]
    pub require_agent_healthy: bool,

    /// An extra gate: a Prometheus query whose value must stay on the right side of a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusGate>,
}

impl Default for HealthGate {
    fn default() -> Self {
        Self {
            max_restarts: default_max_restarts(),
            heartbeat_gap: default_heartbeat_gap(),
            max_failed_nodes: 0,
            progress_deadline: default_progress_deadline(),
            min_healthy_nodes: default_min_healthy_nodes(),
            require_agent_healthy: true,
            prometheus: None,
        }
    }
}

/// A Prometheus instant query checked at the end of each wave's bake time.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusGate {
    /// Base URL of the Prometheus HTTP API (e.g. `http://prometheus.monitoring:9090`).
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+')").message("url must be an http:// or https:// URL"))]
    pub url: String,

    /// PromQL instant query returning one sample; `$rollout` and `$revision` are replaced.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,

    /// The wave fails when the value is above (or below, with `failBelow`) this threshold.
    pub threshold: f64,

    /// Fail when the value drops below the threshold instead of rising above it.
    #[serde(default)]
    pub fail_below: bool,
}

/// What to do when a wave fails its health gate.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Move every node that got the target back to the last good revision.
    #[default]
    Rollback,
    /// Stop where it stands and wait for a person.
    Pause,
    /// Pin the node group the failing nodes share to the last good revision; go on elsewhere.
    PinFailingGroup,
}

/// What deleting an AgentRollout does to its agents.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// The agents keep running; their DaemonSets carry no owner and stay.
    #[default]
    Orphan,
    /// The agents' DaemonSets are owned by the rollout and deleted with it.
    Delete,
}

/// A node group held on one revision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    /// Name of the pin, unique within the rollout; shown as the `vigil.dev/pinned` node label.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("name must be a DNS label (lowercase letters, digits, '-')"))]
    pub name: String,

    /// The nodes the pin holds.
    pub node_selector: LabelSelector,

    /// The revision to hold them on: a revision name from status.history (`r-3f9c2a1b0d`) or
    /// an agent version recorded there (`1.9.3`).
    #[schemars(length(min = 1, max = 63))]
    pub revision: String,

    /// Why the group is pinned; shown in status and events.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
}

/// A recurring time window in which the rollout may move nodes forward.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.start != self.end").message("start and end are equal; a window may cross midnight (start 22:00, end 04:00) but must not be empty").field_path(".end"))]
pub struct MaintenanceWindow {
    /// Days of the week the window opens on (in its time zone). Empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    #[x_kube(validation = Rule::new("self.all(d, self.exists_one(e, e == d))").message("days must not repeat"))]
    pub days: Vec<Weekday>,

    /// Opening time, `HH:MM` (24-hour).
    #[schemars(length(max = 5))]
    #[x_kube(validation = Rule::new("self.matches('^([01][0-9]|2[0-3]):[0-5][0-9]$')").message("start must be HH:MM, 00:00 to 23:59"))]
    pub start: String,

    /// Closing time, `HH:MM` (24-hour); earlier than start means the window crosses midnight.
    #[schemars(length(max = 5))]
    #[x_kube(validation = Rule::new("self.matches('^([01][0-9]|2[0-3]):[0-5][0-9]$')").message("end must be HH:MM, 00:00 to 23:59"))]
    pub end: String,

    /// IANA time zone of start and end, e.g. `Europe/Berlin`, `Asia/Seoul`, `UTC`.
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^(UTC|[A-Z][A-Za-z_+-]*(/[A-Za-z0-9_+-]+){1,2})$')").message("timeZone must be an IANA zone name such as Europe/Berlin or UTC"))]
    pub time_zone: String,
}

/// A day of the week.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// Which nodes may run the target at all. Every list is an allow-list; empty allows all.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CompatibilityGuard {
    /// Lowest kernel release, `MAJOR.MINOR[.PATCH]` (compared numerically, e.g. `5.4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+\\\\.[0-9]+(\\\\.[0-9]+)?$')").message("minKernel must be MAJOR.MINOR[.PATCH], e.g. 5.4"))]
    pub min_kernel: Option<String>,

    /// Allowed operating systems as the Node reports them (`linux`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub operating_systems: Vec<String>,

    /// Allowed architectures as the Node reports them (`amd64`, `arm64`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub architectures: Vec<String>,

    /// Allowed OS images as glob patterns over the Node's osImage (`Ubuntu 22.04*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub os_images: Vec<String>,

    /// OS image glob patterns that are refused even when allowed above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub exclude_os_images: Vec<String>,
}

/// What the operator observed and decided. Written only by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentRolloutStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Where the rollout stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RolloutPhase>,

    /// The wave being rolled out or baked, 1-based; 0 before the first wave.
    #[serde(default)]
    pub current_wave: u32,

    /// The revision name of the target (see status.history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<String>,

    /// The last revision that passed every wave: what a rollback restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,

    /// When the current wave started admitting nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_started_at: Option<Time>,

    /// When every node of the current wave became healthy: its bake time runs from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_ready_at: Option<Time>,

    /// Node groups the operator pinned to the stable revision under the PinFailingGroup
    /// policy, with the attributes that identify them. Removed when the spec's target changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned_groups: Vec<PinnedGroup>,

    /// Nodes selected by the rollout.
    #[serde(default)]
    pub selected_nodes: u32,

    /// Selected nodes running the target revision and ready.
    #[serde(default)]
    pub updated_nodes: u32,

    /// `updated/selected`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,

    /// Nodes per revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<RevisionNodes>,

    /// Nodes excluded from the rollout, counted by reason (compatibility guard, pins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<ExcludedNodes>,

    /// Revisions this rollout has admitted, newest first, kept for rollback (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionRecord>,

    /// Why the operator made its last decision, in words for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// When the operator made its last decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision_time: Option<Time>,

    /// Nodes failing on a revision already proven Good (a node problem, not a reason to roll
    /// the fleet back): at most 20 named here, all counted in failingNodeCount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub failing_nodes: Vec<FailingNode>,

    /// How many nodes fail on a revision already proven Good.
    #[serde(default)]
    pub failing_node_count: u32,

    /// The id of the last spec.action the operator carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_action: Option<String>,

    /// OpenTelemetry trace id of this rollout (32 hex characters), to find it in a tracing backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,

    /// Progressing, Available, Degraded, Paused and RolledBack, each with its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A node whose agent fails on a revision already proven Good.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FailingNode {
    /// The node.
    #[schemars(length(max = 253))]
    pub name: String,
    /// Why its agent fails.
    #[schemars(length(max = 512))]
    pub reason: String,
}

/// Phase of a rollout.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutPhase {
    /// Accepted, no node moved yet.
    Pending,
    /// Nodes of the current wave are moving to the target.
    Progressing,
    /// The current wave is healthy and baking.
    Baking,
    /// Held by spec.paused, a maintenance window or the Pause failure policy.
    Paused,
    /// Held by spec.frozen: nothing changes.
    Frozen,
    /// Moving nodes back to the stable revision.
    RollingBack,
    /// Every affected node is back on the stable revision.
    RolledBack,
    /// Every selected, compatible, unpinned node runs the target.
    Completed,
    /// The rollout cannot go on (bad config hash, missing ConfigMap…); see reason.
    Failed,
}

/// A node group pinned by the operator: every node whose attributes match.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PinnedGroup {
    /// Name of the group (shown in the `vigil.dev/pinned` node label).
    pub name: String,
    /// Node attributes the failing nodes shared and healthy nodes lacked, e.g.
    /// `osImage: CentOS Linux 7 (Core)`. Keys: osImage, kernel, instanceType, zone, arch.
    pub attributes: BTreeMap<String, String>,
    /// The revision the group is held on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Why, in words for a person.
    pub reason: String,
}

/// Nodes on one revision.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RevisionNodes {
    /// Revision name.
    pub revision: String,
    /// Nodes admitted to this revision.
    pub nodes: u32,
    /// Of those, nodes whose agent is ready on it.
    pub ready: u32,
    /// Of those, nodes held here by a pin.
    #[serde(default)]
    pub pinned: u32,
}

/// Nodes excluded for one reason.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExcludedNodes {
    /// Why, e.g. `kernel 4.19 < minKernel 5.4` or `pinned by legacy-os`.
    pub reason: String,
    /// How many nodes.
    pub nodes: u32,
    /// Up to 10 of their names, for a first look.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

/// One revision the rollout admitted.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    /// Revision name (`r-` + 10 hex of SHA-256 over image and config hash).
    pub revision: String,
    /// Image reference.
    pub image: String,
    /// Config SHA-256.
    pub config_sha256: String,
    /// The ConfigMap the revision's config comes from (its DaemonSet mounts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// The key of that ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_key: Option<String>,
    /// The operator's immutable copy of the config (ConfigMap `vigil-agent-config-<revision>`,
    /// key `agent.yaml`), taken when the revision was first seen with a config that matched
    /// its SHA-256. The revision's DaemonSet mounts it, so later edits of `configMap` change
    /// nothing this revision runs. Absent on revisions recorded before snapshots existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_snapshot: Option<String>,
    /// Agent version, when the spec named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When the revision was first admitted to a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<Time>,
    /// How the revision fared.
    pub outcome: RevisionOutcome,
    /// Why, in words for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How a revision fared.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevisionOutcome {
    /// Being rolled out.
    InProgress,
    /// Passed every wave; a rollback target.
    Good,
    /// Failed a health gate; never admitted again until the spec changes.
    Bad,
    /// Replaced by a newer target before it finished.
    Superseded,
}

fn default_waves() -> Vec<Wave> {
    [5, 25, 100].into_iter().map(|p| Wave { percent: Some(p), count: None, bake_time: default_bake_time() }).collect()
}
fn default_bake_time() -> Duration {
    std::time::Duration::from_secs(600).into()
}
fn default_heartbeat_gap() -> Duration {
    std::time::Duration::from_secs(60).into()
}
fn default_progress_deadline() -> Duration {
    std::time::Duration::from_secs(1800).into()
}
fn default_max_restarts() -> u32 {
    2
}
fn default_true() -> bool {
    true
}
fn default_min_healthy_nodes() -> u32 {
    1
}
fn default_config_key() -> String {
    "agent.yaml".into()
}
fn default_time_zone() -> String {
    "UTC".into()
}

/// Label selectors are maps on the wire; keep a helper for tests and examples.
pub fn match_labels<const N: usize>(pairs: [(&str, &str); N]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect::<BTreeMap<_, _>>()),
        match_expressions: None,
    }
}
