//! `helm upgrade` on a completed rollout, a CRD schema that moves on, and the install's
//! namespace deleted, on a real API server:
//!
//! - a health-gate change makes no new revision: no agent restarts, no DaemonSet is rewritten;
//! - a config-only change and an image change each roll a new revision through to every node;
//! - a narrower node selector takes the agent off the nodes left out, and a wider one puts it
//!   back;
//! - the CRDs re-applied with a schema of a later version (a field this operator does not know,
//!   with a default the API server fills in) disturb nothing, and the operator still acts;
//! - the namespace deleted with everything in it (operator, rollout, DaemonSets, agents'
//!   Leases) and Vigil installed again into another namespace: what the first install left on
//!   the nodes (AgentStatuses, revision and rollout labels) misleads nobody, and the new
//!   rollout completes on every node.
//!
//! Bare control plane: the test plays the kubelets and agents of its own fake nodes and runs the
//! operator's controller in-process. Runs in either mode, since it selects only the nodes it
//! created.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Node, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vigil_crds::rollout::{RevisionOutcome, RolloutPhase};
use vigil_crds::{AgentRollout, AgentStatus, labels};
use vigil_e2e::kubelets::{Bare, CONFIG, Player, agents, image, operator, rollout, wait_phase, wait_rollout};
use vigil_e2e::{TestNamespace, client, install_crds, wait_for};

const NODES: usize = 3;
const WAVES: &str = r#"[{"count": 1, "bakeTime": "2s"}, {"percent": 100, "bakeTime": "2s"}]"#;

/// Waits for a Completed rollout on a revision other than `not`; checks every revision it
/// judged was Good and every node's agent pod runs it.
async fn completed(client: &kube::Client, ns: &str, not: Option<&str>) -> String {
    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), ns);
    let done = wait_rollout(&rollouts, "agent", "Completed on a new revision", Duration::from_secs(180), |r| {
        let st = r.status.as_ref();
        st.and_then(|s| s.phase) == Some(RolloutPhase::Completed)
            && st.and_then(|s| s.target_revision.as_deref()) != not
            && st.and_then(|s| s.observed_generation) == r.metadata.generation
    })
    .await;
    let st = done.status.unwrap();
    assert!(st.history.iter().all(|h| h.outcome == RevisionOutcome::Good), "{:?}", st.history);
    st.target_revision.unwrap()
}

/// Every node of the run labelled for `rev` by the rollout `ns`.`agent`, and reporting `rev` in
/// its AgentStatus.
async fn nodes_on(client: &kube::Client, run: &str, ns: &str, rev: &str) -> Result<Option<()>, String> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{}={run}", vigil_e2e::kubelets::RUN_LABEL)))
        .await
        .map_err(|e| e.to_string())?;
    let statuses: Api<AgentStatus> = Api::all(client.clone());
    for n in nodes.items {
        let name = n.metadata.name.clone().unwrap_or_default();
        let l = n.metadata.labels.unwrap_or_default();
        if l.get(labels::REVISION).map(String::as_str) != Some(rev) {
            return Err(format!("{name}: revision label {:?}", l.get(labels::REVISION)));
        }
        if l.get(labels::ROLLOUT) != Some(&format!("{ns}.agent")) {
            return Err(format!("{name}: rollout label {:?}", l.get(labels::ROLLOUT)));
        }
        let st = statuses.get_opt(&name).await.map_err(|e| e.to_string())?.and_then(|s| s.status);
        if st.as_ref().and_then(|s| s.revision.as_deref()) != Some(rev) {
            return Err(format!("{name}: AgentStatus on {:?}", st.and_then(|s| s.revision)));
        }
    }
    Ok(Some(()))
}

/// The agents' ServiceAccount and ConfigMap `agent-config`, as the chart installs them.
async fn agents_prerequisites(client: &kube::Client, ns: &str) {
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "vigil-agent"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns).create(&PostParams::default(), &sa).await.unwrap();
    config_map(client, ns, "agent-config", CONFIG).await;
}

async fn config_map(client: &kube::Client, ns: &str, name: &str, data: &str) {
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"agent.yaml": data}})).unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), ns).create(&PostParams::default(), &cm).await.unwrap();
}

// Multi-threaded: the kubelet player's guard waits, in its destructor, for its round to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn upgrades_a_new_crd_schema_and_a_deleted_namespace_leave_every_node_on_the_intended_revision() {
    let client = client().await.unwrap();
    install_crds(&client, Duration::from_secs(60)).await.unwrap();
    let mut bare = Bare::start(&client, "upgrade", NODES, &image('b')).await.unwrap();
    let (run, ns) = (bare.run.clone(), bare.ns.name.clone());
    let rollouts: Api<AgentRollout> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply("vigil-e2e").force();
    let mut spec = rollout(&run, "agent", &image('a'), serde_json::from_str(WAVES).unwrap());
    rollouts.patch("agent", &apply, &Patch::Apply(&spec)).await.unwrap();
    let first = completed(&client, &ns, None).await;

    // A gate change: the same revision, nothing restarted or rewritten, the change observed.
    let before = agents(&client, &ns).await;
    assert_eq!(before.0.len(), NODES, "one agent per node");
    spec["spec"]["healthGate"]["maxRestarts"] = json!(5);
    spec["spec"]["healthGate"]["progressDeadline"] = json!("4m");
    let generation = rollouts.patch("agent", &apply, &Patch::Apply(&spec)).await.unwrap().metadata.generation;
    wait_rollout(&rollouts, "agent", "the gate change observed", Duration::from_secs(30), |r| {
        r.status.as_ref().and_then(|s| s.observed_generation) == generation
    })
    .await;
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        assert_eq!(agents(&client, &ns).await, before, "a gate change restarted agents");
        let st = rollouts.get_status("agent").await.unwrap().status.unwrap();
        assert_eq!((st.phase, st.target_revision.as_deref()), (Some(RolloutPhase::Completed), Some(first.as_str())));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A config-only change: a new revision on every node.
    let next_config = "interval: 11s\n";
    config_map(&client, &ns, "agent-config-2", next_config).await;
    spec["spec"]["target"]["config"] = json!({"configMap": "agent-config-2", "sha256": vigil_crds::ConfigHash::of(next_config.as_bytes()).to_string()});
    rollouts.patch("agent", &apply, &Patch::Apply(&spec)).await.unwrap();
    let second = completed(&client, &ns, Some(&first)).await;
    wait_for("every node on the config change", Duration::from_secs(60), Duration::from_secs(1), || {
        nodes_on(&client, &run, &ns, &second)
    })
    .await
    .unwrap();

    // An image change: a new revision on every node.
    spec["spec"]["target"]["image"] = json!(image('c'));
    rollouts.patch("agent", &apply, &Patch::Apply(&spec)).await.unwrap();
    let third = completed(&client, &ns, Some(&second)).await;
    wait_for("every node on the image change", Duration::from_secs(60), Duration::from_secs(1), || {
        nodes_on(&client, &run, &ns, &third)
    })
    .await
    .unwrap();

    // A narrower nodeSelector (`helm upgrade` with `rollout.nodeSelector`): the node left out
    // loses the rollout's labels and its agent; widened again, it gets the agent back.
    let left_out = format!("{run}-n1");
    spec["spec"]["nodeSelector"]["matchLabels"]["topology.kubernetes.io/zone"] = json!("z0");
    rollouts.patch("agent", &apply, &Patch::Apply(&spec)).await.unwrap();
    let node_api: Api<Node> = Api::all(client.clone());
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "the node left out unlabelled and without an agent",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            let l = node_api.get(&left_out).await.map_err(|e| e.to_string())?.metadata.labels.unwrap_or_default();
            if l.keys().any(|k| labels::written_on_nodes(k)) {
                return Err(format!("labels {l:?}"));
            }
            let lp = ListParams::default().labels(vigil_crds::agent::SELECTOR);
            let on = pods
                .list(&lp)
                .await
                .map_err(|e| e.to_string())?
                .items
                .into_iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(left_out.as_str()));
            match on.count() {
                0 => Ok(Some(())),
                n => Err(format!("{n} agent pod(s) still on it")),
            }
        },
    )
    .await
    .unwrap();
    spec["spec"]["nodeSelector"]["matchLabels"].as_object_mut().unwrap().remove("topology.kubernetes.io/zone");
    rollouts.patch("agent", &apply, &Patch::Apply(&spec)).await.unwrap();
    wait_for("the node back on the revision", Duration::from_secs(60), Duration::from_secs(1), || {
        nodes_on(&client, &run, &ns, &third)
    })
    .await
    .unwrap();

    // The CRDs of a later version: AgentRollout's spec gains a field with a default, which the
    // API server now returns in every rollout. This operator does not know it, still acts on a
    // change (the image back to `a`, whose revision is the first's image with the config of
    // the second), and its status writes leave the field alone. Only CRDs an e2e run created
    // are changed (and put back): another install's are not the test's to touch.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "agentrollouts.vigil.dev";
    let ours = crds.get(name).await.unwrap().metadata.labels.unwrap_or_default().get(vigil_e2e::CREATED_BY_E2E.0)
        == Some(&vigil_e2e::CREATED_BY_E2E.1.to_owned());
    if ours {
        let mut later = crds.get(name).await.unwrap();
        later.metadata.managed_fields = None;
        let version = later.spec.versions.iter_mut().find(|v| v.name == "v1alpha1").unwrap();
        let props = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
            .and_then(|s| s.properties.as_mut())
            .unwrap();
        props.insert(
            "laterField".into(),
            serde_json::from_value(json!({"type": "string", "default": "from-a-later-version"})).unwrap(),
        );
        crds.replace(name, &PostParams::default(), &later).await.unwrap();
        // Put back whatever happens next: the test's own CRD as every other test expects it.
        struct Restore;
        impl Drop for Restore {
            fn drop(&mut self) {
                vigil_e2e::blocking(|client| async move {
                    let _ = install_crds(&client, Duration::from_secs(60)).await;
                });
            }
        }
        let _restore = Restore;
        wait_for("the later schema served", Duration::from_secs(30), Duration::from_millis(500), || async {
            let r = Api::<kube::api::DynamicObject>::namespaced_with(
                client.clone(),
                &ns,
                &kube::api::ApiResource::erase::<AgentRollout>(&()),
            )
            .get("agent")
            .await
            .map_err(|e| e.to_string())?;
            if r.data["spec"]["laterField"] == "from-a-later-version" { Ok(Some(())) } else { Err("not yet".into()) }
        })
        .await
        .unwrap();
        spec["spec"]["target"]["image"] = json!(image('a'));
        rollouts.patch("agent", &apply, &Patch::Apply(&spec)).await.unwrap();
        let fourth = completed(&client, &ns, Some(&third)).await;
        assert_ne!(fourth, first, "the first image with the second config");
        let raw = Api::<kube::api::DynamicObject>::namespaced_with(
            client.clone(),
            &ns,
            &kube::api::ApiResource::erase::<AgentRollout>(&()),
        )
        .get("agent")
        .await
        .unwrap();
        assert_eq!(raw.data["spec"]["laterField"], "from-a-later-version", "the operator's writes kept it");
        drop(_restore);
        wait_for("the CRD put back", Duration::from_secs(60), Duration::from_millis(500), || async {
            let crd = crds.get(name).await.map_err(|e| e.to_string())?;
            let v = serde_json::to_value(&crd.spec.versions).map_err(|e| e.to_string())?;
            if v.to_string().contains("laterField") { Err("still the later schema".into()) } else { Ok(Some(())) }
        })
        .await
        .unwrap();
    } else {
        eprintln!("the CRDs were installed by someone else: their schema is left alone");
    }
    let current = rollouts.get_status("agent").await.unwrap().status.unwrap().target_revision.unwrap();

    // The namespace deleted with everything in it; the nodes keep the AgentStatuses (cluster
    // scoped) and the labels the first install's operator set.
    bare.controller.0.abort();
    let gone = std::mem::replace(&mut bare.ns, TestNamespace::create(&client, "upgrade2").await.unwrap());
    gone.delete_and_wait(&client, Duration::from_secs(180)).await.unwrap();
    let statuses: Api<AgentStatus> = Api::all(client.clone());
    for n in &bare.nodes {
        let st = statuses.get(n).await.expect("the AgentStatus outlives the namespace").status.unwrap();
        assert_eq!(st.revision.as_deref(), Some(current.as_str()));
    }

    // Installed again, into another namespace, with the same image and config as the first
    // install's last revision (its revision name differs: the pod template names the
    // namespace). The leftover AgentStatuses and labels name the old revision and rollout.
    let ns2 = bare.ns.name.clone();
    agents_prerequisites(&client, &ns2).await;
    config_map(&client, &ns2, "agent-config-2", next_config).await;
    bare.player = Player::start(&client, &ns2, &run, &image('b'));
    bare.controller = operator(&client, &ns2);
    let rollouts2: Api<AgentRollout> = Api::namespaced(client.clone(), &ns2);
    rollouts2.patch("agent", &apply, &Patch::Apply(&spec)).await.unwrap();
    let again = wait_phase(&rollouts2, "agent", RolloutPhase::Completed, Duration::from_secs(180)).await;
    let st = again.status.unwrap();
    let installed = st.target_revision.clone().unwrap();
    assert!(st.history.iter().all(|h| h.outcome == RevisionOutcome::Good), "{:?}", st.history);
    assert_eq!(st.updated_nodes as usize, NODES, "{st:?}");
    wait_for("every node on the new install", Duration::from_secs(60), Duration::from_secs(1), || {
        nodes_on(&client, &run, &ns2, &installed)
    })
    .await
    .unwrap();
    assert_eq!(agents(&client, &ns2).await.0.len(), NODES, "one agent per node");

    drop(bare);
}
