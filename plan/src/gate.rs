//! The health gate: how each admitted node is doing, and whether the wave passes.

use std::time::Duration;

use jiff::Timestamp;
use vigil_crds::AgentHealth;
use vigil_crds::rollout::HealthGate;

use super::model::NodeView;

/// Waiting reasons that mean the revision cannot run on the node.
const FATAL_WAITING: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// How one node admitted to the target is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeHealth {
    /// Ready, heartbeating, within restart budget, and (when required) reporting Healthy.
    Healthy,
    /// Not yet healthy, still within the progress deadline.
    Pending(String),
    /// Failed, with the reason.
    Failed(String),
    /// The node itself was unavailable before the wave started: not counted either way.
    Excused,
}

/// Judges one node admitted to `target`. `wave_started` is when the wave began.
///
/// The node's own clock (ADR 0008): the progress deadline runs from the latest of the wave's
/// start, the node's admission and the moment the node was last back Ready, so a node admitted
/// late gets its full deadline, and so does a node that was down (a long reboot, a drain, a
/// partition) once it is back. While a node is NotReady its clock stands still: it is excused
/// when it was down before the wave began, and otherwise only what the node itself showed (a
/// crash loop, an image that cannot be pulled, restarts, an OOM kill, a self-reported
/// Unhealthy) can fail it; a missing pod or an old heartbeat cannot. A node down since before
/// its turn (the wave's start or its own later admission) is excused. A heartbeat is judged
/// stale only a whole heartbeat gap after the node was back.
pub fn judge(node: &NodeView, target: &str, gate: &HealthGate, wave_started: Timestamp, now: Timestamp) -> NodeHealth {
    // Down since before the node's turn came (the wave's start, or its own later admission).
    let turn = node.admitted_at.map_or(wave_started, |a| a.max(wave_started));
    if !node.ready && node.ready_changed_at.is_none_or(|t| t <= turn) {
        return NodeHealth::Excused;
    }
    let back = node.ready.then_some(node.ready_changed_at).flatten();
    let since = back.map_or(turn, |b| b.max(turn));
    let overdue = node.ready && elapsed(since, now) > Duration::from(gate.progress_deadline);
    let pending = |why: String| {
        if overdue {
            NodeHealth::Failed(format!("{why} after the progress deadline"))
        } else if let (false, Some(down)) = (node.ready, node.ready_changed_at) {
            NodeHealth::Pending(format!(
                "{why}; the node has been NotReady since {down}, its deadline waits until it is back"
            ))
        } else {
            NodeHealth::Pending(why)
        }
    };
    let Some(agent) = node.agent.as_ref().filter(|a| a.revision == target) else {
        return pending("no agent pod of the target revision yet".into());
    };
    if let Some(w) = agent.waiting_reason.as_deref().filter(|w| FATAL_WAITING.contains(w)) {
        return NodeHealth::Failed(format!("agent container {w}"));
    }
    // A pod older than the node's turn (an earlier install's, adopted; or kept by a retry)
    // carries restarts and a last termination that were not this admission's: only what it
    // does now (a crash loop, above; readiness, heartbeats, health, below) judges it.
    let this_admission = agent.created_at.is_none_or(|c| c >= turn);
    if this_admission && agent.restarts > gate.max_restarts {
        let why =
            agent.last_termination_reason.as_deref().map(|r| format!(", last terminated {r}")).unwrap_or_default();
        return NodeHealth::Failed(format!("{} restarts (max {}){why}", agent.restarts, gate.max_restarts));
    }
    if this_admission && agent.last_termination_reason.as_deref() == Some("OOMKilled") {
        return NodeHealth::Failed("agent container OOMKilled".into());
    }
    if gate.require_agent_healthy && agent.health == Some(AgentHealth::Unhealthy) {
        return NodeHealth::Failed("the agent reports itself Unhealthy".into());
    }
    if !agent.ready {
        return pending("agent pod not ready".into());
    }
    let gap = Duration::from(gate.heartbeat_gap);
    if !node.ready {
        return pending("no word from the agent".into());
    }
    // Heartbeats missed while the node was down are not the revision's fault.
    let heard = |t: Timestamp| back.map_or(t, |b| t.max(b));
    match agent.heartbeat {
        Some(hb) if elapsed(heard(hb), now) > gap => {
            return NodeHealth::Failed(format!(
                "heartbeat {}s old (max {}s)",
                elapsed(hb, now).as_secs(),
                gap.as_secs()
            ));
        }
        None if agent.started_at.is_some_and(|t| elapsed(heard(t), now) > gap) => {
            return NodeHealth::Failed(format!(
                "no heartbeat in the {}s since the agent started",
                elapsed(agent.started_at.unwrap_or(now), now).as_secs()
            ));
        }
        None => return pending("no heartbeat yet".into()),
        Some(_) => {}
    }
    if gate.require_agent_healthy
        && agent.health != Some(AgentHealth::Healthy)
        && agent.health != Some(AgentHealth::Degraded)
    {
        return pending("the agent has not reported its health yet".into());
    }
    NodeHealth::Healthy
}

/// Whether `node` went NotReady within `within` (the progress deadline) after the target's
/// agent started on it: down under the revision, which alone proves nothing (a reboot, a
/// drain), but many at once may be the revision taking its nodes down. A reboot hours later
/// says nothing about the revision.
pub fn went_down_under(node: &NodeView, target: &str, within: Duration) -> bool {
    let started = node.agent.as_ref().filter(|a| a.revision == target).and_then(|a| a.started_at);
    !node.ready && matches!((started, node.ready_changed_at), (Some(s), Some(d)) if s < d && elapsed(s, d) <= within)
}

/// Whether the nodes of a wave that went down under the revision (`down` of `admitted`) say
/// the revision takes nodes down: more of them than the wave may lose (and at least two, so one
/// reboot never does), at more than twice the rate of the selected nodes not on the target
/// (`others_down` of `others`), so a zone outage or a fleet-wide maintenance does not. With
/// no other node to compare (the last wave), only when most of the wave went down.
pub fn takes_nodes_down(down: usize, admitted: usize, others_down: usize, others: usize, max_failed: u32) -> bool {
    down > (max_failed as usize).max(1)
        && if others == 0 { 2 * down > admitted } else { down * others > 2 * others_down * admitted }
}

/// Time from `a` to `b`, zero when `b` is earlier.
pub fn elapsed(a: Timestamp, b: Timestamp) -> Duration {
    b.duration_since(a).try_into().unwrap_or(Duration::ZERO)
}

/// The Prometheus gate: `Some(reason)` when the value is on the failing side.
pub fn prometheus_fails(gate: &HealthGate, value: Option<f64>) -> Option<String> {
    let p = gate.prometheus.as_ref()?;
    match value {
        None => None, // unanswered queries hold the wave as pending, see `next`
        Some(v) if p.fail_below && v < p.threshold => {
            Some(format!("Prometheus query value {v} is below {}", p.threshold))
        }
        Some(v) if !p.fail_below && v > p.threshold => {
            Some(format!("Prometheus query value {v} is above {}", p.threshold))
        }
        Some(_) => None,
    }
}
