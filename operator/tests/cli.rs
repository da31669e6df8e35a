//! The operator binary as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::process::Command;

fn operator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil-operator"))
}

fn examples() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/examples")
}

#[test]
fn validate_accepts_the_examples() {
    let out = operator()
        .arg("validate")
        .arg(examples().join("agentrollout.yaml"))
        .arg(examples().join("alertpolicy.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("AgentRollout/agent-1-10-0): valid"), "{stdout}");
    assert!(stdout.contains("AlertPolicy/node-basics): valid"), "{stdout}");
}

#[test]
fn validate_refuses_a_tag_image_with_exit_2_and_names_the_field() {
    let dir = std::env::temp_dir().join(format!("vigil-op-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(examples().join("agentrollout.yaml")).unwrap();
    let bad = text.replace(
        "ghcr.io/vigil-dev/vigil-agent:1.10.0@sha256:3f9c2a1b0d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcd",
        "ghcr.io/vigil-dev/vigil-agent:latest",
    );
    assert_ne!(bad, text);
    let path = dir.join("bad.yaml");
    std::fs::write(&path, bad).unwrap();
    let out = operator().arg("validate").arg(&path).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spec.target.image: image must be pinned by digest"), "{stderr}");
}

#[test]
fn validate_of_a_missing_file_says_which_and_exits_1() {
    let out = operator().args(["validate", "/nonexistent/rollout.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent/rollout.yaml"));
}

#[test]
fn crds_prints_all_three_definitions() {
    let out = operator().arg("crds").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for name in ["agentrollouts.vigil.dev", "alertpolicies.vigil.dev", "agentstatuses.vigil.dev"] {
        assert!(text.contains(&format!("name: {name}")), "{name} missing");
    }
    assert_eq!(text.matches("kind: CustomResourceDefinition").count(), 3);
}

#[test]
fn validate_checks_agent_configs_as_the_agent_does() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&good, "interval: 30s\nexporters:\n  prometheus: {enabled: true, listen: 0.0.0.0:9817}\n").unwrap();
    std::fs::write(&bad, "interval: 30s\nnot_a_key: 1\n").unwrap();
    let out = operator().arg("validate").arg("--agent-config").arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("good.yaml: valid agent config"));
    let out =
        operator().args(["validate", "--agent-config"]).arg(&good).arg("--agent-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml: unknown field `not_a_key`") && err.contains("line 2"), "{err}");
}
