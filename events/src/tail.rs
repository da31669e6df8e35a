//! Following an append-only file across rotation, truncation and agent restarts, without
//! losing or repeating a line (or a fixed-size record, for wtmp and btmp).
//!
//! Each poll reads the open file to its end first (what the writer appended before a rename
//! belongs to the old file), then looks at the path: another inode there means the file was
//! rotated (the new one is read from its start); the same inode but shorter means it was
//! truncated in place (`copytruncate`). The position of the last complete unit is saved in
//! a small state file; after a restart the tail resumes there, in the rotated file
//! (`auth.log.1`, `secure-20261122`) when rotation happened while the agent was down.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a unit of the file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Lines ending in `\n`. A line longer than `max` bytes is handed out once, its first
    /// `max` bytes marked cut, and the rest of it up to its newline is skipped: never read as
    /// lines of their own (a writer could otherwise forge a line after 16 KiB of padding).
    Lines {
        /// The longest line kept whole.
        max: usize,
    },
    /// Fixed-size records (384 bytes for utmp).
    Records(usize),
}

/// Where a tail is, saved between runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub inode: u64,
    /// Bytes of complete units consumed.
    pub offset: u64,
    /// `offset` is inside a line longer than the longest kept, whose head was handed out: the
    /// rest of it, up to its newline, is skipped after a restart too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_long_line: bool,
}

/// Where to start when there is no saved position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// From the beginning (scan, tests).
    Beginning,
    /// From the current end (a first start of the daemon: history is not news).
    End,
}

/// A followed file.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    unit: Unit,
    file: Option<(File, Position)>,
    pending: Vec<u8>,
    /// Most bytes read per poll, so one poll of a huge backlog stays short.
    pub max_bytes_per_poll: u64,
}

impl Tail {
    /// A tail of `path`, resuming at `saved` if given (looking for the rotated file when the
    /// path has another inode now), else at `start`. A missing file is not an error: the tail
    /// opens it when it appears.
    pub fn open(path: &Path, unit: Unit, saved: Option<Position>, start: StartAt) -> Self {
        let mut tail =
            Self { path: path.to_owned(), unit, file: None, pending: Vec::new(), max_bytes_per_poll: 8 << 20 };
        if let Some(saved) = saved {
            if let Some(f) = open_if(path, saved).or_else(|| find_rotated(path, saved)) {
                tail.file = Some(f);
                return tail;
            }
            // The saved file is gone: everything at the path now is new.
            tail.file = open_at(path, 0);
            return tail;
        }
        tail.file = match start {
            StartAt::Beginning => open_at(path, 0),
            StartAt::End => {
                let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                let aligned = match unit {
                    Unit::Records(size) => len - len % size as u64,
                    Unit::Lines { .. } => len,
                };
                open_at(path, aligned)
            }
        };
        tail
    }

    /// The position of the last complete unit handed out (to save).
    pub fn position(&self) -> Option<Position> {
        self.file.as_ref().map(|(_, p)| *p)
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was appended since the last poll and hands each complete unit to `out`,
    /// with `true` when it is the cut head of an overlong line.
    pub fn poll(&mut self, out: &mut dyn FnMut(&[u8], bool)) -> io::Result<()> {
        let mut budget = self.max_bytes_per_poll;
        self.drain(&mut budget, out)?;
        // Has the path moved on to another file, or been truncated?
        let Ok(meta) = std::fs::metadata(&self.path) else { return Ok(()) };
        match &self.file {
            Some((_, pos)) if pos.dev == meta.dev() && pos.inode == meta.ino() => {
                if meta.len() < pos.offset {
                    // Truncated in place: what is there now was written after the truncation.
                    self.pending.clear();
                    self.file = open_at(&self.path, 0);
                    self.drain(&mut budget, out)?;
                }
            }
            _ => {
                if budget == 0 {
                    return Ok(()); // the old file is not finished; switch next time
                }
                // Rotated (or first seen): a partial line left in the old file is complete now.
                let skipping = self.file.as_ref().is_some_and(|(_, p)| p.in_long_line);
                if !self.pending.is_empty() && !skipping && matches!(self.unit, Unit::Lines { .. }) {
                    out(&std::mem::take(&mut self.pending), false);
                }
                self.pending.clear();
                self.file = open_at(&self.path, 0);
                self.drain(&mut budget, out)?;
            }
        }
        Ok(())
    }

    /// Reads the open file to its end (or the budget); returns bytes read.
    fn drain(&mut self, budget: &mut u64, out: &mut dyn FnMut(&[u8], bool)) -> io::Result<u64> {
        let Some((file, pos)) = self.file.as_mut() else { return Ok(0) };
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        while *budget > 0 {
            let want = buf.len().min(usize::try_from(*budget).unwrap_or(usize::MAX));
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            total += n as u64;
            *budget -= n as u64;
            self.pending.extend_from_slice(&buf[..n]);
            let consumed = split_units(&self.pending, self.unit, &mut pos.in_long_line, out);
            pos.offset += consumed as u64;
            self.pending.drain(..consumed);
        }
        Ok(total)
    }
}

/// Hands complete units of `data` to `out`; returns bytes consumed. `skipping` says the data
/// starts inside an overlong line already handed out (and says so after, for the next read).
fn split_units(data: &[u8], unit: Unit, skipping: &mut bool, out: &mut dyn FnMut(&[u8], bool)) -> usize {
    let mut start = 0;
    match unit {
        Unit::Lines { max } => {
            let max = max.max(1);
            loop {
                let rest = &data[start..];
                let newline = rest.iter().position(|&b| b == b'\n');
                if *skipping {
                    match newline {
                        Some(end) => {
                            start += end + 1;
                            *skipping = false;
                            continue;
                        }
                        None => {
                            start = data.len();
                            break;
                        }
                    }
                }
                match newline {
                    Some(end) if end <= max => {
                        out(&rest[..end], false);
                        start += end + 1;
                    }
                    Some(end) => {
                        out(&rest[..max], true);
                        start += end + 1;
                    }
                    None if rest.len() > max => {
                        out(&rest[..max], true);
                        start = data.len();
                        *skipping = true;
                        break;
                    }
                    None => break,
                }
            }
        }
        Unit::Records(size) => {
            let size = size.max(1);
            while data.len() - start >= size {
                out(&data[start..start + size], false);
                start += size;
            }
        }
    }
    start
}

fn open_at(path: &Path, offset: u64) -> Option<(File, Position)> {
    let mut file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    let offset = offset.min(meta.len());
    file.seek(SeekFrom::Start(offset)).ok()?;
    Some((file, Position { dev: meta.dev(), inode: meta.ino(), offset, in_long_line: false }))
}

/// Opens `path` at `saved.offset` if it is still the same file and not shorter.
fn open_if(path: &Path, saved: Position) -> Option<(File, Position)> {
    let meta = std::fs::metadata(path).ok()?;
    let (file, pos) = (meta.dev() == saved.dev && meta.ino() == saved.inode && meta.len() >= saved.offset)
        .then(|| open_at(path, saved.offset))
        .flatten()?;
    Some((file, Position { in_long_line: saved.in_long_line, ..pos }))
}

/// The rotated copy of `path` that is the saved inode (`auth.log.1`, `secure-20261122`);
/// compressed copies are never the same inode, so they are never picked.
fn find_rotated(path: &Path, saved: Position) -> Option<(File, Position)> {
    let dir = path.parent()?;
    let base = path.file_name()?.to_str()?;
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name();
        let name = name.to_str()?;
        if name == base || !name.starts_with(base) {
            return None;
        }
        open_if(&entry.path(), saved)
    })
}

/// Saved positions of several tails, in one JSON file under the state directory, written
/// atomically (temporary file, fsync, rename) so a crash leaves the old or the new, never half.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Positions(pub std::collections::BTreeMap<String, Position>);

impl Positions {
    /// Reads `file`; missing or unreadable is empty (the tails start at the end).
    pub fn load(file: &Path) -> Self {
        std::fs::read(file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Writes `file` atomically.
    pub fn save(&self, file: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        write_atomic(file, &bytes)
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, fsynced, then
/// renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_sync(path, bytes, true)
}

/// [`write_atomic`], with the fsyncs of the file and its directory only when `sync`: the
/// rename alone survives a crash of the process, the fsyncs make it survive one of the host.
pub fn write_atomic_sync(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // The writer's own temporary file: two agents of a handover may write the same state at
    // once, and each rename then puts one whole file in place.
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if sync { File::open(dir).and_then(|d| d.sync_all()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn lines(tail: &mut Tail) -> Vec<String> {
        let mut out = Vec::new();
        tail.poll(&mut |l, cut| out.push(String::from_utf8_lossy(l).into_owned() + if cut { " [cut]" } else { "" }))
            .unwrap();
        out
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    const LINES: Unit = Unit::Lines { max: 1024 };

    #[test]
    fn follows_appends_and_holds_a_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.log");
        append(&p, "old\n");
        let mut t = Tail::open(&p, LINES, None, StartAt::End);
        assert!(lines(&mut t).is_empty(), "history before the start is not news");
        append(&p, "one\ntw");
        assert_eq!(lines(&mut t), ["one"]);
        append(&p, "o\n");
        assert_eq!(lines(&mut t), ["two"]);
    }

    #[test]
    fn rotation_by_rename_reads_the_old_tail_then_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.log");
        append(&p, "a\n");
        let mut t = Tail::open(&p, LINES, None, StartAt::Beginning);
        assert_eq!(lines(&mut t), ["a"]);
        append(&p, "b\nc-partial");
        std::fs::rename(&p, dir.path().join("auth.log.1")).unwrap();
        append(&p, "d\n");
        assert_eq!(lines(&mut t), ["b", "c-partial", "d"]);
        append(&p, "e\n");
        assert_eq!(lines(&mut t), ["e"]);
    }

    #[test]
    fn copytruncate_restarts_at_the_beginning() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secure");
        append(&p, "a long first line\n");
        let mut t = Tail::open(&p, LINES, None, StartAt::Beginning);
        assert_eq!(lines(&mut t).len(), 1);
        std::fs::OpenOptions::new().write(true).truncate(true).open(&p).unwrap();
        append(&p, "x\n");
        assert_eq!(lines(&mut t), ["x"]);
    }

    #[test]
    fn a_restart_resumes_in_the_rotated_file_without_loss_or_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secure");
        append(&p, "1\n2\n");
        let mut t = Tail::open(&p, LINES, None, StartAt::Beginning);
        assert_eq!(lines(&mut t), ["1", "2"]);
        let saved = t.position().unwrap();
        drop(t);
        // While the agent is down: more lines, a rotation, lines in the new file.
        append(&p, "3\n");
        std::fs::rename(&p, dir.path().join("secure-20261122")).unwrap();
        append(&p, "4\n");
        let mut t = Tail::open(&p, LINES, Some(saved), StartAt::End);
        assert_eq!(lines(&mut t), ["3", "4"]);
        // Saved positions survive a round trip through the state file.
        let state = dir.path().join("state/positions.json");
        let mut all = Positions::default();
        all.0.insert("secure".into(), t.position().unwrap());
        all.save(&state).unwrap();
        assert_eq!(Positions::load(&state).0["secure"], t.position().unwrap());
    }

    #[test]
    fn records_are_whole_and_long_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wtmp");
        std::fs::write(&p, [7u8; 10]).unwrap();
        let mut t = Tail::open(&p, Unit::Records(4), None, StartAt::Beginning);
        let mut n = 0;
        t.poll(&mut |r, _| {
            assert_eq!(r.len(), 4);
            n += 1;
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(t.position().unwrap().offset, 8, "the partial record waits");
        let q = dir.path().join("log");
        std::fs::write(&q, "x".repeat(10) + "\n").unwrap();
        let mut t = Tail::open(&q, Unit::Lines { max: 4 }, None, StartAt::Beginning);
        assert_eq!(lines(&mut t), ["xxxx [cut]"], "one cut head, the rest skipped");
    }

    #[test]
    fn text_after_an_overlong_line_is_never_read_as_a_line_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("positions.json");
        let q = dir.path().join("auth.log");
        let forged = "sshd[1]: Accepted publickey for root from 6.6.6.6";
        // The padding arrives in pieces, the forged text after a restart.
        std::fs::write(&q, "a".repeat(10)).unwrap();
        let mut t = Tail::open(&q, Unit::Lines { max: 8 }, None, StartAt::Beginning);
        assert_eq!(lines(&mut t), ["aaaaaaaa [cut]"]);
        append(&q, &"b".repeat(5));
        assert!(lines(&mut t).is_empty());
        let mut all = Positions::default();
        all.0.insert("auth".into(), t.position().unwrap());
        all.save(&state).unwrap();
        append(&q, forged);
        let saved = Positions::load(&state).0["auth"];
        assert!(saved.in_long_line);
        let mut t = Tail::open(&q, Unit::Lines { max: 8 }, Some(saved), StartAt::Beginning);
        assert!(lines(&mut t).is_empty(), "still inside the long line");
        append(&q, "\nnext\n");
        assert_eq!(lines(&mut t), ["next"]);
        // A long line ending within one read: head cut, rest skipped, the next line whole.
        let r = dir.path().join("other.log");
        std::fs::write(&r, format!("{}{forged}\nok\n", "c".repeat(20))).unwrap();
        let mut t = Tail::open(&r, Unit::Lines { max: 8 }, None, StartAt::Beginning);
        assert_eq!(lines(&mut t), ["cccccccc [cut]", "ok"]);
    }

    #[test]
    fn a_missing_file_is_picked_up_when_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.log");
        let mut t = Tail::open(&p, LINES, None, StartAt::End);
        assert!(lines(&mut t).is_empty());
        append(&p, "first\n");
        assert_eq!(lines(&mut t), ["first"]);
    }

    /// What `split_units` hands out when `data` arrives in pieces cut at `cuts`.
    fn split_in_pieces(data: &[u8], cuts: &[usize], max: usize) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let (mut pending, mut skipping, mut at) = (Vec::new(), false, 0);
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        bounds.push(data.len());
        bounds.sort_unstable();
        for b in bounds {
            pending.extend_from_slice(&data[at..b]);
            at = b;
            let n =
                split_units(&pending, Unit::Lines { max }, &mut skipping, &mut |u, cut| out.push((u.to_vec(), cut)));
            pending.drain(..n);
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn lines_are_the_same_however_the_reads_split_them(
            lines in proptest::collection::vec((0usize..40, proptest::prelude::any::<u8>()), 0..12),
            cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..8),
        ) {
            let max = 16;
            let mut data = Vec::new();
            let mut expected = Vec::new();
            for (len, b) in &lines {
                let b = if *b == b'\n' { b'x' } else { *b };
                let line = vec![b; *len];
                expected.push(if line.len() > max { (line[..max].to_vec(), true) } else { (line.clone(), false) });
                data.extend_from_slice(&line);
                data.push(b'\n');
            }
            proptest::prop_assert_eq!(split_in_pieces(&data, &cuts, max), expected.clone());
            // Every single-byte split too.
            let every: Vec<usize> = (0..data.len()).collect();
            proptest::prop_assert_eq!(split_in_pieces(&data, &every, max), expected);
        }
    }
}
