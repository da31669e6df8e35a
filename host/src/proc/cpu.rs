//! CPU time, context switches and forks from `/proc/stat`, and utilisation between two reads.

use procfs::{CpuTime, FromReadSI, KernelStats};
use serde::Serialize;

use super::{ErrorKind, HostRoot, ReadErrors};

/// What the procfs parsers need to know about the host kernel. Ticks per second and the page
/// size are properties of the kernel the agent runs on, which is the host's.
pub struct HostInfo {
    tps: u64,
    page: u64,
}

impl HostInfo {
    /// The running kernel's values.
    pub fn current() -> Self {
        Self { tps: procfs::ticks_per_second(), page: procfs::page_size() }
    }

    /// Ticks per second (`USER_HZ`).
    pub fn ticks_per_second(&self) -> u64 {
        self.tps
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> u64 {
        self.page
    }
}

impl procfs::SystemInfoInterface for HostInfo {
    fn boot_time_secs(&self) -> procfs::ProcResult<u64> {
        // Not needed by the parsers we call; boot time comes from /proc/stat's btime.
        Ok(0)
    }
    fn ticks_per_second(&self) -> u64 {
        self.tps
    }
    fn page_size(&self) -> u64 {
        self.page
    }
    fn is_little_endian(&self) -> bool {
        cfg!(target_endian = "little")
    }
}

/// Cumulative CPU seconds of one CPU (or of all, summed) since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuSeconds {
    /// Normal processes in user mode.
    pub user: f64,
    /// Niced processes in user mode.
    pub nice: f64,
    /// Kernel mode.
    pub system: f64,
    /// Idle.
    pub idle: f64,
    /// Idle while I/O was outstanding.
    pub iowait: f64,
    /// Hard interrupts.
    pub irq: f64,
    /// Soft interrupts.
    pub softirq: f64,
    /// Stolen by the hypervisor.
    pub steal: f64,
}

impl CpuSeconds {
    fn from_ticks(t: &CpuTime, tps: u64) -> Self {
        let s = |v: u64| v as f64 / tps.max(1) as f64;
        // Guest time is already included in user and nice (see proc(5)).
        Self {
            user: s(t.user),
            nice: s(t.nice),
            system: s(t.system),
            idle: s(t.idle),
            iowait: s(t.iowait.unwrap_or(0)),
            irq: s(t.irq.unwrap_or(0)),
            softirq: s(t.softirq.unwrap_or(0)),
            steal: s(t.steal.unwrap_or(0)),
        }
    }

    fn total(&self) -> f64 {
        self.user + self.nice + self.system + self.idle + self.iowait + self.irq + self.softirq + self.steal
    }
}

/// Share of CPU time spent in each state between two reads, each 0–1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuUtilization {
    /// Everything but idle and iowait.
    pub busy: f64,
    /// User and nice.
    pub user: f64,
    /// System, irq and softirq.
    pub system: f64,
    /// Idle while I/O was outstanding.
    pub iowait: f64,
    /// Stolen by the hypervisor.
    pub steal: f64,
}

impl CpuUtilization {
    /// Utilisation between `before` and `after`; `None` when no time passed or the counters
    /// went backwards (a CPU taken offline and back resets its counters).
    pub fn between(before: &CpuSeconds, after: &CpuSeconds) -> Option<Self> {
        let dt = after.total() - before.total();
        if dt <= 0.0 || !dt.is_finite() {
            return None;
        }
        let d = |a: f64, b: f64| ((a - b).max(0.0) / dt).clamp(0.0, 1.0);
        let idle = d(after.idle, before.idle) + d(after.iowait, before.iowait);
        Some(Self {
            busy: (1.0 - idle).clamp(0.0, 1.0),
            user: d(after.user + after.nice, before.user + before.nice),
            system: d(after.system + after.irq + after.softirq, before.system + before.irq + before.softirq),
            iowait: d(after.iowait, before.iowait),
            steal: d(after.steal, before.steal),
        })
    }
}

/// One read of `/proc/stat`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStat {
    /// All CPUs summed.
    pub total: CpuSeconds,
    /// Per CPU, in the kernel's order.
    pub per_cpu: Vec<CpuSeconds>,
    /// Context switches since boot.
    pub context_switches: u64,
    /// Processes and threads created since boot.
    pub forks: u64,
    /// Runnable threads now.
    pub procs_running: u32,
    /// Threads blocked on I/O now.
    pub procs_blocked: u32,
    /// Boot time, seconds since the epoch.
    pub boot_time: u64,
}

/// Reads `/proc/stat`; `None` (counted) when it cannot be read.
pub fn read(root: &HostRoot, info: &HostInfo, errors: &mut ReadErrors) -> Option<CpuStat> {
    match KernelStats::from_file(root.proc_file("stat"), info) {
        Ok(k) => Some(CpuStat {
            total: CpuSeconds::from_ticks(&k.total, info.tps),
            per_cpu: k.cpu_time.iter().map(|c| CpuSeconds::from_ticks(c, info.tps)).collect(),
            context_switches: k.ctxt,
            forks: k.processes,
            procs_running: k.procs_running.unwrap_or(0),
            procs_blocked: k.procs_blocked.unwrap_or(0),
            boot_time: k.btime,
        }),
        Err(e) => {
            errors.count("cpu", ErrorKind::of_procfs(&e));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(user: f64, system: f64, idle: f64, iowait: f64, steal: f64) -> CpuSeconds {
        CpuSeconds { user, system, idle, iowait, steal, ..Default::default() }
    }

    #[test]
    fn utilisation_splits_the_elapsed_time_by_state() {
        let a = secs(10.0, 5.0, 80.0, 5.0, 0.0);
        let b = secs(16.0, 7.0, 90.0, 6.0, 1.0); // +6 user +2 sys +10 idle +1 iowait +1 steal = 20
        let u = CpuUtilization::between(&a, &b).unwrap();
        assert!((u.user - 0.30).abs() < 1e-9);
        assert!((u.system - 0.10).abs() < 1e-9);
        assert!((u.iowait - 0.05).abs() < 1e-9);
        assert!((u.steal - 0.05).abs() < 1e-9);
        assert!((u.busy - 0.45).abs() < 1e-9);
    }

    #[test]
    fn no_elapsed_time_or_counters_going_back_give_no_utilisation() {
        let a = secs(10.0, 5.0, 80.0, 5.0, 0.0);
        assert_eq!(CpuUtilization::between(&a, &a), None);
        assert_eq!(CpuUtilization::between(&secs(20.0, 5.0, 80.0, 5.0, 0.0), &a), None);
    }
}
