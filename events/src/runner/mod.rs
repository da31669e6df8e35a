//! Runs the event sources: one thread per blocking source (kernel log, process connector,
//! inotify) and one for the polled ones (auth logs, wtmp/btmp, sockets, clock). Each thread
//! waits at most [`POLL_SLICE`] at a time, so [`Sources::stop`] returns promptly.
//!
//! Also [`one_shot`], the events a single `scan --events` can find without waiting: the
//! kernel log since boot, the current auth logs, what listens now, the clock, and the
//! differences from a saved file baseline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod files;
mod kernel;
mod polled;
mod process;

pub use polled::{AuthFollower, NetFollower};
pub use process::EarlyProcess;

use crate::fim::{Fim, FimSettings};
use crate::queue::EventQueue;
use crate::tail::{Positions, StartAt};
use crate::{Emitter, Event, Source};
use vigil_agent_config::Config;
use vigil_crds::{SourceReport, SourceState};
use vigil_host::host::HostRoot;
use vigil_host::proc::processes::Users;

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
    /// Says in the log what each source does, for the states that changed since `seen` (which
    /// is brought up to date): polling instead of the process connector, a source off for want
    /// of a permission.
    pub fn report_changes(&self, seen: &mut SourceStates) {
        let now = self.states.lock().map(|s| s.clone()).unwrap_or_default();
        for line in now.changes(seen) {
            tracing::info!("events: {line}");
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

pub(crate) fn set_state(
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

/// Live sources opened before the agent works on its node: while it asks another agent for the
/// node during a handover, so that one of the two always listens (docs/adr/0005). The file
/// source needs none: it compares every watched path with the baseline the agent before it
/// saved after its last look, and places its watches before that comparison.
#[derive(Default)]
pub struct Early {
    /// The process connector, holding what it reads.
    pub process: Option<EarlyProcess>,
}

impl Early {
    /// Opens what `config` turns on and can be opened early.
    pub fn open(config: &Config) -> Self {
        let root = HostRoot::new(config.host_root.clone());
        let on = config.events.enabled;
        Self { process: on.then(|| EarlyProcess::open(&config.events.processes, &root)).flatten() }
    }
}

/// Starts the enabled sources; events go into `queue`.
pub fn start(config: &Config, queue: &EventQueue) -> Sources {
    start_after(config, queue, Early::default())
}

/// Starts the enabled sources, taking over those opened `early`; events go into `queue`.
pub fn start_after(config: &Config, queue: &EventQueue, early: Early) -> Sources {
    let ev = &config.events;
    let root = HostRoot::new(config.host_root.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let states = Arc::new(Mutex::new(SourceStates::default()));
    let mut threads = Vec::new();
    // The thread of a source opened early, which goes on.
    let mut adopted = None;
    let state_dir = usable_state_dir(&ev.state_dir);
    let mut spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        if let Ok(t) = std::thread::Builder::new().name(format!("vigil-{name}")).spawn(f) {
            threads.push(t);
        }
    };
    if ev.kernel.enabled {
        let (emitter, stop, states, device, root) = (
            queue.emitter_per_container(Source::Kernel, ev.kernel.rate_limit, ev.container_rate_limit),
            stop.clone(),
            states.clone(),
            ev.kernel.device.clone(),
            root.clone(),
        );
        let journal = journal_dirs(config, &root);
        let dir = state_dir.clone();
        spawn(
            "kmsg",
            Box::new(move || kernel::kernel_source(&device, &root, journal, dir.as_deref(), emitter, &stop, &states)),
        );
    }
    if ev.kernel.enabled && !ev.kernel.audit_log.is_empty() {
        let (emitter, stop, root) = (
            queue.emitter_per_container(Source::Kernel, ev.kernel.rate_limit, ev.container_rate_limit),
            stop.clone(),
            root.clone(),
        );
        let path = root.host_path(&ev.kernel.audit_log);
        spawn("audit", Box::new(move || kernel::audit_source(&path, &root, emitter, &stop)));
    }
    if ev.processes.enabled {
        let (emitter, stop, states, root, cfg, dir) = (
            queue.emitter_per_container(Source::Process, ev.processes.rate_limit, ev.container_rate_limit),
            stop.clone(),
            states.clone(),
            root.clone(),
            ev.processes.clone(),
            state_dir.clone(),
        );
        match early.process {
            Some(p) => adopted = process::take_over(p, &root, dir.as_deref(), emitter, stop, &states),
            None => spawn(
                "proc",
                Box::new(move || process::process_source(&cfg, &root, dir.as_deref(), emitter, stop, &states)),
            ),
        }
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
                    Box::new(move || {
                        files::file_source(&cfg, settings, &root, dir.as_deref(), emitter, &stop, &states)
                    }),
                );
            }
            Err(e) => set_state(&states, Source::File, SourceState::Off, "inotify", format!("bad file settings: {e}")),
        }
    }
    if ev.auth.enabled || ev.network.enabled || ev.clock.enabled {
        let emitters = polled::Polled {
            auth: queue.emitter(Source::Auth, ev.auth.rate_limit),
            network: queue.emitter_per_container(Source::Network, ev.network.rate_limit, ev.container_rate_limit),
            clock: queue.emitter(Source::Clock, crate::queue::RateLimit::new(1.0, 10)),
        };
        let (stop, states, root, cfg, dir) = (stop.clone(), states.clone(), root.clone(), ev.clone(), state_dir);
        spawn("poll", Box::new(move || polled::polled_sources(&cfg, &root, dir.as_deref(), emitters, &stop, &states)));
    }
    threads.extend(adopted);
    Sources { stop, threads, states }
}

/// The systemd journal's directories on the host (the auth source's setting: one journal).
fn journal_dirs(config: &Config, root: &HostRoot) -> Vec<PathBuf> {
    config.events.auth.journal_dirs.iter().map(|d| root.host_path(d)).collect()
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

pub(crate) fn stopped(stop: &AtomicBool, emitter: &Emitter) -> bool {
    stop.load(Ordering::Relaxed) || emitter.is_closed()
}

/// What one scan found: events, input it could not parse (counted per source; each also an
/// `agent.unparsed` event among the events), and what it could not read at all.
#[derive(Debug, Default)]
pub struct OneShot {
    /// The events, oldest first.
    pub events: Vec<Event>,
    /// Per source and reason, lines or records not understood.
    pub unparsed: std::collections::BTreeMap<(Source, crate::UnparsedReason), u64>,
    /// Sources that read nothing, and why (a missing file, a refused device): a typo in a
    /// path must not look like a quiet host.
    pub warnings: Vec<String>,
    /// Per source, records the host lost before they were read (each gap is also an
    /// `agent.lost` event among the events).
    pub lost: std::collections::BTreeMap<Source, u64>,
}

/// The events one scan can find without waiting: the kernel log since boot, the current auth
/// logs and the last week of the journal (with brute-force findings), what listens now, the
/// clock, and, when a file baseline was saved by a running agent, what differs from it.
/// Writes nothing.
pub fn one_shot(config: &Config) -> OneShot {
    let ev = &config.events;
    let root = HostRoot::new(config.host_root.clone());
    let mut found = OneShot::default();
    let mut out = Vec::new();
    if ev.kernel.enabled {
        let unparsed = &mut found.unparsed;
        let count = &mut |r| *unparsed.entry((Source::Kernel, r)).or_insert(0) += 1;
        match kernel::once(&ev.kernel.device, &root, journal_dirs(config, &root), &mut |e| out.push(e), count) {
            Ok(None) => {}
            Ok(Some(note)) => found.warnings.push(format!("kernel: {note}")),
            Err(why) => found.warnings.push(format!("kernel: nothing read: {why}")),
        }
        if !ev.kernel.audit_log.is_empty()
            && let Err(why) = kernel::audit_once(&root.host_path(&ev.kernel.audit_log), &root, &mut |e| out.push(e))
        {
            found.warnings.push(format!("kernel: {why}: denials auditd logs are not seen"));
        }
    }
    let users = Users::read(&root, &mut vigil_host::proc::ReadErrors::default());
    if ev.auth.enabled {
        // The journal of the last week (auth.log rotates weekly): a scan of a host that logs
        // only there sees what one of auth.log would.
        let week_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 7);
        let since = crate::journal::Cursor {
            realtime: u64::try_from(week_ago.as_microsecond()).unwrap_or(0),
            ..Default::default()
        };
        let mut a = AuthFollower::new(&ev.auth, &root, &Positions::default(), Some(since), StartAt::Beginning);
        loop {
            let unparsed = &mut found.unparsed;
            a.poll(&mut |e| out.push(e), &mut |r| *unparsed.entry((Source::Auth, r)).or_insert(0) += 1);
            if !a.journal_more {
                break;
            }
        }
        found.warnings.extend(a.problems(&ev.auth, &root).into_iter().map(|p| format!("auth: {p}")));
    }
    if ev.network.enabled {
        let bad = NetFollower::new(&ev.network).poll(&root, &users, true, &mut |e| out.push(e));
        found.unparsed.insert((Source::Network, crate::UnparsedReason::Malformed), bad as u64);
    }
    if ev.clock.enabled
        && let Some(state) = vigil_host::clock::read()
    {
        out.extend(
            crate::clock::ClockWatch::new(ev.clock.max_offset.as_secs_f64()).observe(&state, jiff::Timestamp::now()),
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
            e.node = vigil_host::proc::identity::node_name(&root, config.node_name.as_deref());
        }
    }
    found.unparsed.retain(|_, n| *n > 0);
    for e in out.iter().filter(|e| e.kind == crate::EventType::Lost) {
        let n = found.lost.entry(Source::Kernel).or_insert(0);
        *n = n.saturating_add(kernel::lost_records(e));
    }
    found.events = out;
    found
}
