//! The operator at fleet scale, on a real API server: a benchmark, run by hand.
//!
//! ```sh
//! cargo build --release -p vigil-operator
//! VIGIL_E2E_KUBECONFIG=… VIGIL_SCALE_NODES=5000 \
//!   cargo test -p vigil-e2e --test scale -- --ignored --nocapture
//! ```
//!
//! Creates `VIGIL_SCALE_NODES` (default 1,000) Node objects shaped like real ones (30 labels,
//! 50 images in `status.images`, about 4 KB of annotations, addresses, conditions, node info),
//! labelled for this run only; one of them is selected by an AgentRollout whose agent the
//! bench plays (pod Ready, heartbeat Lease), the others by no rollout, as a large cluster's
//! other nodes. It then runs the operator binary (`VIGIL_SCALE_OPERATOR`, default
//! `target/release/vigil-operator`) against the cluster, waits for the rollout to complete
//! and the fleet to settle, and reports over one idle minute: the operator's resident memory
//! (now and at its peak), reconciles, CPU time per reconcile and API requests by verb, from
//! its own `/metrics` and `/proc`. Everything it made is deleted at the end, on failure too.
//!
//! `VIGIL_SCALE_RUST_LOG` sets the operator's `RUST_LOG` (default `warn`), e.g.
//! `warn,kube_runtime::controller=debug` to see what triggers each reconcile.
//!
//! A benchmark, ignored unless asked for, as it creates thousands of Nodes: its figures go in
//! docs/benchmarks.md, and it fails when a target is missed (an idle minute of at most 2
//! reconciles, the operator's peak RSS at most 64 MiB) or when its Nodes could not all be deleted
//! (it waits for them, a page at a time, and says how many are left).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vigil_crds::rollout::RolloutPhase;
use vigil_crds::{AgentRollout, ConfigHash};
use vigil_e2e::fleet::{Bench, counters, cpu_seconds, kib, node, spawn_operator};
use vigil_e2e::wait_for;

const CONFIG: &str = "interval: 10s\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark that creates thousands of Nodes: run it by hand with -- --ignored (see the module docs)"]
async fn the_operator_at_fleet_scale() {
    let Bench { count, binary, kubeconfig, client, ns, run, node_api, mut nodes } = Bench::start("scale").await;
    let mut cleanup = vigil_e2e::Cleanup::default();
    cleanup.add_typed::<vigil_crds::AgentStatus>(None, &format!("{run}-00000"));

    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "vigil-agent"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &sa).await.unwrap();
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "agent-config"}, "data": {"agent.yaml": CONFIG}})).unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &cm).await.unwrap();

    // The fleet, 32 creations at a time.
    let started = Instant::now();
    let names: Vec<String> = (0..count).map(|i| format!("{run}-{i:05}")).collect();
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, n)| {
            let api = node_api.clone();
            let body = node(n, &run, i == 0, i);
            async move { api.create(&PostParams::default(), &body).await.map(|_| ()) }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    let created_in = started.elapsed();

    // The operator, out of the cluster, its metrics on a port of its own.
    let (_operator, addr, pid) = spawn_operator(&binary, &kubeconfig, &ns.name);

    // The rollout of the one selected node, whose kubelet and agent the bench plays.
    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), &ns.name);
    let spec = json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "AgentRollout", "metadata": {"name": "agent"}, "spec": {
        "target": {"image": format!("registry.invalid/vigil-agent@sha256:{}", "a".repeat(64)), "config": {"configMap": "agent-config", "sha256": ConfigHash::of(CONFIG.as_bytes()).to_string()}},
        "nodeSelector": {"matchLabels": {"vigil.dev/e2e-scale-selected": run}},
        "waves": [{"percent": 100, "bakeTime": "0s"}],
    }});
    rollouts.patch("agent", &PatchParams::apply("vigil-e2e").force(), &Patch::Apply(&spec)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let selected = names[0].clone();
    // Play the selected node's agent: its pod Ready, its Lease renewed in its revision's name,
    // its AgentStatus Healthy (as a healthy agent keeps them).
    let play = || async {
        for p in pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=vigil-agent"))
            .await
            .map_err(|e| e.to_string())?
            .items
        {
            let rev = p.metadata.labels.as_ref().and_then(|l| l.get("vigil.dev/revision")).cloned().unwrap_or_default();
            let now = jiff::Timestamp::now();
            // Started when the pod was made: a stable time, so replaying the status changes nothing.
            let started = p.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
            let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [{"name": "agent", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {"startedAt": started.to_string()}}}]}});
            let _ = pods
                .patch_status(p.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&status))
                .await;
            vigil_e2e::report_as_agent(&client, &ns.name, &selected, &rev).await;
        }
        Ok::<(), String>(())
    };
    wait_for("the rollout completed", Duration::from_secs(300), Duration::from_secs(1), || async {
        play().await?;
        let st = rollouts.get_status("agent").await.map_err(|e| e.to_string())?.status.unwrap_or_default();
        if st.phase == Some(RolloutPhase::Completed) {
            Ok(Some(()))
        } else {
            Err(format!("{:?}: {:?}", st.phase, st.reason))
        }
    })
    .await
    .unwrap();
    let completed_in = started.elapsed();

    // Settle (the node controller marks the kubelet-less nodes NotReady within its grace
    // period, 40 s by default), then one idle minute, measured.
    // The agent keeps renewing its heartbeat every 10 s, as a real one does.
    let idle = async |secs: u64| {
        for _ in 0..secs / 10 {
            let _ = play().await;
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    };
    idle(60).await;
    let (r0, s0, q0) = counters(&addr).await;
    let c0 = cpu_seconds(pid);
    idle(60).await;
    let (r1, s1, q1) = counters(&addr).await;
    let c1 = cpu_seconds(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let (rss, hwm) = (kib(&status, "VmRSS:"), kib(&status, "VmHWM:"));
    let reconciles = r1 - r0;
    let requests: Vec<String> =
        q1.iter().map(|(verb, v)| format!("{verb} {}", v - q0.get(verb).copied().unwrap_or(0.0))).collect();
    eprintln!(
        "scale: {count} nodes created in {:.1} s; rollout complete {:.1} s after the first creation",
        created_in.as_secs_f64(),
        completed_in.as_secs_f64()
    );
    eprintln!(
        "scale: idle minute: {reconciles} reconciles, {:.1} ms CPU per reconcile (reconcile time {:.2} ms), operator CPU {:.2} s; API requests: {}",
        if reconciles > 0.0 { (c1 - c0) * 1000.0 / reconciles } else { 0.0 },
        if reconciles > 0.0 { (s1 - s0) * 1000.0 / reconciles } else { 0.0 },
        c1 - c0,
        if requests.is_empty() { "none".to_owned() } else { requests.join(", ") }
    );
    eprintln!(
        "scale: operator RSS {:.1} MiB, peak {:.1} MiB; since it started: {r1} reconciles, {s1:.2} s reconciling, API requests {q1:?}",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    rollouts.delete("agent", &DeleteParams::default()).await.unwrap();
    drop(_operator);
    let cleaned = nodes.delete_all().await;
    drop(cleanup);
    ns.delete().await.unwrap();
    cleaned.unwrap();
    // The targets (docs/benchmarks.md): a quiet idle minute (0; up to 2 when the node
    // controller marks a kubelet-less Node NotReady inside it, which a rollout must look at),
    // and the operator's memory at its peak.
    assert!(reconciles <= 2.0, "{reconciles} reconciles in an idle minute");
    assert!(
        hwm <= 64 * 1024,
        "operator RSS peak {:.1} MiB at {count} Nodes, over the 64 MiB target",
        hwm as f64 / 1024.0
    );
}
