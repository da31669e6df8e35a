//! Every YAML file the project generates or ships loads the same in a YAML 1.1 loader
//! (PyYAML, as the Kubernetes Python client, Ansible and pre-commit use it) as in ours: no
//! scalar that YAML 1.1 reads otherwise (a bare `=`, `yes`, `on`), no load error.
//!
//! Needs `.venv` with PyYAML (`make test` installs it first).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn yaml_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in ["crds", "charts/vigil/crds", "manifests", "manifests/crds", "docs/examples"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn ours(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn every_generated_and_shipped_yaml_file_loads_the_same_in_pyyaml() {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run `make test` (or `make test-deps`), which installs PyYAML",
        python.display()
    );
    let files = yaml_files();
    assert!(files.len() >= 10, "only {} YAML files found", files.len());
    let script = "import json, sys, yaml\n\
                  for p in sys.argv[1:]:\n\
                  \x20   docs = [d for d in yaml.safe_load_all(open(p)) if d is not None]\n\
                  \x20   print(json.dumps(docs))\n";
    let out = Command::new(&python).arg("-c").arg(script).args(&files).output().unwrap();
    assert!(out.status.success(), "PyYAML refused a file:\n{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let loaded: Vec<Vec<Value>> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(loaded.len(), files.len());
    for (path, py) in files.iter().zip(loaded) {
        assert_eq!(py, ours(path), "{}: PyYAML reads it differently", path.display());
    }
}
