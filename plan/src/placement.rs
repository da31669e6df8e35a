//! Where each selected node stands in a rollout, and why: the planner's own classification
//! (pins, compatibility guard, rollout order and wave sizes), for people and tools that ask
//! "which wave takes this node?" (`kubectl vigil status` and `why`). Pure, like the planner.

use std::collections::BTreeMap;

use vigil_crds::rollout::{AgentRolloutSpec, AgentRolloutStatus};

use super::model::NodeView;
use super::{PinHold, classify, order, wave_sizes_for};

/// Where one node stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// Held by a pin: a spec pin, or a group the operator pinned under PinFailingGroup.
    Pinned {
        /// The pin's name.
        pin: String,
        /// The revision it holds the node on; `None` when the pin names a revision this
        /// rollout never proved Good (the node then stays where it is).
        revision: Option<String>,
        /// The operator pinned the group (status.pinnedGroups), not a person (spec.pins).
        by_operator: bool,
    },
    /// Fails the compatibility guard: never moved.
    Excluded {
        /// Why, as the status counts it.
        reason: String,
    },
    /// Eligible: the wave that takes (or took) the node to the target.
    Wave {
        /// 1-based wave.
        wave: usize,
        /// 1-based place in the rollout order among the eligible nodes.
        position: usize,
    },
}

/// Every selected node's place, with the wave sizes the planner uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Node name → its place.
    pub places: BTreeMap<String, Place>,
    /// Cumulative node counts of the waves (the planner's `wave_sizes_for`).
    pub wave_sizes: Vec<usize>,
    /// Nodes no pin or guard holds.
    pub eligible: usize,
}

impl Placement {
    /// The place of `node`, if the rollout selects it.
    pub fn of(&self, node: &str) -> Option<&Place> {
        self.places.get(node)
    }
}

/// Places the `nodes` a rollout selects (`key` = `namespace/name`, as the controller names it).
///
/// Nodes already on `target` are counted in the waves in rollout order (the k-th of them in
/// wave `w` where the k-th node falls); the others in the order the planner admits them, after
/// those: exactly the wave that admits each node while the fleet does not change.
pub fn placement(
    spec: &AgentRolloutSpec,
    status: &AgentRolloutStatus,
    key: &str,
    target: Option<&str>,
    nodes: &[NodeView],
) -> Placement {
    let mut places = BTreeMap::new();
    let mut eligible: Vec<&NodeView> = Vec::new();
    let mut auto_pinned = 0usize;
    for n in nodes {
        match classify(spec, status, n) {
            super::Class::Pinned(pin, hold) => {
                let by_operator = status.pinned_groups.iter().any(|g| g.name == pin);
                auto_pinned += usize::from(by_operator);
                let revision = match hold {
                    PinHold::On(r) => r,
                    PinHold::Where => None,
                };
                places.insert(n.name.clone(), Place::Pinned { pin, revision, by_operator });
            }
            super::Class::Excluded(reason) => {
                places.insert(n.name.clone(), Place::Excluded { reason });
            }
            super::Class::Eligible => eligible.push(n),
        }
    }
    let sizes = wave_sizes_for(spec, eligible.len() + auto_pinned, eligible.len());
    let wave_of = |k: usize| sizes.iter().position(|&s| s >= k).map_or(sizes.len(), |i| i + 1);
    let order = order::rollout_order(key, &eligible);
    let on_target = |n: &NodeView| target.is_some() && n.revision.as_deref() == target;
    let admitted = order.iter().filter(|&&i| on_target(eligible[i])).count();
    let (mut k_in, mut k_out) = (0usize, 0usize);
    for (position, &i) in order.iter().enumerate() {
        let n = eligible[i];
        let k = if on_target(n) {
            k_in += 1;
            k_in
        } else {
            k_out += 1;
            admitted + k_out
        };
        places.insert(n.name.clone(), Place::Wave { wave: wave_of(k), position: position + 1 });
    }
    Placement { places, eligible: eligible.len(), wave_sizes: sizes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeAttributes;
    use crate::simulate::{STABLE, spec};
    use crate::{Limits, Observed, next};
    use vigil_crds::rollout::{FailurePolicy, Pin, match_labels};

    fn node(i: usize, rev: Option<&str>) -> NodeView {
        NodeView {
            name: format!("n{i:02}"),
            labels: [("pool".to_owned(), if i < 2 { "legacy" } else { "main" }.to_owned())].into(),
            attributes: NodeAttributes {
                zone: format!("z{}", i % 3),
                kernel: if i == 2 { "4.19.0" } else { "6.1.0" }.into(),
                ..Default::default()
            },
            revision: rev.map(str::to_owned),
            admitted_at: None,
            ready: true,
            ready_changed_at: None,
            agent: None,
        }
    }

    #[test]
    fn pins_and_the_guard_come_first_and_the_waves_take_the_rest_in_the_planners_order() {
        let mut s = spec(FailurePolicy::Rollback);
        s.pins = vec![Pin {
            name: "legacy".into(),
            node_selector: match_labels([("pool", "legacy")]),
            revision: STABLE.into(),
            reason: "old kernel".into(),
        }];
        s.compatibility =
            Some(vigil_crds::rollout::CompatibilityGuard { min_kernel: Some("5.4".into()), ..Default::default() });
        let st = AgentRolloutStatus::default();
        let nodes: Vec<NodeView> = (0..23).map(|i| node(i, Some(STABLE))).collect();
        let p = placement(&s, &st, "ns/r", Some("r-target0000"), &nodes);
        assert_eq!(p.eligible, 20);
        assert_eq!(p.wave_sizes, vec![1, 5, 20], "5% → 25% → 100% of 20");
        assert!(matches!(p.of("n00"), Some(Place::Pinned { pin, by_operator: false, .. }) if pin == "legacy"));
        assert_eq!(p.of("n02"), Some(&Place::Excluded { reason: "kernel below 5.4".into() }));
        let mut per_wave = [0usize; 3];
        let mut positions = Vec::new();
        for place in p.places.values() {
            if let Place::Wave { wave, position } = place {
                per_wave[wave - 1] += 1;
                positions.push(*position);
            }
        }
        assert_eq!(per_wave, [1, 4, 15], "each wave takes what it adds");
        positions.sort_unstable();
        assert_eq!(positions, (1..=20).collect::<Vec<_>>());
    }

    #[test]
    fn the_nodes_the_planner_admits_to_wave_one_are_those_placed_in_wave_one() {
        let s = spec(FailurePolicy::Rollback);
        let nodes: Vec<NodeView> = (0..40).map(|i| node(i, Some(STABLE))).collect();
        let observed = Observed {
            nodes: nodes.clone(),
            config_sha256: Some(s.target.config.sha256.clone()),
            ..Default::default()
        };
        let st = AgentRolloutStatus { stable_revision: Some(STABLE.into()), ..Default::default() };
        let plan = next(&s, &st, Some(1), "ns/r", &observed, jiff::Timestamp::UNIX_EPOCH, Limits::default());
        let target = plan.status.target_revision.clone().unwrap();
        let admitted: Vec<&str> =
            plan.moves.iter().filter(|m| m.to.as_deref() == Some(&target)).map(|m| m.node.as_str()).collect();
        let p = placement(&s, &plan.status, "ns/r", Some(&target), &nodes);
        let mut wave_one: Vec<&str> = p
            .places
            .iter()
            .filter(|(_, pl)| matches!(pl, Place::Wave { wave: 1, .. }))
            .map(|(n, _)| n.as_str())
            .collect();
        wave_one.sort_unstable();
        assert_eq!(admitted, wave_one);
        // Once moved, the same nodes are wave 1, and the next in order are wave 2.
        let moved: Vec<NodeView> = nodes
            .iter()
            .map(|n| {
                let mut n = n.clone();
                if admitted.contains(&n.name.as_str()) {
                    n.revision = Some(target.clone());
                }
                n
            })
            .collect();
        let after = placement(&s, &plan.status, "ns/r", Some(&target), &moved);
        for n in &admitted {
            assert!(matches!(after.of(n), Some(Place::Wave { wave: 1, .. })), "{n}");
        }
        assert_eq!(after.places.values().filter(|pl| matches!(pl, Place::Wave { wave: 2, .. })).count(), 8);
    }
}
