//! The agent's watch of its node's pods on a real API server: the field selector
//! `spec.nodeName=<node>` brings that node's pods and no other, a container's id in the pod's
//! status names the container of an event from its cgroup, and a deleted pod is forgotten.
//! The pods are bound to node names of the test's own that no kubelet runs (they never start);
//! the test plays the kubelet by writing their container statuses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vigil_agent::events::pods::{PodIndex, watch_node_pods};
use vigil_agent::events::{Event, EventType};
use vigil_e2e::{TestNamespace, client, wait_for};

const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

async fn bound_pod(pods: &Api<Pod>, name: &str, node: &str, container_id: &str) -> String {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.invalid/vigil-e2e/none:1"}]},
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"containerStatuses": [{
        "name": "app", "containerID": format!("containerd://{container_id}"), "image": "registry.invalid/vigil-e2e/none:1",
        "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-12-03T00:00:00Z"}}
    }]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    created.metadata.uid.unwrap()
}

fn oom_in(uid: &str) -> Event {
    Event::new(EventType::OomKill, jiff::Timestamp::now(), "killed").with(
        "taskMemcg",
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CID}.scope",
            uid.replace('-', "_")
        ),
    )
}

#[tokio::test]
#[cfg_attr(not(vigil_e2e), ignore = "needs a cluster: set VIGIL_E2E_KUBECONFIG to its kubeconfig file")]
async fn the_node_pod_watch_names_the_pod_and_container_of_an_event() {
    let client = client().await.unwrap();
    let ns = TestNamespace::create(&client, "pods").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let node = format!("{}-node", ns.name);
    let uid = bound_pod(&pods, "api", &node, CID).await;
    let other = bound_pod(&pods, "elsewhere", &format!("{}-other", ns.name), &"f".repeat(64)).await;

    let index = PodIndex::default();
    let watch = tokio::spawn(watch_node_pods(client.clone(), node.clone(), index.clone()));
    let named = wait_for("the pod named from its cgroup", Duration::from_secs(30), Duration::from_millis(200), || {
        let index = index.clone();
        let uid = uid.clone();
        async move {
            let mut e = oom_in(&uid);
            index.attribute(&mut e);
            Ok(e.detail_str("containerName").is_some().then_some(e))
        }
    })
    .await;
    let e = named.unwrap();
    assert_eq!(e.detail_str("podNamespace"), Some(ns.name.as_str()));
    assert_eq!(e.detail_str("podName"), Some("api"));
    assert_eq!(e.detail_str("containerName"), Some("app"));
    assert_eq!(e.detail_str("podUid"), Some(uid.as_str()));
    assert_eq!(index.len(), 1, "only the node's own pods");
    let mut elsewhere = oom_in(&other);
    index.attribute(&mut elsewhere);
    assert!(elsewhere.detail_str("podName").is_none(), "a pod of another node is not watched");

    pods.delete("api", &DeleteParams::default().grace_period(0)).await.unwrap();
    let forgotten = wait_for("the deleted pod forgotten", Duration::from_secs(30), Duration::from_millis(200), || {
        let index = index.clone();
        async move { Ok(index.is_empty().then_some(())) }
    })
    .await;
    watch.abort();
    forgotten.unwrap();
    ns.delete().await.unwrap();
}
