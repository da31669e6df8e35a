//! `vigil-agent`: the node agent, and a local scanner without a cluster.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use vigil_agent::config::Config;
use vigil_agent::daemon::{print_alert, print_event};
use vigil_agent::events::EventQueue;
use vigil_agent::host::HostRoot;
use vigil_agent::render::{RenderOptions, render};
use vigil_agent::snapshot::{Collector, Snapshot};

/// Vigil's node agent: system metrics and security events of a Linux node.
#[derive(Parser)]
#[command(name = "vigil-agent", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How the agent's log lines on stderr are written: text for a person, or one JSON
    /// object per line (timestamp, level, target, fields) for a log pipeline. `RUST_LOG`
    /// filters them (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = vigil_agent::log::LogFormat::Text)]
    log_format: vigil_agent::log::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// One snapshot of this host, for a person (coloured on a terminal) or as JSON.
    Scan {
        #[command(flatten)]
        common: Common,
        /// Time between the two reads that CPU utilisation is measured over (0s: one read,
        /// no utilisation).
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        sample: Duration,
        /// Also the security events one look can find: the kernel log since boot, the auth
        /// logs, what listens, the clock, and changes from a saved file baseline.
        #[arg(long)]
        events: bool,
    },
    /// Snapshots until Ctrl-C (`--json`: one JSON object per line).
    Watch {
        #[command(flatten)]
        common: Common,
        /// Time between snapshots (default: the config's interval, 10s).
        #[arg(long, value_parser = humantime::parse_duration)]
        interval: Option<Duration>,
        /// Stop after this many snapshots.
        #[arg(long)]
        count: Option<u64>,
        /// Also stream security events as they happen (processes, files, logins, sockets,
        /// kernel log, clock).
        #[arg(long)]
        events: bool,
        /// Security events only, no snapshots.
        #[arg(long, conflicts_with = "count")]
        events_only: bool,
        /// Try AlertPolicy files (or directories of them) on this host: their rules are
        /// evaluated on every snapshot (and every event with --events) and each alert is
        /// printed as it fires and resolves. Nothing is sent; receivers are not read.
        #[arg(long = "policy", value_name = "PATH")]
        policies: Vec<PathBuf>,
    },
    /// Daemon mode (the DaemonSet entrypoint): snapshots at the config's interval, exported on
    /// /metrics and over OTLP as configured, until SIGTERM or Ctrl-C.
    Run {
        /// Config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Where the host's / is mounted (overrides the config's hostRoot).
        #[arg(long)]
        host_root: Option<PathBuf>,
        /// Where a fatal error is written before exiting, for `kubectl describe pod`; written
        /// only when the file exists (the kubelet creates it in a pod).
        #[arg(long, default_value = "/dev/termination-log")]
        termination_log: PathBuf,
        /// Refuse to start unless the config file's SHA-256 is this (default: the
        /// VIGIL_CONFIG_SHA256 variable, which the rollout's DaemonSet sets).
        #[arg(long)]
        expect_config_sha256: Option<String>,
        /// In a pod, do not renew the heartbeat Lease nor write the node's AgentStatus.
        #[arg(long)]
        no_report: bool,
    },
    /// Validate a config file, and the alert policies it names: exit 0 when valid, 2 with
    /// the error otherwise.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Validate AlertPolicy files (or directories of them) as the agent loads them: exit 0
    /// when valid, 2 with the error (file, document, field) otherwise.
    CheckPolicy {
        /// Policy files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Where the Secrets receivers name are mounted (`<dir>/<secret>/<key>`).
        #[arg(long, default_value = vigil_crds::policy::SECRETS_DIR)]
        secrets_dir: PathBuf,
    },
    /// The readiness probe of an agent pod: exit 0 when this pod's agent is the node's
    /// working agent (it holds the node's lock with its sources started), 1 otherwise (it
    /// stands by during a handover, or is starting or stopping).
    Ready {
        /// The agent's ready file (default: the VIGIL_READY_FILE variable, which the rollout's
        /// DaemonSet sets).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// The dead-letter spool: notifications the agent gave up delivering.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters: sequence, receiver, when, why, alerts.
    List {
        #[command(flatten)]
        spool: SpoolArgs,
        /// One JSON object per entry.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back in the delivery spool (a running agent takes them within
    /// seconds, a stopped one when it starts).
    Replay {
        #[command(flatten)]
        spool: SpoolArgs,
        /// Sequence numbers to replay (from `dlq list`).
        #[arg(conflicts_with = "all", required_unless_present = "all")]
        seqs: Vec<u64>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args)]
struct SpoolArgs {
    /// The agent's config: its spool directory is used.
    #[arg(long, short, conflicts_with = "spool")]
    config: Option<PathBuf>,
    /// The spool directory itself (default: /var/lib/vigil-agent/spool).
    #[arg(long)]
    spool: Option<PathBuf>,
}

impl SpoolArgs {
    fn dir(&self) -> Result<(PathBuf, bool)> {
        let config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let dir = self.spool.clone().unwrap_or_else(|| config.alerts.spool_dir(&config.events));
        Ok((dir, config.alerts.fsync))
    }
}

#[derive(Args)]
struct Common {
    /// Config file (YAML); defaults apply without one.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Where the host's / is mounted (default: the config's hostRoot, `/`).
    #[arg(long)]
    host_root: Option<PathBuf>,
    /// JSON (the schema in docs/agent-snapshot.md) instead of text.
    #[arg(long)]
    json: bool,
    /// No colours, even on a terminal (NO_COLOR is honoured too).
    #[arg(long)]
    no_color: bool,
    /// One line per snapshot.
    #[arg(long)]
    compact: bool,
}

impl Common {
    fn load(&self) -> Result<(Config, Collector)> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(root) = &self.host_root {
            config.host_root = root.clone();
        }
        let proc_dir = config.host_root.join("proc");
        anyhow::ensure!(
            proc_dir.join("stat").is_file(),
            "{} does not look like a host root: {} has no stat file",
            config.host_root.display(),
            proc_dir.display()
        );
        let filters = config.compiled_filters().map_err(|(key, e)| anyhow::anyhow!("{key}: {e}"))?;
        let collector = Collector::new(
            HostRoot::new(config.host_root.clone()),
            config.collectors.clone(),
            filters,
            config.processes.top,
        );
        Ok((config, collector))
    }

    fn render_options(&self) -> RenderOptions {
        let color = !self.no_color
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::io::stdout().is_terminal();
        RenderOptions { color, compact: self.compact }
    }

    fn emit(&self, out: &mut impl Write, snapshot: &Snapshot) -> Result<()> {
        if self.json {
            serde_json::to_writer(&mut *out, snapshot).context("encoding the snapshot")?;
            out.write_all(b"\n")?;
        } else {
            out.write_all(render(snapshot, self.render_options()).as_bytes())?;
        }
        out.flush()?;
        Ok(())
    }
}

fn main() -> ExitCode {
    vigil_agent::selfmon::heap_gives_back_large_blocks();
    let cli = Cli::parse();
    let log_format = cli.log_format;
    vigil_agent::log::init(log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`| head`) is the reader's choice, not a failure.
            let broken_pipe = |c: &(dyn std::error::Error + 'static)| {
                c.downcast_ref::<std::io::Error>()
                    .map(std::io::Error::kind)
                    .or_else(|| c.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind))
                    == Some(std::io::ErrorKind::BrokenPipe)
            };
            if e.chain().any(broken_pipe) {
                return ExitCode::SUCCESS;
            }
            // A log pipeline reads the last words as it reads every other line.
            // (Unless RUST_LOG turned the agent's errors off: then on stderr as text.)
            if log_format == vigil_agent::log::LogFormat::Json && tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!(error = %format!("{e:#}"), "stopped");
            } else {
                eprintln!("vigil-agent: {e:#}");
            }
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Ready { file } => {
            let file = file
                .or_else(|| std::env::var_os(vigil_crds::agent::env::READY_FILE).map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(vigil_crds::agent::READY_FILE));
            Ok(match vigil_agent::daemon::ready(&file) {
                Ok(pid) => {
                    println!("ready: agent pid {pid} works on this node");
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    println!("not ready: {why}");
                    ExitCode::from(1)
                }
            })
        }
        Command::Scan { common, sample, events } => {
            let (config, mut collector) = common.load()?;
            if !sample.is_zero() {
                collector.collect(jiff::Timestamp::now());
                std::thread::sleep(sample);
            }
            let snapshot = collector.collect(jiff::Timestamp::now());
            let mut out = std::io::stdout().lock();
            common.emit(&mut out, &snapshot)?;
            if events {
                let mut found = vigil_agent::events::runner::one_shot(&config);
                if !common.json {
                    writeln!(out, "\nEvents ({})", found.events.len())?;
                }
                let color = common.render_options().color;
                // On a node, the pods events belong to, from the kubelet's directories as the
                // daemon reads them.
                let pods = vigil_agent::events::pods::PodIndex::from_host(&HostRoot::new(config.host_root.clone()));
                for e in &mut found.events {
                    pods.attribute(e);
                    print_event(&mut out, e, common.json, color)?;
                }
                out.flush()?;
                // In the log on stderr, so the JSON on stdout stays clean: what could not be read
                // or parsed (each unparsed line is an agent.unparsed event above).
                for w in &found.warnings {
                    tracing::warn!("events: {}", vigil_agent::events::printable(w));
                }
                if !found.lost.is_empty() {
                    let per: Vec<String> = found.lost.iter().map(|(s, n)| format!("{} {n}", s.as_str())).collect();
                    tracing::warn!(
                        "events: records lost before they were read (agent.lost events above): {}",
                        per.join(", ")
                    );
                }
                if !found.unparsed.is_empty() {
                    let per: Vec<String> =
                        found.unparsed.iter().map(|((s, r), n)| format!("{} {} {n}", s.as_str(), r.as_str())).collect();
                    tracing::warn!("events: input not understood, kept as agent.unparsed events: {}", per.join(", "));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch { common, interval, count, events, events_only, policies } => {
            let (config, mut collector) = common.load()?;
            let interval = interval.unwrap_or(config.interval);
            anyhow::ensure!(!interval.is_zero(), "--interval must be above 0s");
            let rt =
                tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
            let color = common.render_options().color;
            rt.block_on(async {
                let node = vigil_agent::proc::identity::node_name(
                    &HostRoot::new(config.host_root.clone()),
                    config.node_name.as_deref(),
                );
                let pods = vigil_agent::events::pods::PodIndex::from_host(&HostRoot::new(config.host_root.clone()));
                let mut stream = if events || events_only {
                    let (queue, rx) = EventQueue::new(config.events.queue_capacity, &node);
                    let sources = vigil_agent::events::runner::start(&config, &queue);
                    Some((rx, sources, queue.stats()))
                } else {
                    None
                };
                let mut rules = if policies.is_empty() {
                    None
                } else {
                    let set = vigil_agent::alert::policy::load_rules(&policies)?;
                    let mut engine = vigil_agent::alert::rules::Engine::new(&node, interval);
                    engine.set_policies(&set, jiff::Timestamp::now());
                    let latest: vigil_agent::export::prometheus::Latest = std::sync::Arc::default();
                    let (_registry, exports) = vigil_agent::export::prometheus::registry(
                        latest.clone(),
                        vigil_agent::selfmon::SelfUsage::default(),
                        env!("CARGO_PKG_VERSION"),
                    );
                    Some((engine, latest, exports.tables, Vec::new()))
                };
                let mut drops = vigil_agent::daemon::DropSummary::new(&node);
                let mut states_seen = vigil_agent::events::runner::SourceStates::default();
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut taken = 0u64;
                loop {
                    tokio::select! {
                        _ = ticks.tick() => {}
                        Some(mut e) = async { match stream.as_mut() { Some((rx, _, _)) => rx.recv().await, None => std::future::pending().await } } => {
                            pods.attribute(&mut e);
                            let mut out = std::io::stdout().lock();
                            print_event(&mut out, &e, common.json, color)?;
                            if let Some((engine, ..)) = rules.as_mut() {
                                for r in engine.observe_event(&e) {
                                    print_alert(&mut out, &r.alert, common.json, color)?;
                                }
                            }
                            continue;
                        }
                        _ = tokio::signal::ctrl_c() => break,
                    }
                    if let Some((_, sources, stats)) = &stream {
                        if let Some(summary) = drops.check(stats, jiff::Timestamp::now()) {
                            print_event(&mut std::io::stdout().lock(), &summary, common.json, color)?;
                        }
                        sources.report_changes(&mut states_seen);
                    }
                    if let Some((engine, ..)) = rules.as_mut() {
                        for r in engine.tick(jiff::Timestamp::now()) {
                            print_alert(&mut std::io::stdout().lock(), &r.alert, common.json, color)?;
                        }
                    }
                    if events_only {
                        continue;
                    }
                    let snapshot = collector.collect(jiff::Timestamp::now());
                    common.emit(&mut std::io::stdout().lock(), &snapshot)?;
                    if let Some((engine, latest, tables, learning)) = rules.as_mut() {
                        let at = snapshot.time;
                        let processes = vigil_agent::alert::rules::process_samples(&snapshot);
                        if let Ok(mut slot) = latest.write() {
                            *slot = Some(std::sync::Arc::new(snapshot));
                        }
                        let samples = vigil_agent::alert::rules::scan_samples(tables, processes);
                        for r in engine.observe_metrics(at, &samples) {
                            print_alert(&mut std::io::stdout().lock(), &r.alert, common.json, color)?;
                        }
                        let now = engine.learning();
                        vigil_agent::daemon::print_learning(&mut std::io::stdout().lock(), learning, &now, common.json)?;
                        *learning = now;
                        vigil_agent::daemon::print_scores(&mut std::io::stdout().lock(), &engine.scores(), common.json)?;
                    }
                    taken += 1;
                    if count.is_some_and(|c| taken >= c) {
                        break;
                    }
                }
                if let Some((mut rx, sources, stats)) = stream {
                    sources.stop();
                    // What the sources queued before they stopped still goes out.
                    while let Ok(mut e) = rx.try_recv() {
                        pods.attribute(&mut e);
                        print_event(&mut std::io::stdout().lock(), &e, common.json, color)?;
                    }
                    // What was dropped since the last summary is said before watch ends.
                    if let Some(summary) = drops.flush(&stats, jiff::Timestamp::now()) {
                        print_event(&mut std::io::stdout().lock(), &summary, common.json, color)?;
                    }
                }
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config, host_root, termination_log, expect_config_sha256, no_report } => {
            let expected = expect_config_sha256
                .or_else(|| std::env::var(vigil_crds::agent::env::CONFIG_SHA256).ok().filter(|v| !v.is_empty()));
            let result = run_daemon(&config, host_root, expected.as_deref(), !no_report);
            if let Err(e) = &result
                && termination_log.is_file()
            {
                // Best effort: the error still goes to stderr below.
                let _ = std::fs::write(&termination_log, format!("{e:#}\n"));
            }
            result.map(|()| ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            // Unset policies are checked where they are in force: in the agent's pod.
            Ok(c) if c.policy_paths(None).is_empty() => {
                println!("{}: valid", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Ok(c) => Ok(check_policy(&c.policy_paths(None), &c.alerts.secrets_dir, Some(&file))),
            Err(e) => {
                eprintln!("vigil-agent: {}", error_chain(&e));
                Ok(ExitCode::from(2))
            }
        },
        Command::CheckPolicy { paths, secrets_dir } => Ok(check_policy(&paths, &secrets_dir, None)),
        Command::Dlq { command: DlqCommand::List { spool, json } } => {
            let (dir, _) = spool.dir()?;
            let entries = vigil_agent::alert::spool::dead_entries(&dir)?;
            let mut out = std::io::stdout().lock();
            if !json {
                writeln!(
                    out,
                    "{} dead letter{} in {}",
                    entries.len(),
                    if entries.len() == 1 { "" } else { "s" },
                    dir.display()
                )?;
            }
            for e in &entries {
                if json {
                    serde_json::to_writer(&mut out, e)?;
                    writeln!(out)?;
                    continue;
                }
                let n = &e.notification;
                let names: Vec<&str> = n.alerts.iter().map(vigil_agent::alert::Alert::name).collect();
                writeln!(
                    out,
                    "{:>6}  {}  {}  {} attempt{}  {}\n        {}",
                    e.seq,
                    e.dead_at.map_or_else(|| "-".into(), |t| t.round(jiff::Unit::Second).unwrap_or(t).to_string()),
                    n.receiver,
                    e.attempts,
                    if e.attempts == 1 { "" } else { "s" },
                    names.join(", "),
                    e.last_error.as_deref().unwrap_or("")
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { command: DlqCommand::Replay { spool, seqs, all } } => {
            let (dir, fsync) = spool.dir()?;
            let wanted = (!all).then_some(seqs.as_slice());
            let done = vigil_agent::alert::spool::replay(&dir, wanted, fsync)?;
            if let Some(w) = wanted {
                let missing: Vec<String> = w.iter().filter(|s| !done.contains(s)).map(u64::to_string).collect();
                anyhow::ensure!(
                    missing.is_empty(),
                    "no dead letter with sequence number {} in {}",
                    missing.join(", "),
                    dir.display()
                );
            }
            println!("{} dead letter{} put back for delivery", done.len(), if done.len() == 1 { "" } else { "s" });
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "vigil-agent", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check_policy(paths: &[PathBuf], secrets_dir: &std::path::Path, config: Option<&std::path::Path>) -> ExitCode {
    match vigil_agent::alert::policy::load(paths, secrets_dir, None) {
        Ok(set) => {
            if let Some(c) = config {
                println!("{}: valid", c.display());
            }
            for p in &set.policies {
                println!(
                    "{}: valid: {} rules, {} routes, {} receivers, {} silences",
                    p.id,
                    p.rules.len(),
                    p.routes.len(),
                    p.receivers.len(),
                    p.silences.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vigil-agent: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_daemon(
    path: &std::path::Path,
    host_root: Option<PathBuf>,
    expected_sha256: Option<&str>,
    report: bool,
) -> Result<()> {
    let mut config = Config::load_verified(path, expected_sha256)?;
    if let Some(root) = host_root {
        config.host_root = root;
    }
    // Not Ready until this agent works (a container restarted in the same pod finds the file
    // its killed predecessor left).
    vigil_agent::daemon::clear_ready_file();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let node = env(vigil_crds::agent::env::NODE_NAME);
        let in_pod = report && node.is_some() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        let client = if in_pod { kube::Client::try_default().await.ok() } else { None };
        let assigned = match (client, node) {
            (Some(client), Some(node)) => vigil_agent::handover::Assigned::Node { client, node },
            _ => vigil_agent::handover::Assigned::Fixed(std::sync::Arc::default()),
        };
        let dir = config.events.state_dir.clone();
        let mine = env(vigil_crds::agent::env::REVISION);
        if !in_pod && matches!(vigil_agent::handover::NodeLock::try_take(&dir), Ok(None)) {
            anyhow::bail!(
                "another vigil-agent works with the state directory {} (it holds {}); stop it, or give this one another events.stateDir",
                dir.display(),
                dir.join(vigil_agent::handover::LOCK_FILE).display()
            );
        }
        let open_early = || vigil_agent::events::runner::Early::open(&config);
        vigil_agent::handover::exclusive(&dir, mine, assigned, stop, open_early, |shutdown, early| {
            let early = early.unwrap_or_default();
            vigil_agent::daemon::run(config.clone(), env!("CARGO_PKG_VERSION"), report, shutdown, early, |addr| {
                tracing::info!("serving metrics on http://{addr}/metrics");
            })
        })
        .await?;
        Ok(())
    })
}

/// Resolves on SIGTERM (the kubelet stopping the pod) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
