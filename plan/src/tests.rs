//! Planner behaviour, one decision at a time, and its invariants under random inputs.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use vigil_crds::AgentHealth;
use vigil_crds::rollout::{
    AgentRolloutSpec, AgentRolloutStatus, FailurePolicy, MaintenanceWindow, Pin, RevisionOutcome, RevisionRecord,
    RolloutPhase,
};

use super::*;
use crate::simulate::{STABLE, spec as sim_spec, target_name};

const KEY: &str = "vigil-system/r";

pub(super) fn t(secs: i64) -> Timestamp {
    "2026-01-05T00:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_secs(secs)
}

pub(super) fn spec() -> AgentRolloutSpec {
    sim_spec(FailurePolicy::Rollback)
}

pub(super) fn healthy_agent(rev: &str, at: Timestamp) -> AgentView {
    AgentView {
        revision: rev.into(),
        ready: true,
        restarts: 0,
        waiting_reason: None,
        last_termination_reason: None,
        heartbeat: Some(at),
        health: Some(AgentHealth::Healthy),
        started_at: Some(at),
        created_at: None,
    }
}

pub(super) fn crashing_agent(rev: &str, at: Timestamp) -> AgentView {
    AgentView {
        revision: rev.into(),
        ready: false,
        restarts: 5,
        waiting_reason: Some("CrashLoopBackOff".into()),
        last_termination_reason: Some("Error".into()),
        heartbeat: None,
        health: None,
        started_at: Some(at),
        created_at: None,
    }
}

pub(super) fn fleet(n: usize) -> Vec<NodeView> {
    (0..n)
        .map(|i| NodeView {
            name: format!("node-{i:04}"),
            labels: [("pool".to_owned(), if i % 10 == 0 { "legacy" } else { "general" }.to_owned())].into(),
            attributes: NodeAttributes {
                os_image: if i % 10 == 0 { "legacy" } else { "ubuntu" }.into(),
                kernel: if i % 10 == 0 { "4.19.0" } else { "6.1.0" }.into(),
                arch: "amd64".into(),
                os: "linux".into(),
                instance_type: "m5.large".into(),
                zone: format!("zone-{}", i % 3),
            },
            revision: Some(STABLE.into()),
            ready: true,
            ready_changed_at: None,
            admitted_at: None,
            agent: Some(healthy_agent(STABLE, t(0))),
        })
        .collect()
}

fn observed(nodes: Vec<NodeView>, spec: &AgentRolloutSpec) -> Observed {
    Observed { nodes, config_sha256: Some(spec.target.config.sha256.clone()), ..Observed::default() }
}

pub(super) fn stable_status() -> AgentRolloutStatus {
    AgentRolloutStatus { stable_revision: Some(STABLE.into()), ..Default::default() }
}

pub(super) fn apply(nodes: &mut [NodeView], moves: &[Move], healthy_at: Option<Timestamp>) {
    for m in moves {
        let n = nodes.iter_mut().find(|n| n.name == m.node).unwrap();
        n.revision = m.to.clone();
        n.agent = match (&m.to, healthy_at) {
            (Some(r), Some(at)) => Some(healthy_agent(r, at)),
            _ => None,
        };
    }
}

pub(super) fn plan(spec: &AgentRolloutSpec, st: &AgentRolloutStatus, nodes: &[NodeView], now: Timestamp) -> Plan {
    next(spec, st, Some(1), KEY, &observed(nodes.to_vec(), spec), now, Limits::default())
}

#[test]
fn the_first_plan_admits_exactly_the_first_wave_spread_over_zones() {
    let s = spec();
    let nodes = fleet(100);
    let p = plan(&s, &stable_status(), &nodes, t(0));
    assert_eq!(p.decision.kind, "Admit");
    assert_eq!(p.moves.len(), 5, "5% of 100");
    let zones: std::collections::BTreeSet<String> =
        p.moves.iter().map(|m| nodes.iter().find(|n| n.name == m.node).unwrap().attributes.zone.clone()).collect();
    assert_eq!(zones.len(), 3, "wave 1 spans every zone");
    assert!(
        p.moves.iter().all(|m| m.to.as_deref() == Some(target_name(&s).as_str()) && m.from.as_deref() == Some(STABLE))
    );
    assert_eq!(p.status.current_wave, 1);
    assert_eq!(p.status.phase, Some(RolloutPhase::Progressing));
    assert_eq!(p.status.history[0].outcome, RevisionOutcome::InProgress);
}

#[test]
fn admits_next_wave_only_after_previous_passed_its_gate_and_bake_time() {
    let s = spec();
    let mut nodes = fleet(100);
    let p1 = plan(&s, &stable_status(), &nodes, t(0));
    apply(&mut nodes, &p1.moves, None);
    // Admitted but not yet running: hold.
    let p2 = plan(&s, &p1.status, &nodes, t(5));
    assert_eq!(p2.decision.kind, "Hold", "{}", p2.decision.reason);
    assert!(p2.moves.is_empty());
    apply(&mut nodes, &p1.moves, Some(t(10)));
    let p3 = plan(&s, &p2.status, &nodes, t(10));
    assert_eq!(p3.decision.kind, "Bake");
    assert!(p3.moves.is_empty());
    let p4 = plan(&s, &p3.status, &nodes, t(69));
    assert_eq!(p4.decision.kind, "Bake", "60 s of bake are not over at 59 s");
    let p5 = plan(&s, &p4.status, &nodes, t(70));
    assert_eq!(p5.decision.kind, "Advance", "{}", p5.decision.reason);
    assert_eq!(p5.status.current_wave, 2);
    assert_eq!(p5.moves.len(), 20, "wave 2 is 25% of 100: 20 more");
}

#[test]
fn the_bake_is_continuous_a_flap_during_it_starts_it_again() {
    let s = spec();
    let mut nodes = fleet(100);
    let at = |nodes: &mut Vec<NodeView>, now: Timestamp| {
        for a in nodes.iter_mut().filter_map(|n| n.agent.as_mut()) {
            a.heartbeat = Some(now);
        }
    };
    let p1 = plan(&s, &stable_status(), &nodes, t(0));
    apply(&mut nodes, &p1.moves, Some(t(10)));
    let baking = plan(&s, &p1.status, &nodes, t(10));
    assert_eq!(baking.decision.kind, "Bake");
    // At 50 s one node's agent is not ready (a restart within the budget): the wave holds.
    let flapping = p1.moves[0].node.clone();
    let ready = |nodes: &mut Vec<NodeView>, r: bool| {
        nodes.iter_mut().find(|n| n.name == flapping).unwrap().agent.as_mut().unwrap().ready = r;
    };
    ready(&mut nodes, false);
    at(&mut nodes, t(50));
    let held = plan(&s, &baking.status, &nodes, t(50));
    assert_eq!(held.decision.kind, "Hold", "{}", held.decision.reason);
    // Recovered at 55 s: the bake starts again, so at 70 s (60 s after the first start) it is
    // not over, and at 115 s (60 s after the recovery) it is.
    ready(&mut nodes, true);
    at(&mut nodes, t(55));
    let again = plan(&s, &held.status, &nodes, t(55));
    assert_eq!(again.decision.kind, "Bake");
    at(&mut nodes, t(70));
    let early = plan(&s, &again.status, &nodes, t(70));
    assert_eq!(early.decision.kind, "Bake", "a flap during the bake is not a pass: {}", early.decision.reason);
    at(&mut nodes, t(115));
    let done = plan(&s, &early.status, &nodes, t(115));
    assert_eq!(done.decision.kind, "Advance", "{}", done.decision.reason);
}

#[test]
fn a_crash_looping_wave_rolls_every_target_node_back_to_stable() {
    let s = spec();
    let target = target_name(&s);
    let mut nodes = fleet(100);
    let p1 = plan(&s, &stable_status(), &nodes, t(0));
    apply(&mut nodes, &p1.moves, None);
    for m in &p1.moves {
        nodes.iter_mut().find(|n| n.name == m.node).unwrap().agent = Some(crashing_agent(&target, t(1)));
    }
    let p2 = plan(&s, &p1.status, &nodes, t(30));
    assert_eq!(p2.decision.kind, "RollBack");
    assert_eq!(p2.moves.len(), 5);
    assert!(p2.moves.iter().all(|m| m.to.as_deref() == Some(STABLE)));
    assert_eq!(p2.status.history[0].outcome, RevisionOutcome::Bad);
    assert!(p2.decision.reason.contains("CrashLoopBackOff"), "{}", p2.decision.reason);
    apply(&mut nodes, &p2.moves, Some(t(31)));
    let p3 = plan(&s, &p2.status, &nodes, t(31));
    assert_eq!(p3.status.phase, Some(RolloutPhase::RolledBack));
    assert!(p3.moves.is_empty(), "a bad revision is never admitted again");
}

#[test]
fn a_first_rollout_whose_gate_fails_pauses_and_strips_no_node() {
    for policy in [FailurePolicy::Rollback, FailurePolicy::PinFailingGroup] {
        let s = sim_spec(policy);
        let target = target_name(&s);
        // A first install: no node runs an agent of this rollout, none is stable.
        let mut nodes = fleet(100);
        for n in &mut nodes {
            n.revision = None;
            n.agent = None;
        }
        let p1 = plan(&s, &AgentRolloutStatus::default(), &nodes, t(0));
        assert_eq!(p1.moves.len(), 5, "{}", p1.decision.reason);
        apply(&mut nodes, &p1.moves, None);
        for m in &p1.moves {
            nodes.iter_mut().find(|n| n.name == m.node).unwrap().agent = Some(crashing_agent(&target, t(1)));
        }
        let p2 = plan(&s, &p1.status, &nodes, t(30));
        assert_eq!(p2.decision.kind, "Pause", "{policy:?}: {}", p2.decision.reason);
        assert!(p2.moves.is_empty(), "no node loses its agent: {:?}", p2.moves);
        assert_eq!(p2.status.phase, Some(RolloutPhase::Paused));
        assert!(p2.decision.reason.contains(&p1.moves[0].node), "{}", p2.decision.reason);
        assert!(p2.decision.reason.contains("CrashLoopBackOff"), "{}", p2.decision.reason);
        assert!(!p2.decision.reason.contains("rolling back"), "{}", p2.decision.reason);
        // Planning again from the written status: still paused, still nothing moved, and the
        // pause holds when the nodes look healthy again (the verdict is recorded).
        let p3 = plan(&s, &p2.status, &nodes, t(60));
        assert!(p3.moves.is_empty(), "{:?}", p3.moves);
        for m in &p1.moves {
            nodes.iter_mut().find(|n| n.name == m.node).unwrap().agent = Some(healthy_agent(&target, t(90)));
        }
        let p4 = plan(&s, &p3.status, &nodes, t(100));
        assert_eq!(
            (p4.decision.kind, p4.status.phase),
            (DecisionKind::Pause, Some(RolloutPhase::Paused)),
            "{}",
            p4.decision.reason
        );
        assert!(p4.moves.is_empty(), "{:?}", p4.moves);
        assert_eq!(p4.status.history[0].outcome, RevisionOutcome::Bad);
        // The failure policy changed to Pause afterwards (a cautious `helm upgrade`): still
        // paused, nothing stripped.
        let mut cautious = s.clone();
        cautious.failure_policy = FailurePolicy::Pause;
        let p4b = plan(&cautious, &p4.status, &nodes, t(105));
        assert_eq!(
            (p4b.decision.kind, p4b.status.phase),
            (DecisionKind::Pause, Some(RolloutPhase::Paused)),
            "{}",
            p4b.decision.reason
        );
        assert!(p4b.moves.is_empty(), "a policy change stripped nodes: {:?}", p4b.moves);
        // A person's abort is carried out: the rollout's own agents come off as asked.
        let mut s2 = s.clone();
        s2.action = Some(vigil_crds::rollout::ManualAction {
            id: "a1".into(),
            kind: vigil_crds::rollout::ManualActionKind::Abort,
            to: None,
        });
        let p5 = plan(&s2, &p4.status, &nodes, t(110));
        assert_eq!(p5.decision.kind, "RollBack", "{}", p5.decision.reason);
        assert_eq!(p5.moves.len(), 5, "{:?}", p5.moves);
    }
}

#[test]
fn rollback_goes_on_while_paused_and_outside_windows_but_not_when_frozen() {
    let mut s = spec();
    let target = target_name(&s);
    let mut nodes = fleet(40);
    let p1 = plan(&s, &stable_status(), &nodes, t(0));
    apply(&mut nodes, &p1.moves, None);
    for m in &p1.moves {
        nodes.iter_mut().find(|n| n.name == m.node).unwrap().agent = Some(crashing_agent(&target, t(1)));
    }
    s.paused = true;
    s.maintenance_windows =
        vec![MaintenanceWindow { days: vec![], start: "02:00".into(), end: "03:00".into(), time_zone: "UTC".into() }];
    let p2 = plan(&s, &p1.status, &nodes, t(30));
    assert_eq!(p2.decision.kind, "RollBack");
    assert!(!p2.moves.is_empty());
    s.frozen = true;
    let p3 = plan(&s, &p1.status, &nodes, t(30));
    assert_eq!(p3.decision.kind, "Freeze");
    assert!(p3.moves.is_empty());
}

#[test]
fn pause_and_closed_windows_hold_new_admissions() {
    let mut s = spec();
    s.paused = true;
    let nodes = fleet(40);
    let p = plan(&s, &stable_status(), &nodes, t(0));
    assert_eq!(p.decision.kind, "Pause");
    assert!(p.moves.is_empty());
    s.paused = false;
    s.maintenance_windows =
        vec![MaintenanceWindow { days: vec![], start: "02:00".into(), end: "03:00".into(), time_zone: "UTC".into() }];
    let p = plan(&s, &stable_status(), &nodes, t(0));
    assert_eq!(p.decision.kind, "Wait");
    assert!(p.moves.is_empty());
    assert_eq!(p.requeue_after, std::time::Duration::from_secs(7200), "opens at 02:00, two hours after midnight");
    let p = plan(&s, &stable_status(), &nodes, t(7200));
    assert_eq!(p.decision.kind, "Admit");
}

#[test]
fn pinned_nodes_go_to_their_pin_and_incompatible_nodes_stay() {
    let mut s = spec();
    let target = target_name(&s);
    s.pins = vec![Pin {
        name: "legacy".into(),
        node_selector: vigil_crds::rollout::match_labels([("pool", "legacy")]),
        revision: "1.9.3".into(),
        reason: "old OS".into(),
    }];
    s.compatibility =
        Some(vigil_crds::rollout::CompatibilityGuard { architectures: vec!["amd64".into()], ..Default::default() });
    let mut nodes = fleet(100);
    nodes[1].attributes.arch = "arm64".into();
    nodes[0].revision = Some("r-old0000000".into()); // a legacy node, currently elsewhere
    let mut st = stable_status();
    st.history.push(RevisionRecord {
        revision: STABLE.into(),
        image: "x".into(),
        config_sha256: "y".into(),
        config_map: None,
        config_key: None,
        config_snapshot: None,
        version: Some("1.9.3".into()),
        admitted_at: None,
        outcome: RevisionOutcome::Good,
        reason: None,
    });
    // Run the whole rollout with healthy agents.
    let mut now = 0;
    for _ in 0..200 {
        let p = plan(&s, &st, &nodes, t(now));
        for m in &p.moves {
            let n = nodes.iter().find(|n| n.name == m.node).unwrap();
            if n.labels.get("pool") == Some("legacy") {
                assert_eq!(m.to.as_deref(), Some(STABLE), "a pinned node only ever moves to its pin");
                assert_eq!(m.pin.as_deref(), Some("legacy"));
            }
            assert_ne!(m.node, "node-0001", "an incompatible node never moves");
        }
        apply(&mut nodes, &p.moves, Some(t(now)));
        now += 30;
        for n in nodes.iter_mut() {
            if let Some(a) = n.agent.as_mut() {
                a.heartbeat = Some(t(now));
            }
        }
        st = p.status;
        if st.phase == Some(RolloutPhase::Completed) {
            break;
        }
    }
    assert_eq!(st.phase, Some(RolloutPhase::Completed));
    assert!(
        nodes.iter().filter(|n| n.labels.get("pool") == Some("legacy")).all(|n| n.revision.as_deref() == Some(STABLE))
    );
    assert_eq!(nodes[1].revision.as_deref(), Some(STABLE));
    assert!(
        nodes
            .iter()
            .filter(|n| n.labels.get("pool") == Some("general") && n.name != "node-0001")
            .all(|n| n.revision.as_deref() == Some(target.as_str()))
    );
    assert!(st.excluded.iter().any(|e| e.reason.contains("architecture") && e.nodes == 1));
    assert_eq!(st.stable_revision.as_deref(), Some(target.as_str()));
}

#[test]
fn a_failure_confined_to_one_os_image_pins_that_group_and_goes_on() {
    let s = sim_spec(FailurePolicy::PinFailingGroup);
    let target = target_name(&s);
    let mut nodes = fleet(200);
    let mut st = stable_status();
    let mut pinned = false;
    for step in 0..300 {
        let now = t(step * 20);
        let p = plan(&s, &st, &nodes, now);
        if p.decision.kind == "PinGroup" {
            pinned = true;
            assert!(p.decision.reason.contains("osImage=\"legacy\""), "{}", p.decision.reason);
        }
        for m in &p.moves {
            let n = nodes.iter_mut().find(|n| n.name == m.node).unwrap();
            n.revision = m.to.clone();
            let legacy = n.attributes.os_image == "legacy";
            n.agent =
                m.to.as_ref()
                    .map(|r| if legacy && *r == target { crashing_agent(r, now) } else { healthy_agent(r, now) });
        }
        for n in nodes.iter_mut() {
            if let Some(a) = n.agent.as_mut().filter(|a| a.ready) {
                a.heartbeat = Some(now);
            }
        }
        st = p.status;
        if st.phase == Some(RolloutPhase::Completed) {
            break;
        }
    }
    assert!(pinned);
    assert_eq!(st.phase, Some(RolloutPhase::Completed));
    assert_eq!(st.pinned_groups.len(), 1);
    assert_eq!(st.pinned_groups[0].attributes, BTreeMap::from([("osImage".to_owned(), "legacy".to_owned())]));
    assert!(nodes.iter().filter(|n| n.attributes.os_image == "legacy").all(|n| n.revision.as_deref() == Some(STABLE)));
    assert!(
        nodes
            .iter()
            .filter(|n| n.attributes.os_image != "legacy")
            .all(|n| n.revision.as_deref() == Some(target.as_str()))
    );
}

#[test]
fn manual_actions_promote_abort_and_roll_back_once_per_id() {
    use vigil_crds::rollout::{ManualAction, ManualActionKind};
    let mut s = spec();
    let target = target_name(&s);
    let mut nodes = fleet(100);
    let p1 = plan(&s, &stable_status(), &nodes, t(0));
    apply(&mut nodes, &p1.moves, Some(t(0)));
    let baking = plan(&s, &p1.status, &nodes, t(10));
    assert_eq!(baking.decision.kind, "Bake");
    // Promote: the bake ends now, the next wave is admitted at once.
    s.action = Some(ManualAction { id: "promote-1".into(), kind: ManualActionKind::Promote, to: None });
    let promoted = plan(&s, &baking.status, &nodes, t(11));
    assert_eq!(promoted.decision.kind, "Advance", "{}", promoted.decision.reason);
    assert_eq!(promoted.status.handled_action.as_deref(), Some("promote-1"));
    apply(&mut nodes, &promoted.moves, Some(t(11)));
    // Handled once: the same id later changes nothing about the bake of wave 2.
    let again = plan(&s, &promoted.status, &nodes, t(20));
    assert_eq!(again.decision.kind, "Bake");
    // Abort: everything on the target goes back, and the target is bad.
    s.action = Some(ManualAction { id: "abort-1".into(), kind: ManualActionKind::Abort, to: None });
    let aborted = plan(&s, &again.status, &nodes, t(21));
    assert_eq!(aborted.decision.kind, "RollBack");
    assert_eq!(aborted.moves.len(), 25, "wave 2's 25 nodes go back");
    assert!(
        aborted.moves.iter().all(|m| m.to.as_deref() == Some(STABLE) && m.from.as_deref() == Some(target.as_str()))
    );
    assert!(aborted.status.history[0].reason.as_deref().unwrap().contains("aborted by request abort-1"));
    // Rollback to a revision that is not Good in the history is refused with the field.
    s.action =
        Some(ManualAction { id: "rb-1".into(), kind: ManualActionKind::Rollback, to: Some("r-nowhere000".into()) });
    let refused = plan(&s, &aborted.status, &nodes, t(22));
    assert_eq!(refused.decision.kind, "Fail");
    assert!(refused.decision.reason.starts_with("spec.action.to"), "{}", refused.decision.reason);
}

#[test]
fn a_config_hash_mismatch_or_missing_config_stops_the_rollout() {
    let s = spec();
    let nodes = fleet(10);
    let mut o = observed(nodes.clone(), &s);
    o.config_sha256 = Some("c".repeat(64));
    let p = next(&s, &stable_status(), Some(1), KEY, &o, t(0), Limits::default());
    assert_eq!(p.decision.kind, "Fail");
    assert_eq!(p.status.phase, Some(RolloutPhase::Failed));
    assert!(p.decision.reason.contains("config hash mismatch"), "{}", p.decision.reason);
    assert!(p.moves.is_empty());
    o.config_sha256 = None;
    let p = next(&s, &stable_status(), Some(1), KEY, &o, t(0), Limits::default());
    assert!(p.decision.reason.contains("has no key agent.yaml"), "{}", p.decision.reason);
}

#[test]
fn nodes_down_before_the_wave_do_not_count_against_its_budget() {
    let s = spec();
    let mut nodes = fleet(20);
    let p1 = plan(&s, &stable_status(), &nodes, t(10));
    apply(&mut nodes, &p1.moves, Some(t(11)));
    // The one node of wave 1 went NotReady before the wave started.
    let n = nodes.iter_mut().find(|n| n.name == p1.moves[0].node).unwrap();
    n.ready = false;
    n.ready_changed_at = Some(t(0));
    n.agent.as_mut().unwrap().ready = false;
    let p2 = plan(&s, &p1.status, &nodes, t(700));
    assert_ne!(p2.decision.kind, "RollBack", "{}", p2.decision.reason);
}

#[test]
fn missing_heartbeats_fail_a_node_after_the_gap() {
    let s = spec();
    let target = target_name(&s);
    let mut nodes = fleet(20);
    let p1 = plan(&s, &stable_status(), &nodes, t(0));
    apply(&mut nodes, &p1.moves, Some(t(1)));
    let n = nodes.iter_mut().find(|n| n.name == p1.moves[0].node).unwrap();
    n.agent = Some(AgentView { heartbeat: Some(t(1)), ..healthy_agent(&target, t(1)) });
    let p2 = plan(&s, &p1.status, &nodes, t(62));
    assert_eq!(p2.decision.kind, "RollBack");
    assert!(p2.decision.reason.contains("heartbeat 61s old"), "{}", p2.decision.reason);
}

#[test]
fn wave_sizes_grow_round_up_and_end_at_everyone() {
    let s = spec();
    assert_eq!(wave_sizes(&s, 5000), [250, 1250, 5000]);
    assert_eq!(wave_sizes(&s, 7), [1, 2, 7]);
    assert_eq!(wave_sizes(&s, 1), [1, 1, 1]);
    assert_eq!(wave_sizes(&s, 0), [0, 0, 0]);
}

#[test]
fn kernel_versions_compare_numerically_and_globs_match() {
    assert!(kernel_at_least("5.15.0-91-generic", "5.4"));
    assert!(!kernel_at_least("4.19.0", "5.4"));
    assert!(kernel_at_least("5.4", "5.4.0"));
    assert!(!kernel_at_least("", "5.4"));
    assert!(glob("Ubuntu 22.04*", "Ubuntu 22.04.3 LTS"));
    assert!(!glob("*CentOS*6*", "CentOS Linux 7 (Core)"));
}

// --- properties ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct World {
    nodes: Vec<NodeView>,
    status: AgentRolloutStatus,
    policy: FailurePolicy,
    paused: bool,
    with_pin: bool,
    now: i64,
}

fn world() -> impl Strategy<Value = World> {
    let node = (0u8..4, 0u8..3, any::<bool>(), 0u8..6, any::<bool>());
    (
        proptest::collection::vec(node, 1..120),
        prop_oneof![Just(FailurePolicy::Rollback), Just(FailurePolicy::Pause), Just(FailurePolicy::PinFailingGroup)],
        any::<bool>(),
        any::<bool>(),
        1u32..4,
        0i64..2000,
    )
        .prop_map(|(ns, policy, paused, with_pin, wave, now)| {
            let s = spec();
            let target = target_name(&s);
            let nodes = ns
                .into_iter()
                .enumerate()
                .map(|(i, (rev, health, ready, zone, legacy))| {
                    let revision = match rev {
                        0 => None,
                        1 => Some(STABLE.to_owned()),
                        2 => Some(target.clone()),
                        _ => Some("r-elsewhere0".to_owned()),
                    };
                    let agent = revision.clone().map(|r| match health {
                        0 => healthy_agent(&r, t(now - 5)),
                        1 => crashing_agent(&r, t(0)),
                        _ => AgentView { ready: false, ..healthy_agent(&r, t(0)) },
                    });
                    NodeView {
                        name: format!("n{i:03}"),
                        labels: [("pool".to_owned(), if legacy { "legacy" } else { "general" }.to_owned())].into(),
                        attributes: NodeAttributes {
                            os_image: if legacy { "legacy" } else { "ubuntu" }.into(),
                            kernel: "6.1".into(),
                            arch: "amd64".into(),
                            os: "linux".into(),
                            instance_type: "m5".into(),
                            zone: format!("z{zone}"),
                        },
                        revision,
                        ready,
                        ready_changed_at: (!ready).then(|| t(0)),
                        admitted_at: None,
                        agent,
                    }
                })
                .collect();
            let status = AgentRolloutStatus {
                stable_revision: Some(STABLE.into()),
                target_revision: Some(target.clone()),
                current_wave: wave,
                wave_started_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(0))),
                history: vec![
                    RevisionRecord {
                        revision: target,
                        image: s.target.image.clone(),
                        config_sha256: s.target.config.sha256.clone(),
                        config_map: None,
                        config_key: None,
                        config_snapshot: None,
                        version: None,
                        admitted_at: None,
                        outcome: RevisionOutcome::InProgress,
                        reason: None,
                    },
                    RevisionRecord {
                        revision: STABLE.into(),
                        image: "x".into(),
                        config_sha256: "y".into(),
                        config_map: None,
                        config_key: None,
                        config_snapshot: None,
                        version: Some("1.9.3".into()),
                        admitted_at: None,
                        outcome: RevisionOutcome::Good,
                        reason: None,
                    },
                ],
                ..Default::default()
            };
            World { nodes, status, policy, paused, with_pin, now }
        })
}

fn world_spec(w: &World) -> AgentRolloutSpec {
    let mut s = sim_spec(w.policy);
    s.paused = w.paused;
    if w.with_pin {
        s.pins = vec![Pin {
            name: "legacy".into(),
            node_selector: vigil_crds::rollout::match_labels([("pool", "legacy")]),
            revision: "1.9.3".into(),
            reason: "r".into(),
        }];
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_plan_is_idempotent_on_an_unchanged_snapshot(w in world()) {
        let s = world_spec(&w);
        let a = plan(&s, &w.status, &w.nodes, t(w.now));
        let b = plan(&s, &w.status, &w.nodes, t(w.now));
        prop_assert_eq!(&a, &b);
        // Planning again from the status it wrote, with nothing else changed, asks for the
        // same moves and writes the same status.
        let c = plan(&s, &a.status, &w.nodes, t(w.now));
        prop_assert_eq!(&a.moves, &c.moves);
        prop_assert_eq!(&a.status, &c.status);
    }

    #[test]
    fn pinned_nodes_only_move_to_their_pin(w in world()) {
        let s = world_spec(&w);
        let p = plan(&s, &w.status, &w.nodes, t(w.now));
        for m in &p.moves {
            let n = w.nodes.iter().find(|n| n.name == m.node).unwrap();
            if w.with_pin && n.labels.get("pool") == Some("legacy") {
                prop_assert_eq!(m.to.as_deref(), Some(STABLE));
            }
            prop_assert_ne!(m.from.as_ref(), m.to.as_ref(), "a move changes something");
        }
    }

    #[test]
    fn no_wave_grows_past_its_size(w in world()) {
        let s = world_spec(&w);
        let target = target_name(&s);
        let p = plan(&s, &w.status, &w.nodes, t(w.now));
        let mut nodes = w.nodes.clone();
        let before = nodes.iter().filter(|n| n.revision.as_deref() == Some(target.as_str())).count();
        apply(&mut nodes, &p.moves, None);
        let after = nodes.iter().filter(|n| n.revision.as_deref() == Some(target.as_str())).count();
        if after > before {
            // Waves are shares of the selected nodes less those excluded by the spec (pins,
            // guard); groups the operator pinned itself still count, so pinning never shrinks
            // a wave below what it already admitted.
            let excluded: usize = p.status.excluded.iter().map(|e| e.nodes as usize).sum();
            let auto: usize = p.status.excluded.iter().filter(|e| e.reason.starts_with("pinned by auto-")).map(|e| e.nodes as usize).sum();
            let sizes = wave_sizes_for(&s, nodes.len() - excluded + auto, nodes.len() - excluded);
            let wave = p.status.current_wave as usize;
            prop_assert!(after <= sizes[wave - 1], "{after} on target after the plan (before {before}), wave {wave} allows {}: {} / {:?} / excluded {:?}", sizes[wave - 1], p.decision.reason, p.status.pinned_groups, p.status.excluded);
            prop_assert!(!s.paused, "nothing is admitted while paused");
            prop_assert!(wave <= w.status.current_wave as usize + 1, "at most one wave further per plan");
        }
    }

    #[test]
    fn a_failed_gate_under_rollback_moves_only_back_to_stable(w in world()) {
        let mut s = world_spec(&w);
        s.failure_policy = FailurePolicy::Rollback;
        let p = plan(&s, &w.status, &w.nodes, t(w.now));
        if p.decision.kind == "RollBack" {
            let pinned = |name: &str| w.with_pin && w.nodes.iter().any(|n| n.name == name && n.labels.get("pool") == Some("legacy"));
            for m in p.moves.iter().filter(|m| !pinned(&m.node)) {
                prop_assert_eq!(m.to.as_deref(), Some(STABLE));
            }
            prop_assert_eq!(p.status.history[0].outcome, RevisionOutcome::Bad);
        }
    }
}

#[test]
fn a_config_the_agent_would_refuse_admits_no_node_and_a_fixed_one_starts_wave_one() {
    let s = spec();
    let nodes = fleet(100);
    let mut o = observed(nodes.clone(), &s);
    o.config_error = Some("ConfigMap ns/cfg key agent.yaml: unknown field `not_a_key` at line 2 column 1".into());
    let p = next(&s, &stable_status(), Some(1), KEY, &o, t(0), Limits::default());
    assert_eq!(p.decision.kind, super::CONFIG_INVALID);
    assert!(p.moves.is_empty(), "{:?}", p.moves);
    assert_eq!(p.status.phase, Some(RolloutPhase::Failed));
    assert!(p.decision.reason.ends_with("unknown field `not_a_key` at line 2 column 1"), "{}", p.decision.reason);
    let valid = p.status.conditions.iter().find(|c| c.type_ == "ConfigValid").unwrap();
    assert_eq!((valid.status.as_str(), valid.reason.as_str()), ("False", "ConfigInvalid"));
    assert!(p.status.history.is_empty(), "the refused target is not a revision of the rollout");
    // Mid-rollout too: nodes already on the old target stay where they are.
    let mut moved = nodes.clone();
    let first = plan(&s, &stable_status(), &moved, t(0));
    apply(&mut moved, &first.moves, Some(t(1)));
    let mut o = observed(moved, &s);
    o.config_error = Some("bad".into());
    let held = next(&s, &first.status, Some(1), KEY, &o, t(10), Limits::default());
    assert!(held.moves.is_empty());
    // The config fixed: the next plan admits wave 1, and the condition turns True.
    let fixed = plan(&s, &p.status, &nodes, t(60));
    assert_eq!(fixed.decision.kind, "Admit");
    assert_eq!(fixed.moves.len(), 5);
    let valid = fixed.status.conditions.iter().find(|c| c.type_ == "ConfigValid").unwrap();
    assert_eq!(valid.status, "True");
}
