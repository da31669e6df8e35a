//! Which pod an event belongs to. On a Kubernetes node the first question about an OOM kill,
//! a process or a connection is "which pod": the kernel and /proc name a cgroup, the kubelet
//! names that cgroup after the pod's UID, and one watch of the node's own pods maps the UID to
//! the namespace, the name and each container's name.
//!
//! The cgroup layouts known ([`parse_cgroup`], pure):
//!
//! | driver | path (cgroup v1 per controller, v2 unified alike) |
//! | --- | --- |
//! | cgroupfs | `/kubepods/burstable/pod<UID>/<CONTAINER-ID>`, `/kubepods/pod<UID>/…` (guaranteed) |
//! | systemd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID with _>.slice/cri-containerd-<ID>.scope` |
//!
//! with the container scope `cri-containerd-`, `crio-` or `docker-` (CRI-O's `crio-conmon-` is
//! its monitor, not the container), and the same under a nested hierarchy (`/…/kubelet.slice/…`,
//! kind's `/kubelet/kubepods/…`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::Event;

/// What a cgroup path says about a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupRef {
    /// The pod's UID (with dashes, as the API server writes it).
    pub pod_uid: String,
    /// The container's id (the runtime's, without a `containerd://` scheme), when the cgroup
    /// is a container's and not the pod's own.
    pub container_id: Option<String>,
    /// The QoS class the path is under (`guaranteed`, `burstable`, `besteffort`).
    pub qos: &'static str,
}

/// The pod (and container) a cgroup path belongs to; `None` for a cgroup outside `kubepods`.
pub fn parse_cgroup(path: &str) -> Option<CgroupRef> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let root = parts.iter().position(|p| p.split(['.', '-']).any(|w| w == "kubepods"))?;
    let mut qos = "guaranteed";
    for (i, part) in parts.iter().enumerate().skip(root) {
        let name = part.strip_suffix(".slice").unwrap_or(part);
        for q in ["burstable", "besteffort"] {
            if name == q || name.ends_with(&format!("-{q}")) {
                qos = q;
            }
        }
        let uid = if let Some(uid) = part.strip_prefix("pod") {
            uid // cgroupfs
        } else if let Some(slice) = part.strip_suffix(".slice")
            && let Some(pos) = slice.rfind("-pod")
        {
            &slice[pos + 4..] // systemd: dashes in the UID became underscores
        } else {
            continue;
        };
        if uid.is_empty() || !uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_') {
            continue;
        }
        let container_id = parts.get(i + 1).and_then(|c| container_of(c));
        return Some(CgroupRef { pod_uid: uid.replace('_', "-"), container_id, qos });
    }
    None
}

/// The container id in a pod's child cgroup: a bare id (cgroupfs), or a runtime's scope.
fn container_of(part: &str) -> Option<String> {
    let id = match part.strip_suffix(".scope") {
        Some(scope) => {
            if scope.starts_with("crio-conmon-") {
                return None;
            }
            ["cri-containerd-", "crio-", "docker-", "containerd-"].iter().find_map(|p| scope.strip_prefix(p))?
        }
        None => part,
    };
    (id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// What the node's pod watch knows of one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Container id (without scheme) → container name, for every container that has started
    /// (init and ephemeral ones too).
    pub containers: HashMap<String, String>,
}

impl PodInfo {
    /// The pod's UID and what to know of it; `None` without a UID.
    pub fn from_pod(pod: &k8s_openapi::api::core::v1::Pod) -> Option<(String, Self)> {
        let uid = pod.metadata.uid.clone()?;
        let mut containers = HashMap::new();
        if let Some(status) = &pod.status {
            let all =
                [&status.container_statuses, &status.init_container_statuses, &status.ephemeral_container_statuses];
            for s in all.into_iter().flatten().flatten() {
                if let Some(id) = &s.container_id {
                    let id = id.split_once("://").map_or(id.as_str(), |(_, id)| id);
                    containers.insert(id.to_ascii_lowercase(), s.name.clone());
                }
            }
        }
        Some((
            uid,
            Self {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                containers,
            },
        ))
    }
}

/// The node's pods by UID, shared between the watch that fills it and the event consumer that
/// reads it. Empty off Kubernetes (events then carry the UID and container id the cgroup gave).
#[derive(Clone, Debug, Default)]
pub struct PodIndex(Arc<RwLock<HashMap<String, PodInfo>>>);

/// The cgroup details of events, most specific first: the task's own memory cgroup of an OOM
/// kill, a process's cgroup.
const CGROUP_KEYS: [&str; 3] = ["taskMemcg", "cgroup", "oomMemcg"];

impl PodIndex {
    /// Adds or replaces a pod.
    pub fn apply(&self, pod: &k8s_openapi::api::core::v1::Pod) {
        if let (Some((uid, info)), Ok(mut map)) = (PodInfo::from_pod(pod), self.0.write()) {
            map.insert(uid, info);
        }
    }

    /// Forgets a pod.
    pub fn delete(&self, pod: &k8s_openapi::api::core::v1::Pod) {
        if let (Some(uid), Ok(mut map)) = (&pod.metadata.uid, self.0.write()) {
            map.remove(uid);
        }
    }

    /// Replaces every pod (a fresh list of the watch).
    pub fn replace(&self, pods: &[k8s_openapi::api::core::v1::Pod]) {
        let fresh: HashMap<String, PodInfo> = pods.iter().filter_map(PodInfo::from_pod).collect();
        if let Ok(mut map) = self.0.write() {
            *map = fresh;
        }
    }

    /// Pods known.
    pub fn len(&self) -> usize {
        self.0.read().map_or(0, |m| m.len())
    }

    /// Whether no pod is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds to an event whose details name a cgroup under `kubepods` the pod's UID and the
    /// container id (`podUid`, `containerId`), and from the watch the pod's namespace, name and
    /// the container's name (`podNamespace`, `podName`, `containerName`).
    pub fn attribute(&self, e: &mut Event) {
        let Some(cg) = CGROUP_KEYS.iter().filter_map(|k| e.detail_str(k)).find_map(parse_cgroup) else { return };
        if let Some(id) = &cg.container_id {
            e.details.entry("containerId").or_insert_with(|| id.clone().into());
        }
        e.details.insert("podUid".into(), cg.pod_uid.clone().into());
        let Ok(map) = self.0.read() else { return };
        let Some(pod) = map.get(&cg.pod_uid) else { return };
        e.details.insert("podNamespace".into(), pod.namespace.clone().into());
        e.details.insert("podName".into(), pod.name.clone().into());
        let container = e.detail_str("containerId").and_then(|id| pod.containers.get(id)).cloned();
        if let Some(c) = container {
            e.details.insert("containerName".into(), c.into());
        }
    }
}

/// Keeps `index` equal to the pods of `node` (a watch with the field selector
/// `spec.nodeName=<node>`: the API server sends this node's pods only) until the future is
/// dropped. Watch errors are retried with backoff, as every kube watch is.
pub async fn watch_node_pods(client: kube::Client, node: String, index: PodIndex) {
    use futures::TryStreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut listing: Vec<k8s_openapi::api::core::v1::Pod> = Vec::new();
    let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff());
    loop {
        match stream.try_next().await {
            Ok(Some(watcher::Event::Apply(p))) => index.apply(&p),
            Ok(Some(watcher::Event::Delete(p))) => index.delete(&p),
            Ok(Some(watcher::Event::Init)) => listing.clear(),
            Ok(Some(watcher::Event::InitApply(p))) => listing.push(p),
            Ok(Some(watcher::Event::InitDone)) => index.replace(&std::mem::take(&mut listing)),
            Ok(None) => return,
            Err(_) => {} // the backoff waits before the next try
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    const UID: &str = "5f3c1e2a-9b7d-4c11-8e0f-2a6b9c3d4e5f";
    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn every_kubepods_layout_gives_the_pod_and_container() {
        let systemd_uid = UID.replace('-', "_");
        let cases = [
            (format!("/kubepods/burstable/pod{UID}/{CID}"), "burstable", true),
            (format!("/kubepods/besteffort/pod{UID}/{CID}"), "besteffort", true),
            (format!("/kubepods/pod{UID}/{CID}"), "guaranteed", true),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{systemd_uid}.slice/cri-containerd-{CID}.scope"
                ),
                "burstable",
                true,
            ),
            (format!("/kubepods.slice/kubepods-pod{systemd_uid}.slice/crio-{CID}.scope"), "guaranteed", true),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{systemd_uid}.slice/docker-{CID}.scope"
                ),
                "besteffort",
                true,
            ),
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{systemd_uid}.slice/cri-containerd-{CID}.scope"
                ),
                "burstable",
                true,
            ),
            (format!("/kubelet/kubepods/burstable/pod{UID}/{CID}"), "burstable", true),
            // The pod's own cgroup, and CRI-O's monitor: the pod, no container.
            (format!("/kubepods/burstable/pod{UID}"), "burstable", false),
            (format!("/kubepods.slice/kubepods-pod{systemd_uid}.slice/crio-conmon-{CID}.scope"), "guaranteed", false),
        ];
        for (path, qos, has_container) in cases {
            let r = parse_cgroup(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(r.pod_uid, UID, "{path}");
            assert_eq!(r.qos, qos, "{path}");
            assert_eq!(r.container_id.as_deref(), has_container.then_some(CID), "{path}");
        }
        // A short test UID as a memcg path names it.
        assert_eq!(parse_cgroup("/kubepods/burstable/pod1234/abcdef0123456789").unwrap().pod_uid, "1234");
        for other in [
            "/system.slice/sshd.service",
            "/user.slice/user-1000.slice",
            "/",
            "",
            "/kubepods",
            "/kubepods/burstable",
            "/podman/pod1234",
        ] {
            assert_eq!(parse_cgroup(other), None, "{other}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_path_is_read_without_panic(path in "(/(kubepods|kubepods\\.slice|pod[0-9a-f_-]{0,40}|[a-z-]{0,12}\\.slice|cri-containerd-[0-9a-f]{0,70}\\.scope|\\PC{0,12}))*") {
            let _ = parse_cgroup(&path);
        }
    }

    fn pod() -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "api-7d9f", "namespace": "shop", "uid": UID},
            "status": {
                "containerStatuses": [{"name": "api", "containerID": format!("containerd://{CID}"), "image": "x", "imageID": "", "ready": true, "restartCount": 0}],
                "initContainerStatuses": [{"name": "migrate", "containerID": "containerd://ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "image": "x", "imageID": "", "ready": false, "restartCount": 0}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn an_oom_kill_in_a_container_names_its_pod_namespace_and_container() {
        let index = PodIndex::default();
        let memcg = format!("/kubepods/burstable/pod{UID}/{CID}");
        let mut e =
            Event::new(EventType::OomKill, jiff::Timestamp::UNIX_EPOCH, "killed").with("taskMemcg", memcg.as_str());
        index.attribute(&mut e);
        assert_eq!(
            (e.detail_str("podUid"), e.detail_str("containerId")),
            (Some(UID), Some(CID)),
            "without a watch: the UID"
        );
        assert!(e.detail_str("podName").is_none());
        index.apply(&pod());
        let mut e =
            Event::new(EventType::OomKill, jiff::Timestamp::UNIX_EPOCH, "killed").with("taskMemcg", memcg.as_str());
        index.attribute(&mut e);
        assert_eq!(
            (e.detail_str("podNamespace"), e.detail_str("podName"), e.detail_str("containerName")),
            (Some("shop"), Some("api-7d9f"), Some("api"))
        );
        // A process of the init container, by its cgroup; then the pod is gone.
        let init = "/kubepods/burstable/pod".to_owned() + UID + "/" + &"f".repeat(64);
        let mut p = Event::new(EventType::ProcessStart, jiff::Timestamp::UNIX_EPOCH, "x").with("cgroup", init.as_str());
        index.attribute(&mut p);
        assert_eq!(p.detail_str("containerName"), Some("migrate"));
        index.delete(&pod());
        assert!(index.is_empty());
        // Not in a pod: nothing added.
        let mut host = Event::new(EventType::ProcessStart, jiff::Timestamp::UNIX_EPOCH, "x")
            .with("cgroup", "/system.slice/cron.service");
        index.attribute(&mut host);
        assert!(host.detail_str("podUid").is_none());
    }
}
