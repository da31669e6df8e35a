//! OTLP metrics push (HTTP/protobuf or gRPC) with OpenTelemetry semantic-convention names,
//! and security events as OTLP log records ([`OtlpLogs`]).
//!
//! Instruments are observable: the SDK's periodic reader calls them at its own interval and
//! they read the agent's one metric table ([`super::catalog`]), as `/metrics` and the alert
//! rules do, so the push costs no extra read of the host. Names and attributes follow the
//! `system.*` semantic conventions where one exists ([`super::semconv`]); every other metric
//! is pushed under its catalog name in OpenTelemetry form (`vigil.node.pressure_waiting`).

use std::time::Duration;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Histogram, Meter, MeterProvider as _};
use opentelemetry_otlp::{MetricExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use super::catalog::{Rows, Tables};
use super::semconv::{self, Attr, Instrument, Point, SEMANTIC, otel_kind, otel_name, otel_unit};
use crate::config::{Config, OtlpProtocol};
use crate::proc::identity::Identity;
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
    scan_seconds: Histogram<f64>,
}

impl Otlp {
    /// Records one scan's duration.
    pub fn observe_scan(&self, s: &Snapshot) {
        self.scan_seconds.record(s.scan_seconds, &[]);
    }

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
pub fn start(config: &Config, tables: Tables, version: &'static str) -> Result<Otlp, OtlpError> {
    let otlp = &config.exporters.otlp;
    let exporter = build_exporter(otlp.protocol, &otlp.endpoint)?;
    let reader = PeriodicReader::builder(exporter).with_interval(otlp.interval).build();
    let provider =
        SdkMeterProvider::builder().with_resource(config_resource(config, version)).with_reader(reader).build();
    let scan_seconds = register(&provider.meter("vigil-agent"), tables);
    Ok(Otlp { provider, scan_seconds })
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

/// The table's rows, read once per push: every instrument's callback in one collection
/// shares one read (a read older than a second is refreshed).
struct RowsCache {
    tables: Tables,
    last: Mutex<Option<(Instant, Arc<Rows>)>>,
}

impl RowsCache {
    fn rows(&self) -> Arc<Rows> {
        let Ok(mut last) = self.last.lock() else { return Arc::new(self.tables.rows()) };
        match &*last {
            Some((at, rows)) if at.elapsed() < Duration::from_secs(1) => rows.clone(),
            _ => {
                let rows = Arc::new(self.tables.rows());
                *last = Some((Instant::now(), rows.clone()));
                rows
            }
        }
    }
}

fn observe(o: &dyn AsyncInstrument<f64>, points: Vec<Point>) {
    for (attrs, v) in points {
        let attrs: Vec<KeyValue> = attrs
            .into_iter()
            .map(|(k, a)| match a {
                Attr::Str(s) => KeyValue::new(k, s),
                Attr::Int(i) => KeyValue::new(k, i),
            })
            .collect();
        o.observe(v, &attrs);
    }
}

/// Registers one observable instrument.
fn instrument(
    meter: &Meter,
    name: String,
    unit: &'static str,
    help: &'static str,
    kind: Instrument,
    points: impl Fn() -> Vec<Point> + Send + Sync + 'static,
) {
    let callback = move |o: &dyn AsyncInstrument<f64>| observe(o, points());
    match kind {
        Instrument::Counter => {
            meter.f64_observable_counter(name).with_unit(unit).with_description(help).with_callback(callback).build();
        }
        Instrument::UpDownCounter => {
            meter
                .f64_observable_up_down_counter(name)
                .with_unit(unit)
                .with_description(help)
                .with_callback(callback)
                .build();
        }
        Instrument::Gauge => {
            meter.f64_observable_gauge(name).with_unit(unit).with_description(help).with_callback(callback).build();
        }
    }
}

/// Registers every instrument on `meter`: the semantic-convention ones ([`SEMANTIC`]) and every
/// other exported metric under its catalog name, all read from `tables`. Returns the
/// scan-duration histogram, recorded at each scan.
pub fn register(meter: &Meter, tables: Tables) -> Histogram<f64> {
    let cache = Arc::new(RowsCache { tables, last: Mutex::new(None) });
    for s in SEMANTIC {
        let cache = cache.clone();
        instrument(meter, s.name.to_owned(), s.unit, s.help, s.kind, move || semconv::points(s, &cache.rows().0));
    }
    for metric in semconv::under_catalog_names() {
        let cache = cache.clone();
        instrument(meter, otel_name(metric), otel_unit(metric), metric.help, otel_kind(metric), move || {
            semconv::catalog_points(metric, &cache.rows().0)
        });
    }
    let scan = &vigil_crds::metrics::AGENT_SCAN_DURATION;
    meter
        .f64_histogram(otel_name(scan))
        .with_unit(otel_unit(scan))
        .with_description(scan.help)
        // 1 ms … ~4 s, as on `/metrics`.
        .with_boundaries((0..13).map(|i| 0.001 * f64::powi(2.0, i)).collect())
        .build()
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
