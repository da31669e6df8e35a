//! The process source: the process connector, else polling /proc.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::{SourceStates, set_state, stopped};
use crate::Event;
use crate::cnproc::Stamp;
use crate::overlap::{self, Gate, Held, Reported};
use crate::process::{Poller, ProcInfo, exit_event, list_pids, start_event};
use crate::queue::POLL_SLICE;
use crate::{Emitter, Source};
use vigil_agent_config::{ProcessEvents, ProcessMode};
use vigil_crds::SourceState;
use vigil_host::host::HostRoot;
use vigil_host::proc::processes::Users;

pub(super) fn process_source(
    cfg: &ProcessEvents,
    root: &HostRoot,
    state_dir: Option<&Path>,
    mut emitter: Emitter,
    stop: Arc<AtomicBool>,
    states: &Mutex<SourceStates>,
) {
    if cfg.mode != ProcessMode::Poll {
        match crate::cnproc::Listener::open() {
            Ok(listener) => {
                let detail = format!(
                    "process connector (netlink), receive buffer {} KiB{}",
                    listener.receive_buffer / 1024,
                    if listener.receive_buffer < 1 << 20 {
                        " (capped by net.core.rmem_max: bursts may overrun it, counted as overflow)"
                    } else {
                        ""
                    }
                );
                set_state(states, Source::Process, SourceState::On, "netlink", detail);
                let boot = crate::journal::boot_id_hex(&root.proc());
                let sink = Mutex::new(Sink::Live(Box::new(Live {
                    emitter,
                    stop,
                    gate: Gate::new(monotonic_ns(), None),
                    leave: state_dir.map(|d| (d.join(overlap::FILE), boot)),
                    recover: false,
                })));
                return follow(listener, root, &sink, &AtomicBool::new(false));
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
    let users = Users::read(root, &mut vigil_host::proc::ReadErrors::default());
    let mut poller = Poller::default();
    let proc_dir = root.proc();
    let mut next = Instant::now();
    while !stopped(&stop, &emitter) {
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

/// The kernel's monotonic clock in ns, the clock of the process connector's stamps.
pub(crate) fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// Where the process connector's events go.
enum Sink {
    /// Another agent works on the node: held until this one takes over.
    Held(Held<Event>),
    /// This agent works on the node: reported.
    Live(Box<Live>),
}

/// A working agent's end of the process connector.
struct Live {
    emitter: Emitter,
    stop: Arc<AtomicBool>,
    gate: Gate,
    /// Where to leave what this one handled when it stops (with the boot it is about).
    leave: Option<(PathBuf, String)>,
    /// Losses found while holding that the agent before could not cover: look in /proc.
    recover: bool,
}

/// What one message read means.
enum Read {
    /// An event to report.
    Event(Option<Stamp>, Event),
    /// A message that reports nothing (a fork, a thread's exit), noted as read.
    Quiet(Stamp),
    /// `n` messages lost, found at `at` (the kernel's monotonic clock).
    Lost { at: u64, n: u64 },
}

impl Sink {
    fn stopped(&self) -> bool {
        match self {
            Sink::Held(_) => false,
            Sink::Live(l) => stopped(&l.stop, &l.emitter),
        }
    }

    fn put(&mut self, read: Read) {
        match (self, read) {
            // Held: only what the kernel stamped (no /proc recovery while another agent works).
            (Sink::Held(h), Read::Event(Some(s), e)) => {
                let size = e.approx_bytes();
                h.push(s, e, size);
            }
            (Sink::Held(_), Read::Event(None, _) | Read::Quiet(_)) => {}
            (Sink::Held(h), Read::Lost { at, n }) => h.lost(at, n),
            (Sink::Live(l), Read::Event(stamp, e)) => {
                if l.gate.pass(stamp) {
                    l.emitter.emit(e);
                }
            }
            (Sink::Live(l), Read::Quiet(s)) => l.gate.note(s),
            (Sink::Live(l), Read::Lost { at, n }) => {
                l.gate.lost(at);
                l.emitter.count_lost(n);
            }
        }
    }

    /// Lets time pass for the record of handled messages (a working agent's only).
    fn expire(&mut self, now: u64) {
        if let Sink::Live(l) = self {
            l.gate.expire(now);
        }
    }

    /// Whether to look in /proc for processes whose messages were lost (never while holding),
    /// and a loss found while holding asks for it once.
    fn may_recover(&mut self, lost_since: bool) -> bool {
        match self {
            Sink::Held(_) => false,
            Sink::Live(l) => lost_since || std::mem::take(&mut l.recover),
        }
    }

    /// The listener closed at `until`: a working agent leaves what it handled for the next.
    fn finish(&mut self, until: u64) {
        if let Sink::Live(l) = self
            && let Some((file, boot)) = &l.leave
            && !boot.is_empty()
            && let Ok(bytes) = serde_json::to_vec(&l.gate.reported(boot, until))
        {
            let _ = crate::tail::write_atomic_sync(file, &bytes, false);
        }
    }
}

/// The process connector opened before this agent works on its node: while it asks for the
/// node during a handover, so that from then on one of the two agents always listens. What it
/// reads is held (the newest 10 s, at most 4 MiB: [`overlap::HOLD_NS`], [`overlap::HOLD_BYTES`])
/// until [`crate::runner::start_after`] takes it over; dropped before, it closes
/// (its thread ends within a poll slice).
pub struct EarlyProcess {
    sink: Arc<Mutex<Sink>>,
    own_stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    receive_buffer: usize,
    since: u64,
}

impl EarlyProcess {
    /// Opens the process connector and starts holding what it reads; `None` when the process
    /// source is off, polls, or the connector cannot be opened (the source then starts as usual
    /// when the agent works).
    pub fn open(cfg: &ProcessEvents, root: &HostRoot) -> Option<Self> {
        if !cfg.enabled || cfg.mode == ProcessMode::Poll {
            return None;
        }
        let listener = crate::cnproc::Listener::open().ok()?;
        let receive_buffer = listener.receive_buffer;
        let since = monotonic_ns();
        let sink = Arc::new(Mutex::new(Sink::Held(Held::default())));
        let own_stop = Arc::new(AtomicBool::new(false));
        let (s, o, r) = (sink.clone(), own_stop.clone(), root.clone());
        let thread =
            std::thread::Builder::new().name("vigil-proc".into()).spawn(move || follow(listener, &r, &s, &o)).ok()?;
        Some(Self { sink, own_stop, thread: Some(thread), receive_buffer, since })
    }
}

impl Drop for EarlyProcess {
    /// Not taken over: its thread stops at its next look (within a poll slice) and closes the
    /// listener; nobody waits for it (dropped on the async runtime's thread).
    fn drop(&mut self) {
        if self.thread.take().is_some() {
            self.own_stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Takes over an early listener: what it held that the agent before did not handle (the record
/// it left in `state_dir`, read once and removed) is reported, and it reports on. Returns its
/// thread.
pub(super) fn take_over(
    mut early: EarlyProcess,
    root: &HostRoot,
    state_dir: Option<&Path>,
    emitter: Emitter,
    stop: Arc<AtomicBool>,
    states: &Mutex<SourceStates>,
) -> Option<JoinHandle<()>> {
    let boot = crate::journal::boot_id_hex(&root.proc());
    let record = state_dir.map(|d| d.join(overlap::FILE));
    let before = record
        .as_deref()
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|b| Reported::parse(&b, &boot, early.since, monotonic_ns()));
    if let Some(f) = &record {
        let _ = std::fs::remove_file(f);
    }
    let had_record = before.is_some();
    let Ok(mut sink) = early.sink.lock() else {
        early.own_stop.store(true, Ordering::Relaxed);
        return early.thread.take();
    };
    let live =
        Live { emitter, stop, gate: Gate::new(early.since, before), leave: record.zip(Some(boot)), recover: false };
    let Sink::Held(held) = std::mem::replace(&mut *sink, Sink::Live(Box::new(live))) else {
        return early.thread.take();
    };
    let (read, let_go, losses) = (held.len(), held.let_go, held.losses.clone());
    let mut reported = 0;
    let mut charged = 0;
    if let Sink::Live(l) = &mut *sink {
        for (stamp, e) in held.into_events() {
            if l.gate.pass(Some(stamp)) {
                reported += 1;
                l.emitter.emit(e);
            }
        }
        // Messages lost while the agent before still listened were its to count.
        charged = l.gate.take_held_losses(&losses);
        if charged > 0 {
            l.emitter.count_lost(charged);
            l.recover = true;
        }
    }
    drop(sink);
    set_state(
        states,
        Source::Process,
        SourceState::On,
        "netlink",
        format!(
            "process connector (netlink), receive buffer {} KiB, opened while the agent before this one worked: of {read} events read meanwhile, the {reported} it had not reported were reported{}{}{}",
            early.receive_buffer / 1024,
            if had_record { "" } else { " (it left no record of what it reported: all were)" },
            if let_go > 0 { format!("; {let_go} were let go past the 4 MiB held") } else { String::new() },
            if charged > 0 { format!("; {charged} messages lost after it stopped") } else { String::new() },
        ),
    );
    early.thread.take()
}

/// Follows the process connector into `sink` until the sink's agent stops (or, while it
/// holds, until `own_stop`).
fn follow(mut listener: crate::cnproc::Listener, root: &HostRoot, sink: &Mutex<Sink>, own_stop: &AtomicBool) {
    use crate::cnproc::ProcEvent;
    let users = Users::read(root, &mut vigil_host::proc::ReadErrors::default());
    let mut known = crate::process::Known::new(65_536);
    // Processes that start from now on (in clock ticks since boot, as /proc/PID/stat counts) are
    // the agent's to report; after a loss it looks in /proc for those it has not seen (see
    // `recover`).
    let baseline = vigil_host::proc::system::uptime(root, &mut vigil_host::proc::ReadErrors::default())
        .map_or(0, |up| (up * vigil_host::proc::cpu::HostInfo::current().ticks_per_second() as f64) as u64);
    let (mut lost_since, mut last_recovery) = (false, None::<Instant>);
    let mut unexplained_overrun = false;
    // Parent of each new process from its fork, for a process gone before its exec was read.
    let mut parents = crate::process::Known::new(65_536);
    let mut out: Vec<Read> = Vec::new();
    loop {
        if own_stop.load(Ordering::Relaxed) || sink.lock().map_or(true, |s| s.stopped()) {
            break;
        }
        let Ok(events) = listener.recv(POLL_SLICE) else { break };
        let caught_up = events.is_empty();
        for (stamp, ev) in events {
            let now = jiff::Timestamp::now();
            let quiet = |out: &mut Vec<Read>| {
                if let Some(s) = stamp {
                    out.push(Read::Quiet(s));
                }
            };
            match ev {
                ProcEvent::Fork { parent_tgid, child_pid, child_tgid } if child_pid == child_tgid => {
                    parents.insert(ProcInfo { pid: child_pid, ppid: Some(parent_tgid), ..ProcInfo::default() });
                    quiet(&mut out);
                }
                ProcEvent::Exec { pid, tgid } if pid == tgid => {
                    let mut info = ProcInfo::read(root, pid);
                    if let Some(p) = parents.remove(pid) {
                        info.ppid = exec_parent(info.ppid, p.ppid);
                    }
                    out.push(Read::Event(stamp, start_event(&info, now, &users)));
                    known.insert(ProcInfo { cmdline: None, cgroup: None, ..info });
                }
                ProcEvent::Exit { pid, tgid, exit_code, .. } if pid == tgid => {
                    let forked_here = parents.remove(pid).is_some();
                    let info = match known.remove(pid) {
                        Some(info) => info,
                        // Forked since the agent started but never executed a program: it had
                        // no start event, so it gets no exit event either.
                        None if forked_here => {
                            quiet(&mut out);
                            continue;
                        }
                        // Running before the agent started: the zombie's stat may still name it.
                        None => {
                            let mut i = ProcInfo::read(root, pid);
                            i.cmdline = None;
                            i
                        }
                    };
                    out.push(Read::Event(stamp, exit_event(&info, Some(exit_code), now, &users)));
                }
                // How many messages an overrun cost shows as a gap in the sequence numbers.
                ProcEvent::Lost(n) => {
                    out.push(Read::Lost { at: stamp.map_or_else(monotonic_ns, |s| s.ns), n });
                    (lost_since, unexplained_overrun) = (true, false);
                }
                ProcEvent::Overrun => (lost_since, unexplained_overrun) = (true, true),
                _ => quiet(&mut out),
            }
        }
        let Ok(mut s) = sink.lock() else { break };
        for r in out.drain(..) {
            s.put(r);
        }
        if caught_up {
            s.expire(monotonic_ns());
        }
        // After a loss, what still runs of what was lost is found in /proc (at most once a
        // second): a flood that overruns the socket cannot hide a process that stays. Not
        // while holding: the agent working then looks itself.
        let recover_now = s.may_recover(lost_since);
        if !matches!(*s, Sink::Live(_)) {
            lost_since = false;
        }
        if recover_now && last_recovery.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
            lost_since = false;
            last_recovery = Some(Instant::now());
            for info in recover(root, &known, baseline) {
                s.put(Read::Event(None, start_event(&info, jiff::Timestamp::now(), &users).with("recovered", true)));
                known.insert(ProcInfo { cmdline: None, cgroup: None, ..info });
            }
        }
    }
    let until = monotonic_ns();
    drop(listener);
    if let Ok(mut s) = sink.lock() {
        // An overrun whose gap never showed (its CPU fell silent) still lost something.
        if unexplained_overrun {
            s.put(Read::Lost { at: until, n: 1 });
        }
        s.finish(until);
    }
}

/// Processes running now that started after `baseline` (clock ticks since boot) and that the
/// agent has not seen start: those whose exec message was lost.
fn recover(root: &HostRoot, known: &crate::process::Known, baseline: u64) -> Vec<ProcInfo> {
    let mut found: Vec<ProcInfo> = list_pids(&root.proc())
        .into_iter()
        .filter(|(pid, l)| l.starttime > baseline && !known.contains(*pid))
        .map(|(pid, _)| ProcInfo::read(root, pid))
        .filter(|i| i.starttime.is_some())
        .collect();
    found.sort_by_key(|i| i.pid);
    found
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
