//! Human-readable rendering of a snapshot for `scan` and `watch`.

use std::fmt::Write;

use anstyle::{AnsiColor, Style};

use crate::snapshot::Snapshot;

/// How to render.
#[derive(Clone, Copy, Debug, Default)]
pub struct RenderOptions {
    /// Use ANSI colours.
    pub color: bool,
    /// One line instead of the full report.
    pub compact: bool,
}

struct Paint {
    on: bool,
}

impl Paint {
    fn style(&self, s: Style, text: &str) -> String {
        if self.on { format!("{}{text}{}", s.render(), s.render_reset()) } else { text.to_owned() }
    }
    fn bold(&self, text: &str) -> String {
        self.style(Style::new().bold(), text)
    }
    fn dim(&self, text: &str) -> String {
        self.style(Style::new().dimmed(), text)
    }
    /// A ratio as a percentage, green / yellow / red at 75% and 90%.
    fn ratio(&self, r: f64) -> String {
        let color = if r >= 0.90 {
            AnsiColor::Red
        } else if r >= 0.75 {
            AnsiColor::Yellow
        } else {
            AnsiColor::Green
        };
        self.style(Style::new().fg_color(Some(color.into())), &pct(r))
    }
}

/// `0.1234` → `12.3%`.
pub fn pct(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `23.4 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// Seconds as `3d 4h`, `2h 5m`, `4m 10s`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {sec}s")
    }
}

/// Renders a snapshot as text.
pub fn render(s: &Snapshot, opts: RenderOptions) -> String {
    let p = Paint { on: opts.color };
    if opts.compact {
        return compact(s, &p);
    }
    let mut o = String::new();
    let h = &s.host;
    let _ = writeln!(
        o,
        "{} {} · {} · kernel {} · {} · up {}",
        p.bold("vigil"),
        p.bold(h.identity.hostname.as_deref().unwrap_or("?")),
        h.identity.os_image.as_deref().unwrap_or("unknown OS"),
        h.identity.kernel.as_deref().unwrap_or("?"),
        h.identity.architecture,
        h.uptime_seconds.map(duration).unwrap_or_else(|| "?".into())
    );
    let _ = writeln!(o, "{}", p.dim(&format!("{} · scan {:.1} ms", s.time, s.scan_seconds * 1000.0)));
    if let Some(c) = &s.cpu {
        let util = c.utilization.map_or_else(
            || "utilisation needs two samples".to_owned(),
            |u| {
                format!(
                    "{} busy (user {}, system {}, iowait {}, steal {})",
                    p.ratio(u.busy),
                    pct(u.user),
                    pct(u.system),
                    pct(u.iowait),
                    pct(u.steal)
                )
            },
        );
        let load = c.load.map(|l| format!(" · load {:.2} {:.2} {:.2}", l.one, l.five, l.fifteen)).unwrap_or_default();
        let _ = writeln!(o, "{:<11}{util} · {} cores{load}", p.bold("CPU"), c.cores);
    }
    if let Some(m) = &s.memory {
        let _ = writeln!(
            o,
            "{:<11}{} of {} used ({}) · available {} · cache {} · swap {} of {}",
            p.bold("Memory"),
            bytes(m.used_bytes),
            bytes(m.total_bytes),
            p.ratio(m.utilization),
            bytes(m.available_bytes),
            bytes(m.cached_bytes),
            bytes(m.swap_used_bytes),
            bytes(m.swap_total_bytes)
        );
    }
    if let Some(ps) = &s.pressure {
        let f = |r: &Option<crate::proc::pressure::Resource>| {
            r.map_or_else(|| "n/a".into(), |r| format!("{:.2}%", r.some.avg10))
        };
        let _ = writeln!(
            o,
            "{:<11}cpu {} · memory {} · io {} (some, avg10)",
            p.bold("Pressure"),
            f(&ps.cpu),
            f(&ps.memory),
            f(&ps.io)
        );
    }
    if let Some(fs) = &s.filesystems {
        let _ = writeln!(o, "{}", p.bold("Filesystems"));
        for f in fs {
            let inodes = if f.inodes > 0 {
                format!(" · inodes {}", pct(f.inodes_used as f64 / f.inodes as f64))
            } else {
                String::new()
            };
            let _ = writeln!(
                o,
                "  {:<24} {:<8} {} of {} ({}){}{}",
                f.mount_point,
                f.fs_type,
                bytes(f.used_bytes),
                bytes(f.size_bytes),
                p.ratio(f.utilization),
                inodes,
                if f.read_only { " · ro" } else { "" }
            );
        }
    }
    if let Some(ds) = s.disks.as_ref().filter(|d| !d.is_empty()) {
        let _ = writeln!(o, "{}", p.bold("Disks"));
        for d in ds {
            let _ = writeln!(
                o,
                "  {:<12} read {} ({} ops) · written {} ({} ops) · busy {:.0} s",
                d.device,
                bytes(d.read_bytes),
                d.reads,
                bytes(d.written_bytes),
                d.writes,
                d.io_seconds
            );
        }
    }
    if let Some(n) = &s.network {
        let _ = writeln!(o, "{}", p.bold("Network"));
        for i in &n.interfaces {
            let _ = writeln!(
                o,
                "  {:<12} rx {} ({} errors, {} drops) · tx {} ({} errors, {} drops)",
                i.name,
                bytes(i.rx_bytes),
                i.rx_errors,
                i.rx_drops,
                bytes(i.tx_bytes),
                i.tx_errors,
                i.tx_drops
            );
        }
        if let Some(est) = n.tcp.get("CurrEstab") {
            let _ = writeln!(
                o,
                "  {:<12} established {est} · opened {} · accepted {} · retransmitted segments {}",
                "tcp",
                n.tcp.get("ActiveOpens").copied().unwrap_or(0),
                n.tcp.get("PassiveOpens").copied().unwrap_or(0),
                n.tcp.get("RetransSegs").copied().unwrap_or(0)
            );
        }
        if !n.tcp_states.is_empty() {
            let states: Vec<String> = n.tcp_states.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(o, "  {:<12} {}", "tcp states", states.join(" · "));
        }
    }
    if let Some(f) = &s.file_descriptors {
        let _ = writeln!(o, "{:<11}{} of {} ({})", p.bold("Open files"), f.allocated, f.max, p.ratio(f.utilization));
    }
    if let Some(pr) = &s.processes {
        let states: Vec<String> = pr.by_state.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ =
            writeln!(o, "{:<11}{} ({} threads) · {}", p.bold("Processes"), pr.total, pr.threads, states.join(" · "));
        let line = |t: &crate::proc::processes::TopProcess| {
            format!(
                "    {:>7} {:<10} {:>6} {:>10}  {}{}",
                t.pid,
                t.user.clone().or_else(|| t.uid.map(|u| u.to_string())).unwrap_or_default(),
                t.cpu.map(pct).unwrap_or_else(|| "-".into()),
                bytes(t.rss_bytes),
                if t.cmdline.is_empty() { format!("[{}]", t.command) } else { t.cmdline.clone() },
                t.container_id.as_deref().map(|c| format!(" (container {})", &c[..12])).unwrap_or_default()
            )
        };
        if !pr.top_cpu.is_empty() {
            let _ = writeln!(o, "  {}", p.dim("top CPU:     pid user          cpu        rss  command"));
            pr.top_cpu.iter().for_each(|t| {
                let _ = writeln!(o, "{}", line(t));
            });
        }
        if !pr.top_rss.is_empty() {
            let _ = writeln!(o, "  {}", p.dim("top memory:  pid user          cpu        rss  command"));
            pr.top_rss.iter().for_each(|t| {
                let _ = writeln!(o, "{}", line(t));
            });
        }
    }
    if let Some(c) = &s.clock {
        let state = if c.synchronized {
            p.style(Style::new().fg_color(Some(AnsiColor::Green.into())), "synchronised")
        } else {
            p.style(Style::new().fg_color(Some(AnsiColor::Red.into())), "NOT synchronised")
        };
        let _ = writeln!(
            o,
            "{:<11}{state} · offset {:+.3} ms · estimated error {:.3} ms · max error {:.3} ms",
            p.bold("Clock"),
            c.offset_seconds * 1e3,
            c.estimated_error_seconds * 1e3,
            c.max_error_seconds * 1e3
        );
    }
    let errs: Vec<String> = s.read_errors.iter().map(|(r, k, n)| format!("{r} {} {n}", k.as_str())).collect();
    if !errs.is_empty() {
        let _ = writeln!(o, "{:<11}{}", p.bold("Read errors"), errs.join(" · "));
    }
    o
}

fn compact(s: &Snapshot, p: &Paint) -> String {
    let mut parts = vec![s.time.to_string(), s.host.identity.hostname.clone().unwrap_or_else(|| "?".into())];
    if let Some(u) = s.cpu.as_ref().and_then(|c| c.utilization) {
        parts.push(format!("cpu {}", p.ratio(u.busy)));
    }
    if let Some(l) = s.cpu.as_ref().and_then(|c| c.load) {
        parts.push(format!("load {:.2}", l.one));
    }
    if let Some(m) = &s.memory {
        parts.push(format!("mem {}", p.ratio(m.utilization)));
    }
    if let Some(worst) =
        s.filesystems.as_ref().and_then(|f| f.iter().max_by(|a, b| a.utilization.total_cmp(&b.utilization)))
    {
        parts.push(format!("disk {} {}", worst.mount_point, p.ratio(worst.utilization)));
    }
    if let Some(pr) = &s.processes {
        parts.push(format!("procs {}", pr.total));
    }
    if let Some(c) = &s.clock {
        parts.push(if c.synchronized {
            "clock ok".into()
        } else {
            p.style(Style::new().fg_color(Some(AnsiColor::Red.into())), "clock unsync")
        });
    }
    if s.read_errors.total() > 0 {
        parts.push(format!("read errors {}", s.read_errors.total()));
    }
    parts.join(" · ") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_as_a_person_expects() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(25 * 1024 * 1024 * 1024), "25.0 GiB");
        assert_eq!(pct(0.1234), "12.3%");
        assert_eq!(duration(3.0 * 86_400.0 + 4.0 * 3600.0 + 59.0), "3d 4h");
        assert_eq!(duration(125.0), "2m 5s");
    }
}
