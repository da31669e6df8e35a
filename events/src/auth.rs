//! Authentication events from the host's syslog files: Debian/Ubuntu `auth.log` and RHEL
//! `secure` (both in the traditional `Mon dd hh:mm:ss host prog[pid]: msg` form and the
//! RFC 3339 form of newer rsyslog defaults), and brute-force detection over the failures.
//!
//! Pure: lines in, events out; time only from the line or from the caller.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use super::{Event, EventType, Severity, UnparsedReason};

/// A syslog line split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogLine<'a> {
    /// The timestamp as written.
    pub time: LineTime,
    /// The host name field.
    pub host: &'a str,
    /// The program (`sshd`, `sudo`).
    pub program: &'a str,
    /// Its pid, when written.
    pub pid: Option<i64>,
    /// The message.
    pub message: &'a str,
}

/// A line's time: exact (RFC 3339) or a local wall-clock time without a year.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineTime {
    /// An exact instant.
    Exact(jiff::Timestamp),
    /// Month, day, hour, minute, second in the host's zone, year unknown.
    Local {
        /// 1-12.
        month: i8,
        /// 1-31.
        day: i8,
        /// 0-23.
        hour: i8,
        /// 0-59.
        minute: i8,
        /// 0-59.
        second: i8,
    },
}

impl LineTime {
    /// The instant, placing a year-less time in the year that puts it at most a day after
    /// `now` (a line from 31 December read on 1 January is last year's).
    pub fn resolve(self, tz: &jiff::tz::TimeZone, now: jiff::Timestamp) -> jiff::Timestamp {
        match self {
            Self::Exact(t) => t,
            Self::Local { month, day, hour, minute, second } => {
                let year = now.to_zoned(tz.clone()).year();
                let at = |y: i16| {
                    jiff::civil::DateTime::new(y, month, day, hour, minute, second, 0)
                        .ok()
                        .and_then(|dt| dt.to_zoned(tz.clone()).ok())
                        .map(|z| z.timestamp())
                };
                let limit = now + jiff::SignedDuration::from_hours(24);
                match at(year) {
                    Some(t) if t <= limit => t,
                    _ => at(year - 1).unwrap_or(now),
                }
            }
        }
    }
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Splits a syslog file line. `None` when it is not in either layout.
pub fn parse_syslog(line: &str) -> Option<SyslogLine<'_>> {
    let line = line.trim_end_matches(['\n', '\r']);
    let (time, rest) = if line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        let (stamp, rest) = line.split_once(' ')?;
        (LineTime::Exact(stamp.parse().ok()?), rest)
    } else {
        (local_time(line.get(..16)?)?, &line[16..])
    };
    let (host, rest) = rest.split_once(' ')?;
    let (tag, message) = rest.split_once(": ").or_else(|| rest.strip_suffix(':').map(|t| (t, "")))?;
    if tag.contains(' ') {
        return None;
    }
    let (program, pid) = match tag.split_once('[') {
        Some((p, pid)) => (p, pid.strip_suffix(']').and_then(|n| n.parse().ok())),
        None => (tag, None),
    };
    if program.is_empty() || host.is_empty() {
        return None;
    }
    Some(SyslogLine { time, host, program, pid, message })
}

/// `Nov 22 10:00:00 ` or `Nov  2 10:00:00 ` (15 characters and a space), each field in range:
/// a line whose time is impossible is not a logger's.
fn local_time(head: &str) -> Option<LineTime> {
    let month = MONTHS.iter().position(|m| head.starts_with(m))?;
    if head.len() != 16 || head.as_bytes()[3] != b' ' || head.as_bytes()[15] != b' ' {
        return None;
    }
    let day: i8 = head.get(4..6)?.trim_start().parse().ok()?;
    let hms = &head.as_bytes()[7..15];
    if hms[2] != b':' || hms[5] != b':' || ![0, 1, 3, 4, 6, 7].iter().all(|&i| hms[i].is_ascii_digit()) {
        return None;
    }
    let two = |i: usize| ((hms[i] - b'0') * 10 + (hms[i + 1] - b'0')) as i8;
    let (hour, minute, second) = (two(0), two(3), two(6));
    // 29 February is kept: the year is not known yet.
    const DAYS: [i8; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=DAYS[month]).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(LineTime::Local { month: i8::try_from(month + 1).ok()?, day, hour, minute, second: second.min(59) })
}

/// Why a line is not a syslog line: a time that cannot exist where a time starts it, else
/// not the form at all.
fn syslog_reason(line: &str) -> UnparsedReason {
    let starts_with_month = MONTHS.iter().any(|m| line.starts_with(m)) && line.as_bytes().get(3) == Some(&b' ');
    if starts_with_month {
        return match line.get(..16).map(local_time) {
            Some(Some(_)) => UnparsedReason::Malformed,
            _ => UnparsedReason::Time,
        };
    }
    match line.split_once(' ') {
        Some((stamp, _)) if stamp.as_bytes().first().is_some_and(u8::is_ascii_digit) && stamp.contains(['T', ':']) => {
            if stamp.parse::<jiff::Timestamp>().is_ok() {
                UnparsedReason::Malformed
            } else {
                UnparsedReason::Time
            }
        }
        _ => UnparsedReason::Malformed,
    }
}

/// What one line amounts to.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    /// An authentication event.
    Event(Event),
    /// A well-formed line of no interest (a cron session, a key exchange).
    Ignored,
    /// Not understood: not a syslog line, or an authentication record that cannot be read;
    /// and why.
    Unparsed(UnparsedReason),
}

/// Parses auth log lines into events.
#[derive(Clone, Debug)]
pub struct AuthParser {
    /// PAM services whose session open/close lines are ignored (cron opens one a minute).
    pub ignore_session_services: Vec<String>,
    /// The host's time zone, for year-less timestamps.
    pub tz: jiff::tz::TimeZone,
    /// Directories (host paths) a program must run from for a journal entry's claim to be
    /// that program to hold (see [`Writer`]).
    pub program_dirs: Vec<String>,
}

impl Default for AuthParser {
    fn default() -> Self {
        Self {
            ignore_session_services: vec!["cron".into(), "CRON".into(), "crond".into(), "systemd-user".into()],
            tz: jiff::tz::TimeZone::UTC,
            program_dirs: vigil_agent_config::default_program_dirs(),
        }
    }
}

impl AuthParser {
    /// Parses one line read at `now`.
    pub fn parse(&self, line: &str, now: jiff::Timestamp) -> Parsed {
        let Some(l) = parse_syslog(line) else { return Parsed::Unparsed(syslog_reason(line)) };
        let time = l.time.resolve(&self.tz, now);
        // A log file says nothing about who wrote a line: any process that reaches the syslog
        // socket chooses its tag. The event says so.
        match self.judge(&l, time, line) {
            Parsed::Event(e) => Parsed::Event(e.with("writerVerified", false)),
            other => other,
        }
    }

    /// Parses one systemd journal entry: its `SYSLOG_IDENTIFIER` (or `_COMM`), pid, host and
    /// `MESSAGE` fields at its own time, written by `writer` (journald's trusted fields). The
    /// event's `line` is the entry as journalctl's short format shows it.
    ///
    /// The identifier is the writer's claim (`logger -t sshd` sets it); an entry that parses as
    /// an authentication record counts only when journald's record of the writer backs the
    /// claim ([`Writer::vouch_entry`]). Otherwise it is [`EventType::AuthForged`], naming the
    /// real writer, never the login or sudo it pretends to be.
    pub fn parse_entry(
        &self,
        program: &str,
        pid: Option<i64>,
        host: &str,
        message: &str,
        time: jiff::Timestamp,
        writer: &Writer<'_>,
    ) -> Parsed {
        let l = SyslogLine { time: LineTime::Exact(time), host, program, pid, message };
        let line = match pid {
            Some(p) => format!("{time} {host} {program}[{p}]: {message}"),
            None => format!("{time} {host} {program}: {message}"),
        };
        let parsed = self.judge(&l, time, &line);
        let mut vouch = writer.vouch_entry(program, message, &self.program_dirs);
        if let (Parsed::Event(e), Vouch::Verified) = (&parsed, &vouch)
            && writer.uid != Some(0)
            && !Writer::setuid_may_write(program, e.kind)
        {
            vouch = Vouch::Forged(format!(
                "{program} run by uid {} writes no {} record",
                writer.uid.map_or_else(|| "?".to_owned(), |u| u.to_string()),
                e.kind.as_str()
            ));
        }
        match (parsed, vouch) {
            (Parsed::Event(e), Vouch::Verified) => Parsed::Event(writer.describe(e.with("writerVerified", true))),
            (Parsed::Event(e), Vouch::Unverified(why)) => {
                Parsed::Event(writer.describe(e.with("writerVerified", false).with("writerNote", why)))
            }
            (Parsed::Event(e), Vouch::Forged(why)) => Parsed::Event(
                writer.describe(
                    Event::new(
                        EventType::AuthForged,
                        time,
                        format!("a journal entry tagged {program} pretends to be {}: {why}", e.kind.as_str()),
                    )
                    .with("claimedProgram", program)
                    .with("claimedType", e.kind.as_str())
                    .with("claim", e.message)
                    .with("why", why)
                    .with("line", line),
                ),
            ),
            (other, _) => other,
        }
    }

    fn judge(&self, l: &SyslogLine<'_>, time: jiff::Timestamp, line: &str) -> Parsed {
        match self.message(l, time) {
            Some(e) => {
                Parsed::Event(e.with("program", l.program).with("programPid", l.pid).with("line", line.trim_end()))
            }
            // A line that starts as an authentication record but cannot be read (cut short, or
            // forged) is counted and kept, not passed over as of no interest.
            None if malformed(l.program, l.message.trim()) => Parsed::Unparsed(UnparsedReason::Incomplete),
            None => Parsed::Ignored,
        }
    }

    fn message(&self, l: &SyslogLine<'_>, time: jiff::Timestamp) -> Option<Event> {
        let msg = l.message.trim();
        // rsyslog folds repeats: `message repeated 3 times: [ Failed password for …]`.
        if let Some(rest) = msg.strip_prefix("message repeated ") {
            let (n, inner) = rest.split_once(" times: [")?;
            let n: u64 = n.parse().ok()?;
            let inner = SyslogLine { message: inner.trim().trim_end_matches(']').trim(), ..l.clone() };
            return self.message(&inner, time).map(|e| e.with("count", n));
        }
        if let Some(e) = pam(msg, time, &self.ignore_session_services) {
            return e;
        }
        match l.program {
            "systemd" => service(msg, time),
            "sshd" | "sshd-session" => sshd(msg, time),
            "sudo" => sudo(msg, time),
            "su" => su(msg, time),
            "useradd" | "usermod" | "userdel" | "groupadd" | "groupmod" | "groupdel" | "gpasswd" | "chage" => {
                account(l.program, msg, time)
            }
            _ => None,
        }
    }
}

/// Who wrote a journal entry, as journald recorded it from the kernel (its trusted `_`
/// fields): what the writer cannot choose, unlike the `SYSLOG_IDENTIFIER` it tags the entry
/// with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Writer<'a> {
    /// `_EXE`: the executable (`/proc/PID/exe` when journald read it). A process changes it only
    /// by executing another program, but the path is the one in the writer's own mount
    /// namespace: an unprivileged user namespace can mount its own file at any path.
    pub exe: Option<&'a str>,
    /// `_COMM`: the process name. The process may set it (`prctl`), so it can refute a claim
    /// but never prove one alone.
    pub comm: Option<&'a str>,
    /// `_UID`: from the socket's credentials (the kernel's, in the host's user namespace),
    /// always there for a local writer.
    pub uid: Option<u32>,
    /// `_SYSTEMD_UNIT`.
    pub unit: Option<&'a str>,
    /// `_SYSTEMD_CGROUP`.
    pub cgroup: Option<&'a str>,
    /// Whether the host's file at `exe` (read by the caller under the host root) is a regular
    /// file owned by root, set-user-ID, and writable by root alone; `None` when not looked at.
    pub exe_setuid_root: Option<bool>,
}

/// What journald's record of the writer says about an entry's claim to be a program's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vouch {
    /// The program wrote it.
    Verified,
    /// Nothing refutes it, but nothing proves it either (root's uid alone): kept, marked
    /// `writerVerified: false` as a log file's lines are.
    Unverified(String),
    /// Another writer: never the event it pretends to be.
    Forged(String),
}

/// The names one program logs under (OpenSSH 9.8 and later split sshd into sshd, sshd-session
/// and sshd-auth; Debian's cron logs as `CRON`).
fn program_names(program: &str) -> &[&str] {
    match program {
        "sshd" | "sshd-session" | "sshd-auth" => &["sshd", "sshd-session", "sshd-auth"],
        "cron" | "CRON" | "crond" => &["cron", "CRON", "crond"],
        _ => &[],
    }
}

/// Programs that run set-user-ID root, so a user's uid may write their records. Every other
/// program whose records the parser reads (sshd, the shadow tools, cron, login) runs as root.
const SETUID: &[&str] = &["su", "sudo", "sudoedit", "passwd", "chsh", "chfn", "newgrp", "gpasswd", "pkexec"];

/// Whether `program` is one of the set-user-ID programs whose records a user's uid may write:
/// the only claims for which [`Writer::exe_setuid_root`] is read.
pub fn is_setuid_program(program: &str) -> bool {
    SETUID.contains(&program)
}

/// The service a PAM record (`pam_unix(SERVICE:kind): …`, also inside rsyslog's `message
/// repeated` fold) names.
fn pam_service(message: &str) -> Option<&str> {
    let mut msg = message.trim();
    // As many folds as the parser unfolds.
    while let Some(rest) = msg.strip_prefix("message repeated ") {
        msg = rest.split_once(" times: [")?.1.trim_start();
    }
    let rest = msg.strip_prefix("pam_unix(").or_else(|| msg.strip_prefix("pam_sss("))?;
    rest.split_once(':').map(|(service, _)| service)
}

/// Whether a record tagged `tag` may name PAM service `service` (`su-l` is su's, `sudo-i`
/// sudo's, `systemd-user` systemd's).
fn tag_runs_service(tag: &str, service: &str) -> bool {
    let same = |a: &str, b: &str| a == b || program_names(a).contains(&b);
    same(tag, service)
        || service.strip_prefix(tag).is_some_and(|rest| rest.starts_with('-'))
        || (tag == "systemd" && service == "systemd-user")
        || (tag == "pkexec" && service == "polkit-1")
        || (tag == "polkit-agent-helper-1" && service == "polkit-1")
        // Daemons whose PAM service is named otherwise than the program (their packages'
        // /etc/pam.d files).
        || (matches!(tag, "proftpd" | "vsftpd" | "pure-ftpd") && service == "ftp")
        || (tag == "cockpit-session" && service == "cockpit")
        || (tag == "saslauthd" && matches!(service, "smtp" | "imap" | "pop" | "pop3" | "sieve"))
}

impl Writer<'_> {
    /// Whether journald's record of the writer backs its claim to be `program`:
    /// - never from a container (its cgroup under `kubepods`, a container runtime's scope): a
    ///   container brings its own binaries;
    /// - with `_EXE`: an executable named `program` directly in one of `dirs` (root's
    ///   directories), run by root; or, for a set-user-ID program ([`SETUID`]) run by a user,
    ///   one the host itself holds at that path as a set-user-ID root file (a user namespace
    ///   can mount its own file at any path, but the host's file there is the host's);
    /// - without `_EXE` (the writer was gone before journald looked, as a forger can arrange):
    ///   root's uid with a `_COMM` that does not refute it is [`Vouch::Unverified`]; anything
    ///   else is forged.
    pub fn vouch(&self, program: &str, dirs: &[String]) -> Vouch {
        let named = |name: &str| name == program || program_names(program).contains(&name);
        let container = self.cgroup.is_some_and(|c| c.contains("kubepods") || c.contains("/docker/"))
            || self
                .unit
                .is_some_and(|u| ["cri-containerd-", "docker-", "crio-", "libpod-"].iter().any(|p| u.starts_with(p)));
        if container {
            return Vouch::Forged(format!(
                "written from a container ({})",
                self.unit.or(self.cgroup).unwrap_or("its cgroup")
            ));
        }
        let uid = self.uid.map_or_else(|| "an unknown uid".to_owned(), |u| format!("uid {u}"));
        match self.exe {
            Some(exe) => {
                let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
                let (dir, name) = exe.rsplit_once('/').unwrap_or(("", exe));
                let trusted_dir = dirs.iter().any(|d| dir == d.trim_end_matches('/'));
                if !(named(name) && trusted_dir) || exe.split('/').any(|seg| seg == "." || seg == "..") {
                    return Vouch::Forged(format!("written by {exe} as {uid}"));
                }
                match self.uid {
                    Some(0) => Vouch::Verified,
                    _ if is_setuid_program(program) && self.exe_setuid_root == Some(true) => Vouch::Verified,
                    _ if is_setuid_program(program) => Vouch::Forged(format!(
                        "written by {exe} as {uid}, and the host's {exe} is no set-user-ID root program"
                    )),
                    _ => Vouch::Forged(format!("written by {exe} as {uid}: {program} runs as root")),
                }
            }
            None => {
                // The kernel keeps 15 bytes of a process name.
                let refuted = self.comm.is_some_and(|c| !(named(c) || c.len() == 15 && program.starts_with(c)));
                let who = self.comm.map_or_else(|| "a process".to_owned(), |c| format!("{c:?}"));
                match (self.uid, refuted) {
                    (Some(0), false) => Vouch::Unverified(format!(
                        "written by {who} as uid 0; journald recorded no executable (the writer was gone before it looked)"
                    )),
                    _ => Vouch::Forged(format!("written by {who} as {uid}, an executable journald did not record")),
                }
            }
        }
    }

    /// Whether a record of `kind` may come from `program` run by a user (a set-user-ID
    /// program, [`SETUID`]): only the records that program writes itself. A user who mounts
    /// their own file over `gpasswd` in a user namespace writes as gpasswd, not as useradd.
    fn setuid_may_write(program: &str, kind: EventType) -> bool {
        use EventType as T;
        let session = matches!(kind, T::SessionOpened | T::SessionClosed);
        match program {
            "su" => session || matches!(kind, T::Su | T::SuFailed),
            "sudo" | "sudoedit" => session || matches!(kind, T::Sudo | T::SudoFailed),
            "passwd" => matches!(kind, T::PasswordChanged),
            "chsh" | "chfn" | "gpasswd" => matches!(kind, T::AccountChanged),
            "pkexec" => session,
            _ => false,
        }
    }

    /// [`Writer::vouch`] for an entry tagged `tag` with `message`: a PAM record must also be
    /// of a service `tag`'s program runs (a `pam_unix(sshd:session)` record tagged `logger`
    /// is forged, however truly logger wrote it).
    pub fn vouch_entry(&self, tag: &str, message: &str, dirs: &[String]) -> Vouch {
        if let Some(service) = pam_service(message)
            && !tag_runs_service(tag, service)
        {
            return Vouch::Forged(format!("tagged {tag}, but PAM service {service} is another program's"));
        }
        self.vouch(tag, dirs)
    }

    /// Adds what journald recorded of the writer to an event.
    fn describe(&self, e: Event) -> Event {
        e.with("writerExe", self.exe)
            .with("writerComm", self.comm)
            .with("writerUid", self.uid.map(i64::from))
            .with("writerUnit", self.unit)
    }
}

/// `key=value` in a PAM or useradd message (values end at `,`, ` ` or `;`).
fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    let mut search = msg;
    loop {
        let pos = search.find(key)?;
        let before = search[..pos].chars().last();
        let rest = &search[pos + key.len()..];
        if before.is_none_or(|c| c == ' ' || c == ',' || c == ';' || c == '(') && rest.starts_with('=') {
            let v = &rest[1..];
            let end = v.find([',', ' ', ';', ')']).unwrap_or(v.len());
            return (end > 0).then(|| &v[..end]);
        }
        search = rest;
    }
}

/// Strips one pair of quotes (`'bob'`).
fn unquote(s: &str) -> &str {
    s.trim_matches(['\'', '"', ','])
}

/// `pam_unix(service:kind): …` lines: sessions and password changes. `Some(None)` for a
/// recognised line that is ignored.
fn pam(msg: &str, time: jiff::Timestamp, ignore: &[String]) -> Option<Option<Event>> {
    let rest = msg.strip_prefix("pam_unix(").or_else(|| msg.strip_prefix("pam_sss("))?;
    let (svc, rest) = rest.split_once(')')?;
    let (service, kind) = svc.split_once(':')?;
    let rest = rest.trim_start_matches(':').trim();
    let user_of = |s: &str| s.split('(').next().map(str::to_owned);
    let ev = match kind {
        "session" if ignore.iter().any(|i| i == service) => None,
        "session" => {
            if let Some(r) = rest.strip_prefix("session opened for user ") {
                let (user, by) = r.split_once(" by ").unwrap_or((r, ""));
                let user = user_of(user);
                let by = user_of(by).filter(|b| !b.is_empty());
                Some(
                    Event::new(
                        EventType::SessionOpened,
                        time,
                        format!("{service} session opened for {}", user.as_deref().unwrap_or("?")),
                    )
                    .with("service", service)
                    .with("user", user)
                    .with("by", by),
                )
            } else if let Some(r) = rest.strip_prefix("session closed for user ") {
                let user = user_of(r.trim());
                Some(
                    Event::new(
                        EventType::SessionClosed,
                        time,
                        format!("{service} session closed for {}", user.as_deref().unwrap_or("?")),
                    )
                    .with("service", service)
                    .with("user", user),
                )
            } else {
                None
            }
        }
        "chauthtok" => rest.strip_prefix("password changed for ").map(|user| {
            Event::new(EventType::PasswordChanged, time, format!("password changed for {}", user.trim()))
                .with("user", user.trim())
                .with("service", service)
        }),
        "auth" if service == "su" && rest.starts_with("authentication failure") => Some(
            Event::new(EventType::SuFailed, time, format!("su to {} failed", field(rest, "user").unwrap_or("?")))
                .with("user", field(rest, "ruser").or_else(|| field(rest, "logname")))
                .with("target", field(rest, "user"))
                .with("tty", field(rest, "tty")),
        ),
        // A failure from a remote host of a service that logs nothing of its own (sshd,
        // sudo and su log theirs, counted there): it counts toward a brute force by address.
        "auth"
            if rest.starts_with("authentication failure")
                && !matches!(service, "sshd" | "sshd-session" | "sudo" | "su" | "su-l")
                && field(rest, "rhost").is_some_and(|h| !h.is_empty()) =>
        {
            let host = field(rest, "rhost").unwrap_or("");
            let user = field(rest, "user");
            Some(
                Event::new(
                    EventType::AuthFailed,
                    time,
                    format!("{service} authentication of {} from {host} failed", user.unwrap_or("?")),
                )
                .with("service", service)
                .with("user", user)
                .with("sourceAddress", normalise_address(host).unwrap_or_else(|| host.to_owned()))
                .with("ruser", field(rest, "ruser").filter(|r| !r.is_empty())),
            )
        }
        // Other auth lines repeat what the program itself logs (sshd's Failed password,
        // sudo's incorrect password attempts).
        _ => None,
    };
    Some(ev)
}

/// The node's services whose lifecycle systemd's records are read for: unit, and the
/// descriptions their units give them (systemd before 249 names only the description).
const NODE_SERVICES: [(&str, &[&str]); 4] = [
    ("kubelet", &["kubelet: The Kubernetes Node Agent", "Kubernetes kubelet", "kubelet"]),
    ("containerd", &["containerd container runtime"]),
    ("crio", &["Container Runtime Interface for OCI (CRI-O)"]),
    ("docker", &["Docker Application Container Engine"]),
];

/// The node service a systemd record names: `kubelet.service[ - DESCRIPTION]`, or the bare
/// description.
fn node_service(what: &str) -> Option<&'static str> {
    let what = what.trim().trim_end_matches("...").trim_end_matches('.').trim();
    let unit = what.split(" - ").next().unwrap_or(what);
    NODE_SERVICES.iter().find_map(|(name, descriptions)| {
        (unit.strip_suffix(".service") == Some(*name) || descriptions.contains(&what)).then_some(*name)
    })
}

/// systemd's records of the node's services starting, stopping and failing.
fn service(msg: &str, time: jiff::Timestamp) -> Option<Event> {
    let ev = |kind, unit: &str, text: String| Event::new(kind, time, text).with("unit", unit);
    if let Some(rest) = msg.strip_prefix("Started ") {
        let unit = node_service(rest)?;
        return Some(ev(EventType::ServiceStarted, unit, format!("{unit} started")));
    }
    if let Some(rest) = msg.strip_prefix("Stopping ") {
        let unit = node_service(rest)?;
        return Some(ev(EventType::ServiceStopping, unit, format!("{unit} stopping")));
    }
    // `kubelet.service: Main process exited, code=exited, status=1/FAILURE`,
    // `kubelet.service: Failed with result 'exit-code'.` (both are said for one failure: the
    // first is the one that counts).
    let (unit, what) = msg.split_once(".service: ")?;
    let unit = node_service(&format!("{unit}.service"))?;
    let rest = what.strip_prefix("Main process exited, ")?;
    let code = rest.split_once("code=").map(|(_, c)| c.split(',').next().unwrap_or(c));
    let status = rest.split_once("status=").map(|(_, s)| s.trim_end_matches('.'));
    if code == Some("exited") && status.is_some_and(|s| s.starts_with("0/")) {
        return None;
    }
    Some(
        ev(EventType::ServiceFailed, unit, format!("{unit} exited ({})", status.unwrap_or("?")))
            .with("code", code)
            .with("status", status),
    )
}

fn sshd(msg: &str, time: jiff::Timestamp) -> Option<Event> {
    if let Some(rest) = msg.strip_prefix("Accepted ") {
        let (method, rest) = rest.split_once(" for ")?;
        let p = peer(rest)?;
        let user = p.before;
        let from = p.address.as_deref().unwrap_or("an ambiguous peer");
        // A direct root login over ssh bypasses every personal account's trail.
        let root = user == "root";
        let e = Event::new(EventType::SshAccepted, time, format!("ssh login of {user} from {from} ({method})"));
        let e = if root { e.severity(crate::Severity::Warning).with("rootLogin", true) } else { e };
        return Some(
            e.with("user", user)
                .with("sourceAddress", p.address.as_deref())
                .with("sourcePort", p.port)
                .with("peerAmbiguous", p.ambiguous.then_some(true))
                .with("method", method)
                .with(
                    "keyFingerprint",
                    p.after.split_whitespace().find(|w| w.starts_with("SHA256:")).map(|w| w.trim_end_matches(',')),
                ),
        );
    }
    if let Some(rest) = msg.strip_prefix("Failed ") {
        let (method, rest) = rest.split_once(" for ")?;
        let (invalid, rest) = invalid_user(rest);
        let p = peer(rest)?;
        return Some(failed_ssh(time, p.before, &p, method, invalid));
    }
    if let Some(rest) = msg.strip_prefix("Invalid user ").or_else(|| msg.strip_prefix("Illegal user ")) {
        let p = peer(rest)?;
        // Said when the connection names an unknown user; each attempt's `Failed … for invalid
        // user` follows and is what counts.
        return Some(failed_ssh(time, p.before, &p, "none", true).with("pamError", true));
    }
    // With PAM (`UsePAM`, keyboard-interactive), as RHEL logs it:
    // `error: PAM: Authentication failure for [illegal user ]USER from HOST`.
    if let Some(rest) = msg.strip_prefix("error: PAM: Authentication failure for ") {
        let (invalid, rest) = invalid_user(rest);
        let p = peer(rest)?;
        // sshd follows it with its own `Failed keyboard-interactive/pam for …`, which counts
        // toward a brute force: this one is reported, not counted twice.
        return Some(failed_ssh(time, p.before, &p, "keyboard-interactive/pam", invalid).with("pamError", true));
    }
    if let Some(rest) = msg.strip_prefix("error: maximum authentication attempts exceeded for ") {
        let (invalid, rest) = invalid_user(rest);
        let p = peer(rest)?;
        return Some(failed_ssh(time, p.before, &p, "too many attempts", invalid));
    }
    if let Some(rest) = msg.strip_prefix("PAM ")
        && let Some((n, rest)) = rest.split_once(" more authentication failure")
    {
        let n: u64 = n.parse().ok()?;
        let user = field(rest, "user").unwrap_or("?");
        let address = field(rest, "rhost").and_then(normalise_address);
        let p = Peer { before: "", address, port: None, after: "", ambiguous: false };
        // A summary of failures sshd has each logged already: reported, not counted again.
        return Some(failed_ssh(time, user, &p, "password", false).with("count", n).with("pamError", true));
    }
    None
}

/// The peer an sshd message names. sshd writes `… for USER from ADDR port N ssh2[: KEY]`:
/// whoever connects chooses the user name (up to 100 bytes: ` from `, ` port `, ` for `,
/// quotes, anything), and a certificate's key ID (after the peer, in `KEY`) is chosen by
/// whoever made the certificate, which for a failed attempt may be the attacker. So every
/// ` from ADDR[ port N]` is a candidate, and the peer is the one followed by exactly what sshd
/// writes after it (nothing, ` ssh2`, ` [preauth]`, or `: TYPE FINGERPRINT` with a
/// certificate's `ID … (serial N) CA TYPE FINGERPRINT`). Where two candidates with different
/// peers both fit (a user name and a key ID both forged to fit), the peer cannot be told:
/// `ambiguous`, with no address, never a chosen one. Where none fits (a form not known here),
/// the last candidate is taken.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Peer<'a> {
    /// Everything before the peer (the user name, after the caller's prefix).
    before: &'a str,
    /// The address, `::ffff:a.b.c.d` as `a.b.c.d` (see [`normalise_address`]); `None` when
    /// ambiguous.
    address: Option<String>,
    port: Option<u32>,
    /// What sshd wrote after the peer.
    after: &'a str,
    /// Two candidates fit with different peers.
    ambiguous: bool,
}

/// Whether `after` is what sshd writes after a peer.
fn sshd_trailer(after: &str) -> bool {
    let a = after.strip_suffix(" [preauth]").unwrap_or(after);
    if a.is_empty() || a == " ssh2" {
        return true;
    }
    let Some(info) = a.strip_prefix(" ssh2: ") else { return false };
    let key_type = |t: &str| {
        !t.is_empty() && t.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-@._".contains(&b))
    };
    let fingerprint = |f: &str| {
        f.strip_prefix("SHA256:").or_else(|| f.strip_prefix("MD5:")).is_some_and(|v| !v.is_empty() && !v.contains(' '))
    };
    // sshd may add `, <method info>` after the key (hostbased: `, client user "…", client
    // host "…"`; a FIDO key: `, signature count = N`): text the client chooses, never the peer.
    let info = info.split_once(", ").map_or(info, |(key, _)| key);
    let words: Vec<&str> = info.split(' ').collect();
    match words.as_slice() {
        [t, f] => key_type(t) && !t.ends_with("-CERT") && fingerprint(f),
        [t, f, "ID", .., "(serial", serial, "CA", ct, cf] => {
            key_type(t)
                && t.ends_with("-CERT")
                && fingerprint(f)
                && serial.strip_suffix(')').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                && key_type(ct)
                && fingerprint(cf)
        }
        _ => false,
    }
}

fn peer(msg: &str) -> Option<Peer<'_>> {
    const FROM: &str = " from ";
    let candidates: Vec<Peer<'_>> = msg
        .rmatch_indices(FROM)
        .filter_map(|(at, _)| {
            let rest = &msg[at + FROM.len()..];
            let end = rest.find(' ').unwrap_or(rest.len());
            let address = normalise_address(&rest[..end])?;
            let mut after = &rest[end..];
            let mut port = None;
            if let Some(p) = after.strip_prefix(" port ") {
                let digits = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
                port = Some(p[..digits].parse::<u32>().ok().filter(|n| *n <= 65_535)?);
                after = &p[digits..];
            }
            (after.is_empty() || after.starts_with([' ', ':'])).then_some(Peer {
                before: &msg[..at],
                address: Some(address),
                port,
                after,
                ambiguous: false,
            })
        })
        .collect();
    let fitting: Vec<&Peer<'_>> = candidates.iter().filter(|p| sshd_trailer(p.after)).collect();
    match fitting.as_slice() {
        // A form not known here: one candidate is the peer; of several, none is believed.
        [] if candidates.len() <= 1 => candidates.into_iter().next(),
        [] => candidates.into_iter().next().map(|last| Peer { address: None, port: None, ambiguous: true, ..last }),
        [last, others @ ..] if others.iter().all(|p| (&p.address, p.port) == (&last.address, last.port)) => {
            Some((*last).clone())
        }
        [last, ..] => Some(Peer { address: None, port: None, ambiguous: true, ..(*last).clone() }),
    }
}

/// An address as sshd or PAM writes it, in one form per client: an IPv4 address mapped into
/// IPv6 (`::ffff:192.0.2.1`, from a dual-stack listener) as the IPv4 address, every other
/// address in its canonical text, and a host name (sshd's `UseDNS yes`) as written, lower case.
/// `None` for text that is neither.
pub fn normalise_address(s: &str) -> Option<String> {
    // A link-local IPv6 peer comes with its zone (`fe80::1%eth0`), kept.
    if let Some((ip, zone)) = s.split_once('%') {
        let v6 = ip.parse::<std::net::Ipv6Addr>().ok()?;
        let zone_ok = !zone.is_empty()
            && zone.len() <= 32
            && zone.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        return zone_ok.then(|| format!("{v6}%{zone}"));
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Some(match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or_else(|| v6.to_string(), |v4| v4.to_string()),
            v4 => v4.to_string(),
        });
    }
    let host = s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
        })
        // A label of digits alone ends no host name (`1.2.3`, a cut address).
        && s.rsplit('.').next().is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()));
    host.then(|| s.to_ascii_lowercase())
}

/// Whether a message of `program` that gave no event looks like an authentication record the
/// parser should have read: one of the forms it knows, cut short or malformed.
fn malformed(program: &str, msg: &str) -> bool {
    // A PAM record whose `pam_unix(SERVICE:KIND):` header is cut or broken.
    let bad_pam = (msg.starts_with("pam_unix(") || msg.starts_with("pam_sss(")) && !msg.contains("):");
    bad_pam
        || match program {
            "sshd" | "sshd-session" => [
                "Accepted ",
                "Failed ",
                "Invalid user ",
                "Illegal user ",
                "error: maximum authentication attempts",
                "error: PAM: Authentication failure",
                "PAM ",
            ]
            .iter()
            .any(|p| msg.starts_with(p)),
            // sudo's command and failure records, su's switch records.
            "sudo" => msg.is_empty() || msg.contains("COMMAND=") || msg.contains("incorrect password attempt"),
            "su" => {
                msg.is_empty()
                    || msg.starts_with("FAILED SU")
                    || msg.starts_with("(to ")
                    || msg.starts_with("+ ")
                    || msg.starts_with("- ")
            }
            _ => false,
        }
}

/// `invalid user bob …` (RHEL's older OpenSSH: `illegal user bob …`) → (true, `bob …`).
fn invalid_user(rest: &str) -> (bool, &str) {
    rest.strip_prefix("invalid user ")
        .or_else(|| rest.strip_prefix("illegal user "))
        .map_or((false, rest), |r| (true, r))
}

fn failed_ssh(time: jiff::Timestamp, user: &str, peer: &Peer<'_>, method: &str, invalid: bool) -> Event {
    let who = if invalid { format!("unknown user {user}") } else { user.to_owned() };
    let from = peer.address.as_deref().unwrap_or(if peer.ambiguous { "an ambiguous peer" } else { "?" });
    Event::new(EventType::SshFailed, time, format!("ssh authentication of {who} from {from} failed ({method})"))
        .with("user", user)
        .with("sourceAddress", peer.address.as_deref())
        .with("sourcePort", peer.port)
        .with("peerAmbiguous", peer.ambiguous.then_some(true))
        .with("method", method)
        .with("invalidUser", invalid)
}

/// `alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id`, and the failure
/// forms (`3 incorrect password attempts ;`, `user NOT in sudoers ;`, `command not allowed ;`).
fn sudo(msg: &str, time: jiff::Timestamp) -> Option<Event> {
    let (user, rest) = msg.split_once(" : ")?;
    let user = user.trim();
    let mut parts = rest.split(" ; ").map(str::trim);
    let first = parts.clone().next()?;
    let kv = |k: &str| parts.clone().find_map(|p| p.strip_prefix(k).and_then(|v| v.strip_prefix('=')));
    let target = kv("USER").unwrap_or("root");
    let command = rest.split_once("COMMAND=").map(|(_, c)| c.trim());
    let tty = kv("TTY");
    let cwd = kv("PWD");
    let failure = if first.contains("incorrect password attempt") {
        Some(("incorrect password", first.split_whitespace().next().and_then(|n| n.parse::<u64>().ok())))
    } else if first.contains("NOT in sudoers") {
        Some(("not in sudoers", None))
    } else if first.contains("command not allowed") {
        Some(("command not allowed", None))
    } else if first.contains("a password is required") {
        Some(("password required", None))
    } else {
        None
    };
    let _ = parts.next();
    let e = match failure {
        Some((reason, attempts)) => {
            Event::new(EventType::SudoFailed, time, format!("sudo by {user} refused: {reason}"))
                .with("reason", reason)
                .with("attempts", attempts)
        }
        None if first.starts_with("TTY=") || first.starts_with("PWD=") => {
            Event::new(EventType::Sudo, time, format!("{user} ran {} as {target}", command.unwrap_or("?")))
        }
        None => return None,
    };
    Some(e.with("user", user).with("target", target).with("command", command).with("tty", tty).with("cwd", cwd))
}

/// util-linux su: `(to root) alice on pts/0`, `FAILED SU (to root) alice on pts/0`.
fn su(msg: &str, time: jiff::Timestamp) -> Option<Event> {
    // shadow-utils' su: `+ TTY USER:TARGET` (switched) and `- TTY USER:TARGET` (failed).
    if let Some((sign, rest)) =
        msg.strip_prefix("+ ").map(|r| (false, r)).or_else(|| msg.strip_prefix("- ").map(|r| (true, r)))
    {
        let (tty, pair) = rest.split_once(' ')?;
        let (user, target) = pair.trim().split_once(':')?;
        let (kind, text) = if sign {
            (EventType::SuFailed, format!("su from {user} to {target} failed"))
        } else {
            (EventType::Su, format!("{user} switched to {target}"))
        };
        return Some(Event::new(kind, time, text).with("user", user).with("target", target).with("tty", tty));
    }
    let (failed, rest) = match msg.strip_prefix("FAILED SU ") {
        Some(r) => (true, r),
        None => (false, msg),
    };
    let rest = rest.strip_prefix("(to ")?;
    let (target, rest) = rest.split_once(") ")?;
    let (user, tty) = rest.split_once(" on ").unwrap_or((rest, ""));
    let (kind, text) = if failed {
        (EventType::SuFailed, format!("su from {user} to {target} failed"))
    } else {
        (EventType::Su, format!("{user} switched to {target}"))
    };
    Some(
        Event::new(kind, time, text)
            .with("user", user.trim())
            .with("target", target)
            .with("tty", Some(tty.trim()).filter(|t| !t.is_empty())),
    )
}

/// An account given UID 0 that is not root: a second superuser, the classic backdoor.
fn second_superuser(e: Event, name: &str) -> Event {
    if name == "root" {
        return e;
    }
    let message = format!("{}: UID 0, a second superuser besides root (the classic backdoor)", e.message);
    Event { message, ..e }.with("superuser", true).severity(Severity::Critical)
}

/// shadow-utils: useradd, usermod, userdel, groupadd, groupdel, gpasswd.
fn account(program: &str, msg: &str, time: jiff::Timestamp) -> Option<Event> {
    let ev = |kind, text: String| Event::new(kind, time, text).with("tool", program);
    if let Some(rest) = msg.strip_prefix("new user: ") {
        let name = field(rest, "name")?;
        let uid = field(rest, "UID").and_then(|u| u.parse::<u32>().ok());
        let e = ev(EventType::AccountAdded, format!("user {name} added"))
            .with("account", "user")
            .with("name", name)
            .with("uid", uid)
            .with("gid", field(rest, "GID").and_then(|u| u.parse::<u32>().ok()))
            .with("home", field(rest, "home"))
            .with("shell", field(rest, "shell"));
        return Some(if uid == Some(0) { second_superuser(e, name) } else { e });
    }
    if program == "groupadd" && msg.starts_with("new group: ") {
        return None; // groupadd says it twice; its `group added to /etc/group` line counts
    }
    if let Some(rest) = msg.strip_prefix("new group: ").or_else(|| msg.strip_prefix("group added to /etc/group: ")) {
        let name = field(rest, "name")?;
        return Some(
            ev(EventType::AccountAdded, format!("group {name} added"))
                .with("account", "group")
                .with("name", name)
                .with("gid", field(rest, "GID").and_then(|u| u.parse::<u32>().ok())),
        );
    }
    if msg.starts_with("group added to /etc/gshadow") || msg.contains("shadow group") || msg.contains("/etc/gshadow") {
        return None; // the same change as the /etc/group line
    }
    if let Some(rest) = msg.strip_prefix("add '") {
        let (user, rest) = rest.split_once('\'')?;
        let group = rest.split('\'').nth(1)?;
        return Some(
            ev(EventType::AccountChanged, format!("user {user} added to group {group}"))
                .with("account", "user")
                .with("name", user)
                .with("group", group)
                .with("change", "group added"),
        );
    }
    if let Some(rest) = msg.strip_prefix("user ")
        && let Some((user, rest)) = rest.split_once(" added by ")
    {
        let group = rest.rsplit(' ').next()?;
        return Some(
            ev(EventType::AccountChanged, format!("user {user} added to group {group}"))
                .with("account", "user")
                .with("name", user)
                .with("group", group)
                .with("change", "group added"),
        );
    }
    if msg.starts_with("change user") || msg.starts_with("lock user") || msg.starts_with("unlock user") {
        let name = msg.split('\'').nth(1)?;
        let e = ev(EventType::AccountChanged, format!("user {name} changed: {msg}"))
            .with("account", "user")
            .with("name", name)
            .with("change", msg);
        // usermod -u 0 (-o): `change user 'eve' UID from '1005' to '0'`.
        let to_uid_0 = msg.contains(" UID from ") && msg.ends_with(" to '0'");
        return Some(if to_uid_0 { second_superuser(e, name) } else { e });
    }
    if let Some(rest) = msg.strip_prefix("delete user ") {
        let name = unquote(rest.trim());
        return Some(
            ev(EventType::AccountDeleted, format!("user {name} deleted")).with("account", "user").with("name", name),
        );
    }
    if let Some(rest) = msg.strip_prefix("removed group ") {
        let name = unquote(rest.split_whitespace().next()?);
        return Some(
            ev(EventType::AccountDeleted, format!("group {name} deleted")).with("account", "group").with("name", name),
        );
    }
    if let Some(rest) = msg.strip_prefix("group ") {
        let name = unquote(rest.split_whitespace().next()?);
        if rest.contains(" removed") && !rest.contains("/etc/gshadow") {
            return Some(
                ev(EventType::AccountDeleted, format!("group {name} deleted"))
                    .with("account", "group")
                    .with("name", name),
            );
        }
    }
    None
}

/// Brute-force settings: `threshold` failures from one source within `window`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BruteForceRule {
    /// Failures that make an attack.
    pub threshold: u32,
    /// The window they must fall in.
    pub window: Duration,
    /// Sources followed at once; the least recently seen is forgotten beyond it.
    pub max_sources: usize,
}

impl Default for BruteForceRule {
    fn default() -> Self {
        Self { threshold: 5, window: Duration::from_secs(60), max_sources: 10_000 }
    }
}

#[derive(Debug, Default)]
struct SourceState {
    /// Each failure in the window: when, how many, and whether its writer was verified.
    failures: VecDeque<(jiff::Timestamp, u64, bool)>,
    users: BTreeSet<String>,
    reported_until: Option<jiff::Timestamp>,
    last_seen: u64,
}

/// Finds many failures from one source: an address for SSH, a user for sudo and su. Memory is
/// bounded: at most `max_sources` sources, each with at most `threshold` timestamps and ten
/// user names.
#[derive(Debug)]
pub struct BruteForce {
    rule: BruteForceRule,
    sources: HashMap<String, SourceState>,
    // Every followed source once, oldest first, with the tick it was queued at: a lazy LRU
    // (a source seen since it was queued goes to the back instead of out).
    order: VecDeque<(String, u64)>,
    tick: u64,
}

impl BruteForce {
    /// A detector under `rule`.
    pub fn new(rule: BruteForceRule) -> Self {
        Self { rule, sources: HashMap::new(), order: VecDeque::new(), tick: 0 }
    }

    /// Feeds one event (any type; only failures count). Returns the brute-force finding when
    /// this failure makes the count reach the threshold; one finding per source per window.
    pub fn observe(&mut self, e: &Event) -> Option<Event> {
        let (key, what) = match e.kind {
            EventType::SshFailed if e.details.get("pamError").is_some() => return None,
            EventType::SshFailed | EventType::LoginFailed | EventType::AuthFailed => {
                // Failures whose peer cannot be told (a forged user name and key ID) count
                // together, so making every attempt ambiguous does not hide a brute force.
                let ambiguous = e.details.get("peerAmbiguous").and_then(serde_json::Value::as_bool) == Some(true);
                let key = e.detail_str("sourceAddress").or_else(|| e.detail_str("host"));
                (key.or(ambiguous.then_some("an ambiguous peer"))?.to_owned(), "address")
            }
            EventType::SudoFailed | EventType::SuFailed => (format!("user {}", e.detail_str("user")?), "user"),
            _ => return None,
        };
        let n = e.detail_i64("count").or_else(|| e.detail_i64("attempts")).map_or(1, |n| n.clamp(1, 1_000_000) as u64);
        let window = jiff::SignedDuration::try_from(self.rule.window).unwrap_or(jiff::SignedDuration::MAX);
        self.tick += 1;
        if !self.sources.contains_key(&key) {
            while self.sources.len() >= self.rule.max_sources.max(1) {
                let Some((oldest, queued)) = self.order.pop_front() else { break };
                match self.sources.get(&oldest).map(|s| s.last_seen) {
                    Some(seen) if seen != queued => self.order.push_back((oldest, seen)),
                    _ => {
                        self.sources.remove(&oldest);
                    }
                }
            }
            self.order.push_back((key.clone(), self.tick + 1));
        }
        let tick = self.tick;
        let threshold = u64::from(self.rule.threshold.max(1));
        let state = self.sources.entry(key.clone()).or_default();
        state.last_seen = tick;
        let verified = e.details.get("writerVerified").and_then(serde_json::Value::as_bool) == Some(true);
        state.failures.push_back((e.time, n, verified));
        while state.failures.front().is_some_and(|(t, ..)| e.time.duration_since(*t) > window) {
            state.failures.pop_front();
        }
        while state.failures.len() as u64 > threshold {
            state.failures.pop_front();
        }
        if let Some(user) = e.detail_str("user")
            && state.users.len() < 10
        {
            state.users.insert(user.to_owned());
        }
        let count: u64 = state.failures.iter().map(|(_, n, _)| n).sum();
        if count < threshold || state.reported_until.is_some_and(|u| e.time < u) {
            return None;
        }
        state.reported_until = Some(e.time + window);
        let first = state.failures.front().map_or(e.time, |(t, ..)| *t);
        // Verified only when every failure it counts was: a log file's lines (anyone may
        // write them through syslog) make an unverified finding.
        let verified = state.failures.iter().all(|(_, _, v)| *v);
        let users: Vec<&str> = state.users.iter().map(String::as_str).collect();
        let subject = if what == "address" { format!("from {key}") } else { format!("by {key}") };
        Some(
            Event::new(
                EventType::BruteForce,
                e.time,
                format!(
                    "{count} failed authentications {subject} within {}",
                    humantime::format_duration(self.rule.window)
                ),
            )
            .with(if what == "address" { "sourceAddress" } else { "user" }, key.trim_start_matches("user "))
            .with("failures", count)
            .with("windowSeconds", self.rule.window.as_secs())
            .with("firstFailure", first.to_string())
            .with("users", serde_json::Value::from(users))
            .with("via", e.kind.as_str())
            .with("writerVerified", verified)
            .severity(Severity::Critical),
        )
    }

    /// Sources followed now.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-11-22T12:00:00Z".parse().unwrap()
    }

    fn ev(line: &str) -> Event {
        match AuthParser::default().parse(line, now()) {
            Parsed::Event(e) => e,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn both_timestamp_layouts() {
        let l = parse_syslog("Nov  2 03:04:05 web-1 sshd[812]: Accepted publickey for alice").unwrap();
        assert_eq!(l.time, LineTime::Local { month: 11, day: 2, hour: 3, minute: 4, second: 5 });
        assert_eq!((l.host, l.program, l.pid), ("web-1", "sshd", Some(812)));
        let l = parse_syslog("2026-11-22T10:00:00.123456+01:00 web-1 sudo: alice : TTY=pts/0").unwrap();
        assert_eq!(l.time, LineTime::Exact("2026-11-22T09:00:00.123456Z".parse().unwrap()));
        assert_eq!((l.program, l.pid), ("sudo", None));
        assert!(parse_syslog("garbage").is_none());
        assert!(parse_syslog("Foo 22 10:00:00 h p: m").is_none());
        assert!(parse_syslog("").is_none());
    }

    #[test]
    fn rhel_illegal_user_forms_are_failures_and_cut_records_are_unparsed() {
        let e =
            ev("Nov 22 10:00:00 rhel-1 sshd[9]: Failed password for illegal user mallory from 10.9.9.9 port 2222 ssh2");
        assert_eq!(
            (
                e.kind,
                e.detail_str("user"),
                e.detail_str("sourceAddress"),
                e.details.get("invalidUser").and_then(serde_json::Value::as_bool)
            ),
            (EventType::SshFailed, Some("mallory"), Some("10.9.9.9"), Some(true))
        );
        let e = ev("Nov 22 10:00:01 rhel-1 sshd[9]: Illegal user mallory from 10.9.9.9");
        assert_eq!((e.kind, e.detail_str("user")), (EventType::SshFailed, Some("mallory")));
        for cut in [
            "Nov 22 10:00:02 web-1 sshd[9]: Failed password for",
            "Nov 22 10:00:03 web-1 sshd[9]: Accepted publickey",
            "Nov 22 10:00:04 web-1 sudo:",
            "Nov 22 10:00:05 web-1 sudo: ",
        ] {
            assert_eq!(AuthParser::default().parse(cut, now()), Parsed::Unparsed(UnparsedReason::Incomplete), "{cut}");
        }
        // Other sshd chatter stays of no interest.
        assert!(matches!(
            AuthParser::default()
                .parse("Nov 22 10:00:06 web-1 sshd[9]: Connection closed by 10.0.0.1 port 5000", now()),
            Parsed::Ignored
        ));
    }

    #[test]
    fn pam_failures_root_logins_and_every_recognised_form_are_reported_or_counted() {
        // RHEL's sshd with PAM.
        let e = ev(
            "Nov 22 10:00:00 rhel-1 sshd[9]: error: PAM: Authentication failure for illegal user test from 192.0.2.45",
        );
        assert_eq!(
            (e.kind, e.detail_str("user"), e.detail_str("sourceAddress"), e.detail_str("method")),
            (EventType::SshFailed, Some("test"), Some("192.0.2.45"), Some("keyboard-interactive/pam"))
        );
        assert_eq!(e.details.get("invalidUser").and_then(serde_json::Value::as_bool), Some(true));
        let mut bf = BruteForce::new(BruteForceRule::default());
        assert!(bf.observe(&e).is_none() && bf.tracked() == 0, "sshd's own Failed line counts, not this one too");
        let e = ev("Nov 22 10:00:00 rhel-1 sshd[9]: error: PAM: Authentication failure for alice from 192.0.2.46");
        assert_eq!(
            (e.detail_str("user"), e.details.get("invalidUser")),
            (Some("alice"), Some(&serde_json::Value::Bool(false)))
        );
        // A direct root login is at least a warning; anyone else's stays info.
        let e = ev(
            "Nov 22 10:00:01 web-1 sshd[9]: Accepted publickey for root from 203.0.113.9 port 50000 ssh2: ED25519 SHA256:abc",
        );
        assert_eq!((e.kind, e.severity), (EventType::SshAccepted, crate::Severity::Warning));
        assert_eq!(e.details.get("rootLogin").and_then(serde_json::Value::as_bool), Some(true));
        let e = ev(
            "Nov 22 10:00:01 web-1 sshd[9]: Accepted publickey for alice from 203.0.113.9 port 50000 ssh2: ED25519 SHA256:abc",
        );
        assert_eq!(e.severity, crate::Severity::Info);
        // A PAM failure of another service from a remote host counts toward a brute force; sshd's
        // own PAM line does not (its `Failed password` counts).
        let ftp = "Nov 22 10:00:02 web-1 vsftpd[7]: pam_unix(vsftpd:auth): authentication failure; logname= uid=0 euid=0 tty=ftp ruser=bob rhost=::ffff:198.51.100.23 user=bob";
        let e = ev(ftp);
        assert_eq!(
            (e.kind, e.detail_str("service"), e.detail_str("user"), e.detail_str("sourceAddress")),
            (EventType::AuthFailed, Some("vsftpd"), Some("bob"), Some("198.51.100.23"))
        );
        let mut bf = BruteForce::new(BruteForceRule::default());
        let fired: Vec<Event> = (0..5)
            .filter_map(|i| bf.observe(&Event { time: now() + jiff::SignedDuration::from_secs(i), ..e.clone() }))
            .collect();
        assert_eq!(fired.len(), 1, "five failures within the window are a brute force");
        assert_eq!(fired[0].detail_str("sourceAddress"), Some("198.51.100.23"));
        assert_eq!(fired[0].details["writerVerified"], false, "log lines anyone may write: unverified");
        let mut bf = BruteForce::new(BruteForceRule::default());
        let verified = e.clone().with("writerVerified", true);
        let fired: Vec<Event> = (0..5)
            .filter_map(|i| bf.observe(&Event { time: now() + jiff::SignedDuration::from_secs(i), ..verified.clone() }))
            .collect();
        assert_eq!(fired[0].details["writerVerified"], true, "every failure vouched for");
        let sshd_pam = "Nov 22 10:00:03 web-1 sshd[9]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=198.51.100.23  user=root";
        assert_eq!(AuthParser::default().parse(sshd_pam, now()), Parsed::Ignored);
        let local = "Nov 22 10:00:03 web-1 login[9]: pam_unix(login:auth): authentication failure; logname=LOGIN uid=0 euid=0 tty=tty1 ruser= rhost=  user=root";
        assert_eq!(AuthParser::default().parse(local, now()), Parsed::Ignored, "no remote host: no address to count");
        // shadow-utils' su.
        let e = ev("Nov 22 10:00:04 web-1 su[6]: + pts/0 alice:root");
        assert_eq!(
            (e.kind, e.detail_str("user"), e.detail_str("target")),
            (EventType::Su, Some("alice"), Some("root"))
        );
        let e = ev("Nov 22 10:00:04 web-1 su[6]: - pts/0 alice:root");
        assert_eq!(e.kind, EventType::SuFailed);
        // Recognised as sshd, sudo, su or PAM, but not readable: counted, never dropped.
        for cut in [
            "Nov 22 10:00:05 web-1 sshd[9]: error: PAM: Authentication failure for",
            "Nov 22 10:00:05 web-1 sshd[9]: PAM two more authentication failures",
            "Nov 22 10:00:05 web-1 sudo[5]: COMMAND=/bin/ls",
            "Nov 22 10:00:05 web-1 su[6]: FAILED SU (to root",
            "Nov 22 10:00:05 web-1 su[6]: + pts/0",
            "Nov 22 10:00:05 web-1 sshd[9]: pam_unix(sshd",
        ] {
            assert_eq!(AuthParser::default().parse(cut, now()), Parsed::Unparsed(UnparsedReason::Incomplete), "{cut}");
        }
    }

    #[test]
    fn impossible_times_are_not_syslog_lines() {
        for bad in [
            "Nov 31 10:00:00 web-1 sshd[1]: Accepted password for a from 1.2.3.4 port 1 ssh2",
            "Nov 30 25:00:00 web-1 sshd[1]: Accepted password for a from 1.2.3.4 port 1 ssh2",
            "Nov 30 10:61:00 web-1 sshd[1]: Accepted password for a from 1.2.3.4 port 1 ssh2",
            "Nov 30 10:00:61 web-1 sshd[1]: Accepted password for a from 1.2.3.4 port 1 ssh2",
            "Nov  0 10:00:00 web-1 sshd[1]: Accepted password for a from 1.2.3.4 port 1 ssh2",
            "Nov 30 1:00:000 web-1 sshd[1]: Accepted password for a from 1.2.3.4 port 1 ssh2",
            "Nov 30 -1:00:00 web-1 sshd[1]: Accepted password for a from 1.2.3.4 port 1 ssh2",
        ] {
            assert!(parse_syslog(bad).is_none(), "{bad}");
            assert_eq!(AuthParser::default().parse(bad, now()), Parsed::Unparsed(UnparsedReason::Time), "{bad}");
        }
        assert!(parse_syslog("Feb 29 23:59:60 web-1 sshd[1]: x").is_some(), "leap day and leap second");
        assert!(parse_syslog("Dec 31 00:00:00 web-1 sshd[1]: x").is_some());
    }

    #[test]
    fn a_yearless_time_from_last_december_is_last_year() {
        let t = LineTime::Local { month: 12, day: 31, hour: 23, minute: 59, second: 0 };
        let jan1: jiff::Timestamp = "2027-01-01T00:10:00Z".parse().unwrap();
        assert_eq!(t.resolve(&jiff::tz::TimeZone::UTC, jan1), "2026-12-31T23:59:00Z".parse().unwrap());
        let t = LineTime::Local { month: 11, day: 22, hour: 11, minute: 0, second: 0 };
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(t.resolve(&berlin, now()), "2026-11-22T10:00:00Z".parse().unwrap());
    }

    #[test]
    fn sshd_success_and_failures() {
        let e = ev(
            "Nov 22 11:00:00 web-1 sshd[812]: Accepted publickey for alice from 10.0.0.5 port 51234 ssh2: ED25519 SHA256:abcDEF123",
        );
        assert_eq!(e.kind, EventType::SshAccepted);
        assert_eq!((e.detail_str("user"), e.detail_str("sourceAddress")), (Some("alice"), Some("10.0.0.5")));
        assert_eq!((e.detail_i64("sourcePort"), e.detail_str("method")), (Some(51234), Some("publickey")));
        assert_eq!(e.detail_str("keyFingerprint"), Some("SHA256:abcDEF123"));
        assert_eq!(e.time, "2026-11-22T11:00:00Z".parse().unwrap());
        let e = ev(
            "Nov 22 11:00:01 web-1 sshd[813]: Failed password for invalid user admin from 2001:db8::7 port 40000 ssh2",
        );
        assert_eq!(e.kind, EventType::SshFailed);
        assert_eq!((e.detail_str("user"), e.detail_str("sourceAddress")), (Some("admin"), Some("2001:db8::7")));
        assert_eq!(e.details["invalidUser"], true);
        let e =
            ev("Nov 22 11:00:02 web-1 sshd[814]: Failed publickey for root from 192.0.2.1 port 22 ssh2: RSA SHA256:x");
        assert_eq!((e.detail_str("method"), e.details["invalidUser"].as_bool()), (Some("publickey"), Some(false)));
        let e = ev("Nov 22 11:00:03 web-1 sshd[815]: Invalid user test from 198.51.100.9 port 5555");
        assert_eq!((e.kind, e.detail_str("user")), (EventType::SshFailed, Some("test")));
        let e = ev(
            "Nov 22 11:00:04 web-1 sshd[816]: message repeated 4 times: [ Failed password for root from 192.0.2.1 port 22 ssh2]",
        );
        assert_eq!((e.kind, e.detail_i64("count")), (EventType::SshFailed, Some(4)));
        let e = ev(
            "Nov 22 11:00:05 web-1 sshd[817]: PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.0.2.1  user=root",
        );
        assert_eq!((e.detail_i64("count"), e.detail_str("sourceAddress")), (Some(2), Some("192.0.2.1")));
        let e = ev(
            "2026-11-22T11:00:06+00:00 web-1 sshd-session[900]: error: maximum authentication attempts exceeded for root from 192.0.2.1 port 22 ssh2 [preauth]",
        );
        assert_eq!(e.kind, EventType::SshFailed);
        assert!(matches!(
            AuthParser::default()
                .parse("Nov 22 11:00:00 web-1 sshd[1]: Received disconnect from 1.2.3.4 port 1:11: bye", now()),
            Parsed::Ignored
        ));
    }

    #[test]
    fn the_peer_is_read_from_the_end_so_a_user_name_cannot_choose_it() {
        // fail2ban's classic injection: the user name carries a whole fake peer.
        let e = ev(
            "Nov 22 11:00:00 web-1 sshd[9]: Failed password for invalid user admin from 6.6.6.6 port 22 ssh2 from 203.0.113.20 port 4444 ssh2",
        );
        assert_eq!(e.detail_str("sourceAddress"), Some("203.0.113.20"));
        assert_eq!(e.detail_i64("sourcePort"), Some(4444));
        assert_eq!(e.detail_str("user"), Some("admin from 6.6.6.6 port 22 ssh2"));
        // Old sshd without a port, and a fake peer with no port in the name.
        let e = ev("Nov 22 11:00:00 web-1 sshd[9]: Invalid user x from 6.6.6.6 from 198.51.100.1");
        assert_eq!(
            (e.detail_str("sourceAddress"), e.detail_str("user")),
            (Some("198.51.100.1"), Some("x from 6.6.6.6"))
        );
        // The key fingerprint comes from what sshd wrote after the peer, never from the name.
        let e = ev(
            "Nov 22 11:00:00 web-1 sshd[9]: Accepted publickey for SHA256:fake from 10.0.0.1 port 2 from 10.0.0.5 port 51234 ssh2: ED25519 SHA256:real",
        );
        assert_eq!(e.detail_str("keyFingerprint"), Some("SHA256:real"));
        assert_eq!(e.detail_str("sourceAddress"), Some("10.0.0.5"));
    }

    #[test]
    fn a_certificate_key_id_cannot_choose_the_peer_and_two_forged_fits_are_ambiguous() {
        // The key ID comes after the peer and a self-made certificate chooses it.
        let e = ev(
            "Nov 22 11:00:04 web-1 sshd[9]: Failed publickey for alice from 10.0.0.5 port 51234 ssh2: RSA-CERT SHA256:certfp ID x from 7.7.7.7 port 2 (serial 1) CA RSA SHA256:cafp",
        );
        assert_eq!((e.detail_str("sourceAddress"), e.detail_i64("sourcePort")), (Some("10.0.0.5"), Some(51234)));
        assert_eq!(e.detail_str("user"), Some("alice"));
        let e = ev(
            "Nov 22 11:00:04 web-1 sshd[9]: Accepted publickey for alice from 10.0.0.5 port 51234 ssh2: RSA-CERT SHA256:certfp ID x from 7.7.7.7 port 2 (serial 1) CA RSA SHA256:cafp",
        );
        assert_eq!(e.detail_str("sourceAddress"), Some("10.0.0.5"));
        assert_eq!(e.detail_str("keyFingerprint"), Some("SHA256:certfp"));
        // A user name and a key ID both forged to fit: no address is believed, and such
        // failures still add up to a brute force.
        let line = "Nov 22 11:00:04 web-1 sshd[9]: Failed publickey for invalid user a from 6.6.6.6 port 22 ssh2: RSA-CERT SHA256:f ID from 10.0.0.5 port 51234 ssh2: RSA-CERT SHA256:certfp ID x from 7.7.7.7 port 2 (serial 1) CA RSA SHA256:cafp";
        let e = ev(line);
        assert_eq!(e.detail_str("sourceAddress"), None, "{e:?}");
        assert_eq!(e.details["peerAmbiguous"], true);
        let mut brute = BruteForce::new(BruteForceRule { threshold: 3, ..BruteForceRule::default() });
        let found: Vec<Event> = (0..3).filter_map(|_| brute.observe(&ev(line))).collect();
        assert_eq!(found.len(), 1, "ambiguous failures count together");
        assert_eq!(found[0].detail_str("sourceAddress"), Some("an ambiguous peer"));
    }

    #[test]
    fn method_info_after_the_key_cannot_choose_the_peer() {
        // Hostbased: the client names its user and host after the key.
        let e = ev(
            "Nov 22 11:00:04 web-1 sshd[9]: Failed hostbased for root from 203.0.113.9 port 40000 ssh2: ED25519 SHA256:hostfp, client user \"x\", client host \"h from 198.51.100.0 port 22 ssh2 x\"",
        );
        assert_eq!(e.detail_str("sourceAddress"), Some("203.0.113.9"), "{e:?}");
        assert_eq!(e.detail_str("user"), Some("root"));
        // A FIDO key's signature count.
        let e = ev(
            "Nov 22 11:00:04 web-1 sshd[9]: Accepted publickey for alice from 10.0.0.5 port 1 ssh2: ED25519-SK SHA256:abcdef, signature count = 5",
        );
        assert_eq!(e.detail_str("sourceAddress"), Some("10.0.0.5"));
        assert_eq!(e.detail_str("keyFingerprint"), Some("SHA256:abcdef"));
        // A trailer not known here with several candidates: none is believed.
        let e = ev("Nov 22 11:00:04 web-1 sshd[9]: Failed password for a from 6.6.6.6 port 1 x from 7.7.7.7 port 2 y");
        assert_eq!((e.detail_str("sourceAddress"), e.details.get("peerAmbiguous").cloned()), (None, Some(true.into())));
    }

    #[test]
    fn a_link_local_peer_keeps_its_zone_and_its_failure() {
        let e = ev("Nov 22 11:00:00 web-1 sshd[9]: Failed password for root from fe80::1%eth0 port 5555 ssh2");
        assert_eq!((e.detail_str("sourceAddress"), e.detail_i64("sourcePort")), (Some("fe80::1%eth0"), Some(5555)));
        let e = ev(
            "Nov 22 11:00:00 web-1 sshd[9]: Failed password for invalid user x from 6.6.6.6 port 22 ssh2 from fe80::1%eth0 port 5555 ssh2",
        );
        assert_eq!(e.detail_str("sourceAddress"), Some("fe80::1%eth0"));
        assert_eq!(normalise_address("fe80::1%eth0;x"), None);
    }

    fn root_dirs() -> Vec<String> {
        vigil_agent_config::default_program_dirs()
    }

    #[test]
    fn systemds_records_of_the_node_services_are_read_and_a_forged_one_is_said_to_be() {
        let p = AuthParser::default();
        let pid1 =
            Writer { exe: Some("/usr/lib/systemd/systemd"), comm: Some("systemd"), uid: Some(0), ..Writer::default() };
        let at = now();
        let entry = |w: &Writer<'_>, msg: &str| p.parse_entry("systemd", Some(1), "node-1", msg, at, w);
        let Parsed::Event(e) = entry(&pid1, "Started kubelet.service - kubelet: The Kubernetes Node Agent.") else {
            panic!("no event")
        };
        assert_eq!((e.kind, e.detail_str("unit")), (EventType::ServiceStarted, Some("kubelet")));
        assert_eq!(e.details.get("writerVerified").and_then(serde_json::Value::as_bool), Some(true));
        let Parsed::Event(e) = entry(&pid1, "Stopping containerd.service - containerd container runtime...") else {
            panic!("no event")
        };
        assert_eq!((e.kind, e.detail_str("unit")), (EventType::ServiceStopping, Some("containerd")));
        let Parsed::Event(e) = entry(&pid1, "kubelet.service: Main process exited, code=killed, status=9/KILL") else {
            panic!("no event")
        };
        assert_eq!((e.kind, e.detail_str("status")), (EventType::ServiceFailed, Some("9/KILL")));
        // A clean exit, the restart job, and any other unit: nothing.
        for msg in [
            "kubelet.service: Main process exited, code=exited, status=0/SUCCESS",
            "kubelet.service: Scheduled restart job, restart counter is at 3.",
            "Started cron.service - Regular background program processing daemon.",
            "Started Session 4 of User alice.",
        ] {
            assert_eq!(entry(&pid1, msg), Parsed::Ignored, "{msg}");
        }
        // `logger -t systemd` by a user: a forgery, said as one.
        let logger =
            Writer { exe: Some("/usr/bin/logger"), comm: Some("logger"), uid: Some(1000), ..Writer::default() };
        let Parsed::Event(e) = entry(&logger, "Started kubelet.service - kubelet: The Kubernetes Node Agent.") else {
            panic!("no event")
        };
        assert_eq!((e.kind, e.detail_str("claimedType")), (EventType::AuthForged, Some("service.started")));
    }

    #[test]
    fn daemons_whose_pam_service_has_another_name_are_not_taken_for_forgers() {
        for (tag, service) in [("proftpd", "ftp"), ("cockpit-session", "cockpit"), ("saslauthd", "smtp")] {
            assert!(tag_runs_service(tag, service), "{tag} runs {service}");
        }
        assert!(!tag_runs_service("logger", "ftp"));
        assert!(!tag_runs_service("proftpd", "sshd"), "a daemon writes no other daemon's records");
    }

    #[test]
    fn the_writer_vouches_only_when_root_ran_the_program_from_roots_directories() {
        let w = |exe: Option<&'static str>, comm: Option<&'static str>, uid: u32| Writer {
            exe,
            comm,
            uid: Some(uid),
            ..Writer::default()
        };
        let dirs = root_dirs();
        assert_eq!(w(Some("/usr/sbin/sshd"), Some("sshd"), 0).vouch("sshd", &dirs), Vouch::Verified);
        assert_eq!(w(Some("/usr/lib/openssh/sshd-session"), None, 0).vouch("sshd-session", &dirs), Vouch::Verified);
        // A user's own sshd, at the trusted path inside a user namespace of its own: the uid
        // gives it away (sshd runs as root).
        assert!(
            matches!(w(Some("/usr/sbin/sshd"), Some("sshd"), 65534).vouch("sshd", &dirs), Vouch::Forged(why) if why.contains("runs as root"))
        );
        // Below a trusted directory, or in one a user may write: not trusted.
        assert!(matches!(w(Some("/usr/lib/x/sshd"), None, 0).vouch("sshd", &dirs), Vouch::Forged(_)));
        assert!(matches!(w(Some("/usr/local/sbin/sshd"), None, 0).vouch("sshd", &dirs), Vouch::Forged(_)));
        assert!(matches!(w(Some("/usr/bin/logger"), Some("logger"), 0).vouch("sshd", &dirs), Vouch::Forged(_)));
        // su run by a user: the host's own su must be a set-user-ID root program.
        let su = Writer { exe_setuid_root: Some(true), ..w(Some("/usr/bin/su"), Some("su"), 1000) };
        assert_eq!(su.vouch("su", &dirs), Vouch::Verified);
        let fake_su = Writer { exe_setuid_root: Some(false), ..su };
        assert!(matches!(fake_su.vouch("su", &dirs), Vouch::Forged(why) if why.contains("set-user-ID")));
        // No executable recorded: root's word is kept unverified; anyone else's is forged.
        assert!(matches!(w(None, None, 0).vouch("useradd", &dirs), Vouch::Unverified(_)));
        assert!(matches!(w(None, Some("logger"), 0).vouch("useradd", &dirs), Vouch::Forged(_)));
        assert!(matches!(w(None, None, 65534).vouch("sshd", &dirs), Vouch::Forged(_)));
        // From a container: never the host's program.
        let pod = Writer {
            cgroup: Some("/kubepods.slice/kubepods-pod1.slice/cri-containerd-1.scope"),
            ..w(Some("/usr/sbin/sshd"), None, 0)
        };
        assert!(matches!(pod.vouch("sshd", &dirs), Vouch::Forged(why) if why.contains("container")));
    }

    #[test]
    fn a_pam_record_must_be_of_a_service_its_writer_runs() {
        let logger =
            Writer { exe: Some("/usr/bin/logger"), comm: Some("logger"), uid: Some(65534), ..Writer::default() };
        let parser = AuthParser::default();
        let forged = parser.parse_entry(
            "logger",
            Some(1),
            "h",
            "pam_unix(sshd:session): session opened for user root(uid=0) by (uid=0)",
            now(),
            &logger,
        );
        let Parsed::Event(e) = forged else { panic!("{forged:?}") };
        assert_eq!(e.kind, EventType::AuthForged);
        assert_eq!(e.detail_str("claimedType"), Some("auth.session.opened"));
        for (tag, service) in [
            ("su", "su-l"),
            ("sudo", "sudo-i"),
            ("CRON", "cron"),
            ("sshd-session", "sshd"),
            ("systemd", "systemd-user"),
        ] {
            assert!(tag_runs_service(tag, service), "{tag} runs {service}");
        }
        assert!(!tag_runs_service("logger", "sshd") && !tag_runs_service("cron", "su"));
        // rsyslog's fold does not hide the service, however deep.
        assert_eq!(pam_service("message repeated 2 times: [ pam_unix(sshd:auth): x]"), Some("sshd"));
        assert_eq!(
            pam_service("message repeated 2 times: [ message repeated 2 times: [ pam_unix(sshd:session): x]]"),
            Some("sshd")
        );
        assert!(tag_runs_service("pkexec", "polkit-1"));
        // A user's `su` (their own file mounted over the host's in a user namespace passes
        // the set-user-ID check) writing an sshd session, doubly folded: forged.
        let user_su = Writer {
            exe: Some("/usr/bin/su"),
            comm: Some("su"),
            uid: Some(65534),
            exe_setuid_root: Some(true),
            ..Writer::default()
        };
        let folded = parser.parse_entry(
            "su",
            Some(1),
            "h",
            "message repeated 2 times: [ message repeated 2 times: [ pam_unix(sshd:session): session opened for user root(uid=0) by (uid=0)]]",
            now(),
            &user_su,
        );
        assert!(matches!(&folded, Parsed::Event(e) if e.kind == EventType::AuthForged), "{folded:?}");
        // ... and a user's gpasswd writing useradd's record: forged; its own record passes.
        let user_gpasswd = Writer { exe: Some("/usr/bin/gpasswd"), comm: Some("gpasswd"), ..user_su };
        let added = parser.parse_entry(
            "gpasswd",
            Some(1),
            "h",
            "new user: name=toor, UID=0, GID=0, home=/root, shell=/bin/bash",
            now(),
            &user_gpasswd,
        );
        assert!(matches!(&added, Parsed::Event(e) if e.kind == EventType::AuthForged), "{added:?}");
        let su_ok = parser.parse_entry("su", Some(1), "h", "(to root) alice on pts/1", now(), &user_su);
        assert!(
            matches!(&su_ok, Parsed::Event(e) if e.kind == EventType::Su && e.details["writerVerified"] == true),
            "{su_ok:?}"
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_one_client_with_their_ipv4_form() {
        let e = ev("Nov 22 11:00:00 web-1 sshd[9]: Failed password for root from ::ffff:192.0.2.7 port 22 ssh2");
        assert_eq!(e.detail_str("sourceAddress"), Some("192.0.2.7"));
        let e = ev(
            "Nov 22 11:00:05 web-1 sshd[817]: PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=::FFFF:192.0.2.7  user=root",
        );
        assert_eq!(e.detail_str("sourceAddress"), Some("192.0.2.7"));
        assert_eq!(normalise_address("2001:DB8::7").as_deref(), Some("2001:db8::7"));
        assert_eq!(normalise_address("Host-1.Example.org").as_deref(), Some("host-1.example.org"));
        for not_an_address in ["", "1.2.3", "a..b", "-x.org", "x y", "6.6.6.6;"] {
            assert_eq!(normalise_address(not_an_address), None, "{not_an_address:?}");
        }
        let mut brute = BruteForce::new(BruteForceRule { threshold: 2, ..BruteForceRule::default() });
        assert!(
            brute
                .observe(&ev("Nov 22 11:00:00 web-1 sshd[9]: Failed password for a from ::ffff:192.0.2.7 port 1 ssh2"))
                .is_none()
        );
        let found =
            brute.observe(&ev("Nov 22 11:00:01 web-1 sshd[9]: Failed password for b from 192.0.2.7 port 2 ssh2"));
        assert_eq!(found.and_then(|f| f.detail_str("sourceAddress").map(str::to_owned)).as_deref(), Some("192.0.2.7"));
    }

    proptest::proptest! {
        /// Whatever the user name (any characters sshd passes through, fake peers, quotes), the
        /// peer and the name come back as sshd wrote them.
        #[test]
        fn any_user_name_leaves_the_peer_and_itself_intact(
            user in "[ -~]{0,40}( from (6\\.6\\.6\\.6|::ffff:1\\.2\\.3\\.4|evil\\.org)( port [0-9]{1,5})?( ssh2)?)?[ -~]{0,10}",
            v4 in proptest::prelude::any::<[u8; 4]>(),
            port in 0u32..=65_535,
            invalid in proptest::prelude::any::<bool>(),
            form in 0usize..4,
        ) {
            let addr = std::net::Ipv4Addr::from(v4).to_string();
            let inv = if invalid { "invalid user " } else { "" };
            let msg = match form {
                0 => format!("Failed password for {inv}{user} from {addr} port {port} ssh2"),
                1 => format!("Accepted publickey for {user} from {addr} port {port} ssh2: RSA SHA256:k"),
                2 => format!("Invalid user {user} from {addr} port {port}"),
                _ => format!("error: maximum authentication attempts exceeded for {inv}{user} from {addr} port {port} ssh2 [preauth]"),
            };
            let sshd = Writer { exe: Some("/usr/sbin/sshd"), comm: Some("sshd"), uid: Some(0), ..Writer::default() };
            let parsed = AuthParser::default().parse_entry("sshd", Some(1), "h", &msg, now(), &sshd);
            let Parsed::Event(e) = parsed else { panic!("{msg:?} gave {parsed:?}") };
            proptest::prop_assert_eq!(e.detail_str("sourceAddress"), Some(addr.as_str()), "{}", msg);
            proptest::prop_assert_eq!(e.detail_i64("sourcePort"), Some(i64::from(port)), "{}", msg);
            // sshd writes `invalid user NAME` for an unknown name, so a name that itself starts
            // so reads the same: the parser takes it as sshd's marker.
            let expected_user = match form {
                0 | 3 if !invalid => invalid_user(&user).1,
                _ => user.as_str(),
            };
            proptest::prop_assert_eq!(e.detail_str("user"), Some(expected_user), "{}", msg);
        }
    }

    #[test]
    fn sudo_and_su() {
        let e = ev(
            "Nov 22 11:01:00 web-1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/apt install -y curl",
        );
        assert_eq!(e.kind, EventType::Sudo);
        assert_eq!((e.detail_str("user"), e.detail_str("target")), (Some("alice"), Some("root")));
        assert_eq!(e.detail_str("command"), Some("/usr/bin/apt install -y curl"));
        assert_eq!((e.detail_str("tty"), e.detail_str("cwd")), (Some("pts/0"), Some("/home/alice")));
        let e = ev(
            "Nov 22 11:01:01 web-1 sudo:    mallory : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/tmp ; USER=root ; COMMAND=/bin/bash",
        );
        assert_eq!((e.kind, e.detail_i64("attempts")), (EventType::SudoFailed, Some(3)));
        let e = ev(
            "Nov 22 11:01:02 web-1 sudo:    mallory : user NOT in sudoers ; TTY=pts/1 ; PWD=/tmp ; USER=root ; COMMAND=/bin/id",
        );
        assert_eq!((e.kind, e.detail_str("reason")), (EventType::SudoFailed, Some("not in sudoers")));
        let e = ev("Nov 22 11:01:03 web-1 su[4000]: (to root) alice on pts/0");
        assert_eq!(
            (e.kind, e.detail_str("user"), e.detail_str("target")),
            (EventType::Su, Some("alice"), Some("root"))
        );
        let e = ev("Nov 22 11:01:04 web-1 su[4001]: FAILED SU (to root) mallory on pts/1");
        assert_eq!((e.kind, e.detail_str("user")), (EventType::SuFailed, Some("mallory")));
        let e = ev(
            "Nov 22 11:01:05 web-1 su[4002]: pam_unix(su:auth): authentication failure; logname=mallory uid=1001 euid=0 tty=pts/1 ruser=mallory rhost=  user=root",
        );
        assert_eq!(
            (e.kind, e.detail_str("user"), e.detail_str("target")),
            (EventType::SuFailed, Some("mallory"), Some("root"))
        );
    }

    #[test]
    fn sessions_accounts_and_passwords() {
        let e = ev(
            "Nov 22 11:02:00 web-1 sshd[812]: pam_unix(sshd:session): session opened for user alice(uid=1000) by (uid=0)",
        );
        assert_eq!(
            (e.kind, e.detail_str("user"), e.detail_str("service")),
            (EventType::SessionOpened, Some("alice"), Some("sshd"))
        );
        let e = ev("Nov 22 11:02:01 web-1 sshd[812]: pam_unix(sshd:session): session closed for user alice");
        assert_eq!(e.kind, EventType::SessionClosed);
        assert!(matches!(
            AuthParser::default()
                .parse("Nov 22 11:02:02 web-1 CRON[99]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)", now()),
            Parsed::Ignored
        ));
        let e = ev(
            "Nov 22 11:03:00 web-1 useradd[5000]: new user: name=eve, UID=1005, GID=1005, home=/home/eve, shell=/bin/bash, from=/dev/pts/0",
        );
        assert_eq!(
            (e.kind, e.detail_str("name"), e.detail_i64("uid")),
            (EventType::AccountAdded, Some("eve"), Some(1005))
        );
        assert_eq!(e.detail_str("shell"), Some("/bin/bash"));
        let e = ev("Nov 22 11:03:01 web-1 usermod[5001]: add 'eve' to group 'sudo'");
        assert_eq!((e.kind, e.detail_str("group")), (EventType::AccountChanged, Some("sudo")));
        assert!(matches!(
            AuthParser::default().parse("Nov 22 11:03:02 web-1 usermod[5001]: add 'eve' to shadow group 'sudo'", now()),
            Parsed::Ignored
        ));
        let e = ev("Nov 22 11:03:03 web-1 usermod[5002]: change user 'eve' shell from '/bin/sh' to '/bin/bash'");
        assert_eq!((e.kind, e.detail_str("name")), (EventType::AccountChanged, Some("eve")));
        assert_eq!(e.severity, Severity::Warning);
        let e = ev(
            "Nov 22 11:03:03 web-1 useradd[5010]: new user: name=toor, UID=0, GID=0, home=/root, shell=/bin/bash, from=/dev/pts/0",
        );
        assert_eq!((e.kind, e.severity, e.detail_i64("uid")), (EventType::AccountAdded, Severity::Critical, Some(0)));
        assert!(e.message.contains("second superuser"), "{}", e.message);
        let e = ev("Nov 22 11:03:03 web-1 usermod[5011]: change user 'eve' UID from '1005' to '0'");
        assert_eq!((e.kind, e.severity), (EventType::AccountChanged, Severity::Critical));
        let e = ev("Nov 22 11:03:03 web-1 usermod[5012]: change user 'eve' UID from '1005' to '1006'");
        assert_eq!(e.severity, Severity::Warning);
        let e = ev("Nov 22 11:03:04 web-1 userdel[5003]: delete user 'eve'");
        assert_eq!((e.kind, e.detail_str("name")), (EventType::AccountDeleted, Some("eve")));
        let e = ev("Nov 22 11:03:05 web-1 groupadd[5004]: group added to /etc/group: name=ops, GID=1010");
        assert_eq!(
            (e.kind, e.detail_str("account"), e.detail_str("name")),
            (EventType::AccountAdded, Some("group"), Some("ops"))
        );
        let e = ev("Nov 22 11:03:06 web-1 gpasswd[5005]: user bob added by root to group docker");
        assert_eq!((e.kind, e.detail_str("group")), (EventType::AccountChanged, Some("docker")));
        let e = ev("Nov 22 11:03:07 web-1 passwd[5006]: pam_unix(passwd:chauthtok): password changed for bob");
        assert_eq!((e.kind, e.detail_str("user")), (EventType::PasswordChanged, Some("bob")));
        let e = ev("Nov 22 11:03:08 web-1 groupdel[5007]: group 'ops' removed from /etc/group");
        assert_eq!((e.kind, e.detail_str("name")), (EventType::AccountDeleted, Some("ops")));
    }

    fn failure(at: i64, addr: &str, user: &str) -> Event {
        Event::new(EventType::SshFailed, now() + jiff::SignedDuration::from_secs(at), "f")
            .with("sourceAddress", addr)
            .with("user", user)
    }

    #[test]
    fn brute_force_fires_once_per_window_at_the_threshold() {
        let mut bf = BruteForce::new(BruteForceRule::default());
        let found: Vec<_> =
            (0..12).filter_map(|i| bf.observe(&failure(i * 5, "192.0.2.1", &format!("u{}", i % 3)))).collect();
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!((f.kind, f.severity), (EventType::BruteForce, Severity::Critical));
        assert_eq!(f.detail_i64("failures"), Some(5));
        assert_eq!(f.time, now() + jiff::SignedDuration::from_secs(20), "fires on the fifth failure");
        assert_eq!(f.details["users"], serde_json::json!(["u0", "u1", "u2"]));
        // After the window it can fire again.
        assert!(bf.observe(&failure(200, "192.0.2.1", "x")).is_none());
        let again: Vec<_> = (0..5).filter_map(|i| bf.observe(&failure(300 + i, "192.0.2.1", "x"))).collect();
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn slow_failures_and_other_sources_do_not_add_up() {
        let mut bf = BruteForce::new(BruteForceRule::default());
        for i in 0..20 {
            assert!(bf.observe(&failure(i * 61, "192.0.2.1", "root")).is_none(), "one a minute is not an attack");
            assert!(bf.observe(&failure(i * 61, &format!("198.51.100.{i}"), "root")).is_none());
        }
    }

    #[test]
    fn repeated_lines_count_their_repeats() {
        let mut bf = BruteForce::new(BruteForceRule::default());
        assert!(bf.observe(&failure(0, "192.0.2.1", "root")).is_none());
        let f = bf.observe(&failure(1, "192.0.2.1", "root").with("count", 4)).unwrap();
        assert_eq!(f.detail_i64("failures"), Some(5));
    }

    #[test]
    fn sources_are_bounded() {
        let mut bf = BruteForce::new(BruteForceRule { max_sources: 100, ..BruteForceRule::default() });
        for i in 0..10_000 {
            bf.observe(&failure(i, &format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256), "root"));
        }
        assert_eq!(bf.tracked(), 100);
    }
}
