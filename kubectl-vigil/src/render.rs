//! Text for people: the status tree, tables, ages. Colour only when asked for.

use std::fmt::Write as _;

use jiff::Timestamp;

use crate::view::StatusView;

/// Colours, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paint {
    /// Whether to write ANSI colours.
    pub on: bool,
}

impl Paint {
    fn wrap(self, code: &str, s: &str) -> String {
        if self.on { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_owned() }
    }
    /// Bold.
    pub fn bold(self, s: &str) -> String {
        self.wrap("1", s)
    }
    /// Green: healthy, passed.
    pub fn good(self, s: &str) -> String {
        self.wrap("32", s)
    }
    /// Yellow: pending, held.
    pub fn warn(self, s: &str) -> String {
        self.wrap("33", s)
    }
    /// Red: failed, rolled back.
    pub fn bad(self, s: &str) -> String {
        self.wrap("31", s)
    }
    /// Dim: waiting, details.
    pub fn dim(self, s: &str) -> String {
        self.wrap("2", s)
    }
    /// By the meaning of a state word.
    pub fn state(self, s: &str) -> String {
        match s {
            "passed" | "healthy" | "completed" | "Completed" | "Healthy" | "Good" | "True" => self.good(s),
            "failed" | "rolled back" | "rollingback" | "Failed" | "RolledBack" | "RollingBack" | "Unhealthy"
            | "Bad" => self.bad(s),
            "waiting" | "not started" | "excused" | "Unknown" => self.dim(s),
            _ => self.warn(s),
        }
    }
}

/// `4m12s`, `3h5m`, `2d4h`: how long, for a person.
pub fn human(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let out = match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    };
    if secs < 0 { format!("-{out}") } else { out }
}

/// `4m12s ago` or `in 4m12s`.
pub fn relative(t: Timestamp, now: Timestamp) -> String {
    let d = t.as_second() - now.as_second();
    if d <= 0 { format!("{} ago", human(-d)) } else { format!("in {}", human(d)) }
}

/// The status tree.
pub fn status(v: &StatusView, now: Timestamp, max_nodes: usize, p: Paint) -> String {
    let mut o = String::new();
    let phase = v.phase.map_or_else(|| "Pending".to_owned(), |ph| format!("{ph:?}"));
    let _ = write!(o, "{} {}", p.bold("AgentRollout"), p.bold(&v.rollout));
    let _ = write!(o, "  {}", p.state(&phase));
    if !v.up_to_date {
        let _ = write!(o, "  {}", p.warn("(the operator has not yet taken up the latest spec)"));
    }
    o.push('\n');
    let rev = |r: &crate::view::Revision| {
        let mut s = r.name.clone();
        if let Some(ver) = &r.version {
            let _ = write!(s, " ({ver})");
        }
        if let Some(oc) = r.outcome {
            let _ = write!(s, " {}", p.state(&format!("{oc:?}")));
        }
        s
    };
    match &v.target {
        Some(t) => {
            let _ = writeln!(o, "  Target:   {}", rev(t));
            if let Some(img) = &t.image {
                let _ = writeln!(o, "            {}", p.dim(img));
            }
        }
        None => {
            let _ = writeln!(o, "  Target:   {}", p.dim("not yet planned"));
        }
    }
    if let Some(s) = &v.stable {
        let _ = writeln!(o, "  Stable:   {}", rev(s));
    }
    let _ = writeln!(
        o,
        "  Nodes:    {}/{} on the target and ready; wave {} of {}",
        v.updated_nodes,
        v.selected_nodes,
        v.current_wave,
        v.waves.len()
    );
    if let Some(r) = &v.reason {
        let _ = writeln!(o, "  Reason:   {r}");
    }
    if let Some(n) = &v.next {
        let when = n.at.map(|at| format!(" ({})", relative(at, now))).unwrap_or_default();
        let _ = writeln!(o, "  Next:     {}{}", n.what, p.bold(&when));
    }
    if let Some(t) = &v.trace_id {
        let _ = writeln!(o, "  Trace:    {t}");
    }

    let _ = writeln!(o, "\n{}", p.bold("Waves"));
    let count = v.waves.len();
    for (i, w) in v.waves.iter().enumerate() {
        let last = i + 1 == count;
        let (branch, stem) = if last { ("└─", "   ") } else { ("├─", "│  ") };
        let g = &w.gate;
        let mut gate = Vec::new();
        if g.healthy > 0 {
            gate.push(p.good(&format!("{} healthy", g.healthy)));
        }
        if g.pending > 0 {
            gate.push(p.warn(&format!("{} pending", g.pending)));
        }
        if g.failed > 0 {
            gate.push(p.bad(&format!("{} failed", g.failed)));
        }
        if g.excused > 0 {
            gate.push(p.dim(&format!("{} excused", g.excused)));
        }
        if g.waiting > 0 {
            gate.push(p.dim(&format!("{} waiting", g.waiting)));
        }
        let _ = writeln!(
            o,
            "{branch} wave {} {:>8} → {} node(s), bake {}  {}  {}",
            w.number,
            w.share,
            w.size,
            human(i64::try_from(w.bake_seconds).unwrap_or(i64::MAX)),
            p.state(&w.state),
            gate.join(", ")
        );
        let shown = w.nodes.iter().take(max_nodes);
        let n_shown = w.nodes.len().min(max_nodes);
        for (j, n) in shown.enumerate() {
            let more = w.nodes.len() > n_shown;
            let leaf = if j + 1 == n_shown && !more { "└─" } else { "├─" };
            let detail = n.detail.as_deref().map(|d| format!(": {}", p.dim(d))).unwrap_or_default();
            let _ = writeln!(
                o,
                "{stem}{leaf} {} {} {}{detail}",
                n.name,
                p.dim(n.revision.as_deref().unwrap_or("no agent")),
                p.state(&n.health)
            );
        }
        if w.nodes.len() > n_shown && n_shown > 0 {
            let _ = writeln!(o, "{stem}└─ … {} more", w.nodes.len() - n_shown);
        }
    }

    if !v.revisions.is_empty() {
        let _ = writeln!(o, "\n{}", p.bold("Revisions"));
        for r in &v.revisions {
            let role = if r.role.is_empty() { String::new() } else { format!(" ({})", r.role.join(", ")) };
            let outcome = r.outcome.map(|x| p.state(&format!("{x:?}"))).unwrap_or_default();
            let pinned = if r.pinned > 0 { format!(", {} pinned", r.pinned) } else { String::new() };
            let _ = writeln!(o, "  {}{role} {outcome}  {} node(s), {} ready{pinned}", r.revision, r.nodes, r.ready);
        }
    }
    if !v.pins.is_empty() {
        let _ = writeln!(o, "\n{}", p.bold("Pins"));
        for pin in &v.pins {
            let on = match &pin.holds_on {
                Some(r) => r.clone(),
                None => p.warn(&format!(
                    "{} is no Good revision of this rollout: its nodes stay where they are",
                    pin.revision.as_deref().unwrap_or("?")
                )),
            };
            let _ = writeln!(
                o,
                "  {} [{}] {} → {on}: {} node(s); {}",
                pin.name, pin.source, pin.selects, pin.nodes, pin.reason
            );
        }
    }
    if !v.excluded.is_empty() {
        let _ = writeln!(o, "\n{}", p.bold("Excluded"));
        for e in &v.excluded {
            let ex = if e.examples.is_empty() { String::new() } else { format!(" ({})", e.examples.join(", ")) };
            let _ = writeln!(o, "  {}: {} node(s){ex}", e.reason, e.nodes);
        }
    }
    if v.failing_node_count > 0 {
        let _ = writeln!(o, "\n{}", p.bad(&format!("Failing on a Good revision: {} node(s)", v.failing_node_count)));
        for f in &v.failing_nodes {
            let _ = writeln!(o, "  {}: {}", f.name, f.reason);
        }
    }
    if !v.conditions.is_empty() {
        let _ = writeln!(o, "\n{}", p.bold("Conditions"));
        for c in &v.conditions {
            // The operator's reason is shown once, above; a condition says only what differs.
            let message = if v.reason.as_deref() == Some(c.message.as_str()) { "" } else { c.message.as_str() };
            let line = format!("  {}={} ({}) {}", c.type_, p.state(&c.status), c.reason, p.dim(message));
            let _ = writeln!(o, "{}", line.trim_end());
        }
    }
    if !v.decisions.is_empty() {
        let _ = writeln!(o, "\n{}", p.bold("Last decisions"));
        for d in &v.decisions {
            let when = d.time.map_or_else(|| "?".to_owned(), |t| relative(t, now));
            let reason = if d.type_ == "Warning" { p.bad(&d.reason) } else { d.reason.clone() };
            let _ = writeln!(o, "  {when:>10}  {reason}: {}", d.note);
        }
    }
    o
}

/// Rows as aligned columns (the last column unpadded).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}   ", w = widths[i]);
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut o = line(header.to_vec());
    for r in rows {
        o.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(59), "59s");
        assert_eq!(human(252), "4m12s");
        assert_eq!(human(3 * 3600 + 5 * 60 + 9), "3h5m");
        assert_eq!(human(2 * 86_400 + 4 * 3600), "2d4h");
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert_eq!(relative(Timestamp::from_second(1_000_000 - 90).unwrap(), now), "1m30s ago");
        assert_eq!(relative(Timestamp::from_second(1_000_000 + 90).unwrap(), now), "in 1m30s");
    }

    #[test]
    fn tables_align_and_colour_is_off_unless_asked() {
        let t = table(&["NODE", "HEALTH"], &[vec!["a".into(), "Healthy".into()], vec!["node-bb".into(), "x".into()]]);
        assert_eq!(t, "NODE      HEALTH\na         Healthy\nnode-bb   x\n");
        assert_eq!(Paint { on: false }.bad("x"), "x");
        assert_eq!(Paint { on: true }.bad("x"), "\x1b[31mx\x1b[0m");
    }
}
