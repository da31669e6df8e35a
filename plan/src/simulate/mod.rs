//! The fleet simulator: the real planner driving thousands of simulated nodes with injected
//! faults, a simulated kubelet, a simulated API write limit, and operator restarts at random
//! instants. Pure and seeded: the same scenario gives the same timeline.
//!
//! Each simulated second the kubelet model moves pods to the revision their node's label
//! names, starts them (or crash-loops them, per the fault), renews heartbeats; the operator
//! plans at its requeue time or every few seconds (as watch events would wake it), writes the
//! status first and then the plan's label moves within the API write budget (the order the
//! controller acts in: the status records the intent before any node moves). An operator
//! restart either loses the whole reconcile (a crash before the status write) or lands the
//! status and only part of the moves (a crash mid-act). After every step the invariants are
//! checked.

mod fault;

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use vigil_crds::AgentHealth;
use vigil_crds::rollout::{AgentRolloutSpec, AgentRolloutStatus, RolloutPhase};

pub use fault::{Fault, FaultKind, parse_fault};

use crate::{AgentView, DecisionKind, Limits, NodeAttributes, NodeView, Observed};

/// A scenario to simulate.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Nodes in the fleet.
    pub nodes: usize,
    /// Zones the nodes spread over.
    pub zones: usize,
    /// Share of nodes on the legacy OS image (`os-image=legacy`).
    pub legacy_share: f64,
    /// Faults of the target revision.
    pub faults: Vec<Fault>,
    /// Operator restarts at random instants over the run.
    pub operator_restarts: usize,
    /// Label writes the API accepts per second.
    pub writes_per_second: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Longest simulated time.
    pub max_time: Duration,
    /// What the fleet does meanwhile: nodes joining, rebooting, leaving.
    pub fleet_events: Vec<FleetEvent>,
    /// How long to go on after the rollout finished and the last fleet event fired (to see
    /// what the rollout does about events after completion).
    pub hold_after: Duration,
}

/// When a fleet event fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// Seconds after the start.
    Second(u64),
    /// Seconds after the rollout completed.
    AfterCompletion(u64),
}

/// Something the fleet does during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetEvent {
    /// `count` new nodes join; `broken`: their agents crash-loop whatever the revision.
    Join { at: At, count: usize, broken: bool },
    /// `count` nodes, spread over the fleet, go down for `secs` (kubelet and agent silent);
    /// their agents restart when they are back.
    Reboot { at: At, count: usize, secs: u64 },
    /// `count` nodes leave the fleet.
    Leave { at: At, count: usize },
}

impl FleetEvent {
    fn at(&self) -> At {
        match *self {
            Self::Join { at, .. } | Self::Reboot { at, .. } | Self::Leave { at, .. } => at,
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            nodes: 1000,
            zones: 3,
            legacy_share: 0.1,
            faults: Vec::new(),
            operator_restarts: 0,
            writes_per_second: 50,
            seed: 1,
            max_time: Duration::from_secs(6 * 3600),
            fleet_events: Vec::new(),
            hold_after: Duration::ZERO,
        }
    }
}

/// One line of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineEntry {
    /// Simulated seconds since the start.
    pub at: u64,
    /// Decision kind.
    pub kind: &'static str,
    /// The decision's reason.
    pub reason: String,
    /// Nodes on the target revision at that instant.
    pub on_target: usize,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Decisions, each time the reason changed.
    pub timeline: Vec<TimelineEntry>,
    /// The final phase.
    pub phase: Option<RolloutPhase>,
    /// Simulated seconds until Completed or RolledBack (or the limit).
    pub finished_after: u64,
    /// Nodes that ever ran the target revision.
    pub ever_on_target: usize,
    /// Of those, nodes outside the first wave's set.
    pub outside_first_wave: usize,
    /// Seconds from the first failed gate until no eligible node ran the target.
    pub rollback_seconds: Option<u64>,
    /// Label writes applied.
    pub writes: usize,
    /// Plans computed.
    pub plans: usize,
    /// Operator restarts that happened.
    pub restarts: usize,
    /// Invariant violations (empty when all held).
    pub violations: Vec<String>,
    /// Nodes in the fleet at the end (joins and leaves counted).
    pub nodes_at_end: usize,
    /// Of those, nodes on the target revision at the end.
    pub on_target_at_end: usize,
    /// The longest a present node went without an assigned revision while a stable revision
    /// existed, seconds.
    pub longest_unassigned: u64,
    /// The largest size the current wave has had (wave, nodes): nodes leaving shrink a wave's
    /// size, but never take back what it admitted.
    wave_cap: (u32, usize),
}

struct Pod {
    revision: String,
    created: u64,
    restarts: u32,
    last_heartbeat: Option<u64>,
}

/// The stable and target revisions every scenario uses.
pub const STABLE: &str = "r-0000000001";

/// Builds the rollout spec of a scenario (waves 5/25/100, 60 s bake, the given policy).
pub fn spec(policy: vigil_crds::rollout::FailurePolicy) -> AgentRolloutSpec {
    let mut s: AgentRolloutSpec = serde_json::from_value(serde_json::json!({
        "target": {
            "image": format!("registry.example/vigil-agent:2.0.0@sha256:{}", "a".repeat(64)),
            "version": "2.0.0",
            "config": {"configMap": "agent-config", "sha256": "b".repeat(64)}
        },
        "waves": [{"percent": 5, "bakeTime": "60s"}, {"percent": 25, "bakeTime": "60s"}, {"percent": 100, "bakeTime": "60s"}],
        "healthGate": {"heartbeatGap": "60s", "progressDeadline": "10m", "maxRestarts": 2, "maxFailedNodes": 0}
    }))
    .expect("a valid spec");
    s.failure_policy = policy;
    s
}

fn new_node(i: usize, legacy: bool, zones: usize, revision: Option<String>) -> NodeView {
    NodeView {
        name: format!("node-{i:05}"),
        labels: [("pool".to_owned(), if legacy { "legacy" } else { "general" }.to_owned())].into(),
        attributes: NodeAttributes {
            os_image: if legacy { "legacy" } else { "ubuntu-22.04" }.into(),
            kernel: if legacy { "4.19.0" } else { "6.1.0" }.into(),
            arch: "amd64".into(),
            os: "linux".into(),
            instance_type: if i.is_multiple_of(2) { "m5.large" } else { "c5.large" }.into(),
            zone: format!("zone-{}", i % zones.max(1)),
        },
        revision,
        ready: true,
        ready_changed_at: None,
        admitted_at: None,
        agent: None,
    }
}

/// Per node: what the fleet events did to it.
#[derive(Clone, Copy, Debug, Default)]
struct NodeFate {
    gone: bool,
    broken: bool,
    down_until: Option<u64>,
    unassigned_since: Option<u64>,
}

/// Runs a scenario to its end.
pub fn run(scenario: &Scenario, spec: &AgentRolloutSpec) -> Report {
    let mut rng = SmallRng::seed_from_u64(scenario.seed);
    let t0: Timestamp = "2026-01-05T00:00:00Z".parse().expect("a timestamp");
    let mut nodes: Vec<NodeView> = (0..scenario.nodes)
        .map(|i| {
            let legacy = rng.random_bool(scenario.legacy_share.clamp(0.0, 1.0));
            new_node(i, legacy, scenario.zones, Some(STABLE.into()))
        })
        .collect();
    let mut pods: Vec<Pod> = nodes
        .iter()
        .map(|_| Pod { revision: STABLE.into(), created: 0, restarts: 0, last_heartbeat: Some(0) })
        .collect();
    let target = target_name(spec);
    let mut status = AgentRolloutStatus { stable_revision: Some(STABLE.into()), ..Default::default() };
    let observed_cfg = Some(spec.target.config.sha256.clone());
    let max_secs = scenario.max_time.as_secs();
    let mut restarts_left = scenario.operator_restarts;
    let not_ready: BTreeSet<usize> = scenario
        .faults
        .iter()
        .filter_map(|f| if let FaultKind::NotReady { share } = f.kind { Some(share) } else { None })
        .flat_map(|share| (0..scenario.nodes).filter(|_| rng.random_bool(share.clamp(0.0, 1.0))).collect::<Vec<_>>())
        .collect();

    let mut report = Report::default();
    let mut ever: BTreeSet<usize> = BTreeSet::new();
    let mut first_wave: Option<BTreeSet<usize>> = None;
    let mut gate_failed_at: Option<u64> = None;
    let mut next_plan = 0u64;
    let mut last_reason = String::new();
    let mut pending_moves: Vec<crate::Move> = Vec::new();

    let mut fate: Vec<NodeFate> = vec![NodeFate::default(); nodes.len()];
    let mut fired = vec![false; scenario.fleet_events.len()];
    let mut completed_at: Option<u64> = None;
    let mut last_fired = 0u64;
    let mut target_was_good = false;

    for sec in 0..=max_secs {
        let now = t0 + SignedDuration::from_secs(i64::try_from(sec).unwrap_or(i64::MAX));
        // The fleet's own life.
        for (k, ev) in scenario.fleet_events.iter().enumerate() {
            let due = match ev.at() {
                At::Second(s) => sec >= s,
                At::AfterCompletion(s) => completed_at.is_some_and(|c| sec >= c + s),
            };
            if fired[k] || !due {
                continue;
            }
            fired[k] = true;
            last_fired = sec;
            let present: Vec<usize> = (0..nodes.len()).filter(|&i| !fate[i].gone).collect();
            match *ev {
                FleetEvent::Join { count, broken, .. } => {
                    for _ in 0..count {
                        let i = nodes.len();
                        let legacy = rng.random_bool(scenario.legacy_share.clamp(0.0, 1.0));
                        nodes.push(new_node(i, legacy, scenario.zones, None));
                        pods.push(Pod { revision: String::new(), created: sec, restarts: 0, last_heartbeat: None });
                        fate.push(NodeFate { broken, ..NodeFate::default() });
                    }
                }
                FleetEvent::Reboot { count, secs, .. } => {
                    let step = (present.len() / count.max(1)).max(1);
                    for &i in present.iter().step_by(step).take(count) {
                        fate[i].down_until = Some(sec + secs);
                        nodes[i].ready = false;
                        nodes[i].ready_changed_at = Some(now);
                    }
                }
                FleetEvent::Leave { count, .. } => {
                    let step = (present.len() / count.max(1)).max(1);
                    for &i in present.iter().skip(1).step_by(step).take(count) {
                        fate[i].gone = true;
                    }
                }
            }
        }
        // Kubelet and agents.
        for (i, n) in nodes.iter_mut().enumerate() {
            if fate[i].gone {
                continue;
            }
            match fate[i].down_until {
                Some(until) if sec < until => {
                    n.agent = n.agent.take().map(|a| AgentView { ready: false, ..a });
                    continue;
                }
                Some(_) => {
                    // Back from the reboot: the kubelet starts the agent again.
                    fate[i].down_until = None;
                    n.ready = true;
                    n.ready_changed_at = Some(now);
                    pods[i].created = sec;
                    pods[i].last_heartbeat = None;
                }
                None => {}
            }
            // Nodes that are down before the rollout starts (their budget is excused).
            if not_ready.contains(&i) && sec == 0 {
                n.ready = false;
                n.ready_changed_at = Some(now);
            }
            let pod = &mut pods[i];
            let want = n.revision.clone().unwrap_or_default();
            if pod.revision != want {
                *pod = Pod { revision: want.clone(), created: sec, restarts: 0, last_heartbeat: None };
            }
            let age = sec - pod.created;
            let bad = (pod.revision == target && scenario.faults.iter().any(|f| f.crashes(&n.attributes)))
                || (fate[i].broken && !pod.revision.is_empty());
            let start_delay = if pod.revision == target {
                scenario.faults.iter().filter_map(Fault::slow_start).max().unwrap_or(5)
            } else {
                5
            };
            let silent = pod.revision == target && scenario.faults.iter().any(|f| f.silent(&n.attributes));
            let mut ready = false;
            if bad {
                pod.restarts = u32::try_from(age / 10).unwrap_or(u32::MAX);
            } else if age >= start_delay && n.ready {
                ready = true;
                if !silent && (pod.last_heartbeat.is_none() || age.is_multiple_of(10)) {
                    pod.last_heartbeat = Some(sec);
                }
            }
            n.agent = (!pod.revision.is_empty()).then(|| AgentView {
                revision: pod.revision.clone(),
                ready,
                restarts: pod.restarts,
                waiting_reason: (bad && pod.restarts > 0).then(|| "CrashLoopBackOff".to_owned()),
                last_termination_reason: (bad && pod.restarts > 0).then(|| "Error".to_owned()),
                heartbeat: pod.last_heartbeat.map(|h| t0 + SignedDuration::from_secs(i64::try_from(h).unwrap_or(0))),
                health: ready.then_some(AgentHealth::Healthy),
                started_at: Some(t0 + SignedDuration::from_secs(i64::try_from(pod.created).unwrap_or(0))),
                created_at: None,
            });
        }

        // API writes land at the budgeted rate.
        let take = pending_moves.len().min(scenario.writes_per_second);
        for m in pending_moves.drain(..take) {
            if let Some(i) = index_of(&m.node) {
                nodes[i].revision = m.to.clone();
                // The annotation rides in the same patch as the label.
                nodes[i].admitted_at = m.to.is_some().then_some(now);
                report.writes += 1;
            }
        }

        // The operator.
        if sec >= next_plan && pending_moves.is_empty() {
            let present: Vec<NodeView> =
                nodes.iter().zip(&fate).filter(|(_, f)| !f.gone).map(|(n, _)| n.clone()).collect();
            let observed = Observed {
                nodes: present,
                config_sha256: observed_cfg.clone(),
                prometheus_value: None,
                prometheus_error: None,
                config_snapshot: None,
                pod_template: String::new(),
                config_error: None,
            };
            let p = crate::next(spec, &status, Some(1), "vigil-system/sim", &observed, now, Limits { max_moves: 500 });
            report.plans += 1;
            if p.decision.reason != last_reason {
                last_reason = p.decision.reason.clone();
                let on_target = nodes.iter().filter(|n| n.revision.as_deref() == Some(target.as_str())).count();
                report.timeline.push(TimelineEntry {
                    at: sec,
                    kind: p.decision.kind.as_str(),
                    reason: p.decision.reason.clone(),
                    on_target,
                });
            }
            if matches!(p.decision.kind, DecisionKind::RollBack | DecisionKind::PinGroup) && gate_failed_at.is_none() {
                gate_failed_at = Some(sec);
            }
            // An operator restart lands on a random reconcile: a quarter of them until the
            // scenario's count is used up.
            if restarts_left > 0 && rng.random_bool(0.25) {
                restarts_left -= 1;
                report.restarts += 1;
                let on_target = nodes.iter().filter(|n| n.revision.as_deref() == Some(target.as_str())).count();
                if rng.random_bool(0.5) {
                    // Crash mid-act: the status landed, some of the moves did.
                    let landed = rng.random_range(0..=p.moves.len());
                    let reason =
                        format!("operator restarted mid-act: status written, {landed} of {} moves sent", p.moves.len());
                    report.timeline.push(TimelineEntry { at: sec, kind: "Restart", reason, on_target });
                    pending_moves.extend(p.moves.into_iter().take(landed));
                    status = p.status;
                } else {
                    // The crash came before the status write: nothing happened.
                    report.timeline.push(TimelineEntry {
                        at: sec,
                        kind: "Restart",
                        reason: "operator restarted before acting".into(),
                        on_target,
                    });
                }
                last_reason.clear();
            } else {
                pending_moves.extend(p.moves);
                status = p.status;
            }
            next_plan = sec + p.requeue_after.as_secs().clamp(1, 5);
        }

        // Invariants and measurements, over the nodes present.
        let on_target: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| !fate[*i].gone && n.revision.as_deref() == Some(target.as_str()))
            .map(|(i, _)| i)
            .collect();
        ever.extend(on_target.iter().copied());
        if status.current_wave >= 2 && first_wave.is_none() {
            first_wave = Some(ever.clone());
        }
        if fate.iter().any(|f| f.gone) {
            // Only when nodes left: the invariants speak of the fleet as it is.
            let present: Vec<NodeView> =
                nodes.iter().zip(&fate).filter(|(_, f)| !f.gone).map(|(n, _)| n.clone()).collect();
            let present_on_target: Vec<usize> = present
                .iter()
                .enumerate()
                .filter(|(_, n)| n.revision.as_deref() == Some(target.as_str()))
                .map(|(i, _)| i)
                .collect();
            check_invariants(spec, &status, &present, &present_on_target, &mut report);
        } else {
            check_invariants(spec, &status, &nodes, &on_target, &mut report);
        }
        // A revision proven Good is never marked Bad by what nodes do afterwards.
        let good_now = status
            .history
            .iter()
            .any(|r| r.revision == target && r.outcome == vigil_crds::rollout::RevisionOutcome::Good);
        if target_was_good && !good_now && report.violations.len() <= 20 {
            report.violations.push(format!("at {sec}s: {target} was Good and is not any more: {:?}", status.reason));
        }
        target_was_good |= good_now;
        // No present node goes without an assigned revision once one is proven Good.
        for (i, n) in nodes.iter().enumerate() {
            let f = &mut fate[i];
            if f.gone || n.revision.is_some() || status.stable_revision.is_none() {
                f.unassigned_since = None;
                continue;
            }
            let since = *f.unassigned_since.get_or_insert(sec);
            report.longest_unassigned = report.longest_unassigned.max(sec - since);
        }
        if completed_at.is_none() && status.phase == Some(RolloutPhase::Completed) {
            completed_at = Some(sec);
        }
        if let (Some(f), None) = (gate_failed_at, report.rollback_seconds)
            && status.phase == Some(RolloutPhase::RolledBack)
        {
            report.rollback_seconds = Some(sec - f);
        }
        let all_fired = fired.iter().all(|f| *f);
        if matches!(status.phase, Some(RolloutPhase::Completed | RolloutPhase::RolledBack))
            && pending_moves.is_empty()
            && all_fired
            && sec >= last_fired + scenario.hold_after.as_secs()
        {
            report.finished_after = sec;
            break;
        }
        report.finished_after = sec;
    }
    report.phase = status.phase;
    report.nodes_at_end = fate.iter().filter(|f| !f.gone).count();
    report.on_target_at_end =
        nodes.iter().zip(&fate).filter(|(n, f)| !f.gone && n.revision.as_deref() == Some(target.as_str())).count();
    report.ever_on_target = ever.len();
    let first = first_wave.unwrap_or_else(|| ever.clone());
    report.outside_first_wave = ever.difference(&first).count();
    report
}

fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix("node-")?.parse().ok()
}

/// The revision name the scenario's spec targets.
pub fn target_name(spec: &AgentRolloutSpec) -> String {
    let image = vigil_crds::ImageRef::parse(&spec.target.image).expect("scenario image");
    let cfg = vigil_crds::ConfigHash::parse(&spec.target.config.sha256).expect("scenario config");
    // The simulator writes no pods: no template id (as its Observed says).
    vigil_crds::RevisionName::of(&image, &cfg, "").to_string()
}

fn check_invariants(
    spec: &AgentRolloutSpec,
    st: &AgentRolloutStatus,
    nodes: &[NodeView],
    on_target: &[usize],
    report: &mut Report,
) {
    if report.violations.len() > 20 {
        return;
    }
    // Never more nodes on the target than the current wave allows. The status is written
    // before the moves land, so moves still in flight are within the recorded wave too.
    let auto: BTreeSet<&str> = st.pinned_groups.iter().map(|g| g.name.as_str()).collect();
    let held_by_auto =
        |e: &&vigil_crds::rollout::ExcludedNodes| e.reason.strip_prefix("pinned by ").is_some_and(|n| auto.contains(n));
    let excluded: usize = st.excluded.iter().map(|e| e.nodes as usize).sum();
    let auto_pinned: usize = st.excluded.iter().filter(held_by_auto).map(|e| e.nodes as usize).sum();
    let eligible = nodes.len() - excluded;
    let sizes = crate::wave_sizes_for(spec, eligible + auto_pinned, eligible);
    let wave = (st.current_wave.max(1) as usize).min(sizes.len());
    // Nodes of an auto-pinned group may still be on their way back; count the others.
    let in_auto = |i: &usize| {
        st.pinned_groups
            .iter()
            .any(|g| g.attributes.iter().all(|(k, v)| nodes[*i].attributes.get(k) == Some(v.as_str())))
    };
    let counted = on_target.iter().filter(|i| !in_auto(i)).count();
    let cap = match report.wave_cap {
        (w, cap) if w == st.current_wave => cap.max(sizes[wave - 1]),
        _ => sizes[wave - 1],
    };
    report.wave_cap = (st.current_wave, cap);
    if counted > cap {
        report.violations.push(format!("{counted} nodes on the target, wave {wave} allows {cap}"));
    }
    // A finished rollback leaves no node on the target.
    if st.phase == Some(RolloutPhase::RolledBack) && !on_target.is_empty() {
        report.violations.push(format!("rolled back, yet {} node(s) run the target", on_target.len()));
    }
}
