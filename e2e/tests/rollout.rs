//! A rollout on a real API server: waves, a good revision completing, a bad one rolled back.
//!
//! Works on a bare control plane (API server, controller-manager, scheduler, no kubelets): the
//! test creates its own Node objects, labelled for this run only, and plays their kubelets
//! (Ready conditions, node Leases, agent pod status) and their agents (heartbeat Leases,
//! AgentStatus). The operator's controller runs in-process. Real nodes are never selected:
//! the rollout selects only the nodes this test created.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use vigil_crds::rollout::RolloutPhase;
use vigil_crds::{AgentRollout, ConfigHash};
use vigil_e2e::{Cleanup, TestNamespace, client, install_crds};

const NODES: usize = 4;
const CONFIG: &str = "interval: 10s\n";

fn digest(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// Plays the kubelets of the fake nodes and the agents on them, once.
async fn play_kubelets(client: &kube::Client, ns: &str, nodes: &[String], bad_image: &str) {
    let now = jiff::Timestamp::now();
    let node_api: Api<Node> = Api::all(client.clone());
    let node_leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    for n in nodes {
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now.to_string(), "lastTransitionTime": now.to_string()}]}});
        let _ = node_api.patch_status(n, &PatchParams::default(), &Patch::Merge(&status)).await;
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": n}, "spec": {"holderIdentity": n, "leaseDurationSeconds": 40, "renewTime": jiff_micro(now)}});
        let _ = node_leases.patch(n, &PatchParams::apply("vigil-e2e-kubelet").force(), &Patch::Apply(&lease)).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // Each node's agents; of two (a handover), the one that works is that of the node's
    // revision unless it crashes, as the agents' lock on the node decides.
    let mut working: std::collections::BTreeMap<String, (bool, String)> = std::collections::BTreeMap::new();
    let mut assigned: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for n in nodes {
        if let Some(rev) =
            node_api.get_opt(n).await.ok().flatten().and_then(|n| n.metadata.labels?.remove("vigil.dev/revision"))
        {
            assigned.insert(n.clone(), rev);
        }
    }
    for p in pods.list(&ListParams::default().labels("app.kubernetes.io/name=vigil-agent")).await.unwrap().items {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
        if !nodes.contains(&node) {
            continue;
        }
        let image = p.spec.as_ref().map(|s| s.containers[0].image.clone().unwrap_or_default()).unwrap_or_default();
        let rev = p.metadata.labels.as_ref().and_then(|l| l.get("vigil.dev/revision")).cloned().unwrap_or_default();
        let bad = image == bad_image;
        let container = if bad {
            json!({"name": "agent", "ready": false, "restartCount": 5, "image": image, "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}})
        } else {
            json!({"name": "agent", "ready": true, "restartCount": 0, "image": image, "imageID": "", "state": {"running": {"startedAt": now.to_string()}}})
        };
        let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if bad { "False" } else { "True" }}], "containerStatuses": [container]}});
        let _ = pods
            .patch_status(p.metadata.name.as_deref().unwrap(), &PatchParams::default(), &Patch::Merge(&status))
            .await;
        if !bad {
            let is_assigned = assigned.get(&node) == Some(&rev);
            let slot = working.entry(node).or_insert((is_assigned, rev.clone()));
            if is_assigned && !slot.0 {
                *slot = (true, rev);
            }
        }
    }
    for (node, (_, rev)) in working {
        // The working agent's heartbeat names its revision, as the agent's does.
        vigil_e2e::report_as_agent(client, ns, &node, &rev).await;
    }
}

/// Stops the kubelet player when dropped, waiting (at most 30 s) for it to finish its round.
#[derive(Default)]
struct Player {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.done.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn jiff_micro(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

async fn wait_phase(api: &Api<AgentRollout>, name: &str, phase: RolloutPhase, timeout: Duration) -> AgentRollout {
    let cond = move |r: Option<&AgentRollout>| r.and_then(|r| r.status.as_ref()).and_then(|s| s.phase) == Some(phase);
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(r))) => r,
        other => {
            let now = api.get(name).await.ok().and_then(|r| r.status);
            panic!("rollout {name} did not reach {phase:?} within {timeout:?}: {other:?}; status now {now:?}")
        }
    }
}

// Multi-threaded: the kubelet player's guard waits, in its destructor, for the player to end
// its round, which needs another thread to run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn a_good_revision_completes_and_a_bad_one_is_rolled_back() {
    let client = client().await.unwrap();
    install_crds(&client, Duration::from_secs(60)).await.unwrap();
    let ns = TestNamespace::create(&client, "rollout").await.unwrap();
    let run_label = ns.name.clone();
    // Dropped last-in-first-out on any exit, a failed assertion too: the fake nodes and their
    // AgentStatuses go, then (with `ns`) the namespace and everything in it.
    let mut cleanup = Cleanup::default();

    // The agents' service account, which the DaemonSets' pods name (the chart installs it
    // beside the operator; here the test's namespace is the agents' namespace).
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "vigil-agent"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &sa).await.unwrap();

    // Fake nodes, selected by this run's label only, with capacity so pods fit.
    let node_api: Api<Node> = Api::all(client.clone());
    let nodes: Vec<String> = (0..NODES).map(|i| format!("{run_label}-n{i}")).collect();
    for (i, n) in nodes.iter().enumerate() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": n, "labels": {"vigil.dev/e2e": run_label, "topology.kubernetes.io/zone": format!("z{}", i % 2), "kubernetes.io/os": "linux"}},
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}, "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "nodeInfo": {"osImage": "e2e", "kernelVersion": "6.1.0", "architecture": "amd64", "operatingSystem": "linux", "bootID": "", "containerRuntimeVersion": "", "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "", "systemUUID": ""}}}))
        .unwrap();
        node_api.create(&PostParams::default(), &node).await.unwrap();
        cleanup.add_typed::<Node>(None, n);
        cleanup.add_typed::<vigil_crds::AgentStatus>(None, n);
        // The node Lease the test's kubelet renews.
        cleanup.add_typed::<Lease>(Some("kube-node-lease"), n);
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "agent-config"}, "data": {"agent.yaml": CONFIG}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();

    // The controller, in-process, and the kubelets it needs.
    let template = vigil_operator::act::AgentTemplate {
        namespace: ns.name.clone(),
        ..vigil_operator::act::AgentTemplate::default()
    };
    let controller =
        tokio::spawn(vigil_operator::controller::run(client.clone(), "e2e".into(), Arc::default(), None, template));
    let good = format!("registry.invalid/vigil-agent@sha256:{}", digest('a'));
    let bad = format!("registry.invalid/vigil-agent@sha256:{}", digest('b'));
    // Dropped before `cleanup` (declared after it): the player stops writing node and agent
    // objects before they are deleted, so none is written again behind the cleanup.
    let _kubelets = {
        let (client, ns, bad, run) = (client.clone(), ns.name.clone(), bad.clone(), run_label.clone());
        let player = Player::default();
        let (stop, done) = (player.stop.clone(), player.done.clone());
        tokio::spawn(async move {
            // Bounded: at most 15 minutes of one-second rounds; the test ends it sooner. Every
            // node of this run is played, those that join later too.
            let mine = ListParams::default().labels(&format!("vigil.dev/e2e={run}"));
            let node_api: Api<Node> = Api::all(client.clone());
            for _ in 0..900 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let nodes: Vec<String> = node_api
                    .list(&mine)
                    .await
                    .map(|l| l.items.iter().filter_map(|n| n.metadata.name.clone()).collect())
                    .unwrap_or_default();
                play_kubelets(&client, &ns, &nodes, &bad).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            done.store(true, Ordering::SeqCst);
        });
        player
    };

    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), &ns.name);
    let spec = |image: &str| {
        json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "AgentRollout", "metadata": {"name": "agent"}, "spec": {
            "target": {"image": image, "config": {"configMap": "agent-config", "sha256": ConfigHash::of(CONFIG.as_bytes()).to_string()}},
            "nodeSelector": {"matchLabels": {"vigil.dev/e2e": run_label}},
            "waves": [{"count": 1, "bakeTime": "5s"}, {"percent": 100, "bakeTime": "5s"}],
            "healthGate": {"heartbeatGap": "60s", "progressDeadline": "3m", "maxRestarts": 2}
        }})
    };
    let pp = PatchParams::apply("vigil-e2e").force();
    rollouts.patch("agent", &pp, &Patch::Apply(&spec(&good))).await.unwrap();
    let done = wait_phase(&rollouts, "agent", RolloutPhase::Completed, Duration::from_secs(300)).await;
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
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), &ns.name);
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
    cleanup.add_typed::<Node>(None, &late);
    cleanup.add_typed::<vigil_crds::AgentStatus>(None, &late);
    cleanup.add_typed::<Lease>(Some("kube-node-lease"), &late);
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
    assert!(why.contains(&format!("{}/agent", ns.name)), "{why}");
    rollouts.delete("agent-twin", &Default::default()).await.unwrap();

    // A bad revision: wave 1 crash-loops, and everything goes back.
    rollouts.patch("agent", &pp, &Patch::Apply(&spec(&bad))).await.unwrap();
    let back = wait_phase(&rollouts, "agent", RolloutPhase::RolledBack, Duration::from_secs(300)).await;
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
    cleanup.add_typed::<Node>(None, &stopped_join);
    cleanup.add_typed::<vigil_crds::AgentStatus>(None, &stopped_join);
    cleanup.add_typed::<Lease>(Some("kube-node-lease"), &stopped_join);
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
        Some(&format!("{}/agent", ns.name))
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

    controller.abort();
    drop(_kubelets);
    drop(cleanup);
    ns.delete().await.unwrap();
}
