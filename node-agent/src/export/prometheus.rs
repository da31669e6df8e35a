//! The Prometheus `/metrics` endpoint (plus `/healthz` and `/readyz`).
//!
//! Host metrics are encoded at scrape time from the latest snapshot, so a scrape reads no
//! file and does no work beyond formatting; the agent's own counters live in a regular
//! prometheus-client registry. Names follow Prometheus conventions: `vigil_node_*` for the
//! host, `vigil_agent_*` for the agent itself, base units, `_total` on counters.

use std::fmt;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use vigil_crds::metrics::{self as m, Metric};

use crate::selfmon::SelfUsage;
use crate::snapshot::Snapshot;

/// The latest snapshot, shared between the scan loop (writer) and scrapes (readers).
pub type Latest = Arc<RwLock<Option<Arc<Snapshot>>>>;

/// Labels of the per-reader error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReaderErrorLabels {
    /// Reader name (a small fixed set).
    pub reader: &'static str,
    /// Error kind (`vanished`, `permission`, `parse`, `io`).
    pub kind: &'static str,
}

/// The agent's own metrics, updated by the scan loop.
#[derive(Clone)]
pub struct AgentMetrics {
    /// Scan duration.
    pub scan_seconds: Histogram,
    /// Scans done.
    pub scans: Counter,
    /// Failed reads by reader and kind.
    pub read_errors: Family<ReaderErrorLabels, Counter>,
}

impl AgentMetrics {
    /// Counts one finished scan.
    pub fn observe(&self, s: &Snapshot) {
        self.scan_seconds.observe(s.scan_seconds);
        self.scans.inc();
        for (reader, kind, n) in s.read_errors.iter() {
            self.read_errors.get_or_create(&ReaderErrorLabels { reader, kind: kind.as_str() }).inc_by(n);
        }
    }
}

/// Builds the registry: the agent's own metrics plus a collector over `latest`.
pub fn registry(latest: Latest, self_usage: SelfUsage, version: &'static str) -> (Registry, AgentMetrics) {
    let mut registry = Registry::default();
    let metrics = AgentMetrics {
        // 1 ms … ~4 s: a scan of a few hundred processes takes milliseconds.
        scan_seconds: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 13)),
        scans: Counter::default(),
        read_errors: Family::default(),
    };
    register(&mut registry, &m::AGENT_SCAN_DURATION, metrics.scan_seconds.clone());
    register(&mut registry, &m::AGENT_SCANS, metrics.scans.clone());
    register(&mut registry, &m::AGENT_READ_ERRORS, metrics.read_errors.clone());
    registry.register_collector(Box::new(HostCollector { latest, self_usage, version }));
    (registry, metrics)
}

#[derive(Debug)]
struct HostCollector {
    latest: Latest,
    self_usage: SelfUsage,
    version: &'static str,
}

/// Registers one of the agent's own metrics under its catalog name.
fn register(registry: &mut Registry, m: &Metric, metric: impl prometheus_client::registry::Metric) {
    match unit(m) {
        Some(u) => registry.register_with_unit(m.family, m.help, u, metric),
        None => registry.register(m.family, m.help, metric),
    }
}

/// The exposition library's unit for a catalog unit.
fn unit(m: &Metric) -> Option<Unit> {
    m.unit.map(|u| match u {
        vigil_crds::metrics::Unit::Seconds => Unit::Seconds,
        vigil_crds::metrics::Unit::Bytes => Unit::Bytes,
        // prometheus-client's `Ratios` would name the series `_ratios`; the convention is `_ratio`.
        vigil_crds::metrics::Unit::Ratio => Unit::Other("ratio".to_owned()),
    })
}

/// Writes the catalog's metric families ([`vigil_crds::metrics`]) with less ceremony.
struct Out<'a> {
    enc: DescriptorEncoder<'a>,
}

impl Out<'_> {
    /// One unlabelled sample.
    fn one<M: EncodeMetric>(&mut self, m: &Metric, metric: M) -> fmt::Result {
        let u = unit(m);
        let e = self.enc.encode_descriptor(m.family, m.help, u.as_ref(), metric.metric_type())?;
        metric.encode(e)
    }

    fn gauge(&mut self, m: &Metric, v: f64) -> fmt::Result {
        self.one(m, ConstGauge::new(v))
    }

    fn counter(&mut self, m: &Metric, v: f64) -> fmt::Result {
        self.one(m, ConstCounter::new(v))
    }

    /// A labelled family; nothing at all when there are no rows.
    fn family<L: EncodeLabelSet, M: EncodeMetric>(
        &mut self,
        m: &Metric,
        make: fn(f64) -> M,
        rows: impl IntoIterator<Item = (L, f64)>,
    ) -> fmt::Result {
        let mut rows = rows.into_iter().peekable();
        if rows.peek().is_none() {
            return Ok(());
        }
        let u = unit(m);
        let mut e = self.enc.encode_descriptor(m.family, m.help, u.as_ref(), make(0.0).metric_type())?;
        for (labels, v) in rows {
            make(v).encode(e.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn gauges<L: EncodeLabelSet>(&mut self, m: &Metric, rows: impl IntoIterator<Item = (L, f64)>) -> fmt::Result {
        self.family(m, ConstGauge::new, rows)
    }

    fn counters<L: EncodeLabelSet>(&mut self, m: &Metric, rows: impl IntoIterator<Item = (L, f64)>) -> fmt::Result {
        self.family(m, ConstCounter::new, rows)
    }
}

impl Collector for HostCollector {
    fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
        let mut o = Out { enc };
        let own = self.self_usage.read();
        o.gauges(&m::AGENT_BUILD_INFO, [([("version", self.version)], 1.0)])?;
        if let Some(u) = own {
            o.gauge(&m::AGENT_RESIDENT_MEMORY, u.rss_bytes as f64)?;
            o.counter(&m::AGENT_CPU, u.cpu_seconds)?;
        }
        let snapshot = self.latest.read().ok().and_then(|g| g.clone());
        let Some(s) = snapshot else { return Ok(()) };
        o.gauge(&m::AGENT_LAST_SCAN_TIMESTAMP, s.time.as_millisecond() as f64 / 1000.0)?;
        encode_host(&mut o, &s)
    }
}

/// Registers the event path's counters: events by type, drops and unparseable input by source,
/// and the queue's depth.
pub fn register_events(
    registry: &mut Registry,
    queue: crate::events::EventQueue,
    states: std::sync::Arc<std::sync::Mutex<crate::events::runner::SourceStates>>,
) {
    registry.register_collector(Box::new(EventsCollector { queue, states }));
}

#[derive(Clone)]
struct EventsCollector {
    queue: crate::events::EventQueue,
    states: std::sync::Arc<std::sync::Mutex<crate::events::runner::SourceStates>>,
}

impl fmt::Debug for EventsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventsCollector")
    }
}

impl Collector for EventsCollector {
    fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
        use crate::events::{DropReason, EventType, Source};
        let mut o = Out { enc };
        let stats = self.queue.stats();
        o.counters(
            &m::AGENT_EVENTS,
            EventType::ALL
                .iter()
                .map(|t| ([("type", t.as_str()), ("source", t.source().as_str())], stats.emitted(*t) as f64)),
        )?;
        o.counters(
            &m::AGENT_EVENTS_DROPPED,
            Source::ALL.iter().flat_map(|s| {
                let stats = stats.clone();
                DropReason::ALL
                    .iter()
                    .map(move |r| ([("source", s.as_str()), ("reason", r.as_str())], stats.dropped(*s, *r) as f64))
            }),
        )?;
        o.counters(
            &m::AGENT_EVENTS_UNPARSED,
            Source::ALL.iter().flat_map(|s| {
                crate::events::UnparsedReason::ALL
                    .iter()
                    .map(|r| ([("source", s.as_str()), ("reason", r.as_str())], stats.unparsed_for(*s, *r) as f64))
            }),
        )?;
        // Each source's state as 1 for the state it is in (all 0: not started, or disabled).
        let states = self.states.lock().map(|s| s.clone()).unwrap_or_default();
        o.gauges(
            &m::AGENT_EVENT_SOURCE_STATE,
            Source::ALL.iter().filter(|s| **s != Source::Agent).flat_map(|s| {
                let now = states.0.get(s).map(|st| st.state);
                [vigil_crds::SourceState::On, vigil_crds::SourceState::Degraded, vigil_crds::SourceState::Off]
                    .map(|st| ([("source", s.as_str()), ("state", st.as_str())], f64::from(u8::from(now == Some(st)))))
            }),
        )?;
        o.gauge(&m::AGENT_EVENT_QUEUE_DEPTH, self.queue.depth() as f64)?;
        o.gauge(&m::AGENT_EVENT_QUEUE_CAPACITY, self.queue.capacity() as f64)
    }
}

/// Registers the alert pipeline's figures: alerts, notifications by receiver and outcome,
/// the spool, the dead letters, refused policies.
pub fn register_alerts(registry: &mut Registry, pipeline: &crate::alert::pipeline::Pipeline) {
    registry.register_collector(Box::new(AlertsCollector {
        status: pipeline.status.clone(),
        delivery: pipeline.delivery.shared.clone(),
    }));
}

struct AlertsCollector {
    status: Arc<crate::alert::pipeline::Status>,
    delivery: Arc<crate::alert::deliver::Shared>,
}

impl fmt::Debug for AlertsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AlertsCollector")
    }
}

impl Collector for AlertsCollector {
    fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
        use std::sync::atomic::Ordering::Relaxed;
        let mut o = Out { enc };
        let st = &self.status;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed) as f64;
        o.gauge(&m::AGENT_ALERTS_ACTIVE, n(&st.active))?;
        o.gauge(&m::AGENT_ALERT_RULES, n(&st.rules))?;
        let learning = st.learning.lock().map(|l| l.clone()).unwrap_or_default();
        o.gauges(
            &m::AGENT_ALERT_SERIES_LEARNING,
            learning.iter().map(|(p, r, n)| ([("policy", p.as_str()), ("rule", r.as_str())], *n as f64)),
        )?;
        o.counters(
            &m::AGENT_ALERTS,
            [([("state", "firing")], n(&st.fired)), ([("state", "resolved")], n(&st.resolved))],
        )?;
        o.counters(
            &m::AGENT_ALERT_PIPELINE_DROPPED,
            [([("reason", "input_behind")], n(&st.input_dropped)), ([("reason", "spool_full")], n(&st.spool_full))],
        )?;
        o.counter(&m::AGENT_ALERT_POLICY_RELOAD_ERRORS, n(&st.reload_errors))?;
        o.gauge(
            &m::AGENT_ALERT_POLICY_REFUSED,
            if st.refused.lock().map(|r| r.is_some()).unwrap_or(false) { 1.0 } else { 0.0 },
        )?;
        o.counter(&m::AGENT_ALERTS_UNROUTED, n(&st.unrouted))?;
        o.counter(&m::AGENT_ALERT_NOTIFICATIONS_RATE_LIMITED, n(&st.rate_limited))?;
        o.counter(&m::AGENT_ALERTS_SILENCED, n(&st.silenced))?;
        let spool = &self.delivery.spool;
        let (entries, bytes) = spool.pending();
        let (dead, evicted) = spool.dead();
        o.gauge(&m::AGENT_ALERT_SPOOL_ENTRIES, entries as f64)?;
        o.gauge(&m::AGENT_ALERT_SPOOL, bytes as f64)?;
        o.gauge(&m::AGENT_ALERT_DEAD_LETTERS, dead as f64)?;
        o.counter(&m::AGENT_ALERT_DEAD_LETTERS_EVICTED, evicted as f64)?;
        let stats = self.delivery.stats();
        o.counters(
            &m::AGENT_ALERT_NOTIFICATIONS,
            stats.iter().flat_map(|(r, s)| {
                [
                    ([("receiver", r.as_str()), ("outcome", "delivered")], s.delivered as f64),
                    ([("receiver", r.as_str()), ("outcome", "failed_attempt")], s.failed_attempts as f64),
                    ([("receiver", r.as_str()), ("outcome", "dead_lettered")], s.dead_lettered as f64),
                ]
            }),
        )?;
        o.gauges(
            &m::AGENT_ALERT_DELIVERY_FAILING,
            stats.iter().map(|(r, s)| ([("receiver", r.as_str())], if s.alerted { 1.0 } else { 0.0 })),
        )
    }
}

fn encode_host(o: &mut Out<'_>, s: &Snapshot) -> fmt::Result {
    if let Some(up) = s.host.uptime_seconds {
        o.gauge(&m::NODE_UPTIME, up)?;
    }
    if let Some(c) = &s.cpu {
        let modes = |c: &crate::proc::cpu::CpuSeconds| {
            [
                ("user", c.user),
                ("nice", c.nice),
                ("system", c.system),
                ("idle", c.idle),
                ("iowait", c.iowait),
                ("irq", c.irq),
                ("softirq", c.softirq),
                ("steal", c.steal),
            ]
        };
        let cpus: Vec<String> = (0..c.counters.per_cpu.len()).map(|i| i.to_string()).collect();
        o.counters(
            &m::NODE_CPU,
            c.counters.per_cpu.iter().zip(&cpus).flat_map(|(pc, cpu)| {
                modes(pc).into_iter().map(move |(mode, v)| ([("cpu", cpu.as_str()), ("mode", mode)], v))
            }),
        )?;
        if let Some(u) = c.utilization {
            o.gauge(&m::NODE_CPU_UTILIZATION, u.busy)?;
            o.gauges(
                &m::NODE_CPU_MODE_UTILIZATION,
                [("user", u.user), ("system", u.system), ("iowait", u.iowait), ("steal", u.steal)]
                    .map(|(m, v)| ([("mode", m)], v)),
            )?;
        }
        if let Some(l) = c.load {
            o.gauge(&m::NODE_LOAD1, l.one)?;
            o.gauge(&m::NODE_LOAD5, l.five)?;
            o.gauge(&m::NODE_LOAD15, l.fifteen)?;
        }
        o.counter(&m::NODE_CONTEXT_SWITCHES, c.counters.context_switches as f64)?;
        o.counter(&m::NODE_FORKS, c.counters.forks as f64)?;
        o.gauge(&m::NODE_PROCS_RUNNING, c.counters.procs_running.into())?;
        o.gauge(&m::NODE_PROCS_BLOCKED, c.counters.procs_blocked.into())?;
        o.gauge(&m::NODE_BOOT_TIME, c.counters.boot_time as f64)?;
    }
    if let Some(m) = &s.memory {
        o.gauge(&m::NODE_MEMORY_TOTAL, m.total_bytes as f64)?;
        o.gauge(&m::NODE_MEMORY_AVAILABLE, m.available_bytes as f64)?;
        o.gauge(&m::NODE_MEMORY_USED, m.used_bytes as f64)?;
        o.gauge(&m::NODE_MEMORY_FREE, m.free_bytes as f64)?;
        o.gauge(&m::NODE_MEMORY_BUFFERS, m.buffers_bytes as f64)?;
        o.gauge(&m::NODE_MEMORY_CACHED, m.cached_bytes as f64)?;
        o.gauge(&m::NODE_MEMORY_UTILIZATION, m.utilization)?;
        o.gauge(&m::NODE_SWAP_TOTAL, m.swap_total_bytes as f64)?;
        o.gauge(&m::NODE_SWAP_USED, m.swap_used_bytes as f64)?;
    }
    if let Some(p) = &s.pressure {
        let res = [("cpu", p.cpu), ("memory", p.memory), ("io", p.io)];
        o.counters(
            &m::NODE_PRESSURE_WAITING,
            res.iter().filter_map(|(r, v)| v.map(|v| ([("resource", *r)], v.some.total_micros as f64 / 1e6))),
        )?;
        o.counters(
            &m::NODE_PRESSURE_STALLED,
            res.iter()
                .filter_map(|(r, v)| v.and_then(|v| v.full).map(|f| ([("resource", *r)], f.total_micros as f64 / 1e6))),
        )?;
    }
    if let Some(fs) = &s.filesystems {
        let l = |f: &crate::proc::disks::Filesystem| {
            [("device", f.device.clone()), ("mountpoint", f.mount_point.clone()), ("fstype", f.fs_type.clone())]
        };
        o.gauges(&m::NODE_FILESYSTEM_SIZE, fs.iter().map(|f| (l(f), f.size_bytes as f64)))?;
        o.gauges(&m::NODE_FILESYSTEM_USED, fs.iter().map(|f| (l(f), f.used_bytes as f64)))?;
        o.gauges(&m::NODE_FILESYSTEM_AVAIL, fs.iter().map(|f| (l(f), f.available_bytes as f64)))?;
        o.gauges(&m::NODE_FILESYSTEM_UTILIZATION, fs.iter().map(|f| (l(f), f.utilization)))?;
        o.gauges(&m::NODE_FILESYSTEM_FILES, fs.iter().map(|f| (l(f), f.inodes as f64)))?;
        o.gauges(&m::NODE_FILESYSTEM_FILES_USED, fs.iter().map(|f| (l(f), f.inodes_used as f64)))?;
        o.gauges(&m::NODE_FILESYSTEM_READONLY, fs.iter().map(|f| (l(f), if f.read_only { 1.0 } else { 0.0 })))?;
    }
    if let Some(ds) = &s.disks {
        let l = |d: &crate::proc::disks::DiskIo| [("device", d.device.clone())];
        o.counters(&m::NODE_DISK_READS_COMPLETED, ds.iter().map(|d| (l(d), d.reads as f64)))?;
        o.counters(&m::NODE_DISK_READ, ds.iter().map(|d| (l(d), d.read_bytes as f64)))?;
        o.counters(&m::NODE_DISK_WRITES_COMPLETED, ds.iter().map(|d| (l(d), d.writes as f64)))?;
        o.counters(&m::NODE_DISK_WRITTEN, ds.iter().map(|d| (l(d), d.written_bytes as f64)))?;
        o.counters(&m::NODE_DISK_IO_TIME, ds.iter().map(|d| (l(d), d.io_seconds)))?;
        o.gauges(&m::NODE_DISK_IO_NOW, ds.iter().map(|d| (l(d), d.in_progress as f64)))?;
    }
    if let Some(n) = &s.network {
        let is = &n.interfaces;
        let l = |i: &crate::proc::net::Interface| [("device", i.name.clone())];
        o.counters(&m::NODE_NETWORK_RECEIVE, is.iter().map(|i| (l(i), i.rx_bytes as f64)))?;
        o.counters(&m::NODE_NETWORK_RECEIVE_PACKETS, is.iter().map(|i| (l(i), i.rx_packets as f64)))?;
        o.counters(&m::NODE_NETWORK_RECEIVE_ERRORS, is.iter().map(|i| (l(i), i.rx_errors as f64)))?;
        o.counters(&m::NODE_NETWORK_RECEIVE_DROPS, is.iter().map(|i| (l(i), i.rx_drops as f64)))?;
        o.counters(&m::NODE_NETWORK_TRANSMIT, is.iter().map(|i| (l(i), i.tx_bytes as f64)))?;
        o.counters(&m::NODE_NETWORK_TRANSMIT_PACKETS, is.iter().map(|i| (l(i), i.tx_packets as f64)))?;
        o.counters(&m::NODE_NETWORK_TRANSMIT_ERRORS, is.iter().map(|i| (l(i), i.tx_errors as f64)))?;
        o.counters(&m::NODE_NETWORK_TRANSMIT_DROPS, is.iter().map(|i| (l(i), i.tx_drops as f64)))?;
        let snmp = |key: &str| n.tcp.get(key).map(|v| *v as f64);
        if let Some(v) = snmp("CurrEstab") {
            o.gauge(&m::NODE_TCP_ESTABLISHED, v)?;
        }
        for (metric, key) in [
            (&m::NODE_TCP_ACTIVE_OPENS, "ActiveOpens"),
            (&m::NODE_TCP_PASSIVE_OPENS, "PassiveOpens"),
            (&m::NODE_TCP_ATTEMPT_FAILS, "AttemptFails"),
            (&m::NODE_TCP_ESTABLISHED_RESETS, "EstabResets"),
            (&m::NODE_TCP_RETRANSMITTED_SEGMENTS, "RetransSegs"),
            (&m::NODE_TCP_RECEIVE_ERRORS, "InErrs"),
            (&m::NODE_TCP_RESETS_SENT, "OutRsts"),
        ] {
            if let Some(v) = snmp(key) {
                o.counter(metric, v)?;
            }
        }
        o.gauges(&m::NODE_TCP_CONNECTIONS, n.tcp_states.iter().map(|(st, v)| ([("state", *st)], *v as f64)))?;
        o.gauges(
            &m::NODE_SOCKSTAT,
            n.sockstat.iter().flat_map(|(p, f)| {
                f.iter().map(move |(k, v)| ([("protocol", p.clone()), ("field", k.clone())], *v as f64))
            }),
        )?;
    }
    if let Some(f) = &s.file_descriptors {
        o.gauge(&m::NODE_FILEFD_ALLOCATED, f.allocated as f64)?;
        o.gauge(&m::NODE_FILEFD_MAXIMUM, f.max as f64)?;
        o.gauge(&m::NODE_FILEFD_UTILIZATION, f.utilization)?;
    }
    if let Some(p) = &s.processes {
        o.gauges(&m::NODE_PROCESSES, p.by_state.iter().map(|(st, v)| ([("state", *st)], *v as f64)))?;
        o.gauge(&m::NODE_THREADS, p.threads as f64)?;
    }
    if let Some(c) = &s.clock {
        o.gauge(&m::NODE_CLOCK_SYNCHRONIZED, if c.synchronized { 1.0 } else { 0.0 })?;
        o.gauge(&m::NODE_CLOCK_OFFSET, c.offset_seconds)?;
        o.gauge(&m::NODE_CLOCK_ESTIMATED_ERROR, c.estimated_error_seconds)?;
        o.gauge(&m::NODE_CLOCK_MAX_ERROR, c.max_error_seconds)?;
    }
    Ok(())
}

/// Encodes the registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// The OpenMetrics content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text content type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text → classic Prometheus text (0.0.4), for scrapers and tools that do not
/// negotiate OpenMetrics: counter families are named with their `_total` suffix in HELP and
/// TYPE, and `# UNIT` and `# EOF` lines go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending_help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# HELP ") {
            if let Some(h) = pending_help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let rename = kind == "counter" && !name.ends_with("_total");
            if let Some(h) = pending_help.take() {
                if rename {
                    let help = h.strip_prefix("# HELP ").and_then(|r| r.strip_prefix(name)).unwrap_or("");
                    out.push_str(&format!("# HELP {name}_total{help}\n"));
                } else {
                    out.push_str(h);
                    out.push('\n');
                }
            }
            if rename {
                out.push_str(&format!("# TYPE {name}_total counter\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(h) = pending_help {
        out.push_str(h);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_name_in_classic_text() {
        let om = "# HELP x_seconds CPU time.\n# TYPE x_seconds counter\n# UNIT x_seconds seconds\nx_seconds_total 1.5\n# HELP g A gauge.\n# TYPE g gauge\ng 2\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP x_seconds_total CPU time.\n# TYPE x_seconds_total counter\nx_seconds_total 1.5\n# HELP g A gauge.\n# TYPE g gauge\ng 2\n"
        );
    }
}
