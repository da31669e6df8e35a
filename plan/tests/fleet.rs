//! The fleet simulator over thousands of nodes: the invariants of design.md hold under every
//! fault model, and the figures the rollout engine promises are met.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::time::Duration;

use vigil_crds::rollout::{FailurePolicy, RolloutPhase};
use vigil_plan::simulate::{Scenario, parse_fault, run, spec};

fn scenario(nodes: usize, faults: &[&str]) -> Scenario {
    Scenario { nodes, faults: faults.iter().map(|f| parse_fault(f).unwrap()).collect(), ..Scenario::default() }
}

#[test]
fn a_revision_failing_everywhere_never_leaves_the_first_wave_and_is_rolled_back_within_a_minute() {
    let r = run(&scenario(5000, &["crashloop"]), &spec(FailurePolicy::Rollback));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.phase, Some(RolloutPhase::RolledBack));
    assert_eq!(r.outside_first_wave, 0, "blast radius: no node outside wave 1 ran the bad revision");
    assert_eq!(r.ever_on_target, 250, "wave 1 is 5% of 5000");
    let back = r.rollback_seconds.expect("a rollback happened");
    assert!(back <= 60, "every affected node back in {back} s at 50 writes/s");
}

#[test]
fn a_failure_on_one_os_image_pins_that_group_and_the_rest_completes() {
    let r = run(&scenario(5000, &["crashloop:os-image=legacy"]), &spec(FailurePolicy::PinFailingGroup));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.phase, Some(RolloutPhase::Completed));
    assert!(
        r.timeline.iter().any(|e| e.kind == "PinGroup" && e.reason.contains("osImage=\"legacy\"")),
        "{:#?}",
        r.timeline
    );
    let legacy_in_wave_1 = r.ever_on_target - r.timeline.last().unwrap().on_target;
    assert!(
        legacy_in_wave_1 > 0 && legacy_in_wave_1 < 50,
        "only wave 1's legacy nodes ever ran it: {legacy_in_wave_1}"
    );
}

#[test]
fn slow_starts_finish_and_missing_heartbeats_roll_back() {
    let slow = run(&scenario(2000, &["slow-start:120"]), &spec(FailurePolicy::Rollback));
    assert!(slow.violations.is_empty(), "{:?}", slow.violations);
    assert_eq!(slow.phase, Some(RolloutPhase::Completed), "two minutes of start-up are within the 10 minute deadline");
    let silent = run(&scenario(2000, &["missing-heartbeat"]), &spec(FailurePolicy::Rollback));
    assert_eq!(silent.phase, Some(RolloutPhase::RolledBack));
    assert_eq!(silent.outside_first_wave, 0);
    assert!(silent.timeline.iter().any(|e| e.reason.contains("no heartbeat")), "{:#?}", silent.timeline);
}

#[test]
fn nodes_down_before_the_rollout_do_not_stop_it() {
    let r = run(&scenario(2000, &["not-ready:0.02"]), &spec(FailurePolicy::Rollback));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.phase, Some(RolloutPhase::Completed));
}

#[test]
fn a_thousand_operator_restarts_at_random_instants_never_break_an_invariant() {
    let faults: [&[&str]; 4] = [&[], &["crashloop"], &["crashloop:os-image=legacy"], &["slow-start:60"]];
    let mut restarts = 0;
    let mut runs = 0;
    // Bounded: at most 400 runs; stops as soon as 1,000 restarts happened.
    for seed in 0..400u64 {
        if restarts >= 1000 {
            break;
        }
        let f = faults[(seed % 4) as usize];
        let policy = if seed % 8 < 4 { FailurePolicy::Rollback } else { FailurePolicy::PinFailingGroup };
        let s = Scenario { seed, operator_restarts: 40, max_time: Duration::from_secs(3600), ..scenario(300, f) };
        let r = run(&s, &spec(policy));
        assert!(r.violations.is_empty(), "seed {seed}, faults {f:?}: {:?}", r.violations);
        assert!(
            matches!(r.phase, Some(RolloutPhase::Completed | RolloutPhase::RolledBack)),
            "seed {seed}: ended {:?}",
            r.phase
        );
        if f == ["crashloop"] {
            assert_eq!(r.outside_first_wave, 0, "seed {seed}");
        }
        restarts += r.restarts;
        runs += 1;
    }
    assert!(restarts >= 1000, "only {restarts} restarts in {runs} runs");
    eprintln!("{restarts} operator restarts in {runs} runs, every invariant held");
}

use vigil_plan::simulate::{At, FleetEvent};

#[test]
fn nodes_joining_after_completion_get_the_revision_directly_and_a_broken_one_is_a_node_problem() {
    let mut s = scenario(1000, &[]);
    s.fleet_events = vec![
        FleetEvent::Join { at: At::AfterCompletion(60), count: 20, broken: false },
        FleetEvent::Join { at: At::AfterCompletion(120), count: 1, broken: true },
    ];
    s.hold_after = Duration::from_secs(1800);
    let r = run(&s, &spec(FailurePolicy::Rollback));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.phase, Some(RolloutPhase::Completed), "{:#?}", r.timeline.last());
    assert_eq!(r.nodes_at_end, 1021);
    assert_eq!(r.on_target_at_end, 1021, "the new nodes, the broken one too, run the proven revision");
    assert!(r.timeline.iter().any(|e| e.kind == "Join"), "{:#?}", r.timeline);
    assert!(r.timeline.iter().any(|e| e.kind == "NodeProblem" && e.reason.contains("node-01020")), "{:#?}", r.timeline);
    assert!(!r.timeline.iter().any(|e| e.kind == "RollBack"), "a node problem never rolls the fleet back");
    assert!(r.longest_unassigned <= 30, "a new node waited {} s for an agent", r.longest_unassigned);
}

#[test]
fn nodes_rebooting_mid_wave_and_after_completion_neither_fail_nor_undo_the_rollout() {
    let mut s = scenario(1000, &[]);
    s.fleet_events = vec![
        FleetEvent::Reboot { at: At::Second(200), count: 10, secs: 90 },
        FleetEvent::Reboot { at: At::AfterCompletion(30), count: 10, secs: 120 },
    ];
    s.hold_after = Duration::from_secs(600);
    let r = run(&s, &spec(FailurePolicy::Rollback));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.phase, Some(RolloutPhase::Completed), "{:#?}", r.timeline);
    assert_eq!(r.on_target_at_end, 1000);
    assert!(!r.timeline.iter().any(|e| e.kind == "RollBack"), "{:#?}", r.timeline);
}

#[test]
fn a_hundred_nodes_joining_and_a_hundred_leaving_during_the_rollout_leave_every_node_on_the_target() {
    let mut s = scenario(2000, &[]);
    s.fleet_events = vec![
        FleetEvent::Join { at: At::Second(100), count: 50, broken: false },
        FleetEvent::Leave { at: At::Second(150), count: 50 },
        FleetEvent::Join { at: At::Second(400), count: 50, broken: false },
        FleetEvent::Leave { at: At::Second(450), count: 50 },
    ];
    let r = run(&s, &spec(FailurePolicy::Rollback));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.phase, Some(RolloutPhase::Completed), "{:#?}", r.timeline.last());
    assert_eq!(r.nodes_at_end, 2000);
    assert_eq!(r.on_target_at_end, 2000);
    assert!(r.longest_unassigned <= 30, "a joining node waited {} s for an agent", r.longest_unassigned);
}

#[test]
fn sixty_five_thousand_nodes_with_no_fault_complete_with_one_write_per_node() {
    let r = run(&scenario(65_000, &[]), &spec(FailurePolicy::Rollback));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.phase, Some(RolloutPhase::Completed), "{:#?}", r.timeline.last());
    assert_eq!(r.on_target_at_end, 65_000);
    assert_eq!(r.writes, 65_000, "one label write per node, no rollback");
    assert!(!r.timeline.iter().any(|e| e.kind == "RollBack"), "no false failure at the write budget");
}

#[test]
fn a_revision_bad_everywhere_at_sixty_five_thousand_nodes_touches_no_node_outside_wave_one() {
    let r = run(&scenario(65_000, &["crashloop"]), &spec(FailurePolicy::Rollback));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.phase, Some(RolloutPhase::RolledBack));
    assert_eq!(r.outside_first_wave, 0);
    assert!(r.ever_on_target <= 3250, "within wave 1 (5%): {}", r.ever_on_target);
}
