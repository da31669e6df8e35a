//! `AlertPolicy`: the detection rules and alert routes the agents apply.
//!
//! People write `spec`; the operator validates it, compiles it for the agents
//! and writes `status`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::SecretKeySelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema, core::Duration};
use serde::{Deserialize, Serialize};

/// The ConfigMap (in the operator's namespace) holding every published AlertPolicy, one key
/// `<namespace>.<name>.yaml` each; the agents mount it at [`POLICIES_DIR`].
pub const POLICIES_CONFIGMAP: &str = "vigil-alert-policies";
/// The Secret (in the operator's namespace) mirroring the Secret keys the published policies
/// reference, one key [`mirrored_secret_key`] each; the agents mount it at [`SECRETS_DIR`].
pub const SECRETS_SECRET: &str = "vigil-alert-secrets";
/// Where the agents find the published policies.
pub const POLICIES_DIR: &str = "/etc/vigil/policies";
/// Where the agents find the mirrored Secret keys.
pub const SECRETS_DIR: &str = "/etc/vigil/secrets";

/// The key under which a policy's Secret key is mirrored: `<namespace>_<secret>_<key>`
/// (namespaces and Secret names hold no `_`, so it is unambiguous).
pub fn mirrored_secret_key(namespace: &str, secret: &str, key: &str) -> String {
    format!("{namespace}_{secret}_{key}")
}

/// The rules of `spec` that select a metric the agent does not export (or a label the metric
/// does not carry), or a counter with a detector that judges levels, checked against
/// [`crate::metrics`]: each with where it is (`spec.rules[2] (HighCpu).metric`) and why.
/// Empty when every rule can see data it can judge.
pub fn unknown_metrics(spec: &AlertPolicySpec) -> Vec<(String, crate::metrics::Unknown)> {
    let mut out = Vec::new();
    for (i, r) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}] ({})", r.name);
        if let Some(m) = &r.metric {
            match crate::metrics::check_selector(&m.name, m.labels.keys().map(String::as_str)) {
                Err(e) => out.push((format!("{at}.metric"), e)),
                Ok(family) if family.kind == crate::metrics::Kind::Counter => {
                    let d = &r.detector;
                    let level = [
                        (d.anomaly.is_some(), "anomaly"),
                        (d.z_score.is_some(), "zScore"),
                        (d.mad.is_some(), "mad"),
                        (d.ewma.is_some(), "ewma"),
                    ];
                    if let Some((_, detector)) = level.iter().find(|(set, _)| *set) {
                        out.push((
                            format!("{at}.detector"),
                            crate::metrics::Unknown::Counter { name: m.name.clone(), detector },
                        ));
                    }
                }
                Ok(_) => {}
            }
        }
        if let Some(c) = r.detector.trend.as_ref().and_then(|t| t.capacity_metric.as_deref())
            && let Err(e) = crate::metrics::check_selector(c, [])
        {
            out.push((format!("{at}.detector.trend.capacityMetric"), e));
        }
    }
    out
}

/// Detection rules and where their alerts go.
// Each printcolumn repeats `type_ = …`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vigil.dev",
    version = "v1alpha1",
    kind = "AlertPolicy",
    namespaced,
    status = "AlertPolicyStatus",
    shortname = "ap",
    category = "vigil",
    doc = "Detection rules and alert routes the Vigil agents apply on the selected nodes.",
    derive = "PartialEq",
    cel,
    printcolumn(
        name = "Rules",
        type_ = "integer",
        json_path = ".status.rules",
        description = "Rules compiled for the agents"
    ),
    printcolumn(name = "Routes", type_ = "integer", json_path = ".status.routes", description = "Alert routes"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the policy compiled"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.routes.all(r, r.receivers.all(n, self.receivers.exists(x, x.name == n)))").message("every receiver a route names must be defined in spec.receivers").field_path(".routes"))]
#[x_kube(validation = Rule::new("!has(self.fallbackReceiver) || self.receivers.exists(x, x.name == self.fallbackReceiver)").message("the fallback receiver must be defined in spec.receivers").field_path(".fallbackReceiver"))]
pub struct AlertPolicySpec {
    /// The nodes whose agents apply this policy. Omitted, every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// Detection rules.
    #[serde(default)]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(q, q.name == r.name))").message("rule names must be unique"))]
    pub rules: Vec<AlertRule>,

    /// Routes from alerts to receivers, tried in order; the first match wins unless it says
    /// `continue`.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub routes: Vec<AlertRoute>,

    /// Named receivers the routes send to.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(q, q.name == r.name))").message("receiver names must be unique"))]
    pub receivers: Vec<Receiver>,

    /// The receiver that gets what another receiver could not deliver (dead-lettered
    /// notifications) and the agent's own "delivery failing" alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub fallback_receiver: Option<String>,

    /// Silences: alerts matching every matcher of a silence are not sent between `startsAt` and
    /// `endsAt` (they are still evaluated, and resolve normally).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub silences: Vec<Silence>,
}

/// A silence: matching alerts are held back until it expires.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.matchers) >= 1").message("a silence needs at least one matcher").field_path(".matchers"))]
pub struct Silence {
    /// All must match for the silence to hold an alert back.
    #[schemars(length(max = 16))]
    pub matchers: Vec<Matcher>,
    /// When it starts (RFC 3339); omitted, at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When it expires (RFC 3339).
    pub ends_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// Why, and who asked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 1024))]
    pub comment: String,
}

/// One detection rule: what to watch, how to judge it, and how loud to be.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.metric) != has(self.event)").message("set exactly one of metric or event"))]
pub struct AlertRule {
    /// Rule name, unique in the policy; becomes the `alertname` label.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z][A-Za-z0-9_-]*$')").message("name must start with a letter and hold only letters, digits, '_' and '-'"))]
    pub name: String,

    /// A metric the agent collects, by its Prometheus name (`vigil_node_cpu_utilization_ratio`),
    /// optionally narrowed by labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricSelector>,

    /// A security event type the agent emits (`auth.ssh.failed`, `kernel.oom_kill`), optionally
    /// narrowed by detail fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventSelector>,

    /// How samples or events are judged.
    pub detector: DetectorSpec,

    /// How long the condition must hold before the alert fires (Go duration).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<Duration>,

    /// Severity label of the alert.
    #[serde(default)]
    pub severity: Severity,

    /// Extra labels on the alert (used for routing and grouping).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Annotations on the alert (`summary`, `runbook_url`…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Narrows the rule to some of the policy's nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
}

/// A metric series selector.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricSelector {
    /// Metric name as the agent exports it.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Label values the series must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A security event selector.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventSelector {
    /// Event type, e.g. `auth.ssh.failed`.
    #[schemars(length(min = 1, max = 128))]
    #[serde(rename = "type")]
    pub type_: String,
    /// Detail fields the event must carry with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// The detector of a rule: set exactly one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.anomaly), has(self.threshold), has(self.zScore), has(self.ewma), has(self.mad), has(self.trend), has(self.leak), has(self.rateOfChange), has(self.eventRate)].exists_one(x, x)").message("set exactly one detector: anomaly, threshold, zScore, ewma, mad, trend, leak, rateOfChange or eventRate"))]
pub struct DetectorSpec {
    /// The default for "tell me when this series does something unusual": a robust
    /// baseline that knows the hour of the day and week, re-learns level shifts (judging
    /// against both levels meanwhile), fires on a value unusual for its hour, on spikes
    /// coming more often than usual, and calibrates its limits on the series' own history
    /// (a burst that keeps recurring becomes normal), with one knob (`sensitivity`).
    /// `anomaly: {}` takes the default sensitivity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<AnomalyDetector>,
    /// Static threshold with hysteresis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<ThresholdDetector>,
    /// Z-score over a rolling window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z_score: Option<WindowDetector>,
    /// Exponentially weighted moving average with control limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ewma: Option<EwmaDetector>,
    /// Median and median absolute deviation, for heavy-tailed series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mad: Option<WindowDetector>,
    /// Time until a capacity is exhausted, from a linear fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend: Option<TrendDetector>,
    /// Monotonic growth of a process's memory or file descriptors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak: Option<LeakDetector>,
    /// Change per second beyond a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_of_change: Option<RateOfChangeDetector>,
    /// More than `count` matching events within `window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_rate: Option<EventRateDetector>,
}

/// The calibrated anomaly detector.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AnomalyDetector {
    /// How readily it fires: `low` (an excursion this series makes less than once in a
    /// million samples), `medium` (once in 100,000; the default) or `high` (once in 10,000).
    #[serde(default)]
    pub sensitivity: Sensitivity,
}

/// The sensitivity of the anomaly detector.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Only what this series does less than once in a million samples.
    Low,
    /// Less than once in 100,000 samples.
    #[default]
    Medium,
    /// Less than once in 10,000 samples.
    High,
}

impl Sensitivity {
    /// The probability per sample, under the series' own history, of a score past the limit.
    pub fn risk(self) -> f64 {
        match self {
            Self::Low => 1e-6,
            Self::Medium => 1e-5,
            Self::High => 1e-4,
        }
    }
}

/// Fires when the value crosses `above` (or `below`); clears only once it is back past the
/// threshold by `hysteresis`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.above) || has(self.below)").message("set above, below or both"))]
pub struct ThresholdDetector {
    /// Fire when the value is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Fire when the value is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// How far back the value must come before the alert resolves.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub hysteresis: f64,
}

/// A rolling-window detector (z-score or median/MAD).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxAge) || duration(self.maxAge) > duration('0s')").message("maxAge must be positive"))]
pub struct WindowDetector {
    /// Samples in the window: the baseline is the last `window` samples, whatever the
    /// sampling interval, so the detector works the same at 10 s, 1 min or 5 min cadence.
    #[schemars(range(min = 8, max = 10000))]
    pub window: u32,
    /// Deviations from the centre that fire.
    #[schemars(range(min = 0.5, max = 100.0))]
    pub threshold: f64,
    /// Oldest sample the window keeps, behind the newest (e.g. `1h`), for a baseline that must
    /// be recent; omitted, only `window` bounds it. Samples it drops count again towards the
    /// warm-up (a third of `window`, at least 8), during which the rule does not judge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}

/// EWMA with control limits.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EwmaDetector {
    /// Smoothing factor, 0 < alpha ≤ 1.
    #[schemars(range(min = 0.001, max = 1.0))]
    pub alpha: f64,
    /// Control limit width in standard deviations.
    #[schemars(range(min = 0.5, max = 100.0))]
    pub limit: f64,
}

/// Time until full.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.capacity) != has(self.capacityMetric)").message("set exactly one of capacity or capacityMetric"))]
pub struct TrendDetector {
    /// Span of samples the line is fitted over.
    pub window: Duration,
    /// Fire when the fitted line reaches the capacity within this horizon.
    pub horizon: Duration,
    /// A fixed capacity the series fills up to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<f64>,
    /// The metric holding each series' capacity, matched on the same labels
    /// (`vigil_node_filesystem_size_bytes` for `vigil_node_filesystem_used_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub capacity_metric: Option<String>,
}

/// Leak: monotonic growth with a good linear fit.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeakDetector {
    /// Span of samples considered.
    pub window: Duration,
    /// Lowest growth that counts, in units per minute (bytes for memory).
    #[schemars(range(min = 0.0))]
    pub min_growth_per_minute: f64,
    /// Lowest coefficient of determination of the fit, 0–1.
    #[serde(default = "default_min_r2")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_r2: f64,
}

/// Change per second beyond a limit.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateOfChangeDetector {
    /// Absolute change per second that fires.
    #[schemars(range(min = 0.0))]
    pub per_second: f64,
}

/// More than `count` events within `window`.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventRateDetector {
    /// Events allowed within the window; one more fires. 0 forwards every matching event as
    /// an alert that resolves once `window` passes without another.
    #[schemars(range(min = 0, max = 1000000))]
    pub count: u32,
    /// Sliding window.
    pub window: Duration,
    /// Count per value of this detail field (e.g. `source_ip` for brute force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
}

/// Alert severity.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record.
    Info,
    /// Needs a look during working hours.
    #[default]
    Warning,
    /// Wakes someone up.
    Critical,
}

/// A route from matching alerts to receivers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.receivers) && size(self.receivers) >= 1").message("a route needs at least one receiver").field_path(".receivers"))]
pub struct AlertRoute {
    /// Route name, for status and metrics.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,

    /// All must match for the route to take an alert. Empty matches every alert.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub matchers: Vec<Matcher>,

    /// Receivers (names from spec.receivers) that get the alerts.
    #[serde(default)]
    #[schemars(length(max = 8), inner(length(min = 1, max = 63)))]
    pub receivers: Vec<String>,

    /// Labels that group alerts into one notification (`alertname`, `node`…).
    #[serde(default = "default_group_by")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 128)))]
    pub group_by: Vec<String>,

    /// How long to wait after the first alert of a new group before sending it.
    #[serde(default = "default_group_wait")]
    pub group_wait: Duration,

    /// How long to wait before sending what changed in a group already sent.
    #[serde(default = "default_group_interval")]
    pub group_interval: Duration,

    /// How long before an unchanged, still-firing group is sent again.
    #[serde(default = "default_repeat_interval")]
    pub repeat_interval: Duration,

    /// Per-receiver rate limit; what it holds back is summarised as "N suppressed".
    #[serde(default)]
    pub rate_limit: RateLimit,

    /// Keep matching later routes after this one took the alert.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
}

/// A label matcher, as in Alertmanager.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    /// Label name.
    #[schemars(length(min = 1, max = 128))]
    pub label: String,
    /// Comparison.
    #[serde(default)]
    pub op: MatchOp,
    /// Value, or a RE2 regular expression anchored at both ends for `=~` and `!~`.
    #[schemars(length(max = 1024))]
    pub value: String,
}

/// Matcher comparison.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MatchOp {
    /// Equal.
    #[default]
    #[serde(rename = "=")]
    Eq,
    /// Not equal.
    #[serde(rename = "!=")]
    Ne,
    /// Matches the regular expression.
    #[serde(rename = "=~")]
    Re,
    /// Does not match the regular expression.
    #[serde(rename = "!~")]
    NotRe,
}

/// A limit on notifications per receiver.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Least time between two notifications of the same group.
    #[serde(default = "default_min_interval")]
    pub min_interval: Duration,
    /// Most notifications per hour to one receiver.
    #[serde(default = "default_max_per_hour")]
    #[schemars(range(min = 1, max = 3600))]
    pub max_per_hour: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { min_interval: default_min_interval(), max_per_hour: default_max_per_hour() }
    }
}

/// A named receiver: set exactly one kind.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.slack), has(self.discord), has(self.telegram), has(self.email), has(self.webhook), has(self.alertmanager)].exists_one(x, x)").message("set exactly one receiver kind: slack, discord, telegram, email, webhook or alertmanager"))]
pub struct Receiver {
    /// Receiver name, referenced by routes.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackReceiver>,
    /// Discord webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord: Option<DiscordReceiver>,
    /// Telegram bot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<TelegramReceiver>,
    /// E-mail over SMTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailReceiver>,
    /// Generic JSON webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookReceiver>,
    /// Prometheus Alertmanager v2 API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<AlertmanagerReceiver>,
}

/// Slack incoming webhook.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlackReceiver {
    /// Secret key holding the webhook URL.
    pub webhook_url: SecretKeySelector,
    /// Channel override (`#ops`); the webhook's own channel when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// Discord webhook.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiscordReceiver {
    /// Secret key holding the webhook URL.
    pub webhook_url: SecretKeySelector,
}

/// Telegram bot API.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TelegramReceiver {
    /// Secret key holding the bot token.
    pub bot_token: SecretKeySelector,
    /// Chat id (a number, or `@channelname`).
    #[schemars(length(min = 1, max = 64))]
    pub chat_id: String,
    /// Bot API base URL, for a self-hosted Bot API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// E-mail over SMTP.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmailReceiver {
    /// SMTP server, `host:port`.
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^[^\\\\s:]+:[0-9]{1,5}$')").message("smarthost must be host:port"))]
    pub smarthost: String,
    /// Sender address.
    #[schemars(length(min = 3, max = 256))]
    pub from: String,
    /// Recipient addresses.
    #[schemars(length(min = 1, max = 32))]
    pub to: Vec<String>,
    /// Require STARTTLS (default true); plain SMTP only when set to false.
    #[serde(default = "default_true")]
    pub require_tls: bool,
    /// SMTP user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Secret key holding the SMTP password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretKeySelector>,
    /// Secret key holding PEM certificates to trust for the server (a private CA); the public
    /// web roots otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<SecretKeySelector>,
}

/// Generic JSON webhook.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookReceiver {
    /// Secret key holding the URL (URLs often embed credentials).
    pub url: SecretKeySelector,
    /// Secret key holding a bearer token sent as `Authorization: Bearer …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretKeySelector>,
}

/// Prometheus Alertmanager, v2 API.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerReceiver {
    /// Base URLs of the Alertmanager replicas (`http://alertmanager.monitoring:9093`); every
    /// alert goes to each, as Prometheus does.
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(validation = Rule::new("self.all(u, u.matches('^https?://[^\\\\s/]+'))").message("every url must be an http:// or https:// URL"))]
    pub urls: Vec<String>,
    /// Secret key holding a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretKeySelector>,
}

/// What the operator made of the policy. Written only by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AlertPolicyStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Rules compiled for the agents.
    #[serde(default)]
    pub rules: u32,
    /// Routes compiled for the agents.
    #[serde(default)]
    pub routes: u32,
    /// Receivers compiled for the agents.
    #[serde(default)]
    pub receivers: u32,
    /// SHA-256 of the compiled policy the agents load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled_sha256: Option<String>,
    /// Ready (compiled and published), with the reason when not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

fn default_min_r2() -> f64 {
    0.9
}
fn default_true() -> bool {
    true
}
fn default_group_by() -> Vec<String> {
    vec!["alertname".into(), "node".into()]
}
fn default_group_wait() -> Duration {
    std::time::Duration::from_secs(30).into()
}
fn default_group_interval() -> Duration {
    std::time::Duration::from_secs(300).into()
}
fn default_repeat_interval() -> Duration {
    std::time::Duration::from_secs(4 * 3600).into()
}
fn default_min_interval() -> Duration {
    std::time::Duration::from_secs(300).into()
}
fn default_max_per_hour() -> u32 {
    20
}
