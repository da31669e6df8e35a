//! Memory and swap from `/proc/meminfo`.

use procfs::{FromRead, Meminfo};
use serde::Serialize;

use super::{ErrorKind, HostRoot, ReadErrors};

/// Memory of the host, bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    /// Usable RAM.
    pub total_bytes: u64,
    /// What can be allocated without swapping (the kernel's MemAvailable estimate).
    pub available_bytes: u64,
    /// Total minus available: what a person means by "used".
    pub used_bytes: u64,
    /// Entirely unused RAM.
    pub free_bytes: u64,
    /// Block device buffers.
    pub buffers_bytes: u64,
    /// Page cache plus reclaimable slab.
    pub cached_bytes: u64,
    /// Swap size.
    pub swap_total_bytes: u64,
    /// Swap in use.
    pub swap_used_bytes: u64,
    /// `used / total`, 0–1.
    pub utilization: f64,
}

/// Reads `/proc/meminfo`; `None` (counted) when it cannot be read.
pub fn read(root: &HostRoot, errors: &mut ReadErrors) -> Option<Memory> {
    match Meminfo::from_file(root.proc_file("meminfo")) {
        Ok(m) => Some(from_meminfo(&m)),
        Err(e) => {
            errors.count("memory", ErrorKind::of_procfs(&e));
            None
        }
    }
}

fn from_meminfo(m: &Meminfo) -> Memory {
    let cached = m.cached + m.s_reclaimable.unwrap_or(0);
    // Kernels before 3.14 have no MemAvailable; free + buffers + cache is the old estimate.
    let available = m.mem_available.unwrap_or(m.mem_free + m.buffers + cached).min(m.mem_total);
    let used = m.mem_total - available;
    Memory {
        total_bytes: m.mem_total,
        available_bytes: available,
        used_bytes: used,
        free_bytes: m.mem_free,
        buffers_bytes: m.buffers,
        cached_bytes: cached,
        swap_total_bytes: m.swap_total,
        swap_used_bytes: m.swap_total.saturating_sub(m.swap_free),
        utilization: if m.mem_total == 0 { 0.0 } else { used as f64 / m.mem_total as f64 },
    }
}
