//! What the agent tells the cluster about its node: a heartbeat Lease renewed like a
//! kubelet's node Lease, and the node's AgentStatus (spec once, status on every report).
//!
//! The bodies are built by pure functions from the latest snapshot; `round` sends them. The
//! agent writes only its own node's objects (an admission policy enforces it), with the
//! field manager `vigil-agent`.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Error as KubeError};
use serde_json::{Value, json};
use vigil_crds::{AgentHealth, AgentStatusStatus, SourceReport, SourceState};

use crate::selfmon::Usage;
use crate::snapshot::Snapshot;

/// Field manager of the agent's writes.
pub use vigil_crds::agent::FIELD_MANAGER;

/// Who this agent is, from the pod's environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The node (downward API `spec.nodeName`, variable `NODE_NAME`).
    pub node: String,
    /// The pod's namespace (`POD_NAMESPACE`): where the heartbeat Lease lives.
    pub namespace: String,
    /// The revision the pod was started for (`VIGIL_REVISION`).
    pub revision: Option<String>,
    /// The config SHA-256 the agent verified (`VIGIL_CONFIG_SHA256`).
    pub config_sha256: Option<String>,
}

/// The heartbeat Lease's name for a node (the operator reads the same name).
pub use vigil_crds::agent::lease_name;

/// The heartbeat Lease as the agent writes it.
pub fn lease(id: &Identity, now: Timestamp, duration: Duration) -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": lease_name(&id.node), "namespace": id.namespace, "labels": {vigil_crds::agent::NAME_LABEL.0: vigil_crds::agent::NAME_LABEL.1}},
        "spec": {
            // The revision whose agent renews it: during a handover the operator reads from it
            // which of the node's two agents works (the node name when the pod has no revision).
            "holderIdentity": id.revision.as_deref().unwrap_or(&id.node),
            "leaseDurationSeconds": duration.as_secs(),
            "renewTime": MicroTime(now),
        }
    }))
    .unwrap_or_default()
}

/// The agent's verdict on itself from its latest snapshot.
pub fn health(s: &Snapshot) -> (AgentHealth, Option<String>) {
    let missing: Vec<&str> = [("cpu", s.cpu.is_none()), ("memory", s.memory.is_none())]
        .into_iter()
        .filter(|(_, m)| *m)
        .map(|(n, _)| n)
        .collect();
    if !missing.is_empty() {
        return (AgentHealth::Unhealthy, Some(format!("cannot read {} of the host", missing.join(" and "))));
    }
    // A process exiting mid-scan is normal; any other failed read degrades the agent.
    let failed: Vec<String> = s
        .read_errors
        .iter()
        .filter(|(_, k, _)| !matches!(k, crate::proc::ErrorKind::Vanished))
        .map(|(r, k, n)| format!("{r} {} {n}", k.as_str()))
        .collect();
    if !failed.is_empty() {
        return (AgentHealth::Degraded, Some(format!("failed reads: {}", failed.join(", "))));
    }
    (AgentHealth::Healthy, None)
}

/// Event counters for the status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Events since start.
    pub total: u64,
    /// Events dropped and records lost before they were read, since start.
    pub dropped: u64,
    /// Drops and losses since the previous status.
    pub dropped_since_last: u64,
}

/// The alert pipeline's figures for the status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlertCounts {
    /// Alerts firing.
    pub active: u32,
    /// Notifications waiting in the spool.
    pub spooled: u64,
    /// Notifications in the dead-letter spool.
    pub dead_lettered: u64,
    /// Receivers whose deliveries have failed longer than `failingAfter`.
    pub failing_receivers: u32,
    /// The policies on disk were refused (the last good set is in force).
    pub policy_refused: bool,
}

/// The agent's own figures for the status.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AgentFigures {
    /// RSS and CPU time.
    pub own: Option<Usage>,
    /// CPU over the last report interval.
    pub cpu_millicores: u32,
    /// Event counters.
    pub events: EventCounts,
    /// Alert figures.
    pub alerts: AlertCounts,
}

/// The AgentStatus server-side-apply body for the latest snapshot.
pub fn status_apply(
    id: &Identity,
    version: &str,
    s: &Snapshot,
    figures: AgentFigures,
    sources: &[SourceReport],
    now: Timestamp,
    node_uid: Option<&str>,
) -> Value {
    let AgentFigures { own, cpu_millicores, events, alerts } = figures;
    let (mut health, mut health_reason) = health(s);
    let lacking: Vec<&SourceReport> = sources.iter().filter(|r| r.state != SourceState::On).collect();
    if !lacking.is_empty() && health == AgentHealth::Healthy {
        health = AgentHealth::Degraded;
        let each: Vec<String> = lacking
            .iter()
            .map(|r| format!("{} {}: {}", r.name, r.state.as_str(), r.reason.as_deref().unwrap_or("")))
            .collect();
        health_reason = Some(format!("event sources: {}", each.join("; ")));
    }
    if events.dropped_since_last > 0 && health == AgentHealth::Healthy {
        health = AgentHealth::Degraded;
        health_reason = Some(format!("{} security events dropped since the last report", events.dropped_since_last));
    }
    if alerts.failing_receivers > 0 && health == AgentHealth::Healthy {
        health = AgentHealth::Degraded;
        health_reason = Some(format!("alert delivery failing to {} receiver(s)", alerts.failing_receivers));
    }
    if alerts.policy_refused && health == AgentHealth::Healthy {
        health = AgentHealth::Degraded;
        health_reason = Some("alert policy refused; the last good set is in force".into());
    }
    let status = AgentStatusStatus {
        agent_version: Some(version.to_owned()),
        revision: id.revision.clone(),
        config_sha256: id.config_sha256.clone(),
        kernel: s.host.identity.kernel.clone(),
        os_image: s.host.identity.os_image.clone(),
        architecture: Some(s.host.identity.architecture.clone()),
        health,
        health_reason,
        last_report_time: Some(Time(now)),
        events_total: events.total,
        dropped_total: events.dropped,
        active_alerts: alerts.active,
        spooled: alerts.spooled,
        dead_lettered: alerts.dead_lettered,
        rss_bytes: own.map_or(0, |u| u.rss_bytes),
        cpu_millicores,
        sources_summary: (!sources.is_empty()).then(|| sources_summary(sources)),
        sources: sources.to_vec(),
        ..Default::default()
    };
    let mut metadata = json!({"name": id.node});
    if let Some(uid) = node_uid {
        // Owned by its Node, so it goes with the node.
        metadata["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node", "name": id.node, "uid": uid}]);
    }
    json!({
        "apiVersion": vigil_crds::API_VERSION,
        "kind": "AgentStatus",
        "metadata": metadata,
        "spec": {"nodeName": id.node},
        "status": status,
    })
}

/// `6 on, 1 degraded (process), 1 off (kernel)`: the sources in one line for `kubectl get`.
pub fn sources_summary(sources: &[SourceReport]) -> String {
    let mut parts = Vec::new();
    for state in [SourceState::On, SourceState::Degraded, SourceState::Off] {
        let word = state.as_str();
        let names: Vec<&str> = sources.iter().filter(|r| r.state == state).map(|r| r.name.as_str()).collect();
        if names.is_empty() {
            continue;
        }
        if state == SourceState::On {
            parts.push(format!("{} {word}", names.len()));
        } else {
            parts.push(format!("{} {word} ({})", names.len(), names.join(", ")));
        }
    }
    parts.join(", ")
}

/// Where the reports go and how often.
pub struct Reporter {
    /// API client (in-cluster).
    pub client: Client,
    /// This agent's identity.
    pub identity: Identity,
    /// The node's uid, for the AgentStatus owner reference.
    pub node_uid: Option<String>,
    /// The node's labels (read once at start), for the alert policies' node selectors.
    pub node_labels: Option<std::collections::BTreeMap<String, String>>,
    /// Time between Lease renewals.
    pub heartbeat_every: Duration,
    /// Time between AgentStatus writes.
    pub status_every: Duration,
    /// When the last AgentStatus was written, with the agent's CPU seconds then.
    last_status: Option<(std::time::Instant, f64)>,
    /// Drops reported in the last AgentStatus.
    last_dropped: u64,
    /// What the log last said of the heartbeat and the status writes (said again only when it
    /// changes, so a failing API server does not flood the log).
    said: (Option<String>, Option<String>),
}

impl Reporter {
    /// A reporter when the agent runs in a pod (`NODE_NAME` and `POD_NAMESPACE` set, the
    /// in-cluster service account available); `None` on a plain host.
    pub async fn from_pod_env() -> Option<Self> {
        let node = std::env::var(vigil_crds::agent::env::NODE_NAME).ok().filter(|v| !v.is_empty())?;
        let namespace = std::env::var(vigil_crds::agent::env::POD_NAMESPACE).ok().filter(|v| !v.is_empty())?;
        let config = kube::Config::incluster().ok()?;
        let client = Client::try_from(config).ok()?;
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let node_object = nodes.get_opt(&node).await.ok().flatten();
        let node_labels = node_object.as_ref().and_then(|n| n.metadata.labels.clone());
        let node_uid = node_object.and_then(|n| n.metadata.uid);
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(Self {
            client,
            identity: Identity {
                node,
                namespace,
                revision: env(vigil_crds::agent::env::REVISION),
                config_sha256: env(vigil_crds::agent::env::CONFIG_SHA256),
            },
            node_uid,
            node_labels,
            heartbeat_every: Duration::from_secs(10),
            status_every: Duration::from_secs(30),
            last_status: None,
            last_dropped: 0,
            said: (None, None),
        })
    }

    /// One heartbeat: renews the Lease, and writes the AgentStatus when it is due. True when
    /// it wrote the AgentStatus.
    pub async fn tick(
        &mut self,
        snapshot: Option<&Snapshot>,
        own: Option<Usage>,
        version: &str,
        events: Option<&crate::events::EventStats>,
        alerts: AlertCounts,
        sources: &[SourceReport],
    ) -> bool {
        // A failed renewal shows as a heartbeat gap to the operator; that is the point.
        let beat = heartbeat(&self.client, &self.identity, Timestamp::now(), self.lease_duration()).await;
        let line = match beat {
            Ok(()) => format!(
                "renewing Lease {}/{} every {:?}",
                self.identity.namespace,
                lease_name(&self.identity.node),
                self.heartbeat_every
            ),
            Err(e) => format!("renewing Lease {}/{}: {e}", self.identity.namespace, lease_name(&self.identity.node)),
        };
        say_once(&mut self.said.0, line);
        let due = self.last_status.is_none_or(|(at, _)| at.elapsed() >= self.status_every);
        let Some(s) = snapshot.filter(|_| due) else { return false };
        let cpu = match (own, self.last_status) {
            (Some(u), Some((at, cpu0))) => {
                ((u.cpu_seconds - cpu0) / at.elapsed().as_secs_f64() * 1000.0).max(0.0) as u32
            }
            _ => 0,
        };
        let counts = events.map_or_else(EventCounts::default, |e| {
            let dropped = e.total_dropped().saturating_add(e.total_lost());
            EventCounts {
                total: e.total_emitted(),
                dropped,
                dropped_since_last: dropped.saturating_sub(self.last_dropped),
            }
        });
        let body = status_apply(
            &self.identity,
            version,
            s,
            AgentFigures { own, cpu_millicores: cpu, events: counts, alerts },
            sources,
            Timestamp::now(),
            self.node_uid.as_deref(),
        );
        let written = report(&self.client, &body, &self.identity.node).await;
        let ok = written.is_ok();
        let line = match written {
            Ok(()) => {
                self.last_status = Some((std::time::Instant::now(), own.map_or(0.0, |u| u.cpu_seconds)));
                self.last_dropped = counts.dropped;
                format!(
                    "writing AgentStatus {} every {:?}: {}",
                    self.identity.node,
                    self.status_every,
                    body["status"]["health"].as_str().unwrap_or("Unknown")
                )
            }
            Err(e) => format!("writing AgentStatus {}: {e}", self.identity.node),
        };
        say_once(&mut self.said.1, line);
        ok
    }

    /// The rollout trace this agent's start-up belongs to: `VIGIL_ROLLOUT_TRACE_ID`, which the
    /// operator sets in each revision's DaemonSet (the agent reads no pod from the API).
    pub fn rollout_trace(&self) -> Option<[u8; 16]> {
        std::env::var(vigil_crds::agent::env::ROLLOUT_TRACE_ID).ok().and_then(|v| vigil_crds::trace::parse_trace_id(&v))
    }

    /// The Lease duration the operator's heartbeat gap is measured against: four renewals.
    pub fn lease_duration(&self) -> Duration {
        self.heartbeat_every * 4
    }
}

/// Logs `line` (the pod's log) when it differs from what was said last.
fn say_once(last: &mut Option<String>, line: String) {
    if last.as_deref() != Some(line.as_str()) {
        tracing::info!("reporting: {line}");
        *last = Some(line);
    }
}

/// Renews (or creates) the heartbeat Lease.
pub async fn heartbeat(client: &Client, id: &Identity, now: Timestamp, duration: Duration) -> Result<(), KubeError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &id.namespace);
    let name = lease_name(&id.node);
    let body = lease(id, now, duration);
    match api.get_opt(&name).await? {
        Some(mut current) => {
            current.spec = body.spec;
            api.replace(&name, &PostParams::default(), &current).await.map(|_| ())
        }
        None => api.create(&PostParams::default(), &body).await.map(|_| ()),
    }
}

/// Sets the agent's conditions on its Node (a strategic-merge patch of its status, merged by
/// condition type: the kubelet's conditions are not touched), within 10 s.
pub async fn node_conditions(client: &Client, node: &str, patch: &Value) -> Result<(), String> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let manager = vigil_crds::agent::NODE_CONDITIONS_MANAGER;
    let params = kube::api::PatchParams { field_manager: Some(manager.into()), ..Default::default() };
    match tokio::time::timeout(
        Duration::from_secs(10),
        nodes.patch_status(node, &params, &kube::api::Patch::Strategic(patch)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("patching node {node}'s status: {e}")),
        Err(_) => Err(format!("patching node {node}'s status: no answer within 10s")),
    }
}

/// Writes the node's AgentStatus (object and status subresource).
pub async fn report(client: &Client, body: &Value, node: &str) -> Result<(), KubeError> {
    let api: Api<vigil_crds::AgentStatus> = Api::all(client.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(node, &pp, &Patch::Apply(body)).await?;
    api.patch_status(node, &pp, &Patch::Apply(body)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Collectors, CompiledFilters};
    use crate::host::HostRoot;
    use crate::snapshot::Collector;

    fn id() -> Identity {
        Identity {
            node: "node-a".into(),
            namespace: "vigil-system".into(),
            revision: Some("r-aaaaaaaaaa".into()),
            config_sha256: Some("b".repeat(64)),
        }
    }

    fn snapshot() -> Snapshot {
        let root = HostRoot::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debian12-vm"));
        Collector::new(root, Collectors::default(), CompiledFilters::default(), 0).collect(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn the_lease_is_named_after_the_node_and_labelled_for_the_operator() {
        let l = lease(&id(), Timestamp::UNIX_EPOCH, Duration::from_secs(40));
        assert_eq!(l.metadata.name.as_deref(), Some("vigil-agent-node-a"));
        assert_eq!(l.metadata.labels.unwrap()["app.kubernetes.io/name"], "vigil-agent");
        let spec = l.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("r-aaaaaaaaaa"), "the holder is the agent's revision");
        let bare = Identity { revision: None, ..id() };
        let l = lease(&bare, Timestamp::UNIX_EPOCH, Duration::from_secs(40));
        assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("node-a"), "no revision: the node");
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(Timestamp::UNIX_EPOCH)));
    }

    #[test]
    fn the_status_reports_revision_config_host_and_health_and_is_a_valid_agentstatus() {
        let s = snapshot();
        let body = status_apply(
            &id(),
            "0.1.0",
            &s,
            AgentFigures {
                own: Some(Usage { rss_bytes: 7 << 20, cpu_seconds: 1.0 }),
                cpu_millicores: 2,
                events: EventCounts { total: 12, dropped: 3, dropped_since_last: 0 },
                alerts: AlertCounts { active: 2, spooled: 5, dead_lettered: 1, ..AlertCounts::default() },
            },
            &[],
            Timestamp::UNIX_EPOCH,
            Some("uid-n"),
        );
        assert_eq!(
            (body["status"]["eventsTotal"].as_u64(), body["status"]["droppedTotal"].as_u64()),
            (Some(12), Some(3))
        );
        assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(body["status"]["revision"], "r-aaaaaaaaaa");
        assert_eq!(body["status"]["kernel"], "6.18.44-fc-v445");
        assert_eq!(body["status"]["rssBytes"], 7 << 20);
        assert_eq!(
            [&body["status"]["activeAlerts"], &body["status"]["spooled"], &body["status"]["deadLettered"]],
            [2, 5, 1]
        );
        assert_eq!(body["status"]["health"], "Healthy", "{body}");
        // The same rules the API server applies.
        vigil_crds::validate::validate_manifest(&body).unwrap();
    }

    #[tokio::test]
    async fn a_round_creates_the_lease_then_applies_the_agentstatus_and_its_status() {
        use http::{Method, Request, Response};
        use kube::client::Body;
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let reply = |status: u16, v: Value| {
            Response::builder().status(status).body(Body::from(serde_json::to_vec(&v).unwrap())).unwrap()
        };
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(
                (req.method(), req.uri().path()),
                (&Method::GET, "/apis/coordination.k8s.io/v1/namespaces/vigil-system/leases/vigil-agent-node-a")
            );
            send.send_response(reply(
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            ));
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::POST);
            let body: Value = serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            assert_eq!(body["spec"]["holderIdentity"], "r-aaaaaaaaaa");
            send.send_response(reply(201, body));
            for path in [
                "/apis/vigil.dev/v1alpha1/agentstatuses/node-a",
                "/apis/vigil.dev/v1alpha1/agentstatuses/node-a/status",
            ] {
                let (req, send) = handle.next_request().await.unwrap();
                assert_eq!((req.method(), req.uri().path()), (&Method::PATCH, path));
                assert!(req.uri().query().unwrap().contains("fieldManager=vigil-agent"));
                let body: Value = serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
                assert_eq!(body["spec"]["nodeName"], "node-a");
                send.send_response(reply(200, body));
            }
        });
        heartbeat(&client, &id(), Timestamp::UNIX_EPOCH, Duration::from_secs(40)).await.unwrap();
        let body = status_apply(&id(), "0.1.0", &snapshot(), AgentFigures::default(), &[], Timestamp::UNIX_EPOCH, None);
        report(&client, &body, "node-a").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
    }

    #[test]
    fn failing_delivery_and_a_refused_policy_degrade_a_healthy_agent() {
        let with = |alerts| AgentFigures { alerts, ..AgentFigures::default() };
        let failing = AlertCounts { failing_receivers: 1, ..AlertCounts::default() };
        let body = status_apply(&id(), "0.1.0", &snapshot(), with(failing), &[], Timestamp::UNIX_EPOCH, None);
        assert_eq!(body["status"]["healthReason"], "alert delivery failing to 1 receiver(s)");
        let refused = AlertCounts { policy_refused: true, ..AlertCounts::default() };
        let body = status_apply(&id(), "0.1.0", &snapshot(), with(refused), &[], Timestamp::UNIX_EPOCH, None);
        assert_eq!(body["status"]["health"], "Degraded");
        assert_eq!(body["status"]["healthReason"], "alert policy refused; the last good set is in force");
    }

    fn source(name: &str, state: SourceState, mode: &str, reason: &str) -> SourceReport {
        SourceReport { name: name.into(), state, mode: Some(mode.into()), reason: Some(reason.into()) }
    }

    #[test]
    fn each_source_is_reported_and_one_off_or_degraded_makes_the_agent_degraded() {
        let on = [
            source("kernel", SourceState::On, "syslog", "ring buffer"),
            source("clock", SourceState::On, "adjtimex", ""),
        ];
        let body = status_apply(&id(), "0.1.0", &snapshot(), AgentFigures::default(), &on, Timestamp::UNIX_EPOCH, None);
        assert_eq!(body["status"]["health"], "Healthy", "{body}");
        assert_eq!(body["status"]["sourcesSummary"], "2 on");
        assert_eq!(body["status"]["sources"][0]["mode"], "syslog");
        let mixed = [
            on[0].clone(),
            source("process", SourceState::Degraded, "poll", "polling /proc every 1s"),
            source("auth", SourceState::Off, "file", "no auth log"),
        ];
        let body =
            status_apply(&id(), "0.1.0", &snapshot(), AgentFigures::default(), &mixed, Timestamp::UNIX_EPOCH, None);
        assert_eq!(body["status"]["health"], "Degraded");
        assert_eq!(body["status"]["sourcesSummary"], "1 on, 1 degraded (process), 1 off (auth)");
        let why = body["status"]["healthReason"].as_str().unwrap();
        assert!(
            why.contains("process degraded: polling /proc every 1s") && why.contains("auth off: no auth log"),
            "{why}"
        );
        let full = serde_json::json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "AgentStatus", "metadata": body["metadata"], "spec": body["spec"], "status": body["status"]});
        assert!(vigil_crds::validate::validate_manifest(&full).is_ok(), "{full}");
    }

    #[test]
    fn drops_since_the_last_report_degrade_a_healthy_agent() {
        let figures = |since| AgentFigures {
            events: EventCounts { total: 5, dropped: 9, dropped_since_last: since },
            ..AgentFigures::default()
        };
        let body = status_apply(&id(), "0.1.0", &snapshot(), figures(4), &[], Timestamp::UNIX_EPOCH, None);
        assert_eq!(body["status"]["health"], "Degraded");
        assert!(body["status"]["healthReason"].as_str().unwrap().contains("4 security events dropped"), "{body}");
        let body = status_apply(&id(), "0.1.0", &snapshot(), figures(0), &[], Timestamp::UNIX_EPOCH, None);
        assert_eq!(body["status"]["health"], "Healthy", "old drops do not degrade for ever");
    }

    #[test]
    fn unreadable_cpu_or_memory_is_unhealthy_and_failed_reads_degrade() {
        let mut s = snapshot();
        s.memory = None;
        assert_eq!(health(&s).0, AgentHealth::Unhealthy);
        let mut s = snapshot();
        s.read_errors.count("fd", crate::proc::ErrorKind::Permission);
        let (h, why) = health(&s);
        assert_eq!(h, AgentHealth::Degraded);
        assert!(why.unwrap().contains("fd permission 1"));
        let mut s = snapshot();
        s.read_errors.count("processes", crate::proc::ErrorKind::Vanished);
        assert_eq!(health(&s).0, AgentHealth::Healthy, "a process exiting mid-scan is normal");
    }
}
