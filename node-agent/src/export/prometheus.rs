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
    registry.register_with_unit(
        "vigil_agent_scan_duration",
        "Time one snapshot of the host took",
        Unit::Seconds,
        metrics.scan_seconds.clone(),
    );
    registry.register("vigil_agent_scans", "Snapshots of the host taken", metrics.scans.clone());
    registry.register(
        "vigil_agent_read_errors",
        "Failed reads of host files by reader and kind; a vanished process is normal",
        metrics.read_errors.clone(),
    );
    registry.register_collector(Box::new(HostCollector { latest, self_usage, version }));
    (registry, metrics)
}

#[derive(Debug)]
struct HostCollector {
    latest: Latest,
    self_usage: SelfUsage,
    version: &'static str,
}

/// Writes metric families with less ceremony.
struct Out<'a> {
    enc: DescriptorEncoder<'a>,
}

impl Out<'_> {
    /// One unlabelled sample.
    fn one<M: EncodeMetric>(&mut self, name: &str, help: &str, unit: Option<Unit>, m: M) -> fmt::Result {
        let e = self.enc.encode_descriptor(name, help, unit.as_ref(), m.metric_type())?;
        m.encode(e)
    }

    fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>, v: f64) -> fmt::Result {
        self.one(name, help, unit, ConstGauge::new(v))
    }

    fn counter(&mut self, name: &str, help: &str, unit: Option<Unit>, v: f64) -> fmt::Result {
        self.one(name, help, unit, ConstCounter::new(v))
    }

    /// A labelled family; nothing at all when there are no rows.
    fn family<L: EncodeLabelSet, M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        make: fn(f64) -> M,
        rows: impl IntoIterator<Item = (L, f64)>,
    ) -> fmt::Result {
        let mut rows = rows.into_iter().peekable();
        if rows.peek().is_none() {
            return Ok(());
        }
        let mut e = self.enc.encode_descriptor(name, help, unit.as_ref(), make(0.0).metric_type())?;
        for (labels, v) in rows {
            make(v).encode(e.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn gauges<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        rows: impl IntoIterator<Item = (L, f64)>,
    ) -> fmt::Result {
        self.family(name, help, unit, ConstGauge::new, rows)
    }

    fn counters<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        rows: impl IntoIterator<Item = (L, f64)>,
    ) -> fmt::Result {
        self.family(name, help, unit, ConstCounter::new, rows)
    }
}

impl Collector for HostCollector {
    fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
        let mut o = Out { enc };
        let own = self.self_usage.read();
        o.gauges("vigil_agent_build_info", "The agent's version", None, [([("version", self.version)], 1.0)])?;
        if let Some(u) = own {
            o.gauge(
                "vigil_agent_resident_memory",
                "The agent's resident memory",
                Some(Unit::Bytes),
                u.rss_bytes as f64,
            )?;
            o.counter("vigil_agent_cpu", "CPU time the agent used", Some(Unit::Seconds), u.cpu_seconds)?;
        }
        let snapshot = self.latest.read().ok().and_then(|g| g.clone());
        let Some(s) = snapshot else { return Ok(()) };
        o.gauge(
            "vigil_agent_last_scan_timestamp",
            "When the latest snapshot was taken",
            Some(Unit::Seconds),
            s.time.as_millisecond() as f64 / 1000.0,
        )?;
        encode_host(&mut o, &s)
    }
}

/// Registers the event path's counters: events by type, drops and unparseable input by source,
/// and the queue's depth.
pub fn register_events(registry: &mut Registry, queue: crate::events::EventQueue) {
    registry.register_collector(Box::new(EventsCollector { queue }));
}

#[derive(Clone)]
struct EventsCollector {
    queue: crate::events::EventQueue,
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
            "vigil_agent_events",
            "Security events queued, by type and source",
            None,
            EventType::ALL
                .iter()
                .map(|t| ([("type", t.as_str()), ("source", t.source().as_str())], stats.emitted(*t) as f64)),
        )?;
        o.counters(
            "vigil_agent_events_dropped",
            "Security events dropped by source and reason (rate_limited, queue_full, overflow: lost in a kernel buffer)",
            None,
            Source::ALL.iter().flat_map(|s| {
                let stats = stats.clone();
                DropReason::ALL
                    .iter()
                    .map(move |r| ([("source", s.as_str()), ("reason", r.as_str())], stats.dropped(*s, *r) as f64))
            }),
        )?;
        o.counters(
            "vigil_agent_events_unparsed",
            "Lines or records of host input a source could not parse (each kept raw in an agent.unparsed event)",
            None,
            Source::ALL.iter().map(|s| ([("source", s.as_str())], stats.unparsed(*s) as f64)),
        )?;
        o.gauge("vigil_agent_event_queue_depth", "Events waiting for the consumers", None, self.queue.depth() as f64)?;
        o.gauge(
            "vigil_agent_event_queue_capacity",
            "Events the queue holds at most",
            None,
            self.queue.capacity() as f64,
        )
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
        o.gauge("vigil_agent_alerts_active", "Alerts firing now", None, n(&st.active))?;
        o.gauge("vigil_agent_alert_rules", "Alert rules in force", None, n(&st.rules))?;
        o.counters(
            "vigil_agent_alerts",
            "Alert state changes by state (firing, resolved)",
            None,
            [([("state", "firing")], n(&st.fired)), ([("state", "resolved")], n(&st.resolved))],
        )?;
        o.counters(
            "vigil_agent_alert_pipeline_dropped",
            "What the alert pipeline could not take, by reason (input_behind: samples or events while it was behind; spool_full: notifications)",
            None,
            [([("reason", "input_behind")], n(&st.input_dropped)), ([("reason", "spool_full")], n(&st.spool_full))],
        )?;
        o.counter(
            "vigil_agent_alert_policy_reload_errors",
            "Policy sets refused (the last good set stays)",
            None,
            n(&st.reload_errors),
        )?;
        o.gauge(
            "vigil_agent_alert_policy_refused",
            "1 while the policies on disk are refused and the last good set is in force",
            None,
            if st.refused.lock().map(|r| r.is_some()).unwrap_or(false) { 1.0 } else { 0.0 },
        )?;
        o.counter("vigil_agent_alerts_unrouted", "Alerts no route took", None, n(&st.unrouted))?;
        o.counter(
            "vigil_agent_alert_notifications_rate_limited",
            "Notifications deferred by a rate limit",
            None,
            n(&st.rate_limited),
        )?;
        o.counter("vigil_agent_alerts_silenced", "Alert states held back by a silence", None, n(&st.silenced))?;
        let spool = &self.delivery.spool;
        let (entries, bytes) = spool.pending();
        let (dead, evicted) = spool.dead();
        o.gauge("vigil_agent_alert_spool_entries", "Notifications waiting for delivery", None, entries as f64)?;
        o.gauge(
            "vigil_agent_alert_spool",
            "Bytes of notifications waiting for delivery",
            Some(Unit::Bytes),
            bytes as f64,
        )?;
        o.gauge("vigil_agent_alert_dead_letters", "Notifications in the dead-letter spool", None, dead as f64)?;
        o.counter(
            "vigil_agent_alert_dead_letters_evicted",
            "Dead letters removed for the spool's bound",
            None,
            evicted as f64,
        )?;
        let stats = self.delivery.stats();
        o.counters(
            "vigil_agent_alert_notifications",
            "Notifications by receiver and outcome (delivered, failed_attempt, dead_lettered)",
            None,
            stats.iter().flat_map(|(r, s)| {
                [
                    ([("receiver", r.as_str()), ("outcome", "delivered")], s.delivered as f64),
                    ([("receiver", r.as_str()), ("outcome", "failed_attempt")], s.failed_attempts as f64),
                    ([("receiver", r.as_str()), ("outcome", "dead_lettered")], s.dead_lettered as f64),
                ]
            }),
        )?;
        o.gauges(
            "vigil_agent_alert_delivery_failing",
            "1 while deliveries to the receiver have failed longer than failingAfter",
            None,
            stats.iter().map(|(r, s)| ([("receiver", r.as_str())], if s.alerted { 1.0 } else { 0.0 })),
        )
    }
}

fn encode_host(o: &mut Out<'_>, s: &Snapshot) -> fmt::Result {
    if let Some(up) = s.host.uptime_seconds {
        o.gauge("vigil_node_uptime", "Time since the host booted", Some(Unit::Seconds), up)?;
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
            "vigil_node_cpu",
            "CPU time per CPU and mode since boot",
            Some(Unit::Seconds),
            c.counters.per_cpu.iter().zip(&cpus).flat_map(|(pc, cpu)| {
                modes(pc).into_iter().map(move |(mode, v)| ([("cpu", cpu.as_str()), ("mode", mode)], v))
            }),
        )?;
        if let Some(u) = c.utilization {
            o.gauge(
                "vigil_node_cpu_utilization",
                "Share of CPU time not idle since the previous scan, all CPUs",
                Some(Unit::Ratios),
                u.busy,
            )?;
            o.gauges(
                "vigil_node_cpu_mode_utilization",
                "Share of CPU time per mode since the previous scan, all CPUs",
                Some(Unit::Ratios),
                [("user", u.user), ("system", u.system), ("iowait", u.iowait), ("steal", u.steal)]
                    .map(|(m, v)| ([("mode", m)], v)),
            )?;
        }
        if let Some(l) = c.load {
            o.gauge("vigil_node_load1", "Load average over 1 minute", None, l.one)?;
            o.gauge("vigil_node_load5", "Load average over 5 minutes", None, l.five)?;
            o.gauge("vigil_node_load15", "Load average over 15 minutes", None, l.fifteen)?;
        }
        o.counter(
            "vigil_node_context_switches",
            "Context switches since boot",
            None,
            c.counters.context_switches as f64,
        )?;
        o.counter("vigil_node_forks", "Processes and threads created since boot", None, c.counters.forks as f64)?;
        o.gauge("vigil_node_procs_running", "Runnable threads", None, c.counters.procs_running.into())?;
        o.gauge("vigil_node_procs_blocked", "Threads blocked on I/O", None, c.counters.procs_blocked.into())?;
        o.gauge("vigil_node_boot_time", "When the host booted", Some(Unit::Seconds), c.counters.boot_time as f64)?;
    }
    if let Some(m) = &s.memory {
        o.gauge("vigil_node_memory_total", "Usable RAM", Some(Unit::Bytes), m.total_bytes as f64)?;
        o.gauge(
            "vigil_node_memory_available",
            "RAM available without swapping (MemAvailable)",
            Some(Unit::Bytes),
            m.available_bytes as f64,
        )?;
        o.gauge("vigil_node_memory_used", "RAM in use: total minus available", Some(Unit::Bytes), m.used_bytes as f64)?;
        o.gauge("vigil_node_memory_free", "Entirely unused RAM", Some(Unit::Bytes), m.free_bytes as f64)?;
        o.gauge("vigil_node_memory_buffers", "Block device buffers", Some(Unit::Bytes), m.buffers_bytes as f64)?;
        o.gauge(
            "vigil_node_memory_cached",
            "Page cache and reclaimable slab",
            Some(Unit::Bytes),
            m.cached_bytes as f64,
        )?;
        o.gauge("vigil_node_memory_utilization", "Used over total RAM", Some(Unit::Ratios), m.utilization)?;
        o.gauge("vigil_node_swap_total", "Swap size", Some(Unit::Bytes), m.swap_total_bytes as f64)?;
        o.gauge("vigil_node_swap_used", "Swap in use", Some(Unit::Bytes), m.swap_used_bytes as f64)?;
    }
    if let Some(p) = &s.pressure {
        let res = [("cpu", p.cpu), ("memory", p.memory), ("io", p.io)];
        o.counters(
            "vigil_node_pressure_waiting",
            "Time some tasks stalled on the resource (PSI some total)",
            Some(Unit::Seconds),
            res.iter().filter_map(|(r, v)| v.map(|v| ([("resource", *r)], v.some.total_micros as f64 / 1e6))),
        )?;
        o.counters(
            "vigil_node_pressure_stalled",
            "Time all non-idle tasks stalled on the resource at once (PSI full total)",
            Some(Unit::Seconds),
            res.iter()
                .filter_map(|(r, v)| v.and_then(|v| v.full).map(|f| ([("resource", *r)], f.total_micros as f64 / 1e6))),
        )?;
    }
    if let Some(fs) = &s.filesystems {
        let l = |f: &crate::proc::disks::Filesystem| {
            [("device", f.device.clone()), ("mountpoint", f.mount_point.clone()), ("fstype", f.fs_type.clone())]
        };
        o.gauges(
            "vigil_node_filesystem_size",
            "Filesystem size",
            Some(Unit::Bytes),
            fs.iter().map(|f| (l(f), f.size_bytes as f64)),
        )?;
        o.gauges(
            "vigil_node_filesystem_used",
            "Filesystem space in use",
            Some(Unit::Bytes),
            fs.iter().map(|f| (l(f), f.used_bytes as f64)),
        )?;
        o.gauges(
            "vigil_node_filesystem_avail",
            "Filesystem space available to unprivileged users",
            Some(Unit::Bytes),
            fs.iter().map(|f| (l(f), f.available_bytes as f64)),
        )?;
        o.gauges(
            "vigil_node_filesystem_utilization",
            "Used over used plus available, as df shows",
            Some(Unit::Ratios),
            fs.iter().map(|f| (l(f), f.utilization)),
        )?;
        o.gauges("vigil_node_filesystem_files", "Inodes", None, fs.iter().map(|f| (l(f), f.inodes as f64)))?;
        o.gauges(
            "vigil_node_filesystem_files_used",
            "Inodes in use",
            None,
            fs.iter().map(|f| (l(f), f.inodes_used as f64)),
        )?;
        o.gauges(
            "vigil_node_filesystem_readonly",
            "1 when mounted read-only",
            None,
            fs.iter().map(|f| (l(f), if f.read_only { 1.0 } else { 0.0 })),
        )?;
    }
    if let Some(ds) = &s.disks {
        let l = |d: &crate::proc::disks::DiskIo| [("device", d.device.clone())];
        o.counters(
            "vigil_node_disk_reads_completed",
            "Reads completed",
            None,
            ds.iter().map(|d| (l(d), d.reads as f64)),
        )?;
        o.counters(
            "vigil_node_disk_read",
            "Bytes read",
            Some(Unit::Bytes),
            ds.iter().map(|d| (l(d), d.read_bytes as f64)),
        )?;
        o.counters(
            "vigil_node_disk_writes_completed",
            "Writes completed",
            None,
            ds.iter().map(|d| (l(d), d.writes as f64)),
        )?;
        o.counters(
            "vigil_node_disk_written",
            "Bytes written",
            Some(Unit::Bytes),
            ds.iter().map(|d| (l(d), d.written_bytes as f64)),
        )?;
        o.counters(
            "vigil_node_disk_io_time",
            "Time spent doing I/O",
            Some(Unit::Seconds),
            ds.iter().map(|d| (l(d), d.io_seconds)),
        )?;
        o.gauges("vigil_node_disk_io_now", "I/Os in flight", None, ds.iter().map(|d| (l(d), d.in_progress as f64)))?;
    }
    if let Some(n) = &s.network {
        let is = &n.interfaces;
        let l = |i: &crate::proc::net::Interface| [("device", i.name.clone())];
        o.counters(
            "vigil_node_network_receive",
            "Bytes received",
            Some(Unit::Bytes),
            is.iter().map(|i| (l(i), i.rx_bytes as f64)),
        )?;
        o.counters(
            "vigil_node_network_receive_packets",
            "Packets received",
            None,
            is.iter().map(|i| (l(i), i.rx_packets as f64)),
        )?;
        o.counters(
            "vigil_node_network_receive_errors",
            "Receive errors",
            None,
            is.iter().map(|i| (l(i), i.rx_errors as f64)),
        )?;
        o.counters(
            "vigil_node_network_receive_drops",
            "Received packets dropped",
            None,
            is.iter().map(|i| (l(i), i.rx_drops as f64)),
        )?;
        o.counters(
            "vigil_node_network_transmit",
            "Bytes sent",
            Some(Unit::Bytes),
            is.iter().map(|i| (l(i), i.tx_bytes as f64)),
        )?;
        o.counters(
            "vigil_node_network_transmit_packets",
            "Packets sent",
            None,
            is.iter().map(|i| (l(i), i.tx_packets as f64)),
        )?;
        o.counters(
            "vigil_node_network_transmit_errors",
            "Send errors",
            None,
            is.iter().map(|i| (l(i), i.tx_errors as f64)),
        )?;
        o.counters(
            "vigil_node_network_transmit_drops",
            "Packets dropped on send",
            None,
            is.iter().map(|i| (l(i), i.tx_drops as f64)),
        )?;
        o.gauges(
            "vigil_node_tcp_connections",
            "TCP sockets by state, IPv4 and IPv6",
            None,
            n.tcp_states.iter().map(|(st, v)| ([("state", *st)], *v as f64)),
        )?;
        o.gauges(
            "vigil_node_sockstat",
            "Socket counters from /proc/net/sockstat{,6} by protocol and field",
            None,
            n.sockstat.iter().flat_map(|(p, f)| {
                f.iter().map(move |(k, v)| ([("protocol", p.clone()), ("field", k.clone())], *v as f64))
            }),
        )?;
    }
    if let Some(f) = &s.file_descriptors {
        o.gauge("vigil_node_filefd_allocated", "Allocated file handles", None, f.allocated as f64)?;
        o.gauge("vigil_node_filefd_maximum", "Maximum file handles (fs.file-max)", None, f.max as f64)?;
        o.gauge(
            "vigil_node_filefd_utilization",
            "Allocated over maximum file handles",
            Some(Unit::Ratios),
            f.utilization,
        )?;
    }
    if let Some(p) = &s.processes {
        o.gauges(
            "vigil_node_processes",
            "Processes by state",
            None,
            p.by_state.iter().map(|(st, v)| ([("state", *st)], *v as f64)),
        )?;
        o.gauge("vigil_node_threads", "Threads of all processes", None, p.threads as f64)?;
    }
    if let Some(c) = &s.clock {
        o.gauge(
            "vigil_node_clock_synchronized",
            "1 when a time daemon keeps the kernel clock synchronised",
            None,
            if c.synchronized { 1.0 } else { 0.0 },
        )?;
        o.gauge("vigil_node_clock_offset", "Offset being corrected", Some(Unit::Seconds), c.offset_seconds)?;
        o.gauge(
            "vigil_node_clock_estimated_error",
            "Estimated clock error",
            Some(Unit::Seconds),
            c.estimated_error_seconds,
        )?;
        o.gauge("vigil_node_clock_max_error", "Maximum clock error", Some(Unit::Seconds), c.max_error_seconds)?;
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
