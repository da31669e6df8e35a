//! The rollout's conditions, derived from its phase and the last decision.
//!
//! | type | True when |
//! | --- | --- |
//! | Progressing | nodes are moving or a wave is baking or rolling back |
//! | Available | every eligible node runs the target (Completed) |
//! | Degraded | a health gate failed: rolling or rolled back, or a node group was pinned |
//! | Paused | paused by spec, a closed maintenance window, the Pause policy, or frozen |
//! | RolledBack | every node that got the target is back on the stable revision |
//! | ConfigValid | the target config passes the agent's own checks (False, `ConfigInvalid`: no node is admitted to it) |
//!
//! A condition's `lastTransitionTime` moves only when its status does, so planning again
//! from the same state writes the same conditions.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use vigil_crds::rollout::{AgentRolloutStatus, RolloutPhase};

use crate::DecisionKind;

/// The condition types, in the order they are written.
pub const TYPES: [&str; 6] = ["Progressing", "Available", "Degraded", "Paused", "RolledBack", "ConfigValid"];

/// Recomputes `st.conditions` for the decision `kind` with `reason`.
pub fn update(st: &mut AgentRolloutStatus, kind: DecisionKind, reason: &str, generation: Option<i64>, now: Timestamp) {
    use RolloutPhase::*;
    let phase = st.phase;
    let is = |ps: &[RolloutPhase]| phase.is_some_and(|p| ps.contains(&p));
    let degraded = is(&[RollingBack, RolledBack]) || !st.pinned_groups.is_empty();
    let config_invalid = kind == DecisionKind::ConfigInvalid;
    let values: [(bool, &str); 6] = [
        (is(&[Pending, Progressing, Baking, RollingBack]), kind.as_str()),
        (is(&[Completed]), if is(&[Completed]) { "Completed" } else { "NotAllNodesUpdated" }),
        (
            degraded,
            if is(&[RollingBack, RolledBack]) {
                "HealthGateFailed"
            } else if degraded {
                "NodeGroupPinned"
            } else {
                "Healthy"
            },
        ),
        (
            is(&[Paused, Frozen]),
            match phase {
                Some(Frozen) => "Frozen",
                Some(Paused) if kind == DecisionKind::Wait => "OutsideMaintenanceWindow",
                Some(Paused) => "Paused",
                _ => "NotPaused",
            },
        ),
        (is(&[RolledBack]), if is(&[RolledBack]) { "RolledBack" } else { "NotRolledBack" }),
        (!config_invalid, if config_invalid { super::CONFIG_INVALID } else { "Valid" }),
    ];
    let prev = std::mem::take(&mut st.conditions);
    st.conditions = TYPES
        .iter()
        .zip(values)
        .map(|(ty, (on, why))| condition(&prev, ty, on, why, reason, generation, now))
        .collect();
}

/// A condition of type `type_`, True when `on`; its `lastTransitionTime` is the one in `prev`
/// when the status there is the same, `now` otherwise.
pub fn condition(
    prev: &[Condition],
    type_: &str,
    on: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if on { "True" } else { "False" };
    let since = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(st: &'a AgentRolloutStatus, ty: &str) -> &'a Condition {
        st.conditions.iter().find(|c| c.type_ == ty).unwrap()
    }

    #[test]
    fn a_rollback_is_degraded_not_available_and_keeps_its_transition_time() {
        let t0: Timestamp = "2026-01-05T00:00:00Z".parse().unwrap();
        let mut st = AgentRolloutStatus { phase: Some(RolloutPhase::RollingBack), ..Default::default() };
        update(&mut st, DecisionKind::RollBack, "rolling back", Some(2), t0);
        assert_eq!(get(&st, "Degraded").status, "True");
        assert_eq!(get(&st, "Degraded").reason, "HealthGateFailed");
        assert_eq!(get(&st, "Available").status, "False");
        assert_eq!(get(&st, "Progressing").status, "True");
        assert_eq!(get(&st, "Progressing").observed_generation, Some(2));
        let later = t0 + jiff::SignedDuration::from_secs(60);
        st.phase = Some(RolloutPhase::RolledBack);
        update(&mut st, DecisionKind::RollBack, "rolled back", Some(2), later);
        assert_eq!(get(&st, "RolledBack").status, "True");
        assert_eq!(get(&st, "RolledBack").last_transition_time.0, later);
        assert_eq!(get(&st, "Degraded").last_transition_time.0, t0, "still degraded: the time stays");
        assert_eq!(get(&st, "Progressing").status, "False");
    }

    #[test]
    fn a_closed_window_pauses_with_its_own_reason() {
        let mut st = AgentRolloutStatus { phase: Some(RolloutPhase::Paused), ..Default::default() };
        update(&mut st, DecisionKind::Wait, "outside every maintenance window", None, Timestamp::UNIX_EPOCH);
        assert_eq!(get(&st, "Paused").reason, "OutsideMaintenanceWindow");
        assert_eq!(st.conditions.len(), TYPES.len());
        assert_eq!(get(&st, "ConfigValid").status, "True");
    }
}
