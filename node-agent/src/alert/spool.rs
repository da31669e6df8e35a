//! The durable spool: every notification is a file until its receiver accepted it.
//!
//! ```text
//! <dir>/pending/00000000000000000042.json   waiting or being retried, in sequence order
//! <dir>/dead/00000000000000000017.json      gave up: rejected for good, or retried too long
//! ```
//!
//! An entry is written to a temporary file and renamed into place (with `fsync` of the file
//! and the directory when `fsync` is on), so a crash or `kill -9` at any moment leaves either
//! the whole entry or none; a delivered entry is removed only after the receiver's 2xx, so a
//! crash between the two sends it again (at-least-once, with the same fingerprints). The
//! pending spool is bounded in bytes: a full spool refuses new entries and says so (counted,
//! never silent). The dead-letter spool is bounded too; beyond it the oldest dead entries go.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::route::Notification;
use crate::events::tail::write_atomic_sync;

/// One spooled notification and its delivery history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Position in the spool (order of arrival).
    pub seq: u64,
    /// The notification.
    pub notification: Notification,
    /// Attempts so far.
    pub attempts: u32,
    /// Requests of the notification already accepted (a Slack notification of three alerts is
    /// three requests; a retry resumes after the accepted ones).
    pub requests_done: usize,
    /// When the first attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<jiff::Timestamp>,
    /// Not before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<jiff::Timestamp>,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_at: Option<jiff::Timestamp>,
}

/// Why the spool refused something.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The pending spool holds its maximum.
    #[error("the spool is full ({bytes} bytes pending, limit {limit})")]
    Full {
        /// Pending bytes.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Sizes and durability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of pending entries.
    pub max_bytes: u64,
    /// Most bytes of dead entries (oldest go first).
    pub max_dead_bytes: u64,
    /// fsync each write (survives a host crash, not only a process crash).
    pub fsync: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bytes: 64 << 20, max_dead_bytes: 64 << 20, fsync: true }
    }
}

#[derive(Debug, Default)]
struct Index {
    /// seq → (receiver, bytes) of pending entries.
    pending: BTreeMap<u64, (String, u64)>,
    /// Pending seqs by receiver, oldest first.
    by_receiver: BTreeMap<String, BTreeSet<u64>>,
    bytes: u64,
    next_seq: u64,
    dead: BTreeMap<u64, u64>,
    dead_bytes: u64,
    /// Dead entries removed for the bound.
    dead_evicted: u64,
}

impl Index {
    fn insert(&mut self, seq: u64, receiver: &str, bytes: u64) {
        if let Some((r, b)) = self.pending.insert(seq, (receiver.to_owned(), bytes)) {
            self.bytes -= b;
            if let Some(s) = self.by_receiver.get_mut(&r) {
                s.remove(&seq);
            }
        }
        self.bytes += bytes;
        self.by_receiver.entry(receiver.to_owned()).or_default().insert(seq);
        self.next_seq = self.next_seq.max(seq + 1);
    }

    fn remove(&mut self, seq: u64) {
        if let Some((r, b)) = self.pending.remove(&seq) {
            self.bytes -= b;
            if let Some(s) = self.by_receiver.get_mut(&r) {
                s.remove(&seq);
                if s.is_empty() {
                    self.by_receiver.remove(&r);
                }
            }
        }
    }
}

/// The spool of one agent.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limits: Limits,
    index: Mutex<Index>,
    wake: Condvar,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_owned(), source }
}

fn file_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

fn seq_of(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_suffix(".json")?.parse().ok()
}

impl Spool {
    /// Opens (creating) the spool under `dir` and indexes what a previous run left.
    /// Unreadable entries are moved aside to `corrupt/`, never deleted.
    pub fn open(dir: &Path, limits: Limits) -> Result<Self, SpoolError> {
        for sub in ["pending", "dead"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
            // Temporary files of writes a crash interrupted: never renamed, never acknowledged.
            for e in std::fs::read_dir(&d).map_err(io_err(&d))?.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let spool = Self { dir: dir.to_owned(), limits, index: Mutex::new(Index::default()), wake: Condvar::new() };
        spool.rescan()?;
        let dead = spool.dir.join("dead");
        let mut idx = spool.lock();
        for (seq, path) in list(&dead)? {
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            idx.dead.insert(seq, bytes);
            idx.dead_bytes += bytes;
            idx.next_seq = idx.next_seq.max(seq + 1);
        }
        drop(idx);
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn pending_path(&self, seq: u64) -> PathBuf {
        self.dir.join("pending").join(file_name(seq))
    }

    fn dead_path(&self, seq: u64) -> PathBuf {
        self.dir.join("dead").join(file_name(seq))
    }

    /// Indexes pending entries not yet known (put back by `dlq replay` from another process).
    /// Returns how many it found.
    pub fn rescan(&self) -> Result<usize, SpoolError> {
        let pending = self.dir.join("pending");
        let mut found = 0;
        for (seq, path) in list(&pending)? {
            if self.lock().pending.contains_key(&seq) {
                continue;
            }
            match read_entry(&path) {
                Ok(e) => {
                    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    let mut idx = self.lock();
                    idx.insert(seq, &e.notification.receiver, bytes);
                    // Replayed from the dead letters by another process: no longer dead.
                    if let Some(b) = idx.dead.remove(&seq) {
                        idx.dead_bytes -= b;
                    }
                    found += 1;
                }
                Err(_) => {
                    let aside = self.dir.join("corrupt");
                    let _ = std::fs::create_dir_all(&aside);
                    let _ = std::fs::rename(&path, aside.join(file_name(seq)));
                }
            }
        }
        if found > 0 {
            self.wake.notify_all();
        }
        Ok(found)
    }

    /// Spools a notification; returns its sequence number.
    pub fn enqueue(&self, notification: Notification) -> Result<u64, SpoolError> {
        let mut idx = self.lock();
        let seq = idx.next_seq;
        let entry = Entry {
            seq,
            notification,
            attempts: 0,
            requests_done: 0,
            failing_since: None,
            next_attempt: None,
            last_error: None,
            dead_at: None,
        };
        let bytes = serde_json::to_vec(&entry).unwrap_or_default();
        if idx.bytes + bytes.len() as u64 > self.limits.max_bytes {
            return Err(SpoolError::Full { bytes: idx.bytes, limit: self.limits.max_bytes });
        }
        let path = self.pending_path(seq);
        write_atomic_sync(&path, &bytes, self.limits.fsync).map_err(io_err(&path))?;
        idx.insert(seq, &entry.notification.receiver, bytes.len() as u64);
        drop(idx);
        self.wake.notify_all();
        Ok(seq)
    }

    /// The sequence number of the oldest pending entry of `receiver` (no file read).
    pub fn head_seq(&self, receiver: &str) -> Option<u64> {
        self.lock().by_receiver.get(receiver)?.first().copied()
    }

    /// The oldest pending entry of `receiver`.
    pub fn head(&self, receiver: &str) -> Option<Entry> {
        loop {
            let seq = *self.lock().by_receiver.get(receiver)?.first()?;
            match read_entry(&self.pending_path(seq)) {
                Ok(e) => return Some(e),
                // Gone (replayed away, or removed by hand): forget it and look again.
                Err(_) => self.lock().remove(seq),
            }
        }
    }

    /// Waits up to `timeout` for a new entry (or a rescan that found one).
    pub fn wait(&self, timeout: Duration) {
        let idx = self.lock();
        let _ = self.wake.wait_timeout(idx, timeout);
    }

    /// Wakes every waiter (shutdown).
    pub fn wake_all(&self) {
        self.wake.notify_all();
    }

    /// The receiver accepted it: removes it.
    pub fn ack(&self, seq: u64) -> Result<(), SpoolError> {
        let path = self.pending_path(seq);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        self.lock().remove(seq);
        Ok(())
    }

    /// Records a failed attempt (attempts, next attempt, error), durably.
    pub fn update(&self, entry: &Entry) -> Result<(), SpoolError> {
        let path = self.pending_path(entry.seq);
        let bytes = serde_json::to_vec(entry).unwrap_or_default();
        write_atomic_sync(&path, &bytes, self.limits.fsync).map_err(io_err(&path))?;
        self.lock().insert(entry.seq, &entry.notification.receiver, bytes.len() as u64);
        Ok(())
    }

    /// Moves an entry to the dead-letter spool with `why`.
    pub fn dead_letter(&self, mut entry: Entry, why: &str, now: jiff::Timestamp) -> Result<(), SpoolError> {
        entry.last_error = Some(why.to_owned());
        entry.dead_at = Some(now);
        let path = self.dead_path(entry.seq);
        let bytes = serde_json::to_vec(&entry).unwrap_or_default();
        write_atomic_sync(&path, &bytes, self.limits.fsync).map_err(io_err(&path))?;
        self.ack(entry.seq)?;
        let mut idx = self.lock();
        idx.dead.insert(entry.seq, bytes.len() as u64);
        idx.dead_bytes += bytes.len() as u64;
        while idx.dead_bytes > self.limits.max_dead_bytes {
            let Some((old, b)) = idx.dead.pop_first() else { break };
            idx.dead_bytes -= b;
            idx.dead_evicted += 1;
            let _ = std::fs::remove_file(self.dead_path(old));
        }
        Ok(())
    }

    /// Pending entries and their bytes.
    pub fn pending(&self) -> (usize, u64) {
        let idx = self.lock();
        (idx.pending.len(), idx.bytes)
    }

    /// Dead entries, and how many the bound removed.
    pub fn dead(&self) -> (usize, u64) {
        let idx = self.lock();
        (idx.dead.len(), idx.dead_evicted)
    }

    /// Receivers with pending entries.
    pub fn receivers(&self) -> Vec<String> {
        self.lock().by_receiver.keys().cloned().collect()
    }
}

fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter_map(|p| seq_of(&p).map(|s| (s, p)))
        .collect();
    out.sort();
    Ok(out)
}

fn read_entry(path: &Path) -> io::Result<Entry> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The dead-letter spool under `dir`, for `vigil-agent dlq` (works whether or not an agent
/// is running on the same spool).
pub fn dead_entries(dir: &Path) -> Result<Vec<Entry>, SpoolError> {
    let dead = dir.join("dead");
    if !dead.exists() {
        return Ok(Vec::new());
    }
    list(&dead)?.into_iter().map(|(_, p)| read_entry(&p).map_err(io_err(&p))).collect()
}

/// Puts dead entries (all, or those in `seqs`) back in the pending spool with their attempts
/// reset; a running agent picks them up at its next rescan, a stopped one when it starts.
/// Returns the sequence numbers put back.
pub fn replay(dir: &Path, seqs: Option<&[u64]>, fsync: bool) -> Result<Vec<u64>, SpoolError> {
    let mut done = Vec::new();
    for mut e in dead_entries(dir)? {
        if seqs.is_some_and(|s| !s.contains(&e.seq)) {
            continue;
        }
        let from = dir.join("dead").join(file_name(e.seq));
        let to = dir.join("pending").join(file_name(e.seq));
        e.attempts = 0;
        e.failing_since = None;
        e.next_attempt = None;
        e.dead_at = None;
        e.last_error = None;
        let bytes = serde_json::to_vec(&e).unwrap_or_default();
        write_atomic_sync(&to, &bytes, fsync).map_err(io_err(&to))?;
        std::fs::remove_file(&from).map_err(io_err(&from))?;
        done.push(e.seq);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Alert;
    use crate::events::Severity;

    fn note(receiver: &str, name: &str) -> Notification {
        Notification {
            receiver: receiver.into(),
            route: "all".into(),
            group: BTreeMap::new(),
            alerts: vec![Alert::new(name, "n", Severity::Warning, jiff::Timestamp::UNIX_EPOCH)],
            suppressed: 0,
            created: jiff::Timestamp::UNIX_EPOCH,
            note: None,
            active_until: None,
        }
    }

    #[test]
    fn entries_survive_a_reopen_in_order_per_receiver() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), Limits::default()).unwrap();
        for i in 0..3 {
            s.enqueue(note("p/a", &format!("A{i}"))).unwrap();
            s.enqueue(note("p/b", &format!("B{i}"))).unwrap();
        }
        let head = s.head("p/a").unwrap();
        s.ack(head.seq).unwrap();
        drop(s);
        let s = Spool::open(dir.path(), Limits::default()).unwrap();
        assert_eq!(s.pending().0, 5);
        assert_eq!(s.head("p/a").unwrap().notification.alerts[0].name(), "A1");
        assert_eq!(s.head("p/b").unwrap().notification.alerts[0].name(), "B0");
        let next = s.enqueue(note("p/a", "A3")).unwrap();
        assert_eq!(next, 6, "sequence numbers continue after a restart");
        assert_eq!(s.receivers(), ["p/a", "p/b"]);
    }

    #[test]
    fn a_full_spool_refuses_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), Limits { max_bytes: 1000, ..Limits::default() }).unwrap();
        let mut n = 0;
        let err = loop {
            match s.enqueue(note("p/a", "A")) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
            assert!(n < 100);
        };
        assert!(n >= 1);
        assert!(err.to_string().starts_with("the spool is full"), "{err}");
        assert!(s.pending().1 <= 1000);
    }

    #[test]
    fn dead_letters_list_replay_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), Limits { max_dead_bytes: 2000, ..Limits::default() }).unwrap();
        for i in 0..10 {
            s.enqueue(note("p/a", &format!("A{i}"))).unwrap();
        }
        let now = jiff::Timestamp::UNIX_EPOCH;
        for _ in 0..10 {
            let e = s.head("p/a").unwrap();
            s.dead_letter(e, "HTTP 400; not retried", now).unwrap();
        }
        let (dead, evicted) = s.dead();
        assert!(evicted > 0 && dead + evicted as usize == 10, "{dead} + {evicted}");
        let listed = dead_entries(dir.path()).unwrap();
        assert_eq!(listed.len(), dead);
        assert_eq!(listed[0].last_error.as_deref(), Some("HTTP 400; not retried"));
        let last = listed.last().unwrap().seq;
        assert_eq!(replay(dir.path(), Some(&[last]), true).unwrap(), [last]);
        assert_eq!(s.rescan().unwrap(), 1, "a running spool picks up replayed entries");
        assert_eq!(s.dead().0, dead - 1, "and counts them no longer dead");
        let back = s.head("p/a").unwrap();
        assert_eq!((back.seq, back.attempts, back.last_error), (last, 0, None));
        assert_eq!(dead_entries(dir.path()).unwrap().len(), dead - 1);
    }

    #[test]
    fn unreadable_entries_are_moved_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pending")).unwrap();
        std::fs::write(dir.path().join("pending").join(file_name(3)), b"{not json").unwrap();
        std::fs::write(dir.path().join("pending").join(".00000000000000000004.json.tmp"), b"half").unwrap();
        let s = Spool::open(dir.path(), Limits::default()).unwrap();
        assert_eq!(s.pending().0, 0);
        assert!(dir.path().join("corrupt").join(file_name(3)).exists());
        assert!(!dir.path().join("pending").join(".00000000000000000004.json.tmp").exists());
    }

    use proptest::strategy::Strategy as _;

    #[derive(Clone, Debug)]
    enum Op {
        Enqueue(usize),
        Ack(usize),
        Dead(usize),
        Reopen,
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..proptest::prelude::ProptestConfig::default() })]

        /// Against a model (one queue per receiver): every receiver's head is its oldest
        /// entry not yet delivered or dead, across reopens, and the counts agree.
        #[test]
        fn the_spool_keeps_each_receivers_order_across_reopens(
            ops in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => (0usize..3).prop_map(Op::Enqueue),
                    2 => (0usize..3).prop_map(Op::Ack),
                    1 => (0usize..3).prop_map(Op::Dead),
                    1 => proptest::strategy::Just(Op::Reopen),
                ],
                1..40,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let limits = Limits { fsync: false, ..Limits::default() };
            let mut spool = Spool::open(dir.path(), limits.clone()).unwrap();
            let mut model: Vec<std::collections::VecDeque<u64>> = vec![Default::default(); 3];
            let mut dead = 0;
            let name = |r: usize| format!("p/r{r}");
            for op in ops {
                match op {
                    Op::Enqueue(r) => model[r].push_back(spool.enqueue(note(&name(r), "A")).unwrap()),
                    Op::Ack(r) => {
                        if let Some(e) = spool.head(&name(r)) {
                            spool.ack(e.seq).unwrap();
                            model[r].pop_front();
                        }
                    }
                    Op::Dead(r) => {
                        if let Some(e) = spool.head(&name(r)) {
                            spool.dead_letter(e, "why", jiff::Timestamp::UNIX_EPOCH).unwrap();
                            model[r].pop_front();
                            dead += 1;
                        }
                    }
                    Op::Reopen => spool = Spool::open(dir.path(), limits.clone()).unwrap(),
                }
                for (r, q) in model.iter().enumerate() {
                    proptest::prop_assert_eq!(spool.head(&name(r)).map(|e| e.seq), q.front().copied());
                }
                proptest::prop_assert_eq!(spool.pending().0, model.iter().map(std::collections::VecDeque::len).sum::<usize>());
                proptest::prop_assert_eq!(spool.dead().0, dead);
            }
        }
    }
}
