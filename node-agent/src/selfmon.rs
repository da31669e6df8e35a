//! The agent's own resource use, read from its own `/proc/self` (not the host root: in the
//! DaemonSet the agent's process is seen through the container's procfs).

use procfs::process::Process;

/// How long after it starts working the agent gives its start-up code back to the kernel.
pub const RELEASE_STARTUP_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Gives the kernel back the pages of the agent's own binary it has touched so far (its
/// read-only and executable mappings: code and constants, never data it wrote), with
/// `madvise(MADV_PAGEOUT)`. Start-up code (configuration parsing, the clients' set-up, the
/// first walk of the file baseline) then stops counting in the agent's resident memory and
/// its cgroup; code the agent runs later faults back in from the page cache or the image on
/// first use. Pages other processes map too are left alone by the kernel. Once, after
/// start-up. Returns the bytes advised; 0 where the kernel refuses (before Linux 5.4).
pub fn release_startup_code() -> usize {
    let (Ok(exe), Ok(maps)) = (std::fs::read_link("/proc/self/exe"), std::fs::read_to_string("/proc/self/maps")) else {
        return 0;
    };
    let exe = exe.to_string_lossy();
    own_read_only_mappings(&maps, &exe).into_iter().map(|(start, len)| page_out(start, len)).sum()
}

/// The address ranges of `/proc/self/maps` lines that map `exe` and are not writable.
fn own_read_only_mappings(maps: &str, exe: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let path = f.nth(3)?;
            if path != exe || perms.as_bytes().get(1) != Some(&b'-') {
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
    // again on the next access, so no reference into the range is invalidated.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
    if r == 0 { len } else { 0 }
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
    fn releasing_start_up_code_lowers_resident_memory_and_the_code_still_runs() {
        let before = SelfUsage::default().read().expect("own usage").rss_bytes;
        let advised = release_startup_code();
        assert!(advised > 0, "this kernel takes MADV_PAGEOUT (Linux 5.4 and later)");
        let after = SelfUsage::default().read().expect("own usage after").rss_bytes;
        assert!(after < before, "resident memory went down: {before} -> {after}");
        // The code paged out runs again: the parser above, after the release.
        assert_eq!(own_read_only_mappings("1000-2000 r-xp 0 0:0 1 /x", "/x"), vec![(0x1000, 0x1000)]);
    }

    #[test]
    fn own_usage_is_plausible() {
        let u = SelfUsage::default().read().unwrap();
        assert!(u.rss_bytes > 100 * 1024, "{u:?}");
        assert!(u.cpu_seconds >= 0.0);
    }
}
