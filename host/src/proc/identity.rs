//! Who the host is: name, kernel, OS image, architecture.

use serde::Serialize;

use super::{HostRoot, ReadErrors, read_optional};

/// The host's identity, as AgentStatus and the compatibility guard see it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// Host name (`/proc/sys/kernel/hostname`).
    pub hostname: Option<String>,
    /// Kernel release (`uname -r`).
    pub kernel: Option<String>,
    /// PRETTY_NAME of the host's os-release.
    pub os_image: Option<String>,
    /// Architecture in Kubernetes' spelling (`amd64`, `arm64`).
    pub architecture: String,
}

/// Reads the identity under the host root.
pub fn read(root: &HostRoot, errors: &mut ReadErrors) -> Identity {
    let line = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let os_release = read_optional(&root.host_path("/etc/os-release"), "identity", errors)
        .or_else(|| read_optional(&root.host_path("/usr/lib/os-release"), "identity", errors));
    Identity {
        hostname: line(read_optional(&root.proc_file("sys/kernel/hostname"), "identity", errors)),
        kernel: line(read_optional(&root.proc_file("sys/kernel/osrelease"), "identity", errors)),
        os_image: os_release.as_deref().and_then(pretty_name),
        architecture: kube_arch(std::env::consts::ARCH).to_owned(),
    }
}

/// The node's name for events and telemetry: the config's `nodeName`, else `NODE_NAME` (the
/// DaemonSet sets it from the downward API), else the host name, else `unknown`.
pub fn node_name(root: &HostRoot, configured: Option<&str>) -> String {
    configured
        .map(str::to_owned)
        .or_else(|| std::env::var(vigil_crds::agent::env::NODE_NAME).ok().filter(|s| !s.is_empty()))
        .or_else(|| {
            std::fs::read_to_string(root.proc_file("sys/kernel/hostname"))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// PRETTY_NAME (or NAME) of an os-release file, unquoted.
pub fn pretty_name(os_release: &str) -> Option<String> {
    let get = |key: &str| {
        os_release.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).map(|v| {
            let v = v.trim();
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
            v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(v).to_owned()
        })
    };
    get("PRETTY_NAME").or_else(|| get("NAME")).filter(|s| !s.is_empty())
}

/// Rust's architecture name in the spelling Kubernetes nodes report.
pub fn kube_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_name_is_unquoted_and_falls_back_to_name() {
        assert_eq!(
            pretty_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(pretty_name("NAME='Alpine Linux'\n").as_deref(), Some("Alpine Linux"));
        assert_eq!(pretty_name("ID=x\n"), None);
        assert_eq!(pretty_name("PRETTY_NAME=\n"), None);
    }

    #[test]
    fn architectures_use_kubernetes_names() {
        assert_eq!(kube_arch("x86_64"), "amd64");
        assert_eq!(kube_arch("aarch64"), "arm64");
        assert_eq!(kube_arch("riscv64"), "riscv64");
    }
}
