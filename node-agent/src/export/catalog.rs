//! One table of everything the agent exports: rows of (catalog metric, labels, value), built
//! from the latest snapshot, the agent's own counters, the event path and the alert pipeline.
//! `/metrics` encodes the table; the alert rules read it directly, as [`Sample`]s with the
//! exact names and labels `/metrics` shows. Names, help, units and types come from the shared
//! catalog ([`vigil_crds::metrics`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use vigil_crds::metrics::{self as m, Metric};

use super::prometheus::Latest;
use crate::selfmon::SelfUsage;
use crate::snapshot::Snapshot;

/// One exported series and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The catalog entry (name, help, unit, type, label names).
    pub metric: &'static Metric,
    /// Label values, in the catalog's order.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

/// Rows in export order: the rows of one metric are contiguous.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rows(pub Vec<Row>);

impl Rows {
    /// An unlabelled series.
    pub fn one(&mut self, metric: &'static Metric, value: f64) {
        self.0.push(Row { metric, labels: Vec::new(), value });
    }

    /// A labelled family; nothing when `rows` is empty.
    pub fn family<L, S>(&mut self, metric: &'static Metric, rows: impl IntoIterator<Item = (L, f64)>)
    where
        L: IntoIterator<Item = (&'static str, S)>,
        S: Into<String>,
    {
        for (labels, value) in rows {
            self.0.push(Row { metric, labels: labels.into_iter().map(|(k, v)| (k, v.into())).collect(), value });
        }
    }
}

/// A source of rows.
pub trait Table: Send + Sync {
    /// Appends this source's rows.
    fn rows(&self, out: &mut Rows);
}

/// Every table the agent exports, in registration order; cloned handles share them.
#[derive(Clone, Default)]
pub struct Tables(Arc<RwLock<Vec<Arc<dyn Table>>>>);

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tables")
    }
}

impl Tables {
    /// Adds a source.
    pub fn add(&self, t: Arc<dyn Table>) {
        if let Ok(mut v) = self.0.write() {
            v.push(t);
        }
    }

    /// The rows of every source.
    pub fn rows(&self) -> Rows {
        let mut out = Rows(Vec::with_capacity(256));
        for t in self.0.read().map(|v| v.clone()).unwrap_or_default() {
            t.rows(&mut out);
        }
        out
    }

    /// Every row as a sample named as `/metrics` shows it (counters with `_total`).
    pub fn samples(&self) -> Vec<Sample> {
        self.rows().0.into_iter().map(Sample::from).collect()
    }
}

/// One metric sample: a Prometheus name, its labels and value (what the alert rules judge).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name as exported (`vigil_node_cpu_utilization_ratio`).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl From<Row> for Sample {
    fn from(r: Row) -> Self {
        Sample {
            name: r.metric.name(),
            labels: r.labels.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            value: r.value,
        }
    }
}

/// The agent's own scan counters.
#[derive(Debug, Default)]
pub struct ScanCounts {
    /// Scans done.
    pub scans: AtomicU64,
    /// Failed reads by (reader, kind).
    pub read_errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl ScanCounts {
    /// Counts one finished scan.
    pub fn observe(&self, s: &Snapshot) {
        self.scans.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.read_errors.lock() {
            for (reader, kind, n) in s.read_errors.iter() {
                *e.entry((reader, kind.as_str())).or_default() += n;
            }
        }
    }
}

/// The agent itself and the host, from the latest snapshot.
pub struct AgentTable {
    /// The latest snapshot.
    pub latest: Latest,
    /// The agent's own CPU and memory.
    pub self_usage: SelfUsage,
    /// The agent's version.
    pub version: &'static str,
    /// Scans and read errors.
    pub counts: Arc<ScanCounts>,
}

impl Table for AgentTable {
    fn rows(&self, r: &mut Rows) {
        r.family(&m::AGENT_BUILD_INFO, [([("version", self.version)], 1.0)]);
        if let Some(u) = self.self_usage.read() {
            r.one(&m::AGENT_RESIDENT_MEMORY, u.rss_bytes as f64);
            r.one(&m::AGENT_CPU, u.cpu_seconds);
        }
        r.one(&m::AGENT_SCANS, self.counts.scans.load(Ordering::Relaxed) as f64);
        let errors = self.counts.read_errors.lock().map(|e| e.clone()).unwrap_or_default();
        r.family(
            &m::AGENT_READ_ERRORS,
            errors.iter().map(|((reader, kind), n)| ([("reader", *reader), ("kind", *kind)], *n as f64)),
        );
        let snapshot = self.latest.read().ok().and_then(|g| g.clone());
        let Some(s) = snapshot else { return };
        r.one(&m::AGENT_LAST_SCAN_TIMESTAMP, s.time.as_millisecond() as f64 / 1000.0);
        host(r, &s);
    }
}

/// The host's rows of a snapshot.
pub fn host(r: &mut Rows, s: &Snapshot) {
    if let Some(up) = s.host.uptime_seconds {
        r.one(&m::NODE_UPTIME, up);
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
        r.family(
            &m::NODE_CPU,
            c.counters.per_cpu.iter().enumerate().flat_map(|(i, pc)| {
                let cpu = i.to_string();
                modes(pc).into_iter().map(move |(mode, v)| ([("cpu", cpu.clone()), ("mode", mode.to_owned())], v))
            }),
        );
        if let Some(u) = c.utilization {
            r.one(&m::NODE_CPU_UTILIZATION, u.busy);
            r.family(
                &m::NODE_CPU_MODE_UTILIZATION,
                [("user", u.user), ("system", u.system), ("iowait", u.iowait), ("steal", u.steal)]
                    .map(|(m, v)| ([("mode", m)], v)),
            );
        }
        if let Some(l) = c.load {
            r.one(&m::NODE_LOAD1, l.one);
            r.one(&m::NODE_LOAD5, l.five);
            r.one(&m::NODE_LOAD15, l.fifteen);
        }
        r.one(&m::NODE_CONTEXT_SWITCHES, c.counters.context_switches as f64);
        r.one(&m::NODE_FORKS, c.counters.forks as f64);
        r.one(&m::NODE_PROCS_RUNNING, c.counters.procs_running.into());
        r.one(&m::NODE_PROCS_BLOCKED, c.counters.procs_blocked.into());
        r.one(&m::NODE_BOOT_TIME, c.counters.boot_time as f64);
    }
    if let Some(m) = &s.memory {
        r.one(&m::NODE_MEMORY_TOTAL, m.total_bytes as f64);
        r.one(&m::NODE_MEMORY_AVAILABLE, m.available_bytes as f64);
        r.one(&m::NODE_MEMORY_USED, m.used_bytes as f64);
        r.one(&m::NODE_MEMORY_FREE, m.free_bytes as f64);
        r.one(&m::NODE_MEMORY_BUFFERS, m.buffers_bytes as f64);
        r.one(&m::NODE_MEMORY_CACHED, m.cached_bytes as f64);
        r.one(&m::NODE_MEMORY_UTILIZATION, m.utilization);
        r.one(&m::NODE_SWAP_TOTAL, m.swap_total_bytes as f64);
        r.one(&m::NODE_SWAP_USED, m.swap_used_bytes as f64);
    }
    if let Some(p) = &s.pressure {
        let res = [("cpu", p.cpu), ("memory", p.memory), ("io", p.io)];
        r.family(
            &m::NODE_PRESSURE_WAITING,
            res.iter().filter_map(|(n, v)| v.map(|v| ([("resource", *n)], v.some.total_micros as f64 / 1e6))),
        );
        r.family(
            &m::NODE_PRESSURE_STALLED,
            res.iter()
                .filter_map(|(n, v)| v.and_then(|v| v.full).map(|f| ([("resource", *n)], f.total_micros as f64 / 1e6))),
        );
    }
    if let Some(fs) = &s.filesystems {
        let l = |f: &crate::proc::disks::Filesystem| {
            [("device", f.device.clone()), ("mountpoint", f.mount_point.clone()), ("fstype", f.fs_type.clone())]
        };
        r.family(&m::NODE_FILESYSTEM_SIZE, fs.iter().map(|f| (l(f), f.size_bytes as f64)));
        r.family(&m::NODE_FILESYSTEM_USED, fs.iter().map(|f| (l(f), f.used_bytes as f64)));
        r.family(&m::NODE_FILESYSTEM_AVAIL, fs.iter().map(|f| (l(f), f.available_bytes as f64)));
        r.family(&m::NODE_FILESYSTEM_UTILIZATION, fs.iter().map(|f| (l(f), f.utilization)));
        r.family(&m::NODE_FILESYSTEM_FILES, fs.iter().map(|f| (l(f), f.inodes as f64)));
        r.family(&m::NODE_FILESYSTEM_FILES_USED, fs.iter().map(|f| (l(f), f.inodes_used as f64)));
        r.family(&m::NODE_FILESYSTEM_READONLY, fs.iter().map(|f| (l(f), if f.read_only { 1.0 } else { 0.0 })));
    }
    if let Some(ds) = &s.disks {
        let l = |d: &crate::proc::disks::DiskIo| [("device", d.device.clone())];
        r.family(&m::NODE_DISK_READS_COMPLETED, ds.iter().map(|d| (l(d), d.reads as f64)));
        r.family(&m::NODE_DISK_READ, ds.iter().map(|d| (l(d), d.read_bytes as f64)));
        r.family(&m::NODE_DISK_WRITES_COMPLETED, ds.iter().map(|d| (l(d), d.writes as f64)));
        r.family(&m::NODE_DISK_WRITTEN, ds.iter().map(|d| (l(d), d.written_bytes as f64)));
        r.family(&m::NODE_DISK_IO_TIME, ds.iter().map(|d| (l(d), d.io_seconds)));
        r.family(&m::NODE_DISK_IO_NOW, ds.iter().map(|d| (l(d), d.in_progress as f64)));
    }
    if let Some(n) = &s.network {
        let is = &n.interfaces;
        let l = |i: &crate::proc::net::Interface| [("device", i.name.clone())];
        r.family(&m::NODE_NETWORK_RECEIVE, is.iter().map(|i| (l(i), i.rx_bytes as f64)));
        r.family(&m::NODE_NETWORK_RECEIVE_PACKETS, is.iter().map(|i| (l(i), i.rx_packets as f64)));
        r.family(&m::NODE_NETWORK_RECEIVE_ERRORS, is.iter().map(|i| (l(i), i.rx_errors as f64)));
        r.family(&m::NODE_NETWORK_RECEIVE_DROPS, is.iter().map(|i| (l(i), i.rx_drops as f64)));
        r.family(&m::NODE_NETWORK_TRANSMIT, is.iter().map(|i| (l(i), i.tx_bytes as f64)));
        r.family(&m::NODE_NETWORK_TRANSMIT_PACKETS, is.iter().map(|i| (l(i), i.tx_packets as f64)));
        r.family(&m::NODE_NETWORK_TRANSMIT_ERRORS, is.iter().map(|i| (l(i), i.tx_errors as f64)));
        r.family(&m::NODE_NETWORK_TRANSMIT_DROPS, is.iter().map(|i| (l(i), i.tx_drops as f64)));
        let snmp = |key: &str| n.tcp.get(key).map(|v| *v as f64);
        if let Some(v) = snmp("CurrEstab") {
            r.one(&m::NODE_TCP_ESTABLISHED, v);
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
                r.one(metric, v);
            }
        }
        for (metric, key) in [
            (&m::NODE_TCP_SYNCOOKIES_SENT, "SyncookiesSent"),
            (&m::NODE_TCP_LISTEN_OVERFLOWS, "ListenOverflows"),
            (&m::NODE_TCP_LISTEN_DROPS, "ListenDrops"),
        ] {
            if let Some(v) = n.tcp_ext.get(key) {
                r.one(metric, *v as f64);
            }
        }
        if let Some((count, max)) = n.conntrack {
            r.one(&m::NODE_CONNTRACK_ENTRIES, count as f64);
            r.one(&m::NODE_CONNTRACK_LIMIT, max as f64);
        }
        r.family(&m::NODE_TCP_CONNECTIONS, n.tcp_states.iter().map(|(st, v)| ([("state", *st)], *v as f64)));
        r.family(
            &m::NODE_SOCKSTAT,
            n.sockstat.iter().flat_map(|(p, f)| {
                f.iter().map(move |(k, v)| ([("protocol", p.clone()), ("field", k.clone())], *v as f64))
            }),
        );
    }
    if let Some(f) = &s.file_descriptors {
        r.one(&m::NODE_FILEFD_ALLOCATED, f.allocated as f64);
        r.one(&m::NODE_FILEFD_MAXIMUM, f.max as f64);
        r.one(&m::NODE_FILEFD_UTILIZATION, f.utilization);
    }
    if let Some(p) = &s.processes {
        r.family(&m::NODE_PROCESSES, p.by_state.iter().map(|(st, v)| ([("state", *st)], *v as f64)));
        r.one(&m::NODE_THREADS, p.threads as f64);
    }
    if let Some(c) = &s.clock {
        r.one(&m::NODE_CLOCK_SYNCHRONIZED, if c.synchronized { 1.0 } else { 0.0 });
        r.one(&m::NODE_CLOCK_OFFSET, c.offset_seconds);
        r.one(&m::NODE_CLOCK_ESTIMATED_ERROR, c.estimated_error_seconds);
        r.one(&m::NODE_CLOCK_MAX_ERROR, c.max_error_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Collectors, CompiledFilters};
    use crate::host::HostRoot;
    use crate::snapshot::Collector;

    /// The samples of Prometheus text exposition.
    fn parse(text: &str) -> Vec<Sample> {
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        scrape
            .samples
            .into_iter()
            .filter_map(|s| {
                let value = match s.value {
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                    _ => return None,
                };
                let labels = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                Some(Sample { name: s.metric, labels, value })
            })
            .collect()
    }

    fn sorted(mut v: Vec<Sample>) -> Vec<Sample> {
        v.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        v
    }

    #[test]
    fn the_rules_read_exactly_what_metrics_shows() {
        let latest: Latest = Arc::default();
        let (registry, exports) = super::super::prometheus::registry(latest.clone(), SelfUsage::default(), "test");
        let mut collector = Collector::new(HostRoot::new("/"), Collectors::default(), CompiledFilters::default(), 5);
        collector.collect(jiff::Timestamp::now());
        let snapshot = collector.collect(jiff::Timestamp::now());
        exports.observe(&snapshot);
        *latest.write().unwrap() = Some(Arc::new(snapshot));
        let text = super::super::prometheus::encode(&registry).unwrap();
        // The agent's own CPU and memory are read from /proc/self at each look: compared by
        // name only.
        let live = |s: &Sample| s.name == m::AGENT_CPU.name() || s.name == m::AGENT_RESIDENT_MEMORY.name();
        let split = |v: Vec<Sample>| -> (Vec<String>, Vec<Sample>) {
            let (live, rest): (Vec<Sample>, Vec<Sample>) = sorted(v).into_iter().partition(live);
            (live.into_iter().map(|s| s.name).collect(), rest)
        };
        let (shown_live, shown) = split(parse(&super::super::prometheus::to_prometheus_text(&text)));
        let (read_live, read) = split(exports.tables.samples());
        assert!(read.len() > 50, "{} samples", read.len());
        assert_eq!(read, shown);
        assert_eq!(read_live, shown_live);
        assert_eq!(read_live.len(), 2);
        // Every row's metric is in the catalog the documentation and the rules' checks use.
        for r in exports.tables.rows().0 {
            assert!(m::EXPORTED.iter().any(|c| **c == *r.metric), "{} is not in the catalog", r.metric.family);
            let names: Vec<&str> = r.labels.iter().map(|(k, _)| *k).collect();
            assert_eq!(names, r.metric.labels, "{}", r.metric.family);
        }
    }

    #[test]
    fn rows_of_a_metric_stay_together_and_families_need_rows() {
        let mut r = Rows::default();
        r.family(&m::NODE_FILESYSTEM_SIZE, std::iter::empty::<([(&str, String); 1], f64)>());
        assert!(r.0.is_empty());
        r.one(&m::NODE_LOAD1, 0.5);
        r.family(&m::NODE_TCP_CONNECTIONS, [([("state", "established")], 3.0), ([("state", "listen")], 2.0)]);
        let s: Vec<Sample> = r.0.into_iter().map(Sample::from).collect();
        assert_eq!(s[0].name, "vigil_node_load1");
        assert_eq!(s[2].labels.get("state").map(String::as_str), Some("listen"));
    }
}
