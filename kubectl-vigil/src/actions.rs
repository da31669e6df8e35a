//! The changes `kubectl vigil` makes to an AgentRollout's spec, what each will do, and when
//! there is nothing to do or the operator would refuse. Pure: the rollout in, a server-side
//! apply body and words out.
//!
//! Each kind of change has a field manager of its own (`kubectl-vigil-pause`,
//! `-freeze`, `-action`, `-pin`): a server-side apply removes the fields its manager applied
//! before and leaves out now, so one manager for everything would clear `paused` when it next
//! applied a pin. A field another manager owns (a GitOps tool, `kubectl apply`) makes the
//! apply fail with a conflict naming that manager; `--force` takes the field over.

use jiff::Timestamp;
use serde_json::{Value, json};
use vigil_crds::AgentRollout;
use vigil_crds::rollout::{ManualActionKind, Pin, RevisionOutcome, RolloutPhase};

/// A change to a rollout.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Set spec.paused.
    Pause,
    /// Clear spec.paused.
    Resume,
    /// Set spec.frozen.
    Freeze,
    /// Clear spec.frozen.
    Unfreeze,
    /// A spec.action.
    Action(ManualActionKind, Option<String>),
    /// Add (or change) a pin.
    Pin(Pin),
    /// Remove a pin.
    Unpin(String),
}

impl Change {
    /// The field manager of the change.
    pub fn manager(&self) -> &'static str {
        match self {
            Self::Pause | Self::Resume => "kubectl-vigil-pause",
            Self::Freeze | Self::Unfreeze => "kubectl-vigil-freeze",
            Self::Action(..) => "kubectl-vigil-action",
            Self::Pin(_) | Self::Unpin(_) => "kubectl-vigil-pin",
        }
    }
}

/// What a change will do.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// The server-side apply body; `None` when there is nothing to do.
    pub apply: Option<Value>,
    /// What will happen, in words.
    pub says: String,
    /// The spec.action id, for an action: the operator records it in status.handledAction.
    pub action_id: Option<String>,
}

/// Plans `change` on `rollout` at `now`: the apply body and what it will do, or why it would
/// be refused (by the operator, or because it would do something else than asked).
pub fn plan(change: &Change, rollout: &AgentRollout, now: Timestamp) -> Result<Planned, String> {
    let ns = rollout.metadata.namespace.as_deref().unwrap_or("default");
    let name = rollout.metadata.name.as_deref().unwrap_or("");
    let key = format!("{ns}/{name}");
    let spec = &rollout.spec;
    let st = rollout.status.clone().unwrap_or_default();
    let target = st.target_revision.clone().unwrap_or_else(|| "the target".into());
    let stable = st.stable_revision.clone();
    let wave = st.current_wave.max(1);
    let waves = spec.waves.len();
    let phase = st.phase.map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}"));
    let body = |spec: Value| json!({"apiVersion": vigil_crds::API_VERSION, "kind": "AgentRollout", "metadata": {"name": name, "namespace": ns}, "spec": spec});
    let nothing = |says: String| Ok(Planned { apply: None, says, action_id: None });
    let outcome = |rev: &str| st.history.iter().find(|h| h.revision == rev).map(|h| h.outcome);
    let on_target =
        st.revisions.iter().find(|r| Some(&r.revision) == st.target_revision.as_ref()).map_or(0, |r| r.nodes);
    match change {
        Change::Pause if spec.paused => nothing(format!("{key} is already paused (spec.paused)")),
        Change::Pause => Ok(Planned {
            apply: Some(body(json!({"paused": true}))),
            says: if st.phase == Some(RolloutPhase::Completed) {
                format!(
                    "{key} is Completed: pausing holds its next target at wave 1; nodes that join still get the proven revision"
                )
            } else {
                format!(
                    "{key} stops admitting nodes to {target} at wave {wave} of {waves} ({}/{} node(s) on it); health checks and rollback go on",
                    st.updated_nodes, st.selected_nodes
                )
            },
            action_id: None,
        }),
        Change::Resume if !spec.paused => nothing(if st.phase == Some(RolloutPhase::Paused) {
            format!(
                "{key} is not paused by spec.paused; it holds because {}",
                st.reason.as_deref().unwrap_or("of a maintenance window or the Pause failure policy")
            )
        } else {
            format!("{key} is not paused")
        }),
        Change::Resume => Ok(Planned {
            apply: Some(body(json!({"paused": false}))),
            says: format!("{key} goes on admitting nodes to {target} with wave {wave} of {waves}"),
            action_id: None,
        }),
        Change::Freeze if spec.frozen => nothing(format!("{key} is already frozen (spec.frozen)")),
        Change::Freeze => Ok(Planned {
            apply: Some(body(json!({"frozen": true}))),
            says: format!(
                "{key} is frozen where it stands ({phase}, wave {wave}): nothing changes, not even a rollback, until unfreeze"
            ),
            action_id: None,
        }),
        Change::Unfreeze if !spec.frozen => nothing(format!("{key} is not frozen")),
        Change::Unfreeze => Ok(Planned {
            apply: Some(body(json!({"frozen": false}))),
            says: format!(
                "{key} is planned again from where it stands: the health gate judges the nodes now, and a failed wave rolls back"
            ),
            action_id: None,
        }),
        Change::Action(kind, to) => {
            let says = match kind {
                ManualActionKind::Promote => {
                    if st.phase != Some(RolloutPhase::Baking) {
                        return Err(format!(
                            "nothing to promote: {key} is {phase} at wave {wave}, not baking (promote ends a bake time; it never skips a health gate)"
                        ));
                    }
                    if wave as usize >= waves {
                        format!(
                            "{key} ends the last wave's bake now: if its gate passes, {target} is Good and the rollout completes"
                        )
                    } else {
                        format!("{key} ends wave {wave}'s bake now: if its gate passes, wave {} starts", wave + 1)
                    }
                }
                ManualActionKind::Retry => match st.target_revision.as_deref().and_then(outcome) {
                    Some(RevisionOutcome::Bad) => {
                        format!("{key} admits {target} again from wave 1 (its nodes were rolled back)")
                    }
                    other => {
                        return Err(format!(
                            "nothing to retry: {target} is {}, not Bad (retry admits a target that was rolled back)",
                            other.map_or_else(|| "not recorded".to_owned(), |o| format!("{o:?}"))
                        ));
                    }
                },
                ManualActionKind::Abort | ManualActionKind::Rollback => {
                    if st.target_revision.is_none() {
                        return Err(format!("{key} has no target yet: there is nothing to roll back"));
                    }
                    let back = match to {
                        Some(to) => to.clone(),
                        None if stable.as_deref() == st.target_revision.as_deref() => vigil_plan::restore_to(&st, &target)
                            .ok_or_else(|| {
                                format!(
                                    "{target} is the only Good revision of {key}: rolling it back would leave every node without an agent; roll out another revision instead"
                                )
                            })?,
                        None => stable.clone().unwrap_or_default(),
                    };
                    let verb = if *kind == ManualActionKind::Abort { "aborts" } else { "rolls back" };
                    if back.is_empty() {
                        format!(
                            "{key} {verb} {target}: this first rollout has no stable revision, so its {on_target} node(s) on {target} are left without an agent of this rollout; {target} is marked Bad"
                        )
                    } else {
                        format!(
                            "{key} {verb} {target}: {on_target} node(s) move back to {back} (rollback ignores pause and maintenance windows); {target} is marked Bad and not admitted again until retry or a new target"
                        )
                    }
                }
            };
            let word = match kind {
                ManualActionKind::Promote => "promote",
                ManualActionKind::Abort => "abort",
                ManualActionKind::Rollback => "rollback",
                ManualActionKind::Retry => "retry",
            };
            let id = format!("kubectl-vigil-{word}-{}", now.strftime("%Y%m%dt%H%M%Sz"));
            let mut action = json!({"id": id, "kind": kind});
            if let Some(to) = to {
                action["to"] = json!(to);
            }
            Ok(Planned { apply: Some(body(json!({"action": action}))), says, action_id: Some(id) })
        }
        Change::Pin(pin) => {
            if let Some(other) = spec.pins.iter().find(|p| p.name != pin.name && p.node_selector == pin.node_selector) {
                return Err(format!(
                    "pin {} already holds the nodes of this selector: change it (kubectl vigil pin {} ...) rather than adding a second",
                    other.name, other.name
                ));
            }
            let held = match vigil_plan::pin_revision(&st, &pin.revision) {
                Some(rev) => format!("on {rev}"),
                None => format!(
                    "where they are: {} is no Good revision of this rollout (see its status.history), so the operator holds them on whatever they run",
                    pin.revision
                ),
            };
            let verb = if spec.pins.iter().any(|p| p.name == pin.name) { "changes pin" } else { "pins" };
            let mut pins = owned_pins(rollout, change.manager());
            pins.retain(|p| p["name"] != json!(pin.name));
            pins.push(serde_json::to_value(pin).map_err(|e| e.to_string())?);
            Ok(Planned {
                apply: Some(body(json!({"pins": pins}))),
                says: format!(
                    "{key} {verb} {} ({}): its nodes are held {held}; {}",
                    pin.name,
                    crate::selector::render(&pin.node_selector),
                    pin.reason
                ),
                action_id: None,
            })
        }
        Change::Unpin(group) => {
            if st.pinned_groups.iter().any(|g| &g.name == group) {
                return Err(format!(
                    "{group} is a group the operator pinned after a failed wave (status.pinnedGroups): it is released when the target changes, or by `kubectl vigil retry {name}`"
                ));
            }
            let Some(pin) = spec.pins.iter().find(|p| &p.name == group) else {
                let names: Vec<&str> = spec.pins.iter().map(|p| p.name.as_str()).collect();
                return Err(format!(
                    "{key} has no pin {group}{}",
                    if names.is_empty() { String::new() } else { format!(" (its pins: {})", names.join(", ")) }
                ));
            };
            let mut pins = owned_pins(rollout, change.manager());
            let before = pins.len();
            pins.retain(|p| p["name"] != json!(group));
            if pins.len() == before {
                let owners = pin_managers(rollout, group);
                return Err(format!(
                    "pin {group} was not written by kubectl vigil but by {}: remove it where it is written (a GitOps repository, a manifest), or run again with --force",
                    if owners.is_empty() { "another tool".to_owned() } else { owners.join(", ") }
                ));
            }
            Ok(Planned {
                apply: Some(body(json!({"pins": pins}))),
                says: format!(
                    "{key} unpins {group} ({}): its nodes rejoin the rollout and follow its waves",
                    crate::selector::render(&pin.node_selector)
                ),
                action_id: None,
            })
        }
    }
}

/// The revision `to` names for a rollback: a revision name or agent version of the history
/// that is Good (or the stable one); otherwise the Good revisions there are.
pub fn rollback_target(rollout: &AgentRollout, to: &str) -> Result<String, String> {
    let st = rollout.status.clone().unwrap_or_default();
    vigil_plan::pin_revision(&st, to).ok_or_else(|| {
        let good: Vec<String> = st
            .history
            .iter()
            .filter(|r| r.outcome == RevisionOutcome::Good || st.stable_revision.as_ref() == Some(&r.revision))
            .map(|r| match &r.version {
                Some(v) => format!("{} ({v})", r.revision),
                None => r.revision.clone(),
            })
            .collect();
        format!(
            "{to} is no Good revision of this rollout's history; {}",
            if good.is_empty() {
                "it has none yet".to_owned()
            } else {
                format!("its Good revisions: {}", good.join(", "))
            }
        )
    })
}

/// The pins `manager` applied (from managedFields), as they are now: what its next apply must
/// carry to keep them.
pub fn owned_pins(rollout: &AgentRollout, manager: &str) -> Vec<Value> {
    let names = pin_keys(rollout).into_iter().filter(|(m, _)| m == manager).map(|(_, n)| n).collect::<Vec<_>>();
    rollout.spec.pins.iter().filter(|p| names.contains(&p.name)).filter_map(|p| serde_json::to_value(p).ok()).collect()
}

/// The managers that own pin `name`.
fn pin_managers(rollout: &AgentRollout, name: &str) -> Vec<String> {
    let mut m: Vec<String> = pin_keys(rollout).into_iter().filter(|(_, n)| n == name).map(|(m, _)| m).collect();
    m.dedup();
    m
}

/// (manager, pin name) for every pin item a manager owns: the `k:{"name":"…"}` keys under
/// `f:spec` / `f:pins` of the managed fields.
fn pin_keys(rollout: &AgentRollout) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for mf in rollout.metadata.managed_fields.iter().flatten() {
        let Some(manager) = &mf.manager else { continue };
        let Some(pins) = mf.fields_v1.as_ref().and_then(|f| f.0.get("f:spec")).and_then(|s| s.get("f:pins")) else {
            continue;
        };
        for k in pins.as_object().into_iter().flat_map(|o| o.keys()) {
            if let Some(key) = k.strip_prefix("k:")
                && let Ok(v) = serde_json::from_str::<Value>(key)
                && let Some(n) = v.get("name").and_then(Value::as_str)
            {
                out.push((manager.clone(), n.to_owned()));
            }
        }
    }
    out
}
