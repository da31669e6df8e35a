//! A rollout on a real API server: waves, a good revision completing, a bad one rolled back.
//!
//! Works on a bare control plane (API server, controller-manager, scheduler, no kubelets): the
//! test creates its own Node objects, labelled for this run only, and plays their kubelets
//! (Ready conditions, node Leases, agent pod status) and their agents (heartbeat Leases,
//! AgentStatus). The operator's controller runs in-process. Real nodes are never selected:
//! the rollout selects only the nodes this test created.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use vigil_crds::rollout::RolloutPhase;
use vigil_crds::{AgentRollout, ConfigHash};
use vigil_e2e::kubelets::{Bare, CONFIG};
use vigil_e2e::{client, install_crds};

const NODES: usize = 4;

// Multi-threaded: the kubelet player's guard waits, in its destructor, for the player to end
// its round, which needs another thread to run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn a_good_revision_completes_and_a_bad_one_is_rolled_back() {
    let client = client().await.unwrap();
    install_crds(&client, Duration::from_secs(60)).await.unwrap();
    let good = vigil_e2e::kubelets::image('a');
    let bad = vigil_e2e::kubelets::image('b');
    // The namespace, the fake nodes, the controller and the kubelets; all of it goes when
    // `bare` is dropped, on failure too.
    let mut bare = Bare::start(&client, "rollout", NODES, &bad).await.unwrap();
    let (ns, run_label) = (bare.ns.name.clone(), bare.run.clone());
    let node_api: Api<Node> = Api::all(client.clone());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);

    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), &ns);
    let spec = |image: &str| {
        vigil_e2e::kubelets::rollout(
            &run_label,
            "agent",
            image,
            json!([{"count": 1, "bakeTime": "5s"}, {"percent": 100, "bakeTime": "5s"}]),
        )
    };
    let pp = PatchParams::apply("vigil-e2e").force();
    rollouts.patch("agent", &pp, &Patch::Apply(&spec(&good))).await.unwrap();
    let done =
        vigil_e2e::kubelets::wait_phase(&rollouts, "agent", RolloutPhase::Completed, Duration::from_secs(300)).await;
    let good_rev = done.status.as_ref().unwrap().target_revision.clone().unwrap();
    let labelled = node_api
        .list(&ListParams::default().labels(&format!("vigil.dev/e2e={run_label},vigil.dev/revision={good_rev}")))
        .await
        .unwrap();
    assert_eq!(labelled.items.len(), NODES, "every selected node runs the good revision");
    // Each node's handover ended: only the good revision's agent runs on it.
    vigil_e2e::wait_for("every handover done", Duration::from_secs(60), Duration::from_secs(1), || {
        let (node_api, run_label, good_rev) = (node_api.clone(), run_label.clone(), good_rev.clone());
        async move {
            let nodes = node_api
                .list(&ListParams::default().labels(&format!("vigil.dev/e2e={run_label}")))
                .await
                .map_err(|e| e.to_string())?;
            let runs: Vec<Vec<String>> = nodes
                .items
                .iter()
                .map(|n| {
                    n.metadata
                        .labels
                        .iter()
                        .flatten()
                        .filter_map(|(k, _)| k.strip_prefix("vigil.dev/run."))
                        .map(str::to_owned)
                        .collect()
                })
                .collect();
            if runs.iter().all(|r| r == std::slice::from_ref(&good_rev)) {
                Ok(Some(()))
            } else {
                Err(format!("run labels {runs:?}"))
            }
        }
    })
    .await
    .unwrap();

    // The revision runs the operator's immutable copy of its config, so editing the rollout's
    // ConfigMap in place (as `helm upgrade` does) changes nothing it runs.
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let good_ds = format!("vigil-agent-{good_rev}");
    let snapshot = format!("vigil-agent-config-{good_rev}");
    let pod_spec = dss.get(&good_ds).await.unwrap().spec.unwrap().template.spec.unwrap();
    let mounted = pod_spec.volumes.unwrap().into_iter().find(|v| v.name == "config").unwrap().config_map.unwrap();
    assert_eq!(mounted.name, snapshot, "the revision mounts its copy");
    let copy = cms.get(&snapshot).await.unwrap();
    assert_eq!(copy.immutable, Some(true));
    assert_eq!(copy.data.unwrap()["agent.yaml"], CONFIG);
    let edited = json!({"data": {"agent.yaml": "interval: 30s\n"}});
    cms.patch("agent-config", &PatchParams::default(), &Patch::Merge(&edited)).await.unwrap();

    // A node joins the completed rollout: it gets the proven revision directly, and the
    // rollout stays Completed (no wave starts again, nothing is rolled back, and the edited
    // ConfigMap is no hash mismatch).
    let late = format!("{run_label}-late");
    let node: Node = serde_json::from_value(json!({"metadata": {"name": late, "labels": {"vigil.dev/e2e": run_label, "kubernetes.io/os": "linux"}},
        "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}, "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
    .unwrap();
    node_api.create(&PostParams::default(), &node).await.unwrap();
    bare.cleanup.add_typed::<Node>(None, &late);
    bare.cleanup.add_typed::<vigil_crds::AgentStatus>(None, &late);
    bare.cleanup.add_typed::<Lease>(Some("kube-node-lease"), &late);
    let want = good_rev.clone();
    let joined = await_condition(node_api.clone(), &late, move |n: Option<&Node>| {
        n.and_then(|n| n.metadata.labels.as_ref()).and_then(|l| l.get("vigil.dev/revision")) == Some(&want)
    });
    tokio::time::timeout(Duration::from_secs(120), joined)
        .await
        .expect("the late node never got the completed revision")
        .unwrap();
    let st = rollouts.get_status("agent").await.unwrap().status.unwrap();
    assert_eq!(st.phase, Some(RolloutPhase::Completed), "a joining node does not undo the rollout: {:?}", st.reason);
    // The ConfigMap back as it was: the bad revision below carries the same config hash.
    let restored = json!({"data": {"agent.yaml": CONFIG}});
    cms.patch("agent-config", &PatchParams::default(), &Patch::Merge(&restored)).await.unwrap();

    // A second rollout selecting the same nodes is refused, naming the first; it moves nothing.
    let mut twin = spec(&good);
    twin["metadata"]["name"] = json!("agent-twin");
    rollouts.patch("agent-twin", &pp, &Patch::Apply(&twin)).await.unwrap();
    let refused = await_condition(rollouts.clone(), "agent-twin", |r: Option<&AgentRollout>| {
        r.and_then(|r| r.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Accepted" && c.reason == "Overlap"))
    });
    let twin_now = tokio::time::timeout(Duration::from_secs(60), refused)
        .await
        .expect("the overlapping rollout was not refused")
        .unwrap()
        .unwrap();
    let why = twin_now.status.unwrap().reason.unwrap_or_default();
    assert!(why.contains(&format!("{ns}/agent")), "{why}");
    rollouts.delete("agent-twin", &Default::default()).await.unwrap();

    // A bad revision: wave 1 crash-loops, and everything goes back.
    rollouts.patch("agent", &pp, &Patch::Apply(&spec(&bad))).await.unwrap();
    let back =
        vigil_e2e::kubelets::wait_phase(&rollouts, "agent", RolloutPhase::RolledBack, Duration::from_secs(300)).await;
    let st = back.status.unwrap();
    assert_eq!(st.stable_revision.as_deref(), Some(good_rev.as_str()));
    let labelled = node_api
        .list(&ListParams::default().labels(&format!("vigil.dev/e2e={run_label},vigil.dev/revision={good_rev}")))
        .await
        .unwrap();
    assert_eq!(labelled.items.len(), NODES + 1, "every node, the late one too, is back on the good revision");

    // A config the agent would refuse is never admitted to a node: the rollout stops with
    // ConfigValid=False (ConfigInvalid), naming the key and line, and every node stays put.
    let bad_config = "interval: 10s\nnot_a_key: 1\n";
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "agent-config-bad"}, "data": {"agent.yaml": bad_config}}))
            .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let mut refused = spec(&good);
    refused["spec"]["target"]["config"] =
        json!({"configMap": "agent-config-bad", "sha256": ConfigHash::of(bad_config.as_bytes()).to_string()});
    rollouts.patch("agent", &pp, &Patch::Apply(&refused)).await.unwrap();
    let invalid = await_condition(rollouts.clone(), "agent", |r: Option<&AgentRollout>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == "ConfigValid" && c.status == "False" && c.reason == "ConfigInvalid")
        })
    });
    let st = tokio::time::timeout(Duration::from_secs(60), invalid)
        .await
        .expect("the bad config was not refused")
        .unwrap()
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.phase, Some(RolloutPhase::Failed));
    let why = st.reason.unwrap_or_default();
    assert!(why.contains("unknown field `not_a_key`") && why.contains("line 2"), "{why}");
    let labelled = node_api
        .list(&ListParams::default().labels(&format!("vigil.dev/e2e={run_label},vigil.dev/revision={good_rev}")))
        .await
        .unwrap();
    assert_eq!(labelled.items.len(), NODES + 1, "no node left the good revision for the refused config");

    // A node joining the stopped rollout still gets the proven revision.
    let stopped_join = format!("{run_label}-stopped");
    let mut joiner = node.clone();
    joiner.metadata.name = Some(stopped_join.clone());
    node_api.create(&PostParams::default(), &joiner).await.unwrap();
    bare.cleanup.add_typed::<Node>(None, &stopped_join);
    bare.cleanup.add_typed::<vigil_crds::AgentStatus>(None, &stopped_join);
    bare.cleanup.add_typed::<Lease>(Some("kube-node-lease"), &stopped_join);
    let want = good_rev.clone();
    let joined = await_condition(node_api.clone(), &stopped_join, move |n: Option<&Node>| {
        n.and_then(|n| n.metadata.labels.as_ref()).and_then(|l| l.get("vigil.dev/revision")) == Some(&want)
    });
    tokio::time::timeout(Duration::from_secs(120), joined)
        .await
        .expect("a node joining the stopped rollout never got the proven revision")
        .unwrap();

    // Deleting the rollout under the default policy (Orphan) leaves the agents: the good
    // revision's DaemonSet has no owner the garbage collector could follow, and it and the
    // nodes' labels are still there once the rollout is gone.
    rollouts.delete("agent", &Default::default()).await.unwrap();
    let gone = await_condition(rollouts.clone(), "agent", |r: Option<&AgentRollout>| r.is_none());
    tokio::time::timeout(Duration::from_secs(60), gone).await.expect("the rollout was not deleted").unwrap();
    let ds = dss.get(&good_ds).await.expect("the orphaned DaemonSet stays");
    assert!(ds.metadata.owner_references.as_ref().is_none_or(Vec::is_empty), "{:?}", ds.metadata.owner_references);
    assert_eq!(
        ds.metadata.annotations.as_ref().and_then(|a| a.get("vigil.dev/owner-rollout")),
        Some(&format!("{ns}/agent"))
    );
    let labelled = node_api
        .list(&ListParams::default().labels(&format!("vigil.dev/e2e={run_label},vigil.dev/revision={good_rev}")))
        .await
        .unwrap();
    assert_eq!(labelled.items.len(), NODES + 2, "every node keeps its revision label while its agent runs");

    // The same rollout created again adopts the agents; under Delete its DaemonSets are owned
    // by it, so deleting it takes them, and the leader then clears the nodes' labels.
    let mut again = spec(&good);
    again["spec"]["deletionPolicy"] = json!("Delete");
    rollouts.patch("agent", &pp, &Patch::Apply(&again)).await.unwrap();
    let owned = await_condition(dss.clone(), &good_ds, |d: Option<&DaemonSet>| {
        d.and_then(|d| d.metadata.owner_references.as_ref()).is_some_and(|o| o.iter().any(|o| o.kind == "AgentRollout"))
    });
    tokio::time::timeout(Duration::from_secs(60), owned)
        .await
        .expect("the re-created rollout never took its DaemonSet back")
        .unwrap();
    rollouts.delete("agent", &Default::default()).await.unwrap();
    let collected = await_condition(dss.clone(), &good_ds, |d: Option<&DaemonSet>| d.is_none());
    tokio::time::timeout(Duration::from_secs(120), collected)
        .await
        .expect("the owned DaemonSet was not garbage-collected with its rollout")
        .unwrap();
    vigil_e2e::wait_for(
        "the nodes' vigil.dev labels cleared",
        Duration::from_secs(300),
        Duration::from_secs(2),
        || {
            let node_api = node_api.clone();
            let sel = format!("vigil.dev/e2e={run_label},vigil.dev/revision");
            async move {
                let left =
                    node_api.list(&ListParams::default().labels(&sel)).await.map_err(|e| e.to_string())?.items.len();
                if left == 0 { Ok(Some(())) } else { Err(format!("{left} node(s) still labelled")) }
            }
        },
    )
    .await
    .unwrap();

    drop(bare);
}
