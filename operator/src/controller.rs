//! The AgentRollout controller: observe → plan → act, one rollout at a time.
//!
//! `reconcile` reads the cluster (nodes, agent pods, heartbeat Leases, AgentStatuses, the
//! target's config), asks the pure planner for the next step, and has [`act::Writer`] carry
//! it out in the order that keeps a crash harmless: the config copy, the status (the intent),
//! then the node labels, then the per-revision DaemonSets. It then requeues at the time the
//! planner asked for.
//!
//! Everything but a new target's ConfigMap is read from stores kept current by watches: of
//! the objects there is one of per node (nodes, agent pods, agent Leases, AgentStatuses),
//! the facts the operator reads ([`crate::kept`], about 2.5 KB a node); of AgentRollouts,
//! agent DaemonSets and config copies, the objects trimmed. An unchanged reconcile reads
//! nothing from the API however large the fleet.
//! The unit tests fill the same stores and answer the same requests: there is one observe
//! path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use vigil_plan::facts::{Interner, LeaseFacts, NodeFacts, PodFacts, StatusFacts};

use vigil_crds::rollout::DeletionPolicy;
use vigil_crds::{AgentRollout, AgentStatus, ConfigHash};

use crate::events::{Kind as EventKind, Publisher};

use crate::act::{self, AgentTemplate};
use crate::kept::{self, Kept};
use crate::metrics::{KindLabels, Metrics};
use vigil_plan::{self as plan, Limits, Observed};
use vigil_plan::{node_labels, observe};

/// What reconcile needs besides the rollout.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Planner limits (label writes per reconcile).
    pub limits: Limits,
    /// Shape of the agent pods.
    pub template: AgentTemplate,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Publishes an Event for each new decision (`None`: no events, as in unit tests).
    pub recorder: Option<Publisher>,
    /// Records decisions in the rollout's trace (`None`: no OTLP endpoint configured).
    pub tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    /// Reflector stores to read from.
    pub stores: Stores,
    /// HTTP client of the Prometheus gate (`None`: it could not be built; the gate holds).
    pub http: Option<reqwest::Client>,
    /// The clock every decision and write is stamped with (the system clock; tests pin it).
    pub clock: fn() -> jiff::Timestamp,
}

/// Stores of what the controller observes: of the objects there is one of per node, their
/// facts ([`vigil_plan::facts`]); of the others, the objects trimmed.
#[derive(Clone)]
pub struct Stores {
    /// Every node.
    pub nodes: Kept<NodeFacts>,
    /// Agent pods (label `app.kubernetes.io/name=vigil-agent`), every namespace.
    pub pods: Kept<PodFacts>,
    /// Agent heartbeat Leases (same label), every namespace.
    pub leases: Kept<LeaseFacts>,
    /// Every AgentStatus.
    pub statuses: Kept<StatusFacts>,
    /// Every AgentRollout (for the overlap check and the janitor).
    pub rollouts: Store<AgentRollout>,
    /// Agent DaemonSets (label `app.kubernetes.io/name=vigil-agent`), every namespace.
    pub daemonsets: Store<DaemonSet>,
    /// The operator's config snapshots in the agents' namespace, metadata only.
    pub snapshots: Store<ConfigMap>,
}

impl Stores {
    /// The planner's view of the nodes `rollout` selects, agents in namespace `ns`.
    pub fn node_views(&self, rollout: &AgentRollout, ns: &str) -> Vec<plan::NodeView> {
        let sel = rollout.spec.node_selector.as_ref();
        let nodes = self.nodes.state();
        let selected = nodes.iter().filter(|n| sel.is_none_or(|s| plan::selector_matches(s, &n.labels)));
        let pods = self.pods.state();
        let leases = self.leases.state();
        let statuses = self.statuses.state();
        observe::node_views(
            selected.map(AsRef::as_ref),
            pods.iter().filter(|p| p.namespace == ns).map(AsRef::as_ref),
            leases.iter().filter(|l| l.namespace == ns).map(AsRef::as_ref),
            statuses.iter().map(AsRef::as_ref),
        )
    }
}

impl Stores {
    /// The config snapshot of `revision` in namespace `ns`, when the operator holds one.
    pub fn snapshot(&self, ns: &str, revision: &str) -> Option<Arc<ConfigMap>> {
        let name = vigil_crds::agent::config_snapshot_name(revision);
        self.snapshots.get(&kube::runtime::reflector::ObjectRef::new(&name).within(ns))
    }
}

impl Stores {
    /// The older rollout of namespace `ns` that selects some of the nodes `rollout` selects:
    /// its name, how many nodes both select, and one of them.
    pub fn overlap(&self, rollout: &AgentRollout, ns: &str) -> Option<(String, usize, String)> {
        let all = self.rollouts.state();
        let others: Vec<plan::overlap::Claim<'_>> = all
            .iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(ns))
            .map(|r| plan::overlap::Claim {
                name: r.metadata.name.as_deref().unwrap_or(""),
                created: r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                selector: r.spec.node_selector.as_ref(),
            })
            .collect();
        let me = plan::overlap::Claim {
            name: rollout.metadata.name.as_deref().unwrap_or(""),
            created: rollout.metadata.creation_timestamp.as_ref().map(|t| t.0),
            selector: rollout.spec.node_selector.as_ref(),
        };
        let nodes = self.nodes.state();
        let labelled: Vec<(&str, &plan::facts::Labels)> = nodes.iter().map(|n| (n.name.as_str(), &n.labels)).collect();
        plan::overlap::yields_to(&me, &others, &labelled)
    }
}

impl Context {
    /// A context for `client` reading `stores`, with default limits and template.
    pub fn new(client: Client, recorder: Option<Publisher>, stores: Stores) -> Self {
        Self {
            client,
            limits: Limits::default(),
            template: AgentTemplate::default(),
            metrics: Arc::default(),
            recorder,
            tracer: None,
            stores,
            clock: jiff::Timestamp::now,
            http: {
                // reqwest is built without a TLS provider of its own: ring, as kube uses.
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::builder().build().ok()
            },
        }
    }
}

/// Why a reconcile failed; `kind()` is the metric label and event reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The rollout has no name or namespace.
    #[error("the rollout has no name or namespace")]
    Malformed,
    /// Reading the cluster failed.
    #[error("listing {0}")]
    Observe(&'static str, #[source] kube::Error),
    /// A write failed (the rollout status, a node, a DaemonSet, a config copy).
    #[error(transparent)]
    Write(#[from] act::WriteError),
}

impl Error {
    /// A small fixed set, for metrics and events.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Malformed => "Malformed",
            Error::Observe(..) => "ObserveFailed",
            Error::Write(act::WriteError::Status(_)) => "StatusWriteFailed",
            Error::Write(act::WriteError::Node(..)) => "NodePatchFailed",
            Error::Write(act::WriteError::DaemonSet(..)) => "DaemonSetApplyFailed",
            // A config copy that could not be deleted counts where it always did.
            Error::Write(
                act::WriteError::Snapshot(..) | act::WriteError::AgentStatus(..) | act::WriteError::Policy(..),
            ) => "ObserveFailed",
        }
    }
}

/// Reads what the planner needs: the target's config (from the operator's snapshot when it
/// holds one, else from the rollout's ConfigMap, the one read through the API), the
/// Prometheus gate when there is one, and the fleet from the stores. Also returns the target
/// revision and its config text when the text matches the target's hash, passes the agent's
/// checks and has no snapshot yet, for [`take_snapshot`].
pub async fn observe(
    client: &Client,
    stores: &Stores,
    http: Option<&reqwest::Client>,
    rollout: &AgentRollout,
    ns: &str,
    pod_template: &str,
) -> Result<(Observed, Option<(String, String)>), Error> {
    let spec = &rollout.spec;
    let revision = plan::revision_of(spec, pod_template).ok();
    let snapshot = revision.as_deref().and_then(|r| stores.snapshot(ns, r));
    let (config_sha256, config_error, config_snapshot, to_snapshot) = match snapshot {
        // Checked when it was taken, and immutable since.
        Some(s) => {
            (s.annotations().get(vigil_crds::labels::CONFIG_SHA256).cloned(), None, s.metadata.name.clone(), None)
        }
        None => {
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            let cm = cms.get_opt(&spec.target.config.config_map).await.map_err(|e| Error::Observe("configmaps", e))?;
            let text = cm.and_then(|c| c.data).and_then(|mut d| d.remove(&spec.target.config.key));
            let sha = text.as_ref().map(|v| ConfigHash::of(v.as_bytes()).to_string());
            let error = text.as_deref().and_then(|text| {
                let origin = format!("ConfigMap {ns}/{} key {}", spec.target.config.config_map, spec.target.config.key);
                vigil_agent_config::Config::parse(text, &origin).err().map(|e| e.to_string())
            });
            let matches = sha.as_deref() == Some(spec.target.config.sha256.as_str()) && error.is_none();
            (sha, error, None, revision.clone().zip(text).filter(|_| matches))
        }
    };
    let (prometheus_value, prometheus_error) = match gate_value(http, rollout, ns, revision.as_deref()).await {
        None => (None, None),
        Some(Ok(v)) => (Some(v), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let observed = Observed {
        nodes: stores.node_views(rollout, ns),
        config_sha256,
        config_error,
        prometheus_value,
        prometheus_error,
        config_snapshot,
        pod_template: pod_template.to_owned(),
    };
    Ok((observed, to_snapshot))
}

/// What besides image and config names a revision of the rollout `key`: the operator's pod
/// template, and the rollout itself, so that two rollouts of the same image and config (one
/// per node pool, say) have revisions, DaemonSets, run labels and config copies of their own.
pub fn revision_scope(ctx: &Context, key: &str) -> String {
    format!("{}\nrollout/{key}", ctx.template.id())
}

/// The owner reference of what the operator writes for `rollout`: the rollout under its
/// `Delete` deletion policy, none under `Orphan` (ADR 0004).
fn owner_of(rollout: &AgentRollout) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    match rollout.spec.deletion_policy {
        DeletionPolicy::Delete => rollout.controller_owner_ref(&()),
        DeletionPolicy::Orphan => None,
    }
}

/// Takes the operator's immutable copy of the config of `revision` (`text`, already checked
/// against the target's hash), before any node can be admitted to the revision. Returns its
/// name, or `None` when it could not be written (then the revision mounts the rollout's own
/// ConfigMap, as before snapshots, and the next reconcile tries again).
async fn take_snapshot(
    ctx: &Context,
    rollout: &AgentRollout,
    ns: &str,
    key: &str,
    (revision, text): (String, String),
) -> Option<String> {
    let cm = act::config_snapshot(&revision, &rollout.spec.target.config.sha256, &text, key, owner_of(rollout), ns);
    let name = cm.metadata.name.clone()?;
    match act::Writer::new(ctx.client.clone()).create_snapshot(&cm).await {
        Ok(true) => {
            tracing::info!(rollout = %key, %revision, snapshot = %name, "took an immutable copy of the revision's config");
            Some(name)
        }
        // Taken already (the store had not seen it yet): it holds this revision's config.
        Ok(false) => Some(name),
        Err(e) => {
            tracing::warn!(rollout = %key, %revision, error = %e, "could not take a copy of the revision's config; it mounts the rollout's ConfigMap");
            ctx.metrics.errors.get_or_create(&KindLabels { kind: "SnapshotFailed" }).inc();
            None
        }
    }
}

/// The Prometheus gate's value for the rollout's target, when it has the gate: `None` without
/// one, an error in words when the query has no value.
async fn gate_value(
    http: Option<&reqwest::Client>,
    rollout: &AgentRollout,
    ns: &str,
    revision: Option<&str>,
) -> Option<Result<f64, String>> {
    let gate = rollout.spec.health_gate.prometheus.as_ref()?;
    let Some(http) = http else { return Some(Err("no HTTP client could be built".into())) };
    // No revision: the target itself is wrong, and the planner says so.
    let revision = revision?;
    let key = format!("{ns}/{}", rollout.metadata.name.as_deref().unwrap_or(""));
    Some(crate::prometheus::query(http, gate, &key, revision).await.map_err(|e| e.to_string()))
}

/// One reconcile of one rollout, timed and counted.
pub async fn reconcile(rollout: Arc<AgentRollout>, ctx: Arc<Context>) -> Result<Action, Error> {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let key = format!("{}/{}", rollout.metadata.namespace.as_deref().unwrap_or(""), rollout.name_any());
    let span = tracing::info_span!("reconcile", rollout = %key);
    let result = reconcile_inner(rollout, &ctx).instrument(span).await;
    ctx.metrics.observe_reconcile(result.is_ok(), started.elapsed());
    result
}

async fn reconcile_inner(rollout: Arc<AgentRollout>, ctx: &Context) -> Result<Action, Error> {
    let (Some(ns), Some(name)) = (rollout.namespace(), rollout.metadata.name.clone()) else {
        return Err(Error::Malformed);
    };
    let key = format!("{ns}/{name}");
    if ns != ctx.template.namespace {
        // Another install's rollout: its own operator writes its status (two installs side by
        // side, each in its namespace). Refusing it here too would overwrite that status and
        // be overwritten in turn, for ever.
        if acted_on(&rollout) {
            return Ok(Action::await_change());
        }
        let message = format!(
            "AgentRollouts act only in namespace {}, where the agents' service account, RBAC and admission policies \
             are installed; this one is in {ns}: move it there",
            ctx.template.namespace
        );
        return refuse(&rollout, ctx, &ns, &name, "WrongNamespace", message).await;
    }
    if let Some((other, shared, example)) = ctx.stores.overlap(&rollout, &ns) {
        let message = format!(
            "selects {shared} node(s) that AgentRollout {ns}/{other} (older) also selects, e.g. {example}: two \
             rollouts must select disjoint nodes; narrow the nodeSelector of one of them"
        );
        return refuse(&rollout, ctx, &ns, &name, "Overlap", message).await;
    }
    let (mut observed, to_snapshot) =
        observe(&ctx.client, &ctx.stores, ctx.http.as_ref(), &rollout, &ns, &revision_scope(ctx, &key)).await?;
    if let Some(to_snapshot) = to_snapshot {
        observed.config_snapshot = take_snapshot(ctx, &rollout, &ns, &key, to_snapshot).await;
    }
    let current = rollout.status.clone().unwrap_or_default();
    let now = (ctx.clock)();
    let mut p = plan::next(&rollout.spec, &current, rollout.metadata.generation, &key, &observed, now, ctx.limits);
    let uid = rollout.metadata.uid.clone().unwrap_or_default();
    p.status.trace_id = match &ctx.tracer {
        Some(t) => crate::telemetry::record(t, &uid, &key, &current, &p, std::time::SystemTime::from(now)),
        None => p.status.target_revision.as_deref().map(|target| crate::telemetry::ids(&uid, target).0.to_string()),
    };
    // What the effects are decided from, read from the stores at one instant (and let go
    // before any write).
    let todo = {
        let nodes = ctx.stores.nodes.state();
        let in_ns = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            m.namespace.as_deref() == Some(ns.as_str())
        };
        let daemonsets: Vec<Arc<DaemonSet>> =
            ctx.stores.daemonsets.state().into_iter().filter(|d| in_ns(&d.metadata)).collect();
        let snapshots: Vec<Arc<ConfigMap>> =
            ctx.stores.snapshots.state().into_iter().filter(|c| in_ns(&c.metadata)).collect();
        let lease_holder = |node: &str| {
            let lease = ctx.stores.leases.get(&ns, &vigil_crds::agent::lease_name(node));
            lease.and_then(|l| l.holder.as_deref().map(str::to_owned))
        };
        let seen = Seen { nodes: &nodes, daemonsets: &daemonsets, snapshots: &snapshots, lease_holder: &lease_holder };
        effects(&rollout, &key, &current, &p, &observed, &seen, &ctx.template, now)
    };
    let writer = act::Writer::new(ctx.client.clone());
    let result = act::apply(&writer, ctx.recorder.as_ref(), todo, now).await;
    if !matches!(result, Err(act::WriteError::Status(_))) {
        ctx.metrics.observe_plan(&key, &p);
        if current.reason != p.status.reason {
            tracing::info!(
                rollout = %key,
                decision = p.decision.kind.as_str(),
                phase = ?p.status.phase,
                wave = p.status.current_wave,
                target = p.status.target_revision.as_deref().unwrap_or(""),
                stable = p.status.stable_revision.as_deref().unwrap_or(""),
                moves = p.moves.len(),
                reason = %p.decision.reason,
                "rollout decision"
            );
        }
    }
    result?;
    Ok(Action::requeue(p.requeue_after.max(Duration::from_secs(1))))
}

/// The stores' objects one reconcile's effects are decided from, at one instant.
pub struct Seen<'a> {
    /// Every node.
    pub nodes: &'a [Arc<NodeFacts>],
    /// The agent DaemonSets of the rollout's namespace, in any order.
    pub daemonsets: &'a [Arc<DaemonSet>],
    /// The config copies of the rollout's namespace.
    pub snapshots: &'a [Arc<ConfigMap>],
    /// Who holds a node's heartbeat Lease in the rollout's namespace (the revision of the
    /// agent that works the node).
    pub lease_holder: &'a dyn Fn(&str) -> Option<String>,
}

/// Every write of one reconcile of `rollout` (`key` = `namespace/name`), as values, in the
/// order [`act::apply`] sends them: the status (the intent) and its Event, the nodes (moves,
/// nodes leaving the rollout, handovers done), the DaemonSets of live revisions, then the
/// DaemonSets and config copies no longer needed. Pure: `current` is the status read, `p` the
/// plan, `observed` what the planner saw and `seen` the rest of the stores.
#[allow(clippy::too_many_arguments)]
pub fn effects(
    rollout: &AgentRollout,
    key: &str,
    current: &vigil_crds::rollout::AgentRolloutStatus,
    p: &plan::Plan,
    observed: &Observed,
    seen: &Seen<'_>,
    template: &AgentTemplate,
    now: jiff::Timestamp,
) -> Vec<act::Effect> {
    use act::Effect;
    let ns = rollout.metadata.namespace.as_deref().unwrap_or_default();
    let name = rollout.metadata.name.as_deref().unwrap_or_default();
    let uid = rollout.metadata.uid.clone().unwrap_or_default();
    let mut out = Vec::new();
    // 1. The intent, and its Event when the decision is new.
    if p.status != *current {
        out.push(Effect::Status {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            status: Box::new(p.status.clone()),
        });
    }
    if current.reason != p.status.reason {
        let kind = if p.decision.kind.is_warning() { EventKind::Warning } else { EventKind::Normal };
        let reason = p.decision.kind.as_str();
        let regarding = Box::new(rollout.object_ref(&()));
        out.push(Effect::Event { regarding, kind, reason, action: reason, note: p.decision.reason.clone() });
    }
    // 2. The nodes.
    let empty = plan::facts::Labels::default();
    let ours: std::collections::BTreeSet<&str> = p.status.history.iter().map(|r| r.revision.as_str()).collect();
    let by_name: BTreeMap<&str, &plan::NodeView> = observed.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let moves: Vec<(String, serde_json::Value)> = p
        .moves
        .iter()
        .map(|m| {
            let current = by_name.get(m.node.as_str()).map_or(&empty, |n| &n.labels);
            (m.node.clone(), node_labels::node_label_patch(m, key, now, current, &ours))
        })
        .collect();
    let frozen = p.decision.kind == plan::DecisionKind::Freeze;
    // 2a. Nodes this rollout labelled that its selector no longer takes (a narrowed
    // `nodeSelector`): they leave it, and its agents leave them (not while frozen).
    let mut leaving = Vec::new();
    if !frozen {
        let mine = vigil_crds::labels::rollout_label_value(ns, name);
        for n in seen.nodes {
            let (node, labels) = (n.name.as_str(), &n.labels);
            if labels.get(vigil_crds::labels::ROLLOUT) != Some(mine.as_str()) || by_name.contains_key(node) {
                continue;
            }
            let from = labels.get(vigil_crds::labels::REVISION).map(str::to_owned);
            let leave = plan::Move { node: node.to_owned(), from, to: None, pin: None };
            leaving.push((node.to_owned(), node_labels::node_label_patch(&leave, key, now, labels, &ours)));
        }
    }
    // 2b. Handovers done: once the agent of a node's revision holds the node's heartbeat Lease,
    // the other revisions' agents on the node go (their run labels). Not while frozen.
    let mut ended = Vec::new();
    if !frozen {
        let moved: std::collections::BTreeSet<&str> = p.moves.iter().map(|m| m.node.as_str()).collect();
        for n in observed.nodes.iter().filter(|n| !moved.contains(n.name.as_str())) {
            let done = node_labels::handover_done(&n.labels, (seen.lease_holder)(&n.name).as_deref());
            if done.is_empty() {
                continue;
            }
            let labels: serde_json::Map<String, serde_json::Value> =
                done.into_iter().map(|k| (k, serde_json::Value::Null)).collect();
            ended.push((n.name.clone(), serde_json::json!({"metadata": {"labels": labels}})));
        }
    }
    out.extend([moves, leaving, ended].into_iter().filter(|b| !b.is_empty()).map(Effect::Nodes));
    // 3. A DaemonSet for every revision a node may run: created whole once, then written only
    // when what the operator wants of it changed (its `vigil.dev/desired-sha256`), and then
    // only its metadata: an unchanged reconcile writes nothing, and an emergency edit of a
    // pod template by a person stays.
    // Under the `Delete` deletion policy the rollout owns them; under `Orphan` nothing does.
    let owner = owner_of(rollout);
    let mut revisions: Vec<&str> =
        observed.nodes.iter().flat_map(|n| vigil_crds::labels::running_revisions(&n.labels)).collect();
    revisions.extend(p.moves.iter().filter_map(|m| m.to.as_deref()));
    let live = act::live_revisions(&p.status, revisions);
    for rec in p.status.history.iter().filter(|r| live.contains(r.revision.as_str())) {
        let t = AgentTemplate { namespace: ns.to_owned(), ..template.clone() };
        // Each revision's pods carry the trace of the rollout that introduced that revision:
        // stamping the current target's trace on every DaemonSet would change the pod
        // template of the stable revision, restarting every agent at once.
        let revision_trace = crate::telemetry::ids(&uid, &rec.revision).0.to_string();
        // Each revision mounts its own ConfigMap: the target's would change the stable
        // revision's config under it (and fail the agent's hash check on restart).
        let Some(ds) = act::daemonset(rec, owner.clone(), key, Some(revision_trace.as_str()), &t) else { continue };
        let ds_name = act::daemonset_name(&rec.revision);
        let want = ds.metadata.annotations.as_ref().and_then(|a| a.get(vigil_crds::labels::DESIRED_SHA256));
        let found = seen.daemonsets.iter().find(|d| d.metadata.name.as_deref() == Some(ds_name.as_str()));
        let has =
            found.and_then(|d| d.metadata.annotations.as_ref()).and_then(|a| a.get(vigil_crds::labels::DESIRED_SHA256));
        if want.is_some() && has == want {
            continue;
        }
        // An existing one's pod template was written when it was created and is never
        // rewritten (a changed template is a new revision, rolled out in waves): only what the
        // operator says about the DaemonSet (owner, annotations, labels) is brought up to date.
        out.push(if found.is_some() {
            Effect::DaemonSetMetadata(Box::new(ds))
        } else {
            Effect::CreateDaemonSet(Box::new(ds))
        });
    }
    // 4. This rollout's DaemonSets of revisions no node runs any more go, by name. A node
    // outside its selector may still carry the label, so every node is looked at before deleting.
    let mut by_ds_name: Vec<&DaemonSet> = seen.daemonsets.iter().map(AsRef::as_ref).collect();
    by_ds_name.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for ds in by_ds_name {
        let (Some(ds_name), Some(rev)) = (ds.metadata.name.as_deref(), ds.labels().get(vigil_crds::labels::REVISION))
        else {
            continue;
        };
        if !written_for(ds, rollout, key) || live.contains(rev.as_str()) {
            continue;
        }
        let labelled = seen.nodes.iter().any(|n| vigil_crds::labels::running_revisions(&n.labels).any(|r| r == rev));
        if !labelled {
            out.push(Effect::DeleteDaemonSet { namespace: ns.to_owned(), name: ds_name.to_owned() });
        }
    }
    // 5. This rollout's config snapshots of revisions no longer in its history go (every
    // revision of the history keeps its copy: any of them may be rolled back to).
    for snap in seen.snapshots {
        let mine = snap.annotations().get(vigil_crds::labels::OWNER_ROLLOUT).map(String::as_str) == Some(key);
        let Some(rev) = snap.labels().get(vigil_crds::labels::REVISION) else { continue };
        if !mine || p.status.history.iter().any(|r| &r.revision == rev) || live.contains(rev.as_str()) {
            continue;
        }
        let Some(name) = snap.metadata.name.as_deref() else { continue };
        out.push(Effect::DeleteSnapshot { namespace: ns.to_owned(), name: name.to_owned() });
    }
    out
}

/// A rollout the operator will not act on (outside the agents' namespace, or selecting nodes
/// an older rollout selects): nothing is done, and the status says why with condition
/// `Accepted=False` (once; an unchanged refusal writes nothing). It is looked at again when it
/// changes, and every few minutes (the other rollout may have gone).
async fn refuse(
    rollout: &AgentRollout,
    ctx: &Context,
    ns: &str,
    name: &str,
    why: &'static str,
    message: String,
) -> Result<Action, Error> {
    let current = rollout.status.clone().unwrap_or_default();
    let again = Action::requeue(Duration::from_secs(300));
    if current.reason.as_deref() == Some(message.as_str()) {
        return Ok(again);
    }
    tracing::warn!(rollout = %format!("{ns}/{name}"), reason = why, %message, "rollout refused");
    let at = (ctx.clock)();
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at);
    let status = vigil_crds::rollout::AgentRolloutStatus {
        observed_generation: rollout.metadata.generation,
        reason: Some(message.clone()),
        conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Accepted".into(),
            status: "False".into(),
            reason: why.into(),
            message: message.clone(),
            last_transition_time: now,
            observed_generation: rollout.metadata.generation,
        }],
        ..current
    };
    let todo = vec![
        act::Effect::Status { namespace: ns.to_owned(), name: name.to_owned(), status: Box::new(status) },
        act::Effect::Event {
            regarding: Box::new(rollout.object_ref(&())),
            kind: EventKind::Warning,
            reason: why,
            action: "Refuse",
            note: message,
        },
    ];
    act::apply(&act::Writer::new(ctx.client.clone()), ctx.recorder.as_ref(), todo, at).await?;
    Ok(again)
}

/// Whether an operator has planned `rollout`: its status carries the planner's conditions
/// (a refusal carries only `Accepted`).
pub fn acted_on(rollout: &AgentRollout) -> bool {
    rollout
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| vigil_plan::conditions::TYPES.contains(&c.type_.as_str())))
}

/// Whether the operator wrote `ds` for `rollout` (`key` = `namespace/name`): by the owning
/// rollout's annotation, or, for DaemonSets written before it existed, by owner reference.
fn written_for(ds: &DaemonSet, rollout: &AgentRollout, key: &str) -> bool {
    let by_annotation = ds.annotations().get(vigil_crds::labels::OWNER_ROLLOUT).map(String::as_str) == Some(key);
    let by_owner = ds.metadata.owner_references.iter().flatten().any(|o| Some(&o.uid) == rollout.metadata.uid.as_ref());
    by_annotation || by_owner
}

/// The rollout a DaemonSet was written for: its annotation, else its controlling owner.
fn rollout_of(ds: &DaemonSet) -> Option<kube::runtime::reflector::ObjectRef<AgentRollout>> {
    let ns = ds.metadata.namespace.as_deref()?;
    if let Some((rns, name)) = ds.annotations().get(vigil_crds::labels::OWNER_ROLLOUT).and_then(|k| k.split_once('/')) {
        return Some(kube::runtime::reflector::ObjectRef::new(name).within(rns));
    }
    let owner = ds.metadata.owner_references.iter().flatten().find(|o| o.kind == "AgentRollout")?;
    Some(kube::runtime::reflector::ObjectRef::new(&owner.name).within(ns))
}

/// A failed reconcile: try again with a delay that an API hiccup outlasts.
pub fn error_policy(_rollout: Arc<AgentRollout>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.errors.get_or_create(&KindLabels { kind: err.kind() }).inc();
    match err {
        // Nothing a retry can fix until the object changes.
        Error::Malformed => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(15)),
    }
}

/// Wakes the controller when what matters of an object changes.
struct Nudge<K> {
    tx: tokio::sync::mpsc::Sender<()>,
    key: NudgeKey<K>,
}

/// A digest of what the planner reads from an object; `None` for an object no rollout reads
/// (it wakes nothing).
type NudgeKey<K> = Box<dyn Fn(&K) -> Option<u64> + Send + Sync>;

/// A reflector kept current by a watch on `api`, driven by a task of its own, each object
/// trimmed by `trim` before the store keeps it.
fn spawn_reflector<K>(api: Api<K>, config: watcher::Config, trim: fn(&mut K)) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let watch = watcher::watcher(api, config).modify(trim);
    let stream = reflector::reflector(writer, watch).default_backoff();
    tokio::spawn(stream.for_each(|_| std::future::ready(())));
    reader
}

/// A store of the facts of the objects a watch on `api` sees (`facts` reads them, sharing
/// strings through one interner per store), driven by a task of its own; with a nudge, a
/// change of an object's key, or its deletion, also nudges the controller (a full channel
/// already holds a nudge, so none is lost or queued up).
fn spawn_kept<K, T>(
    api: Api<K>,
    config: watcher::Config,
    facts: fn(&K, &mut Interner) -> T,
    nudge: Option<Nudge<T>>,
) -> Kept<T>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    T: kept::Keyed + Send + Sync + 'static,
{
    let (reader, mut writer) = kept::store();
    let mut strings = Interner::default();
    let mut wakes = wakes::Wakes::default();
    let watch = watcher::watcher(api, config).default_backoff();
    tokio::spawn(watch.for_each(move |event| {
        if let Ok(event) = event {
            let event = match event {
                watcher::Event::Apply(o) => watcher::Event::Apply(facts(&o, &mut strings)),
                watcher::Event::Delete(o) => watcher::Event::Delete(facts(&o, &mut strings)),
                watcher::Event::InitApply(o) => watcher::Event::InitApply(facts(&o, &mut strings)),
                watcher::Event::Init => watcher::Event::Init,
                watcher::Event::InitDone => watcher::Event::InitDone,
            };
            // The store first: a reconcile the nudge wakes reads the change that woke it.
            let wake = nudge.as_ref().is_some_and(|n| wakes.on(&event, &n.key));
            writer.apply(event);
            if let (true, Some(n)) = (wake, &nudge) {
                let _ = n.tx.try_send(());
            }
        }
        std::future::ready(())
    }));
    reader
}

fn digest(parts: impl std::hash::Hash) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// Whether any rollout reads `node`: one of them selects it, or it carries labels the
/// operator wrote (a node leaving a rollout's selector still does, once). The other nodes of
/// a large cluster wake no reconcile, however their conditions churn.
fn node_concerns_a_rollout(node: &NodeFacts, rollouts: &[Arc<AgentRollout>]) -> bool {
    use vigil_crds::labels;
    let ours =
        |k: &str| [labels::REVISION, labels::ROLLOUT, labels::PINNED].contains(&k) || labels::run_revision(k).is_some();
    node.labels.keys().any(ours)
        || rollouts
            .iter()
            .any(|r| r.spec.node_selector.as_ref().is_none_or(|s| plan::selector_matches(s, &node.labels)))
}

/// Objects per page of a watch's first list (and relist): a page of realistic Nodes is
/// received and parsed whole before their facts are read, so smaller pages bound the
/// operator's peak memory on a large cluster (the API server's default is the whole list).
pub const LIST_PAGE: u32 = 100;

/// What the planner reads of a node: its facts (labels, admission, readiness, node info),
/// which a kubelet's heartbeats do not change.
fn node_key(n: &NodeFacts) -> u64 {
    digest(n)
}

/// What a handover reads of a heartbeat Lease: its holder (renewals do not change it).
fn lease_key(l: &LeaseFacts) -> u64 {
    digest(l.holder.as_deref())
}

/// What the gate reads of an agent pod: its facts (revision, readiness, restarts, waiting
/// and termination reasons).
fn pod_key(p: &PodFacts) -> u64 {
    digest(p)
}

/// Nudges as a stream, at most one a second: agent pods changing (ready, crash-looping) and
/// nodes changing (labels, readiness) wake every rollout early instead of at its next
/// requeue, without a storm of reconciles when many change at once. Node heartbeats and other
/// status churn do not change the keys, so they wake nothing.
fn throttled(rx: tokio::sync::mpsc::Receiver<()>) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        Some(((), rx))
    })
}

/// Runs the controller until the process stops. `instance` names this replica in Events.
pub async fn run(
    client: Client,
    instance: String,
    metrics: Arc<Metrics>,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    template: AgentTemplate,
) {
    let rollouts: Api<AgentRollout> = Api::all(client.clone());
    let dss: Api<DaemonSet> = Api::all(client.clone());
    let recorder = Publisher::new(client.clone(), instance);
    let agents = watcher::Config::default().labels(vigil_crds::agent::SELECTOR).page_size(LIST_PAGE);
    let (nudge, nudges) = tokio::sync::mpsc::channel(1);
    // The rollouts first: the node nudges ask them which nodes matter.
    let rollouts_store =
        spawn_reflector(Api::all(client.clone()), watcher::Config::default(), |r: &mut AgentRollout| {
            r.metadata.managed_fields = None
        });
    let selecting = rollouts_store.clone();
    let node_nudge = move |n: &NodeFacts| node_concerns_a_rollout(n, &selecting.state()).then(|| node_key(n));
    let stores = Stores {
        nodes: spawn_kept(
            Api::<Node>::all(client.clone()),
            watcher::Config::default().page_size(LIST_PAGE),
            NodeFacts::of,
            Some(Nudge { tx: nudge.clone(), key: Box::new(node_nudge) }),
        ),
        pods: spawn_kept(
            Api::<Pod>::all(client.clone()),
            agents.clone(),
            PodFacts::of,
            Some(Nudge { tx: nudge.clone(), key: Box::new(|p| Some(pod_key(p))) }),
        ),
        // A Lease changing holder (an agent taking its node over) wakes the rollouts, which
        // then finish the handover; renewals do not change the key.
        leases: spawn_kept(
            Api::<Lease>::all(client.clone()),
            agents,
            LeaseFacts::of,
            Some(Nudge { tx: nudge.clone(), key: Box::new(|l| Some(lease_key(l))) }),
        ),
        statuses: spawn_kept(
            Api::<AgentStatus>::all(client.clone()),
            watcher::Config::default().page_size(LIST_PAGE),
            StatusFacts::of,
            None,
        ),
        rollouts: rollouts_store,
        daemonsets: spawn_reflector(
            Api::all(client.clone()),
            watcher::Config::default().labels(vigil_crds::agent::SELECTOR),
            observe::trim_daemonset,
        ),
        snapshots: spawn_reflector(
            Api::namespaced(client.clone(), &template.namespace),
            watcher::Config::default().labels(vigil_crds::agent::SNAPSHOT_SELECTOR),
            observe::trim_snapshot,
        ),
    };

    // Plan only on a complete picture of the fleet.
    let ready = [
        stores.nodes.wait_until_ready().await.is_ok(),
        stores.pods.wait_until_ready().await.is_ok(),
        stores.leases.wait_until_ready().await.is_ok(),
        stores.statuses.wait_until_ready().await.is_ok(),
        stores.rollouts.wait_until_ready().await.is_ok(),
        stores.daemonsets.wait_until_ready().await.is_ok(),
        stores.snapshots.wait_until_ready().await.is_ok(),
    ];
    if ready.contains(&false) {
        tracing::error!("a reflector stopped before its first list");
        return;
    }
    tracing::info!(agents_namespace = %template.namespace, "watching AgentRollouts, nodes, agent pods, Leases and AgentStatuses");
    // Leader-only tasks end with this future: when leadership is lost, `leader::lead` drops
    // it, and with it these (a spawned task would outlive it and write on as a second leader).
    // The one clock every task of the operator stamps its decisions and writes with.
    let clock: fn() -> jiff::Timestamp = jiff::Timestamp::now;
    let _reporting = AbortOnDrop(tokio::spawn(crate::reporting::run(
        client.clone(),
        stores.nodes.clone(),
        stores.leases.clone(),
        stores.statuses.clone(),
        crate::reporting::DEFAULT_GAP,
        metrics.clone(),
        clock,
    )));
    let _janitor = AbortOnDrop(tokio::spawn(crate::janitor::run(client.clone(), stores.clone(), clock)));
    let ctx = Arc::new(Context { metrics, tracer, template, clock, ..Context::new(client, Some(recorder), stores) });
    // A DaemonSet changed or deleted (by a person, or its pods' state) wakes the rollout it was
    // written for, owned or orphaned.
    Controller::new(rollouts, kube::runtime::watcher::Config::default())
        .watches(dss, kube::runtime::watcher::Config::default().labels(vigil_crds::agent::SELECTOR), |ds| {
            rollout_of(&ds)
        })
        .reconcile_all_on(throttled(nudges))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                // The whole chain: which write failed and what the API server said.
                let error = format!("{:#}", anyhow::Error::new(e));
                tracing::warn!(%error, "reconcile failed");
            }
        })
        .await;
    // Stopped (SIGTERM): the reporting and the janitor end here, before the leader lets go
    // of its Lease.
}

/// A spawned task that ends when its handle is dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

mod wakes;

#[cfg(test)]
mod tests;
