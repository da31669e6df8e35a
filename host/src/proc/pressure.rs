//! Pressure stall information from `/proc/pressure/{cpu,memory,io}` (Linux 4.20+).
//!
//! Parsed here rather than with procfs's types because those require the `full` line, which
//! `cpu` gains only in Linux 5.13; a missing directory (old kernel, PSI disabled) is no data.

use serde::Serialize;

use super::{HostRoot, ReadErrors, read_parsed};

/// Share of time some (or all) runnable tasks stalled, in percent, over 10 s, 60 s and 300 s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stall {
    /// Over the last 10 seconds.
    pub avg10: f64,
    /// Over the last 60 seconds.
    pub avg60: f64,
    /// Over the last 300 seconds.
    pub avg300: f64,
    /// Total stall time, microseconds since boot.
    pub total_micros: u64,
}

/// One resource's pressure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Resource {
    /// Some tasks stalled.
    pub some: Stall,
    /// All non-idle tasks stalled at once (absent for cpu before Linux 5.13).
    pub full: Option<Stall>,
}

/// Pressure of the three resources; each `None` when the kernel does not report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Pressure {
    /// CPU.
    pub cpu: Option<Resource>,
    /// Memory.
    pub memory: Option<Resource>,
    /// Block I/O.
    pub io: Option<Resource>,
}

/// Reads the three pressure files.
pub fn read(root: &HostRoot, errors: &mut ReadErrors) -> Pressure {
    let mut one = |name: &str| read_parsed(&root.proc_file(&format!("pressure/{name}")), "pressure", errors, parse);
    Pressure { cpu: one("cpu"), memory: one("memory"), io: one("io") }
}

/// Parses one pressure file; `None` when the `some` line is missing or malformed.
pub fn parse(text: &str) -> Option<Resource> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let mut stall = Stall::default();
        let mut seen = 0;
        for w in words {
            let (k, v) = w.split_once('=')?;
            match k {
                "avg10" => stall.avg10 = finite(v)?,
                "avg60" => stall.avg60 = finite(v)?,
                "avg300" => stall.avg300 = finite(v)?,
                "total" => stall.total_micros = v.parse().ok()?,
                _ => continue,
            }
            seen += 1;
        }
        if seen < 4 {
            return None;
        }
        *slot = Some(stall);
    }
    Some(Resource { some: some?, full })
}

fn finite(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().filter(|f| f.is_finite() && *f >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_some_and_full() {
        let r = parse(
            "some avg10=0.14 avg60=3.41 avg300=3.64 total=29224748\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        assert_eq!(r.some.avg60, 3.41);
        assert_eq!(r.some.total_micros, 29_224_748);
        assert_eq!(r.full.unwrap().avg10, 0.0);
    }

    #[test]
    fn cpu_before_5_13_has_only_some() {
        let r = parse("some avg10=1.00 avg60=2.00 avg300=3.00 total=4\n").unwrap();
        assert_eq!(r.full, None);
        assert_eq!(r.some.avg300, 3.0);
    }

    #[test]
    fn truncated_or_garbled_files_are_refused() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("some avg10=0.14 avg60="), None);
        assert_eq!(parse("some avg10=NaN avg60=1 avg300=1 total=1"), None);
        assert_eq!(parse("full avg10=0 avg60=0 avg300=0 total=0"), None);
    }
}
