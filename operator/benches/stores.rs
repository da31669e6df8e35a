//! What the operator keeps of each object it watches, per object and per store, and what a
//! page of a watch's first list costs while it is parsed: heap bytes, counted by a counting
//! allocator around the system's, of the operator's stores of facts
//! ([`vigil_plan::facts`]), beside what kube's reflector store would hold of the objects as
//! received.
//!
//! ```sh
//! cargo bench -p vigil-operator --bench stores            # 5,000 of each
//! cargo bench -p vigil-operator --bench stores -- 1000    # another fleet size
//! ```
//!
//! The objects are shaped like a production cluster's: a cloud's Node
//! ([`vigil_plan::shapes::cloud_node`], the shape the scale and fleet benches create on a
//! real API server), the agent pod the operator's own DaemonSet makes once a kubelet runs it
//! (five conditions, a running container, the DaemonSet controller's affinity and
//! tolerations, two managers' managed fields), the agent's heartbeat Lease and a full
//! AgentStatus (seven sources, two conditions). Each store is filled as a watch's first list
//! fills it: pages of [`vigil_operator::controller::LIST_PAGE`] objects parsed from JSON,
//! each object's facts read and kept; beside them, what kube's reflector store holds of the
//! objects as received and of the objects trimmed as the operator kept them before. The
//! figures are bytes the allocator holds, not resident memory: the allocator's
//! own overhead and fragmentation come on top.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use vigil_operator::act::{AgentTemplate, daemonset};
use vigil_operator::controller::LIST_PAGE;
use vigil_operator::kept::Keyed;
use vigil_plan::facts::{Interner, LeaseFacts, NodeFacts, PodFacts, StatusFacts};

/// Counts the bytes the system allocator holds for this process, and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; the counters only observe.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is the system allocator's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above, with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc` and `dealloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

#[derive(serde::Deserialize)]
struct List<K> {
    items: Vec<K>,
}

/// How a store keeps what a watch lists.
#[derive(Clone, Copy)]
enum Keep<K, T> {
    /// kube's reflector store of the objects as received.
    Received,
    /// kube's reflector store of the objects with what the planner does not read removed:
    /// how the operator kept them before its stores kept facts.
    Trimmed(fn(&mut K)),
    /// The operator's store of their facts, strings shared through one interner.
    Facts(fn(&K, &mut Interner) -> T),
}

/// Heap bytes per object a store holds after a first list of `objects` (pages of JSON, each
/// received as one text and parsed, as kube's client does), and the peak above that while a
/// page was received and parsed.
fn fill<K, T>(objects: &[Value], keep: Keep<K, T>) -> (f64, f64)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
    T: Keyed,
{
    let page = usize::try_from(LIST_PAGE).unwrap();
    let pages: Vec<Vec<u8>> =
        objects.chunks(page).map(|c| serde_json::to_vec(&json!({ "items": c })).unwrap()).collect();
    let base = live();
    PEAK.store(base, Ordering::Relaxed);
    let (raw, mut raw_writer) = reflector::store::<K>();
    let (kept, mut writer) = vigil_operator::kept::store::<T>();
    let mut strings = Interner::default();
    raw_writer.apply_watcher_event(&Event::Init);
    writer.apply(Event::Init);
    for bytes in &pages {
        let text = String::from_utf8(bytes.clone()).unwrap();
        let list: List<K> = serde_json::from_str(&text).unwrap();
        for mut o in list.items {
            match keep {
                Keep::Facts(facts) => writer.apply(Event::InitApply(facts(&o, &mut strings))),
                Keep::Trimmed(trim) => {
                    trim(&mut o);
                    raw_writer.apply_watcher_event(&Event::InitApply(o));
                }
                Keep::Received => raw_writer.apply_watcher_event(&Event::InitApply(o)),
            }
        }
    }
    raw_writer.apply_watcher_event(&Event::InitDone);
    writer.apply(Event::InitDone);
    let held = live() - base;
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let count = if matches!(keep, Keep::Facts(_)) { kept.len() } else { raw.state().len() };
    assert_eq!(count, objects.len(), "every object is in the store");
    drop((raw, raw_writer, kept, writer, strings));
    #[allow(clippy::cast_precision_loss)]
    let per = held as f64 / objects.len() as f64;
    #[allow(clippy::cast_precision_loss)]
    (per, (peak - held) as f64)
}

/// How the operator trimmed the objects it kept before its stores kept facts (the API's
/// types with what the planner does not read removed), kept here as the baseline.
mod before {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use vigil_crds::AgentStatus;

    fn meta(m: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
        m.managed_fields = None;
        if let Some(a) = m.annotations.as_mut() {
            a.retain(|k, _| k.starts_with(vigil_crds::labels::PREFIX));
        }
    }

    pub fn node(node: &mut Node) {
        meta(&mut node.metadata);
        node.spec = None;
        if let Some(st) = node.status.take() {
            node.status = Some(k8s_openapi::api::core::v1::NodeStatus {
                conditions: st.conditions.map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect()),
                node_info: st.node_info,
                ..Default::default()
            });
        }
    }

    pub fn pod(pod: &mut Pod) {
        pod.metadata.managed_fields = None;
        pod.metadata.annotations = None;
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec { node_name, ..Default::default() });
        if let Some(st) = pod.status.take() {
            pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
                phase: st.phase,
                conditions: st.conditions,
                container_statuses: st.container_statuses,
                ..Default::default()
            });
        }
    }

    pub fn lease(lease: &mut Lease) {
        lease.metadata.managed_fields = None;
        lease.metadata.annotations = None;
    }

    pub fn status(s: &mut AgentStatus) {
        s.metadata.managed_fields = None;
        s.metadata.annotations = None;
        if let Some(st) = s.status.take() {
            let conditions =
                st.conditions.into_iter().filter(|c| c.type_ == vigil_crds::agentstatus::REPORTING_CONDITION).collect();
            s.status = Some(vigil_crds::AgentStatusStatus {
                revision: st.revision,
                health: st.health,
                last_report_time: st.last_report_time,
                conditions,
                ..Default::default()
            });
        }
    }
}

fn uid(i: usize, kind: u8) -> String {
    format!("{kind:02x}{i:06x}-0000-4000-8000-{:012x}", i * 7 + usize::from(kind))
}

fn managed(manager: &str, operation: &str, fields: &Value) -> Value {
    json!({"manager": manager, "operation": operation, "apiVersion": "v1", "time": "2026-12-07T10:00:00Z",
           "fieldsType": "FieldsV1", "fieldsV1": fields})
}

fn nodes(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let name = format!("ip-10-{}-{}-{}.eu-west-1.compute.internal", i / 65536 % 256, i / 256 % 256, i % 256);
            let extra = [("vigil.dev/revision".to_owned(), "r-5f0c1e9a2b".to_owned())].into();
            let mut v = serde_json::to_value(vigil_plan::shapes::cloud_node(&name, i, &extra)).unwrap();
            v["metadata"]["uid"] = json!(uid(i, 1));
            v["metadata"]["resourceVersion"] = json!(format!("{}", 1_000_000 + i));
            v["metadata"]["creationTimestamp"] = json!("2026-11-30T08:00:00Z");
            v["metadata"]["managedFields"] = json!([
                managed(
                    "kubelet",
                    "Update",
                    &json!({"f:status": {"f:conditions": {}, "f:images": {}, "f:nodeInfo": {}}})
                ),
                managed("vigil-operator", "Apply", &json!({"f:metadata": {"f:labels": {"f:vigil.dev/revision": {}}}})),
            ]);
            v
        })
        .collect()
}

fn pods(n: usize) -> Vec<Value> {
    let rec: vigil_crds::rollout::RevisionRecord = serde_json::from_value(json!({
        "revision": "r-5f0c1e9a2b", "image": format!("registry.example.com/vigil/agent@sha256:{}", "a".repeat(64)),
        "configSha256": "b".repeat(64), "configMap": "vigil-agent-config", "configKey": "agent.yaml",
        "configSnapshot": "vigil-agent-config-r-5f0c1e9a2b", "outcome": "Good",
    }))
    .unwrap();
    let ds = daemonset(&rec, None, "vigil-system/fleet", None, &AgentTemplate::default()).unwrap();
    let template = ds.spec.unwrap().template;
    let spec = serde_json::to_value(template.spec.unwrap()).unwrap();
    let labels = serde_json::to_value(template.metadata.unwrap().labels.unwrap()).unwrap();
    let image = rec.image.clone();
    (0..n)
        .map(|i| {
            let node = format!("ip-10-{}-{}-{}.eu-west-1.compute.internal", i / 65536 % 256, i / 256 % 256, i % 256);
            let mut spec = spec.clone();
            spec["nodeName"] = json!(node);
            spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}});
            spec["tolerations"] = json!(["not-ready", "unreachable", "disk-pressure", "memory-pressure", "pid-pressure", "unschedulable"]
                .iter()
                .map(|t| json!({"key": format!("node.kubernetes.io/{t}"), "operator": "Exists", "effect": "NoSchedule"}))
                .collect::<Vec<_>>());
            let mut labels = labels.clone();
            labels["controller-revision-hash"] = json!("6d4b9c7f5d");
            labels["pod-template-generation"] = json!("1");
            let at = "2026-12-07T10:00:00Z";
            let condition = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": at});
            let conditions: Vec<Value> =
                ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"].map(condition).into();
            json!({
                "metadata": {
                    "name": format!("vigil-agent-r-5f0c1e9a2b-{i:05x}"), "generateName": "vigil-agent-r-5f0c1e9a2b-",
                    "namespace": "vigil-system", "uid": uid(i, 2), "resourceVersion": format!("{}", 2_000_000 + i),
                    "creationTimestamp": at, "labels": labels,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "vigil-agent-r-5f0c1e9a2b",
                                         "uid": uid(0, 9), "controller": true, "blockOwnerDeletion": true}],
                    "managedFields": [
                        managed("kube-controller-manager", "Update", &json!({"f:metadata": {"f:labels": {}, "f:ownerReferences": {}}, "f:spec": {"f:affinity": {}, "f:containers": {}, "f:volumes": {}}})),
                        managed("kubelet", "Update", &json!({"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:podIP": {}}})),
                    ],
                },
                "spec": spec,
                "status": {
                    "phase": "Running",
                    "conditions": conditions,
                    "hostIP": format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256),
                    "hostIPs": [{"ip": format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256)}],
                    "podIP": format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256),
                    "podIPs": [{"ip": format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256)}],
                    "startTime": at, "qosClass": "Burstable",
                    "containerStatuses": [{
                        "name": vigil_crds::agent::CONTAINER, "ready": true, "started": true, "restartCount": 0,
                        "image": image, "imageID": image,
                        "containerID": format!("containerd://{i:064x}"),
                        "state": {"running": {"startedAt": at}}, "lastState": {},
                    }],
                },
            })
        })
        .collect()
}

fn leases(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let node = format!("ip-10-{}-{}-{}.eu-west-1.compute.internal", i / 65536 % 256, i / 256 % 256, i % 256);
            json!({
                "metadata": {"name": vigil_crds::agent::lease_name(&node), "namespace": "vigil-system", "uid": uid(i, 3),
                             "resourceVersion": format!("{}", 3_000_000 + i), "creationTimestamp": "2026-12-07T10:00:00Z",
                             "labels": {vigil_crds::agent::NAME_LABEL.0: vigil_crds::agent::NAME_LABEL.1},
                             "managedFields": [managed(vigil_crds::agent::FIELD_MANAGER, "Apply", &json!({"f:spec": {"f:holderIdentity": {}, "f:renewTime": {}}}))]},
                "spec": {"holderIdentity": "r-5f0c1e9a2b", "leaseDurationSeconds": 40, "renewTime": "2026-12-07T10:00:00.123456Z"},
            })
        })
        .collect()
}

fn statuses(n: usize) -> Vec<Value> {
    let sources = [
        ("process", "connector", None),
        ("files", "inotify", None),
        ("auth", "journal", None),
        ("kernel", "kmsg", None),
        ("network", "proc", None),
        ("pods", "watch", None),
        (
            "containers",
            "cri",
            Some("the container runtime's socket is not mounted: containers are named by cgroup only"),
        ),
    ];
    (0..n)
        .map(|i| {
            let node = format!("ip-10-{}-{}-{}.eu-west-1.compute.internal", i / 65536 % 256, i / 256 % 256, i % 256);
            let at = "2026-12-07T10:00:00Z";
            json!({
                "apiVersion": vigil_crds::API_VERSION, "kind": "AgentStatus",
                "metadata": {"name": node, "uid": uid(i, 4), "resourceVersion": format!("{}", 4_000_000 + i),
                             "creationTimestamp": at, "generation": 1,
                             "managedFields": [managed(vigil_crds::agent::FIELD_MANAGER, "Apply", &json!({"f:status": {"f:health": {}, "f:sources": {}}}))]},
                "spec": {"nodeName": node},
                "status": {
                    "agentVersion": "0.1.0", "revision": "r-5f0c1e9a2b",
                    "imageDigest": format!("sha256:{}", "a".repeat(64)), "configSha256": "b".repeat(64), "channel": "stable",
                    "kernel": "6.5.0-1017-aws", "osImage": "Ubuntu 22.04.4 LTS", "architecture": "amd64",
                    "health": "Degraded", "healthReason": "containers degraded: the container runtime's socket is not mounted",
                    "lastReportTime": at, "activeAlerts": 1, "eventsTotal": 123_456, "droppedTotal": 0, "spooled": 0,
                    "deadLettered": 0, "rssBytes": 12_000_000, "cpuMillicores": 4,
                    "sources": sources.iter().map(|(name, mode, why)| json!({"name": name, "state": if why.is_some() { "Degraded" } else { "On" }, "mode": mode, "reason": why})).collect::<Vec<_>>(),
                    "sourcesSummary": "6 on, 1 degraded (containers)",
                    "conditions": [
                        {"type": "Healthy", "status": "False", "reason": "SourceDegraded", "message": "containers degraded", "lastTransitionTime": at},
                        {"type": vigil_crds::agentstatus::REPORTING_CONDITION, "status": "True", "reason": "Reporting", "message": "the agent reported 4 s ago", "lastTransitionTime": at},
                    ],
                },
            })
        })
        .collect()
}

fn row<K, T>(what: &str, objects: &[Value], trim: fn(&mut K), facts: fn(&K, &mut Interner) -> T, n: usize)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
    T: Keyed,
{
    let (received, _) = fill::<K, T>(objects, Keep::Received);
    let (trimmed, _) = fill::<K, T>(objects, Keep::Trimmed(trim));
    let (kept, page) = fill::<K, T>(objects, Keep::Facts(facts));
    #[allow(clippy::cast_precision_loss)]
    let mib = kept * n as f64 / 1_048_576.0;
    println!(
        "| {what} | {received:.0} B | {trimmed:.0} B | {kept:.0} B | {mib:.1} MiB | {:.1} MiB |",
        page / 1_048_576.0
    );
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or(5000, |a| a.parse().expect("a number of objects"));
    println!("{n} objects of each kind, pages of {LIST_PAGE}:\n");
    println!(
        "| store | as received, per object | trimmed API types (before), per object | facts (now), per object | facts, all {n} | a page received and parsed, above that |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    row("nodes (cloud-shaped)", &nodes(n), before::node, NodeFacts::of, n);
    row("agent pods", &pods(n), before::pod, PodFacts::of, n);
    row("heartbeat Leases", &leases(n), before::lease, LeaseFacts::of, n);
    row("AgentStatuses", &statuses(n), before::status, StatusFacts::of, n);
}
