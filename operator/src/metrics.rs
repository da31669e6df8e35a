//! The operator's Prometheus metrics. Labels come from small fixed sets (`result`, `kind`,
//! `phase`) or from the rollouts and revisions that exist, never from error text.

use std::fmt;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use vigil_crds::rollout::{AgentRolloutStatus, RolloutPhase};

/// `result` of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// `verb` of a request to the API server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// [`verb`] of the request.
    pub verb: &'static str,
}

/// The verb of a request to the API server, from its method and query: `watch` (a GET with
/// `watch=true` or `watch=1`), `get` (reads and lists), `create`, `patch`, `update`, `delete`.
pub fn verb(method: &http::Method, query: Option<&str>) -> &'static str {
    let watching = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    match *method {
        http::Method::GET if watching => "watch",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PATCH => "patch",
        http::Method::PUT => "update",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// `kind` of a reconcile error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `Error::kind()`.
    pub kind: &'static str,
}

/// Nodes of one rollout on one revision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    /// `namespace/name`.
    pub rollout: String,
    /// Revision name.
    pub revision: String,
}

/// One rollout.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    /// `namespace/name`.
    pub rollout: String,
}

/// One rollout's phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `namespace/name`.
    pub rollout: String,
    /// Phase name.
    pub phase: &'static str,
}

/// A node whose agent is silent, and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SilentLabels {
    /// The node.
    pub node: String,
    /// `NoHeartbeat` or `HeartbeatMissing`.
    pub reason: &'static str,
}

/// A node changing revision: admitted to `to` while the agent of `from` still runs there.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangingLabels {
    /// The node.
    pub node: String,
    /// The revision whose agent still runs (or holds the heartbeat Lease).
    pub from: String,
    /// The revision the node is admitted to.
    pub to: String,
}

/// AlertPolicies by publication state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyStateLabels {
    /// `published`, `invalid` or `secret_missing`.
    pub state: &'static str,
}

/// Every metric of the operator.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by result.
    pub reconciles: Family<ResultLabels, Counter>,
    /// Reconcile errors by kind.
    pub errors: Family<KindLabels, Counter>,
    /// Reconcile duration.
    pub duration: Histogram,
    /// Nodes per rollout and revision.
    pub nodes: Family<RevisionLabels, Gauge>,
    /// 1 for each rollout's current phase, 0 for the others.
    pub phase: Family<PhaseLabels, Gauge>,
    /// Nodes failing on a revision their rollout proved Good (node problems), per rollout.
    pub failing_nodes: Family<RolloutLabels, Gauge>,
    /// Decisions by kind.
    pub decisions: Family<KindLabels, Counter>,
    /// AlertPolicies by publication state.
    pub alert_policies: Family<PolicyStateLabels, Gauge>,
    /// Publications of AlertPolicies by result.
    pub publications: Family<ResultLabels, Counter>,
    /// Requests to the API server by verb (every one the operator sends, watches included).
    pub api_requests: Family<VerbLabels, Counter>,
    /// 1 per node whose agent is silent (AgentReporting Unknown); no series for the others.
    silent: Family<SilentLabels, Gauge>,
    /// The silent nodes last exported, so a node that reports again leaves the family.
    silent_reported: std::sync::Mutex<Vec<SilentLabels>>,
    /// 1 per node changing revision (a handover between two agents); no series for the others.
    changing: Family<ChangingLabels, Gauge>,
    /// The changing nodes last exported.
    changing_reported: std::sync::Mutex<Vec<ChangingLabels>>,
    /// The revisions last reported per rollout, so a revision that no node runs any more
    /// leaves the node gauge instead of staying at its last count.
    reported: std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>,
}

const PHASES: [(RolloutPhase, &str); 9] = [
    (RolloutPhase::Pending, "Pending"),
    (RolloutPhase::Progressing, "Progressing"),
    (RolloutPhase::Baking, "Baking"),
    (RolloutPhase::Paused, "Paused"),
    (RolloutPhase::Frozen, "Frozen"),
    (RolloutPhase::RollingBack, "RollingBack"),
    (RolloutPhase::RolledBack, "RolledBack"),
    (RolloutPhase::Completed, "Completed"),
    (RolloutPhase::Failed, "Failed"),
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            nodes: Family::default(),
            phase: Family::default(),
            failing_nodes: Family::default(),
            decisions: Family::default(),
            alert_policies: Family::default(),
            publications: Family::default(),
            api_requests: Family::default(),
            silent: Family::default(),
            silent_reported: std::sync::Mutex::default(),
            changing: Family::default(),
            changing_reported: std::sync::Mutex::default(),
            reported: std::sync::Mutex::default(),
        };
        registry.register("vigil_operator_reconciles", "Reconciles of AgentRollouts by result", m.reconciles.clone());
        registry.register("vigil_operator_reconcile_errors", "Failed reconciles by error kind", m.errors.clone());
        registry.register_with_unit(
            "vigil_operator_reconcile_duration",
            "Time one reconcile took",
            Unit::Seconds,
            m.duration.clone(),
        );
        registry.register(
            "vigil_operator_rollout_nodes",
            "Nodes admitted to each revision of each rollout",
            m.nodes.clone(),
        );
        registry.register("vigil_operator_rollout_phase", "1 for each rollout's current phase", m.phase.clone());
        registry.register(
            "vigil_operator_rollout_failing_nodes",
            "Nodes whose agent fails on a revision the rollout proved Good (a node problem)",
            m.failing_nodes.clone(),
        );
        registry.register("vigil_operator_decisions", "Planner decisions by kind", m.decisions.clone());
        registry.register(
            "vigil_operator_alert_policies",
            "AlertPolicies by publication state (published, invalid, secret_missing)",
            m.alert_policies.clone(),
        );
        registry.register(
            "vigil_operator_alert_policy_publications",
            "Publications of the AlertPolicies to the agents by result",
            m.publications.clone(),
        );
        registry.register(
            "vigil_operator_api_requests",
            "Requests the operator sent to the API server by verb (watch, get, create, patch, update, delete)",
            m.api_requests.clone(),
        );
        registry.register(
            "vigil_operator_agents_silent",
            "1 per node whose agent's heartbeat Lease is missing or stale (AgentReporting Unknown), by reason",
            m.silent.clone(),
        );
        registry.register(
            "vigil_operator_node_changing",
            "1 per node changing revision: admitted to `to` while the agent of `from` still runs or holds the heartbeat Lease (the alert rules keep quiet about its heartbeat meanwhile)",
            m.changing.clone(),
        );
        Self { registry, ..m }
    }
}

/// Sets `family` to 1 for exactly the label sets `now`: those exported last time (`reported`)
/// and not now leave the family.
fn export_exactly<L>(family: &Family<L, Gauge>, reported: &std::sync::Mutex<Vec<L>>, now: Vec<L>)
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    if let Ok(mut last) = reported.lock() {
        for gone in last.iter().filter(|l| !now.contains(l)) {
            family.remove(gone);
        }
        for l in &now {
            family.get_or_create(l).set(1);
        }
        *last = now;
    }
}

/// The operator's HTTP endpoint: `/metrics` (the text exposition of `metrics`), `/healthz`
/// and `/readyz`.
pub fn router(metrics: std::sync::Arc<Metrics>) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = metrics.clone();
                async move { m.encode().unwrap_or_default() }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(|| async { "ok\n" }))
}

impl Metrics {
    /// Records one reconcile: how long it took and whether it failed.
    pub fn observe_reconcile(&self, ok: bool, took: std::time::Duration) {
        self.duration.observe(took.as_secs_f64());
        self.reconciles.get_or_create(&ResultLabels { result: if ok { "ok" } else { "error" } }).inc();
    }

    /// Records a rollout's plan: the status it leads to and its decision.
    pub fn observe_plan(&self, rollout: &str, plan: &vigil_plan::Plan) {
        self.observe_status(rollout, &plan.status);
        self.decisions.get_or_create(&KindLabels { kind: plan.decision.kind.as_str() }).inc();
    }

    /// Records a rollout's status after a reconcile.
    pub fn observe_status(&self, rollout: &str, st: &AgentRolloutStatus) {
        let now: Vec<String> = st.revisions.iter().map(|r| r.revision.clone()).collect();
        if let Ok(mut reported) = self.reported.lock() {
            for gone in reported.get(rollout).into_iter().flatten().filter(|r| !now.contains(r)) {
                self.nodes.remove(&RevisionLabels { rollout: rollout.to_owned(), revision: gone.clone() });
            }
            reported.insert(rollout.to_owned(), now);
        }
        for r in &st.revisions {
            self.nodes
                .get_or_create(&RevisionLabels { rollout: rollout.to_owned(), revision: r.revision.clone() })
                .set(i64::from(r.nodes));
        }
        self.failing_nodes
            .get_or_create(&RolloutLabels { rollout: rollout.to_owned() })
            .set(i64::from(st.failing_node_count));
        for (p, name) in PHASES {
            let v = i64::from(st.phase == Some(p));
            self.phase.get_or_create(&PhaseLabels { rollout: rollout.to_owned(), phase: name }).set(v);
        }
    }

    /// Exports exactly `silent` (node → reason) as the silent agents.
    pub fn set_silent(&self, silent: &std::collections::BTreeMap<String, &'static str>) {
        let now = silent.iter().map(|(node, reason)| SilentLabels { node: node.clone(), reason }).collect();
        export_exactly(&self.silent, &self.silent_reported, now);
    }

    /// Exports exactly `changing` (node → (from, to)) as the nodes changing revision.
    pub fn set_changing(&self, changing: &std::collections::BTreeMap<String, (String, String)>) {
        let now = changing
            .iter()
            .map(|(node, (from, to))| ChangingLabels { node: node.clone(), from: from.clone(), to: to.clone() })
            .collect();
        export_exactly(&self.changing, &self.changing_reported, now);
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_crds::rollout::RevisionNodes;

    #[test]
    fn requests_are_counted_by_verb() {
        use http::Method;
        assert_eq!(verb(&Method::GET, Some("labelSelector=a&watch=true&resourceVersion=1")), "watch");
        assert_eq!(verb(&Method::GET, Some("watch=1")), "watch");
        assert_eq!(verb(&Method::GET, Some("watch=false")), "get");
        assert_eq!(verb(&Method::GET, None), "get");
        assert_eq!(verb(&Method::POST, None), "create");
        assert_eq!(verb(&Method::PATCH, Some("fieldManager=vigil-operator")), "patch");
        assert_eq!(verb(&Method::PUT, None), "update");
        assert_eq!(verb(&Method::DELETE, None), "delete");
        assert_eq!(verb(&Method::HEAD, None), "other");
    }

    #[test]
    fn status_becomes_node_and_phase_gauges() {
        let m = Metrics::default();
        let st = AgentRolloutStatus {
            phase: Some(RolloutPhase::Baking),
            revisions: vec![RevisionNodes { revision: "r-a".into(), nodes: 12, ready: 12, pinned: 0 }],
            ..Default::default()
        };
        m.observe_status("ns/r", &st);
        m.reconciles.get_or_create(&ResultLabels { result: "ok" }).inc();
        let text = m.encode().unwrap();
        assert!(text.contains("vigil_operator_rollout_nodes{rollout=\"ns/r\",revision=\"r-a\"} 12"), "{text}");
        assert!(text.contains("vigil_operator_rollout_phase{rollout=\"ns/r\",phase=\"Baking\"} 1"), "{text}");
        assert!(text.contains("vigil_operator_rollout_phase{rollout=\"ns/r\",phase=\"Completed\"} 0"), "{text}");
        assert!(text.contains("vigil_operator_reconciles_total{result=\"ok\"} 1"), "{text}");
        assert!(text.contains("vigil_operator_rollout_failing_nodes{rollout=\"ns/r\"} 0"), "{text}");
    }

    #[test]
    fn silent_agents_are_one_series_each_and_leave_when_they_report_again() {
        let m = Metrics::default();
        let mut silent = std::collections::BTreeMap::new();
        silent.insert("node-a".to_owned(), "HeartbeatMissing");
        silent.insert("node-b".to_owned(), "NoHeartbeat");
        m.set_silent(&silent);
        let text = m.encode().unwrap();
        assert!(text.contains("vigil_operator_agents_silent{node=\"node-a\",reason=\"HeartbeatMissing\"} 1"), "{text}");
        silent.remove("node-a");
        m.set_silent(&silent);
        let text = m.encode().unwrap();
        assert!(!text.contains("node=\"node-a\""), "{text}");
        assert!(text.contains("vigil_operator_agents_silent{node=\"node-b\",reason=\"NoHeartbeat\"} 1"), "{text}");
    }

    #[test]
    fn changing_nodes_are_one_series_each_and_leave_when_the_handover_ends() {
        let m = Metrics::default();
        let mut changing = std::collections::BTreeMap::new();
        changing.insert("node-a".to_owned(), ("r-old".to_owned(), "r-new".to_owned()));
        m.set_changing(&changing);
        let text = m.encode().unwrap();
        assert!(text.contains("vigil_operator_node_changing{node=\"node-a\",from=\"r-old\",to=\"r-new\"} 1"), "{text}");
        changing.clear();
        m.set_changing(&changing);
        assert!(!m.encode().unwrap().contains("node=\"node-a\""));
    }

    #[test]
    fn a_revision_no_node_runs_any_more_leaves_the_node_gauge() {
        let m = Metrics::default();
        let with = |revs: &[&str]| AgentRolloutStatus {
            revisions: revs
                .iter()
                .map(|r| RevisionNodes { revision: (*r).into(), nodes: 3, ready: 3, pinned: 0 })
                .collect(),
            ..Default::default()
        };
        m.observe_status("ns/r", &with(&["r-old", "r-new"]));
        m.observe_status("ns/r", &with(&["r-new"]));
        let text = m.encode().unwrap();
        assert!(text.contains("revision=\"r-new\"} 3"), "{text}");
        assert!(!text.contains("r-old"), "{text}");
    }
}
