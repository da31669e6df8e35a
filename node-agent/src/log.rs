//! The agent's log: `tracing` events on stderr (the pod's log), as text lines for a person or
//! one JSON object per line (`--log-format json`) for a log pipeline, with the same fields.
//! `RUST_LOG` filters (`info` by default; the kube client, HTTP and TLS stacks at `warn`).
//!
//! A small subscriber of its own rather than `tracing-subscriber`'s formatter: the agent logs
//! a few lines an hour and has no spans of its own to show, and the formatter's code costs
//! about 0.6 MiB of resident memory (docs/benchmarks.md), a twentieth of the agent's budget.

use std::fmt::Write as _;
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber, span};
use tracing_subscriber::filter::Targets;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `<time> <LEVEL> <target>: <message> <field>=<value>...`
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`).
    Json,
}

/// What is logged without `RUST_LOG`.
pub const DEFAULT_FILTER: &str = "info,kube=warn,kube_client=warn,kube_runtime=warn,hyper=warn,hyper_util=warn,h2=warn,tower=warn,reqwest=warn,rustls=warn,tonic=warn,opentelemetry=warn,opentelemetry_sdk=warn";

/// The filter: `RUST_LOG` when it parses as `level,target=level,...`, else
/// [`DEFAULT_FILTER`], with what was wrong with it.
fn filter(rust_log: Option<&str>) -> (Targets, Option<String>) {
    let default = || DEFAULT_FILTER.parse().unwrap_or_default();
    match rust_log {
        Some(v) if !v.trim().is_empty() => match v.parse() {
            Ok(f) => (f, None),
            Err(e) => (default(), Some(format!("RUST_LOG={v:?} is not a filter ({e}): logging at the default"))),
        },
        _ => (default(), None),
    }
}

/// Installs the log for the whole process (once; later calls change nothing). A `RUST_LOG`
/// that does not parse is said once, on the log itself.
pub fn init(format: LogFormat) {
    let (filter, complaint) = filter(std::env::var("RUST_LOG").ok().as_deref());
    if tracing::subscriber::set_global_default(Log { filter, format }).is_ok()
        && let Some(c) = complaint
    {
        tracing::warn!("{c}");
    }
}

/// The subscriber: filters by target and level, writes each event as one line.
struct Log {
    filter: Targets,
    format: LogFormat,
}

impl Subscriber for Log {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Spans are not shown; the events inside them are judged alone.
        metadata.is_event() && self.filter.would_enable(metadata.target(), metadata.level())
    }

    /// The most verbose level any target may log at: the callsites of every level past it
    /// (the client libraries' debug and trace lines) are skipped before they are looked at.
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        let levels = self.filter.iter().map(|(_, level)| level);
        Some(levels.fold(self.filter.default_level().unwrap_or(tracing::level_filters::LevelFilter::OFF), Ord::max))
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let line = line(self.format, jiff::Timestamp::now(), event.metadata(), &fields(event));
        // A closed stderr loses the line; it never stops the agent.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// One field's value, as recorded.
#[derive(Debug, PartialEq)]
enum Value {
    /// A `&str` field (quoted in text).
    Str(String),
    /// A field recorded through `Debug` or `Display` (`?x`, `%x`), and the message.
    Shown(String),
    /// A number or a boolean.
    Json(serde_json::Value),
}

/// An event's fields in the order they were written; the message first.
fn fields(event: &Event<'_>) -> Vec<(&'static str, Value)> {
    struct Fields(Vec<(&'static str, Value)>);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name(), Value::Shown(format!("{value:?}"))));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            let v = if field.name() == "message" { Value::Shown(value.into()) } else { Value::Str(value.into()) };
            self.0.push((field.name(), v));
        }
        fn record_i64(&mut self, field: &Field, value: i64) {
            self.0.push((field.name(), Value::Json(value.into())));
        }
        fn record_u64(&mut self, field: &Field, value: u64) {
            self.0.push((field.name(), Value::Json(value.into())));
        }
        fn record_bool(&mut self, field: &Field, value: bool) {
            self.0.push((field.name(), Value::Json(value.into())));
        }
        fn record_f64(&mut self, field: &Field, value: f64) {
            self.0.push((
                field.name(),
                Value::Json(serde_json::Number::from_f64(value).map_or(serde_json::Value::Null, Into::into)),
            ));
        }
    }
    let mut f = Fields(Vec::new());
    event.record(&mut f);
    f.0.sort_by_key(|(name, _)| *name != "message");
    f.0
}

/// The line for one event (newline included). Text keeps a message's own line breaks out of
/// the log: they are written as `\n`.
fn line(format: LogFormat, at: jiff::Timestamp, meta: &Metadata<'_>, fields: &[(&'static str, Value)]) -> String {
    let level = level(meta.level());
    match format {
        LogFormat::Text => {
            let mut out = format!("{at:.6} {level:>5} {}:", meta.target());
            for (name, value) in fields {
                let shown = match value {
                    Value::Str(s) => format!("{s:?}"),
                    Value::Shown(s) => s.clone(),
                    Value::Json(v) => v.to_string(),
                };
                let shown = shown.replace('\n', "\\n");
                let _ = if *name == "message" { write!(out, " {shown}") } else { write!(out, " {name}={shown}") };
            }
            out.push('\n');
            out
        }
        LogFormat::Json => {
            let fields: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(name, value)| {
                    let v = match value {
                        Value::Str(s) | Value::Shown(s) => serde_json::Value::String(s.clone()),
                        Value::Json(v) => v.clone(),
                    };
                    ((*name).to_owned(), v)
                })
                .collect();
            let object = serde_json::json!({
                "timestamp": format!("{at:.6}"),
                "level": level,
                "target": meta.target(),
                "fields": fields,
            });
            format!("{object}\n")
        }
    }
}

fn level(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_parses_and_quiets_the_client_stacks() {
        let (f, complaint) = filter(None);
        assert!(complaint.is_none());
        assert!(f.would_enable("vigil_agent::events", &Level::INFO));
        assert!(!f.would_enable("vigil_agent::events", &Level::DEBUG));
        assert!(!f.would_enable("kube_client::client", &Level::INFO));
        assert!(f.would_enable("kube_client::client", &Level::WARN));
        assert!(!f.would_enable("hyper_util::client", &Level::INFO));
    }

    #[test]
    fn the_level_hint_is_the_most_verbose_level_any_target_may_log_at() {
        use tracing::level_filters::LevelFilter;
        let hint = |rust_log| Log { filter: filter(rust_log).0, format: LogFormat::Text }.max_level_hint();
        assert_eq!(hint(None), Some(LevelFilter::INFO));
        assert_eq!(hint(Some("warn,vigil_agent::events=debug")), Some(LevelFilter::DEBUG));
        assert_eq!(hint(Some("off")), Some(LevelFilter::OFF));
    }

    #[test]
    fn a_rust_log_that_does_not_parse_is_said_and_the_default_holds() {
        let (f, complaint) = filter(Some("vigil_agent=loud"));
        assert!(complaint.is_some_and(|c| c.contains("RUST_LOG=\"vigil_agent=loud\"")));
        assert!(f.would_enable("vigil_agent", &Level::INFO));
        let (f, _) = filter(Some("warn"));
        assert!(!f.would_enable("vigil_agent", &Level::INFO) && f.would_enable("vigil_agent", &Level::WARN));
    }

    /// Captures the lines one event gives in both formats.
    struct Capture(std::sync::Mutex<Vec<(String, String)>>);

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, event: &Event<'_>) {
            let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
            let f = fields(event);
            let text = line(LogFormat::Text, at, event.metadata(), &f);
            let json = line(LogFormat::Json, at, event.metadata(), &f);
            self.0.lock().unwrap().push((text, json));
        }
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }

    #[test]
    fn an_event_is_one_line_of_text_or_one_json_object_with_every_field() {
        let capture = std::sync::Arc::new(Capture(std::sync::Mutex::new(Vec::new())));
        tracing::subscriber::with_default(capture.clone(), || {
            let path = std::path::Path::new("/var/log/a\nb");
            tracing::warn!(file = %path.display(), node = "n\"1", count = 3u64, ok = true, "kernel: opening {}: gone", "x");
        });
        let lines = capture.0.lock().unwrap();
        let (text, json) = &lines[0];
        assert_eq!(
            text,
            "2027-01-15T08:00:00.000000Z  WARN vigil_agent::log::tests: kernel: opening x: gone file=/var/log/a\\nb node=\"n\\\"1\" count=3 ok=true\n"
        );
        assert_eq!(text.matches('\n').count(), 1, "one line");
        assert_eq!(json.matches('\n').count(), 1, "one line");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "timestamp": "2027-01-15T08:00:00.000000Z",
                "level": "WARN",
                "target": "vigil_agent::log::tests",
                "fields": {"message": "kernel: opening x: gone", "file": "/var/log/a\nb", "node": "n\"1", "count": 3, "ok": true},
            })
        );
    }
}
