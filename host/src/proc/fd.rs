//! System-wide file handles from `/proc/sys/fs/file-nr`.

use serde::Serialize;

use super::{HostRoot, ReadErrors, read_parsed};

/// File handles of the whole host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileDescriptors {
    /// Allocated handles.
    pub allocated: u64,
    /// The kernel's limit (`fs.file-max`).
    pub max: u64,
    /// `allocated / max`, 0–1.
    pub utilization: f64,
}

/// Reads `/proc/sys/fs/file-nr`.
pub fn read(root: &HostRoot, errors: &mut ReadErrors) -> Option<FileDescriptors> {
    read_parsed(&root.proc_file("sys/fs/file-nr"), "fd", errors, parse)
}

/// Parses `allocated unused max`.
pub fn parse(text: &str) -> Option<FileDescriptors> {
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    let allocated = it.next()?.ok()?;
    let _unused = it.next()?.ok()?;
    let max = it.next()?.ok()?;
    let utilization = if max == 0 { 0.0 } else { (allocated as f64 / max as f64).min(1.0) };
    Some(FileDescriptors { allocated, max, utilization })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_columns() {
        let f = parse("302\t0\t2465620\n").unwrap();
        assert_eq!((f.allocated, f.max), (302, 2_465_620));
        assert!((f.utilization - 302.0 / 2_465_620.0).abs() < 1e-12);
    }

    #[test]
    fn short_or_garbled_input_is_refused() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("1 2"), None);
        assert_eq!(parse("a b c"), None);
    }
}
