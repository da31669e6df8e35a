//! The kernel log through `syslog(2)` (`klogctl`), for where `/dev/kmsg` cannot be opened.
//!
//! A container that is not privileged cannot open `/dev/kmsg` whatever its capabilities: the
//! device cgroup allows only the devices the runtime lists, and `/dev/kmsg` is not one of
//! them. `syslog(SYSLOG_ACTION_READ_ALL)` needs no device, only `CAP_SYSLOG` (or
//! `kernel.dmesg_restrict=0`); container runtimes' default seccomp profiles allow it to a
//! process holding that capability. It copies the whole ring buffer without consuming it
//! (unlike `SYSLOG_ACTION_READ` and `/proc/kmsg`, whose one shared cursor rsyslog's imklog
//! may be using), so [`Follower`] polls it and keeps only the records it has not seen.
//!
//! Each line is `<PRI>[SECONDS.MICROS] MESSAGE` (the timestamp only with `printk.time=1`, the
//! default of every distribution kernel). Records carry no sequence number and no dictionary
//! (`SUBSYSTEM=`, `DEVICE=`): new records are found by their timestamps, and a ring buffer
//! that wrapped between two polls is counted as an overflow. Parsing is pure; only
//! [`read_all`] calls the kernel.

use super::kmsg::Record;

/// `SYSLOG_ACTION_READ_ALL`: read the whole ring buffer, consuming nothing.
const READ_ALL: libc::c_int = 3;
/// `SYSLOG_ACTION_SIZE_BUFFER`: the ring buffer's size.
const SIZE_BUFFER: libc::c_int = 10;

/// The whole kernel ring buffer as `syslog(2)` prints it.
#[allow(unsafe_code)]
pub fn read_all() -> std::io::Result<Vec<u8>> {
    // SAFETY: SIZE_BUFFER reads no buffer (a null pointer and length 0 are what it takes).
    let size = unsafe { libc::klogctl(SIZE_BUFFER, std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // READ_ALL copies the newest records that fit in `len`. Twice the ring buffer's size
    // holds all of them with the `<PRI>[time] ` prefix syslog(2) adds to each line.
    let len = usize::try_from(size).unwrap_or(0).max(4096) * 2;
    let mut buf = vec![0u8; len];
    let len_c = libc::c_int::try_from(buf.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: the kernel writes at most `len_c` bytes into `buf`, which we own and which is
    // at least that long.
    let n = unsafe { libc::klogctl(READ_ALL, buf.as_mut_ptr().cast::<libc::c_char>(), len_c) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(usize::try_from(n).unwrap_or(0));
    Ok(buf)
}

/// One line of `syslog(2)` output as a kernel log record (`seq` 0, no dictionary). `None` for
/// a line without a `<PRI>` prefix.
pub fn parse_line(line: &[u8]) -> Option<(Record, bool)> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line.strip_prefix(b"<")?;
    let end = rest.iter().position(|&b| b == b'>')?;
    let prefix: u32 = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    let mut msg = &rest[end + 1..];
    let mut ts_usec = None;
    if let Some(after) = msg.strip_prefix(b"[")
        && let Some(close) = after.iter().position(|&b| b == b']')
        && let Some(ts) = parse_ts(&after[..close])
    {
        ts_usec = Some(ts);
        msg = &after[close + 1..];
        msg = msg.strip_prefix(b" ").unwrap_or(msg);
    }
    let record = Record {
        level: u8::try_from(prefix & 7).ok()?,
        facility: prefix >> 3,
        seq: 0,
        ts_usec: ts_usec.unwrap_or(0),
        message: escape(msg),
        dict: Vec::new(),
        continued: false,
        continuation: false,
    };
    Some((record, ts_usec.is_some()))
}

/// `SECONDS.MICROS`, the seconds right-aligned with spaces.
fn parse_ts(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?.trim();
    let (secs, micros) = text.split_once('.')?;
    if micros.len() != 6 {
        return None;
    }
    secs.parse::<u64>().ok()?.checked_mul(1_000_000)?.checked_add(micros.parse::<u64>().ok()?)
}

/// The message with unprintable bytes as `\xNN`, as `/dev/kmsg` writes them (syslog(2) hands
/// them out raw).
fn escape(msg: &[u8]) -> String {
    let mut out = String::with_capacity(msg.len());
    for chunk in msg.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() && c != '\t' {
                out.push_str(&format!("\\x{:02x}", u32::from(c) & 0xff));
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A record's facility when its writer cannot be told (see [`Follower::poll`]): the event
/// says `writerUncertain`, and sets no Node condition.
pub const FACILITY_UNCERTAIN: u32 = u32::MAX;

/// A record as [`Follower`] knows it again: its time and a hash of its message (FNV-1a, the
/// same in every process and build, so that a saved position means the same record to the
/// next agent).
pub fn fingerprint(r: &Record) -> (u64, u64) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in r.message.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (r.ts_usec, h)
}

/// Finds the records of each poll that the previous polls did not return.
#[derive(Debug, Default)]
pub struct Follower {
    /// The last record returned ([`fingerprint`]).
    last: Option<(u64, u64)>,
    /// Without timestamps: the last line returned.
    last_line: Option<Vec<u8>>,
    /// Records handed out, the synthetic sequence number of the next.
    seq: u64,
}

/// What one poll found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Poll {
    /// Records not seen before, oldest first.
    pub records: Vec<Record>,
    /// Lines that are not records.
    pub unparsed: Vec<Vec<u8>>,
    /// The ring buffer wrapped past the last record seen: records may have been lost.
    pub wrapped: bool,
}

impl Follower {
    /// Goes on after the record an agent before this one returned last ([`fingerprint`]).
    pub fn resume(last: (u64, u64)) -> Self {
        Self { last: Some(last), ..Self::default() }
    }

    /// Where this follower is: the last record returned ([`fingerprint`]).
    pub fn position(&self) -> Option<(u64, u64)> {
        self.last
    }

    /// Starts past everything the buffer holds now (as opening `/dev/kmsg` at its end).
    pub fn at_end(buf: &[u8]) -> Self {
        let mut f = Self::default();
        let _ = f.poll(buf);
        f
    }

    /// The records of `buf` (a whole `read_all`) that are newer than those returned before:
    /// those after the last one returned, found by its time and message (not by time alone:
    /// printk takes a record's time before its place in the buffer, so records of two CPUs
    /// can stand in the buffer a little out of time order). When that record is gone, the
    /// buffer wrapped past it: everything in it is new, and records were lost.
    ///
    /// syslog(2) does not escape a newline inside a record's text (a file name in a segfault
    /// report may hold one): it starts each piece with the record's own prefix. A line with
    /// the very prefix of the line before (level, facility and time to the microsecond) may
    /// be such a piece or a record of its own; it is returned with [`FACILITY_UNCERTAIN`], so
    /// that no name can forge a record the node's conditions believe.
    pub fn poll(&mut self, buf: &[u8]) -> Poll {
        let lines: Vec<&[u8]> = buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        let mut parsed: Vec<Option<(Record, bool)>> = Vec::with_capacity(lines.len());
        // The prefix of the line before, as printed.
        let mut before: Option<(u8, u32, u64)> = None;
        for line in &lines {
            let mut p = parse_line(line);
            let prefix = p.as_ref().filter(|(_, t)| *t).map(|(r, _)| (r.level, r.facility, r.ts_usec));
            if let Some((r, _)) = p.as_mut()
                && prefix.is_some()
                && prefix == before
                && r.facility == 0
            {
                r.facility = FACILITY_UNCERTAIN;
            }
            before = prefix;
            parsed.push(p);
        }
        let timed = parsed.iter().flatten().any(|(_, t)| *t);
        let start = if timed { self.start_after_last(&parsed) } else { self.start_by_line(&lines) };
        let mut out = Poll { wrapped: start.1, ..Poll::default() };
        for (line, p) in lines[start.0..].iter().zip(&parsed[start.0..]) {
            match p {
                Some((r, _)) => {
                    self.seq += 1;
                    out.records.push(Record { seq: self.seq, ..r.clone() });
                }
                None => out.unparsed.push(line.to_vec()),
            }
        }
        if timed {
            if let Some((r, _)) = parsed.iter().flatten().rev().find(|(_, t)| *t) {
                // The fingerprint of the line as printed (an uncertain record's facility is
                // not part of it).
                self.last = Some(fingerprint(r));
            }
        } else if let Some(l) = lines.last() {
            self.last_line = Some(l.to_vec());
        }
        out
    }

    /// The index of the first new line, and whether the buffer wrapped past what we saw.
    fn start_after_last(&self, parsed: &[Option<(Record, bool)>]) -> (usize, bool) {
        let Some(last) = self.last else { return (0, false) };
        match parsed.iter().rposition(|p| p.as_ref().is_some_and(|(r, t)| *t && fingerprint(r) == last)) {
            Some(i) => (i + 1, false),
            // Gone: overwritten (or the buffer was cleared). A buffer of records all older
            // than it is one that has not caught up with what a saved position names.
            None if parsed.iter().flatten().filter(|(_, t)| *t).all(|(r, _)| r.ts_usec < last.0) => {
                (parsed.len(), false)
            }
            None => (0, true),
        }
    }

    fn start_by_line(&self, lines: &[&[u8]]) -> (usize, bool) {
        let Some(last) = &self.last_line else { return (0, false) };
        match lines.iter().rposition(|l| *l == last.as_slice()) {
            Some(i) => (i + 1, false),
            None => (0, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_with_the_prefix_of_the_one_before_is_returned_with_its_writer_uncertain() {
        // A segfault in a file named "x\nEXT4-fs (sda1): Remounting filesystem read-only\nq".
        let buf = b"<6>[  100.000001] a.out[77]: segfault at 0 ip 1 sp 2 error 4 in x\n<6>[  100.000001] EXT4-fs (sda1): Remounting filesystem read-only\n<6>[  100.000001] q[400000+1000]\n<3>[  100.000002] EXT4-fs (sdb1): Remounting filesystem read-only\n";
        let got = Follower::default().poll(buf);
        let facilities: Vec<u32> = got.records.iter().map(|r| r.facility).collect();
        assert_eq!(facilities, [0, FACILITY_UNCERTAIN, FACILITY_UNCERTAIN, 0], "{:?}", got.records);
        let e = crate::kmsg::Classifier::default().classify(&got.records[1], jiff::Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(e.details["writerUncertain"], true, "reported, and said to be uncertain");
        assert!(e.details.get("userspace").is_none());
    }

    #[test]
    fn records_a_little_out_of_time_order_are_all_returned() {
        // printk took B's time before A's, but A reached the buffer first.
        let mut f = Follower::default();
        let p = f.poll(&buf(&[(100, "a"), (102, "A")]));
        assert_eq!(messages(&p), ["a", "A"]);
        let p = f.poll(&buf(&[(100, "a"), (102, "A"), (101, "B"), (103, "C")]));
        assert_eq!(messages(&p), ["B", "C"], "B is after A in the buffer: new");
        // A position from another follower (a saved one) goes on the same way; one the buffer
        // does not hold any more means the ring wrapped past it.
        let mut next = Follower::resume(f.position().unwrap());
        assert_eq!(messages(&next.poll(&buf(&[(102, "A"), (101, "B"), (103, "C"), (104, "D")]))), ["D"]);
        let mut gone = Follower::resume(fingerprint(&parse_line(b"<6>[    0.000100] a").unwrap().0));
        let p = gone.poll(&buf(&[(200, "x"), (201, "y")]));
        assert_eq!((messages(&p), p.wrapped), (vec!["x", "y"], true));
        // A position ahead of the whole buffer (a clock or a file from elsewhere) returns
        // nothing now, and goes on from the buffer's end.
        let mut ahead = Follower::resume((u64::MAX, 1));
        assert!(ahead.poll(&buf(&[(200, "x")])).records.is_empty());
        assert_eq!(messages(&ahead.poll(&buf(&[(200, "x"), (201, "y")]))), ["y"]);
    }

    #[test]
    fn a_line_becomes_a_record_with_level_facility_time_and_escaped_bytes() {
        let (r, timed) = parse_line(b"<3>[ 1234.000567] sd 0:0:0:0: [sda] I/O error\x07 \xff").unwrap();
        assert!(timed);
        assert_eq!((r.level, r.facility, r.ts_usec), (3, 0, 1_234_000_567));
        assert_eq!(r.message, "sd 0:0:0:0: [sda] I/O error\\x07 \\xff");
        let (u, _) = parse_line(b"<12>[    0.100000] from user space").unwrap();
        assert_eq!((u.level, u.facility), (4, 1));
        let (plain, timed) = parse_line(b"<6>no timestamp here").unwrap();
        assert!(!timed);
        assert_eq!(plain.message, "no timestamp here");
        for bad in [&b""[..], b"no prefix", b"<x>[1.000000] bad pri", b"<6", b"<99999999999>[1.0] x"] {
            assert!(parse_line(bad).is_none(), "{bad:?}");
        }
        let (odd, timed) = parse_line(b"<6>[12.5] short micros").unwrap();
        assert!(!timed, "a malformed time is message text");
        assert_eq!(odd.message, "[12.5] short micros");
    }

    fn buf(lines: &[(u64, &str)]) -> Vec<u8> {
        lines
            .iter()
            .map(|(ts, m)| format!("<6>[{:5}.{:06}] {m}\n", ts / 1_000_000, ts % 1_000_000))
            .collect::<String>()
            .into_bytes()
    }

    fn messages(p: &Poll) -> Vec<&str> {
        p.records.iter().map(|r| r.message.as_str()).collect()
    }

    #[test]
    fn each_poll_returns_only_records_newer_than_the_last_including_ones_with_the_same_time() {
        let mut f = Follower::at_end(&buf(&[(1, "old a"), (2, "old b")]));
        assert!(f.poll(&buf(&[(1, "old a"), (2, "old b")])).records.is_empty(), "nothing new");
        let p = f.poll(&buf(&[(1, "old a"), (2, "old b"), (2, "same time"), (3, "c")]));
        assert_eq!(messages(&p), ["same time", "c"]);
        assert!(!p.wrapped);
        let seqs: Vec<u64> = p.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs[1], seqs[0] + 1, "sequence numbers are the follower's own, one per record");
        assert!(f.poll(&buf(&[(2, "old b"), (2, "same time"), (3, "c")])).records.is_empty());
    }

    #[test]
    fn a_ring_buffer_that_wrapped_past_the_last_record_is_reported() {
        let mut f = Follower::at_end(&buf(&[(1, "a")]));
        let p = f.poll(&buf(&[(5, "e"), (6, "f")]));
        assert_eq!(messages(&p), ["e", "f"]);
        assert!(p.wrapped, "records between 1 and 5 may be lost");
    }

    #[test]
    fn without_timestamps_the_last_line_seen_marks_the_start() {
        let mut f = Follower::at_end(b"<6>a\n<6>b\n");
        let p = f.poll(b"<6>a\n<6>b\n<6>c\n");
        assert_eq!(messages(&p), ["c"]);
        let p = f.poll(b"<6>x\n<6>y\n");
        assert!(p.wrapped);
        assert_eq!(messages(&p), ["x", "y"]);
    }

    #[test]
    fn lines_that_are_not_records_are_returned_apart_and_any_split_never_panics() {
        let mut f = Follower::default();
        let p = f.poll(b"<6>[1.000000] ok\ngarbage\n");
        assert_eq!(messages(&p), ["ok"]);
        assert_eq!(p.unparsed, [b"garbage".to_vec()]);
        let text = buf(&[(1, "a"), (2, "b\x1b[2J"), (3, "c")]);
        for cut in 0..=text.len() {
            let mut f = Follower::default();
            let _ = f.poll(&text[..cut]);
            let _ = f.poll(&text[cut..]);
            let _ = f.poll(&text);
        }
    }
}
