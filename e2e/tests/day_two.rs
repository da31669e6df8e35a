//! Day two on a real API server: uninstall and reinstall (at once, and after the previous
//! install's heartbeats have gone stale) into a namespace that still holds what the previous
//! install's agents wrote, an operator restart that leaves the running agents alone, then
//! `kubectl vigil cleanup` removing exactly those leftovers.
//!
//! Bare control plane: the test plays the kubelets and agents of its own fake nodes (see
//! `vigil_e2e::kubelets`) and runs the operator's controller in-process, so "uninstall" is the
//! operator gone and its rollout deleted (the chart installs it with `deletionPolicy: Delete`,
//! so its DaemonSets and config copies go with it) and "install" a new operator and the same
//! rollout. Runs in either mode, since it selects only the nodes it created.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use vigil_crds::rollout::{RevisionOutcome, RolloutPhase};
use vigil_crds::{AgentRollout, AgentStatus, agent, labels};
use vigil_e2e::kubelets::{Bare, agents, image, operator, rollout, wait_phase};
use vigil_e2e::plugin::vigil;
use vigil_e2e::{client, install_crds, wait_for};

const NODES: usize = 2;
const GAP_S: i64 = 10;

fn spec(run: &str) -> serde_json::Value {
    let mut r =
        rollout(run, "agent", &image('a'), json!([{"count": 1, "bakeTime": "2s"}, {"percent": 100, "bakeTime": "2s"}]));
    r["spec"]["healthGate"]["heartbeatGap"] = json!(format!("{GAP_S}s"));
    r["spec"]["deletionPolicy"] = json!("Delete");
    r
}

/// Installs: the operator starts and the rollout is applied; waits until it completes and
/// checks that its revision was never judged Bad.
async fn install(bare: &mut Bare, client: &kube::Client) -> String {
    bare.controller = operator(client, &bare.ns.name);
    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), &bare.ns.name);
    rollouts.patch("agent", &PatchParams::apply("vigil-e2e").force(), &Patch::Apply(&spec(&bare.run))).await.unwrap();
    let done = wait_phase(&rollouts, "agent", RolloutPhase::Completed, Duration::from_secs(180)).await;
    let st = done.status.unwrap();
    assert!(st.history.iter().all(|h| h.outcome == RevisionOutcome::Good), "{:?}", st.history);
    st.target_revision.unwrap()
}

/// Uninstalls: the operator stops, the rollout is deleted, and its DaemonSets and pods go.
async fn uninstall(bare: &mut Bare, client: &kube::Client) {
    bare.controller.0.abort();
    let ns = bare.ns.name.clone();
    Api::<AgentRollout>::namespaced(client.clone(), &ns).delete("agent", &Default::default()).await.unwrap();
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    wait_for("the agents gone", Duration::from_secs(120), Duration::from_secs(1), || {
        let (dss, pods) = (dss.clone(), pods.clone());
        async move {
            let lp = ListParams::default().labels(agent::SELECTOR);
            let d = dss.list(&lp).await.map_err(|e| e.to_string())?.items.len();
            let p = pods.list(&lp).await.map_err(|e| e.to_string())?.items.len();
            if d + p == 0 { Ok(Some(())) } else { Err(format!("{d} DaemonSet(s), {p} pod(s)")) }
        }
    })
    .await
    .unwrap();
}

/// The newest heartbeat the nodes' agent Leases hold.
async fn newest_heartbeat(leases: &Api<Lease>, nodes: &[String]) -> jiff::Timestamp {
    let mut newest = jiff::Timestamp::MIN;
    for n in nodes {
        let l = leases.get(&agent::lease_name(n)).await.expect("the previous install's Lease stays");
        newest = newest.max(l.spec.and_then(|s| s.renew_time).expect("renewed").0);
    }
    newest
}

// Multi-threaded: the kubelet player's guard waits, in its destructor, for its round to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn reinstalls_beside_the_previous_installs_leftovers_and_cleanup_removes_them() {
    let client = client().await.unwrap();
    install_crds(&client, Duration::from_secs(60)).await.unwrap();
    let mut bare = Bare::start(&client, "daytwo", NODES, &image('b')).await.unwrap();
    let (ns, run, nodes) = (bare.ns.name.clone(), bare.run.clone(), bare.nodes.clone());
    let node_api: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    // `start` began an operator; this test installs its own.
    bare.controller.0.abort();

    let first = install(&mut bare, &client).await;
    // What an agent leaves on its node besides its Lease and AgentStatus: a condition.
    let cond = json!({"status": {"conditions": [{"type": "KernelDeadlock", "status": "False", "reason": "KernelHasNoDeadlock", "message": "e2e"}]}});
    let cpp = PatchParams { field_manager: Some(agent::NODE_CONDITIONS_MANAGER.into()), ..Default::default() };
    node_api.patch_status(&nodes[0], &cpp, &Patch::Strategic(&cond)).await.unwrap();
    // node-problem-detector's condition of the same name, on the other node: not ours.
    let npd = PatchParams { field_manager: Some("node-problem-detector".into()), ..Default::default() };
    node_api.patch_status(&nodes[1], &npd, &Patch::Strategic(&cond)).await.unwrap();

    // Uninstall and install again at once: the same image and config give the same revision,
    // whose name the previous install's Leases and AgentStatuses carry.
    uninstall(&mut bare, &client).await;
    let again = install(&mut bare, &client).await;
    assert_eq!(again, first, "the same revision");

    // Uninstall, wait until every Lease the agents left is older than the heartbeat gap, and
    // install again: the stale heartbeat of the same revision fails nothing.
    uninstall(&mut bare, &client).await;
    let newest = newest_heartbeat(&leases, &nodes).await;
    wait_for("the leftover heartbeats stale", Duration::from_secs(60), Duration::from_millis(500), || async move {
        let age = jiff::Timestamp::now().duration_since(newest).as_secs();
        if age > GAP_S + 2 { Ok(Some(())) } else { Err(format!("{age}s old")) }
    })
    .await
    .unwrap();
    assert_eq!(install(&mut bare, &client).await, first);

    // The operator restarts (an upgrade of the operator that leaves the agents' revision as it
    // is): it takes the running rollout over and restarts no agent, rewrites no DaemonSet.
    let before = agents(&client, &ns).await;
    assert_eq!(before.0.len(), NODES, "one agent per node");
    bare.controller.0.abort();
    bare.controller = operator(&client, &ns);
    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), &ns);
    // The new operator has planned (its status write moves the resourceVersion or it finds
    // nothing to change); either way, for 15 s nothing of the agents changes.
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < until {
        assert_eq!(agents(&client, &ns).await, before, "the restarted operator touched the agents");
        let phase = rollouts.get_status("agent").await.unwrap().status.and_then(|s| s.phase);
        assert_eq!(phase, Some(RolloutPhase::Completed));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Cleanup is refused while the install runs, and changes nothing.
    let sel = format!("{}={run}", vigil_e2e::kubelets::RUN_LABEL);
    let refused = vigil(&client, &ns, &["cleanup", "--nodes", &sel]).await;
    assert_eq!(refused.code, kubectl_vigil::run::FAILED, "{}{}", refused.out, refused.err);
    assert!(refused.err.contains("still has AgentRollout(s) agent"), "{}", refused.err);

    // Uninstall; the agents' leftovers are there, and cleanup (dry run first) removes them.
    uninstall(&mut bare, &client).await;
    let dry = vigil(&client, &ns, &["cleanup", "--dry-run", "--nodes", &sel]).await;
    assert_eq!(dry.code, 0, "{}{}", dry.out, dry.err);
    for n in &nodes {
        assert!(dry.out.contains(&format!("would remove lease/{}", agent::lease_name(n))), "{}", dry.out);
        assert!(dry.out.contains(&format!("would remove agentstatus/{n}")), "{}", dry.out);
    }
    assert!(dry.out.contains(&format!("would remove node/{} conditions: KernelDeadlock", nodes[0])), "{}", dry.out);
    assert!(!dry.out.contains(&format!("node/{} conditions", nodes[1])), "another writer's condition: {}", dry.out);
    assert!(leases.get_opt(&agent::lease_name(&nodes[0])).await.unwrap().is_some(), "a dry run removes nothing");

    let done = vigil(&client, &ns, &["cleanup", "--nodes", &sel]).await;
    assert_eq!(done.code, 0, "{}{}", done.out, done.err);
    let statuses: Api<AgentStatus> = Api::all(client.clone());
    for n in &nodes {
        assert!(leases.get_opt(&agent::lease_name(n)).await.unwrap().is_none(), "Lease of {n} left");
        assert!(statuses.get_opt(n).await.unwrap().is_none(), "AgentStatus {n} left");
        let node = node_api.get(n).await.unwrap();
        let l = node.metadata.labels.unwrap_or_default();
        assert!(
            !l.keys().any(|k| k == labels::REVISION || k == labels::ROLLOUT || labels::run_revision(k).is_some()),
            "{n}: {l:?}"
        );
        assert_eq!(l.get(vigil_e2e::kubelets::RUN_LABEL), Some(&run), "labels of others stay");
        assert!(!node.metadata.annotations.unwrap_or_default().contains_key(labels::ADMITTED_AT));
        let types: Vec<String> =
            node.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().map(|c| c.type_).collect();
        let npd_kept = n == &nodes[1];
        assert_eq!(types.iter().any(|t| t == "KernelDeadlock"), npd_kept, "{n}: {types:?}");
        assert!(types.iter().any(|t| t == "Ready"), "the kubelet's condition stays on {n}");
    }
    let again = vigil(&client, &ns, &["cleanup", "--nodes", &sel]).await;
    assert!(again.out.contains("nothing of an install"), "a second cleanup finds nothing: {}", again.out);

    drop(bare);
}
