//! The documentation names exactly the metrics the catalog holds (and so, by the agent's
//! scrape test, exactly what the agent exports): every `vigil_node_*`, `vigil_agent_*` and
//! `vigil_process_*` name in `docs/` is a catalog name, and every exported name is in the
//! metric tables of docs/agent.md or docs/alerts.md.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::collections::BTreeSet;
use std::path::PathBuf;

use vigil_crds::metrics::{EXPORTED, PROCESS};

/// `a_{x,y}_b` → `a_x_b`, `a_y_b`; alternatives only where text follows the braces (a brace
/// at the end of a name lists its labels, as in `vigil_agent_alerts_total{state}`).
fn expand(token: &str) -> Vec<String> {
    let Some(open) = token.find('{') else {
        // A brace that closes what the name stands in (YAML's `{name: x}`).
        return vec![token.split('}').next().unwrap_or_default().to_owned()];
    };
    let Some(close) = token[open..].find('}').map(|c| open + c) else { return vec![token[..open].to_owned()] };
    if close + 1 == token.len() {
        return vec![token[..open].to_owned()];
    }
    let (head, tail) = (&token[..open], &token[close + 1..]);
    token[open + 1..close].split(',').flat_map(|alt| expand(&format!("{head}{alt}{tail}"))).collect()
}

/// Every metric name mentioned in `text`, expanded.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["vigil_node_", "vigil_agent_", "vigil_process_"] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let token: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '{' | '}' | ','))
                .collect();
            rest = &rest[at + token.len()..];
            // `vigil_agent_*` speaks of all of them.
            if token.len() > prefix.len() {
                out.extend(expand(token.trim_end_matches([',', '_'])));
            }
        }
    }
    out
}

fn doc(name: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs").join(name)).unwrap()
}

/// The rows of the tables of a Markdown text whose first column names metrics.
fn table_names(text: &str) -> BTreeSet<String> {
    text.lines().filter(|l| l.starts_with("| `vigil_")).flat_map(|l| names_in(l.split('|').nth(1).unwrap())).collect()
}

#[test]
fn brace_lists_expand_and_label_lists_do_not() {
    assert_eq!(expand("a_{x,y}_b"), ["a_x_b", "a_y_b"]);
    assert_eq!(expand("a_{x,y}_{p,q}_t"), ["a_x_p_t", "a_x_q_t", "a_y_p_t", "a_y_q_t"]);
    assert_eq!(expand("a_total{state}"), ["a_total"]);
    assert_eq!(expand("a_total{reason"), ["a_total"]);
    assert_eq!(expand("a_bytes}"), ["a_bytes"]);
    assert_eq!(names_in("see `vigil_agent_events_total{type=\"x\"}` and vigil_node_load1."), {
        BTreeSet::from(["vigil_agent_events_total".to_owned(), "vigil_node_load1".to_owned()])
    });
}

#[test]
fn every_metric_name_in_the_docs_is_in_the_catalog() {
    let catalog: BTreeSet<String> = EXPORTED.iter().chain(PROCESS).map(|m| m.name()).collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let mut files: Vec<_> = walk(&dir);
    files.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"));
    let mut wrong = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for n in names_in(&text) {
            // A histogram's series carry suffixes of its name.
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| n.strip_suffix(s)).unwrap_or(&n);
            if !catalog.contains(&n) && !catalog.contains(base) {
                wrong.push(format!("{}: {n}", f.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "names the agent does not export:\n{}", wrong.join("\n"));
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|e| e == "md" || e == "yaml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn every_exported_metric_is_in_a_metric_table() {
    let documented: BTreeSet<String> =
        table_names(&doc("agent.md")).into_iter().chain(table_names(&doc("alerts.md"))).collect();
    let missing: Vec<String> = EXPORTED.iter().map(|m| m.name()).filter(|n| !documented.contains(n)).collect();
    assert!(missing.is_empty(), "exported but in no table of docs/agent.md or docs/alerts.md: {missing:?}");
    let process: BTreeSet<String> = names_in(&doc("alerts.md"));
    for m in PROCESS {
        assert!(process.contains(&m.name()), "{} not in docs/alerts.md", m.name());
    }
}
