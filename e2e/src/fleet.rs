//! A played fleet for the benchmarks on a real API server: Node objects shaped like a cloud's
//! (30 labels, 50 images, 4 KB of annotations), deleted in pages, and a player that keeps them
//! Ready (their node Leases, as kubelets renew them), runs the pods DaemonSets put on them
//! (Running and Ready at once; deleted at once when deleted) and plays Vigil's agents on them
//! (the heartbeat Lease and AgentStatus of the node's working revision). It is driven by a
//! watch and writes concurrently, so it keeps up with thousands of nodes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // benchmark helpers fail loudly

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

/// A Node as a cloud node looks ([`vigil_plan::shapes::cloud_node`]: 30 labels with the run's,
/// 50 images, 4 KB of annotations), labelled with the run and, when `selected`, as selected.
pub fn node(name: &str, run: &str, selected: bool, i: usize) -> Node {
    let mut extra = BTreeMap::from([("vigil.dev/e2e-scale".to_owned(), run.to_owned())]);
    if selected {
        extra.insert("vigil.dev/e2e-scale-selected".into(), run.into());
    }
    vigil_plan::shapes::cloud_node(name, i, &extra)
}

/// This run's Nodes (by label): deleted by [`Nodes::delete_all`] at the end, and when
/// dropped on a failure.
pub struct Nodes {
    /// The Nodes API.
    pub api: Api<Node>,
    /// The label selector of this run's Nodes.
    pub selector: String,
    /// Whether [`Nodes::delete_all`] ran.
    pub deleted: bool,
}

impl Nodes {
    /// [`Nodes::delete_pages`], once: whatever its outcome, dropping this does not try again
    /// (a failure is reported, not retried for ever).
    pub async fn delete_all(&mut self) -> Result<(), String> {
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

/// Creates the Nodes `names` (32 at a time), `selected(i)` marking those a rollout selects;
/// returns their uids by name.
pub async fn create_nodes(
    api: &Api<Node>,
    run: &str,
    names: &[String],
    selected: impl Fn(usize) -> bool,
) -> BTreeMap<String, String> {
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, n)| {
            let api = api.clone();
            let body = node(n, run, selected(i), i);
            async move {
                let made = api.create(&PostParams::default(), &body).await?;
                Ok::<_, kube::Error>((n.clone(), made.metadata.uid.unwrap_or_default()))
            }
        })
        .buffer_unordered(32)
        .try_collect::<BTreeMap<String, String>>()
        .await
        .unwrap()
}

/// Which pods of one image the player runs as crashing: all but the first `healthy` nodes to
/// get one (so a rollout of that image passes its first waves and fails after).
#[derive(Default)]
pub struct Crashing {
    image: Option<String>,
    healthy: usize,
    fine: BTreeSet<String>,
}

impl Crashing {
    /// Crash pods of `image` beyond the first `healthy` nodes.
    pub fn set(&mut self, image: &str, healthy: usize) {
        *self = Self { image: Some(image.to_owned()), healthy, fine: BTreeSet::new() };
    }

    fn crashes(&mut self, image: &str, node: &str) -> bool {
        if self.image.as_deref() != Some(image) || self.fine.contains(node) {
            return false;
        }
        if self.fine.len() < self.healthy {
            self.fine.insert(node.to_owned());
            return false;
        }
        true
    }
}

/// Plays the kubelets and Vigil's agents of a fleet until dropped.
pub struct Player {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Which pods crash.
    pub crashing: Arc<Mutex<Crashing>>,
    /// Pod status writes the player made (Running and Ready, or crashing).
    pub pod_writes: Arc<std::sync::atomic::AtomicU64>,
}

/// How many writes the player makes at once.
const AT_ONCE: usize = 24;

impl Player {
    /// Plays the Nodes `uids` (name to uid) and the pods in `namespace`; Vigil's agent pods
    /// (`vigil_crds::agent::SELECTOR`) also report as agents, the node's newest Ready one
    /// working.
    pub fn start(client: &kube::Client, namespace: &str, uids: BTreeMap<String, String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let crashing = Arc::new(Mutex::new(Crashing::default()));
        let pod_writes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // Node -> the revision of its working agent.
        let working: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let mut tasks = Vec::new();
        // Kubelets: each node's Lease renewed every 15 s (the node controller's grace is 40 s),
        // and its Ready condition set once.
        {
            let (client, stop) = (client.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let nodes: Api<Node> = Api::all(client.clone());
                let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
                    Api::namespaced(client.clone(), "kube-node-lease");
                let mut first = true;
                while !stop.load(Ordering::SeqCst) {
                    let round = Instant::now();
                    let now = jiff::Timestamp::now();
                    futures::stream::iter(uids.iter())
                        .for_each_concurrent(AT_ONCE, |(name, uid)| {
                            let (nodes, leases) = (nodes.clone(), leases.clone());
                            async move {
                                if first {
                                    let st = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now.to_string(), "lastTransitionTime": now.to_string()}]}});
                                    let _ = nodes.patch_status(name, &PatchParams::default(), &Patch::Strategic(&st)).await;
                                }
                                let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                    "metadata": {"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]},
                                    "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
                                let _ = leases.patch(name, &PatchParams::apply("vigil-e2e-kubelet").force(), &Patch::Apply(&lease)).await;
                            }
                        })
                        .await;
                    first = false;
                    let wait = Duration::from_secs(15).saturating_sub(round.elapsed());
                    let until = Instant::now() + wait;
                    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }));
        }
        // Pods: Running and Ready as they come (crashing where told), deleted at once.
        {
            let (client, stop, crashing, working, writes) =
                (client.clone(), stop.clone(), crashing.clone(), working.clone(), pod_writes.clone());
            let ns = namespace.to_owned();
            tasks.push(tokio::spawn(async move {
                let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
                let stream = watcher::watcher(pods.clone(), watcher::Config::default()).default_backoff();
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Pod>();
                let feed = async {
                    let mut stream = std::pin::pin!(stream);
                    while let Some(ev) = stream.next().await {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev {
                            let _ = tx.send(p);
                        }
                    }
                    drop(tx);
                };
                let play = tokio_stream_of(rx).for_each_concurrent(AT_ONCE, |p| {
                    let (pods, client, crashing, working, writes, ns) =
                        (pods.clone(), client.clone(), crashing.clone(), working.clone(), writes.clone(), ns.clone());
                    async move { play_pod(&client, &ns, &pods, p, &crashing, &working, &writes).await }
                });
                tokio::join!(feed, play);
            }));
        }
        // Agents' heartbeats: every 20 s, each node's working agent reports.
        {
            let (client, stop, working) = (client.clone(), stop.clone(), working.clone());
            let ns = namespace.to_owned();
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let round = Instant::now();
                    let now: Vec<(String, String)> =
                        working.lock().unwrap().iter().map(|(n, r)| (n.clone(), r.clone())).collect();
                    futures::stream::iter(now)
                        .for_each_concurrent(AT_ONCE, |(node, rev)| {
                            let (client, ns) = (client.clone(), ns.clone());
                            async move { crate::report_as_agent(&client, &ns, &node, &rev).await }
                        })
                        .await;
                    let until = Instant::now() + Duration::from_secs(20).saturating_sub(round.elapsed());
                    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }));
        }
        Self { stop, tasks, crashing, pod_writes }
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn tokio_stream_of<T>(mut rx: tokio::sync::mpsc::UnboundedReceiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Plays one pod as its kubelet would (and, for an agent pod, its agent).
async fn play_pod(
    client: &kube::Client,
    ns: &str,
    pods: &Api<Pod>,
    p: Pod,
    crashing: &Mutex<Crashing>,
    working: &Mutex<BTreeMap<String, String>>,
    writes: &std::sync::atomic::AtomicU64,
) {
    let Some(name) = p.metadata.name.clone() else { return };
    let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else { return };
    let labels = p.metadata.labels.clone().unwrap_or_default();
    let agent =
        labels.get(vigil_crds::agent::NAME_LABEL.0).map(String::as_str) == Some(vigil_crds::agent::NAME_LABEL.1);
    let rev = labels.get(vigil_crds::labels::REVISION).cloned().unwrap_or_default();
    if p.metadata.deletion_timestamp.is_some() {
        let now = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
        let _ = pods.delete(&name, &now).await;
        // The working agent gone (uninstalled): its heartbeats stop.
        let mut w = working.lock().unwrap();
        if agent && w.get(&node) == Some(&rev) {
            w.remove(&node);
        }
        return;
    }
    let image = p.spec.as_ref().and_then(|s| s.containers.first()?.image.clone()).unwrap_or_default();
    let crash = crashing.lock().unwrap().crashes(&image, &node);
    let ready = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let crashed = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.restart_count > 0));
    if (ready && !crash) || (crash && crashed) {
        return;
    }
    let now = jiff::Timestamp::now().to_string();
    let container = if crash {
        json!({"name": "agent", "ready": false, "restartCount": 5, "image": image, "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}})
    } else {
        json!({"name": "agent", "ready": true, "restartCount": 0, "image": image, "imageID": "", "state": {"running": {"startedAt": now}}})
    };
    let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if crash { "False" } else { "True" }}], "containerStatuses": [container]}});
    if pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await.is_ok() {
        writes.fetch_add(1, Ordering::Relaxed);
    }
    if agent && !crash {
        // The new agent takes over the node at once and reports.
        working.lock().unwrap().insert(node.clone(), rev.clone());
        crate::report_as_agent(client, ns, &node, &rev).await;
    }
}

/// Kills the operator when dropped.
pub struct Operator(pub std::process::Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// The operator's counters: reconciles, reconcile seconds, API requests by verb.
pub async fn counters(addr: &str) -> (f64, f64, BTreeMap<String, f64>) {
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

pub async fn metrics_text(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return String::new() };
    let _ = s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

/// Runs the operator `binary` out of the cluster against `kubeconfig`, its lease in
/// `namespace`, its metrics on a port of its own: the guard, the metrics address and its pid.
pub fn spawn_operator(binary: &str, kubeconfig: &str, namespace: &str) -> (Operator, String, u32) {
    use std::process::{Command, Stdio};
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(binary)
        .args(["run", "--metrics-addr", &addr, "--lease-namespace", namespace])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", std::env::var("VIGIL_SCALE_RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    (Operator(child), addr, pid)
}

/// The operator binary of the benchmarks: `VIGIL_SCALE_OPERATOR`, else the release build.
pub fn operator_binary() -> String {
    let binary = std::env::var("VIGIL_SCALE_OPERATOR")
        .unwrap_or_else(|_| format!("{}/../target/release/vigil-operator", env!("CARGO_MANIFEST_DIR")));
    assert!(std::path::Path::new(&binary).exists(), "{binary} missing: cargo build --release -p vigil-operator");
    binary
}

/// What a fleet benchmark starts from: the fleet's size (`VIGIL_SCALE_NODES`, default 1,000),
/// the operator binary, the kubeconfig, a client, CRDs installed, a namespace of its own
/// (its name labels the run's Nodes) and the guard of the run's Nodes.
pub struct Bench {
    pub count: usize,
    pub binary: String,
    pub kubeconfig: String,
    pub client: kube::Client,
    pub ns: crate::TestNamespace,
    pub run: String,
    pub node_api: Api<Node>,
    pub nodes: Nodes,
}

impl Bench {
    /// Sets a benchmark up in a namespace named after `prefix`.
    pub async fn start(prefix: &str) -> Self {
        let count: usize = std::env::var("VIGIL_SCALE_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
        let binary = operator_binary();
        let kubeconfig = std::env::var(crate::KUBECONFIG_VAR).expect("VIGIL_E2E_KUBECONFIG");
        let client = crate::client().await.unwrap();
        crate::install_crds(&client, Duration::from_secs(60)).await.unwrap();
        let ns = crate::TestNamespace::create(&client, prefix).await.unwrap();
        let run = ns.name.clone();
        let node_api: Api<Node> = Api::all(client.clone());
        let nodes = Nodes { api: node_api.clone(), selector: format!("vigil.dev/e2e-scale={run}"), deleted: false };
        Self { count, binary, kubeconfig, client, ns, run, node_api, nodes }
    }
}
