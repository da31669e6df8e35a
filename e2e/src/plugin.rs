//! `kubectl vigil` in-process, with the test's client.

use clap::Parser;

/// What a run of the plugin said.
pub struct Outcome {
    /// Its exit code.
    pub code: i32,
    /// Its standard output.
    pub out: String,
    /// Its standard error.
    pub err: String,
}

/// Runs `kubectl vigil -n NS ARGS` with `client`.
///
/// # Panics
/// When `args` is no command line the plugin takes, or its output is not UTF-8.
#[allow(clippy::unwrap_used)] // a test helper fails loudly
pub async fn vigil(client: &kube::Client, ns: &str, args: &[&str]) -> Outcome {
    let argv = ["kubectl-vigil", "-n", ns].into_iter().chain(args.iter().copied());
    let cli = kubectl_vigil::cli::Cli::try_parse_from(argv).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = {
        let mut env = kubectl_vigil::run::Env {
            client: client.clone(),
            default_namespace: "default".into(),
            out: &mut out,
            err: &mut err,
            paint: kubectl_vigil::render::Paint { on: false },
            clock: jiff::Timestamp::now,
        };
        kubectl_vigil::run::run(cli, &mut env).await
    };
    Outcome { code, out: String::from_utf8(out).unwrap(), err: String::from_utf8(err).unwrap() }
}
