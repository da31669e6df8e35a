//! Readers of the host's /proc and /sys, one per source, each taking the [`HostRoot`].
//!
//! A missing file is "no data" (an old kernel without PSI, a host without swap), not an
//! error. A process vanishing mid-scan or a permission error is normal on a live host: it is
//! counted per reader in [`ReadErrors`], never logged per PID, never fatal, and the snapshot
//! goes out partial with the counters.

pub mod cpu;
pub mod disks;
pub mod fd;
pub mod identity;
pub mod memory;
pub mod net;
pub mod pressure;
pub mod processes;
pub mod system;

use std::collections::BTreeMap;
use std::io;

use serde::Serialize;

pub use crate::host::HostRoot;

/// Why one read failed, in a small fixed set (used as a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The file or process disappeared (ENOENT, ESRCH): a process exited mid-scan.
    Vanished,
    /// The agent may not read it (EACCES, EPERM).
    Permission,
    /// The content did not parse.
    Parse,
    /// Any other I/O error.
    Io,
}

impl ErrorKind {
    /// Classifies an I/O error.
    pub fn of_io(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => Self::Vanished,
            io::ErrorKind::PermissionDenied => Self::Permission,
            _ if e.raw_os_error() == Some(3) => Self::Vanished, // ESRCH
            _ => Self::Io,
        }
    }

    /// Classifies a procfs error.
    pub fn of_procfs(e: &procfs::ProcError) -> Self {
        match e {
            procfs::ProcError::NotFound(_) => Self::Vanished,
            procfs::ProcError::PermissionDenied(_) => Self::Permission,
            procfs::ProcError::Io(e, _) => Self::of_io(e),
            procfs::ProcError::Incomplete(_) | procfs::ProcError::InternalError(_) | procfs::ProcError::Other(_) => {
                Self::Parse
            }
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vanished => "vanished",
            Self::Permission => "permission",
            Self::Parse => "parse",
            Self::Io => "io",
        }
    }
}

/// Failed reads of one scan, by reader and kind. Counted, never logged one by one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ReadErrors(BTreeMap<&'static str, BTreeMap<ErrorKind, u64>>);

impl ReadErrors {
    /// Counts one failure of `reader`.
    pub fn count(&mut self, reader: &'static str, kind: ErrorKind) {
        *self.0.entry(reader).or_default().entry(kind).or_default() += 1;
    }

    /// Failures of `reader` of `kind`.
    pub fn get(&self, reader: &str, kind: ErrorKind) -> u64 {
        self.0.get(reader).and_then(|m| m.get(&kind)).copied().unwrap_or(0)
    }

    /// All failures.
    pub fn total(&self) -> u64 {
        self.0.values().flat_map(|m| m.values()).sum()
    }

    /// Every (reader, kind, count).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, ErrorKind, u64)> + '_ {
        self.0.iter().flat_map(|(r, m)| m.iter().map(move |(k, n)| (*r, *k, *n)))
    }
}

/// Reads a small text file; a missing file is `Ok(None)`, other failures are counted.
pub(crate) fn read_optional(path: &std::path::Path, reader: &'static str, errors: &mut ReadErrors) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            errors.count(reader, ErrorKind::of_io(&e));
            None
        }
    }
}

/// Reads a small text file and parses it; a missing file is `None`, an unreadable one and
/// one that does not parse are counted for `reader`.
pub(crate) fn read_parsed<T>(
    path: &std::path::Path,
    reader: &'static str,
    errors: &mut ReadErrors,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    let text = read_optional(path, reader, errors)?;
    let parsed = parse(&text);
    if parsed.is_none() {
        errors.count(reader, ErrorKind::Parse);
    }
    parsed
}
