//! The kube shell against a mocked API server: the exact requests of a reconcile, in order.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;
use vigil_crds::AgentRollout;
use vigil_crds::rollout::FailurePolicy;

use super::{Context, reconcile};
use vigil_plan::facts::{NodeFacts, PodFacts};
use vigil_plan::simulate::{STABLE, spec};

/// The revision the test rollout targets, as the controller names it (with its pod template
/// and the rollout).
fn target_name(spec: &vigil_crds::AgentRolloutSpec) -> String {
    let scope = format!("{}\nrollout/vigil-system/agent", crate::act::AgentTemplate::default().id());
    vigil_plan::revision_of(spec, &scope).unwrap()
}

const CONFIG: &str = "interval: 10s\n";

fn rollout() -> AgentRollout {
    let mut s = spec(FailurePolicy::Rollback);
    s.target.config.sha256 = vigil_crds::ConfigHash::of(CONFIG.as_bytes()).to_string();
    let mut r = AgentRollout::new("agent", s);
    r.metadata.namespace = Some("vigil-system".into());
    r.metadata.uid = Some("uid-1".into());
    r.metadata.generation = Some(3);
    r.status = Some(vigil_crds::AgentRolloutStatus { stable_revision: Some(STABLE.into()), ..Default::default() });
    r
}

fn nodes(n: usize) -> Vec<k8s_openapi::api::core::v1::Node> {
    (0..n)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": {"name": format!("node-{i:02}"), "labels": {"vigil.dev/revision": STABLE, "topology.kubernetes.io/zone": format!("z{}", i % 2)}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap()
        })
        .collect()
}

/// The operator's copy of the test rollout's config for `target`.
fn target_snapshot(target: &str) -> k8s_openapi::api::core::v1::ConfigMap {
    crate::act::config_snapshot(
        target,
        &rollout().spec.target.config.sha256,
        CONFIG,
        "vigil-system/agent",
        None,
        "vigil-system",
    )
}

/// An agent DaemonSet as the store keeps it, written for `owner_rollout` (or owned by `uid`).
fn daemonset(rev: &str, owner_rollout: Option<&str>, uid: Option<&str>) -> k8s_openapi::api::apps::v1::DaemonSet {
    let mut v = json!({"metadata": {"name": format!("vigil-agent-{rev}"), "namespace": "vigil-system", "labels": {"vigil.dev/revision": rev, "app.kubernetes.io/managed-by": "vigil-operator"}}});
    if let Some(k) = owner_rollout {
        v["metadata"]["annotations"] = json!({"vigil.dev/owner-rollout": k});
    }
    if let Some(uid) = uid {
        v["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "vigil.dev/v1alpha1", "kind": "AgentRollout", "name": "x", "uid": uid}]);
    }
    serde_json::from_value(v).unwrap()
}

/// The stores of a fleet of `n` nodes on the stable revision, with `daemonsets`.
fn stores(n: usize, daemonsets: Vec<k8s_openapi::api::apps::v1::DaemonSet>) -> super::Stores {
    super::Stores {
        nodes: kept(nodes(n)),
        pods: crate::kept::Kept::of([]),
        leases: crate::kept::Kept::of([]),
        statuses: crate::kept::Kept::of([]),
        rollouts: fill(vec![rollout()]),
        daemonsets: fill(daemonsets),
        snapshots: fill(vec![]),
    }
}

async fn body_json(req: Request<Body>) -> (Method, String, Value) {
    let method = req.method().clone();
    let uri = req.uri().to_string();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let v = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (method, uri, v)
}

/// The next request the code under test makes (within 10 s), its body read, and the handle
/// to answer it.
async fn next_request(
    handle: &mut mock::Handle<Request<Body>, Response<Body>>,
) -> ((Method, String, Value), mock::SendResponse<Response<Body>>) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("a request expected but never made")
        .expect("open");
    (body_json(req).await, send)
}

fn ok(v: &Value) -> Response<Body> {
    Response::builder().status(200).body(Body::from(serde_json::to_vec(v).unwrap())).unwrap()
}

#[tokio::test]
async fn first_reconcile_reads_the_cluster_then_writes_status_then_moves_wave_one_then_applies_daemonsets() {
    first_reconcile(false).await;
}

#[tokio::test]
async fn a_new_decision_is_published_as_an_event_right_after_the_status() {
    first_reconcile(true).await;
}

async fn first_reconcile(with_events: bool) {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let recorder = with_events.then(|| crate::events::Publisher::new(client.clone(), "test".into()));
    // Ours for an old revision (by owner, as an earlier operator wrote it) and by annotation,
    // and another rollout's.
    let existing = vec![
        daemonset("r-old0000000", None, Some("uid-1")),
        daemonset("r-old1111111", Some("vigil-system/agent"), None),
        daemonset("r-other00000", Some("vigil-system/other"), Some("uid-2")),
    ];
    // The clock is the context's: every stamp of the reconcile is this instant.
    let ctx = Arc::new(Context {
        clock: || jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        ..Context::new(client, recorder, stores(20, existing))
    });
    let ctx_metrics = ctx.metrics.clone();
    let target = target_name(&rollout().spec);
    let want_target = target.clone();

    let api = tokio::spawn(async move {
        let mut next = async || next_request(&mut handle).await;
        // Observe: the target's ConfigMap is the one read; the fleet comes from the stores.
        let ((_, uri, _), send) = next().await;
        assert_eq!(uri, "/api/v1/namespaces/vigil-system/configmaps/agent-config");
        send.send_response(ok(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "agent-config"}, "data": {"agent.yaml": CONFIG}})));
        // It matches the target's hash and has no copy yet: the operator takes its immutable
        // copy before anything else, so no node can be admitted to a revision without one.
        let snapshot = format!("vigil-agent-config-{target}");
        let ((m, uri, body), send) = next().await;
        assert_eq!(m, Method::POST);
        assert!(uri.starts_with("/api/v1/namespaces/vigil-system/configmaps?"), "{uri}");
        assert_eq!(body["metadata"]["name"], snapshot.as_str());
        assert_eq!(body["immutable"], true);
        assert_eq!(body["data"]["agent.yaml"], CONFIG);
        assert_eq!(body["metadata"]["annotations"]["vigil.dev/owner-rollout"], "vigil-system/agent");
        send.send_response(ok(&body));

        // Act: the status first, by server-side apply with our field manager.
        let ((m, uri, body), send) = next().await;
        assert_eq!(m, Method::PATCH);
        assert!(
            uri.starts_with("/apis/vigil.dev/v1alpha1/namespaces/vigil-system/agentrollouts/agent/status?"),
            "{uri}"
        );
        assert!(uri.contains("fieldManager=vigil-operator") && uri.contains("force=true"), "{uri}");
        assert_eq!(body["status"]["currentWave"], 1);
        assert_eq!(body["status"]["phase"], "Progressing");
        assert_eq!(body["status"]["observedGeneration"], 3);
        assert_eq!(body["status"]["targetRevision"], target.as_str());
        assert_eq!(body["status"]["history"][0]["configSnapshot"], snapshot.as_str());
        let trace = crate::telemetry::ids("uid-1", &target).0.to_string();
        assert_eq!(body["status"]["traceId"], trace.as_str(), "the rollout's trace id is in its status");
        send.send_response(ok(&serde_json::to_value(rollout()).unwrap()));

        if with_events {
            let ((m, uri, body), send) = next().await;
            assert_eq!(m, Method::POST);
            assert_eq!(uri, "/apis/events.k8s.io/v1/namespaces/vigil-system/events?");
            assert_eq!(body["reason"], "Admit");
            assert_eq!(body["type"], "Normal");
            assert_eq!(body["regarding"]["name"], "agent");
            assert!(body["note"].as_str().unwrap().starts_with("wave 1: admitting 1 node(s)"), "{body}");
            send.send_response(ok(&body));
        }

        // Then wave 1: 5% of 20 nodes is one node, by merge patch of its labels.
        let ((m, uri, body), send) = next().await;
        assert_eq!(m, Method::PATCH);
        assert!(uri.starts_with("/api/v1/nodes/node-"), "{uri}");
        assert_eq!(body["metadata"]["labels"]["vigil.dev/revision"], target.as_str());
        assert_eq!(
            body["metadata"]["annotations"]["vigil.dev/admitted-at"], "2027-01-15T08:00:00Z",
            "the context's clock"
        );
        assert_eq!(
            body["metadata"]["labels"][format!("vigil.dev/run.{target}")],
            "true",
            "the new revision's agent starts beside the old one"
        );
        assert!(
            body["metadata"]["labels"].get(format!("vigil.dev/run.{STABLE}")).is_none(),
            "the old one's stays until the new one took the node over"
        );
        assert_eq!(body["metadata"]["labels"]["vigil.dev/rollout"], "vigil-system.agent");
        send.send_response(ok(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-00"}})));

        // Then the DaemonSet of every revision a node may run that the rollout has a record of:
        // here the target (the stable revision predates the rollout; its DaemonSet was
        // installed with it).
        let mut applied = Vec::new();
        for _ in 0..1 {
            let ((m, uri, body), send) = next().await;
            assert_eq!(m, Method::PATCH);
            assert!(
                uri.contains("/apis/apps/v1/namespaces/vigil-system/daemonsets/vigil-agent-")
                    && uri.contains("fieldManager=vigil-operator"),
                "{uri}"
            );
            assert_eq!(
                body["metadata"]["ownerReferences"],
                Value::Null,
                "the default deletion policy (Orphan): deleting the rollout leaves the agents"
            );
            assert_eq!(body["metadata"]["annotations"]["vigil.dev/owner-rollout"], "vigil-system/agent");
            assert_eq!(
                body["metadata"]["annotations"]["vigil.dev/desired-sha256"].as_str().map(str::len),
                Some(64),
                "the desired spec's hash rides along, so an unchanged DaemonSet is not written again"
            );
            let rev = body["spec"]["template"]["metadata"]["labels"]["vigil.dev/revision"].as_str().unwrap().to_owned();
            assert_eq!(body["spec"]["template"]["spec"]["nodeSelector"][format!("vigil.dev/run.{rev}")], "true");
            let rev = rev.as_str();
            let config = body["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "config")
                .unwrap();
            assert_eq!(config["configMap"]["name"], snapshot.as_str(), "the revision mounts its immutable copy");
            let trace = crate::telemetry::ids("uid-1", rev).0.to_string();
            assert_eq!(
                body["spec"]["template"]["metadata"]["annotations"]["vigil.dev/rollout-trace-id"],
                trace.as_str(),
                "a revision's pods carry the trace of the rollout that introduced it"
            );
            applied.push(rev.to_owned());
            send.send_response(ok(&json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"}})));
        }
        // Ours for old revisions go, as no node carries their label; another rollout's stays.
        for old in ["r-old0000000", "r-old1111111"] {
            let ((m, uri, _), send) = next().await;
            assert_eq!(
                (m, uri.as_str()),
                (
                    Method::DELETE,
                    format!("/apis/apps/v1/namespaces/vigil-system/daemonsets/vigil-agent-{old}?").as_str()
                )
            );
            send.send_response(ok(&json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}})));
        }
        applied.sort();
        applied
    });

    let result = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(rollout()), ctx))
        .await
        .expect("reconcile finishes");
    let action = result.unwrap_or_else(|e| panic!("reconcile failed: {e}: {:?}", std::error::Error::source(&e)));
    let applied = api.await.unwrap();
    assert_eq!(applied, vec![want_target]);
    assert_eq!(action, kube::runtime::controller::Action::requeue(Duration::from_secs(10)));
    let text = ctx_metrics.encode().unwrap();
    assert!(text.contains("vigil_operator_reconciles_total{result=\"ok\"} 1"), "{text}");
    assert!(text.contains("vigil_operator_decisions_total{kind=\"Admit\"} 1"), "{text}");
}

#[tokio::test]
async fn with_a_snapshot_of_the_target_the_rollouts_configmap_is_not_read_so_editing_it_changes_nothing() {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let target = target_name(&rollout().spec);
    let snap = target_snapshot(&target);
    let mut st = stores(20, vec![]);
    st.snapshots = fill(vec![snap]);
    let ctx = Arc::new(Context::new(client, None, st));
    let api = tokio::spawn(async move {
        // The first request is the status: no ConfigMap read, no second copy.
        let ((m, uri, body), send) = next_request(&mut handle).await;
        assert_eq!(m, Method::PATCH, "{uri}");
        assert!(uri.contains("/agentrollouts/agent/status?"), "{uri}");
        assert_eq!(body["status"]["phase"], "Progressing");
        assert_eq!(body["status"]["history"][0]["configSnapshot"], format!("vigil-agent-config-{target}"));
        send.send_response(ok(&serde_json::to_value(rollout()).unwrap()));
        while let Ok(Some((req, send))) = tokio::time::timeout(Duration::from_secs(2), handle.next_request()).await {
            let (m, uri, body) = body_json(req).await;
            assert!(!uri.contains("/configmaps"), "{m} {uri}");
            let answer = if uri.starts_with("/api/v1/nodes/") {
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}})
            } else {
                body
            };
            send.send_response(ok(&answer));
        }
    });
    tokio::time::timeout(Duration::from_secs(15), reconcile(Arc::new(rollout()), ctx)).await.unwrap().unwrap();
    api.await.unwrap();
}

#[tokio::test]
async fn an_existing_daemonset_gets_only_its_metadata_written_never_its_pod_template() {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let target = target_name(&rollout().spec);
    let snap = target_snapshot(&target);
    // The target's DaemonSet exists, written by an earlier operator (owned by the rollout, no
    // desired hash of today's).
    let mut st = stores(20, vec![daemonset(&target, None, Some("uid-1"))]);
    st.snapshots = fill(vec![snap]);
    let ctx = Arc::new(Context::new(client, None, st));
    let want = format!("/apis/apps/v1/namespaces/vigil-system/daemonsets/vigil-agent-{target}?");
    let api = tokio::spawn(async move {
        let mut seen = None;
        while let Ok(Some((req, send))) = tokio::time::timeout(Duration::from_secs(2), handle.next_request()).await {
            let content_type =
                req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let (m, uri, body) = body_json(req).await;
            let answer = if uri.starts_with("/api/v1/nodes/") {
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}})
            } else if uri.contains("/agentrollouts/") {
                serde_json::to_value(rollout()).unwrap()
            } else {
                body.clone()
            };
            if uri.starts_with(&want) {
                assert_eq!((m.clone(), content_type.as_str()), (Method::PATCH, "application/merge-patch+json"));
                seen = Some(body);
            }
            send.send_response(ok(&answer));
        }
        seen
    });
    tokio::time::timeout(Duration::from_secs(15), reconcile(Arc::new(rollout()), ctx)).await.unwrap().unwrap();
    let body = api.await.unwrap().expect("the DaemonSet's metadata is brought up to date");
    assert!(body.get("spec").is_none(), "the pod template is never rewritten: {body}");
    assert_eq!(body["metadata"]["ownerReferences"], Value::Null, "Orphan: the owner reference goes");
    assert_eq!(body["metadata"]["annotations"]["vigil.dev/owner-rollout"], "vigil-system/agent");
    assert_eq!(body["metadata"]["annotations"]["vigil.dev/desired-sha256"].as_str().map(str::len), Some(64));
}

#[tokio::test]
async fn a_config_the_agent_would_refuse_stops_the_rollout_before_any_node_with_the_key_and_line() {
    const BAD: &str = "interval: 10s\nnot_a_key: 1\n";
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let recorder = Some(crate::events::Publisher::new(client.clone(), "test".into()));
    let ctx = Arc::new(Context::new(client, recorder, stores(20, vec![])));
    let mut r = rollout();
    r.spec.target.config.sha256 = vigil_crds::ConfigHash::of(BAD.as_bytes()).to_string();
    let api = tokio::spawn(async move {
        let mut next = async || next_request(&mut handle).await;
        let ((_, uri, _), send) = next().await;
        assert_eq!(uri, "/api/v1/namespaces/vigil-system/configmaps/agent-config");
        send.send_response(ok(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "agent-config"}, "data": {"agent.yaml": BAD}})));
        let ((m, uri, body), send) = next().await;
        assert_eq!(m, Method::PATCH);
        assert!(uri.contains("/agentrollouts/agent/status?"), "{uri}");
        assert_eq!(body["status"]["phase"], "Failed");
        let cond =
            body["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "ConfigValid").unwrap();
        assert_eq!((cond["status"].as_str(), cond["reason"].as_str()), (Some("False"), Some("ConfigInvalid")));
        let why = body["status"]["reason"].as_str().unwrap().to_owned();
        send.send_response(ok(&serde_json::to_value(rollout()).unwrap()));
        let ((m, _, body), send) = next().await;
        assert_eq!(m, Method::POST);
        assert_eq!((body["reason"].as_str(), body["type"].as_str()), (Some("ConfigInvalid"), Some("Warning")));
        send.send_response(ok(&body));
        // Whatever else the reconcile does, it labels no node.
        while let Ok(Some((req, send))) = tokio::time::timeout(Duration::from_secs(2), handle.next_request()).await {
            let (m, uri, body) = body_json(req).await;
            assert!(!(m == Method::PATCH && uri.starts_with("/api/v1/nodes/")), "a node was labelled: {uri}");
            send.send_response(ok(&body));
        }
        why
    });
    tokio::time::timeout(Duration::from_secs(15), reconcile(Arc::new(r), ctx)).await.unwrap().unwrap();
    let why = api.await.unwrap();
    // The agent's own words: vigil-agent check-config prints the same error for the same text.
    let agent_says = vigil_agent_config::Config::parse(BAD, "ConfigMap vigil-system/agent-config key agent.yaml")
        .unwrap_err()
        .to_string();
    assert!(agent_says.contains("unknown field `not_a_key`") && agent_says.contains("line 2"), "{agent_says}");
    assert_eq!(why, format!("the target config would not start an agent: {agent_says}"));
}

/// A store of the facts of `items`, as a watch's first list leaves it.
fn kept<K, T>(items: Vec<K>) -> crate::kept::Kept<T>
where
    T: for<'a> From<&'a K> + crate::kept::Keyed,
{
    crate::kept::Kept::of(items.iter().map(T::from))
}

/// A reflector store holding `items`, as a watch's first list leaves it.
fn fill<K>(items: Vec<K>) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = kube::runtime::reflector::store();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
    for i in items {
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(i));
    }
    writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
    reader
}

#[test]
fn stores_give_the_selected_nodes_with_the_agents_of_the_rollout_namespace() {
    use k8s_openapi::api::core::v1::{Node, Pod};

    let node = |name: &str, pool: &str| -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"pool": pool, "vigil.dev/revision": STABLE}}}),
        )
        .unwrap()
    };
    let pod = |node: &str, ns: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": format!("a-{node}-{ns}"), "namespace": ns, "labels": {"vigil.dev/revision": STABLE}}, "spec": {"nodeName": node, "containers": []}})).unwrap()
    };
    let stores = super::Stores {
        nodes: kept(vec![node("n1", "web"), node("n2", "db")]),
        pods: kept(vec![pod("n1", "vigil-system"), pod("n2", "other")]),
        leases: crate::kept::Kept::of([]),
        statuses: crate::kept::Kept::of([]),
        rollouts: fill(vec![]),
        daemonsets: fill(vec![]),
        snapshots: fill(vec![]),
    };
    let mut r = rollout();
    r.spec.node_selector = Some(vigil_crds::rollout::match_labels([("pool", "web")]));
    let views = stores.node_views(&r, "vigil-system");
    assert_eq!(views.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["n1"]);
    assert!(views[0].agent.is_some(), "the agent pod in the rollout's namespace is seen");
    r.spec.node_selector = None;
    let views = stores.node_views(&r, "vigil-system");
    assert_eq!(views.len(), 2);
    assert!(
        views.iter().find(|v| v.name == "n2").unwrap().agent.is_none(),
        "a pod in another namespace is not this rollout's agent"
    );
}

#[tokio::test(start_paused = true)]
async fn pod_nudges_are_throttled_to_one_a_second_and_none_is_lost() {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut stream = Box::pin(super::throttled(rx));
    // A burst of changes collapses into one nudge.
    for _ in 0..100 {
        let _ = tx.try_send(());
    }
    let started = tokio::time::Instant::now();
    assert_eq!(stream.next().await, Some(()));
    assert_eq!(started.elapsed(), Duration::from_secs(1), "held back one second");
    // A change after that is not lost.
    tx.try_send(()).unwrap();
    assert_eq!(stream.next().await, Some(()));
    drop(tx);
    assert_eq!(stream.next().await, None, "the stream ends with its senders");
}

#[test]
fn node_and_pod_keys_change_with_what_the_planner_reads_only() {
    use k8s_openapi::api::core::v1::{Node, Pod};
    let node = |ready: &str, hb: &str, rev: &str| -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": "n", "labels": {"vigil.dev/revision": rev}}, "status": {"conditions": [
                {"type": "Ready", "status": ready, "lastHeartbeatTime": hb}
            ]}}),
        )
        .unwrap()
    };
    let k = super::node_key(&NodeFacts::from(&node("True", "2026-01-05T00:00:00Z", "r-a")));
    assert_eq!(
        k,
        super::node_key(&NodeFacts::from(&node("True", "2026-01-05T00:00:40Z", "r-a"))),
        "a kubelet heartbeat wakes nothing"
    );
    assert_ne!(k, super::node_key(&NodeFacts::from(&node("False", "2026-01-05T00:00:40Z", "r-a"))));
    assert_ne!(k, super::node_key(&NodeFacts::from(&node("True", "2026-01-05T00:00:00Z", "r-b"))));
    let pod = |restarts: i32| -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": []}, "status": {"containerStatuses": [
                {"name": "agent", "ready": false, "restartCount": restarts, "image": "", "imageID": ""}
            ]}}),
        )
        .unwrap()
    };
    assert_ne!(
        super::pod_key(&PodFacts::from(&pod(0))),
        super::pod_key(&PodFacts::from(&pod(1))),
        "a restart wakes the gate"
    );
}

#[test]
fn only_nodes_a_rollout_reads_wake_reconciles() {
    use k8s_openapi::api::core::v1::Node;
    let node = |labels: serde_json::Value| -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n", "labels": labels}})).unwrap()
    };
    let mut web = rollout();
    web.spec.node_selector = Some(vigil_crds::rollout::match_labels([("pool", "web")]));
    let rollouts = vec![Arc::new(web)];
    assert!(super::node_concerns_a_rollout(&NodeFacts::from(&node(json!({"pool": "web"}))), &rollouts));
    assert!(
        !super::node_concerns_a_rollout(&NodeFacts::from(&node(json!({"pool": "db"}))), &rollouts),
        "another pool's churn wakes nothing"
    );
    assert!(
        super::node_concerns_a_rollout(
            &NodeFacts::from(&node(json!({"pool": "db", "vigil.dev/revision": "r-a"}))),
            &rollouts
        ),
        "a node the operator labelled (it just left the selector) still does"
    );
    assert!(super::node_concerns_a_rollout(
        &NodeFacts::from(&node(json!({"pool": "db", "vigil.dev/run.r-a": "true"}))),
        &rollouts
    ));
    assert!(
        !super::node_concerns_a_rollout(
            &NodeFacts::from(&node(json!({"pool": "db", "vigil.dev/something-else": "x"}))),
            &rollouts
        ),
        "another vigil.dev/ label is not the operator's"
    );
    assert!(!super::node_concerns_a_rollout(&NodeFacts::from(&node(json!({}))), &[]), "no rollout: nothing to wake");
    assert!(
        super::node_concerns_a_rollout(&NodeFacts::from(&node(json!({}))), &[Arc::new(rollout())]),
        "a rollout of every node"
    );
}

#[test]
fn a_newer_rollout_selecting_the_same_nodes_is_told_which_older_one_holds_them() {
    let node = |name: &str, pool: &str| -> k8s_openapi::api::core::v1::Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"pool": pool}}})).unwrap()
    };
    let named = |name: &str, created: &str, pool: Option<&str>| {
        let mut r = rollout();
        r.metadata.name = Some(name.into());
        r.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created.parse().unwrap()));
        r.spec.node_selector = pool.map(|p| vigil_crds::rollout::match_labels([("pool", p)]));
        r
    };
    let older = named("fleet", "2026-01-01T00:00:00Z", None);
    let newer = named("web-canary", "2026-02-01T00:00:00Z", Some("web"));
    let elsewhere = named("db", "2026-03-01T00:00:00Z", Some("db"));
    let stores = super::Stores {
        nodes: kept(vec![node("n1", "web"), node("n2", "db")]),
        pods: crate::kept::Kept::of([]),
        leases: crate::kept::Kept::of([]),
        statuses: crate::kept::Kept::of([]),
        rollouts: fill(vec![older.clone(), newer.clone()]),
        daemonsets: fill(vec![]),
        snapshots: fill(vec![]),
    };
    assert_eq!(stores.overlap(&newer, "vigil-system"), Some(("fleet".into(), 1, "n1".into())));
    assert_eq!(stores.overlap(&older, "vigil-system"), None, "the older one goes on");
    let disjoint = super::Stores { rollouts: fill(vec![newer.clone(), elsewhere.clone()]), ..stores };
    assert_eq!(disjoint.overlap(&elsewhere, "vigil-system"), None);
}

#[tokio::test]
async fn another_installs_planned_rollout_is_left_alone_and_a_misplaced_one_is_refused_once() {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let ctx = Arc::new(Context::new(client, None, stores(4, Vec::new())));
    // A rollout of the install in namespace team-b, which its own operator has planned.
    let mut theirs = rollout();
    theirs.metadata.namespace = Some("team-b".into());
    let mut planned = vigil_crds::AgentRolloutStatus::default();
    vigil_plan::conditions::update(
        &mut planned,
        vigil_plan::DecisionKind::Admit,
        "wave 1",
        Some(3),
        jiff::Timestamp::UNIX_EPOCH,
    );
    theirs.status = Some(planned);
    // Left alone: no request at all (one would wait for an answer that never comes).
    let quiet = tokio::time::timeout(Duration::from_secs(5), reconcile(Arc::new(theirs), ctx.clone())).await;
    assert!(matches!(quiet, Ok(Ok(_))), "{quiet:?}");
    // A rollout no operator has planned, in the wrong namespace: refused, in its status.
    let mut misplaced = rollout();
    misplaced.metadata.namespace = Some("team-b".into());
    misplaced.status = None;
    let api = tokio::spawn(async move {
        let ((m, uri, body), send) = next_request(&mut handle).await;
        assert_eq!(m, Method::PATCH);
        assert!(uri.starts_with("/apis/vigil.dev/v1alpha1/namespaces/team-b/agentrollouts/agent/status?"), "{uri}");
        assert_eq!(body["status"]["conditions"][0]["reason"], "WrongNamespace");
        send.send_response(ok(&serde_json::to_value(rollout()).unwrap()));
    });
    reconcile(Arc::new(misplaced), ctx).await.unwrap();
    api.await.unwrap();
}

/// The planner's view and plan of the test rollout's first reconcile over `st`, with the
/// target's config copy taken, at `now`.
fn first_plan(st: &super::Stores, now: jiff::Timestamp) -> (vigil_plan::Observed, vigil_plan::Plan) {
    let r = rollout();
    let target = target_name(&r.spec);
    let observed = vigil_plan::Observed {
        nodes: st.node_views(&r, "vigil-system"),
        config_sha256: Some(r.spec.target.config.sha256.clone()),
        config_snapshot: Some(format!("vigil-agent-config-{target}")),
        pod_template: format!("{}\nrollout/vigil-system/agent", crate::act::AgentTemplate::default().id()),
        ..vigil_plan::Observed::default()
    };
    let current = r.status.clone().unwrap_or_default();
    let p = vigil_plan::next(
        &r.spec,
        &current,
        r.metadata.generation,
        "vigil-system/agent",
        &observed,
        now,
        vigil_plan::Limits::default(),
    );
    (observed, p)
}

/// The effects of one reconcile over `st` with plan `p`, the Lease of every node held by
/// `holder`.
fn effects_of(
    st: &super::Stores,
    observed: &vigil_plan::Observed,
    p: &vigil_plan::Plan,
    holder: Option<&str>,
    now: jiff::Timestamp,
) -> Vec<crate::act::Effect> {
    let r = rollout();
    let nodes = st.nodes.state();
    let daemonsets = st.daemonsets.state();
    let snapshots = st.snapshots.state();
    let lease_holder = |_: &str| holder.map(str::to_owned);
    let seen =
        super::Seen { nodes: &nodes, daemonsets: &daemonsets, snapshots: &snapshots, lease_holder: &lease_holder };
    let current = r.status.clone().unwrap_or_default();
    super::effects(&r, "vigil-system/agent", &current, p, observed, &seen, &crate::act::AgentTemplate::default(), now)
}

#[test]
fn a_first_reconciles_effects_are_the_status_its_event_wave_one_the_targets_daemonset_and_the_old_ones_going() {
    use crate::act::Effect;
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let existing = vec![
        daemonset("r-old0000000", None, Some("uid-1")),
        daemonset("r-old1111111", Some("vigil-system/agent"), None),
        daemonset("r-other00000", Some("vigil-system/other"), Some("uid-2")),
    ];
    let st = stores(20, existing);
    let (observed, p) = first_plan(&st, now);
    let target = target_name(&rollout().spec);
    let todo = effects_of(&st, &observed, &p, None, now);
    let kinds: Vec<&str> = todo.iter().map(Effect::kind).collect();
    assert_eq!(kinds, ["Status", "Event", "Nodes", "CreateDaemonSet", "DeleteDaemonSet", "DeleteDaemonSet"]);
    assert_eq!(
        todo[0],
        Effect::Status { namespace: "vigil-system".into(), name: "agent".into(), status: Box::new(p.status.clone()) },
        "the plan's status, whole"
    );
    let Effect::Event { regarding, kind, reason, action, note } = &todo[1] else { unreachable!() };
    assert_eq!((*kind, *reason, *action), (crate::events::Kind::Normal, "Admit", "Admit"));
    assert_eq!((regarding.name.as_deref(), regarding.namespace.as_deref()), (Some("agent"), Some("vigil-system")));
    assert_eq!(note, &p.decision.reason);
    let Effect::Nodes(patches) = &todo[2] else { unreachable!() };
    let moved: Vec<&str> = p.moves.iter().map(|m| m.node.as_str()).collect();
    assert_eq!(patches.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), moved, "5% of 20: one node");
    assert_eq!(patches[0].1["metadata"]["labels"]["vigil.dev/revision"], target.as_str());
    assert_eq!(patches[0].1["metadata"]["annotations"]["vigil.dev/admitted-at"], now.to_string(), "stamped `now`");
    let Effect::CreateDaemonSet(ds) = &todo[3] else { unreachable!() };
    assert_eq!(ds.metadata.name.as_deref(), Some(format!("vigil-agent-{target}").as_str()));
    assert_eq!(ds.metadata.namespace.as_deref(), Some("vigil-system"));
    assert_eq!(
        todo[4..],
        [
            Effect::DeleteDaemonSet { namespace: "vigil-system".into(), name: "vigil-agent-r-old0000000".into() },
            Effect::DeleteDaemonSet { namespace: "vigil-system".into(), name: "vigil-agent-r-old1111111".into() }
        ],
        "ours (by owner and by annotation) go; another rollout's stays"
    );
}

#[test]
fn a_handover_ends_by_effect_once_the_new_agent_holds_the_lease_and_a_frozen_rollout_ends_none() {
    use crate::act::Effect;
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let target = target_name(&rollout().spec);
    // Every node on the target with both agents running.
    let mut fleet = nodes(3);
    for n in &mut fleet {
        let labels = n.metadata.labels.get_or_insert_default();
        labels.insert("vigil.dev/revision".into(), target.clone());
        labels.insert(format!("vigil.dev/run.{target}"), "true".into());
        labels.insert(format!("vigil.dev/run.{STABLE}"), "true".into());
    }
    let mut st = stores(0, vec![]);
    st.nodes = kept(fleet);
    let (observed, p) = first_plan(&st, now);
    let ended = |todo: &[Effect]| -> Vec<(String, Value)> {
        todo.iter()
            .filter_map(|e| match e {
                Effect::Nodes(b) => Some(b.iter().filter(|(_, v)| v["metadata"].get("annotations").is_none())),
                _ => None,
            })
            .flatten()
            .cloned()
            .collect()
    };
    assert!(ended(&effects_of(&st, &observed, &p, Some(STABLE), now)).is_empty(), "the old agent still works");
    let done = ended(&effects_of(&st, &observed, &p, Some(&target), now));
    assert_eq!(done.len(), 3, "{done:?}");
    for (_, patch) in &done {
        assert_eq!(patch, &json!({"metadata": {"labels": {format!("vigil.dev/run.{STABLE}"): null}}}));
    }
    let mut frozen = p.clone();
    frozen.decision.kind = vigil_plan::DecisionKind::Freeze;
    frozen.moves.clear();
    assert!(ended(&effects_of(&st, &observed, &frozen, Some(&target), now)).is_empty(), "frozen: nothing changes");
}

/// One test per kind of effect: `act::apply` sends each as the request the mocked API expects.
#[tokio::test]
async fn apply_sends_each_kind_of_effect_as_its_one_request_with_the_operators_field_manager() {
    use crate::act::{Effect, Writer, apply};
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let events = crate::events::Publisher::new(client.clone(), "op-0".into());
    let target = target_name(&rollout().spec);
    let (_, p) = first_plan(&stores(20, vec![]), jiff::Timestamp::from_second(1_800_000_000).unwrap());
    let record = p.status.history.iter().find(|r| r.revision == target).expect("the target's record").clone();
    let ds = crate::act::daemonset(&record, None, "vigil-system/agent", None, &crate::act::AgentTemplate::default())
        .expect("a DaemonSet for the record");
    let status = vigil_crds::AgentRolloutStatus { current_wave: 2, ..Default::default() };
    let todo = vec![
        Effect::Status { namespace: "vigil-system".into(), name: "agent".into(), status: Box::new(status) },
        Effect::Event {
            regarding: Box::new(kube::Resource::object_ref(&rollout(), &())),
            kind: crate::events::Kind::Warning,
            reason: "RollBack",
            action: "RollBack",
            note: "gate".into(),
        },
        Effect::Nodes(vec![("node-01".into(), json!({"metadata": {"labels": {"a": "b"}}}))]),
        Effect::CreateDaemonSet(Box::new(ds.clone())),
        Effect::DaemonSetMetadata(Box::new(ds)),
        Effect::DeleteDaemonSet { namespace: "vigil-system".into(), name: "vigil-agent-r-old".into() },
        Effect::DeleteSnapshot { namespace: "vigil-system".into(), name: "vigil-agent-config-r-old".into() },
        Effect::AgentReporting {
            node: "node-01".into(),
            condition: Box::new(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: "AgentReporting".into(),
                status: "True".into(),
                reason: "Renewing".into(),
                message: "renews its Lease".into(),
                observed_generation: None,
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::from_second(1_800_000_000).unwrap(),
                ),
            }),
        },
    ];
    let kinds: std::collections::BTreeSet<&str> = todo.iter().map(Effect::kind).collect();
    assert_eq!(kinds.len(), 8, "every kind once");
    let ds_uri = format!("/apis/apps/v1/namespaces/vigil-system/daemonsets/vigil-agent-{target}?");
    let api = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..8 {
            let ((m, uri, body), send) = next_request(&mut handle).await;
            let answer = if uri.contains("/agentrollouts/") {
                serde_json::to_value(rollout()).unwrap()
            } else if uri.contains("/agentstatuses/") {
                json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "AgentStatus", "metadata": {"name": "node-01"}, "spec": {"nodeName": "node-01"}})
            } else if uri.starts_with("/api/v1/nodes/") {
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-01"}})
            } else if uri.contains("/events") {
                body.clone()
            } else if m == Method::PATCH {
                json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"}})
            } else {
                json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}})
            };
            send.send_response(ok(&answer));
            seen.push((m, uri, body));
        }
        seen
    });
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    apply(&Writer::new(client), Some(&events), todo, now).await.unwrap();
    let seen = api.await.unwrap();
    let (m, uri, body) = &seen[0];
    assert_eq!(m, Method::PATCH);
    assert!(uri.starts_with("/apis/vigil.dev/v1alpha1/namespaces/vigil-system/agentrollouts/agent/status?"), "{uri}");
    assert!(uri.contains("fieldManager=vigil-operator") && uri.contains("force=true"), "{uri}");
    assert_eq!(body["status"]["currentWave"], 2);
    let (m, uri, body) = &seen[1];
    assert_eq!((m, uri.as_str()), (&Method::POST, "/apis/events.k8s.io/v1/namespaces/vigil-system/events?"));
    assert_eq!((body["type"].as_str(), body["reason"].as_str()), (Some("Warning"), Some("RollBack")));
    assert_eq!(body["eventTime"], "2027-01-15T08:00:00.000000Z", "stamped with the reconcile's clock");
    let (m, uri, body) = &seen[2];
    assert_eq!(m, Method::PATCH);
    assert!(uri.starts_with("/api/v1/nodes/node-01?") && uri.contains("fieldManager=vigil-operator"), "{uri}");
    assert_eq!(body, &json!({"metadata": {"labels": {"a": "b"}}}));
    let (m, uri, body) = &seen[3];
    assert_eq!(m, Method::PATCH);
    assert!(uri.starts_with(&ds_uri) && uri.contains("force=true"), "server-side apply: {uri}");
    assert!(body["spec"]["template"].is_object(), "created whole");
    let (m, uri, body) = &seen[4];
    assert_eq!(m, Method::PATCH);
    assert!(uri.starts_with(&ds_uri) && !uri.contains("force=true"), "merge patch: {uri}");
    assert!(body.get("spec").is_none() && body["metadata"]["annotations"].is_object(), "metadata only: {body}");
    assert_eq!(
        (&seen[5].0, seen[5].1.as_str()),
        (&Method::DELETE, "/apis/apps/v1/namespaces/vigil-system/daemonsets/vigil-agent-r-old?")
    );
    assert_eq!(
        (&seen[6].0, seen[6].1.as_str()),
        (&Method::DELETE, "/api/v1/namespaces/vigil-system/configmaps/vigil-agent-config-r-old?")
    );
    let (m, uri, body) = &seen[7];
    assert_eq!(m, Method::PATCH);
    assert!(uri.starts_with("/apis/vigil.dev/v1alpha1/agentstatuses/node-01/status?"), "{uri}");
    assert!(uri.contains("fieldManager=vigil-operator") && uri.contains("force=true"), "{uri}");
    assert_eq!(body["status"], json!({"conditions": [body["status"]["conditions"][0].clone()]}), "the condition alone");
    assert_eq!(body["status"]["conditions"][0]["type"], "AgentReporting");
}

#[tokio::test]
async fn apply_stops_at_the_first_failed_write_and_names_it_but_a_failed_event_fails_nothing() {
    use crate::act::{Effect, WriteError, Writer, apply};
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let events = crate::events::Publisher::new(client.clone(), "op-0".into());
    let todo = vec![
        Effect::Event {
            regarding: Box::new(kube::Resource::object_ref(&rollout(), &())),
            kind: crate::events::Kind::Normal,
            reason: "Admit",
            action: "Admit",
            note: "wave 1".into(),
        },
        Effect::Nodes(vec![("node-01".into(), json!({"metadata": {"labels": {"a": "b"}}}))]),
        Effect::DeleteDaemonSet { namespace: "vigil-system".into(), name: "vigil-agent-r-old".into() },
    ];
    let api = tokio::spawn(async move {
        let refuse = |code: u16| {
            let status = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": "no", "reason": "Forbidden", "code": code, "metadata": {}});
            Response::builder().status(code).body(Body::from(serde_json::to_vec(&status).unwrap())).unwrap()
        };
        let ((_, uri, _), send) = next_request(&mut handle).await;
        assert!(uri.contains("/events"), "{uri}");
        send.send_response(refuse(403));
        let ((_, uri, _), send) = next_request(&mut handle).await;
        assert!(uri.starts_with("/api/v1/nodes/node-01"), "{uri}");
        send.send_response(refuse(403));
        handle
    });
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    // An apply that went on after the failed write would wait for an answer that never comes.
    let err = tokio::time::timeout(Duration::from_secs(10), apply(&Writer::new(client), Some(&events), todo, now))
        .await
        .expect("apply returns at the failed write")
        .unwrap_err();
    drop(events);
    assert!(matches!(&err, WriteError::Node(n, _) if n == "node-01"), "{err:?}");
    assert_eq!(super::Error::from(err).kind(), "NodePatchFailed");
    // Every client is gone: a request after the failed write would be waiting here.
    let mut handle = api.await.unwrap();
    assert!(handle.next_request().await.is_none(), "nothing is written after the failed write");
}

#[tokio::test]
async fn apply_each_sends_every_effect_past_a_failed_one_and_returns_the_failures() {
    use crate::act::{Effect, WriteError, Writer, apply_each};
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let todo = vec![
        Effect::Nodes(vec![("node-01".into(), json!({"metadata": {"labels": {"a": null}}}))]),
        Effect::DeleteDaemonSet { namespace: "vigil-system".into(), name: "vigil-agent-r-old".into() },
    ];
    let api = tokio::spawn(async move {
        let ((_, uri, _), send) = next_request(&mut handle).await;
        assert!(uri.starts_with("/api/v1/nodes/node-01"), "{uri}");
        let status = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": "no", "reason": "Forbidden", "code": 403, "metadata": {}});
        send.send_response(
            Response::builder().status(403).body(Body::from(serde_json::to_vec(&status).unwrap())).unwrap(),
        );
        let ((m, uri, _), send) = next_request(&mut handle).await;
        assert_eq!(
            (m, uri.as_str()),
            (Method::DELETE, "/apis/apps/v1/namespaces/vigil-system/daemonsets/vigil-agent-r-old?")
        );
        send.send_response(ok(&json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}})));
    });
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let failed = apply_each(&Writer::new(client), None, todo, now).await;
    api.await.unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(matches!(&failed[0], WriteError::Node(n, _) if n == "node-01"), "{failed:?}");
}

/// A reconcile decides from stores that may not have seen a delete yet: the reconcile after
/// the one that deleted a DaemonSet may decide it again, a node an autoscaler removed may be
/// moved, a DaemonSet deleted by hand may get a metadata patch. The API's own `NotFound` is
/// then the write done (or, for a DaemonSet still wanted, a create), not a failed reconcile
/// that waits out the retry delay; a 404 from anything but the API server is an error.
#[tokio::test]
async fn writes_to_objects_already_gone_are_done_and_a_404_not_from_the_api_is_an_error() {
    use crate::act::{DaemonSetWrite, Effect, WriteError, Writer, apply};
    let not_found = || {
        let status = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": "not found", "reason": "NotFound", "code": 404, "metadata": {}});
        Response::builder().status(404).body(Body::from(serde_json::to_vec(&status).unwrap())).unwrap()
    };
    let mut wanted = daemonset("r-new", Some("vigil-system/agent"), None);
    wanted.spec = Some(
        serde_json::from_value(json!({
            "selector": {"matchLabels": {"vigil.dev/revision": "r-new"}},
            "template": {"spec": {"containers": [{"name": "agent", "image": "registry.example/vigil-agent@sha256:00"}]}},
        }))
        .unwrap(),
    );
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let todo = vec![
        Effect::DeleteDaemonSet { namespace: "vigil-system".into(), name: "vigil-agent-r-old".into() },
        Effect::DeleteSnapshot { namespace: "vigil-system".into(), name: "vigil-config-r-old".into() },
        Effect::Nodes(vec![("node-scaled-down".into(), json!({"metadata": {"labels": {"a": "b"}}}))]),
        Effect::DaemonSetMetadata(Box::new(wanted.clone())),
        Effect::DeleteDaemonSet { namespace: "vigil-system".into(), name: "vigil-agent-r-older".into() },
    ];
    let ds_path = "/apis/apps/v1/namespaces/vigil-system/daemonsets/";
    let created = serde_json::to_value(&wanted).unwrap();
    let answer = created.clone();
    let api = tokio::spawn(async move {
        let mut seen = Vec::new();
        for answer in [
            not_found(),
            not_found(),
            not_found(),
            not_found(),
            ok(&answer),
            // A proxy's 404: no Status in the body.
            Response::builder().status(404).body(Body::from(b"404 page not found".to_vec())).unwrap(),
        ] {
            let ((m, uri, body), send) = next_request(&mut handle).await;
            seen.push((m, uri, body));
            send.send_response(answer);
        }
        seen
    });
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let err = apply(&Writer::new(client), None, todo, now).await.unwrap_err();
    assert!(
        matches!(&err, WriteError::DaemonSet(n, DaemonSetWrite::Delete, _) if n == "vigil-agent-r-older"),
        "every NotFound was a write done; the proxy's 404 fails: {err:?}"
    );
    assert_eq!(err.to_string(), "deleting DaemonSet vigil-agent-r-older");
    assert_eq!(super::Error::from(err).kind(), "DaemonSetApplyFailed");
    let seen = api.await.unwrap();
    let what: Vec<(Method, String)> =
        seen.iter().map(|(m, u, _)| (m.clone(), u.split('?').next().unwrap().to_owned())).collect();
    let r_new = wanted.metadata.name.clone().unwrap();
    assert_eq!(
        what,
        [
            (Method::DELETE, format!("{ds_path}vigil-agent-r-old")),
            (Method::DELETE, "/api/v1/namespaces/vigil-system/configmaps/vigil-config-r-old".to_owned()),
            (Method::PATCH, "/api/v1/nodes/node-scaled-down".to_owned()),
            (Method::PATCH, format!("{ds_path}{r_new}")),
            (Method::PATCH, format!("{ds_path}{r_new}")),
            (Method::DELETE, format!("{ds_path}vigil-agent-r-older")),
        ]
    );
    // The DaemonSet gone under its metadata patch is created whole: server-side apply of the
    // full object, pod template included.
    assert!(seen[4].1.contains("fieldManager=vigil-operator"), "{}", seen[4].1);
    assert_eq!(seen[4].2["spec"]["template"], created["spec"]["template"]);
    assert!(seen[4].2["spec"]["template"]["spec"]["containers"].is_array());
    assert!(seen[3].2.get("spec").is_none(), "the metadata patch carries no spec");
}
