//! What `status` shows, built from the rollout, its nodes and its Events: plain data, no
//! client, no clock (the caller passes `now`), so every line is tested exactly.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use vigil_crds::AgentRollout;
use vigil_crds::rollout::{
    AgentRolloutSpec, AgentRolloutStatus, ExcludedNodes, FailingNode, RevisionOutcome, RolloutPhase,
};
use vigil_plan::gate::{self, NodeHealth};
use vigil_plan::placement::{Place, Placement, placement};
use vigil_plan::{NodeView, pin_revision, window};

/// One Event about the rollout, as `status` lists the operator's decisions.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// When it was decided.
    pub time: Option<Timestamp>,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The decision: `Admit`, `Advance`, `Bake`, `RollBack`…
    pub reason: String,
    /// What the operator said.
    pub note: String,
}

/// The whole `status` view.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    /// `namespace/name`.
    pub rollout: String,
    /// Where it stands (`Progressing`, `Baking`…); `None` before the operator wrote a status.
    pub phase: Option<RolloutPhase>,
    /// False while the operator has not yet planned the spec's latest generation.
    pub up_to_date: bool,
    /// The target revision.
    pub target: Option<Revision>,
    /// The revision a rollback restores.
    pub stable: Option<Revision>,
    /// The wave being rolled out or baked (1-based; 0 before the first).
    pub current_wave: u32,
    /// Nodes selected / on the target and ready.
    pub selected_nodes: u32,
    /// Selected nodes on the target revision and ready.
    pub updated_nodes: u32,
    /// The waves, in order.
    pub waves: Vec<Wave>,
    /// Nodes per revision.
    pub revisions: Vec<RevisionCount>,
    /// Pins of the spec and groups the operator pinned.
    pub pins: Vec<PinView>,
    /// Nodes the compatibility guard (or a pin) keeps out, by reason.
    pub excluded: Vec<ExcludedNodes>,
    /// Nodes failing on a revision already proven Good.
    pub failing_nodes: Vec<FailingNode>,
    /// How many nodes fail on a revision already proven Good.
    pub failing_node_count: u32,
    /// The operator's last reason.
    pub reason: Option<String>,
    /// The conditions, `Type=Status (Reason)`.
    pub conditions: Vec<ConditionLine>,
    /// The latest decisions, newest first.
    pub decisions: Vec<Decision>,
    /// What happens next, and when.
    pub next: Option<NextStep>,
    /// The rollout's trace in an OpenTelemetry backend.
    pub trace_id: Option<String>,
}

/// A revision of the rollout's history.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// `r-` + 10 hex.
    pub name: String,
    /// The agent version, when the spec named one.
    pub version: Option<String>,
    /// The image.
    pub image: Option<String>,
    /// How it fared.
    pub outcome: Option<RevisionOutcome>,
}

/// One wave.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// 1-based.
    pub number: usize,
    /// As the spec writes it: `5%` or `3 nodes`.
    pub share: String,
    /// Cumulative nodes on the target once the wave is done.
    pub size: usize,
    /// Bake time, seconds.
    pub bake_seconds: u64,
    /// `passed`, the rollout's phase for the current wave, `waiting`, `rolled back` or
    /// `not started`.
    pub state: String,
    /// The health gate's verdict on the wave's nodes on the target.
    pub gate: Gate,
    /// The wave's nodes in rollout order.
    pub nodes: Vec<NodeLine>,
}

/// Counts of the gate's verdicts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// Healthy on the target.
    pub healthy: usize,
    /// Not yet healthy, within the progress deadline.
    pub pending: usize,
    /// Failed.
    pub failed: usize,
    /// Unavailable before the wave started: not counted.
    pub excused: usize,
    /// Not on the target yet.
    pub waiting: usize,
}

/// A node of a wave.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLine {
    /// Node name.
    pub name: String,
    /// Its place in the rollout order.
    pub position: usize,
    /// The revision it is admitted to.
    pub revision: Option<String>,
    /// `healthy`, `pending`, `failed`, `excused` (on the target) or `waiting` (not yet).
    pub health: String,
    /// Why, for pending and failed nodes.
    pub detail: Option<String>,
}

/// Nodes on one revision.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionCount {
    /// Revision name.
    pub revision: String,
    /// `target`, `stable`, both or neither.
    pub role: Vec<&'static str>,
    /// How it fared, when the rollout recorded it.
    pub outcome: Option<RevisionOutcome>,
    /// Nodes admitted to it.
    pub nodes: u32,
    /// Of those, ready on it.
    pub ready: u32,
    /// Of those, held by a pin.
    pub pinned: u32,
}

/// A pin.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PinView {
    /// Its name.
    pub name: String,
    /// `spec` (a person's) or `operator` (PinFailingGroup).
    pub source: &'static str,
    /// Which nodes: a label selector or node attributes.
    pub selects: String,
    /// The revision the pin names (`spec`) or holds (`operator`).
    pub revision: Option<String>,
    /// The revision the nodes are held on; `None`: the pin names no Good revision of this
    /// rollout, so its nodes stay where they are.
    pub holds_on: Option<String>,
    /// Why.
    pub reason: String,
    /// Selected nodes it holds.
    pub nodes: usize,
}

/// A condition in one line.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionLine {
    /// Type.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// What happens next.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NextStep {
    /// In words.
    pub what: String,
    /// When, if it is a matter of time.
    pub at: Option<Timestamp>,
}

/// Builds the view of `rollout` over its selected `nodes` and its `events` at `now`.
pub fn status_view(rollout: &AgentRollout, nodes: &[NodeView], events: Vec<Decision>, now: Timestamp) -> StatusView {
    let ns = rollout.metadata.namespace.as_deref().unwrap_or("default");
    let name = rollout.metadata.name.as_deref().unwrap_or("");
    let key = format!("{ns}/{name}");
    let spec = &rollout.spec;
    let st = rollout.status.clone().unwrap_or_default();
    let revision = |r: &str| {
        let rec = st.history.iter().find(|h| h.revision == r);
        Revision {
            name: r.to_owned(),
            version: rec.and_then(|h| h.version.clone()),
            image: rec.map(|h| h.image.clone()),
            outcome: rec.map(|h| h.outcome),
        }
    };
    let target = st.target_revision.as_deref();
    let place = placement(spec, &st, &key, target, nodes);
    let target_good = target.and_then(|t| st.history.iter().find(|h| h.revision == t)).map(|h| h.outcome)
        == Some(RevisionOutcome::Good);
    let waves = waves(spec, &st, nodes, &place, target_good, now);

    let mut revisions: Vec<RevisionCount> = st
        .revisions
        .iter()
        .map(|r| {
            let mut role = Vec::new();
            if Some(r.revision.as_str()) == target {
                role.push("target");
            }
            if st.stable_revision.as_deref() == Some(r.revision.as_str()) {
                role.push("stable");
            }
            RevisionCount {
                revision: r.revision.clone(),
                role,
                outcome: st.history.iter().find(|h| h.revision == r.revision).map(|h| h.outcome),
                nodes: r.nodes,
                ready: r.ready,
                pinned: r.pinned,
            }
        })
        .collect();
    revisions.sort_by(|a, b| b.role.len().cmp(&a.role.len()).then(b.nodes.cmp(&a.nodes)));

    let held =
        |pin: &str| place.places.values().filter(|p| matches!(p, Place::Pinned { pin: q, .. } if q == pin)).count();
    let holds_on = |pin: &str| {
        place.places.values().find_map(|p| match p {
            Place::Pinned { pin: q, revision, .. } if q == pin => Some(revision.clone()),
            _ => None,
        })
    };
    let mut pins: Vec<PinView> = spec
        .pins
        .iter()
        .map(|p| PinView {
            name: p.name.clone(),
            source: "spec",
            selects: crate::selector::render(&p.node_selector),
            revision: Some(p.revision.clone()),
            holds_on: holds_on(&p.name).flatten().or_else(|| pin_revision(&st, &p.revision)),
            reason: p.reason.clone(),
            nodes: held(&p.name),
        })
        .collect();
    pins.extend(st.pinned_groups.iter().map(|g| PinView {
        name: g.name.clone(),
        source: "operator",
        selects: g.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
        revision: g.revision.clone(),
        holds_on: g.revision.clone(),
        reason: g.reason.clone(),
        nodes: held(&g.name),
    }));

    let mut decisions = events;
    decisions.sort_by_key(|d| std::cmp::Reverse(d.time));
    decisions.truncate(6);

    StatusView {
        rollout: key,
        phase: st.phase,
        up_to_date: st.observed_generation.is_some() && st.observed_generation >= rollout.metadata.generation,
        target: target.map(revision),
        stable: st.stable_revision.as_deref().map(revision),
        current_wave: st.current_wave,
        selected_nodes: st.selected_nodes,
        updated_nodes: st.updated_nodes,
        waves,
        revisions,
        pins,
        excluded: st.excluded.clone(),
        failing_nodes: st.failing_nodes.clone(),
        failing_node_count: st.failing_node_count,
        reason: st.reason.clone(),
        conditions: st
            .conditions
            .iter()
            .map(|c| ConditionLine {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            })
            .collect(),
        decisions,
        next: next_step(rollout, nodes, &place, now),
        trace_id: st.trace_id.clone(),
    }
}

fn waves(
    spec: &AgentRolloutSpec,
    st: &AgentRolloutStatus,
    nodes: &[NodeView],
    place: &Placement,
    target_good: bool,
    now: Timestamp,
) -> Vec<Wave> {
    let target = st.target_revision.as_deref();
    let current = st.current_wave as usize;
    let started = st.wave_started_at.as_ref().map_or(now, |t| t.0);
    let phase = st.phase;
    let mut out: Vec<Wave> = spec
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let number = i + 1;
            let state = match phase {
                Some(RolloutPhase::Completed) => "passed".to_owned(),
                _ if target_good => "passed".to_owned(),
                Some(RolloutPhase::RollingBack | RolloutPhase::RolledBack) if number <= current => {
                    "rolled back".to_owned()
                }
                Some(RolloutPhase::RollingBack | RolloutPhase::RolledBack) => "not started".to_owned(),
                _ if number < current => "passed".to_owned(),
                Some(p) if number == current => format!("{p:?}").to_lowercase(),
                _ => "waiting".to_owned(),
            };
            Wave {
                number,
                share: match (w.percent, w.count) {
                    (Some(p), _) => format!("{p}%"),
                    (None, Some(c)) => format!("{c} node{}", if c == 1 { "" } else { "s" }),
                    (None, None) => "all".into(),
                },
                size: place.wave_sizes.get(i).copied().unwrap_or(0),
                bake_seconds: Duration::from(w.bake_time).as_secs(),
                state,
                gate: Gate::default(),
                nodes: Vec::new(),
            }
        })
        .collect();
    let mut lines: Vec<(usize, NodeLine)> = nodes
        .iter()
        .filter_map(|n| match place.of(&n.name) {
            Some(Place::Wave { wave, position }) => Some((*wave, n, *position)),
            _ => None,
        })
        .map(|(wave, n, position)| {
            let on_target = target.is_some() && n.revision.as_deref() == target;
            let (health, detail) = match target {
                Some(t) if on_target => match gate::judge(n, t, &spec.health_gate, started, now) {
                    NodeHealth::Healthy => ("healthy", None),
                    NodeHealth::Pending(why) => ("pending", Some(why)),
                    NodeHealth::Failed(why) => ("failed", Some(why)),
                    NodeHealth::Excused => ("excused", Some("unavailable before the wave started".to_owned())),
                },
                _ => ("waiting", None),
            };
            (
                wave,
                NodeLine {
                    name: n.name.clone(),
                    position,
                    revision: n.revision.clone(),
                    health: health.to_owned(),
                    detail,
                },
            )
        })
        .collect();
    lines.sort_by_key(|(_, l)| l.position);
    for (wave, line) in lines {
        if let Some(w) = out.get_mut(wave.saturating_sub(1)) {
            let g = &mut w.gate;
            match line.health.as_str() {
                "healthy" => g.healthy += 1,
                "pending" => g.pending += 1,
                "failed" => g.failed += 1,
                "excused" => g.excused += 1,
                _ => g.waiting += 1,
            }
            w.nodes.push(line);
        }
    }
    out
}

/// What happens next, and when.
fn next_step(rollout: &AgentRollout, nodes: &[NodeView], place: &Placement, now: Timestamp) -> Option<NextStep> {
    let spec = &rollout.spec;
    let name = rollout.metadata.name.as_deref().unwrap_or("");
    let st = rollout.status.as_ref()?;
    let wave = st.current_wave.max(1) as usize;
    let last = spec.waves.len();
    let at_only = |what: String| Some(NextStep { what, at: None });
    match st.phase? {
        RolloutPhase::Baking => {
            let ready = st.wave_ready_at.as_ref()?.0;
            let bake = spec.waves.get(wave - 1).map(|w| Duration::from(w.bake_time))?;
            let at = ready + jiff::SignedDuration::try_from(bake).ok()?;
            let then = if wave >= last {
                "the rollout completes".to_owned()
            } else {
                let adds = place.wave_sizes.get(wave).zip(place.wave_sizes.get(wave - 1)).map_or(0, |(b, a)| b - a);
                format!("wave {} admits {adds} more node(s)", wave + 1)
            };
            Some(NextStep {
                what: format!(
                    "wave {wave} bakes until {at}; then, if its gate still passes, {then} (`kubectl vigil promote {name}` ends the bake now)"
                ),
                at: Some(at),
            })
        }
        RolloutPhase::Progressing => {
            let target = st.target_revision.as_deref()?;
            let started = st.wave_started_at.as_ref().map_or(now, |t| t.0);
            let deadline = Duration::from(spec.health_gate.progress_deadline);
            let pending: Vec<Timestamp> = nodes
                .iter()
                .filter(|n| n.revision.as_deref() == Some(target))
                .filter(|n| matches!(gate::judge(n, target, &spec.health_gate, started, now), NodeHealth::Pending(_)))
                .filter_map(|n| {
                    let since = n.admitted_at.map_or(started, |a| a.max(started));
                    since.checked_add(jiff::SignedDuration::try_from(deadline).ok()?).ok()
                })
                .collect();
            match pending.iter().min() {
                Some(at) => Some(NextStep {
                    what: format!(
                        "wave {wave}: {} node(s) must become healthy; the first fails its progress deadline at {at}",
                        pending.len()
                    ),
                    at: Some(*at),
                }),
                None => at_only(format!("wave {wave}: the operator admits nodes and judges them")),
            }
        }
        RolloutPhase::Paused if spec.paused => {
            at_only(format!("held by spec.paused: `kubectl vigil resume {name}` goes on with wave {wave}"))
        }
        RolloutPhase::Paused => match window::any_open(&spec.maintenance_windows, now) {
            Ok(false) => {
                let wait = window::until_next_open(&spec.maintenance_windows, now).ok().flatten();
                let at = wait.and_then(|d| now.checked_add(jiff::SignedDuration::try_from(d).ok()?).ok());
                Some(NextStep {
                    what: match at {
                        Some(at) => {
                            format!("outside every maintenance window: wave {wave} goes on when one opens at {at}")
                        }
                        None => "outside every maintenance window, and none opens in the next 8 days".into(),
                    },
                    at,
                })
            }
            _ => at_only(format!(
                "held by the Pause failure policy: find the cause, then `kubectl vigil rollback {name}` or `kubectl vigil retry {name}`"
            )),
        },
        RolloutPhase::Frozen => at_only(format!("frozen: nothing changes until `kubectl vigil unfreeze {name}`")),
        RolloutPhase::RollingBack => at_only(format!(
            "moving the nodes on {} back to {}",
            st.target_revision.as_deref().unwrap_or("the target"),
            st.stable_revision.as_deref().unwrap_or("no agent of this rollout")
        )),
        RolloutPhase::RolledBack => at_only(format!(
            "the target is marked Bad: roll out another revision, or `kubectl vigil retry {name}` once its cause is fixed"
        )),
        RolloutPhase::Failed => at_only(format!(
            "stopped until the spec is fixed: {}",
            st.reason.as_deref().unwrap_or("see the conditions")
        )),
        RolloutPhase::Pending => at_only("waiting for the operator to admit wave 1".into()),
        RolloutPhase::Completed => None,
    }
}

/// The phases after which nothing happens without a change of spec.
pub fn is_final(phase: Option<RolloutPhase>) -> bool {
    matches!(phase, Some(RolloutPhase::Completed | RolloutPhase::RolledBack | RolloutPhase::Failed))
}
