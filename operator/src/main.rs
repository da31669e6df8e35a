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
    /// Print the CustomResourceDefinitions as one YAML stream (`| kubectl apply -f -`).
    Crds,
    /// Validate AgentRollout / AlertPolicy / AgentStatus manifests offline, with the same
    /// OpenAPI and CEL rules the API server applies. Exit 0 when all are valid, 2 otherwise.
    Validate {
        /// Manifest files (multi-document YAML); `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
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

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Crds => {
            for (_, text) in vigil_crds::render_all().context("rendering the CRDs")? {
                println!("---\n{}", text.trim_end());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { files } => {
            let mut invalid = 0;
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
