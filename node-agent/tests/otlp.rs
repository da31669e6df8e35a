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

fn config(protocol: OtlpProtocol, endpoint: String) -> Config {
    let mut c = Config { interval: Duration::from_secs(1), node_name: Some("node-a".into()), ..Config::default() };
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
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The daemon runs on a current-thread runtime of its own, as in the binary.
    let daemon = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(vigil_agent::daemon::run(config, "test", false, async { stop_rx.await.unwrap_or(()) }, |_| {}))
    });
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
        "vigil.agent.memory.usage",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    assert_eq!(resource_attr(req, "service.name").as_deref(), Some("vigil-agent"));
    assert_eq!(resource_attr(req, "k8s.node.name").as_deref(), Some("node-a"));
    assert_eq!(resource_attr(req, "os.type").as_deref(), Some("linux"));
    assert!(resource_attr(req, "host.name").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_semantic_convention_metrics_over_http_protobuf() {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/v1/metrics",
        axum::routing::post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let req = ExportMetricsServiceRequest::decode(body).expect("an OTLP protobuf body");
                let _ = tx.send(req);
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                    ExportMetricsServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let req = run_until_received(config(OtlpProtocol::Http, format!("http://{addr}")), rx).await;
    assert_payload(&req);
    server.abort();
}

struct Capture(mpsc::UnboundedSender<ExportMetricsServiceRequest>);

#[tonic::async_trait]
impl MetricsService for Capture {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_semantic_convention_metrics_over_grpc() {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(Capture(tx)))
            .serve_with_incoming(incoming),
    );
    let req = run_until_received(config(OtlpProtocol::Grpc, format!("http://{addr}")), rx).await;
    assert_payload(&req);
    server.abort();
}
