//! The agent's container image, built by `scripts/image.sh` with buildah and run in a real
//! container (containerd and runc): it scans this host's `/proc` mounted at `/host`, holds no
//! shell, and carries its SBOM and OCI labels. As root; `make test` installs buildah,
//! containerd, runc and skopeo first.

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

#[test]
fn the_agent_image_scans_the_host_from_a_real_container_and_holds_no_shell() {
    let out = tempfile::tempdir().unwrap();
    ok(
        Command::new(script())
            .args(["build", "vigil-agent", env!("CARGO_BIN_EXE_vigil-agent")])
            .arg(out.path())
            .output()
            .unwrap(),
        "building the image",
    );
    let archive = out.path().join("vigil-agent.oci.tar");
    let digest = std::fs::read_to_string(out.path().join("vigil-agent.digest")).unwrap();
    assert!(digest.trim().starts_with("sha256:") && digest.trim().len() == 71, "{digest}");

    let scan = ok(
        Command::new(script())
            .arg("run")
            .arg(&archive)
            .args(["--mount", "type=bind,src=/,dst=/host,options=rbind:ro", "--"])
            .args(["/usr/local/bin/vigil-agent", "scan", "--json", "--host-root", "/host"])
            .output()
            .unwrap(),
        "scan --json in the container",
    );
    let snapshot: serde_json::Value = serde_json::from_str(&scan).unwrap();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(snapshot["host"]["kernel"], kernel.trim(), "the host's kernel, read through /host");
    assert!(snapshot["memory"]["totalBytes"].as_u64().unwrap() > 0, "{scan}");
    assert!(snapshot["processes"]["total"].as_u64().unwrap() > 1, "the host's processes, not the container's");

    let shell = Command::new(script()).arg("run").arg(&archive).args(["--", "/bin/sh", "-c", "true"]).output().unwrap();
    assert!(!shell.status.success(), "the image must hold no shell");
    assert!(String::from_utf8_lossy(&shell.stderr).contains("/bin/sh"), "{}", String::from_utf8_lossy(&shell.stderr));

    let config = ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci-archive:{}", archive.display()))
            .output()
            .unwrap(),
        "skopeo inspect",
    );
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "vigil-agent");
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
    assert!(labels["org.opencontainers.image.revision"].as_str().unwrap().len() >= 7, "{labels}");
    assert_eq!(config["config"]["User"], "65532:65532", "non-root unless the pod asks for root");

    let sbom: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("vigil-agent.sbom.cdx.json")).unwrap()).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    let names: Vec<&str> = sbom["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for crate_or_package in ["kube-client", "tokio", "rustls", "libc6", "ca-certificates"] {
        assert!(names.contains(&crate_or_package), "{crate_or_package} missing from the SBOM: {names:?}");
    }
    assert!(!names.contains(&"criterion"), "dev-dependencies do not ship");
}
