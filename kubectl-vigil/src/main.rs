//! `kubectl-vigil`: installed on the PATH, kubectl runs it as `kubectl vigil`.

use std::io::IsTerminal;

use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kubectl_vigil::cli::{Cli, ColorChoice};
use kubectl_vigil::render::Paint;
use kubectl_vigil::run::{self, Env};

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            std::process::exit(run::FAILED);
        }
    };
    let code = runtime.block_on(async move {
        // No cluster needed.
        if let kubectl_vigil::cli::Command::Completion(a) = &cli.command {
            return match run::completion(a.shell, &mut std::io::stdout()) {
                Ok(()) => run::OK,
                Err(e) => {
                    eprintln!("error: {e}");
                    run::FAILED
                }
            };
        }
        let (client, namespace) = match connect(&cli).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e:#}");
                return run::FAILED;
            }
        };
        let paint = Paint {
            on: match cli.color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            },
        };
        let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
        let mut env = Env {
            client,
            default_namespace: namespace,
            out: &mut out,
            err: &mut err,
            paint,
            clock: jiff::Timestamp::now,
        };
        tokio::select! {
            code = run::run(cli, &mut env) => code,
            _ = tokio::signal::ctrl_c() => 130,
        }
    });
    std::process::exit(code);
}

/// The client and default namespace from `--kubeconfig` / `--context` (else $KUBECONFIG,
/// ~/.kube/config, in-cluster), as kubectl picks them.
async fn connect(cli: &Cli) -> anyhow::Result<(kube::Client, String)> {
    use anyhow::Context as _;
    // The crypto provider rustls uses process-wide, installed before the first client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = KubeConfigOptions { context: cli.context.clone(), ..Default::default() };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None if cli.context.is_some() => {
            kube::Config::from_kubeconfig(&options).await.context("reading the kubeconfig")?
        }
        None => kube::Config::infer().await.context("finding a cluster (kubeconfig or in-cluster)")?,
    };
    let namespace = config.default_namespace.clone();
    Ok((kube::Client::try_from(config).context("building the API client")?, namespace))
}
