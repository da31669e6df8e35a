//! The Prometheus `/metrics` endpoint (plus `/healthz` and `/readyz`).
//!
//! Host metrics are encoded at scrape time from the latest snapshot, so a scrape reads no
//! file and does no work beyond formatting; the agent's own counters live in a regular
//! prometheus-client registry. Names follow Prometheus conventions: `vigil_node_*` for the
//! host, `vigil_agent_*` for the agent itself, base units, `_total` on counters.

use std::fmt;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use vigil_crds::metrics::{self as m, Kind, Metric};

use super::catalog::{AgentTable, Row, Rows, ScanCounts, Table, Tables};

use crate::selfmon::SelfUsage;
use crate::snapshot::Snapshot;

/// The latest snapshot, shared between the scan loop (writer) and scrapes (readers).
pub type Latest = Arc<RwLock<Option<Arc<Snapshot>>>>;

/// The agent's own metrics, updated by the scan loop, and every table `/metrics` encodes.
#[derive(Clone)]
pub struct AgentMetrics {
    /// Scan duration.
    pub scan_seconds: Histogram,
    /// Scans done and failed reads.
    pub counts: Arc<ScanCounts>,
    /// The tables behind `/metrics`, which the alert rules read too.
    pub tables: Tables,
}

impl AgentMetrics {
    /// Counts one finished scan.
    pub fn observe(&self, s: &Snapshot) {
        self.scan_seconds.observe(s.scan_seconds);
        self.counts.observe(s);
    }
}

/// Builds the registry: the scan-duration histogram, and one collector over the tables (the
/// agent and the host from `latest` first; [`register_events`] and the alert pipeline add
/// theirs).
pub fn registry(latest: Latest, self_usage: SelfUsage, version: &'static str) -> (Registry, AgentMetrics) {
    let mut registry = Registry::default();
    let counts = Arc::new(ScanCounts::default());
    let tables = Tables::default();
    tables.add(Arc::new(AgentTable { latest, self_usage, version, counts: counts.clone() }));
    let metrics = AgentMetrics {
        // 1 ms … ~4 s: a scan of a few hundred processes takes milliseconds.
        scan_seconds: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 13)),
        counts,
        tables: tables.clone(),
    };
    register(&mut registry, &m::AGENT_SCAN_DURATION, metrics.scan_seconds.clone());
    registry.register_collector(Box::new(TablesCollector(tables)));
    (registry, metrics)
}

/// Encodes the tables at scrape time.
#[derive(Debug)]
struct TablesCollector(Tables);

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

/// Encodes rows: one descriptor per metric (its rows are contiguous), an unlabelled metric
/// as a single sample, a labelled one as a family.
fn encode_rows(enc: &mut DescriptorEncoder<'_>, rows: &[Row]) -> fmt::Result {
    let mut i = 0;
    while i < rows.len() {
        let metric = rows[i].metric;
        let end = rows[i..].iter().position(|r| r.metric.family != metric.family).map_or(rows.len(), |n| i + n);
        let u = unit(metric);
        let kind = match metric.kind {
            Kind::Counter => ConstCounter::new(0.0).metric_type(),
            Kind::Gauge | Kind::Histogram => ConstGauge::new(0.0).metric_type(),
        };
        let mut e = enc.encode_descriptor(metric.family, metric.help, u.as_ref(), kind)?;
        if metric.labels.is_empty() {
            // An unlabelled metric is one sample (the last row, should a table repeat it).
            encode_value(metric.kind, rows[end - 1].value, e)?;
        } else {
            for r in &rows[i..end] {
                encode_value(metric.kind, r.value, e.encode_family(&r.labels)?)?;
            }
        }
        i = end;
    }
    Ok(())
}

fn encode_value(kind: Kind, v: f64, sample: MetricEncoder<'_>) -> fmt::Result {
    match kind {
        Kind::Counter => ConstCounter::new(v).encode(sample),
        Kind::Gauge | Kind::Histogram => ConstGauge::new(v).encode(sample),
    }
}

impl Collector for TablesCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        encode_rows(&mut enc, &self.0.rows().0)
    }
}

/// Adds the event path's table: events by type, drops and unparseable input by source, the
/// sources' states and the queue's depth.
pub fn register_events(
    tables: &Tables,
    queue: crate::events::EventQueue,
    states: std::sync::Arc<std::sync::Mutex<crate::events::runner::SourceStates>>,
) {
    tables.add(Arc::new(EventsTable { queue, states }));
}

struct EventsTable {
    queue: crate::events::EventQueue,
    states: std::sync::Arc<std::sync::Mutex<crate::events::runner::SourceStates>>,
}

impl Table for EventsTable {
    fn rows(&self, o: &mut Rows) {
        use crate::events::{DropReason, EventType, Source};
        let stats = self.queue.stats();
        o.family(
            &m::AGENT_EVENTS,
            EventType::ALL
                .iter()
                .map(|t| ([("type", t.as_str()), ("source", t.source().as_str())], stats.emitted(*t) as f64)),
        );
        o.family(
            &m::AGENT_EVENTS_DROPPED,
            Source::ALL.iter().flat_map(|s| {
                let stats = stats.clone();
                DropReason::ALL
                    .iter()
                    .map(move |r| ([("source", s.as_str()), ("reason", r.as_str())], stats.dropped(*s, *r) as f64))
            }),
        );
        o.family(&m::AGENT_EVENTS_LOST, Source::ALL.iter().map(|s| ([("source", s.as_str())], stats.lost(*s) as f64)));
        o.family(
            &m::AGENT_EVENTS_UNPARSED,
            Source::ALL.iter().flat_map(|s| {
                crate::events::UnparsedReason::ALL
                    .iter()
                    .map(|r| ([("source", s.as_str()), ("reason", r.as_str())], stats.unparsed_for(*s, *r) as f64))
            }),
        );
        // Each source's state as 1 for the state it is in (all 0: not started, or disabled).
        let states = self.states.lock().map(|s| s.clone()).unwrap_or_default();
        o.family(
            &m::AGENT_EVENT_SOURCE_STATE,
            Source::ALL.iter().filter(|s| !matches!(s, Source::Agent | Source::Service)).flat_map(|s| {
                let now = states.0.get(s).map(|st| st.state);
                [vigil_crds::SourceState::On, vigil_crds::SourceState::Degraded, vigil_crds::SourceState::Off]
                    .map(|st| ([("source", s.as_str()), ("state", st.as_str())], f64::from(u8::from(now == Some(st)))))
            }),
        );
        o.one(&m::AGENT_EVENT_QUEUE_DEPTH, self.queue.depth() as f64);
        o.one(&m::AGENT_EVENT_QUEUE_CAPACITY, self.queue.capacity() as f64);
    }
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
