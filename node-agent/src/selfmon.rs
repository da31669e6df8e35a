//! The agent's own resource use, read from its own `/proc/self` (not the host root: in the
//! DaemonSet the agent's process is seen through the container's procfs).

use procfs::process::Process;

/// How long after it starts working the agent gives its start-up code back to the kernel.
pub const RELEASE_STARTUP_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// What [`release_startup_code`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Bytes of the binary's mappings the kernel took the advice for.
    pub advised: usize,
    /// The binary's resident pages before and after, KiB (from `/proc/self/smaps`).
    pub resident_kib: (u64, u64),
}

/// Gives the kernel back the pages of the agent's own binary it has touched so far (its
/// non-writable mappings: code, constants and the relocation data the loader made read-only),
/// with `madvise(MADV_PAGEOUT)`. Start-up code (configuration parsing, the clients' set-up,
/// the first walk of the file baseline) then stops counting in the agent's resident memory
/// and its cgroup. Code the agent runs later faults back in on first use: from the page cache,
/// or from the image on disk when the kernel dropped it there too. The kernel leaves alone
/// pages another process maps (the other agent of a handover), and a file the agent may not
/// write (an agent running as another user than the binary's owner): then nothing is
/// released, and [`Released`] says so. Once, after start-up.
pub fn release_startup_code() -> Released {
    let (Ok(exe), Ok(maps)) = (std::fs::read_link("/proc/self/exe"), std::fs::read_to_string("/proc/self/maps")) else {
        return Released::default();
    };
    let exe = exe.to_string_lossy();
    let before = exe_resident_kib(&exe);
    let advised = own_read_only_mappings(&maps, &exe).into_iter().map(|(start, len)| page_out(start, len)).sum();
    Released { advised, resident_kib: (before, exe_resident_kib(&exe)) }
}

/// The resident KiB of the mappings of `exe`, from `/proc/self/smaps`.
fn exe_resident_kib(exe: &str) -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return 0 };
    let mut ours = false;
    let mut kib = 0;
    for line in smaps.lines() {
        if let Some(rss) = line.strip_prefix("Rss:") {
            if ours {
                kib += rss.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
            }
        } else if line.split_ascii_whitespace().next().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
            ours = mapping_path(line) == Some(exe);
        }
    }
    kib
}

/// The path of a `/proc/self/maps` line: everything after its fifth field (a path may hold
/// spaces).
fn mapping_path(line: &str) -> Option<&str> {
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_start();
        rest = &rest[rest.find(char::is_whitespace)?..];
    }
    Some(rest.trim())
}

/// The address ranges of `/proc/self/maps` lines that map `exe` and are not writable.
fn own_read_only_mappings(maps: &str, exe: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            if mapping_path(line)? != exe || perms.as_bytes().get(1) != Some(&b'-') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let (a, b) = (usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?);
            b.checked_sub(a).filter(|len| *len > 0).map(|len| (a, len))
        })
        .collect()
}

#[allow(unsafe_code)]
fn page_out(start: usize, len: usize) -> usize {
    // SAFETY: the range is a whole, non-writable mapping of this process's own binary, read
    // from /proc/self/maps and never unmapped (the executable stays mapped for the process's
    // life). MADV_PAGEOUT changes no memory contents: clean file pages are dropped and read
    // again on the next access; the few the loader wrote before making them read-only
    // (relocations) are written to swap or, without swap, left resident. No reference into
    // the range is invalidated.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
    if r == 0 { len } else { 0 }
}

/// glibc's threshold for giving an allocation a mapping of its own, fixed at 128 KiB: such a
/// block goes back to the kernel when freed. By default glibc raises the threshold to the size
/// of any such block freed (up to 32 MiB), after which the tables a burst grows (the
/// handover's record of handled process messages, 1 MiB at its cap) come from the heap, and
/// their pages stay with the agent when they are given back: 1.2 MiB of RSS a minute after
/// a burst of 100,000 processes (docs/benchmarks.md). Called once at start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn heap_gives_back_large_blocks() -> bool {
    // SAFETY: mallopt sets one parameter of the allocator under its own lock; it touches no
    // memory of ours and invalidates no allocation.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) == 1 }
}

/// Without glibc there is no such threshold to fix.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_gives_back_large_blocks() -> bool {
    false
}

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
    fn only_the_binarys_own_read_only_mappings_are_released() {
        let maps = "\
55d0a0000000-55d0a0200000 r--p 00000000 fd:01 123 /usr/local/bin/vigil-agent
55d0a0200000-55d0a0900000 r-xp 00200000 fd:01 123 /usr/local/bin/vigil-agent
55d0a0900000-55d0a0a00000 r--p 00900000 fd:01 123 /usr/local/bin/vigil-agent
55d0a0a00000-55d0a0a10000 rw-p 00a00000 fd:01 123 /usr/local/bin/vigil-agent
55d0a1000000-55d0a1100000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 r-xp 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000300000 r-xp 00000000 fd:01 98 /usr/local/bin/vigil-agent-other
7f0000400000-7f0000300000 r--p 00000000 fd:01 123 /usr/local/bin/vigil-agent
garbage line
";
        let got = own_read_only_mappings(maps, "/usr/local/bin/vigil-agent");
        assert_eq!(
            got,
            vec![(0x55d0_a000_0000, 0x20_0000), (0x55d0_a020_0000, 0x70_0000), (0x55d0_a090_0000, 0x10_0000)],
            "the writable data, the heap, libc, another binary and a reversed range are not"
        );
    }

    #[test]
    fn releasing_start_up_code_lowers_the_binarys_resident_pages() {
        let r = release_startup_code();
        assert!(r.advised > 0, "the kernel took MADV_PAGEOUT (Linux 5.4 and later): {r:?}");
        let (before, after) = r.resident_kib;
        assert!(before > 0, "the binary's own mappings are found in smaps: {r:?}");
        // Other tests run meanwhile and fault some code back in: most must still be gone.
        assert!(after < before / 2, "the binary's resident pages fell: {before} -> {after} KiB");
    }

    #[test]
    fn a_mapping_path_may_hold_spaces() {
        assert_eq!(
            mapping_path("1000-2000 r-xp 0 fd:01 7 /opt/my agent/vigil-agent"),
            Some("/opt/my agent/vigil-agent")
        );
        assert_eq!(mapping_path("1000-2000 rw-p 0 00:00 0"), None, "an anonymous mapping has no path");
        assert_eq!(mapping_path("garbage"), None);
        assert_eq!(
            own_read_only_mappings("1000-2000 r-xp 0 fd:01 7 /opt/my agent/vigil-agent\n", "/opt/my agent/vigil-agent"),
            vec![(0x1000, 0x1000)]
        );
    }

    #[test]
    fn own_usage_is_plausible() {
        let u = SelfUsage::default().read().unwrap();
        assert!(u.rss_bytes > 100 * 1024, "{u:?}");
        assert!(u.cpu_seconds >= 0.0);
    }
}
