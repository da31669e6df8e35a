use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// Vigil's operator: rolls the Vigil agent out in waves and compiles alert policies.
#[derive(Parser)]
#[command(name = "vigil-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the AgentRollout controller against the cluster of the in-cluster service account
    /// (or the current kubeconfig context) until SIGTERM.
    Run {
        /// Where to serve /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_addr: String,
        /// Namespace of the leader-election Lease (default: the POD_NAMESPACE variable, then
        /// vigil-system).
        #[arg(long)]
        lease_namespace: Option<String>,
        /// Run the agents unprivileged (non-root, no capabilities, no host state): metrics
        /// only, without the security event sources that need root's files and /dev/kmsg.
        #[arg(long)]
        agent_unprivileged: bool,
        /// Give the agent pods no readiness probe: for agent images built before `vigil-agent
        /// ready` existed, whose pods would otherwise never be Ready (and fail the gate).
        #[arg(long)]
        agent_no_readiness_probe: bool,
        /// How log lines on stderr are written: text for a person, or one JSON object per
        /// line (timestamp, level, target, fields, the reconcile's span) for a log pipeline.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Print the CustomResourceDefinitions as one YAML stream (`| kubectl apply -f -`).
    Crds,
    /// Dry-run a rollout over a simulated fleet with the real planner and print its timeline.
    Simulate {
        /// Nodes in the fleet.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Zones the nodes spread over.
        #[arg(long, default_value_t = 3)]
        zones: usize,
        /// Share of nodes with os-image=legacy.
        #[arg(long, default_value_t = 0.1)]
        legacy_share: f64,
        /// Fault of the target revision: crashloop[:ATTR=VALUE], slow-start:SECS,
        /// missing-heartbeat[:ATTR=VALUE], not-ready:SHARE. Repeatable.
        #[arg(long)]
        fault: Vec<String>,
        /// Failure policy: rollback, pause or pin-failing-group.
        #[arg(long, default_value = "rollback")]
        policy: String,
        /// Operator restarts at random instants.
        #[arg(long, default_value_t = 0)]
        restarts: usize,
        /// Label writes the API accepts per second.
        #[arg(long, default_value_t = 50)]
        writes_per_second: usize,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Validate AgentRollout / AlertPolicy / AgentStatus manifests offline, with the same
    /// OpenAPI and CEL rules the API server applies, and agent config files with the agent's
    /// own checks (those a rollout's config must pass). Exit 0 when all are valid, 2 otherwise.
    Validate {
        /// Manifest files (multi-document YAML); `-` reads standard input.
        #[arg(required_unless_present = "agent_configs")]
        files: Vec<PathBuf>,
        /// An agent config file, checked as `vigil-agent check-config` checks it, less what
        /// needs the node (its alert policy files); repeatable.
        #[arg(long = "agent-config", value_name = "FILE")]
        agent_configs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vigil-operator: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// `<time> <LEVEL> <spans>: <target>: <message> <field>=<value>...`
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`, `span`, `spans`.
    Json,
}

/// Structured logs on stderr (`RUST_LOG` filters; default `info`, kube's own at `warn`).
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,tower=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
    };
}

/// A client for the in-cluster service account (or the current kubeconfig context) that counts
/// every request it sends in `vigil_operator_api_requests_total`.
async fn counted_client(metrics: std::sync::Arc<vigil_operator::metrics::Metrics>) -> Result<kube::Client> {
    let config = kube::Config::infer().await.context("connecting to the API server")?;
    let builder = kube::client::ClientBuilder::try_from(config).context("building the API client")?;
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        let verb = vigil_operator::metrics::verb(req.method(), req.uri().query());
        metrics.api_requests.get_or_create(&vigil_operator::metrics::VerbLabels { verb }).inc();
        tracing::debug!(verb, path = req.uri().path(), "API request");
        req
    });
    Ok(builder.with_layer(&count).build())
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { metrics_addr, lease_namespace, agent_unprivileged, agent_no_readiness_probe, log_format } => {
            let rt =
                tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
            init_logs(log_format);
            rt.block_on(async {
                let metrics = std::sync::Arc::new(vigil_operator::metrics::Metrics::default());
                let client = counted_client(metrics.clone()).await?;
                let namespace = lease_namespace
                    .or_else(|| std::env::var(vigil_crds::agent::env::POD_NAMESPACE).ok().filter(|v| !v.is_empty()))
                    .unwrap_or_else(|| vigil_crds::DEFAULT_NAMESPACE.into());
                let listener = tokio::net::TcpListener::bind(&metrics_addr)
                    .await
                    .with_context(|| format!("binding the metrics endpoint to {metrics_addr}"))?;
                let app = vigil_operator::metrics::router(metrics.clone());
                tokio::spawn(async move { axum::serve(listener, app).await });
                let instance =
                    std::env::var("POD_NAME").unwrap_or_else(|_| format!("vigil-operator-{}", std::process::id()));
                let election = vigil_operator::leader::Election::new(&namespace, vigil_operator::leader::NAME, &instance);
                let provider =
                    vigil_operator::telemetry::init(env!("CARGO_PKG_VERSION")).context("setting up OTLP traces")?;
                let tracer =
                    provider.as_ref().map(|p| opentelemetry::trace::TracerProvider::tracer(p, "vigil-operator"));
                let template = vigil_operator::act::AgentTemplate {
                    namespace: namespace.clone(),
                    security_events: !agent_unprivileged,
                    readiness_probe: !agent_no_readiness_probe,
                    ..vigil_operator::act::AgentTemplate::default()
                };
                tracing::info!(
                    version = env!("CARGO_PKG_VERSION"),
                    instance = %instance,
                    namespace = %namespace,
                    metrics = %metrics_addr,
                    agents = if agent_unprivileged { "unprivileged (metrics only)" } else { "with security event sources" },
                    otlp = provider.is_some(),
                    "vigil-operator starting"
                );
                let publish_in = template.namespace.clone();
                let policies = vigil_operator::policies::run(
                    client.clone(),
                    publish_in,
                    vigil_operator::policies::Source::All,
                    metrics.clone(),
                );
                let rollouts = vigil_operator::controller::run(client.clone(), instance, metrics, tracer, template);
                let work = async move {
                    tokio::join!(rollouts, policies);
                };
                let result = vigil_operator::leader::lead(&client, &election, work).await.map_err(anyhow::Error::msg);
                match &result {
                    Ok(()) => tracing::info!("stopped"),
                    Err(e) => tracing::error!(error = %e, "stopping: no longer the leader"),
                }
                if let Some(p) = provider {
                    // Flush what is pending; a failed flush loses only spans.
                    let _ = p.shutdown();
                }
                result
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds => {
            for (_, text) in vigil_crds::render_all().context("rendering the CRDs")? {
                println!("---\n{}", text.trim_end());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate { nodes, zones, legacy_share, fault, policy, restarts, writes_per_second, seed } => {
            use vigil_crds::rollout::FailurePolicy;
            use vigil_plan::simulate;
            let policy = match policy.as_str() {
                "rollback" => FailurePolicy::Rollback,
                "pause" => FailurePolicy::Pause,
                "pin-failing-group" => FailurePolicy::PinFailingGroup,
                other => anyhow::bail!("--policy {other:?}: expected rollback, pause or pin-failing-group"),
            };
            let faults = fault
                .iter()
                .map(|f| simulate::parse_fault(f).map_err(anyhow::Error::msg))
                .collect::<Result<Vec<_>>>()?;
            anyhow::ensure!(nodes > 0, "--nodes must be at least 1");
            let scenario = simulate::Scenario {
                nodes,
                zones,
                legacy_share,
                faults,
                operator_restarts: restarts,
                writes_per_second: writes_per_second.max(1),
                seed,
                ..Default::default()
            };
            let report = simulate::run(&scenario, &simulate::spec(policy));
            for e in &report.timeline {
                println!("{:>6}s  {:<9} {:>5} on target  {}", e.at, e.kind, e.on_target, e.reason);
            }
            println!("---");
            println!("phase: {:?} after {} s simulated", report.phase, report.finished_after);
            println!(
                "nodes that ever ran the target: {} (outside the first wave: {})",
                report.ever_on_target, report.outside_first_wave
            );
            if let Some(r) = report.rollback_seconds {
                println!("rollback: every affected node back in {r} s");
            }
            println!(
                "plans: {}, label writes: {}, operator restarts: {}",
                report.plans, report.writes, report.restarts
            );
            if report.violations.is_empty() {
                println!("invariants: all held");
                Ok(ExitCode::SUCCESS)
            } else {
                for v in &report.violations {
                    eprintln!("invariant violated: {v}");
                }
                Ok(ExitCode::from(3))
            }
        }
        Command::Validate { files, agent_configs } => {
            let mut invalid = 0;
            for file in &agent_configs {
                match vigil_agent_config::Config::load(file) {
                    Ok(_) => println!("{}: valid agent config", file.display()),
                    Err(e) => {
                        invalid += 1;
                        // `{:#}`: the error and its causes, joined as check-config prints them.
                        eprintln!("{:#}", anyhow::Error::new(e));
                    }
                }
            }
            for file in &files {
                let text = if file.as_os_str() == "-" {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s).context("reading standard input")?;
                    s
                } else {
                    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
                };
                for report in vigil_operator::manifests::validate_stream(&text) {
                    if report.errors.is_empty() {
                        println!("{}: {report}", file.display());
                    } else {
                        invalid += 1;
                        eprintln!("{}: {report}", file.display());
                    }
                }
            }
            Ok(if invalid == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
    }
}
