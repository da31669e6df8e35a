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

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vigil_crds::rollout::RolloutPhase;
use vigil_crds::{AgentRollout, ConfigHash};
use vigil_e2e::{TestNamespace, client, install_crds, wait_for};

const CONFIG: &str = "interval: 10s\n";

/// A Node as a cloud node looks: 30 labels, 50 images, 4 KB of annotations.
fn node(name: &str, run: &str, selected: bool, i: usize) -> Node {
    let mut labels: BTreeMap<String, String> = BTreeMap::from([
        ("vigil.dev/e2e-scale".into(), run.into()),
        ("kubernetes.io/hostname".into(), name.into()),
        ("kubernetes.io/os".into(), "linux".into()),
        ("kubernetes.io/arch".into(), "amd64".into()),
        ("node.kubernetes.io/instance-type".into(), "m6i.2xlarge".into()),
        ("topology.kubernetes.io/region".into(), "eu-west-1".into()),
        ("topology.kubernetes.io/zone".into(), format!("eu-west-1{}", ["a", "b", "c"][i % 3])),
    ]);
    for k in 0..23 {
        labels.insert(format!("team.example.com/label-{k:02}"), format!("value-{}-{k}", i % 17));
    }
    if selected {
        labels.insert("vigil.dev/e2e-scale-selected".into(), run.into());
    }
    let images: Vec<serde_json::Value> = (0..50)
        .map(|k| {
            json!({"names": [
                format!("registry.example.com/platform/service-{k:02}@sha256:{:064x}", k * 7919 + i),
                format!("registry.example.com/platform/service-{k:02}:v1.{k}.{}", i % 5),
            ], "sizeBytes": 50_000_000 + k * 1_000_000})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "csi.volume.kubernetes.io/nodeid": format!("{{\"ebs.csi.aws.com\":\"i-{i:017x}\",\"efs.csi.aws.com\":\"i-{i:017x}\"}}"),
                "team.example.com/inventory": "x".repeat(3500),
            },
        },
        "spec": {"providerID": format!("aws:///eu-west-1a/i-{i:017x}")},
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "7910m", "memory": "31Gi", "pods": "110", "ephemeral-storage": "95Gi"},
            "addresses": [{"type": "InternalIP", "address": format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256)}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
            "nodeInfo": {"osImage": "Ubuntu 22.04.4 LTS", "kernelVersion": "6.5.0-1017-aws", "architecture": "amd64", "operatingSystem": "linux",
                         "containerRuntimeVersion": "containerd://1.7.13", "kubeletVersion": "v1.31.0", "kubeProxyVersion": "v1.31.0",
                         "bootID": format!("{i:08x}"), "machineID": format!("{i:032x}"), "systemUUID": format!("{i:032x}")},
            "images": images,
        }
    }))
    .unwrap()
}

/// This run's Nodes (by label): deleted by [`Nodes::delete_all`] at the end, and when
/// dropped on a failure.
struct Nodes {
    api: Api<Node>,
    selector: String,
    deleted: bool,
}

impl Nodes {
    /// [`Nodes::delete_pages`], once: whatever its outcome, dropping this does not try again
    /// (a failure is reported, not retried for ever).
    async fn delete_all(&mut self) -> Result<(), String> {
        let result = self.delete_pages().await;
        self.deleted = true;
        result
    }

    /// Deletes every Node of this run, a page of 500 at a time, 32 requests at once, and waits
    /// until none is left (10 minutes at most): `Err` says how many remain and the last error.
    /// One `deletecollection` over thousands of Nodes outlives the API server's request
    /// timeout and leaves most of them.
    async fn delete_pages(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut last_error = String::new();
        loop {
            let page = match self.api.list_metadata(&ListParams::default().labels(&self.selector).limit(500)).await {
                Ok(p) => p,
                Err(e) if Instant::now() < deadline => {
                    last_error = e.to_string();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => return Err(format!("listing the Nodes left: {e}")),
            };
            if page.items.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                // A label-selected list says nothing of what remains beyond its page.
                let more =
                    if page.metadata.continue_.as_deref().is_some_and(|c| !c.is_empty()) { " or more" } else { "" };
                return Err(format!(
                    "{}{more} Nodes ({}) left after 10 minutes; last error: {last_error}",
                    page.items.len(),
                    self.selector
                ));
            }
            let errors: Vec<String> = futures::stream::iter(page.items.into_iter().filter_map(|n| n.metadata.name))
                .map(|name| {
                    let api = self.api.clone();
                    async move {
                        match api.delete(&name, &DeleteParams::default()).await {
                            Ok(_) => None,
                            Err(kube::Error::Api(e)) if e.code == 404 => None,
                            Err(e) => Some(format!("{name}: {e}")),
                        }
                    }
                })
                .buffer_unordered(32)
                .filter_map(|e| async move { e })
                .collect()
                .await;
            if let Some(e) = errors.last() {
                last_error = format!("{} deletions failed, the last {e}", errors.len());
                // Refused or throttled: not again at once.
                tokio::time::sleep(Duration::from_secs(2)).await;
            } else {
                // Deleted; a Node with a finalizer stays a moment: look again shortly.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let mut nodes = Nodes { api: self.api.clone(), selector: self.selector.clone(), deleted: false };
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(nodes.delete_all())
        });
        match done.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("scale: cleanup failed: {e}"),
            Err(_) => eprintln!("scale: cleanup failed: the deleting thread panicked"),
        }
    }
}

/// Kills the operator when dropped.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// The operator's counters: reconciles, reconcile seconds, API requests by verb.
async fn counters(addr: &str) -> (f64, f64, BTreeMap<String, f64>) {
    let text = metrics_text(addr).await;
    let mut reconciles = 0.0;
    let mut seconds = 0.0;
    let mut requests = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let value: f64 = value.parse().unwrap_or(0.0);
        if series.starts_with("vigil_operator_reconciles_total") {
            reconciles += value;
        } else if series == "vigil_operator_reconcile_duration_seconds_sum" {
            seconds = value;
        } else if let Some(rest) = series.strip_prefix("vigil_operator_api_requests_total{verb=\"") {
            requests.insert(rest.trim_end_matches("\"}").to_owned(), value);
        }
    }
    (reconciles, seconds, requests)
}

async fn metrics_text(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return String::new() };
    let _ = s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark that creates thousands of Nodes: run it by hand with -- --ignored (see the module docs)"]
async fn the_operator_at_fleet_scale() {
    let count: usize = std::env::var("VIGIL_SCALE_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let binary = std::env::var("VIGIL_SCALE_OPERATOR")
        .unwrap_or_else(|_| format!("{}/../target/release/vigil-operator", env!("CARGO_MANIFEST_DIR")));
    assert!(std::path::Path::new(&binary).exists(), "{binary} missing: cargo build --release -p vigil-operator");
    let kubeconfig = std::env::var(vigil_e2e::KUBECONFIG_VAR).expect("VIGIL_E2E_KUBECONFIG");
    let client = client().await.unwrap();
    install_crds(&client, Duration::from_secs(60)).await.unwrap();
    let ns = TestNamespace::create(&client, "scale").await.unwrap();
    let run = ns.name.clone();
    let node_api: Api<Node> = Api::all(client.clone());
    let mut nodes = Nodes { api: node_api.clone(), selector: format!("vigil.dev/e2e-scale={run}"), deleted: false };
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
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(&binary)
        .args(["run", "--metrics-addr", &addr, "--lease-namespace", &ns.name])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", std::env::var("VIGIL_SCALE_RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _operator = Operator(child);

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
