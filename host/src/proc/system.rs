//! Load average and uptime.

use procfs::{FromRead, LoadAverage, Uptime};
use serde::Serialize;

use super::{ErrorKind, HostRoot, ReadErrors};

/// Load averages over 1, 5 and 15 minutes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Load {
    /// 1 minute.
    pub one: f64,
    /// 5 minutes.
    pub five: f64,
    /// 15 minutes.
    pub fifteen: f64,
}

/// Reads `/proc/loadavg`.
pub fn load(root: &HostRoot, errors: &mut ReadErrors) -> Option<Load> {
    match LoadAverage::from_file(root.proc_file("loadavg")) {
        // The kernel prints two decimals; widening the parsed f32 would show 1.2799999713897705.
        Ok(l) => Some(Load { one: two_decimals(l.one), five: two_decimals(l.five), fifteen: two_decimals(l.fifteen) }),
        Err(e) => {
            errors.count("load", ErrorKind::of_procfs(&e));
            None
        }
    }
}

/// Reads `/proc/uptime`: seconds since boot.
pub fn uptime(root: &HostRoot, errors: &mut ReadErrors) -> Option<f64> {
    match Uptime::from_file(root.proc_file("uptime")) {
        Ok(u) if u.uptime.is_finite() && u.uptime >= 0.0 => Some(u.uptime),
        Ok(_) => {
            errors.count("uptime", ErrorKind::Parse);
            None
        }
        Err(e) => {
            errors.count("uptime", ErrorKind::of_procfs(&e));
            None
        }
    }
}

fn two_decimals(v: f32) -> f64 {
    (f64::from(v) * 100.0).round() / 100.0
}
