//! What fleets do to a rollout: nodes joining and rebooting after it completed, nodes joining
//! while it is paused, late admission, waves of unavailable nodes, and the manual actions
//! around a revision proven Good or Bad.

use jiff::SignedDuration;
use vigil_crds::rollout::{ManualAction, ManualActionKind, Pin, RevisionOutcome, RolloutPhase};

use super::tests::{apply, crashing_agent, fleet, healthy_agent, plan, spec, stable_status, t};
use super::*;
use crate::simulate::{STABLE, target_name};

/// Every agent renews its heartbeat at `now` (the kubelets and agents of a healthy fleet).
fn beat(nodes: &mut [NodeView], now: Timestamp) {
    for n in nodes.iter_mut() {
        if let Some(a) = n.agent.as_mut() {
            a.heartbeat = Some(now);
        }
    }
}

/// Plans, applies the moves (agents healthy at once) and advances a minute, until Completed.
fn complete(s: &AgentRolloutSpec, nodes: &mut [NodeView]) -> (AgentRolloutStatus, Timestamp) {
    let mut st = stable_status();
    let mut now = t(0);
    for _ in 0..100 {
        beat(nodes, now);
        let p = plan(s, &st, nodes, now);
        apply(nodes, &p.moves, Some(now));
        for m in &p.moves {
            nodes.iter_mut().find(|n| n.name == m.node).unwrap().admitted_at = Some(now);
        }
        st = p.status;
        if st.phase == Some(RolloutPhase::Completed) {
            return (st, now);
        }
        now += SignedDuration::from_secs(60);
    }
    panic!("no completion: {:?}", st.reason)
}

fn joining(name: &str) -> NodeView {
    let mut n = fleet(1).remove(0);
    n.name = name.into();
    n.revision = None;
    n.agent = None;
    n
}

#[test]
fn a_node_joining_a_completed_rollout_gets_the_target_directly_and_the_rollout_stays_completed() {
    let s = spec();
    let mut nodes = fleet(20);
    let (st, done) = complete(&s, &mut nodes);
    let target = target_name(&s);
    nodes.push(joining("node-new"));
    let now = done + SignedDuration::from_secs(3600);
    beat(&mut nodes, now);
    let p = plan(&s, &st, &nodes, now);
    assert_eq!(p.decision.kind, "Join", "{}", p.decision.reason);
    assert_eq!(p.moves, [Move { node: "node-new".into(), from: None, to: Some(target.clone()), pin: None }]);
    assert_eq!(p.status.phase, Some(RolloutPhase::Completed));
    assert_eq!(p.status.current_wave, st.current_wave, "no wave starts again");

    // Its agent never comes up: a node problem, named, and the fleet stays where it is.
    let new = nodes.last_mut().unwrap();
    new.revision = Some(target.clone());
    new.admitted_at = Some(now);
    new.agent = Some(crashing_agent(&target, now));
    let later = now + SignedDuration::from_secs(3600);
    beat(&mut nodes, later);
    let p = plan(&s, &p.status, &nodes, later);
    assert_eq!(p.decision.kind, "NodeProblem", "{}", p.decision.reason);
    assert!(p.moves.is_empty(), "no node moves: {:?}", p.moves);
    assert_eq!(p.status.phase, Some(RolloutPhase::Completed));
    assert_eq!(p.status.failing_node_count, 1);
    assert_eq!(p.status.failing_nodes[0].name, "node-new");
    let rec = p.status.history.iter().find(|r| r.revision == target).unwrap();
    assert_eq!(rec.outcome, RevisionOutcome::Good, "a node that fails after completion never makes the target Bad");
}

#[test]
fn a_node_that_reboots_after_completion_is_a_node_problem_while_it_is_silent_and_nothing_once_back() {
    let s = spec();
    let mut nodes = fleet(20);
    let (st, done) = complete(&s, &mut nodes);
    let now = done + SignedDuration::from_secs(600);
    beat(&mut nodes, now);
    // node-0003 rebooted: its heartbeat is 5 minutes old and its pod is not ready.
    let n = nodes.iter_mut().find(|n| n.name == "node-0003").unwrap();
    let a = n.agent.as_mut().unwrap();
    a.heartbeat = Some(now - SignedDuration::from_secs(300));
    a.ready = false;
    let p = plan(&s, &st, &nodes, now);
    assert!(p.moves.is_empty());
    assert_eq!(p.decision.kind, "NodeProblem", "{}", p.decision.reason);
    assert_eq!(p.status.phase, Some(RolloutPhase::Completed));
    assert_eq!(p.status.failing_node_count, 1);
    assert_eq!(p.status.failing_nodes[0].name, "node-0003");
    // Back: all healthy again, plain Complete.
    let back = now + SignedDuration::from_secs(60);
    let n = nodes.iter_mut().find(|n| n.name == "node-0003").unwrap();
    n.agent = Some(healthy_agent(&target_name(&s), back));
    beat(&mut nodes, back);
    let p = plan(&s, &p.status, &nodes, back);
    assert_eq!(p.decision.kind, "Complete", "{}", p.decision.reason);
    assert_eq!(p.status.failing_node_count, 0);
}

#[test]
fn a_node_joining_while_the_rollout_is_paused_runs_the_stable_revision() {
    let mut s = spec();
    s.paused = true;
    let mut nodes = fleet(20);
    nodes.push(joining("node-new"));
    let p = plan(&s, &stable_status(), &nodes, t(0));
    assert_eq!(p.decision.kind, "Pause");
    assert_eq!(p.moves, [Move { node: "node-new".into(), from: None, to: Some(STABLE.into()), pin: None }]);
}

#[test]
fn a_node_admitted_late_gets_its_full_progress_deadline_from_its_own_admission() {
    let s = spec(); // progressDeadline 10m
    let mut nodes = fleet(20);
    let target = target_name(&s);
    let p = plan(&s, &stable_status(), &nodes, t(0));
    assert_eq!(p.moves.len(), 1, "5% of 20");
    // The move landed only 9 minutes later (throttled writes); 3 minutes after that the pod
    // is not ready yet: 12 minutes after the wave started, but 3 after the node's admission.
    let n = nodes.iter_mut().find(|n| n.name == p.moves[0].node).unwrap();
    n.revision = Some(target.clone());
    n.admitted_at = Some(t(540));
    n.agent = Some(AgentView { ready: false, heartbeat: None, health: None, ..healthy_agent(&target, t(700)) });
    let q = plan(&s, &p.status, &nodes, t(720));
    assert_eq!(q.decision.kind, "Hold", "{}", q.decision.reason);
    // Past its own deadline it fails.
    let r = plan(&s, &q.status, &nodes, t(540 + 601));
    assert_eq!(r.decision.kind, "RollBack", "{}", r.decision.reason);
}

#[test]
fn a_wave_made_only_of_nodes_that_were_unavailable_before_it_started_holds() {
    let s = spec();
    let mut nodes = fleet(20);
    let p = plan(&s, &stable_status(), &nodes, t(0));
    let target = target_name(&s);
    let n = nodes.iter_mut().find(|n| n.name == p.moves[0].node).unwrap();
    n.revision = Some(target);
    n.ready = false;
    n.ready_changed_at = Some(t(-60));
    n.agent = None;
    let q = plan(&s, &p.status, &nodes, t(3600));
    assert_eq!(q.decision.kind, "Hold", "{}", q.decision.reason);
    assert!(q.decision.reason.contains("0 healthy node(s), 1 needed"), "{}", q.decision.reason);
    assert_eq!(q.status.current_wave, 1, "the wave tested nothing and does not pass");
}

fn action(kind: ManualActionKind, id: &str) -> Option<ManualAction> {
    Some(ManualAction { id: id.into(), kind, to: None })
}

#[test]
fn retry_admits_a_bad_revision_again_from_wave_one() {
    let s = spec();
    let mut nodes = fleet(20);
    let target = target_name(&s);
    let p = plan(&s, &stable_status(), &nodes, t(0));
    apply(&mut nodes, &p.moves, None);
    for m in &p.moves {
        let n = nodes.iter_mut().find(|n| n.name == m.node).unwrap();
        n.agent = Some(crashing_agent(&target, t(10)));
    }
    let bad = plan(&s, &p.status, &nodes, t(60));
    assert_eq!(bad.decision.kind, "RollBack");
    apply(&mut nodes, &bad.moves, Some(t(60)));
    let back = plan(&s, &bad.status, &nodes, t(120));
    assert_eq!(back.status.phase, Some(RolloutPhase::RolledBack));

    let mut retry = s.clone();
    retry.action = action(ManualActionKind::Retry, "fixed-the-config");
    beat(&mut nodes, t(180));
    let again = plan(&retry, &back.status, &nodes, t(180));
    assert_eq!(again.decision.kind, "Admit", "{}", again.decision.reason);
    assert_eq!(again.moves.len(), 1, "wave 1 again");
    assert_eq!(again.status.current_wave, 1);
    assert_eq!(again.status.handled_action.as_deref(), Some("fixed-the-config"));
    let rec = again.status.history.iter().find(|r| r.revision == target).unwrap();
    assert_eq!(rec.outcome, RevisionOutcome::InProgress);
}

#[test]
fn aborting_the_only_good_revision_is_refused_and_an_earlier_good_one_is_restored() {
    let s = spec();
    let mut nodes = fleet(20);
    // The fleet's revision before this rollout is not in its history: aborting the
    // completed target has nothing proven Good to go back to.
    let (st, done) = complete(&s, &mut nodes);
    let mut abort = s.clone();
    abort.action = action(ManualActionKind::Abort, "a1");
    let later = done + SignedDuration::from_secs(60);
    beat(&mut nodes, later);
    let mut bare = st.clone();
    bare.history.retain(|r| r.revision == target_name(&s));
    let p = plan(&abort, &bare, &nodes, later);
    assert_eq!(p.decision.kind, "Fail", "{}", p.decision.reason);
    assert!(p.decision.reason.contains("only Good revision"), "{}", p.decision.reason);
    assert!(p.moves.is_empty(), "no node loses its agent");

    // With an earlier Good revision on record, the abort goes back to it.
    let mut with_old = st.clone();
    with_old.history.push(RevisionRecord {
        revision: STABLE.into(),
        image: "registry.example/vigil-agent@sha256:".to_owned() + &"c".repeat(64),
        config_sha256: "d".repeat(64),
        config_map: Some("agent-config".into()),
        config_key: Some("agent.yaml".into()),
        config_snapshot: None,
        version: Some("1.0.0".into()),
        admitted_at: None,
        outcome: RevisionOutcome::Good,
        reason: None,
    });
    let p = plan(&abort, &with_old, &nodes, later);
    assert_eq!(p.decision.kind, "RollBack", "{}", p.decision.reason);
    assert_eq!(p.status.stable_revision.as_deref(), Some(STABLE));
    assert!(p.moves.iter().all(|m| m.to.as_deref() == Some(STABLE)));
    assert!(!p.moves.is_empty());
}

#[test]
fn a_pin_by_version_holds_only_on_a_revision_proven_good() {
    let mut s = spec();
    let target = target_name(&s);
    // Pin the legacy pool to version 2.0.0, which the target carries but has not proven.
    s.pins = vec![Pin {
        name: "legacy".into(),
        node_selector: vigil_crds::rollout::match_labels([("pool", "legacy")]),
        revision: "2.0.0".into(),
        reason: "hold".into(),
    }];
    let nodes = fleet(20);
    let p = plan(&s, &stable_status(), &nodes, t(0));
    assert!(
        p.moves.iter().all(|m| !(m.node == "node-0000" || m.node == "node-0010") || m.to.as_deref() != Some(&target)),
        "pinned nodes are not moved to an untested revision: {:?}",
        p.moves
    );
}

#[test]
fn a_prometheus_gate_without_an_answer_holds_the_wave_and_says_why() {
    let mut s = spec();
    s.health_gate.prometheus = Some(vigil_crds::rollout::PrometheusGate {
        url: "http://prometheus:9090".into(),
        query: "up".into(),
        threshold: 1.0,
        fail_below: false,
    });
    let mut nodes = fleet(20);
    let p = plan(&s, &stable_status(), &nodes, t(0));
    apply(&mut nodes, &p.moves, Some(t(10)));
    for m in &p.moves {
        nodes.iter_mut().find(|n| n.name == m.node).unwrap().admitted_at = Some(t(0));
    }
    beat(&mut nodes, t(60));
    let mut o = Observed {
        nodes: nodes.clone(),
        config_sha256: Some(s.target.config.sha256.clone()),
        prometheus_error: Some("the query returned no series".into()),
        ..Observed::default()
    };
    let q = next(&s, &p.status, Some(1), "vigil-system/r", &o, t(60), Limits::default());
    assert_eq!(q.decision.kind, "Hold");
    assert!(q.decision.reason.ends_with("(the query returned no series)"), "{}", q.decision.reason);
    o.prometheus_value = Some(3.0);
    o.prometheus_error = None;
    let r = next(&s, &q.status, Some(1), "vigil-system/r", &o, t(70), Limits::default());
    assert_eq!(r.decision.kind, "RollBack", "{}", r.decision.reason);
    assert!(r.decision.reason.contains("above 1"), "{}", r.decision.reason);
}

#[test]
fn a_node_joining_a_stopped_rollout_gets_the_stable_revision_or_its_pin_and_nothing_else_moves() {
    let mut s = spec();
    s.pins.push(Pin {
        name: "legacy".into(),
        node_selector: vigil_crds::rollout::match_labels([("pool", "legacy")]),
        revision: STABLE.into(),
        reason: "held".into(),
    });
    s.compatibility = Some(CompatibilityGuard { min_kernel: Some("9.0".into()), ..Default::default() });
    let mut nodes = fleet(10);
    // Without the guard, so that the fleet itself is compatible.
    let mut open = s.clone();
    open.compatibility = None;
    let mut proven = stable_status();
    proven.history.push(RevisionRecord {
        revision: STABLE.into(),
        image: "registry.example/vigil-agent@sha256:1".into(),
        config_sha256: "1".repeat(64),
        config_map: None,
        config_key: None,
        config_snapshot: None,
        version: None,
        admitted_at: None,
        outcome: RevisionOutcome::Good,
        reason: None,
    });
    let first = plan(&open, &proven, &nodes, t(0));
    apply(&mut nodes, &first.moves, Some(t(1)));
    let general = |name: &str, kernel: &str| {
        let mut n = joining(name);
        n.labels.insert("pool", "general");
        n.attributes.kernel = kernel.into();
        n
    };
    let newcomer = general("node-new", "9.1.0");
    let old_kernel = general("node-old-kernel", "4.19.0");
    let pinned = joining("node-legacy"); // pool=legacy
    nodes.extend([newcomer, pinned, old_kernel]);
    let stopped = |o: &mut Observed, why: &str| match why {
        "config" => o.config_error = Some("unknown field `x`".into()),
        _ => o.config_sha256 = Some("0".repeat(64)),
    };
    for why in ["config", "hash"] {
        let mut o = Observed {
            nodes: nodes.clone(),
            config_sha256: Some(s.target.config.sha256.clone()),
            ..Observed::default()
        };
        stopped(&mut o, why);
        let p = next(&s, &first.status, Some(1), "vigil-system/r", &o, t(60), Limits::default());
        assert_eq!(p.status.phase, Some(RolloutPhase::Failed), "{why}: {}", p.decision.reason);
        assert_eq!(
            p.moves,
            [
                Move { node: "node-legacy".into(), from: None, to: Some(STABLE.into()), pin: Some("legacy".into()) },
                Move { node: "node-new".into(), from: None, to: Some(STABLE.into()), pin: None },
            ],
            "{why}: newcomers get an agent; the guard's node and every admitted one stay as they are"
        );
    }
}

/// Wave 1 of a 20-node fleet admitted at `t(0)`; its one node's name and the plan's status.
fn first_wave(s: &AgentRolloutSpec, nodes: &mut [NodeView]) -> (String, AgentRolloutStatus) {
    let p = plan(s, &stable_status(), nodes, t(0));
    assert_eq!(p.moves.len(), 1);
    let name = p.moves[0].node.clone();
    let n = nodes.iter_mut().find(|n| n.name == name).unwrap();
    n.revision = p.moves[0].to.clone();
    n.admitted_at = Some(t(0));
    (name, p.status)
}

fn node<'a>(nodes: &'a mut [NodeView], name: &str) -> &'a mut NodeView {
    nodes.iter_mut().find(|n| n.name == name).unwrap()
}

#[test]
fn a_node_down_longer_than_the_deadline_mid_wave_is_judged_on_its_merit_once_back() {
    let s = spec();
    let target = target_name(&s);
    let deadline = SignedDuration::try_from(std::time::Duration::from(s.health_gate.progress_deadline)).unwrap();
    for fate in ["healthy", "crashing", "never starts"] {
        let mut nodes = fleet(20);
        let (name, st) = first_wave(&s, &mut nodes);
        // The node goes NotReady 5 s into the wave, with the old agent's pod still reported
        // ready and its heartbeat frozen, and stays down three deadlines.
        let n = node(&mut nodes, &name);
        n.ready = false;
        n.ready_changed_at = Some(t(5));
        let down_for = deadline * 3;
        for at in [t(60), t(0) + deadline + SignedDuration::from_secs(1), t(0) + down_for] {
            let p = plan(&s, &st, &nodes, at);
            assert_eq!(p.decision.kind, "Hold", "{fate} at {at}: {}", p.decision.reason);
            assert!(p.decision.reason.contains("NotReady since"), "{}", p.decision.reason);
        }
        // Back: the kubelet reports Ready; the old heartbeat and the elapsed deadline fail nothing.
        let back = t(0) + down_for + SignedDuration::from_secs(1);
        let n = node(&mut nodes, &name);
        n.ready = true;
        n.ready_changed_at = Some(back);
        let p = plan(&s, &st, &nodes, back + SignedDuration::from_secs(1));
        assert_eq!(p.decision.kind, "Hold", "{fate}: just back: {}", p.decision.reason);
        let later = back + SignedDuration::from_secs(20);
        node(&mut nodes, &name).agent = match fate {
            "healthy" => Some(healthy_agent(&target, later)),
            "crashing" => Some(crashing_agent(&target, later)),
            _ => None,
        };
        let p = plan(&s, &st, &nodes, later);
        match fate {
            "healthy" => assert_eq!(p.decision.kind, "Bake", "{}", p.decision.reason),
            "crashing" => {
                assert_eq!(p.decision.kind, "RollBack", "{}", p.decision.reason);
                assert!(p.decision.reason.contains("CrashLoopBackOff"), "{}", p.decision.reason);
            }
            _ => {
                assert_eq!(p.decision.kind, "Hold", "{}", p.decision.reason);
                // It fails a whole deadline after it was back, not before.
                let p = plan(&s, &st, &nodes, back + deadline - SignedDuration::from_secs(1));
                assert_eq!(p.decision.kind, "Hold", "{}", p.decision.reason);
                let p = plan(&s, &st, &nodes, back + deadline + SignedDuration::from_secs(1));
                assert_eq!(p.decision.kind, "RollBack", "{}", p.decision.reason);
                assert!(p.decision.reason.contains("after the progress deadline"), "{}", p.decision.reason);
            }
        }
    }
}

#[test]
fn a_node_admitted_while_down_gets_its_whole_deadline_and_heartbeat_gap_once_back() {
    let s = spec();
    let target = target_name(&s);
    let deadline = SignedDuration::try_from(std::time::Duration::from(s.health_gate.progress_deadline)).unwrap();
    let gap = SignedDuration::try_from(std::time::Duration::from(s.health_gate.heartbeat_gap)).unwrap();
    let mut nodes = fleet(20);
    // Down before the rollout began, and admitted while down (the kubelet stopped).
    let first = plan(&s, &stable_status(), &nodes, t(0)).moves[0].node.clone();
    let n = node(&mut nodes, &first);
    n.ready = false;
    n.ready_changed_at = Some(t(-30));
    let (name, st) = first_wave(&s, &mut nodes);
    assert_eq!(name, first);
    let p = plan(&s, &st, &nodes, t(0) + deadline * 2);
    assert_eq!(p.decision.kind, "Hold", "{}", p.decision.reason);
    // Back two deadlines later; the target's agent starts, but its heartbeat is the previous
    // install's (older than the gap) and its pod is not ready yet.
    let back = t(0) + deadline * 2;
    let n = node(&mut nodes, &name);
    n.ready = true;
    n.ready_changed_at = Some(back);
    n.agent = Some(AgentView { ready: false, heartbeat: None, health: None, ..healthy_agent(&target, back) });
    let p = plan(&s, &st, &nodes, back + SignedDuration::from_secs(5));
    assert_eq!(p.decision.kind, "Hold", "not failed the moment it is back: {}", p.decision.reason);
    // Ready, and an old heartbeat from before the node was down: judged a gap after the return.
    let n = node(&mut nodes, &name);
    n.agent = Some(AgentView { heartbeat: Some(t(-40)), ..healthy_agent(&target, back) });
    let p = plan(&s, &st, &nodes, back + gap - SignedDuration::from_secs(1));
    assert_ne!(p.decision.kind, "RollBack", "{}", p.decision.reason);
    let p = plan(&s, &st, &nodes, back + gap + SignedDuration::from_secs(1));
    assert_eq!(p.decision.kind, "RollBack", "a heartbeat that never came once back fails: {}", p.decision.reason);
}

#[test]
fn a_revision_that_takes_its_nodes_down_fails_but_one_reboot_or_a_zone_outage_does_not() {
    let s = spec();
    let target = target_name(&s);
    // Wave 1 of 100 nodes: 5, admitted at t(0); their agents of the target start at t(10).
    let setup = || {
        let mut nodes = fleet(100);
        let p = plan(&s, &stable_status(), &nodes, t(0));
        assert_eq!(p.moves.len(), 5);
        for m in &p.moves {
            let n = node(&mut nodes, &m.node);
            n.revision = m.to.clone();
            n.admitted_at = Some(t(0));
            n.agent = Some(healthy_agent(&target, t(10)));
        }
        let wave: Vec<String> = p.moves.iter().map(|m| m.node.clone()).collect();
        (nodes, wave, p.status)
    };
    let down = |n: &mut NodeView| {
        n.ready = false;
        n.ready_changed_at = Some(t(40));
    };
    // Three of five go NotReady after the target started on them, the rest of the fleet is up.
    let (mut nodes, wave, st) = setup();
    for w in &wave[..3] {
        down(node(&mut nodes, w));
    }
    let p = plan(&s, &st, &nodes, t(60));
    assert_eq!(p.decision.kind, "RollBack", "{}", p.decision.reason);
    assert!(p.decision.reason.contains("went NotReady soon after the target's agent started"), "{}", p.decision.reason);
    // One reboot: the wave holds for it.
    let (mut nodes, wave, st) = setup();
    down(node(&mut nodes, &wave[0]));
    let p = plan(&s, &st, &nodes, t(60));
    assert_eq!(p.decision.kind, "Hold", "{}", p.decision.reason);
    // A zone outage: a third of every node is down, on the target or not.
    let (mut nodes, _, st) = setup();
    for n in nodes.iter_mut().filter(|n| n.attributes.zone == "zone-0") {
        down(n);
    }
    let p = plan(&s, &st, &nodes, t(60));
    assert_eq!(p.decision.kind, "Hold", "{}", p.decision.reason);
    // Two nodes rebooting hours after the target started on them (a rolling reboot) prove
    // nothing either.
    let (mut nodes, wave, st) = setup();
    beat(&mut nodes, t(4 * 3600 + 50));
    for w in &wave[..3] {
        let n = node(&mut nodes, w);
        n.ready = false;
        n.ready_changed_at = Some(t(4 * 3600));
    }
    let p = plan(&s, &st, &nodes, t(4 * 3600 + 60));
    assert_ne!(p.decision.kind, "RollBack", "{}", p.decision.reason);
    // With no node left off the target, a minority down is a rolling reboot, not the revision.
    assert!(!gate::takes_nodes_down(2, 100, 0, 0, 0));
    assert!(gate::takes_nodes_down(60, 100, 0, 0, 0));
    // Nodes that were down before the target's agent started on them prove nothing.
    let (mut nodes, wave, st) = setup();
    for w in &wave[..3] {
        let n = node(&mut nodes, w);
        n.ready = false;
        n.ready_changed_at = Some(t(5));
    }
    let p = plan(&s, &st, &nodes, t(60));
    assert_ne!(p.decision.kind, "RollBack", "{}", p.decision.reason);
}

#[test]
fn restarts_and_an_oom_kill_from_before_the_admission_fail_nothing_and_those_after_do() {
    use super::gate::{NodeHealth, judge};
    let s = spec();
    let target = target_name(&s);
    let mut nodes = fleet(20);
    let (name, _) = first_wave(&s, &mut nodes);
    let turn = t(0);
    // A pod of the same revision an earlier install left running (adopted): months of node
    // reboots and a past OOM kill in its counters, running well now.
    let old = AgentView {
        restarts: 9,
        last_termination_reason: Some("OOMKilled".into()),
        created_at: Some(turn - SignedDuration::from_hours(24 * 90)),
        ..healthy_agent(&target, t(30))
    };
    let n = node(&mut nodes, &name);
    n.agent = Some(old.clone());
    assert_eq!(judge(n, &target, &s.health_gate, turn, t(31)), NodeHealth::Healthy);
    // The same counters on a pod created for this admission fail it.
    n.agent = Some(AgentView { created_at: Some(turn + SignedDuration::from_secs(1)), ..old.clone() });
    assert!(
        matches!(judge(n, &target, &s.health_gate, turn, t(31)), NodeHealth::Failed(why) if why.contains("9 restarts"))
    );
    // An adopted pod that crash-loops now fails: what it does now counts.
    n.agent = Some(AgentView { created_at: old.created_at, ..crashing_agent(&target, t(30)) });
    assert!(
        matches!(judge(n, &target, &s.health_gate, turn, t(31)), NodeHealth::Failed(why) if why.contains("CrashLoopBackOff"))
    );
}
