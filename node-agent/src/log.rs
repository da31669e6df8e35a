//! The agent's log: `tracing` events on stderr (the pod's log), as text lines for a person or
//! one JSON object per line (`--log-format json`) for a log pipeline, with the same fields.
//! `RUST_LOG` filters (`info` by default; the kube client, HTTP and TLS stacks at `warn`).

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
/// [`DEFAULT_FILTER`]. A `RUST_LOG` that does not parse is said once, on the log itself.
fn filter() -> (tracing_subscriber::filter::Targets, Option<String>) {
    let default = || DEFAULT_FILTER.parse().unwrap_or_default();
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => match v.parse() {
            Ok(f) => (f, None),
            Err(e) => (default(), Some(format!("RUST_LOG={v:?} is not a filter ({e}): logging at the default"))),
        },
        _ => (default(), None),
    }
}

/// Installs the log for the whole process (once; later calls change nothing).
pub fn init(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, complaint) = filter();
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false);
    let installed = match format {
        LogFormat::Text => tracing_subscriber::registry().with(layer).with(filter).try_init(),
        LogFormat::Json => tracing_subscriber::registry().with(layer.json()).with(filter).try_init(),
    };
    if installed.is_ok()
        && let Some(c) = complaint
    {
        tracing::warn!("{c}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_filter_parses_and_quiets_the_client_stacks() {
        use tracing::Level;
        use tracing_subscriber::filter::Targets;
        let f: Targets = super::DEFAULT_FILTER.parse().expect("the default filter parses");
        assert!(f.would_enable("vigil_agent::events", &Level::INFO));
        assert!(!f.would_enable("vigil_agent::events", &Level::DEBUG));
        assert!(!f.would_enable("kube_client::client", &Level::INFO));
        assert!(f.would_enable("kube_client::client", &Level::WARN));
        assert!(!f.would_enable("hyper_util::client", &Level::INFO));
    }
}
