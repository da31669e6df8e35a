//! Memory and swap from `/proc/meminfo`.

use std::collections::HashMap;

use serde::Serialize;

use super::{HostRoot, ReadErrors, read_parsed};

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

/// Reads `/proc/meminfo`; `None` (counted) when it cannot be read or parsed.
pub fn read(root: &HostRoot, errors: &mut ReadErrors) -> Option<Memory> {
    read_parsed(&root.proc_file("meminfo"), "memory", errors, parse)
}

/// Parses meminfo. Ours rather than procfs's, whose parser overflows (a panic in debug
/// builds, a wrong value in release) on values too large for bytes; found by the property
/// tests. `None` when MemTotal or MemFree is missing or a value does not fit.
pub fn parse(text: &str) -> Option<Memory> {
    let mut kv: HashMap<&str, u64> = HashMap::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else { continue };
        let mut words = rest.split_whitespace();
        let Some(Ok(value)) = words.next().map(str::parse::<u64>) else { continue };
        let bytes = match words.next() {
            None => value,
            Some("kB") => value.checked_mul(1024)?,
            Some(_) => continue,
        };
        kv.insert(key.trim(), bytes);
    }
    let get = |k: &str| kv.get(k).copied();
    let total = get("MemTotal")?;
    let free = get("MemFree")?;
    let buffers = get("Buffers").unwrap_or(0);
    let cached = get("Cached").unwrap_or(0).saturating_add(get("SReclaimable").unwrap_or(0));
    // Kernels before 3.14 have no MemAvailable; free + buffers + cache is the old estimate.
    let available = get("MemAvailable").unwrap_or(free.saturating_add(buffers).saturating_add(cached)).min(total);
    let used = total - available;
    let swap_total = get("SwapTotal").unwrap_or(0);
    Some(Memory {
        total_bytes: total,
        available_bytes: available,
        used_bytes: used,
        free_bytes: free,
        buffers_bytes: buffers,
        cached_bytes: cached,
        swap_total_bytes: swap_total,
        swap_used_bytes: swap_total.saturating_sub(get("SwapFree").unwrap_or(swap_total)),
        utilization: if total == 0 { 0.0 } else { used as f64 / total as f64 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_kb_become_bytes() {
        let m = parse("MemTotal: 100 kB\nMemFree: 10 kB\nMemAvailable: 60 kB\nBuffers: 5 kB\nCached: 20 kB\nSReclaimable: 3 kB\nSwapTotal: 50 kB\nSwapFree: 40 kB\nHugePages_Total: 0\n").unwrap();
        assert_eq!(m.total_bytes, 102_400);
        assert_eq!(m.available_bytes, 61_440);
        assert_eq!(m.used_bytes, 40_960);
        assert_eq!(m.cached_bytes, 23 * 1024);
        assert_eq!(m.swap_used_bytes, 10 * 1024);
        assert!((m.utilization - 0.4).abs() < 1e-12);
    }

    #[test]
    fn overflowing_or_missing_values_are_refused() {
        assert_eq!(parse("MemTotal: 18446744073709551615 kB\nMemFree: 1 kB\n"), None);
        assert_eq!(parse("MemFree: 1 kB\n"), None);
        assert_eq!(parse(""), None);
    }
}
