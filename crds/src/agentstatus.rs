//! `AgentStatus`: one per node, named after it, written by that node's agent.
//!
//! The object is owned by its Node (an ownerReference the agent sets), so it
//! is garbage-collected with the node. The agent is the only writer of both
//! `spec` (set once at creation) and `status`; the operator only reads it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Identity of the node this record describes. Set once by the agent.
// Each printcolumn repeats `type_ = …`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vigil.dev",
    version = "v1alpha1",
    kind = "AgentStatus",
    plural = "agentstatuses",
    status = "AgentStatusStatus",
    shortname = "as",
    category = "vigil",
    doc = "What the Vigil agent on one node runs and sees; one per node, named after it, written by that node's agent.",
    derive = "PartialEq",
    cel,
    validation = Rule::new("self.metadata.name == self.spec.nodeName").message("an AgentStatus must be named after its node (metadata.name == spec.nodeName)").field_path(".spec.nodeName"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.agentVersion", description = "Agent version"),
    printcolumn(name = "Revision", type_ = "string", json_path = ".status.revision", description = "Revision the agent runs"),
    printcolumn(name = "Health", type_ = "string", json_path = ".status.health", description = "The agent's own health report"),
    printcolumn(name = "Sources", type_ = "string", json_path = ".status.sourcesSummary", description = "Event sources on, degraded and off"),
    printcolumn(name = "Alerts", type_ = "integer", json_path = ".status.activeAlerts", description = "Alerts firing on the node"),
    printcolumn(name = "Reporting", type_ = "string", json_path = ".status.conditions[?(@.type==\"AgentReporting\")].status", description = "True while the agent renews its heartbeat; Unknown once it went silent (written by the operator)"),
    printcolumn(name = "Last Report", type_ = "date", json_path = ".status.lastReportTime", description = "When the agent last wrote this status"),
    printcolumn(name = "Kernel", type_ = "string", json_path = ".status.kernel", priority = 1),
    printcolumn(name = "OS Image", type_ = "string", json_path = ".status.osImage", priority = 1),
    printcolumn(name = "Config", type_ = "string", json_path = ".status.configSha256", priority = 1)
)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatusSpec {
    /// The node this record describes; equal to metadata.name and immutable.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("nodeName is immutable"))]
    pub node_name: String,
}

/// What the agent on the node runs and sees. Written only by that agent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatusStatus {
    /// Agent version (`vigil-agent --version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Revision the agent runs (the `vigil.dev/revision` it was started for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Digest of the image the agent runs, as the kubelet reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// SHA-256 of the config the agent loaded and verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_sha256: Option<String>,
    /// Release channel of the revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Kernel release (`uname -r`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// OS image (PRETTY_NAME of the host's os-release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_image: Option<String>,
    /// CPU architecture (`amd64`, `arm64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// The agent's own verdict on itself.
    #[serde(default)]
    pub health: AgentHealth,
    /// Why the agent is not Healthy, in words for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// When the agent last wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_time: Option<Time>,
    /// Alerts firing on the node now.
    #[serde(default)]
    pub active_alerts: u32,
    /// Security events seen since the agent started.
    #[serde(default)]
    pub events_total: u64,
    /// Events and samples dropped since the agent started (rate limits, full queues). Never
    /// silent: each drop is counted here and in the agent's metrics by source.
    #[serde(default)]
    pub dropped_total: u64,
    /// Alerts and events waiting in the on-disk spool for a receiver.
    #[serde(default)]
    pub spooled: u64,
    /// Entries in the dead-letter spool (`vigil-agent dlq list`).
    #[serde(default)]
    pub dead_lettered: u64,
    /// The agent's resident memory, bytes.
    #[serde(default)]
    pub rss_bytes: u64,
    /// The agent's CPU use over the last report interval, millicores.
    #[serde(default)]
    pub cpu_millicores: u32,
    /// Each security event source: whether it works in this pod, how, and if not, why. An
    /// agent with a source off or degraded is Degraded, not Healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub sources: Vec<SourceReport>,
    /// The sources in one line for `kubectl get`, e.g. `6 on, 1 degraded (process), 1 off
    /// (kernel)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub sources_summary: Option<String>,
    /// Conditions. `AgentReporting` is the operator's: True while the agent renews its
    /// heartbeat Lease, Unknown once it is older than the heartbeat gap (the rest of this
    /// status is then what the agent last said).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The AgentStatus condition the operator writes: True while the node's agent renews its
/// heartbeat Lease, Unknown once the Lease is older than the heartbeat gap.
pub const REPORTING_CONDITION: &str = "AgentReporting";

/// What one security event source does on this node.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    /// The source: `kernel`, `process`, `file`, `auth`, `network` or `clock`.
    #[schemars(length(min = 1, max = 32))]
    pub name: String,
    /// `On`: it works as designed; `Degraded`: it works with less (polling instead of
    /// events, a fallback reader); `Off`: it collects nothing.
    pub state: SourceState,
    /// How it reads, e.g. `netlink`, `poll`, `kmsg`, `syslog`, `inotify`, `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub mode: Option<String>,
    /// Why it is degraded or off (the error and what grant it needs), or what it reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub reason: Option<String>,
}

/// Whether a source works.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceState {
    /// Works as designed.
    On,
    /// Works with less than designed (polling, a fallback reader).
    Degraded,
    /// Collects nothing.
    Off,
}

impl SourceState {
    /// The lowercase word for logs and summaries: `on`, `degraded`, `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Degraded => "degraded",
            Self::Off => "off",
        }
    }
}

/// The agent's verdict on itself.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AgentHealth {
    /// Every reader works and deliveries succeed.
    Healthy,
    /// Working with losses: a reader fails, drops occur or deliveries retry.
    Degraded,
    /// Not doing its job: config rejected, nothing collected, or deliveries failing.
    Unhealthy,
    /// Not reported yet.
    #[default]
    Unknown,
}
