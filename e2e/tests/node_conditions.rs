//! The agent's Node conditions on a real API server, with the chart's RBAC and admission
//! policy in force: acting as an agent pod of node A (its service account and the node name
//! a bound token carries), setting its condition types on A's status is allowed; the same on
//! another node, a kubelet condition, or any other status field is refused. The nodes are the
//! test's own (no kubelet runs them); the chart objects are rendered for a release and
//! namespace of the test's own and removed after it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use vigil_agent::events::conditions::{Conditions, status_patch};
use vigil_agent::events::{Event, EventType};
use vigil_e2e::{Cleanup, TestNamespace, chart, client, client_as, wait_for};

const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

async fn node(nodes: &Api<Node>, name: &str, cleanup: &mut Cleanup) {
    let n: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    cleanup.add_typed::<Node>(None, name);
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "played by the test",
                        "lastHeartbeatTime": "2026-12-03T00:00:00Z", "lastTransitionTime": "2026-12-03T00:00:00Z"}],
        "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
    }});
    nodes.patch_status(name, &PatchParams::default(), &Patch::Strategic(&status)).await.unwrap();
}

fn lockup_patch() -> serde_json::Value {
    let now = jiff::Timestamp::now();
    let mut c = Conditions::new(vigil_agent::config::NodeConditions::default(), now);
    c.observe(
        &Event::new(EventType::Lockup, now, "soft lockup on CPU 1")
            .with("line", "watchdog: BUG: soft lockup - CPU#1 stuck for 23s!"),
        now,
    );
    status_patch(&c.current(now), now)
}

#[tokio::test]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn an_agent_sets_its_conditions_on_its_own_node_and_nothing_else() {
    let admin = client().await.unwrap();
    let ns = TestNamespace::create(&admin, "conditions").await.unwrap();
    let mut cleanup = Cleanup::default();
    let nodes: Api<Node> = Api::all(admin.clone());
    let (mine, other) = (format!("{}-a", ns.name), format!("{}-b", ns.name));
    node(&nodes, &mine, &mut cleanup).await;
    node(&nodes, &other, &mut cleanup).await;

    // The chart's agent grants and its node-conditions policy, for a release of the test's own.
    let release = ns.name.clone();
    let wanted = [
        ("ClusterRole", format!("{release}-agent")),
        ("ClusterRoleBinding", format!("{release}-agent")),
        ("ValidatingAdmissionPolicy", format!("{release}-agent-node-conditions")),
        ("ValidatingAdmissionPolicyBinding", format!("{release}-agent-node-conditions")),
    ];
    let objects: Vec<_> = chart::render(&release, &ns.name, &json!({}))
        .unwrap()
        .into_iter()
        .filter(|o| {
            let kind = o.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("");
            wanted.iter().any(|(k, n)| *k == kind && o.metadata.name.as_deref() == Some(n.as_str()))
        })
        .collect();
    assert_eq!(objects.len(), wanted.len(), "the chart renders the agent's grants and policy");
    chart::apply(&admin, &ns.name, &objects, &mut cleanup).await.unwrap();

    let agent = client_as(
        &format!("system:serviceaccount:{}:vigil-agent", ns.name),
        &["system:serviceaccounts", "system:authenticated"],
        HashMap::from([(NODE_NAME_EXTRA.to_owned(), vec![mine.clone()])]),
    )
    .await
    .unwrap();
    let as_agent: Api<Node> = Api::all(agent);
    let pp =
        PatchParams { field_manager: Some(vigil_crds::agent::NODE_CONDITIONS_MANAGER.into()), ..Default::default() };

    // The policy takes effect a moment after it is created: wait until another node is refused.
    let refused =
        wait_for("the policy refusing another node", Duration::from_secs(60), Duration::from_millis(500), || {
            let (as_agent, other, pp) = (as_agent.clone(), other.clone(), pp.clone());
            async move {
                match as_agent.patch_status(&other, &pp, &Patch::Strategic(&lockup_patch())).await {
                    Err(kube::Error::Api(e)) if e.message.contains("only on its own node") => Ok(Some(e.message)),
                    Err(e) => Err(e.to_string()),
                    Ok(_) => Err("allowed".into()),
                }
            }
        })
        .await
        .unwrap();
    assert!(refused.contains("only on its own node"), "{refused}");

    // Its own node: its conditions go in, next to the kubelet's, which stay as they were.
    as_agent.patch_status(&mine, &pp, &Patch::Strategic(&lockup_patch())).await.unwrap();
    let n = nodes.get(&mine).await.unwrap();
    let conds = n.status.unwrap().conditions.unwrap();
    let kd = conds.iter().find(|c| c.type_ == "KernelDeadlock").unwrap();
    assert_eq!((kd.status.as_str(), kd.reason.as_deref()), ("True", Some("CPULockup")));
    assert!(kd.message.as_deref().unwrap().contains("soft lockup"));
    assert_eq!(conds.iter().filter(|c| vigil_crds::agent::NODE_CONDITIONS.contains(&c.type_.as_str())).count(), 5);
    let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));

    // A kubelet condition, or another status field, on its own node: refused.
    let ready_patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Forged"}]}});
    let err = as_agent.patch_status(&mine, &pp, &Patch::Strategic(&ready_patch)).await.unwrap_err();
    assert!(err.to_string().contains("only its own condition types"), "{err}");
    let capacity = json!({"status": {"capacity": {"cpu": "64"}}});
    let err = as_agent.patch_status(&mine, &pp, &Patch::Strategic(&capacity)).await.unwrap_err();
    assert!(err.to_string().contains("only conditions"), "{err}");
    // And not the node object itself.
    let label = json!({"metadata": {"labels": {"forged": "yes"}}});
    assert!(as_agent.patch(&mine, &pp, &Patch::Strategic(&label)).await.is_err(), "no grant to patch nodes");

    drop(cleanup);
    ns.delete().await.unwrap();
}
