//! Which pod an event belongs to. On a Kubernetes node the first question about an OOM kill,
//! a process or a connection is "which pod": the kernel and /proc name a cgroup, the kubelet
//! names that cgroup after the pod's UID, and the kubelet's own log directories on the host
//! map the UID to the namespace, the name and each container's name and id ([`PodIndex`]):
//! no read of the API, so the agent needs no grant to read pods (which would let a taken-over
//! agent read every pod spec of the cluster, inline secrets in environment values included),
//! and `scan` and `watch` name pods as the daemon does.
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
    // The kubelet's hierarchy is at the top, under its own slice (`kubelet.slice`, kind's
    // `/kubelet`), under a `--cgroup-root` or a node container's cgroup (`/docker/<id>/…`), or,
    // read from inside a cgroup namespace, below `..`. A `kubepods…` slice a user makes in
    // their own delegated subtree (`/user.slice/user-1000.slice/user@1000.service/…`), or a
    // service makes below its unit, names no pod.
    let foreign =
        |p: &&str| p.starts_with("user") || p.ends_with(".service") || p.ends_with(".scope") || *p == "system.slice";
    if parts[..root].iter().any(foreign) {
        return None;
    }
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

/// What the kubelet's log directories say of one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Container id (the runtime's, without scheme) → container name, for every container
    /// that has started (init and ephemeral ones too: each gets a log).
    pub containers: HashMap<String, String>,
}

/// Where the kubelet writes pod logs (CRI layout), under the host root.
pub const POD_LOGS: &str = "var/log/pods";
/// Where the kubelet links each container's log, named after it, under the host root.
pub const CONTAINER_LOGS: &str = "var/log/containers";
/// The most pods kept (a node runs at most a few hundred).
const MAX_PODS: usize = 4096;
/// How often a miss may re-read the directories.
const REREAD: std::time::Duration = std::time::Duration::from_secs(1);

/// A pod directory's name, `<namespace>_<pod>_<uid>`: (namespace, pod, uid). Namespaces, pod
/// names and UIDs hold no `_`, so the split is exact.
pub fn parse_pod_dir(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.split('_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    let dns = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    let uid_ok = !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    (parts.next().is_none() && dns(ns) && dns(pod) && uid_ok).then_some((ns, pod, uid))
}

/// A container log link's name, `<pod>_<namespace>_<container>-<id>.log`, and where it points
/// (`…/<namespace>_<pod>_<uid>/<container>/<restart>.log`): (uid, namespace, pod, container,
/// id). The link and its target must agree on the pod, namespace and container.
pub fn parse_container_link<'a>(
    file: &'a str,
    target: &'a str,
) -> Option<(&'a str, &'a str, &'a str, &'a str, String)> {
    let (rest, id) = file.strip_suffix(".log")?.rsplit_once('-')?;
    if id.len() < 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut parts = rest.split('_');
    let (pod, ns, container) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let mut up = target.rsplit('/');
    let (_log, target_container, dir) = (up.next()?, up.next()?, up.next()?);
    let (dir_ns, dir_pod, uid) = parse_pod_dir(dir)?;
    (dir_ns == ns && dir_pod == pod && target_container == container && !container.is_empty())
        .then(|| (uid, ns, pod, container, id.to_ascii_lowercase()))
}

/// Reads the node's pods from the kubelet's log directories under `root`: every pod directory
/// of [`POD_LOGS`], and every container link of [`CONTAINER_LOGS`]. What is missing or
/// unreadable is no pod (off Kubernetes both are absent).
pub fn read_log_dirs(root: &std::path::Path) -> HashMap<String, PodInfo> {
    let mut pods: HashMap<String, PodInfo> = HashMap::new();
    if let Ok(dirs) = std::fs::read_dir(root.join(POD_LOGS)) {
        for d in dirs.flatten().take(MAX_PODS) {
            if let Some((ns, pod, uid)) = d.file_name().to_str().and_then(parse_pod_dir) {
                pods.entry(uid.to_owned()).or_insert_with(|| PodInfo {
                    namespace: ns.to_owned(),
                    name: pod.to_owned(),
                    containers: HashMap::new(),
                });
            }
        }
    }
    if let Ok(links) = std::fs::read_dir(root.join(CONTAINER_LOGS)) {
        for l in links.flatten().take(MAX_PODS * 8) {
            let (Some(file), Ok(target)) = (l.file_name().to_str().map(str::to_owned), std::fs::read_link(l.path()))
            else {
                continue;
            };
            let Some(target) = target.to_str() else { continue };
            let Some((uid, ns, pod, container, id)) = parse_container_link(&file, target) else { continue };
            if pods.len() >= MAX_PODS && !pods.contains_key(uid) {
                continue;
            }
            let info = pods.entry(uid.to_owned()).or_insert_with(|| PodInfo {
                namespace: ns.to_owned(),
                name: pod.to_owned(),
                containers: HashMap::new(),
            });
            info.containers.insert(id, container.to_owned());
        }
    }
    pods
}

#[derive(Debug, Default)]
struct Inner {
    pods: RwLock<HashMap<String, PodInfo>>,
    /// The host root whose log directories are read; `None`: nothing to read (tests).
    root: Option<std::path::PathBuf>,
    /// When the directories were last read.
    read_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The node's pods by UID, from the kubelet's log directories on the host: read at start and
/// again (at most once a second) when an event names a pod or container it does not know, so
/// a new pod is named from its first event and a deleted one is forgotten at the next read.
/// Off Kubernetes it stays empty (events then carry the UID and container id the cgroup gave).
#[derive(Clone, Debug, Default)]
pub struct PodIndex(Arc<Inner>);

/// The cgroup details of events, most specific first: the task's own memory cgroup of an OOM
/// kill, a process's cgroup.
const CGROUP_KEYS: [&str; 3] = ["taskMemcg", "cgroup", "oomMemcg"];

impl PodIndex {
    /// The pods of the host under `root`, read now.
    pub fn from_host(root: &vigil_host::host::HostRoot) -> Self {
        let index = Self(Arc::new(Inner { root: Some(root.root().to_owned()), ..Inner::default() }));
        index.reread();
        index
    }

    fn reread(&self) {
        let Some(root) = &self.0.root else { return };
        if let Ok(mut at) = self.0.read_at.lock() {
            if at.is_some_and(|t| t.elapsed() < REREAD) {
                return;
            }
            *at = Some(std::time::Instant::now());
        }
        let fresh = read_log_dirs(root);
        if let Ok(mut map) = self.0.pods.write() {
            *map = fresh;
        }
    }

    /// Pods known.
    pub fn len(&self) -> usize {
        self.0.pods.read().map_or(0, |m| m.len())
    }

    /// Whether no pod is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds to an event whose details name a cgroup under `kubepods` the pod's UID and the
    /// container id (`podUid`, `containerId`), and from the kubelet's directories the pod's
    /// namespace, name and the container's name (`podNamespace`, `podName`, `containerName`).
    pub fn attribute(&self, e: &mut Event) {
        let Some(cg) = CGROUP_KEYS.iter().filter_map(|k| e.detail_str(k)).find_map(parse_cgroup) else { return };
        if let Some(id) = &cg.container_id {
            e.details.entry("containerId").or_insert_with(|| id.clone().into());
        }
        e.details.insert("podUid".into(), cg.pod_uid.clone().into());
        let container_id = e.detail_str("containerId").map(str::to_owned);
        let lookup = || -> Option<(PodInfo, Option<String>)> {
            let map = self.0.pods.read().ok()?;
            let pod = map.get(&cg.pod_uid)?;
            let container = container_id.as_ref().and_then(|id| pod.containers.get(id)).cloned();
            Some((PodInfo { containers: HashMap::new(), ..pod.clone() }, container))
        };
        let mut found = lookup();
        // A pod or container started since the last read: read again (at most once a second).
        if found.as_ref().is_none_or(|(_, c)| c.is_none() && container_id.is_some()) {
            self.reread();
            found = lookup().or(found);
        }
        let Some((pod, container)) = found else { return };
        e.details.insert("podNamespace".into(), pod.namespace.into());
        e.details.insert("podName".into(), pod.name.into());
        if let Some(c) = container {
            e.details.insert("containerName".into(), c.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventType;

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
            // Read from inside a cgroup namespace (an unprivileged container on cgroup v2), and
            // kind on a cgroup v1 host.
            (
                format!(
                    "/../../../kubepods-besteffort.slice/kubepods-besteffort-pod{systemd_uid}.slice/cri-containerd-{CID}.scope"
                ),
                "besteffort",
                true,
            ),
            (format!("/docker/{CID}/kubelet/kubepods/burstable/pod{UID}/{CID}"), "burstable", true),
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
            // A user's own slices named like the kubelet's: not a pod.
            "/user.slice/user-1000.slice/user@1000.service/kubepods.slice/kubepods-pod1234.slice/cri-containerd-0123456789abcdef.scope",
            "/system.slice/evil.service/kubepods/burstable/pod1234/0123456789abcdef",
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

    /// A host root with the kubelet's log layout for one pod of `shop` with an app and an
    /// init container.
    fn host_with_pod(uid: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let pod_dir = root.path().join(POD_LOGS).join(format!("shop_api-7d9f_{uid}"));
        let links = root.path().join(CONTAINER_LOGS);
        std::fs::create_dir_all(&links).unwrap();
        for (container, id) in [("api", CID.to_owned()), ("migrate", "f".repeat(64))] {
            std::fs::create_dir_all(pod_dir.join(container)).unwrap();
            let log = pod_dir.join(container).join("0.log");
            std::fs::write(&log, "").unwrap();
            // The kubelet's links are absolute host paths: only the name and target are read.
            let target = format!("/var/log/pods/shop_api-7d9f_{uid}/{container}/0.log");
            std::os::unix::fs::symlink(target, links.join(format!("api-7d9f_shop_{container}-{id}.log"))).unwrap();
        }
        root
    }

    #[test]
    fn an_oom_kill_in_a_container_names_its_pod_namespace_and_container_from_the_kubelets_logs() {
        let memcg = format!("/kubepods/burstable/pod{UID}/{CID}");
        let oom =
            || Event::new(EventType::OomKill, jiff::Timestamp::UNIX_EPOCH, "killed").with("taskMemcg", memcg.as_str());
        // Off Kubernetes: the UID and container id the cgroup gives.
        let empty = tempfile::tempdir().unwrap();
        let index = PodIndex::from_host(&vigil_host::host::HostRoot::new(empty.path()));
        let mut e = oom();
        index.attribute(&mut e);
        assert_eq!((e.detail_str("podUid"), e.detail_str("containerId")), (Some(UID), Some(CID)));
        assert!(e.detail_str("podName").is_none());
        // On a node: named.
        let host = host_with_pod(UID);
        let index = PodIndex::from_host(&vigil_host::host::HostRoot::new(host.path()));
        assert_eq!(index.len(), 1);
        let mut e = oom();
        index.attribute(&mut e);
        assert_eq!(
            (e.detail_str("podNamespace"), e.detail_str("podName"), e.detail_str("containerName")),
            (Some("shop"), Some("api-7d9f"), Some("api"))
        );
        // A process of the init container, by its cgroup.
        let init = "/kubepods/burstable/pod".to_owned() + UID + "/" + &"f".repeat(64);
        let mut p = Event::new(EventType::ProcessStart, jiff::Timestamp::UNIX_EPOCH, "x").with("cgroup", init.as_str());
        index.attribute(&mut p);
        assert_eq!(p.detail_str("containerName"), Some("migrate"));
        // Not in a pod: nothing added.
        let mut other = Event::new(EventType::ProcessStart, jiff::Timestamp::UNIX_EPOCH, "x")
            .with("cgroup", "/system.slice/cron.service");
        index.attribute(&mut other);
        assert!(other.detail_str("podUid").is_none());
    }

    #[test]
    fn a_pod_started_after_the_first_read_is_named_by_its_first_event() {
        let host = tempfile::tempdir().unwrap();
        let index = PodIndex::from_host(&vigil_host::host::HostRoot::new(host.path()));
        assert!(index.is_empty());
        // The pod appears; the next read is due a second after the first.
        let later = host_with_pod(UID);
        std::fs::create_dir_all(host.path().join("var/log")).unwrap();
        for entry in [POD_LOGS, CONTAINER_LOGS] {
            std::fs::rename(later.path().join(entry), host.path().join(entry)).unwrap();
        }
        let memcg = format!("/kubepods/burstable/pod{UID}/{CID}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mut e =
                Event::new(EventType::OomKill, jiff::Timestamp::UNIX_EPOCH, "k").with("taskMemcg", memcg.as_str());
            index.attribute(&mut e);
            if e.detail_str("podName") == Some("api-7d9f") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never named: {e:?}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    #[test]
    fn log_names_are_read_exactly_and_anything_else_is_no_pod() {
        assert_eq!(
            parse_pod_dir(&format!("kube-system_coredns-5d78c9869d-abcde_{UID}")),
            Some(("kube-system", "coredns-5d78c9869d-abcde", UID))
        );
        for bad in ["", "a_b", "a_b_c_d", "A_b_1234", "ns_pod_xyz!", "_pod_1234", "ns__1234"] {
            assert_eq!(parse_pod_dir(bad), None, "{bad:?}");
        }
        let target = format!("/var/log/pods/shop_api-7d9f_{UID}/api-server/3.log");
        let file = format!("api-7d9f_shop_api-server-{CID}.log");
        let got = parse_container_link(&file, &target);
        assert_eq!(got, Some((UID, "shop", "api-7d9f", "api-server", CID.to_owned())));
        // The link and its target disagree, or the name is not the kubelet's: nothing.
        for (file, target) in [
            (format!("api-7d9f_other_api-server-{CID}.log"), target.clone()),
            (format!("api-7d9f_shop_sidecar-{CID}.log"), target.clone()),
            (format!("api-7d9f_shop_api-server-{CID}.txt"), target.clone()),
            ("api-7d9f_shop_api-server-xyz.log".to_owned(), target.clone()),
            (format!("api-7d9f_shop_api-server-{CID}.log"), "/etc/passwd".to_owned()),
        ] {
            assert_eq!(parse_container_link(&file, &target), None, "{file} -> {target}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_log_name_is_read_without_panic(file in "\\PC{0,80}", target in "(/[a-z0-9_.-]{0,30}){0,6}|\\PC{0,40}") {
            let _ = parse_container_link(&file, &target);
            let _ = parse_pod_dir(&file);
        }
    }
}
