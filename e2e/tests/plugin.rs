//! `kubectl vigil` on a real API server: status (with the operator's Events through the core
//! Events field selector), pause, promote, resume, status --watch and rollback, each a
//! server-side apply the real server accepts and the operator's controller carries out.
//!
//! Works on a bare control plane: the test creates its own Node objects, labelled for this run
//! only, and plays their kubelets and agents (see `vigil_e2e::kubelets`). The plugin runs
//! in-process with the test's client, as `kubectl vigil -n NAMESPACE …`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use vigil_crds::AgentRollout;
use vigil_crds::rollout::RolloutPhase;
use vigil_e2e::kubelets::{Bare, image, rollout, wait_phase, wait_rollout};
use vigil_e2e::plugin::{Outcome, vigil};
use vigil_e2e::{FIELD_MANAGER, client, install_crds, wait_for};

fn json_of(o: &Outcome) -> Value {
    assert_eq!(o.code, 0, "{}{}", o.out, o.err);
    serde_json::from_str(&o.out).unwrap_or_else(|e| panic!("not JSON ({e}): {}", o.out))
}

/// Nodes of the run on `revision`.
async fn on(client: &kube::Client, run: &str, revision: &str) -> usize {
    let sel = format!("vigil.dev/e2e={run},vigil.dev/revision={revision}");
    Api::<Node>::all(client.clone()).list(&ListParams::default().labels(&sel)).await.unwrap().items.len()
}

const NODES: usize = 3;

// Multi-threaded: the kubelet player's guard waits, in its destructor, for the player to end
// its round, which needs another thread to run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn kubectl_vigil_follows_pauses_resumes_and_rolls_back_a_rollout() {
    let client = client().await.unwrap();
    install_crds(&client, Duration::from_secs(60)).await.unwrap();
    let (first, second) = (image('a'), image('c'));
    // Everything the test makes goes when `bare` is dropped, on failure too.
    let bare = Bare::start(&client, "plugin", NODES, &image('b')).await.unwrap();
    let (ns, run) = (bare.ns.name.clone(), bare.run.clone());
    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), &ns);
    // Wave 1 bakes for an hour: the rollout holds there until the plugin promotes it.
    let waves = json!([{"count": 1, "bakeTime": "1h"}, {"percent": 100, "bakeTime": "1s"}]);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    rollouts.patch("agent", &pp, &Patch::Apply(&rollout(&run, "agent", &first, waves.clone()))).await.unwrap();
    let baking = wait_phase(&rollouts, "agent", RolloutPhase::Baking, Duration::from_secs(180)).await;
    let target = baking.status.unwrap().target_revision.unwrap();

    // status: the operator's view, and its decisions from the Events it published.
    let v =
        wait_for("status to show the operator's decisions", Duration::from_secs(60), Duration::from_secs(1), || {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                let v = json_of(&vigil(&client, &ns, &["status", "agent", "-o", "json"]).await);
                if v["decisions"].as_array().is_some_and(|d| d.iter().any(|d| d["reason"] == "Bake")) {
                    Ok(Some(v))
                } else {
                    Err(format!("decisions {}", v["decisions"]))
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(v["rollout"], format!("{ns}/agent"));
    assert_eq!(v["phase"], "Baking");
    assert_eq!(v["target"]["name"], target.as_str());
    assert_eq!(v["waves"][0]["size"], 1);
    assert_eq!(v["waves"][0]["gate"]["healthy"], 1, "{}", v["waves"][0]);
    assert_eq!(v["waves"][1]["size"], NODES);
    assert!(v["next"]["what"].as_str().unwrap().contains("wave 1 bakes until"), "{}", v["next"]);
    let text = vigil(&client, &ns, &["status", "agent"]).await;
    assert_eq!(text.code, 0, "{}", text.err);
    assert!(text.out.contains(&format!("AgentRollout {ns}/agent  Baking")), "{}", text.out);
    assert!(text.out.contains("Last decisions"), "{}", text.out);

    // pause: a partial server-side apply (spec.paused only) the server accepts, under the
    // plugin's own field manager, taken up by the operator.
    let o = vigil(&client, &ns, &["pause", "agent"]).await;
    assert_eq!(o.code, 0, "{}{}", o.out, o.err);
    assert!(o.out.contains("stops admitting nodes to"), "{}", o.out);
    assert!(o.out.contains("operator: Baking"), "{}", o.out);
    let r = rollouts.get("agent").await.unwrap();
    assert!(r.spec.paused);
    let managers: Vec<String> = r.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.iter().any(|m| m == "kubectl-vigil-pause"), "{managers:?}");
    assert_eq!(r.spec.target.image, first, "the apply left the rest of the spec alone");

    // promote ends the bake; paused, the operator admits no second wave.
    let o = vigil(&client, &ns, &["promote", "agent"]).await;
    assert_eq!(o.code, 0, "{}{}", o.out, o.err);
    let held = wait_phase(&rollouts, "agent", RolloutPhase::Paused, Duration::from_secs(60)).await;
    assert!(held.status.unwrap().reason.unwrap().contains("spec.paused is set"));
    assert_eq!(on(&client, &run, &target).await, 1, "paused: wave 2 is not admitted");

    // resume, then follow the rollout to its end: exit status 0 when it completes.
    let o = vigil(&client, &ns, &["resume", "agent"]).await;
    assert_eq!(o.code, 0, "{}{}", o.out, o.err);
    let o = vigil(&client, &ns, &["status", "agent", "--watch", "--interval", "1s", "--timeout", "3m"]).await;
    assert_eq!(o.code, 0, "{}{}", o.out, o.err);
    assert!(o.out.contains("Completed"), "{}", o.out);
    assert_eq!(on(&client, &run, &target).await, NODES);

    // A second target, held in wave 1's bake; rollback takes its node back to the first.
    rollouts.patch("agent", &pp, &Patch::Apply(&rollout(&run, "agent", &second, waves))).await.unwrap();
    let second_rev = {
        let first_rev = target.clone();
        let r = wait_rollout(&rollouts, "agent", "Baking on the second target", Duration::from_secs(180), move |r| {
            r.status.as_ref().is_some_and(|s| {
                s.phase == Some(RolloutPhase::Baking) && s.target_revision.as_ref().is_some_and(|t| t != &first_rev)
            })
        })
        .await;
        r.status.unwrap().target_revision.unwrap()
    };
    let o = vigil(&client, &ns, &["rollback", "agent"]).await;
    assert_eq!(o.code, 0, "{}{}", o.out, o.err);
    assert!(o.out.contains(&format!("1 node(s) move back to {target}")), "{}", o.out);
    let st = rollouts.get("agent").await.unwrap().status.unwrap();
    assert!(st.handled_action.as_deref().is_some_and(|a| a.starts_with("kubectl-vigil-rollback-")), "{st:?}");
    // Followed to its end: rolled back is exit status 3.
    let o = vigil(&client, &ns, &["status", "agent", "--watch", "--interval", "1s", "--timeout", "3m"]).await;
    assert_eq!(o.code, 3, "{}{}", o.out, o.err);
    assert!(o.out.contains("RolledBack"), "{}", o.out);
    assert_eq!(on(&client, &run, &target).await, NODES, "every node is back on the first revision");
    assert_eq!(on(&client, &run, &second_rev).await, 0);
    drop(bare);
}
