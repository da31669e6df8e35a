//! The crate layout is the architecture (docs/adr/0009-crate-layout.md): which crate may link
//! which is checked here. The workspace's crates come from `cargo metadata`; what each links
//! from its resolved graph as `cargo tree` gives it (this host's platform, build and normal
//! dependencies, followed transitively, features as when the crate is built on its own). A
//! crate that gains a dependency the ADR forbids fails this test, naming the chain that
//! brought it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// A crate of the workspace, the workspace crates it may link, and what else it must never
/// link, directly or through another crate.
struct Rule {
    krate: &'static str,
    may_link: &'static [&'static str],
    forbidden: &'static [&'static [&'static str]],
    why: &'static str,
}

/// An async runtime.
const RUNTIME: &[&str] = &["tokio"];

/// What a kube client or controller runtime, or an HTTP client or server brings.
const NET: &[&str] = &["kube-client", "kube-runtime", "hyper", "reqwest", "axum", "tower", "tonic"];

/// Any I/O stack: an async runtime, a kube client or runtime, an HTTP stack.
const IO: &[&[&str]] = &[RUNTIME, NET];

/// What sends or exports: OpenTelemetry, the Prometheus client, the mail client.
const SENDERS: &[&str] = &["opentelemetry", "prometheus-client", "lettre"];

impl Rule {
    /// Whether `krate` is one of the crates this rule names as never linked.
    fn forbids(&self, krate: &str) -> bool {
        self.forbidden.iter().any(|group| group.contains(&krate))
    }
}

/// The rules of ADR 0009, in its order. A workspace crate not in `may_link` is forbidden too.
const RULES: &[Rule] = &[
    Rule {
        krate: "vigil-crds",
        may_link: &[],
        forbidden: IO,
        why: "the API contract is types, names and checks: every other crate links it",
    },
    Rule {
        krate: "vigil-agent-config",
        may_link: &["vigil-crds"],
        forbidden: IO,
        why: "the agent's config checks run in the operator and the plugin without the agent",
    },
    Rule {
        krate: "vigil-plan",
        may_link: &["vigil-crds"],
        forbidden: &[RUNTIME, NET, &["opentelemetry", "tracing"]],
        why: "the planner is pure: no I/O, no clock, no runtime",
    },
    Rule {
        krate: "vigil-detect",
        may_link: &[],
        forbidden: IO,
        why: "the detectors are pure functions of a series and know nothing of the agent",
    },
    Rule {
        krate: "vigil-host",
        may_link: &["vigil-crds", "vigil-agent-config"],
        forbidden: &[RUNTIME, NET, SENDERS],
        why: "the host readers read files: no runtime, client, server or exporter, and never the agent's shell",
    },
    Rule {
        krate: "vigil-events",
        may_link: &["vigil-crds", "vigil-agent-config", "vigil-host"],
        forbidden: &[NET, SENDERS],
        why: "the event sources read the host and hand events on: no client, server or exporter, never the agent's shell",
    },
    Rule {
        krate: "kubectl-vigil",
        may_link: &["vigil-crds", "vigil-plan"],
        forbidden: &[&["kube-runtime", "axum", "opentelemetry"]],
        why: "the plugin reads with the planner, not the operator's controller, server or telemetry",
    },
    Rule {
        krate: "vigil-operator",
        may_link: &["vigil-crds", "vigil-agent-config", "vigil-plan"],
        forbidden: &[],
        why: "the operator shares only the contract, the config checks and the planner",
    },
    Rule {
        krate: "vigil-agent",
        may_link: &["vigil-crds", "vigil-agent-config", "vigil-detect", "vigil-host", "vigil-events"],
        forbidden: &[],
        why: "the agent knows its own node, never the rollout planner",
    },
];

/// The links of `rule.krate` (name → the chain that first reaches it) that break the rule,
/// in words.
fn broken(rule: &Rule, members: &BTreeSet<String>, links: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    links
        .iter()
        .filter(|(name, _)| {
            let workspace = members.contains(name.as_str()) && name.as_str() != rule.krate;
            (workspace && !rule.may_link.contains(&name.as_str())) || rule.forbids(name)
        })
        .map(|(name, chain)| format!("{} links {name} ({}): {}", rule.krate, rule.why, chain.join(" → ")))
        .collect()
}

/// The workspace's crates, from `cargo metadata`.
fn members() -> BTreeSet<String> {
    let out = cargo(&["metadata", "--format-version", "1", "--no-deps", "--locked"]);
    let meta: Value = serde_json::from_str(&out).unwrap();
    meta["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect()
}

/// What `krate` links when built on its own with every feature of its own on (`cargo build
/// -p --all-features`: a feature another crate turns on in a shared dependency does not
/// count, an optional dependency of its own does): each crate with the chain of links from
/// `krate` that first reaches it.
fn links(krate: &str) -> BTreeMap<String, Vec<String>> {
    let host = rustc_host();
    let out = cargo(&[
        "tree",
        "--locked",
        "-p",
        krate,
        "-e",
        "normal,build",
        "--target",
        &host,
        "--prefix",
        "depth",
        "--format",
        "{p}",
    ]);
    let mut chain: Vec<String> = Vec::new();
    let mut first: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let digits = line.bytes().take_while(u8::is_ascii_digit).count();
        let depth: usize = line[..digits].parse().expect("cargo tree --prefix depth");
        let name = line[digits..].split_whitespace().next().expect("a package name").to_owned();
        chain.truncate(depth);
        chain.push(name.clone());
        first.entry(name).or_insert_with(|| chain.clone());
    }
    first
}

fn cargo(args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(env!("CARGO")).current_dir(root).args(args).output().expect("running cargo");
    assert!(out.status.success(), "cargo {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn rustc_host() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).arg("-vV").output().expect("running rustc -vV");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().find_map(|l| l.strip_prefix("host: ")).expect("rustc -vV names its host").to_owned()
}

#[test]
fn no_crate_links_what_the_architecture_forbids() {
    let members = members();
    let mut all = Vec::new();
    for rule in RULES {
        assert!(members.contains(rule.krate), "ADR 0009 names {}, which is not a workspace member", rule.krate);
        all.extend(broken(rule, &members, &links(rule.krate)));
    }
    assert!(all.is_empty(), "dependencies the architecture forbids:\n{}", all.join("\n"));
}

#[test]
fn every_workspace_crate_has_a_rule() {
    let ruled: BTreeSet<&str> = RULES.iter().map(|r| r.krate).collect();
    let unruled: Vec<String> =
        members().into_iter().filter(|m| !ruled.contains(m.as_str()) && m != "vigil-e2e").collect();
    assert!(unruled.is_empty(), "crates without a rule in ADR 0009 and this test: {unruled:?}");
}

#[test]
fn the_check_reads_the_real_graph() {
    // The operator does link the planner and a controller runtime, and the chains are found.
    let links = links("vigil-operator");
    assert_eq!(links["vigil-plan"], ["vigil-operator", "vigil-plan"]);
    let chain = &links["kube-runtime"];
    assert_eq!(chain.first().map(String::as_str), Some("vigil-operator"));
    assert_eq!(chain.last().map(String::as_str), Some("kube-runtime"));
}

#[test]
fn a_forbidden_link_and_a_workspace_crate_not_allowed_are_each_reported_with_their_chain() {
    let members: BTreeSet<String> = RULES.iter().map(|r| r.krate.to_owned()).chain(["vigil-e2e".to_owned()]).collect();
    let chain = |c: &[&str]| c.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let plan = RULES.iter().find(|r| r.krate == "vigil-plan").unwrap();
    let links: BTreeMap<String, Vec<String>> = [
        ("vigil-plan", chain(&["vigil-plan"])),
        ("vigil-crds", chain(&["vigil-plan", "vigil-crds"])),
        ("jiff", chain(&["vigil-plan", "jiff"])),
        ("tokio", chain(&["vigil-plan", "kube", "kube-client", "hyper", "tokio"])),
        ("vigil-detect", chain(&["vigil-plan", "vigil-detect"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let found = broken(plan, &members, &links);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found
            .iter()
            .any(|f| f.contains("links tokio") && f.contains("vigil-plan → kube → kube-client → hyper → tokio"))
    );
    assert!(found.iter().any(|f| f.contains("links vigil-detect")), "a workspace crate outside may_link: {found:?}");
    // Every pure crate forbids every I/O stack.
    for krate in ["vigil-crds", "vigil-agent-config", "vigil-plan", "vigil-detect", "vigil-host"] {
        let rule = RULES.iter().find(|r| r.krate == krate).unwrap();
        assert!(IO.iter().flat_map(|g| g.iter()).all(|c| rule.forbids(c)), "{krate}");
    }
}
