//! The shipped Prometheus alert rules (charts/vigil/files/prometheus): `promtool check rules`
//! and `promtool test rules` pass (Debian's prometheus package, which `make test-deps`
//! installs), every agent series they select is one the agent exports (named as Prometheus
//! stores it), and every alert has its runbook section in docs/operations.md.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::path::PathBuf;
use std::process::Command;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/vigil/files/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir())
        .output()
        .expect("promtool (Debian's prometheus package: `make test-deps` installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_rules_are_valid_and_their_unit_tests_pass() {
    assert!(promtool(&["check", "rules", "vigil.rules.yaml"]).contains("SUCCESS: 13 rules found"));
    assert!(promtool(&["test", "rules", "vigil.rules.test.yaml"]).contains("SUCCESS"));
}

#[test]
fn every_agent_series_a_rule_selects_is_exported_and_every_alert_has_a_runbook() {
    let text = std::fs::read_to_string(dir().join("vigil.rules.yaml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let runbooks =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md")).unwrap();
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            alerts += 1;
            let expr = rule["expr"].as_str().unwrap();
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if token.starts_with("vigil_agent_") {
                    assert!(
                        vigil_crds::metrics::find(token).is_some(),
                        "{name}: {token} is not a series the agent exports"
                    );
                }
            }
            let anchor = rule["annotations"]["runbook"].as_str().unwrap();
            let heading = format!("## {name}\n");
            assert_eq!(anchor, format!("docs/operations.md#{}", name.to_lowercase()), "{name}");
            assert!(runbooks.contains(&heading), "docs/operations.md has no section {heading:?}");
            assert!(["info", "warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap()), "{name}");
        }
    }
    assert_eq!(alerts, 13);
}
