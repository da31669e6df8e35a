//! Process start and exit: from the process connector ([`super::cnproc`]) where the agent may
//! listen, else by comparing /proc listings at an interval (which misses processes that start
//! and end between two polls; docs/agent-events.md gives the measured difference).

use std::collections::{HashMap, VecDeque};
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::Duration;

use super::{Event, EventType, Severity};
use vigil_host::host::HostRoot;
use vigil_host::proc::processes::{cgroup_path, cmdline_text, container_id, parse_stat};

/// What is known about one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id.
    pub pid: i32,
    /// Parent.
    pub ppid: Option<i32>,
    /// Real uid.
    pub uid: Option<u32>,
    /// Short name (`comm`).
    pub comm: Option<String>,
    /// Executable path.
    pub exe: Option<String>,
    /// Command line, arguments joined by spaces.
    pub cmdline: Option<String>,
    /// cgroup path.
    pub cgroup: Option<String>,
    /// Container id, when the cgroup is a container's.
    pub container_id: Option<String>,
    /// Start time in clock ticks since boot (tells a reused pid apart).
    pub starttime: Option<u64>,
}

impl ProcInfo {
    /// Reads what /proc still has of `pid`; fields of a vanished process stay `None`.
    pub fn read(root: &HostRoot, pid: i32) -> Self {
        let dir = root.proc().join(pid.to_string());
        let stat = std::fs::read(dir.join("stat")).ok().and_then(|b| parse_stat(&b));
        let uid = std::fs::read_to_string(dir.join("status")).ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|u| u.split_whitespace().next()?.parse().ok())
        });
        let cmdline = std::fs::read(dir.join("cmdline")).ok().map(|b| cmdline_text(&b)).filter(|c| !c.is_empty());
        let exe = std::fs::read_link(dir.join("exe")).ok().map(|p| p.to_string_lossy().into_owned());
        let cgroup = std::fs::read_to_string(dir.join("cgroup")).ok().and_then(|t| cgroup_path(&t));
        let container_id = cgroup.as_deref().and_then(container_id);
        Self {
            pid,
            ppid: stat.as_ref().map(|s| s.ppid),
            uid,
            comm: stat.as_ref().map(|s| s.comm.clone()),
            exe,
            cmdline,
            cgroup,
            container_id,
            starttime: stat.map(|s| s.starttime),
        }
    }

    /// Adds this process's fields to an event.
    pub fn describe(&self, e: Event, users: &vigil_host::proc::processes::Users) -> Event {
        e.with("pid", self.pid)
            .with("ppid", self.ppid)
            .with("uid", self.uid)
            .with("user", self.uid.and_then(|u| users.name(u)).map(str::to_owned))
            .with("comm", self.comm.clone())
            .with("exe", self.exe.clone())
            .with("cmdline", self.cmdline.clone())
            .with("cgroup", self.cgroup.clone())
            .with("containerId", self.container_id.clone())
            // A pid is reused; pid and start time are one process (as /proc/PID/stat's field
            // 22, clock ticks since boot).
            .with("startTicks", self.starttime)
    }

    fn name(&self) -> &str {
        self.comm.as_deref().or(self.exe.as_deref()).unwrap_or("?")
    }
}

/// A start event for `info` (`vanished`: the process was gone before it could be read).
pub fn start_event(info: &ProcInfo, time: jiff::Timestamp, users: &vigil_host::proc::processes::Users) -> Event {
    let what = info.cmdline.as_deref().unwrap_or_else(|| info.name());
    let e = Event::new(EventType::ProcessStart, time, format!("{what} started (pid {})", info.pid));
    let e = info.describe(e, users);
    // Gone before /proc could be read: what the event says came from the kernel's messages.
    if info.starttime.is_none() { e.with("vanished", true) } else { e }
}

/// An exit event; `status` is the `wait(2)` status when the kernel told it.
pub fn exit_event(
    info: &ProcInfo,
    status: Option<u32>,
    time: jiff::Timestamp,
    users: &vigil_host::proc::processes::Users,
) -> Event {
    let (code, signal) = match status {
        Some(s) if s & 0x7f == 0 => (Some((s >> 8) & 0xff), None),
        Some(s) => (None, Some(s & 0x7f)),
        None => (None, None),
    };
    let how = match (code, signal) {
        (Some(c), _) => format!("exited with {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "exited".to_owned(),
    };
    let e = Event::new(EventType::ProcessExit, time, format!("{} (pid {}) {how}", info.name(), info.pid));
    let severity =
        if signal.is_some_and(|s| matches!(s, 4 | 6 | 7 | 8 | 11)) { Severity::Warning } else { Severity::Info };
    info.describe(e, users).with("exitCode", code).with("signal", signal).severity(severity)
}

/// Entries [`Known`] may hold beyond twice what it remembers before it compacts or shrinks.
const SLACK: usize = 64;

/// Remembers processes seen starting, so their exit can name them. Bounded: beyond `max`
/// entries the oldest are forgotten (their exit then carries the pid only); what it holds
/// in memory follows the processes remembered now, not how many ever ran.
#[derive(Debug)]
pub struct Known {
    /// Each process remembered, with the number of the insert that recorded it.
    map: HashMap<i32, (u64, ProcInfo)>,
    /// Inserts, oldest first, by pid and number: an entry whose number is not its pid's in
    /// `map` is stale (that process is gone, or its pid was taken again since).
    order: VecDeque<(i32, u64)>,
    next: u64,
    max: usize,
}

impl Known {
    /// At most `max` processes.
    pub fn new(max: usize) -> Self {
        Self { map: HashMap::new(), order: VecDeque::new(), next: 0, max: max.max(1) }
    }

    fn current(&self, (pid, n): (i32, u64)) -> bool {
        self.map.get(&pid).is_some_and(|(m, _)| *m == n)
    }

    /// Records `info` as the newest process (a pid taken again is the new process, at the
    /// newest place).
    pub fn insert(&mut self, info: ProcInfo) {
        let n = self.next;
        self.next += 1;
        self.order.push_back((info.pid, n));
        self.map.insert(info.pid, (n, info));
        while self.map.len() > self.max {
            let Some(old) = self.order.pop_front() else { break };
            if self.current(old) {
                self.map.remove(&old.0);
            }
        }
        // Stale entries stay in `order` until it is compacted: compacted once they are most
        // of it, so it is bounded by the processes remembered now, not by how many ever ran
        // (a build host starts thousands a minute, each removed at its exit). A compaction
        // drops more than half of what it scans and each entry is dropped once, so it costs
        // O(1) per insert.
        if self.order.len() > 2 * self.map.len() + SLACK {
            let order = std::mem::take(&mut self.order);
            self.order = order.into_iter().filter(|e| self.current(*e)).collect();
        }
    }

    /// Takes the record of `pid`. The table gives back memory a burst of processes took once
    /// it holds a quarter of what it has room for.
    pub fn remove(&mut self, pid: i32) -> Option<ProcInfo> {
        let taken = self.map.remove(&pid).map(|(_, info)| info);
        if self.map.capacity() > 4 * self.map.len() + SLACK {
            self.map.shrink_to(2 * self.map.len() + SLACK);
        }
        taken
    }

    /// Room the table and its queue hold now, in entries (what their memory is sized by).
    pub fn room(&self) -> (usize, usize) {
        (self.map.capacity(), self.order.capacity())
    }

    /// Whether `pid` is remembered.
    pub fn contains(&self, pid: i32) -> bool {
        self.map.contains_key(&pid)
    }

    /// Processes remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One line of a /proc listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Start time in clock ticks since boot (tells a reused pid apart).
    pub starttime: u64,
    /// Short name, for the exit event.
    pub comm: String,
    /// Parent.
    pub ppid: i32,
}

/// The processes under `<root>/proc`, from their stat files.
pub fn list_pids(proc_dir: &Path) -> HashMap<i32, Listed> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(proc_dir) else { return out };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Some(stat) = std::fs::read(entry.path().join("stat")).ok().and_then(|b| parse_stat(&b)) else { continue };
        out.insert(pid, Listed { starttime: stat.starttime, comm: stat.comm, ppid: stat.ppid });
    }
    out
}

/// Polling mode: the difference between two listings.
#[derive(Debug, Default)]
pub struct Poller {
    previous: Option<HashMap<i32, Listed>>,
}

impl Poller {
    /// Compares `now` with the previous listing: new processes (read through `read`), and
    /// processes gone. The first call only learns the baseline.
    pub fn diff(
        &mut self,
        now: HashMap<i32, Listed>,
        mut read: impl FnMut(i32) -> ProcInfo,
    ) -> (Vec<ProcInfo>, Vec<ProcInfo>) {
        let Some(prev) = self.previous.take() else {
            self.previous = Some(now);
            return (Vec::new(), Vec::new());
        };
        let same = |a: Option<&Listed>, b: &Listed| a.is_some_and(|a| a.starttime == b.starttime);
        let mut ended: Vec<ProcInfo> = prev
            .iter()
            .filter(|(pid, l)| !same(now.get(pid), l))
            .map(|(pid, l)| ProcInfo {
                pid: *pid,
                comm: Some(l.comm.clone()),
                ppid: Some(l.ppid),
                ..ProcInfo::default()
            })
            .collect();
        let mut started: Vec<ProcInfo> =
            now.iter().filter(|(pid, l)| !same(prev.get(pid), l)).map(|(pid, _)| read(*pid)).collect();
        started.sort_by_key(|i| i.pid);
        ended.sort_by_key(|i| i.pid);
        self.previous = Some(now);
        (started, ended)
    }
}

/// Waits until `fd` is readable or `timeout` passes; true when readable.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> std::io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let ts = Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: i64::from(timeout.subsec_nanos()) };
    match poll(&mut fds, Some(&ts)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_host::proc::processes::Users;

    fn info(pid: i32, comm: &str) -> ProcInfo {
        ProcInfo { pid, comm: Some(comm.into()), ..ProcInfo::default() }
    }

    #[test]
    fn poller_learns_then_reports_starts_exits_and_pid_reuse() {
        let l = |start: u64, comm: &str| Listed { starttime: start, comm: comm.into(), ppid: 1 };
        let mut p = Poller::default();
        let (s, e) = p.diff(HashMap::from([(1, l(10, "init")), (2, l(20, "old"))]), |pid| info(pid, "x"));
        assert!(s.is_empty() && e.is_empty(), "the first listing is the baseline");
        let (s, e) = p.diff(HashMap::from([(1, l(10, "init")), (3, l(30, "new"))]), |pid| info(pid, "new"));
        assert_eq!(s.iter().map(|i| i.pid).collect::<Vec<_>>(), [3]);
        assert_eq!(e.iter().map(|i| i.pid).collect::<Vec<_>>(), [2]);
        assert_eq!(e[0].comm.as_deref(), Some("old"));
        // Same pid, another start time: one exit and one start.
        let (s, e) = p.diff(HashMap::from([(1, l(10, "init")), (3, l(31, "reused"))]), |pid| info(pid, "reused"));
        assert_eq!((s.len(), e.len()), (1, 1));
        assert_eq!(e[0].comm.as_deref(), Some("new"), "the exit names the process that ended");
    }

    #[test]
    fn exit_status_decodes_code_and_signal() {
        let users = Users::parse("root:x:0:0::/root:/bin/sh\n");
        let e =
            exit_event(&ProcInfo { uid: Some(0), ..info(9, "job") }, Some(3 << 8), jiff::Timestamp::UNIX_EPOCH, &users);
        assert_eq!((e.detail_i64("exitCode"), e.detail_i64("signal")), (Some(3), None));
        assert_eq!(e.detail_str("user"), Some("root"));
        let e = exit_event(&info(9, "job"), Some(11), jiff::Timestamp::UNIX_EPOCH, &users);
        assert_eq!((e.detail_i64("signal"), e.severity), (Some(11), Severity::Warning));
        assert!(e.message.contains("killed by signal 11"), "{}", e.message);
    }

    #[test]
    fn known_is_bounded() {
        let mut k = Known::new(100);
        for pid in 0..10_000 {
            k.insert(info(pid, "p"));
        }
        assert_eq!(k.len(), 100);
        assert!(k.remove(9_999).is_some());
        assert!(k.remove(0).is_none());
    }

    /// A build host: processes by the hundred thousand, each starting and exiting, with a
    /// few long-lived ones among them and pids reused. What the table holds stays sized by
    /// what runs now; before, its queue kept every pid up to twice the limit (65,536 in the
    /// agent: 131,072 pids, 512 KiB or more per table).
    #[test]
    fn known_follows_the_processes_running_not_those_that_ever_ran() {
        let mut k = Known::new(65_536);
        let mut most = (0, 0);
        for n in 0..300_000 {
            let pid = 1_000 + (n % 40_000); // pids wrap, as the kernel's do
            k.insert(info(pid, "cc1"));
            if n % 1_000 == 0 {
                k.insert(info(100 + n / 1_000, "daemon")); // 300 that stay
            }
            assert!(k.remove(pid).is_some());
            let (map, order) = k.room();
            most = (most.0.max(map), most.1.max(order));
        }
        assert_eq!(k.len(), 300);
        let (map, order) = k.room();
        assert!(map <= 4 * 301 + SLACK * 2 && order <= 4 * 301 + SLACK * 2, "now {map}, {order}");
        assert!(most.0 <= 2_048 && most.1 <= 2_048, "at most {most:?} entries of room");
        // A burst: 20,000 at once (a parallel build's fan-out), then all exit.
        for pid in 50_000..70_000 {
            k.insert(info(pid, "cc1"));
        }
        assert!(k.room().0 >= 20_000);
        for pid in 50_000..70_000 {
            assert!(k.remove(pid).is_some());
        }
        let (map, _) = k.room();
        assert!(map <= 4 * 301 + SLACK * 2, "the burst's room is given back: {map}");
        // Compacted (twice here), the queue keeps its order: when the limit bites, the oldest
        // remembered process goes first.
        let mut k = Known::new(4);
        for pid in [1, 2, 3] {
            k.insert(info(pid, "p"));
        }
        for pid in 10..200 {
            k.insert(info(pid, "short"));
            k.remove(pid);
        }
        assert!(k.room().1 < 190, "compacted: {:?}", k.room());
        k.insert(info(4, "p"));
        k.insert(info(5, "p"));
        assert!(!k.contains(1) && [2, 3, 4, 5].iter().all(|p| k.contains(*p)));
        // A pid taken again is the new process, the newest: when the limit bites, the oldest
        // process goes, not the one that just started under a pid seen before.
        let mut k = Known::new(4);
        k.insert(info(1, "first"));
        assert!(k.remove(1).is_some());
        for pid in [2, 3, 4] {
            k.insert(info(pid, "p"));
        }
        k.insert(info(1, "again"));
        k.insert(info(5, "p"));
        assert!(!k.contains(2) && [1, 3, 4, 5].iter().all(|p| k.contains(*p)));
        assert_eq!(k.remove(1).and_then(|i| i.comm).as_deref(), Some("again"));
    }

    #[test]
    fn reads_this_process() {
        let me = ProcInfo::read(&HostRoot::new("/"), i32::try_from(std::process::id()).unwrap());
        assert!(me.comm.is_some() && me.exe.is_some() && me.cmdline.is_some(), "{me:?}");
        assert_eq!(me.uid, Some(rustix::process::getuid().as_raw()));
        let gone = ProcInfo::read(&HostRoot::new("/"), i32::MAX);
        assert!(gone.comm.is_none());
    }
}
