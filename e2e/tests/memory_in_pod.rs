//! The agent's memory in its pod, on real nodes: a benchmark, run by hand.
//!
//! ```sh
//! VIGIL_E2E_KUBECONFIG=… VIGIL_E2E_AGENT_IMAGE=… VIGIL_E2E_OPERATOR_IMAGE=… \
//!   cargo test -p vigil-e2e --test memory_in_pod -- --ignored --nocapture
//! ```
//!
//! Installs the chart with its defaults (every event source on, the published policies), waits
//! until every node's agent has worked for `VIGIL_MEMORY_WORKING_SECS` (default 120), and
//! prints per node the resident memory each agent reports in its AgentStatus (read from its
//! own `/proc/self`) over five reports, with its CPU. The figures go in docs/benchmarks.md;
//! the budget is 14 MiB in a pod. Everything it made is removed at the end, on failure too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kube::api::Api;
use vigil_crds::AgentStatus;
use vigil_e2e::release::{AgentConditions, NodeLabels, install_into, schedulable_nodes, values};
use vigil_e2e::{Cleanup, TestNamespace, client, images};

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
    let mut samples: BTreeMap<String, Vec<(u64, u32)>> = BTreeMap::new();
    // Five reports, one per heartbeat of the agent (10 s in this install).
    for _ in 0..5 {
        for n in &nodes {
            if let Some(st) = statuses.get(n).await.ok().and_then(|s| s.status) {
                samples.entry(n.clone()).or_default().push((st.rss_bytes, st.cpu_millicores));
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    for (n, mut s) in samples {
        s.sort_unstable();
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let cpu: Vec<u32> = s.iter().map(|(_, c)| *c).collect();
        eprintln!(
            "memory: {n}: agent RSS in its pod min / median / max {:.1} / {:.1} / {:.1} MiB, CPU {cpu:?} millicores, {} s after it was Ready",
            mib(s[0].0),
            mib(s[s.len() / 2].0),
            mib(s[s.len() - 1].0),
            ready_at.elapsed().as_secs()
        );
    }
    drop(cleanup);
    drop(conditions);
    drop(labels);
    ns.delete().await.unwrap();
}
