//! Security events: what happens on the node, as one typed model.
//!
//! ```text
//!  kmsg ─┐  auth logs, wtmp/btmp ─┐  processes (CN_PROC | /proc) ─┐  files (inotify + baseline) ─┐
//!        └──────────────┬─────────┴──────────────┬────────────────┴──────────────┬─────────────┘
//!               Emitter per source: token bucket ─▶ bounded queue ─▶ consumers
//!                       (drops counted by source and reason, never silent)     (watch, /metrics,
//!                                                                                OTLP logs, alerts)
//! ```
//!
//! Each source lives in its own module. The parsers of host text ([`kmsg`], [`auth`],
//! [`utmp`], [`netconn`]) are pure functions over bytes and property-tested; the sources
//! around them do the I/O and are thin.
//!
//! This crate is the agent's event sources and nothing of its shell: it reads the host (with
//! `vigil-host`'s readers and its own), hands events to a bounded queue, and links no
//! client, server or exporter (docs/adr/0009-crate-layout.md, checked by
//! `crds/tests/architecture.rs`). The agent re-exports it as `vigil_agent::events`.
//!
//! The JSON form of [`Event`] is a stable schema (docs/agent-events.md): fields are only
//! added within an [`EVENT_SCHEMA_VERSION`], a rename or removal bumps it.

pub mod auth;
pub mod clock;
pub mod cnproc;
pub mod conditions;
pub mod fim;
pub mod health;
pub mod journal;
pub mod klog;
pub mod kmsg;
pub mod netconn;
pub mod overlap;
pub mod pods;
pub mod process;
pub mod queue;
pub mod runner;
pub mod tail;
pub mod utmp;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use queue::{DropReason, Emitter, EventQueue, EventStats};

/// The version of the event JSON schema.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// How much an event matters to the person on call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Normal activity worth a record (a login, a process start).
    Info,
    /// Possibly wrong, worth a look (a failed login, a segfault, a link down).
    Warning,
    /// Needs someone now (OOM kill, brute force, filesystem read-only, kernel oops).
    Critical,
}

impl Severity {
    /// The lowercase name (`info`, `warning`, `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// Which source produced an event; also the unit of rate limits and drop counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Process start and exit.
    Process,
    /// File integrity.
    File,
    /// Authentication logs, wtmp and btmp.
    Auth,
    /// Listening sockets and outbound connections.
    Network,
    /// The kernel log.
    Kernel,
    /// Clock synchronisation.
    Clock,
    /// The node's own services (kubelet, the container runtime) as systemd records them in
    /// the journal, which the auth source reads.
    Service,
    /// The agent itself (unparseable input, drops).
    Agent,
}

impl Source {
    /// Every source, in a fixed order (metric label values, config keys).
    pub const ALL: [Source; 8] =
        [Self::Process, Self::File, Self::Auth, Self::Network, Self::Kernel, Self::Clock, Self::Service, Self::Agent];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::File => "file",
            Self::Auth => "auth",
            Self::Network => "network",
            Self::Kernel => "kernel",
            Self::Clock => "clock",
            Self::Service => "service",
            Self::Agent => "agent",
        }
    }

    /// Position in [`Source::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

macro_rules! event_types {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $source:ident, $severity:ident; )*) => {
        /// What happened. The name (`process.start`) is the `type` field of the JSON.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum EventType {
            $( $(#[$doc])* #[serde(rename = $name)] $variant, )*
        }

        impl EventType {
            /// Every type, in declaration order.
            pub const ALL: &'static [EventType] = &[$(Self::$variant),*];

            /// The dotted name (`process.start`).
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            /// The source that produces it.
            pub fn source(self) -> Source {
                match self { $(Self::$variant => Source::$source,)* }
            }

            /// Its usual severity; a source may raise it (an OOM kill of a system daemon).
            pub fn default_severity(self) -> Severity {
                match self { $(Self::$variant => Severity::$severity,)* }
            }
        }
    };
}

event_types! {
    /// A process executed a program (`execve`), or appeared between two /proc polls.
    ProcessStart = "process.start", Process, Info;
    /// A process ended.
    ProcessExit = "process.exit", Process, Info;
    /// A file appeared under a watched path.
    FileCreated = "file.created", File, Warning;
    /// A watched file's content changed (old and new SHA-256 in the details).
    FileModified = "file.modified", File, Warning;
    /// A watched file was removed.
    FileDeleted = "file.deleted", File, Warning;
    /// A watched file's permission bits changed.
    FilePermissions = "file.permissions", File, Warning;
    /// A watched file's owner or group changed.
    FileOwner = "file.owner", File, Warning;
    /// A file under a metadata-only path (logs) shrank: truncated or replaced by a shorter one.
    FileTruncated = "file.truncated", File, Warning;
    /// An SSH login succeeded.
    SshAccepted = "auth.ssh.accepted", Auth, Info;
    /// An SSH authentication failed (wrong password or key, or an unknown user).
    SshFailed = "auth.ssh.failed", Auth, Warning;
    /// sudo ran a command.
    Sudo = "auth.sudo", Auth, Info;
    /// sudo refused (wrong password, not in sudoers, command not allowed).
    SudoFailed = "auth.sudo.failed", Auth, Warning;
    /// su switched user.
    Su = "auth.su", Auth, Info;
    /// su failed.
    SuFailed = "auth.su.failed", Auth, Warning;
    /// A PAM session opened.
    SessionOpened = "auth.session.opened", Auth, Info;
    /// A PAM session closed.
    SessionClosed = "auth.session.closed", Auth, Info;
    /// A user or group was added.
    AccountAdded = "auth.account.added", Auth, Warning;
    /// A user or group was changed (group membership, shell, home, lock).
    AccountChanged = "auth.account.changed", Auth, Warning;
    /// A user or group was deleted.
    AccountDeleted = "auth.account.deleted", Auth, Warning;
    /// A password was changed.
    PasswordChanged = "auth.password.changed", Auth, Warning;
    /// A login recorded in wtmp.
    Login = "auth.login", Auth, Info;
    /// A logout recorded in wtmp.
    Logout = "auth.logout", Auth, Info;
    /// A failed login recorded in btmp.
    LoginFailed = "auth.login.failed", Auth, Warning;
    /// A boot or shutdown recorded in wtmp.
    SystemBoot = "auth.boot", Auth, Info;
    /// A PAM authentication failure of a service other than sshd, sudo and su (which log
    /// their own), from a remote host (`rhost=`): ftp, a mail server, a web console.
    AuthFailed = "auth.failed", Auth, Warning;
    /// Many failed authentications from one source in a short time.
    BruteForce = "auth.brute_force", Auth, Critical;
    /// A journal entry whose tag claims a program (sshd, sudo, su, useradd...) that journald
    /// says did not write it: a forged login, sudo or account change, with the real writer.
    AuthForged = "auth.forged", Auth, Warning;
    /// A socket started listening.
    NetListen = "network.listen", Network, Info;
    /// A listening socket closed.
    NetListenClosed = "network.listen.closed", Network, Info;
    /// A new outbound connection.
    NetOutbound = "network.outbound", Network, Info;
    /// The OOM killer killed a process.
    OomKill = "kernel.oom_kill", Kernel, Critical;
    /// A user process crashed on a bad memory access.
    Segfault = "kernel.segfault", Kernel, Warning;
    /// A general protection fault (user process trap or kernel).
    GeneralProtection = "kernel.general_protection", Kernel, Warning;
    /// A task blocked in the kernel beyond the hung-task timeout.
    HungTask = "kernel.hung_task", Kernel, Critical;
    /// A CPU stuck in the kernel (soft or hard lockup).
    Lockup = "kernel.lockup", Kernel, Critical;
    /// A kernel oops, BUG or panic.
    Oops = "kernel.oops", Kernel, Critical;
    /// A block device I/O error.
    IoError = "kernel.io_error", Kernel, Critical;
    /// A filesystem error (ext4, xfs, btrfs).
    FsError = "kernel.fs_error", Kernel, Critical;
    /// A filesystem went read-only after an error.
    FsReadOnly = "kernel.fs_readonly", Kernel, Critical;
    /// A network link went down.
    LinkDown = "kernel.link_down", Kernel, Warning;
    /// A network link came up.
    LinkUp = "kernel.link_up", Kernel, Info;
    /// The kernel was tainted (out-of-tree or unsigned module, a previous oops).
    Taint = "kernel.taint", Kernel, Warning;
    /// A machine check (hardware error).
    MachineCheck = "kernel.machine_check", Kernel, Critical;
    /// A disk controller's command timed out, was aborted, or the controller was reset (NVMe,
    /// SCSI): a disk about to fail, or a path about to go.
    DiskTimeout = "kernel.disk_timeout", Kernel, Warning;
    /// A kernel `WARNING:` splat: the kernel found itself in a state its authors thought
    /// impossible (a driver or kernel bug; often before worse).
    KernelWarning = "kernel.warning", Kernel, Warning;
    /// AppArmor denied an operation (a container's profile kept it from a file, a capability, a
    /// mount, a signal).
    AppArmorDenied = "kernel.apparmor_denied", Kernel, Warning;
    /// SELinux denied an access (an AVC denial; `permissive: true` when only logged).
    SelinuxDenied = "kernel.selinux_denied", Kernel, Warning;
    /// A seccomp filter acted on a system call (killed, trapped or logged it).
    Seccomp = "kernel.seccomp", Kernel, Warning;
    /// The connection tracking table is full: the node drops new connections.
    ConntrackFull = "kernel.conntrack_full", Kernel, Critical;
    /// The kernel saw more half-open connections on a port than its backlog holds: a SYN flood,
    /// or a listener too slow to accept.
    SynFlood = "kernel.syn_flood", Kernel, Warning;
    /// A NIC's transmit queue stopped (the netdev watchdog fired); the driver resets it.
    NetdevTimeout = "kernel.netdev_timeout", Kernel, Warning;
    /// A network device cannot be unregistered: references remain (a leak that stalls network
    /// namespace teardown, and with it pod deletion).
    NetdevStuck = "kernel.netdev_stuck", Kernel, Warning;
    /// The kernel could not allocate memory of the order asked for (fragmentation or
    /// exhaustion; the caller may fail).
    PageAllocFailure = "kernel.page_alloc_failure", Kernel, Warning;
    /// systemd started one of the node's services (kubelet, containerd, CRI-O, Docker).
    ServiceStarted = "service.started", Service, Info;
    /// systemd is stopping one of them (a person's or a tool's stop or restart).
    ServiceStopping = "service.stopping", Service, Info;
    /// One of them exited or failed on its own (systemd restarts it when its unit says so).
    ServiceFailed = "service.failed", Service, Warning;
    /// The clock lost synchronisation.
    ClockUnsynchronized = "clock.unsynchronized", Clock, Warning;
    /// The clock is synchronised again.
    ClockSynchronized = "clock.synchronized", Clock, Info;
    /// The clock's offset went beyond the threshold.
    ClockOffset = "clock.offset", Clock, Warning;
    /// Host input the agent could not parse, kept raw.
    Unparsed = "agent.unparsed", Agent, Info;
    /// Events were dropped by a rate limit or a full queue (a summary; never silent).
    Dropped = "agent.dropped", Agent, Warning;
    /// Records the host lost before the agent read them (the kernel log's ring buffer
    /// overwrote them: a gap in its sequence numbers).
    Lost = "agent.lost", Agent, Warning;
}

/// One thing that happened on the node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Schema version of this JSON ([`EVENT_SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// How much it matters.
    pub severity: Severity,
    /// Who saw it.
    pub source: Source,
    /// When it happened (from the record where it has a time, else when it was seen).
    pub time: jiff::Timestamp,
    /// The node (host name, or the Kubernetes node name in a pod).
    pub node: String,
    /// One line for a person.
    pub message: String,
    /// The parsed fields (pid, user, path, address…), per type in docs/agent-events.md.
    pub details: Map<String, Value>,
}

impl Event {
    /// About how many bytes the event takes in memory (its strings and map entries): what a
    /// bound on held events counts.
    pub fn approx_bytes(&self) -> usize {
        let value = |v: &Value| match v {
            Value::String(s) => s.len(),
            Value::Array(a) => 32 * a.len(),
            Value::Object(o) => 64 * o.len(),
            _ => 0,
        };
        std::mem::size_of::<Self>()
            + self.message.len()
            + self.node.len()
            + self.details.iter().map(|(k, v)| 64 + k.len() + value(v)).sum::<usize>()
    }

    /// An event of `kind` with its default severity and no details; `node` is filled in by the
    /// [`Emitter`].
    pub fn new(kind: EventType, time: jiff::Timestamp, message: impl Into<String>) -> Self {
        Self {
            schema_version: EVENT_SCHEMA_VERSION,
            kind,
            severity: kind.default_severity(),
            source: kind.source(),
            time,
            node: String::new(),
            message: message.into(),
            details: Map::new(),
        }
    }

    /// Adds a detail; `None` values are left out.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Detail>) -> Self {
        if let Some(v) = value.into().0 {
            self.details.insert(key.to_owned(), v);
        }
        self
    }

    /// Sets the severity.
    #[must_use]
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// A detail as text, if present and a string.
    pub fn detail_str(&self, key: &str) -> Option<&str> {
        self.details.get(key).and_then(Value::as_str)
    }

    /// A detail as an integer, if present and a number.
    pub fn detail_i64(&self, key: &str) -> Option<i64> {
        self.details.get(key).and_then(Value::as_i64)
    }

    /// Host input that did not parse, kept raw (at most 4 KiB of it) with where it came from
    /// and why.
    pub fn unparsed(time: jiff::Timestamp, origin: &str, reason: UnparsedReason, raw: &[u8]) -> Self {
        let raw = utf8_escaped(&raw[..raw.len().min(4096)]).into_owned();
        Self::new(EventType::Unparsed, time, format!("unparsed line from {origin} ({})", reason.as_str()))
            .with("origin", origin)
            .with("reason", reason.as_str())
            .with("raw", raw)
    }
}

/// Why host input was not understood (the `reason` of `agent.unparsed` and of the unparsed
/// counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnparsedReason {
    /// Longer than any record of its kind: kept cut, never parsed.
    Cut,
    /// Not in the form of its source at all (no syslog header, no kmsg header, a bad record).
    Malformed,
    /// A time that cannot exist (`Nov 31 25:61:61`).
    Time,
    /// A record the parser knows, cut short or with a field it cannot read.
    Incomplete,
}

impl UnparsedReason {
    /// Every reason.
    pub const ALL: [UnparsedReason; 4] = [Self::Cut, Self::Malformed, Self::Time, Self::Incomplete];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cut => "cut",
            Self::Malformed => "malformed",
            Self::Time => "time",
            Self::Incomplete => "incomplete",
        }
    }
}

/// A detail value; `None` leaves the key out.
pub struct Detail(Option<Value>);

macro_rules! detail_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Detail {
            fn from(v: $t) -> Self { Detail(Some(Value::from(v))) }
        }
        impl From<Option<$t>> for Detail {
            fn from(v: Option<$t>) -> Self { Detail(v.map(Value::from)) }
        }
    )*};
}
detail_from!(i32, i64, u32, u64, f64, bool, String);

impl From<&str> for Detail {
    fn from(v: &str) -> Self {
        Detail(Some(Value::from(v)))
    }
}

impl From<Option<&str>> for Detail {
    fn from(v: Option<&str>) -> Self {
        Detail(v.map(Value::from))
    }
}

impl From<Value> for Detail {
    fn from(v: Value) -> Self {
        Detail(Some(v))
    }
}

/// Renders one event as a line for a person: `time severity type message key=value…`.
/// Host text as a string, reversibly: valid UTF-8 as it is; otherwise each byte that is not
/// part of valid UTF-8 becomes `\xNN` and each backslash `\\`, so the original bytes can be
/// recovered (a user name in Latin-1 is not replaced by U+FFFD and lost).
pub fn utf8_escaped(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return std::borrow::Cow::Borrowed(s);
    }
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    std::borrow::Cow::Owned(out)
}

pub use vigil_crds::text::printable;

/// One event as a line for a person; every text from the host goes through [`printable`].
pub fn render_line(e: &Event, color: bool) -> String {
    use std::fmt::Write;
    let (start, end) = if color {
        match e.severity {
            Severity::Critical => ("\x1b[1;31m", "\x1b[0m"),
            Severity::Warning => ("\x1b[33m", "\x1b[0m"),
            Severity::Info => ("", ""),
        }
    } else {
        ("", "")
    };
    let time = e.time.round(jiff::Unit::Second).unwrap_or(e.time);
    let mut line =
        format!("{time} {start}{:<8}{end} {:<24} {}", e.severity.as_str(), e.kind.as_str(), printable(&e.message));
    for (k, v) in &e.details {
        match v {
            Value::String(s) if !s.contains(char::is_whitespace) && !s.is_empty() => {
                let _ = write!(line, " {}={}", printable(k), printable(s));
            }
            // JSON text: control characters are escaped already; the bidi overrides are not.
            other => {
                let _ = write!(line, " {}={}", printable(k), printable(&other.to_string()));
            }
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_are_escaped_reversibly() {
        assert_eq!(utf8_escaped("jos\u{e9}".as_bytes()), "jos\u{e9}");
        let latin1 = b"jos\xe9 a\\b";
        let text = utf8_escaped(latin1);
        assert_eq!(text, r"jos\xe9 a\\b");
        // Undo it: the original bytes come back.
        let mut back = Vec::new();
        let mut it = text.bytes().peekable();
        while let Some(c) = it.next() {
            if c == b'\\' {
                match it.next() {
                    Some(b'\\') => back.push(b'\\'),
                    Some(b'x') => {
                        let hex = [it.next().unwrap(), it.next().unwrap()];
                        back.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
                    }
                    other => panic!("{other:?}"),
                }
            } else {
                back.push(c);
            }
        }
        assert_eq!(back, latin1);
    }

    #[test]
    fn terminal_control_sequences_from_the_host_are_shown_not_obeyed() {
        let user = "x\x1b]0;pwned\x07\x1b[2Jy\0z\u{202e}gnp.exe\u{9b}";
        let e = Event::new(EventType::SshFailed, jiff::Timestamp::UNIX_EPOCH, format!("ssh for {user} failed"))
            .with("user", user)
            .with("note", format!("{user} with spaces"));
        let line = render_line(&e, false);
        assert!(!line.chars().any(|c| c.is_control() || c == '\u{202e}'), "{line:?}");
        assert!(line.contains(r"x\x1b]0;pwned\x07\x1b[2Jy\x00z\u{202e}gnp.exe\x9b"), "{line}");
        assert_eq!(printable("plain text: ok"), "plain text: ok");
    }

    #[test]
    fn names_are_unique_and_each_type_belongs_to_its_prefix() {
        let mut seen = std::collections::HashSet::new();
        for t in EventType::ALL {
            assert!(seen.insert(t.as_str()), "duplicate {}", t.as_str());
            assert!(t.as_str().starts_with(t.source().as_str()), "{} from {}", t.as_str(), t.source().as_str());
        }
    }

    #[test]
    fn json_round_trips_with_type_and_schema_version() {
        let e = Event::new(EventType::OomKill, jiff::Timestamp::from_second(1_700_000_000).unwrap(), "killed")
            .with("pid", 42)
            .with("comm", "stress")
            .with("container", None::<&str>);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "kernel.oom_kill");
        assert_eq!(json["severity"], "critical");
        assert_eq!(json["source"], "kernel");
        assert_eq!(json["schemaVersion"], 1);
        assert_eq!(json["details"]["pid"], 42);
        assert!(json["details"].get("container").is_none());
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn a_line_quotes_values_with_spaces() {
        let e = Event::new(EventType::ProcessStart, jiff::Timestamp::UNIX_EPOCH, "started")
            .with("cmdline", "sleep 10")
            .with("pid", 7);
        let line = render_line(&e, false);
        assert!(line.contains("process.start"), "{line}");
        assert!(line.contains("cmdline=\"sleep 10\""), "{line}");
        assert!(line.contains("pid=7"), "{line}");
    }
}
