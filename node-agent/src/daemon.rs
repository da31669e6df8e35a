//! `vigil-agent run`: snapshots at an interval, served on `/metrics` and pushed over OTLP.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::events::{Event, EventQueue, EventStats, EventType, Severity, render_line};
use crate::export::prometheus::{self, Latest};
use crate::host::HostRoot;
use crate::selfmon::SelfUsage;
use crate::snapshot::Collector;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config's filters do not compile.
    #[error("{0}: {1}")]
    Filter(&'static str, globset::Error),
    /// The metrics address could not be bound.
    #[error("binding the metrics endpoint to {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics server failed.
    #[error("serving metrics")]
    Serve(#[source] std::io::Error),
    /// The OTLP exporter could not be built.
    #[error("setting up the OTLP exporter")]
    Otlp(#[source] crate::export::otlp::OtlpError),
    /// The alert spool could not be opened.
    #[error("opening the alert spool")]
    Spool(#[source] crate::alert::spool::SpoolError),
}

struct Shared {
    registry: Registry,
    latest: Latest,
    /// A snapshot older than this makes `/readyz` fail.
    stale_after: Duration,
    started: Instant,
}

/// Opens the start-up span in the trace of this agent's pod (none when the pod names no
/// trace, or the pipeline cannot be built: said once in the log), with its first steps: the
/// config verified (the agent runs only once it is) and the event sources started.
async fn start_up_span(
    r: &crate::report::Reporter,
    config: &Config,
    version: &'static str,
    started: std::time::SystemTime,
    events: Option<&EventConsumer>,
) -> Option<crate::export::otlp::StartupSpan> {
    use opentelemetry::KeyValue;
    let trace = r.rollout_trace()?;
    let id = &r.identity;
    let mut attrs = vec![
        KeyValue::new("k8s.node.name", id.node.clone()),
        KeyValue::new("k8s.namespace.name", id.namespace.clone()),
        KeyValue::new("vigil.agent.version", version),
    ];
    if let Some(rev) = &id.revision {
        attrs.push(KeyValue::new("vigil.revision", rev.clone()));
    }
    let mut span = match crate::export::otlp::StartupSpan::start(config, version, trace, started, attrs) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "start-up trace not sent");
            return None;
        }
    };
    span.step(
        "config verified",
        id.config_sha256.iter().map(|h| KeyValue::new("vigil.config.sha256", h.clone())).collect(),
    );
    if let Some(e) = events {
        let states = e.sources.states.lock().ok().map(|s| s.reports()).unwrap_or_default();
        let line: Vec<String> = states.iter().map(|s| format!("{}={:?}", s.name, s.state)).collect();
        span.step("sources started", vec![KeyValue::new("vigil.sources", line.join(","))]);
    }
    Some(span)
}

/// Runs until `shutdown` resolves, taking over the live sources opened `early` (during a
/// handover; see [`crate::handover::exclusive`]). `on_bound` receives the metrics address once listening
/// (tests bind port 0 and read the real port from it).
///
/// With `report`, an agent running in a pod (`NODE_NAME` and `POD_NAMESPACE` set, an in-cluster
/// service account) renews its heartbeat Lease and writes its node's AgentStatus; on a plain
/// host there is nothing to report to and it does neither.
pub async fn run(
    config: Config,
    version: &'static str,
    report: bool,
    shutdown: impl std::future::Future<Output = ()>,
    early: crate::events::runner::Early,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), DaemonError> {
    let started = std::time::SystemTime::now();
    let filters = config.compiled_filters().map_err(|(k, e)| DaemonError::Filter(k, e))?;
    let mut collector = Collector::new(
        HostRoot::new(config.host_root.clone()),
        config.collectors.clone(),
        filters,
        config.processes.top,
    );
    let latest: Latest = Arc::new(RwLock::new(None));
    let self_usage = SelfUsage::default();
    let (registry, metrics) = prometheus::registry(latest.clone(), self_usage, version);
    let node = crate::proc::identity::node_name(&HostRoot::new(config.host_root.clone()), config.node_name.as_deref());
    // In a pod (the kubelet sets KUBERNETES_SERVICE_HOST in every one) with the published
    // policies mounted, unset `alerts.policies` means those.
    let published = Path::new(vigil_crds::policy::POLICIES_DIR);
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let pod_default = (in_pod && published.is_dir()).then_some(published);
    if config.alerts.policies.is_none() && in_pod {
        match pod_default {
            Some(d) => tracing::info!(
                policies = %d.display(),
                "alerts: applying the AlertPolicies the operator publishes (set alerts.policies to choose others, [] for none)"
            ),
            None => tracing::info!(
                published = %published.display(),
                "alerts: off: alerts.policies is not set and no published policies are mounted"
            ),
        }
    }
    let alerts = match crate::config::alert_pipeline(&config, &node, pod_default) {
        Some(c) => Some(crate::alert::pipeline::Pipeline::start(c).map_err(DaemonError::Spool)?),
        None => None,
    };
    if let Some(p) = &alerts {
        crate::alert::pipeline::register_table(&metrics.tables, p);
    }
    let mut events = if config.events.enabled {
        let otlp_logs = if config.exporters.otlp.enabled && config.exporters.otlp.events {
            Some(crate::export::otlp::OtlpLogs::start(&config, version).map_err(DaemonError::Otlp)?)
        } else {
            None
        };
        let (queue, rx) = EventQueue::new(config.events.queue_capacity, &node);
        let sources = crate::events::runner::start_after(&config, &queue, early);
        prometheus::register_events(&metrics.tables, queue.clone(), sources.states.clone());
        Some(EventConsumer {
            rx,
            stats: queue.stats(),
            sources,
            log: config.events.log,
            drops: DropSummary::new(&node),
            otlp_logs,
            states_seen: crate::events::runner::SourceStates::default(),
        })
    } else {
        None
    };
    let shared = Arc::new(Shared {
        registry,
        latest: latest.clone(),
        stale_after: config.interval * 3,
        started: Instant::now(),
    });

    let server = if config.exporters.prometheus.enabled {
        let addr = config.exporters.prometheus.listen.clone();
        let listener = TcpListener::bind(&addr).await.map_err(|source| DaemonError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(DaemonError::Serve)?;
        on_bound(bound);
        let app = Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready_handler))
            .with_state(shared.clone());
        Some(tokio::spawn(async move { axum::serve(listener, app).await }))
    } else {
        None
    };
    let otlp = if config.exporters.otlp.enabled {
        Some(crate::export::otlp::start(&config, metrics.tables.clone(), version).map_err(DaemonError::Otlp)?)
    } else {
        None
    };

    // Before the first tick, so the release comes at the tick 30 s on, not one later.
    let (started_at, mut startup_released) = (Instant::now(), false);
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reporter = if report { crate::report::Reporter::from_pod_env().await } else { None };
    // In a pod of a rollout, with OTLP on: the start-up as a span of the rollout's trace.
    let mut startup = match (&reporter, config.exporters.otlp.enabled) {
        (Some(r), true) => start_up_span(r, &config, version, started, events.as_ref()).await,
        _ => None,
    };
    if let (Some(p), Some(labels)) = (&alerts, reporter.as_ref().and_then(|r| r.node_labels.clone())) {
        p.set_node_labels(labels);
    }
    // The node's own pods from the kubelet's log directories, so events name theirs
    // (namespace, name, container); empty off Kubernetes.
    let pods = crate::events::pods::PodIndex::from_host(&HostRoot::new(config.host_root.clone()));
    // In a pod: conditions on the node's own Node from kernel and clock events.
    let mut saved_conditions = ConditionsFile::new(&config);
    let mut conditions = (reporter.is_some() && events.is_some() && config.events.conditions.enabled)
        .then(|| saved_conditions.load(&config));
    let mut conditions_written: Option<(Vec<crate::events::conditions::Condition>, Instant)> = None;
    let mut beats = tokio::time::interval(reporter.as_ref().map_or(Duration::from_secs(3600), |r| r.heartbeat_every));
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    // Working, with the sources started: the pod's readiness probe may say so.
    let ready = ReadyFile::write();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = beats.tick(), if reporter.is_some() => {
                if let Some(r) = reporter.as_mut() {
                    let snapshot = latest.read().ok().and_then(|g| g.clone());
                    let stats = events.as_ref().map(|e| e.stats.clone());
                    let counts = alerts.as_ref().map(crate::alert::pipeline::Pipeline::counts).unwrap_or_default();
                    let sources = events
                        .as_ref()
                        .and_then(|e| e.sources.states.lock().ok().map(|s| s.reports()))
                        .unwrap_or_default();
                    let wrote =
                        r.tick(snapshot.as_deref(), self_usage.read(), version, stats.as_deref(), counts, &sources).await;
                    if wrote && let Some(mut s) = startup.take() {
                        s.step("first report", Vec::new());
                        // Sent off the runtime's thread: a gRPC export needs the runtime running.
                        drop(tokio::task::spawn_blocking(move || s.finish(None)));
                    }
                }
                continue;
            }
            Some(mut event) = next_event(&mut events) => {
                pods.attribute(&mut event);
                if let Some(c) = conditions.as_mut() {
                    c.observe(&event, jiff::Timestamp::now());
                }
                if let Some(consumer) = events.as_mut() {
                    consumer.handle(&event);
                }
                if let Some(p) = &alerts {
                    p.event(&event);
                }
                continue;
            }
            () = &mut shutdown => break,
        }
        // Start-up done (configuration, clients, the first baseline walk): its code goes back
        // to the kernel, once; what runs later comes back on first use.
        if !startup_released && started_at.elapsed() >= crate::selfmon::RELEASE_STARTUP_AFTER {
            startup_released = true;
            let r = crate::selfmon::release_startup_code();
            let (before, after) = r.resident_kib;
            tracing::info!(
                "memory: gave the kernel back its start-up code: the binary's resident pages {:.1} -> {:.1} MiB{}",
                before as f64 / 1024.0,
                after as f64 / 1024.0,
                if r.advised == 0 { " (refused: Linux before 5.4, or a binary this user may not write)" } else { "" }
            );
        }
        // Reading the host takes milliseconds; doing it inline keeps the agent on one thread.
        let snapshot = collector.collect(jiff::Timestamp::now());
        metrics.observe(&snapshot);
        if let Some(o) = &otlp {
            o.observe_scan(&snapshot);
        }
        if let Some(s) = startup.as_mut().filter(|s| !s.has_step("first scan")) {
            s.step("first scan", Vec::new());
        }
        if let Some(consumer) = events.as_mut() {
            if let Some(summary) = consumer.drops.check(&consumer.stats, snapshot.time) {
                consumer.handle(&summary);
            }
            consumer.sources.report_changes(&mut consumer.states_seen);
        }
        if let (Some(c), Some(r)) = (conditions.as_mut(), reporter.as_ref()) {
            let kubelet = crate::kubelet::probe(crate::events::health::KUBELET_HEALTHZ, Duration::from_secs(2)).await;
            c.observe_kubelet(&kubelet, snapshot.time);
            if let Some(fs) = &snapshot.filesystems {
                // By the mount's source and by the kernel's name of its device: the kernel
                // says `dm-0` of what is mounted as `/dev/mapper/vg-root`.
                let names = fs.iter().flat_map(|f| {
                    std::iter::once((f.device.as_str(), f.read_only))
                        .chain(f.kernel_name.as_deref().map(|k| (k, f.read_only)))
                });
                c.observe_mounts(names, snapshot.time);
            }
            let now = c.current(snapshot.time);
            saved_conditions.save(c);
            // Written when one changes, and every 5 minutes (the heartbeat time people read).
            let due = conditions_written
                .as_ref()
                .is_none_or(|(last, at)| *last != now || at.elapsed() >= Duration::from_secs(300));
            if due {
                let patch = crate::events::conditions::status_patch(&now, snapshot.time);
                match crate::report::node_conditions(&r.client, &r.identity.node, &patch).await {
                    Ok(()) => conditions_written = Some((now, Instant::now())),
                    Err(e) => tracing::warn!(error = %e, "node conditions not written"),
                }
            }
        }
        let at = snapshot.time;
        let processes = if alerts.is_some() { crate::alert::rules::process_samples(&snapshot) } else { Vec::new() };
        if let Ok(mut slot) = latest.write() {
            *slot = Some(Arc::new(snapshot));
        }
        if let Some(p) = &alerts {
            // The rules see the series exactly as /metrics shows them.
            p.samples(at, crate::alert::rules::scan_samples(&metrics.tables, processes));
        }
        // The metrics server ended by itself: an error that the caller must see.
        if server.as_ref().is_some_and(tokio::task::JoinHandle::is_finished) {
            break;
        }
    }
    drop(ready);
    if let Some(s) = startup.take() {
        let _ = tokio::task::spawn_blocking(move || s.finish(Some("stopped before its first report".into()))).await;
    }
    if let Some(consumer) = events.take() {
        let EventConsumer { sources, stats, mut drops, log, otlp_logs, mut rx, .. } = consumer;
        sources.stop();
        // What the sources queued before they stopped still goes out.
        while let Ok(mut event) = rx.try_recv() {
            pods.attribute(&mut event);
            if let Some(c) = conditions.as_mut() {
                c.observe(&event, jiff::Timestamp::now());
            }
            deliver(log, otlp_logs.as_ref(), &event);
        }
        // What the conditions counted up to the last event is what the next agent goes on from.
        if let Some(c) = conditions.as_ref() {
            saved_conditions.save(c);
        }
        // What was dropped since the last summary is said before the agent goes.
        if let Some(summary) = drops.flush(&stats, jiff::Timestamp::now()) {
            deliver(log, otlp_logs.as_ref(), &summary);
        }
        if let Some(logs) = otlp_logs {
            logs.shutdown();
        }
    }
    if let Some(otlp) = otlp {
        otlp.shutdown();
    }
    if let Some(p) = alerts {
        p.stop();
    }
    if let Some(server) = server {
        if server.is_finished() {
            return match server.await {
                Ok(Err(e)) => Err(DaemonError::Serve(e)),
                _ => Ok(()),
            };
        }
        server.abort();
        // Until the task is gone the port stays bound; the agent taking over binds it next.
        let _ = server.await;
    }
    Ok(())
}

/// The daemon's end of the event queue.
struct EventConsumer {
    rx: tokio::sync::mpsc::Receiver<Event>,
    stats: Arc<EventStats>,
    sources: crate::events::runner::Sources,
    log: bool,
    drops: DropSummary,
    otlp_logs: Option<crate::export::otlp::OtlpLogs>,
    states_seen: crate::events::runner::SourceStates,
}

impl EventConsumer {
    fn handle(&mut self, event: &Event) {
        deliver(self.log, self.otlp_logs.as_ref(), event);
    }
}

/// An event to the log on stdout (when `log`) and the OTLP logs exporter.
fn deliver(log: bool, otlp_logs: Option<&crate::export::otlp::OtlpLogs>, event: &Event) {
    if log {
        // One JSON object per line on stdout: `kubectl logs` and any log shipper read it.
        if let Ok(line) = serde_json::to_string(event) {
            // Nor a closed stdout: the event still reaches the other consumers.
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        }
    }
    if let Some(logs) = otlp_logs {
        logs.emit(event);
    }
}

async fn next_event(events: &mut Option<EventConsumer>) -> Option<Event> {
    match events.as_mut() {
        Some(c) => c.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Turns growth of the drop counters into an `agent.dropped` event, at most once a minute, so a
/// reader of the event stream learns of the gap where it is.
pub struct DropSummary {
    node: String,
    /// Drops and losses already said.
    reported: (u64, u64),
    last: Option<jiff::Timestamp>,
}

impl DropSummary {
    /// A summary for `node`.
    pub fn new(node: &str) -> Self {
        Self { node: node.to_owned(), reported: (0, 0), last: None }
    }

    /// The summary event if drops or losses grew and the last one is a minute old.
    pub fn check(&mut self, stats: &EventStats, now: jiff::Timestamp) -> Option<Event> {
        if self.last.is_some_and(|t| now.duration_since(t) < jiff::SignedDuration::from_secs(60)) {
            return None;
        }
        self.flush(stats, now)
    }

    /// The summary event if drops or losses grew since the last one, however recent (on the
    /// way out).
    pub fn flush(&mut self, stats: &EventStats, now: jiff::Timestamp) -> Option<Event> {
        let (dropped, lost) = (stats.total_dropped(), stats.total_lost());
        if dropped <= self.reported.0 && lost <= self.reported.1 {
            return None;
        }
        let (new, new_lost) = (dropped.saturating_sub(self.reported.0), lost.saturating_sub(self.reported.1));
        self.reported = (dropped, lost);
        self.last = Some(now);
        let mut by: Vec<String> =
            stats.drops().iter().map(|(s, r, n)| format!("{} {} {n}", s.as_str(), r.as_str())).collect();
        by.extend(
            crate::events::Source::ALL
                .iter()
                .map(|s| (s, stats.lost(*s)))
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| format!("{} lost {n}", s.as_str())),
        );
        // Which containers were held to their share since the last summary, the noisiest first.
        let containers = stats.take_container_drops();
        let noisiest = containers
            .first()
            .map(|(id, n)| {
                format!("; container {} held to its share: {n} dropped", id.chars().take(12).collect::<String>())
            })
            .unwrap_or_default();
        let what = match (new, new_lost) {
            (_, 0) => format!("{new} events dropped"),
            (0, _) => format!("{new_lost} records lost before they were read"),
            _ => format!("{new} events dropped and {new_lost} records lost before they were read"),
        };
        let mut e = Event::new(EventType::Dropped, now, format!("{what} (since start: {}){noisiest}", by.join(", ")))
            .with("dropped", new)
            .with("droppedTotal", dropped)
            .with("lost", new_lost)
            .with("lostTotal", lost)
            .severity(Severity::Warning);
        if !containers.is_empty() {
            let top: serde_json::Map<String, serde_json::Value> =
                containers.into_iter().take(10).map(|(id, n)| (id, n.into())).collect();
            e = e.with("containerDrops", serde_json::Value::Object(top));
        }
        e.node.clone_from(&self.node);
        Some(e)
    }
}

/// Prints one event for a person or as a JSON line.
pub fn print_event(out: &mut impl std::io::Write, e: &Event, json: bool, color: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, e).map_err(std::io::Error::other)?;
        out.write_all(b"\n")
    } else {
        writeln!(out, "{}", render_line(e, color))
    }
}

/// Writes one alert transition: its line for a person, or a JSON line
/// `{"status": "firing"|"resolved", "fingerprint": …, "alert": {…}}`.
pub fn print_alert(
    out: &mut impl std::io::Write,
    a: &crate::alert::Alert,
    json: bool,
    color: bool,
) -> std::io::Result<()> {
    if json {
        let status = if a.resolved() { "resolved" } else { "firing" };
        let v = serde_json::json!({"status": status, "fingerprint": a.fingerprint(), "alert": a});
        serde_json::to_writer(&mut *out, &v).map_err(std::io::Error::other)?;
        out.write_all(b"\n")
    } else {
        writeln!(out, "{}", a.render_line(color))
    }
}

/// Prints, for `watch --policy`, the series that started learning and those that judge now.
pub fn print_learning(
    out: &mut impl std::io::Write,
    before: &[crate::alert::rules::Learning],
    now: &[crate::alert::rules::Learning],
    json: bool,
) -> std::io::Result<()> {
    let (started, done) = crate::alert::rules::learning_changes(before, now);
    for (l, learning) in started.into_iter().map(|l| (l, true)).chain(done.into_iter().map(|l| (l, false))) {
        if json {
            let series = series_json(&l.policy, &l.rule, &l.labels);
            let v = if learning {
                let unit = match l.progress.unit {
                    vigil_detect::Unit::Samples => "samples",
                    vigil_detect::Unit::Seconds => "seconds",
                };
                serde_json::json!({"status": "learning", "series": series, "have": l.progress.have, "need": l.progress.need, "unit": unit})
            } else {
                serde_json::json!({"status": "judging", "series": series})
            };
            serde_json::to_writer(&mut *out, &v).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        } else if learning {
            writeln!(out, "{l} before it judges")?;
        } else {
            writeln!(out, "{}/{}{}: judging", l.policy, l.rule, crate::alert::rules::labels_text(&l.labels))?;
        }
    }
    Ok(())
}

/// Prints how close anomaly rules' series are to firing (score ÷ limit, 1.0 fires): one line
/// per scan naming the [`SCORES_SHOWN`] closest and how many more there are, or one JSON
/// object per series.
pub fn print_scores(
    out: &mut impl std::io::Write,
    scores: &[crate::alert::rules::Score],
    json: bool,
) -> std::io::Result<()> {
    if scores.is_empty() {
        return Ok(());
    }
    if json {
        for s in scores {
            let series = series_json(&s.policy, &s.rule, &s.labels);
            serde_json::to_writer(
                &mut *out,
                &serde_json::json!({"status": "score", "series": series, "score": s.score}),
            )
            .map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    let mut closest: Vec<&crate::alert::rules::Score> = scores.iter().collect();
    closest.sort_by(|a, b| b.score.total_cmp(&a.score));
    let shown: Vec<String> = closest.iter().take(SCORES_SHOWN).map(ToString::to_string).collect();
    let more = scores.len().saturating_sub(SCORES_SHOWN);
    let more = if more > 0 { format!(" (and {more} more)") } else { String::new() };
    writeln!(out, "scores (1.00 fires): {}{more}", shown.join(", "))
}

/// A rule's series as `watch --policy --json` names it in its learning and score lines.
fn series_json(policy: &str, rule: &str, labels: &std::collections::BTreeMap<String, String>) -> serde_json::Value {
    serde_json::json!({"policy": policy, "rule": rule, "labels": labels})
}

/// Series a `watch --policy` score line names.
pub const SCORES_SHOWN: usize = 5;

/// Serves OpenMetrics to scrapers that ask for it (Prometheus does), the classic text format
/// to everything else (curl, promtool, older scrapers).
async fn metrics_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    match prometheus::encode(&shared.registry) {
        Ok(body) if wants_openmetrics => (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::OPENMETRICS)], body),
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::PROMETHEUS_TEXT)],
            prometheus::to_prometheus_text(&body),
        ),
        Err(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], "encoding failed\n".to_owned())
        }
    }
}

async fn ready_handler(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let newest = shared.latest.read().ok().and_then(|g| g.as_ref().map(|s| s.time));
    match newest {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no snapshot yet ({:.0?} since start)\n", shared.started.elapsed()),
        ),
        Some(t) => {
            let age = jiff::Timestamp::now().duration_since(t).unsigned_abs();
            if age > shared.stale_after {
                (StatusCode::SERVICE_UNAVAILABLE, format!("latest snapshot is {age:.0?} old\n"))
            } else {
                (StatusCode::OK, "ready\n".to_owned())
            }
        }
    }
}

/// The file that makes the agent's pod Ready (`VIGIL_READY_FILE`), while this agent works:
/// written (atomically) with the agent's pid and start time, removed when dropped (the agent
/// stops or hands over).
struct ReadyFile(Option<std::path::PathBuf>);

/// `pid starttime` of this process (the start time from `/proc/self/stat`, in clock ticks
/// since boot): what tells this agent from a later process given the same pid.
fn ready_text() -> Option<String> {
    let stat = crate::proc::processes::parse_stat(&std::fs::read("/proc/self/stat").ok()?)?;
    Some(format!("{} {}", std::process::id(), stat.starttime))
}

impl ReadyFile {
    fn write() -> Self {
        let Some(path) = ready_path() else {
            return Self(None);
        };
        let written = ready_text()
            .ok_or_else(|| std::io::Error::other("/proc/self/stat unreadable"))
            .and_then(|t| crate::events::tail::write_atomic_sync(&path, t.as_bytes(), false));
        match written {
            Ok(()) => Self(Some(path)),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "the ready file cannot be written: the pod will not be Ready");
                Self(None)
            }
        }
    }
}

impl Drop for ReadyFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The ready file of this agent's pod (`VIGIL_READY_FILE`), if it has one.
fn ready_path() -> Option<std::path::PathBuf> {
    std::env::var_os(vigil_crds::agent::env::READY_FILE).map(std::path::PathBuf::from)
}

/// Removes a ready file an earlier run of the agent's container left (killed, it could not):
/// the pod is not Ready until this agent works.
pub fn clear_ready_file() {
    if let Some(p) = ready_path() {
        let _ = std::fs::remove_file(p);
    }
}

/// Whether the agent whose ready file is `path` is working: the file names a live process
/// that started when the file says (not a later one given the same pid). `Err` says why not,
/// for the probe's output.
pub fn ready(path: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e}: this agent is not the node's working agent", path.display()))?;
    let mut words = text.split_whitespace();
    let (Some(pid), Some(started)) =
        (words.next().and_then(|p| p.parse::<u32>().ok()), words.next().and_then(|s| s.parse::<u64>().ok()))
    else {
        return Err(format!("{}: not `pid starttime`: {text:?}", path.display()));
    };
    let now = std::fs::read(format!("/proc/{pid}/stat")).ok().and_then(|b| crate::proc::processes::parse_stat(&b));
    match now {
        Some(stat) if stat.starttime == started => Ok(pid),
        Some(_) => Err(format!("{}: pid {pid} is another process now: the agent is gone", path.display())),
        None => Err(format!("{}: the agent (pid {pid}) is gone", path.display())),
    }
}

/// Where the node's conditions are kept for the next agent (`node-conditions.json` in the
/// state directory), and of which boot they are.
struct ConditionsFile {
    path: std::path::PathBuf,
    boot_id: String,
    last: Vec<u8>,
}

impl ConditionsFile {
    fn new(config: &Config) -> Self {
        let root = HostRoot::new(config.host_root.clone());
        let boot_id = crate::events::journal::boot_id_hex(&root.proc());
        Self { path: config.events.state_dir.join("node-conditions.json"), boot_id, last: Vec::new() }
    }

    /// The conditions the agent before this one saved on this boot, else all clear.
    fn load(&self, config: &Config) -> crate::events::conditions::Conditions {
        use crate::events::conditions::Conditions;
        let (settings, now) = (config.events.conditions.clone(), jiff::Timestamp::now());
        match std::fs::read(&self.path) {
            Ok(bytes) => Conditions::restore(settings.clone(), now, &bytes, &self.boot_id).unwrap_or_else(|e| {
                tracing::warn!(file = %self.path.display(), error = %e, "the node's conditions start clear");
                Conditions::new(settings, now)
            }),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %self.path.display(), error = %e, "the node's conditions start clear");
                }
                Conditions::new(settings, now)
            }
        }
    }

    /// Writes the conditions when they changed since the last write (atomically: the next
    /// agent reads the old or the new, never half). A boot without an id is not saved.
    fn save(&mut self, c: &crate::events::conditions::Conditions) {
        if self.boot_id.is_empty() {
            return;
        }
        let bytes = c.save(&self.boot_id);
        if self.last == bytes {
            return;
        }
        // Said once per change, not at every tick of a directory that cannot be written.
        if let Err(e) = crate::events::tail::write_atomic_sync(&self.path, &bytes, false) {
            tracing::warn!(
                file = %self.path.display(),
                error = %e,
                "the node's conditions are not kept for the next agent"
            );
        }
        self.last = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Source;
    use crate::events::queue::DropReason;

    #[test]
    fn scores_print_as_one_line_or_one_object_a_series() {
        let score = |disk: &str, score: f64| crate::alert::rules::Score {
            policy: "p".into(),
            rule: "Odd".into(),
            labels: [("disk".to_owned(), disk.to_owned())].into(),
            score,
        };
        let scores = [score("a", 0.42), score("b", 1.5)];
        let mut text = Vec::new();
        print_scores(&mut text, &scores, false).unwrap();
        assert_eq!(String::from_utf8(text).unwrap(), "scores (1.00 fires): p/Odd {disk=b} 1.50, p/Odd {disk=a} 0.42\n");
        let many: Vec<_> = (0..8).map(|i| score(&i.to_string(), f64::from(i) / 10.0)).collect();
        let mut text = Vec::new();
        print_scores(&mut text, &many, false).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.starts_with("scores (1.00 fires): p/Odd {disk=7} 0.70, ") && text.ends_with(" 0.30 (and 3 more)\n"),
            "{text}"
        );
        let mut json = Vec::new();
        print_scores(&mut json, &scores, true).unwrap();
        let lines: Vec<serde_json::Value> =
            String::from_utf8(json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["status"], "score");
        assert_eq!(lines[1]["series"]["labels"]["disk"], "b");
        assert_eq!(lines[1]["score"], 1.5);
        let mut none = Vec::new();
        print_scores(&mut none, &[], false).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn drops_are_summarised_once_a_minute_and_whatever_is_left_on_the_way_out() {
        let stats = EventStats::default();
        let mut s = DropSummary::new("node-a");
        let t0: jiff::Timestamp = "2026-01-05T00:00:00Z".parse().unwrap();
        assert!(s.check(&stats, t0).is_none(), "nothing dropped, nothing said");
        stats.count_drop(Source::Process, DropReason::RateLimited, 5);
        let first = s.check(&stats, t0).unwrap();
        assert_eq!(first.detail_i64("dropped"), Some(5));
        stats.count_drop(Source::Process, DropReason::QueueFull, 3);
        stats.count_lost(Source::Kernel, 7);
        assert!(s.check(&stats, t0 + jiff::SignedDuration::from_secs(30)).is_none(), "at most once a minute");
        let last = s.flush(&stats, t0 + jiff::SignedDuration::from_secs(31)).unwrap();
        assert_eq!((last.detail_i64("dropped"), last.detail_i64("droppedTotal")), (Some(3), Some(8)));
        assert_eq!((last.detail_i64("lost"), last.detail_i64("lostTotal")), (Some(7), Some(7)));
        assert!(last.message.contains("process queue_full 3"), "{}", last.message);
        assert!(last.message.contains("kernel lost 7"), "{}", last.message);
        assert!(last.message.starts_with("3 events dropped and 7 records lost"), "{}", last.message);
        assert!(s.flush(&stats, t0 + jiff::SignedDuration::from_secs(32)).is_none(), "each drop said once");
    }
}
