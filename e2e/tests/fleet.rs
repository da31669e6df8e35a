//! A whole fleet rolled by Vigil, timed against a plain DaemonSet update of the same pods:
//! a benchmark on a real API server, run by hand.
//!
//! ```sh
//! cargo build --release -p vigil-operator
//! VIGIL_E2E_KUBECONFIG=… VIGIL_SCALE_NODES=1000 \
//!   cargo test -p vigil-e2e --test fleet -- --ignored --nocapture
//! ```
//!
//! Creates `VIGIL_SCALE_NODES` (default 1,000) Nodes shaped like a cloud's, every one selected,
//! and plays their kubelets and agents ([`vigil_e2e::fleet::Player`]: node Leases renewed, pods
//! Running and Ready as they come, each node's working agent reporting). Runs the operator
//! binary (as the scale bench does) and, in order:
//!
//! 1. installs a first revision through the default waves (5 %, 25 %, 100 %) with bake 0;
//! 2. rolls a second revision (a config change) through the same waves: the figure, wall
//!    time from the change to Completed, with the operator's API requests per node by verb,
//!    its CPU and its resident memory;
//! 3. rolls a third revision whose agents crash beyond the first quarter of the nodes: it
//!    fails in wave 3 and rolls back; wall time from the change to RolledBack with every
//!    node back on the second revision;
//! 4. creates a plain DaemonSet of the same pod template on the same nodes and updates it
//!    (`RollingUpdate`, maxSurge 10 %, maxUnavailable 0): wall time from the change to every
//!    node running a Ready pod of the new template and no old one.
//!
//! Prints the figures (they go in docs/benchmarks.md) and fails when Vigil's whole-fleet
//! rollout takes more than 1.5 times the plain update, or the operator writes more than 4
//! times per node for it. Everything it made is deleted at the end, on failure too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vigil_crds::rollout::RolloutPhase;
use vigil_crds::{AgentRollout, ConfigHash};
use vigil_e2e::fleet::{Bench, Player, counters, cpu_seconds, create_nodes, kib, spawn_operator};
use vigil_e2e::wait_for;

fn image(c: char) -> String {
    format!("registry.invalid/vigil-agent@sha256:{}", std::iter::repeat_n(c, 64).collect::<String>())
}

fn config(interval: u32) -> String {
    format!("interval: {interval}s\n")
}

/// The operator's write requests (everything but get, list and watch).
fn writes(requests: &BTreeMap<String, f64>) -> f64 {
    requests.iter().filter(|(v, _)| !matches!(v.as_str(), "get" | "list" | "watch")).map(|(_, n)| n).sum()
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(v, n)| (v.clone(), n - before.get(v).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

/// Waits until the rollout `agent` is in `phase` on a target other than `not`: its target.
async fn phase(rollouts: &Api<AgentRollout>, want: RolloutPhase, not: Option<&str>, within: Duration) -> String {
    wait_for(&format!("the rollout {want:?}"), within, Duration::from_millis(500), || async {
        let st = rollouts.get_status("agent").await.map_err(|e| e.to_string())?.status.unwrap_or_default();
        let target = st.target_revision.clone().unwrap_or_default();
        if st.phase == Some(want) && Some(target.as_str()) != not {
            Ok(Some(target))
        } else {
            Err(format!("{:?} on {target}: {:?}", st.phase, st.reason))
        }
    })
    .await
    .unwrap()
}

/// How many of the run's nodes carry `label` (`key=value`).
async fn nodes_with(nodes: &Api<Node>, run: &str, label: &str) -> usize {
    let lp = ListParams::default().labels(&format!("vigil.dev/e2e-scale={run},{label}"));
    nodes.list_metadata(&lp).await.map(|l| l.items.len()).unwrap_or(0)
}

/// Waits until no node of the run still runs `revision`'s agent beside another (its run
/// label gone: the handovers ended and its pods are deleted).
async fn handovers_ended(nodes: &Api<Node>, run: &str, revision: &str) {
    let label = format!("{}{revision}={}", vigil_crds::labels::RUN_PREFIX, vigil_crds::labels::RUN_VALUE);
    wait_for("every handover ended", Duration::from_secs(1800), Duration::from_millis(500), || async {
        let left = nodes_with(nodes, run, &label).await;
        if left == 0 { Ok(Some(())) } else { Err(format!("{left} node(s) still run {revision}")) }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark that creates thousands of Nodes: run it by hand with -- --ignored (see the module docs)"]
async fn a_whole_fleet_through_the_default_waves_against_a_plain_daemonset_update() {
    let Bench { count, binary, kubeconfig, client, ns, run, node_api, mut nodes } = Bench::start("fleet").await;
    let mut cleanup = vigil_e2e::Cleanup::default();
    let names: Vec<String> = (0..count).map(|i| format!("{run}-{i:05}")).collect();
    for n in &names {
        cleanup.add_typed::<vigil_crds::AgentStatus>(None, n);
    }
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "vigil-agent"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &sa).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    for (name, c) in [("config-a", config(10)), ("config-b", config(11)), ("config-c", config(12))] {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name}, "data": {"agent.yaml": c}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }

    let started = Instant::now();
    let uids = create_nodes(&node_api, &run, &names, |_| true).await;
    eprintln!("fleet: {count} nodes created in {:.1} s", started.elapsed().as_secs_f64());
    let player = Player::start(&client, &ns.name, uids);
    let (operator, addr, pid) = spawn_operator(&binary, &kubeconfig, &ns.name);

    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), &ns.name);
    let waves = json!([{"percent": 5, "bakeTime": "0s"}, {"percent": 25, "bakeTime": "0s"}, {"percent": 100, "bakeTime": "0s"}]);
    let target = |img: &str, cm: &str, c: &str| json!({"image": img, "config": {"configMap": cm, "sha256": ConfigHash::of(c.as_bytes()).to_string()}});
    let apply = |spec_target: serde_json::Value| {
        let rollouts = rollouts.clone();
        let spec = json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "AgentRollout", "metadata": {"name": "agent"}, "spec": {
            "target": spec_target,
            "nodeSelector": {"matchLabels": {"vigil.dev/e2e-scale-selected": run.clone()}},
            "waves": waves.clone(),
            "healthGate": {"heartbeatGap": "120s", "progressDeadline": "10m", "maxRestarts": 2, "maxFailedNodes": 0},
        }});
        async move { rollouts.patch("agent", &PatchParams::apply("vigil-e2e").force(), &Patch::Apply(&spec)).await.unwrap() }
    };

    // 1. The first revision.
    let t = Instant::now();
    apply(target(&image('a'), "config-a", &config(10))).await;
    let first = phase(&rollouts, RolloutPhase::Completed, None, Duration::from_secs(1800)).await;
    eprintln!("fleet: first revision {first} installed on {count} nodes in {:.1} s", t.elapsed().as_secs_f64());

    // 2. A second revision through the default waves: the figure.
    let (_, _, q0) = counters(&addr).await;
    let c0 = cpu_seconds(pid);
    let t = Instant::now();
    apply(target(&image('a'), "config-b", &config(11))).await;
    let second = phase(&rollouts, RolloutPhase::Completed, Some(&first), Duration::from_secs(1800)).await;
    let completed = t.elapsed();
    handovers_ended(&node_api, &run, &first).await;
    let vigil_update = t.elapsed();
    let (_, _, q1) = counters(&addr).await;
    let c1 = cpu_seconds(pid);
    let update_requests = delta(&q1, &q0);
    let update_writes = writes(&update_requests) / count as f64;
    let per_node: Vec<String> = update_requests.iter().map(|(v, n)| format!("{v} {:.2}", n / count as f64)).collect();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    eprintln!(
        "fleet: Vigil, {first} -> {second} on {count} nodes through 5/25/100 % with bake 0: Completed after {:.1} s, every node on {second} alone after {:.1} s; operator API requests per node: {} ({update_writes:.2} writes); operator CPU {:.1} s; RSS {:.1} MiB, peak {:.1} MiB",
        completed.as_secs_f64(),
        vigil_update.as_secs_f64(),
        per_node.join(", "),
        c1 - c0,
        kib(&status, "VmRSS:") as f64 / 1024.0,
        kib(&status, "VmHWM:") as f64 / 1024.0,
    );

    // 3. A third revision whose agents crash beyond the first quarter of the nodes: it fails in
    // wave 3 and rolls back to the second.
    player.crashing.lock().unwrap().set(&image('c'), count.div_ceil(4));
    let (_, _, q2) = counters(&addr).await;
    let t = Instant::now();
    apply(target(&image('c'), "config-c", &config(12))).await;
    phase(&rollouts, RolloutPhase::RolledBack, None, Duration::from_secs(1800)).await;
    let rolled_back_at = t.elapsed();
    let bad = rollouts.get_status("agent").await.unwrap().status.and_then(|s| s.target_revision).unwrap_or_default();
    let on_second = format!("{}={second}", vigil_crds::labels::REVISION);
    wait_for(
        "every node back on the second revision",
        Duration::from_secs(1800),
        Duration::from_millis(500),
        || async {
            let on = nodes_with(&node_api, &run, &on_second).await;
            if on == count { Ok(Some(())) } else { Err(format!("{on} of {count}")) }
        },
    )
    .await
    .unwrap();
    handovers_ended(&node_api, &run, &bad).await;
    let vigil_rollback = t.elapsed();
    let (_, _, q3) = counters(&addr).await;
    let rollback_writes = writes(&delta(&q3, &q2)) / count as f64;
    eprintln!(
        "fleet: Vigil, a revision ({bad}) failing in wave 3, rolled back: RolledBack after {:.1} s, every node on {second} alone after {:.1} s; operator writes per node {rollback_writes:.2}",
        rolled_back_at.as_secs_f64(),
        vigil_rollback.as_secs_f64()
    );

    // 4. A plain DaemonSet of the same pods on the same nodes, updated by RollingUpdate.
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), &ns.name);
    let vigil_ds =
        dss.list(&ListParams::default().labels(vigil_crds::agent::SELECTOR))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|d| {
                d.spec.as_ref().and_then(|s| {
                    s.template.metadata.as_ref()?.labels.as_ref()?.get(vigil_crds::labels::REVISION).cloned()
                }) == Some(second.clone())
            })
            .expect("the second revision's DaemonSet");
    let mut template = serde_json::to_value(&vigil_ds.spec.as_ref().unwrap().template).unwrap();
    template["metadata"]["labels"] = json!({"app": "fleet-plain"});
    template["spec"]["affinity"] = json!(null);
    template["spec"]["nodeSelector"] = json!({"vigil.dev/e2e-scale-selected": run.clone()});
    let plain = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "fleet-plain"}, "spec": {
        "selector": {"matchLabels": {"app": "fleet-plain"}},
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "10%", "maxUnavailable": 0}},
        "template": template,
    }});
    // Vigil's rollout and agents go first, so the plain pods do not share the nodes with its own.
    rollouts.delete("agent", &DeleteParams::default()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let agents = ListParams::default().labels(vigil_crds::agent::SELECTOR);
    let _ = dss.delete_collection(&DeleteParams::background(), &agents).await;
    wait_for("Vigil's agent pods gone", Duration::from_secs(600), Duration::from_secs(1), || async {
        let left = pods.list_metadata(&agents).await.map_err(|e| e.to_string())?.items.len();
        if left == 0 { Ok(Some(())) } else { Err(format!("{left} left")) }
    })
    .await
    .unwrap();
    let pp = PatchParams::apply("vigil-e2e").force();
    dss.patch("fleet-plain", &pp, &Patch::Apply(&plain)).await.unwrap();
    let done = |generation: i64| {
        let (dss, pods) = (dss.clone(), pods.clone());
        async move {
            let ds = dss.get("fleet-plain").await.map_err(|e| e.to_string())?;
            let st = ds.status.unwrap_or_default();
            let all = st.desired_number_scheduled as usize == count
                && st.observed_generation == Some(generation)
                && st.updated_number_scheduled.unwrap_or(0) as usize == count
                && st.number_available.unwrap_or(0) as usize == count
                && st.current_number_scheduled as usize == count;
            // No surge pod left: one pod a node.
            let running = pods
                .list_metadata(&ListParams::default().labels("app=fleet-plain"))
                .await
                .map_err(|e| e.to_string())?
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .count();
            if all && running == count { Ok(Some(())) } else { Err(format!("{running} pods; {st:?}")) }
        }
    };
    let t = Instant::now();
    let generation = dss.get("fleet-plain").await.unwrap().metadata.generation.unwrap_or(1);
    wait_for("the plain DaemonSet's pods Ready", Duration::from_secs(1800), Duration::from_millis(500), || {
        done(generation)
    })
    .await
    .unwrap();
    eprintln!("fleet: plain DaemonSet created on {count} nodes, every pod Ready in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let changed = json!({"spec": {"template": {"metadata": {"annotations": {"fleet.example.com/change": "2"}}}}});
    let after = dss.patch("fleet-plain", &PatchParams::default(), &Patch::Merge(&changed)).await.unwrap();
    let generation = after.metadata.generation.unwrap_or(2);
    wait_for("the plain DaemonSet updated", Duration::from_secs(1800), Duration::from_millis(500), || done(generation))
        .await
        .unwrap();
    let plain_update = t.elapsed();
    eprintln!(
        "fleet: plain DaemonSet RollingUpdate (maxSurge 10 %, maxUnavailable 0) on {count} nodes: {:.1} s; Vigil's whole-fleet rollout (every node on the new agent alone) took {:.2} times that",
        plain_update.as_secs_f64(),
        vigil_update.as_secs_f64() / plain_update.as_secs_f64()
    );

    drop(player);
    drop(operator);
    let _ = dss.delete("fleet-plain", &DeleteParams::default()).await;
    let cleaned = nodes.delete_all().await;
    drop(cleanup);
    ns.delete().await.unwrap();
    cleaned.unwrap();
    assert!(update_writes <= 4.0, "{update_writes:.2} operator writes per node for a whole-fleet rollout (target 4)");
    assert!(
        vigil_update.as_secs_f64() <= 1.5 * plain_update.as_secs_f64(),
        "Vigil's whole-fleet rollout {:.1} s, over 1.5 times the plain DaemonSet update's {:.1} s",
        vigil_update.as_secs_f64(),
        plain_update.as_secs_f64()
    );
}
