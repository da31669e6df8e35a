//! The rendered chart (manifests/vigil.yaml, kept current by `make generate` and checked by
//! `make test`): its admission-policy CEL compiles, the operator runs unprivileged, and its
//! RBAC grants what the controller does.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use serde::Deserialize;
use serde_json::Value;

fn docs() -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/vigil.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).filter(|v| !v.is_null()).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn every_admission_policy_expression_compiles() {
    let docs = docs();
    let policies: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "ValidatingAdmissionPolicy").collect();
    assert_eq!(policies.len(), 3);
    let mut compiled = 0;
    for p in policies {
        let spec = &p["spec"];
        let exprs = ["matchConditions", "variables", "validations"]
            .iter()
            .flat_map(|k| spec[*k].as_array().cloned().unwrap_or_default())
            .map(|e| e["expression"].as_str().unwrap().to_owned());
        for e in exprs {
            kube::core::cel::cel::Program::compile(&e)
                .unwrap_or_else(|err| panic!("{}: {e:?}: {err}", p["metadata"]["name"]));
            compiled += 1;
        }
        // Every policy is bound, or it enforces nothing.
        let binding = find(&docs, "ValidatingAdmissionPolicyBinding", p["metadata"]["name"].as_str().unwrap());
        assert_eq!(binding["spec"]["validationActions"][0], "Deny");
    }
    assert!(compiled >= 6, "{compiled}");
}

#[test]
fn the_operator_runs_unprivileged_with_its_identity_and_probes() {
    let docs = docs();
    let d = find(&docs, "Deployment", "vigil-operator");
    let (key, value) = vigil_crds::labels::OPERATOR_SELECTOR.split_once('=').unwrap();
    assert_eq!(d["spec"]["template"]["metadata"]["labels"][key], value, "kubectl vigil cleanup finds the operator so");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["args"][0], "run");
    let env: Vec<&str> = c["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(
        env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"),
        "leader election and events need the pod's identity"
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(pod["serviceAccountName"], "vigil-operator");
}

#[test]
fn the_operator_may_do_what_the_controller_does_and_the_agent_no_more_than_its_own() {
    let docs = docs();
    let allows = |role: &Value, group: &str, resource: &str, verb: &str| {
        role["rules"].as_array().unwrap().iter().any(|r| {
            r["apiGroups"].as_array().unwrap().iter().any(|g| g == group)
                && r["resources"].as_array().unwrap().iter().any(|x| x == resource)
                && r["verbs"].as_array().unwrap().iter().any(|v| v == verb)
        })
    };
    let op = find(&docs, "ClusterRole", "vigil-operator");
    for (g, r, v) in [
        ("", "nodes", "patch"),
        ("", "nodes", "watch"),
        ("", "pods", "watch"),
        ("", "configmaps", "get"),
        ("coordination.k8s.io", "leases", "watch"),
        ("vigil.dev", "agentrollouts/status", "patch"),
        ("vigil.dev", "agentstatuses", "watch"),
        ("vigil.dev", "agentstatuses/status", "patch"),
        ("apps", "daemonsets", "patch"),
        ("apps", "daemonsets", "delete"),
        ("events.k8s.io", "events", "create"),
        ("vigil.dev", "alertpolicies", "watch"),
        ("vigil.dev", "alertpolicies/status", "patch"),
    ] {
        assert!(allows(op, g, r, v), "operator cannot {v} {g}/{r}");
    }
    assert!(!allows(op, "", "secrets", "get"), "the operator reads Secrets only where a RoleBinding lets it");
    let secrets = find(&docs, "ClusterRole", "vigil-operator-alert-secrets");
    assert!(allows(secrets, "", "secrets", "get"));
    assert!(!allows(secrets, "", "secrets", "list"), "the operator reads the Secrets policies name, never lists them");
    let bindings: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" && d["roleRef"]["name"] == "vigil-operator-alert-secrets")
        .collect();
    assert_eq!(bindings.len(), 1, "bound in the release namespace only by default");
    assert_eq!(bindings[0]["metadata"]["namespace"], "vigil-system");
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ClusterRoleBinding" && d["roleRef"]["name"] == "vigil-operator-alert-secrets"),
        "never cluster-wide"
    );
    assert!(
        !allows(op, "vigil.dev", "agentstatuses", "patch"),
        "the agents own their AgentStatus; the operator only a condition"
    );
    assert!(!allows(op, "", "secrets", "patch"), "the operator writes Secrets only in its own namespace");
    let leader = find(&docs, "Role", "vigil-operator-leader");
    assert!(allows(leader, "", "configmaps", "update"), "the leader record");
    assert!(
        !allows(leader, "coordination.k8s.io", "leases", "update"),
        "the leader record is no Lease: agents renew Leases in this namespace"
    );
    for (r, v) in [("configmaps", "patch"), ("secrets", "patch"), ("configmaps", "create"), ("secrets", "create")] {
        assert!(allows(leader, "", r, v), "operator cannot {v} {r} in its namespace (published alert policies)");
    }
    for v in ["create", "list", "watch", "delete"] {
        assert!(allows(leader, "", "configmaps", v), "operator cannot {v} the revisions' config copies");
    }
    assert!(!allows(op, "", "configmaps", "delete"), "config copies are deleted in the operator's namespace only");
    let agent = find(&docs, "ClusterRole", "vigil-agent");
    assert!(!allows(agent, "", "nodes", "patch"), "an agent never changes nodes");
    assert!(!allows(agent, "vigil.dev", "agentstatuses", "delete"));
    assert!(!allows(agent, "", "secrets", "get"), "agents read the mirrored Secret through their volume only");
    for v in ["get", "list", "watch", "patch", "delete"] {
        assert!(
            !allows(agent, "", "pods", v),
            "agents may {v} pods: pod specs carry other tenants' inline secrets (the kubelet's log directories name an event's pod)"
        );
    }
    // Whatever an agent token may write in the release namespace, the operator's leader
    // record is not among it.
    let heartbeat = find(&docs, "Role", "vigil-agent-heartbeat");
    for role in [agent, heartbeat] {
        for v in ["create", "update", "patch", "delete"] {
            assert!(!allows(role, "", "configmaps", v), "an agent may {v} ConfigMaps (the leader record)");
        }
    }
}

#[test]
fn the_node_conditions_policy_lists_exactly_the_agents_condition_types() {
    let docs = docs();
    let p = find(&docs, "ValidatingAdmissionPolicy", "vigil-agent-node-conditions");
    let mine = p["spec"]["variables"].as_array().unwrap().iter().find(|v| v["name"] == "mine").unwrap();
    let listed: Vec<String> = mine["expression"]
        .as_str()
        .unwrap()
        .trim_matches(['[', ']'])
        .split(',')
        .map(|s| s.trim().trim_matches('\'').to_owned())
        .collect();
    assert_eq!(listed, vigil_crds::agent::NODE_CONDITIONS);
    let agent = find(&docs, "ClusterRole", "vigil-agent");
    let rules = agent["rules"].as_array().unwrap();
    assert!(
        rules.iter().any(|r| r["resources"].as_array().unwrap().contains(&"nodes/status".into())
            && r["verbs"].as_array().unwrap() == &vec![Value::from("patch")]),
        "agents patch their node's status (conditions) and nothing more there"
    );
}

#[test]
fn every_cluster_wide_object_carries_the_release_so_a_deleted_namespace_leaves_nothing_unfindable() {
    // docs/install.md: after `kubectl delete namespace`, the release's cluster-wide objects
    // are deleted by `-l app.kubernetes.io/instance=<release>`.
    let docs = docs();
    let cluster_wide =
        ["ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"];
    let mut seen = 0;
    for d in docs.iter().filter(|d| cluster_wide.contains(&d["kind"].as_str().unwrap_or(""))) {
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/instance"], "vigil",
            "{} {}",
            d["kind"], d["metadata"]["name"]
        );
        seen += 1;
    }
    assert!(seen >= 8, "{seen} cluster-wide objects");
}
