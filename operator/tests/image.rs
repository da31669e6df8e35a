//! The operator's container image, built by `scripts/image.sh` with buildah and run in a real
//! container (containerd and runc): it prints its version and the CRDs, runs as non-root, and
//! the same commit and binary give the same image digest. As root; `make test` installs
//! buildah, containerd, runc and skopeo first.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on the first surprise

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/image.sh")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn build(dir: &Path) -> String {
    ok(
        Command::new(script())
            .args(["build", "vigil-operator", env!("CARGO_BIN_EXE_vigil-operator")])
            .arg(dir)
            .output()
            .unwrap(),
        "building the image",
    );
    std::fs::read_to_string(dir.join("vigil-operator.digest")).unwrap().trim().to_owned()
}

fn run(archive: &Path, argv: &[&str]) -> String {
    ok(
        Command::new(script()).arg("run").arg(archive).arg("--").args(argv).output().unwrap(),
        &format!("{argv:?} in the container"),
    )
}

#[test]
fn the_operator_image_prints_its_version_and_the_crds_as_non_root_and_builds_reproducibly() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let digest = build(a.path());
    assert_eq!(build(b.path()), digest, "the same commit and binary give the same image");
    let archive = a.path().join("vigil-operator.oci.tar");

    let version = run(&archive, &["/usr/local/bin/vigil-operator", "--version"]);
    assert_eq!(version.trim(), format!("vigil-operator {}", env!("CARGO_PKG_VERSION")));
    let crds = run(&archive, &["/usr/local/bin/vigil-operator", "crds"]);
    let expected: String =
        vigil_crds::render_all().unwrap().into_iter().map(|(_, t)| format!("---\n{}\n", t.trim_end())).collect();
    assert_eq!(crds, expected, "the CRDs the binary carries");

    let config = ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci-archive:{}", archive.display()))
            .output()
            .unwrap(),
        "skopeo inspect",
    );
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/vigil-operator");
    assert_eq!(config["config"]["Labels"]["org.opencontainers.image.title"], "vigil-operator");
    let sbom: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.path().join("vigil-operator.sbom.cdx.json")).unwrap()).unwrap();
    assert_eq!(sbom["metadata"]["component"]["name"], "vigil-operator");
}
