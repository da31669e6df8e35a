//! `why NODE`: which rollout selects a node, the revision it runs and the reason, from the
//! planner's own placement. Pure.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;
use vigil_crds::rollout::{RevisionOutcome, RolloutPhase};
use vigil_crds::{AgentRollout, labels};
use vigil_plan::gate::{self, NodeHealth};
use vigil_plan::placement::{Place, placement};
use vigil_plan::{NodeView, selector_matches, window};

/// The answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhyView {
    /// The node.
    pub node: String,
    /// The rollout that manages it (`namespace/name`).
    pub rollout: Option<String>,
    /// The revision it is admitted to (its `vigil.dev/revision` label).
    pub revision: Option<String>,
    /// The revisions whose agents run on it now (two during a handover).
    pub running: Vec<String>,
    /// `wave`, `pinned`, `excluded` or `unmanaged`.
    pub kind: &'static str,
    /// Why, in sentences, most important first.
    pub because: Vec<String>,
    /// Other rollouts that select the node and yield to the one that manages it.
    pub yielding: Vec<String>,
}

/// Answers for `node` (its planner view) given every AgentRollout, and the planner views of
/// the nodes the managing rollout selects (`fleet`, which includes `node`).
pub fn why(
    node: &NodeView,
    rollouts: &[AgentRollout],
    fleet: impl Fn(&AgentRollout) -> Vec<NodeView>,
    now: Timestamp,
) -> WhyView {
    // As the operator reads it: the run labels, and the revision label an agent of a DaemonSet
    // written before run labels selects on.
    let mut running: Vec<String> = vigil_crds::labels::running_revisions(&node.labels).map(str::to_owned).collect();
    running.sort();
    running.dedup();
    let key_of = |r: &AgentRollout| {
        format!("{}/{}", r.metadata.namespace.as_deref().unwrap_or("default"), r.metadata.name.as_deref().unwrap_or(""))
    };
    let mut selecting: Vec<&AgentRollout> = rollouts
        .iter()
        .filter(|r| r.spec.node_selector.as_ref().is_none_or(|s| selector_matches(s, &node.labels)))
        .collect();
    // The managing rollout: the one the node's label names, else the oldest that selects it
    // (a newer one selecting the same nodes yields).
    selecting.sort_by_key(|r| (r.metadata.creation_timestamp.as_ref().map(|t| t.0), key_of(r)));
    let labelled = node.labels.get(labels::ROLLOUT);
    let managing = selecting
        .iter()
        .copied()
        .find(|r| {
            let (ns, name) =
                (r.metadata.namespace.as_deref().unwrap_or("default"), r.metadata.name.as_deref().unwrap_or(""));
            labelled == Some(&labels::rollout_label_value(ns, name))
        })
        .or_else(|| selecting.first().copied());
    let mut view = WhyView {
        node: node.name.clone(),
        rollout: managing.map(key_of),
        revision: node.revision.clone(),
        running,
        kind: "unmanaged",
        because: Vec::new(),
        yielding: selecting.iter().filter(|r| Some(key_of(r)) != managing.map(key_of)).map(|r| key_of(r)).collect(),
    };
    let Some(r) = managing else {
        view.because.push(format!("no AgentRollout selects {}", node.name));
        if let Some(rev) = &node.revision {
            view.because.push(format!(
                "it still carries vigil.dev/revision={rev} from a rollout that no longer selects it: that agent keeps running (a rollout's deletion policy Orphan)"
            ));
        }
        return view;
    };
    let key = key_of(r);
    let st = r.status.clone().unwrap_or_default();
    let target = st.target_revision.as_deref();
    let nodes = fleet(r);
    let place = placement(&r.spec, &st, &key, target, &nodes);
    let here = node.revision.as_deref().unwrap_or("no agent");
    let phase = st.phase.map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}"));
    let b = &mut view.because;
    if r.spec.frozen {
        b.push(format!("{key} is frozen (spec.frozen): nothing changes on any of its nodes"));
    }
    match place.of(&node.name) {
        None => {
            view.kind = "unmanaged";
            b.push(format!("{key} selects {} but the operator has not planned it yet", node.name));
        }
        Some(Place::Pinned { pin, revision, by_operator }) => {
            view.kind = "pinned";
            let who = if *by_operator {
                st.pinned_groups.iter().find(|g| &g.name == pin).map(|g| {
                    format!(
                        "the operator pinned the group after a failed wave ({}): {}",
                        attrs(&g.attributes),
                        g.reason
                    )
                })
            } else {
                r.spec.pins.iter().find(|p| &p.name == pin).map(|p| {
                    format!("spec.pins selects it ({}): {}", crate::selector::render(&p.node_selector), p.reason)
                })
            };
            match revision {
                Some(rev) => b.push(format!("held on {rev} by pin {pin}")),
                None => b.push(format!(
                    "pin {pin} holds it where it is ({here}): the revision the pin names is no Good revision of {key}"
                )),
            }
            b.extend(who);
        }
        Some(Place::Excluded { reason }) => {
            view.kind = "excluded";
            b.push(format!("excluded by {key}'s compatibility guard: {reason}; it stays on {here}"));
        }
        Some(Place::Wave { wave, position }) => {
            view.kind = "wave";
            let of = format!("position {position} of {} in the rollout order", place.eligible);
            let target_rec = target.and_then(|t| st.history.iter().find(|h| h.revision == t));
            let on_target = target.is_some() && node.revision.as_deref() == target;
            let t = target.unwrap_or("the target");
            let started = st.wave_started_at.as_ref().map_or(now, |x| x.0);
            match (st.phase, target_rec.map(|h| h.outcome)) {
                (_, Some(RevisionOutcome::Good)) if on_target => {
                    b.push(format!("runs {t}, the target of {key}, proven Good: every eligible node gets it"));
                }
                (_, Some(RevisionOutcome::Good)) => {
                    b.push(format!("gets {t} (proven Good) at the operator's next step; it is on {here}"));
                }
                (Some(RolloutPhase::RollingBack), _) if on_target => b.push(format!(
                    "moving back from {t} to {}: {t} failed its health gate ({})",
                    st.stable_revision.as_deref().unwrap_or("no agent of this rollout"),
                    target_rec.and_then(|h| h.reason.clone()).unwrap_or_default()
                )),
                (Some(RolloutPhase::RollingBack | RolloutPhase::RolledBack), _) => b.push(format!(
                    "on {here}: {key} rolled {t} back ({})",
                    target_rec.and_then(|h| h.reason.clone()).unwrap_or_default()
                )),
                _ if on_target => {
                    b.push(format!("admitted to {t} in wave {wave} ({of})"));
                    let health = match gate::judge(node, t, &r.spec.health_gate, started, now) {
                        NodeHealth::Healthy => "healthy".to_owned(),
                        NodeHealth::Pending(w) => format!("pending: {w}"),
                        NodeHealth::Failed(w) => format!("failed: {w}"),
                        NodeHealth::Excused => "excused: the node was unavailable before the wave started".to_owned(),
                    };
                    b.push(format!("health gate: {health}"));
                }
                _ => {
                    let current = st.current_wave.max(1) as usize;
                    if *wave > current {
                        b.push(format!(
                            "waits for wave {wave} ({of}); {key} is at wave {current} ({phase}); it stays on {here} until then"
                        ));
                    } else {
                        b.push(format!("next to be admitted to {t}, in wave {wave} ({of}); it is on {here}"));
                        if r.spec.paused {
                            b.push(format!("held: {key} is paused (spec.paused)"));
                        } else if let Ok(false) = window::any_open(&r.spec.maintenance_windows, now) {
                            let at = window::until_next_open(&r.spec.maintenance_windows, now)
                                .ok()
                                .flatten()
                                .and_then(|d| now.checked_add(jiff::SignedDuration::try_from(d).ok()?).ok());
                            b.push(match at {
                                Some(at) => format!("held: outside every maintenance window until {at}"),
                                None => "held: outside every maintenance window".to_owned(),
                            });
                        }
                    }
                }
            }
        }
    }
    for y in &view.yielding {
        view.because.push(format!("also selected by {y}, which yields to {key} (the older rollout)"));
    }
    view
}

fn attrs(a: &BTreeMap<String, String>) -> String {
    a.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}
