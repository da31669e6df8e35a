//! Plans → the writes that carry them out: pure builders of the bodies, every write of a
//! reconcile, of the janitor, of AgentReporting and of the AlertPolicy publisher as a value
//! ([`Effect`]), and [`apply`] and
//! [`apply_each`], which send them through [`Writer`] with the operator's field manager
//! (Events excepted: they are created once, never updated) and one error type. [`apply`]
//! stops at the first failed write (a reconcile's effects are ordered: status first, then
//! node labels, then DaemonSets; the next reconcile plans again from what landed);
//! [`apply_each`] sends effects that stand alone. The controller decides its effects and
//! their order as a pure function (`controller::effects`).
//!
//! Not yet an effect: the config copy a reconcile takes before it plans
//! ([`Writer::create_snapshot`], whose name the plan records).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};
use vigil_crds::agent::env;
use vigil_crds::labels;
use vigil_crds::rollout::{AgentRolloutStatus, RevisionRecord};

/// The field manager of every write of the operator (the value of its `managed-by` label).
pub use vigil_crds::labels::MANAGER as FIELD_MANAGER;

/// How many node patches a reconcile has in flight at once: enough to move a wave of
/// thousands of nodes in seconds, few enough not to crowd the API server's other clients
/// (its default max-mutating-requests-inflight is 200).
pub const NODE_WRITES_AT_ONCE: usize = 16;

/// One write of the operator, as a value that names everything it writes. The controller
/// (`controller::effects`), the janitor (`janitor::Cleanup::effects`) and AgentReporting
/// (`reporting::effects`) decide them without I/O; [`apply`] and [`apply_each`] send them.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// A rollout's status (the intent), by server-side apply of the status subresource.
    Status {
        /// The rollout's namespace.
        namespace: String,
        /// The rollout's name.
        name: String,
        /// The whole status.
        status: Box<AgentRolloutStatus>,
    },
    /// An Event; not written when the operator has no Event publisher, and a failed one does
    /// not fail the others (the status says the same).
    Event {
        /// The object it is about (it names its namespace).
        regarding: Box<k8s_openapi::api::core::v1::ObjectReference>,
        /// Normal or Warning.
        kind: crate::events::Kind,
        /// The Event's reason: the decision kind, or why a rollout is refused.
        reason: &'static str,
        /// The Event's action.
        action: &'static str,
        /// The Event's note: the decision in words.
        note: String,
    },
    /// Merge patches of nodes, [`NODE_WRITES_AT_ONCE`] at a time: moves, nodes leaving a
    /// rollout, handovers done, labels of a deleted rollout cleared.
    Nodes(Vec<(String, Value)>),
    /// A revision's DaemonSet (it names its namespace), created whole.
    CreateDaemonSet(Box<DaemonSet>),
    /// An existing DaemonSet's labels, annotations and owner brought up to date.
    DaemonSetMetadata(Box<DaemonSet>),
    /// A DaemonSet no node runs any more.
    DeleteDaemonSet {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A config copy no revision needs any more.
    DeleteSnapshot {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// An object the AlertPolicy publisher owns whole (the policies ConfigMap, the mirror
    /// Secret), by server-side apply of `body`.
    Publish {
        /// `ConfigMap` or `Secret`.
        kind: Published,
        /// Its namespace (the operator's).
        namespace: String,
        /// Its name.
        name: String,
        /// The whole object.
        body: Box<Value>,
    },
    /// An AlertPolicy's status, by server-side apply of the status subresource.
    PolicyStatus {
        /// The policy's namespace.
        namespace: String,
        /// The policy's name.
        name: String,
        /// The whole status.
        status: Box<vigil_crds::AlertPolicyStatus>,
    },
    /// A node's AgentStatus condition `AgentReporting`, applied alone.
    AgentReporting {
        /// The node (the AgentStatus's name).
        node: String,
        /// The condition.
        condition: Box<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    },
}

impl Effect {
    /// The kind, for logs and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            Effect::Status { .. } => "Status",
            Effect::Event { .. } => "Event",
            Effect::Nodes(_) => "Nodes",
            Effect::CreateDaemonSet(_) => "CreateDaemonSet",
            Effect::DaemonSetMetadata(_) => "DaemonSetMetadata",
            Effect::DeleteDaemonSet { .. } => "DeleteDaemonSet",
            Effect::DeleteSnapshot { .. } => "DeleteSnapshot",
            Effect::Publish { .. } => "Publish",
            Effect::PolicyStatus { .. } => "PolicyStatus",
            Effect::AgentReporting { .. } => "AgentReporting",
        }
    }
}

/// A write that failed, naming what it wrote.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A rollout's status.
    #[error("writing the rollout status")]
    Status(#[source] kube::Error),
    /// A node's labels.
    #[error("patching the labels of node {0}")]
    Node(String, #[source] kube::Error),
    /// A DaemonSet, by name, and what was being done to it.
    #[error("{1} DaemonSet {0}")]
    DaemonSet(String, DaemonSetWrite, #[source] kube::Error),
    /// A config copy, by name.
    #[error("deleting config copy {0}")]
    Snapshot(String, #[source] kube::Error),
    /// A node's AgentReporting condition.
    #[error("writing the AgentReporting condition of node {0}")]
    AgentStatus(String, #[source] kube::Error),
    /// An object of the AlertPolicy publisher (`ConfigMap ns/name`, `AlertPolicy ns/name`).
    #[error("writing {0}")]
    Policy(String, #[source] kube::Error),
}

impl WriteError {
    /// The API's error underneath.
    pub fn into_cause(self) -> kube::Error {
        match self {
            WriteError::Status(e)
            | WriteError::Node(_, e)
            | WriteError::DaemonSet(_, _, e)
            | WriteError::Snapshot(_, e)
            | WriteError::AgentStatus(_, e)
            | WriteError::Policy(_, e) => e,
        }
    }
}

/// What a failed DaemonSet write was doing, for its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DaemonSetWrite {
    /// Creating it whole.
    Create,
    /// Bringing its metadata up to date.
    Metadata,
    /// Deleting it.
    Delete,
}

impl std::fmt::Display for DaemonSetWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DaemonSetWrite::Create => "creating",
            DaemonSetWrite::Metadata => "updating the metadata of",
            DaemonSetWrite::Delete => "deleting",
        })
    }
}

/// The kinds of object the AlertPolicy publisher writes whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// The policies the agents mount.
    ConfigMap,
    /// The Secret keys the policies name, mirrored.
    Secret,
}

/// Sends `effects` in order and stops at the first write that fails (Events excepted): the
/// order is the one that keeps a crash harmless (the intent before the nodes, the nodes
/// before the DaemonSets), so nothing after a failed write may go. What landed stays, and
/// the next reconcile plans again from it. Events are stamped `now`.
pub async fn apply(
    writer: &Writer,
    events: Option<&crate::events::Publisher>,
    effects: Vec<Effect>,
    now: jiff::Timestamp,
) -> Result<(), WriteError> {
    use tracing::Instrument;
    let span = tracing::info_span!("apply", effects = effects.len());
    async {
        for effect in effects {
            send(writer, events, effect, now).await?;
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Sends every one of `effects`, which stand alone (the janitor's deletions, one condition
/// per node): a failed write does not hold back the others. Returns the failures; the caller
/// looks again later.
pub async fn apply_each(
    writer: &Writer,
    events: Option<&crate::events::Publisher>,
    effects: Vec<Effect>,
    now: jiff::Timestamp,
) -> Vec<WriteError> {
    use tracing::Instrument;
    let span = tracing::info_span!("apply_each", effects = effects.len());
    async {
        let mut failed = Vec::new();
        for effect in effects {
            if let Err(e) = send(writer, events, effect, now).await {
                failed.push(e);
            }
        }
        failed
    }
    .instrument(span)
    .await
}

/// The one place an effect becomes a request.
async fn send(
    writer: &Writer,
    events: Option<&crate::events::Publisher>,
    effect: Effect,
    now: jiff::Timestamp,
) -> Result<(), WriteError> {
    match effect {
        Effect::Status { namespace, name, status } => {
            writer.status(&namespace, &name, &status).await.map_err(WriteError::Status)
        }
        Effect::Event { regarding, kind, reason, action, note } => {
            if let Some(events) = events
                && let Err(e) = events.publish(&regarding, kind, reason, action, &note, now).await
            {
                tracing::debug!(object = ?regarding.name, %reason, error = %e, "event not written");
            }
            Ok(())
        }
        Effect::Nodes(patches) => writer.nodes(patches).await.map_err(|(n, e)| WriteError::Node(n, e)),
        Effect::CreateDaemonSet(ds) => writer
            .create_daemonset(&ds)
            .await
            .map_err(|e| WriteError::DaemonSet(name_of(&ds), DaemonSetWrite::Create, e)),
        // Gone since the store saw it (deleted by a person, or by a reconcile that judged the
        // revision dead before a node took it again): created whole, as the next reconcile
        // would.
        Effect::DaemonSetMetadata(ds) => match writer.daemonset_metadata(&ds).await {
            Err(e) if gone(&e) => writer
                .create_daemonset(&ds)
                .await
                .map_err(|e| WriteError::DaemonSet(name_of(&ds), DaemonSetWrite::Create, e)),
            r => r.map_err(|e| WriteError::DaemonSet(name_of(&ds), DaemonSetWrite::Metadata, e)),
        },
        Effect::DeleteDaemonSet { namespace, name } => {
            let to = DaemonSetWrite::Delete;
            writer.delete_daemonset(&namespace, &name).await.map_err(|e| WriteError::DaemonSet(name, to, e))
        }
        Effect::DeleteSnapshot { namespace, name } => {
            writer.delete_snapshot(&namespace, &name).await.map_err(|e| WriteError::Snapshot(name, e))
        }
        Effect::Publish { kind, namespace, name, body } => writer
            .publish(kind, &namespace, &name, &body)
            .await
            .map_err(|e| WriteError::Policy(format!("{kind:?} {namespace}/{name}"), e)),
        Effect::PolicyStatus { namespace, name, status } => writer
            .policy_status(&namespace, &name, &status)
            .await
            .map_err(|e| WriteError::Policy(format!("AlertPolicy {namespace}/{name}"), e)),
        Effect::AgentReporting { node, condition } => {
            writer.agent_reporting(&node, &condition).await.map_err(|e| WriteError::AgentStatus(node, e))
        }
    }
}

/// The API server's own answer that the object is not there: a 404 whose `Status` says
/// `NotFound`. A 404 from anything else (a proxy, a path no API serves) is an error.
pub fn gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound")
}

/// A write's result, done also when the API server says the object is already gone.
fn done_if_gone<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(e) if !gone(&e) => Err(e),
        _ => Ok(()),
    }
}

fn name_of(ds: &DaemonSet) -> String {
    ds.metadata.name.clone().unwrap_or_default()
}

/// Sends a reconcile's writes. Every one carries [`FIELD_MANAGER`]; whole objects go by
/// server-side apply, changes of a few fields by merge patch.
#[derive(Clone)]
pub struct Writer {
    client: kube::Client,
}

impl Writer {
    /// A writer through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    fn merge() -> kube::api::PatchParams {
        kube::api::PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..kube::api::PatchParams::default() }
    }

    /// The rollout's status (server-side apply of the status subresource).
    pub async fn status(&self, namespace: &str, name: &str, status: &AgentRolloutStatus) -> Result<(), kube::Error> {
        let api: kube::Api<vigil_crds::AgentRollout> = kube::Api::namespaced(self.client.clone(), namespace);
        let body = status_apply(name, namespace, status);
        api.patch_status(name, &kube::api::PatchParams::apply(FIELD_MANAGER).force(), &kube::api::Patch::Apply(&body))
            .await
            .map(|_| ())
    }

    /// A merge patch of a node's labels and annotations ([`vigil_plan::node_labels::node_label_patch`], or the end of
    /// a handover).
    /// A node already gone is done: the reconcile decided from a node store that had not yet
    /// seen the delete (a scale-down), and the next one no longer sees the node.
    pub async fn node(&self, node: &str, patch: &Value) -> Result<(), kube::Error> {
        let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(self.client.clone());
        done_if_gone(api.patch(node, &Self::merge(), &kube::api::Patch::Merge(patch)).await)
    }

    /// Patches many nodes, [`NODE_WRITES_AT_ONCE`] at a time: a wave of a thousand nodes is
    /// not a thousand round trips in a row. On failure, the first error and its node; the
    /// other patches are applied (each stands alone, and the next reconcile plans again).
    pub async fn nodes(&self, patches: Vec<(String, Value)>) -> Result<(), (String, kube::Error)> {
        use futures::StreamExt;
        let results: Vec<Result<(), (String, kube::Error)>> = futures::stream::iter(patches)
            .map(|(n, p)| async move { self.node(&n, &p).await.map_err(|e| (n, e)) })
            .buffer_unordered(NODE_WRITES_AT_ONCE)
            .collect()
            .await;
        results.into_iter().find_map(Result::err).map_or(Ok(()), Err)
    }

    /// Creates a config copy ([`config_snapshot`]); `Ok(false)` when it exists already.
    pub async fn create_snapshot(&self, cm: &k8s_openapi::api::core::v1::ConfigMap) -> Result<bool, kube::Error> {
        let ns = cm.metadata.namespace.as_deref().unwrap_or_default();
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(self.client.clone(), ns);
        let params = kube::api::PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match api.create(&params, cm).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes a config copy (gone already is fine).
    pub async fn delete_snapshot(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(self.client.clone(), namespace);
        done_if_gone(api.delete(name, &kube::api::DeleteParams::default()).await)
    }

    /// Creates a revision's DaemonSet whole (server-side apply of [`daemonset`]'s object).
    pub async fn create_daemonset(&self, ds: &DaemonSet) -> Result<(), kube::Error> {
        let (ns, name) =
            (ds.metadata.namespace.as_deref().unwrap_or_default(), ds.metadata.name.as_deref().unwrap_or_default());
        let api: kube::Api<DaemonSet> = kube::Api::namespaced(self.client.clone(), ns);
        api.patch(name, &kube::api::PatchParams::apply(FIELD_MANAGER).force(), &kube::api::Patch::Apply(ds))
            .await
            .map(|_| ())
    }

    /// Brings an existing DaemonSet's metadata (labels, annotations, owner) to `ds`'s, by
    /// merge patch: its pod template is never rewritten.
    pub async fn daemonset_metadata(&self, ds: &DaemonSet) -> Result<(), kube::Error> {
        let (ns, name) =
            (ds.metadata.namespace.as_deref().unwrap_or_default(), ds.metadata.name.as_deref().unwrap_or_default());
        let api: kube::Api<DaemonSet> = kube::Api::namespaced(self.client.clone(), ns);
        let body = json!({"metadata": {
            "labels": ds.metadata.labels,
            "annotations": ds.metadata.annotations,
            "ownerReferences": ds.metadata.owner_references,
        }});
        api.patch(name, &Self::merge(), &kube::api::Patch::Merge(&body)).await.map(|_| ())
    }

    /// One node's AgentStatus condition: server-side apply of that one entry (the agent owns
    /// the rest of the status).
    pub async fn agent_reporting(
        &self,
        node: &str,
        condition: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition,
    ) -> Result<(), kube::Error> {
        let body = json!({
            "apiVersion": vigil_crds::API_VERSION,
            "kind": "AgentStatus",
            "metadata": {"name": node},
            "status": {"conditions": [condition]},
        });
        let api: kube::Api<vigil_crds::AgentStatus> = kube::Api::all(self.client.clone());
        api.patch_status(node, &kube::api::PatchParams::apply(FIELD_MANAGER).force(), &kube::api::Patch::Apply(&body))
            .await
            .map(|_| ())
    }

    /// An object the AlertPolicy publisher owns whole, by server-side apply.
    pub async fn publish(&self, kind: Published, namespace: &str, name: &str, body: &Value) -> Result<(), kube::Error> {
        let pp = kube::api::PatchParams::apply(FIELD_MANAGER).force();
        let patch = kube::api::Patch::Apply(body);
        match kind {
            Published::ConfigMap => {
                let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                    kube::Api::namespaced(self.client.clone(), namespace);
                api.patch(name, &pp, &patch).await.map(|_| ())
            }
            Published::Secret => {
                let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                    kube::Api::namespaced(self.client.clone(), namespace);
                api.patch(name, &pp, &patch).await.map(|_| ())
            }
        }
    }

    /// An AlertPolicy's status (server-side apply of the status subresource).
    pub async fn policy_status(
        &self,
        namespace: &str,
        name: &str,
        status: &vigil_crds::AlertPolicyStatus,
    ) -> Result<(), kube::Error> {
        let body = json!({"apiVersion": vigil_crds::API_VERSION, "kind": "AlertPolicy", "status": status});
        let api: kube::Api<vigil_crds::AlertPolicy> = kube::Api::namespaced(self.client.clone(), namespace);
        api.patch_status(name, &kube::api::PatchParams::apply(FIELD_MANAGER).force(), &kube::api::Patch::Apply(&body))
            .await
            .map(|_| ())
    }

    /// Deletes a DaemonSet; one already gone is done (the reconcile after the one that
    /// deleted it may run before the DaemonSet store has seen the delete, and decide it again).
    pub async fn delete_daemonset(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let api: kube::Api<DaemonSet> = kube::Api::namespaced(self.client.clone(), namespace);
        done_if_gone(api.delete(name, &kube::api::DeleteParams::default()).await)
    }
}

/// The server-side-apply body of the rollout's status.
pub fn status_apply(name: &str, namespace: &str, status: &AgentRolloutStatus) -> Value {
    json!({
        "apiVersion": vigil_crds::API_VERSION,
        "kind": "AgentRollout",
        "metadata": {"name": name, "namespace": namespace},
        "status": status,
    })
}

/// Where the agent pods find what they need.
#[derive(Clone, Debug)]
pub struct AgentTemplate {
    /// Namespace of the DaemonSets (the rollout's).
    pub namespace: String,
    /// Service account of the agent pods.
    pub service_account: String,
    /// Mount point of the host's `/` in the pod.
    pub host_root: String,
    /// Where the pod's config file is mounted.
    pub config_dir: String,
    /// Give the agent what its security event sources need: root with only the capabilities
    /// they use ([`AGENT_CAPABILITIES`]), the host's PID and network namespaces (the process
    /// connector), and a state directory on the host for the file baseline, log positions and
    /// the alert spool.
    /// Off: an unprivileged agent with metrics only (`vigil-operator run --agent-unprivileged`).
    pub security_events: bool,
    /// The agent's state directory on the host.
    pub state_dir: String,
    /// The pods' readiness probe (`vigil-agent ready`: Ready only while the pod's agent is
    /// the node's working one). Off for agent images built before that command existed,
    /// whose pods would otherwise never be Ready (`vigil-operator run
    /// --agent-no-readiness-probe`).
    pub readiness_probe: bool,
}

/// The version of the agent pod template [`daemonset`] builds. Bump it with every change of
/// what the pods are given (the test `the_pod_template_is_versioned` fails until it is):
/// the version is part of every revision's name, so a changed template reaches the fleet as a
/// new revision, in waves behind the health gate, never by rewriting running DaemonSets.
pub const POD_TEMPLATE_VERSION: u32 = 5;

impl AgentTemplate {
    /// The id of the pod template this operator writes: its version and every setting that
    /// shapes the pods (the namespace aside: a rollout acts in one). Part of revision names.
    pub fn id(&self) -> String {
        format!(
            "pod-template/{POD_TEMPLATE_VERSION}/{}/{}/{}/{}/{}/{}",
            self.service_account,
            self.host_root,
            self.config_dir,
            self.security_events,
            self.state_dir,
            self.readiness_probe
        )
    }
}

impl Default for AgentTemplate {
    fn default() -> Self {
        Self {
            namespace: vigil_crds::DEFAULT_NAMESPACE.into(),
            service_account: "vigil-agent".into(),
            host_root: "/host".into(),
            config_dir: "/etc/vigil".into(),
            security_events: true,
            state_dir: vigil_crds::agent::STATE_DIR.into(),
            readiness_probe: true,
        }
    }
}

/// The capabilities of an agent with its security event sources, each for one source:
/// DAC_READ_SEARCH reads the auth logs and root-only files whatever their mode, NET_ADMIN joins
/// the process connector, SYSLOG reads the kernel log with syslog(2) (no device needed), and
/// SYS_PTRACE names other users' processes (their /proc/PID/exe and fd links).
pub const AGENT_CAPABILITIES: [&str; 4] = ["DAC_READ_SEARCH", "NET_ADMIN", "SYSLOG", "SYS_PTRACE"];

/// The name of a revision's DaemonSet.
pub fn daemonset_name(revision: &str) -> String {
    format!("vigil-agent-{revision}")
}

/// The DaemonSet of one revision, built from the API's own types: its pods run only on the
/// nodes that run the revision (its run label), with a read-only root filesystem, the host's
/// `/` mounted read-only, and either root with [`AGENT_CAPABILITIES`] and the host's PID and
/// network namespaces or (`security_events` off) an unprivileged user; the config comes from
/// the revision's copy (or ConfigMap key), and its SHA-256 rides along so the agent checks it
/// again when it loads the file. `None` when the record does not say where the config is.
///
/// `rollout_key` (`namespace/name`) is written in the [`labels::OWNER_ROLLOUT`] annotation
/// whatever the deletion policy; `owner` is the rollout's owner reference under the `Delete`
/// policy only, so that under `Orphan` deleting the rollout leaves the agents running.
pub fn daemonset(
    rec: &RevisionRecord,
    owner: Option<OwnerReference>,
    rollout_key: &str,
    trace_id: Option<&str>,
    t: &AgentTemplate,
) -> Option<DaemonSet> {
    use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
    use k8s_openapi::api::core::v1::{
        Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
        HostPathVolumeSource, KeyToPath, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
        ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Toleration, Volume, VolumeMount,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    // The operator's immutable copy when the revision has one; else (a revision recorded
    // before snapshots existed) the ConfigMap the rollout named.
    let (config_map, config_key) = match &rec.config_snapshot {
        Some(snapshot) => (snapshot.as_str(), vigil_crds::agent::SNAPSHOT_KEY),
        None => (rec.config_map.as_deref()?, rec.config_key.as_deref()?),
    };
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    let selector = map(&[vigil_crds::agent::NAME_LABEL, (labels::REVISION, rec.revision.as_str())]);
    let mut pod_annotations = map(&[(labels::CONFIG_SHA256, rec.config_sha256.as_str())]);
    if let Some(tid) = trace_id {
        pod_annotations.insert(labels::ROLLOUT_TRACE_ID.to_owned(), tid.to_owned());
    }
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    };
    let seccomp = Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() });
    let (pod_security, add, state_volume) = if t.security_events {
        (
            // Root, because the capabilities below only reach the effective set of uid 0.
            PodSecurityContext {
                run_as_user: Some(0),
                run_as_group: Some(0),
                run_as_non_root: Some(false),
                seccomp_profile: seccomp,
                ..PodSecurityContext::default()
            },
            Some(AGENT_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
            Volume {
                name: "state".into(),
                host_path: Some(HostPathVolumeSource {
                    path: t.state_dir.clone(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                ..Volume::default()
            },
        )
    } else {
        (
            PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                fs_group: Some(65532),
                seccomp_profile: seccomp,
                ..PodSecurityContext::default()
            },
            None,
            // A non-root agent cannot write a root-owned host directory: its state (the alert
            // spool) lives in an emptyDir, which survives container restarts but not the pod.
            Volume {
                name: "state".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("256Mi".into())),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            },
        )
    };
    let mounts = vec![
        VolumeMount { mount_propagation: Some("HostToContainer".into()), ..mount("host-root", &t.host_root, true) },
        mount("config", &t.config_dir, true),
        mount("state", &t.state_dir, false),
        // The published alert policies and their Secret keys (optional: present once the
        // operator published any); updates reach running agents without a restart.
        mount("alert-policies", vigil_crds::policy::POLICIES_DIR, true),
        mount("alert-secrets", vigil_crds::policy::SECRETS_DIR, true),
        // The ready file (the readiness probe's): in memory, the pod's own.
        mount("run", vigil_crds::agent::RUN_DIR, false),
    ];
    let volumes = vec![
        Volume {
            name: "host-root".into(),
            host_path: Some(HostPathVolumeSource { path: "/".into(), type_: None }),
            ..Volume::default()
        },
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.into(),
                items: Some(vec![KeyToPath { key: config_key.into(), path: config_key.into(), mode: None }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "alert-policies".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: vigil_crds::policy::POLICIES_CONFIGMAP.into(),
                optional: Some(true),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "alert-secrets".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(vigil_crds::policy::SECRETS_SECRET.into()),
                optional: Some(true),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        state_volume,
        Volume {
            name: "run".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity("1Mi".into())),
            }),
            ..Volume::default()
        },
    ];
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector { field_path: path.into(), api_version: None }),
        ..EnvVarSource::default()
    };
    let env_var = |name: &str, value: &str| EnvVar { name: name.into(), value: Some(value.into()), value_from: None };
    let container = Container {
        name: vigil_crds::agent::CONTAINER.into(),
        image: Some(rec.image.clone()),
        args: Some(vec![
            "run".into(),
            "--config".into(),
            format!("{}/{config_key}", t.config_dir),
            "--host-root".into(),
            t.host_root.clone(),
        ]),
        env: Some(
            [
                EnvVar { name: env::NODE_NAME.into(), value: None, value_from: Some(field("spec.nodeName")) },
                EnvVar { name: env::POD_NAMESPACE.into(), value: None, value_from: Some(field("metadata.namespace")) },
                env_var(env::CONFIG_SHA256, &rec.config_sha256),
                env_var(env::REVISION, &rec.revision),
                env_var(env::READY_FILE, vigil_crds::agent::READY_FILE),
            ]
            .into_iter()
            // The agent reads no pod from the API: its rollout trace comes in its environment.
            .chain(trace_id.map(|tid| env_var(env::ROLLOUT_TRACE_ID, tid)))
            .collect(),
        ),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add }),
            ..SecurityContext::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(
                [("cpu", "10m"), ("memory", "24Mi")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), Quantity(v.into())))
                    .collect(),
            ),
            limits: Some([("memory".to_owned(), Quantity("64Mi".into()))].into()),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(mounts),
        // Ready only while this pod's agent is the node's working one (the lock held, the
        // sources started): during a handover the agent standing by is not. The pods share
        // the host's network and the metrics port, so an HTTP probe could not tell them apart.
        readiness_probe: t.readiness_probe.then(|| Probe {
            exec: Some(ExecAction { command: Some(vec![vigil_crds::agent::BINARY.into(), "ready".into()]) }),
            // Ready at the first look after it takes over; not Ready after three failed looks
            // (6 s), so one slow exec on a busy node is no failed gate.
            period_seconds: Some(2),
            timeout_seconds: Some(5),
            success_threshold: Some(1),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        ..Container::default()
    };
    let pod = PodSpec {
        // Its nodes: those that run the revision's agent (beside another one's during a
        // handover, docs/adr/0005-zero-gap-handover.md).
        node_selector: Some(map(&[(labels::run_label(&rec.revision).as_str(), labels::RUN_VALUE)])),
        service_account_name: Some(t.service_account.clone()),
        // The process connector answers only a socket in the host's network namespace held by
        // a process in the host's PID namespace (docs/adr/0003-event-sources-in-the-pod.md).
        host_pid: Some(t.security_events),
        host_network: Some(t.security_events),
        dns_policy: Some(if t.security_events { "ClusterFirstWithHostNet" } else { "ClusterFirst" }.into()),
        automount_service_account_token: Some(true),
        tolerations: Some(vec![Toleration { operator: Some("Exists".into()), ..Toleration::default() }]),
        priority_class_name: Some("system-node-critical".into()),
        security_context: Some(pod_security),
        containers: vec![container],
        volumes: Some(volumes),
        ..PodSpec::default()
    };
    let mut ds = DaemonSet {
        metadata: ObjectMeta {
            name: Some(daemonset_name(&rec.revision)),
            namespace: Some(t.namespace.clone()),
            labels: Some(map(&[
                vigil_crds::agent::NAME_LABEL,
                (labels::REVISION, rec.revision.as_str()),
                (labels::MANAGED_BY, labels::MANAGER),
            ])),
            annotations: Some(map(&[(labels::OWNER_ROLLOUT, rollout_key)])),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector { match_labels: Some(selector.clone()), match_expressions: None },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    max_surge: None,
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DaemonSetSpec::default()
        }),
        status: None,
    };
    // What the operator wants of this DaemonSet, hashed: it is written again only when this
    // changes (the hash covers labels, the owning rollout, owner references and spec; the
    // hash's own annotation is not in it).
    let digest = {
        use sha2::{Digest, Sha256};
        let body = serde_json::to_vec(&(
            &ds.metadata.labels,
            &ds.metadata.annotations,
            &ds.metadata.owner_references,
            &ds.spec,
        ))
        .ok()?;
        Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    ds.metadata.annotations.get_or_insert_default().insert(labels::DESIRED_SHA256.to_owned(), digest);
    Some(ds)
}

/// The operator's immutable copy of a revision's config (`text`, whose SHA-256 is `sha256`),
/// in the agents' namespace: created once, before any node is admitted to the revision, and
/// mounted by the revision's DaemonSet. Owned by the rollout under its `Delete` policy only,
/// like the DaemonSets.
pub fn config_snapshot(
    revision: &str,
    sha256: &str,
    text: &str,
    rollout_key: &str,
    owner: Option<OwnerReference>,
    namespace: &str,
) -> k8s_openapi::api::core::v1::ConfigMap {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(vigil_crds::agent::config_snapshot_name(revision)),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (labels::MANAGED_BY.to_owned(), labels::MANAGER.to_owned()),
                (labels::COMPONENT.to_owned(), vigil_crds::agent::SNAPSHOT_COMPONENT.to_owned()),
                (labels::REVISION.to_owned(), revision.to_owned()),
            ])),
            annotations: Some(BTreeMap::from([
                (labels::OWNER_ROLLOUT.to_owned(), rollout_key.to_owned()),
                (labels::CONFIG_SHA256.to_owned(), sha256.to_owned()),
            ])),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        immutable: Some(true),
        data: Some(BTreeMap::from([(vigil_crds::agent::SNAPSHOT_KEY.to_owned(), text.to_owned())])),
        ..ConfigMap::default()
    }
}

/// Revisions that still need a DaemonSet: any a node is labelled for, plus the target and
/// the stable revision.
pub fn live_revisions<'a>(
    status: &'a AgentRolloutStatus,
    node_revisions: impl IntoIterator<Item = &'a str>,
) -> std::collections::BTreeSet<&'a str> {
    let mut live: std::collections::BTreeSet<&str> = node_revisions.into_iter().collect();
    live.extend(status.target_revision.as_deref());
    live.extend(status.stable_revision.as_deref());
    live
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_crds::rollout::RevisionOutcome;

    #[test]
    fn a_revision_daemonset_runs_only_on_its_nodes_unprivileged_and_read_only() {
        let rec = RevisionRecord {
            revision: "r-2b878e0c19".into(),
            image: format!("ghcr.io/vigil-dev/vigil-agent:1.10.0@sha256:{}", "a".repeat(64)),
            config_sha256: "b".repeat(64),
            config_map: Some("cfg".into()),
            config_key: Some("agent.yaml".into()),
            config_snapshot: None,
            version: Some("1.10.0".into()),
            admitted_at: None,
            outcome: RevisionOutcome::InProgress,
            reason: None,
        };
        let owner = OwnerReference {
            api_version: "vigil.dev/v1alpha1".into(),
            kind: "AgentRollout".into(),
            name: "r".into(),
            uid: "u".into(),
            controller: Some(true),
            ..Default::default()
        };
        let ds = daemonset(
            &rec,
            Some(owner.clone()),
            "vigil-system/fleet",
            Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            &AgentTemplate::default(),
        )
        .unwrap();
        assert_eq!(ds.metadata.annotations.as_ref().unwrap()[labels::OWNER_ROLLOUT], "vigil-system/fleet");
        assert_eq!(ds.metadata.owner_references.as_deref(), Some(&[owner.clone()][..]), "Delete: owned by the rollout");
        let orphan = daemonset(&rec, None, "vigil-system/fleet", None, &AgentTemplate::default()).unwrap();
        assert_eq!(orphan.metadata.owner_references, None, "Orphan: no owner, so deleting the rollout leaves it");
        assert_eq!(orphan.metadata.annotations.as_ref().unwrap()[labels::OWNER_ROLLOUT], "vigil-system/fleet");
        let unknown = RevisionRecord { config_map: None, ..rec.clone() };
        assert!(
            daemonset(&unknown, None, "a/b", None, &AgentTemplate::default()).is_none(),
            "no ConfigMap on record: no DaemonSet"
        );
        assert_eq!(ds.metadata.name.as_deref(), Some("vigil-agent-r-2b878e0c19"));
        let spec = ds.spec.unwrap();
        let pod = spec.template.spec.unwrap();
        assert_eq!(
            pod.node_selector.unwrap(),
            BTreeMap::from([("vigil.dev/run.r-2b878e0c19".to_owned(), "true".to_owned())]),
            "the nodes that run the revision's agent"
        );
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some(rec.image.as_str()));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(
            caps.add.as_deref(),
            Some(&["DAC_READ_SEARCH".to_owned(), "NET_ADMIN".into(), "SYSLOG".into(), "SYS_PTRACE".into()][..])
        );
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert!(
            mounts.iter().filter(|m| m.name != "state" && m.name != "run").all(|m| m.read_only == Some(true)),
            "every mount but the state directory and the ready file's read-only"
        );
        // Ready only while the pod's agent works on the node: its ready file, in memory.
        let probe = c.readiness_probe.as_ref().unwrap();
        assert_eq!(
            probe.exec.as_ref().unwrap().command.as_deref(),
            Some(&[vigil_crds::agent::BINARY.to_owned(), "ready".into()][..])
        );
        let run = mounts.iter().find(|m| m.name == "run").unwrap();
        assert_eq!(run.mount_path, vigil_crds::agent::RUN_DIR);
        assert!(vigil_crds::agent::READY_FILE.starts_with(&format!("{}/", run.mount_path)));
        let run_volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "run").unwrap();
        assert_eq!(run_volume.empty_dir.as_ref().unwrap().medium.as_deref(), Some("Memory"));
        let env = c.env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == vigil_crds::agent::env::READY_FILE
            && e.value.as_deref() == Some(vigil_crds::agent::READY_FILE)));
        assert!(
            !mounts.iter().any(|m| m.mount_path == "/dev/kmsg"),
            "no /dev/kmsg: a container that is not privileged cannot open it; syslog(2) reads the kernel log"
        );
        assert_eq!((pod.host_pid, pod.host_network), (Some(true), Some(true)), "the process connector needs both");
        assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        let unprivileged = AgentTemplate { security_events: false, ..AgentTemplate::default() };
        let quiet = daemonset(&rec, None, "a/b", None, &unprivileged).unwrap().spec.unwrap().template.spec.unwrap();
        assert_eq!(quiet.security_context.unwrap().run_as_non_root, Some(true));
        assert_eq!(
            (quiet.host_pid, quiet.host_network),
            (Some(false), Some(false)),
            "metrics only: no host namespaces"
        );
        let qc = &quiet.containers[0];
        assert!(qc.security_context.as_ref().unwrap().capabilities.as_ref().unwrap().add.is_none());
        assert!(
            qc.volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .filter(|m| m.name != "state" && m.name != "run")
                .all(|m| m.read_only == Some(true)),
            "every mount but the state directory read-only"
        );
        let state = quiet.volumes.as_ref().unwrap().iter().find(|v| v.name == "state").unwrap();
        assert!(state.host_path.is_none() && state.empty_dir.is_some(), "a non-root agent's state in an emptyDir");
        let ann = spec.template.metadata.unwrap().annotations.unwrap();
        assert_eq!(ann["vigil.dev/config-sha256"], rec.config_sha256);
        assert_eq!(ann["vigil.dev/rollout-trace-id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        let volumes = pod.volumes.unwrap();
        let cm = volumes.iter().find(|v| v.name == "config").unwrap().config_map.clone().unwrap();
        assert_eq!(cm.name, "cfg", "a revision recorded before snapshots: the ConfigMap the rollout named");
        let snapped = RevisionRecord { config_snapshot: Some("vigil-agent-config-r-2b878e0c19".into()), ..rec.clone() };
        let pod = daemonset(&snapped, None, "a/b", None, &AgentTemplate::default())
            .unwrap()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let cm = pod.volumes.unwrap().into_iter().find(|v| v.name == "config").unwrap().config_map.unwrap();
        assert_eq!(cm.name, "vigil-agent-config-r-2b878e0c19", "the revision's immutable snapshot");
        let item = &cm.items.unwrap()[0];
        assert_eq!((item.key.as_str(), item.path.as_str()), ("agent.yaml", "agent.yaml"));
        let args = pod.containers[0].args.clone().unwrap();
        assert!(args.contains(&"/etc/vigil/agent.yaml".to_owned()), "{args:?}");
        let policies = volumes.iter().find(|v| v.name == "alert-policies").unwrap().config_map.clone().unwrap();
        assert_eq!((policies.name.as_str(), policies.optional), ("vigil-alert-policies", Some(true)));
        let secrets = volumes.iter().find(|v| v.name == "alert-secrets").unwrap().secret.clone().unwrap();
        assert_eq!((secrets.secret_name.as_deref(), secrets.optional), (Some("vigil-alert-secrets"), Some(true)));
        assert!(mounts.iter().any(|m| m.mount_path == "/etc/vigil/policies" && m.read_only == Some(true)));
    }

    #[test]
    fn the_desired_hash_is_stable_and_moves_with_the_spec() {
        let rec = RevisionRecord {
            revision: "r-2b878e0c19".into(),
            image: format!("registry.example/vigil-agent@sha256:{}", "a".repeat(64)),
            config_sha256: "b".repeat(64),
            config_map: Some("cfg".into()),
            config_key: Some("agent.yaml".into()),
            config_snapshot: None,
            version: None,
            admitted_at: None,
            outcome: RevisionOutcome::InProgress,
            reason: None,
        };
        let owner = OwnerReference { name: "r".into(), uid: "u".into(), ..Default::default() };
        let hash_with = |rec: &RevisionRecord, owner: Option<OwnerReference>| {
            daemonset(rec, owner, "a/b", None, &AgentTemplate::default()).unwrap().metadata.annotations.unwrap()
                [labels::DESIRED_SHA256]
                .clone()
        };
        let hash = |rec: &RevisionRecord| hash_with(rec, Some(owner.clone()));
        assert_eq!(hash(&rec), hash(&rec), "the same revision, the same hash: no write");
        let other =
            RevisionRecord { image: format!("registry.example/vigil-agent@sha256:{}", "c".repeat(64)), ..rec.clone() };
        assert_ne!(hash(&rec), hash(&other));
        assert_ne!(hash(&rec), hash_with(&rec, None), "a changed deletion policy is written");
    }

    #[test]
    fn a_config_snapshot_is_immutable_labelled_for_its_revision_and_selected_by_the_shared_selector() {
        let cm = config_snapshot("r-2b878e0c19", &"b".repeat(64), "interval: 10s\n", "ns/fleet", None, "ns");
        assert_eq!(cm.metadata.name.as_deref(), Some("vigil-agent-config-r-2b878e0c19"));
        assert_eq!(cm.immutable, Some(true));
        assert_eq!(cm.data.as_ref().unwrap()["agent.yaml"], "interval: 10s\n");
        let l = cm.metadata.labels.as_ref().unwrap();
        for term in vigil_crds::agent::SNAPSHOT_SELECTOR.split(',') {
            let (k, v) = term.split_once('=').unwrap();
            assert_eq!(l.get(k).map(String::as_str), Some(v), "{term}");
        }
        assert_eq!(l[labels::REVISION], "r-2b878e0c19");
        let a = cm.metadata.annotations.as_ref().unwrap();
        assert_eq!((a[labels::OWNER_ROLLOUT].as_str(), a[labels::CONFIG_SHA256].len()), ("ns/fleet", 64));
        assert_eq!(cm.metadata.owner_references, None);
    }

    /// A change-detector for the pod template: when this fails, the pods the operator writes
    /// changed. Bump [`POD_TEMPLATE_VERSION`] (a new revision for every rollout, rolled out in
    /// waves) and record the new fingerprint here.
    #[test]
    fn the_pod_template_is_versioned() {
        let rec = RevisionRecord {
            revision: "r-0000000000".into(),
            image: format!("registry.example/vigil-agent@sha256:{}", "a".repeat(64)),
            config_sha256: "b".repeat(64),
            config_map: None,
            config_key: None,
            config_snapshot: Some("vigil-agent-config-r-0000000000".into()),
            version: None,
            admitted_at: None,
            outcome: RevisionOutcome::InProgress,
            reason: None,
        };
        let fingerprint = |t: &AgentTemplate| {
            use sha2::{Digest, Sha256};
            let ds = daemonset(&rec, None, "a/b", Some("0"), t).unwrap();
            let body = serde_json::to_vec(&ds.spec).unwrap();
            Sha256::digest(&body).iter().take(8).map(|b| format!("{b:02x}")).collect::<String>()
        };
        let unprivileged = AgentTemplate { security_events: false, ..AgentTemplate::default() };
        assert_eq!(
            (POD_TEMPLATE_VERSION, fingerprint(&AgentTemplate::default()), fingerprint(&unprivileged)),
            (5, "03d55788448e15c6".to_owned(), "b84c22bf7cf9a767".to_owned()),
            "the agent pod template changed: bump POD_TEMPLATE_VERSION and record the new fingerprints"
        );
        assert_ne!(AgentTemplate::default().id(), unprivileged.id(), "every template setting is in the id");
        let no_probe = AgentTemplate { readiness_probe: false, ..AgentTemplate::default() };
        assert_ne!(AgentTemplate::default().id(), no_probe.id(), "the probe is in the id");
        let ds = daemonset(&rec, None, "a/b", None, &no_probe).unwrap();
        assert!(ds.spec.unwrap().template.spec.unwrap().containers[0].readiness_probe.is_none());
    }

    #[test]
    fn live_revisions_keep_target_stable_and_every_labelled_one() {
        let st = AgentRolloutStatus {
            target_revision: Some("r-t".into()),
            stable_revision: Some("r-s".into()),
            ..Default::default()
        };
        let live = live_revisions(&st, ["r-old", "r-t"]);
        assert_eq!(live.into_iter().collect::<Vec<_>>(), ["r-old", "r-s", "r-t"]);
    }

    #[test]
    fn the_status_apply_body_names_the_resource() {
        let v = status_apply("r", "ns", &AgentRolloutStatus::default());
        assert_eq!(v["apiVersion"], "vigil.dev/v1alpha1");
        assert_eq!(v["kind"], "AgentRollout");
        assert_eq!(v["metadata"]["namespace"], "ns");
    }
}
