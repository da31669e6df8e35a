//! The daemon's OTLP push against local receivers speaking the OTLP wire protocol: HTTP with
//! protobuf bodies (`POST /v1/metrics`) and gRPC (`MetricsService/Export`). The payloads are
//! decoded with the protocol's own generated types and checked for the semantic-convention
//! names and the resource attributes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tokio::sync::mpsc;
use vigil_agent::config::{Config, OtlpProtocol};

/// A route of an OTLP/HTTP receiver: each protobuf body POSTed to `path` is decoded as `Req`
/// and sent to `tx`; the answer is an empty `Resp`.
fn otlp_route<Req, Resp>(app: axum::Router, path: &'static str, tx: mpsc::UnboundedSender<Req>) -> axum::Router
where
    Req: Message + Default + Send + 'static,
    Resp: Message + Default,
{
    app.route(
        path,
        axum::routing::post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Req::decode(body).expect("an OTLP protobuf body"));
                ([(axum::http::header::CONTENT_TYPE, "application/x-protobuf")], Resp::default().encode_to_vec())
            }
        }),
    )
}

/// Serves `app` on 127.0.0.1: its endpoint (`http://…`) and the server task.
async fn serve_http(app: axum::Router) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (format!("http://{addr}"), tokio::spawn(async move { axum::serve(listener, app).await }))
}

/// Serves the gRPC `routes` on 127.0.0.1: the endpoint and the server task.
async fn serve_grpc(
    routes: tonic::service::Routes,
) -> (String, tokio::task::JoinHandle<Result<(), tonic::transport::Error>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tokio::spawn(tonic::transport::Server::builder().add_routes(routes).serve_with_incoming(incoming));
    (format!("http://{addr}"), server)
}

/// A gRPC OTLP service that sends every request it receives to a channel.
macro_rules! capture {
    ($name:ident, $service:path, $req:ty, $resp:ty) => {
        struct $name(mpsc::UnboundedSender<$req>);

        #[tonic::async_trait]
        impl $service for $name {
            async fn export(&self, request: tonic::Request<$req>) -> Result<tonic::Response<$resp>, tonic::Status> {
                let _ = self.0.send(request.into_inner());
                Ok(tonic::Response::new(<$resp>::default()))
            }
        }
    };
}

fn config(protocol: OtlpProtocol, endpoint: String) -> Config {
    let mut c = Config { interval: Duration::from_secs(1), node_name: Some("node-a".into()), ..Config::default() };
    c.events.enabled = false;
    c.exporters.otlp.enabled = true;
    c.exporters.otlp.protocol = protocol;
    c.exporters.otlp.endpoint = endpoint;
    c.exporters.otlp.interval = Duration::from_secs(1);
    c
}

/// Runs the daemon until a request with host metrics arrives (or 30 s pass), then stops it.
async fn run_until_received(
    config: Config,
    mut rx: mpsc::UnboundedReceiver<ExportMetricsServiceRequest>,
) -> ExportMetricsServiceRequest {
    let (daemon, stop_tx) = spawn_daemon(config);
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let req = rx.recv().await.expect("receiver open");
            if names(&req).iter().any(|n| n == "system.memory.usage") {
                return req;
            }
        }
    })
    .await
    .expect("no OTLP request with host metrics within 30 s");
    stop_tx.send(()).unwrap();
    let joined = tokio::time::timeout(Duration::from_secs(15), tokio::task::spawn_blocking(move || daemon.join()))
        .await
        .expect("daemon stops");
    joined.unwrap().unwrap().unwrap();
    found
}

fn names(req: &ExportMetricsServiceRequest) -> Vec<String> {
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| m.name.clone())
        .collect()
}

/// The attribute sets of a sum's or gauge's points.
fn points(req: &ExportMetricsServiceRequest, name: &str) -> Vec<Vec<opentelemetry_proto::tonic::common::v1::KeyValue>> {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let metrics = req.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics);
    metrics
        .filter(|m| m.name == name)
        .flat_map(|m| match &m.data {
            Some(Data::Sum(s)) => s.data_points.clone(),
            Some(Data::Gauge(g)) => g.data_points.clone(),
            _ => Vec::new(),
        })
        .map(|p| p.attributes)
        .collect()
}

fn attr(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> Option<Value> {
    attrs.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.clone())
}

fn string(v: &Value) -> Option<String> {
    match v {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn resource_attr(req: &ExportMetricsServiceRequest, key: &str) -> Option<String> {
    let res = req.resource_metrics.first()?.resource.as_ref()?;
    res.attributes.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    })
}

fn assert_payload(req: &ExportMetricsServiceRequest) {
    let names = names(req);
    for want in [
        "system.cpu.time",
        "system.memory.usage",
        "system.memory.utilization",
        "system.filesystem.usage",
        "system.network.io",
        "system.process.count",
        "vigil.agent.resident_memory",
        "vigil.agent.scans",
        "vigil.agent.scan_duration",
        "vigil.node.context_switches",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    // CPU time: the logical CPU number typed as an integer, irq and softirq as `interrupt`.
    let cpu = points(req, "system.cpu.time");
    assert!(!cpu.is_empty());
    for attrs in &cpu {
        assert!(matches!(attr(attrs, "cpu.logical_number"), Some(Value::IntValue(_))), "{attrs:?}");
    }
    let modes: std::collections::BTreeSet<_> =
        cpu.iter().filter_map(|a| attr(a, "cpu.mode")).filter_map(|v| string(&v)).collect();
    assert!(modes.contains("interrupt") && !modes.contains("irq"), "{modes:?}");
    // Filesystems: each mount's space in three states, with its mode.
    let fs = points(req, "system.filesystem.usage");
    for state in ["used", "free", "reserved"] {
        assert!(
            fs.iter().any(|a| attr(a, "system.filesystem.state").and_then(|v| string(&v)).as_deref() == Some(state)),
            "no {state} point in {fs:?}"
        );
    }
    assert!(fs.iter().all(|a| attr(a, "system.filesystem.mode").is_some()));
    assert_eq!(resource_attr(req, "service.name").as_deref(), Some("vigil-agent"));
    assert_eq!(resource_attr(req, "k8s.node.name").as_deref(), Some("node-a"));
    assert_eq!(resource_attr(req, "os.type").as_deref(), Some("linux"));
    assert!(resource_attr(req, "host.name").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_semantic_convention_metrics_over_http_protobuf() {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = otlp_route::<_, ExportMetricsServiceResponse>(axum::Router::new(), "/v1/metrics", tx);
    let (endpoint, server) = serve_http(app).await;
    let req = run_until_received(config(OtlpProtocol::Http, endpoint), rx).await;
    assert_payload(&req);
    server.abort();
}

capture!(Capture, MetricsService, ExportMetricsServiceRequest, ExportMetricsServiceResponse);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_semantic_convention_metrics_over_grpc() {
    let (tx, rx) = mpsc::unbounded_channel();
    let (endpoint, server) = serve_grpc(tonic::service::Routes::new(MetricsServiceServer::new(Capture(tx)))).await;
    let req = run_until_received(config(OtlpProtocol::Grpc, endpoint), rx).await;
    assert_payload(&req);
    server.abort();
}

mod logs {
    //! Security events as OTLP log records, over HTTP and gRPC: an OOM kill written to a
    //! kernel log file the agent follows arrives as a record with its event name, severity,
    //! body and details, under the node's resource.

    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
    use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
    use opentelemetry_proto::tonic::logs::v1::LogRecord;
    use std::io::Write;

    fn events_config(protocol: OtlpProtocol, endpoint: String, dir: &std::path::Path) -> (Config, std::path::PathBuf) {
        let mut c = config(protocol, endpoint);
        let kmsg = dir.join("kmsg");
        std::fs::write(&kmsg, "").unwrap();
        c.events.enabled = true;
        c.events.log = false;
        c.events.state_dir = dir.join("state");
        c.events.kernel.device = kmsg.clone();
        c.events.processes.enabled = false;
        c.events.files.enabled = false;
        c.events.auth.enabled = false;
        c.events.network.enabled = false;
        c.events.clock.enabled = false;
        (c, kmsg)
    }

    fn attr<'a>(rec: &'a LogRecord, key: &str) -> Option<&'a Value> {
        rec.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    /// Runs the daemon, appends an OOM kill to its kernel log file until a log record of it
    /// arrives (30 s at most), then stops the daemon.
    async fn oom_record(
        config: Config,
        kmsg: std::path::PathBuf,
        mut rx: mpsc::UnboundedReceiver<ExportLogsServiceRequest>,
    ) -> (ExportLogsServiceRequest, LogRecord) {
        let (daemon, stop_tx) = spawn_daemon(config);
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            let mut seq = 0;
            loop {
                // The source starts at the end of the file: write until one record is seen.
                seq += 1;
                let mut f = std::fs::OpenOptions::new().append(true).open(&kmsg).unwrap();
                // In a container of a pod (the memcg path names both).
                writeln!(f, "6,{},4999999,-;oom-kill:constraint=CONSTRAINT_MEMCG,task_memcg=/kubepods/burstable/pod5f3c1e2a-9b7d-4c11-8e0f-2a6b9c3d4e5f/{},task=leaky,pid=4242,uid=0", seq * 2, "ab".repeat(32)).unwrap();
                writeln!(f, "3,{},5000000,-;Out of memory: Killed process 4242 (leaky) total-vm:2048kB, anon-rss:1024kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:8kB oom_score_adj:0", seq * 2 + 1).unwrap();
                match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
                    Ok(Some(req)) => {
                        let rec = req.resource_logs.iter().flat_map(|r| &r.scope_logs).flat_map(|s| &s.log_records).next().cloned();
                        if let Some(rec) = rec {
                            return (req, rec);
                        }
                    }
                    Ok(None) => panic!("receiver closed"),
                    Err(_) => {}
                }
            }
        })
        .await
        .expect("no OTLP log record within 30 s");
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(15), tokio::task::spawn_blocking(move || daemon.join()))
            .await
            .expect("daemon stops")
            .unwrap()
            .unwrap()
            .unwrap();
        found
    }

    fn assert_oom(req: &ExportLogsServiceRequest, rec: &LogRecord) {
        assert_eq!(rec.event_name, "kernel.oom_kill");
        assert_eq!(rec.severity_text, "critical");
        assert_eq!(rec.severity_number, 17, "ERROR");
        assert!(
            matches!(rec.body.as_ref().and_then(|b| b.value.as_ref()), Some(Value::StringValue(s)) if s.contains("leaky"))
        );
        assert!(matches!(attr(rec, "vigil.event.pid"), Some(Value::IntValue(4242))));
        assert!(matches!(attr(rec, "vigil.event.comm"), Some(Value::StringValue(s)) if s == "leaky"));
        assert!(matches!(attr(rec, "vigil.event.source"), Some(Value::StringValue(s)) if s == "kernel"));
        // The pod it belongs to, under OpenTelemetry's names (the names need the node's pod
        // watch, in a cluster; the UID and container id come from the cgroup alone).
        assert!(
            matches!(attr(rec, "k8s.pod.uid"), Some(Value::StringValue(s)) if s == "5f3c1e2a-9b7d-4c11-8e0f-2a6b9c3d4e5f")
        );
        assert!(matches!(attr(rec, "container.id"), Some(Value::StringValue(s)) if *s == "ab".repeat(32)));
        assert!(rec.time_unix_nano > 0 && rec.observed_time_unix_nano > 0);
        let res = req.resource_logs[0].resource.as_ref().unwrap();
        let node = res.attributes.iter().find(|a| a.key == "k8s.node.name").unwrap();
        assert!(
            matches!(node.value.as_ref().and_then(|v| v.value.as_ref()), Some(Value::StringValue(s)) if s == "node-a")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_arrive_as_log_records_over_http() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        // Metrics go to the same endpoint: answered, not looked at.
        let app = otlp_route::<_, ExportLogsServiceResponse>(axum::Router::new(), "/v1/logs", tx);
        let app = otlp_route::<ExportMetricsServiceRequest, ExportMetricsServiceResponse>(
            app,
            "/v1/metrics",
            mpsc::unbounded_channel().0,
        );
        let (endpoint, server) = serve_http(app).await;
        let (c, kmsg) = events_config(OtlpProtocol::Http, endpoint, dir.path());
        let (req, rec) = oom_record(c, kmsg, rx).await;
        assert_oom(&req, &rec);
        server.abort();
    }

    capture!(LogCapture, LogsService, ExportLogsServiceRequest, ExportLogsServiceResponse);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_arrive_as_log_records_over_grpc() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let routes = tonic::service::Routes::new(LogsServiceServer::new(LogCapture(tx)))
            .add_service(MetricsServiceServer::new(Capture(mpsc::unbounded_channel().0)));
        let (endpoint, server) = serve_grpc(routes).await;
        let (c, kmsg) = events_config(OtlpProtocol::Grpc, endpoint, dir.path());
        let (req, rec) = oom_record(c, kmsg, rx).await;
        assert_oom(&req, &rec);
        server.abort();
    }
}

mod startup {
    //! The agent's start-up as a span of its rollout's trace, over HTTP and gRPC: the trace id
    //! is the pod's, the parent is the root span the operator's spans hang under, and the
    //! steps are its events.

    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
    use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
    use opentelemetry_proto::tonic::trace::v1::Span;
    use vigil_agent::export::otlp::StartupSpan;

    /// Sends a start-up span the way the daemon does (a current-thread runtime; the export off
    /// its thread) and returns the first span received (within 30 s).
    async fn send(
        protocol: OtlpProtocol,
        endpoint: String,
        trace: [u8; 16],
        started: std::time::SystemTime,
        error: Option<&'static str>,
        mut rx: mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
    ) -> (ExportTraceServiceRequest, Span) {
        let config = config(protocol, endpoint);
        let agent = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let attrs = vec![opentelemetry::KeyValue::new("k8s.node.name", "node-a")];
                let mut span = StartupSpan::start(&config, "9.9.9", trace, started, attrs).unwrap();
                span.step(
                    "config verified",
                    vec![opentelemetry::KeyValue::new("vigil.config.sha256", "ab".repeat(32))],
                );
                span.step("first report", Vec::new());
                assert!(span.has_step("config verified") && !span.has_step("first scan"));
                tokio::task::spawn_blocking(move || span.finish(error.map(str::to_owned))).await.unwrap();
            });
        });
        let req = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("no OTLP trace request within 30 s")
            .expect("receiver open");
        tokio::task::spawn_blocking(move || agent.join()).await.unwrap().unwrap();
        let span = req.resource_spans[0].scope_spans[0].spans[0].clone();
        (req, span)
    }

    fn assert_span(req: &ExportTraceServiceRequest, span: &Span, trace: [u8; 16], started: std::time::SystemTime) {
        assert_eq!(span.name, "agent start-up");
        assert_eq!(span.trace_id, trace.to_vec(), "the rollout's trace");
        assert_eq!(
            span.parent_span_id,
            vigil_crds::trace::root_span_id(trace).to_vec(),
            "under the rollout's root span"
        );
        let start_ns = u64::try_from(started.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()).unwrap();
        assert_eq!(span.start_time_unix_nano, start_ns, "from the process start");
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        let events: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(events, ["config verified", "first report"]);
        assert_eq!(span.events[0].attributes[0].key, "vigil.config.sha256");
        assert!(span.attributes.iter().any(|a| a.key == "k8s.node.name"));
        let res = req.resource_spans[0].resource.as_ref().unwrap();
        let service = res.attributes.iter().find(|a| a.key == "service.name").and_then(|a| a.value.clone());
        assert_eq!(service.and_then(|v| v.value), Some(Value::StringValue("vigil-agent".into())));
    }

    fn trace() -> [u8; 16] {
        vigil_crds::trace::trace_id("5f3c1e2a-9b7d-4c11-8e0f-2a6b9c3d4e5f", "r-2b878e0c19")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_start_up_joins_the_rollout_trace_over_http() {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = otlp_route::<_, ExportTraceServiceResponse>(axum::Router::new(), "/v1/traces", tx);
        let (endpoint, server) = serve_http(app).await;
        let started = std::time::SystemTime::now() - Duration::from_secs(3);
        let (req, span) = send(OtlpProtocol::Http, endpoint, trace(), started, None, rx).await;
        assert_span(&req, &span, trace(), started);
        assert_eq!(span.status.map(|s| s.code).unwrap_or(0), 0, "unset: the start-up went through");
        server.abort();
    }

    capture!(TraceCapture, TraceService, ExportTraceServiceRequest, ExportTraceServiceResponse);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_start_up_that_failed_says_why_over_grpc() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (endpoint, server) =
            serve_grpc(tonic::service::Routes::new(TraceServiceServer::new(TraceCapture(tx)))).await;
        let started = std::time::SystemTime::now() - Duration::from_secs(1);
        let (req, span) =
            send(OtlpProtocol::Grpc, endpoint, trace(), started, Some("stopped before its first report"), rx).await;
        assert_span(&req, &span, trace(), started);
        let status = span.status.unwrap();
        assert_eq!(status.code, 2, "ERROR");
        assert_eq!(status.message, "stopped before its first report");
        server.abort();
    }
}

/// The daemon on a current-thread runtime of its own, as in the binary; sending on the sender
/// (or dropping it) stops it.
fn spawn_daemon(
    config: Config,
) -> (std::thread::JoinHandle<Result<(), vigil_agent::daemon::DaemonError>>, tokio::sync::oneshot::Sender<()>) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(vigil_agent::daemon::run(
            config,
            "test",
            false,
            async { stop_rx.await.unwrap_or(()) },
            Default::default(),
            |_| {},
        ))
    });
    (daemon, stop_tx)
}
