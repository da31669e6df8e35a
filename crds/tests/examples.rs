//! The examples in docs/examples parse into the Rust types, pass the same
//! validation the API server applies, and survive a round trip unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;
use vigil_crds::validate::validate_manifest;
use vigil_crds::{AgentRollout, AgentStatus, AlertPolicy};

fn examples() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/examples");
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries.into_iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), v));
        }
    }
    out
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug>(
    file: &str,
    v: &Value,
) -> T {
    let typed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let again: T = serde_json::from_value(serde_json::to_value(&typed).unwrap()).unwrap();
    assert_eq!(typed, again, "{file}: round trip changed the object");
    typed
}

#[test]
fn every_example_is_valid_and_round_trips_through_its_type() {
    let examples = examples();
    let kinds: Vec<&str> = examples.iter().map(|(_, v)| v["kind"].as_str().unwrap()).collect();
    for kind in ["AgentRollout", "AlertPolicy", "AgentStatus"] {
        assert!(kinds.contains(&kind), "no example of {kind}");
    }
    for (file, v) in &examples {
        if let Err(e) = validate_manifest(v) {
            panic!("{file}: {e}");
        }
        match v["kind"].as_str().unwrap() {
            "AgentRollout" => {
                let r: AgentRollout = round_trip(file, v);
                assert!(r.validate_cel().is_ok());
            }
            "AlertPolicy" => {
                let p: AlertPolicy = round_trip(file, v);
                assert!(p.validate_cel().is_ok());
                let unknown = vigil_crds::policy::unknown_metrics(&p.spec);
                assert!(unknown.is_empty(), "{file}: rules the agent cannot evaluate: {unknown:?}");
            }
            "AgentStatus" => {
                let s: AgentStatus = round_trip(file, v);
                assert!(s.validate_cel().is_ok());
            }
            other => panic!("{file}: unexpected kind {other}"),
        }
    }
}

#[test]
fn the_rollout_example_reads_as_the_seed_worked_example() {
    let (_, v) = examples().into_iter().find(|(_, v)| v["kind"] == "AgentRollout").unwrap();
    let r: AgentRollout = serde_json::from_value(v).unwrap();
    let percents: Vec<u32> = r.spec.waves.iter().filter_map(|w| w.percent).collect();
    assert_eq!(percents, [5, 25, 100]);
    assert_eq!(r.spec.waves[0].bake_time, std::time::Duration::from_secs(15 * 60));
    assert_eq!(r.spec.pins[0].revision, "1.9.3");
    assert_eq!(r.spec.failure_policy, vigil_crds::rollout::FailurePolicy::PinFailingGroup);
    assert!(vigil_crds::ImageRef::pinned(&r.spec.target.image).is_ok());
    assert!(vigil_crds::ConfigHash::parse(&r.spec.target.config.sha256).is_ok());
}

#[test]
fn defaults_fill_what_the_policy_example_leaves_out() {
    let (_, v) = examples().into_iter().find(|(_, v)| v["kind"] == "AlertPolicy").unwrap();
    let p: AlertPolicy = serde_json::from_value(v).unwrap();
    let page = &p.spec.routes[0];
    // Seed 002's alert rate limit: at most one notification per 5 minutes, 20 an hour.
    assert_eq!(page.rate_limit.min_interval, std::time::Duration::from_secs(300));
    assert_eq!(page.rate_limit.max_per_hour, 20);
    assert_eq!(page.group_by, ["alertname", "node"]);
    assert!(page.continue_);
    assert_eq!(p.spec.rules.len(), 7);
}
