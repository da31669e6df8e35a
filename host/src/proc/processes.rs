//! Processes: counts by state, threads, and the top processes by CPU and memory.
//!
//! Every interval reads each `/proc/PID/stat` (one small file per process); the costlier
//! files (`cmdline`, `cgroup`, the owner) are read only for the few processes that make the
//! top lists. CPU use is the change of a process's CPU time since the previous scan, keyed
//! by PID and start time so a recycled PID never inherits another process's counters.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{ErrorKind, HostRoot, ReadErrors, read_optional};

/// One process in a top list.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopProcess {
    /// Process id (in the host's PID namespace).
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// Owner uid.
    pub uid: Option<u32>,
    /// Owner name from the host's /etc/passwd.
    pub user: Option<String>,
    /// Command name (`comm`, up to 15 bytes, as the kernel keeps it).
    pub command: String,
    /// Command line, arguments joined by spaces, cut at 256 bytes.
    pub cmdline: String,
    /// Share of one CPU used since the previous scan (1.0 = one full core).
    pub cpu: Option<f64>,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Kernel state letter (`R`, `S`, `D`, `Z`…).
    pub state: char,
    /// Container id (64 hex) when the process runs in a container.
    pub container_id: Option<String>,
    /// The process's cgroup path (the unified v2 path, or v1's memory/cpu one).
    pub cgroup: Option<String>,
}

/// Processes of the host.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Processes {
    /// Processes read.
    pub total: u64,
    /// Threads of those processes.
    pub threads: u64,
    /// Processes by state name (`running`, `sleeping`, `disk_sleep`, `zombie`…).
    pub by_state: BTreeMap<&'static str, u64>,
    /// Highest CPU use first (empty on the first scan: CPU use needs two).
    pub top_cpu: Vec<TopProcess>,
    /// Highest resident memory first.
    pub top_rss: Vec<TopProcess>,
}

/// CPU ticks of each process at the previous scan, keyed by (pid, start time).
#[derive(Default)]
pub struct ProcessHistory {
    ticks: HashMap<(i32, u64), u64>,
}

/// The state letter's name (proc(5)).
pub fn state_name(c: char) -> &'static str {
    match c {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk_sleep",
        'Z' => "zombie",
        'T' => "stopped",
        't' => "tracing_stop",
        'X' | 'x' => "dead",
        'I' => "idle",
        'P' => "parked",
        'W' => "paging",
        'K' => "wakekill",
        _ => "other",
    }
}

struct Row {
    pid: i32,
    ppid: i32,
    comm: String,
    state: char,
    threads: u64,
    rss_pages: u64,
    cpu: Option<f64>,
}

/// How to read processes.
#[derive(Clone, Copy, Debug)]
pub struct ProcessScan {
    /// Page size of the kernel, bytes (RSS is in pages).
    pub page_size: u64,
    /// Clock ticks per second (CPU time is in ticks).
    pub ticks_per_second: u64,
    /// Length of the top lists.
    pub top_n: usize,
    /// Seconds since the previous scan, for CPU use.
    pub elapsed: Option<f64>,
}

/// Reads every process.
pub fn read(
    root: &HostRoot,
    scan: ProcessScan,
    history: &mut ProcessHistory,
    users: &Users,
    errors: &mut ReadErrors,
) -> Processes {
    let ProcessScan { page_size, ticks_per_second: tps, top_n, elapsed } = scan;
    let mut out = Processes::default();
    let dir = match std::fs::read_dir(root.proc()) {
        Ok(d) => d,
        Err(e) => {
            errors.count("processes", ErrorKind::of_io(&e));
            return out;
        }
    };
    let mut rows = Vec::new();
    let mut ticks = HashMap::with_capacity(history.ticks.len());
    let mut buf = Vec::with_capacity(512);
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        buf.clear();
        let read = std::fs::File::open(entry.path().join("stat"))
            .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut buf));
        if let Err(e) = read {
            errors.count("processes", ErrorKind::of_io(&e));
            continue;
        }
        let Some(stat) = parse_stat(&buf) else {
            errors.count("processes", ErrorKind::Parse);
            continue;
        };
        let t = stat.utime.saturating_add(stat.stime);
        let key = (pid, stat.starttime);
        let cpu = match (elapsed, history.ticks.get(&key)) {
            (Some(dt), Some(prev)) if dt > 0.0 => Some(t.saturating_sub(*prev) as f64 / tps.max(1) as f64 / dt),
            _ => None,
        };
        ticks.insert(key, t);
        out.total += 1;
        out.threads += stat.threads;
        *out.by_state.entry(state_name(stat.state)).or_default() += 1;
        rows.push(Row {
            pid,
            ppid: stat.ppid,
            comm: stat.comm,
            state: stat.state,
            threads: stat.threads,
            rss_pages: stat.rss_pages,
            cpu,
        });
    }
    history.ticks = ticks;

    let detail = |r: &Row, errors: &mut ReadErrors| {
        let base = root.proc().join(r.pid.to_string());
        let cmdline = match std::fs::read(base.join("cmdline")) {
            Ok(b) => cmdline_text(&b),
            Err(e) => {
                errors.count("processes", ErrorKind::of_io(&e));
                String::new()
            }
        };
        let cgroup_text = read_optional(&base.join("cgroup"), "processes", errors);
        let cgroup = cgroup_text.as_deref().and_then(cgroup_path);
        // The owner of /proc/PID is the process's effective uid.
        let uid = std::fs::metadata(&base).ok().map(|m| std::os::unix::fs::MetadataExt::uid(&m));
        TopProcess {
            pid: r.pid,
            ppid: r.ppid,
            uid,
            user: uid.and_then(|u| users.name(u)).map(str::to_owned),
            command: r.comm.clone(),
            cmdline,
            cpu: r.cpu,
            rss_bytes: r.rss_pages.saturating_mul(page_size),
            threads: r.threads,
            state: r.state,
            container_id: cgroup.as_deref().and_then(container_id),
            cgroup,
        }
    };
    if top_n > 0 {
        let mut by_cpu: Vec<&Row> = rows.iter().filter(|r| r.cpu.is_some()).collect();
        by_cpu.sort_by(|a, b| b.cpu.partial_cmp(&a.cpu).unwrap_or(std::cmp::Ordering::Equal).then(a.pid.cmp(&b.pid)));
        out.top_cpu = by_cpu.into_iter().take(top_n).map(|r| detail(r, errors)).collect();
        let mut by_rss: Vec<&Row> = rows.iter().collect();
        by_rss.sort_by(|a, b| b.rss_pages.cmp(&a.rss_pages).then(a.pid.cmp(&b.pid)));
        // A process in both lists has its files read once.
        out.top_rss = by_rss
            .into_iter()
            .take(top_n)
            .map(|r| match out.top_cpu.iter().find(|t| t.pid == r.pid) {
                Some(t) => t.clone(),
                None => detail(r, errors),
            })
            .collect();
    }
    out
}

/// The fields of `/proc/PID/stat` the agent uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Command name: everything between the first `(` and the last `)`, which may itself hold
    /// spaces, parentheses and newlines.
    pub comm: String,
    /// State letter.
    pub state: char,
    /// Parent PID.
    pub ppid: i32,
    /// User-mode CPU time, ticks.
    pub utime: u64,
    /// Kernel-mode CPU time, ticks.
    pub stime: u64,
    /// Threads.
    pub threads: u64,
    /// Start time after boot, ticks (with the PID, identifies a process).
    pub starttime: u64,
    /// Resident set, pages.
    pub rss_pages: u64,
}

/// Parses `/proc/PID/stat` (proc(5)); `None` for anything malformed. Ours rather than
/// procfs's, whose parser panics on a `)` before the `(` (found by the property tests).
pub fn parse_stat(bytes: &[u8]) -> Option<Stat> {
    let open = bytes.iter().position(|&b| b == b'(')?;
    let close = bytes.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = String::from_utf8_lossy(&bytes[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(bytes.get(close + 1..)?).ok()?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    let mut state = f.first()?.chars();
    let state_char = state.next()?;
    if state.next().is_some() {
        return None;
    }
    Some(Stat {
        comm,
        state: state_char,
        ppid: f.get(1)?.parse().ok()?,
        utime: num(11)?,
        stime: num(12)?,
        threads: f.get(17)?.parse::<i64>().ok()?.max(0).unsigned_abs(),
        starttime: num(19)?,
        rss_pages: f.get(21)?.parse::<i64>().ok()?.max(0).unsigned_abs(),
    })
}

/// `cmdline` bytes (NUL-separated) as one line, cut at 256 bytes on a character boundary.
pub fn cmdline_text(bytes: &[u8]) -> String {
    let joined: Vec<u8> = bytes
        .strip_suffix(&[0])
        .unwrap_or(bytes)
        .iter()
        .map(|&b| if b == 0 || b == b'\n' { b' ' } else { b })
        .collect();
    let mut s = String::from_utf8_lossy(&joined).into_owned();
    if s.len() > 256 {
        let mut cut = 256;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The most telling cgroup path of a `/proc/PID/cgroup` file: the v2 unified one (`0::/…`), or
/// else v1's memory, cpu or first controller.
pub fn cgroup_path(text: &str) -> Option<String> {
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if id == "0" && controllers.is_empty() {
            return Some(path.to_owned());
        }
        let better = controllers.split(',').any(|c| c == "memory" || c == "cpu");
        if v1.is_none() || better {
            v1 = Some(path.to_owned());
        }
    }
    v1.filter(|p| p != "/")
}

/// The container id in a cgroup path: the last 64-hex run (docker-<id>.scope,
/// cri-containerd-<id>.scope, crio-<id>, /kubepods/…/<id>, /docker/<id>).
pub fn container_id(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut best = None;
    let mut run = 0usize;
    for (i, b) in bytes.iter().enumerate() {
        if b.is_ascii_digit() || (b'a'..=b'f').contains(b) {
            run += 1;
            if run == 64 && bytes.get(i + 1).is_none_or(|n| !n.is_ascii_hexdigit()) {
                best = Some(path[i + 1 - 64..=i].to_owned());
            }
        } else {
            run = 0;
        }
    }
    best
}

/// uid → user name from the host's /etc/passwd, read once per scan.
#[derive(Default)]
pub struct Users(HashMap<u32, String>);

impl Users {
    /// Reads `<root>/etc/passwd`; a missing or unreadable file gives no names.
    pub fn read(root: &HostRoot, errors: &mut ReadErrors) -> Self {
        read_optional(&root.host_path("/etc/passwd"), "users", errors).map(|t| Self::parse(&t)).unwrap_or_default()
    }

    /// Parses passwd lines (`name:x:uid:…`), skipping malformed ones.
    pub fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    let name = f.next()?;
                    let uid = f.nth(1)?.parse().ok()?;
                    Some((uid, name.to_owned()))
                })
                .collect(),
        )
    }

    /// The name of `uid`.
    pub fn name(&self, uid: u32) -> Option<&str> {
        self.0.get(&uid).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f0c7e2b9a1d3c5e7f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e";

    #[test]
    fn container_ids_are_found_in_every_runtime_layout() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope"),
            format!("/kubepods/besteffort/pod1234/{ID}"),
            format!("/docker/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(ID), "{path}");
        }
        assert_eq!(container_id("/user.slice/user-1000.slice/session-2.scope"), None);
        assert_eq!(container_id(&format!("/x/{ID}0")), None, "65 hex chars is not an id");
    }

    #[test]
    fn cgroup_v2_path_wins_and_v1_prefers_memory() {
        assert_eq!(cgroup_path("0::/system.slice/sshd.service\n").as_deref(), Some("/system.slice/sshd.service"));
        let v1 = "12:pids:/a\n11:memory:/kubepods/pod1/abc\n10:cpu,cpuacct:/kubepods/pod1/abc\n";
        assert_eq!(cgroup_path(v1).as_deref(), Some("/kubepods/pod1/abc"));
        assert_eq!(cgroup_path("1:name=systemd:/\n"), None);
        assert_eq!(cgroup_path(""), None);
    }

    #[test]
    fn stat_names_may_hold_spaces_parentheses_and_newlines() {
        let s = parse_stat(b"500 (evil) (na\nme) S 1 500 500 0 -1 4194560 1 0 0 0 25 36 0 0 20 0 3 0 4855 5591040 1050 18446744073709551615\n").unwrap();
        assert_eq!(s.comm, "evil) (na\nme");
        assert_eq!(
            (s.state, s.ppid, s.utime, s.stime, s.threads, s.starttime, s.rss_pages),
            ('S', 1, 25, 36, 3, 4855, 1050)
        );
    }

    #[test]
    fn malformed_stat_lines_are_refused() {
        assert_eq!(parse_stat(b""), None);
        assert_eq!(parse_stat(b"1 )x( S 1"), None);
        assert_eq!(parse_stat(b"1 (x) S 1 2 3"), None, "truncated");
        assert_eq!(parse_stat(b"1 (x) SS 1 1 1 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 1 1 1"), None);
        assert!(parse_stat(b"1 (x) S 1 1 1 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 1 1 1").is_some());
    }

    #[test]
    fn cmdline_joins_arguments_and_is_cut_on_a_char_boundary() {
        assert_eq!(cmdline_text(b"sleep\x00100\x00"), "sleep 100");
        assert_eq!(cmdline_text(b"a\nb"), "a b");
        let long = "é".repeat(200);
        let cut = cmdline_text(long.as_bytes());
        assert!(cut.len() <= 256 && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn passwd_names_uids_and_skips_garbage() {
        let u = Users::parse("root:x:0:0:root:/root:/bin/bash\nbroken\nnobody:x:65534:65534::/:/usr/sbin/nologin\n");
        assert_eq!(u.name(0), Some("root"));
        assert_eq!(u.name(65534), Some("nobody"));
        assert_eq!(u.name(1), None);
    }
}
