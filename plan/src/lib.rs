//! The rollout planner: spec, observed cluster, status and `now` in; a plan out.
//!
//! Pure: no I/O, no clock, no randomness. Everything the next step needs is in the rollout's
//! status and the nodes' labels, so an operator restart at any instant loses nothing, and the
//! same inputs always give the same plan.
//!
//! ```text
//! spec + status + Observed + now ──▶ next() ──▶ Plan { moves (node label changes),
//!                                                     status, decision, requeue_after }
//! ```
//!
//! Invariants (checked by the property tests and the fleet simulator):
//! 1. pinned and incompatible nodes never move to a revision other than their pin / where
//!    they are;
//! 2. no more nodes run the target than the current wave allows, and a wave grows only
//!    after the previous one passed its gate and bake time;
//! 3. a failed gate under the Rollback policy moves every node on the target back to the
//!    stable revision, and rollback ignores pause and maintenance windows;
//! 4. an unchanged input gives an unchanged plan.

pub mod attribution;
pub mod conditions;
pub mod gate;
pub mod model;
pub mod node_labels;
pub mod order;
pub mod overlap;
pub mod placement;
pub mod window;

pub mod facts;
pub mod observe;
pub mod shapes;
pub mod simulate;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use vigil_crds::rollout::{
    AgentRolloutSpec, AgentRolloutStatus, CompatibilityGuard, ExcludedNodes, FailurePolicy, ManualActionKind,
    PinnedGroup, RevisionNodes, RevisionOutcome, RevisionRecord, RolloutPhase,
};
use vigil_crds::{ConfigHash, ImageRef, RevisionName};

pub use model::{AgentView, Decision, DecisionKind, Limits, Move, NodeAttributes, NodeView, Observed, Plan};

use gate::NodeHealth;

/// Most revisions kept in status.history.
pub const HISTORY: usize = 10;

/// Plans the next step of a rollout. `key` identifies the rollout (`namespace/name`) and seeds
/// the node order.
pub fn next(
    spec: &AgentRolloutSpec,
    status: &AgentRolloutStatus,
    generation: Option<i64>,
    key: &str,
    observed: &Observed,
    now: Timestamp,
    limits: Limits,
) -> Plan {
    let plan_from = |st: &AgentRolloutStatus| step(spec, st, generation, key, observed, now, limits);
    let mut plan = plan_from(status);
    // Pinning a failing group changes which nodes are eligible; plan once more with the group
    // in place so that the status written already describes the fleet without it (and
    // planning again from it changes nothing). Each pass can only add a group, and there are
    // a handful of attributes, so this ends; the bound is a guard.
    for _ in 0..8 {
        if plan.status.pinned_groups.len() <= status.pinned_groups.len() || plan.decision.kind != DecisionKind::PinGroup
        {
            break;
        }
        // The second pass holds the group's nodes through the pin it now finds in the status,
        // so its moves include the first pass's.
        let again = plan_from(&plan.status);
        let pinned_more = again.decision.kind == DecisionKind::PinGroup;
        plan = Plan {
            moves: again.moves,
            requeue_after: plan.requeue_after.min(again.requeue_after),
            // The event says what happened (a group was pinned); the status says where the
            // rollout now stands.
            decision: if pinned_more { again.decision } else { plan.decision },
            status: again.status,
        };
        if !pinned_more {
            break;
        }
    }
    // One canonical order (by node) for the same set of moves, however it was reached.
    plan.moves.sort_by(|a, b| a.node.cmp(&b.node));
    plan
}

fn step(
    spec: &AgentRolloutSpec,
    status: &AgentRolloutStatus,
    generation: Option<i64>,
    key: &str,
    observed: &Observed,
    now: Timestamp,
    limits: Limits,
) -> Plan {
    let mut st = status.clone();
    st.observed_generation = generation;
    let mut p = Planner { spec, observed, now, limits, moves: Vec::new() };

    if spec.frozen {
        st.phase = Some(RolloutPhase::Frozen);
        return p.finish(
            st,
            DecisionKind::Freeze,
            "spec.frozen is set: nothing changes, not even a rollback".into(),
            Duration::from_secs(60),
        );
    }

    let target = match target_revision(spec, observed) {
        Ok(t) => t,
        Err(reason) => {
            st.phase = Some(RolloutPhase::Failed);
            p.place_newcomers(&st);
            return p.finish(st, DecisionKind::Fail, reason, Duration::from_secs(60));
        }
    };
    // A config the agent would refuse never reaches a node: no node is admitted to it, and
    // nodes stay where they are. Checked on every plan, so fixing the ConfigMap (and the
    // hash) moves on at once.
    if let Some(e) = &observed.config_error {
        st.phase = Some(RolloutPhase::Failed);
        let reason = format!("the target config would not start an agent: {e}");
        p.place_newcomers(&st);
        return p.finish(st, DecisionKind::ConfigInvalid, reason, Duration::from_secs(60));
    }
    adopt_target(spec, &mut st, &target, now);
    // The target's record names its snapshot once there is one (a record written before
    // snapshots existed gains it the first time its config is seen again).
    if let Some(snap) = &observed.config_snapshot
        && let Some(r) = st.history.iter_mut().find(|r| r.revision == target)
        && r.config_snapshot.is_none()
    {
        r.config_snapshot = Some(snap.clone());
    }
    if let Err(reason) = handle_action(spec, &mut st, &target, now) {
        st.phase = Some(RolloutPhase::Failed);
        p.place_newcomers(&st);
        return p.finish(st, DecisionKind::Fail, reason, Duration::from_secs(60));
    }
    let target_bad = st.history.iter().any(|r| r.revision == target && r.outcome == RevisionOutcome::Bad);

    // Pins first: a pinned node goes to its pin whatever else happens (it is a hold on a
    // known revision, so windows and pause do not apply; freeze did above).
    let mut eligible: Vec<&NodeView> = Vec::new();
    let mut excluded: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Nodes the operator pinned itself still count in the wave sizes, so that pinning a
    // failing group never shrinks a wave below the nodes it already admitted.
    let mut auto_pinned = 0usize;
    for node in &observed.nodes {
        match classify(spec, &st, node) {
            Class::Pinned(pin, hold) => {
                if st.pinned_groups.iter().any(|g| g.name == pin) {
                    auto_pinned += 1;
                }
                if let PinHold::On(rev) = hold {
                    p.push_move(node, rev, Some(pin.clone()));
                }
                excluded.entry(format!("pinned by {pin}")).or_default().push(node.name.clone());
            }
            Class::Excluded(why) => excluded.entry(why).or_default().push(node.name.clone()),
            Class::Eligible => eligible.push(node),
        }
    }

    st.failing_nodes.clear();
    st.failing_node_count = 0;
    let (kind, reason, requeue) = if target_bad || st.phase == Some(RolloutPhase::RollingBack) {
        p.roll_back(&mut st, &eligible, &target)
    } else {
        p.progress(&mut st, &eligible, auto_pinned, &target, key)
    };
    // Selected nodes that no wave admitted run the stable revision: a node that joins during a
    // pause, outside a maintenance window or after a rollback gets an agent all the same.
    if let Some(stable) = st.stable_revision.clone() {
        for n in &eligible {
            if n.revision.is_none() && !p.moves.iter().any(|m| m.node == n.name) {
                p.push_move(n, Some(stable.clone()), None);
            }
        }
    }
    fill_counts(&mut st, observed, &target, &excluded);
    p.finish(st, kind, reason, requeue)
}

/// What a rollback of `target` restores: the stable revision, or, when the target is the
/// stable one itself (aborting a completed rollout), the newest other Good revision.
pub fn restore_to(st: &AgentRolloutStatus, target: &str) -> Option<String> {
    match &st.stable_revision {
        Some(s) if s != target => Some(s.clone()),
        _ => st
            .history
            .iter()
            .find(|r| r.revision != target && r.outcome == RevisionOutcome::Good)
            .map(|r| r.revision.clone()),
    }
}

struct Planner<'a> {
    spec: &'a AgentRolloutSpec,
    observed: &'a Observed,
    now: Timestamp,
    limits: Limits,
    moves: Vec<Move>,
}

type Step = (DecisionKind, String, Duration);

impl Planner<'_> {
    fn push_move(&mut self, node: &NodeView, to: Option<String>, pin: Option<String>) {
        if node.revision != to && self.moves.len() < self.limits.max_moves {
            self.moves.push(Move { node: node.name.clone(), from: node.revision.clone(), to, pin });
        }
    }

    /// A stopped rollout (its target cannot be read or checked, or an action was refused)
    /// admits nothing, but selected nodes with no agent yet (joined or relabelled since) still
    /// get one: their pin's revision, or the stable one. A node the guard excludes, or one
    /// pinned to a revision this rollout never recorded, stays as it is.
    fn place_newcomers(&mut self, st: &AgentRolloutStatus) {
        let spec = self.spec;
        let observed = self.observed;
        for node in observed.nodes.iter().filter(|n| n.revision.is_none()) {
            match classify(spec, st, node) {
                Class::Pinned(pin, PinHold::On(rev)) => self.push_move(node, rev, Some(pin)),
                Class::Pinned(_, PinHold::Where) | Class::Excluded(_) => {}
                Class::Eligible => self.push_move(node, st.stable_revision.clone(), None),
            }
        }
    }

    fn budget_left(&self) -> bool {
        self.moves.len() < self.limits.max_moves
    }

    /// A first rollout whose target is Bad: there is nothing of its own to go back to, and
    /// rolling back would strip its nodes of their only agent, so it stays paused with every
    /// agent where it runs (docs/adr/0007-a-first-rollout-pauses.md).
    fn first_rollout_paused(&mut self, st: &mut AgentRolloutStatus, target: &str) -> Step {
        st.phase = Some(RolloutPhase::Paused);
        let why = recorded_reason(st, target).unwrap_or_default();
        (
            DecisionKind::Pause,
            format!(
                "health gate failed on a first rollout, with no earlier revision to roll back to: paused, every agent left where it runs (failing: {why}); fix the target and apply it again, retry it, or delete the rollout"
            ),
            Duration::from_secs(300),
        )
    }

    fn roll_back(&mut self, st: &mut AgentRolloutStatus, eligible: &[&NodeView], target: &str) -> Step {
        if st.stable_revision.as_deref() == Some(target) {
            st.stable_revision = restore_to(st, target);
        }
        let stable_owned = st.stable_revision.clone();
        let stable = stable_owned.as_deref();
        let on_target: Vec<&&NodeView> = eligible.iter().filter(|n| n.revision.as_deref() == Some(target)).collect();
        // The gate's verdict on a first rollout holds it paused, whatever the failure policy
        // says now (it may have been changed since); a person's abort or rollback (phase
        // RollingBack) is carried out as asked.
        if stable.is_none() && !on_target.is_empty() && st.phase != Some(RolloutPhase::RollingBack) {
            return self.first_rollout_paused(st, target);
        }
        if on_target.is_empty() {
            st.phase = Some(RolloutPhase::RolledBack);
            let why = recorded_reason(st, target).unwrap_or_default();
            return (
                DecisionKind::RollBack,
                format!("rolled back: every node is off {target} ({why})"),
                Duration::from_secs(300),
            );
        }
        st.phase = Some(RolloutPhase::RollingBack);
        for n in &on_target {
            self.push_move(n, stable.map(str::to_owned), None);
        }
        // A first rollout has nothing of its own to go back to: a person asked for its agents
        // to come off these nodes (agents of another install are not this rollout's to touch).
        let back =
            stable.unwrap_or("no agent (a first rollout, rolled back by request: its agents come off these nodes)");
        // The same words on every step of the rollback (the count aside), so that planning
        // again from the written status writes the same status.
        let why = recorded_reason(st, target).unwrap_or_else(|| "rollback requested".into());
        (
            DecisionKind::RollBack,
            format!("rolling back {} node(s) from {target} to {back}: health gate failed: {why}", on_target.len()),
            if on_target.len() > self.moves.len() { Duration::from_secs(1) } else { Duration::from_secs(5) },
        )
    }

    fn progress(
        &mut self,
        st: &mut AgentRolloutStatus,
        eligible: &[&NodeView],
        auto_pinned: usize,
        target: &str,
        key: &str,
    ) -> Step {
        if st.history.iter().any(|r| r.revision == target && r.outcome == RevisionOutcome::Good) {
            return self.maintain(st, eligible, target);
        }
        let gate = &self.spec.health_gate;
        let order = order::rollout_order(key, eligible);
        let sizes = wave_sizes_for(self.spec, eligible.len() + auto_pinned, eligible.len());
        let last_wave = sizes.len();
        let wave = (st.current_wave.max(1) as usize).min(last_wave);
        st.current_wave = u32::try_from(wave).unwrap_or(u32::MAX);
        let started = st.wave_started_at.as_ref().map_or(self.now, |t| t.0);
        if st.wave_started_at.is_none() {
            st.wave_started_at = Some(Time(self.now));
        }

        let admitted: Vec<&NodeView> =
            order.iter().map(|&i| eligible[i]).filter(|n| n.revision.as_deref() == Some(target)).collect();
        let mut failed: Vec<(&NodeView, String)> = Vec::new();
        let mut healthy: Vec<&NodeView> = Vec::new();
        let mut pending: Vec<(&NodeView, String)> = Vec::new();
        for n in &admitted {
            match gate::judge(n, target, gate, started, self.now) {
                NodeHealth::Healthy => healthy.push(n),
                NodeHealth::Pending(why) => pending.push((n, why)),
                NodeHealth::Failed(why) => failed.push((n, why)),
                NodeHealth::Excused => {}
            }
        }
        // Nodes down under the revision are excused one by one, but not as a crowd.
        let within = Duration::from(gate.progress_deadline);
        let down: Vec<&NodeView> =
            admitted.iter().copied().filter(|n| gate::went_down_under(n, target, within)).collect();
        let others: Vec<&&NodeView> = eligible.iter().filter(|n| n.revision.as_deref() != Some(target)).collect();
        let others_down = others.iter().filter(|n| !n.ready).count();
        if gate::takes_nodes_down(down.len(), admitted.len(), others_down, others.len(), gate.max_failed_nodes) {
            let why = format!(
                "went NotReady soon after the target's agent started on it, as did {} of the {} node(s) on the \
                 target ({others_down} of {} other selected node(s) are NotReady)",
                down.len(),
                admitted.len(),
                others.len()
            );
            failed.retain(|(n, _)| !down.iter().any(|d| d.name == n.name));
            failed.extend(down.iter().map(|n| (*n, why.clone())));
        }
        let wave_full = admitted.len() >= sizes[wave - 1];
        let prom = if wave_full && pending.is_empty() {
            gate::prometheus_fails(gate, self.observed.prometheus_value)
        } else {
            None
        };

        if failed.len() > gate.max_failed_nodes as usize || prom.is_some() {
            let why = match (&prom, failed.first()) {
                (Some(p), _) => p.clone(),
                (None, Some((n, w))) => format!(
                    "{} of {} node(s) in wave {wave} failed, e.g. {}: {w}",
                    failed.len(),
                    admitted.len(),
                    n.name
                ),
                (None, None) => "the health gate failed".into(),
            };
            return self.on_failure(st, eligible, &failed, &healthy, target, wave, why);
        }

        if !wave_full {
            return self.admit(st, eligible, &order, &admitted, sizes[wave - 1], target, wave);
        }
        if let Some((n, why)) = pending.first() {
            // The bake is continuous: a wave that stops being healthy starts its bake again
            // when it is healthy once more (a flap during the bake is not a pass).
            st.wave_ready_at = None;
            return (
                DecisionKind::Hold,
                format!("wave {wave}: waiting for {} node(s) to become healthy, e.g. {}: {why}", pending.len(), n.name),
                Duration::from_secs(10),
            );
        }
        let min_healthy = (gate.min_healthy_nodes as usize).min(admitted.len());
        if healthy.len() < min_healthy {
            st.wave_ready_at = None;
            return (
                DecisionKind::Hold,
                format!(
                    "wave {wave}: {} healthy node(s), {min_healthy} needed to pass (the others were unavailable before the wave started)",
                    healthy.len()
                ),
                Duration::from_secs(30),
            );
        }
        if gate.prometheus.is_some() && self.observed.prometheus_value.is_none() {
            let why = self.observed.prometheus_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
            return (
                DecisionKind::Hold,
                format!("wave {wave}: waiting for the Prometheus gate query to answer{why}"),
                Duration::from_secs(30),
            );
        }
        let ready_at = st.wave_ready_at.get_or_insert(Time(self.now)).0;
        let bake = Duration::from(self.spec.waves[wave - 1].bake_time);
        let baked = gate::elapsed(ready_at, self.now);
        if baked < bake {
            st.phase = Some(RolloutPhase::Baking);
            let left = bake - baked;
            let until = ready_at + jiff::SignedDuration::try_from(bake).unwrap_or(jiff::SignedDuration::ZERO);
            // The reason names the end of the bake, not the time left, so it does not change
            // (and the status is not rewritten) on every reconcile.
            return (
                DecisionKind::Bake,
                format!("wave {wave} healthy on {} node(s); baking until {until}", healthy.len()),
                left,
            );
        }
        if wave == last_wave {
            st.phase = Some(RolloutPhase::Completed);
            if let Some(r) = st.history.iter_mut().find(|r| r.revision == target) {
                r.outcome = RevisionOutcome::Good;
                r.reason = Some(format!("passed all {last_wave} waves"));
            }
            st.stable_revision = Some(target.to_owned());
            return (
                DecisionKind::Complete,
                format!("{target} runs on every eligible node ({})", admitted.len()),
                Duration::from_secs(300),
            );
        }
        // The wave passed its gate and bake time: the next one may grow.
        st.current_wave += 1;
        st.wave_started_at = Some(Time(self.now));
        st.wave_ready_at = None;
        let (_, why, requeue) = self.admit(st, eligible, &order, &admitted, sizes[wave], target, wave + 1);
        (DecisionKind::Advance, format!("wave {wave} passed its gate and bake time; {why}"), requeue)
    }

    /// The target is proven Good (it passed every wave): nodes that join, come back or lost
    /// their label get it directly, with no wave, and a node failing on it is a node problem,
    /// reported, never a reason to roll the fleet back.
    fn maintain(&mut self, st: &mut AgentRolloutStatus, eligible: &[&NodeView], target: &str) -> Step {
        st.phase = Some(RolloutPhase::Completed);
        let mut joining = 0usize;
        for n in eligible {
            if n.revision.as_deref() != Some(target) {
                self.push_move(n, Some(target.to_owned()), None);
                joining += 1;
            }
        }
        let started = st.wave_started_at.as_ref().map_or(self.now, |t| t.0);
        let mut failing: Vec<vigil_crds::rollout::FailingNode> = eligible
            .iter()
            .filter(|n| n.revision.as_deref() == Some(target))
            .filter_map(|n| match gate::judge(n, target, &self.spec.health_gate, started, self.now) {
                NodeHealth::Failed(why) => Some(vigil_crds::rollout::FailingNode { name: n.name.clone(), reason: why }),
                _ => None,
            })
            .collect();
        failing.sort_by(|a, b| a.name.cmp(&b.name));
        st.failing_node_count = u32::try_from(failing.len()).unwrap_or(u32::MAX);
        let first = failing.first().cloned();
        failing.truncate(20);
        st.failing_nodes = failing;
        let running = eligible.len() - joining;
        if joining > 0 {
            return (
                DecisionKind::Join,
                format!("{target} is proven Good: {joining} node(s) get it directly, no wave ({running} run it)"),
                Duration::from_secs(10),
            );
        }
        if let Some(f) = first {
            return (
                DecisionKind::NodeProblem,
                format!(
                    "{target} runs on every eligible node ({running}); {} node(s) fail on it, a node problem (not a rollout failure), e.g. {}: {}",
                    st.failing_node_count, f.name, f.reason
                ),
                Duration::from_secs(30),
            );
        }
        (DecisionKind::Complete, format!("{target} runs on every eligible node ({running})"), Duration::from_secs(300))
    }

    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        st: &mut AgentRolloutStatus,
        eligible: &[&NodeView],
        order: &[usize],
        admitted: &[&NodeView],
        size: usize,
        target: &str,
        wave: usize,
    ) -> Step {
        if self.spec.paused {
            st.phase = Some(RolloutPhase::Paused);
            return (
                DecisionKind::Pause,
                format!("spec.paused is set: wave {wave} holds at {}/{size} node(s)", admitted.len()),
                Duration::from_secs(60),
            );
        }
        match window::any_open(&self.spec.maintenance_windows, self.now) {
            Err(e) => {
                st.phase = Some(RolloutPhase::Failed);
                return (DecisionKind::Fail, e.to_string(), Duration::from_secs(300));
            }
            Ok(false) => {
                st.phase = Some(RolloutPhase::Paused);
                let wait = window::until_next_open(&self.spec.maintenance_windows, self.now)
                    .ok()
                    .flatten()
                    .unwrap_or(Duration::from_secs(3600));
                return (
                    DecisionKind::Wait,
                    format!("outside every maintenance window; wave {wave} resumes in {}s", wait.as_secs()),
                    wait.max(Duration::from_secs(1)),
                );
            }
            Ok(true) => {}
        }
        st.phase = Some(RolloutPhase::Progressing);
        let mut added = 0;
        let want = size.saturating_sub(admitted.len());
        for &i in order {
            if added >= want || !self.budget_left() {
                break;
            }
            let n = eligible[i];
            if n.revision.as_deref() != Some(target) {
                self.push_move(n, Some(target.to_owned()), None);
                added += 1;
            }
        }
        if added > 0
            && let Some(r) = st.history.iter_mut().find(|r| r.revision == target)
        {
            r.admitted_at.get_or_insert(Time(self.now));
        }
        let requeue = if added < want { Duration::from_secs(1) } else { Duration::from_secs(10) };
        (
            DecisionKind::Admit,
            format!("wave {wave}: admitting {added} node(s) to {target} ({}/{size})", admitted.len() + added),
            requeue,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn on_failure(
        &mut self,
        st: &mut AgentRolloutStatus,
        eligible: &[&NodeView],
        failed: &[(&NodeView, String)],
        healthy: &[&NodeView],
        target: &str,
        wave: usize,
        why: String,
    ) -> Step {
        let stable = st.stable_revision.clone();
        // A first rollout has no revision of its own to go back to: rolling back would remove
        // the only agent its nodes have. It pauses instead, naming the failing nodes, and
        // leaves every agent where it runs (docs/adr/0007-a-first-rollout-pauses.md).
        if stable.is_none() && self.spec.failure_policy != FailurePolicy::Pause {
            let failing: Vec<String> = failed.iter().take(5).map(|(n, why)| format!("{}: {why}", n.name)).collect();
            let more = failed.len().saturating_sub(failing.len());
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            // The verdict is recorded, so the pause holds: the target is Bad until a person
            // retries it or applies another (a node that recovers later does not resume it).
            record_bad(st, target, format!("{}{more}", failing.join("; ")));
            st.wave_ready_at = None;
            return self.first_rollout_paused(st, target);
        }
        match self.spec.failure_policy {
            FailurePolicy::Pause => {
                st.phase = Some(RolloutPhase::Paused);
                (DecisionKind::Pause, format!("health gate failed, paused by policy: {why}"), Duration::from_secs(60))
            }
            FailurePolicy::PinFailingGroup => {
                let failing: Vec<&NodeView> = failed.iter().map(|(n, _)| *n).collect();
                match attribution::failing_group(&failing, healthy) {
                    Some((attr, value)) => {
                        let name = format!("auto-{}-{}", attr.to_lowercase(), short_hash(&value));
                        let reason = format!("wave {wave} failed on nodes with {attr}={value:?}: {why}");
                        if !st.pinned_groups.iter().any(|g| g.name == name) {
                            st.pinned_groups.push(PinnedGroup {
                                name: name.clone(),
                                attributes: [(attr.to_owned(), value.clone())].into(),
                                revision: stable.clone(),
                                reason: reason.clone(),
                            });
                        }
                        for n in eligible.iter().filter(|n| n.attributes.get(attr) == Some(value.as_str())) {
                            self.push_move(n, stable.clone(), Some(name.clone()));
                        }
                        st.phase = Some(RolloutPhase::Progressing);
                        (
                            DecisionKind::PinGroup,
                            format!(
                                "pinned {attr}={value:?} to {}; going on elsewhere. {reason}",
                                stable.as_deref().unwrap_or("no agent")
                            ),
                            Duration::from_secs(5),
                        )
                    }
                    None => self.mark_bad_and_roll_back(
                        st,
                        eligible,
                        target,
                        format!("{why}; no node attribute isolates the failing nodes, so the whole rollout goes back"),
                    ),
                }
            }
            FailurePolicy::Rollback => self.mark_bad_and_roll_back(st, eligible, target, why),
        }
    }

    fn mark_bad_and_roll_back(
        &mut self,
        st: &mut AgentRolloutStatus,
        eligible: &[&NodeView],
        target: &str,
        why: String,
    ) -> Step {
        record_bad(st, target, why);
        self.roll_back(st, eligible, target)
    }

    fn finish(self, mut st: AgentRolloutStatus, kind: DecisionKind, reason: String, requeue_after: Duration) -> Plan {
        if st.reason.as_deref() != Some(reason.as_str()) {
            st.last_decision_time = Some(Time(self.now));
            st.reason = Some(reason.clone());
        }
        let generation = st.observed_generation;
        conditions::update(&mut st, kind, &reason, generation, self.now);
        Plan { moves: self.moves, status: st, decision: Decision { kind, reason }, requeue_after }
    }
}

/// Records `target` Bad in the history, with why.
fn record_bad(st: &mut AgentRolloutStatus, target: &str, why: String) {
    if let Some(r) = st.history.iter_mut().find(|r| r.revision == target) {
        r.outcome = RevisionOutcome::Bad;
        r.reason = Some(why);
    }
}

/// Why the history says what it says of `target`.
fn recorded_reason(st: &AgentRolloutStatus, target: &str) -> Option<String> {
    st.history.iter().find(|r| r.revision == target).and_then(|r| r.reason.clone())
}

/// The decision (and Event reason) for a target config the agent would refuse.
pub const CONFIG_INVALID: &str = DecisionKind::ConfigInvalid.as_str();

/// Carries out `spec.action` once per id.
fn handle_action(
    spec: &AgentRolloutSpec,
    st: &mut AgentRolloutStatus,
    target: &str,
    now: Timestamp,
) -> Result<(), String> {
    let Some(a) = &spec.action else { return Ok(()) };
    if st.handled_action.as_deref() == Some(a.id.as_str()) {
        return Ok(());
    }
    let mark_bad = |st: &mut AgentRolloutStatus, why: String| {
        record_bad(st, target, why);
        st.phase = Some(RolloutPhase::RollingBack);
    };
    match a.kind {
        ManualActionKind::Promote => {
            let wave = st.current_wave.max(1) as usize;
            if let (Some(ready), Some(w)) = (st.wave_ready_at.as_ref(), spec.waves.get(wave - 1)) {
                let bake =
                    jiff::SignedDuration::try_from(Duration::from(w.bake_time)).unwrap_or(jiff::SignedDuration::ZERO);
                // Pretend the wave became ready a bake time ago (never later than it did).
                st.wave_ready_at = Some(Time(ready.0.min(now - bake)));
            }
        }
        ManualActionKind::Abort => {
            if st.stable_revision.as_deref() == Some(target) && restore_to(st, target).is_none() {
                return Err(only_good(&a.id, "abort", target));
            }
            mark_bad(st, format!("aborted by request {}", a.id));
        }
        ManualActionKind::Retry => {
            if let Some(r) = st.history.iter_mut().find(|r| r.revision == target && r.outcome == RevisionOutcome::Bad) {
                r.outcome = RevisionOutcome::InProgress;
                r.reason = Some(format!("retried by request {}", a.id));
                r.admitted_at = None;
                st.current_wave = 1;
                st.wave_started_at = Some(Time(now));
                st.wave_ready_at = None;
                st.pinned_groups.clear();
                st.phase = Some(RolloutPhase::Progressing);
            }
        }
        ManualActionKind::Rollback => {
            if let Some(to) = &a.to {
                let good = st.history.iter().any(|r| &r.revision == to && r.outcome == RevisionOutcome::Good)
                    || st.stable_revision.as_ref() == Some(to);
                if !good {
                    return Err(format!("spec.action.to: {to} is not a Good revision of this rollout's history"));
                }
                st.stable_revision = Some(to.clone());
            } else if st.stable_revision.as_deref() == Some(target) && restore_to(st, target).is_none() {
                return Err(only_good(&a.id, "roll back", target));
            }
            mark_bad(st, format!("rolled back by request {}", a.id));
        }
    }
    st.handled_action = Some(a.id.clone());
    Ok(())
}

/// Why a request to take the only Good revision away is refused.
fn only_good(id: &str, verb: &str, target: &str) -> String {
    format!(
        "spec.action {id}: cannot {verb} {target}: it is the only Good revision, and there is nothing to go back \
         to without leaving every node without an agent; roll out another revision instead"
    )
}

/// The revision name the spec's target makes (image, config hash, and the id of the pod
/// template the operator writes), or what is wrong with the target, naming the field.
pub fn revision_of(spec: &AgentRolloutSpec, pod_template: &str) -> Result<String, String> {
    let t = &spec.target;
    let image = if t.allow_tag_reference { ImageRef::parse(&t.image) } else { ImageRef::pinned(&t.image) }
        .map_err(|e| format!("spec.target.image: {e}"))?;
    let config = ConfigHash::parse(&t.config.sha256).map_err(|e| format!("spec.target.config.sha256: {e}"))?;
    Ok(RevisionName::of(&image, &config, pod_template).to_string())
}

/// The target revision, with the config hash checked against what the ConfigMap holds.
fn target_revision(spec: &AgentRolloutSpec, observed: &Observed) -> Result<String, String> {
    let t = &spec.target;
    let revision = revision_of(spec, &observed.pod_template)?;
    let config = t.config.sha256.as_str();
    match &observed.config_sha256 {
        None => {
            return Err(format!(
                "ConfigMap {} has no key {}: the config cannot be verified",
                t.config.config_map, t.config.key
            ));
        }
        Some(seen) if seen != config => {
            return Err(format!(
                "config hash mismatch: spec.target.config.sha256 is {config} but ConfigMap {} key {} hashes to {seen}",
                t.config.config_map, t.config.key
            ));
        }
        Some(_) => {}
    }
    Ok(revision)
}

/// Records a new target in status: history, wave 1, fresh wave times.
fn adopt_target(spec: &AgentRolloutSpec, st: &mut AgentRolloutStatus, target: &str, now: Timestamp) {
    if st.target_revision.as_deref() == Some(target) {
        return;
    }
    if let Some(old) = st.target_revision.take()
        && let Some(r) = st.history.iter_mut().find(|r| r.revision == old && r.outcome == RevisionOutcome::InProgress)
    {
        r.outcome = RevisionOutcome::Superseded;
        r.reason = Some(format!("replaced by {target}"));
    }
    match st.history.iter().position(|r| r.revision == target) {
        Some(i) => {
            let mut r = st.history.remove(i);
            if r.outcome != RevisionOutcome::Bad {
                r.outcome = RevisionOutcome::InProgress;
            }
            st.history.insert(0, r);
        }
        None => st.history.insert(
            0,
            RevisionRecord {
                revision: target.to_owned(),
                image: spec.target.image.clone(),
                config_sha256: spec.target.config.sha256.clone(),
                config_map: Some(spec.target.config.config_map.clone()),
                config_key: Some(spec.target.config.key.clone()),
                config_snapshot: None,
                version: spec.target.version.clone(),
                admitted_at: None,
                outcome: RevisionOutcome::InProgress,
                reason: None,
            },
        ),
    }
    // Keep the newest, but never drop the stable revision: it is what a rollback restores.
    while st.history.len() > HISTORY {
        let drop = st
            .history
            .iter()
            .rposition(|r| Some(&r.revision) != st.stable_revision.as_ref())
            .unwrap_or(st.history.len() - 1);
        st.history.remove(drop);
    }
    st.target_revision = Some(target.to_owned());
    st.current_wave = 1;
    st.wave_started_at = Some(Time(now));
    st.wave_ready_at = None;
    st.pinned_groups.clear();
    st.phase = Some(RolloutPhase::Progressing);
}

/// What the planner does with one selected node before any wave: hold it by a pin, leave it
/// out by the compatibility guard, or count it in the waves.
pub(crate) enum Class {
    /// Held by the pin of this name.
    Pinned(String, PinHold),
    /// Fails the guard, for this reason.
    Excluded(String),
    /// In the waves.
    Eligible,
}

/// Pins first (a pin holds a node whatever the guard says), then the guard.
pub(crate) fn classify(spec: &AgentRolloutSpec, st: &AgentRolloutStatus, node: &NodeView) -> Class {
    if let Some((pin, hold)) = pin_for(spec, st, node) {
        return Class::Pinned(pin, hold);
    }
    match spec.compatibility.as_ref().and_then(|g| incompatible(g, node)) {
        Some(why) => Class::Excluded(why),
        None => Class::Eligible,
    }
}

/// What a pin does to a node.
pub(crate) enum PinHold {
    /// Keep the node on exactly this revision (`None`: no agent).
    On(Option<String>),
    /// The pin names a revision this rollout never recorded: the node stays where it is.
    Where,
}

/// The revision a pin's `revision` (a revision name or an agent version) holds its nodes on:
/// only one proven Good (or the stable one), so that a pin by version never moves pinned nodes
/// to a newer, untested revision that carries the same version. `None`: the nodes stay where
/// they are.
pub fn pin_revision(st: &AgentRolloutStatus, revision: &str) -> Option<String> {
    st.history
        .iter()
        .find(|r| {
            (r.revision == revision || r.version.as_deref() == Some(revision))
                && (r.outcome == RevisionOutcome::Good || st.stable_revision.as_ref() == Some(&r.revision))
        })
        .map(|r| r.revision.clone())
}

/// The pin holding a node, if any: spec pins first, then the groups the operator pinned.
fn pin_for(spec: &AgentRolloutSpec, st: &AgentRolloutStatus, node: &NodeView) -> Option<(String, PinHold)> {
    for pin in &spec.pins {
        if selector_matches(&pin.node_selector, &node.labels) {
            let hold = pin_revision(st, &pin.revision).map_or(PinHold::Where, |r| PinHold::On(Some(r)));
            return Some((pin.name.clone(), hold));
        }
    }
    st.pinned_groups
        .iter()
        .find(|g| g.attributes.iter().all(|(k, v)| node.attributes.get(k) == Some(v.as_str())))
        .map(|g| (g.name.clone(), PinHold::On(g.revision.clone())))
}

/// `matchLabels` and `matchExpressions` of a label selector against node labels: the one
/// matcher both binaries use.
pub use vigil_crds::selector::matches as selector_matches;

/// Why a node fails the compatibility guard, or `None`.
fn incompatible(g: &CompatibilityGuard, n: &NodeView) -> Option<String> {
    let a = &n.attributes;
    if let Some(min) = &g.min_kernel
        && !kernel_at_least(&a.kernel, min)
    {
        return Some(format!("kernel below {min}"));
    }
    if !g.operating_systems.is_empty() && !g.operating_systems.contains(&a.os) {
        return Some(format!("operating system {:?} not allowed", a.os));
    }
    if !g.architectures.is_empty() && !g.architectures.contains(&a.arch) {
        return Some(format!("architecture {:?} not allowed", a.arch));
    }
    if !g.os_images.is_empty() && !g.os_images.iter().any(|p| glob(p, &a.os_image)) {
        return Some("OS image not in compatibility.osImages".into());
    }
    if let Some(p) = g.exclude_os_images.iter().find(|p| glob(p, &a.os_image)) {
        return Some(format!("OS image excluded by {p:?}"));
    }
    None
}

/// Numeric comparison of the leading `a.b.c` of a kernel release with `min`.
pub fn kernel_at_least(kernel: &str, min: &str) -> bool {
    let nums = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit() && c != '.')
            .next()
            .unwrap_or("")
            .split('.')
            .map_while(|p| p.parse().ok())
            .collect()
    };
    let (k, m) = (nums(kernel), nums(min));
    if k.is_empty() {
        return false;
    }
    for i in 0..m.len().max(k.len()) {
        let (x, y) = (k.get(i).copied().unwrap_or(0), m.get(i).copied().unwrap_or(0));
        if x != y {
            return x > y;
        }
    }
    true
}

/// `*` and `?` globs.
pub fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    go(&p, &t)
}

/// Cumulative node counts of each wave for `eligible` nodes: never decreasing, at least one
/// node per wave, the last wave all of them.
pub fn wave_sizes(spec: &AgentRolloutSpec, eligible: usize) -> Vec<usize> {
    wave_sizes_for(spec, eligible, eligible)
}

/// Wave sizes computed over `base` nodes and capped at the `eligible` ones.
pub fn wave_sizes_for(spec: &AgentRolloutSpec, base: usize, eligible: usize) -> Vec<usize> {
    wave_sizes_raw(spec, base)
        .into_iter()
        .map(|n| n.min(eligible))
        .enumerate()
        .map(|(i, n)| if i + 1 == spec.waves.len().max(1) { eligible } else { n })
        .collect()
}

fn wave_sizes_raw(spec: &AgentRolloutSpec, eligible: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(spec.waves.len());
    let mut prev = 0usize;
    for w in &spec.waves {
        let n = match (w.percent, w.count) {
            (Some(p), _) => (eligible * p as usize).div_ceil(100),
            (None, Some(c)) => c as usize,
            (None, None) => eligible,
        };
        let n = n.clamp(prev.max(1).min(eligible), eligible);
        out.push(n);
        prev = n;
    }
    if let Some(last) = out.last_mut() {
        *last = eligible;
    }
    if out.is_empty() {
        out.push(eligible);
    }
    out
}

fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(s.as_bytes());
    d[..3].iter().map(|b| format!("{b:02x}")).collect()
}

fn fill_counts(
    st: &mut AgentRolloutStatus,
    observed: &Observed,
    target: &str,
    excluded: &BTreeMap<String, Vec<String>>,
) {
    let mut by_rev: BTreeMap<&str, RevisionNodes> = BTreeMap::new();
    for n in &observed.nodes {
        let Some(rev) = n.revision.as_deref() else { continue };
        let e = by_rev.entry(rev).or_insert_with(|| RevisionNodes { revision: rev.to_owned(), ..Default::default() });
        e.nodes += 1;
        if n.agent.as_ref().is_some_and(|a| a.ready && a.revision == rev) {
            e.ready += 1;
        }
    }
    st.selected_nodes = u32::try_from(observed.nodes.len()).unwrap_or(u32::MAX);
    st.updated_nodes = by_rev.get(target).map_or(0, |r| r.ready);
    st.progress = Some(format!("{}/{}", st.updated_nodes, st.selected_nodes));
    st.revisions = by_rev.into_values().collect();
    st.excluded = excluded
        .iter()
        .map(|(reason, nodes)| ExcludedNodes {
            reason: reason.clone(),
            nodes: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
            examples: nodes.iter().take(10).cloned().collect(),
        })
        .collect();
}

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod tests;
