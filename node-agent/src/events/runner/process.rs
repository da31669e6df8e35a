//! The process source: the process connector, else polling /proc.

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::{SourceStates, set_state, stopped};
use crate::config::ProcessMode;
use crate::events::process::{Poller, ProcInfo, exit_event, list_pids, start_event};
use crate::events::queue::POLL_SLICE;
use crate::events::{Emitter, Source};
use crate::host::HostRoot;
use crate::proc::processes::Users;
use vigil_crds::SourceState;

pub(super) fn process_source(
    cfg: &crate::config::ProcessEvents,
    root: &HostRoot,
    mut emitter: Emitter,
    stop: &AtomicBool,
    states: &Mutex<SourceStates>,
) {
    let users = Users::read(root, &mut crate::proc::ReadErrors::default());
    if cfg.mode != ProcessMode::Poll {
        match crate::events::cnproc::Listener::open() {
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
    mut listener: crate::events::cnproc::Listener,
    root: &HostRoot,
    users: &Users,
    mut emitter: Emitter,
    stop: &AtomicBool,
) {
    use crate::events::cnproc::ProcEvent;
    let mut known = crate::events::process::Known::new(65_536);
    // Processes that start from now on (in clock ticks since boot, as /proc/PID/stat counts) are
    // the agent's to report; after a loss it looks in /proc for those it has not seen (see
    // `recover`).
    let baseline = crate::proc::system::uptime(root, &mut crate::proc::ReadErrors::default())
        .map_or(0, |up| (up * procfs::ticks_per_second() as f64) as u64);
    let (mut lost_since, mut last_recovery) = (false, None::<Instant>);
    let mut unexplained_overrun = false;
    // Parent of each new process from its fork, for a process gone before its exec was read.
    let mut parents = crate::events::process::Known::new(65_536);
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
                // How many messages an overrun cost shows as a gap in the sequence numbers.
                ProcEvent::Lost(n) => {
                    emitter.count_lost(n);
                    (lost_since, unexplained_overrun) = (true, false);
                }
                ProcEvent::Overrun => (lost_since, unexplained_overrun) = (true, true),
                _ => {}
            }
        }
        // After a loss, what still runs of what was lost is found in /proc (at most once a
        // second): a flood that overruns the socket cannot hide a process that stays.
        if lost_since && last_recovery.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
            lost_since = false;
            last_recovery = Some(Instant::now());
            for info in recover(root, &known, baseline) {
                emitter.emit(start_event(&info, jiff::Timestamp::now(), users).with("recovered", true));
                known.insert(ProcInfo { cmdline: None, cgroup: None, ..info });
            }
        }
    }
    // An overrun whose gap never showed (its CPU fell silent) still lost something.
    if unexplained_overrun {
        emitter.count_lost(1);
    }
}

/// Processes running now that started after `baseline` (clock ticks since boot) and that the
/// agent has not seen start: those whose exec message was lost.
fn recover(root: &HostRoot, known: &crate::events::process::Known, baseline: u64) -> Vec<ProcInfo> {
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
