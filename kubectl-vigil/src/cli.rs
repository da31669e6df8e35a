//! The command line: `kubectl vigil COMMAND`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Follow and steer Vigil's agent rollouts.
///
/// Reads AgentRollouts, Nodes, agent pods, heartbeat Leases, AgentStatuses and Events; every
/// change it makes is one server-side apply (field manager `kubectl-vigil`) or JSON patch of an
/// AgentRollout's spec, which the operator then carries out.
#[derive(Parser, Debug, Clone)]
#[command(name = "kubectl-vigil", bin_name = "kubectl vigil", version, propagate_version = true)]
pub struct Cli {
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace of the AgentRollout (default: the context's; a rollout name found in
    /// exactly one namespace is found without it).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Output format: text for people, json or yaml for tools.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Colour in text output: auto (on a terminal, unless NO_COLOR is set), always or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// For a person.
    Text,
    /// JSON, one document.
    Json,
    /// YAML, one document.
    Yaml,
}

/// When to colour text output.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The commands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// A rollout's waves as a tree, nodes per revision and wave, each gate's result, pins and
    /// excluded nodes with reasons, the last decisions and the time to the next step.
    Status(StatusArgs),
    /// Stop admitting nodes to the target (health checks and rollback go on): spec.paused.
    Pause(ActArgs),
    /// Clear spec.paused: admitting goes on where it stopped.
    Resume(ActArgs),
    /// Change nothing at all, not even a rollback (incident response): spec.frozen.
    Freeze(ActArgs),
    /// Clear spec.frozen.
    Unfreeze(ActArgs),
    /// End the current wave's bake time now (its health gate must still pass).
    Promote(ActArgs),
    /// Roll the target back to the stable revision and mark it Bad.
    Abort(ActArgs),
    /// Admit a target marked Bad again, from wave 1 (once its cause is fixed).
    Retry(ActArgs),
    /// Roll back to the stable revision, or to a Good revision of the history with --to.
    Rollback(RollbackArgs),
    /// Hold a node group on a revision: adds a pin to spec.pins.
    Pin(PinArgs),
    /// Remove a pin from spec.pins: its nodes rejoin the rollout.
    Unpin(UnpinArgs),
    /// The AgentStatus inventory: what every node's agent runs and says, with filters.
    Agents(AgentsArgs),
    /// Which rollout selects a node, the revision it runs and why (wave, pin, guard, window).
    Why(WhyArgs),
    /// Remove what an uninstalled Vigil left in the namespace (-n) and on the nodes: agent
    /// heartbeat Leases, the leader record, published policies and mirrored secrets, config
    /// copies, and on nodes no other install uses their vigil.dev/ labels and annotation, the
    /// agents' conditions and AgentStatus. Refuses while the install still has a rollout or
    /// agents.
    Cleanup(CleanupArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(CompletionArgs),
}

/// Arguments of `cleanup`.
#[derive(Args, Debug, Clone)]
pub struct CleanupArgs {
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only nodes matching this label selector (default: every node).
    #[arg(long, default_value = "", value_name = "SELECTOR")]
    pub nodes: String,
}

/// Arguments of `status`.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// The AgentRollout (may be left out when the namespace, or the cluster, has one).
    pub rollout: Option<String>,
    /// Follow the rollout until it completes, rolls back or fails (exit status 0, 3, 3).
    #[arg(short, long)]
    pub watch: bool,
    /// With --watch: how often to look again.
    #[arg(long, value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    pub interval: Duration,
    /// With --watch: give up after this long (exit status 4).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Most nodes named per wave in text output (0: counts only).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub nodes: usize,
}

/// Arguments every change takes.
#[derive(Args, Debug, Clone)]
pub struct ChangeArgs {
    /// Say what would happen and print the patch; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Take the field over when another field manager (a GitOps tool, kubectl apply) owns it.
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the operator to take the change up (0s: do not wait).
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub wait: Duration,
}

/// Arguments of the changes on a rollout.
#[derive(Args, Debug, Clone)]
pub struct ActArgs {
    /// The AgentRollout (may be left out when the namespace, or the cluster, has one).
    pub rollout: Option<String>,
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// Arguments of `rollback`.
#[derive(Args, Debug, Clone)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub act: ActArgs,
    /// The Good revision to go back to (a revision name or an agent version of status.history);
    /// default the stable revision.
    #[arg(long, value_name = "REVISION")]
    pub to: Option<String>,
}

/// Arguments of `pin`.
#[derive(Args, Debug, Clone)]
pub struct PinArgs {
    /// The pin's name (a DNS label), shown as the nodes' `vigil.dev/pinned` label.
    pub group: String,
    /// The nodes to hold: a label selector (`pool=gpu`, `os in (centos7,rhel7)`, `!canary`).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: String,
    /// The revision to hold them on: a revision name or an agent version of status.history.
    #[arg(long, value_name = "REVISION")]
    pub revision: String,
    /// Why, for the people who will read the status.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// The AgentRollout (may be left out when the namespace, or the cluster, has one).
    #[arg(long, value_name = "NAME")]
    pub rollout: Option<String>,
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// Arguments of `unpin`.
#[derive(Args, Debug, Clone)]
pub struct UnpinArgs {
    /// The pin's name.
    pub group: String,
    /// The AgentRollout (may be left out when the namespace, or the cluster, has one).
    #[arg(long, value_name = "NAME")]
    pub rollout: Option<String>,
    #[command(flatten)]
    pub change: ChangeArgs,
}

/// Arguments of `agents`.
#[derive(Args, Debug, Clone)]
pub struct AgentsArgs {
    /// Only agents running this revision (or agent version).
    #[arg(long, value_name = "REVISION")]
    pub revision: Option<String>,
    /// Only agents reporting this health: Healthy, Degraded, Unhealthy or Unknown.
    #[arg(long, value_name = "HEALTH")]
    pub health: Option<String>,
    /// Only agents whose last report is older than this (or that never reported).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub stale: Option<Duration>,
}

/// Arguments of `why`.
#[derive(Args, Debug, Clone)]
pub struct WhyArgs {
    /// The node.
    pub node: String,
}

/// Arguments of `completion`.
#[derive(Args, Debug, Clone)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// A duration as Kubernetes and Go write them: `90s`, `2m`, `1h30m`, `500ms`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration: write e.g. 30s, 2m, 1h30m or 500ms");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        let part = unit.checked_mul(u32::try_from(n).map_err(|_| bad())?).ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_kubernetes_writes_them_and_anything_else_is_refused() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "10", "1x", "-1s", "1.5s", "m1", "99999999999s"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains("is not a duration"), "{e}");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn pin_takes_its_selector_revision_and_reason() {
        let cli = Cli::try_parse_from([
            "kubectl-vigil",
            "pin",
            "legacy",
            "-l",
            "os=centos7",
            "--revision",
            "1.9.3",
            "--reason",
            "old kernel",
            "-n",
            "vigil-system",
        ])
        .unwrap();
        let Command::Pin(p) = cli.command else { panic!("{:?}", cli.command) };
        assert_eq!((p.group.as_str(), p.selector.as_str(), p.revision.as_str()), ("legacy", "os=centos7", "1.9.3"));
        assert_eq!(cli.namespace.as_deref(), Some("vigil-system"));
        assert!(Cli::try_parse_from(["kubectl-vigil", "pin", "legacy", "--revision", "x", "--reason", "y"]).is_err());
    }
}
