//! Where the host is: the root every reader works under.

use std::path::{Path, PathBuf};

/// The host's root filesystem as the agent sees it: `/` on a plain host, `/host` in the
/// DaemonSet (the host's `/` mounted read-only). Every reader takes it as a value; no reader
/// names `/proc` or `/sys` itself, so a test points it at a fixture tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoot(PathBuf);

impl HostRoot {
    /// The host root at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    /// The root itself.
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// The host's procfs (`<root>/proc`).
    pub fn proc(&self) -> PathBuf {
        self.0.join("proc")
    }

    /// A file under the host's procfs, e.g. `proc_file("meminfo")`.
    pub fn proc_file(&self, rel: &str) -> PathBuf {
        self.0.join("proc").join(rel)
    }

    /// A file of the host's network namespace. `/proc/net` follows the namespace of the
    /// process reading it, which in a pod is the pod's; the host's PID 1 lives in the host's
    /// namespace, so `/proc/1/net` is the host's view whatever namespace the agent is in.
    pub fn host_net_file(&self, rel: &str) -> PathBuf {
        self.0.join("proc/1/net").join(rel)
    }

    /// A file under the host's sysfs (`<root>/sys`).
    pub fn sys_file(&self, rel: &str) -> PathBuf {
        self.0.join("sys").join(rel)
    }

    /// A path of the host's filesystem tree (`/etc/os-release` → `<root>/etc/os-release`).
    pub fn host_path(&self, abs: &str) -> PathBuf {
        self.0.join(abs.trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        let h = HostRoot::new("/host");
        assert_eq!(h.proc_file("meminfo"), PathBuf::from("/host/proc/meminfo"));
        assert_eq!(h.host_net_file("dev"), PathBuf::from("/host/proc/1/net/dev"));
        assert_eq!(h.sys_file("class/net"), PathBuf::from("/host/sys/class/net"));
        assert_eq!(h.host_path("/etc/os-release"), PathBuf::from("/host/etc/os-release"));
        assert_eq!(HostRoot::new("/").host_path("/var/log"), PathBuf::from("/var/log"));
    }
}
