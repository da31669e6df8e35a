//! The polled sources on one thread: auth logs and the journal, wtmp/btmp, sockets, clock.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{SourceStates, host_tz, set_state};
use crate::auth::{AuthParser, BruteForce, BruteForceRule, Parsed, Writer};
use crate::netconn::{Tracker, owners, read_sockets, socket_event};
use crate::process::ProcInfo;
use crate::queue::POLL_SLICE;
use crate::tail::{Positions, StartAt, Tail, Unit};
use crate::{Emitter, Event, EventType, Source, UnparsedReason, utmp};
use vigil_agent_config::EventsConfig;
use vigil_crds::SourceState;
use vigil_host::host::HostRoot;
use vigil_host::proc::processes::Users;

pub(super) struct Polled {
    pub(super) auth: Emitter,
    pub(super) network: Emitter,
    pub(super) clock: Emitter,
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
    journal: Option<crate::journal::Follower>,
    /// The journal is read for systemd's own entries only (service starts, stops and
    /// failures): the auth logs hold the rest, and reading both would count each twice.
    journal_services_only: bool,
    /// What the last poll of the journal could not read (file: why).
    pub journal_problems: Vec<String>,
    /// The last poll of the journal stopped before the end of some file.
    pub journal_more: bool,
    /// The host root (where a journal writer's executable is looked at).
    host: HostRoot,
}

/// Whether the host's file at `exe` (a path on the host) is a regular file owned by root,
/// set-user-ID, and writable by root alone.
fn setuid_root(host: &HostRoot, exe: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
    std::fs::symlink_metadata(host.host_path(exe))
        .is_ok_and(|m| m.file_type().is_file() && m.uid() == 0 && m.mode() & 0o4000 != 0 && m.mode() & 0o022 == 0)
}

/// An auth event, and the brute-force finding it completes, if any.
fn deliver(brute: &mut BruteForce, e: Event, out: &mut dyn FnMut(Event)) {
    let found = brute.observe(&e);
    out(e);
    if let Some(f) = found {
        out(f);
    }
}

/// The journal fields the auth source reads.
fn auth_journal_field(name: &str) -> bool {
    matches!(
        name,
        "MESSAGE"
            | "SYSLOG_IDENTIFIER"
            | "SYSLOG_PID"
            | "_PID"
            | "_HOSTNAME"
            | "_TRANSPORT"
            | "_COMM"
            | "_EXE"
            | "_UID"
            | "_SYSTEMD_UNIT"
            | "_SYSTEMD_CGROUP"
    )
}

impl AuthFollower {
    /// Opens the tails, resuming at `saved` positions (else at `start`).
    pub fn new(
        cfg: &vigil_agent_config::AuthEvents,
        root: &HostRoot,
        saved: &Positions,
        journal_cursor: Option<crate::journal::Cursor>,
        start: StartAt,
    ) -> Self {
        let parser = AuthParser {
            ignore_session_services: cfg.ignore_session_services.clone(),
            tz: host_tz(root),
            program_dirs: cfg.program_dirs.clone(),
        };
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
        // With `auto` and an auth log, the journal is still read for what only it holds:
        // systemd's records of the kubelet and the container runtime starting and stopping.
        let journal_services_only = cfg.journal == vigil_agent_config::JournalMode::Auto && !btmp_counts;
        let journal = (cfg.journal != vigil_agent_config::JournalMode::Off).then(|| {
            let dirs = cfg.journal_dirs.iter().map(|d| root.host_path(d)).collect();
            crate::journal::Follower::new(dirs, journal_cursor, start == StartAt::End)
        });
        // sshd writes each failure to btmp and to its log: btmp counts only when neither an
        // auth log nor the journal is read (else every failure would count twice).
        let btmp_counts = btmp_counts && journal.is_none();
        Self {
            parser,
            logs,
            utmp,
            brute,
            btmp_counts,
            journal,
            journal_services_only,
            journal_problems: Vec::new(),
            journal_more: false,
            host: root.clone(),
        }
    }

    /// What this follower cannot read, in words: configured files that exist but cannot be
    /// opened, none of the auth logs there and no journal read instead, journal files that
    /// cannot be read.
    pub fn problems(&self, cfg: &vigil_agent_config::AuthEvents, root: &HostRoot) -> Vec<String> {
        let mut out = unreadable(&auth_files(cfg), root);
        let no_log = cfg.logs.iter().all(|p| !root.host_path(p).exists());
        match &self.journal {
            None if no_log && !cfg.logs.is_empty() => out.push(format!(
                "none of {} exists and the journal is not read (auth.journal: off): no logins, sudo or account changes are seen",
                cfg.logs.join(", ")
            )),
            Some(j) if no_log && j.list().is_empty() => out.push(format!(
                "none of {} exists and there are no journal files in {}: no logins, sudo or account changes are seen",
                cfg.logs.join(", "),
                j.dirs().iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
            )),
            _ => {}
        }
        out.extend(self.journal_problems.iter().cloned());
        out
    }

    /// Whether the journal is read, and its directories.
    pub fn journal_dirs(&self) -> Option<&[PathBuf]> {
        self.journal.as_ref().map(crate::journal::Follower::dirs)
    }

    /// Where the journal reader is, to save.
    pub fn journal_cursor(&self) -> Option<&crate::journal::Cursor> {
        self.journal.as_ref().map(crate::journal::Follower::cursor)
    }

    /// Reads what the files gained; events go to `out`.
    pub fn poll(&mut self, out: &mut dyn FnMut(Event), unparsed: &mut dyn FnMut(UnparsedReason)) {
        let now = jiff::Timestamp::now();
        for (name, tail) in &mut self.logs {
            let mut lines = Vec::new();
            let _ = tail.poll(&mut |l, cut| lines.push((l.to_vec(), cut)));
            for (l, cut) in lines {
                let text = crate::utf8_escaped(&l);
                // A line longer than any a logger writes is not parsed: its fields could be
                // anything (a 16 KiB "user name"); its head is kept as an unparsed event.
                let parsed = if cut { Parsed::Unparsed(UnparsedReason::Cut) } else { self.parser.parse(&text, now) };
                match parsed {
                    Parsed::Event(e) => deliver(&mut self.brute, e, out),
                    Parsed::Ignored => {}
                    Parsed::Unparsed(_) if !cut && text.trim().is_empty() => {}
                    Parsed::Unparsed(reason) => {
                        unparsed(reason);
                        out(Event::unparsed(now, name, reason, &l).with("cut", cut.then_some(true)));
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
                // `_PID` is journald's own field: no process can claim to be pid 1.
                if self.journal_services_only && entry.fields.get("_PID").is_none_or(|p| p != b"1") {
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
                    Parsed::Unparsed(UnparsedReason::Cut)
                } else {
                    let (exe, comm, unit, cgroup) = (
                        entry.text("_EXE"),
                        entry.text("_COMM"),
                        entry.text("_SYSTEMD_UNIT"),
                        entry.text("_SYSTEMD_CGROUP"),
                    );
                    let uid = entry.text("_UID").and_then(|u| u.parse().ok());
                    // Looked at only where it decides: a user's writer claiming a set-user-ID
                    // program.
                    let exe_setuid_root = exe
                        .as_deref()
                        .filter(|_| uid != Some(0) && crate::auth::is_setuid_program(&program))
                        .map(|e| setuid_root(&self.host, e));
                    let writer = Writer {
                        exe_setuid_root,
                        exe: exe.as_deref(),
                        comm: comm.as_deref(),
                        uid,
                        unit: unit.as_deref(),
                        cgroup: cgroup.as_deref(),
                    };
                    self.parser.parse_entry(&program, pid, &host, &message, time, &writer)
                };
                match parsed {
                    Parsed::Event(e) => deliver(&mut self.brute, e.with("journalSeqnum", entry.seqnum), out),
                    Parsed::Ignored => {}
                    Parsed::Unparsed(reason) => {
                        unparsed(reason);
                        let raw = entry.fields.get("MESSAGE").map_or(&[][..], Vec::as_slice);
                        out(Event::unparsed(now, "journal", reason, raw)
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
                    Some(u) => match utmp::to_event(&u, *log) {
                        Some(e) if self.btmp_counts => deliver(&mut self.brute, e, out),
                        Some(e) => out(e),
                        None => {}
                    },
                    None => {
                        unparsed(UnparsedReason::Malformed);
                        out(Event::unparsed(now, name, UnparsedReason::Malformed, &r));
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
    pub fn new(cfg: &vigil_agent_config::NetworkEvents) -> Self {
        Self { tracker: Tracker::new(cfg.outbound_dedup), outbound: cfg.outbound, last: None }
    }

    /// One read of the tables; `report_existing` lists current listeners (a scan). The tables
    /// are read only when the [`fingerprint`](crate::netconn::fingerprint) moved, or a minute
    /// passed since the last read (two changes that cancel out in the counts).
    pub fn poll(&mut self, root: &HostRoot, users: &Users, report_existing: bool, out: &mut dyn FnMut(Event)) -> usize {
        let print = crate::netconn::fingerprint(root);
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
        let describe = |kind, s: &crate::netconn::Socket| {
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

pub(super) fn polled_sources(
    cfg: &EventsConfig,
    root: &HostRoot,
    state_dir: Option<&Path>,
    mut em: Polled,
    stop: &AtomicBool,
    states: &Mutex<SourceStates>,
) {
    let positions_file = state_dir.map(|d| d.join("log-positions.json"));
    let saved = positions_file.as_deref().map(Positions::load).unwrap_or_default();
    let users = Users::read(root, &mut vigil_host::proc::ReadErrors::default());
    let cursor_file = state_dir.map(|d| d.join("journal-cursor.json"));
    let saved_cursor: Option<crate::journal::Cursor> =
        cursor_file.as_deref().and_then(|f| std::fs::read(f).ok()).and_then(|b| serde_json::from_slice(&b).ok());
    let mut auth = cfg.auth.enabled.then(|| AuthFollower::new(&cfg.auth, root, &saved, saved_cursor, StartAt::End));
    let mut last_cursor = None;
    let mut journal_problems: Option<Vec<String>> = None;
    let mut net = cfg.network.enabled.then(|| NetFollower::new(&cfg.network));
    let mut clock = cfg.clock.enabled.then(|| crate::clock::ClockWatch::new(cfg.clock.max_offset.as_secs_f64()));
    // Files that exist but cannot be read are said in the source's state, set at its first
    // poll: a silent source is worse than none.
    let files = auth_files(&cfg.auth);
    let unreadable_files = if auth.is_some() { unreadable(&files, root) } else { Vec::new() };
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
            let mut unparsed = Vec::new();
            let mut out = Vec::new();
            a.poll(&mut |e| out.push(e), &mut |r| unparsed.push(r));
            for r in unparsed {
                stats.count_unparsed(r);
            }
            for e in out {
                em.auth.emit(e);
            }
            if a.journal_more {
                next_auth = now; // a backlog: go on without waiting
            }
            if journal_problems.as_ref() != Some(&a.journal_problems) {
                // The journal's readability is part of the source's state.
                let problems = [unreadable_files.clone(), a.journal_problems.clone()].concat();
                let text = auth_state_text(&files, a.journal_dirs(), a.journal_services_only(), &problems);
                let state = if problems.is_empty() { SourceState::On } else { SourceState::Degraded };
                set_state(states, Source::Auth, state, auth_mode(Some(a)), text);
                journal_problems = Some(a.journal_problems.clone());
            }
            if now >= next_save
                && let (Some(f), Some(c)) = (&cursor_file, a.journal_cursor())
                && last_cursor.as_ref() != Some(c)
                && serde_json::to_vec(c).is_ok_and(|b| crate::tail::write_atomic(f, &b).is_ok())
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
                em.network.count_unparsed(UnparsedReason::Malformed);
            }
            for e in out {
                em.network.emit(e);
            }
        }
        if let Some(c) = clock.as_mut()
            && now >= next_clock
        {
            next_clock = now + Duration::from_secs(10);
            if let Some(state) = vigil_host::clock::read() {
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
        let _ = crate::tail::write_atomic(f, &b);
    }
}

/// The auth source's files: its logs, then wtmp and btmp when set.
fn auth_files(cfg: &vigil_agent_config::AuthEvents) -> Vec<&String> {
    cfg.logs.iter().chain([&cfg.wtmp, &cfg.btmp].into_iter().filter(|p| !p.is_empty())).collect()
}

/// The files of `files` that exist but cannot be opened, as `path: why`.
fn unreadable(files: &[&String], root: &HostRoot) -> Vec<String> {
    files
        .iter()
        .filter_map(|p| match std::fs::File::open(root.host_path(p)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Some(format!("{p}: {e}")),
            _ => None,
        })
        .collect()
}

/// How the auth source reads: files, the journal, or both.
fn auth_mode(a: Option<&AuthFollower>) -> &'static str {
    if a.is_some_and(|a| a.journal.is_some()) { "file+journal" } else { "file" }
}

impl AuthFollower {
    /// Whether the journal is read for systemd's service records only.
    pub fn journal_services_only(&self) -> bool {
        self.journal.is_some() && self.journal_services_only
    }
}

/// The auth source's state in words: what it follows and what it cannot read.
fn auth_state_text(files: &[&String], journal: Option<&[PathBuf]>, services_only: bool, problems: &[String]) -> String {
    let mut text = format!("following {}", files.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
    if let Some(dirs) = journal {
        let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        text.push_str(&format!("; the systemd journal in {}", dirs.join(", ")));
        if services_only {
            text.push_str(" (systemd's service records only: the auth logs hold the rest)");
        }
    }
    if !problems.is_empty() {
        text.push_str(&format!(" (cannot read {})", problems.join("; ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::tests::{Builder, Store};

    #[test]
    fn beside_an_auth_log_the_journal_is_read_for_systemds_service_records_only() {
        let root = tempfile::tempdir().unwrap();
        let host = HostRoot::new(root.path());
        std::fs::create_dir_all(root.path().join("var/log/journal/m")).unwrap();
        std::fs::write(root.path().join("var/log/auth.log"), b"").unwrap();
        let mut b = Builder::new(true);
        let systemd: [(&str, &[u8]); 7] = [
            ("_TRANSPORT", b"journal"),
            ("SYSLOG_IDENTIFIER", b"systemd"),
            ("_PID", b"1"),
            ("_UID", b"0"),
            ("_COMM", b"systemd"),
            ("_EXE", b"/usr/lib/systemd/systemd"),
            ("MESSAGE", b"Started kubelet.service - kubelet: The Kubernetes Node Agent."),
        ];
        b.entry(1_700_000_000_000_000, &systemd, Store::Plain);
        // sshd's own records are in auth.log too: from the journal they would count twice.
        b.entry(
            1_700_000_001_000_000,
            &[
                ("_TRANSPORT", b"syslog"),
                ("SYSLOG_IDENTIFIER", b"sshd"),
                ("_PID", b"77"),
                ("_UID", b"0"),
                ("_COMM", b"sshd"),
                ("_EXE", b"/usr/sbin/sshd"),
                ("MESSAGE", b"Failed password for root from 192.0.2.1 port 22 ssh2"),
            ],
            Store::Plain,
        );
        // Anyone may say they are systemd; `_PID` is journald's.
        let mut forged = systemd;
        forged[2] = ("_PID", b"4242");
        b.entry(1_700_000_002_000_000, &forged, Store::Plain);
        std::fs::write(root.path().join("var/log/journal/m/system.journal"), &b.bytes).unwrap();

        let cfg = vigil_agent_config::AuthEvents {
            logs: vec!["/var/log/auth.log".into()],
            wtmp: String::new(),
            btmp: String::new(),
            ..Default::default()
        };
        let mut a = AuthFollower::new(&cfg, &host, &Positions::default(), None, StartAt::Beginning);
        assert!(a.journal_services_only());
        let mut out = Vec::new();
        a.poll(&mut |e| out.push(e), &mut |_| {});
        let kinds: Vec<_> = out.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventType::ServiceStarted], "{out:?}");
        assert_eq!(out[0].details["writerVerified"], true);

        // With `journal: off` nothing is read from it; without an auth log all of it is.
        let off = vigil_agent_config::AuthEvents { journal: vigil_agent_config::JournalMode::Off, ..cfg.clone() };
        assert!(
            AuthFollower::new(&off, &host, &Positions::default(), None, StartAt::Beginning).journal_dirs().is_none()
        );
        std::fs::remove_file(root.path().join("var/log/auth.log")).unwrap();
        let mut all = AuthFollower::new(&cfg, &host, &Positions::default(), None, StartAt::Beginning);
        assert!(!all.journal_services_only());
        let mut out = Vec::new();
        all.poll(&mut |e| out.push(e), &mut |_| {});
        assert!(out.iter().any(|e| e.kind == EventType::SshFailed), "{out:?}");
    }
}
