//! The agent's Node conditions on a real API server, with the chart's RBAC and admission
//! policy in force: acting as an agent pod of node A (its service account and the node name
//! a bound token carries), setting its condition types on A's status is allowed; the same on
//! another node, a kubelet condition, or any other status field is refused. The nodes are the
//! test's own (no kubelet runs them); the chart objects are rendered for a release and
//! namespace of the test's own and removed after it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use vigil_agent::events::conditions::{Conditions, status_patch};
use vigil_agent::events::{Event, EventType};
use vigil_crds::AgentStatus;
use vigil_e2e::{Cleanup, TestNamespace, chart, client, client_as, client_with_token, wait_for};

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

/// Applies the chart's grants of `who` (`agent` or `operator`: its ClusterRole and binding) and
/// its admission policy `policy` (and binding), rendered for a release named after the test's
/// namespace `ns`.
async fn apply_grants(admin: &kube::Client, ns: &str, who: &str, policy: &str, cleanup: &mut Cleanup) {
    let wanted = [
        ("ClusterRole", format!("{ns}-{who}")),
        ("ClusterRoleBinding", format!("{ns}-{who}")),
        ("ValidatingAdmissionPolicy", format!("{ns}-{policy}")),
        ("ValidatingAdmissionPolicyBinding", format!("{ns}-{policy}")),
    ];
    let objects: Vec<_> = chart::render(ns, ns, &json!({}))
        .unwrap()
        .into_iter()
        .filter(|o| {
            let kind = o.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("");
            wanted.iter().any(|(k, n)| *k == kind && o.metadata.name.as_deref() == Some(n.as_str()))
        })
        .collect();
    assert_eq!(objects.len(), wanted.len(), "the chart renders the {who}'s grants and policy");
    chart::apply(admin, ns, &objects, cleanup).await.unwrap();
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
    apply_grants(&admin, &ns.name, "agent", "agent-node-conditions", &mut cleanup).await;

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
    assert_eq!(
        conds.iter().filter(|c| vigil_crds::agent::NODE_CONDITIONS.contains(&c.type_.as_str())).count(),
        vigil_crds::agent::NODE_CONDITIONS.len(),
        "every one of the agent's conditions, each once"
    );
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

/// What the API server said to a write: `Ok` or the refusal's text.
fn outcome<T>(r: Result<T, kube::Error>) -> Result<(), String> {
    r.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn a_pod_bound_agent_token_changes_only_its_own_conditions_on_its_node() {
    let admin = client().await.unwrap();
    vigil_e2e::install_crds(&admin, Duration::from_secs(60)).await.unwrap();
    let ns = TestNamespace::create(&admin, "least").await.unwrap();
    let mut cleanup = Cleanup::default();
    let nodes: Api<Node> = Api::all(admin.clone());
    let (mine, other) = (format!("{}-a", ns.name), format!("{}-b", ns.name));
    node(&nodes, &mine, &mut cleanup).await;
    node(&nodes, &other, &mut cleanup).await;

    // Everything the chart grants the agents, and every admission policy, for a release of the
    // test's own.
    let release = ns.name.clone();
    let objects: Vec<_> = chart::render(&release, &ns.name, &json!({}))
        .unwrap()
        .into_iter()
        .filter(|o| {
            let kind = o.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("");
            let name = o.metadata.name.as_deref().unwrap_or("");
            kind.starts_with("ValidatingAdmissionPolicy")
                || (kind == "ServiceAccount" && name == "vigil-agent")
                || (kind.ends_with("Role") || kind.ends_with("RoleBinding")) && name.contains("agent")
        })
        .collect();
    assert!(objects.len() >= 9, "the chart renders the agent's account, grants and policies: {}", objects.len());
    chart::apply(&admin, &ns.name, &objects, &mut cleanup).await.unwrap();
    // The operator's leader record, as the operator creates it.
    let leader: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "vigil-operator-leader"}})).unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns.name);
    configmaps.create(&PostParams::default(), &leader).await.unwrap();

    // An agent pod on `mine` (no kubelet runs it: the token is what matters), and a token bound
    // to it, as the kubelet projects into the agent's container.
    let sa_ready = wait_for("the agent's service account", Duration::from_secs(30), Duration::from_millis(200), || {
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns.name);
        async move { sas.get_opt("vigil-agent").await.map_err(|e| e.to_string()).map(|s| s.map(|_| ())) }
    });
    sa_ready.await.unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "vigil-agent-test"},
        "spec": {"nodeName": mine, "serviceAccountName": "vigil-agent",
                 "containers": [{"name": "agent", "image": "registry.invalid/vigil-agent@sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}
    }))
    .unwrap();
    let pod = Api::<Pod>::namespaced(admin.clone(), &ns.name).create(&PostParams::default(), &pod).await.unwrap();
    let tr: TokenRequest = serde_json::from_value(json!({"spec": {
        "audiences": [], "expirationSeconds": 600,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "uid": pod.uid().unwrap()}
    }}))
    .unwrap();
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), &ns.name)
        .create_token_request("vigil-agent", &PostParams::default(), &tr)
        .await
        .unwrap();
    let agent = client_with_token(token.status.unwrap().token.unwrap()).await.unwrap();
    let as_agent: Api<Node> = Api::all(agent.clone());
    let pp =
        PatchParams { field_manager: Some(vigil_crds::agent::NODE_CONDITIONS_MANAGER.into()), ..Default::default() };

    // The policies take effect a moment after they are created: wait until another node is
    // refused.
    wait_for("the policy refusing another node", Duration::from_secs(60), Duration::from_millis(500), || {
        let (as_agent, other, pp) = (as_agent.clone(), other.clone(), pp.clone());
        async move {
            match as_agent.patch_status(&other, &pp, &Patch::Strategic(&lockup_patch())).await {
                Err(kube::Error::Api(e)) if e.message.contains("only on its own node") => Ok(Some(())),
                other => Err(format!("{:?}", other.map(|_| ()))),
            }
        }
    })
    .await
    .unwrap();

    let before = nodes.get(&mine).await.unwrap();
    // Through the status subresource, which carries metadata and spec: every field refused.
    let attempts = [
        (
            "labels",
            json!({"metadata": {"labels": {"evil.example/steer": "yes", "vigil.dev/run.fake": "true"}}}),
            "labels or annotations",
        ),
        ("annotations", json!({"metadata": {"annotations": {"evil.example/a": "1"}}}), "labels or annotations"),
        (
            "ownerReferences",
            json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": other, "uid": "00000000-0000-0000-0000-000000000000"}]}}),
            "owners or finalizers",
        ),
        ("finalizers", json!({"metadata": {"finalizers": ["evil.example/keep"]}}), "owners or finalizers"),
    ];
    for (what, patch, says) in &attempts {
        let err = outcome(as_agent.patch_status(&mine, &pp, &Patch::Strategic(patch)).await)
            .expect_err(&format!("an agent token changed its node's {what}"));
        assert!(err.contains(says), "{what}: {err}");
        let err = outcome(as_agent.patch_status(&mine, &pp, &Patch::Merge(patch)).await)
            .expect_err(&format!("an agent token changed its node's {what} by a merge patch"));
        assert!(err.contains(says), "{what}: {err}");
    }
    // Status fields other than conditions: refused.
    for field in [
        json!({"status": {"images": [{"names": ["evil.example/pull-me:latest"], "sizeBytes": 1}]}}),
        json!({"status": {"phase": "Terminated"}}),
        json!({"status": {"runtimeHandlers": [{"name": "evil", "features": {"recursiveReadOnlyMounts": true, "userNamespaces": true}}]}}),
    ] {
        let err = outcome(as_agent.patch_status(&mine, &pp, &Patch::Strategic(&field)).await)
            .expect_err(&format!("an agent token changed its node's status: {field}"));
        assert!(err.contains("only conditions"), "{field}: {err}");
    }
    // The spec through the status subresource: refused, or dropped by the API server's own
    // status strategy; never changed.
    let spec = json!({"spec": {"unschedulable": true, "taints": [{"key": "evil.example/t", "effect": "NoSchedule"}]}});
    let _ = as_agent.patch_status(&mine, &pp, &Patch::Strategic(&spec)).await;
    // The node object itself, by any verb: no grant.
    for patch in [&attempts[0].1, &spec] {
        let err = outcome(as_agent.patch(&mine, &pp, &Patch::Strategic(patch)).await).expect_err("patched its node");
        assert!(err.contains("forbidden"), "{err}");
    }
    let mut n = before.clone();
    n.metadata.labels.get_or_insert_default().insert("evil.example/steer".into(), "yes".into());
    assert!(as_agent.replace(&mine, &PostParams::default(), &n).await.is_err(), "replaced its node");
    assert!(as_agent.delete(&other, &Default::default()).await.is_err(), "deleted a node");
    let after = nodes.get(&mine).await.unwrap();
    assert_eq!(after.metadata.labels, before.metadata.labels);
    assert_eq!(after.metadata.annotations, before.metadata.annotations);
    assert_eq!(after.metadata.owner_references, before.metadata.owner_references);
    assert_eq!(after.metadata.finalizers, before.metadata.finalizers);
    assert_eq!(after.spec, before.spec);

    // Not another node's AgentStatus or Lease, not the operator's leader record.
    let forged = json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "AgentStatus", "metadata": {"name": other}, "spec": {"nodeName": other}});
    let err = outcome(
        Api::<AgentStatus>::all(agent.clone()).patch(&other, &PatchParams::apply("x"), &Patch::Apply(&forged)).await,
    )
    .expect_err("wrote another node's AgentStatus");
    assert!(err.contains("only its own node"), "{err}");
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": format!("vigil-agent-{other}")}, "spec": {"holderIdentity": "x"}}),
    )
    .unwrap();
    let leases: Api<Lease> = Api::namespaced(agent.clone(), &ns.name);
    let err = outcome(leases.create(&PostParams::default(), &lease).await).expect_err("wrote another node's Lease");
    assert!(err.contains("only its own node"), "{err}");
    let leader_as_agent: Api<ConfigMap> = Api::namespaced(agent.clone(), &ns.name);
    let mut taken = configmaps.get("vigil-operator-leader").await.unwrap();
    taken
        .metadata
        .annotations
        .get_or_insert_default()
        .insert("control-plane.alpha.kubernetes.io/leader".into(), "{\"holderIdentity\":\"agent\"}".into());
    let err = outcome(leader_as_agent.replace("vigil-operator-leader", &PostParams::default(), &taken).await)
        .expect_err("an agent wrote the leader record");
    assert!(err.contains("forbidden"), "{err}");
    let bump = json!({"metadata": {"annotations": {"control-plane.alpha.kubernetes.io/leader": "{}"}}});
    assert!(
        leader_as_agent.patch("vigil-operator-leader", &PatchParams::default(), &Patch::Merge(&bump)).await.is_err()
    );

    // Its own conditions still go in.
    as_agent.patch_status(&mine, &pp, &Patch::Strategic(&lockup_patch())).await.unwrap();
    let conds = nodes.get(&mine).await.unwrap().status.unwrap().conditions.unwrap();
    assert!(conds.iter().any(|c| c.type_ == "KernelDeadlock" && c.status == "True"));

    // No kubelet will confirm the pod's end: delete it at once (its node goes with the cleanup,
    // and the pod garbage collector would take it later anyway).
    let dp = kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    Api::<Pod>::namespaced(admin.clone(), &ns.name).delete("vigil-agent-test", &dp).await.unwrap();
    drop(cleanup);
    ns.delete().await.unwrap();
}

#[tokio::test]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn the_operator_changes_only_vigil_labels_and_annotations_on_a_node() {
    let admin = client().await.unwrap();
    let ns = TestNamespace::create(&admin, "opnode").await.unwrap();
    let mut cleanup = Cleanup::default();
    let nodes: Api<Node> = Api::all(admin.clone());
    let name = format!("{}-n", ns.name);
    node(&nodes, &name, &mut cleanup).await;
    apply_grants(&admin, &ns.name, "operator", "operator-node-labels", &mut cleanup).await;
    let operator = client_as(
        &format!("system:serviceaccount:{}:vigil-operator", ns.name),
        &["system:serviceaccounts", "system:authenticated"],
        HashMap::new(),
    )
    .await
    .unwrap();
    let as_operator: Api<Node> = Api::all(operator);
    let pp = PatchParams::default();
    // The policy takes effect a moment after it is created.
    let foreign = json!({"metadata": {"labels": {"evil.example/steer": "yes"}}});
    wait_for("the policy refusing a foreign label", Duration::from_secs(60), Duration::from_millis(500), || {
        let (api, name, p) = (as_operator.clone(), name.clone(), foreign.clone());
        async move {
            // A dry run: what the API server would do, changing nothing while the policy is
            // not in force yet.
            let probe = PatchParams { dry_run: true, ..PatchParams::default() };
            match api.patch(&name, &probe, &Patch::Merge(&p)).await {
                Err(kube::Error::Api(e)) if e.message.contains("only vigil.dev/ labels") => Ok(Some(())),
                other => Err(format!("{:?}", other.map(|_| ()))),
            }
        }
    })
    .await
    .unwrap();
    // Its own labels and annotations go in.
    let own = json!({"metadata": {"labels": {"vigil.dev/revision": "r-0000000001"}, "annotations": {"vigil.dev/admitted-at": "2026-12-06T00:00:00Z"}}});
    as_operator.patch(&name, &pp, &Patch::Merge(&own)).await.unwrap();
    for (what, patch, says) in [
        (
            "an annotation",
            json!({"metadata": {"annotations": {"cluster-autoscaler.kubernetes.io/scale-down-disabled": "true"}}}),
            "only vigil.dev/ annotations",
        ),
        (
            "an owner",
            json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Namespace", "name": "ghost", "uid": "00000000-0000-0000-0000-000000000001"}]}}),
            "owners or finalizers",
        ),
        ("a finalizer", json!({"metadata": {"finalizers": ["evil.example/keep"]}}), "owners or finalizers"),
        ("the spec", json!({"spec": {"unschedulable": true}}), "spec"),
    ] {
        let err = outcome(as_operator.patch(&name, &pp, &Patch::Merge(&patch)).await)
            .expect_err(&format!("the operator changed {what} of a node"));
        assert!(err.contains(says), "{what}: {err}");
    }
    let n = nodes.get(&name).await.unwrap();
    assert!(n.metadata.owner_references.is_none() && n.metadata.finalizers.is_none());
    drop(cleanup);
    ns.delete().await.unwrap();
}
