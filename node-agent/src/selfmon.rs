//! The agent's own resource use, read from its own `/proc/self` (not the host root: in the
//! DaemonSet the agent's process is seen through the container's procfs).

use procfs::process::Process;

/// The agent's own RSS and CPU time at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// User plus system CPU time since start, seconds.
    pub cpu_seconds: f64,
}

/// Reads the agent's own usage on demand.
#[derive(Clone, Copy, Debug)]
pub struct SelfUsage {
    page_size: u64,
    ticks_per_second: u64,
}

impl Default for SelfUsage {
    fn default() -> Self {
        Self { page_size: procfs::page_size(), ticks_per_second: procfs::ticks_per_second() }
    }
}

impl SelfUsage {
    /// The current usage; `None` if `/proc/self` is unreadable.
    pub fn read(&self) -> Option<Usage> {
        let stat = Process::myself().and_then(|p| p.stat()).ok()?;
        Some(Usage {
            rss_bytes: stat.rss.saturating_mul(self.page_size),
            cpu_seconds: (stat.utime + stat.stime) as f64 / self.ticks_per_second.max(1) as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_usage_is_plausible() {
        let u = SelfUsage::default().read().unwrap();
        assert!(u.rss_bytes > 100 * 1024, "{u:?}");
        assert!(u.cpu_seconds >= 0.0);
    }
}
