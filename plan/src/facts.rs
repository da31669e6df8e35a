//! What the operator keeps of each object it watches across the fleet: the few facts the
//! planner, the janitor, AgentReporting and the nudges read, and nothing else.
//!
//! A Node as the API sends it is about 28 KB of JSON (images, managed fields, annotations);
//! the API's own types, even trimmed, hold about 6 KB of it in memory, most of it a map of
//! labels that every node of a pool repeats. [`NodeFacts`] keeps the labels as a slice of
//! pointers to interned strings (one copy of each key and each shared value for the whole
//! store) and a handful of fields: about 1.4 KB a node, 1 KB of it that slice
//! (`cargo bench -p vigil-operator --bench stores`). The same goes for agent pods (about
//! 390 bytes), heartbeat Leases (300) and AgentStatuses (420). `From<&T>` gives the facts
//! of one object without sharing (the plugin and tests); the operator passes one
//! [`Interner`] per store.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use vigil_crds::selector::LabelSet;
use vigil_crds::{AgentHealth, AgentStatus, labels};

use crate::NodeAttributes;

/// Strings shared between the objects of one store: the label keys every node repeats and
/// the values many share (zone, pool, instance type). Strings no object holds any more are
/// dropped by a sweep after as many look-ups as strings were live at the last sweep (at
/// least 1,024): the sweep costs no more than the look-ups it follows, and as reading an
/// object's facts looks up each of its strings, a deleted or relabelled object's strings go
/// within a few objects' worth of watch events, scale-downs included.
#[derive(Debug, Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
    /// Look-ups since the last sweep.
    looked_up: usize,
    /// Strings live at the last sweep.
    live: usize,
}

impl Interner {
    /// The shared copy of `s`.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        self.looked_up += 1;
        if self.looked_up > self.live.max(1024) {
            self.strings.retain(|s| Arc::strong_count(s) > 1);
            self.strings.shrink_to(self.strings.len() * 2);
            self.looked_up = 0;
            self.live = self.strings.len();
        }
        if let Some(have) = self.strings.get(s) {
            return have.clone();
        }
        let new: Arc<str> = Arc::from(s);
        self.strings.insert(new.clone());
        new
    }

    /// How many strings it holds.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

/// An object's labels, sorted by key: a slice of interned strings, shared by the object's
/// clones (cloning is a reference count).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(Arc<[(Arc<str>, Arc<str>)]>);

impl Labels {
    /// The labels of `map`, their strings shared through `strings`.
    pub fn interned(map: &BTreeMap<String, String>, strings: &mut Interner) -> Self {
        Self(map.iter().map(|(k, v)| (strings.intern(k), strings.intern(v))).collect())
    }

    /// The value of label `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &*self.0[i].1)
    }

    /// Whether label `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Every (key, value), in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| &**k)
    }

    /// How many labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets label `key` to `value` (a new slice: the labels shared with others stay as they
    /// were).
    pub fn insert(&mut self, key: &str, value: &str) {
        *self = self.iter().chain([(key, value)]).collect();
    }

    /// The labels as the API's map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }
}

impl LabelSet for Labels {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.iter()
    }
}

impl From<&BTreeMap<String, String>> for Labels {
    fn from(map: &BTreeMap<String, String>) -> Self {
        Self(map.iter().map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str()))).collect())
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self::from(&map)
    }
}

impl<const N: usize> From<[(String, String); N]> for Labels {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Labels {
    /// Later pairs win over earlier ones of the same key, as in a map.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut owned: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            match owned.binary_search_by(|(have, _)| (**have).cmp(k)) {
                Ok(i) => owned[i].1 = Arc::from(v),
                Err(i) => owned.insert(i, (Arc::from(k), Arc::from(v))),
            }
        }
        Self(owned.into())
    }
}

/// What the operator reads of a Node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeFacts {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// The `vigil.dev/admitted-at` annotation, when it parses.
    pub admitted_at: Option<Timestamp>,
    /// The Ready condition is True.
    pub ready: bool,
    /// When the Ready condition last changed.
    pub ready_changed_at: Option<Timestamp>,
    /// `status.nodeInfo.osImage`.
    pub os_image: Arc<str>,
    /// `status.nodeInfo.kernelVersion`.
    pub kernel: Arc<str>,
    /// `status.nodeInfo.architecture`.
    pub arch: Arc<str>,
    /// `status.nodeInfo.operatingSystem`.
    pub os: Arc<str>,
}

impl NodeFacts {
    /// The facts of `node`, strings shared through `strings`.
    pub fn of(node: &Node, strings: &mut Interner) -> Self {
        let empty = BTreeMap::new();
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        let info = node.status.as_ref().and_then(|s| s.node_info.as_ref());
        let mut info_field = |f: fn(&k8s_openapi::api::core::v1::NodeSystemInfo) -> &String| {
            strings.intern(info.map(f).map_or("", String::as_str))
        };
        let (os_image, kernel, arch, os) = (
            info_field(|i| &i.os_image),
            info_field(|i| &i.kernel_version),
            info_field(|i| &i.architecture),
            info_field(|i| &i.operating_system),
        );
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: Labels::interned(node.metadata.labels.as_ref().unwrap_or(&empty), strings),
            admitted_at: node
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::ADMITTED_AT))
                .and_then(|t| t.parse().ok()),
            ready: ready.is_some_and(|c| c.status == "True"),
            ready_changed_at: ready.and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0),
            os_image,
            kernel,
            arch,
            os,
        }
    }

    /// The node's attributes (node info and well-known labels).
    pub fn attributes(&self) -> NodeAttributes {
        let label = |k: &str| self.labels.get(k).unwrap_or_default().to_owned();
        NodeAttributes {
            os_image: self.os_image.to_string(),
            kernel: self.kernel.to_string(),
            arch: self.arch.to_string(),
            os: self.os.to_string(),
            instance_type: label("node.kubernetes.io/instance-type"),
            zone: label("topology.kubernetes.io/zone"),
        }
    }
}

impl From<&Node> for NodeFacts {
    fn from(node: &Node) -> Self {
        Self::of(node, &mut Interner::default())
    }
}

/// What the operator reads of an agent pod: where it runs, for which revision, and how its
/// agent container fares.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodFacts {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// The `vigil.dev/revision` label.
    pub revision: Option<Arc<str>>,
    /// `metadata.creationTimestamp`.
    pub created_at: Option<Timestamp>,
    /// The Ready condition is True.
    pub ready: bool,
    /// The agent container, when the kubelet reports it.
    pub agent: Option<ContainerFacts>,
}

/// What the gate reads of the agent container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ContainerFacts {
    /// `restartCount`.
    pub restarts: u32,
    /// When it started running (`state.running.startedAt`).
    pub started_at: Option<Timestamp>,
    /// Why it waits (`state.waiting.reason`).
    pub waiting_reason: Option<String>,
    /// Why it last ended (`lastState.terminated.reason`).
    pub last_termination_reason: Option<String>,
}

impl PodFacts {
    /// The facts of `pod`, strings shared through `strings`.
    pub fn of(pod: &Pod, strings: &mut Interner) -> Self {
        let st = pod.status.as_ref();
        let cs = st
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.iter().find(|c| c.name == crate::observe::AGENT_CONTAINER));
        Self {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            revision: pod.metadata.labels.as_ref().and_then(|l| l.get(labels::REVISION)).map(|r| strings.intern(r)),
            created_at: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
            ready: st
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True"),
            agent: cs.map(|c| ContainerFacts {
                restarts: u32::try_from(c.restart_count).unwrap_or(0),
                started_at: c
                    .state
                    .as_ref()
                    .and_then(|s| s.running.as_ref())
                    .and_then(|r| r.started_at.as_ref())
                    .map(|t| t.0),
                waiting_reason: c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.clone()),
                last_termination_reason: c
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t.reason.clone()),
            }),
        }
    }
}

impl From<&Pod> for PodFacts {
    fn from(pod: &Pod) -> Self {
        Self::of(pod, &mut Interner::default())
    }
}

/// What the operator reads of a heartbeat Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseFacts {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.holderIdentity`: the revision whose agent renews it.
    pub holder: Option<Arc<str>>,
    /// `spec.renewTime`.
    pub renewed_at: Option<Timestamp>,
    /// `spec.acquireTime`.
    pub acquired_at: Option<Timestamp>,
}

impl LeaseFacts {
    /// The facts of `lease`, strings shared through `strings`.
    pub fn of(lease: &Lease, strings: &mut Interner) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            name: lease.metadata.name.clone().unwrap_or_default(),
            namespace: lease.metadata.namespace.clone().unwrap_or_default(),
            holder: spec.and_then(|s| s.holder_identity.as_deref()).map(|h| strings.intern(h)),
            renewed_at: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            acquired_at: spec.and_then(|s| s.acquire_time.as_ref()).map(|t| t.0),
        }
    }
}

impl From<&Lease> for LeaseFacts {
    fn from(lease: &Lease) -> Self {
        Self::of(lease, &mut Interner::default())
    }
}

/// What the operator reads of an AgentStatus: the revision, health and report time the gate
/// reads, and the AgentReporting condition the operator itself writes.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusFacts {
    /// `metadata.name` (the node's).
    pub name: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The agent has written a status.
    pub reported: bool,
    /// `status.revision`.
    pub revision: Option<Arc<str>>,
    /// `status.health`.
    pub health: AgentHealth,
    /// `status.lastReportTime`.
    pub last_report_time: Option<Timestamp>,
    /// The AgentReporting condition, as the operator last wrote it.
    pub reporting: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

impl StatusFacts {
    /// The facts of `status`, strings shared through `strings`.
    pub fn of(status: &AgentStatus, strings: &mut Interner) -> Self {
        let st = status.status.as_ref();
        Self {
            name: status.metadata.name.clone().unwrap_or_default(),
            generation: status.metadata.generation,
            reported: st.is_some(),
            revision: st.and_then(|s| s.revision.as_deref()).map(|r| strings.intern(r)),
            health: st.map(|s| s.health).unwrap_or_default(),
            last_report_time: st.and_then(|s| s.last_report_time.as_ref()).map(|t| t.0),
            reporting: st
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == vigil_crds::agentstatus::REPORTING_CONDITION))
                .cloned(),
        }
    }
}

impl From<&AgentStatus> for StatusFacts {
    fn from(status: &AgentStatus) -> Self {
        Self::of(status, &mut Interner::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_found_by_key_and_shared_between_objects() {
        let mut strings = Interner::default();
        let map = |zone: &str, host: &str| -> BTreeMap<String, String> {
            [("topology.kubernetes.io/zone", zone), ("kubernetes.io/hostname", host), ("pool", "web")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        };
        let (a, b) =
            (Labels::interned(&map("eu-1a", "a"), &mut strings), Labels::interned(&map("eu-1a", "b"), &mut strings));
        assert_eq!(a.get("pool"), Some("web"));
        assert_eq!(a.get("kubernetes.io/hostname"), Some("a"));
        assert_eq!(a.get("absent"), None);
        assert_eq!(a.to_map(), map("eu-1a", "a"));
        assert_eq!(a.keys().collect::<Vec<_>>(), ["kubernetes.io/hostname", "pool", "topology.kubernetes.io/zone"]);
        // Three keys and the values "eu-1a", "web", "a", "b": seven strings for two nodes.
        assert_eq!(strings.len(), 7);
        assert!(Arc::ptr_eq(&a.0[1].1, &b.0[1].1), "one copy of a shared value");
        assert_eq!(Labels::from(map("eu-1a", "a")), a, "interned or not, the same labels");
    }

    #[test]
    fn a_selector_reads_compact_labels_as_it_reads_the_apis_map() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
        let map: BTreeMap<String, String> =
            [("pool".to_owned(), "web".to_owned()), ("tier".to_owned(), "1".to_owned())].into();
        let compact = Labels::from(&map);
        let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        };
        for sel in [
            LabelSelector { match_labels: Some([("pool".to_owned(), "web".to_owned())].into()), ..Default::default() },
            LabelSelector { match_labels: Some([("pool".to_owned(), "db".to_owned())].into()), ..Default::default() },
            LabelSelector { match_expressions: Some(vec![req("tier", "In", &["1", "2"])]), ..Default::default() },
            LabelSelector { match_expressions: Some(vec![req("tier", "NotIn", &["1"])]), ..Default::default() },
            LabelSelector { match_expressions: Some(vec![req("zone", "DoesNotExist", &[])]), ..Default::default() },
            LabelSelector { match_expressions: Some(vec![req("zone", "Exists", &[])]), ..Default::default() },
        ] {
            assert_eq!(
                vigil_crds::selector::matches(&sel, &compact),
                vigil_crds::selector::matches(&sel, &map),
                "{sel:?}"
            );
        }
    }

    #[test]
    fn later_pairs_win_and_order_does_not_matter() {
        let l: Labels = [("b", "1"), ("a", "2"), ("b", "3")].into_iter().collect();
        assert_eq!(l.iter().collect::<Vec<_>>(), [("a", "2"), ("b", "3")]);
    }

    #[test]
    fn the_interner_forgets_what_no_object_holds_and_stays_bounded() {
        let mut strings = Interner::default();
        let mut live = Vec::new();
        for round in 0..20_000usize {
            // One node replaced every round (a new hostname), a thousand kept.
            let mut l = BTreeMap::new();
            l.insert("kubernetes.io/hostname".to_owned(), format!("node-{round}"));
            l.insert("pool".to_owned(), "web".to_owned());
            live.push(Labels::interned(&l, &mut strings));
            if live.len() > 1000 {
                live.remove(0);
            }
            assert!(strings.len() <= 2 * 1003 + 1024, "{} strings for 1,000 live nodes", strings.len());
        }
    }

    #[test]
    fn a_scale_down_lets_the_deleted_nodes_strings_go() {
        let mut strings = Interner::default();
        let map = |i: usize| -> BTreeMap<String, String> {
            [("kubernetes.io/hostname".to_owned(), format!("node-{i}")), ("pool".to_owned(), "web".to_owned())].into()
        };
        let mut live: Vec<Labels> = (0..5000).map(|i| Labels::interned(&map(i), &mut strings)).collect();
        assert!(strings.len() >= 5000);
        // 4,950 nodes deleted: each Delete event's object is read (its facts) and dropped.
        for i in (50..5000).rev() {
            drop(Labels::interned(&map(i), &mut strings));
            live.pop();
        }
        assert_eq!(live.len(), 50);
        assert!(strings.len() <= 2 * 53 + 1024, "{} strings left for 50 live nodes", strings.len());
    }
}
