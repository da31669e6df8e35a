//! Every operator series the shipped alert rules select (charts/vigil/files/prometheus) is
//! one the operator exports.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use vigil_crds::rollout::{AgentRolloutStatus, RevisionNodes, RolloutPhase};
use vigil_operator::metrics::Metrics;

#[test]
fn every_operator_series_the_rules_select_is_exported() {
    let m = Metrics::default();
    let st = AgentRolloutStatus {
        phase: Some(RolloutPhase::Progressing),
        revisions: vec![RevisionNodes { revision: "r-a".into(), nodes: 3, ready: 3, pinned: 0 }],
        ..Default::default()
    };
    m.observe_status("ns/r", &st);
    m.set_silent(&std::collections::BTreeMap::from([("node-a".to_owned(), "HeartbeatMissing")]));
    m.set_changing(&std::collections::BTreeMap::from([("node-b".to_owned(), ("r-a".to_owned(), "r-b".to_owned()))]));
    let text = m.encode().unwrap();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/vigil/files/prometheus/vigil.rules.yaml");
    let rules = std::fs::read_to_string(path).unwrap();
    let mut seen = 0;
    for token in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if token.starts_with("vigil_operator_") {
            seen += 1;
            let sample = format!("\n{token}{{");
            assert!(text.contains(&sample), "{token} is not exported:\n{text}");
        }
    }
    assert!(seen >= 4, "the rules select operator series");
    for phase in ["Failed", "RolledBack", "Progressing", "Baking", "RollingBack"] {
        assert!(text.contains(&format!("phase=\"{phase}\"")), "phase {phase} is not a label value");
    }
}
