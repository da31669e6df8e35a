//! Traces of rollouts over OTLP: one trace per rollout target, a span per decision and one
//! per finished wave. The trace id is derived from the rollout's uid and its target
//! revision, so every operator replica and restart adds to the same trace, and it is recorded
//! in `status.traceId` for agents and people to find it.
//!
//! Exporting is on when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`OTEL_EXPORTER_OTLP_PROTOCOL`
//! `grpc` or `http/protobuf`, the default); without it nothing is exported and nothing fails.

use std::time::SystemTime;

use opentelemetry::trace::{
    SpanBuilder, SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracerProvider;
use vigil_crds::rollout::AgentRolloutStatus;

use vigil_plan::Plan;

/// The trace and root span ids of a rollout target.
/// (`vigil_crds::trace`, which the agents use too, to join the trace under the same root.)
pub fn ids(uid: &str, target: &str) -> (TraceId, SpanId) {
    let t = vigil_crds::trace::trace_id(uid, target);
    (TraceId::from_bytes(t), SpanId::from_bytes(vigil_crds::trace::root_span_id(t)))
}

/// The OTLP tracer provider, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Must be called inside
/// the Tokio runtime (the gRPC client spawns its connection there).
pub fn init(version: &'static str) -> Result<Option<SdkTracerProvider>, opentelemetry_otlp::ExporterBuildError> {
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none_or(|v| v.is_empty()) {
        return Ok(None);
    }
    let grpc = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").is_ok_and(|p| p == "grpc");
    let exporter = if grpc {
        opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?
    } else {
        // The HTTP client is built on rustls without a provider of its own when the workspace
        // builds it with the agent's features: install ring (kube's) first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The blocking HTTP client owns a runtime and must not be built inside ours.
        std::thread::spawn(|| opentelemetry_otlp::SpanExporter::builder().with_http().build()).join().unwrap_or_else(
            |_| Err(opentelemetry_otlp::ExporterBuildError::InternalFailure("exporter thread panicked".into())),
        )?
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("vigil-operator")
        .with_attribute(KeyValue::new("service.version", version))
        .build();
    Ok(Some(SdkTracerProvider::builder().with_resource(resource).with_batch_exporter(exporter).build()))
}

/// Records a reconcile's decision (and a wave that just finished) in the rollout's trace and
/// returns the trace id (32 hex) for the status.
pub fn record(
    tracer: &impl Tracer,
    uid: &str,
    key: &str,
    before: &AgentRolloutStatus,
    plan: &Plan,
    now: SystemTime,
) -> Option<String> {
    let target = plan.status.target_revision.as_deref()?;
    let (trace_id, root) = ids(uid, target);
    let parent = Context::new().with_remote_span_context(SpanContext::new(
        trace_id,
        root,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ));
    let common = [KeyValue::new("vigil.rollout", key.to_owned()), KeyValue::new("vigil.revision", target.to_owned())];
    // A span per new decision; repeated identical decisions (holds, bakes) add nothing.
    if before.reason != plan.status.reason {
        let mut attrs = common.to_vec();
        attrs.extend([
            KeyValue::new("vigil.decision", plan.decision.kind.as_str()),
            KeyValue::new("vigil.reason", plan.decision.reason.clone()),
            KeyValue::new("vigil.wave", i64::from(plan.status.current_wave)),
            KeyValue::new("vigil.moves", i64::try_from(plan.moves.len()).unwrap_or(i64::MAX)),
        ]);
        let _span = SpanBuilder::from_name(format!("decision {}", plan.decision.kind))
            .with_start_time(now)
            .with_attributes(attrs)
            .start_with_context(tracer, &parent);
    }
    // A span per wave, from its start to the decision that moved past it.
    if plan.status.current_wave > before.current_wave
        && before.current_wave > 0
        && before.target_revision.as_deref() == Some(target)
    {
        let start = before.wave_started_at.as_ref().map_or(now, |t| SystemTime::from(t.0));
        let mut attrs = common.to_vec();
        attrs.push(KeyValue::new("vigil.wave", i64::from(before.current_wave)));
        let mut span = SpanBuilder::from_name(format!("wave {}", before.current_wave))
            .with_start_time(start)
            .with_attributes(attrs)
            .start_with_context(tracer, &parent);
        opentelemetry::trace::Span::end_with_timestamp(&mut span, now);
    }
    Some(trace_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::InMemorySpanExporter;
    use vigil_plan::{Decision, DecisionKind, Plan};

    fn plan(kind: DecisionKind, reason: &str, wave: u32) -> Plan {
        let status = AgentRolloutStatus {
            target_revision: Some("r-aaaaaaaaaa".into()),
            current_wave: wave,
            reason: Some(reason.into()),
            ..Default::default()
        };
        Plan {
            moves: vec![],
            status,
            decision: Decision { kind, reason: reason.into() },
            requeue_after: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn decisions_and_finished_waves_land_in_one_trace_per_target() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let tracer = provider.tracer("test");
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        let before = AgentRolloutStatus {
            target_revision: Some("r-aaaaaaaaaa".into()),
            current_wave: 1,
            reason: Some("baking".into()),
            ..Default::default()
        };
        let id =
            record(&tracer, "uid-1", "ns/r", &before, &plan(DecisionKind::Advance, "wave 1 passed", 2), now).unwrap();
        // The same decision again adds no span.
        let same = AgentRolloutStatus { reason: Some("wave 1 passed".into()), current_wave: 2, ..before.clone() };
        record(&tracer, "uid-1", "ns/r", &same, &plan(DecisionKind::Advance, "wave 1 passed", 2), now);
        let spans = exporter.get_finished_spans().unwrap();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(&"decision Advance") && names.contains(&"wave 1"), "{names:?}");
        assert!(spans.iter().all(|s| s.span_context.trace_id().to_string() == id));
        assert_eq!(id, ids("uid-1", "r-aaaaaaaaaa").0.to_string());
        assert_eq!(id.len(), 32);
        assert_ne!(id, ids("uid-1", "r-bbbbbbbbbb").0.to_string(), "a new target is a new trace");
    }

    #[test]
    fn without_an_endpoint_nothing_is_exported_and_nothing_fails() {
        // The variable is not set in the test environment.
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
            assert!(init("test").unwrap().is_none());
        }
    }
}
