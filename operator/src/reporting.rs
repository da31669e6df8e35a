//! The `AgentReporting` condition of every AgentStatus, as a node's `Ready` goes `Unknown` when
//! its kubelet falls silent: `True` while the agent renews its heartbeat Lease, `Unknown` once
//! the Lease is older than the heartbeat gap (or missing). The agent cannot say it stopped;
//! the operator says so for it.
//!
//! The operator owns only this entry of `status.conditions` (a map keyed by `type`, written by
//! server-side apply under its own field manager), so one writer per field still holds. It
//! reads the Leases and AgentStatuses from its watches and writes only on a transition: an
//! idle fleet costs no API write. [`changes`] is pure; [`run`] looks again at the next instant
//! a Lease can go stale, and at least every [`LOOK_EVERY`] for renewals.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use kube::Client;
use vigil_crds::agent::lease_node;
use vigil_plan::facts::{LeaseFacts, NodeFacts, StatusFacts};

use crate::kept::Kept;

/// The condition type.
pub use vigil_crds::agentstatus::REPORTING_CONDITION as CONDITION;

/// How long a heartbeat Lease may go unrenewed before the agent counts as silent (the
/// agent renews every 10 s; the rollout gate's default heartbeat gap).
pub const DEFAULT_GAP: Duration = Duration::from_secs(60);

/// The longest wait between two looks (a renewed Lease turns `Unknown` back to `True`).
pub const LOOK_EVERY: Duration = Duration::from_secs(5);

/// The condition for a node whose agent last renewed its Lease at `renewed`.
pub fn judge(node: &str, renewed: Option<Timestamp>, now: Timestamp, gap: Duration) -> (bool, &'static str, String) {
    let gap_s = SignedDuration::try_from(gap).unwrap_or(SignedDuration::MAX);
    match renewed {
        None => (
            false,
            "NoHeartbeat",
            format!(
                "no heartbeat Lease {} found: the agent is not running or cannot reach the API server",
                vigil_crds::agent::lease_name(node)
            ),
        ),
        Some(t) if now.duration_since(t) > gap_s => (
            false,
            "HeartbeatMissing",
            format!(
                "the agent's heartbeat Lease was last renewed at {t}, more than {}s before this look: the agent stopped or cannot reach the API server; this status is what it last said",
                gap.as_secs()
            ),
        ),
        Some(_) => (true, "HeartbeatRenewed", "the agent renews its heartbeat Lease".to_owned()),
    }
}

/// The latest renewal of each node's heartbeat Lease (`vigil-agent-<node>`, any namespace).
pub fn renewals(leases: &[std::sync::Arc<LeaseFacts>]) -> BTreeMap<String, Timestamp> {
    let mut out = BTreeMap::new();
    for l in leases {
        let Some(node) = lease_node(&l.name).map(str::to_owned) else { continue };
        let Some(t) = l.renewed_at.or(l.acquired_at) else {
            continue;
        };
        let e = out.entry(node).or_insert(t);
        *e = (*e).max(t);
    }
    out
}

/// The AgentReporting conditions to write (node, condition): only where status or reason
/// changed. Also the next instant a written `True` can turn `Unknown`.
pub fn changes(
    statuses: &[std::sync::Arc<StatusFacts>],
    renewed: &BTreeMap<String, Timestamp>,
    now: Timestamp,
    gap: Duration,
) -> (Vec<(String, Condition)>, Option<Timestamp>) {
    let gap_s = SignedDuration::try_from(gap).unwrap_or(SignedDuration::MAX);
    let mut out = Vec::new();
    let mut next: Option<Timestamp> = None;
    for s in statuses {
        let node = s.name.clone();
        // Only statuses the agent wrote: before its first report there is nothing to vouch for.
        if !s.reported {
            continue;
        }
        let last = renewed.get(&node).copied();
        let (on, reason, message) = judge(&node, last, now, gap);
        if on && let Some(t) = last {
            let stale_at = t + gap_s;
            next = Some(next.map_or(stale_at, |n| n.min(stale_at)));
        }
        let status = if on { "True" } else { "Unknown" };
        let current = s.reporting.as_ref();
        if current.is_some_and(|c| c.status == status && c.reason == reason) {
            continue;
        }
        out.push((
            node,
            Condition {
                type_: CONDITION.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message,
                observed_generation: s.generation,
                last_transition_time: Time(now),
            },
        ));
    }
    (out, next)
}

/// Every node whose agent is silent now (its AgentStatus exists and was written by the
/// agent, and its heartbeat Lease is missing or older than `gap`), with the reason
/// (`NoHeartbeat`, `HeartbeatMissing`): what `vigil_operator_agents_silent` exports.
pub fn silent(
    statuses: &[std::sync::Arc<StatusFacts>],
    renewed: &BTreeMap<String, Timestamp>,
    now: Timestamp,
    gap: Duration,
) -> BTreeMap<String, &'static str> {
    statuses
        .iter()
        .filter(|s| s.reported)
        .filter_map(|s| {
            let node = s.name.clone();
            let (on, reason, _) = judge(&node, renewed.get(&node).copied(), now, gap);
            (!on).then_some((node, reason))
        })
        .collect()
}

/// Every node changing revision now, with the revision it leaves and the one it is admitted
/// to: its `vigil.dev/revision` label names a revision while the agent of another still runs
/// there (a run label of that revision) or holds its heartbeat Lease (`holders`: node → the
/// revision the Lease names). What `vigil_operator_node_changing` exports; the handover ends
/// when the new agent holds the Lease and the operator takes the old run label off.
pub fn changing(
    nodes: &[std::sync::Arc<NodeFacts>],
    holders: &BTreeMap<String, String>,
) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for n in nodes {
        let (name, labels) = (n.name.as_str(), &n.labels);
        let Some(to) = labels.get(vigil_crds::labels::REVISION) else { continue };
        // The agents the node runs, as the operator reads them (its revision label among them).
        let other_run = vigil_crds::labels::running_revisions(labels).find(|r| *r != to);
        // A Lease naming the node itself was renewed by an agent written before revisions
        // were named there: it says nothing of a handover.
        let other_holder = holders.get(name).filter(|h| h.as_str() != to && h.as_str() != name);
        if let Some(from) = other_run.map(str::to_owned).or_else(|| other_holder.cloned()) {
            out.insert(name.to_owned(), (from, to.to_owned()));
        }
    }
    out
}

/// The revision each agent heartbeat Lease names (node → holder identity).
pub fn holders(leases: &[std::sync::Arc<LeaseFacts>]) -> BTreeMap<String, String> {
    leases.iter().filter_map(|l| Some((lease_node(&l.name)?.to_owned(), l.holder.as_deref()?.to_owned()))).collect()
}

/// The conditions to write as the operator's effects, one per node (each stands alone).
pub fn effects(todo: Vec<(String, Condition)>) -> Vec<crate::act::Effect> {
    todo.into_iter().map(|(node, c)| crate::act::Effect::AgentReporting { node, condition: Box::new(c) }).collect()
}

/// Keeps every AgentStatus's AgentReporting condition true to its agent's Lease, until the
/// process stops.
pub async fn run(
    client: Client,
    nodes: Kept<NodeFacts>,
    leases: Kept<LeaseFacts>,
    statuses: Kept<StatusFacts>,
    gap: Duration,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    clock: fn() -> Timestamp,
) {
    let writer = crate::act::Writer::new(client);
    // Nodes whose last write failed: said once, not at every look.
    let mut failing = std::collections::BTreeSet::new();
    loop {
        let now = clock();
        let (all, lease_state) = (statuses.state(), leases.state());
        let renewed = renewals(&lease_state);
        metrics.set_silent(&silent(&all, &renewed, now, gap));
        metrics.set_changing(&changing(&nodes.state(), &holders(&lease_state)));
        let (todo, next) = changes(&all, &renewed, now, gap);
        let said: Vec<(String, String, String)> =
            todo.iter().map(|(n, c)| (n.clone(), c.status.clone(), c.reason.clone())).collect();
        // A status deleted meanwhile, or a transient error: the next look tries again.
        let failed: std::collections::BTreeMap<String, crate::act::WriteError> =
            crate::act::apply_each(&writer, None, effects(todo), now)
                .await
                .into_iter()
                .filter_map(|e| match &e {
                    crate::act::WriteError::AgentStatus(node, _) => Some((node.clone(), e)),
                    _ => None,
                })
                .collect();
        for (node, status, reason) in said {
            match failed.get(&node) {
                None => {
                    failing.remove(&node);
                    tracing::info!(node = %node, %status, %reason, "agent reporting");
                }
                Some(e) => {
                    if failing.insert(node.clone()) {
                        let cause = std::error::Error::source(e).map(ToString::to_string).unwrap_or_default();
                        tracing::warn!(node = %node, error = %cause, "writing the AgentReporting condition failed; retrying at every look");
                    }
                }
            }
        }
        let until_next = next
            .map(|t| Duration::try_from(now.duration_until(t)).unwrap_or(Duration::ZERO))
            .unwrap_or(LOOK_EVERY)
            .min(LOOK_EVERY);
        // Just past the instant, so a Lease exactly at its gap is judged stale.
        tokio::time::sleep(until_next + Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::ResourceExt;
    use std::sync::Arc;
    use vigil_crds::AgentStatus;

    #[test]
    fn a_node_changes_revision_while_another_revisions_agent_runs_or_holds_its_lease() {
        let node = |name: &str, labels: &[(&str, &str)]| {
            let l: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            Arc::new(NodeFacts::from(&k8s_openapi::api::core::v1::Node {
                metadata: kube::api::ObjectMeta { name: Some(name.into()), labels: Some(l), ..Default::default() },
                ..Default::default()
            }))
        };
        let nodes = [
            // Admitted to r-new; the old agent still runs beside the new one.
            node(
                "a",
                &[("vigil.dev/revision", "r-new"), ("vigil.dev/run.r-old", "true"), ("vigil.dev/run.r-new", "true")],
            ),
            // The handover done: only r-new runs, and it holds the Lease.
            node("b", &[("vigil.dev/revision", "r-new"), ("vigil.dev/run.r-new", "true")]),
            // Admitted, run labels clean, but the Lease still names the old revision.
            node("c", &[("vigil.dev/revision", "r-new"), ("vigil.dev/run.r-new", "true")]),
            // An agent of an earlier version, whose Lease names the node: no handover.
            node("d", &[("vigil.dev/revision", "r-new")]),
            // Not Vigil's.
            node("e", &[]),
        ];
        let holders: BTreeMap<String, String> = [("a", "r-old"), ("b", "r-new"), ("c", "r-old"), ("d", "d")]
            .iter()
            .map(|(n, h)| ((*n).to_owned(), (*h).to_owned()))
            .collect();
        let got = changing(&nodes, &holders);
        let pair = |f: &str, t: &str| (f.to_owned(), t.to_owned());
        assert_eq!(
            got,
            BTreeMap::from([("a".to_owned(), pair("r-old", "r-new")), ("c".to_owned(), pair("r-old", "r-new"))])
        );
        let lease = |node: &str, holder: Option<&str>| {
            Arc::new(LeaseFacts::from(&Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(vigil_crds::agent::lease_name(node)),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                    holder_identity: holder.map(str::to_owned),
                    ..Default::default()
                }),
            }))
        };
        let h = super::holders(&[lease("a", Some("r-old")), lease("b", None)]);
        assert_eq!(h, BTreeMap::from([("a".to_owned(), "r-old".to_owned())]));
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn facts(s: AgentStatus) -> Arc<StatusFacts> {
        Arc::new(StatusFacts::from(&s))
    }

    fn status(node: &str, reporting: Option<(&str, &str)>) -> AgentStatus {
        let mut s = AgentStatus::new(node, vigil_crds::AgentStatusSpec { node_name: node.into() });
        let mut st = vigil_crds::AgentStatusStatus::default();
        if let Some((status, reason)) = reporting {
            st.conditions.push(Condition {
                type_: CONDITION.into(),
                status: status.into(),
                reason: reason.into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(t(0)),
            });
        }
        s.status = Some(st);
        s
    }

    fn lease(node: &str, ns: &str, renewed: i64) -> Arc<LeaseFacts> {
        let mut l = Lease::default();
        l.metadata.name = Some(vigil_crds::agent::lease_name(node));
        l.metadata.namespace = Some(ns.into());
        l.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            renew_time: Some(MicroTime(t(renewed))),
            ..Default::default()
        });
        Arc::new(LeaseFacts::from(&l))
    }

    #[test]
    fn a_renewed_lease_is_true_a_stale_or_missing_one_unknown() {
        let gap = Duration::from_secs(60);
        assert!(judge("n", Some(t(0)), t(60), gap).0, "exactly at the gap: still reporting");
        let (on, reason, message) = judge("n", Some(t(0)), t(61), gap);
        assert_eq!((on, reason), (false, "HeartbeatMissing"));
        assert!(message.contains("more than 60s"), "{message}");
        let (on, reason, message) = judge("n", None, t(0), gap);
        assert_eq!((on, reason), (false, "NoHeartbeat"));
        assert!(message.contains("vigil-agent-n"), "{message}");
    }

    #[test]
    fn only_transitions_are_written_and_the_next_look_is_the_first_lease_to_go_stale() {
        let gap = Duration::from_secs(60);
        let objects = [
            status("fresh", Some(("True", "HeartbeatRenewed"))),
            status("silent", Some(("True", "HeartbeatRenewed"))),
            status("new", None),
            status("back", Some(("Unknown", "HeartbeatMissing"))),
            status("gone", Some(("Unknown", "NoHeartbeat"))),
        ];
        let statuses: Vec<Arc<StatusFacts>> = objects.iter().cloned().map(facts).collect();
        // Two namespaces hold a Lease for `fresh`: the later renewal counts.
        let leases = vec![
            lease("fresh", "a", 50),
            lease("fresh", "b", 90),
            lease("silent", "a", 10),
            lease("new", "a", 80),
            lease("back", "a", 95),
        ];
        let (todo, next) = changes(&statuses, &renewals(&leases), t(100), gap);
        let got: Vec<(&str, &str, &str)> =
            todo.iter().map(|(n, c)| (n.as_str(), c.status.as_str(), c.reason.as_str())).collect();
        assert_eq!(
            got,
            [
                ("silent", "Unknown", "HeartbeatMissing"),
                ("new", "True", "HeartbeatRenewed"),
                ("back", "True", "HeartbeatRenewed")
            ]
        );
        assert!(todo.iter().all(|(_, c)| c.type_ == CONDITION && c.last_transition_time == Time(t(100))));
        assert_eq!(next, Some(t(140)), "`new`, renewed at 80, is the first that can go stale");
        // Nothing changed: nothing to write.
        let written: Vec<Arc<StatusFacts>> = objects
            .iter()
            .map(|s| {
                let mut s = s.clone();
                if let Some((_, c)) = todo.iter().find(|(n, _)| *n == s.name_any()) {
                    let st = s.status.as_mut().unwrap();
                    st.conditions.retain(|x| x.type_ != CONDITION);
                    st.conditions.push(c.clone());
                }
                facts(s)
            })
            .collect();
        assert!(changes(&written, &renewals(&leases), t(101), gap).0.is_empty());
    }

    #[test]
    fn the_silent_agents_are_every_stale_or_missing_lease_of_a_status_the_agent_wrote() {
        let statuses = vec![
            facts(status("fresh", Some(("True", "HeartbeatRenewed")))),
            facts(status("stale", Some(("True", "HeartbeatRenewed")))),
            facts(status("gone", None)),
            facts(AgentStatus::new("never", vigil_crds::AgentStatusSpec { node_name: "never".into() })),
        ];
        let renewed = renewals(&[lease("fresh", "vigil", 100), lease("stale", "vigil", 0)]);
        let s = silent(&statuses, &renewed, t(120), DEFAULT_GAP);
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            [("gone".to_owned(), "NoHeartbeat"), ("stale".to_owned(), "HeartbeatMissing")]
        );
    }

    #[test]
    fn a_status_the_agent_never_wrote_is_left_alone() {
        let bare = facts(AgentStatus::new("n", vigil_crds::AgentStatusSpec { node_name: "n".into() }));
        assert!(changes(&[bare], &BTreeMap::new(), t(0), DEFAULT_GAP).0.is_empty());
    }

    #[tokio::test]
    async fn the_condition_is_applied_alone_with_the_operators_field_manager() {
        use http::{Method, Request, Response};
        use kube::client::Body;
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::PATCH);
            let uri = req.uri().to_string();
            assert!(uri.starts_with("/apis/vigil.dev/v1alpha1/agentstatuses/node-a/status?"), "{uri}");
            assert!(uri.contains("fieldManager=vigil-operator") && uri.contains("force=true"), "{uri}");
            let body: serde_json::Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            assert_eq!(body["status"].as_object().unwrap().len(), 1, "only the conditions: {body}");
            assert_eq!(body["status"]["conditions"].as_array().unwrap().len(), 1);
            assert_eq!(body["status"]["conditions"][0]["type"], CONDITION);
            let mut stored = body.clone();
            stored["spec"] = serde_json::json!({"nodeName": "node-a"});
            send.send_response(
                Response::builder().status(200).body(Body::from(serde_json::to_vec(&stored).unwrap())).unwrap(),
            );
        });
        let (_, reason, message) = judge("node-a", None, t(0), DEFAULT_GAP);
        let c = Condition {
            type_: CONDITION.into(),
            status: "Unknown".into(),
            reason: reason.into(),
            message,
            observed_generation: None,
            last_transition_time: Time(t(0)),
        };
        let failed =
            crate::act::apply_each(&crate::act::Writer::new(client), None, effects(vec![("node-a".into(), c)]), t(0))
                .await;
        assert!(failed.is_empty(), "{failed:?}");
        server.await.unwrap();
    }
}
