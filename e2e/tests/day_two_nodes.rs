//! Day two on real nodes, with the chart as `helm` would install it (rendered by Helm's SDK,
//! applied server-side) and the images of `VIGIL_E2E_AGENT_IMAGE` and
//! `VIGIL_E2E_OPERATOR_IMAGE`, each step ending with every schedulable node running a Ready
//! agent of the intended revision that reported after the step began:
//!
//! 1. install;
//! 2. `helm upgrade` with a health-gate change: the same revision, no agent restarted, no
//!    DaemonSet rewritten;
//! 3. `helm upgrade` with a new operator pod (as an operator version upgrade makes): the new
//!    operator takes the lead and restarts no agent;
//! 4. uninstall, which leaves the namespace, the agents' Leases, AgentStatuses and Node
//!    conditions, and install again at once (the same revision name as the leftovers');
//! 5. uninstall, wait until the leftover heartbeats are older than the gate's heartbeat gap,
//!    install again;
//! 6. the namespace deleted with everything in it, and an install into another namespace;
//! 7. uninstall, and `kubectl vigil cleanup` removes what the agents and the operator left, and
//!    only that.
//!
//! Needs a cluster where Vigil is not installed: the test refuses to start otherwise, changing
//! nothing. The image change is in `upgrades.rs` (bare mode): the contract gives one agent
//! image.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use vigil_crds::rollout::{RevisionOutcome, RolloutPhase};
use vigil_crds::{AgentRollout, AgentStatus, agent, labels};
use vigil_e2e::kubelets::agents;
use vigil_e2e::plugin::vigil;
use vigil_e2e::release::{AgentConditions, NodeLabels, install_into, not_installed, schedulable_nodes, values};
use vigil_e2e::{Cleanup, TestNamespace, client, images, wait_for};

const GAP_S: i64 = 20;

fn day_two_values(agent_image: &str, operator_image: &str) -> serde_json::Value {
    let mut v = values(agent_image, operator_image, "10s");
    v["rollout"]["healthGate"]["heartbeatGap"] = json!(format!("{GAP_S}s"));
    v
}

/// Uninstalls as `helm uninstall` does: the release's objects go (the rollout, and with it,
/// `deletionPolicy: Delete`, its DaemonSets and pods); the namespace and what the agents and the
/// operator wrote stay.
async fn uninstall(client: &Client, ns: &str, release: Cleanup) {
    drop(release);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_for("the agents and the operator gone", Duration::from_secs(180), Duration::from_secs(1), || async {
        let left = pods.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
        if left.is_empty() { Ok(Some(())) } else { Err(format!("{} pod(s)", left.len())) }
    })
    .await
    .unwrap();
}

/// The rollout's history judged every revision Good.
async fn all_good(client: &Client, ns: &str) {
    let r = Api::<AgentRollout>::namespaced(client.clone(), ns).get_status("vigil-agent").await.unwrap();
    let st = r.status.unwrap();
    assert!(st.history.iter().all(|h| h.outcome == RevisionOutcome::Good), "{:?}", st.history);
}

/// Nothing of the agents changes, and the rollout stays Completed on `rev`, for `quiet`.
async fn untouched(client: &Client, ns: &str, rev: &str, quiet: Duration) {
    let before = agents(client, ns).await;
    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), ns);
    let until = Instant::now() + quiet;
    while Instant::now() < until {
        assert_eq!(agents(client, ns).await, before, "agents restarted or DaemonSets rewritten");
        let st = rollouts.get_status("vigil-agent").await.unwrap().status.unwrap();
        assert_eq!((st.phase, st.target_revision.as_deref()), (Some(RolloutPhase::Completed), Some(rev)), "{st:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
#[cfg_attr(
    not(vigil_e2e_images),
    ignore = "needs a cluster with real nodes: set VIGIL_E2E_KUBECONFIG, VIGIL_E2E_AGENT_IMAGE and VIGIL_E2E_OPERATOR_IMAGE"
)]
async fn day_two_on_real_nodes_leaves_every_node_on_the_intended_revision_and_nothing_misleading() {
    let (agent_image, operator_image) = images().expect("VIGIL_E2E_AGENT_IMAGE and VIGIL_E2E_OPERATOR_IMAGE");
    let client = client().await.unwrap();
    not_installed(&client).await;
    let nodes: BTreeSet<String> = schedulable_nodes(&client).await;
    // What outlives a release, removed when the test ends (on failure too): the AgentStatuses,
    // the agents' conditions, the operator's labels (of both namespaces' rollouts).
    let mut leftovers = Cleanup::default();
    for n in &nodes {
        leftovers.add_typed::<AgentStatus>(None, n);
    }
    let _conditions = AgentConditions { nodes: nodes.clone() };
    let ns = TestNamespace::create(&client, "daytwo").await.unwrap();
    let _labels = NodeLabels { rollout_label: format!("{}.vigil-agent", ns.name) };
    let (name, vals) = (ns.name.clone(), day_two_values(&agent_image, &operator_image));

    // 1. Install.
    let mut release = Cleanup::default();
    let first = install_into(&client, &name, &ns.name, &vals, None, &nodes, &mut release).await;
    all_good(&client, &ns.name).await;

    // 2. A gate change: nothing restarts.
    let mut gate = vals.clone();
    gate["rollout"]["healthGate"]["maxRestarts"] = json!(3);
    let objects = vigil_e2e::chart::render(&name, &ns.name, &gate).unwrap();
    vigil_e2e::chart::apply(&client, &ns.name, &objects, &mut release).await.unwrap();
    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), &ns.name);
    wait_for("the gate change observed", Duration::from_secs(60), Duration::from_secs(1), || async {
        let r = rollouts.get_status("vigil-agent").await.map_err(|e| e.to_string())?;
        let seen = r.status.and_then(|s| s.observed_generation);
        if seen == r.metadata.generation { Ok(Some(())) } else { Err(format!("observed {seen:?}")) }
    })
    .await
    .unwrap();
    untouched(&client, &ns.name, &first, Duration::from_secs(15)).await;

    // 3. A new operator pod (a new operator version): it takes the lead, the agents stay.
    let mut upgraded = gate.clone();
    upgraded["operator"]["resources"] =
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "257Mi"}});
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let operator_pods = ListParams::default().labels("app.kubernetes.io/name=vigil-operator");
    let old: BTreeSet<String> =
        pods.list(&operator_pods).await.unwrap().items.iter().map(ResourceExt::name_any).collect();
    assert!(!old.is_empty(), "no operator pod");
    let before = agents(&client, &ns.name).await;
    let objects = vigil_e2e::chart::render(&name, &ns.name, &upgraded).unwrap();
    vigil_e2e::chart::apply(&client, &ns.name, &objects, &mut release).await.unwrap();
    let records: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let leader = wait_for("a new operator pod leading", Duration::from_secs(180), Duration::from_secs(1), || async {
        let now: Vec<Pod> = pods.list(&operator_pods).await.map_err(|e| e.to_string())?.items;
        let new: Vec<String> = now.iter().map(ResourceExt::name_any).filter(|n| !old.contains(n)).collect();
        let record = records.get_opt(labels::LEADER_RECORD).await.map_err(|e| e.to_string())?;
        let holder = record
            .and_then(|cm| cm.metadata.annotations)
            .and_then(|a| a.get("control-plane.alpha.kubernetes.io/leader").cloned())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|r| r["holderIdentity"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if now.len() == 1 && new.first() == Some(&holder) {
            Ok(Some(holder))
        } else {
            Err(format!(
                "operator pods {:?}, leader {holder:?}",
                now.iter().map(ResourceExt::name_any).collect::<Vec<_>>()
            ))
        }
    })
    .await
    .unwrap();
    eprintln!("the new operator {leader} leads");
    assert_eq!(agents(&client, &ns.name).await, before, "the operator upgrade restarted agents");
    untouched(&client, &ns.name, &first, Duration::from_secs(15)).await;

    // 4. Uninstall and install again at once: the same revision name as the leftovers'.
    uninstall(&client, &ns.name, std::mem::take(&mut release)).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    for n in &nodes {
        assert!(leases.get_opt(&agent::lease_name(n)).await.unwrap().is_some(), "the heartbeat Lease of {n} stays");
    }
    let again = install_into(&client, &name, &ns.name, &upgraded, None, &nodes, &mut release).await;
    assert_eq!(again, first, "the same image, config and template: the same revision");
    all_good(&client, &ns.name).await;

    // 5. Uninstall, let the heartbeats go stale, install again.
    uninstall(&client, &ns.name, std::mem::take(&mut release)).await;
    let mut newest = jiff::Timestamp::MIN;
    for n in &nodes {
        let l = leases.get(&agent::lease_name(n)).await.unwrap();
        newest = newest.max(l.spec.and_then(|s| s.renew_time).expect("renewed").0);
    }
    wait_for("the leftover heartbeats stale", Duration::from_secs(90), Duration::from_millis(500), || async move {
        let age = jiff::Timestamp::now().duration_since(newest).as_secs();
        if age > GAP_S + 2 { Ok(Some(())) } else { Err(format!("{age}s old")) }
    })
    .await
    .unwrap();
    assert_eq!(install_into(&client, &name, &ns.name, &upgraded, None, &nodes, &mut release).await, first);
    all_good(&client, &ns.name).await;

    // 6. The namespace deleted with everything in it (the release's cluster-scoped objects
    // stay, as they would), and an install into another namespace.
    let ns2 = TestNamespace::create(&client, "daytwo2").await.unwrap();
    let _labels2 = NodeLabels { rollout_label: format!("{}.vigil-agent", ns2.name) };
    ns.delete_and_wait(&client, Duration::from_secs(240)).await.unwrap();
    let mut release2 = Cleanup::default();
    let vals2 = day_two_values(&agent_image, &operator_image);
    let third = install_into(&client, &ns2.name, &ns2.name, &vals2, None, &nodes, &mut release2).await;
    all_good(&client, &ns2.name).await;
    drop(release);

    // 7. Uninstall; cleanup removes the leftovers, and only those.
    uninstall(&client, &ns2.name, release2).await;
    let node_api: Api<Node> = Api::all(client.clone());
    let ours = |n: &Node| kubectl_vigil::run::agent_conditions(n);
    for n in &nodes {
        assert!(!ours(&node_api.get(n).await.unwrap()).is_empty(), "{n}: the agents' conditions stay after uninstall");
    }
    let done = vigil(&client, &ns2.name, &["cleanup"]).await;
    assert_eq!(done.code, 0, "{}{}", done.out, done.err);
    eprintln!("{}", done.out);
    let statuses: Api<AgentStatus> = Api::all(client.clone());
    let leases2: Api<Lease> = Api::namespaced(client.clone(), &ns2.name);
    for n in &nodes {
        assert!(statuses.get_opt(n).await.unwrap().is_none(), "AgentStatus {n} left");
        assert!(leases2.get_opt(&agent::lease_name(n)).await.unwrap().is_none(), "Lease of {n} left");
        let node = node_api.get(n).await.unwrap();
        assert!(ours(&node).is_empty(), "{n}: the agents' conditions left");
        let l = node.metadata.labels.clone().unwrap_or_default();
        assert!(!l.keys().any(|k| labels::written_on_nodes(k)), "{n}: {l:?}");
        let types: Vec<String> =
            node.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().map(|c| c.type_).collect();
        assert!(types.iter().any(|t| t == "Ready"), "the kubelet's conditions stay on {n}");
    }
    eprintln!("day two on {} node(s): {first} through every step, {third} in the second namespace", nodes.len());
    ns2.delete().await.unwrap();
}
