//! The agent's memory in its pod, on real nodes: a benchmark, run by hand.
//!
//! ```sh
//! VIGIL_E2E_KUBECONFIG=… VIGIL_E2E_AGENT_IMAGE=… VIGIL_E2E_OPERATOR_IMAGE=… \
//!   cargo test -p vigil-e2e --test memory_in_pod -- --ignored --nocapture
//! ```
//!
//! Installs the chart with its defaults (every event source on, the published policies), waits
//! until every node's agent has worked for `VIGIL_MEMORY_WORKING_SECS` (default 120), and
//! prints per node, over five AgentStatus reports 30 s apart: the resident memory the agent
//! reports (read from its own `/proc/self`), and its container's working set and RSS as the
//! kubelet counts them (`/stats/summary` through the API server, what `kubectl top` shows).
//! The figures go in docs/benchmarks.md; the budget is 14 MiB in a pod. Everything it made is
//! removed at the end, on failure too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kube::api::Api;
use vigil_crds::AgentStatus;
use vigil_e2e::release::{AgentConditions, NodeLabels, install_into, schedulable_nodes, values};
use vigil_e2e::{Cleanup, TestNamespace, client, images};

/// One look at an agent: the RSS it reports, and its container's working set and RSS per the
/// kubelet when the kubelet gives them.
type Sample = (u64, Option<(u64, u64)>);

/// The agent container's memory on `node` per the kubelet's summary (`/stats/summary`, what
/// `kubectl top` reads): working set and RSS, bytes.
async fn kubelet_memory(client: &kube::Client, node: &str, namespace: &str) -> Option<(u64, u64)> {
    let req = http::Request::get(format!("/api/v1/nodes/{node}/proxy/stats/summary")).body(Vec::new()).ok()?;
    let summary: serde_json::Value = client.request(req).await.ok()?;
    let pod = summary["pods"].as_array()?.iter().find(|p| p["podRef"]["namespace"] == namespace)?;
    let c = pod["containers"].as_array()?.iter().find(|c| c["name"] == vigil_crds::agent::CONTAINER)?;
    Some((c["memory"]["workingSetBytes"].as_u64()?, c["memory"]["rssBytes"].as_u64()?))
}

#[tokio::test]
#[ignore = "a benchmark on real nodes: run it by hand with -- --ignored (see the module docs)"]
async fn the_agents_memory_in_its_pod() {
    let (agent_image, operator_image) = images().expect("VIGIL_E2E_AGENT_IMAGE and VIGIL_E2E_OPERATOR_IMAGE");
    let working: u64 = std::env::var("VIGIL_MEMORY_WORKING_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(120);
    let client = client().await.unwrap();
    vigil_e2e::release::not_installed(&client).await;
    let nodes: BTreeSet<String> = schedulable_nodes(&client).await;
    let ns = TestNamespace::create(&client, "memory").await.unwrap();
    let labels = NodeLabels { rollout_label: format!("{}.vigil-agent", ns.name) };
    let conditions = AgentConditions { nodes: nodes.clone() };
    let mut cleanup = Cleanup::default();
    for n in &nodes {
        cleanup.add_typed::<AgentStatus>(None, n);
    }
    install_into(
        &client,
        &ns.name,
        &ns.name,
        &values(&agent_image, &operator_image, "10s"),
        None,
        &nodes,
        &mut cleanup,
    )
    .await;
    let ready_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(working)).await;
    let statuses: Api<AgentStatus> = Api::all(client.clone());
    // Per node: the agent's own RSS (AgentStatus), and its container's working set and RSS as
    // the kubelet counts them for `kubectl top` (the cgroup's, page cache included).
    let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    // Five reports, one per AgentStatus write (every 30 s).
    for _ in 0..5 {
        for n in &nodes {
            let own = statuses.get(n).await.ok().and_then(|s| s.status).map_or(0, |st| st.rss_bytes);
            samples.entry(n.clone()).or_default().push((own, kubelet_memory(&client, n, &ns.name).await));
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let spread = |mut v: Vec<u64>| {
        v.sort_unstable();
        format!("{:.1} / {:.1} / {:.1} MiB", mib(v[0]), mib(v[v.len() / 2]), mib(v[v.len() - 1]))
    };
    for (n, s) in samples {
        let kubelet: Vec<(u64, u64)> = s.iter().filter_map(|x| x.1).collect();
        let by_kubelet = if kubelet.is_empty() {
            "not given by this node's kubelet (its /stats/summary has no container memory)".to_owned()
        } else {
            format!(
                "working set {}, RSS {}",
                spread(kubelet.iter().map(|k| k.0).collect()),
                spread(kubelet.iter().map(|k| k.1).collect())
            )
        };
        eprintln!(
            "memory: {n}: min / median / max over {} samples, {} s after the agent was Ready: its own RSS {}; its container per the kubelet: {by_kubelet}",
            s.len(),
            ready_at.elapsed().as_secs(),
            spread(s.iter().map(|x| x.0).collect()),
        );
    }
    drop(cleanup);
    drop(conditions);
    drop(labels);
    ns.delete().await.unwrap();
}
