//! Filesystems of the host's mount table (usage through statvfs under the host root) and
//! block device I/O from `/proc/diskstats`.

use std::collections::HashSet;

use procfs::{DiskStats, FromRead};
use serde::Serialize;

use super::{ErrorKind, HostRoot, ReadErrors, read_optional};
use vigil_agent_config::filter::NameFilter;

/// Filesystem types that hold no user data (node_exporter's list, plus container layers).
const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "erofs",
    "sysfs",
    "tracefs",
    "fuse.lxcfs",
    "nfsd",
];

/// Network filesystems: statvfs on a dead server blocks, so they are left out unless a mount
/// filter includes them by name.
const REMOTE_FS: &[&str] = &["nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "fuse.sshfs", "9p", "afs"];

/// Kernel trees: the mount point itself and everything below is plumbing.
const KERNEL_TREES: &[&str] = &["/dev", "/proc", "/sys"];

/// Runtime plumbing: everything below these (container layers, pod volumes, namespaces).
const RUNTIME_PREFIXES: &[&str] = &[
    "/run/credentials/",
    "/run/containerd/",
    "/run/netns/",
    "/var/lib/docker/",
    "/var/lib/containers/storage/",
    "/var/lib/kubelet/pods/",
];

fn is_plumbing(mount_point: &str) -> bool {
    KERNEL_TREES.iter().any(|t| mount_point == *t || mount_point.strip_prefix(t).is_some_and(|r| r.starts_with('/')))
        || RUNTIME_PREFIXES.iter().any(|p| mount_point.starts_with(p))
}

/// One mounted filesystem.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Filesystem {
    /// What is mounted (`/dev/sda1`).
    pub device: String,
    /// Where, in the host's tree.
    pub mount_point: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Read-only for writers: the mount is, or the filesystem itself is (a filesystem the
    /// kernel remounted read-only after an error shows it only in its super options).
    pub read_only: bool,
    /// The kernel's name of the block device (`dm-0` for `/dev/mapper/vg-root`), from sysfs
    /// by `major:minor`: the name kernel log lines use.
    #[serde(skip)]
    pub kernel_name: Option<String>,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Bytes in use (size minus free).
    pub used_bytes: u64,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
    /// `used / (used + available)`, 0–1: what `df` shows as Use%.
    pub utilization: f64,
    /// Inodes in all.
    pub inodes: u64,
    /// Inodes in use.
    pub inodes_used: u64,
}

/// One entry of a mountinfo file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the device.
    pub dev: String,
    /// Mount point, unescaped.
    pub mount_point: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount source, unescaped.
    pub source: String,
    /// Read-only: the mount (`ro` in its options) or the filesystem (`ro` in its super
    /// options, as after the kernel remounted it read-only on an error).
    pub read_only: bool,
}

/// Parses a mountinfo file (proc(5)); malformed lines are counted in the second value.
pub fn parse_mountinfo(text: &str) -> (Vec<Mount>, u64) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match parse_mount_line(line) {
            Some(m) => out.push(m),
            None => bad += 1,
        }
    }
    (out, bad)
}

fn parse_mount_line(line: &str) -> Option<Mount> {
    // id parent major:minor root mount-point options [optional…] - fstype source super-options
    // The separator is the first lone "-" after the six fixed fields (fields are escaped, so
    // a path never holds a bare space).
    let f: Vec<&str> = line.split(' ').collect();
    let sep = f.iter().skip(6).position(|w| *w == "-")? + 6;
    let (fs_type, source) = (f.get(sep + 1)?, f.get(sep + 2)?);
    Some(Mount {
        dev: f[2].to_owned(),
        mount_point: unescape(f[4]),
        fs_type: (*fs_type).to_owned(),
        source: unescape(source),
        read_only: [f[5], f.get(sep + 3).copied().unwrap_or("")].iter().any(|o| o.split(',').any(|o| o == "ro")),
    })
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which mounts count as real filesystems: not pseudo, not under runtime plumbing, allowed by
/// the filters, and each device once (the shortest mount point wins over bind mounts).
pub fn real_filesystems(mounts: Vec<Mount>, mount_filter: &NameFilter, fs_filter: &NameFilter) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = mounts
        .into_iter()
        .filter(|m| !PSEUDO_FS.contains(&m.fs_type.as_str()))
        .filter(|m| !is_plumbing(&m.mount_point))
        .filter(|m| !REMOTE_FS.contains(&m.fs_type.as_str()) || mount_filter.explicitly_includes(&m.mount_point))
        .filter(|m| mount_filter.allows(&m.mount_point) && fs_filter.allows(&m.fs_type))
        .collect();
    mounts
        .sort_by(|a, b| a.mount_point.len().cmp(&b.mount_point.len()).then_with(|| a.mount_point.cmp(&b.mount_point)));
    let mut seen = HashSet::new();
    mounts.retain(|m| seen.insert(m.dev.clone()));
    mounts.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    mounts
}

/// The kernel's name of block device `major:minor` (`dm-0`), from `/sys/dev/block`; `None`
/// for a filesystem without one (tmpfs, btrfs's anonymous numbers).
fn block_name(root: &HostRoot, dev: &str) -> Option<String> {
    if dev.is_empty() || !dev.bytes().all(|b| b.is_ascii_digit() || b == b':') {
        return None;
    }
    let target = std::fs::read_link(root.sys_file(&format!("dev/block/{dev}"))).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Reads the host's mount table and statvfs of each real filesystem.
pub fn filesystems(
    root: &HostRoot,
    mount_filter: &NameFilter,
    fs_filter: &NameFilter,
    errors: &mut ReadErrors,
) -> Vec<Filesystem> {
    // PID 1's mount namespace is the host's; the agent's own is its container's.
    let Some(text) = read_optional(&root.proc_file("1/mountinfo"), "filesystems", errors) else {
        return Vec::new();
    };
    let (mounts, bad) = parse_mountinfo(&text);
    for _ in 0..bad {
        errors.count("filesystems", ErrorKind::Parse);
    }
    let mut out = Vec::new();
    for m in real_filesystems(mounts, mount_filter, fs_filter) {
        match rustix::fs::statvfs(root.host_path(&m.mount_point)) {
            Ok(s) => {
                let frsize = if s.f_frsize > 0 { s.f_frsize } else { s.f_bsize };
                let size = s.f_blocks.saturating_mul(frsize);
                let free = s.f_bfree.saturating_mul(frsize);
                let avail = s.f_bavail.saturating_mul(frsize);
                let used = size.saturating_sub(free);
                if size == 0 {
                    continue; // nothing to report on an empty pseudo mount that slipped through
                }
                out.push(Filesystem {
                    device: m.source,
                    mount_point: m.mount_point,
                    fs_type: m.fs_type,
                    read_only: m.read_only,
                    kernel_name: block_name(root, &m.dev),
                    size_bytes: size,
                    used_bytes: used,
                    available_bytes: avail,
                    utilization: if used + avail == 0 { 0.0 } else { used as f64 / (used + avail) as f64 },
                    inodes: s.f_files,
                    inodes_used: s.f_files.saturating_sub(s.f_ffree),
                });
            }
            Err(e) => errors.count("filesystems", ErrorKind::of_io(&e.into())),
        }
    }
    out
}

/// I/O counters of one block device since boot.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskIo {
    /// Device name (`sda`, `nvme0n1`).
    pub device: String,
    /// Reads completed.
    pub reads: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Writes completed.
    pub writes: u64,
    /// Bytes written.
    pub written_bytes: u64,
    /// Seconds spent doing I/O (busy time).
    pub io_seconds: f64,
    /// I/Os in flight now.
    pub in_progress: u64,
}

/// Reads `/proc/diskstats`, whole disks only (no partitions, loop or RAM devices).
pub fn io(root: &HostRoot, device_filter: &NameFilter, errors: &mut ReadErrors) -> Vec<DiskIo> {
    let stats = match DiskStats::from_file(root.proc_file("diskstats")) {
        Ok(s) => s.0,
        Err(e) => {
            errors.count("diskstats", ErrorKind::of_procfs(&e));
            return Vec::new();
        }
    };
    let sys_block = root.sys_file("block");
    let have_sys = sys_block.is_dir();
    stats
        .into_iter()
        .filter(|d| {
            !(d.name.starts_with("loop")
                || d.name.starts_with("ram")
                || d.name.starts_with("zram")
                || d.name.starts_with("fd"))
        })
        // /sys/block lists whole disks only; without /sys, keep everything.
        .filter(|d| !have_sys || sys_block.join(&d.name).exists())
        .filter(|d| device_filter.allows(&d.name))
        .map(|d| DiskIo {
            device: d.name,
            reads: d.reads,
            read_bytes: d.sectors_read.saturating_mul(512),
            writes: d.writes,
            written_bytes: d.sectors_written.saturating_mul(512),
            io_seconds: d.time_in_progress as f64 / 1000.0,
            in_progress: d.in_progress,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
28 27 254:1 /var/lib/x /srv/bind rw,relatime - ext4 /dev/vda1 rw
29 27 0:30 / /run rw,nosuid - tmpfs tmpfs rw,size=100k
30 27 0:31 / /dev/shm rw - tmpfs tmpfs rw
31 27 254:2 / /mnt/my\\040disk ro,relatime - xfs /dev/vdb rw
32 27 0:40 / /var/lib/kubelet/pods/abc/volumes/x rw - tmpfs tmpfs rw
33 27 0:41 / /data/nfs rw - nfs4 server:/export rw
34 27 0:42 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw
";

    #[test]
    fn mountinfo_lines_are_parsed_and_unescaped() {
        let (m, bad) = parse_mountinfo(MOUNTINFO);
        assert_eq!(bad, 0);
        assert_eq!(m.len(), 9);
        let disk = m.iter().find(|m| m.dev == "254:2").unwrap();
        assert_eq!(disk.mount_point, "/mnt/my disk");
        assert!(disk.read_only);
        assert_eq!(disk.fs_type, "xfs");
    }

    #[test]
    fn a_filesystem_the_kernel_remounted_read_only_is_read_only_though_its_mount_says_rw() {
        // After `EXT4-fs (dm-0): Remounting filesystem read-only` only the super options change.
        let (m, _) =
            parse_mountinfo("27 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root ro,errors=remount-ro\n");
        assert!(m[0].read_only, "{m:?}");
        let (m, _) =
            parse_mountinfo("27 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw,errors=remount-ro\n");
        assert!(!m[0].read_only, "rw in both: writable");
    }

    #[test]
    fn the_kernel_name_of_a_device_mapper_mount_comes_from_sysfs() {
        let root = tempfile::tempdir().unwrap();
        let block = root.path().join("sys/dev/block");
        std::fs::create_dir_all(&block).unwrap();
        std::os::unix::fs::symlink("../../devices/virtual/block/dm-0", block.join("253:0")).unwrap();
        let host = HostRoot::new(root.path());
        assert_eq!(block_name(&host, "253:0").as_deref(), Some("dm-0"));
        assert_eq!(block_name(&host, "0:42"), None, "no such device");
        assert_eq!(block_name(&host, "../../etc"), None, "only major:minor is looked up");
    }

    #[test]
    fn only_real_filesystems_remain_each_device_once() {
        let (m, _) = parse_mountinfo(MOUNTINFO);
        let all = NameFilter::default();
        let real: Vec<String> = real_filesystems(m, &all, &all).into_iter().map(|m| m.mount_point).collect();
        assert_eq!(real, ["/", "/mnt/my disk", "/run"]);
    }

    #[test]
    fn an_nfs_mount_is_read_only_when_named_by_the_filter() {
        let (m, _) = parse_mountinfo(MOUNTINFO);
        let nfs = NameFilter::new(&["/data/*".into(), "/".into()], &[]).unwrap();
        let real: Vec<String> =
            real_filesystems(m, &nfs, &NameFilter::default()).into_iter().map(|m| m.mount_point).collect();
        assert_eq!(real, ["/", "/data/nfs"]);
    }

    #[test]
    fn escapes_that_are_not_octal_stay_as_they_are() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("a\\9b"), "a\\9b");
        assert_eq!(unescape("trail\\04"), "trail\\04");
        assert_eq!(unescape("\\777"), "\\777");
    }

    #[test]
    fn malformed_lines_are_counted_not_fatal() {
        let (m, bad) = parse_mountinfo("garbage\n27 1 254:1 / / rw - ext4 /dev/vda1 rw\n1 2 3 - x\n");
        assert_eq!((m.len(), bad), (1, 2));
    }
}
