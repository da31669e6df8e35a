//! OTLP metrics push (HTTP/protobuf or gRPC) with OpenTelemetry semantic-convention names,
//! and security events as OTLP log records ([`OtlpLogs`]).
//!
//! Instruments are observable: the SDK's periodic reader calls them at its own interval and
//! they read the latest snapshot, so the push costs no extra read of the host. Names and
//! attributes follow the `system.*` semantic conventions where one exists; what has none
//! (clock state, system-wide file handles, the agent itself) is under `vigil.*`.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Meter, MeterProvider as _};
use opentelemetry_otlp::{MetricExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use super::prometheus::Latest;
use crate::config::{Config, OtlpProtocol};
use crate::proc::disks::DiskIo;
use crate::proc::identity::Identity;
use crate::proc::net::Interface;
use crate::selfmon::SelfUsage;
use crate::snapshot::Snapshot;

/// Why the OTLP exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The exporter rejected its configuration.
    #[error("building the {protocol} exporter for {endpoint}")]
    Build {
        /// `http` or `grpc`.
        protocol: &'static str,
        /// The endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The thread building the HTTP client died.
    #[error("the thread building the HTTP exporter panicked")]
    Thread,
}

/// A running OTLP pipeline; [`Otlp::shutdown`] flushes what is pending.
pub struct Otlp {
    provider: SdkMeterProvider,
}

impl Otlp {
    /// Flushes and stops the pipeline.
    pub fn shutdown(self) {
        // A failed final flush is not worth failing the shutdown over; the next agent
        // instance pushes fresh values anyway.
        let _ = self.provider.shutdown();
    }
}

/// The resource describing this node and agent.
pub fn resource(id: &Identity, node_name: Option<&str>, version: &'static str) -> Resource {
    let mut attrs = vec![
        KeyValue::new("service.version", version),
        KeyValue::new("os.type", "linux"),
        KeyValue::new("host.arch", id.architecture.clone()),
    ];
    for (key, value) in [("host.name", &id.hostname), ("os.description", &id.os_image), ("os.version", &id.kernel)] {
        if let Some(v) = value {
            attrs.push(KeyValue::new(key, v.clone()));
        }
    }
    if let Some(n) = node_name {
        attrs.push(KeyValue::new("k8s.node.name", n.to_owned()));
    }
    Resource::builder().with_service_name("vigil-agent").with_attributes(attrs).build()
}

/// The resource of this agent's pipelines: the host's identity (read once, so it is complete
/// from the first push) and the node name (the config's, else `NODE_NAME`).
fn config_resource(config: &Config, version: &'static str) -> Resource {
    let identity = crate::proc::identity::read(
        &crate::host::HostRoot::new(config.host_root.clone()),
        &mut crate::proc::ReadErrors::default(),
    );
    let node_name = config
        .node_name
        .clone()
        .or_else(|| std::env::var(vigil_crds::agent::env::NODE_NAME).ok().filter(|s| !s.is_empty()));
    resource(&identity, node_name.as_deref(), version)
}

/// Starts the pipeline. Must be called inside the agent's Tokio runtime (the gRPC client
/// spawns its connection there).
pub fn start(config: &Config, latest: Latest, self_usage: SelfUsage, version: &'static str) -> Result<Otlp, OtlpError> {
    let otlp = &config.exporters.otlp;
    let exporter = build_exporter(otlp.protocol, &otlp.endpoint)?;
    let reader = PeriodicReader::builder(exporter).with_interval(otlp.interval).build();
    let provider =
        SdkMeterProvider::builder().with_resource(config_resource(config, version)).with_reader(reader).build();
    register(&provider.meter("vigil-agent"), latest, self_usage);
    Ok(Otlp { provider })
}

fn build_exporter(protocol: OtlpProtocol, endpoint: &str) -> Result<MetricExporter, OtlpError> {
    build_otlp(
        protocol,
        endpoint,
        "metrics",
        |ep, timeout| MetricExporter::builder().with_tonic().with_endpoint(ep).with_timeout(timeout).build(),
        |url, timeout| MetricExporter::builder().with_http().with_endpoint(url).with_timeout(timeout).build(),
    )
}

/// Builds an exporter of one signal over `protocol`: gRPC in the caller's runtime, HTTP on a
/// plain thread (the blocking HTTP client owns a runtime of its own, which must not be
/// created from inside ours) at `{endpoint}/v1/{signal}`.
fn build_otlp<E: Send + 'static>(
    protocol: OtlpProtocol,
    endpoint: &str,
    signal: &'static str,
    grpc: impl FnOnce(&str, Duration) -> Result<E, opentelemetry_otlp::ExporterBuildError>,
    http: impl FnOnce(String, Duration) -> Result<E, opentelemetry_otlp::ExporterBuildError> + Send + 'static,
) -> Result<E, OtlpError> {
    let timeout = Duration::from_secs(10);
    match protocol {
        OtlpProtocol::Grpc => grpc(endpoint, timeout).map_err(|source| OtlpError::Build {
            protocol: "grpc",
            endpoint: endpoint.to_owned(),
            source,
        }),
        OtlpProtocol::Http => {
            crate::tls::ensure_crypto_provider();
            let url = format!("{}/v1/{signal}", endpoint.trim_end_matches('/'));
            let endpoint = endpoint.to_owned();
            std::thread::spawn(move || {
                http(url, timeout).map_err(|source| OtlpError::Build { protocol: "http", endpoint, source })
            })
            .join()
            .map_err(|_| OtlpError::Thread)?
        }
    }
}

/// Security events as OTLP log records: the event type is the record's event name and
/// `vigil.event.type` attribute, its severity maps to the OTLP severity number (INFO, WARN,
/// ERROR for critical), its message is the body, and its details are `vigil.event.*`
/// attributes. Batched by the SDK on a thread of its own; a full batch queue drops (the SDK
/// counts it) rather than blocks the agent.
pub struct OtlpLogs {
    provider: opentelemetry_sdk::logs::SdkLoggerProvider,
    logger: opentelemetry_sdk::logs::SdkLogger,
}

impl OtlpLogs {
    /// Starts the log pipeline to the config's endpoint. Inside the agent's runtime, as
    /// [`start`].
    pub fn start(config: &Config, version: &'static str) -> Result<Self, OtlpError> {
        use opentelemetry::logs::LoggerProvider as _;
        let otlp = &config.exporters.otlp;
        let exporter = build_log_exporter(otlp.protocol, &otlp.endpoint)?;
        let provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
            .with_resource(config_resource(config, version))
            .with_batch_exporter(exporter)
            .build();
        let logger = provider.logger("vigil-agent");
        Ok(Self { provider, logger })
    }

    /// Hands one event to the batch.
    pub fn emit(&self, e: &crate::events::Event) {
        use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
        let mut rec = self.logger.create_log_record();
        rec.set_event_name(e.kind.as_str());
        rec.set_timestamp(std::time::SystemTime::from(e.time));
        rec.set_observed_timestamp(std::time::SystemTime::now());
        rec.set_severity_text(e.severity.as_str());
        rec.set_severity_number(match e.severity {
            crate::events::Severity::Info => Severity::Info,
            crate::events::Severity::Warning => Severity::Warn,
            crate::events::Severity::Critical => Severity::Error,
        });
        rec.set_body(AnyValue::String(e.message.clone().into()));
        rec.add_attribute("vigil.event.type", e.kind.as_str());
        rec.add_attribute("vigil.event.source", e.source.as_str());
        rec.add_attribute("vigil.event.schema_version", i64::from(e.schema_version));
        rec.add_attribute("k8s.node.name", e.node.clone());
        for (k, v) in &e.details {
            let value = match v {
                serde_json::Value::String(s) => AnyValue::String(s.clone().into()),
                serde_json::Value::Bool(b) => AnyValue::Boolean(*b),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => AnyValue::Int(i),
                    None => AnyValue::Double(n.as_f64().unwrap_or(f64::NAN)),
                },
                other => AnyValue::String(other.to_string().into()),
            };
            // The pod an event belongs to, also under OpenTelemetry's own names.
            let semantic = match k.as_str() {
                "podName" => Some("k8s.pod.name"),
                "podNamespace" => Some("k8s.namespace.name"),
                "podUid" => Some("k8s.pod.uid"),
                "containerName" => Some("k8s.container.name"),
                "containerId" => Some("container.id"),
                _ => None,
            };
            if let Some(name) = semantic {
                rec.add_attribute(name, value.clone());
            }
            rec.add_attribute(format!("vigil.event.{k}"), value);
        }
        self.logger.emit(rec);
    }

    /// Flushes and stops the pipeline.
    pub fn shutdown(self) {
        let _ = self.provider.shutdown();
    }
}

fn build_log_exporter(protocol: OtlpProtocol, endpoint: &str) -> Result<opentelemetry_otlp::LogExporter, OtlpError> {
    use opentelemetry_otlp::LogExporter;
    build_otlp(
        protocol,
        endpoint,
        "logs",
        |ep, timeout| LogExporter::builder().with_tonic().with_endpoint(ep).with_timeout(timeout).build(),
        |url, timeout| LogExporter::builder().with_http().with_endpoint(url).with_timeout(timeout).build(),
    )
}

fn kv(k: &'static str, v: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(k, v)
}

/// Registers observable instruments that read the latest snapshot; a callback with no
/// snapshot yet observes nothing.
struct Instruments<'a> {
    meter: &'a Meter,
    latest: &'a Latest,
}

impl Instruments<'_> {
    fn reader<T: 'static>(
        &self,
        f: impl Fn(&Snapshot, &dyn AsyncInstrument<T>) + Send + Sync + 'static,
    ) -> impl Fn(&dyn AsyncInstrument<T>) + Send + Sync + 'static {
        let latest = self.latest.clone();
        move |o| {
            if let Some(s) = latest.read().ok().and_then(|g| g.clone()) {
                f(&s, o);
            }
        }
    }

    fn gauge(
        &self,
        name: &'static str,
        unit: &'static str,
        help: &'static str,
        f: impl Fn(&Snapshot, &dyn AsyncInstrument<f64>) + Send + Sync + 'static,
    ) {
        self.meter
            .f64_observable_gauge(name)
            .with_unit(unit)
            .with_description(help)
            .with_callback(self.reader(f))
            .build();
    }

    fn updown(
        &self,
        name: &'static str,
        unit: &'static str,
        help: &'static str,
        f: impl Fn(&Snapshot, &dyn AsyncInstrument<i64>) + Send + Sync + 'static,
    ) {
        self.meter
            .i64_observable_up_down_counter(name)
            .with_unit(unit)
            .with_description(help)
            .with_callback(self.reader(f))
            .build();
    }

    fn counter(
        &self,
        name: &'static str,
        unit: &'static str,
        help: &'static str,
        f: impl Fn(&Snapshot, &dyn AsyncInstrument<u64>) + Send + Sync + 'static,
    ) {
        self.meter
            .u64_observable_counter(name)
            .with_unit(unit)
            .with_description(help)
            .with_callback(self.reader(f))
            .build();
    }

    /// A counter per interface and direction from a (receive, transmit) pair.
    fn per_interface(
        &self,
        name: &'static str,
        unit: &'static str,
        help: &'static str,
        pick: fn(&Interface) -> (u64, u64),
    ) {
        self.counter(name, unit, help, move |s, o| {
            for i in s.network.iter().flat_map(|n| &n.interfaces) {
                let (rx, tx) = pick(i);
                o.observe(rx, &[kv("network.interface.name", i.name.clone()), kv("network.io.direction", "receive")]);
                o.observe(tx, &[kv("network.interface.name", i.name.clone()), kv("network.io.direction", "transmit")]);
            }
        });
    }

    /// A counter per disk and direction from a (read, write) pair.
    fn per_disk(&self, name: &'static str, unit: &'static str, help: &'static str, pick: fn(&DiskIo) -> (u64, u64)) {
        self.counter(name, unit, help, move |s, o| {
            for d in s.disks.iter().flatten() {
                let (read, write) = pick(d);
                o.observe(read, &[kv("system.device", d.device.clone()), kv("disk.io.direction", "read")]);
                o.observe(write, &[kv("system.device", d.device.clone()), kv("disk.io.direction", "write")]);
            }
        });
    }
}

/// Registers every instrument on `meter`.
pub fn register(meter: &Meter, latest: Latest, self_usage: SelfUsage) {
    let m = Instruments { meter, latest: &latest };
    meter
        .f64_observable_counter("system.cpu.time")
        .with_unit("s")
        .with_description("CPU time per logical CPU and mode")
        .with_callback(m.reader(|s, o| {
            let Some(c) = &s.cpu else { return };
            for (i, pc) in c.counters.per_cpu.iter().enumerate() {
                let cpu = i64::try_from(i).unwrap_or(i64::MAX);
                for (mode, v) in [
                    ("user", pc.user),
                    ("nice", pc.nice),
                    ("system", pc.system),
                    ("idle", pc.idle),
                    ("iowait", pc.iowait),
                    ("interrupt", pc.irq + pc.softirq),
                    ("steal", pc.steal),
                ] {
                    o.observe(v, &[kv("cpu.mode", mode), kv("cpu.logical_number", cpu)]);
                }
            }
        }))
        .build();
    m.gauge("system.cpu.utilization", "1", "Share of CPU time per mode since the previous scan, all CPUs", |s, o| {
        if let Some(u) = s.cpu.as_ref().and_then(|c| c.utilization) {
            for (mode, v) in [("user", u.user), ("system", u.system), ("iowait", u.iowait), ("steal", u.steal)] {
                o.observe(v, &[kv("cpu.mode", mode)]);
            }
        }
    });
    m.gauge("system.cpu.load_average.1m", "{thread}", "Load average over 1 minute", |s, o| {
        if let Some(load) = s.cpu.as_ref().and_then(|c| c.load) {
            o.observe(load.one, &[]);
        }
    });
    m.updown("system.memory.usage", "By", "Memory in use by state", |s, o| {
        if let Some(m) = &s.memory {
            for (state, v) in [
                ("used", m.used_bytes),
                ("free", m.free_bytes),
                ("buffers", m.buffers_bytes),
                ("cached", m.cached_bytes),
            ] {
                o.observe(clamp(v), &[kv("system.memory.state", state)]);
            }
        }
    });
    m.updown("system.memory.limit", "By", "Usable RAM", |s, o| {
        if let Some(m) = &s.memory {
            o.observe(clamp(m.total_bytes), &[]);
        }
    });
    m.updown("system.linux.memory.available", "By", "RAM available without swapping (MemAvailable)", |s, o| {
        if let Some(m) = &s.memory {
            o.observe(clamp(m.available_bytes), &[]);
        }
    });
    m.gauge("system.memory.utilization", "1", "Used over total RAM", |s, o| {
        if let Some(m) = &s.memory {
            o.observe(m.utilization, &[kv("system.memory.state", "used")]);
        }
    });
    m.updown("system.paging.usage", "By", "Swap by state", |s, o| {
        if let Some(m) = &s.memory {
            o.observe(clamp(m.swap_used_bytes), &[kv("system.paging.state", "used")]);
            o.observe(
                clamp(m.swap_total_bytes.saturating_sub(m.swap_used_bytes)),
                &[kv("system.paging.state", "free")],
            );
        }
    });
    m.updown("system.filesystem.usage", "By", "Filesystem space by state", |s, o| {
        for f in s.filesystems.iter().flatten() {
            let base = fs_attrs(f);
            let reserved = f.size_bytes.saturating_sub(f.used_bytes + f.available_bytes);
            for (state, v) in [("used", f.used_bytes), ("free", f.available_bytes), ("reserved", reserved)] {
                let mut a = base.clone();
                a.push(kv("system.filesystem.state", state));
                o.observe(clamp(v), &a);
            }
        }
    });
    m.gauge("system.filesystem.utilization", "1", "Used over used plus available, as df shows", |s, o| {
        for f in s.filesystems.iter().flatten() {
            o.observe(f.utilization, &fs_attrs(f));
        }
    });
    m.per_disk("system.disk.io", "By", "Bytes read and written per device", |d| (d.read_bytes, d.written_bytes));
    m.per_disk("system.disk.operations", "{operation}", "Reads and writes completed per device", |d| {
        (d.reads, d.writes)
    });
    m.per_interface("system.network.io", "By", "Bytes received and sent per interface", |i| (i.rx_bytes, i.tx_bytes));
    m.per_interface("system.network.packets", "{packet}", "Packets received and sent per interface", |i| {
        (i.rx_packets, i.tx_packets)
    });
    m.per_interface("system.network.errors", "{error}", "Errors per interface and direction", |i| {
        (i.rx_errors, i.tx_errors)
    });
    m.per_interface("system.network.dropped", "{packet}", "Packets dropped per interface and direction", |i| {
        (i.rx_drops, i.tx_drops)
    });
    m.updown("system.network.connection.count", "{connection}", "TCP connections by state", |s, o| {
        for (state, v) in s.network.iter().flat_map(|n| &n.tcp_states) {
            o.observe(clamp(*v), &[kv("network.transport", "tcp"), kv("network.connection.state", *state)]);
        }
    });
    m.counter(
        "system.network.tcp.retransmitted_segments",
        "{segment}",
        "TCP segments retransmitted (/proc/net/snmp RetransSegs)",
        |s, o| {
            if let Some(v) = s.network.as_ref().and_then(|n| n.tcp.get("RetransSegs")) {
                o.observe(u64::try_from(*v).unwrap_or(0), &[]);
            }
        },
    );
    m.updown("system.process.count", "{process}", "Processes by status", |s, o| {
        for (state, v) in s.processes.iter().flat_map(|p| &p.by_state) {
            o.observe(clamp(*v), &[kv("process.status", *state)]);
        }
    });
    m.updown(
        "system.linux.file_descriptor.count",
        "{file_descriptor}",
        "Allocated file handles, system-wide",
        |s, o| {
            if let Some(f) = &s.file_descriptors {
                o.observe(clamp(f.allocated), &[]);
            }
        },
    );
    m.gauge("vigil.clock.offset", "s", "Offset the time daemon is correcting", |s, o| {
        if let Some(c) = &s.clock {
            o.observe(c.offset_seconds, &[kv("vigil.clock.synchronized", c.synchronized)]);
        }
    });
    m.gauge("system.uptime", "s", "Time since the host booted", |s, o| {
        if let Some(u) = s.host.uptime_seconds {
            o.observe(u, &[]);
        }
    });
    m.gauge("vigil.agent.scan.duration", "s", "Time the latest snapshot took", |s, o| o.observe(s.scan_seconds, &[]));
    // The agent's own usage is read at export time, not from the snapshot.
    meter
        .i64_observable_up_down_counter("vigil.agent.memory.usage")
        .with_unit("By")
        .with_description("The agent's resident memory")
        .with_callback(move |o| {
            if let Some(u) = self_usage.read() {
                o.observe(clamp(u.rss_bytes), &[]);
            }
        })
        .build();
    meter
        .f64_observable_counter("vigil.agent.cpu.time")
        .with_unit("s")
        .with_description("CPU time the agent used")
        .with_callback(move |o| {
            if let Some(u) = self_usage.read() {
                o.observe(u.cpu_seconds, &[]);
            }
        })
        .build();
}

fn fs_attrs(f: &crate::proc::disks::Filesystem) -> Vec<KeyValue> {
    vec![
        kv("system.device", f.device.clone()),
        kv("system.filesystem.mountpoint", f.mount_point.clone()),
        kv("system.filesystem.type", f.fs_type.clone()),
        kv("system.filesystem.mode", if f.read_only { "ro" } else { "rw" }),
    ]
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The agent's start-up on its node as one span of the rollout's trace: from the process start
/// to the first AgentStatus it wrote, with an event per step (config verified, sources started,
/// first scan, first report). The operator's decisions and waves are spans of the same trace
/// under the same root ([`vigil_crds::trace`]), so a backend shows one trace from "wave 1
/// admitted" through every node's agent start to "completed" or "rolled back".
pub struct StartupSpan {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
    span: opentelemetry_sdk::trace::Span,
    steps: Vec<&'static str>,
}

impl StartupSpan {
    /// Opens the span in trace `trace` (the pod's annotation), started at `started`, and its
    /// pipeline to the config's OTLP endpoint. Inside the agent's runtime, as the metrics
    /// pipeline.
    pub fn start(
        config: &Config,
        version: &'static str,
        trace: [u8; 16],
        started: std::time::SystemTime,
        attributes: Vec<KeyValue>,
    ) -> Result<Self, OtlpError> {
        use opentelemetry::trace::{
            SpanBuilder, SpanContext, SpanKind, TraceContextExt as _, TraceFlags, TraceState, TracerProvider as _,
        };
        let otlp = &config.exporters.otlp;
        let exporter = build_otlp(
            otlp.protocol,
            &otlp.endpoint,
            "traces",
            |ep, timeout| {
                opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(ep).with_timeout(timeout).build()
            },
            |url, timeout| {
                opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(url).with_timeout(timeout).build()
            },
        )?;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_resource(config_resource(config, version))
            .with_batch_exporter(exporter)
            .build();
        let parent = opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes(trace),
            opentelemetry::trace::SpanId::from_bytes(vigil_crds::trace::root_span_id(trace)),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        let span = SpanBuilder::from_name("agent start-up")
            .with_kind(SpanKind::Internal)
            .with_start_time(started)
            .with_attributes(attributes)
            .start_with_context(&provider.tracer("vigil-agent"), &parent);
        Ok(Self { provider, span, steps: Vec::new() })
    }

    /// Whether step `name` was recorded.
    pub fn has_step(&self, name: &str) -> bool {
        self.steps.contains(&name)
    }

    /// Records a step of the start-up, now.
    pub fn step(&mut self, name: &'static str, attributes: Vec<KeyValue>) {
        use opentelemetry::trace::Span as _;
        self.steps.push(name);
        self.span.add_event_with_timestamp(name, std::time::SystemTime::now(), attributes);
    }

    /// Ends the span now (with an error status when `error` says why the start-up failed) and
    /// sends it: waits (at most the exporter's timeout) for the export.
    pub fn finish(mut self, error: Option<String>) {
        use opentelemetry::trace::{Span as _, Status};
        if let Some(e) = error {
            self.span.set_status(Status::error(e));
        }
        self.span.end();
        // A failed export is not worth failing the agent over: the trace misses one node.
        let _ = self.provider.shutdown();
    }
}
