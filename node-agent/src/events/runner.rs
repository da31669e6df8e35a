//! Runs the event sources: one thread per blocking source (kernel log, process connector,
//! inotify) and one for the polled ones (auth logs, wtmp/btmp, sockets, clock). Each thread
//! waits at most [`POLL_SLICE`] at a time, so [`Sources::stop`] returns promptly.
//!
//! Also [`one_shot`], the events a single `scan --events` can find without waiting: the
//! kernel log since boot, the current auth logs, what listens now, the clock, and the
//! differences from a saved file baseline.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::auth::{AuthParser, BruteForce, BruteForceRule, Parsed};
use super::fim::{Fim, FimSettings};
use super::kmsg::{Classifier, parse_record, split_records};
use super::netconn::{Tracker, owners, read_sockets, socket_event};
use super::process::{Poller, ProcInfo, exit_event, list_pids, start_event, wait_readable};
use super::queue::{EventQueue, POLL_SLICE};
use super::tail::{Positions, StartAt, Tail, Unit};
use super::{Emitter, Event, EventType, Source, utmp};
use crate::config::{Config, EventsConfig, ProcessMode};
use crate::host::HostRoot;
use crate::proc::processes::Users;
use vigil_crds::{SourceReport, SourceState};

/// What one source is doing: whether it works, how it reads, and in words for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceStatus {
    /// On, degraded (works with less than designed) or off.
    pub state: SourceState,
    /// How it reads (`kmsg`, `syslog`, `netlink`, `poll`, `inotify`, `rescan`, `file`).
    pub mode: &'static str,
    /// What it reads, or why it is degraded or off and what it needs.
    pub detail: String,
}

impl std::fmt::Display for SourceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.state.as_str(), self.mode, self.detail)
    }
}

/// What each source is doing, for `/readyz`, the logs and AgentStatus.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStates(pub HashMap<Source, SourceStatus>);

impl SourceStates {
    /// Lines `source: state` for states that differ from `seen`, which is brought up to date.
    pub fn changes(&self, seen: &mut SourceStates) -> Vec<String> {
        let mut out = Vec::new();
        for s in Source::ALL {
            if let Some(state) = self.0.get(&s)
                && seen.0.get(&s) != Some(state)
            {
                out.push(format!("{}: {state}", s.as_str()));
                seen.0.insert(s, state.clone());
            }
        }
        out
    }

    /// The per-source report of AgentStatus, in the fixed order of [`Source::ALL`].
    pub fn reports(&self) -> Vec<SourceReport> {
        Source::ALL
            .iter()
            .filter_map(|s| {
                let st = self.0.get(s)?;
                Some(SourceReport {
                    name: s.as_str().to_owned(),
                    state: st.state,
                    mode: Some(st.mode.to_owned()),
                    reason: Some(st.detail.chars().take(512).collect()),
                })
            })
            .collect()
    }
}

/// The running sources.
pub struct Sources {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Per source: `running`, `polling /proc (no CAP_NET_ADMIN)`, or why it is off.
    pub states: Arc<Mutex<SourceStates>>,
}

impl Sources {
    /// Says on stderr what each source does, for the states that changed since `seen` (which
    /// is brought up to date): polling instead of the process connector, a source off for want
    /// of a permission. A closed stderr is ignored (eprintln! would panic).
    pub fn report_changes(&self, seen: &mut SourceStates) {
        use std::io::Write;
        let now = self.states.lock().map(|s| s.clone()).unwrap_or_default();
        for line in now.changes(seen) {
            let _ = writeln!(std::io::stderr(), "vigil-agent: events: {line}");
        }
    }

    /// Asks every source to stop and waits up to two seconds for them (each stops within a
    /// poll slice, or after the unit of work it is in: a first walk of a large tree can take
    /// longer, and is then left to end with the process).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(2);
        for t in self.threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn set_state(
    states: &Mutex<SourceStates>,
    source: Source,
    state: SourceState,
    mode: &'static str,
    detail: impl Into<String>,
) {
    if let Ok(mut s) = states.lock() {
        s.0.insert(source, SourceStatus { state, mode, detail: detail.into() });
    }
}

/// The host's boot time, from `/proc/stat`'s `btime`.
pub fn boot_time(root: &HostRoot) -> jiff::Timestamp {
    std::fs::read_to_string(root.proc_file("stat"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<i64>().ok()))
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// The host's time zone from its `/etc/localtime` (syslog's year-less timestamps are local).
pub fn host_tz(root: &HostRoot) -> jiff::tz::TimeZone {
    std::fs::read(root.host_path("/etc/localtime"))
        .ok()
        .and_then(|b| jiff::tz::TimeZone::tzif("localtime", &b).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC)
}

/// Starts the enabled sources; events go into `queue`.
pub fn start(config: &Config, queue: &EventQueue) -> Sources {
    let ev = &config.events;
    let root = HostRoot::new(config.host_root.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let states = Arc::new(Mutex::new(SourceStates::default()));
    let mut threads = Vec::new();
    let state_dir = usable_state_dir(&ev.state_dir);
    let mut spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        if let Ok(t) = std::thread::Builder::new().name(format!("vigil-{name}")).spawn(f) {
            threads.push(t);
        }
    };
    if ev.kernel.enabled {
        let (emitter, stop, states, device, root) = (
            queue.emitter(Source::Kernel, ev.kernel.rate_limit),
            stop.clone(),
            states.clone(),
            ev.kernel.device.clone(),
            root.clone(),
        );
        spawn("kmsg", Box::new(move || kernel_source(&device, &root, emitter, &stop, &states)));
    }
    if ev.processes.enabled {
        let (emitter, stop, states, root, cfg) = (
            queue.emitter(Source::Process, ev.processes.rate_limit),
            stop.clone(),
            states.clone(),
            root.clone(),
            ev.processes.clone(),
        );
        spawn("proc", Box::new(move || process_source(&cfg, &root, emitter, &stop, &states)));
    }
    if ev.files.enabled {
        match file_settings(config) {
            Ok(settings) => {
                let (emitter, stop, states, root, cfg, dir) = (
                    queue.emitter(Source::File, ev.files.rate_limit),
                    stop.clone(),
                    states.clone(),
                    root.clone(),
                    ev.clone(),
                    state_dir.clone(),
                );
                spawn(
                    "fim",
                    Box::new(move || file_source(&cfg, settings, &root, dir.as_deref(), emitter, &stop, &states)),
                );
            }
            Err(e) => set_state(&states, Source::File, SourceState::Off, "inotify", format!("bad file settings: {e}")),
        }
    }
    if ev.auth.enabled || ev.network.enabled || ev.clock.enabled {
        let emitters = Polled {
            auth: queue.emitter(Source::Auth, ev.auth.rate_limit),
            network: queue.emitter(Source::Network, ev.network.rate_limit),
            clock: queue.emitter(Source::Clock, super::queue::RateLimit::new(1.0, 10)),
        };
        let (stop, states, root, cfg, dir) = (stop.clone(), states.clone(), root.clone(), ev.clone(), state_dir);
        spawn("poll", Box::new(move || polled_sources(&cfg, &root, dir.as_deref(), emitters, &stop, &states)));
    }
    Sources { stop, threads, states }
}

/// The state directory if it exists or can be made and written; else `None` (the sources then
/// keep their state in memory only, and say so).
fn usable_state_dir(dir: &Path) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"").ok()?;
    let _ = std::fs::remove_file(&probe);
    Some(dir.to_owned())
}

/// The compiled file-integrity settings.
pub fn file_settings(config: &Config) -> Result<FimSettings, globset::Error> {
    let f = &config.events.files;
    Ok(FimSettings {
        paths: f.paths.clone(),
        exclude: config.events_exclude()?,
        max_files: f.max_files,
        max_hash_bytes: f.max_hash_bytes,
        per_path_interval: f.per_path_interval,
    })
}

fn stopped(stop: &AtomicBool, emitter: &Emitter) -> bool {
    stop.load(Ordering::Relaxed) || emitter.is_closed()
}

// ---- kernel log -------------------------------------------------------------------------

fn kernel_source(
    device: &Path,
    root: &HostRoot,
    mut emitter: Emitter,
    stop: &AtomicBool,
    states: &Mutex<SourceStates>,
) {
    let boot = boot_time(root);
    let mut classifier = Classifier::default();
    let is_file = std::fs::metadata(device).map(|m| m.is_file()).unwrap_or(false);
    if is_file {
        set_state(states, Source::Kernel, SourceState::On, "file", format!("following {}", device.display()));
        let mut tail = Tail::open(device, Unit::Lines { max: 8192 }, None, StartAt::End);
        while !stopped(stop, &emitter) {
            // An overlong record's head still carries its header; its tail is skipped.
            let _ = tail.poll(&mut |line, _cut| {
                if line.starts_with(b" ") {
                    return;
                }
                handle_kmsg_record(line, boot, &mut classifier, &mut emitter);
            });
            std::thread::sleep(POLL_SLICE);
        }
        return;
    }
    let mut file = match open_kmsg(device, true) {
        Ok(f) => f,
        Err(e) => return syslog_loop(device, &e, boot, &mut classifier, emitter, stop, states),
    };
    set_state(states, Source::Kernel, SourceState::On, "kmsg", format!("reading {}", device.display()));
    let mut buf = vec![0u8; 16 * 1024];
    let mut last_seq: Option<u64> = None;
    while !stopped(stop, &emitter) {
        match wait_readable(file.as_fd(), POLL_SLICE) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => break,
        }
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(r) = parse_record(&buf[..n]) {
                        if let Some(prev) = last_seq
                            && r.seq > prev + 1
                        {
                            emitter.count_overflow(r.seq - prev - 1);
                        }
                        last_seq = Some(r.seq);
                    }
                    handle_kmsg_record(&buf[..n], boot, &mut classifier, &mut emitter);
                }
                // The ring buffer overwrote records we had not read; the next read goes on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => emitter.count_overflow(1),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
    }
}

/// Reads the kernel log with syslog(2) where the device cannot be opened (an unprivileged
/// container's device cgroup refuses `/dev/kmsg`; `CAP_SYSLOG` is enough for this).
fn syslog_loop(
    device: &Path,
    open_error: &std::io::Error,
    boot: jiff::Timestamp,
    classifier: &mut Classifier,
    mut emitter: Emitter,
    stop: &AtomicBool,
    states: &Mutex<SourceStates>,
) {
    let mut follower = match super::klog::read_all() {
        Ok(buf) => super::klog::Follower::at_end(&buf),
        Err(e) => {
            set_state(
                states,
                Source::Kernel,
                SourceState::Off,
                "kmsg",
                format!(
                    "opening {}: {open_error}; syslog(2): {e} (needs CAP_SYSLOG, and a seccomp profile that allows syslog)",
                    device.display()
                ),
            );
            return;
        }
    };
    set_state(
        states,
        Source::Kernel,
        SourceState::On,
        "syslog",
        format!(
            "reading the kernel ring buffer with syslog(2) every {SYSLOG_POLL:?} (opening {}: {open_error})",
            device.display()
        ),
    );
    let mut next = Instant::now();
    while !stopped(stop, &emitter) {
        if Instant::now() < next {
            std::thread::sleep(POLL_SLICE.min(next - Instant::now()));
            continue;
        }
        next = Instant::now() + SYSLOG_POLL;
        let Ok(buf) = super::klog::read_all() else { continue };
        let poll = follower.poll(&buf);
        if poll.wrapped {
            emitter.count_overflow(1);
        }
        for r in &poll.records {
            emit_record(r, boot, classifier, &mut emitter);
        }
        for line in &poll.unparsed {
            emit_unparsed(line, &mut emitter);
        }
    }
}

/// How often the syslog(2) reader looks at the ring buffer: each look copies the whole buffer
/// (typically 128 KiB to 1 MiB), so not in a tight loop; records are timestamped by the kernel,
/// so the delay changes only when an alert goes out, not what it says.
const SYSLOG_POLL: Duration = Duration::from_secs(1);

fn open_kmsg(device: &Path, from_end: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(device)?;
    if from_end {
        // On /dev/kmsg, SEEK_END moves past the last record: only new ones are read.
        rustix::fs::seek(&file, rustix::fs::SeekFrom::End(0))?;
    }
    Ok(file)
}

fn handle_kmsg_record(bytes: &[u8], boot: jiff::Timestamp, classifier: &mut Classifier, emitter: &mut Emitter) {
    match parse_record(bytes) {
        Some(r) => emit_record(&r, boot, classifier, emitter),
        None if bytes.iter().all(u8::is_ascii_whitespace) => {}
        None => emit_unparsed(bytes, emitter),
    }
}

/// A kernel log record, from `/dev/kmsg` or syslog(2), as the event it is (if any).
fn emit_record(r: &super::kmsg::Record, boot: jiff::Timestamp, classifier: &mut Classifier, emitter: &mut Emitter) {
    if let Some(e) = classifier.classify(r, boot) {
        emitter.emit(e);
    }
}

/// A kernel log line that is no record: counted, and passed on raw.
fn emit_unparsed(bytes: &[u8], emitter: &mut Emitter) {
    emitter.count_unparsed();
    emitter.emit(Event::unparsed(jiff::Timestamp::now(), "kmsg", bytes));
}

// ---- processes --------------------------------------------------------------------------

fn process_source(
    cfg: &crate::config::ProcessEvents,
    root: &HostRoot,
    mut emitter: Emitter,
    stop: &AtomicBool,
    states: &Mutex<SourceStates>,
) {
    let users = Users::read(root, &mut crate::proc::ReadErrors::default());
    if cfg.mode != ProcessMode::Poll {
        match super::cnproc::Listener::open() {
            Ok(listener) => {
                set_state(states, Source::Process, SourceState::On, "netlink", "process connector (netlink)");
                return netlink_loop(listener, root, &users, emitter, stop);
            }
            Err(e) if cfg.mode == ProcessMode::Netlink => {
                set_state(
                    states,
                    Source::Process,
                    SourceState::Off,
                    "netlink",
                    format!("process connector: {e} ({CONNECTOR_NEEDS})"),
                );
                return;
            }
            Err(e) => set_state(
                states,
                Source::Process,
                SourceState::Degraded,
                "poll",
                format!(
                    "polling /proc every {:?}, missing processes shorter than that (process connector: {e}; {CONNECTOR_NEEDS})",
                    cfg.poll_interval
                ),
            ),
        }
    } else {
        set_state(
            states,
            Source::Process,
            SourceState::On,
            "poll",
            format!("polling /proc every {:?} (as configured)", cfg.poll_interval),
        );
    }
    let mut poller = Poller::default();
    let proc_dir = root.proc();
    let mut next = Instant::now();
    while !stopped(stop, &emitter) {
        if Instant::now() < next {
            std::thread::sleep(POLL_SLICE.min(next - Instant::now()));
            continue;
        }
        next = Instant::now() + cfg.poll_interval;
        let now = jiff::Timestamp::now();
        let (started, ended) = poller.diff(list_pids(&proc_dir), |pid| ProcInfo::read(root, pid));
        for info in &started {
            emitter.emit(start_event(info, now, &users));
        }
        for info in &ended {
            emitter.emit(exit_event(info, None, now, &users));
        }
    }
}

/// What the process connector takes: the kernel answers only sockets of the initial network
/// namespace and subscribers in the initial PID and user namespaces, with CAP_NET_ADMIN.
const CONNECTOR_NEEDS: &str = "needs CAP_NET_ADMIN and the host's network and PID namespaces";

fn netlink_loop(
    mut listener: super::cnproc::Listener,
    root: &HostRoot,
    users: &Users,
    mut emitter: Emitter,
    stop: &AtomicBool,
) {
    use super::cnproc::ProcEvent;
    let mut known = super::process::Known::new(65_536);
    // Parent of each new process from its fork, for a process gone before its exec was read.
    let mut parents = super::process::Known::new(65_536);
    while !stopped(stop, &emitter) {
        let Ok(events) = listener.recv(POLL_SLICE) else { break };
        for ev in events {
            let now = jiff::Timestamp::now();
            match ev {
                ProcEvent::Fork { parent_tgid, child_pid, child_tgid } if child_pid == child_tgid => {
                    parents.insert(ProcInfo { pid: child_pid, ppid: Some(parent_tgid), ..ProcInfo::default() });
                }
                ProcEvent::Exec { pid, tgid } if pid == tgid => {
                    let mut info = ProcInfo::read(root, pid);
                    if let Some(p) = parents.remove(pid) {
                        info.ppid = exec_parent(info.ppid, p.ppid);
                    }
                    emitter.emit(start_event(&info, now, users));
                    known.insert(ProcInfo { cmdline: None, cgroup: None, ..info });
                }
                ProcEvent::Exit { pid, tgid, exit_code, .. } if pid == tgid => {
                    let forked_here = parents.remove(pid).is_some();
                    let info = match known.remove(pid) {
                        Some(info) => info,
                        // Forked since the agent started but never executed a program: it had
                        // no start event, so it gets no exit event either.
                        None if forked_here => continue,
                        // Running before the agent started: the zombie's stat may still name it.
                        None => {
                            let mut i = ProcInfo::read(root, pid);
                            i.cmdline = None;
                            i
                        }
                    };
                    emitter.emit(exit_event(&info, Some(exit_code), now, users));
                }
                ProcEvent::Overrun => emitter.count_overflow(1),
                _ => {}
            }
        }
    }
}

/// The parent of a process at its exec: what /proc says, unless /proc no longer knows it. A
/// process that exits right after its exec can be read after it was reaped, when its `stat`
/// still answers but names parent 0 (the kernel's `pid_alive` no longer holds); the parent its
/// fork named is right then.
fn exec_parent(from_proc: Option<i32>, from_fork: Option<i32>) -> Option<i32> {
    match from_proc {
        Some(p) if p > 0 => Some(p),
        _ => from_fork.or(from_proc),
    }
}

// ---- file integrity ---------------------------------------------------------------------

fn file_source(
    cfg: &EventsConfig,
    settings: FimSettings,
    root: &HostRoot,
    state_dir: Option<&Path>,
    mut emitter: Emitter,
    stop: &AtomicBool,
    states: &Mutex<SourceStates>,
) {
    use inotify::{Inotify, WatchMask};
    let baseline_file = state_dir.map(|d| d.join("fim-baseline.json"));
    let mut fim = Fim::new(root.clone(), settings);
    let had_baseline = baseline_file.as_deref().is_some_and(|f| fim.load(f));
    for e in fim.rescan(jiff::Timestamp::now(), had_baseline) {
        emitter.emit(e);
    }
    if fim.overflowed > 0 {
        emitter.count_overflow(fim.overflowed);
    }
    if let Some(f) = &baseline_file {
        let _ = fim.save(f);
    }
    let mut inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            set_state(
                states,
                Source::File,
                SourceState::Degraded,
                "rescan",
                format!("rescanning every {:?} (inotify: {e})", cfg.files.rescan_interval),
            );
            return rescan_only(&mut fim, cfg, baseline_file.as_deref(), emitter, stop);
        }
    };
    let mask = WatchMask::CREATE
        | WatchMask::CLOSE_WRITE
        | WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DONT_FOLLOW
        | WatchMask::ONLYDIR;
    let mut dirs: HashMap<inotify::WatchDescriptor, String> = HashMap::new();
    let mut watch_failures = 0u64;
    let add_watch = |inotify: &mut Inotify, dirs: &mut HashMap<_, _>, host_path: &str, failures: &mut u64| {
        match inotify.watches().add(root.host_path(host_path), mask) {
            Ok(wd) => {
                dirs.insert(wd, host_path.to_owned());
            }
            // Beyond fs.inotify.max_user_watches: the periodic rescan covers the directory.
            Err(_) => *failures += 1,
        }
    };
    let initial = fim.directories();
    for d in &initial {
        add_watch(&mut inotify, &mut dirs, d, &mut watch_failures);
    }
    set_state(
        states,
        Source::File,
        if watch_failures == 0 { SourceState::On } else { SourceState::Degraded },
        "inotify",
        format!(
            "watching {} directories, {} paths in the baseline{}{}",
            dirs.len(),
            fim.entries.len(),
            if watch_failures > 0 {
                format!(
                    " ({watch_failures} directories could not be watched: fs.inotify.max_user_watches; they are compared every {:?})",
                    cfg.files.rescan_interval
                )
            } else {
                String::new()
            },
            if state_dir.is_none() { " (no state directory: the baseline is not kept)" } else { "" }
        ),
    );
    const MAX_PENDING: usize = 100_000;
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut next_rescan = Instant::now() + cfg.files.rescan_interval;
    let mut next_save = Instant::now();
    let mut rescan_now = false;
    while !stopped(stop, &emitter) {
        // Short waits only while paths are settling.
        let wait = if pending.is_empty() { POLL_SLICE } else { Duration::from_millis(50) };
        if wait_readable(inotify.as_fd(), wait).unwrap_or(false) {
            while let Ok(events) = inotify.read_events(&mut buf) {
                let mut any = false;
                for e in events {
                    any = true;
                    if e.mask.contains(inotify::EventMask::Q_OVERFLOW) {
                        emitter.count_overflow(1);
                        rescan_now = true;
                        continue;
                    }
                    let Some(dir) = dirs.get(&e.wd) else { continue };
                    let path = match e.name {
                        Some(n) => format!("{}/{}", dir.trim_end_matches('/'), n.to_string_lossy()),
                        None => dir.clone(),
                    };
                    if pending.len() >= MAX_PENDING && !pending.contains_key(&path) {
                        emitter.count_overflow(1);
                        rescan_now = true;
                        continue;
                    }
                    pending.entry(path).or_insert_with(Instant::now);
                }
                if !any {
                    break;
                }
            }
        }
        // Settle: a path is checked once nothing touched it for 50 ms or it waited 500 ms.
        let now = Instant::now();
        let due: Vec<String> = pending
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= Duration::from_millis(50))
            .map(|(p, _)| p.clone())
            .collect();
        if !due.is_empty() {
            for p in &due {
                pending.remove(p);
            }
            let checked = fim.check_paths(due, jiff::Timestamp::now());
            for e in checked.events {
                emitter.emit(e);
            }
            for d in checked.new_dirs {
                add_watch(&mut inotify, &mut dirs, &d, &mut watch_failures);
            }
            for p in checked.later {
                pending.entry(p).or_insert_with(Instant::now);
            }
        }
        if rescan_now || now >= next_rescan {
            rescan_now = false;
            next_rescan = now + cfg.files.rescan_interval;
            for e in fim.rescan(jiff::Timestamp::now(), true) {
                emitter.emit(e);
            }
            let watched: std::collections::HashSet<String> = dirs.values().cloned().collect();
            for d in fim.directories() {
                if !watched.contains(&d) {
                    add_watch(&mut inotify, &mut dirs, &d, &mut watch_failures);
                }
            }
        }
        if fim.dirty
            && now >= next_save
            && let Some(f) = &baseline_file
        {
            let _ = fim.save(f);
            next_save = now + Duration::from_secs(10);
        }
    }
    if fim.dirty
        && let Some(f) = &baseline_file
    {
        let _ = fim.save(f);
    }
}

fn rescan_only(fim: &mut Fim, cfg: &EventsConfig, baseline: Option<&Path>, mut emitter: Emitter, stop: &AtomicBool) {
    let mut next = Instant::now() + cfg.files.rescan_interval;
    while !stopped(stop, &emitter) {
        std::thread::sleep(POLL_SLICE);
        if Instant::now() >= next {
            next = Instant::now() + cfg.files.rescan_interval;
            for e in fim.rescan(jiff::Timestamp::now(), true) {
                emitter.emit(e);
            }
            if let Some(f) = baseline {
                let _ = fim.save(f);
            }
        }
    }
}

// ---- polled sources ---------------------------------------------------------------------

struct Polled {
    auth: Emitter,
    network: Emitter,
    clock: Emitter,
}

/// Auth log tails, the wtmp/btmp tails, and brute-force detection over them.
pub struct AuthFollower {
    parser: AuthParser,
    logs: Vec<(String, Tail)>,
    utmp: Vec<(String, Tail, utmp::Log)>,
    brute: BruteForce,
    /// Whether btmp feeds brute-force detection (only when no auth log exists: sshd writes
    /// the same failures to both).
    btmp_counts: bool,
    /// The systemd journal, when read.
    journal: Option<super::journal::Follower>,
    /// What the last poll of the journal could not read (file: why).
    pub journal_problems: Vec<String>,
    /// The last poll of the journal stopped before the end of some file.
    pub journal_more: bool,
}

/// The journal fields the auth source reads.
fn auth_journal_field(name: &str) -> bool {
    matches!(name, "MESSAGE" | "SYSLOG_IDENTIFIER" | "_COMM" | "SYSLOG_PID" | "_PID" | "_HOSTNAME" | "_TRANSPORT")
}

impl AuthFollower {
    /// Opens the tails, resuming at `saved` positions (else at `start`).
    pub fn new(
        cfg: &crate::config::AuthEvents,
        root: &HostRoot,
        saved: &Positions,
        journal_cursor: Option<super::journal::Cursor>,
        start: StartAt,
    ) -> Self {
        let parser = AuthParser { ignore_session_services: cfg.ignore_session_services.clone(), tz: host_tz(root) };
        let open = |p: &str, unit| Tail::open(&root.host_path(p), unit, saved.0.get(p).copied(), start);
        let logs: Vec<(String, Tail)> =
            cfg.logs.iter().map(|p| (p.clone(), open(p, Unit::Lines { max: 16 * 1024 }))).collect();
        let btmp_counts = !cfg.logs.iter().any(|p| root.host_path(p).exists());
        let mut utmp = Vec::new();
        for (p, log) in [(&cfg.wtmp, utmp::Log::Wtmp), (&cfg.btmp, utmp::Log::Btmp)] {
            if !p.is_empty() {
                utmp.push((p.clone(), open(p, Unit::Records(utmp::RECORD_SIZE)), log));
            }
        }
        let brute = BruteForce::new(BruteForceRule {
            threshold: cfg.brute_force_threshold,
            window: cfg.brute_force_window,
            ..BruteForceRule::default()
        });
        let journal = match cfg.journal {
            crate::config::JournalMode::Off => false,
            crate::config::JournalMode::On => true,
            crate::config::JournalMode::Auto => btmp_counts,
        }
        .then(|| {
            let dirs = cfg.journal_dirs.iter().map(|d| root.host_path(d)).collect();
            super::journal::Follower::new(dirs, journal_cursor, start == StartAt::End)
        });
        Self { parser, logs, utmp, brute, btmp_counts, journal, journal_problems: Vec::new(), journal_more: false }
    }

    /// Whether the journal is read, and its directories.
    pub fn journal_dirs(&self) -> Option<Vec<PathBuf>> {
        self.journal.as_ref().map(super::journal::Follower::dirs)
    }

    /// Where the journal reader is, to save.
    pub fn journal_cursor(&self) -> Option<&super::journal::Cursor> {
        self.journal.as_ref().map(super::journal::Follower::cursor)
    }

    /// Reads what the files gained; events go to `out`.
    pub fn poll(&mut self, out: &mut dyn FnMut(Event), unparsed: &mut dyn FnMut()) {
        let now = jiff::Timestamp::now();
        for (name, tail) in &mut self.logs {
            let mut lines = Vec::new();
            let _ = tail.poll(&mut |l, cut| lines.push((l.to_vec(), cut)));
            for (l, cut) in lines {
                let text = super::utf8_escaped(&l);
                // A line longer than any a logger writes is not parsed: its fields could be
                // anything (a 16 KiB "user name"); its head is kept as an unparsed event.
                let parsed = if cut { Parsed::Unparsed } else { self.parser.parse(&text, now) };
                match parsed {
                    Parsed::Event(e) => {
                        let found = self.brute.observe(&e);
                        out(e);
                        if let Some(f) = found {
                            out(f);
                        }
                    }
                    Parsed::Ignored => {}
                    Parsed::Unparsed if !cut && text.trim().is_empty() => {}
                    Parsed::Unparsed => {
                        unparsed();
                        out(Event::unparsed(now, name, &l).with("cut", cut.then_some(true)));
                    }
                }
            }
        }
        if let Some(j) = self.journal.as_mut() {
            let poll = j.poll(&auth_journal_field);
            self.journal_problems = poll.errors.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect();
            self.journal_more = poll.more;
            for entry in poll.entries {
                // The kernel's records are the kernel source's.
                if entry.fields.get("_TRANSPORT").is_some_and(|t| t == b"kernel") {
                    continue;
                }
                let Some(message) = entry.text("MESSAGE") else { continue };
                let time = i64::try_from(entry.realtime)
                    .ok()
                    .and_then(|us| jiff::Timestamp::from_microsecond(us).ok())
                    .unwrap_or(now);
                let program = entry.text("SYSLOG_IDENTIFIER").or_else(|| entry.text("_COMM")).unwrap_or_default();
                let pid = entry.text("SYSLOG_PID").or_else(|| entry.text("_PID")).and_then(|p| p.parse().ok());
                let host = entry.text("_HOSTNAME").unwrap_or_default();
                let parsed = if entry.cut {
                    Parsed::Unparsed
                } else {
                    self.parser.parse_entry(&program, pid, &host, &message, time)
                };
                match parsed {
                    Parsed::Event(e) => {
                        let found = self.brute.observe(&e);
                        out(e.with("journalSeqnum", entry.seqnum));
                        if let Some(f) = found {
                            out(f);
                        }
                    }
                    Parsed::Ignored => {}
                    Parsed::Unparsed => {
                        unparsed();
                        let raw = entry.fields.get("MESSAGE").map_or(&[][..], Vec::as_slice);
                        out(Event::unparsed(now, "journal", raw)
                            .with("program", program)
                            .with("cut", entry.cut.then_some(true)));
                    }
                }
            }
        }
        for (name, tail, log) in &mut self.utmp {
            let mut records = Vec::new();
            let _ = tail.poll(&mut |r, _| records.push(r.to_vec()));
            for r in records {
                match utmp::parse(&r) {
                    Some(u) => {
                        if let Some(e) = utmp::to_event(&u, *log) {
                            let found = if self.btmp_counts { self.brute.observe(&e) } else { None };
                            out(e);
                            if let Some(f) = found {
                                out(f);
                            }
                        }
                    }
                    None => {
                        unparsed();
                        out(Event::unparsed(now, name, &r));
                    }
                }
            }
        }
    }

    /// The positions to save.
    pub fn positions(&self) -> Positions {
        let mut p = Positions::default();
        for (name, tail) in &self.logs {
            if let Some(pos) = tail.position() {
                p.0.insert(name.clone(), pos);
            }
        }
        for (name, tail, _) in &self.utmp {
            if let Some(pos) = tail.position() {
                p.0.insert(name.clone(), pos);
            }
        }
        p
    }
}

/// Socket table reads turned into events.
pub struct NetFollower {
    tracker: Tracker,
    outbound: bool,
    last: Option<(Vec<u64>, Instant)>,
}

impl NetFollower {
    /// A follower; `outbound` reports outbound connections too.
    pub fn new(cfg: &crate::config::NetworkEvents) -> Self {
        Self { tracker: Tracker::new(cfg.outbound_dedup), outbound: cfg.outbound, last: None }
    }

    /// One read of the tables; `report_existing` lists current listeners (a scan). The tables
    /// are read only when the [`fingerprint`](super::netconn::fingerprint) moved, or a minute
    /// passed since the last read (two changes that cancel out in the counts).
    pub fn poll(&mut self, root: &HostRoot, users: &Users, report_existing: bool, out: &mut dyn FnMut(Event)) -> usize {
        let print = super::netconn::fingerprint(root);
        if !report_existing
            && let (Some(p), Some((last, at))) = (&print, &self.last)
            && p == last
            && at.elapsed() < Duration::from_secs(60)
        {
            return 0;
        }
        self.last = print.map(|p| (p, Instant::now()));
        let (sockets, bad) = read_sockets(root);
        let now = jiff::Timestamp::now();
        let changes = self.tracker.update(&sockets, now, report_existing);
        let outbound: &[_] = if self.outbound { &changes.outbound } else { &[] };
        let inodes = changes.listening.iter().chain(outbound).map(|s| s.inode).filter(|i| *i != 0).collect();
        let owner = owners(root, &inodes);
        let describe = |kind, s: &super::netconn::Socket| {
            let e = socket_event(kind, s, now);
            match owner.get(&s.inode) {
                Some(pid) => {
                    let info = ProcInfo::read(root, *pid);
                    let mut e = info.describe(e, users);
                    e.details.remove("uid");
                    e.with("uid", s.uid)
                }
                None => e,
            }
        };
        for s in &changes.listening {
            out(describe(EventType::NetListen, s));
        }
        for s in outbound {
            out(describe(EventType::NetOutbound, s));
        }
        for (proto, addr) in &changes.closed {
            out(Event::new(
                EventType::NetListenClosed,
                now,
                format!("{} {} no longer listening", proto.as_str(), addr),
            )
            .with("protocol", proto.as_str())
            .with("localAddress", addr.ip().to_string())
            .with("localPort", u32::from(addr.port())));
        }
        bad
    }
}

fn polled_sources(
    cfg: &EventsConfig,
    root: &HostRoot,
    state_dir: Option<&Path>,
    mut em: Polled,
    stop: &AtomicBool,
    states: &Mutex<SourceStates>,
) {
    let positions_file = state_dir.map(|d| d.join("log-positions.json"));
    let saved = positions_file.as_deref().map(Positions::load).unwrap_or_default();
    let users = Users::read(root, &mut crate::proc::ReadErrors::default());
    let cursor_file = state_dir.map(|d| d.join("journal-cursor.json"));
    let saved_cursor: Option<super::journal::Cursor> =
        cursor_file.as_deref().and_then(|f| std::fs::read(f).ok()).and_then(|b| serde_json::from_slice(&b).ok());
    let mut auth = cfg.auth.enabled.then(|| AuthFollower::new(&cfg.auth, root, &saved, saved_cursor, StartAt::End));
    let mut last_cursor = None;
    let mut journal_problems: Option<Vec<String>> = None;
    let mut net = cfg.network.enabled.then(|| NetFollower::new(&cfg.network));
    let mut clock = cfg.clock.enabled.then(|| super::clock::ClockWatch::new(cfg.clock.max_offset.as_secs_f64()));
    let mut unreadable_files = Vec::new();
    if auth.is_some() {
        // Say which files exist but cannot be read: a silent source is worse than none.
        let mut files: Vec<&String> = cfg.auth.logs.iter().collect();
        files.extend([&cfg.auth.wtmp, &cfg.auth.btmp].into_iter().filter(|p| !p.is_empty()));
        let unreadable: Vec<String> = files
            .iter()
            .filter_map(|p| match std::fs::File::open(root.host_path(p)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Some(format!("{p}: {e}")),
                _ => None,
            })
            .collect();
        let text = auth_state_text(&files, auth.as_ref().and_then(AuthFollower::journal_dirs).as_deref(), &unreadable);
        let state = if unreadable.is_empty() { SourceState::On } else { SourceState::Degraded };
        set_state(states, Source::Auth, state, auth_mode(auth.as_ref()), text);
        unreadable_files = unreadable;
    }
    if net.is_some() {
        set_state(
            states,
            Source::Network,
            SourceState::On,
            "poll",
            format!(
                "looking at the socket counters every {:?}, reading the socket tables when they moved",
                cfg.network.interval
            ),
        );
    }
    if clock.is_some() {
        set_state(states, Source::Clock, SourceState::On, "adjtimex", "watching the kernel clock state");
    }
    let (mut next_auth, mut next_net, mut next_clock, mut next_save) =
        (Instant::now(), Instant::now(), Instant::now(), Instant::now());
    let mut last_saved = Positions::default();
    while !stop.load(Ordering::Relaxed) && !em.auth.is_closed() {
        let now = Instant::now();
        if let Some(a) = auth.as_mut()
            && now >= next_auth
        {
            next_auth = now + cfg.auth.poll_interval;
            let stats = &em.auth;
            let mut unparsed = 0;
            let mut out = Vec::new();
            a.poll(&mut |e| out.push(e), &mut || unparsed += 1);
            for _ in 0..unparsed {
                stats.count_unparsed();
            }
            for e in out {
                em.auth.emit(e);
            }
            if a.journal_more {
                next_auth = now; // a backlog: go on without waiting
            }
            if journal_problems.as_ref() != Some(&a.journal_problems) {
                // The journal's readability is part of the source's state.
                let mut files: Vec<&String> = cfg.auth.logs.iter().collect();
                files.extend([&cfg.auth.wtmp, &cfg.auth.btmp].into_iter().filter(|p| !p.is_empty()));
                let problems = [unreadable_files.clone(), a.journal_problems.clone()].concat();
                let text = auth_state_text(&files, a.journal_dirs().as_deref(), &problems);
                let state = if problems.is_empty() { SourceState::On } else { SourceState::Degraded };
                set_state(states, Source::Auth, state, auth_mode(Some(a)), text);
                journal_problems = Some(a.journal_problems.clone());
            }
            if now >= next_save
                && let (Some(f), Some(c)) = (&cursor_file, a.journal_cursor())
                && last_cursor.as_ref() != Some(c)
                && serde_json::to_vec(c).is_ok_and(|b| super::tail::write_atomic(f, &b).is_ok())
            {
                last_cursor = Some(c.clone());
            }
            if now >= next_save
                && let Some(f) = &positions_file
            {
                let p = a.positions();
                if p.0 != last_saved.0 && p.save(f).is_ok() {
                    last_saved = p;
                }
                next_save = now + Duration::from_secs(5);
            }
        }
        if let Some(n) = net.as_mut()
            && now >= next_net
        {
            next_net = now + cfg.network.interval;
            let mut out = Vec::new();
            let bad = n.poll(root, &users, false, &mut |e| out.push(e));
            for _ in 0..bad {
                em.network.count_unparsed();
            }
            for e in out {
                em.network.emit(e);
            }
        }
        if let Some(c) = clock.as_mut()
            && now >= next_clock
        {
            next_clock = now + Duration::from_secs(10);
            if let Some(state) = crate::clock::read() {
                for e in c.observe(&state, jiff::Timestamp::now()) {
                    em.clock.emit(e);
                }
            }
        }
        let next =
            [auth.as_ref().map(|_| next_auth), net.as_ref().map(|_| next_net), clock.as_ref().map(|_| next_clock)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + POLL_SLICE);
        std::thread::sleep(next.saturating_duration_since(Instant::now()).min(POLL_SLICE));
    }
    if let (Some(a), Some(f)) = (auth.as_ref(), &positions_file) {
        let _ = a.positions().save(f);
    }
    if let (Some(c), Some(f)) = (auth.as_ref().and_then(AuthFollower::journal_cursor), &cursor_file)
        && let Ok(b) = serde_json::to_vec(c)
    {
        let _ = super::tail::write_atomic(f, &b);
    }
}

/// How the auth source reads: files, the journal, or both.
fn auth_mode(a: Option<&AuthFollower>) -> &'static str {
    if a.is_some_and(|a| a.journal.is_some()) { "file+journal" } else { "file" }
}

/// The auth source's state in words: what it follows and what it cannot read.
fn auth_state_text(files: &[&String], journal: Option<&[PathBuf]>, problems: &[String]) -> String {
    let mut text = format!("following {}", files.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
    if let Some(dirs) = journal {
        let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        text.push_str(&format!("; the systemd journal in {}", dirs.join(", ")));
    }
    if !problems.is_empty() {
        text.push_str(&format!(" (cannot read {})", problems.join("; ")));
    }
    text
}

/// The events one scan can find without waiting: the kernel log since boot, the current auth
/// logs (with brute-force findings), what listens now, the clock, and, when a file baseline
/// was saved by a running agent, what differs from it. Writes nothing.
pub fn one_shot(config: &Config) -> Vec<Event> {
    let ev = &config.events;
    let root = HostRoot::new(config.host_root.clone());
    let mut out = Vec::new();
    if ev.kernel.enabled {
        let boot = boot_time(&root);
        let mut classifier = Classifier::default();
        let mut handle = |bytes: &[u8]| {
            if let Some(r) = parse_record(bytes)
                && let Some(e) = classifier.classify(&r, boot)
            {
                out.push(e);
            }
        };
        if std::fs::metadata(&ev.kernel.device).map(|m| m.is_file()).unwrap_or(false) {
            if let Ok(text) = std::fs::read(&ev.kernel.device) {
                split_records(&text).into_iter().for_each(&mut handle);
            }
        } else if let Ok(mut f) = open_kmsg(&ev.kernel.device, false) {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => handle(&buf[..n]),
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                    Err(_) => break,
                }
            }
        } else if let Ok(buf) = super::klog::read_all() {
            // No /dev/kmsg here (a container): the same records through syslog(2).
            for r in super::klog::Follower::default().poll(&buf).records {
                if let Some(e) = classifier.classify(&r, boot) {
                    out.push(e);
                }
            }
        }
    }
    let users = Users::read(&root, &mut crate::proc::ReadErrors::default());
    if ev.auth.enabled {
        // The journal of the last week (auth.log rotates weekly): a scan of a host that logs
        // only there sees what one of auth.log would.
        let week_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 7);
        let since = super::journal::Cursor {
            realtime: u64::try_from(week_ago.as_microsecond()).unwrap_or(0),
            ..Default::default()
        };
        let mut a = AuthFollower::new(&ev.auth, &root, &Positions::default(), Some(since), StartAt::Beginning);
        loop {
            a.poll(&mut |e| out.push(e), &mut || {});
            if !a.journal_more {
                break;
            }
        }
    }
    if ev.network.enabled {
        NetFollower::new(&ev.network).poll(&root, &users, true, &mut |e| out.push(e));
    }
    if ev.clock.enabled
        && let Some(state) = crate::clock::read()
    {
        out.extend(
            super::clock::ClockWatch::new(ev.clock.max_offset.as_secs_f64()).observe(&state, jiff::Timestamp::now()),
        );
    }
    if ev.files.enabled
        && let Ok(settings) = file_settings(config)
    {
        let mut fim = Fim::new(root.clone(), settings);
        if fim.load(&ev.state_dir.join("fim-baseline.json")) {
            out.extend(fim.rescan(jiff::Timestamp::now(), true));
        }
    }
    out.sort_by_key(|e| e.time);
    for e in &mut out {
        if e.node.is_empty() {
            e.node = crate::proc::identity::node_name(&root, config.node_name.as_deref());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::exec_parent;

    #[test]
    fn a_parent_read_after_the_process_was_reaped_is_taken_from_its_fork() {
        assert_eq!(exec_parent(Some(0), Some(4242)), Some(4242));
        assert_eq!(exec_parent(None, Some(4242)), Some(4242));
        // Reparented between fork and exec: /proc is newer than the fork.
        assert_eq!(exec_parent(Some(1), Some(4242)), Some(1));
        assert_eq!(exec_parent(Some(0), None), Some(0));
        assert_eq!(exec_parent(None, None), None);
    }
}
