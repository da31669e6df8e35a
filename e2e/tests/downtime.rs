//! A node that is down during a wave, on a real API server: it never fails a good revision
//! for the time it was down, and once back it passes on its own merit (ADR 0008).
//!
//! Bare control plane (the test plays the kubelet and agent of one fake node, and takes them
//! down and back as a stopped kubelet or a partition would); runs in either mode, since it
//! selects only the node it created.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use vigil_crds::AgentRollout;
use vigil_crds::rollout::{RevisionOutcome, RolloutPhase};
use vigil_e2e::kubelets::{Bare, image, rollout, wait_phase, wait_rollout};
use vigil_e2e::{client, install_crds, wait_for};

/// The gate under test: a deadline far shorter than the downtime, and a heartbeat gap too.
const DEADLINE_S: u64 = 15;
const GAP_S: u64 = 20;
/// How long the node stays down: past both, plus two of the planner's 10 s holds, so the
/// planner judges the node at least twice after its deadline has passed.
const DOWN: Duration = Duration::from_secs(GAP_S + 20);

fn spec(run: &str, image: &str, bake: &str) -> serde_json::Value {
    let mut r = rollout(run, "agent", image, json!([{"percent": 100, "bakeTime": bake}]));
    r["spec"]["healthGate"]["progressDeadline"] = json!(format!("{DEADLINE_S}s"));
    r["spec"]["healthGate"]["heartbeatGap"] = json!(format!("{GAP_S}s"));
    r
}

async fn node_ready(api: &Api<Node>, node: &str, want: &str) {
    wait_for(&format!("node {node} Ready={want}"), Duration::from_secs(30), Duration::from_millis(500), || {
        let (api, node) = (api.clone(), node.to_owned());
        async move {
            let n = api.get(&node).await.map_err(|e| e.to_string())?;
            let ready = n.status.and_then(|s| s.conditions).into_iter().flatten().find(|c| c.type_ == "Ready");
            match ready {
                Some(c) if c.status == want => Ok(Some(())),
                other => Err(format!("Ready is {:?}", other.map(|c| c.status))),
            }
        }
    })
    .await
    .unwrap();
}

/// Holds the node down for [`DOWN`], failing the moment the rollout gives up on it.
async fn stay_down(rollouts: &Api<AgentRollout>) {
    let until = Instant::now() + DOWN;
    while Instant::now() < until {
        let st = rollouts.get_status("agent").await.unwrap().status.unwrap_or_default();
        assert!(
            !matches!(st.phase, Some(RolloutPhase::RolledBack | RolloutPhase::Failed | RolloutPhase::Paused)),
            "the rollout gave up on a node for the time it was down: {:?}: {:?}",
            st.phase,
            st.reason
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn outcome(r: &AgentRollout, rev: &str) -> Option<RevisionOutcome> {
    r.status.as_ref()?.history.iter().find(|h| h.revision == rev).map(|h| h.outcome)
}

// Multi-threaded: the kubelet player's guard waits, in its destructor, for its round to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn a_node_down_past_its_deadline_is_judged_on_its_merit_once_back() {
    let client = client().await.unwrap();
    install_crds(&client, Duration::from_secs(60)).await.unwrap();
    let bare = Bare::start(&client, "downtime", 1, &image('b')).await.unwrap();
    let (ns, run, node) = (bare.ns.name.clone(), bare.run.clone(), bare.nodes[0].clone());
    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), &ns);
    let nodes: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::apply("vigil-e2e").force();

    rollouts.patch("agent", &pp, &Patch::Apply(&spec(&run, &image('a'), "2s"))).await.unwrap();
    wait_phase(&rollouts, "agent", RolloutPhase::Completed, Duration::from_secs(120)).await;

    // 1. Down before the wave begins (a kubelet stopped, then a config change): the node is
    // admitted while down, holds the wave, and is not failed the moment it comes back.
    bare.player.set_down(&node, true);
    node_ready(&nodes, &node, "False").await;
    rollouts.patch("agent", &pp, &Patch::Apply(&spec(&run, &image('c'), "2s"))).await.unwrap();
    let held = wait_rollout(&rollouts, "agent", "wave 1 holding on the down node", Duration::from_secs(60), |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.current_wave == 1 && s.reason.as_deref().is_some_and(|w| w.contains("needed to pass")))
    })
    .await;
    let second = held.status.unwrap().target_revision.unwrap();
    stay_down(&rollouts).await;
    bare.player.set_down(&node, false);
    let done = wait_phase(&rollouts, "agent", RolloutPhase::Completed, Duration::from_secs(120)).await;
    assert_eq!(outcome(&done, &second), Some(RevisionOutcome::Good), "{:?}", done.status);
    assert!(
        !done.status.unwrap().history.iter().any(|h| h.outcome == RevisionOutcome::Bad),
        "no revision was marked Bad"
    );

    // 2. Down in the middle of the wave (admitted, its new agent started, the bake running):
    // the old heartbeat and the elapsed deadline fail nothing while it is down, and the wave
    // completes once it is back.
    rollouts.patch("agent", &pp, &Patch::Apply(&spec(&run, &image('d'), "20s"))).await.unwrap();
    let was = second.clone();
    let baking = wait_rollout(&rollouts, "agent", "wave 1 admitted and baking", Duration::from_secs(60), move |r| {
        r.status.as_ref().is_some_and(|s| {
            s.target_revision.as_ref().is_some_and(|t| *t != was) && s.phase == Some(RolloutPhase::Baking)
        })
    })
    .await;
    let third = baking.status.unwrap().target_revision.unwrap();
    bare.player.set_down(&node, true);
    node_ready(&nodes, &node, "False").await;
    wait_rollout(&rollouts, "agent", "the wave holding on the down node", Duration::from_secs(30), |r| {
        r.status.as_ref().and_then(|s| s.reason.as_deref()).is_some_and(|w| w.contains("NotReady since"))
    })
    .await;
    stay_down(&rollouts).await;
    bare.player.set_down(&node, false);
    let done = wait_phase(&rollouts, "agent", RolloutPhase::Completed, Duration::from_secs(120)).await;
    assert_eq!(outcome(&done, &third), Some(RevisionOutcome::Good), "{:?}", done.status);
    let labels = nodes.get(&node).await.unwrap().metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("vigil.dev/revision"), Some(&third), "the node runs the intended revision");

    drop(bare);
}
