//! The chart on real nodes: installed as `helm install` would (rendered by Helm's SDK,
//! applied server-side) into a namespace of the test's own, with the images named by
//! `VIGIL_E2E_AGENT_IMAGE` and `VIGIL_E2E_OPERATOR_IMAGE` (digest references the cluster can
//! pull). Checks that every schedulable node gets a Ready agent and an AgentStatus reporting
//! each event source; rolls a second revision (a config change) through and checks every
//! node ends on it, measuring the longest time a node had no ready agent (sampled every
//! 250 ms); checks that a token bound to an agent pod cannot write another node's AgentStatus,
//! Lease or conditions, and that every agent set its conditions on its node; then uninstalls
//! and checks nothing of the release is left (the agents' node conditions removed).
//!
//! Needs a cluster where Vigil is not installed (the agents write one AgentStatus per node):
//! the test refuses to start otherwise, changing nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use vigil_crds::{AgentRollout, AgentStatus};
use vigil_e2e::release::{
    AGENTS, NodeLabels, agents_by_node, all_on, install_into, pod_ready, rollout_done, schedulable_nodes, values,
};
use vigil_e2e::{Cleanup, TestNamespace, chart, client, images, wait_for};

/// One test at a time installs the chart: the agents write one AgentStatus per node.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The chart installed into a namespace of the test's own, its first revision Completed and an
/// agent Ready and reporting on every schedulable node. Dropped (fields in this order): the
/// release's objects and the nodes' AgentStatuses go, then the labels the operator set on
/// nodes, then the namespace.
struct Release {
    cleanup: Cleanup,
    labels: NodeLabels,
    ns: TestNamespace,
    name: String,
    nodes: BTreeSet<String>,
    pods: Api<Pod>,
    rollouts: Api<AgentRollout>,
    first: String,
}

async fn install(client: &Client, hint: &str, agent_image: &str, operator_image: &str) -> Release {
    vigil_e2e::release::not_installed(client).await;
    let ns = TestNamespace::create(client, hint).await.unwrap();
    let name = ns.name.clone();
    let labels = NodeLabels { rollout_label: format!("{}.vigil-agent", ns.name) };
    let mut cleanup = Cleanup::default();
    let nodes = schedulable_nodes(client).await;
    for n in &nodes {
        cleanup.add_typed::<AgentStatus>(None, n);
    }
    let vals = values(agent_image, operator_image, "10s");
    let first = install_into(client, &name, &ns.name, &vals, None, &nodes, &mut cleanup).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), &ns.name);
    Release { cleanup, labels, ns, name, nodes, pods, rollouts, first }
}

#[tokio::test]
#[cfg_attr(
    not(vigil_e2e_images),
    ignore = "needs a cluster with real nodes: set VIGIL_E2E_KUBECONFIG, VIGIL_E2E_AGENT_IMAGE and VIGIL_E2E_OPERATOR_IMAGE"
)]
async fn the_chart_puts_an_agent_on_every_node_rolls_a_new_revision_and_uninstalls_clean() {
    let (agent_image, operator_image) = images().expect("VIGIL_E2E_AGENT_IMAGE and VIGIL_E2E_OPERATOR_IMAGE");
    let _serial = SERIAL.lock().await;
    let client = client().await.unwrap();
    let Release { mut cleanup, labels, ns, name: release, nodes, pods, rollouts, first } =
        install(&client, "install", &agent_image, &operator_image).await;
    let rollout_label = labels.rollout_label.clone();
    let statuses: Api<AgentStatus> = Api::all(client.clone());
    for n in &nodes {
        let st = statuses.get(n).await.unwrap().status.unwrap();
        eprintln!("{n}: {:?} {}", st.health, st.sources_summary.unwrap_or_default());
        for s in st.sources {
            eprintln!("  {}: {:?} ({}) {}", s.name, s.state, s.mode.unwrap_or_default(), s.reason.unwrap_or_default());
        }
    }

    // A second revision: the config changes, as `helm upgrade` with other values would.
    let upgraded_at = jiff::Timestamp::now();
    let upgrade = chart::render(&release, &ns.name, &values(&agent_image, &operator_image, "11s")).unwrap();
    chart::apply(&client, &ns.name, &upgrade, &mut cleanup).await.unwrap();
    let started = Instant::now();
    let mut gap_since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut longest = Duration::ZERO;
    // How long each node ran two agents side by side (the handover, ADR 0005).
    let mut side_by_side: BTreeMap<String, (Instant, Instant)> = BTreeMap::new();
    let second = loop {
        assert!(started.elapsed() < Duration::from_secs(420), "the second revision did not complete in 7 minutes");
        let agents = agents_by_node(&pods).await;
        for n in &nodes {
            if agents.get(n).is_some_and(|a| a.len() > 1) {
                side_by_side.entry(n.clone()).or_insert((Instant::now(), Instant::now())).1 = Instant::now();
            }
            let ready = agents.get(n).is_some_and(|a| a.iter().any(|(_, r)| *r));
            match (ready, gap_since.get(n)) {
                (false, None) => {
                    gap_since.insert(n.clone(), Instant::now());
                }
                (true, Some(t)) => {
                    longest = longest.max(t.elapsed());
                    gap_since.remove(n);
                }
                _ => {}
            }
        }
        if let Ok(Some(rev)) = rollout_done(&rollouts, Some(&first)).await
            && all_on(&client, &pods, &nodes, &rev, upgraded_at).await.is_ok()
        {
            break rev;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for t in gap_since.values() {
        longest = longest.max(t.elapsed());
    }
    eprintln!(
        "handover {first} -> {second} on {} node(s): longest time with no ready agent on a node: {} ms",
        nodes.len(),
        longest.as_millis()
    );
    let overlap = side_by_side.values().map(|(a, b)| b.duration_since(*a)).max().unwrap_or_default();
    eprintln!(
        "two agents ran side by side on {} node(s), for up to {} ms (as sampled every 250 ms)",
        side_by_side.len(),
        overlap.as_millis()
    );
    // Each handover ended: one agent per node, of the new revision.
    wait_for("the old agents gone", Duration::from_secs(120), Duration::from_secs(1), || async {
        let agents = agents_by_node(&pods).await;
        let extra: Vec<&String> = nodes.iter().filter(|n| agents.get(*n).is_some_and(|a| a.len() > 1)).collect();
        if extra.is_empty() { Ok(Some(())) } else { Err(format!("two agents still on {extra:?}")) }
    })
    .await
    .unwrap();

    // A config the agent would refuse never reaches a node: the rollout stops with
    // ConfigValid=False (ConfigInvalid) and every node keeps its Ready agent on `second`.
    let bad_config = "interval: 10s\nnot_a_key: 1\n";
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "vigil-e2e-bad-config"}, "data": {"agent.yaml": bad_config}}),
    )
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &cm).await.unwrap();
    let to_bad = json!({"spec": {"target": {"config": {"configMap": "vigil-e2e-bad-config", "key": "agent.yaml", "sha256": vigil_crds::ConfigHash::of(bad_config.as_bytes()).to_string()}}}});
    rollouts.patch("vigil-agent", &PatchParams::default(), &Patch::Merge(&to_bad)).await.unwrap();
    let why = wait_for("the bad config refused", Duration::from_secs(60), Duration::from_secs(1), || async {
        let st = rollouts.get_status("vigil-agent").await.map_err(|e| e.to_string())?.status.unwrap_or_default();
        let refused = st.conditions.iter().any(|c| c.type_ == "ConfigValid" && c.reason == "ConfigInvalid");
        if refused { Ok(Some(st.reason.unwrap_or_default())) } else { Err(format!("{:?}: {:?}", st.phase, st.reason)) }
    })
    .await
    .unwrap();
    assert!(why.contains("unknown field `not_a_key`") && why.contains("line 2"), "{why}");
    all_on(&client, &pods, &nodes, &second, upgraded_at).await.expect("every node still runs the previous revision");

    // A token bound to an agent pod may write its own node's AgentStatus and Lease only.
    let pod =
        pods.list(&ListParams::default().labels(AGENTS)).await.unwrap().items.into_iter().find(pod_ready).unwrap();
    let own_node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap();
    let tr: TokenRequest = serde_json::from_value(json!({"spec": {
        "audiences": [], "expirationSeconds": 600,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "uid": pod.uid().unwrap()}
    }}))
    .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    let token = sas.create_token_request("vigil-agent", &PostParams::default(), &tr).await.unwrap();
    let agent = vigil_e2e::client_with_token(token.status.unwrap().token.unwrap()).await.unwrap();
    let other = format!("{}-not-{own_node}", ns.name);
    let forged = json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "AgentStatus", "metadata": {"name": other}, "spec": {"nodeName": other}});
    let pp = PatchParams::apply("vigil-e2e-agent");
    let refused = Api::<AgentStatus>::all(agent.clone()).patch(&other, &pp, &Patch::Apply(&forged)).await;
    let err = refused.expect_err("an agent wrote another node's AgentStatus").to_string();
    assert!(err.contains("only its own node"), "{err}");
    // The agent's RBAC allows creating Leases (as the agent does for its own): the admission
    // policy is what refuses this one.
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": format!("vigil-agent-{other}")}, "spec": {"holderIdentity": other}}),
    )
    .unwrap();
    let refused = Api::<Lease>::namespaced(agent.clone(), &ns.name).create(&PostParams::default(), &lease).await;
    let err = refused.expect_err("an agent wrote another node's Lease").to_string();
    assert!(err.contains("only its own node"), "{err}");

    // Each agent sets its five conditions on its own node (all clear, or saying what is wrong);
    // with that bound token, the conditions of a node of the test's own are refused.
    let node_api: Api<Node> = Api::all(client.clone());
    wait_for("the agents' conditions on every node", Duration::from_secs(90), Duration::from_secs(1), || async {
        for n in &nodes {
            let node = node_api.get(n).await.map_err(|e| e.to_string())?;
            let conds = node.status.and_then(|s| s.conditions).unwrap_or_default();
            let ours: Vec<_> =
                conds.iter().filter(|c| vigil_crds::agent::NODE_CONDITIONS.contains(&c.type_.as_str())).collect();
            if ours.len() < vigil_crds::agent::NODE_CONDITIONS.len() || ours.iter().any(|c| c.reason.is_none()) {
                return Err(format!("{n}: {} of the agent's conditions", ours.len()));
            }
        }
        Ok(Some(()))
    })
    .await
    .unwrap();
    let fake = format!("{}-fake", ns.name);
    let mut fake_guard = Cleanup::default();
    node_api
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": fake}})).unwrap())
        .await
        .unwrap();
    fake_guard.add_typed::<Node>(None, &fake);
    let clock = json!({"status": {"conditions": [{"type": "ClockUnsynchronized", "status": "False", "reason": "ClockSynchronized", "message": "e2e"}]}});
    let cpp =
        PatchParams { field_manager: Some(vigil_crds::agent::NODE_CONDITIONS_MANAGER.into()), ..Default::default() };
    let as_agent: Api<Node> = Api::all(agent);
    as_agent
        .patch_status(&own_node, &cpp, &Patch::Strategic(&clock))
        .await
        .expect("an agent sets its own node's conditions");
    let err = as_agent
        .patch_status(&fake, &cpp, &Patch::Strategic(&clock))
        .await
        .expect_err("another node's conditions")
        .to_string();
    assert!(err.contains("only on its own node"), "{err}");
    drop(fake_guard);

    // Uninstall: the release's objects go (the rollout first of what the chart made, so its
    // DaemonSets follow it), then nothing of it may be left.
    drop(cleanup);
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), &ns.name);
    wait_for("no agent DaemonSet or pod left", Duration::from_secs(120), Duration::from_secs(1), || async {
        let ds = dss.list(&ListParams::default().labels(AGENTS)).await.map_err(|e| e.to_string())?.items.len();
        let p = pods.list(&ListParams::default().labels(AGENTS)).await.map_err(|e| e.to_string())?.items.len();
        if ds + p == 0 { Ok(Some(())) } else { Err(format!("{ds} DaemonSet(s), {p} pod(s)")) }
    })
    .await
    .unwrap();
    for n in &nodes {
        assert!(statuses.get_opt(n).await.unwrap().is_none(), "AgentStatus {n} left behind");
    }
    // The conditions the release's agents set go with them (an uninstall leaves them at their
    // last value: docs/install.md says how to remove them, as here).
    let remove: Vec<serde_json::Value> =
        vigil_crds::agent::NODE_CONDITIONS.iter().map(|t| json!({"type": t, "$patch": "delete"})).collect();
    for n in &nodes {
        node_api
            .patch_status(n, &PatchParams::default(), &Patch::Strategic(&json!({"status": {"conditions": remove}})))
            .await
            .unwrap();
        let left = node_api.get(n).await.unwrap().status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            !left.iter().any(|c| vigil_crds::agent::NODE_CONDITIONS.contains(&c.type_.as_str())),
            "the agent's conditions left on {n}"
        );
        assert!(left.iter().any(|c| c.type_ == "Ready"), "the kubelet's conditions stay on {n}");
    }
    drop(labels);
    let labelled = Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{}={rollout_label}", vigil_crds::labels::ROLLOUT)))
        .await
        .unwrap();
    assert!(labelled.items.is_empty(), "nodes still labelled for the release's rollout");
    ns.delete().await.unwrap();
}

/// The example AlertPolicy, for the test's namespace, with its memory rule set to a threshold
/// every node crosses at once and its critical alerts sent to `alertmanager`; the Slack route
/// and receiver go (they need a Secret and a workspace).
fn example_policy(namespace: &str, alertmanager: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/alertpolicy.yaml");
    let mut p: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    p["metadata"]["namespace"] = json!(namespace);
    for r in p["spec"]["rules"].as_array_mut().unwrap() {
        if r["name"] == "HighMemory" {
            r["detector"] = json!({"threshold": {"above": 0.001}});
            r["for"] = json!("0s");
            r["severity"] = json!("critical");
        }
    }
    p["spec"]["routes"].as_array_mut().unwrap().retain(|r| r["name"] == "page-critical");
    // News of a group goes out within seconds, not the default 5 minutes.
    p["spec"]["routes"][0]["groupInterval"] = json!("10s");
    p["spec"]["routes"][0]["rateLimit"] = json!({"minInterval": "10s", "maxPerHour": 360});
    p["spec"]["receivers"] =
        json!([{"name": "fleet-alertmanager", "alertmanager": {"urls": [format!("http://{alertmanager}")]}}]);
    p
}

#[tokio::test]
#[cfg_attr(
    not(vigil_e2e_alerts),
    ignore = "needs a cluster with real nodes and an address its pods reach this machine on: set VIGIL_E2E_KUBECONFIG, VIGIL_E2E_AGENT_IMAGE, VIGIL_E2E_OPERATOR_IMAGE and VIGIL_E2E_ALERTMANAGER_ADDRESS"
)]
async fn an_applied_alert_policy_fires_at_a_real_alertmanager_and_resolves_when_removed() {
    let (agent_image, operator_image) = images().expect("VIGIL_E2E_AGENT_IMAGE and VIGIL_E2E_OPERATOR_IMAGE");
    let addr = std::env::var(vigil_e2e::alertmanager::ADDRESS_VAR).expect("VIGIL_E2E_ALERTMANAGER_ADDRESS");
    let _serial = SERIAL.lock().await;
    let dir = std::env::temp_dir().join(format!("vigil-e2e-alertmanager-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let am = vigil_e2e::alertmanager::Alertmanager::start(&addr, &dir).unwrap();
    let client = client().await.unwrap();
    let release = install(&client, "alerts", &agent_image, &operator_image).await;
    let policies: Api<vigil_crds::AlertPolicy> = Api::namespaced(client.clone(), &release.ns.name);
    let policy: vigil_crds::AlertPolicy = serde_json::from_value(example_policy(&release.ns.name, &addr)).unwrap();
    policies.create(&PostParams::default(), &policy).await.unwrap();

    // Published by the operator, mounted by the kubelet, loaded by every agent (unset
    // alerts.policies in a pod means the published ones), and sent: one alert per node.
    let firing = |alerts: &[serde_json::Value]| -> BTreeSet<String> {
        alerts
            .iter()
            .filter(|a| a["labels"]["alertname"] == "HighMemory")
            .filter_map(|a| a["labels"]["node"].as_str().map(str::to_owned))
            .collect()
    };
    wait_for(
        "HighMemory firing at the Alertmanager for every node",
        Duration::from_secs(300),
        Duration::from_secs(2),
        || async {
            let alerts = am.active_alerts().map_err(|e| e.to_string())?;
            let nodes = firing(&alerts);
            if nodes == release.nodes {
                Ok(Some(()))
            } else {
                let st = policies.get_status("node-basics").await.ok().and_then(|p| p.status);
                Err(format!("firing for {nodes:?}; policy status {st:?}"))
            }
        },
    )
    .await
    .unwrap();

    // Removed: the agents resolve what they told the Alertmanager, before the Alertmanager
    // would let the alerts lapse on its own (their endsAt), and count none active.
    let lapse = am
        .active_alerts()
        .unwrap()
        .iter()
        .filter_map(|a| a["endsAt"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()))
        .min()
        .expect("firing alerts carry endsAt");
    policies.delete("node-basics", &Default::default()).await.unwrap();
    let statuses: Api<AgentStatus> = Api::all(client.clone());
    wait_for("HighMemory resolved for every node", Duration::from_secs(300), Duration::from_secs(2), || async {
        let alerts = am.active_alerts().map_err(|e| e.to_string())?;
        let nodes = firing(&alerts);
        if !nodes.is_empty() {
            return Err(format!("still firing for {nodes:?}"));
        }
        for n in &release.nodes {
            let active = statuses.get(n).await.map_err(|e| e.to_string())?.status.map(|s| s.active_alerts);
            if active != Some(0) {
                return Err(format!("{n}: {active:?} alerts active in its AgentStatus"));
            }
        }
        Ok(Some(()))
    })
    .await
    .unwrap();
    assert!(
        jiff::Timestamp::now() < lapse,
        "resolved only when the Alertmanager let the alerts lapse ({lapse}), not by the agents"
    );
    drop(release);
    drop(am);
    let _ = std::fs::remove_dir_all(&dir);
}
