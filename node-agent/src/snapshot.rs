//! One snapshot of the host, and the collector that takes them.
//!
//! The JSON form of [`Snapshot`] is a stable, documented schema (docs/agent-snapshot.md):
//! fields are only added within a `schemaVersion`; a rename or removal bumps it.

use std::time::Instant;

use serde::Serialize;

use crate::config::{Collectors, CompiledFilters};
use crate::proc::cpu::{CpuStat, CpuUtilization, HostInfo};
use crate::proc::disks::{DiskIo, Filesystem};
use crate::proc::fd::FileDescriptors;
use crate::proc::identity::Identity;
use crate::proc::memory::Memory;
use crate::proc::net::Network;
use crate::proc::pressure::Pressure;
use crate::proc::processes::{ProcessHistory, ProcessScan, Processes, Users};
use crate::proc::system::Load;
use crate::proc::{HostRoot, ReadErrors};
use crate::{clock, proc};

/// The version of the snapshot's JSON schema.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything the agent knows about the host at one instant. Sections of disabled or failed
/// collectors are absent (`null`), and `readErrors` says which reads failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Schema version of this JSON ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub time: jiff::Timestamp,
    /// Who the host is.
    pub host: Host,
    /// CPU.
    pub cpu: Option<Cpu>,
    /// Memory.
    pub memory: Option<Memory>,
    /// Pressure stall information.
    pub pressure: Option<Pressure>,
    /// Real filesystems.
    pub filesystems: Option<Vec<Filesystem>>,
    /// Block device I/O.
    pub disks: Option<Vec<DiskIo>>,
    /// Network.
    pub network: Option<Network>,
    /// System-wide file handles.
    pub file_descriptors: Option<FileDescriptors>,
    /// Processes.
    pub processes: Option<Processes>,
    /// Clock synchronisation.
    pub clock: Option<clock::ClockState>,
    /// Failed reads of this scan by reader and kind (`vanished`, `permission`, `parse`, `io`).
    pub read_errors: ReadErrors,
    /// How long the scan took, seconds.
    pub scan_seconds: f64,
}

/// The host's identity and uptime.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    /// Name, kernel, OS image, architecture.
    #[serde(flatten)]
    pub identity: Identity,
    /// Seconds since boot.
    pub uptime_seconds: Option<f64>,
    /// Boot time.
    pub boot_time: Option<jiff::Timestamp>,
}

/// CPU section.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    /// Logical CPUs.
    pub cores: usize,
    /// Utilisation of all CPUs since the previous scan (absent on the first).
    pub utilization: Option<CpuUtilization>,
    /// Busy share per CPU since the previous scan, 0–1.
    pub per_core_busy: Vec<f64>,
    /// Load averages.
    pub load: Option<Load>,
    /// Cumulative counters from /proc/stat.
    pub counters: CpuStat,
}

/// Takes snapshots; keeps what the next one needs from the last (CPU counters per CPU and per
/// process) and nothing more.
pub struct Collector {
    root: HostRoot,
    info: HostInfo,
    collectors: Collectors,
    filters: CompiledFilters,
    top: usize,
    prev_cpu: Option<(CpuStat, f64)>,
    history: ProcessHistory,
}

impl Collector {
    /// A collector of the host at `root`.
    pub fn new(root: HostRoot, collectors: Collectors, filters: CompiledFilters, top: usize) -> Self {
        Self {
            root,
            info: HostInfo::current(),
            collectors,
            filters,
            top,
            prev_cpu: None,
            history: ProcessHistory::default(),
        }
    }

    /// The host root.
    pub fn root(&self) -> &HostRoot {
        &self.root
    }

    /// Takes one snapshot at `now` (the caller's clock; the collector reads none).
    pub fn collect(&mut self, now: jiff::Timestamp) -> Snapshot {
        let started = Instant::now();
        let mut errors = ReadErrors::default();
        let root = &self.root;
        let c = &self.collectors;

        let uptime = proc::system::uptime(root, &mut errors);
        let identity = proc::identity::read(root, &mut errors);
        let stat = c.cpu.then(|| proc::cpu::read(root, &self.info, &mut errors)).flatten();
        let boot_time = stat.as_ref().and_then(|s| jiff::Timestamp::from_second(i64::try_from(s.boot_time).ok()?).ok());
        // Elapsed time comes from the host's uptime, a monotonic clock shared with /proc/stat.
        let elapsed = match (&self.prev_cpu, uptime) {
            (Some((_, prev_up)), Some(up)) if up > *prev_up => Some(up - prev_up),
            _ => None,
        };
        let cpu = stat.map(|s| {
            let (utilization, per_core_busy) = match &self.prev_cpu {
                Some((prev, _)) => (
                    CpuUtilization::between(&prev.total, &s.total),
                    prev.per_cpu
                        .iter()
                        .zip(&s.per_cpu)
                        .map(|(a, b)| CpuUtilization::between(a, b).map_or(0.0, |u| u.busy))
                        .collect(),
                ),
                None => (None, Vec::new()),
            };
            if let Some(up) = uptime {
                self.prev_cpu = Some((s.clone(), up));
            }
            Cpu {
                cores: s.per_cpu.len(),
                utilization,
                per_core_busy,
                load: proc::system::load(root, &mut errors),
                counters: s,
            }
        });
        let memory = c.memory.then(|| proc::memory::read(root, &mut errors)).flatten();
        let pressure = c.pressure.then(|| proc::pressure::read(root, &mut errors));
        let filesystems = c
            .filesystems
            .then(|| proc::disks::filesystems(root, &self.filters.mounts, &self.filters.fs_types, &mut errors));
        let disks = c.disk_io.then(|| proc::disks::io(root, &self.filters.devices, &mut errors));
        let network = c.network.then(|| proc::net::read(root, &self.filters.interfaces, c.tcp_states, &mut errors));
        let file_descriptors = c.file_descriptors.then(|| proc::fd::read(root, &mut errors)).flatten();
        let processes = c.processes.then(|| {
            let users = if self.top > 0 { Users::read(root, &mut errors) } else { Users::default() };
            let scan = ProcessScan {
                page_size: self.info.page_size(),
                ticks_per_second: self.info.ticks_per_second(),
                top_n: self.top,
                elapsed,
            };
            proc::processes::read(root, scan, &mut self.history, &users, &mut errors)
        });
        let clock = c.clock.then(clock::read).flatten();
        Snapshot {
            schema_version: SCHEMA_VERSION,
            time: now,
            host: Host { identity, uptime_seconds: uptime, boot_time },
            cpu,
            memory,
            pressure,
            filesystems,
            disks,
            network,
            file_descriptors,
            processes,
            clock,
            read_errors: errors,
            scan_seconds: started.elapsed().as_secs_f64(),
        }
    }
}
