//! A fake API server for the plugin's tests: objects kept as JSON, answered by path as the
//! real one answers them (gets, lists with label and field selectors, server-side applies with
//! managed fields, JSON patches with `test`), every request recorded, and an operator that
//! takes changes up the way the real one reports it (status.observedGeneration,
//! status.handledAction).
//!
//! The fleet is made by the operator's own planner: a rollout of 20 nodes, moved to its
//! target's wave 1 by `plan::next` and baked, so the status the plugin reads is one the
//! operator wrote.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // a test fails loudly on the first surprise

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use http::{Request, Response};
use jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kubectl_vigil::cli::Cli;
use kubectl_vigil::render::Paint;
use kubectl_vigil::run::{Env, run};
use serde_json::{Value, json};
use tower_test::mock;
use vigil_crds::AgentRolloutStatus;
use vigil_plan::{self as plan, Limits, Observed};

/// The rollout's namespace and name.
pub const NS: &str = "ops";
/// The rollout's name.
pub const NAME: &str = "agent";
/// The revision every node ran before.
pub const STABLE: &str = vigil_plan::simulate::STABLE;
/// Nodes in the fleet.
pub const NODES: usize = 20;
/// The field manager of a GitOps tool that wrote the spec (and its `legacy` pin).
pub const GITOPS: &str = "argocd-controller";

const ROLLOUTS: &str = "/apis/vigil.dev/v1alpha1";

/// When the rollout started.
pub fn t0() -> Timestamp {
    "2027-01-15T08:00:00Z".parse().unwrap()
}

/// The plugin's clock: 90 s into the rollout.
pub fn now() -> Timestamp {
    t0() + Duration::from_secs(90)
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// GET, PATCH…
    pub method: String,
    /// The path.
    pub path: String,
    /// The query, decoded.
    pub query: BTreeMap<String, String>,
    /// Content-Type.
    pub content_type: Option<String>,
    /// The body (Null when empty).
    pub body: Value,
}

/// What the fake operator does with a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// Nothing: no operator runs.
    Absent,
    /// On the next read after a write, records the generation and the action as handled.
    TakesUp,
    /// On the next read after a write, refuses the action (status.reason names its id).
    Refuses,
}

/// The server's state.
pub struct Fake {
    /// Objects by collection path (`/api/v1/nodes`, `/apis/…/namespaces/ops/agentrollouts`)
    /// and name.
    pub objects: BTreeMap<(String, String), Value>,
    /// Every request, in order.
    pub seen: Vec<Seen>,
    /// The operator.
    pub operator: Operator,
    /// A write the operator has not taken up yet.
    pending: bool,
    /// Reading Events is forbidden (RBAC).
    pub events_forbidden: bool,
}

/// The server, shared with the task that answers.
pub type Shared = Arc<Mutex<Fake>>;

fn status_error(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

/// RFC 7386 merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// The `fieldsV1` a manager owns after applying `spec` (its keys; pins by name).
fn fields_of(spec: &Value) -> Value {
    let mut f = serde_json::Map::new();
    for (k, v) in spec.as_object().into_iter().flatten() {
        if k == "pins" {
            let mut pins = serde_json::Map::new();
            for p in v.as_array().into_iter().flatten() {
                pins.insert(format!("k:{{\"name\":\"{}\"}}", p["name"].as_str().unwrap()), json!({".": {}}));
            }
            f.insert("f:pins".into(), Value::Object(pins));
        } else {
            f.insert(format!("f:{k}"), json!({}));
        }
    }
    json!({"f:spec": f})
}

/// The fields `manager` applied to `obj`'s spec before.
fn owned_by(obj: &Value, manager: &str) -> Vec<String> {
    let mf = obj["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
    let Some(e) = mf.iter().find(|e| e["manager"] == manager && e["operation"] == "Apply") else { return vec![] };
    let spec = &e["fieldsV1"]["f:spec"];
    let mut out: Vec<String> = spec
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "f:pins")
        .map(|(k, _)| k.trim_start_matches("f:").to_owned())
        .collect();
    for k in spec["f:pins"].as_object().into_iter().flat_map(|o| o.keys()) {
        let v: Value = serde_json::from_str(k.trim_start_matches("k:")).unwrap();
        out.push(format!("pin:{}", v["name"].as_str().unwrap()));
    }
    out
}

impl Fake {
    fn new() -> Self {
        Self {
            objects: BTreeMap::new(),
            seen: Vec::new(),
            operator: Operator::TakesUp,
            pending: false,
            events_forbidden: false,
        }
    }

    /// Stores `obj` in the collection at `path`.
    pub fn put(&mut self, path: &str, obj: Value) {
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        self.objects.insert((path.to_owned(), name), obj);
    }

    /// The object at `path` named `name`.
    pub fn get(&self, path: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(path.to_owned(), name.to_owned()))
    }

    /// The test rollout as stored.
    pub fn rollout(&self) -> Value {
        self.get(&rollouts(NS), NAME).unwrap().clone()
    }

    /// The writes (anything but GET) seen.
    pub fn writes(&self) -> Vec<Seen> {
        self.seen.iter().filter(|s| s.method != "GET").cloned().collect()
    }

    fn answer(&mut self, seen: Seen) -> (u16, Value) {
        self.seen.push(seen.clone());
        let segs: Vec<&str> = seen.path.trim_start_matches('/').split('/').collect();
        // /api/v1/… or /apis/GROUP/VERSION/…
        let (prefix_len, api_version) = match segs.first() {
            Some(&"api") => (2, "v1".to_owned()),
            Some(&"apis") if segs.len() >= 3 => (3, format!("{}/{}", segs[1], segs[2])),
            _ => return status_error(404, "NotFound", "no such path"),
        };
        let rest = &segs[prefix_len..];
        let (ns, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
            _ => (None, rest),
        };
        let base = segs[..prefix_len].join("/");
        let collection = |plural: &str| match ns {
            Some(ns) => format!("/{base}/namespaces/{ns}/{plural}"),
            None => format!("/{base}/{plural}"),
        };
        match (seen.method.as_str(), rest) {
            ("GET", [plural]) => self.list(&base, ns, plural, &api_version, &seen.query),
            ("GET", [plural, name]) => self.read(&collection(plural), plural, name),
            ("PATCH", [plural, name]) => self.patch(&collection(plural), name, &seen),
            _ => status_error(405, "MethodNotAllowed", "not served by the fake"),
        }
    }

    fn read(&mut self, path: &str, plural: &str, name: &str) -> (u16, Value) {
        if plural == "agentrollouts" && self.pending {
            self.take_up(path, name);
        }
        match self.get(path, name) {
            Some(o) => (200, o.clone()),
            None => status_error(404, "NotFound", &format!("{plural} \"{name}\" not found")),
        }
    }

    fn take_up(&mut self, path: &str, name: &str) {
        let Some(obj) = self.objects.get_mut(&(path.to_owned(), name.to_owned())) else { return };
        match self.operator {
            Operator::Absent => return,
            Operator::TakesUp => {
                obj["status"]["observedGeneration"] = obj["metadata"]["generation"].clone();
                if let Some(id) = obj["spec"]["action"]["id"].as_str().map(str::to_owned) {
                    obj["status"]["handledAction"] = json!(id);
                    obj["status"]["reason"] = json!(format!("carried out {id}"));
                }
            }
            Operator::Refuses => {
                obj["status"]["observedGeneration"] = obj["metadata"]["generation"].clone();
                let id = obj["spec"]["action"]["id"].as_str().unwrap_or("").to_owned();
                obj["status"]["reason"] = json!(format!("action {id} refused: the target is not Bad"));
            }
        }
        self.pending = false;
    }

    fn list(
        &self,
        base: &str,
        ns: Option<&str>,
        plural: &str,
        api_version: &str,
        query: &BTreeMap<String, String>,
    ) -> (u16, Value) {
        if plural == "events" && self.events_forbidden {
            return status_error(403, "Forbidden", "events is forbidden: User cannot list resource \"events\"");
        }
        let labels = query.get("labelSelector").map(|s| kubectl_vigil::selector::parse(s).unwrap());
        let fields: Vec<(String, String)> = query
            .get("fieldSelector")
            .map(|s| {
                s.split(',').map(|kv| kv.split_once('=').unwrap()).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
            })
            .unwrap_or_default();
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((path, _), _)| match ns {
                Some(ns) => path == &format!("/{base}/namespaces/{ns}/{plural}"),
                // Cluster-scoped, or every namespace.
                None => {
                    path == &format!("/{base}/{plural}")
                        || (path.starts_with(&format!("/{base}/namespaces/")) && path.ends_with(&format!("/{plural}")))
                }
            })
            .map(|(_, o)| o)
            .filter(|o| {
                labels.as_ref().is_none_or(|sel| {
                    let l: BTreeMap<String, String> =
                        serde_json::from_value(o["metadata"]["labels"].clone()).unwrap_or_default();
                    plan::selector_matches(sel, &l)
                })
            })
            .filter(|o| {
                fields.iter().all(|(k, v)| {
                    let at = k.split('.').fold(*o, |o, seg| &o[seg]);
                    at.as_str() == Some(v.as_str())
                })
            })
            .cloned()
            .collect();
        (200, json!({"apiVersion": api_version, "kind": "List", "metadata": {"resourceVersion": "7"}, "items": items}))
    }

    fn patch(&mut self, path: &str, name: &str, seen: &Seen) -> (u16, Value) {
        let key = (path.to_owned(), name.to_owned());
        let Some(mut obj) = self.objects.get(&key).cloned() else {
            return status_error(404, "NotFound", &format!("\"{name}\" not found"));
        };
        let before = obj["spec"].clone();
        match seen.content_type.as_deref() {
            Some("application/apply-patch+yaml") => {
                let manager = seen.query.get("fieldManager").cloned().unwrap_or_default();
                let force = seen.query.get("force").is_some_and(|f| f == "true");
                // Fields another manager applied conflict unless forced.
                let mine = owned_by(&obj, &manager);
                let applied: Vec<String> = seen.body["spec"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .flat_map(|(k, v)| {
                        if k == "pins" {
                            v.as_array()
                                .into_iter()
                                .flatten()
                                .map(|p| format!("pin:{}", p["name"].as_str().unwrap()))
                                .collect::<Vec<_>>()
                        } else {
                            vec![k.clone()]
                        }
                    })
                    .collect();
                let managers: Vec<String> = obj["metadata"]["managedFields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["manager"].as_str().map(str::to_owned))
                    .filter(|m| m != &manager)
                    .collect();
                for other in &managers {
                    let theirs = owned_by(&obj, other);
                    let clash: Vec<&String> = applied.iter().filter(|f| theirs.contains(f)).collect();
                    if !clash.is_empty() && !force {
                        return status_error(
                            409,
                            "Conflict",
                            &format!("Apply failed with 1 conflict: conflict with \"{other}\": .spec.{}", clash[0]),
                        );
                    }
                }
                // What this manager applied before and leaves out now is removed.
                for f in mine.iter().filter(|f| !applied.contains(f)) {
                    match f.strip_prefix("pin:") {
                        Some(pin) => {
                            if let Some(pins) = obj["spec"]["pins"].as_array_mut() {
                                pins.retain(|p| p["name"] != pin);
                            }
                        }
                        None => {
                            obj["spec"].as_object_mut().unwrap().remove(f);
                        }
                    }
                }
                for (k, v) in seen.body["spec"].as_object().into_iter().flatten() {
                    if k == "pins" {
                        let pins = obj["spec"]["pins"].as_array().cloned().unwrap_or_default();
                        let mut merged: Vec<Value> = pins;
                        for p in v.as_array().into_iter().flatten() {
                            match merged.iter_mut().find(|q| q["name"] == p["name"]) {
                                Some(q) => *q = p.clone(),
                                None => merged.push(p.clone()),
                            }
                        }
                        obj["spec"]["pins"] = json!(merged);
                    } else {
                        obj["spec"][k] = v.clone();
                    }
                }
                // Managed fields: this manager's entry is what it applied; a forced field
                // leaves its former owner.
                let mut mf: Vec<Value> = obj["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
                mf.retain(|e| e["manager"] != manager.as_str());
                mf.push(json!({"manager": manager, "operation": "Apply", "apiVersion": "vigil.dev/v1alpha1", "fieldsType": "FieldsV1", "fieldsV1": fields_of(&seen.body["spec"])}));
                obj["metadata"]["managedFields"] = json!(mf);
            }
            Some("application/json-patch+json") => {
                for op in seen.body.as_array().into_iter().flatten() {
                    let ptr = op["path"].as_str().unwrap();
                    match op["op"].as_str().unwrap() {
                        "test" => {
                            if obj.pointer(ptr) != Some(&op["value"]) {
                                return status_error(
                                    422,
                                    "Invalid",
                                    &format!(
                                        "the server rejected our request due to an error in our request: test failed at {ptr}"
                                    ),
                                );
                            }
                        }
                        "remove" => {
                            let (parent, last) = ptr.rsplit_once('/').unwrap();
                            match obj.pointer_mut(parent) {
                                Some(Value::Array(a)) => {
                                    a.remove(last.parse::<usize>().unwrap());
                                }
                                Some(Value::Object(o)) => {
                                    o.remove(last);
                                }
                                _ => return status_error(422, "Invalid", "no such path"),
                            }
                        }
                        other => panic!("the fake serves no JSON patch op {other}"),
                    }
                }
            }
            Some("application/merge-patch+json") => merge(&mut obj, &seen.body),
            other => return status_error(415, "UnsupportedMediaType", &format!("content type {other:?}")),
        }
        if obj["spec"] != before {
            let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
            obj["metadata"]["generation"] = json!(g + 1);
        }
        self.objects.insert(key, obj.clone());
        self.pending = true;
        (200, obj)
    }
}

/// The AgentRollouts collection of `ns`.
pub fn rollouts(ns: &str) -> String {
    format!("{ROLLOUTS}/namespaces/{ns}/agentrollouts")
}

/// The rollout spec: waves 5/25/100 with 60 s bakes, and a pin (written by [`GITOPS`]) that
/// holds the two `pool=legacy` nodes on the stable revision.
pub fn spec() -> Value {
    let mut spec =
        serde_json::to_value(vigil_plan::simulate::spec(vigil_crds::rollout::FailurePolicy::Rollback)).unwrap();
    spec["pins"] = json!([{"name": "legacy", "nodeSelector": {"matchLabels": {"pool": "legacy"}}, "revision": STABLE, "reason": "kernel 4.19 until the fix ships"}]);
    spec
}

fn node(i: usize) -> Value {
    let pool = if i >= NODES - 2 { "legacy" } else { "general" };
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": format!("node-{i:02}"), "labels": {"pool": pool, "vigil.dev/revision": STABLE, "topology.kubernetes.io/zone": format!("z{}", i % 3)}},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2027-01-01T00:00:00Z"}],
            "nodeInfo": {"osImage": "Debian GNU/Linux 12", "kernelVersion": "6.1.0", "architecture": "amd64", "operatingSystem": "linux",
                         "bootID": "", "containerRuntimeVersion": "", "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "", "systemUUID": ""}
        }
    })
}

/// The agent of `rev` on `node`, running and ready since `since`; its Lease and AgentStatus.
fn put_agent(f: &mut Fake, node: &str, rev: &str, since: Timestamp) {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("vigil-agent-{rev}-{node}"), "namespace": NS, "labels": {"app.kubernetes.io/name": "vigil-agent", "vigil.dev/revision": rev}},
        "spec": {"nodeName": node, "containers": [{"name": "agent"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "agent", "ready": true, "restartCount": 0, "image": "", "imageID": "", "state": {"running": {"startedAt": since.to_string()}}}]}
    });
    f.put(&format!("/api/v1/namespaces/{NS}/pods"), pod);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": vigil_crds::agent::lease_name(node), "namespace": NS, "labels": {"app.kubernetes.io/name": "vigil-agent"}},
        "spec": {"holderIdentity": rev, "leaseDurationSeconds": 40, "renewTime": now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}
    });
    f.put(&format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"), lease);
    let status = json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AgentStatus",
        "metadata": {"name": node},
        "spec": {"nodeName": node},
        "status": {"agentVersion": if rev == STABLE { "1.9.0" } else { "2.0.0" }, "revision": rev, "health": "Healthy",
                   "lastReportTime": (now() - Duration::from_secs(5)).to_string(), "activeAlerts": 0,
                   "sources": [{"name": "kernel", "state": "On"}]}
    });
    f.put(&format!("{ROLLOUTS}/agentstatuses"), status);
}

fn views(f: &Fake) -> Vec<plan::NodeView> {
    let of = |path: &str| -> Vec<Value> {
        f.objects.iter().filter(|((p, _), _)| p == path).map(|(_, o)| o.clone()).collect()
    };
    let nodes: Vec<k8s_openapi::api::core::v1::Node> =
        of("/api/v1/nodes").into_iter().map(|o| serde_json::from_value(o).unwrap()).collect();
    let pods: Vec<k8s_openapi::api::core::v1::Pod> =
        of(&format!("/api/v1/namespaces/{NS}/pods")).into_iter().map(|o| serde_json::from_value(o).unwrap()).collect();
    let leases: Vec<k8s_openapi::api::coordination::v1::Lease> =
        of(&format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"))
            .into_iter()
            .map(|o| serde_json::from_value(o).unwrap())
            .collect();
    let statuses: Vec<vigil_crds::AgentStatus> =
        of(&format!("{ROLLOUTS}/agentstatuses")).into_iter().map(|o| serde_json::from_value(o).unwrap()).collect();
    use vigil_plan::facts::{LeaseFacts, NodeFacts, PodFacts, StatusFacts};
    vigil_plan::observe::node_views(
        &nodes.iter().map(NodeFacts::from).collect::<Vec<_>>(),
        &pods.iter().map(PodFacts::from).collect::<Vec<_>>(),
        &leases.iter().map(LeaseFacts::from).collect::<Vec<_>>(),
        &statuses.iter().map(StatusFacts::from).collect::<Vec<_>>(),
    )
}

/// Plans one step of the rollout as the operator would, applies its moves to the nodes (and
/// starts the agents they call for), and returns the status to write.
fn operator_step(f: &mut Fake, status: &AgentRolloutStatus, at: Timestamp) -> AgentRolloutStatus {
    let spec: vigil_crds::AgentRolloutSpec = serde_json::from_value(spec()).unwrap();
    let observed =
        Observed { nodes: views(f), config_sha256: Some(spec.target.config.sha256.clone()), ..Observed::default() };
    let p = plan::next(&spec, status, Some(1), &format!("{NS}/{NAME}"), &observed, at, Limits::default());
    for m in &p.moves {
        let n = f.objects.get_mut(&("/api/v1/nodes".to_owned(), m.node.clone())).unwrap();
        let current: BTreeMap<String, String> = serde_json::from_value(n["metadata"]["labels"].clone()).unwrap();
        let patch =
            vigil_plan::node_labels::node_label_patch(m, &format!("{NS}/{NAME}"), at, &current, &Default::default());
        merge(n, &patch);
        if let Some(to) = &m.to {
            put_agent(f, &m.node, to, at);
        }
    }
    p.status
}

/// A fake API holding the test fleet: 20 nodes, wave 1 of the rollout on its target and
/// baking, the two legacy nodes pinned, three of the operator's Events.
pub fn fleet() -> Shared {
    let mut f = Fake::new();
    for i in 0..NODES {
        let n = node(i);
        let name = n["metadata"]["name"].as_str().unwrap().to_owned();
        f.put("/api/v1/nodes", n);
        put_agent(&mut f, &name, STABLE, t0() - Duration::from_secs(86_400));
    }
    // The revision before, proven Good by an earlier rollout.
    let st0: AgentRolloutStatus = serde_json::from_value(json!({
        "stableRevision": STABLE,
        "history": [{"revision": STABLE, "image": format!("registry.example/vigil-agent:1.9.0@sha256:{}", "c".repeat(64)),
                     "configSha256": "d".repeat(64), "version": "1.9.0", "outcome": "Good"}]
    }))
    .unwrap();
    let st1 = operator_step(&mut f, &st0, t0());
    let st2 = operator_step(&mut f, &st1, t0() + Duration::from_secs(30));
    let mut status = serde_json::to_value(&st2).unwrap();
    status["observedGeneration"] = json!(1);
    // What the GitOps tool's manifest says: no pause, freeze or action.
    let mut gitops = spec();
    for k in ["paused", "frozen", "action"] {
        gitops.as_object_mut().unwrap().remove(k);
    }
    let rollout = json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AgentRollout",
        "metadata": {"name": NAME, "namespace": NS, "uid": "uid-agent", "generation": 1, "resourceVersion": "5",
                     "creationTimestamp": (t0() - Duration::from_secs(600)).to_string(),
                     "managedFields": [{"manager": GITOPS, "operation": "Apply", "apiVersion": "vigil.dev/v1alpha1", "fieldsType": "FieldsV1", "fieldsV1": fields_of(&gitops)}]},
        "spec": spec(),
        "status": status,
    });
    f.put(&rollouts(NS), rollout);
    for (i, (reason, note, at)) in [
        ("Admit", "wave 1: admitting 1 node(s)", t0()),
        ("Bake", "wave 1 healthy: baking 60s", t0() + Duration::from_secs(30)),
    ]
    .into_iter()
    .enumerate()
    {
        f.put(
            &format!("/api/v1/namespaces/{NS}/events"),
            json!({"apiVersion": "v1", "kind": "Event",
                   "metadata": {"name": format!("agent.{i}"), "namespace": NS, "creationTimestamp": at.to_string()},
                   "involvedObject": {"apiVersion": "vigil.dev/v1alpha1", "kind": "AgentRollout", "name": NAME, "namespace": NS, "uid": "uid-agent"},
                   "reason": reason, "message": note, "type": "Normal", "lastTimestamp": at.to_string()}),
        );
    }
    // An Event of another object with the same name, which the field selector leaves out.
    f.put(
        &format!("/api/v1/namespaces/{NS}/events"),
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "agent.pod", "namespace": NS},
               "involvedObject": {"kind": "Pod", "name": NAME, "namespace": NS}, "reason": "BackOff", "message": "not ours", "type": "Warning"}),
    );
    Arc::new(Mutex::new(f))
}

/// Changes the stored test rollout with `edit`, as another writer would.
pub fn edit_rollout(f: &Shared, edit: impl FnOnce(&mut Value)) {
    let mut g = f.lock().unwrap();
    let mut r = g.rollout();
    edit(&mut r);
    g.put(&rollouts(NS), r);
}

/// The target revision of the test rollout.
pub fn target(f: &Shared) -> String {
    f.lock().unwrap().rollout()["status"]["targetRevision"].as_str().unwrap().to_owned()
}

/// What a command did.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status.
    pub code: i32,
    /// Standard output.
    pub out: String,
    /// Standard error.
    pub err: String,
}

fn decode_query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

async fn serve(fake: Shared, mut handle: mock::Handle<Request<Body>, Response<Body>>) {
    while let Some((req, send)) = handle.next_request().await {
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let seen = Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: decode_query(parts.uri.query()),
            content_type: parts.headers.get(http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()),
            body: if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() },
        };
        let (code, v) = fake.lock().unwrap().answer(seen);
        send.send_response(
            Response::builder()
                .status(code)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&v).unwrap()))
                .unwrap(),
        );
    }
}

/// Runs `kubectl vigil ARGS` against `fake` (context namespace `ops`, the clock at [`now`]).
pub async fn vigil(fake: &Shared, args: &[&str]) -> Outcome {
    let cli = Cli::try_parse_from(std::iter::once("kubectl-vigil").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"));
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(fake.clone(), handle));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = {
        let mut env = Env {
            client: Client::new(svc, NS),
            default_namespace: NS.into(),
            out: &mut out,
            err: &mut err,
            paint: Paint { on: false },
            clock: now,
        };
        tokio::time::timeout(Duration::from_secs(30), run(cli, &mut env)).await.expect("the command never ended")
    };
    server.abort();
    Outcome { code, out: String::from_utf8(out).unwrap(), err: String::from_utf8(err).unwrap() }
}
