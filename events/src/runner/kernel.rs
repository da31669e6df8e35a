//! The kernel log source: `/dev/kmsg`, else syslog(2), or a file in the kmsg format; the
//! same assembly of records ([`Assembler`]) and the same classification whether it follows
//! the log (`watch`, `run`) or reads it once (`scan --events`).

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::{SourceStates, boot_time, set_state, stopped};
use crate::kmsg::{Assembler, Classifier, Piece};
use crate::process::wait_readable;
use crate::queue::POLL_SLICE;
use crate::tail::{StartAt, Tail, Unit};
use crate::{Emitter, Event, EventType, Source, UnparsedReason};
use vigil_crds::SourceState;
use vigil_host::host::HostRoot;

/// The longest line of a kernel log file kept whole (the kernel's own records are at most
/// 1 KiB of text plus the dictionary).
const MAX_FILE_LINE: usize = 8192;

/// Records and unparsed input turned into events; the classifier keeps what the kernel
/// spreads over records (an OOM kill's context, a crash's `BUG:` then `Oops:`).
pub(super) struct Kernel {
    boot: jiff::Timestamp,
    classifier: Classifier,
    assembler: Assembler,
    pieces: Vec<Piece>,
    /// The host whose processes a security module's denial names (`None`: not looked up).
    host: Option<HostRoot>,
}

impl Kernel {
    pub(super) fn new(boot: jiff::Timestamp) -> Self {
        Self {
            boot,
            classifier: Classifier::default(),
            assembler: Assembler::default(),
            pieces: Vec::new(),
            host: None,
        }
    }

    /// As [`Kernel::new`], finding the cgroup (and so the pod) of the process an AppArmor,
    /// SELinux or seccomp record names in `root`'s `/proc`.
    pub(super) fn on_host(boot: jiff::Timestamp, root: &HostRoot) -> Self {
        Self { host: Some(root.clone()), ..Self::new(boot) }
    }

    /// Hands what was assembled so far (everything when `flush`) to `out`, and each unparsed
    /// piece to `unparsed` too (the counter).
    fn drain(&mut self, flush: bool, out: &mut dyn FnMut(Event), unparsed: &mut dyn FnMut(UnparsedReason)) {
        if flush {
            self.assembler.flush(&mut self.pieces);
        }
        classify_pieces(&mut self.classifier, self.boot, self.host.as_ref(), &mut self.pieces, out, unparsed);
    }

    /// Each event goes to the emitter as it is made (a storm's records are not all held as
    /// events at once: most are dropped by the rate limit a moment later).
    fn send(&mut self, flush: bool, emitter: &mut Emitter) {
        if flush {
            self.assembler.flush(&mut self.pieces);
        }
        emit_pieces(&mut self.classifier, self.boot, self.host.as_ref(), &mut self.pieces, emitter);
    }
}

/// The pieces assembled so far, classified, to `out` (and each unparsed one to `unparsed`).
fn classify_pieces(
    classifier: &mut Classifier,
    boot: jiff::Timestamp,
    host: Option<&HostRoot>,
    pieces: &mut Vec<Piece>,
    out: &mut dyn FnMut(Event),
    unparsed: &mut dyn FnMut(UnparsedReason),
) {
    for piece in pieces.drain(..) {
        match piece {
            Piece::Record(r) => {
                if let Some(mut e) = classifier.classify(&r, boot) {
                    // A record from the future (a clock that was ahead) names no process now.
                    let past = boot
                        .checked_add(jiff::SignedDuration::from_micros(i64::try_from(r.ts_usec).unwrap_or(i64::MAX)))
                        .is_ok_and(|t| t <= jiff::Timestamp::now());
                    if let Some(root) = host
                        && past
                        && ACTOR_KINDS.contains(&e.kind)
                        && let Some(pid) = e.detail_i64("pid")
                        && let Some(cgroup) = process_cgroup(root, pid, r.ts_usec)
                    {
                        if let Some(id) = vigil_host::proc::processes::container_id(&cgroup) {
                            e = e.with("containerId", id);
                        }
                        e = e.with("cgroup", cgroup);
                    }
                    out(e);
                }
            }
            Piece::Unparsed(bytes, reason) => {
                unparsed(reason);
                out(Event::unparsed(jiff::Timestamp::now(), "kmsg", reason, &bytes));
            }
            Piece::Lost { records, after, next } => {
                out(crate::kmsg::lost_event(records, after, next, jiff::Timestamp::now()));
            }
        }
    }
}

/// [`classify_pieces`] into `emitter`, losses and unparsed input counted.
fn emit_pieces(
    classifier: &mut Classifier,
    boot: jiff::Timestamp,
    host: Option<&HostRoot>,
    pieces: &mut Vec<Piece>,
    emitter: &mut Emitter,
) {
    let mut unparsed = Vec::new();
    classify_pieces(
        classifier,
        boot,
        host,
        pieces,
        &mut |e| {
            if e.kind == EventType::Lost {
                emitter.count_lost(lost_records(&e));
            }
            emitter.emit(e);
        },
        &mut |r| unparsed.push(r),
    );
    for r in unparsed {
        emitter.count_unparsed(r);
    }
}

/// The most records a follow holds before it classifies and sends them: a storm's read is
/// worked off in slices, not held whole.
const MAX_HELD: usize = 256;

/// The kernel events whose `pid` is the process that acted or hung (and whose pod it is).
const ACTOR_KINDS: [EventType; 4] =
    [EventType::AppArmorDenied, EventType::SelinuxDenied, EventType::Seccomp, EventType::HungTask];

/// The cgroup of process `pid` in `root`'s `/proc`, if it is the process a record of
/// `record_usec` (µs since boot) named: one started after the record is another process that
/// got the number since, and is not taken for it.
fn process_cgroup(root: &HostRoot, pid: i64, record_usec: u64) -> Option<String> {
    let dir = root.proc().join(pid.to_string());
    let stat = vigil_host::proc::processes::parse_stat(&std::fs::read(dir.join("stat")).ok()?)?;
    let ticks = vigil_host::proc::cpu::HostInfo::current().ticks_per_second().max(1);
    if stat.starttime.saturating_mul(1_000_000) / ticks > record_usec {
        return None;
    }
    vigil_host::proc::processes::cgroup_path(&std::fs::read_to_string(dir.join("cgroup")).ok()?)
}

/// How many records an `agent.lost` event counts (at least one).
pub(crate) fn lost_records(e: &Event) -> u64 {
    e.details.get("atLeast").and_then(serde_json::Value::as_u64).unwrap_or(1)
}

/// Where the kernel log was read to, kept in the state directory so that the next agent on
/// this boot reads what was printed while none ran (a rollout's handover, a restart), and no
/// record twice.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Position {
    /// The boot the numbers are of (`/proc/sys/kernel/random/boot_id`).
    boot_id: String,
    /// `/dev/kmsg`: the sequence number of the last record read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    /// syslog(2): the last record returned, by its time and a hash of its message
    /// ([`crate::klog::fingerprint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<(u64, u64)>,
}

/// The saved [`Position`] in `file` and this boot's id: the saved one only if it is of this
/// boot.
struct Saved {
    file: Option<PathBuf>,
    boot_id: String,
    last: Position,
    next_save: Instant,
}

impl Saved {
    fn new(state_dir: Option<&Path>, root: &HostRoot) -> Self {
        let boot_id = crate::journal::boot_id_hex(&root.proc());
        let file = state_dir.filter(|_| !boot_id.is_empty()).map(|d| d.join("kernel-position.json"));
        let last = file
            .as_deref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice::<Position>(&b).ok())
            .filter(|p| p.boot_id == boot_id)
            .unwrap_or_default();
        Self { file, boot_id, last, next_save: Instant::now() }
    }

    /// Writes `seq` or `time` when they moved (at most every 5 s unless `now`).
    fn save(&mut self, seq: Option<u64>, last: Option<(u64, u64)>, now: bool) {
        let Some(file) = &self.file else { return };
        let p = Position { boot_id: self.boot_id.clone(), seq, last };
        if p == self.last || (!now && Instant::now() < self.next_save) || (seq.is_none() && last.is_none()) {
            return;
        }
        self.next_save = Instant::now() + Duration::from_secs(5);
        if let Ok(b) = serde_json::to_vec(&p)
            && crate::tail::write_atomic_sync(file, &b, false).is_ok()
        {
            self.last = p;
        }
    }
}

pub(super) fn kernel_source(
    device: &Path,
    root: &HostRoot,
    journal: Vec<PathBuf>,
    state_dir: Option<&Path>,
    mut emitter: Emitter,
    stop: &AtomicBool,
    states: &Mutex<SourceStates>,
) {
    let mut kernel = Kernel::on_host(boot_time(root), root);
    let mut saved = Saved::new(state_dir, root);
    let is_file = std::fs::metadata(device).map(|m| m.is_file()).unwrap_or(false);
    if is_file {
        set_state(states, Source::Kernel, SourceState::On, "file", format!("following {}", device.display()));
        let mut tail = Tail::open(device, Unit::Lines { max: MAX_FILE_LINE }, None, StartAt::End);
        while !stopped(stop, &emitter) {
            let Kernel { assembler, pieces, classifier, boot, host } = &mut kernel;
            let _ = tail.poll(&mut |line, cut| {
                file_line(assembler, line, cut, pieces);
                if pieces.len() >= MAX_HELD {
                    emit_pieces(classifier, *boot, host.as_ref(), pieces, &mut emitter);
                }
            });
            kernel.send(true, &mut emitter);
            std::thread::sleep(POLL_SLICE);
        }
        return;
    }
    // From where the agent before this one stopped on this boot, else from the end (history
    // is not news).
    // A saved number past the ring's last record is not this ring's (a file from elsewhere,
    // or damaged): it would pass over every record to come.
    // (Looked up only when there is a saved number: without one, the ring is read to its end
    // once, below.)
    let resume = saved.last.seq.filter(|s| {
        let newest = open_kmsg(device, false).ok().and_then(|mut f| last_seq_in(&mut f));
        if let Some(n) = newest.filter(|n| s > n) {
            tracing::warn!(
                "kernel: the saved position (record {s}) is past the kernel log's last record ({n}): reading from the end"
            );
        }
        newest.is_some_and(|n| *s <= n)
    });
    let mut file = match open_kmsg(device, false) {
        Ok(f) => f,
        Err(e) => return syslog_loop(device, &e, root, journal, &mut kernel, &mut saved, emitter, stop, states),
    };
    match resume {
        Some(seq) => kernel.assembler.resume_after(seq),
        // The end, by its number: read past what the buffer holds, keeping the last record's
        // number, and saved at once (a quiet node's next agent goes on from here too).
        None => {
            if let Some(seq) = last_seq_in(&mut file) {
                kernel.assembler.resume_after(seq);
                saved.save(Some(seq), None, true);
            }
        }
    }
    let from = resume.map_or_else(String::new, |s| format!(" from record {} on", s.saturating_add(1)));
    set_state(states, Source::Kernel, SourceState::On, "kmsg", format!("reading {}{from}", device.display()));
    let mut buf = vec![0u8; 16 * 1024];
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
                    // A gap in the sequence numbers is found and counted by the assembly.
                    kernel.assembler.record(&buf[..n], &mut kernel.pieces);
                    kernel.send(false, &mut emitter);
                }
                // The ring buffer overwrote records we had not read; the next read goes on, and
                // its sequence number says how many were lost.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        // Nothing more to read for now: a fragment waiting for its continuation goes out.
        kernel.send(true, &mut emitter);
        saved.save(kernel.assembler.last_seq(), None, false);
    }
    saved.save(kernel.assembler.last_seq(), None, true);
}

/// Reads `file` (`/dev/kmsg` opened at its start, non-blocking) to its end: the sequence
/// number of its last record.
fn last_seq_in(file: &mut std::fs::File) -> Option<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut last = None;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => last = crate::kmsg::parse_record(&buf[..n]).map(|r| r.seq).or(last),
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(_) => break,
        }
    }
    last
}

/// A line of a kernel log file: a cut one (longer than any record) is unparsed as a whole,
/// never parsed from its head.
fn file_line(assembler: &mut Assembler, line: &[u8], cut: bool, pieces: &mut Vec<Piece>) {
    if cut {
        assembler.flush(pieces);
        pieces.push(Piece::Unparsed(line.to_vec(), UnparsedReason::Cut));
    } else {
        assembler.line(line, pieces);
    }
}

/// Reads the kernel log with syslog(2) where the device cannot be opened (an unprivileged
/// container's device cgroup refuses `/dev/kmsg`; `CAP_SYSLOG` is enough for this).
#[allow(clippy::too_many_arguments)] // the source's parts, passed on once
fn syslog_loop(
    device: &Path,
    open_error: &std::io::Error,
    root: &HostRoot,
    journal: Vec<PathBuf>,
    kernel: &mut Kernel,
    saved: &mut Saved,
    mut emitter: Emitter,
    stop: &AtomicBool,
    states: &Mutex<SourceStates>,
) {
    let mut follower = match crate::klog::read_all() {
        Ok(_) if let Some(last) = saved.last.last => crate::klog::Follower::resume(last),
        Ok(buf) => {
            let f = crate::klog::Follower::at_end(&buf);
            saved.save(None, f.position(), true);
            f
        }
        Err(e) => {
            let why = unreadable(device, open_error, &e);
            return journal_loop(&why, root, journal, kernel, emitter, stop, states);
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
        let Ok(buf) = crate::klog::read_all() else { continue };
        let poll = follower.poll(&buf);
        syslog_pieces(kernel, poll);
        kernel.send(true, &mut emitter);
        saved.save(None, follower.position(), false);
    }
    saved.save(None, follower.position(), true);
}

/// Reads the kernel's records from the systemd journal (journald copies the ring buffer into
/// it) where neither the device nor syslog(2) can be read: later than from the kernel (as
/// journald writes them), but nothing is missed.
fn journal_loop(
    why: &str,
    root: &HostRoot,
    dirs: Vec<PathBuf>,
    kernel: &mut Kernel,
    mut emitter: Emitter,
    stop: &AtomicBool,
    states: &Mutex<SourceStates>,
) {
    use crate::journal;
    let shown = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
    let mut follower = journal::Follower::new(dirs, None, true);
    if follower.list().is_empty() {
        set_state(
            states,
            Source::Kernel,
            SourceState::Off,
            "kmsg",
            format!("{why}; no journal files in {shown} either"),
        );
        return;
    }
    let boot = journal::current_boot_id(&root.proc());
    set_state(
        states,
        Source::Kernel,
        SourceState::Degraded,
        "journal",
        format!("reading the kernel's records from the systemd journal in {shown}, as journald copies them ({why})"),
    );
    while !stopped(stop, &emitter) {
        let more = journal_pieces(kernel, &mut follower, boot);
        kernel.send(true, &mut emitter);
        if !more {
            std::thread::sleep(POLL_SLICE.max(Duration::from_millis(500)));
        }
    }
}

/// One read of the journal's kernel records (of boot `boot`) into the assembly; whether more
/// is waiting.
fn journal_pieces(kernel: &mut Kernel, follower: &mut crate::journal::Follower, boot: Option<[u8; 16]>) -> bool {
    use crate::journal;
    let poll = follower.poll(&journal::kernel_field);
    for r in poll.entries.iter().filter_map(|e| journal::kernel_record(e, boot)) {
        kernel.assembler.parsed(r, &mut kernel.pieces);
    }
    poll.more
}

fn syslog_pieces(kernel: &mut Kernel, poll: crate::klog::Poll) {
    if poll.wrapped {
        kernel.pieces.push(Piece::Lost { records: None, after: None, next: None });
    }
    for r in poll.records {
        kernel.assembler.parsed(r, &mut kernel.pieces);
    }
    kernel.pieces.extend(poll.unparsed.into_iter().map(|l| Piece::Unparsed(l, UnparsedReason::Malformed)));
}

/// Why neither the device nor syslog(2) can be read, and what would make it work.
fn unreadable(device: &Path, open_error: &std::io::Error, syslog_error: &std::io::Error) -> String {
    format!(
        "opening {}: {open_error}; syslog(2): {syslog_error} (needs CAP_SYSLOG, and a seccomp profile that allows syslog)",
        device.display()
    )
}

/// How often the syslog(2) reader looks at the ring buffer: each look copies the whole buffer
/// (typically 128 KiB to 1 MiB), so not in a tight loop; records are timestamped by the kernel,
/// so the delay changes only when an alert goes out, not what it says.
const SYSLOG_POLL: Duration = Duration::from_secs(1);

pub(super) fn open_kmsg(device: &Path, from_end: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(device)?;
    if from_end {
        // On /dev/kmsg, SEEK_END moves past the last record: only new ones are read.
        rustix::fs::seek(&file, rustix::fs::SeekFrom::End(0))?;
    }
    Ok(file)
}

/// auditd's log, followed from its end: where auditd runs, the kernel's records of AppArmor,
/// SELinux and seccomp go there and not to the kernel log. Its lines become the kernel records
/// they were ([`crate::kmsg::audit_log_record`]) and are classified, and their
/// processes attributed to pods, as the kernel log's are; its other records are not read. A
/// log that is missing is picked up when it appears (auditd started later); one that exists
/// but cannot be read is said once.
pub(super) fn audit_source(path: &Path, root: &HostRoot, mut emitter: Emitter, stop: &AtomicBool) {
    let mut kernel = Kernel::on_host(boot_time(root), root);
    if let Err(e) = std::fs::File::open(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), error = %e, "kernel: denials auditd logs are not seen");
    }
    let mut tail = Tail::open(path, Unit::Lines { max: MAX_FILE_LINE }, None, StartAt::End);
    let name = hostname(root);
    while !stopped(stop, &emitter) {
        let Kernel { pieces, classifier, boot, host, .. } = &mut kernel;
        let _ = tail.poll(&mut |line, cut| {
            audit_line(line, cut, *boot, name.as_deref(), pieces);
            if pieces.len() >= MAX_HELD {
                emit_pieces(classifier, *boot, host.as_ref(), pieces, &mut emitter);
            }
        });
        kernel.send(false, &mut emitter);
        std::thread::sleep(POLL_SLICE);
    }
}

/// One line of auditd's log: a record of a security module, or nothing (a cut line is
/// never parsed).
fn audit_line(line: &[u8], cut: bool, boot: jiff::Timestamp, host: Option<&str>, pieces: &mut Vec<Piece>) {
    if cut {
        return;
    }
    if let Some(r) = crate::kmsg::audit_log_record(&String::from_utf8_lossy(line), boot, host) {
        pieces.push(Piece::Record(r));
    }
}

/// auditd's whole log, once (`scan`): its denials as [`audit_source`] gives them.
pub(super) fn audit_once(path: &Path, root: &HostRoot, out: &mut dyn FnMut(Event)) -> Result<(), String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let mut kernel = Kernel::on_host(boot_time(root), root);
    let name = hostname(root);
    for line in text.split(|&b| b == b'\n') {
        audit_line(line, line.len() > MAX_FILE_LINE, kernel.boot, name.as_deref(), &mut kernel.pieces);
    }
    kernel.drain(false, out, &mut |_| {});
    Ok(())
}

/// The host's name (the kernel's, as auditd writes it in `node=`).
fn hostname(root: &HostRoot) -> Option<String> {
    let name = std::fs::read_to_string(root.proc_file("sys/kernel/hostname")).ok()?;
    Some(name.trim().to_owned()).filter(|n| !n.is_empty())
}

/// The kernel log since boot, read once by the way `watch` would follow it (the device, else
/// syslog(2); a file in the kmsg format as a whole): its events, unparsed input among them as
/// `agent.unparsed` (each counted in `unparsed`). `Err` says why nothing could be read; `Ok`
/// with a note says the device could not be opened and syslog(2) was read instead.
pub(super) fn once(
    device: &Path,
    root: &HostRoot,
    journal: Vec<PathBuf>,
    out: &mut dyn FnMut(Event),
    unparsed: &mut dyn FnMut(UnparsedReason),
) -> Result<Option<String>, String> {
    let mut kernel = Kernel::on_host(boot_time(root), root);
    if std::fs::metadata(device).map(|m| m.is_file()).unwrap_or(false) {
        let text = std::fs::read(device).map_err(|e| format!("reading {}: {e}", device.display()))?;
        let mut tail = Vec::new();
        // The same line rules as a follow: a line longer than any record is cut, never parsed.
        for line in text.split(|&b| b == b'\n') {
            let cut = line.len() > MAX_FILE_LINE;
            file_line(&mut kernel.assembler, &line[..line.len().min(MAX_FILE_LINE)], cut, &mut tail);
        }
        kernel.pieces = tail;
        kernel.drain(true, out, unparsed);
        return Ok(None);
    }
    let note = match open_kmsg(device, false) {
        Ok(mut f) => {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        kernel.assembler.record(&buf[..n], &mut kernel.pieces);
                        kernel.drain(false, out, unparsed);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                    Err(_) => break,
                }
            }
            None
        }
        Err(open_error) => match crate::klog::read_all() {
            // No /dev/kmsg here (a container): the same records through syslog(2).
            Ok(buf) => {
                syslog_pieces(&mut kernel, crate::klog::Follower::default().poll(&buf));
                Some(format!(
                    "opening {}: {open_error}; read the kernel ring buffer with syslog(2) instead",
                    device.display()
                ))
            }
            Err(e) => {
                // Nor syslog(2): this boot's kernel records in the journal, if there is one.
                use crate::journal;
                let why = unreadable(device, &open_error, &e);
                let since = journal::Cursor {
                    realtime: u64::try_from(kernel.boot.as_microsecond()).unwrap_or(0),
                    ..Default::default()
                };
                let mut follower = journal::Follower::new(journal, Some(since), false);
                if follower.list().is_empty() {
                    return Err(format!("{why}; no journal files either"));
                }
                let boot = journal::current_boot_id(&root.proc());
                loop {
                    let more = journal_pieces(&mut kernel, &mut follower, boot);
                    kernel.drain(false, out, unparsed);
                    if !more {
                        break;
                    }
                }
                Some(format!("{why}; read this boot's kernel records from the systemd journal instead"))
            }
        },
    };
    kernel.drain(true, out, unparsed);
    Ok(note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventType;
    use crate::journal::tests::{Builder, Store};

    #[test]
    fn a_ring_buffer_that_wrapped_between_two_syslog_reads_is_one_lost_event_and_counted() {
        // Two reads of syslog(2): the second no longer holds the last record the first saw.
        let first = b"<6>[    1.000000] one\n<6>[    2.000000] two\n";
        let second =
            b"<6>[    9.000000] nine\n<3>[   10.000000] nf_conntrack: nf_conntrack: table full, dropping packet\n";
        let mut follower = crate::klog::Follower::at_end(first);
        let mut kernel = Kernel::new(jiff::Timestamp::UNIX_EPOCH);
        syslog_pieces(&mut kernel, follower.poll(second));
        let (queue, mut rx) = crate::EventQueue::new(64, "node-a");
        let mut emitter = queue.emitter(Source::Kernel, crate::queue::RateLimit::new(100.0, 100));
        kernel.send(true, &mut emitter);
        let mut kinds = Vec::new();
        while let Ok(e) = rx.try_recv() {
            kinds.push((e.kind, e.detail_i64("atLeast")));
        }
        assert_eq!(kinds, [(EventType::Lost, Some(1)), (EventType::ConntrackFull, None)]);
        assert_eq!(queue.stats().lost(Source::Kernel), 1);
    }

    #[test]
    fn without_the_device_and_syslog_the_kernels_records_come_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("system.journal");
        let mut b = Builder::new(true);
        b.entry(
            1,
            &[("_TRANSPORT", b"kernel"), ("MESSAGE", b"old: EXT4-fs (sda1): Remounting filesystem read-only")],
            Store::Plain,
        );
        std::fs::write(&file, &b.bytes).unwrap();

        let (queue, mut rx) = crate::EventQueue::new(64, "node-a");
        let emitter = queue.emitter(Source::Kernel, crate::queue::RateLimit::new(100.0, 100));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let states = std::sync::Arc::new(Mutex::new(SourceStates::default()));
        let root = HostRoot::new(dir.path().join("no-host"));
        let (s2, st2, dirs) = (stop.clone(), states.clone(), vec![dir.path().to_owned()]);
        let t = std::thread::spawn(move || {
            let mut kernel = Kernel::new(jiff::Timestamp::UNIX_EPOCH);
            journal_loop(
                "opening /dev/kmsg: refused; syslog(2): refused",
                &root,
                dirs,
                &mut kernel,
                emitter,
                &s2,
                &st2,
            );
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !states.lock().unwrap().0.contains_key(&Source::Kernel) {
            assert!(std::time::Instant::now() < deadline, "the source never said what it reads");
            std::thread::sleep(Duration::from_millis(10));
        }
        let st = states.lock().unwrap().0[&Source::Kernel].clone();
        assert_eq!((st.state, st.mode), (SourceState::Degraded, "journal"));
        // What journald copies from now on arrives; the record from before the start does not.
        b.entry(
            2,
            &[
                ("_TRANSPORT", b"kernel"),
                ("PRIORITY", b"3"),
                ("MESSAGE", b"EXT4-fs (sdb1): Remounting filesystem read-only"),
                ("_KERNEL_SUBSYSTEM", b"block"),
            ],
            Store::Zstd,
        );
        std::fs::write(&file, &b.bytes).unwrap();
        let e = loop {
            match rx.try_recv() {
                Ok(e) => break e,
                Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => panic!("no event from the journal within 10 s"),
            }
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        t.join().unwrap();
        assert_eq!((e.kind, e.detail_str("device")), (EventType::FsReadOnly, Some("sdb1")));
        assert_eq!(e.details["kernelDictionary"]["SUBSYSTEM"], "block");
        assert!(rx.try_recv().is_err(), "only the new record");
    }
}
