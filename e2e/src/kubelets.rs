//! Kubelets and agents played by the test, for a bare control plane (API server,
//! controller-manager, scheduler, no kubelets): fake Node objects labelled for one run only,
//! their Ready conditions and node Leases, the agent pods' status as the DaemonSets create
//! them, and the agents' heartbeats and AgentStatuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use vigil_crds::AgentRollout;
use vigil_crds::rollout::RolloutPhase;

use crate::Cleanup;

/// The label that marks a run's fake nodes (its value: the run's namespace name).
pub const RUN_LABEL: &str = "vigil.dev/e2e";

/// An image digest of 64 `c`s: `registry.invalid/vigil-agent@sha256:…` images that no node
/// pulls (the test plays the kubelets).
pub fn image(c: char) -> String {
    format!("registry.invalid/vigil-agent@sha256:{}", std::iter::repeat_n(c, 64).collect::<String>())
}

/// Creates `n` fake nodes `RUN-n0…` labelled `vigil.dev/e2e=RUN`, with capacity so pods fit;
/// each (with its AgentStatus and node Lease) is deleted by `cleanup`.
pub async fn fake_nodes(client: &kube::Client, run: &str, n: usize, cleanup: &mut Cleanup) -> Result<Vec<String>> {
    let node_api: Api<Node> = Api::all(client.clone());
    let nodes: Vec<String> = (0..n).map(|i| format!("{run}-n{i}")).collect();
    for (i, name) in nodes.iter().enumerate() {
        let node: Node = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {RUN_LABEL: run, "topology.kubernetes.io/zone": format!("z{}", i % 2), "kubernetes.io/os": "linux"}},
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}, "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "nodeInfo": {"osImage": "e2e", "kernelVersion": "6.1.0", "architecture": "amd64", "operatingSystem": "linux", "bootID": "", "containerRuntimeVersion": "", "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "", "systemUUID": ""}}}),
        )?;
        node_api.create(&PostParams::default(), &node).await?;
        cleanup.add_typed::<Node>(None, name);
        cleanup.add_typed::<vigil_crds::AgentStatus>(None, name);
        // The node Lease the test's kubelet renews.
        cleanup.add_typed::<Lease>(Some("kube-node-lease"), name);
    }
    Ok(nodes)
}

/// Plays the kubelets of the fake nodes and the agents on them, once. The nodes in `down` are
/// played as a node whose kubelet and agent are cut off: NotReady, no node Lease renewal, no
/// pod status, no heartbeat (what the API server last heard of them stays).
pub async fn play_kubelets(
    client: &kube::Client,
    ns: &str,
    nodes: &[String],
    down: &std::collections::BTreeSet<String>,
    bad_image: &str,
) {
    let now = jiff::Timestamp::now();
    let node_api: Api<Node> = Api::all(client.clone());
    let node_leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    // Each node's agents; of two (a handover), the one that works is that of the node's
    // revision unless it crashes, as the agents' lock on the node decides.
    let mut working: std::collections::BTreeMap<String, (bool, String)> = std::collections::BTreeMap::new();
    let mut assigned: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for n in nodes {
        let node = node_api.get_opt(n).await.ok().flatten();
        if let Some(rev) = node.as_ref().and_then(|n| n.metadata.labels.as_ref()?.get("vigil.dev/revision")) {
            assigned.insert(n.clone(), rev.clone());
        }
        // A kubelet keeps the Ready condition's transition time until the status changes, and
        // the other conditions (a strategic merge, by condition type).
        let want = if down.contains(n) { "False" } else { "True" };
        let ready =
            node.and_then(|n| n.status?.conditions?.into_iter().find(|c| c.type_ == "Ready" && c.status == want));
        let since = ready.and_then(|c| c.last_transition_time).map_or(now, |t| t.0);
        let reason = if want == "True" { "KubeletReady" } else { "KubeletStopped" };
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": want, "reason": reason, "lastHeartbeatTime": now.to_string(), "lastTransitionTime": since.to_string()}]}});
        let _ = node_api.patch_status(n, &PatchParams::default(), &Patch::Strategic(&status)).await;
        if down.contains(n) {
            continue;
        }
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": n}, "spec": {"holderIdentity": n, "leaseDurationSeconds": 40, "renewTime": jiff_micro(now)}});
        let _ = node_leases.patch(n, &PatchParams::apply("vigil-e2e-kubelet").force(), &Patch::Apply(&lease)).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // A failed read skips this round; the next one, a second later, plays it.
    let Ok(agent_pods) = pods.list(&ListParams::default().labels(vigil_crds::agent::SELECTOR)).await else { return };
    for p in agent_pods.items {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
        if !nodes.contains(&node) || down.contains(&node) {
            continue;
        }
        if p.metadata.deletion_timestamp.is_some() {
            // The kubelet stops the containers and ends the pod's graceful deletion.
            if let Some(name) = p.metadata.name.as_deref() {
                let now = kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
                let _ = pods.delete(name, &now).await;
            }
            continue;
        }
        let image = p.spec.as_ref().map(|s| s.containers[0].image.clone().unwrap_or_default()).unwrap_or_default();
        let rev = p.metadata.labels.as_ref().and_then(|l| l.get("vigil.dev/revision")).cloned().unwrap_or_default();
        let bad = image == bad_image;
        let container = if bad {
            json!({"name": "agent", "ready": false, "restartCount": 5, "image": image, "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}})
        } else {
            // The container keeps the start the kubelet first gave it.
            let started = p
                .status
                .as_ref()
                .and_then(|s| {
                    s.container_statuses.as_ref()?.first()?.state.as_ref()?.running.as_ref()?.started_at.clone()
                })
                .map_or(now, |t| t.0);
            json!({"name": "agent", "ready": true, "restartCount": 0, "image": image, "imageID": "", "state": {"running": {"startedAt": started.to_string()}}})
        };
        let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if bad { "False" } else { "True" }}], "containerStatuses": [container]}});
        let Some(name) = p.metadata.name.as_deref() else { continue };
        let _ = pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await;
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
        crate::report_as_agent(client, ns, &node, &rev).await;
    }
}

/// The kubelet player: plays the kubelets and agents of every node labelled for a run, once a
/// second, until dropped (or for at most 15 minutes). Dropping it waits (at most 30 s) for its
/// round to finish, so it writes nothing behind a cleanup that follows; hold it in a
/// multi-threaded runtime.
#[derive(Default)]
pub struct Player {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    down: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl Player {
    /// Starts playing the nodes labelled `vigil.dev/e2e=RUN` (those that join later too); agent
    /// pods running `bad_image` crash-loop.
    pub fn start(client: &kube::Client, ns: &str, run: &str, bad_image: &str) -> Self {
        let player = Self::default();
        let (stop, done, down) = (player.stop.clone(), player.done.clone(), player.down.clone());
        let (client, ns, bad, run) = (client.clone(), ns.to_owned(), bad_image.to_owned(), run.to_owned());
        tokio::spawn(async move {
            // Bounded: at most 15 minutes of one-second rounds; the test ends it sooner.
            let mine = ListParams::default().labels(&format!("{RUN_LABEL}={run}"));
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
                let down = down.lock().map(|d| d.clone()).unwrap_or_default();
                play_kubelets(&client, &ns, &nodes, &down, &bad).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            done.store(true, Ordering::SeqCst);
        });
        player
    }
}

impl Player {
    /// Takes `node` down (its kubelet and agent cut off: NotReady from the next round) or
    /// brings it back (Ready, with a new transition time, and played again).
    pub fn set_down(&self, node: &str, down: bool) {
        if let Ok(mut d) = self.down.lock() {
            if down {
                d.insert(node.to_owned());
            } else {
                d.remove(node);
            }
        }
    }
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

/// Waits (up to `timeout`) for rollout `name` to reach `phase`; panics with its status if not.
pub async fn wait_phase(api: &Api<AgentRollout>, name: &str, phase: RolloutPhase, timeout: Duration) -> AgentRollout {
    wait_rollout(api, name, &format!("{phase:?}"), timeout, move |r| {
        r.status.as_ref().and_then(|s| s.phase) == Some(phase)
    })
    .await
}

/// Waits (up to `timeout`) until rollout `name` satisfies `cond`; panics with its status if
/// not.
pub async fn wait_rollout(
    api: &Api<AgentRollout>,
    name: &str,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&AgentRollout) -> bool,
) -> AgentRollout {
    let c = move |r: Option<&AgentRollout>| r.is_some_and(&cond);
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, c)).await {
        Ok(Ok(Some(r))) => r,
        other => {
            let now = api.get(name).await.ok().and_then(|r| r.status);
            panic!("rollout {name} did not reach {what} within {timeout:?}: {other:?}; status now {now:?}")
        }
    }
}

/// The agents' config in [`Bare`]'s ConfigMap `agent-config` (key `agent.yaml`).
pub const CONFIG: &str = "interval: 10s\n";

/// A world for rollouts on a bare control plane: a namespace of the test's own holding the
/// agents' service account and their ConfigMap `agent-config` ([`CONFIG`]), fake nodes, the
/// operator's controller in-process (the agents' namespace is the test's) and the kubelet
/// player. Dropped in field order, on failure too: the player stops, the controller ends,
/// what `cleanup` holds (the nodes) goes, then the namespace and everything in it. Hold it in
/// a multi-threaded runtime (see [`Player`]).
pub struct Bare {
    /// The kubelets and agents of the run's nodes.
    pub player: Player,
    /// The operator's controller.
    pub controller: Aborting,
    /// Cluster-scoped objects to delete: the nodes, their AgentStatuses and Leases.
    pub cleanup: Cleanup,
    /// The namespace: rollouts, DaemonSets, pods, ConfigMaps.
    pub ns: crate::TestNamespace,
    /// The run's label value (`vigil.dev/e2e=RUN` on its nodes).
    pub run: String,
    /// The fake nodes.
    pub nodes: Vec<String>,
}

/// The operator's controller in-process, its agents in `namespace` (an install's operator;
/// dropping it is the operator gone).
pub fn operator(client: &kube::Client, namespace: &str) -> Aborting {
    let template = vigil_operator::act::AgentTemplate {
        namespace: namespace.to_owned(),
        ..vigil_operator::act::AgentTemplate::default()
    };
    Aborting(tokio::spawn(vigil_operator::controller::run(
        client.clone(),
        "e2e".into(),
        Arc::default(),
        None,
        template,
    )))
}

/// A task aborted when dropped.
pub struct Aborting(pub tokio::task::JoinHandle<()>);

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Bare {
    /// Sets the world up with `n` nodes; agent pods running `bad_image` crash-loop.
    pub async fn start(client: &kube::Client, prefix: &str, n: usize, bad_image: &str) -> Result<Self> {
        use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
        let ns = crate::TestNamespace::create(client, prefix).await?;
        let run = ns.name.clone();
        let mut cleanup = Cleanup::default();
        // The agents' service account, which the DaemonSets' pods name (the chart installs it
        // beside the operator).
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "vigil-agent"}}))?;
        Api::<ServiceAccount>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &sa).await?;
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "agent-config"}, "data": {"agent.yaml": CONFIG}}))?;
        Api::<ConfigMap>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &cm).await?;
        let nodes = fake_nodes(client, &run, n, &mut cleanup).await?;
        let controller = operator(client, &ns.name);
        let player = Player::start(client, &ns.name, &run, bad_image);
        Ok(Self { player, controller, cleanup, ns, run, nodes })
    }
}

/// What an install's agents are in `ns`: the agent pods' UIDs and the agent DaemonSets' names
/// and generations, sorted. Equal before and after something means no agent was restarted and
/// no DaemonSet rewritten.
pub async fn agents(client: &kube::Client, ns: &str) -> (Vec<String>, Vec<(String, Option<i64>)>) {
    use k8s_openapi::api::apps::v1::DaemonSet;
    let lp = ListParams::default().labels(vigil_crds::agent::SELECTOR);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut uids: Vec<String> =
        pods.list(&lp).await.map(|l| l.items.into_iter().filter_map(|p| p.metadata.uid).collect()).unwrap_or_default();
    uids.sort();
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let mut gens: Vec<(String, Option<i64>)> = dss
        .list(&lp)
        .await
        .map(|l| l.items.into_iter().map(|d| (d.metadata.name.unwrap_or_default(), d.metadata.generation)).collect())
        .unwrap_or_default();
    gens.sort();
    (uids, gens)
}

/// An AgentRollout `name` of `image` and [`CONFIG`] selecting the nodes of `run`, with
/// `waves`, for a server-side apply.
pub fn rollout(run: &str, name: &str, image: &str, waves: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "AgentRollout", "metadata": {"name": name}, "spec": {
        "target": {"image": image, "config": {"configMap": "agent-config", "sha256": vigil_crds::ConfigHash::of(CONFIG.as_bytes()).to_string()}},
        "nodeSelector": {"matchLabels": {RUN_LABEL: run}},
        "waves": waves,
        "healthGate": {"heartbeatGap": "60s", "progressDeadline": "3m", "maxRestarts": 2}
    }})
}
