//! The kernel log, from `/dev/kmsg`: records parsed, the ones an operator must see turned into
//! typed events (OOM kills with their victim, crashes, hangs, lockups, oopses, I/O and
//! filesystem errors, read-only remounts, link changes, taint, machine checks).
//!
//! A `/dev/kmsg` record is `PRI,SEQ,TS_USEC,FLAGS[,…];MESSAGE` followed by dictionary lines
//! that start with a space (`Documentation/ABI/testing/dev-kmsg`). The message escapes
//! unprintable bytes as `\xNN`. Messages differ between kernel versions (an OOM kill reads
//! `Kill process … or sacrifice child` then `Killed process …` on 4.x, one `Killed process`
//! line on 5.x and later); the classifier knows both. Everything here is pure.

use serde_json::{Map, Value};

use super::{Event, EventType, Severity, UnparsedReason};

/// One parsed `/dev/kmsg` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Syslog level, 0 (emerg) to 7 (debug).
    pub level: u8,
    /// Syslog facility (0 for the kernel).
    pub facility: u32,
    /// Sequence number; a gap means the ring buffer overwrote records before they were read.
    pub seq: u64,
    /// Microseconds since boot (CLOCK_MONOTONIC).
    pub ts_usec: u64,
    /// The message, with `\xNN` escapes as the kernel wrote them.
    pub message: String,
    /// Dictionary (`SUBSYSTEM=…`, `DEVICE=…`).
    pub dict: Vec<(String, String)>,
    /// Flag `c`: the line goes on in the next record (a fragment).
    pub continued: bool,
    /// Flag `+`: this record goes on the line of the one before (kernels before 4.9).
    pub continuation: bool,
}

/// Parses one record (one `read(2)` of `/dev/kmsg`, or one record of a saved file). `None` when
/// the header is malformed.
pub fn parse_record(bytes: &[u8]) -> Option<Record> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split('\n');
    let first = lines.next()?;
    let (header, message) = first.split_once(';')?;
    let mut fields = header.split(',');
    let prefix: u32 = fields.next()?.trim().parse().ok()?;
    let seq: u64 = fields.next()?.trim().parse().ok()?;
    let ts_usec: u64 = fields.next()?.trim().parse().ok()?;
    // Optional fields after the flags (`caller=T123`) are not needed.
    let flags = fields.next().unwrap_or("-");
    let dict = lines
        .filter_map(|l| l.strip_prefix(' '))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Some(Record {
        level: u8::try_from(prefix & 7).ok()?,
        facility: prefix >> 3,
        seq,
        ts_usec,
        message: message.trim_end_matches(['\r', '\n']).to_owned(),
        dict,
        continued: flags.contains('c'),
        continuation: flags.contains('+'),
    })
}

/// The longest line made by joining fragments; the rest of a longer one is dropped.
const MAX_JOINED: usize = 16 * 1024;

/// What the kernel log reader hands on: whole records, or input that is no record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// A record with its dictionary, its fragments joined.
    Record(Record),
    /// Bytes that are no record (kept raw, counted), and why.
    Unparsed(Vec<u8>, UnparsedReason),
    /// Records the kernel overwrote before they were read: a gap in the sequence numbers
    /// (`records` of them, between `after` and `next`), or a ring buffer read by syslog(2)
    /// that wrapped between two reads (`records` unknown: at least one).
    Lost {
        /// How many (when the sequence numbers tell).
        records: Option<u64>,
        /// The sequence number read before the gap.
        after: Option<u64>,
        /// The sequence number read after it.
        next: Option<u64>,
    },
}

/// Makes whole records of what the kernel log gives, the same for every way of reading it
/// (the device, syslog(2), a saved file; a follow or a one-shot scan): dictionary lines
/// (` SUBSYSTEM=block`) attached to the record before them, and the fragments of one line
/// (flag `c`, and `+` on kernels before 4.9) joined, so an oops printed in pieces is one record.
/// A record is held only until the next one or the next [`Assembler::flush`].
#[derive(Debug, Default)]
pub struct Assembler {
    /// A file's record line waiting for its dictionary lines.
    lines: Option<Vec<u8>>,
    /// A record waiting for its continuation.
    open: Option<Record>,
    /// The sequence number of the last record: the next one must follow it, or records were
    /// lost in between.
    last_seq: Option<u64>,
    /// Records up to this sequence number were read by an agent before this one: passed over.
    read_through: Option<u64>,
}

impl Assembler {
    /// Goes on after record `seq`, which an agent before this one read (the device then read
    /// from its start): records up to it are passed over, and a gap after it counts as lost.
    pub fn resume_after(&mut self, seq: u64) {
        self.last_seq = Some(seq);
        self.read_through = Some(seq);
    }

    /// The sequence number of the last record taken in (`None` before the first, and where
    /// records carry none).
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq.filter(|s| *s > 0)
    }

    /// One whole record (one read of `/dev/kmsg`, or a record of a file with its dictionary).
    pub fn record(&mut self, bytes: &[u8], out: &mut Vec<Piece>) {
        match parse_record(bytes) {
            Some(r) if self.read_through.is_some_and(|t| r.seq <= t) => {}
            Some(r) => {
                self.read_through = None;
                self.join(r, out);
            }
            None if bytes.iter().all(u8::is_ascii_whitespace) => {}
            None => out.push(Piece::Unparsed(bytes.to_vec(), UnparsedReason::Malformed)),
        }
    }

    /// A record already parsed (syslog(2) lines).
    pub fn parsed(&mut self, r: Record, out: &mut Vec<Piece>) {
        self.join(r, out);
    }

    /// One line of a file in the `/dev/kmsg` format: a line starting with a space is a
    /// dictionary line of the record before it.
    pub fn line(&mut self, line: &[u8], out: &mut Vec<Piece>) {
        if line.starts_with(b" ") {
            match self.lines.as_mut() {
                Some(l) if l.len() + line.len() < 2 * MAX_JOINED => {
                    l.push(b'\n');
                    l.extend_from_slice(line);
                }
                Some(_) => {}
                None => out.push(Piece::Unparsed(line.to_vec(), UnparsedReason::Malformed)),
            }
            return;
        }
        if let Some(held) = self.lines.replace(line.to_vec()) {
            self.record(&held, out);
        }
    }

    /// Everything held goes out (the end of what the source has for now).
    pub fn flush(&mut self, out: &mut Vec<Piece>) {
        if let Some(held) = self.lines.take() {
            self.record(&held, out);
        }
        if let Some(r) = self.open.take() {
            out.push(Piece::Record(r));
        }
    }

    /// Records the kernel lost between the last record and `r` (syslog(2) and the journal give
    /// no sequence numbers: every record there is 0). A number going back is a new boot or a
    /// replayed file: the count starts again.
    fn follow_seq(&mut self, r: &Record, out: &mut Vec<Piece>) {
        if let Some(prev) = self.last_seq
            && r.seq > prev.saturating_add(1)
        {
            out.push(Piece::Lost { records: Some(r.seq - prev - 1), after: Some(prev), next: Some(r.seq) });
        }
        self.last_seq = Some(r.seq);
    }

    fn join(&mut self, r: Record, out: &mut Vec<Piece>) {
        let prev = self.last_seq;
        self.follow_seq(&r, out);
        if let Some(mut open) = self.open.take() {
            // A fragment goes on only in the very next record: across lost records (or a new
            // boot) the line it began is gone, and the record that follows is one of its own.
            let next = r.seq == 0 || prev.is_some_and(|p| r.seq == p.wrapping_add(1));
            if (open.continued || r.continuation) && next {
                let room = MAX_JOINED.saturating_sub(open.message.len());
                let mut end = r.message.len().min(room);
                while !r.message.is_char_boundary(end) {
                    end -= 1;
                }
                open.message.push_str(&r.message[..end]);
                open.dict.extend(r.dict);
                open.continued = r.continued;
                if r.continued || r.continuation {
                    self.open = Some(open);
                } else {
                    out.push(Piece::Record(open));
                }
                return;
            }
            out.push(Piece::Record(open));
        }
        if r.continued || r.continuation {
            self.open = Some(r);
        } else {
            out.push(Piece::Record(r));
        }
    }
}

/// The `agent.lost` event for records of the kernel log lost before they were read.
pub fn lost_event(records: Option<u64>, after: Option<u64>, next: Option<u64>, time: jiff::Timestamp) -> Event {
    let message = match (records, after, next) {
        (Some(n), Some(a), Some(b)) => format!(
            "kernel log: {n} record(s) lost (sequence {a}, then {b}): the ring buffer overwrote them before they were read"
        ),
        _ => "kernel log: records lost: the ring buffer wrapped between two reads of syslog(2)".to_owned(),
    };
    Event::new(EventType::Lost, time, message)
        .with("lostSource", "kernel")
        .with("records", records)
        .with("atLeast", records.unwrap_or(1))
        .with("afterSeq", after)
        .with("nextSeq", next)
}

/// Splits a saved kmsg stream (records one per line, dictionary lines indented by a space)
/// into records.
pub fn split_records(text: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = None;
    let mut pos = 0;
    for line in text.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b" ") {
            if let Some(s) = start {
                out.push(&text[s..pos]);
            }
            start = Some(pos);
        }
        pos += line.len();
    }
    if let Some(s) = start
        && s < text.len()
    {
        out.push(&text[s..]);
    }
    out
}

/// Turns records into events. Holds the little state the kernel spreads over lines: the
/// `oom-kill:` line (constraint and cgroup) that precedes `Killed process`.
#[derive(Debug, Default)]
pub struct Classifier {
    pending_oom: Option<(i64, Map<String, Value>)>,
    /// When (µs since boot) the last `BUG:` was reported: the `Oops:` line the kernel prints
    /// right after it is the same crash.
    last_bug: Option<u64>,
}

/// How long after a `BUG:` an `Oops:` is taken for the same crash.
const SAME_CRASH_USEC: u64 = 10_000_000;

impl Classifier {
    /// The event for `record`, if it is one an operator must see. `boot_time` turns the
    /// record's time since boot into a timestamp.
    pub fn classify(&mut self, record: &Record, boot_time: jiff::Timestamp) -> Option<Event> {
        let time = boot_time
            .checked_add(jiff::SignedDuration::from_micros(i64::try_from(record.ts_usec).unwrap_or(i64::MAX)))
            .unwrap_or(boot_time);
        let msg = record.message.as_str();
        let event = if let Some(info) = msg.strip_prefix("oom-kill:") {
            self.pending_oom = Some(oom_context(info));
            None
        } else if let Some(rest) = msg.strip_prefix("Task in ")
            && let Some((task, limit)) = rest.split_once(" killed as a result of limit of ")
        {
            // Kernels before 4.19 name the cgroups on a line of their own, without the pid:
            // it goes with the next kill.
            let mut ctx = Map::new();
            ctx.insert("taskMemcg".into(), task.trim().into());
            ctx.insert("oomMemcg".into(), limit.trim().into());
            self.pending_oom = Some((-1, ctx));
            None
        } else if let Some(pos) = oom_killed_at(msg) {
            Some(self.oom_kill(msg, &msg[pos + "Killed process ".len()..], time))
        } else {
            classify_message(msg, time)
        }?;
        if event.kind == EventType::Oops {
            let m = msg.trim_start();
            // x86's `Oops:` after its `BUG:`; arm64's `Internal error: Oops:` after its
            // `Unable to handle kernel …`.
            let same_crash = (m.starts_with("Oops: ") || m.starts_with("Internal error: Oops"))
                && self.last_bug.is_some_and(|b| record.ts_usec.saturating_sub(b) <= SAME_CRASH_USEC);
            if m.starts_with("BUG: ") || m.starts_with("kernel BUG at ") || m.starts_with("Unable to handle kernel ") {
                self.last_bug = Some(record.ts_usec);
            }
            if same_crash {
                self.last_bug = None;
                return None;
            }
        }
        let mut event = event.with("kernelSeq", record.seq).with("kernelLevel", u32::from(record.level));
        if !record.dict.is_empty() {
            let dict: Map<String, Value> =
                record.dict.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
            event = event.with("kernelDictionary", Value::Object(dict));
        }
        // Root may write to /dev/kmsg too (systemd does at boot); such records say so. One
        // whose writer syslog(2) cannot tell (a piece of another record, or a record of its
        // own) says that.
        Some(match record.facility {
            0 => event,
            crate::klog::FACILITY_UNCERTAIN => event.with("writerUncertain", true),
            _ => event.with("userspace", true),
        })
    }

    fn oom_kill(&mut self, msg: &str, rest: &str, time: jiff::Timestamp) -> Event {
        let (pid, comm, tail) = pid_and_paren_comm(rest);
        let mut e = Event::new(
            EventType::OomKill,
            time,
            format!("OOM killer killed {} (pid {})", comm.unwrap_or("?"), pid.map_or("?".into(), |p| p.to_string())),
        )
        .with("pid", pid)
        .with("comm", comm)
        .with("memcg", msg.starts_with("Memory cgroup out of memory"))
        .with("line", msg.trim());
        for (key, name) in [
            ("total-vm", "totalVmKiB"),
            ("anon-rss", "anonRssKiB"),
            ("file-rss", "fileRssKiB"),
            ("shmem-rss", "shmemRssKiB"),
            ("pgtables", "pgtablesKiB"),
        ] {
            e = e.with(name, kv_number(tail, key).map(|v: u64| v));
        }
        e = e.with("uid", kv_number::<u32>(tail, "UID")).with("oomScoreAdj", kv_number::<i64>(tail, "oom_score_adj"));
        if let Some((ctx_pid, ctx)) = self.pending_oom.take()
            && (Some(ctx_pid) == pid || ctx_pid == -1)
        {
            for (k, v) in ctx {
                e.details.entry(k).or_insert(v);
            }
        }
        if let Some(container) = e.detail_str("taskMemcg").and_then(vigil_host::proc::processes::container_id) {
            e = e.with("containerId", container);
        }
        e
    }
}

/// Where `Killed process ` starts in an OOM killer's record: at the start, or after the
/// kernel's own `Out of memory…: ` / `Memory cgroup out of memory: ` (never inside text a
/// process chose, such as its name at the head of a segfault report).
fn oom_killed_at(msg: &str) -> Option<usize> {
    let pos = msg.find("Killed process ")?;
    let head = msg[..pos].trim();
    let kernel = head.is_empty()
        || (head.ends_with(':')
            && (head.starts_with("Out of memory") || head.starts_with("Memory cgroup out of memory")));
    // The kernel's `Killed process PID (COMM)`: a process named `Killed process ` (15 bytes,
    // a name's most) is followed by the kernel's `[PID]`, never by digits.
    let rest = &msg[pos + "Killed process ".len()..];
    let pid = rest.split(' ').next().is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (kernel && pid).then_some(pos)
}

/// Whether a record starts with a process's name and pid (`NAME[PID]: segfault at …`,
/// `NAME[PID] misaligned vsyscall …`): the name is the process's own choice (up to 15 bytes,
/// each unprintable one written `\xNN`), so no rule may read it as the kernel's words.
///
/// The kernel also writes `NAME (PID): …` (`attempted to duplicate a private mapping with
/// mremap`, once a boot, for any process) and `NAME (PID) used greatest stack depth`: a
/// parenthesised pid after a space counts the same.
fn user_prefixed(m: &str) -> bool {
    let head = &m.as_bytes()[..m.len().min(64)];
    head.iter().enumerate().any(|(i, &b)| {
        let digits = head[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        let after = &m.as_bytes()[(i + 2 + digits).min(m.len())..];
        match b {
            b'[' => digits > 0 && head.get(i + 1 + digits) == Some(&b']') && matches!(after.first(), Some(b':' | b' ')),
            // `NAME (PID): …` and `NAME (PID) used greatest stack depth`, not a driver's `I/O
            // tag 17 (3011) opcode …`.
            b'(' if i > 0 && head[i - 1] == b' ' => {
                digits > 0
                    && head.get(i + 1 + digits) == Some(&b')')
                    && (after.first() == Some(&b':') || after.starts_with(b" used greatest stack depth"))
            }
            _ => false,
        }
    })
}

/// Whether a record quotes text a process chose (its name or command line) in one of the
/// forms the kernel writes it.
fn quotes_a_process(m: &str) -> bool {
    ["process `", "process '", "ptrace attach of \"", "ptrace traceme of \"", "was attempted by \""]
        .iter()
        .any(|q| m.contains(q))
}

fn oom_context(info: &str) -> (i64, Map<String, Value>) {
    let mut map = Map::new();
    let mut pid = -1;
    for part in info.split(',') {
        let Some((k, v)) = part.split_once('=') else { continue };
        match k.trim() {
            "constraint" => {
                map.insert("constraint".into(), v.into());
            }
            "oom_memcg" => {
                map.insert("oomMemcg".into(), v.into());
            }
            "task_memcg" => {
                map.insert("taskMemcg".into(), v.into());
            }
            "pid" => pid = v.trim().parse().unwrap_or(-1),
            _ => {}
        }
    }
    (pid, map)
}

/// `1234 (stress) total-vm:…` → pid, comm, the rest.
fn pid_and_paren_comm(s: &str) -> (Option<i64>, Option<&str>, &str) {
    let (pid, rest) = s.split_once(' ').unwrap_or((s, ""));
    let pid = pid.trim_end_matches(',').parse().ok();
    if let Some(inner) = rest.strip_prefix('(')
        && let Some(end) = inner.rfind(')')
    {
        return (pid, Some(&inner[..end]), &inner[end + 1..]);
    }
    (pid, None, rest)
}

/// `key:1234kB` or `key=1234` inside `s`.
fn kv_number<T: std::str::FromStr>(s: &str, key: &str) -> Option<T> {
    s.split([' ', ',']).find_map(|tok| {
        let v = tok.strip_prefix(key)?.strip_prefix([':', '='])?;
        v.trim_end_matches("kB").parse().ok()
    })
}

/// `comm[pid]` at the end of `s` (user-space crash lines).
fn comm_pid_brackets(s: &str) -> (Option<&str>, Option<i64>) {
    let s = s.trim_end_matches(':').trim();
    let Some(open) = s.rfind('[') else { return (None, None) };
    let pid = s[open + 1..].trim_end_matches(']').parse().ok();
    let comm = s[..open].rsplit_once(": ").map_or(&s[..open], |(_, c)| c);
    (Some(comm), pid)
}

/// The word after `marker` up to a delimiter.
fn word_after<'a>(s: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &s[s.find(marker)? + marker.len()..];
    let end = rest.find([' ', ',', ')', ':', ';']).unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// A number after `marker`.
fn number_after<T: std::str::FromStr>(s: &str, marker: &str) -> Option<T> {
    word_after(s, marker)?.trim_end_matches(['s', '!', '.']).parse().ok()
}

/// Classifies one kernel message (without the OOM state): the event, or `None` for the
/// ordinary chatter of a kernel.
pub fn classify_message(msg: &str, time: jiff::Timestamp) -> Option<Event> {
    let m = msg.trim();
    let event = |kind, text: String| Some(Event::new(kind, time, text).with("line", m));

    if let Some(pos) = m.find(" segfault at ") {
        let (comm, pid) = comm_pid_brackets(&m[..pos]);
        let rest = &m[pos..];
        return event(
            EventType::Segfault,
            format!("{} (pid {}) segfaulted", comm.unwrap_or("?"), pid.map_or("?".into(), |p| p.to_string())),
        )?
        .with("comm", comm)
        .with("pid", pid)
        .with("address", word_after(rest, "segfault at "))
        .with("ip", word_after(rest, " ip "))
        .with("error", word_after(rest, " error "))
        .with("object", word_after(rest, " in ").map(|o| o.split('[').next().unwrap_or(o)))
        .into();
    }
    if let Some(rest) = m.strip_prefix("traps: ") {
        let end = rest.find(' ').unwrap_or(rest.len());
        let (comm, pid) = comm_pid_brackets(&rest[..end]);
        let what = rest[end..].trim();
        let trap = what.split(" ip").next().unwrap_or(what).trim_start_matches("trap ").to_owned();
        let kind =
            if what.starts_with("general protection") { EventType::GeneralProtection } else { EventType::Segfault };
        return event(
            kind,
            format!("{} (pid {}): {trap}", comm.unwrap_or("?"), pid.map_or("?".into(), |p| p.to_string())),
        )?
        .with("comm", comm)
        .with("pid", pid)
        .with("trap", trap)
        .with("object", word_after(what, " in ").map(|o| o.split('[').next().unwrap_or(o)))
        .into();
    }
    // Reports that start with the name of the process they are about, which nothing after
    // may be read as: the OOM killer's header (the kill itself comes in its own record) and
    // x86's `NAME: Corrupted page table at address …` (an oops follows).
    if [" invoked oom-killer: ", ": Corrupted page table at address "].iter().any(|p| m.contains(p)) {
        return None;
    }
    // warn_alloc's reports start with the name of the process that asked (`NAME: page
    // allocation failure: …`, `NAME: vmalloc error: …`): read before any other rule, so that a
    // name chosen to look like another report (`I/O error, dev `) is only ever a name.
    // vmalloc's failures (warn_alloc, as page allocation's): `COMM: vmalloc error: size 8192,
    // vm_struct allocation failed, mode:0xcc0(GFP_KERNEL), …`.
    if let Some(pos) = m.find("vmalloc error: size ").filter(|p| *p == 0 || m[..*p].ends_with(": ")) {
        // The whole head is the name (a name may hold spaces).
        let comm = m[..pos].strip_suffix(": ").filter(|c| !c.is_empty());
        return event(
            EventType::PageAllocFailure,
            format!(
                "{} could not allocate {} bytes of kernel virtual memory",
                comm.unwrap_or("?"),
                word_after(m, "size ").unwrap_or("?").trim_end_matches(',')
            ),
        )?
        .with("comm", comm)
        .with("vmallocBytes", word_after(m, "size ").and_then(|w| w.trim_end_matches(',').parse::<u64>().ok()))
        .with("mode", word_after(m, "mode:").map(|w| w.trim_end_matches(',')))
        .into();
    }
    if let Some(pos) = m.find(": page allocation failure: ") {
        let comm = Some(&m[..pos]).filter(|c| !c.is_empty());
        return event(
            EventType::PageAllocFailure,
            format!(
                "{} could not allocate memory (order {})",
                comm.unwrap_or("?"),
                word_after(m, "order:").unwrap_or("?")
            ),
        )?
        .with("comm", comm)
        .with("order", number_after::<u32>(m, "order:"))
        .with("mode", word_after(m, "mode:"))
        .into();
    }
    // A process's own words at the head of the record (a segfault report was read above), or
    // quoted inside it (`ICMPv6: process \`NAME' is using deprecated sysctl`, `process 'NAME'
    // launched '…' with NULL argv`, Yama's `ptrace attach of "CMDLINE"`): nothing the kernel
    // says about the node.
    if user_prefixed(m) || quotes_a_process(m) {
        return None;
    }
    // Audit records: only the kernel's own (AppArmor and SELinux decisions, type 1400; seccomp,
    // 1326). A user-space audit message (types 1100 to 1299 and 2100 to 2999, which any process
    // holding CAP_AUDIT_WRITE sends, a container's default) carries text of its sender's
    // choosing and is no kernel problem of any kind.
    if m.starts_with("audit: ") || m.starts_with("audit(") {
        return security(m, time);
    }
    if m.starts_with("general protection fault") {
        return event(EventType::GeneralProtection, "general protection fault in the kernel".into())?
            .with("kernel", true)
            .severity(Severity::Critical)
            .into();
    }
    if let Some(rest) = m.strip_prefix("INFO: task ")
        && m.contains(" blocked for more than ")
    {
        // `COMM:PID`, where the name may hold spaces and colons (`VM Thread`, `kubelet:1 x`):
        // the pid follows the last `:` before the kernel's words.
        let task = &rest[..rest.find(" blocked for more than ").unwrap_or(rest.len())];
        let (comm, pid) = task.rsplit_once(':').map_or((task, None), |(c, p)| (c, p.parse::<i64>().ok()));
        return event(
            EventType::HungTask,
            format!("task {comm} (pid {}) hung", pid.map_or("?".into(), |p| p.to_string())),
        )?
        .with("comm", comm)
        .with("pid", pid)
        .with("seconds", number_after::<u64>(m, "blocked for more than "))
        .into();
    }
    if ["watchdog: BUG: soft lockup - CPU#", "NMI watchdog: BUG: soft lockup - CPU#", "BUG: soft lockup - CPU#"]
        .iter()
        .any(|p| m.starts_with(p))
    {
        let task = m.rsplit_once('[').map(|(_, t)| t.trim_end_matches(']'));
        let (comm, pid) =
            task.and_then(|t| t.rsplit_once(':')).map_or((None, None), |(c, p)| (Some(c), p.parse::<i64>().ok()));
        return event(EventType::Lockup, format!("soft lockup on CPU {}", word_after(m, "CPU#").unwrap_or("?")))?
            .with("lockup", "soft")
            .with("cpu", number_after::<u32>(m, "CPU#"))
            .with("seconds", number_after::<u64>(m, "stuck for "))
            .with("comm", comm)
            .with("pid", pid)
            .into();
    }
    if m.starts_with("Watchdog detected hard LOCKUP on cpu")
        || m.starts_with("NMI watchdog: Watchdog detected hard LOCKUP on cpu")
    {
        return event(EventType::Lockup, format!("hard lockup on CPU {}", word_after(m, "on cpu ").unwrap_or("?")))?
            .with("lockup", "hard")
            .with("cpu", number_after::<u32>(m, "on cpu "))
            .into();
    }
    let rcu = m.strip_prefix("rcu: ").unwrap_or(m);
    let rcu = rcu.strip_prefix("INFO: ").unwrap_or(rcu);
    if rcu.starts_with("rcu_")
        && (rcu.contains(" self-detected stall")
            || rcu.contains(" detected stalls")
            || rcu.contains(" detected expedited stalls"))
    {
        return event(EventType::Lockup, "RCU stall".into())?.with("lockup", "rcu").into();
    }
    if m.starts_with("Kernel panic - not syncing") {
        return event(
            EventType::Oops,
            format!("kernel panic: {}", m.trim_start_matches("Kernel panic - not syncing:").trim()),
        )?
        .with("oops", "panic")
        .into();
    }
    // arm64 and other architectures: `Unable to handle kernel NULL pointer dereference at
    // virtual address …`, `Unable to handle kernel paging request at …`, then `Internal error:
    // Oops: 96000004 [#1] PREEMPT SMP`.
    if m.starts_with("Unable to handle kernel ") {
        return event(EventType::Oops, format!("kernel bug: {m}"))?.with("oops", "bug").into();
    }
    if m.starts_with("Internal error: Oops") {
        return event(EventType::Oops, format!("kernel oops: {m}"))?.with("oops", "oops").into();
    }
    if m.starts_with("BUG: ") || m.starts_with("Oops: ") || (m.starts_with("kernel BUG at ") && m.ends_with('!')) {
        let what = if m.starts_with("Oops") { "oops" } else { "bug" };
        return event(EventType::Oops, format!("kernel {what}: {m}"))?.with("oops", what).into();
    }
    // The block layer's `blk_update_request: <kind> error, dev sdb, sector …` (`I/O`,
    // `critical medium`, `critical target`, `timeout`…).
    // Said by blk_update_request (before 5.x), print_req_error (4.19) or on its own (5.x, 6.x).
    let blk = ["blk_update_request: ", "print_req_error: ", "blk_print_req_error: "]
        .iter()
        .find_map(|p| m.strip_prefix(p))
        .unwrap_or(m);
    if let Some(pos) = blk.find(" error, dev ")
        && BLOCK_ERRORS.contains(&&blk[..pos])
    {
        let dev = word_after(blk, " error, dev ");
        let kind = &blk[..pos];
        // A request the device does not support (discard, write-zeroes on a loop device), and
        // the loop, optical and floppy devices a node probes, are no disk failing.
        let probe = dev.is_some_and(|d| ["loop", "sr", "fd"].iter().any(|p| d.starts_with(p)));
        if kind == "operation not supported" || probe {
            return None;
        }
        return event(EventType::IoError, format!("{kind} error on {}", dev.unwrap_or("?")))?
            .with("device", dev)
            .with("sector", number_after::<u64>(m, "sector "))
            .with("op", op_name(m))
            .with("error", kind)
            .into();
    }
    if let Some(rest) = m.strip_prefix("Buffer I/O error on dev ") {
        let dev = rest.split([',', ' ']).next();
        if dev.is_some_and(|d| ["loop", "sr", "fd"].iter().any(|p| d.starts_with(p))) {
            return None;
        }
        return event(EventType::IoError, format!("buffer I/O error on {}", dev.unwrap_or("?")))?
            .with("device", dev)
            .with("block", number_after::<u64>(m, "logical block "))
            .into();
    }
    if let Some(ev) = filesystem(m, time) {
        return Some(ev);
    }
    if let Some(ev) = link(m, time) {
        return Some(ev);
    }
    if let Some(ev) = network(m, time) {
        return Some(ev);
    }
    if let Some(ev) = disk_timeout(m, time) {
        return Some(ev);
    }
    if let Some(pos) = m.find("WARNING: CPU: ").filter(|p| *p == 0) {
        let rest = &m[pos..];
        let location = rest.split_once(" at ").map(|(_, l)| l.split_whitespace().next().unwrap_or(l));
        return event(EventType::KernelWarning, format!("kernel warning at {}", location.unwrap_or("?")))?
            .with("cpu", number_after::<u32>(rest, "CPU: "))
            .with("pid", number_after::<i64>(rest, "PID: "))
            .with("location", location)
            .into();
    }
    if m.starts_with("divide error: ") || m.starts_with("invalid opcode: ") {
        let what = if m.starts_with("divide") { "divide_error" } else { "invalid_opcode" };
        return event(EventType::Oops, format!("kernel oops: {m}"))?.with("oops", what).into();
    }
    if let Some(pos) = m
        .find("[Hardware Error]: event severity: ")
        .filter(|p| m.starts_with("[Hardware Error]") || m.starts_with('{') && m[..*p].ends_with('}'))
    {
        let level = m[pos + "[Hardware Error]: event severity: ".len()..].trim();
        let corrected = matches!(level, "corrected" | "info");
        return event(EventType::MachineCheck, format!("hardware error ({level}): {m}"))?
            .with("corrected", corrected)
            .with("hardwareSeverity", level)
            .severity(if corrected { Severity::Warning } else { Severity::Critical })
            .into();
    }
    if m.contains("taints kernel") || m.contains("tainting kernel") || m.contains("due to kernel taint") {
        let module = m.split_once(':').map(|(p, _)| p.trim()).filter(|p| !p.contains(' '));
        return event(EventType::Taint, format!("kernel tainted: {m}"))?.with("module", module).into();
    }
    // An uncorrected memory error the kernel met and handled by taking the page away
    // (`Memory failure: 0x3e1a2b: recovery action for dirty LRU page: Recovered`), or met
    // in a copy from user memory.
    if let Some(rest) = m.strip_prefix("Memory failure: ")
        && let Some((_, result)) = rest.split_once(": recovery action for ")
    {
        let outcome = result.rsplit(": ").next().unwrap_or(result).trim();
        return event(
            EventType::MachineCheck,
            format!("uncorrected memory error, page {}: {m}", outcome.to_lowercase()),
        )?
        .with("corrected", false)
        .with("memoryFailure", outcome)
        .with("page", rest.split(':').next())
        .severity(if outcome == "Recovered" { Severity::Warning } else { Severity::Critical })
        .into();
    }
    if m.starts_with("mce: Uncorrected hardware memory error") {
        return event(EventType::MachineCheck, format!("machine check: {m}"))?.with("corrected", false).into();
    }
    if m.starts_with("mce: [Hardware Error]") || m.starts_with("mce: ") && m.contains("Machine check events logged") {
        return event(EventType::MachineCheck, format!("machine check: {m}"))?.into();
    }
    if let Some(rest) = m.strip_prefix("EDAC ")
        && (rest.contains(" CE ") || rest.contains(" UE "))
    {
        let corrected = rest.contains(" CE ");
        return event(EventType::MachineCheck, format!("memory error: {m}"))?
            .with("corrected", corrected)
            .severity(if corrected { Severity::Warning } else { Severity::Critical })
            .into();
    }
    None
}

/// The kinds of the block layer's errors (`blk_status` names in block/blk-core.c), so the
/// `<kind> error, dev` of a record is the kernel's and not text a process put before it.
const BLOCK_ERRORS: [&str; 17] = [
    "I/O",
    "critical medium",
    "critical target",
    "critical nexus",
    "critical space allocation",
    "recoverable transport",
    "timeout",
    "protection",
    "kernel resource",
    "device resource",
    "device offline",
    "reservation conflict",
    "duration limit exceeded",
    "invalid",
    "nonblocking retry",
    "operation not supported",
    "critical allocation",
];

/// `op 0x1:(WRITE)` → `WRITE`.
fn op_name(m: &str) -> Option<&str> {
    let rest = &m[m.find(" op ")? + 4..];
    let token = rest.split_whitespace().next()?;
    Some(token.split_once('(').map_or(token, |(_, op)| op.trim_end_matches(')')))
}

/// `key=value` or `key="value"` in an audit record.
fn audit_field<'a>(m: &'a str, key: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(p) = m[from..].find(key) {
        let at = from + p;
        from = at + key.len();
        // A whole key: at the start or after a space (`pid=` is not `ppid=`).
        if at > 0 && !m[..at].ends_with(' ') {
            continue;
        }
        // `key` followed by anything but `=` is another word (`pid` in `pid:`); look on.
        let Some(rest) = m[at + key.len()..].strip_prefix('=') else {
            continue;
        };
        return Some(match rest.strip_prefix('"') {
            Some(quoted) => quoted.split('"').next().unwrap_or(quoted),
            None => rest.split(' ').next().unwrap_or(rest),
        });
    }
    None
}

/// A string field of an audit record that its subject chooses (`comm`, `exe`, `name`,
/// `path`): the kernel writes it quoted, or, when it holds a space, a quote or a control
/// character, as bare hex (`comm=2F746D702F78`), so that no name can forge a field after it.
/// Decoded here; a bare value that is not even-length hex is taken as written.
fn audit_text(m: &str, key: &str) -> Option<String> {
    let raw = audit_field(m, key)?;
    let quoted = m.contains(&format!(" {key}=\"")) || m.starts_with(&format!("{key}=\""));
    if quoted || raw.len() < 2 || raw.len() % 2 != 0 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (raw != "(null)").then(|| raw.to_owned());
    }
    let bytes: Vec<u8> =
        (0..raw.len()).step_by(2).filter_map(|i| u8::from_str_radix(&raw[i..i + 2], 16).ok()).collect();
    Some(super::utf8_escaped(&bytes).into_owned())
}

/// A line of auditd's log (`/var/log/audit/audit.log`) as the kernel record it came from:
/// where auditd runs, the kernel sends its audit records there instead of to the kernel log.
/// Only the records of the security modules are kept (`AVC`: AppArmor and SELinux, type 1400;
/// `SECCOMP`, 1326); `None` for any other line. `boot` places the record's wall-clock time on
/// the kernel's clock; a record of an earlier boot (before `boot`) is `None`. A line with
/// auditd's `node=NAME` prefix is read only when NAME is `host` (a collector's log holds other
/// nodes' records too); auditd's enriched fields (after a GS byte, 0x1d) are left out.
pub fn audit_log_record(line: &str, boot: jiff::Timestamp, host: Option<&str>) -> Option<Record> {
    let line = line.split('\u{1d}').next().unwrap_or(line).trim_end();
    let line = match line.strip_prefix("node=") {
        Some(rest) => {
            let (node, rest) = rest.split_once(' ')?;
            let short = |n: &str| n.split('.').next().unwrap_or(n).to_ascii_lowercase();
            if host.is_none_or(|h| short(h) != short(node)) {
                return None;
            }
            rest
        }
        None => line,
    };
    let rest = line.strip_prefix("type=")?;
    let (kind, rest) = rest.split_once(' ')?;
    let number = match kind {
        "AVC" => 1400,
        "SECCOMP" => 1326,
        _ => return None,
    };
    let stamp = rest.strip_prefix("msg=audit(")?;
    let (stamp, message) = stamp.split_once("): ")?;
    let (secs, _serial) = stamp.split_once(':')?;
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, "0"));
    let whole: i64 = whole.parse().ok()?;
    let millis: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    let at = jiff::Timestamp::from_millisecond(whole.checked_mul(1000)?.checked_add(millis)?).ok()?;
    if at < boot {
        return None;
    }
    let since_boot = at.duration_since(boot).as_micros();
    Some(Record {
        level: 5,
        facility: 0,
        seq: 0,
        ts_usec: u64::try_from(since_boot).unwrap_or(0),
        message: format!("audit: type={number} audit({stamp}): {message}"),
        dict: Vec::new(),
        continued: false,
        continuation: false,
    })
}

/// The kernel's audit records of the security modules: AppArmor and SELinux denials, seccomp
/// actions. Each carries the acting process (`pid`, `comm`), by which the agent finds its
/// pod.
fn security(m: &str, time: jiff::Timestamp) -> Option<Event> {
    let kind = m.strip_prefix("audit: type=").and_then(|r| r.split(' ').next());
    if !matches!(kind, Some("1400" | "1326")) {
        return None;
    }
    let base = |kind, text: String| {
        Event::new(kind, time, text)
            .with("line", m)
            .with("pid", audit_field(m, "pid").and_then(|p| p.parse::<i64>().ok()))
            .with("comm", audit_text(m, "comm"))
            .with("exe", audit_text(m, "exe"))
    };
    if let Some(verdict) = audit_field(m, "apparmor")
        && (verdict == "DENIED" || verdict == "AUDIT" && m.contains("denied_mask"))
    {
        let op = audit_field(m, "operation");
        let target = audit_text(m, "name");
        let profile = audit_field(m, "profile");
        return Some(
            base(
                EventType::AppArmorDenied,
                format!(
                    "AppArmor denied {} {} to {} (profile {})",
                    op.unwrap_or("?"),
                    target.as_deref().unwrap_or(""),
                    audit_text(m, "comm").unwrap_or_else(|| "?".into()),
                    profile.unwrap_or("?")
                ),
            )
            .with("operation", op)
            .with("name", target)
            .with("profile", profile)
            .with("requestedMask", audit_field(m, "requested_mask"))
            .with("deniedMask", audit_field(m, "denied_mask"))
            .with("capability", audit_field(m, "capname")),
        );
    }
    if let Some(pos) = m.find("avc:") {
        let rest = m[pos + 4..].trim_start();
        if !rest.starts_with("denied") {
            return None;
        }
        let perms = rest.split_once('{').and_then(|(_, r)| r.split_once('}')).map(|(p, _)| p.trim());
        let permissive = audit_field(m, "permissive").map(|p| p == "1");
        let class = audit_field(m, "tclass");
        let e = base(
            EventType::SelinuxDenied,
            format!(
                "SELinux denied {{ {} }} on {} {} to {}",
                perms.unwrap_or("?"),
                class.unwrap_or("?"),
                audit_text(m, "name").or_else(|| audit_text(m, "path")).unwrap_or_default(),
                audit_text(m, "comm").unwrap_or_else(|| "?".into())
            ),
        )
        .with("permissions", perms)
        .with("name", audit_text(m, "name"))
        .with("path", audit_text(m, "path"))
        .with("sourceContext", audit_field(m, "scontext"))
        .with("targetContext", audit_field(m, "tcontext"))
        .with("targetClass", class)
        .with("permissive", permissive);
        return Some(if permissive == Some(true) { e.severity(Severity::Info) } else { e });
    }
    if kind == Some("1326") {
        let syscall = audit_field(m, "syscall").and_then(|s| s.parse::<u32>().ok());
        let code = audit_field(m, "code");
        // The filter's action, the top 16 bits of `code` (linux/seccomp.h).
        let action = code.and_then(|c| u32::from_str_radix(c.trim_start_matches("0x"), 16).ok()).map(|c| {
            match c & 0xffff_0000 {
                0x8000_0000 => "kill_process",
                0x0000_0000 => "kill_thread",
                0x0003_0000 => "trap",
                0x0005_0000 => "errno",
                0x7fc0_0000 => "user_notif",
                0x7ff0_0000 => "trace",
                0x7ffc_0000 => "log",
                0x7fff_0000 => "allow",
                _ => "unknown",
            }
        });
        let killed = matches!(action, Some("kill_process" | "kill_thread"));
        let e = base(
            EventType::Seccomp,
            format!(
                "seccomp {} syscall {} of {}",
                action.unwrap_or("acted on"),
                syscall.map_or("?".into(), |s| s.to_string()),
                audit_text(m, "comm").unwrap_or_else(|| "?".into())
            ),
        )
        .with("syscall", syscall)
        .with("arch", audit_field(m, "arch"))
        .with("signal", audit_field(m, "sig").and_then(|s| s.parse::<i64>().ok()))
        .with("action", action)
        .with("code", code);
        return Some(if killed { e } else { e.severity(Severity::Info) });
    }
    None
}

/// Connection tracking, SYN floods, NIC transmit timeouts and devices that cannot go.
fn network(m: &str, time: jiff::Timestamp) -> Option<Event> {
    let ev = |kind, text: String| Event::new(kind, time, text).with("line", m);
    if m.starts_with("nf_conntrack: ") && m.contains("table full, dropping packet") {
        return Some(ev(EventType::ConntrackFull, "conntrack table full: new connections are dropped".into()));
    }
    if let Some(pos) =
        m.find("Possible SYN flooding on port ").filter(|_| m.starts_with("TCP: ") || m.starts_with("TCPv6: "))
    {
        let port = m[pos + "Possible SYN flooding on port ".len()..].split(' ').next().unwrap_or("");
        // `[::]:443.` and `0.0.0.0:80.` on recent kernels, `80.` before.
        let port = port.trim_end_matches('.').rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        let cookies = m.contains("Sending cookies");
        return Some(
            ev(
                EventType::SynFlood,
                format!("possible SYN flood on port {}", port.map_or("?".into(), |p| p.to_string())),
            )
            .with("port", port.map(u32::from))
            .with("cookies", cookies),
        );
    }
    if let Some(pos) = m.find("NETDEV WATCHDOG: ") {
        // `NETDEV WATCHDOG: eth0 (e1000e): transmit queue 0 timed out 5344 ms`, and since 6.x
        // `r8169 0000:03:00.0 enp3s0: NETDEV WATCHDOG: CPU: 0: transmit queue 0 timed out …`.
        let rest = &m[pos + "NETDEV WATCHDOG: ".len()..];
        let (iface, driver) = if pos == 0 {
            (rest.split([' ', ':']).next().filter(|i| !i.is_empty()), word_after(rest, "("))
        } else {
            let before: Vec<&str> = m[..pos].split_whitespace().collect();
            (before.last().map(|i| i.trim_end_matches(':')), before.first().copied())
        };
        return Some(
            ev(EventType::NetdevTimeout, format!("transmit queue of {} timed out", iface.unwrap_or("?")))
                .with("interface", iface)
                .with("driver", driver)
                .with("queue", number_after::<u32>(rest, "transmit queue ")),
        );
    }
    if let Some(pos) = m.find("unregister_netdevice: waiting for ").filter(|p| *p == 0) {
        let rest = &m[pos + "unregister_netdevice: waiting for ".len()..];
        let iface = rest.split(' ').next().filter(|i| !i.is_empty());
        return Some(
            ev(EventType::NetdevStuck, format!("{} cannot be unregistered: references remain", iface.unwrap_or("?")))
                .with("interface", iface)
                .with("usageCount", number_after::<u32>(rest, "Usage count = ")),
        );
    }
    None
}

/// NVMe and SCSI command timeouts, aborts and controller resets.
fn disk_timeout(m: &str, time: jiff::Timestamp) -> Option<Event> {
    let ev = |dev: Option<&str>, what: &str, critical: bool| {
        let e = Event::new(EventType::DiskTimeout, time, format!("{}: {what}", dev.unwrap_or("?")))
            .with("line", m)
            .with("device", dev)
            .with("what", what);
        if critical { e.severity(Severity::Critical) } else { e }
    };
    if let Some(rest) = m.strip_prefix("nvme ") {
        let dev = rest.split(':').next().map(str::trim).filter(|d| d.starts_with("nvme"));
        let body = rest.split_once(": ").map_or(rest, |(_, b)| b);
        if body.contains(" timeout, ") || body.starts_with("I/O tag ") && body.contains("timeout") {
            // `completion polled`: the command had completed, its interrupt was late.
            if body.contains("completion polled") {
                return None;
            }
            let (what, critical) = if body.contains("reset") {
                ("command timed out, controller reset", true)
            } else if body.contains("disable controller") {
                ("command timed out, controller disabled", true)
            } else {
                ("command timed out, aborted", false)
            };
            return Some(ev(dev, what, critical).with("queue", number_after::<u32>(body, "QID ")));
        }
        if body.contains("controller is down") || body.contains("Removing after probe failure") {
            return Some(ev(dev, "controller down", true));
        }
        if body.starts_with("resetting controller") {
            return Some(ev(dev, "controller reset", false));
        }
        if body.contains("Abort status") {
            return Some(ev(dev, "command aborted", false));
        }
        return None;
    }
    if (m.starts_with("sd ") || m.starts_with("scsi ")) && m.contains("timing out command, waited ") {
        let dev = m.split_once('[').and_then(|(_, r)| r.split_once(']')).map(|(d, _)| d);
        return Some(ev(dev, "command timed out", false).with("seconds", number_after::<u64>(m, "waited ")));
    }
    None
}

/// ext4, xfs and btrfs errors and read-only remounts.
fn filesystem(m: &str, time: jiff::Timestamp) -> Option<Event> {
    let ev = |kind, fs: &str, dev: Option<&str>, text: String| {
        Event::new(kind, time, text).with("line", m).with("filesystem", fs).with("device", dev)
    };
    // `EXT4-fs error (device sda1): …`, `EXT4-fs (sda1): Remounting filesystem read-only`.
    if let Some(rest) = m.strip_prefix("EXT4-fs") {
        let dev = word_after(rest, "(device ").or_else(|| word_after(rest, "("));
        if rest.contains("Remounting filesystem read-only") {
            return Some(ev(
                EventType::FsReadOnly,
                "ext4",
                dev,
                format!("ext4 {} remounted read-only", dev.unwrap_or("?")),
            ));
        }
        if rest.starts_with(" error") {
            return Some(ev(EventType::FsError, "ext4", dev, format!("ext4 error on {}", dev.unwrap_or("?"))));
        }
        if rest.contains("I/O error while writing superblock") || rest.contains("previous I/O error to superblock") {
            return Some(
                ev(EventType::FsError, "ext4", dev, format!("ext4 superblock I/O error on {}", dev.unwrap_or("?")))
                    .with("metadata", "superblock"),
            );
        }
        if rest.starts_with(" warning") {
            return Some(
                ev(EventType::FsError, "ext4", dev, format!("ext4 warning on {}", dev.unwrap_or("?")))
                    .severity(Severity::Warning),
            );
        }
        return None;
    }
    // The ext4 journal (jbd2): an aborted journal or a failed journal superblock write.
    if m.starts_with("JBD2: ") || m.starts_with("Aborting journal on device ") {
        let dev = word_after(m, "on device ").or_else(|| word_after(m, " for ")).map(|d| d.trim_end_matches('.'));
        // jbd2's own words start the message (`JBD2: Error -5 detected …`, `JBD2: Detected IO
        // errors …`): a network interface named `JBD2` says `JBD2: renamed from …`, `JBD2: port
        // 1(…) entered …`, never these.
        let first = m.strip_prefix("JBD2: ").and_then(|r| r.split(' ').next());
        let jbd2 =
            first.is_some_and(|w| ["Error", "I/O", "IO", "Detected", "Invalid", "Failed", "recovery"].contains(&w));
        if (jbd2 && (m.contains("Error") || m.contains("error") || m.contains("Invalid") || m.contains("failed")))
            || m.starts_with("Aborting journal")
        {
            return Some(
                ev(EventType::FsError, "ext4", dev, format!("ext4 journal error on {}", dev.unwrap_or("?")))
                    .with("metadata", "journal"),
            );
        }
        return None;
    }
    if let Some(rest) = m.strip_prefix("XFS (") {
        let dev = rest.split(')').next();
        let bad = [
            "Corruption",
            "metadata I/O error",
            "Metadata I/O Error",
            "shut down",
            "Shutting down filesystem",
            "Internal error",
            "log I/O error",
            "Metadata corruption",
            "xfs_log_force: error",
        ];
        if bad.iter().any(|b| rest.contains(b)) {
            let shutdown = rest.contains("Shutting down filesystem") || rest.contains("shut down");
            let metadata = (rest.contains("etadata") || rest.contains("log")).then_some("metadata");
            return Some(
                ev(EventType::FsError, "xfs", dev, format!("xfs error on {}", dev.unwrap_or("?")))
                    .with("shutdown", shutdown)
                    .with("metadata", metadata),
            );
        }
        return None;
    }
    if let Some(rest) = m.strip_prefix("BTRFS") {
        let dev = word_after(rest, "(device ");
        if rest.contains("forced readonly") {
            return Some(ev(
                EventType::FsReadOnly,
                "btrfs",
                dev,
                format!("btrfs {} forced read-only", dev.unwrap_or("?")),
            ));
        }
        if rest.starts_with(" error") || rest.starts_with(": error") || rest.starts_with(" critical") {
            let superblock = rest.contains("write_all_supers") || rest.contains("super");
            return Some(
                ev(EventType::FsError, "btrfs", dev, format!("btrfs error on {}", dev.unwrap_or("?")))
                    .with("metadata", superblock.then_some("superblock")),
            );
        }
        if rest.starts_with(" warning") && (rest.contains("csum failed") || rest.contains("checksum error")) {
            return Some(
                ev(EventType::FsError, "btrfs", dev, format!("btrfs checksum error on {}", dev.unwrap_or("?")))
                    .severity(Severity::Warning),
            );
        }
    }
    None
}

/// NIC link down/up in the forms drivers print (`NIC Link is Down`, `Link down`, bonding).
fn link(m: &str, time: jiff::Timestamp) -> Option<Event> {
    // Most specific first: `NIC Link is Down` before phylib's and r8169's `Link is Down`.
    const DOWN: [&str; 5] =
        ["NIC Link is Down", "Link is Down", "Link down", "link down", "link status definitely down"];
    const UP: [&str; 5] =
        ["NIC Link is Up", "Link is Up", "Link up", "link becomes ready", "link status definitely up"];
    let (kind, pos) = if let Some(p) = DOWN.iter().find_map(|d| m.find(d)) {
        (EventType::LinkDown, p)
    } else if let Some(p) = UP.iter().find_map(|u| m.find(u)) {
        (EventType::LinkUp, p)
    } else {
        return None;
    };
    // The interface is the last `name:` before the phrase; bonding names the slave after it.
    let before = &m[..pos];
    let iface = word_after(m, "interface ")
        .or_else(|| word_after(m, "(slave "))
        .or_else(|| before.split_whitespace().next_back().map(|t| t.trim_end_matches(':')));
    let iface = iface.filter(|i| !i.is_empty() && !i.contains(['(', ')']));
    let state = if kind == EventType::LinkDown { "down" } else { "up" };
    Some(
        Event::new(kind, time, format!("link {state} on {}", iface.unwrap_or("?")))
            .with("line", m)
            .with("interface", iface),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn one(msg: &str) -> Event {
        classify_message(msg, t0()).unwrap_or_else(|| panic!("no event for {msg:?}"))
    }

    #[test]
    fn header_and_dictionary() {
        let r = parse_record(
            b"3,1234,5678901,-,caller=T42;EXT4-fs error (device sda1): x\n SUBSYSTEM=block\n DEVICE=b8:1\n",
        )
        .unwrap();
        assert_eq!((r.level, r.facility, r.seq, r.ts_usec), (3, 0, 1234, 5_678_901));
        assert_eq!(r.message, "EXT4-fs error (device sda1): x");
        assert_eq!(r.dict, [("SUBSYSTEM".into(), "block".into()), ("DEVICE".into(), "b8:1".into())]);
        assert!(parse_record(b"no header here").is_none());
        assert!(parse_record(b"x,1,2,-;m").is_none());
    }

    #[test]
    fn oom_on_recent_kernels_with_its_cgroup() {
        let mut c = Classifier::default();
        let ctx = parse_record(b"6,10,1000,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=abc,mems_allowed=0,oom_memcg=/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice,task_memcg=/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope,task=stress,pid=4242,uid=0").unwrap();
        assert!(c.classify(&ctx, t0()).is_none());
        let kill = parse_record(b"3,11,2000000,-;Memory cgroup out of memory: Killed process 4242 (stress) total-vm:1052000kB, anon-rss:1048576kB, file-rss:4kB, shmem-rss:0kB, UID:0 pgtables:2100kB oom_score_adj:939").unwrap();
        let e = c.classify(&kill, t0()).unwrap();
        assert_eq!(e.kind, EventType::OomKill);
        assert_eq!(e.severity, Severity::Critical);
        assert_eq!(e.detail_i64("pid"), Some(4242));
        assert_eq!(e.detail_str("comm"), Some("stress"));
        assert_eq!(e.detail_i64("anonRssKiB"), Some(1_048_576));
        assert_eq!(e.detail_i64("oomScoreAdj"), Some(939));
        assert_eq!(e.detail_str("constraint"), Some("CONSTRAINT_MEMCG"));
        assert_eq!(
            e.detail_str("containerId"),
            Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
        );
        assert_eq!(e.details["memcg"], true);
        assert_eq!(e.time, t0() + jiff::SignedDuration::from_secs(2));
    }

    #[test]
    fn oom_on_4x_kernels_is_one_event() {
        let mut c = Classifier::default();
        let first =
            parse_record(b"3,1,1,-;Out of memory: Kill process 999 (java) score 901 or sacrifice child").unwrap();
        let second = parse_record(
            b"3,2,2,-;Killed process 999 (java) total-vm:4096000kB, anon-rss:2048000kB, file-rss:0kB, shmem-rss:0kB",
        )
        .unwrap();
        assert!(c.classify(&first, t0()).is_none());
        let e = c.classify(&second, t0()).unwrap();
        assert_eq!((e.kind, e.detail_i64("pid"), e.detail_str("comm")), (EventType::OomKill, Some(999), Some("java")));
    }

    #[test]
    fn an_oom_kill_on_a_kernel_before_4_19_takes_its_cgroup_from_the_task_in_line() {
        let mut c = Classifier::default();
        let cg = "/kubepods/burstable/pod5f3c1e2a-9b7d-4c11-8e0f-2a6b9c3d4e5f/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let task = format!(
            "6,1,1,-;Task in {cg} killed as a result of limit of /kubepods/burstable/pod5f3c1e2a-9b7d-4c11-8e0f-2a6b9c3d4e5f"
        );
        assert!(c.classify(&parse_record(task.as_bytes()).unwrap(), t0()).is_none());
        let killed = parse_record(
            b"3,2,2,-;Memory cgroup out of memory: Kill process 4242 (stress) score 1000 or sacrifice child",
        )
        .unwrap();
        assert!(c.classify(&killed, t0()).is_none());
        let killed =
            parse_record(b"3,3,3,-;Killed process 4242 (stress) total-vm:1052692kB, anon-rss:1048576kB, file-rss:4kB")
                .unwrap();
        let e = c.classify(&killed, t0()).unwrap();
        assert_eq!((e.kind, e.detail_str("taskMemcg")), (EventType::OomKill, Some(cg)));
        assert_eq!(
            e.detail_str("containerId"),
            Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
        );
    }

    #[test]
    fn names_the_kernel_wrote_in_hex_are_decoded_and_cannot_forge_a_field() {
        // `comm` and `name` with a space and a quote: the kernel writes them as bare hex.
        let e = one(
            "audit: type=1400 audit(1700000000.1:9): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=2F746D702F6120706964 pid=77 comm=6361742022782220706964 requested_mask=\"r\" denied_mask=\"r\"",
        );
        assert_eq!(e.kind, EventType::AppArmorDenied);
        assert_eq!((e.detail_str("name"), e.detail_str("comm")), (Some("/tmp/a pid"), Some("cat \"x\" pid")));
        assert_eq!(e.detail_i64("pid"), Some(77));
        // A quoted value that happens to look like hex stays as written.
        let e = one(
            "audit: type=1326 audit(1.2:3): pid=5 comm=\"cafe\" exe=\"/usr/bin/cafe\" sig=31 syscall=272 code=0x80000000",
        );
        assert_eq!(e.detail_str("comm"), Some("cafe"));
    }

    #[test]
    fn a_process_name_or_a_user_audit_message_is_never_read_as_the_kernels_words() {
        let mut c = Classifier::default();
        for (i, line) in [
            "I/O error, dev [20676] misaligned vsyscall (exploit attempt or buggy program) -- look up the vsyscall option for more information",
            "EXT4-fs error ([20678] misaligned vsyscall (exploit attempt or buggy program)",
            "BUG: x[20679] vsyscall read attempt denied -- look up the vsyscall option for more information",
            "audit: type=1107 audit(1700000000.1:5): pid=4321 uid=0 auid=4294967295 ses=4294967295 msg='nf_conntrack: table full, dropping packet exe=\"/x\" hostname=? addr=? terminal=? res=success'",
            "audit: type=1107 audit(1700000000.1:6): pid=4321 uid=0 msg='watchdog: BUG: soft lockup - CPU#3 stuck for 23s! [kubelet:1]'",
            "audit: type=1107 audit(1700000000.1:7): pid=4321 uid=0 msg='x apparmor=\"DENIED\" operation=\"open\" name=\"/etc/shadow\" pid=1 comm=\"kubelet\"'",
            "blk_update_request: operation not supported error, dev loop0, sector 0 op 0x9:(WRITE_ZEROES) flags 0x800 phys_seg 0 prio class 0",
            "I/O error, dev fd0, sector 0",
            "nvme nvme0: I/O 9 QID 3 timeout, completion polled",
        ]
        .iter()
        .enumerate()
        {
            let r = parse_record(format!("3,{},{},-;{line}", i + 1, i + 1).as_bytes()).unwrap();
            assert_eq!(c.classify(&r, t0()), None, "{line}");
        }
        // A process named `Killed process ` (15 bytes) that segfaults: a segfault, no OOM kill.
        let r = parse_record(b"6,20,20,-;Killed process [20677]: segfault at 0 ip 0 sp 0 error 4 in x[400000+1000]")
            .unwrap();
        assert_eq!(c.classify(&r, t0()).map(|e| e.kind), Some(EventType::Segfault));
        // The newer NETDEV WATCHDOG form, and a fragment never joined across lost records.
        let e = one("r8169 0000:03:00.0 enp3s0: NETDEV WATCHDOG: CPU: 0: transmit queue 0 timed out 5500 ms");
        assert_eq!(
            (e.kind, e.detail_str("interface"), e.detail_str("driver")),
            (EventType::NetdevTimeout, Some("enp3s0"), Some("r8169"))
        );
        let mut a = Assembler::default();
        let mut out = Vec::new();
        a.record(b"4,100,1,c;nvme nvme0: I/O 5 QID 1 timeout, ", &mut out);
        a.record(b"2,250,2,-;EXT4-fs (sda1): Remounting filesystem read-only", &mut out);
        a.flush(&mut out);
        let recs: Vec<&str> =
            out.iter().filter_map(|p| if let Piece::Record(r) = p { Some(r.message.as_str()) } else { None }).collect();
        assert_eq!(recs, ["nvme nvme0: I/O 5 QID 1 timeout, ", "EXT4-fs (sda1): Remounting filesystem read-only"]);
    }

    #[test]
    fn a_process_quoted_inside_a_kernel_record_never_makes_a_node_problem() {
        for line in [
            "ICMPv6: process `x error, dev sd' is using deprecated sysctl (syscall) net.ipv6.neigh.default.retrans_time - use net.ipv6.neigh.default.retrans_time_ms instead",
            "process 'https://fd.book79.com/5pr664c2_8jijajqtqmv/3swamj/soft lockup - CPU#0 stuck for 23s! [x:1]' launched '/bin/sh' with NULL argv: empty string added",
            "ptrace attach of \"sh -c nf_conntrack: table full, dropping packet unregister_netdevice: waiting for x\"[77] was attempted by \"gdb\"[78]",
            "Buffer I/O error on dev sr0, logical block 0, async page read",
            "x[1]: I/O error, dev sda, sector 1",
            "some text I/O error, dev sda, sector 1",
        ] {
            assert_eq!(classify_message(line, t0()), None, "{line}");
        }
        // The kernel's own forms still are.
        assert_eq!(one("blk_update_request: critical medium error, dev sdb, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0").kind, EventType::IoError);
        assert_eq!(one("rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 3-... } 21002 jiffies s: 1281 root: 0x8/.").kind, EventType::Lockup);
    }

    #[test]
    fn user_space_crashes() {
        let e = one(
            "nginx: worker[31337]: segfault at 0 ip 000055d0c0de0000 sp 00007ffc00000000 error 4 in nginx[55d0c0d00000+100000] likely on CPU 1 (core 1, socket 0)",
        );
        assert_eq!(e.kind, EventType::Segfault);
        assert_eq!(e.detail_str("comm"), Some("worker"));
        assert_eq!(e.detail_i64("pid"), Some(31337));
        assert_eq!(e.detail_str("object"), Some("nginx"));
        assert_eq!(e.detail_str("error"), Some("4"));
        let e = one("a.out[77]: segfault at 8 ip 00007f sp 00007ffd error 6 in libc.so.6[7f00+195000]");
        assert_eq!((e.detail_str("comm"), e.detail_i64("pid")), (Some("a.out"), Some(77)));
        let e = one("traps: python3[1234] general protection fault ip:7f0 sp:7ffc error:0 in libc.so.6[7f0+178000]");
        assert_eq!(e.kind, EventType::GeneralProtection);
        assert_eq!((e.detail_str("comm"), e.detail_i64("pid")), (Some("python3"), Some(1234)));
        assert_eq!(e.detail_str("object"), Some("libc.so.6"));
        let e = one("traps: myapp[88] trap invalid opcode ip:401000 sp:7ffe error:0 in myapp[400000+2000]");
        assert_eq!((e.kind, e.detail_str("trap")), (EventType::Segfault, Some("invalid opcode")));
    }

    #[test]
    fn kernel_faults_hangs_and_lockups() {
        let e = one(
            "general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] PREEMPT SMP NOPTI",
        );
        assert_eq!((e.kind, e.severity), (EventType::GeneralProtection, Severity::Critical));
        let e = one("INFO: task jbd2/sda1-8:321 blocked for more than 120 seconds.");
        assert_eq!(e.kind, EventType::HungTask);
        assert_eq!(
            (e.detail_str("comm"), e.detail_i64("pid"), e.detail_i64("seconds")),
            (Some("jbd2/sda1-8"), Some(321), Some(120))
        );
        let e = one("watchdog: BUG: soft lockup - CPU#3 stuck for 23s! [kworker/3:1:456]");
        assert_eq!(e.kind, EventType::Lockup);
        assert_eq!((e.detail_i64("cpu"), e.detail_i64("seconds"), e.detail_i64("pid")), (Some(3), Some(23), Some(456)));
        assert_eq!(e.detail_str("comm"), Some("kworker/3:1"));
        let e = one("NMI watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [swapper/0:0]");
        assert_eq!(e.detail_i64("cpu"), Some(0));
        let e = one("Watchdog detected hard LOCKUP on cpu 2");
        assert_eq!((e.kind, e.detail_str("lockup"), e.detail_i64("cpu")), (EventType::Lockup, Some("hard"), Some(2)));
        for oops in [
            "BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "BUG: unable to handle kernel NULL pointer dereference at 0000000000000008",
            "Oops: 0002 [#1] SMP PTI",
            "kernel BUG at mm/slub.c:3952!",
            "Kernel panic - not syncing: Fatal exception",
        ] {
            assert_eq!(one(oops).kind, EventType::Oops, "{oops}");
        }
    }

    #[test]
    fn storage_and_filesystems() {
        let e = one(
            "blk_update_request: I/O error, dev sdb, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0",
        );
        assert_eq!(
            (e.kind, e.detail_str("device"), e.detail_i64("sector")),
            (EventType::IoError, Some("sdb"), Some(2048))
        );
        assert_eq!(e.detail_str("op"), Some("WRITE"));
        let e = one("I/O error, dev nvme0n1, sector 123456 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2");
        assert_eq!((e.detail_str("device"), e.detail_str("op")), (Some("nvme0n1"), Some("READ")));
        let e = one("Buffer I/O error on dev sda1, logical block 0, async page read");
        assert_eq!(
            (e.kind, e.detail_str("device"), e.detail_i64("block")),
            (EventType::IoError, Some("sda1"), Some(0))
        );
        let e = one("EXT4-fs error (device sda1): ext4_lookup:1855: inode #2: comm ls: deleted inode referenced: 12");
        assert_eq!(
            (e.kind, e.detail_str("device"), e.detail_str("filesystem")),
            (EventType::FsError, Some("sda1"), Some("ext4"))
        );
        let e = one("EXT4-fs (sda1): Remounting filesystem read-only");
        assert_eq!((e.kind, e.detail_str("device")), (EventType::FsReadOnly, Some("sda1")));
        let e = one("XFS (dm-0): Corruption detected. Unmount and run xfs_repair");
        assert_eq!((e.kind, e.detail_str("device")), (EventType::FsError, Some("dm-0")));
        let e = one("BTRFS: error (device sdc1) in __btrfs_free_extent:3069: errno=-5 IO failure");
        assert_eq!((e.kind, e.detail_str("device")), (EventType::FsError, Some("sdc1")));
        let e = one("BTRFS info (device sdc1): forced readonly");
        assert_eq!(e.kind, EventType::FsReadOnly);
        assert!(
            classify_message("EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.", t0())
                .is_none()
        );
        assert!(classify_message("XFS (sdb1): Mounting V5 Filesystem", t0()).is_none());
    }

    #[test]
    fn links_taint_and_hardware() {
        let e = one("e1000e 0000:00:19.0 eth0: NIC Link is Down");
        assert_eq!((e.kind, e.detail_str("interface")), (EventType::LinkDown, Some("eth0")));
        let e = one("e1000e: eth0 NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx");
        assert_eq!((e.kind, e.detail_str("interface")), (EventType::LinkUp, Some("eth0")));
        let e = one("mlx5_core 0000:3b:00.0 ens1f0: Link down");
        assert_eq!(e.detail_str("interface"), Some("ens1f0"));
        let e = one("bond0: (slave eth1): link status definitely down, disabling slave");
        assert_eq!((e.kind, e.detail_str("interface")), (EventType::LinkDown, Some("eth1")));
        let e = one("bond0: link status definitely down for interface eth2, disabling it");
        assert_eq!(e.detail_str("interface"), Some("eth2"));
        let e = one("IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready");
        assert_eq!((e.kind, e.detail_str("interface")), (EventType::LinkUp, Some("eth0")));
        let e = one("nvidia: loading out-of-tree module taints kernel.");
        assert_eq!((e.kind, e.detail_str("module")), (EventType::Taint, Some("nvidia")));
        assert_eq!(one("Disabling lock debugging due to kernel taint").kind, EventType::Taint);
        assert_eq!(one("mce: [Hardware Error]: Machine check events logged").kind, EventType::MachineCheck);
        let e = one("EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0");
        assert_eq!((e.kind, e.severity), (EventType::MachineCheck, Severity::Warning));
    }

    #[test]
    fn ordinary_chatter_is_not_an_event() {
        for m in [
            "Linux version 6.1.0-13-amd64",
            "eth0: renamed from veth1234",
            "cni0: port 1(veth1234) entered forwarding state",
            "audit: type=1400 audit(1700000000.000:1): apparmor=\"STATUS\"",
            "",
        ] {
            assert!(classify_message(m, t0()).is_none(), "{m}");
        }
    }

    #[test]
    fn auditds_log_lines_become_the_kernel_records_they_were() {
        let boot = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let avc = "type=AVC msg=audit(1700000100.250:812): avc:  denied  { read } for  pid=5151 comm=\"cat\" name=\"shadow\" dev=\"sda1\" ino=1234 scontext=system_u:system_r:container_t:s0:c1,c2 tcontext=system_u:object_r:shadow_t:s0 tclass=file permissive=0\u{1d}UID=\"root\"";
        let r = audit_log_record(avc, boot, None).unwrap();
        assert_eq!(r.ts_usec, 100_250_000);
        assert!(r.message.starts_with("audit: type=1400 audit(1700000100.250:812): avc:"), "{}", r.message);
        assert!(!r.message.contains("UID="), "enriched fields left out");
        let e = Classifier::default().classify(&r, boot).unwrap();
        assert_eq!(e.kind, EventType::SelinuxDenied);
        assert_eq!(e.time, boot + jiff::SignedDuration::from_millis(100_250));
        assert_eq!((e.detail_i64("pid"), e.detail_str("comm")), (Some(5151), Some("cat")));

        let seccomp = "node=n1 type=SECCOMP msg=audit(1700000200.5:9): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=7171 comm=\"unshare\" exe=\"/usr/bin/unshare\" sig=31 arch=c000003e syscall=272 compat=0 ip=0x7f code=0x80000000";
        let e = Classifier::default()
            .classify(&audit_log_record(seccomp, boot, Some("n1.example.com")).unwrap(), boot)
            .unwrap();
        assert_eq!((e.kind, e.detail_i64("syscall")), (EventType::Seccomp, Some(272)));

        let apparmor = "type=AVC msg=audit(1700000300.000:10): apparmor=\"DENIED\" operation=\"open\" profile=\"cri-containerd.apparmor.d\" name=\"/etc/shadow\" pid=4242 comm=\"cat\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0";
        let e = Classifier::default().classify(&audit_log_record(apparmor, boot, None).unwrap(), boot).unwrap();
        assert_eq!((e.kind, e.detail_str("name")), (EventType::AppArmorDenied, Some("/etc/shadow")));

        for other in [
            "type=SYSCALL msg=audit(1700000100.250:812): arch=c000003e syscall=257 success=no exit=-13",
            "type=USER_AVC msg=audit(1700000100.250:813): pid=1 uid=0 msg='avc:  denied  { status } for auid=0'",
            "type=AVC msg=audit(not-a-time:1): avc:  denied  { read }",
            "type=AVC",
            // Another node's record in a collector's log, and one of an earlier boot.
            "node=n2 type=SECCOMP msg=audit(1700000200.5:9): pid=7171 comm=\"unshare\" syscall=272 code=0x80000000",
            "type=SECCOMP msg=audit(1600000000.5:9): pid=7171 comm=\"unshare\" syscall=272 code=0x80000000",
            "",
            "\u{1d}",
        ] {
            assert!(audit_log_record(other, boot, Some("n1")).is_none(), "{other}");
        }
        // Hostile bytes at every cut: never a panic.
        for i in 0..=avc.len() {
            if avc.is_char_boundary(i) {
                let _ = audit_log_record(&avc[..i], boot, None);
            }
        }
    }

    #[test]
    fn a_process_name_at_the_head_of_a_record_is_never_read_as_the_kernels_words() {
        for line in [
            // mremap's once-a-boot warning, for a process named to look like other reports.
            "I/O error, dev (12368): attempted to duplicate a private mapping with mremap.  This is not supported.",
            "EXT4-fs error ( (12368): attempted to duplicate a private mapping with mremap.  This is not supported.",
            "eth0: Link is Up (12368): attempted to duplicate a private mapping with mremap.  This is not supported.",
            "Oops: x (77): attempted to duplicate a private mapping with mremap.  This is not supported.",
            "EDAC x UE y (77): attempted to duplicate a private mapping with mremap.  This is not supported.",
            "XFS (Corruption (77) used greatest stack depth: 1234 bytes left",
        ] {
            assert!(classify_message(line, t0()).is_none(), "{line}");
        }
        // warn_alloc's reports name the process first: that name is only a name.
        let e = classify_message(
            "I/O error, dev : vmalloc error: size 8192, vm_struct allocation failed, mode:0xcc0(GFP_KERNEL), nodemask=(null)",
            t0(),
        )
        .unwrap();
        assert_eq!((e.kind, e.detail_str("comm")), (EventType::PageAllocFailure, Some("I/O error, dev ")));
        let e = classify_message("EXT4-fs error : page allocation failure: order:4, mode:0x40cc0(GFP_KERNEL)", t0())
            .unwrap();
        assert_eq!(e.kind, EventType::PageAllocFailure);
        // The kernel's own lines with a parenthesised word are still read.
        assert_eq!(
            classify_message("XFS (sdd1): Corruption of in-memory data (0x8) detected at x", t0()).unwrap().kind,
            EventType::FsError
        );
        // Rate-limit notes are no losses: a user's crash loop makes them.
        assert!(classify_message("show_signal_msg: 18446744073709551615 callbacks suppressed", t0()).is_none());
        // The OOM killer's header names the process first.
        for name in ["EXT4-fs error", "I/O error, dev ", "XFS (Corruption", "JBD2: error", "BTRFS: error"] {
            let line = format!("{name} invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0");
            assert!(classify_message(&line, t0()).is_none(), "{line}");
        }
        // A network interface a pod renamed `JBD2`.
        for line in ["JBD2: renamed from error", "JBD2: port 1(error) entered blocking state"] {
            assert!(classify_message(line, t0()).is_none(), "{line}");
        }
        assert_eq!(
            classify_message("JBD2: Detected IO errors -5 while flushing file data on sda1-8", t0()).unwrap().kind,
            EventType::FsError
        );
        // A driver's parenthesised number is no pid.
        let e =
            classify_message("nvme nvme0: I/O tag 17 (3011) opcode 0x1 (Write) QID 2 timeout, reset controller", t0());
        assert_eq!(e.map(|e| e.kind), Some(EventType::DiskTimeout));
        // A hung task's pid is after the last colon of its name.
        let e = classify_message("INFO: task kubelet:1 x:4243 blocked for more than 122 seconds.", t0()).unwrap();
        assert_eq!((e.detail_str("comm"), e.detail_i64("pid")), (Some("kubelet:1 x"), Some(4243)));
        let e = classify_message("INFO: task VM Thread:77 blocked for more than 122 seconds.", t0()).unwrap();
        assert_eq!((e.detail_str("comm"), e.detail_i64("pid")), (Some("VM Thread"), Some(77)));
    }

    #[test]
    fn a_resumed_assembly_passes_over_what_was_read_and_counts_what_the_ring_lost_since() {
        let mut a = Assembler::default();
        a.resume_after(10);
        let mut out = Vec::new();
        for r in [&b"6,9,1,-;read before"[..], b"6,10,2,-;read before", b"6,14,3,-;new"] {
            a.record(r, &mut out);
        }
        assert!(
            matches!(&out[..], [Piece::Lost { records: Some(3), after: Some(10), next: Some(14) }, Piece::Record(r)] if r.message == "new"),
            "{out:?}"
        );
        assert_eq!(a.last_seq(), Some(14));
    }

    fn assemble_lines(text: &[u8]) -> Vec<Piece> {
        let mut a = Assembler::default();
        let mut out = Vec::new();
        for line in text.split(|&b| b == b'\n') {
            a.line(line, &mut out);
        }
        a.flush(&mut out);
        out
    }

    fn records(pieces: &[Piece]) -> Vec<&Record> {
        pieces.iter().filter_map(|p| if let Piece::Record(r) = p { Some(r) } else { None }).collect()
    }

    #[test]
    fn dictionary_lines_of_a_file_go_with_their_record_and_into_its_event() {
        let text = b"3,7,100,-;Buffer I/O error on dev sdb1, logical block 0, async page read\n SUBSYSTEM=block\n DEVICE=b8:17\n6,8,200,-;next\n";
        let pieces = assemble_lines(text);
        let recs = records(&pieces);
        assert_eq!(recs.len(), 2, "{pieces:?}");
        assert_eq!(recs[0].dict, [("SUBSYSTEM".into(), "block".into()), ("DEVICE".into(), "b8:17".into())]);
        let e = Classifier::default().classify(recs[0], t0()).unwrap();
        assert_eq!(e.details["kernelDictionary"]["SUBSYSTEM"], "block");
        assert_eq!(e.details["kernelDictionary"]["DEVICE"], "b8:17");
        // A dictionary line with no record before it is unparsed, not dropped.
        let orphan = assemble_lines(b" SUBSYSTEM=net\n");
        assert_eq!(orphan, [Piece::Unparsed(b" SUBSYSTEM=net".to_vec(), UnparsedReason::Malformed)]);
    }

    #[test]
    fn fragments_of_one_line_are_one_record_and_one_event() {
        // 4.9 and later: `c` says the line goes on in the next record.
        let mut a = Assembler::default();
        let mut out = Vec::new();
        a.record(b"1,20,500,c;BUG: unable to handle kernel NULL pointer dereference", &mut out);
        assert!(out.is_empty(), "held for its continuation");
        a.record(b"1,21,501,-; at 0000000000000008", &mut out);
        let recs = records(&out);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].message, "BUG: unable to handle kernel NULL pointer dereference at 0000000000000008");
        // Before 4.9: `c` then `+` fragments, ended by the next ordinary record.
        let mut out = Vec::new();
        for r in [&b"4,1,1,c;Oops: 0002 "[..], b"4,2,1,+;[#1] ", b"4,3,1,+;SMP PTI", b"6,4,2,-;other"] {
            a.record(r, &mut out);
        }
        let recs = records(&out);
        assert_eq!(recs.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(), ["Oops: 0002 [#1] SMP PTI", "other"]);
        // A fragment whose continuation never comes goes out at the flush.
        let mut out = Vec::new();
        a.record(b"4,5,3,c;INFO: task x:1 blocked for more than 120 seconds.", &mut out);
        a.flush(&mut out);
        assert_eq!(records(&out).len(), 1);
        // Joining is bounded.
        let mut out = Vec::new();
        let long = format!("4,6,4,c;{}", "y".repeat(1000));
        for _ in 0..40 {
            a.record(long.as_bytes(), &mut out);
        }
        a.flush(&mut out);
        assert!(records(&out).iter().all(|r| r.message.len() <= MAX_JOINED));
    }

    #[test]
    fn the_oops_line_after_a_bug_is_the_same_crash() {
        let mut c = Classifier::default();
        let bug =
            parse_record(b"1,30,1000000,-;BUG: kernel NULL pointer dereference, address: 0000000000000000").unwrap();
        let oops = parse_record(b"4,31,1000100,-;Oops: 0000 [#1] PREEMPT SMP NOPTI").unwrap();
        assert!(c.classify(&bug, t0()).is_some());
        assert!(c.classify(&oops, t0()).is_none(), "one crash, one event");
        // An Oops on its own, or long after, is an event of its own.
        let later = parse_record(b"4,40,90000000,-;Oops: 0002 [#2] SMP").unwrap();
        assert!(c.classify(&later, t0()).is_some());
    }

    #[test]
    fn oom_kills_carry_their_kernel_line() {
        let mut c = Classifier::default();
        let kill = parse_record(b"3,11,2000000,-;Out of memory: Killed process 4242 (stress) total-vm:1052000kB, anon-rss:1048576kB, file-rss:4kB, shmem-rss:0kB, UID:0 pgtables:2100kB oom_score_adj:0").unwrap();
        let e = c.classify(&kill, t0()).unwrap();
        assert_eq!(e.detail_str("line").map(|l| l.starts_with("Out of memory: Killed process 4242")), Some(true));
    }

    #[test]
    fn a_gap_in_the_sequence_numbers_is_counted_as_lost_records_in_every_way_of_reading() {
        let log = b"6,2012,1,-;one\n6,2013,2,-;two\n6,2020,3,-;three\n6,2021,4,-;four\n";
        // A file, line by line.
        let mut a = Assembler::default();
        let mut out = Vec::new();
        for line in log.split(|&b| b == b'\n') {
            a.line(line, &mut out);
        }
        a.flush(&mut out);
        let lost: Vec<&Piece> = out.iter().filter(|p| matches!(p, Piece::Lost { .. })).collect();
        assert_eq!(lost, [&Piece::Lost { records: Some(6), after: Some(2013), next: Some(2020) }]);
        // The device, a record per read.
        let mut a = Assembler::default();
        let mut out = Vec::new();
        for rec in split_records(log) {
            a.record(rec, &mut out);
        }
        assert_eq!(out.iter().filter(|p| matches!(p, Piece::Lost { records: Some(6), .. })).count(), 1);
        // A new boot (or a replayed file) starts the count again: nothing lost.
        let mut out = Vec::new();
        a.record(b"6,0,1,-;booted again", &mut out);
        a.record(b"6,1,2,-;next", &mut out);
        assert!(!out.iter().any(|p| matches!(p, Piece::Lost { .. })));
        // syslog(2) numbers no records: every record is 0, and nothing looks lost.
        let mut a = Assembler::default();
        let mut out = Vec::new();
        for _ in 0..3 {
            a.parsed(parse_record(b"6,0,5,-;no number").unwrap(), &mut out);
        }
        assert!(!out.iter().any(|p| matches!(p, Piece::Lost { .. })));
        let e = lost_event(Some(6), Some(2013), Some(2020), t0());
        assert_eq!((e.kind, e.severity), (EventType::Lost, Severity::Warning));
        assert_eq!((e.detail_i64("records"), e.detail_i64("atLeast")), (Some(6), Some(6)));
        assert!(e.message.contains("6 record(s) lost (sequence 2013, then 2020)"), "{}", e.message);
        let wrapped = lost_event(None, None, None, t0());
        assert_eq!((wrapped.detail_i64("records"), wrapped.detail_i64("atLeast")), (None, Some(1)));
    }

    #[test]
    fn a_saved_stream_splits_into_records_with_their_dictionaries() {
        let text = b"6,1,1,-;first\n SUBSYSTEM=net\n6,2,2,-;second\n6,3,3,-;third";
        let recs = split_records(text);
        assert_eq!(recs.len(), 3);
        assert_eq!(parse_record(recs[0]).unwrap().dict.len(), 1);
        assert_eq!(parse_record(recs[2]).unwrap().message, "third");
    }
}
