//! A revision change under a process storm, on a real node: the test starts a process every
//! 10 ms on the node it runs on, rolls a config change through, and reads every event both of
//! that node's agents printed (`kubectl logs`, followed from each pod's start). Every process
//! the storm started must be reported exactly once by the pair, start and exit: the incoming
//! agent listens before the outgoing one stops, and neither reports what the other did
//! (docs/adr/0005-zero-gap-handover.md).
//!
//! The storm's processes must be the node's own, so this test runs on a node of the cluster
//! (as root, like the agent, so that it sees the same pids) and is told which one:
//! `VIGIL_E2E_STORM_NODE`, with the real-node variables. Without it the test is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, LogParams};
use vigil_agent::events::{Event, EventType};
use vigil_crds::AgentRollout;
use vigil_e2e::release::{AGENTS, AgentConditions, NodeLabels, all_on, install_into, rollout_done, values};
use vigil_e2e::{Cleanup, TestNamespace, chart, client, images, wait_for};

/// The processes a storm started, by pid, in order.
#[derive(Default)]
struct Storm {
    pids: Mutex<Vec<i64>>,
    count: AtomicUsize,
    stop: AtomicBool,
}

impl Storm {
    /// Starts `/bin/true` every `every` until stopped (at most `max`).
    fn start(self: &Arc<Self>, every: Duration, max: usize) -> std::thread::JoinHandle<()> {
        let storm = self.clone();
        std::thread::spawn(move || {
            let mut next = Instant::now();
            for _ in 0..max {
                if storm.stop.load(Ordering::SeqCst) {
                    break;
                }
                let mut child = std::process::Command::new("/bin/true").spawn().expect("start /bin/true");
                storm.pids.lock().unwrap().push(i64::from(child.id()));
                let _ = child.wait();
                storm.count.fetch_add(1, Ordering::SeqCst);
                next += every;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        })
    }

    async fn reached(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "the storm stalled below {n} processes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Process starts and exits per pid, per agent pod, from the pods' logs.
type Seen = Arc<Mutex<BTreeMap<String, HashMap<(i64, bool), usize>>>>;

/// Follows the logs of every agent pod on `node` from its start, noting its process events.
/// `following` counts the logs it has opened.
fn follow_agents(
    pods: Api<Pod>,
    node: String,
    seen: Seen,
    following: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut followed = BTreeSet::new();
        while !done.load(Ordering::SeqCst) {
            let list = pods.list(&ListParams::default().labels(AGENTS)).await.map(|l| l.items).unwrap_or_default();
            for p in list {
                let running = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some())));
                let on_node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str());
                if !on_node || !running || !followed.insert(p.name_any()) {
                    continue;
                }
                let (pods, name, seen, following) = (pods.clone(), p.name_any(), seen.clone(), following.clone());
                tokio::spawn(async move {
                    let lp = LogParams {
                        follow: true,
                        container: Some(vigil_crds::agent::CONTAINER.into()),
                        ..LogParams::default()
                    };
                    // The kubelet may not serve a just-started container's log at once.
                    let mut tries = 0;
                    let stream = loop {
                        match pods.log_stream(&name, &lp).await {
                            Ok(s) => break s,
                            Err(e) if tries >= 20 => {
                                eprintln!("cannot follow the log of {name}: {e}");
                                return;
                            }
                            Err(_) => tries += 1,
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    };
                    following.fetch_add(1, Ordering::SeqCst);
                    let mut lines = stream.lines();
                    while let Some(Ok(line)) = lines.next().await {
                        let Ok(e) = serde_json::from_str::<Event>(&line) else { continue };
                        let start = match e.kind {
                            EventType::ProcessStart => true,
                            EventType::ProcessExit => false,
                            _ => continue,
                        };
                        if let Some(pid) = e.detail_i64("pid") {
                            *seen.lock().unwrap().entry(name.clone()).or_default().entry((pid, start)).or_default() +=
                                1;
                        }
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(vigil_e2e_storm),
    ignore = "a measurement on a node: set VIGIL_E2E_STORM_NODE (the node this test runs on) with VIGIL_E2E_KUBECONFIG, VIGIL_E2E_AGENT_IMAGE and VIGIL_E2E_OPERATOR_IMAGE"
)]
async fn a_revision_change_under_a_process_storm_misses_and_repeats_nothing() {
    let (agent_image, operator_image) = images().expect("VIGIL_E2E_AGENT_IMAGE and VIGIL_E2E_OPERATOR_IMAGE");
    let node = std::env::var("VIGIL_E2E_STORM_NODE").expect("VIGIL_E2E_STORM_NODE: the node this test runs on");
    let client = client().await.unwrap();
    vigil_e2e::release::not_installed(&client).await;
    let nodes: BTreeSet<String> = [node.clone()].into();
    let ns = TestNamespace::create(&client, "storm").await.unwrap();
    let labels = NodeLabels { rollout_label: format!("{}.vigil-agent", ns.name) };
    let conditions = AgentConditions { nodes: nodes.clone() };
    let mut cleanup = Cleanup::default();
    cleanup.add_typed::<vigil_crds::AgentStatus>(None, &node);
    let all = vigil_e2e::release::schedulable_nodes(&client).await;
    assert!(all.contains(&node), "{node} is not a schedulable node of this cluster: {all:?}");
    let first = install_into(
        &client,
        &ns.name,
        &ns.name,
        &values(&agent_image, &operator_image, "10s"),
        None,
        &all,
        &mut cleanup,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), &ns.name);

    let seen: Seen = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let following = Arc::new(AtomicUsize::new(0));
    let follower = follow_agents(pods.clone(), node.clone(), seen.clone(), following.clone(), done.clone());
    // The first agent's log is followed before the storm starts.
    wait_for("the agent's log followed", Duration::from_secs(60), Duration::from_millis(100), || async {
        if following.load(Ordering::SeqCst) > 0 { Ok(Some(())) } else { Err("not yet".to_owned()) }
    })
    .await
    .unwrap();

    let storm = Arc::new(Storm::default());
    let every = Duration::from_millis(10);
    let thread = storm.start(every, 60_000);
    storm.reached(300, Duration::from_secs(60)).await;

    // The revision change: a config change, as `helm upgrade` with other values would.
    let changed_at = jiff::Timestamp::now();
    let upgrade = chart::render(&ns.name, &ns.name, &values(&agent_image, &operator_image, "11s")).unwrap();
    chart::apply(&client, &ns.name, &upgrade, &mut cleanup).await.unwrap();
    let second =
        wait_for("the second revision on every node", Duration::from_secs(420), Duration::from_secs(1), || async {
            let rev = rollout_done(&rollouts, Some(&first)).await?.unwrap_or_default();
            all_on(&client, &pods, &all, &rev, changed_at).await?;
            let agents = vigil_e2e::release::agents_by_node(&pods).await;
            match agents.get(&node) {
                Some(a) if a.len() == 1 => Ok(Some(rev)),
                a => Err(format!("agents on {node}: {a:?}")),
            }
        })
        .await
        .unwrap();
    // The new agent opened its process source while the old one worked, and says so.
    let statuses: Api<vigil_crds::AgentStatus> = Api::all(client.clone());
    let st = statuses.get(&node).await.unwrap().status.unwrap_or_default();
    let process = st.sources.iter().find(|s| s.name == "process").and_then(|s| s.reason.clone()).unwrap_or_default();
    eprintln!("{node}: process source: {process}");
    assert!(process.contains("opened while the agent before this one worked"), "{process}");
    // The storm goes on under the new agent alone for a while.
    let after = storm.count.load(Ordering::SeqCst) + 300;
    storm.reached(after, Duration::from_secs(60)).await;
    storm.stop.store(true, Ordering::SeqCst);
    thread.join().unwrap();
    let pids = storm.pids.lock().unwrap().clone();

    let total = |seen: &BTreeMap<String, HashMap<(i64, bool), usize>>, key: (i64, bool)| -> usize {
        seen.values().map(|m| m.get(&key).copied().unwrap_or(0)).sum()
    };
    // Every start and exit arrives, or the wait runs out (and the count below says what is missing).
    let _ =
        wait_for("every storm process in the logs", Duration::from_secs(60), Duration::from_millis(250), || async {
            let s = seen.lock().unwrap();
            let missing = pids.iter().filter(|p| total(&s, (**p, true)) == 0 || total(&s, (**p, false)) == 0).count();
            if missing == 0 { Ok(Some(())) } else { Err(format!("{missing} not yet")) }
        })
        .await;
    done.store(true, Ordering::SeqCst);
    follower.abort();
    let s = seen.lock().unwrap().clone();
    let count =
        |start: bool, pred: &dyn Fn(usize) -> bool| pids.iter().filter(|p| pred(total(&s, (**p, start)))).count();
    let (missed, twice) = (count(true, &|n| n == 0), count(true, &|n| n > 1));
    let (missed_exits, twice_exits) = (count(false, &|n| n == 0), count(false, &|n| n > 1));
    let per_pod: Vec<String> = s
        .iter()
        .map(|(pod, m)| format!("{pod}: {}", pids.iter().filter(|p| m.contains_key(&(**p, true))).count()))
        .collect();
    eprintln!(
        "handover {first} -> {second} on {node} under a process every {} ms: {} processes started, missed executions {missed}, reported twice {twice} (exits: missed {missed_exits}, twice {twice_exits}); reported by {}",
        every.as_millis(),
        pids.len(),
        per_pod.join(", ")
    );
    assert!(s.len() >= 2, "both agents' logs were read: {per_pod:?}");
    assert_eq!((missed, twice, missed_exits, twice_exits), (0, 0, 0, 0), "every process once, start and exit");
    drop(cleanup);
    drop(conditions);
    drop(labels);
    ns.delete().await.unwrap();
}
