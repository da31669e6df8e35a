//! File integrity: a baseline of the watched trees (type, mode, owner, size, times, inode and
//! the SHA-256 of content), kept under the state directory, compared at start (changes made
//! while the agent was down), on every inotify event (live changes) and by a periodic rescan
//! (anything inotify could not tell: an overflowed queue, a watch limit).
//!
//! Paths are host paths (`/etc/passwd`); the agent reads them under the host root. Content is
//! hashed again only when size, mtime, ctime or inode changed, so a restart over an unchanged
//! /usr/bin reads metadata only. Paths marked metadata-only (logs) are never hashed: they
//! report creation, deletion, mode and owner changes and truncation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Event, EventType, Severity};
use vigil_host::host::HostRoot;

pub use vigil_agent_config::WatchPath;

/// What the baseline knows of one path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// `f` file, `d` directory, `l` symlink, `o` other.
    pub kind: char,
    /// Mode bits (permissions, setuid, setgid, sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size, bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Inode.
    pub inode: u64,
    /// SHA-256 of the content (files under content paths, up to the size limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Entry {
    fn same_content_stamp(&self, other: &Entry) -> bool {
        self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ctime_ns == other.ctime_ns
            && self.inode == other.inode
            && self.kind == other.kind
    }
}

/// The SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the entry of `fs_path` (`None` when it does not exist), reusing `previous`'s hash when
/// the content stamp is unchanged.
pub fn stat_entry(
    fs_path: &Path,
    content: bool,
    previous: Option<&Entry>,
    max_hash_bytes: u64,
) -> io::Result<Option<Entry>> {
    let meta = match std::fs::symlink_metadata(fs_path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        'f'
    } else if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else {
        'o'
    };
    let mut entry = Entry {
        kind,
        mode: meta.permissions().mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.len(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        inode: meta.ino(),
        sha256: None,
        target: None,
    };
    if kind == 'l' {
        entry.target = std::fs::read_link(fs_path).ok().map(|t| t.to_string_lossy().into_owned());
    }
    if kind == 'f' && content && entry.size <= max_hash_bytes {
        entry.sha256 = match previous {
            Some(p) if p.same_content_stamp(&entry) && p.sha256.is_some() => p.sha256.clone(),
            _ => match sha256_file(fs_path) {
                Ok(h) => Some(h),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            },
        };
    }
    Ok(Some(entry))
}

/// The events between two states of one path. Pure.
pub fn compare(
    path: &str,
    old: Option<&Entry>,
    new: Option<&Entry>,
    content: bool,
    time: jiff::Timestamp,
) -> Vec<Event> {
    let base = |kind, text: String| Event::new(kind, time, text).with("path", path);
    let quiet = |e: Event| if content { e } else { e.severity(Severity::Info) };
    let mut out = Vec::new();
    match (old, new) {
        (None, None) => {}
        (None, Some(n)) => out.push(quiet(
            base(EventType::FileCreated, format!("{path} created"))
                .with("fileType", kind_name(n.kind))
                .with("mode", format!("{:04o}", n.mode))
                .with("uid", n.uid)
                .with("sha256", n.sha256.clone()),
        )),
        (Some(o), None) => out.push(quiet(
            base(EventType::FileDeleted, format!("{path} deleted"))
                .with("fileType", kind_name(o.kind))
                .with("oldSha256", o.sha256.clone()),
        )),
        (Some(o), Some(n)) => {
            if o.kind != n.kind || o.sha256 != n.sha256 && n.sha256.is_some() || o.target != n.target {
                out.push(
                    base(EventType::FileModified, format!("{path} modified"))
                        .with("fileType", kind_name(n.kind))
                        .with("oldSha256", o.sha256.clone())
                        .with("newSha256", n.sha256.clone())
                        .with("oldSize", o.size)
                        .with("newSize", n.size)
                        .with("oldTarget", o.target.clone())
                        .with("newTarget", n.target.clone()),
                );
            } else if !content && n.kind == 'f' && n.size < o.size {
                let replaced = n.inode != o.inode;
                out.push(
                    base(EventType::FileTruncated, format!("{path} shrank from {} to {} bytes", o.size, n.size))
                        .with("oldSize", o.size)
                        .with("newSize", n.size)
                        .with("replaced", replaced)
                        // A new, shorter file under the same name is how rotation looks.
                        .severity(if replaced { Severity::Info } else { Severity::Warning }),
                );
            }
            if o.mode != n.mode {
                let gained_suid = n.mode & 0o6000 & !o.mode != 0;
                let e = base(EventType::FilePermissions, format!("{path} mode {:04o} → {:04o}", o.mode, n.mode))
                    .with("oldMode", format!("{:04o}", o.mode))
                    .with("newMode", format!("{:04o}", n.mode));
                out.push(if gained_suid { e.with("setuid", true).severity(Severity::Critical) } else { quiet(e) });
            }
            if o.uid != n.uid || o.gid != n.gid {
                out.push(quiet(
                    base(EventType::FileOwner, format!("{path} owner {}:{} → {}:{}", o.uid, o.gid, n.uid, n.gid))
                        .with("oldUid", o.uid)
                        .with("newUid", n.uid)
                        .with("oldGid", o.gid)
                        .with("newGid", n.gid),
                ));
            }
        }
    }
    out
}

fn kind_name(k: char) -> &'static str {
    match k {
        'f' => "file",
        'd' => "directory",
        'l' => "symlink",
        _ => "other",
    }
}

/// Settings of the file integrity source.
#[derive(Clone, Debug)]
pub struct FimSettings {
    /// Watched trees.
    pub paths: Vec<WatchPath>,
    /// Host paths left out (globs).
    pub exclude: globset::GlobSet,
    /// Most paths in the baseline; beyond it the walk stops (counted).
    pub max_files: usize,
    /// Larger files are not hashed (their metadata is still compared).
    pub max_hash_bytes: u64,
    /// A path reports at most once per this; changes in between fold into one event.
    pub per_path_interval: Duration,
}

/// The baseline with the settings it was built under.
#[derive(Debug)]
pub struct Fim {
    root: HostRoot,
    settings: FimSettings,
    /// Host path → entry.
    pub entries: BTreeMap<String, Entry>,
    /// The baseline changed since it was saved.
    pub dirty: bool,
    /// Paths not walked because the baseline was full.
    pub overflowed: u64,
    last_event: HashMap<String, Instant>,
}

/// The on-disk form of the baseline.
#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    paths: Vec<WatchPath>,
    entries: BTreeMap<String, Entry>,
}

impl Fim {
    /// An empty baseline.
    pub fn new(root: HostRoot, settings: FimSettings) -> Self {
        Self { root, settings, entries: BTreeMap::new(), dirty: false, overflowed: 0, last_event: HashMap::new() }
    }

    /// Loads a saved baseline; `false` when there is none (or it was built for other paths,
    /// in which case comparing against it would report every difference in the settings).
    pub fn load(&mut self, file: &Path) -> bool {
        let Ok(bytes) = std::fs::read(file) else { return false };
        let Ok(saved) = serde_json::from_slice::<Saved>(&bytes) else { return false };
        if saved.version != 1 || saved.paths != self.settings.paths {
            return false;
        }
        self.entries = saved.entries;
        true
    }

    /// Saves the baseline atomically.
    pub fn save(&mut self, file: &Path) -> io::Result<()> {
        let saved =
            Saved { version: 1, paths: self.settings.paths.clone(), entries: std::mem::take(&mut self.entries) };
        let result = serde_json::to_vec(&saved).map_err(io::Error::other);
        self.entries = saved.entries;
        super::tail::write_atomic(file, &result?)?;
        self.dirty = false;
        Ok(())
    }

    /// The watch path a host path falls under, if any.
    pub fn watch_of(&self, host_path: &str) -> Option<&WatchPath> {
        self.settings
            .paths
            .iter()
            .filter(|w| {
                host_path == w.path
                    || host_path.strip_prefix(w.path.trim_end_matches('/')).is_some_and(|r| r.starts_with('/'))
            })
            .max_by_key(|w| w.path.len())
    }

    fn excluded(&self, host_path: &str) -> bool {
        self.settings.exclude.is_match(host_path)
    }

    /// Walks every watched tree and compares with the baseline: the events of what changed,
    /// and the baseline updated. With `report`, differences are events (a restart, a
    /// rescan); without, this only builds the baseline (the first start).
    pub fn rescan(&mut self, time: jiff::Timestamp, report: bool) -> Vec<Event> {
        let mut seen = HashSet::new();
        let mut events = Vec::new();
        let mut stack: Vec<String> = self.settings.paths.iter().map(|w| w.path.clone()).collect();
        while let Some(path) = stack.pop() {
            if self.excluded(&path) || !seen.insert(path.clone()) {
                continue;
            }
            if seen.len() > self.settings.max_files {
                self.overflowed += 1;
                continue;
            }
            let entry = self.check(&path, time, report, &mut events, true);
            if entry.is_some_and(|k| k == 'd')
                && let Ok(dir) = std::fs::read_dir(self.root.host_path(&path))
            {
                for child in dir.flatten() {
                    stack.push(format!("{}/{}", path.trim_end_matches('/'), child.file_name().to_string_lossy()));
                }
            }
        }
        // Gone while nobody looked.
        let missing: Vec<String> = self.entries.keys().filter(|p| !seen.contains(*p)).cloned().collect();
        for path in missing {
            if self.watch_of(&path).is_none() || self.excluded(&path) {
                self.entries.remove(&path);
                self.dirty = true;
                continue;
            }
            self.check(&path, time, report, &mut events, true);
        }
        events
    }

    /// Compares one host path with the baseline; returns its kind now. `force` ignores the
    /// per-path interval (rescans).
    fn check(
        &mut self,
        path: &str,
        time: jiff::Timestamp,
        report: bool,
        events: &mut Vec<Event>,
        force: bool,
    ) -> Option<char> {
        let content = self.watch_of(path).is_none_or(|w| w.content);
        let old = self.entries.get(path);
        let new = stat_entry(&self.root.host_path(path), content, old, self.settings.max_hash_bytes).ok()?;
        let kind = new.as_ref().map(|e| e.kind);
        if old == new.as_ref() {
            return kind;
        }
        if report {
            let found = compare(path, old, new.as_ref(), content, time);
            if !found.is_empty() && !force {
                self.last_event.insert(path.to_owned(), Instant::now());
            }
            events.extend(found);
        }
        match new {
            Some(e) => self.entries.insert(path.to_owned(), e),
            None => self.entries.remove(path),
        };
        self.dirty = true;
        kind
    }

    /// Checks paths inotify named. Returns the events and the paths to look at again later
    /// (changed within their per-path interval: their changes fold into one event then), and
    /// new directories (to watch).
    pub fn check_paths(&mut self, paths: impl IntoIterator<Item = String>, time: jiff::Timestamp) -> Checked {
        let now = Instant::now();
        let interval = self.settings.per_path_interval;
        self.last_event.retain(|_, t| now.duration_since(*t) < interval);
        let mut out = Checked::default();
        for path in paths {
            if self.excluded(&path) || self.watch_of(&path).is_none() {
                continue;
            }
            if self.last_event.contains_key(&path) {
                out.later.push(path);
                continue;
            }
            let was_dir = self.entries.get(&path).is_some_and(|e| e.kind == 'd');
            if !self.entries.contains_key(&path) && self.entries.len() >= self.settings.max_files {
                self.overflowed += 1;
                continue;
            }
            let kind = self.check(&path, time, true, &mut out.events, false);
            if kind == Some('d') && !was_dir {
                out.new_dirs.push(path.clone());
                // Files created in it before its watch existed.
                if let Ok(dir) = std::fs::read_dir(self.root.host_path(&path)) {
                    let children: Vec<String> = dir
                        .flatten()
                        .map(|c| format!("{}/{}", path.trim_end_matches('/'), c.file_name().to_string_lossy()))
                        .collect();
                    let sub = self.check_paths(children, time);
                    out.events.extend(sub.events);
                    out.new_dirs.extend(sub.new_dirs);
                    out.later.extend(sub.later);
                }
            }
            if kind.is_none() && was_dir {
                // A removed directory takes its children with it.
                let prefix = format!("{}/", path.trim_end_matches('/'));
                let gone: Vec<String> = self
                    .entries
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| k.clone())
                    .collect();
                for child in gone {
                    self.check(&child, time, true, &mut out.events, true);
                }
            }
        }
        out
    }

    /// Directories in the baseline (to watch).
    pub fn directories(&self) -> Vec<String> {
        self.entries.iter().filter(|(_, e)| e.kind == 'd').map(|(p, _)| p.clone()).collect()
    }

    /// The filesystem path of a host path.
    pub fn fs_path(&self, host_path: &str) -> PathBuf {
        self.root.host_path(host_path)
    }
}

/// The outcome of [`Fim::check_paths`].
#[derive(Debug, Default)]
pub struct Checked {
    /// Events found.
    pub events: Vec<Event>,
    /// Paths to check again after their per-path interval.
    pub later: Vec<String>,
    /// Directories that appeared (to watch).
    pub new_dirs: Vec<String>,
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn settings(paths: &[(&str, bool)]) -> FimSettings {
        let mut ex = globset::GlobSetBuilder::new();
        ex.add(globset::Glob::new("**/*.swp").unwrap());
        FimSettings {
            paths: paths.iter().map(|(p, c)| WatchPath { path: (*p).into(), content: *c }).collect(),
            exclude: ex.build().unwrap(),
            max_files: 10_000,
            max_hash_bytes: 1 << 20,
            per_path_interval: Duration::ZERO,
        }
    }

    fn kinds(events: &[Event]) -> Vec<(EventType, String)> {
        let mut v: Vec<_> = events.iter().map(|e| (e.kind, e.detail_str("path").unwrap_or("").to_owned())).collect();
        v.sort();
        v
    }

    #[test]
    fn changes_while_down_are_found_at_start() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(etc.join("ssh")).unwrap();
        std::fs::write(etc.join("passwd"), "root:x:0:0\n").unwrap();
        std::fs::write(etc.join("ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
        std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        let state = root.path().join("state/fim.json");
        let host = HostRoot::new(root.path());
        let mut fim = Fim::new(host.clone(), settings(&[("/etc", true)]));
        assert!(!fim.load(&state));
        assert!(fim.rescan(jiff::Timestamp::UNIX_EPOCH, false).is_empty());
        assert_eq!(fim.entries.len(), 5, "{:?}", fim.entries.keys());
        fim.save(&state).unwrap();
        let old_hash = fim.entries["/etc/passwd"].sha256.clone().unwrap();

        // The agent is down.
        std::fs::write(etc.join("passwd"), "root:x:0:0\nevil:x:0:0\n").unwrap();
        std::fs::remove_file(etc.join("hosts")).unwrap();
        std::fs::write(etc.join("ssh/authorized_keys"), "ssh-ed25519 AAAA\n").unwrap();
        std::fs::set_permissions(etc.join("ssh/sshd_config"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::write(etc.join("ignored.swp"), "x").unwrap();

        let mut fim = Fim::new(host, settings(&[("/etc", true)]));
        assert!(fim.load(&state));
        let events = fim.rescan(jiff::Timestamp::UNIX_EPOCH, true);
        assert_eq!(
            kinds(&events),
            [
                (EventType::FileCreated, "/etc/ssh/authorized_keys".into()),
                (EventType::FileModified, "/etc/passwd".into()),
                (EventType::FileDeleted, "/etc/hosts".into()),
                (EventType::FilePermissions, "/etc/ssh/sshd_config".into()),
            ]
        );
        let modified = events.iter().find(|e| e.kind == EventType::FileModified).unwrap();
        assert_eq!(modified.detail_str("oldSha256"), Some(old_hash.as_str()));
        assert_eq!(modified.detail_str("newSha256").map(str::len), Some(64));
        let perm = events.iter().find(|e| e.kind == EventType::FilePermissions).unwrap();
        assert_eq!((perm.severity, perm.detail_str("newMode")), (Severity::Critical, Some("4755")));
        assert!(fim.rescan(jiff::Timestamp::UNIX_EPOCH, true).is_empty(), "a second rescan finds nothing new");
    }

    #[test]
    fn a_baseline_for_other_paths_is_not_compared() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        let state = root.path().join("fim.json");
        let mut fim = Fim::new(HostRoot::new(root.path()), settings(&[("/etc", true)]));
        fim.rescan(jiff::Timestamp::UNIX_EPOCH, false);
        fim.save(&state).unwrap();
        let mut other = Fim::new(HostRoot::new(root.path()), settings(&[("/etc", true), ("/usr/bin", true)]));
        assert!(!other.load(&state));
    }

    #[test]
    fn metadata_only_paths_report_truncation_not_content() {
        let root = tempfile::tempdir().unwrap();
        let log = root.path().join("var/log");
        std::fs::create_dir_all(&log).unwrap();
        std::fs::write(log.join("auth.log"), "a".repeat(100)).unwrap();
        let mut fim = Fim::new(HostRoot::new(root.path()), settings(&[("/var/log", false)]));
        fim.rescan(jiff::Timestamp::UNIX_EPOCH, false);
        assert!(fim.entries["/var/log/auth.log"].sha256.is_none());
        std::fs::write(log.join("auth.log"), "a".repeat(200)).unwrap();
        let c = fim.check_paths(["/var/log/auth.log".to_owned()], jiff::Timestamp::UNIX_EPOCH);
        assert!(c.events.is_empty(), "growth of a log is its job: {:?}", c.events);
        std::fs::OpenOptions::new().write(true).open(log.join("auth.log")).unwrap().set_len(10).unwrap();
        let c = fim.check_paths(["/var/log/auth.log".to_owned()], jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(kinds(&c.events), [(EventType::FileTruncated, "/var/log/auth.log".into())]);
        assert_eq!(c.events[0].severity, Severity::Warning);
    }

    #[test]
    fn a_new_directory_is_walked_and_returned_for_watching() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        let mut fim = Fim::new(HostRoot::new(root.path()), settings(&[("/etc", true)]));
        fim.rescan(jiff::Timestamp::UNIX_EPOCH, false);
        std::fs::create_dir_all(root.path().join("etc/cron.d")).unwrap();
        std::fs::write(root.path().join("etc/cron.d/job"), "* * * * * root id\n").unwrap();
        let c = fim.check_paths(["/etc/cron.d".to_owned()], jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(c.new_dirs, ["/etc/cron.d"]);
        assert_eq!(
            kinds(&c.events),
            [(EventType::FileCreated, "/etc/cron.d".into()), (EventType::FileCreated, "/etc/cron.d/job".into())]
        );
        std::fs::remove_dir_all(root.path().join("etc/cron.d")).unwrap();
        let c = fim.check_paths(["/etc/cron.d".to_owned()], jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(c.events.len(), 2, "{:?}", c.events);
        assert!(fim.entries.keys().all(|k| !k.starts_with("/etc/cron.d")));
    }

    #[test]
    fn unchanged_files_are_not_read_again() {
        let root = tempfile::tempdir().unwrap();
        let f = root.path().join("f");
        std::fs::write(&f, "content").unwrap();
        let first = stat_entry(&f, true, None, 1 << 20).unwrap().unwrap();
        // A stored hash that is not the file's is kept when the stamp is unchanged: proof
        // the file was not read.
        let fake = Entry { sha256: Some("feed".into()), ..first.clone() };
        assert_eq!(stat_entry(&f, true, Some(&fake), 1 << 20).unwrap().unwrap().sha256.as_deref(), Some("feed"));
        assert_eq!(first.sha256.as_deref(), Some("ed7002b439e9ac845f22357d822bac1444730fbdb6016d3ec9432297b9ec9f73"));
        assert!(stat_entry(&root.path().join("missing"), true, None, 1).unwrap().is_none());
    }
}
