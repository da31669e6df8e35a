//! The alert pipeline of `vigil-agent run`: one thread owns the rule engine and the router,
//! fed with each scan's samples and each security event; due notifications go to the spool,
//! which the delivery workers drain. The policies are re-read every `reloadInterval`; a set
//! that does not load is refused with its error (logged, counted) and the last good one keeps
//! running.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver as Rx, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::deliver::{Delivery, DeliveryConfig};
use super::policy::{PolicySet, load, unchanged};
use super::route::Router;
use super::rules::{Engine, Sample};
use super::spool::{Limits, Spool, SpoolError};
use crate::events::Event;
use crate::export::catalog::{Rows, Table, Tables};
use vigil_crds::metrics as m;

/// What the pipeline needs to start.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Policy files or directories.
    pub policies: Vec<PathBuf>,
    /// Where mounted secrets live.
    pub secrets_dir: PathBuf,
    /// How often the policies are re-read.
    pub reload_interval: Duration,
    /// The spool's directory.
    pub spool_dir: PathBuf,
    /// The spool's bounds and durability.
    pub limits: Limits,
    /// Delivery settings.
    pub delivery: DeliveryConfig,
    /// The node.
    pub node: String,
    /// The sampling interval.
    pub interval: Duration,
}

/// Counters and gauges of the pipeline, read by `/metrics` and the AgentStatus report.
#[derive(Debug, Default)]
pub struct Status {
    /// Alerts firing now.
    pub active: AtomicU64,
    /// Alerts that fired.
    pub fired: AtomicU64,
    /// Alerts that resolved.
    pub resolved: AtomicU64,
    /// Samples or events dropped because the pipeline was behind.
    pub input_dropped: AtomicU64,
    /// Notifications refused by a full spool.
    pub spool_full: AtomicU64,
    /// Policy loads refused.
    pub reload_errors: AtomicU64,
    /// Rules in force.
    pub rules: AtomicU64,
    /// Alerts no route took.
    pub unrouted: AtomicU64,
    /// Notifications deferred by a rate limit.
    pub rate_limited: AtomicU64,
    /// Alert states held back by silences.
    pub silenced: AtomicU64,
    /// Why the policies on disk are refused, while they are (the last good set is in force).
    pub refused: Mutex<Option<String>>,
    /// Per rule (policy, rule name): series whose detector is still learning.
    pub learning: Mutex<Vec<(String, String, u64)>>,
    /// Per series of an anomaly rule: (policy, rule, series labels, score ÷ limit).
    pub scores: Mutex<Vec<(String, String, String, f64)>>,
    /// The node's labels, once known: the policies' node selectors apply from then on.
    pub node_labels: Mutex<Option<std::collections::BTreeMap<String, String>>>,
}

enum Input {
    Samples(jiff::Timestamp, Vec<Sample>),
    Event(Box<Event>),
}

/// A running pipeline.
pub struct Pipeline {
    tx: Option<SyncSender<Input>>,
    thread: Option<JoinHandle<()>>,
    /// The delivery workers (and the spool).
    pub delivery: Arc<Delivery>,
    /// Its figures.
    pub status: Arc<Status>,
}

impl Pipeline {
    /// Opens the spool, loads the policies and starts the threads. A policy set that does not
    /// load is reported and retried at each reload; only an unusable spool stops the start.
    pub fn start(config: PipelineConfig) -> Result<Self, SpoolError> {
        let spool = Arc::new(Spool::open(&config.spool_dir, config.limits.clone())?);
        let delivery = Arc::new(Delivery::new(spool, config.delivery.clone(), &config.node));
        let status = Arc::new(Status::default());
        let (tx, rx) = sync_channel(1024);
        let (d, s) = (delivery.clone(), status.clone());
        let thread = std::thread::Builder::new()
            .name("alerts".into())
            .spawn(move || run(&config, &rx, &d, &s))
            .map_err(|source| SpoolError::Io { path: PathBuf::from("alerts thread"), source })?;
        Ok(Self { tx: Some(tx), thread: Some(thread), delivery, status })
    }

    fn send(&self, input: Input) {
        if let Some(tx) = &self.tx
            && let Err(TrySendError::Full(_)) = tx.try_send(input)
        {
            self.status.input_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One scan's samples.
    pub fn samples(&self, at: jiff::Timestamp, samples: Vec<Sample>) {
        self.send(Input::Samples(at, samples));
    }

    /// One security event.
    pub fn event(&self, e: &Event) {
        self.send(Input::Event(Box::new(e.clone())));
    }

    /// The node's labels (in a pod, from its Node object): policies and rules with a
    /// `nodeSelector` apply only where it matches, from the next reload on.
    pub fn set_node_labels(&self, labels: std::collections::BTreeMap<String, String>) {
        if let Ok(mut l) = self.status.node_labels.lock() {
            *l = Some(labels);
        }
    }

    /// The figures for the AgentStatus report.
    pub fn counts(&self) -> crate::report::AlertCounts {
        let (spooled, _) = self.delivery.shared.spool.pending();
        let (dead, _) = self.delivery.shared.spool.dead();
        let failing = self.delivery.shared.stats().values().filter(|s| s.alerted).count();
        crate::report::AlertCounts {
            active: u32::try_from(self.status.active.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
            spooled: spooled as u64,
            dead_lettered: dead as u64,
            failing_receivers: u32::try_from(failing).unwrap_or(u32::MAX),
            policy_refused: self.status.refused.lock().map(|r| r.is_some()).unwrap_or(false),
        }
    }

    /// Stops the threads; what is spooled stays for the next start.
    pub fn stop(mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.delivery.stop();
    }
}

fn log(message: &str) {
    tracing::info!("alerts: {message}");
}

fn run(config: &PipelineConfig, rx: &Rx<Input>, delivery: &Delivery, status: &Status) {
    let mut engine = Engine::new(&config.node, config.interval);
    let mut router = Router::new();
    let mut set = Arc::new(PolicySet::default());
    let mut last_load: Option<Instant> = None;
    let mut last_rescan = Instant::now();
    let spool = delivery.shared.spool.clone();
    let state_file = config.spool_dir.join("router.json");
    let mut saved: Option<super::route::RouterState> = match std::fs::read(&state_file) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                log(&format!("{}: not restored ({e}); alert state starts afresh", state_file.display()));
                None
            }
        },
        Err(_) => None,
    };
    loop {
        let now = jiff::Timestamp::now();
        if last_load.is_none_or(|t| t.elapsed() >= config.reload_interval) {
            last_load = Some(Instant::now());
            let labels = status.node_labels.lock().ok().and_then(|l| l.clone());
            let refused = status.refused.lock().map(|r| r.is_some()).unwrap_or(true);
            let same = !refused && unchanged(&set, &config.policies, &config.secrets_dir, labels.as_ref());
            match if same { Ok(None) } else { load(&config.policies, &config.secrets_dir, labels.as_ref()).map(Some) } {
                Ok(None) => {}
                Ok(Some(new)) => {
                    if new.sha256 != set.sha256 {
                        let rules = new.rule_count();
                        log(&format!(
                            "policy set {} in force: {} polic{}, {rules} rules",
                            &new.sha256[..12],
                            new.policies.len(),
                            if new.policies.len() == 1 { "y" } else { "ies" }
                        ));
                        let new = Arc::new(new);
                        let gone = engine.set_policies(&new, now);
                        for r in &gone {
                            status.resolved.fetch_add(1, Ordering::Relaxed);
                            router.push(&set, &r.policy, &r.alert, now);
                        }
                        set = new;
                        delivery.set_policies(set.clone());
                        if let Some(state) = saved.take() {
                            // What the receivers were told before a restart: confirmed by the
                            // rules within the grace, or resolved.
                            router.restore(state, now, super::rules::confirm_within(&set, config.interval));
                        }
                        status.rules.store(rules as u64, Ordering::Relaxed);
                    }
                    // Loadable again (changed or back to the set in force): no longer refused.
                    if let Ok(mut r) = status.refused.lock() {
                        *r = None;
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    if let Ok(mut r) = status.refused.lock() {
                        if r.as_deref() != Some(text.as_str()) {
                            log(&format!("policy refused, keeping the last good set: {text}"));
                            status.reload_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        *r = Some(text);
                    }
                }
            }
        }
        if last_rescan.elapsed() >= Duration::from_secs(5) {
            last_rescan = Instant::now();
            delivery.rescan();
        }
        let wait = router
            .next_due()
            .map_or(Duration::from_secs(1), |d| Duration::try_from(d.duration_since(now)).unwrap_or(Duration::ZERO))
            .min(Duration::from_secs(1));
        let (routed, scanned) = match rx.recv_timeout(wait) {
            Ok(Input::Samples(at, samples)) => (engine.observe_metrics(at, &samples), true),
            Ok(Input::Event(e)) => (engine.observe_event(&e), false),
            Err(RecvTimeoutError::Timeout) => (Vec::new(), false),
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let now = jiff::Timestamp::now();
        let mut changed = false;
        for r in routed.iter().chain(&engine.tick(now)) {
            let counter = if r.alert.resolved() { &status.resolved } else { &status.fired };
            counter.fetch_add(1, Ordering::Relaxed);
            router.push(&set, &r.policy, &r.alert, now);
            changed = true;
        }
        for n in router.tick(&set, now) {
            changed = true;
            if let Err(e) = spool.enqueue(n) {
                status.spool_full.fetch_add(1, Ordering::Relaxed);
                log(&format!("notification not spooled: {e}"));
            }
        }
        if changed && saved.is_none() {
            // After the spool entries it describes: a crash in between re-sends, never loses.
            let bytes = serde_json::to_vec(&router.state()).unwrap_or_default();
            if let Err(e) = crate::events::tail::write_atomic_sync(&state_file, &bytes, config.limits.fsync) {
                log(&format!("saving {}: {e}", state_file.display()));
            }
        }
        status.active.store(engine.active() as u64, Ordering::Relaxed);
        // Series start, learn and judge with a scan's samples: counted then, not per event.
        if scanned && let Ok(mut l) = status.learning.lock() {
            *l = engine.learning_counts();
        }
        if scanned && let Ok(mut l) = status.scores.lock() {
            *l = engine
                .scores()
                .into_iter()
                .map(|s| (s.policy, s.rule, super::rules::series_text(&s.labels), s.score))
                .collect();
        }
        status.unrouted.store(router.stats.unrouted, Ordering::Relaxed);
        status.rate_limited.store(router.stats.rate_limited, Ordering::Relaxed);
        status.silenced.store(router.stats.silenced, Ordering::Relaxed);
    }
}

/// Registers the alert pipeline's table with the agent's exports: alerts, learning series,
/// notifications by receiver and outcome, the spool, the dead letters, refused policies.
pub fn register_table(tables: &Tables, pipeline: &Pipeline) {
    tables.add(Arc::new(AlertsTable { status: pipeline.status.clone(), delivery: pipeline.delivery.shared.clone() }));
}

struct AlertsTable {
    status: Arc<Status>,
    delivery: Arc<super::deliver::Shared>,
}

impl Table for AlertsTable {
    fn rows(&self, o: &mut Rows) {
        use std::sync::atomic::Ordering::Relaxed;
        let st = &self.status;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed) as f64;
        o.one(&m::AGENT_ALERTS_ACTIVE, n(&st.active));
        o.one(&m::AGENT_ALERT_RULES, n(&st.rules));
        let learning = st.learning.lock().map(|l| l.clone()).unwrap_or_default();
        o.family(
            &m::AGENT_ALERT_SERIES_LEARNING,
            learning.iter().map(|(p, r, n)| ([("policy", p.as_str()), ("rule", r.as_str())], *n as f64)),
        );
        let scores = st.scores.lock().map(|l| l.clone()).unwrap_or_default();
        o.family(
            &m::AGENT_ALERT_RULE_SCORE,
            scores
                .iter()
                .map(|(p, r, s, v)| ([("policy", p.as_str()), ("rule", r.as_str()), ("series", s.as_str())], *v)),
        );
        o.family(&m::AGENT_ALERTS, [([("state", "firing")], n(&st.fired)), ([("state", "resolved")], n(&st.resolved))]);
        o.family(
            &m::AGENT_ALERT_PIPELINE_DROPPED,
            [([("reason", "input_behind")], n(&st.input_dropped)), ([("reason", "spool_full")], n(&st.spool_full))],
        );
        o.one(&m::AGENT_ALERT_POLICY_RELOAD_ERRORS, n(&st.reload_errors));
        o.one(
            &m::AGENT_ALERT_POLICY_REFUSED,
            if st.refused.lock().map(|r| r.is_some()).unwrap_or(false) { 1.0 } else { 0.0 },
        );
        o.one(&m::AGENT_ALERTS_UNROUTED, n(&st.unrouted));
        o.one(&m::AGENT_ALERT_NOTIFICATIONS_RATE_LIMITED, n(&st.rate_limited));
        o.one(&m::AGENT_ALERTS_SILENCED, n(&st.silenced));
        let spool = &self.delivery.spool;
        let (entries, bytes) = spool.pending();
        let (dead, evicted) = spool.dead();
        o.one(&m::AGENT_ALERT_SPOOL_ENTRIES, entries as f64);
        o.one(&m::AGENT_ALERT_SPOOL, bytes as f64);
        o.one(&m::AGENT_ALERT_DEAD_LETTERS, dead as f64);
        o.one(&m::AGENT_ALERT_DEAD_LETTERS_EVICTED, evicted as f64);
        let stats = self.delivery.stats();
        o.family(
            &m::AGENT_ALERT_NOTIFICATIONS,
            stats.iter().flat_map(|(r, s)| {
                [
                    ([("receiver", r.as_str()), ("outcome", "delivered")], s.delivered as f64),
                    ([("receiver", r.as_str()), ("outcome", "failed_attempt")], s.failed_attempts as f64),
                    ([("receiver", r.as_str()), ("outcome", "dead_lettered")], s.dead_lettered as f64),
                ]
            }),
        );
        o.family(
            &m::AGENT_ALERT_DELIVERY_FAILING,
            stats.iter().map(|(r, s)| ([("receiver", r.as_str())], if s.alerted { 1.0 } else { 0.0 })),
        )
    }
}
