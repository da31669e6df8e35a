//! Exporters of the daemon: a Prometheus endpoint and an OTLP push.

pub mod catalog;
pub mod otlp;
pub mod prometheus;
pub mod semconv;
