//! What the OTLP push sends, as data over the one metric table ([`super::catalog`]): the
//! catalog metrics that have an OpenTelemetry semantic convention become its instruments
//! ([`SEMANTIC`]: label keys renamed to its attributes, label values to its enums, several
//! catalog metrics merged into one instrument by a constant attribute, a difference of two
//! metrics where the convention counts a state the host does not report); every other
//! exported metric goes under its catalog name in OpenTelemetry form ([`otel_name`]), so a
//! backend that stores OTLP in Prometheus shows it under the very name `/metrics` has.
//!
//! Pure: rows in, points out. [`super::otlp`] registers the instruments.

use std::collections::BTreeMap;

use vigil_crds::metrics::{self as m, Kind, Metric, Unit};

use super::catalog::Row;

/// The OpenTelemetry instrument kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instrument {
    /// Monotonic sum.
    Counter,
    /// Non-monotonic sum (a quantity in use).
    UpDownCounter,
    /// A value sampled as is.
    Gauge,
}

/// One semantic-convention instrument and the catalog rows it is made of.
#[derive(Debug)]
pub struct Semantic {
    /// The instrument name (`system.cpu.time`).
    pub name: &'static str,
    /// UCUM unit (`s`, `By`, `1`, `{packet}`).
    pub unit: &'static str,
    /// Description.
    pub help: &'static str,
    /// Instrument kind.
    pub kind: Instrument,
    /// The catalog metrics whose rows become its points.
    pub from: &'static [Source],
}

/// How the rows of one catalog metric become points of an instrument.
#[derive(Debug)]
pub struct Source {
    /// The catalog metric.
    pub metric: &'static Metric,
    /// Each catalog label key and the attribute key it becomes (every label of the metric).
    pub labels: &'static [(&'static str, &'static str)],
    /// Label values renamed to the convention's enum values (`irq` → `interrupt`).
    pub values: &'static [(&'static str, &'static str)],
    /// Constant attributes every point of this source carries.
    pub set: &'static [(&'static str, &'static str)],
    /// An attribute read off the row of another metric with the same labels.
    pub join: Option<Join>,
    /// Factor on the value: −1 subtracts a metric from the others of the same point.
    pub scale: f64,
}

impl Source {
    const fn of(metric: &'static Metric) -> Self {
        Self { metric, labels: &[], values: &[], set: &[], join: None, scale: 1.0 }
    }
    const fn labels(mut self, labels: &'static [(&'static str, &'static str)]) -> Self {
        self.labels = labels;
        self
    }
    const fn values(mut self, values: &'static [(&'static str, &'static str)]) -> Self {
        self.values = values;
        self
    }
    const fn set(mut self, set: &'static [(&'static str, &'static str)]) -> Self {
        self.set = set;
        self
    }
    const fn join(mut self, join: Join) -> Self {
        self.join = Some(join);
        self
    }
    const fn minus(mut self) -> Self {
        self.scale = -1.0;
        self
    }
}

/// An attribute from a 0/1 metric: `key` is `zero` where its value is 0, else `other`.
#[derive(Clone, Copy, Debug)]
pub struct Join {
    /// The 0/1 metric, with the same labels as the source.
    pub metric: &'static Metric,
    /// The attribute key.
    pub key: &'static str,
    /// The value where the metric is 0.
    pub zero: &'static str,
    /// The value where it is not.
    pub other: &'static str,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attr {
    /// A string.
    Str(String),
    /// An integer (keys the convention types as int).
    Int(i64),
}

/// One point: attributes (sorted by key) and value.
pub type Point = (Vec<(&'static str, Attr)>, f64);

/// Attribute keys the conventions type as integers.
const INT_KEYS: &[&str] = &["cpu.logical_number"];

const FS: &[(&str, &str)] = &[
    ("device", "system.device"),
    ("mountpoint", "system.filesystem.mountpoint"),
    ("fstype", "system.filesystem.type"),
];
const FS_MODE: Join =
    Join { metric: &m::NODE_FILESYSTEM_READONLY, key: "system.filesystem.mode", zero: "rw", other: "ro" };
const DISK: &[(&str, &str)] = &[("device", "system.device")];
const NIC: &[(&str, &str)] = &[("device", "network.interface.name")];
const READ: &[(&str, &str)] = &[("disk.io.direction", "read")];
const WRITE: &[(&str, &str)] = &[("disk.io.direction", "write")];
const RECEIVE: &[(&str, &str)] = &[("network.io.direction", "receive")];
const TRANSMIT: &[(&str, &str)] = &[("network.io.direction", "transmit")];

const fn fs(metric: &'static Metric) -> Source {
    Source::of(metric).labels(FS).join(FS_MODE)
}

/// The catalog metrics that have a semantic convention, as its instruments.
pub const SEMANTIC: &[Semantic] = &[
    Semantic {
        name: "system.cpu.time",
        unit: "s",
        help: "CPU time per logical CPU and mode",
        kind: Instrument::Counter,
        from: &[Source::of(&m::NODE_CPU)
            .labels(&[("cpu", "cpu.logical_number"), ("mode", "cpu.mode")])
            .values(&[("irq", "interrupt"), ("softirq", "interrupt")])],
    },
    Semantic {
        name: "system.cpu.utilization",
        unit: "1",
        help: "Share of CPU time per mode since the previous scan, all CPUs",
        kind: Instrument::Gauge,
        from: &[Source::of(&m::NODE_CPU_MODE_UTILIZATION).labels(&[("mode", "cpu.mode")])],
    },
    Semantic {
        name: "system.cpu.load_average.1m",
        unit: "{thread}",
        help: "Load average over 1 minute",
        kind: Instrument::Gauge,
        from: &[Source::of(&m::NODE_LOAD1)],
    },
    Semantic {
        name: "system.cpu.load_average.5m",
        unit: "{thread}",
        help: "Load average over 5 minutes",
        kind: Instrument::Gauge,
        from: &[Source::of(&m::NODE_LOAD5)],
    },
    Semantic {
        name: "system.cpu.load_average.15m",
        unit: "{thread}",
        help: "Load average over 15 minutes",
        kind: Instrument::Gauge,
        from: &[Source::of(&m::NODE_LOAD15)],
    },
    Semantic {
        name: "system.memory.usage",
        unit: "By",
        help: "Memory in use by state",
        kind: Instrument::UpDownCounter,
        from: &[
            Source::of(&m::NODE_MEMORY_USED).set(&[("system.memory.state", "used")]),
            Source::of(&m::NODE_MEMORY_FREE).set(&[("system.memory.state", "free")]),
            Source::of(&m::NODE_MEMORY_BUFFERS).set(&[("system.memory.state", "buffers")]),
            Source::of(&m::NODE_MEMORY_CACHED).set(&[("system.memory.state", "cached")]),
        ],
    },
    Semantic {
        name: "system.memory.limit",
        unit: "By",
        help: "Usable RAM",
        kind: Instrument::UpDownCounter,
        from: &[Source::of(&m::NODE_MEMORY_TOTAL)],
    },
    Semantic {
        name: "system.linux.memory.available",
        unit: "By",
        help: "RAM available without swapping (MemAvailable)",
        kind: Instrument::UpDownCounter,
        from: &[Source::of(&m::NODE_MEMORY_AVAILABLE)],
    },
    Semantic {
        name: "system.memory.utilization",
        unit: "1",
        help: "Used over total RAM",
        kind: Instrument::Gauge,
        from: &[Source::of(&m::NODE_MEMORY_UTILIZATION).set(&[("system.memory.state", "used")])],
    },
    Semantic {
        name: "system.paging.usage",
        unit: "By",
        help: "Swap by state",
        kind: Instrument::UpDownCounter,
        from: &[
            Source::of(&m::NODE_SWAP_USED).set(&[("system.paging.state", "used")]),
            Source::of(&m::NODE_SWAP_TOTAL).set(&[("system.paging.state", "free")]),
            Source::of(&m::NODE_SWAP_USED).set(&[("system.paging.state", "free")]).minus(),
        ],
    },
    Semantic {
        name: "system.filesystem.usage",
        unit: "By",
        help: "Filesystem space by state",
        kind: Instrument::UpDownCounter,
        from: &[
            fs(&m::NODE_FILESYSTEM_USED).set(&[("system.filesystem.state", "used")]),
            fs(&m::NODE_FILESYSTEM_AVAIL).set(&[("system.filesystem.state", "free")]),
            fs(&m::NODE_FILESYSTEM_SIZE).set(&[("system.filesystem.state", "reserved")]),
            fs(&m::NODE_FILESYSTEM_USED).set(&[("system.filesystem.state", "reserved")]).minus(),
            fs(&m::NODE_FILESYSTEM_AVAIL).set(&[("system.filesystem.state", "reserved")]).minus(),
        ],
    },
    Semantic {
        name: "system.filesystem.utilization",
        unit: "1",
        help: "Used over used plus available, as df shows",
        kind: Instrument::Gauge,
        from: &[fs(&m::NODE_FILESYSTEM_UTILIZATION)],
    },
    Semantic {
        name: "system.filesystem.inodes.usage",
        unit: "{inode}",
        help: "Inodes by state",
        kind: Instrument::UpDownCounter,
        from: &[
            fs(&m::NODE_FILESYSTEM_FILES_USED).set(&[("system.filesystem.state", "used")]),
            fs(&m::NODE_FILESYSTEM_FILES).set(&[("system.filesystem.state", "free")]),
            fs(&m::NODE_FILESYSTEM_FILES_USED).set(&[("system.filesystem.state", "free")]).minus(),
        ],
    },
    Semantic {
        name: "system.disk.io",
        unit: "By",
        help: "Bytes read and written per device",
        kind: Instrument::Counter,
        from: &[
            Source::of(&m::NODE_DISK_READ).labels(DISK).set(READ),
            Source::of(&m::NODE_DISK_WRITTEN).labels(DISK).set(WRITE),
        ],
    },
    Semantic {
        name: "system.disk.operations",
        unit: "{operation}",
        help: "Reads and writes completed per device",
        kind: Instrument::Counter,
        from: &[
            Source::of(&m::NODE_DISK_READS_COMPLETED).labels(DISK).set(READ),
            Source::of(&m::NODE_DISK_WRITES_COMPLETED).labels(DISK).set(WRITE),
        ],
    },
    Semantic {
        name: "system.disk.io_time",
        unit: "s",
        help: "Time the device had I/O in flight",
        kind: Instrument::Counter,
        from: &[Source::of(&m::NODE_DISK_IO_TIME).labels(DISK)],
    },
    Semantic {
        name: "system.disk.pending_operations",
        unit: "{operation}",
        help: "I/O operations in flight per device",
        kind: Instrument::UpDownCounter,
        from: &[Source::of(&m::NODE_DISK_IO_NOW).labels(DISK)],
    },
    Semantic {
        name: "system.network.io",
        unit: "By",
        help: "Bytes received and sent per interface",
        kind: Instrument::Counter,
        from: &[
            Source::of(&m::NODE_NETWORK_RECEIVE).labels(NIC).set(RECEIVE),
            Source::of(&m::NODE_NETWORK_TRANSMIT).labels(NIC).set(TRANSMIT),
        ],
    },
    Semantic {
        name: "system.network.packets",
        unit: "{packet}",
        help: "Packets received and sent per interface",
        kind: Instrument::Counter,
        from: &[
            Source::of(&m::NODE_NETWORK_RECEIVE_PACKETS).labels(NIC).set(RECEIVE),
            Source::of(&m::NODE_NETWORK_TRANSMIT_PACKETS).labels(NIC).set(TRANSMIT),
        ],
    },
    Semantic {
        name: "system.network.errors",
        unit: "{error}",
        help: "Errors per interface and direction",
        kind: Instrument::Counter,
        from: &[
            Source::of(&m::NODE_NETWORK_RECEIVE_ERRORS).labels(NIC).set(RECEIVE),
            Source::of(&m::NODE_NETWORK_TRANSMIT_ERRORS).labels(NIC).set(TRANSMIT),
        ],
    },
    Semantic {
        name: "system.network.dropped",
        unit: "{packet}",
        help: "Packets dropped per interface and direction",
        kind: Instrument::Counter,
        from: &[
            Source::of(&m::NODE_NETWORK_RECEIVE_DROPS).labels(NIC).set(RECEIVE),
            Source::of(&m::NODE_NETWORK_TRANSMIT_DROPS).labels(NIC).set(TRANSMIT),
        ],
    },
    Semantic {
        name: "system.network.connection.count",
        unit: "{connection}",
        help: "TCP connections by state",
        kind: Instrument::UpDownCounter,
        from: &[Source::of(&m::NODE_TCP_CONNECTIONS)
            .labels(&[("state", "network.connection.state")])
            .set(&[("network.transport", "tcp")])],
    },
    Semantic {
        name: "system.network.tcp.retransmitted_segments",
        unit: "{segment}",
        help: "TCP segments retransmitted (/proc/net/snmp RetransSegs)",
        kind: Instrument::Counter,
        from: &[Source::of(&m::NODE_TCP_RETRANSMITTED_SEGMENTS)],
    },
    Semantic {
        name: "system.process.count",
        unit: "{process}",
        help: "Processes by status",
        kind: Instrument::UpDownCounter,
        from: &[Source::of(&m::NODE_PROCESSES).labels(&[("state", "process.status")])],
    },
    Semantic {
        name: "system.linux.file_descriptor.count",
        unit: "{file_descriptor}",
        help: "Allocated file handles, system-wide",
        kind: Instrument::UpDownCounter,
        from: &[Source::of(&m::NODE_FILEFD_ALLOCATED)],
    },
    Semantic {
        name: "system.uptime",
        unit: "s",
        help: "Time since the host booted",
        kind: Instrument::Gauge,
        from: &[Source::of(&m::NODE_UPTIME)],
    },
];

/// Whether a semantic instrument reads `metric` (as a source or a join).
pub fn has_convention(metric: &Metric) -> bool {
    SEMANTIC
        .iter()
        .flat_map(|s| s.from)
        .any(|src| src.metric.family == metric.family || src.join.is_some_and(|j| j.metric.family == metric.family))
}

/// The exported metrics without a convention, pushed under their catalog names
/// ([`otel_name`]); histograms are recorded as they happen, not read from the table.
pub fn under_catalog_names() -> impl Iterator<Item = &'static Metric> {
    m::EXPORTED.iter().copied().filter(|m| m.kind != Kind::Histogram && !has_convention(m))
}

/// A catalog family in OpenTelemetry form: its first two words are namespaces, the rest one
/// component (`vigil_node_pressure_waiting` → `vigil.node.pressure_waiting`); the unit goes in
/// [`otel_unit`], not the name.
pub fn otel_name(metric: &Metric) -> String {
    let mut parts = metric.family.splitn(3, '_');
    let names: Vec<&str> = [parts.next(), parts.next(), parts.next()].into_iter().flatten().collect();
    names.join(".")
}

/// A catalog unit as UCUM: `s`, `By`, `1`; empty for a count.
pub fn otel_unit(metric: &Metric) -> &'static str {
    match metric.unit {
        Some(Unit::Seconds) => "s",
        Some(Unit::Bytes) => "By",
        Some(Unit::Ratio) => "1",
        None => "",
    }
}

/// The OpenTelemetry kind of a catalog metric pushed under its own name.
pub fn otel_kind(metric: &Metric) -> Instrument {
    match metric.kind {
        Kind::Counter => Instrument::Counter,
        Kind::Gauge | Kind::Histogram => Instrument::Gauge,
    }
}

/// The points of a semantic instrument: each source row's attributes, values summed where
/// attributes meet (CPU `irq` and `softirq` are one `interrupt` point; reserved space is size
/// minus used minus available). A sum below 0 (a difference of two reads that raced) is 0.
pub fn points(s: &Semantic, rows: &[Row]) -> Vec<Point> {
    let mut out: BTreeMap<Vec<(&'static str, Attr)>, f64> = BTreeMap::new();
    for src in s.from {
        for r in rows.iter().filter(|r| r.metric.family == src.metric.family) {
            let mut attrs: Vec<(&'static str, Attr)> = Vec::with_capacity(src.labels.len() + src.set.len() + 1);
            for (label, value) in &r.labels {
                let Some((_, key)) = src.labels.iter().find(|(l, _)| l == label) else { continue };
                let value = src.values.iter().find(|(from, _)| from == value).map_or(value.as_str(), |(_, to)| to);
                attrs.push((key, attr(key, value)));
            }
            attrs.extend(src.set.iter().map(|(k, v)| (*k, Attr::Str((*v).to_owned()))));
            if let Some(j) = src.join {
                let flag = rows.iter().find(|o| o.metric.family == j.metric.family && o.labels == r.labels);
                if let Some(o) = flag {
                    attrs.push((j.key, Attr::Str(if o.value == 0.0 { j.zero } else { j.other }.to_owned())));
                }
            }
            attrs.sort_by(|a, b| a.0.cmp(b.0));
            *out.entry(attrs).or_default() += src.scale * r.value;
        }
    }
    out.into_iter().map(|(a, v)| (a, if s.kind == Instrument::Gauge { v } else { v.max(0.0) })).collect()
}

/// The points of a metric pushed under its catalog name: its labels as attributes; an
/// unlabelled metric is one point (the last row, as `/metrics` shows it).
pub fn catalog_points(metric: &Metric, rows: &[Row]) -> Vec<Point> {
    let mut out: Vec<Point> = rows
        .iter()
        .filter(|r| r.metric.family == metric.family)
        .map(|r| (r.labels.iter().map(|(k, v)| (*k, Attr::Str(v.clone()))).collect(), r.value))
        .collect();
    if metric.labels.is_empty() && out.len() > 1 {
        out.drain(..out.len() - 1);
    }
    out
}

fn attr(key: &str, value: &str) -> Attr {
    match value.parse::<i64>() {
        Ok(i) if INT_KEYS.contains(&key) => Attr::Int(i),
        _ => Attr::Str(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::catalog::Rows;

    fn get(points: &[Point], want: &[(&str, Attr)]) -> Option<f64> {
        points.iter().find(|(a, _)| want.iter().all(|w| a.iter().any(|(k, v)| *k == w.0 && *v == w.1))).map(|p| p.1)
    }

    fn s(v: &str) -> Attr {
        Attr::Str(v.to_owned())
    }

    fn semantic(name: &str) -> &'static Semantic {
        SEMANTIC.iter().find(|s| s.name == name).unwrap()
    }

    #[test]
    fn interrupt_time_is_irq_plus_softirq_on_an_integer_cpu_number() {
        let mut r = Rows::default();
        r.family(
            &m::NODE_CPU,
            [("0", "irq", 1.5), ("0", "softirq", 2.0), ("0", "user", 7.0), ("1", "irq", 4.0)]
                .map(|(cpu, mode, v)| ([("cpu", cpu), ("mode", mode)], v)),
        );
        let p = points(semantic("system.cpu.time"), &r.0);
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(get(&p, &[("cpu.logical_number", Attr::Int(0)), ("cpu.mode", s("interrupt"))]), Some(3.5));
        assert_eq!(get(&p, &[("cpu.logical_number", Attr::Int(1)), ("cpu.mode", s("interrupt"))]), Some(4.0));
        assert_eq!(get(&p, &[("cpu.logical_number", Attr::Int(0)), ("cpu.mode", s("user"))]), Some(7.0));
    }

    #[test]
    fn states_the_host_does_not_report_are_differences() {
        let mut r = Rows::default();
        r.one(&m::NODE_SWAP_TOTAL, 10.0);
        r.one(&m::NODE_SWAP_USED, 4.0);
        let fs = |mount: &'static str| [("device", "/dev/sda1"), ("mountpoint", mount), ("fstype", "ext4")];
        r.family(&m::NODE_FILESYSTEM_SIZE, [(fs("/"), 100.0), (fs("/boot"), 10.0)]);
        r.family(&m::NODE_FILESYSTEM_USED, [(fs("/"), 50.0), (fs("/boot"), 6.0)]);
        // More available than size leaves (as btrfs can report): no negative reserve.
        r.family(&m::NODE_FILESYSTEM_AVAIL, [(fs("/"), 45.0), (fs("/boot"), 5.0)]);
        r.family(&m::NODE_FILESYSTEM_READONLY, [(fs("/"), 0.0), (fs("/boot"), 1.0)]);
        let paging = points(semantic("system.paging.usage"), &r.0);
        assert_eq!(get(&paging, &[("system.paging.state", s("used"))]), Some(4.0));
        assert_eq!(get(&paging, &[("system.paging.state", s("free"))]), Some(6.0));
        let usage = points(semantic("system.filesystem.usage"), &r.0);
        assert_eq!(usage.len(), 6);
        let root = [("system.filesystem.mountpoint", s("/")), ("system.filesystem.mode", s("rw"))];
        let at = |state: &str, base: &[(&str, Attr)]| {
            let mut w = base.to_vec();
            w.push(("system.filesystem.state", s(state)));
            get(&usage, &w)
        };
        assert_eq!(at("used", &root), Some(50.0));
        assert_eq!(at("free", &root), Some(45.0));
        assert_eq!(at("reserved", &root), Some(5.0));
        let boot = [("system.filesystem.mountpoint", s("/boot")), ("system.filesystem.mode", s("ro"))];
        assert_eq!(at("reserved", &boot), Some(0.0));
        assert_eq!(at("used", &boot), Some(6.0));
        for (attrs, _) in &usage {
            let keys: Vec<&str> = attrs.iter().map(|(k, _)| *k).collect();
            assert_eq!(
                keys,
                [
                    "system.device",
                    "system.filesystem.mode",
                    "system.filesystem.mountpoint",
                    "system.filesystem.state",
                    "system.filesystem.type"
                ]
            );
        }
    }

    #[test]
    fn every_source_carries_every_label_of_its_metric() {
        let mut names = std::collections::BTreeSet::new();
        for s in SEMANTIC {
            assert!(names.insert(s.name), "{} twice", s.name);
            for src in s.from {
                assert!(m::EXPORTED.iter().any(|e| e.family == src.metric.family), "{}", src.metric.family);
                let mapped: Vec<&str> = src.labels.iter().map(|(l, _)| *l).collect();
                assert_eq!(mapped, src.metric.labels, "{} from {}", s.name, src.metric.family);
                if let Some(j) = src.join {
                    assert_eq!(j.metric.labels, src.metric.labels, "{}", j.metric.family);
                }
            }
        }
        // No metric is pushed twice, under a convention and under its own name.
        for m in under_catalog_names() {
            assert!(!has_convention(m));
            assert!(names.insert(Box::leak(otel_name(m).into_boxed_str())), "{} twice", otel_name(m));
        }
        // Every exported metric is pushed one way or the other.
        let pushed = m::EXPORTED.iter().filter(|m| has_convention(m) || under_catalog_names().any(|u| u == **m));
        assert_eq!(pushed.count(), m::EXPORTED.iter().filter(|m| m.kind != Kind::Histogram).count());
    }

    /// What a Prometheus server that receives OTLP names a metric: dots to underscores, the
    /// unit's word, `ratio` for a unit of 1 on a gauge, `_total` on a monotonic sum.
    fn as_prometheus_stores_it(name: &str, unit: &str, kind: Instrument) -> String {
        let mut n = name.replace('.', "_");
        let word = match (unit, kind) {
            ("s", _) => Some("seconds"),
            ("By", _) => Some("bytes"),
            ("1", Instrument::Gauge) => Some("ratio"),
            _ => None,
        };
        if let Some(w) = word {
            n = format!("{n}_{w}");
        }
        if kind == Instrument::Counter {
            n.push_str("_total");
        }
        n
    }

    #[test]
    fn catalog_names_come_back_as_metrics_names_them() {
        let mut n = 0;
        for m in under_catalog_names() {
            let name = otel_name(m);
            assert!(name.starts_with("vigil.agent.") || name.starts_with("vigil.node."), "{name}");
            assert!(
                name.len() <= 255 && name.chars().all(|c| c.is_ascii_alphanumeric() || "._".contains(c)),
                "{name} is not an instrument name"
            );
            assert_eq!(as_prometheus_stores_it(&name, otel_unit(m), otel_kind(m)), m.name());
            n += 1;
        }
        assert!(n > 40, "{n}");
        assert_eq!(otel_name(&m::NODE_PRESSURE_WAITING), "vigil.node.pressure_waiting");
        assert_eq!(otel_name(&m::AGENT_SCAN_DURATION), "vigil.agent.scan_duration");
    }

    #[test]
    fn catalog_points_keep_labels_and_one_point_for_a_single_series() {
        let mut r = Rows::default();
        r.one(&m::NODE_CLOCK_OFFSET, 0.5);
        r.one(&m::NODE_CLOCK_OFFSET, -0.25);
        r.family(&m::NODE_PRESSURE_WAITING, [([("resource", "cpu")], 3.0), ([("resource", "io")], 1.0)]);
        assert_eq!(catalog_points(&m::NODE_CLOCK_OFFSET, &r.0), vec![(vec![], -0.25)]);
        let p = catalog_points(&m::NODE_PRESSURE_WAITING, &r.0);
        assert_eq!(p, vec![(vec![("resource", s("cpu"))], 3.0), (vec![("resource", s("io"))], 1.0)]);
        assert!(catalog_points(&m::NODE_THREADS, &r.0).is_empty());
    }
}
