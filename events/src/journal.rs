//! The systemd journal, read from its files: the hosts that ship no syslog daemon (Debian 12,
//! Fedora, most cloud images) log logins, sudo and account changes only there.
//!
//! The file format is systemd's documented one (`JOURNAL_FILE_FORMAT.md`): a header, then
//! 8-byte-aligned objects, each `type, flags, reserved[6], size`. An entry object lists the
//! offsets of its data objects (`FIELD=value`, possibly XZ, LZ4 or Zstandard compressed);
//! compact files (systemd 252 and later) store those offsets in 32 bits. journald appends
//! objects and moves `tail_object_offset` in the header after each, so objects up to that offset
//! are complete: a reader walks them in file order, which is the entries' order, and resumes
//! where it stopped. No libsystemd, no memory map (a file truncated under a map kills the reader
//! with SIGBUS): positioned reads, each bounded.
//!
//! Host files are hostile input: every offset and size is checked against the file and the
//! limits here before use, a field longer than [`MAX_FIELD`] (after decompression) is cut and
//! its entry marked, an entry with more than [`MAX_ITEMS`] fields is read for its first ones,
//! and a walk stops at the first object that does not make sense (counted, never a panic).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The longest field value kept (after decompression); longer ones are cut.
pub const MAX_FIELD: usize = 64 * 1024;
/// The most fields read of one entry (journald writes at most 1,024 for its own reasons).
pub const MAX_ITEMS: usize = 1024;
/// The most compressed bytes read of one data object.
const MAX_STORED: u64 = 1 << 20;

const SIGNATURE: &[u8; 8] = b"LPKSHHRH";
const INCOMPATIBLE_XZ: u32 = 1;
const INCOMPATIBLE_LZ4: u32 = 1 << 1;
const INCOMPATIBLE_KEYED_HASH: u32 = 1 << 2;
const INCOMPATIBLE_ZSTD: u32 = 1 << 3;
const INCOMPATIBLE_COMPACT: u32 = 1 << 4;
const KNOWN_INCOMPATIBLE: u32 =
    INCOMPATIBLE_XZ | INCOMPATIBLE_LZ4 | INCOMPATIBLE_KEYED_HASH | INCOMPATIBLE_ZSTD | INCOMPATIBLE_COMPACT;

const OBJECT_DATA: u8 = 1;
const OBJECT_ENTRY: u8 = 3;
const OBJECT_TAG: u8 = 7;
const OBJECT_COMPRESSED_XZ: u8 = 1;
const OBJECT_COMPRESSED_LZ4: u8 = 1 << 1;
const OBJECT_COMPRESSED_ZSTD: u8 = 1 << 2;

/// Why a journal file (or part of it) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Not a journal file (wrong signature, header too short).
    #[error("not a journal file: {0}")]
    NotAJournal(&'static str),
    /// A format feature this reader does not know (a newer systemd); nothing of it is read.
    #[error("unsupported journal format (incompatible flags {0:#x})")]
    Unsupported(u32),
    /// An object that does not make sense where the file says it is.
    #[error("corrupt journal at offset {offset}: {what}")]
    Corrupt {
        /// Where.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// Reading failed.
    #[error("reading: {0}")]
    Io(#[from] io::Error),
}

/// Positioned reads: a file, or bytes in memory (tests, fuzzing).
pub trait ReadAt {
    /// Fills `buf` from `offset`; fewer bytes only at the end.
    fn read_at_most(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at_most(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

impl ReadAt for [u8] {
    fn read_at_most(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

fn read_exact(
    r: &(impl ReadAt + ?Sized),
    offset: u64,
    len: usize,
    what: &'static str,
) -> Result<Vec<u8>, JournalError> {
    let mut buf = vec![0u8; len];
    if r.read_at_most(&mut buf, offset)? < len {
        return Err(JournalError::Corrupt { offset, what });
    }
    Ok(buf)
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap_or([0; 4])))
}

/// What the reader needs of a file's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Incompatible flags (compression, compact).
    pub incompatible: u32,
    /// The sequence-number space this file's entries number in (one per journald instance).
    pub seqnum_id: [u8; 16],
    /// Where the objects start.
    pub header_size: u64,
    /// The last complete object.
    pub tail_object_offset: u64,
    /// Entries in the file.
    pub n_entries: u64,
    /// The newest entry's sequence number.
    pub tail_entry_seqnum: u64,
    /// The newest entry's wall-clock time (µs since the epoch).
    pub tail_entry_realtime: u64,
}

impl Header {
    /// Reads and checks the header.
    pub fn read(r: &(impl ReadAt + ?Sized)) -> Result<Self, JournalError> {
        let mut b = [0u8; 208];
        if r.read_at_most(&mut b, 0)? < b.len() {
            return Err(JournalError::NotAJournal("shorter than a journal header"));
        }
        if &b[..8] != SIGNATURE {
            return Err(JournalError::NotAJournal("no journal signature"));
        }
        let incompatible = le32(&b, 12);
        if incompatible & !KNOWN_INCOMPATIBLE != 0 {
            return Err(JournalError::Unsupported(incompatible));
        }
        let mut seqnum_id = [0u8; 16];
        seqnum_id.copy_from_slice(&b[72..88]);
        let header = Self {
            incompatible,
            seqnum_id,
            header_size: le64(&b, 88),
            tail_object_offset: le64(&b, 136),
            n_entries: le64(&b, 152),
            tail_entry_seqnum: le64(&b, 160),
            tail_entry_realtime: le64(&b, 192),
        };
        if header.header_size < 208 || !header.header_size.is_multiple_of(8) {
            return Err(JournalError::Corrupt { offset: 88, what: "header size" });
        }
        Ok(header)
    }

    fn compact(&self) -> bool {
        self.incompatible & INCOMPATIBLE_COMPACT != 0
    }

    /// The sequence-number space as hex (journalctl's cursor `s=`).
    pub fn seqnum_id_hex(&self) -> String {
        self.seqnum_id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One journal entry, with the fields asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Sequence number in its file's sequence-number space.
    pub seqnum: u64,
    /// Wall-clock time, µs since the epoch.
    pub realtime: u64,
    /// Monotonic time of its boot, µs.
    pub monotonic: u64,
    /// The boot it was written in (`_BOOT_ID`).
    pub boot_id: [u8; 16],
    /// The fields kept, by name (a field repeated keeps its first value).
    pub fields: BTreeMap<String, Vec<u8>>,
    /// Some field was longer than [`MAX_FIELD`] and was cut, or could not be decompressed.
    pub cut: bool,
}

impl Entry {
    /// A field as text (bytes that are not UTF-8 escaped reversibly).
    pub fn text(&self, name: &str) -> Option<String> {
        self.fields.get(name).map(|v| super::utf8_escaped(v).into_owned())
    }
}

/// A walk through one file's objects: where the next object to look at is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// The next object's offset (0: from the first object).
    pub next: u64,
    /// The object at `next` was seen already (a start at the end): step over it.
    pub skip: bool,
}

/// What one step of a walk found.
#[derive(Debug, Default)]
pub struct Found {
    /// Entries, in file order.
    pub entries: Vec<Entry>,
    /// Objects that did not make sense (the walk stopped at the first).
    pub corrupt: Option<JournalError>,
    /// Objects walked.
    pub walked: usize,
    /// The walk stopped at `max_entries`.
    pub full: bool,
}

/// Walks at most `budget` objects from `walk`, up to the header's last complete object, and
/// returns the entries found (at most `max_entries`), with only the fields `keep` accepts (by
/// name).
pub fn walk(
    r: &(impl ReadAt + ?Sized),
    header: &Header,
    walk: &mut Walk,
    budget: usize,
    max_entries: usize,
    keep: &dyn Fn(&str) -> bool,
) -> Found {
    let mut found = Found::default();
    if walk.next == 0 {
        walk.next = header.header_size;
    }
    for _ in 0..budget {
        if found.entries.len() >= max_entries {
            found.full = true;
            break;
        }
        let offset = walk.next;
        if offset > header.tail_object_offset || header.tail_object_offset == 0 {
            break;
        }
        let oh = match read_exact(r, offset, 16, "object header beyond the end of the file") {
            Ok(b) => b,
            Err(e) => {
                found.corrupt = Some(e);
                break;
            }
        };
        let (kind, size) = (oh[0], le64(&oh, 8));
        if kind == 0 || !(16..=(1 << 40)).contains(&size) || kind > OBJECT_TAG {
            found.corrupt = Some(JournalError::Corrupt { offset, what: "object with no type or an impossible size" });
            break;
        }
        let Some(next) = offset.checked_add(size.div_ceil(8) * 8) else {
            found.corrupt = Some(JournalError::Corrupt { offset, what: "object size" });
            break;
        };
        if std::mem::take(&mut walk.skip) {
            // The object at a start at the end: seen before, only stepped over.
        } else if kind == OBJECT_ENTRY {
            match entry(r, header, offset, size, keep) {
                Ok(e) => found.entries.push(e),
                Err(e) => {
                    // One bad entry is skipped; its neighbours are still good.
                    found.corrupt.get_or_insert(e);
                }
            }
        }
        walk.next = next;
        found.walked += 1;
    }
    found
}

/// A walk that starts after everything the header says is complete (the tail object is
/// stepped over when the walk reads its size).
pub fn skip_to_end(header: &Header) -> Walk {
    if header.tail_object_offset == 0 {
        return Walk::default();
    }
    Walk { next: header.tail_object_offset, skip: true }
}

fn entry(
    r: &(impl ReadAt + ?Sized),
    header: &Header,
    offset: u64,
    size: u64,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Entry, JournalError> {
    const HEAD: u64 = 64;
    if size < HEAD {
        return Err(JournalError::Corrupt { offset, what: "entry shorter than its header" });
    }
    let item_size: u64 = if header.compact() { 4 } else { 16 };
    let items = ((size - HEAD) / item_size).min(MAX_ITEMS as u64);
    let len = usize::try_from(HEAD + items * item_size).unwrap_or(usize::MAX);
    let b = read_exact(r, offset, len, "entry beyond the end of the file")?;
    let mut e = Entry { seqnum: le64(&b, 16), realtime: le64(&b, 24), monotonic: le64(&b, 32), ..Entry::default() };
    e.boot_id.copy_from_slice(&b[40..56]);
    for i in 0..items as usize {
        let at = 64 + i * item_size as usize;
        let data_offset = if header.compact() { u64::from(le32(&b, at)) } else { le64(&b, at) };
        if data_offset < header.header_size || data_offset > header.tail_object_offset || !data_offset.is_multiple_of(8)
        {
            return Err(JournalError::Corrupt { offset, what: "entry item pointing outside the objects" });
        }
        let (payload, cut) = data(r, header, data_offset)?;
        e.cut |= cut;
        let Some(eq) = payload.iter().position(|&c| c == b'=') else { continue };
        let Ok(name) = std::str::from_utf8(&payload[..eq]) else { continue };
        if keep(name) && !e.fields.contains_key(name) {
            e.fields.insert(name.to_owned(), payload[eq + 1..].to_vec());
        }
    }
    Ok(e)
}

/// A data object's `FIELD=value` payload, decompressed, at most [`MAX_FIELD`] bytes of value
/// (plus the name); `true` when cut or undecodable.
fn data(r: &(impl ReadAt + ?Sized), header: &Header, offset: u64) -> Result<(Vec<u8>, bool), JournalError> {
    let oh = read_exact(r, offset, 16, "data object beyond the end of the file")?;
    if oh[0] != OBJECT_DATA {
        return Err(JournalError::Corrupt { offset, what: "entry item that is not a data object" });
    }
    let (flags, size) = (oh[1], le64(&oh, 8));
    let payload_at: u64 = if header.compact() { 72 } else { 64 };
    if size < payload_at {
        return Err(JournalError::Corrupt { offset, what: "data object shorter than its header" });
    }
    let stored = size - payload_at;
    let limit = (MAX_FIELD + 256) as u64;
    let compressed = flags & (OBJECT_COMPRESSED_XZ | OBJECT_COMPRESSED_LZ4 | OBJECT_COMPRESSED_ZSTD) != 0;
    let read_len = stored.min(if compressed { MAX_STORED } else { limit });
    let raw = read_exact(r, offset + payload_at, read_len as usize, "data beyond the end of the file")?;
    let truncated_read = read_len < stored;
    let (mut payload, cut) = if flags & OBJECT_COMPRESSED_ZSTD != 0 {
        decompress_zstd(&raw, limit)
    } else if flags & OBJECT_COMPRESSED_XZ != 0 {
        decompress_xz(&raw, limit)
    } else if flags & OBJECT_COMPRESSED_LZ4 != 0 {
        decompress_lz4(&raw, limit)
    } else {
        (raw, truncated_read)
    };
    let cut = cut || (compressed && truncated_read) || payload.len() as u64 > limit;
    payload.truncate(limit as usize);
    Ok((payload, cut))
}

/// Decompressed bytes, at most `limit`, and whether there was more or it failed.
fn read_bounded(mut reader: impl Read, limit: u64) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    match (&mut reader).take(limit + 1).read_to_end(&mut out) {
        Ok(_) => {
            let more = out.len() as u64 > limit;
            (out, more)
        }
        Err(_) => (out, true),
    }
}

fn decompress_zstd(raw: &[u8], limit: u64) -> (Vec<u8>, bool) {
    match ruzstd::decoding::StreamingDecoder::new_with_max_window_size(raw, 2 << 20) {
        Ok(d) => read_bounded(d, limit),
        Err(_) => (Vec::new(), true),
    }
}

fn decompress_xz(raw: &[u8], limit: u64) -> (Vec<u8>, bool) {
    /// A writer that takes `limit` bytes and then refuses.
    struct Capped(Vec<u8>, usize);
    impl io::Write for Capped {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = self.1.saturating_sub(self.0.len());
            if room == 0 {
                return Err(io::Error::other("over the limit"));
            }
            let n = buf.len().min(room);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut out = Capped(Vec::new(), limit as usize + 1);
    let ok = lzma_rs::xz_decompress(&mut &raw[..], &mut out).is_ok();
    let more = out.0.len() as u64 > limit;
    (out.0, more || !ok)
}

/// journald's LZ4 blob: the uncompressed size (le64), then one LZ4 block.
fn decompress_lz4(raw: &[u8], limit: u64) -> (Vec<u8>, bool) {
    let size = le64(raw, 0);
    if raw.len() < 8 || size > limit {
        return (Vec::new(), true);
    }
    match lz4_flex::block::decompress(&raw[8..], size as usize) {
        Ok(v) if v.len() as u64 == size => (v, false),
        _ => (Vec::new(), true),
    }
}

/// The kernel's own records in the journal (`_TRANSPORT=kernel`: journald copies the ring
/// buffer into it), as kernel log records; `None` for any other entry, or one of another boot
/// than `boot_id` (its time since boot would be read against the wrong boot).
pub fn kernel_record(e: &Entry, boot_id: Option<[u8; 16]>) -> Option<super::kmsg::Record> {
    if e.fields.get("_TRANSPORT").is_none_or(|t| t != b"kernel") || boot_id.is_some_and(|b| b != e.boot_id) {
        return None;
    }
    let level = e.text("PRIORITY").and_then(|p| p.parse::<u8>().ok()).unwrap_or(6).min(7);
    let ts_usec = e.text("_SOURCE_MONOTONIC_TIMESTAMP").and_then(|t| t.parse().ok()).unwrap_or(e.monotonic);
    let mut dict = Vec::new();
    for (field, key) in [("_KERNEL_SUBSYSTEM", "SUBSYSTEM"), ("_KERNEL_DEVICE", "DEVICE")] {
        if let Some(v) = e.text(field) {
            dict.push((key.to_owned(), v));
        }
    }
    Some(super::kmsg::Record {
        level,
        // journald copies what processes wrote to /dev/kmsg too, with their facility (never
        // 0: the kernel gives a process's record LOG_USER when it names the kernel's).
        facility: e.text("SYSLOG_FACILITY").and_then(|f| f.parse().ok()).unwrap_or(0),
        // The journal's sequence numbers count every entry, not the kernel's records: a gap
        // between two kernel entries is other programs' entries, not a loss.
        seq: 0,
        ts_usec,
        message: e.text("MESSAGE")?,
        dict,
        continued: false,
        continuation: false,
    })
}

/// The journal fields [`kernel_record`] reads.
pub fn kernel_field(name: &str) -> bool {
    matches!(
        name,
        "MESSAGE"
            | "PRIORITY"
            | "SYSLOG_FACILITY"
            | "_TRANSPORT"
            | "_SOURCE_MONOTONIC_TIMESTAMP"
            | "_KERNEL_SUBSYSTEM"
            | "_KERNEL_DEVICE"
    )
}

/// This boot's id in hex (the form `/proc/sys/kernel/random/boot_id` has without its
/// dashes), or empty when it cannot be read: what the agent's saved state is keyed by.
pub fn boot_id_hex(proc: &Path) -> String {
    current_boot_id(proc).map(|b| b.iter().map(|x| format!("{x:02x}")).collect()).unwrap_or_default()
}

/// This boot's id, from `/proc/sys/kernel/random/boot_id` (one per kernel, the same in every
/// namespace) under `proc`.
pub fn current_boot_id(proc: &Path) -> Option<[u8; 16]> {
    let text = std::fs::read_to_string(proc.join("sys/kernel/random/boot_id")).ok()?;
    let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// Where a reader of a journal directory is, saved between runs: per sequence-number space
/// the last entry handed out, and the newest time (for a space not seen before).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    /// Sequence-number space (hex) → last sequence number handed out.
    pub seqnums: BTreeMap<String, u64>,
    /// The newest entry's wall-clock time handed out (µs since the epoch).
    pub realtime: u64,
}

impl Cursor {
    /// Whether an entry of space `id` is newer than what was handed out.
    fn is_new(&self, id: &str, e: &Entry) -> bool {
        match self.seqnums.get(id) {
            Some(last) => e.seqnum > *last,
            None => e.realtime > self.realtime,
        }
    }

    fn advance(&mut self, id: &str, e: &Entry) {
        let last = self.seqnums.entry(id.to_owned()).or_insert(0);
        *last = (*last).max(e.seqnum);
        self.realtime = self.realtime.max(e.realtime);
        // Spaces of journald instances long gone are not kept for ever.
        while self.seqnums.len() > 16 {
            let Some(k) = self.seqnums.keys().next().cloned() else { break };
            self.seqnums.remove(&k);
        }
    }
}

/// Follows every journal file under some directories (`/var/log/journal`, `/run/log/journal`,
/// and their machine-id subdirectories): new files (rotation) are read from their start,
/// files that went away (vacuum) forgotten, and after a restart reading resumes after the
/// saved [`Cursor`].
#[derive(Debug)]
pub struct Follower {
    dirs: Vec<PathBuf>,
    files: HashMap<(u64, u64), (PathBuf, Walk)>,
    cursor: Cursor,
    first_poll: bool,
    start_at_end: bool,
    /// Most objects walked per file per poll, so one poll of a huge backlog stays short.
    pub budget: usize,
    /// Most entries one poll returns, so one poll of a huge backlog (a restart after a busy
    /// hour) holds little memory: the rest comes in the next polls.
    pub max_entries: usize,
}

/// What one poll of the journal found.
#[derive(Debug, Default)]
pub struct Poll {
    /// New entries, oldest first.
    pub entries: Vec<Entry>,
    /// Files found, and problems with them (path and what).
    pub files: usize,
    /// Files or objects that could not be read.
    pub errors: Vec<(PathBuf, String)>,
    /// Some file has more objects than one poll walks: poll again soon.
    pub more: bool,
}

impl Follower {
    /// A follower of `dirs`; with a saved cursor it resumes after it, else it starts at the
    /// end of what is there now (`start_at_end`) or at the beginning.
    pub fn new(dirs: Vec<PathBuf>, saved: Option<Cursor>, start_at_end: bool) -> Self {
        let start_at_end = start_at_end && saved.is_none();
        Self {
            dirs,
            files: HashMap::new(),
            cursor: saved.unwrap_or_default(),
            first_poll: true,
            start_at_end,
            budget: 200_000,
            max_entries: 1000,
        }
    }

    /// The directories followed.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The cursor to save.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// The journal files under the directories now.
    pub fn list(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for dir in &self.dirs {
            let Ok(top) = std::fs::read_dir(dir) else { continue };
            for entry in top.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    if let Ok(sub) = std::fs::read_dir(&p) {
                        out.extend(sub.flatten().map(|e| e.path()).filter(|p| is_journal(p)));
                    }
                } else if is_journal(&p) {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// Reads what the journal gained since the last poll; `keep` picks fields by name.
    pub fn poll(&mut self, keep: &dyn Fn(&str) -> bool) -> Poll {
        let mut out = Poll::default();
        let mut seen = Vec::new();
        for path in self.list() {
            let Ok(file) = std::fs::File::open(&path) else {
                out.errors.push((path, "cannot be opened".into()));
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            let key = (meta.dev(), meta.ino());
            seen.push(key);
            out.files += 1;
            let header = match Header::read(&file) {
                Ok(h) => h,
                // A file journald has just created may not have its header yet.
                Err(JournalError::NotAJournal(_)) if meta.len() < 4096 => continue,
                Err(e) => {
                    out.errors.push((path, e.to_string()));
                    continue;
                }
            };
            let id = header.seqnum_id_hex();
            let state = self.files.entry(key).or_insert_with(|| {
                let w = if self.first_poll && self.start_at_end { skip_to_end(&header) } else { Walk::default() };
                (path.clone(), w)
            });
            state.0 = path.clone();
            // A file whose newest entry is not newer than the cursor has nothing for us.
            if state.1 == Walk::default() && !self.cursor.is_new(&id, &tail_entry(&header)) {
                state.1 = skip_to_end(&header);
                continue;
            }
            let room = self.max_entries.saturating_sub(out.entries.len());
            if room == 0 {
                out.more = true;
                continue;
            }
            let found = walk(&file, &header, &mut state.1, self.budget, room, keep);
            out.more |= found.walked == self.budget || found.full;
            if let Some(e) = found.corrupt {
                out.errors.push((path.clone(), e.to_string()));
            }
            for e in found.entries {
                if self.cursor.is_new(&id, &e) {
                    self.cursor.advance(&id, &e);
                    out.entries.push(e);
                }
            }
        }
        self.files.retain(|k, _| seen.contains(k));
        self.first_poll = false;
        out.entries.sort_by_key(|e| e.realtime);
        out
    }
}

fn tail_entry(h: &Header) -> Entry {
    Entry { seqnum: h.tail_entry_seqnum, realtime: h.tail_entry_realtime, ..Entry::default() }
}

/// `system.journal`, `user-1000@….journal`; not `….journal~` (a file journald set aside as
/// corrupt, read by nothing).
fn is_journal(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "journal") && p.is_file()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes journal files for tests: the format as journald writes it, with the data
    /// objects compressed as asked (journald itself compresses with one algorithm, chosen
    /// when it is built).
    pub(crate) struct Builder {
        pub compact: bool,
        pub bytes: Vec<u8>,
        seqnum: u64,
        tail: u64,
        n_entries: u64,
        tail_realtime: u64,
    }

    /// How a test data object is stored.
    #[derive(Clone, Copy)]
    pub(crate) enum Store {
        Plain,
        Xz,
        Lz4,
        Zstd,
    }

    impl Builder {
        pub(crate) fn new(compact: bool) -> Self {
            let mut bytes = vec![0u8; 272];
            bytes[..8].copy_from_slice(SIGNATURE);
            let flags =
                INCOMPATIBLE_XZ | INCOMPATIBLE_LZ4 | INCOMPATIBLE_ZSTD | if compact { INCOMPATIBLE_COMPACT } else { 0 };
            bytes[12..16].copy_from_slice(&flags.to_le_bytes());
            bytes[72..88].copy_from_slice(&[0xab; 16]);
            bytes[88..96].copy_from_slice(&272u64.to_le_bytes());
            Self { compact, bytes, seqnum: 0, tail: 0, n_entries: 0, tail_realtime: 0 }
        }

        fn object(&mut self, kind: u8, flags: u8, body: &[u8]) -> u64 {
            let offset = self.bytes.len() as u64;
            let size = 16 + body.len() as u64;
            self.bytes.extend_from_slice(&[kind, flags, 0, 0, 0, 0, 0, 0]);
            self.bytes.extend_from_slice(&size.to_le_bytes());
            self.bytes.extend_from_slice(body);
            while !self.bytes.len().is_multiple_of(8) {
                self.bytes.push(0);
            }
            self.tail = offset;
            offset
        }

        fn data(&mut self, payload: &[u8], store: Store) -> u64 {
            let (flags, stored) = match store {
                Store::Plain => (0, payload.to_vec()),
                Store::Xz => {
                    let mut out = Vec::new();
                    lzma_rs::xz_compress(&mut &payload[..], &mut out).unwrap();
                    (OBJECT_COMPRESSED_XZ, out)
                }
                Store::Lz4 => {
                    let mut out = (payload.len() as u64).to_le_bytes().to_vec();
                    out.extend(lz4_flex::block::compress(payload));
                    (OBJECT_COMPRESSED_LZ4, out)
                }
                Store::Zstd => (
                    OBJECT_COMPRESSED_ZSTD,
                    ruzstd::encoding::compress_to_vec(payload, ruzstd::encoding::CompressionLevel::Fastest),
                ),
            };
            let mut body = vec![0u8; if self.compact { 56 } else { 48 }];
            body.extend(stored);
            self.object(OBJECT_DATA, flags, &body)
        }

        /// Appends an entry of `fields` at `realtime` µs; returns its sequence number.
        pub(crate) fn entry(&mut self, realtime: u64, fields: &[(&str, &[u8])], store: Store) -> u64 {
            let offsets: Vec<u64> = fields
                .iter()
                .map(|(k, v)| {
                    let mut p = k.as_bytes().to_vec();
                    p.push(b'=');
                    p.extend_from_slice(v);
                    self.data(&p, store)
                })
                .collect();
            self.seqnum += 1;
            let mut body = Vec::new();
            body.extend(self.seqnum.to_le_bytes());
            body.extend(realtime.to_le_bytes());
            body.extend(5u64.to_le_bytes());
            body.extend([0u8; 16]);
            body.extend(0u64.to_le_bytes());
            for o in offsets {
                if self.compact {
                    body.extend((o as u32).to_le_bytes());
                } else {
                    body.extend(o.to_le_bytes());
                    body.extend(0u64.to_le_bytes());
                }
            }
            self.object(OBJECT_ENTRY, 0, &body);
            self.n_entries += 1;
            self.tail_realtime = realtime;
            self.sync_header();
            self.seqnum
        }

        fn sync_header(&mut self) {
            let b = &mut self.bytes;
            b[136..144].copy_from_slice(&self.tail.to_le_bytes());
            b[152..160].copy_from_slice(&self.n_entries.to_le_bytes());
            b[160..168].copy_from_slice(&self.seqnum.to_le_bytes());
            b[192..200].copy_from_slice(&self.tail_realtime.to_le_bytes());
        }
    }

    fn all(bytes: &[u8]) -> Found {
        let h = Header::read(bytes).unwrap();
        walk(bytes, &h, &mut Walk::default(), usize::MAX, usize::MAX, &|_| true)
    }

    #[test]
    fn every_compression_and_both_layouts_read_back() {
        for compact in [false, true] {
            for store in [Store::Plain, Store::Xz, Store::Lz4, Store::Zstd] {
                let mut b = Builder::new(compact);
                let long = "x".repeat(2000);
                b.entry(1_000, &[("MESSAGE", b"hello"), ("SYSLOG_IDENTIFIER", b"sshd")], store);
                b.entry(2_000, &[("MESSAGE", long.as_bytes()), ("_PID", b"42")], store);
                let found = all(&b.bytes);
                assert!(found.corrupt.is_none(), "{:?}", found.corrupt);
                assert_eq!(found.entries.len(), 2);
                assert_eq!(found.entries[0].fields["MESSAGE"], b"hello");
                assert_eq!(found.entries[0].fields["SYSLOG_IDENTIFIER"], b"sshd");
                assert_eq!(found.entries[1].fields["MESSAGE"], long.as_bytes());
                assert_eq!((found.entries[1].seqnum, found.entries[1].realtime), (2, 2_000));
                assert!(!found.entries[1].cut);
            }
        }
    }

    #[test]
    fn a_field_longer_than_the_limit_is_cut_and_marked_whatever_its_compression() {
        for store in [Store::Plain, Store::Xz, Store::Lz4, Store::Zstd] {
            let mut b = Builder::new(true);
            let huge = vec![b'a'; MAX_FIELD * 3];
            b.entry(1, &[("MESSAGE", &huge)], store);
            let found = all(&b.bytes);
            let e = &found.entries[0];
            assert!(e.cut);
            assert!(e.fields.get("MESSAGE").is_none_or(|m| m.len() <= MAX_FIELD + 256));
        }
    }

    #[test]
    fn a_walk_resumes_where_it_stopped_and_sees_only_complete_objects() {
        let mut b = Builder::new(true);
        b.entry(1, &[("MESSAGE", b"one")], Store::Plain);
        let h = Header::read(&b.bytes[..]).unwrap();
        let mut w = Walk::default();
        assert_eq!(walk(&b.bytes[..], &h, &mut w, 100, 100, &|_| true).entries.len(), 1);
        b.entry(2, &[("MESSAGE", b"two")], Store::Plain);
        // A writer mid-object: bytes past the tail the header names are not read.
        let mut torn = b.bytes.clone();
        torn.extend_from_slice(&[OBJECT_ENTRY, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0]);
        let h = Header::read(&torn[..]).unwrap();
        let found = walk(&torn[..], &h, &mut w, 100, 100, &|_| true);
        assert_eq!(found.entries.len(), 1);
        assert_eq!(found.entries[0].fields["MESSAGE"], b"two");
        assert!(found.corrupt.is_none());
        assert!(walk(&torn[..], &h, &mut w, 100, 100, &|_| true).entries.is_empty(), "nothing twice");
    }

    #[test]
    fn the_kernels_entries_become_kernel_records_of_this_boot_only() {
        let mut b = Builder::new(true);
        b.entry(
            1,
            &[
                ("_TRANSPORT", b"kernel"),
                ("PRIORITY", b"3"),
                ("MESSAGE", b"Buffer I/O error on dev sdb1, logical block 0, async page read"),
                ("_SOURCE_MONOTONIC_TIMESTAMP", b"5000000"),
                ("_KERNEL_SUBSYSTEM", b"block"),
                ("_KERNEL_DEVICE", b"b8:17"),
            ],
            Store::Plain,
        );
        b.entry(2, &[("_TRANSPORT", b"syslog"), ("MESSAGE", b"sshd noise")], Store::Plain);
        b.entry(
            3,
            &[
                ("_TRANSPORT", b"kernel"),
                ("PRIORITY", b"3"),
                ("SYSLOG_FACILITY", b"1"),
                ("MESSAGE", b"Buffer I/O error on dev sdb1, logical block 0, async page read"),
            ],
            Store::Plain,
        );
        let found = all(&b.bytes);
        let r = kernel_record(&found.entries[0], Some([0; 16])).unwrap();
        assert_eq!((r.level, r.ts_usec), (3, 5_000_000));
        assert_eq!(r.dict, [("SUBSYSTEM".into(), "block".into()), ("DEVICE".into(), "b8:17".into())]);
        let e = crate::kmsg::Classifier::default().classify(&r, jiff::Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(e.kind, crate::EventType::IoError);
        assert!(e.details.get("userspace").is_none(), "the kernel's own");
        let forged = kernel_record(&found.entries[2], None).unwrap();
        let e = crate::kmsg::Classifier::default().classify(&forged, jiff::Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(e.details["userspace"], true, "a process wrote it to /dev/kmsg: its facility says so");
        assert!(kernel_record(&found.entries[1], None).is_none(), "not the kernel's");
        assert!(kernel_record(&found.entries[0], Some([1; 16])).is_none(), "another boot");
        let proc = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(proc.path().join("sys/kernel/random")).unwrap();
        std::fs::write(proc.path().join("sys/kernel/random/boot_id"), "ad205da4-7ee3-4308-895d-cf69d56ccc82\n")
            .unwrap();
        assert_eq!(current_boot_id(proc.path()).unwrap()[..2], [0xad, 0x20]);
    }

    #[test]
    fn headers_that_are_not_a_journal_or_of_a_newer_format_are_refused() {
        assert!(matches!(Header::read(&b"short"[..]), Err(JournalError::NotAJournal(_))));
        assert!(matches!(Header::read(&[0u8; 300][..]), Err(JournalError::NotAJournal(_))));
        let mut b = Builder::new(false).bytes;
        b[12..16].copy_from_slice(&(1u32 << 9).to_le_bytes());
        assert!(matches!(Header::read(&b[..]), Err(JournalError::Unsupported(_))));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Any bytes written over any part of a real file, and any truncation: the reader
        /// never panics, never loops, never holds more than its limits.
        #[test]
        fn hostile_bytes_never_panic(
            compact in proptest::prelude::any::<bool>(),
            patches in proptest::collection::vec((0usize..4096, proptest::collection::vec(proptest::prelude::any::<u8>(), 1..24)), 0..12),
            cut in 0usize..4096,
        ) {
            let mut b = Builder::new(compact);
            b.entry(1, &[("MESSAGE", b"Accepted publickey for root"), ("SYSLOG_IDENTIFIER", b"sshd")], Store::Zstd);
            b.entry(2, &[("MESSAGE", b"second"), ("_PID", b"7")], Store::Plain);
            b.entry(3, &[("MESSAGE", &[b'z'; 900][..])], Store::Lz4);
            let mut bytes = b.bytes.clone();
            for (at, p) in &patches {
                for (i, v) in p.iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) { *slot = *v; }
                }
            }
            bytes.truncate(bytes.len().saturating_sub(cut % (bytes.len() + 1)));
            if let Ok(h) = Header::read(&bytes[..]) {
                let mut w = Walk::default();
                let found = walk(&bytes[..], &h, &mut w, 10_000, 10_000, &|_| true);
                for e in &found.entries {
                    proptest::prop_assert!(e.fields.len() <= MAX_ITEMS);
                    proptest::prop_assert!(e.fields.values().all(|v| v.len() <= MAX_FIELD + 256));
                }
            }
        }
    }
}
